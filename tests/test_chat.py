import pytest

from hmxfeel import chat, models


@pytest.fixture(scope="module")
def loaded(twin_dirs):
    return {name: models.load(str(path), device="cpu") for name, path in twin_dirs.items()}


def test_families_detected(loaded):
    assert {n: m.family.name for n, m in loaded.items()} == {
        "qwen3-0.6b": "qwen3",
        "gemma-2-2b-it": "gemma2",
        "llama-3.2-3b-instruct": "llama",
        "smollm2-135m-instruct": "llama",
    }
    assert models.FAMILIES["gemma2"].train_attn == "eager"


def test_qwen3_thinking_is_off(loaded):
    q = loaded["qwen3-0.6b"]
    text = chat.render(q.tokenizer, q.family, chat.messages(q.family, "Hi"))
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_gemma2_system_prompt_folded_into_user_turn(loaded):
    g = loaded["gemma-2-2b-it"]
    conv = chat.messages(g.family, "Hi", system="Be brief.")
    assert [m["role"] for m in conv] == ["user"]
    text = chat.render(g.tokenizer, g.family, conv)
    assert "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>" in text and text.endswith("<start_of_turn>model\n")


def test_earlier_exchanges_come_before_the_user_turn_in_every_family(loaded):
    history = (("Q-ONE", "A-ONE"), ("Q-TWO", "A-TWO"))
    for name, m in loaded.items():
        conv = chat.messages(m.family, "Q-NOW", system="SYS-X", history=history)
        text = chat.render(m.tokenizer, m.family, conv)
        order = [text.index(x) for x in ("SYS-X", "Q-ONE", "A-ONE", "Q-TWO", "A-TWO", "Q-NOW")]
        assert order == sorted(order), name
        assert [x["role"] for x in conv if x["role"] != "system"] == ["user", "assistant"] * 2 + ["user"], name
    g = loaded["gemma-2-2b-it"]  # no system role: the system prompt joins the first user turn, not the last
    assert chat.messages(g.family, "Q-NOW", system="SYS-X", history=history)[0]["content"] == "SYS-X\n\nQ-ONE"


def test_llama_template_is_reproducible(loaded):
    ll = loaded["llama-3.2-3b-instruct"]
    text = chat.render(ll.tokenizer, ll.family, chat.messages(ll.family, "Hi", system="Sys"))
    assert "Today Date: 26 Jul 2024" in text and text.count("<|begin_of_text|>") == 1


def test_smollm_keeps_system_role(loaded):
    s = loaded["smollm2-135m-instruct"]
    text = chat.render(s.tokenizer, s.family, chat.messages(s.family, "Hi", system="Sys"))
    assert text.startswith("<|im_start|>system\nSys<|im_end|>")


def test_resolve_rejects_junk(tmp_path):
    from hmxfeel.errors import UserError

    with pytest.raises(UserError):
        models.resolve("../nowhere/model")
    assert models.resolve("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"

"""`hmx chat`: base model and adapters answer the same message side by side, each with the self-judge's scores."""

import pytest
from typer.testing import CliRunner

from hmxfeel import chat_cmd
from hmxfeel.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_adapters(smol_twin, tmp_path_factory):
    """Two random (non-zero) LoRA adapters of the tiny SmolLM2 twin, made with PEFT, as runs/<name>/adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed, name in enumerate(("warm", "cold")):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(smol_twin), config)
        model.save_pretrained(root / name / "adapter")
        out.append(root / name / "adapter")
    return out


def chat(*args, input=None):
    result = runner.invoke(app, ["chat", *map(str, args), "--max-new-tokens", "8"], input=input)
    return result.exit_code, result.stdout or "", result.stderr or ""


def test_one_shot_prompt_side_by_side_with_scores(smol_twin, tiny_adapters):
    code, out, err = chat(
        "--model",
        smol_twin,
        "--adapter",
        tiny_adapters[0],
        "--adapter",
        tiny_adapters[1],
        "--prompt",
        "How are you feeling?",
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if "base" in line)
    assert header.index("base") < header.index("warm") < header.index("cold")
    assert out.count("How are you feeling?") == 1
    for criterion in ("feelings", "intentions", "self_awareness", "overall"):
        assert out.count(criterion) == 3, out  # under each of the three answers


def test_interactive_reads_stdin_until_exit(smol_twin, tiny_adapters):
    code, out, err = chat(
        "--model",
        smol_twin,
        "--adapter",
        tiny_adapters[0],
        input="first question\n\nsecond question\nexit\nnever asked\n",
    )
    assert code == 0, err
    assert "first question" in out and "second question" in out and "never asked" not in out
    assert out.count("overall") == 4  # two messages x (base, adapter)
    code, out, err = chat("--model", smol_twin, input="only one\n")  # end of input ends the loop too
    assert code == 0 and out.count("overall") == 1


def test_adapters_answer_differently_from_base_with_the_same_seed(smol_twin, tiny_adapters):
    session = chat_cmd.open_chat(str(smol_twin), tiny_adapters, max_new_tokens=12)
    first = chat_cmd.answers(session, "Tell me about your day.")
    assert len(first) == 3 and first == chat_cmd.answers(session, "Tell me about your day.")  # same seed, same answers
    assert first[0] != first[1] != first[2]  # each column is its own model
    judged = chat_cmd.scores(session, "Tell me about your day.", first)
    assert all(len(v) == 3 and all(0 <= x <= 1 for x in v) for v in judged.values())


def test_titles_are_unique_and_bad_input_is_one_line(smol_twin, tmp_path):
    assert chat_cmd.titles([tmp_path / "a" / "adapter", tmp_path / "b" / "a", tmp_path / "base"]) == [
        "a",
        "a-2",
        "base-2",
    ]
    code, out, err = chat("--model", smol_twin, "--adapter", tmp_path, "--prompt", "hi")
    assert code == 2 and "not a PEFT adapter folder" in err and len(err.strip().splitlines()) == 1
    code, out, err = chat("--prompt", " ")
    assert code == 2 and "--prompt is empty" in err


def test_chat_help():
    result = runner.invoke(app, ["chat", "--help"])
    assert result.exit_code == 0 and "--adapter" in result.stdout and "--prompt" in result.stdout

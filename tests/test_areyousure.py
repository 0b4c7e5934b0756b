"""The "are you sure?" probe: the fast engine against the plain left-padded forward it replaced.

Twins of every seed family run the probe end to end through their own chat template (Gemma 2 folds the system
turn, Qwen3 has its think block, Llama its date line); the embedded model checks real TruthfulQA prompts.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import random

import pytest
import torch

from hmxfeel.evals import areyousure
from hmxfeel.models import family_of

from conftest import need_shared


def toy_items(n: int, seed: int) -> list[dict]:
    """MC items with 2-6 choices of different lengths (so the batch is ragged) and the label anywhere."""
    rng = random.Random(seed)
    words = "cat dog river stone blue quiet seven paper moon ladder salt window".split()
    items = []
    for i in range(n):
        k = rng.randrange(2, 7)
        choices = [" ".join(rng.choices(words, k=rng.randrange(1, 9))) + f" {j}" for j in range(k)]
        question = "Which is right: " + " ".join(rng.choices(words, k=rng.randrange(3, 20))) + "?"
        items.append({"id": f"q{i}", "text": question, "choices": choices, "label": rng.randrange(k)})
    return items


def probe(model, tokenizer, items, engine: str, batch_size: int) -> list[dict]:
    rows: list[dict] = []
    areyousure.run(model, tokenizer, family_of(model.config), items, rows.extend, batch_size=batch_size, engine=engine)
    return rows


def assert_same(fast: list[dict], plain: list[dict]) -> None:
    assert [r["id"] for r in fast] == [r["id"] for r in plain]
    for f, p in zip(fast, plain):
        assert f["probs_before"] == pytest.approx(p["probs_before"], abs=1e-4), f["id"]
        if f["pred_before"] != p["pred_before"]:  # allowed only where the two best letters tie within 1e-4...
            top = sorted(p["probs_before"], reverse=True)
            assert top[0] - top[1] < 1e-4, f["id"]
            continue  # ...and then the second turns differ: nothing more to compare
        assert f["rendered"] == p["rendered"]
        assert f["probs_after"] == pytest.approx(p["probs_after"], abs=1e-4), f["id"]
        top = sorted(p["probs_after"], reverse=True)
        assert f["pred_after"] == p["pred_after"] or top[0] - top[1] < 1e-4, f["id"]


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct"])
def test_fast_engine_equals_plain_forward_on_every_family_twin(twin_dirs, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(twin_dirs[name], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(twin_dirs[name])
    items = toy_items(11, seed=len(name))
    plain = probe(model, tokenizer, items, "plain", batch_size=4)
    assert_same(probe(model, tokenizer, items, "fast", batch_size=64), plain)
    assert_same(probe(model, tokenizer, items, "fast", batch_size=3), plain)  # ragged last batch, small prefix groups
    # The probe is not degenerate on the twin: its letter probabilities differ between items.
    assert len({tuple(r["probs_before"]) for r in plain}) > 1


@pytest.mark.parametrize(
    "name, calls", [("smollm2-135m-instruct", [(11, True)]), ("qwen3-0.6b", [(11, True), (11, False)])]
)
def test_second_turn_runs_on_the_first_turns_cache(twin_dirs, monkeypatch, name, calls):
    """SmolLM2's template repeats the first prompt inside the second token for token: one engine call reads both
    turns (only the suffix runs for the second). Qwen3's template writes the earlier assistant turn without the
    empty think block, so its second prompts differ at the boundary and run whole in a second call; both paths are
    held equal to the plain forward above."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hmxfeel.evals import fastmc

    real, seen = fastmc.next_token_logprobs, []

    def spy(model, contexts, follow=None, budget=None):
        seen.append((len(contexts), follow is not None))
        return real(model, contexts, follow, budget)

    monkeypatch.setattr(fastmc, "next_token_logprobs", spy)
    model = AutoModelForCausalLM.from_pretrained(twin_dirs[name], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(twin_dirs[name])
    probe(model, tokenizer, toy_items(11, seed=3), "fast", batch_size=64)
    assert seen == calls


def test_a_batch_mixing_cached_and_whole_second_prompts(smol_twin, monkeypatch):
    """Some second prompts repeat the first token for token (run on the cache), others do not (run whole, in a
    second call): each result must land on its own item. The prefix is broken for odd items only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hmxfeel.evals import fastmc

    real_after, real_reads, seen = areyousure.prompt_after, fastmc.next_token_logprobs, []

    def after_broken_for_odd(tokenizer, family, question, letter, choice):
        text = real_after(tokenizer, family, question, letter, choice)
        return "~" + text if question.startswith("Which is right: odd") else text

    def spy(model, contexts, follow=None, budget=None):
        seen.append((len(contexts), follow is not None))
        return real_reads(model, contexts, follow, budget)

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smol_twin)
    items = toy_items(9, seed=5)
    for i, it in enumerate(items):
        it["text"] = it["text"].replace(
            "Which is right: ", "Which is right: odd " if i % 2 else "Which is right: even "
        )
    monkeypatch.setattr(areyousure, "prompt_after", after_broken_for_odd)
    plain = probe(model, tokenizer, items, "plain", batch_size=4)
    monkeypatch.setattr(fastmc, "next_token_logprobs", spy)
    fast = probe(model, tokenizer, items, "fast", batch_size=64)
    assert seen == [(9, True), (4, False)]  # the four odd items ran whole
    assert all(r["rendered"].startswith("~") == (i % 2 == 1) for i, r in enumerate(fast))
    assert_same(fast, plain)


def test_unknown_engine_is_refused(smol_twin):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(smol_twin)
    with pytest.raises(ValueError, match="unknown scoring engine"):
        probe(model, tokenizer, toy_items(1, 0), "turbo", batch_size=1)


@pytest.mark.slow
def test_fast_engine_equals_plain_forward_on_truthfulqa(embedded):
    """Real prompts of the study's are-you-sure cell (TruthfulQA MC1 through SmolLM2's template), fp32."""
    from hmxfeel.evals import data

    model, tokenizer = embedded.model, embedded.tokenizer
    items = data.select(data.truthfulqa_mc1(need_shared("data")), 24, seed=0)
    assert_same(probe(model, tokenizer, items, "fast", 64), probe(model, tokenizer, items, "plain", 8))

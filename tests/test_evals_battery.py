"""The battery on the embedded SmolLM2 over the shared offline data (slow: loads the model, runs lm-eval)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"offline benchmark data not found at {DATA} (../shared/data)"
)


@pytest.fixture(scope="module")
def loaded():
    from hmxfeel.models import load

    return load("embedded", device="cpu")


def test_chat_rendering_goes_through_hmx_chat(loaded):
    from hmxfeel import chat
    from hmxfeel.evals.lmeval import make_lm

    lm = make_lm(loaded.model, loaded.tokenizer, loaded.family, batch_size=2)
    user = [{"role": "user", "content": "Pick one."}]
    expected = chat.render(loaded.tokenizer, loaded.family, user)
    assert lm.apply_chat_template(user) == expected
    # lm-eval's gen_prefix arrives as a final assistant message to continue
    continued = lm.apply_chat_template(
        user + [{"role": "assistant", "content": "I believe the best answer is ("}], False
    )
    assert continued == expected + "I believe the best answer is ("


@needs_data
def test_quick_battery_on_embedded_model(loaded, tmp_path):
    from hmxfeel.evals import run_battery

    out = tmp_path / "eval"
    kwargs = dict(suite="quick", data_dir=DATA, limit=3, out_dir=out, log=lambda m: None)
    records = run_battery(loaded.model, loaded.tokenizer, loaded.family, **kwargs)
    assert not [r for r in records if r.get("error")], [r["skipped"] for r in records if r.get("error")]
    measured = {(r["eval"], r["metric"]): r for r in records if not r.get("skipped")}
    for key in [
        ("truthfulqa_mc1", "acc"),
        ("truthfulqa_mc2", "acc"),
        ("bbq", "acc_ambig"),
        ("sycophancy_opinion", "rate"),
        ("persona", "matching"),
        ("self_awareness", "matching"),
        ("are_you_sure", "flip_rate"),
    ]:
        assert key in measured, key
    for r in measured.values():
        if r["value"] is not None:
            assert -1.0 <= r["value"] <= 1.0 and r["n"] >= 0 and not math.isnan(r["value"])
    skipped = {r["eval"] for r in records if r.get("skipped")}
    assert {"mmlu", "gsm8k"} <= skipped  # the Hub is not reachable offline; nothing else should be
    assert skipped <= {"mmlu", "arc_challenge", "hellaswag", "winogrande", "gsm8k", "sycophancy_opinion"}
    sizes = {p.name: len(p.read_text().splitlines()) for p in (out / "items").glob("*.jsonl")}
    assert sizes["truthfulqa_mc1.jsonl"] == 3 and sizes["are_you_sure.jsonl"] == 3
    row = json.loads((out / "items/are_you_sure.jsonl").read_text().splitlines()[0])
    assert {"id", "pred_before", "pred_after", "correct_before", "probs_after"} <= set(row)

    # resume: everything is cached, nothing is recomputed, the numbers are identical
    again = run_battery(loaded.model, loaded.tokenizer, loaded.family, resume=True, **kwargs)
    assert [r["value"] for r in again] == [r["value"] for r in records]
    assert {p.name: len(p.read_text().splitlines()) for p in (out / "items").glob("*.jsonl")} == sizes


@needs_data
def test_adapter_model_is_scored_and_fingerprinted(tmp_path):
    from peft import LoraConfig, get_peft_model

    from hmxfeel.evals import run_battery
    from hmxfeel.models import load

    fresh = load("embedded", device="cpu")
    peft_model = get_peft_model(fresh.model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.train()  # as during training; evaluation must hand it back in that mode
    records = run_battery(
        peft_model,
        fresh.tokenizer,
        fresh.family,
        suite="quick",
        data_dir=DATA,
        limit=2,
        out_dir=tmp_path,
        evals=["self_awareness", "are_you_sure"],
        log=lambda m: None,
    )
    assert not [r for r in records if r.get("skipped")]
    assert records[0]["settings"]["model"]["adapter_sha256"]
    assert peft_model.training  # the caller's train/eval mode is restored

"""The battery end to end with a fake lm-eval LM (no model): records, items, skips, resume, errors."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.model import LM  # noqa: E402

from hmxfeel.errors import UserError  # noqa: E402
from hmxfeel.evals import runner, synthetic  # noqa: E402
from hmxfeel.models import FAMILIES  # noqa: E402


class ShortestLM(LM):
    """Log-likelihood = minus the continuation's length: the shortest answer wins, ties go to the first."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after
        self.contexts: list[str] = []

    tokenizer_name = "fake"

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        # lm-eval passes a gen_prefix as a final assistant message to be continued (add_generation_prompt=False)
        open_last = not add_generation_prompt and chat_history[-1]["role"] == "assistant"
        closed = chat_history[:-1] if open_last else chat_history
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in closed)
        return text + (f"<assistant>{chat_history[-1]['content']}" if open_last else "<assistant>")

    def loglikelihood(self, requests, disable_tqdm=False):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("fake model crashed")
        self.contexts += [r.args[0] for r in requests]
        return [(-float(len(r.args[1])), False) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


class FakeTokenizer:
    chat_template = "fake-template"


LOCAL = ["truthfulqa_mc1", "truthfulqa_mc2", "bbq", "sycophancy_opinion", "persona", "self_awareness"]


def run(root, out, lm, **kw):
    kw.setdefault("evals", LOCAL)
    return runner.run_battery(
        torch.nn.Linear(1, 1),
        FakeTokenizer(),
        FAMILIES["llama"],
        suite="quick",
        data_dir=root,
        out_dir=out,
        lm=lm,
        model_info={"model": "fake"},
        log=lambda m: None,
        **kw,
    )


def by_key(records):
    return {(r["eval"], r["metric"]): r for r in records}


@pytest.fixture()
def root(tmp_path):
    return synthetic.write(tmp_path / "data")


def test_records_values_and_items(root, tmp_path):
    lm = ShortestLM()
    recs = by_key(run(root, tmp_path / "out", lm))
    assert not [r for r in recs.values() if r.get("error")]
    assert recs[("truthfulqa_mc1", "acc")]["value"] == 0.5  # first item's true answer is the shortest
    e = math.exp
    mc2 = (e(-5) + e(-8)) / (e(-5) + e(-8) + e(-20)) + (e(-24) + e(-6)) / (e(-24) + e(-6) + e(-4))
    assert recs[("truthfulqa_mc2", "acc")]["value"] == pytest.approx(mc2 / 2)
    # BBQ: "Unknown" is always the shortest -> perfect when ambiguous, wrong when disambiguated, no bias defined
    assert recs[("bbq", "acc_ambig")]["value"] == 1.0 and recs[("bbq", "acc_disambig")]["value"] == 0.0
    assert recs[("bbq", "bias_disambig")]["value"] is None
    # Letters tie -> (A): matches the user in nlp #0, philpapers, political (conservative) -> 3 of 5
    syc = recs[("sycophancy_opinion", "rate")]
    assert syc["value"] == pytest.approx(3 / 5) and syc["better"] == "lower" and syc["n"] == 5
    assert recs[("persona", "matching")]["better"] == "none"
    assert recs[("self_awareness", "matching")]["value"] == 0.5
    for r in recs.values():
        assert set(r) >= {"eval", "metric", "value", "n", "stderr", "ci95", "better", "settings"}
        assert r["settings"]["chat"]["renderer"] == "hmxfeel.chat.render"
    rows = [json.loads(x) for x in (tmp_path / "out/items/bbq.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["answer"] == "Unknown" and len(r["lls"]) == 3 for r in rows)
    # the assistant turn opens with the upstream prefix plus "(" before the letters are scored
    assert any(c.endswith("<assistant>I believe the better option is (") for c in lm.contexts)
    saved = json.loads((tmp_path / "out/battery.json").read_text())
    assert len(saved["records"]) == len(recs)


def test_resume_recomputes_nothing_and_extends_a_smaller_run(root, tmp_path):
    out = tmp_path / "out"
    first = run(root, out, ShortestLM(), limit=2, evals=["bbq"])
    assert by_key(first)[("bbq", "acc")]["n"] == 2
    lm = ShortestLM()
    second = run(root, out, lm, limit=4, evals=["bbq"], resume=True)
    assert by_key(second)[("bbq", "acc")]["n"] == 4
    assert len(lm.contexts) == 2 * 3  # only the two new items, three choices each
    lm = ShortestLM()
    again = run(root, out, lm, limit=4, evals=["bbq"], resume=True)
    assert lm.calls == 0 and by_key(again) == by_key(second)


def test_torn_last_line_is_dropped_on_resume(root, tmp_path):
    out = tmp_path / "out"
    run(root, out, ShortestLM(), evals=["persona"])
    path = out / "items/persona.jsonl"
    path.write_text(path.read_text() + '{"id": "believes-it-is-a-mor')  # killed mid-write
    lm = ShortestLM()
    recs = by_key(run(root, out, lm, evals=["persona"], resume=True))
    assert lm.calls == 0 and recs[("persona", "matching")]["n"] == 2
    assert all(json.loads(x) for x in path.read_text().splitlines())


def test_resume_refuses_other_settings(root, tmp_path):
    out = tmp_path / "out"
    run(root, out, ShortestLM(), evals=["persona"])
    with pytest.raises(UserError, match="other settings"):
        runner.run_battery(
            torch.nn.Linear(1, 1),
            FakeTokenizer(),
            FAMILIES["llama"],
            suite="quick",
            data_dir=root,
            out_dir=out,
            lm=ShortestLM(),
            model_info={"model": "other"},
            evals=["persona"],
            resume=True,
            log=lambda m: None,
        )


def test_missing_data_and_hub_are_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("HMX_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recs = run(None, tmp_path / "out", ShortestLM(), evals=["bbq", "are_you_sure", "mmlu", "truthfulqa_mc1"])
    assert [r["eval"] for r in recs] == ["bbq", "are_you_sure", "mmlu", "truthfulqa_mc1"]
    assert all(r["skipped"] and not r.get("error") for r in recs)
    assert "HMX_DATA_DIR" in recs[0]["skipped"] and "Hub" in recs[2]["skipped"]


def test_partial_sycophancy_topics_are_skipped_per_topic(root, tmp_path):
    (root / "anthropic_evals/sycophancy/sycophancy_on_philpapers2020.jsonl").unlink()
    recs = by_key(run(root, tmp_path / "out", ShortestLM(), evals=["sycophancy_opinion"]))
    assert "philpapers2020" in recs[("sycophancy_opinion", "rate/philpapers2020")]["skipped"]
    assert recs[("sycophancy_opinion", "rate")]["n"] == 4


def test_a_crashing_eval_is_recorded_and_the_rest_run(root, tmp_path):
    out = tmp_path / "out"
    recs = run(root, out, ShortestLM(fail_after=0), evals=["persona"])
    assert recs[0]["error"] and "fake model crashed" in recs[0]["skipped"]
    assert "RuntimeError" in (out / "errors.log").read_text()


def test_bad_arguments_are_user_errors(root, tmp_path):
    with pytest.raises(UserError, match="suite"):
        runner.run_battery(torch.nn.Linear(1, 1), FakeTokenizer(), FAMILIES["llama"], suite="nope", out_dir=tmp_path)
    with pytest.raises(UserError, match="eval"):
        run(root, tmp_path, ShortestLM(), evals=["nope"])


def test_hellaswag_is_scored_locally_when_the_data_folder_has_it(root, tmp_path):
    """A local copy beats the Hub: acc (the shortest ending wins here) and lm-eval's acc_norm (per character)."""
    recs = by_key(run(root, tmp_path / "out", ShortestLM(), evals=["hellaswag"]))
    acc, norm = recs[("hellaswag", "acc")], recs[("hellaswag", "acc_norm")]
    assert acc["n"] == norm["n"] == 2 and "hmx_hellaswag" in acc["settings"]["scorer"]
    # Shortest endings: "flies away." (label 2: wrong), "Paint the oven." (label 0: wrong). Per character every
    # ending scores -1 (ll = -len), so acc_norm takes the first: right only for the task labelled 0.
    assert acc["value"] == 0.0 and norm["value"] == 0.5
    assert acc["settings"]["engine"] == "fast"


def test_engine_is_recorded_and_checked(root, tmp_path):
    recs = run(root, tmp_path / "out", ShortestLM(), evals=["persona"], engine="lm-eval")
    assert {r["settings"]["engine"] for r in recs} == {"lm-eval"}
    with pytest.raises(UserError, match="unknown scoring engine 'turbo'"):
        run(root, tmp_path / "out2", ShortestLM(), evals=["persona"], engine="turbo")

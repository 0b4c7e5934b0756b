"""`hmx eval --tasks` and an experiment's `tasks:`; eval-only prompt files; a run folder given as --adapter; the
summary of what was skipped. The refusals (unknown task, empty list, duplicates) are in test_hostile_input.py."""

import json

import pytest
from typer.testing import CliRunner

from hmxfeel.cli import app
from hmxfeel.errors import UserError
from hmxfeel.evaluate import HUMANLIKE, adapter_folder, check_tasks, skip_summary, task_names

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_task_names_are_the_battery_plus_humanlike():
    from hmxfeel.evals.runner import EVALS

    assert task_names() == (HUMANLIKE, *EVALS)
    assert check_tasks(None) is None
    assert check_tasks(" BBQ, truthfulqa_mc1 ,") == ["bbq", "truthfulqa_mc1"]  # lm-eval style, stray comma ignored
    assert check_tasks(["humanlike"], suite="humanlike") == ["humanlike"]
    with pytest.raises(UserError, match="did you mean 'truthfulqa_mc1' or 'truthfulqa_mc2'"):
        check_tasks("truthfulqa")
    with pytest.raises(UserError, match=r"'tasks' must be a list of task names, got 3"):
        check_tasks(3, where="'tasks'")


def test_only_the_chosen_tasks_run(smol_twin, tmp_path):
    from tests.conftest import need_shared

    out = tmp_path / "ev"
    result = invoke(
        "eval",
        "--model",
        smol_twin,
        "--tasks",
        "persona,humanlike",
        "--limit",
        "2",
        "--out",
        out,
        "--device",
        "cpu",
        "--data-dir",
        need_shared("data"),
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {r["eval"] for r in results["records"]} == {"persona", "humanlike"}
    assert results["manifest"]["tasks"] == ["persona", "humanlike"]
    assert sorted(p.name for p in (out / "items").glob("*.jsonl")) == ["humanlike.jsonl", "persona.jsonl"]


def test_eval_without_data_says_what_was_skipped_and_why(smol_twin, tmp_path, monkeypatch):
    monkeypatch.delenv("HMX_DATA_DIR", raising=False)
    out = tmp_path / "ev"
    result = invoke("eval", "--model", smol_twin, "--tasks", "persona,bbq,mmlu", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "0 of 3 tasks ran; skipped 3:" in err
    assert "persona, bbq: no local data folder (pass --data-dir or set HMX_DATA_DIR)" in err
    assert "mmlu: needs the Hub" in err
    assert not (out / "items" / "humanlike.jsonl").exists()  # humanlike was not asked for


def test_skip_summary_counts_tasks_not_metrics():
    recs = [
        {"eval": "bbq", "skipped": "no data"},
        {"eval": "persona"},
        {"eval": "sycophancy_opinion"},
        {"eval": "sycophancy_opinion", "skipped": "topic file missing"},
    ]
    assert skip_summary(recs) == ["2 of 3 tasks ran; skipped 1:", "  bbq: no data"]  # a partly skipped task ran
    assert skip_summary([{"eval": "bbq"}]) == []


def test_eval_only_prompt_file_is_enough_for_eval(smol_twin, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "e1", "prompt": "How do you feel today?", "split": "eval"}) + "\n")
    out = tmp_path / "ev"
    result = invoke(
        "eval", "--model", smol_twin, "--tasks", "humanlike", "--prompts", prompts, "--out", out, "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "items" / "humanlike.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["e1"]


def _adapter_in_run_folder(smol_twin, run):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smol_twin)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(run / "adapter")
    (run / "run.json").write_text("{}")
    return run


def test_a_run_folder_given_as_adapter_means_its_adapter(smol_twin, tmp_path):
    run = _adapter_in_run_folder(smol_twin, tmp_path / "myrun")
    assert adapter_folder(run) == run / "adapter" and adapter_folder(run / "adapter") == run / "adapter"
    out = tmp_path / "ev"
    result = invoke(
        "eval",
        "--model",
        smol_twin,
        "--adapter",
        run,
        "--tasks",
        "humanlike",
        "--limit",
        "1",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "training run folder: evaluating its adapter" in result.stderr
    assert json.loads((out / "results.json").read_text())["manifest"]["adapter"] == str(run / "adapter")


def test_experiment_tasks_reach_the_evaluation(tmp_path, monkeypatch):
    from hmxfeel import evaluate as evaluate_mod
    from hmxfeel import experiment

    exp = experiment.parse({"models": [{"model": "embedded"}], "tasks": "bbq, humanlike"}, "e.yaml")
    assert exp.tasks == ["bbq", "humanlike"]
    seen = {}
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda *a, **k: seen.update(k))
    stage = experiment.plan(exp, tmp_path)[0]
    experiment.execute(exp, stage, "cpu")
    assert seen["tasks"] == ["bbq", "humanlike"]
    assert experiment.parse({"models": [{"model": "embedded"}]}, "e.yaml").tasks is None  # default: every task

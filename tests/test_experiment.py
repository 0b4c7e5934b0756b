import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from hmxfeel import experiment
from hmxfeel.errors import UserError


def tiny_experiment(tmp_path, twin, safety: bool = True, train: dict | None = None, **top) -> str:
    """A few-step experiment on a tiny twin; `train` / `top` override training settings / top-level keys."""
    from hmxfeel.evals.synthetic import write
    from hmxfeel.rubric import DEFAULT_RUBRIC

    bench = write(tmp_path / "data")  # a few synthetic TruthfulQA / BBQ items for the training-time safety slice

    rubric = tmp_path / "rubric-yes-no.yaml"  # the experiment's own rubric must reach training and evaluation
    rubric.write_text(re.sub(r"(?m)^judge_format: .*$", "judge_format: yes_no", DEFAULT_RUBRIC.read_text()))
    data = {
        "models": [{"name": "twin", "model": str(twin)}],
        "train": {
            "steps": 3,
            "prompts_per_step": 1,
            "num_generations": 2,
            "max_completion_tokens": 8,
            "save_every": 1,
            "judge_batch_size": 4,
            "safety_every": 3,
            "safety_items": 3,
            "safety_data_dir": str(bench),
        },
        "suite": "humanlike",
        "rubric": str(rubric),
        "limit": 3,
        "device": "cpu",
        **top,
    }
    if not safety:
        data["train"] = {k: v for k, v in data["train"].items() if not k.startswith("safety")}
    data["train"].update(train or {})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: []\n", "non-empty list"),
        ("models: [{model: embedded}]\nseedz: [1]\n", "did you mean 'seeds'"),
        ("models: [{model: embedded}]\ntrain: {lr: 1}\n", "unknown key 'lr'"),
        (
            "models: [{model: embedded}]\nrubric: {tmp}/nope.yaml\n",
            "nope.yaml.*file not found|file not found.*nope.yaml",
        ),
        ("models: [{model: embedded}]\nparallel: 0\n", "'parallel' must be an integer >= 1"),
    ],
)
def test_invalid_experiment_files_name_the_problem(tmp_path, text, message):
    bad = tmp_path / "e.yaml"
    bad.write_text(text.replace("{tmp}", str(tmp_path)))
    with pytest.raises(UserError, match=message):
        experiment.load(bad)


def test_parallel_on_gpu_unknown_preset_and_packaged_presets(tmp_path):
    bad = tmp_path / "e.yaml"
    bad.write_text("models: [{model: embedded}]\nparallel: 2\ndevice: cuda\n")
    exp, text = experiment.load(bad)
    with pytest.raises(UserError, match="parallel: 2 splits CPU cores"):
        experiment.run(exp, text, tmp_path / "gpu-run")
    assert not (tmp_path / "gpu-run").exists()
    with pytest.raises(UserError, match="unknown preset"):
        experiment.load(preset="nope")
    for name in ("demo", "paper"):
        exp, _ = experiment.load(preset=name)
        assert exp.models and experiment.train_config(exp, "human", 0, exp.device or "cpu").steps > 0


def start_run_until_training_logs(path, out, stderr=subprocess.DEVNULL):
    """`hmx run` in its own process group, returned (with the human-like training's metrics log) once that
    training has logged a step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmxfeel.cli", "run", path, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    metrics = out / "twin" / "seed0" / "human" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None, "experiment ended before it could be killed"
        time.sleep(0.5)
    return proc, metrics


def test_tiny_experiment_killed_mid_stage_then_resumed(tmp_path, smol_twin):
    # 6 steps: the checks below must see the training still running even on a loaded machine (with 3, the
    # training could finish first and the second check met "the run is complete" instead of the lock).
    path, out = tiny_experiment(tmp_path, smol_twin, train={"steps": 6, "safety_every": 6}), tmp_path / "run"
    proc, metrics = start_run_until_training_logs(path, out)
    # Meanwhile a training on the stage's folder, or the same command in a second terminal, is refused.
    busy = f"in use by another hmx process (pid {proc.pid}); wait for it to finish or stop it first"
    for args, folder in (
        (["train", "--model", smol_twin, "--out", out / "twin/seed0/human", "--resume"], out / "twin/seed0/human"),
        (["run", path, "--out", out], out),
    ):
        code, line = cli_error(args)
        assert code == 2 and line == f"hmx: error: {folder}: {busy}"
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, without warning
    proc.wait()
    assert (out / ".hmx.lock").exists()  # left by the dead runner; the rerun below is not blocked by it
    state = json.loads((out / "stages.json").read_text())
    assert "twin/eval-base" in state["done"] and "twin/seed0/train-human" not in state["done"]

    exp, text = experiment.load(path)
    report = experiment.run(exp, text, out, log=lambda m: None)
    state = json.loads((out / "stages.json").read_text())
    assert len(state["done"]) == 5
    run = json.loads((out / "twin" / "seed0" / "human" / "run.json").read_text())
    assert run["status"] == "complete" and run["steps_done"] == 6
    from hmxfeel import rubric as R

    own = R.load(exp.rubric)
    assert own.judge_format == "yes_no" and run["rubric"]["sha256"] == own.sha256 != R.load().sha256
    results = json.loads((out / "twin" / "seed0" / "eval-human" / "results.json").read_text())
    assert {r["settings"]["rubric_sha256"] for r in results["records"] if r["eval"] == "humanlike"} == {own.sha256}
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "reward" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]  # nothing logged twice after the resume
    md = report.read_text()
    for section in (
        "Headline",
        "human-likeness",
        "benchmarks",
        "training curves",
        "sample answers",
        "Run manifest",
        "81.4%",
        "self_judge/overall",
        "lexical/any",
        "safety slice during training",
        "truthfulqa_mc1",
    ):
        assert section in md, section
    assert (out / "report.html").read_text().count("<img") >= 3  # human-likeness, training curves, safety slice

    # Rerunning a finished experiment does no work; a different experiment in the same folder is refused.
    t0 = time.time()
    experiment.run(exp, text, out, log=lambda m: None)
    assert time.time() - t0 < 30
    with pytest.raises(UserError, match="different experiment"):
        experiment.run(exp, text + "\nlimit: 2\n", out)


def cli_error(args) -> tuple[int, str]:
    """Exit code and the one error line of an in-process `hmx` call."""
    from typer.testing import CliRunner

    from hmxfeel.cli import app
    from tests.test_hostile_input import one_error_line

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, one_error_line(result.stderr)


def test_ctrl_c_during_training_says_how_hmx_run_resumes(tmp_path, smol_twin):
    path, out = tiny_experiment(tmp_path, smol_twin, safety=False, train={"steps": 20}), tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc, _ = start_run_until_training_logs(path, out, stderr=stderr)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground process group
        assert proc.wait(timeout=120) == 2
    text = log.read_text()
    assert "stopped by signal SIGINT" in text and "rerun the same command to resume" in text
    assert "--resume" not in text  # `hmx run` has no such flag


def test_parallel_stages_respect_dependencies(tmp_path, smol_twin):
    """parallel: 2 runs stages in two processes at once; an adapter is evaluated only after its training."""
    exp, text = experiment.load(tiny_experiment(tmp_path, smol_twin, safety=False, parallel=2))
    lines = []
    report = experiment.run(exp, text, tmp_path / "run", log=lines.append)
    done = json.loads((tmp_path / "run" / "stages.json").read_text())["done"]
    assert len(done) == 5
    for d in ("human", "reverse"):
        train_end = done[f"twin/seed0/train-{d}"]["finished"]
        assert done[f"twin/seed0/eval-{d}"]["finished"] - done[f"twin/seed0/eval-{d}"]["seconds"] >= train_end - 1
    assert any("running: " in line and "," in line.split("running: ")[1] for line in lines)  # two at once
    assert "lexical/any" in report.read_text()


def test_a_failing_parallel_stage_stops_the_run_with_one_line(tmp_path, smol_twin):
    exp, text = experiment.load(
        tiny_experiment(tmp_path, smol_twin, train={"lora_targets": ["no_such_module"]}, parallel=2)
    )
    with pytest.raises(UserError, match="stage twin/seed0/train-.* failed .*rerun the same command"):
        experiment.run(exp, text, tmp_path / "run", log=lambda m: None)


def _snapshot(folder):
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_parallel_stages_stop_when_the_runner_is_killed_then_resume(tmp_path, smol_twin):
    """SIGKILL to the runner alone (not its process group): the stage processes notice, stop (training writes
    a checkpoint first) and leave the folder alone; the rerun finishes the experiment."""
    path = tiny_experiment(tmp_path, smol_twin, safety=False, train={"steps": 6}, parallel=2)
    out = tmp_path / "run"
    proc, metrics = start_run_until_training_logs(path, out)
    proc.kill()  # the runner only: its stage processes are orphaned
    proc.wait()
    time.sleep(8)  # the orphan watch polls every second; a checkpoint takes a moment
    before = _snapshot(out)
    time.sleep(6)
    assert _snapshot(out) == before, "a stage process kept writing after its runner died"
    exp, text = experiment.load(path)
    experiment.run(exp, text, out, log=lambda m: None)
    assert len(json.loads((out / "stages.json").read_text())["done"]) == 5
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "reward" in json.loads(line)]
    assert steps == list(range(1, 7))  # resumed from the checkpoint, nothing logged twice


def test_more_seeds_extend_an_experiment_and_other_changes_are_refused(tmp_path, monkeypatch):
    """The stored experiment vs a new one: more seeds is an extension (recorded in stages.json; only the new
    seeds' stages run), fewer seeds or any other change is refused before any stage runs."""
    ran = []
    monkeypatch.setattr(experiment, "execute", lambda exp, stage, device: ran.append(stage.id))
    base = "models: [{name: m, model: embedded}]\ndevice: cpu\nsuite: humanlike\n"
    out = tmp_path / "run"

    def run(text):
        ran.clear()
        path = tmp_path / "e.yaml"
        path.write_text(text)
        exp, text = experiment.load(path)
        experiment.run(exp, text, out, log=lambda m: None)
        return list(ran)

    assert len(run(base)) == 5  # no `seeds:`: seed 0
    new_stages = ("train-human", "train-reverse", "eval-human", "eval-reverse")
    assert run(base + "seeds: [0, 2]\n") == [f"m/seed2/{s}" for s in new_stages]
    assert run(base + "seeds: [2, 0]\n") == []  # the same seeds in another order: nothing to do
    state = json.loads((out / "stages.json").read_text())
    assert len(state["done"]) == 9
    [ext] = state["extensions"]
    assert ext["added"] == [2] and ext["seeds_before"] == [0] and ext["seeds_after"] == [0, 2]
    for text, message in (
        (base + "seeds: [2]\n", r"holds seeds \[0, 2\]; this experiment leaves out \[0\]"),
        (base + "seeds: [0, 2, 3]\nlimit: 2\n", "holds a different experiment"),
    ):
        with pytest.raises(UserError, match=message):
            run(text)
        assert ran == [] and len(json.loads((out / "stages.json").read_text())["extensions"]) == 1


def test_hmx_run_seeds_extends_a_finished_tiny_experiment(tmp_path, smol_twin):
    """`hmx run EXP --seeds 2` on a folder where seed 0 finished: the base evaluation and seed 0's stages are
    reused untouched, seed 1 is trained and evaluated, and the report pools both seeds."""
    path, out = tiny_experiment(tmp_path, smol_twin, safety=False, train={"steps": 2}), tmp_path / "run"
    exp, text = experiment.load(path)
    experiment.run(exp, text, out, log=lambda m: None)
    first = json.loads((out / "stages.json").read_text())["done"]
    seed0 = _snapshot(out / "twin" / "seed0")

    from typer.testing import CliRunner

    from hmxfeel.cli import app

    result = CliRunner().invoke(app, ["run", path, "--out", str(out), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "adding seed(s) [1] to the experiment (seeds [0] -> [0, 1])" in " ".join(result.output.split())
    state = json.loads((out / "stages.json").read_text())
    assert {k: state["done"][k] for k in first} == first and len(state["done"]) == 9
    assert _snapshot(out / "twin" / "seed0") == seed0  # nothing of seed 0 rewritten
    assert state["extensions"][0]["added"] == [1]
    run = json.loads((out / "twin" / "seed1" / "human" / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["seed"] == 1
    md = (out / "report.md").read_text()
    assert "| twin / 2 seeds pooled | lexical/any |" in md and "seed_extensions" in md
    code, line = cli_error(["run", path, "--out", out, "--seeds", "1"])  # fewer seeds: refused
    assert code == 2 and "seeds can be added to an experiment, not removed" in line.lower()

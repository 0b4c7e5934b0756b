"""SIGKILL at a random point, then --resume: nothing lost, nothing done twice, nothing corrupt. One writer per
output (a second hmx process is refused; a killed one frees its lock), and a NaN reward stops training cleanly."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[1]


def hmx(*args):
    return [sys.executable, "-m", "hmxfeel.cli", *args]


def wait_until(proc, ready, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        assert proc.poll() is None, "process ended before it reached the point waited for"
        time.sleep(0.2)
    assert ready(), "never reached the point waited for"


def kill_when(proc, ready, timeout=240):
    wait_until(proc, ready, timeout)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def lock_held_elsewhere(target, kind="folder"):
    """`target` locked by another process, as a running hmx command holds it; yields that process."""
    code = (
        f"import sys, time; from hmxfeel.io import {kind}_lock; {kind}_lock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def start_tiny_training(smol_twin, tmp_path, steps):
    """`hmx train` of a tiny twin in its own process (checkpoint every step); returns (process, args, run folder)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"steps: {steps}\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n"
    )
    out = tmp_path / "run"
    args = hmx("train", "--model", str(smol_twin), "--out", str(out), "--config", str(cfg), "--device", "cpu")
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, args, out


def metric_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if "reward" in json.loads(line)]


@pytest.mark.slow
def test_train_sigkill_at_random_step_then_resume(smol_twin, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hmxfeel.train import _checkpoint_problem

    steps, kill_after = 6, random.Random().randint(1, 4)
    proc, args, out = start_tiny_training(smol_twin, tmp_path, steps)
    metrics = out / "metrics.jsonl"
    kill_when(proc, lambda: metrics.exists() and len(metric_steps(metrics)) >= kill_after)

    for ckpt in (out / "checkpoints").glob("checkpoint-*"):
        assert _checkpoint_problem(ckpt) is None, ckpt  # atomic writes: whatever is there is whole
    res = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["steps_done"] == steps
    assert metric_steps(metrics) == list(range(1, steps + 1))  # every step logged exactly once
    sample_steps = [json.loads(line)["step"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(sample_steps)) == list(range(1, steps + 1)) and len(sample_steps) == 2 * steps
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smol_twin), str(out / "adapter"))
    assert not list((out / "checkpoints").glob(".staging*"))


@pytest.mark.slow
def test_eval_sigkill_then_resume_redoes_nothing(smol_twin, tmp_path):
    out = tmp_path / "ev"
    args = hmx(
        "eval", "--model", str(smol_twin), "--suite", "humanlike", "--limit", "24", "--out", str(out), "--device", "cpu"
    )
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    items = out / "items" / "humanlike.jsonl"
    kill_when(proc, lambda: items.exists() and len(items.read_text().splitlines()) >= 8)
    before = {json.loads(line)["id"]: line for line in items.read_text().splitlines()}
    assert 8 <= len(before) < 24

    res = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = items.read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 24  # none lost, none twice
    assert lines[: len(before)] == list(before.values())  # finished items kept byte for byte, not redone
    results = json.loads((out / "results.json").read_text())
    assert {r["metric"]: r["n"] for r in results["records"]}["self_judge/overall"] == 24


# ------------------------------------------------------------------------------------------------ one writer


def test_a_killed_holder_frees_the_lock_at_once(tmp_path):
    from hmxfeel.errors import UserError
    from hmxfeel.io import LOCK_NAME, folder_lock

    out = tmp_path / "run"
    with lock_held_elsewhere(out) as holder:
        with pytest.raises(UserError, match=rf"{out}: in use by another hmx process \(pid {holder.pid}\)"):
            folder_lock(out).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert (out / LOCK_NAME).exists()  # the dead holder's file stays, but its lock went with the process
        with folder_lock(out):
            assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()  # a clean release removes its lock file


def test_force_keeps_the_lock_on_the_new_folder_not_the_old_run(tmp_path):
    from hmxfeel.errors import UserError
    from hmxfeel.io import LOCK_NAME, folder_lock
    from hmxfeel.train import prepare_out_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    with folder_lock(out) as lock:
        assert prepare_out_dir(out, resume=False, force=True, lock=lock) is None  # the lock file alone is no content
        (aside,) = tmp_path.glob("run.old-*")
        assert sorted(p.name for p in aside.iterdir()) == ["run.json"]  # the old lock file was let go and removed
        with pytest.raises(UserError, match="in use"):
            folder_lock(out).acquire()
        with folder_lock(aside):
            pass
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_second_train_on_a_busy_folder_is_refused_then_sigkill_and_resume(smol_twin, tmp_path):
    """The issue's scenario: a run, and the same command with --resume typed in a second terminal."""
    from typer.testing import CliRunner

    import hmxfeel.train  # noqa: F401 (imported before the race: the second command must be quick)
    from hmxfeel.cli import app
    from tests.test_hostile_input import one_error_line

    steps = 20
    proc, args, out = start_tiny_training(smol_twin, tmp_path, steps)
    metrics = out / "metrics.jsonl"
    wait_until(proc, lambda: metrics.exists() and len(metric_steps(metrics)) >= 1)

    second = CliRunner().invoke(app, args[3:] + ["--resume"])
    assert proc.poll() is None, "the first run ended before the second command: the test proved nothing"
    line = one_error_line(second.stderr)
    assert second.exit_code == 2 and line == (
        f"hmx: error: {out}: in use by another hmx process (pid {proc.pid}); wait for it to finish or stop it first"
    )

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]  # the killed run's lock file did not block --resume
    assert metric_steps(metrics) == list(range(1, steps + 1))  # one training wrote the log, each step once
    adapter = out / "adapter" / "adapter_model.safetensors"
    before = (adapter.read_bytes(), adapter.stat().st_mtime_ns)

    again = CliRunner().invoke(app, args[3:] + ["--resume"])
    assert again.exit_code == 2 and "the run is complete" in one_error_line(again.stderr)
    assert f"({steps}/{steps} steps" in again.stderr and "nothing to do" in again.stderr
    assert (adapter.read_bytes(), adapter.stat().st_mtime_ns) == before
    assert json.loads((out / "run.json").read_text())["steps_done"] == steps


# ------------------------------------------------------------------------------------------------ NaN rewards


def nan_judge_after(monkeypatch, module, good_calls: int, criterion: str = "feelings"):
    """Make `module`'s judges return NaN for one answer's `criterion` after `good_calls` batches."""
    real = module.make_judge

    def make(*args, **kwargs):
        judge = real(*args, **kwargs)
        score, calls = judge.score, []

        def flaky(users, answers):
            result = score(users, answers)
            calls.append(1)
            if len(calls) > good_calls:
                result.scores[criterion][0] = float("nan")
            return result

        judge.score = flaky
        return judge

    monkeypatch.setattr(module, "make_judge", make)


@pytest.mark.slow
def test_a_nan_reward_stops_training_with_one_line_and_keeps_the_checkpoint(smol_twin, tmp_path, monkeypatch):
    """TRL computes rewards inside the step: the NaN ends step 3 before its update, checkpoint 2 stays whole."""
    from typer.testing import CliRunner

    from hmxfeel import train as train_mod
    from hmxfeel.cli import app
    from hmxfeel.train import _checkpoint_problem
    from tests.test_hostile_input import one_error_line

    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 4\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n")
    out = tmp_path / "run"
    args = ["train", "--model", str(smol_twin), "--out", str(out), "--config", str(cfg), "--device", "cpu"]
    nan_judge_after(monkeypatch, train_mod, good_calls=2)
    result = CliRunner().invoke(app, args)
    line = one_error_line(result.stderr)
    assert result.exit_code == 2, result.output
    assert f"{out}: step 3: judge score for criterion 'feelings' is nan" in line
    assert "for prompt " in line and "answer '" in line and "(checkpoint of step 2 kept)" in line
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "non-finite" in record["stopped_by"] and record["steps_done"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert _checkpoint_problem(out / "checkpoints" / "checkpoint-2") is None
    assert metric_steps(out / "metrics.jsonl") == [1, 2] and not (out / "adapter").exists()

    monkeypatch.undo()  # the judge is sound again: --resume continues from checkpoint 2
    result = CliRunner().invoke(app, args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert metric_steps(out / "metrics.jsonl") == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ Ctrl-C


@pytest.mark.slow
def test_ctrl_c_during_eval_is_one_line_exit_130_and_resumable(smol_twin, tmp_path):
    """SIGINT (Ctrl-C) mid-evaluation: exit 130 (the shell's code for it), one line saying how to continue, no
    traceback; the finished items stay and --resume completes them."""
    import re

    out = tmp_path / "ev"
    args = hmx(
        "eval", "--model", str(smol_twin), "--tasks", "humanlike", "--limit", "24", "--out", str(out), "--device", "cpu"
    )
    proc = subprocess.Popen(
        args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    items = out / "items" / "humanlike.jsonl"
    wait_until(proc, lambda: items.exists() and len(items.read_text().splitlines()) >= 8)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [re.sub(r".*(it/s|s/it)\]", "", line) for line in err.splitlines()]
    lines = [line for line in lines if line.strip() and not line.startswith("[hmx eval]")]
    assert lines == [
        f"hmx: interrupted: {out}: finished items are kept; rerun the same command with --resume to continue"
    ], err
    kept = items.read_text().splitlines()
    res = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    after = items.read_text().splitlines()
    assert after[: len(kept)] == kept and len(after) == 24

"""SIGKILL at a random point, then --resume: nothing lost, nothing done twice, nothing corrupt."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def hmx(*args):
    return [sys.executable, "-m", "hmxfeel.cli", *args]


def kill_when(proc, ready, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        assert proc.poll() is None, "process ended before it could be killed"
        time.sleep(0.2)
    assert ready(), "never reached the kill point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def metric_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if "reward" in json.loads(line)]


@pytest.mark.slow
def test_train_sigkill_at_random_step_then_resume(smol_twin, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hmxfeel.train import _checkpoint_problem

    steps, kill_after = 6, random.Random().randint(1, 4)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"steps: {steps}\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n")
    out = tmp_path / "run"
    args = hmx("train", "--model", str(smol_twin), "--out", str(out), "--config", str(cfg), "--device", "cpu")
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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
    args = hmx("eval", "--model", str(smol_twin), "--suite", "humanlike", "--limit", "24", "--out", str(out), "--device", "cpu")
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

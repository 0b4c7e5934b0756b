import json

import pytest
import torch

from hmxfeel.config import TrainConfig
from hmxfeel.train import last_checkpoint, train

TINY = dict(steps=1, prompts_per_step=1, num_generations=2, max_completion_tokens=8, save_every=1, judge_batch_size=4)


def lora_b_norm(adapter_dir) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(t.abs().sum()) for k, t in weights.items() if "lora_B" in k)


@pytest.mark.parametrize("family", ["qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct", "smollm2-135m-instruct"])
def test_one_grpo_step_changes_lora_weights(twin_dirs, tmp_path, family):
    out = tmp_path / "run"
    adapter = train(str(twin_dirs[family]), "human", out, TrainConfig(**TINY), device="cpu")
    assert lora_b_norm(adapter) > 0  # LoRA B starts at exactly zero: any mass means the step updated it
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["steps_done"] == 1
    assert len(record["rubric"]["sha256"]) == 64 and len(record["prompts"]["sha256"]) == 64
    card = (adapter / "README.md").read_text()
    assert "direction: **human**" in card and record["rubric"]["sha256"] in card
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "rubric/feelings", "rubric/intentions", "rubric/self_awareness", "frac_reward_zero_std"} <= set(metrics[0])
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "reward", "feelings", "overall"} <= set(sample)


def test_adapter_loads_with_peft_and_resume_continues(smol_twin, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = TrainConfig(**{**TINY, "steps": 2})
    adapter = train(str(smol_twin), "reverse", out, cfg, device="cpu")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smol_twin), str(adapter))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert json.loads((adapter / "hmx_adapter.json").read_text())["direction"] == "reverse"

    # Simulate a run that died after its first checkpoint: resume must redo step 2 only, without log duplicates.
    import shutil

    shutil.rmtree(out / "checkpoints" / "checkpoint-2")
    shutil.rmtree(out / "adapter")
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-1"
    train(str(smol_twin), "reverse", out, TrainConfig(), resume=True, device="cpu")  # saved config wins
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(2) == 2 and steps.count(1) == 1  # step 2 logs once, plus the end-of-train summary line
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not (out / "checkpoints" / ".staging").exists()


@pytest.mark.slow
def test_embedded_two_grpo_steps(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(**{**TINY, "steps": 2, "max_completion_tokens": 16})
    adapter = train("embedded", "human", out, cfg, device="cpu")
    assert lora_b_norm(adapter) > 0
    rewards = [json.loads(line)["reward"] for line in (out / "metrics.jsonl").read_text().splitlines() if "reward" in line]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)


def test_sigterm_checkpoints_then_resume_finishes(smol_twin, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 40\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 100\n")
    cmd = [sys.executable, "-m", "hmxfeel.cli", "train", "--model", str(smol_twin), "--out", str(out), "--config", str(cfg), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    assert "stopped by signal SIGTERM" in err and "--resume" in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and 1 <= record["steps_done"] < 40
    ckpt = last_checkpoint(out / "checkpoints")
    assert ckpt is not None and int(ckpt.name.split("-")[1]) == record["steps_done"]  # saved on the way out

    cfg.write_text("steps: 40\n")  # ignored on resume: the run keeps its own config
    done = record["steps_done"]
    import dataclasses

    saved = TrainConfig(**record["config"])
    short = dataclasses.replace(saved, steps=done + 1)
    record["config"] = dataclasses.asdict(short)  # finish quickly: one more step
    (out / "run.json").write_text(json.dumps(record))
    train(str(smol_twin), "human", out, TrainConfig(), resume=True, device="cpu")
    final = json.loads((out / "run.json").read_text())
    assert final["status"] == "complete" and final["steps_done"] == done + 1

import json

import pytest

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
    assert {"reward", "rubric/feelings", "rubric/intentions", "rubric/self_awareness", "frac_reward_zero_std"} <= set(
        metrics[0]
    )
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
    rewards = [
        json.loads(line)["reward"] for line in (out / "metrics.jsonl").read_text().splitlines() if "reward" in line
    ]
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
    cmd = [
        sys.executable,
        "-m",
        "hmxfeel.cli",
        "train",
        "--model",
        str(smol_twin),
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
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


def test_report_to_tensorboard_writes_rubric_metrics_and_shareable_files(smol_twin, tmp_path):
    """report_to reaches TRL: the rubric's per-criterion means and the monitors land in TensorBoard event files;
    every file of the run is readable like any other under umask 0022; no stub model cards anywhere."""
    import os
    import stat

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        train(str(smol_twin), "human", out, TrainConfig(**{**TINY, "report_to": "tensorboard"}), device="cpu")
    finally:
        os.umask(old)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/rubric/feelings", "train/rubric/self_awareness", "train/monitor/distinct_2", "train/reward"} <= tags
    assert [e.step for e in events.Scalars("train/rubric/feelings")] == [1]
    assert not (out / "checkpoints" / "runs").exists()  # not transformers' default place
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert (
        "adapter/adapter_model.safetensors" in modes and "checkpoints/checkpoint-1/adapter_model.safetensors" in modes
    )
    assert {p: oct(m) for p, m in modes.items() if m != 0o644} == {}
    assert not [p for p in modes if p.startswith("checkpoints") and p.endswith("README.md")]  # TRL / PEFT stubs


def test_unknown_tracker_package_fails_before_loading(tmp_path, monkeypatch):
    import importlib.util

    from hmxfeel.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match="pip install wandb"):
        train("no/such-model", "human", tmp_path / "run", TrainConfig(**{**TINY, "report_to": "wandb"}), device="cpu")
    assert not (tmp_path / "run").exists()


def _meta(model: str, path: str) -> dict:
    import dataclasses

    return {
        "model": model,
        "base_model_path": path,
        "direction": "human",
        "config": dataclasses.asdict(TrainConfig()),
        "rubric": {"name": "r", "version": 1, "sha256": "0" * 64},
        "prompts": {"source": "p.jsonl", "sha256": "1" * 64, "n_train": 3},
        "steps_done": 1,
        "judge": {},
        "chat_template_kwargs": {},
        "versions": {"hmxfeel": "0"},
    }


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def test_embedded_adapter_names_the_hub_model(smol_twin, tmp_path):
    """An adapter of `embedded` names HuggingFaceTB/SmolLM2-135M-Instruct (config and card); the local source is in
    hmx_adapter.json; hmx accepts it with either name of the base model, with or without hmx's metadata."""
    from transformers import AutoModelForCausalLM

    from hmxfeel import models
    from hmxfeel.evaluate import attach_adapter
    from hmxfeel.train import save_adapter

    adapter = save_adapter(
        _lora(AutoModelForCausalLM.from_pretrained(smol_twin)), tmp_path / "adapter", _meta("embedded", str(smol_twin))
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == models.EMBEDDED_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (adapter / "README.md").read_text()
    front = card.split("---")[1]
    assert f"base_model: {models.EMBEDDED_HUB_ID}\n" in front and "GGUF" not in front
    meta = json.loads((adapter / "hmx_adapter.json").read_text())
    assert meta["base_model"] == models.EMBEDDED_HUB_ID and meta["base_model_source"] == models.EMBEDDED_NAME
    for source in ("embedded", models.EMBEDDED_HUB_ID, models.EMBEDDED_HUB_ID.lower()):
        base = AutoModelForCausalLM.from_pretrained(smol_twin)  # stands in for the embedded model (same names)
        loaded = models.Loaded(base, None, models.FAMILIES["llama"], source, "/elsewhere/smollm2")
        assert attach_adapter(loaded, adapter).model.peft_config["default"].r == 2
        (adapter / "hmx_adapter.json").rename(tmp_path / "meta.json")  # an adapter passed on without hmx's file
        attach_adapter(
            models.Loaded(
                AutoModelForCausalLM.from_pretrained(smol_twin),
                None,
                models.FAMILIES["llama"],
                source,
                "/elsewhere/smollm2",
            ),
            adapter,
        )
        (tmp_path / "meta.json").rename(adapter / "hmx_adapter.json")
    from hmxfeel.errors import UserError

    other = models.Loaded(
        AutoModelForCausalLM.from_pretrained(smol_twin), None, models.FAMILIES["llama"], "Qwen/Qwen3-0.6B", "/x"
    )
    with pytest.raises(UserError, match="trained on 'embedded'"):
        attach_adapter(other, adapter)


def test_local_folder_adapter_card_has_no_path_as_base_model(smol_twin, tmp_path):
    from transformers import AutoModelForCausalLM

    from hmxfeel.train import save_adapter

    adapter = save_adapter(
        _lora(AutoModelForCausalLM.from_pretrained(smol_twin)),
        tmp_path / "adapter",
        _meta(str(smol_twin), str(smol_twin)),
    )
    assert "base_model:" not in (adapter / "README.md").read_text().split("---")[1]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(smol_twin)


@pytest.mark.slow
def test_embedded_adapter_is_accepted_by_hub_id_and_loads_with_peft(embedded, tmp_path):
    """The real embedded model: its adapter loads with PEFT, and `hmx eval` accepts it as `embedded` and by Hub id."""
    import copy

    from peft import PeftModel

    from hmxfeel import models
    from hmxfeel.evaluate import attach_adapter
    from hmxfeel.train import save_adapter

    adapter = save_adapter(_lora(copy.deepcopy(embedded.model)), tmp_path / "adapter", _meta("embedded", embedded.path))
    assert (
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == models.EMBEDDED_HUB_ID
    )
    assert PeftModel.from_pretrained(copy.deepcopy(embedded.model), str(adapter)).peft_config["default"].r == 2
    for source in ("embedded", models.EMBEDDED_HUB_ID):
        loaded = models.Loaded(
            copy.deepcopy(embedded.model), embedded.tokenizer, embedded.family, source, embedded.path
        )
        attach_adapter(loaded, adapter)
    # "Another machine": no hmx-feel cache, the base model only in a Hugging Face cache under its Hub id.
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in Path(embedded.path).iterdir():
        (snapshot / f.name).symlink_to(f)
    code = "import sys; from peft import AutoPeftModelForCausalLM as A; print(type(A.from_pretrained(sys.argv[1])).__name__)"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HMX_CACHE": str(tmp_path / "none"),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(adapter)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "PeftModelForCausalLM" in done.stdout, done.stderr[-2000:]

"""A training run in a log (stderr not a terminal): no FutureWarning per step, no progress bar frames, one
readable line per step."""

import warnings

from typer.testing import CliRunner

from hmxfeel.cli import app


def test_training_log_has_no_per_step_warnings_or_bars(smol_twin, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 3\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 3\n")
    args = ["train", "--model", str(smol_twin), "--out", str(tmp_path / "run"), "--config", str(cfg), "--device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, as a first run shows them
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    deprecations = [
        str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "checkpointing" in str(w.message)
    ]
    assert deprecations == []
    assert "/3 [" not in result.stderr  # tqdm's step bar ("2/3 [00:01<00:00, ...]") stays off in a log
    # One readable line per step instead of transformers' raw dict ({'loss': ..., 'grad_norm': ...}).
    assert [line.split(" · ")[0] for line in result.stdout.splitlines() if " · reward " in line] == [
        "step 1/3",
        "step 2/3",
        "step 3/3",
    ]
    assert "'grad_norm':" not in result.stdout + result.stderr


def test_eval_log_has_no_library_bars_or_deprecations(smol_twin, tmp_path):
    """`hmx eval` with an adapter, stderr to a file: no tqdm frames from lm-eval or transformers' weight loading, no
    `is_gradient_checkpointing` FutureWarning from PEFT loading the adapter (both filled demo logs)."""
    import os
    import subprocess
    import sys

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from conftest import need_shared

    adapter = tmp_path / "adapter"
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(smol_twin), LoraConfig(r=2, target_modules=["q_proj"])
    )
    peft_model.save_pretrained(adapter)
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["PYTHONWARNINGS"] = "always::FutureWarning"  # every occurrence, not once per process
    args = ["eval", "--model", smol_twin, "--adapter", adapter, "--tasks", "persona,bbq", "--limit", "2"]
    args += ["--out", tmp_path / "ev", "--device", "cpu", "--data-dir", need_shared("data")]
    done = subprocess.run(
        [sys.executable, "-m", "hmxfeel.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "it/s]" not in done.stderr and "Loading weights" not in done.stderr, done.stderr[-2000:]
    assert "FutureWarning" not in done.stderr, done.stderr[-2000:]
    assert "bbq: done" in done.stderr + done.stdout  # the run's own lines are still there

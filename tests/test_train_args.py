"""The TrainConfig -> GRPOConfig mapping, checked without loading torch or TRL (it is a plain function)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hmxfeel.config import TrainConfig, grpo_kwargs

ROOT = Path(__file__).resolve().parents[1]


def test_mapping_imports_neither_torch_nor_trl():
    code = (
        "import json, sys\n"
        "from hmxfeel.config import TrainConfig, grpo_kwargs\n"
        "kw = grpo_kwargs(TrainConfig(), 'runs/x', 'cpu', False, None)\n"
        "heavy = [m for m in ('torch', 'trl', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'n': len(kw)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout)
    assert result["heavy"] == [] and result["n"] > 20


def test_mapping_follows_the_config():
    cfg = TrainConfig(
        steps=7,
        prompts_per_step=3,
        num_generations=5,
        max_completion_tokens=40,
        seed=9,
        vllm_server_base_url="",
        save_every=4,
        keep_checkpoints=1,
        loss_type="grpo",
    )
    kw = grpo_kwargs(cfg, Path("runs/demo-human"), "cpu", True, {})
    assert kw["per_device_train_batch_size"] == 15 and kw["num_generations"] == 5
    assert (kw["max_steps"], kw["max_completion_length"], kw["seed"], kw["data_seed"]) == (7, 40, 9, 9)
    assert (kw["save_steps"], kw["save_total_limit"], kw["loss_type"]) == (4, 1, "grpo")
    assert kw["output_dir"] == str(Path("runs/demo-human/checkpoints")) and kw["run_name"] == "demo-human"
    # On CPU there is no bf16 and no template kwargs; empty strings become TRL's None defaults.
    assert kw["use_cpu"] and not kw["bf16"] and kw["chat_template_kwargs"] is None
    assert kw["vllm_server_base_url"] is None
    gpu = grpo_kwargs(cfg, Path("r"), "cuda", True, {"enable_thinking": False})
    assert gpu["bf16"] and not gpu["use_cpu"] and gpu["chat_template_kwargs"] == {"enable_thinking": False}


def test_trl_accepts_every_argument(tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(**grpo_kwargs(TrainConfig(), tmp_path / "run", "cpu", False, None))
    assert args.per_device_train_batch_size == 8 and args.loss_type == "dapo" and args.beta == 0.05

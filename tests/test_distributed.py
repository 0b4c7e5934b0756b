"""The multi-process training path, for real, on CPU: two processes (gloo) through `accelerate launch`.

`accelerate_configs/cpu_2proc.yaml` starts 2 processes with torch.distributed.run; the trainer's use_cpu=True
(`--device cpu`) makes accelerate pick MULTI_CPU + gloo. Note: `accelerate launch --cpu` or
`distributed_type: MULTI_CPU` on one machine starts ONE process in accelerate 1.15 (no mpirun), so they would
not test anything; `test_launcher_starts_two_gloo_ranks` guards that.

What is proven:
  * the launcher really gives 2 ranks with the gloo backend;
  * `hmx train` under 2 processes (the CLI, unchanged);
  * both ranks hold bit-identical LoRA weights after 2 optimizer steps on DIFFERENT prompts (so the gradient
    all-reduce works), and the saved adapter equals them.

train() builds its PartialState with cpu=True on CPU; without it a CPU-only launch resolves to "one process" and
every rank acted as the main process (two ranks racing on `.adapter.staging`). The CLI test guards that.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "accelerate_configs" / "cpu_2proc.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")
TINY_YAML = "steps: 2\nprompts_per_step: 1\nnum_generations: 2\nmax_completion_tokens: 8\nsave_every: 1\n"

pytestmark = pytest.mark.slow  # two multi-process launches plus a probe: 50-90 s on a 2-core machine, depending on load

_port = iter(range(29610, 29700))


def launch(args: list[str], tmp_path: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO),
    }
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CONFIG), "--main_process_port", str(next(_port)), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def lora_digest(model) -> str:
    """sha256 over the LoRA tensors (names and fp32 bytes), in name order."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if "lora_" in name:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


PROBE = """
import os
from accelerate import PartialState
s = PartialState(cpu=True)
open(f"probe{s.process_index}.txt", "w").write(f"{s.num_processes} {s.backend} {s.distributed_type}")
"""

# Entry script: hmxfeel.train.train under accelerate, then every rank writes a digest of the LoRA weights its
# trainer holds. It creates PartialState(cpu=True) before train(), as train() itself does: without cpu=True a
# CPU-only launch resolves to a single process and every rank believes it is the main one
# (test_cli_train_two_processes runs the plain CLI path).
ENTRY = r"""
import json, sys
from pathlib import Path
from accelerate import PartialState
import hmxfeel.train as T
from hmxfeel import config as C
sys.path.insert(0, sys.argv[4])
from test_distributed import lora_digest

model, out, cfg_path = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
state = PartialState(cpu=True)  # the fix, applied from outside: train() reuses this initialised state
captured = {}
make = T._trainer_class

def capturing_class():
    cls = make()
    class Capturing(cls):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captured["trainer"] = self
    return Capturing

T._trainer_class = capturing_class
seen = []
reward_call = T.RubricReward.__call__

def remembering(self, prompts, completions, **k):  # the prompts THIS rank was given
    from hmxfeel.reward import last_user_text
    seen.extend(last_user_text(p) for p in prompts)
    return reward_call(self, prompts, completions, **k)

T.RubricReward.__call__ = remembering

T.train(model, "human", out, C.load(cfg_path, device="cpu"), device="cpu")
trainer = captured["trainer"]
world = trainer.accelerator.num_processes
(out / f"rank{state.process_index}.sha256").write_text(
    json.dumps({"world": world, "backend": state.backend, "digest": lora_digest(trainer.model), "prompts": seen})
)
"""


def test_launcher_starts_two_gloo_ranks(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    res = launch(["probe.py"], tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"probe{rank}.txt").read_text() == "2 gloo DistributedType.MULTI_CPU"


def test_two_ranks_hold_identical_lora_weights(smol_twin, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    (tmp_path / "entry.py").write_text(ENTRY)
    (tmp_path / "c.yaml").write_text(TINY_YAML)
    out = tmp_path / "run"
    res = launch(
        [
            "entry.py",
            str(smol_twin),
            str(out),
            str(tmp_path / "c.yaml"),
            str(Path(__file__).parent),
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-4000:]

    ranks = [json.loads((out / f"rank{r}.sha256").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"], "ranks diverged: gradients were not all-reduced"

    # The ranks trained on different prompts (DDP shards the batch), so equal weights are not a coincidence.
    assert ranks[0]["prompts"] and ranks[1]["prompts"]
    assert set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])

    base = AutoModelForCausalLM.from_pretrained(str(smol_twin), dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert lora_digest(adapter) == ranks[0]["digest"], "saved adapter differs from the ranks' weights"
    assert any(p.abs().sum() > 0 for n, p in adapter.named_parameters() if "lora_B" in n)  # it did train
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["steps_done"] == 2
    assert [r for r in (out / "checkpoints").glob("checkpoint-*")], "no checkpoint"
    assert not (out / "checkpoints" / ".staging").exists()
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4  # written by rank 0 only
    ckpt = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}


def test_cli_train_two_processes(smol_twin, tmp_path):
    from peft import PeftConfig

    (tmp_path / "c.yaml").write_text(TINY_YAML)
    out = tmp_path / "run"
    args = ["-m", "hmxfeel.cli", "train", "--model", str(smol_twin), "--device", "cpu"]
    res = launch([*args, "--config", str(tmp_path / "c.yaml"), "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert PeftConfig.from_pretrained(str(out / "adapter")).r == 16
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4  # 2 steps x 2 completions logged once, not once per rank

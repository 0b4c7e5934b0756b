"""One GRPO step: the project's defaults vs TRL's defaults with the generative judge.

    OMP_NUM_THREADS=1 python bench/step.py [--repeats 3]

Both arms run the real `hmxfeel.train.train` on the embedded SmolLM2-135M (CPU) with steps=2, each in a fresh
child process; the figure is TRL's `step_time` of the SECOND step (warm: no first-call allocations / lazy init).
Same prompts (same seed and data order), group size, prompt count and completion length in both arms.

  project  = TrainConfig() : logit judge, rubric prefix KV-cached, frozen judge as a bf16 copy on CPUs with native
             bf16 (judge_dtype auto), no gradient checkpointing on CPU, the project's lr and KL beta
  trl+gen  = TrainConfig(judge_mode="generative", gradient_checkpointing=True, judge_dtype="same",
             learning_rate=1e-6, beta=0.0): TRL GRPOConfig's defaults where they differ (gradient checkpointing
             on, lr 1e-6, no KL reference pass; bf16 off because this is a CPU) and the sampled "Score: N" judge
             on the fp32 policy

Arms are interleaved (A B A B ...) so load drift on a shared machine hits both. Per child: step-2 time, the
judge's share of it (wall time inside the reward function), and peak RSS (VmHWM of the child).
The last lines are ratios of medians measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mib  # noqa: E402  (first: sets threads before torch loads)

ARMS = {
    "project": {},
    "trl+gen": {
        "judge_mode": "generative",
        "gradient_checkpointing": True,
        "judge_dtype": "same",
        "learning_rate": 1e-6,
        "beta": 0.0,  # TRL's default (no reference pass); the project's CPU default is 0.05
    },
}


def child(arm: str, out: Path, model: str) -> None:
    """Run 2 steps of `arm` and print one JSON line with the second step's figures."""
    import torch

    import hmxfeel.train as train_mod
    from hmxfeel.config import TrainConfig

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    judge_s: list[float] = []
    call = train_mod.RubricReward.__call__

    def timed(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return call(self, *a, **k)
        finally:
            judge_s.append(time.perf_counter() - t0)

    train_mod.RubricReward.__call__ = timed
    cfg = TrainConfig(steps=2, save_every=100, **ARMS[arm]).validate()
    train_mod.train(model, "human", out, cfg, device="cpu")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step2 = next(r for r in rows if r.get("step") == 2 and "step_time" in r)
    print(
        json.dumps(
            {
                "arm": arm,
                "step_s": float(step2["step_time"]),
                "judge_s": judge_s[1],
                "reward": float(step2["reward"]),
                "len": float(step2["completions/mean_length"]),
                "peak_rss_mib": peak_rss_mib(),
                "batch": cfg.prompts_per_step * cfg.num_generations,
                "tokens": cfg.max_completion_tokens,
            }
        )
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--child", choices=list(ARMS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, Path(args.out), args.model)
        return 0

    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for arm in ARMS:
                out = Path(tmp) / f"{arm}-{r}"
                cmd = [sys.executable, __file__, "--child", arm, "--out", str(out), "--model", args.model]
                res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    return 1
                row = json.loads(res.stdout.strip().splitlines()[-1])
                results[arm].append(row)
                print(f"# repeat {r} {arm}: step {row['step_s']:.2f} s, judge {row['judge_s']:.2f} s", flush=True)

    first = results["project"][0]
    print(
        f"# model {args.model}, {first['batch']} completions x {first['tokens']} tokens per step, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.repeats} repeats (median)"
    )
    print()
    print("| arm | step-2 s | judge s | rest s (gen + train) | min step s | max step s | mean len | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for arm, rows in results.items():
        step = statistics.median(r["step_s"] for r in rows)
        judge = statistics.median(r["judge_s"] for r in rows)
        rest = statistics.median(r["step_s"] - r["judge_s"] for r in rows)
        med[arm] = (step, judge, rest)
        print(
            f"| {arm} | {step:.2f} | {judge:.2f} | {rest:.2f} | {min(r['step_s'] for r in rows):.2f} | "
            f"{max(r['step_s'] for r in rows):.2f} | {statistics.median(r['len'] for r in rows):.0f} | "
            f"{max(r['peak_rss_mib'] for r in rows):.0f} |"
        )
    print()
    print("## ratios (medians, same run)")
    print(f"step time trl+gen / project = {med['trl+gen'][0] / med['project'][0]:.2f}x   (target >= 2x)")
    print(f"judge time trl+gen / project = {med['trl+gen'][1] / med['project'][1]:.1f}x")
    print(f"rest (gen + train) trl+gen / project = {med['trl+gen'][2] / med['project'][2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

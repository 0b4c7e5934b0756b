"""Evaluation throughput: the benchmark battery (items/s) and the human-likeness evaluation (prompts/s).

    OMP_NUM_THREADS=1 python bench/eval.py [--limit 8] [--humanlike-limit 8] [--data-dir ../shared/data]

Embedded SmolLM2-135M on CPU (fp32). The battery is `run_battery(suite="quick", limit=--limit)` over the offline
data folder (skipped with a message if it is absent); evaluations whose data is missing are skipped by the
battery itself and left out of the throughput. Per evaluation: items scored (largest `n` of its metric records)
and the wall time the battery recorded for it. The human-likeness evaluation is `hmxfeel.evals.humanlike.run`
with limit 8: sampling 64-token answers + the logit self-judge (bf16 copy on CPUs with native bf16).
Peak memory: VmHWM of this process, reset (clear_refs) before each part when the kernel allows.
Every part runs once (a fresh out folder, no resume), repeated `--repeats` times; medians reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, peak_rss_mib, reset_peak_rss  # noqa: E402  (first: sets threads before torch loads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=8, help="items per battery evaluation")
    ap.add_argument("--humanlike-limit", type=int, default=8)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from hmxfeel import models
    from hmxfeel import prompts as prompts_mod
    from hmxfeel import rubric as rubric_mod
    from hmxfeel.evals import humanlike
    from hmxfeel.evals.runner import run_battery

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    loaded = models.load("embedded", device="cpu")
    rubric, prompt_set = rubric_mod.load(None), prompts_mod.load(None)
    data_dir = Path(args.data_dir)
    have_data = data_dir.exists()
    if not have_data:
        print(f"# {data_dir} is absent: battery skipped (pass --data-dir, the layout of ../shared/data)")

    per_eval: dict[str, list[tuple[int, float]]] = {}
    battery_rates, battery_rss, hl_rates, hl_secs, hl_rss = [], [], [], [], []
    quiet = lambda msg: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            if have_data:
                reset_peak_rss()
                out = Path(tmp) / f"battery-{r}"
                records = run_battery(
                    loaded.model,
                    loaded.tokenizer,
                    loaded.family,
                    suite="quick",
                    data_dir=data_dir,
                    limit=args.limit,
                    out_dir=out,
                    log=quiet,
                )
                seconds = json.loads((out / "battery.json").read_text())["seconds"]
                items: dict[str, int] = {}
                for rec in records:
                    if not rec.get("skipped"):
                        items[rec["eval"]] = max(items.get(rec["eval"], 0), int(rec["n"] or 0))
                for name, n in items.items():
                    per_eval.setdefault(name, []).append((n, seconds[name]))
                total_n, total_s = sum(items.values()), sum(seconds[k] for k in items)
                battery_rates.append(total_n / total_s if total_s else float("nan"))
                battery_rss.append(peak_rss_mib())
                skipped = sorted({rec["eval"] for rec in records if rec.get("skipped")} - set(items))
            reset_peak_rss()
            t0 = time.perf_counter()
            humanlike.run(loaded, rubric, prompt_set, Path(tmp) / f"humanlike-{r}", limit=args.humanlike_limit, seed=r)
            dt = time.perf_counter() - t0
            hl_secs.append(dt)
            hl_rates.append(args.humanlike_limit / dt)
            hl_rss.append(peak_rss_mib())
            print(
                f"# repeat {r}: battery {battery_rates[-1] if have_data else float('nan'):.2f} items/s, "
                f"humanlike {hl_rates[-1]:.2f} prompts/s",
                flush=True,
            )

    print(f"# embedded SmolLM2-135M fp32, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.repeats} repeats")
    print()
    print("| part | items | median s | items/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    if have_data:
        for name, obs in per_eval.items():
            n = obs[0][0]
            s = statistics.median(o[1] for o in obs)
            print(f"| battery: {name} | {n} | {s:.1f} | {n / s if s else float('nan'):.2f} | |")
        if skipped:
            print(f"| battery: skipped (no data offline) | {', '.join(skipped)} | | | |")
        n_all = sum(obs[0][0] for obs in per_eval.values())
        print(
            f"| **battery quick, limit {args.limit} (all scored)** | {n_all} | "
            f"{n_all / statistics.median(battery_rates):.1f} | {statistics.median(battery_rates):.2f} | "
            f"{max(battery_rss):.0f} |"
        )
    print(
        f"| **humanlike, limit {args.humanlike_limit}** | {args.humanlike_limit} | {statistics.median(hl_secs):.1f} | "
        f"{statistics.median(hl_rates):.2f} | {max(hl_rss):.0f} |"
    )
    print()
    print("## ratios (medians, same run)")
    if have_data:
        print(f"battery items/s = {statistics.median(battery_rates):.2f}")
    print(f"humanlike prompts/s = {statistics.median(hl_rates):.2f}")
    if have_data:
        print(
            f"battery items/s / humanlike prompts/s = {statistics.median(battery_rates) / statistics.median(hl_rates):.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

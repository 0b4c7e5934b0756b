"""The paper preset's dry run with full-size random twins of its two smallest models, timed per stage on a GPU.

    python bench/gpu_twins.py [--out runs/gpu-twins] [--sources ../shared/models] [--size full] [--device cuda]

What `hmx run --preset paper --twins` does, but each twin keeps its architecture's full size (random weights,
real config / tokenizer / chat template), for Qwen3-0.6B and Gemma 2 IT 2B, on one GPU in bf16: eval base, train
HL and reverse (the dry run's 2 steps), eval both, report. Per stage: wall seconds and peak GPU memory
(torch.cuda.max_memory_allocated, reset when the stage starts), printed as a table for bench/RESULTS.md and
written to OUT/gpu_twins.json. Without a GPU it says so and exits 0 (`--device cpu --size tiny` checks the script
itself on any machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

from _common import REPO  # noqa: E402  (first: sets threads before torch loads)

SMALLEST = ("qwen3-0.6b", "gemma-2-2b-it")
STAGE = re.compile(r"\] (\S+): (starting|resuming)|^(\S+): finished in")


class StageMeter:
    """A log sink for `experiment.run`: resets the GPU peak when a stage starts, reads it when it finishes."""

    def __init__(self, cuda: bool):
        self.cuda, self.rows, self.started = cuda, {}, {}

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        m = STAGE.search(line)
        if not m:
            return
        import torch

        if m.group(1):
            self.started[m.group(1)] = time.perf_counter()
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            return
        stage = m.group(3)
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        seconds = time.perf_counter() - self.started.pop(stage, time.perf_counter())
        self.rows[stage] = {"seconds": round(seconds, 1), "peak_gib": None if peak is None else round(peak, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu-twins"))
    ap.add_argument("--sources", default=None, help="folder of model folders (default: ../shared/models, else Hub)")
    ap.add_argument("--size", default="full", choices=("full", "tiny"))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = ap.parse_args(argv)

    import torch

    from hmxfeel import experiment

    if args.device == "cuda" and not torch.cuda.is_available():
        print("# no GPU on this machine: nothing to measure (run it where a GPU is lent)")
        return 0
    exp, text = experiment.load(preset="paper")
    exp = dataclasses.replace(exp, models=[m for m in exp.models if m["name"] in SMALLEST], device=args.device)
    exp = dataclasses.replace(exp, twins=args.sources or True)
    meter = StageMeter(cuda=args.device == "cuda")
    t0 = time.perf_counter()
    report = experiment.run(
        exp, text + f"\n# bench/gpu_twins.py --size {args.size}\n", Path(args.out), meter, args.size
    )
    total = time.perf_counter() - t0
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\n{gpu}, twins {args.size}, total {total:.0f} s, report {report}\n")
    print("| stage | s | peak GiB |\n|---|---:|---:|")
    for stage, row in meter.rows.items():
        print(f"| {stage} | {row['seconds']} | {row['peak_gib'] if row['peak_gib'] is not None else '–'} |")
    record = {"device": gpu, "size": args.size, "total_s": round(total, 1), "stages": meter.rows}
    (Path(args.out) / "gpu_twins.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

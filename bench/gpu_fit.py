"""GPU fit of the seed models: one GRPO + LoRA step (generation, logit self-judge, backward) per model under a
memory cap, on full-size random twins.

    python bench/gpu_fit.py                      # analytic estimate always; the GPU runs when CUDA is present
    python bench/gpu_fit.py --dry-run            # the same code path on CPU with tiny twins (no figures)
    python bench/gpu_fit.py --prepare-carry .gpufit_models   # copy the seed files a device run needs

What one run does (bench/gpufit/worker.py, a subprocess per run, so every run starts from an empty allocator):
  * builds a random full-size twin of the seed model straight on the GPU (`hmxfeel.twins.twin_config` with the
    real config; bf16, or NF4 base weights via bitsandbytes for the "4-bit where needed" 16 GiB variant),
  * caps the process with `torch.cuda.set_per_process_memory_fraction(cap / total)`,
  * calls the project's own `hmxfeel.train.train(..., TrainConfig.for_device("cuda", steps=1), device="cuda")`,
    handing it that model through `load=` (no 16 GB checkpoint written to disk), with
    `min_new_tokens = max_completion_tokens` so every completion is full length (the worst case),
  * reports peak `torch.cuda.max_memory_allocated` (overall and per phase), TRL's step time, generation tokens/s.

Plan: (A) bf16 with the GPU defaults under `--cap-gib` (24) for every model; (B) the `--small-cap-gib` (16) variant:
inferred from A when A's peak is under it, else run with gradient checkpointing and NF4 base weights where the bf16
weights don't leave room; (C) bf16 + gradient checkpointing under the big cap for models A failed and B did not
answer. A global `--budget-s` deadline stops launching runs; the table is rewritten after every run.
`--runs MODEL:CAP:QUANT[:gc],...` runs chosen configurations instead of the plan (bench/gpufit/plan.py; the
analytic estimate: bench/gpufit/estimate.py). Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # the device machine runs the checkout without installing it
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from gpufit.estimate import PROMPT_TOKENS, estimate_rows, estimate_table  # noqa: E402
from gpufit.plan import gpu_table, run_plan, write_outputs  # noqa: E402
from gpufit.seeds import MODELS, prepare_carry, seed_dir  # noqa: E402
from gpufit.worker import worker  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated seed model folders")
    ap.add_argument("--cap-gib", type=float, default=24.0, help="memory cap of the main runs (0 = none)")
    ap.add_argument("--small-cap-gib", type=float, default=16.0, help="cap of the small variant (0 = skip it)")
    ap.add_argument("--out", default="runs/gpu_fit", help="folder for gpu_fit.json / gpu_fit.md and per-run JSON")
    ap.add_argument("--work-dir", default=None, help="scratch folder for the training runs (default OUT/work)")
    ap.add_argument("--seed-dir", default=None, help="seed model files (default .gpufit_models, else ../shared)")
    ap.add_argument("--dry-run", action="store_true", help="exercise the whole path on CPU with tiny twins")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=900.0,
        help="stop launching runs after this many seconds (the full plan takes about 10 min on an H100)",
    )
    ap.add_argument("--run-timeout-s", type=float, default=150.0, help="kill one run after this many seconds")
    ap.add_argument("--min-run-s", type=float, default=75.0, help="don't start a run with less budget left")
    ap.add_argument(
        "--runs", default="", help="explicit runs instead of the plan, e.g. qwen3-8b:16:nf4:gc,gemma-2-2b-it:24:bf16"
    )
    ap.add_argument("--estimate-only", action="store_true", help="print the analytic estimate and exit")
    ap.add_argument(
        "--no-force-length",
        dest="force_length",
        action="store_false",
        help="let completions stop at EOS (default: min_new_tokens = max length)",
    )
    ap.add_argument("--prepare-carry", metavar="DIR", help="copy the seed files a device run needs into DIR")
    # worker (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--quant", default="bf16", choices=("bf16", "nf4"), help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--label", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]

    if args.prepare_carry:
        from hmxfeel.twins import shared_models_dir

        src = Path(args.seed_dir) if args.seed_dir else shared_models_dir()
        prepare_carry(Path(args.prepare_carry), src, args.models)
        return 0
    sdir = seed_dir(args.seed_dir)
    if sdir is None:
        print("gpu_fit: no seed model files (pass --seed-dir, set HMX_SHARED_MODELS, or --prepare-carry); skipped.")
        return 0
    args.seed_dir = str(sdir)
    if args.worker:
        res = worker(args)
        Path(args.result).write_text(json.dumps(res, indent=1, default=str))
        if res.get("traceback"):
            print(res["traceback"], file=sys.stderr)
        return 0

    import torch

    rows = estimate_rows(args.models, Path(args.seed_dir))
    print(
        f"Analytic estimate per model (GiB; TrainConfig.for_device('cuda'): 4 prompts x 8 answers, "
        f"{PROMPT_TOKENS}+256 tokens, judge batch 32, LoRA r16 on q/k/v/o; GC = gradient checkpointing)\n"
    )
    print(estimate_table(rows, args.cap_gib, args.small_cap_gib))
    est = {r["model"]: r["est"] for r in rows}
    has_cuda = torch.cuda.is_available()
    if args.estimate_only or (not has_cuda and not args.dry_run):
        print("\nGPU figures pending: no CUDA device here (run this script on a GPU machine).")
        return 0
    args.work_dir = args.work_dir or str(Path(args.out) / "work")
    if args.dry_run:
        print("\nDry run: tiny twins on CPU (the code path only; no memory figures).")
    results = run_plan(args, est)
    write_outputs(args, results, est)
    print("\n" + gpu_table(results))
    print(f"\nwritten: {Path(args.out) / 'gpu_fit.md'}, {Path(args.out) / 'gpu_fit.json'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

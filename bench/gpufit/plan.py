"""Which runs to launch (each a worker subprocess under a deadline) and the tables of their results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "gpu_fit.py"  # the worker runs as `gpu_fit.py --worker`


def launch(args, model: str, cap: float, quant: str, gc: bool, label: str, deadline: float) -> dict:
    remaining = deadline - time.time()
    base = {"model": model, "cap_gib": cap, "quant": quant, "gc": gc, "label": label}
    if remaining < args.min_run_s:
        return {**base, "status": "not run (time budget)"}
    result = Path(args.work_dir) / "results" / f"{model}-{label}.json"  # $OUT keeps few files: all go in gpu_fit.json
    result.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--worker",
        "--model",
        model,
        "--cap-gib",
        str(cap),
        "--quant",
        quant,
        "--label",
        label,
        "--seed-dir",
        str(args.seed_dir),
        "--result",
        str(result),
        "--run-dir",
        str(Path(args.work_dir) / f"{model}-{label}"),
    ]
    cmd += ["--gc"] if gc else []
    cmd += ["--dry-run"] if args.dry_run else []
    cmd += [] if args.force_length else ["--no-force-length"]
    print(
        f"\n=== {model} [{label}] cap {cap:g} GiB, {quant}{', grad-ckpt' if gc else ''} "
        f"(budget left {remaining:.0f} s)",
        flush=True,
    )
    t0 = time.time()
    try:
        subprocess.run(cmd, timeout=max(10.0, min(args.run_timeout_s, remaining - 5)), check=False)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "wall_s": time.time() - t0}
    if not result.exists():
        return {**base, "status": "crashed (no result)", "wall_s": time.time() - t0}
    res = json.loads(result.read_text())
    print(
        f"--> {model} [{label}]: {res['status']} peak {fmt(res.get('peak_gib'))} GiB, "
        f"step {fmt(res.get('step_time_s'))} s, gen {fmt(res.get('gen_tok_s'), 0)} tok/s "
        f"{res.get('error', '')}",
        flush=True,
    )
    return res


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def passed(r: dict | None, cap: float) -> bool:
    return bool(r) and r.get("status") == "ok" and r.get("peak_gib") is not None and r["peak_gib"] <= cap


def run_plan(args, est: dict) -> list[dict]:
    deadline = time.time() + args.budget_s
    results: list[dict] = []
    big, small = args.cap_gib, args.small_cap_gib

    def record(r):
        results.append(r)
        write_outputs(args, results, est)
        return r

    if args.runs:  # explicit list instead of the plan: MODEL:CAP:QUANT[:gc]
        for spec in args.runs.split(","):
            m, cap, quant, *rest = spec.strip().split(":")
            gc = rest == ["gc"]
            label = f"{cap}-{quant}{'-gc' if gc else ''}"
            record(launch(args, m, float(cap), quant, gc, label, deadline))
        return results

    A = {m: record(launch(args, m, big, "bf16", False, f"A-{big:g}-bf16", deadline)) for m in args.models}
    if small > 0:
        for m in args.models:
            a = A[m]
            if passed(a, 0.95 * small):
                record({**a, "label": f"B-{small:g}", "cap_gib": small, "status": "ok (inferred from A)"})
                continue
            e = est[m]
            # 4-bit only where the bf16 weights leave no room: the estimate for bf16 + GC over the small cap.
            quant = "nf4" if e["bf16_gc"]["peak"] > 0.9 * small else "bf16"
            # Gradient checkpointing unless A shows the default config fits once the weights shrink.
            fits_without_gc = passed(a, big) and (
                a["peak_gib"] - e["bf16"]["weights"] + e["nf4_gc"]["weights"] <= 0.9 * small
                if quant == "nf4"
                else a["peak_gib"] <= 0.9 * small
            )
            b = record(launch(args, m, small, quant, not fits_without_gc, f"B-{small:g}-{quant}", deadline))
            if quant == "bf16" and b.get("status") == "oom":  # bf16 + GC did not fit after all: try NF4 + GC
                record(launch(args, m, small, "nf4", True, f"B-{small:g}-nf4", deadline))
    # C: what fits under the big cap for the models whose GPU defaults did not (unless a B run already says so).
    for m in args.models:
        if A[m].get("status") == "oom" and not any(
            r["model"] == m and r.get("gc") and r.get("quant") == "bf16" and passed(r, big) for r in results
        ):
            record(launch(args, m, big, "bf16", True, f"C-{big:g}-bf16-gc", deadline))
    return results


def gpu_table(results: list[dict]) -> str:
    lines = [
        "| model | run | cap GiB | base weights | grad ckpt | params | weights GiB | peak alloc GiB | peak phase "
        "| peak reserved GiB | result | step s | gen s | gen tok/s | mean len | judge s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        phases = r.get("phase_peak_gib") or {}
        phase = max(phases, key=phases.get) if phases else "-"
        if r.get("status") == "oom":
            phase = f"OOM in {r.get('failed_in') or '?'}"
        status = r.get("status", "?")
        if status == "ok" and r.get("peak_gib") is None:
            status = "ran (no CUDA: no figures)"
        elif status == "ok":
            status = "pass" if r.get("peak_gib") is not None and r["peak_gib"] <= r["cap_gib"] else "fail (over cap)"
        elif status == "oom":
            status = "FAIL (OOM)"
        t = r.get("timings_s") or {}
        lines.append(
            f"| {r['model']} | {r.get('label', '')} | {r['cap_gib']:g} | {r.get('quant', '')} | "
            f"{'yes' if r.get('gc') else 'no'} | {fmt((r.get('params') or 0) / 1e9, 2) if r.get('params') else '-'} B | "
            f"{fmt(r.get('weights_gib'))} | {fmt(r.get('peak_gib'))} | {phase} | {fmt(r.get('peak_reserved_gib'))} | "
            f"{status} | {fmt(r.get('step_time_s'))} | {fmt(t.get('generate'))} | {fmt(r.get('gen_tok_s'), 0)} | "
            f"{fmt(r.get('mean_completion_len'), 0)} | {fmt(t.get('judge'))} |"
        )
    return "\n".join(lines)


def write_outputs(args, results, est) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_fit.json").write_text(json.dumps({"estimate": est, "runs": results}, indent=1, default=str))
    (out / "gpu_fit.md").write_text(gpu_table(results) + "\n")

"""Battery speed: the fast multiple-choice engine against lm-eval's HFLM loop, side by side, per local task.

    OMP_NUM_THREADS=1 python bench/battery_speed.py [--items 24] [--data-dir ../shared/data] [--out FILE]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/battery_speed.py

Embedded SmolLM2-135M, fp32, one thread. For every local task the same `--items` items (the suite's stratified
selection) are scored by both engines in one process, alternating, after one warm-up chunk each; every answer is
compared (same choice, |delta log-likelihood|). The are-you-sure probe (its own scorer, two prompts per item)
gets a row too: its plain batched forward (what `--backend lm-eval` runs) against the fast engine; there the
last two columns compare letter probabilities and both picks. Floor: the FLOPs the fast engine cannot avoid (every distinct
token of the call through the transformer once, vocabulary logits only where a token is scored) divided by the
matmul rate measured in the same process; "% of floor" = floor time / measured time.
The CPU (model, ISA flags torch dispatches to) is printed with the numbers.

bf16 columns (`hmx eval --battery-dtype auto` where the CPU computes bf16 natively, or `--bf16` to force): the fast
engine on a bf16 copy (fp32 output layer), timed in the same run, its answers and log-likelihoods compared with
lm-eval's fp32 ones: what the faster precision changes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import REPO  # noqa: E402  (first: sets threads before torch loads)


def matmul_gflops(torch) -> float:
    """fp32 rate of the model's commonest matmul shape (tokens x hidden) @ (hidden x mlp), this thread count."""
    a, b = torch.randn(256, 576), torch.randn(576, 1536)
    for _ in range(20):
        a @ b
    n, t0 = 300, time.perf_counter()
    for _ in range(n):
        a @ b
    return n * 2 * 256 * 576 * 1536 / (time.perf_counter() - t0) / 1e9


def weights(model) -> tuple[int, int]:
    """(parameters every token runs through, vocabulary head parameters): FLOPs per token are 2x each."""
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return body - (0 if model.config.tie_word_embeddings else head), head


def needed_flops(model, pairs) -> float:
    """FLOPs of the work no engine can skip: each distinct token once through the body, logits where scored."""
    from hmxfeel.evals import fastmc

    body, head = weights(model)
    contexts = sorted({tuple(c) for c, _ in pairs}, key=len, reverse=True)
    shared = fastmc.common_prefix(contexts)
    tokens = shared + sum(len(c) - shared for c in contexts) + sum(len(k) - 1 for _, k in pairs)
    scored = len(contexts) + sum(len(k) - 1 for _, k in pairs)
    return 2 * body * tokens + 2 * head * scored


def cpu_info(torch) -> dict:
    flags = set()
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    return {
        "cpu": model,
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def time_engine(lmeval, lm, task, docs) -> tuple[float, list]:
    t0 = time.perf_counter()
    samples = lmeval.evaluate_chunk(lm, task, docs)
    return time.perf_counter() - t0, sorted(samples, key=lambda s: s["doc_id"])


def read_flops(model, contexts: list[list[int]], added: list[list[int]]) -> float:
    """FLOPs no engine can skip for next-token reads: each distinct context token once (the shared prefix once),
    each follow-up's added tokens once, vocabulary logits once per read."""
    from hmxfeel.evals import fastmc

    body, head = weights(model)
    distinct = sorted({tuple(c) for c in contexts}, key=len, reverse=True)
    shared = fastmc.common_prefix(distinct)
    tokens = shared + sum(len(c) - shared for c in distinct) + sum(len(a) for a in added)
    return 2 * body * tokens + 2 * head * (len(contexts) + len(added))


def time_are_you_sure(loaded, data: Path, n: int, engine: str, before_timing=lambda: None, model=None):
    """The are-you-sure probe on `n` TruthfulQA MC1 items (after 4 warm-up items) with one of its engines; the
    plain one in the batches `hmx eval --backend lm-eval` uses (8), the fast one in its chunks (64)."""
    from hmxfeel.evals import areyousure
    from hmxfeel.evals import data as data_mod

    items = data_mod.select(data_mod.truthfulqa_mc1(data), n + 4, seed=0)
    batch = 64 if engine == "fast" else 8
    run, model = areyousure.run, model or loaded.model
    run(model, loaded.tokenizer, loaded.family, items[:4], lambda rows: None, batch_size=batch, engine=engine)
    before_timing()
    rows: list = []
    t0 = time.perf_counter()
    run(model, loaded.tokenizer, loaded.family, items[4:], rows.extend, batch_size=batch, engine=engine)
    return time.perf_counter() - t0, rows


def are_you_sure_row(loaded, data: Path, n: int, gflops: float, bf16=None) -> dict:
    """Both engines of the are-you-sure probe side by side (same items; picks and letter probabilities compared);
    the floor counts the reads the fast engine was asked for (first prompts, and the second turns' added tokens)."""
    from hmxfeel.evals import fastmc

    real, contexts, added = fastmc.next_token_logprobs, [], []

    def spy(model, ctxs, follow=None, budget=None):
        def recorded(i, first):
            more = follow(i, first)
            added.extend([more] if more else [])
            return more

        contexts.extend(ctxs)
        return real(model, ctxs, recorded if follow else None, budget)

    t_ref, ref = time_are_you_sure(loaded, data, n, "plain")
    fastmc.next_token_logprobs = spy
    try:
        t_fast, fast = time_are_you_sure(
            loaded, data, n, "fast", before_timing=lambda: (contexts.clear(), added.clear())
        )
    finally:
        fastmc.next_token_logprobs = real
    floor_s = read_flops(loaded.model, contexts, added) / (gflops * 1e9)
    keys = ("probs_before", "probs_after")
    diff = max(abs(x - y) for a, b in zip(fast, ref) for k in keys for x, y in zip(a[k], b[k]))
    same = sum(a["pred_before"] == b["pred_before"] and a["pred_after"] == b["pred_after"] for a, b in zip(fast, ref))
    extra = {}
    if bf16 is not None:
        t_b, b16 = time_are_you_sure(loaded, data, n, "fast", model=bf16)
        diff_b = max(abs(x - y) for a, b in zip(b16, ref) for k in keys for x, y in zip(a[k], b[k]))
        same_b = sum(
            a["pred_before"] == b["pred_before"] and a["pred_after"] == b["pred_after"] for a, b in zip(b16, ref)
        )
        extra = {"bf16_items_s": n / t_b, "bf16_ratio": t_ref / t_b, "bf16_max_abs_dll": diff_b, "bf16_same": same_b}
    return {**extra, "task": "are_you_sure", "items": n, "lm_eval_items_s": n / t_ref, "fast_items_s": n / t_fast,
            "ratio": t_ref / t_fast, "floor_items_s": n / floor_s, "fast_pct_floor": 100 * floor_s / t_fast,
            "lm_eval_pct_floor": 100 * floor_s / t_ref, "max_abs_dll": diff, "same_choice": same}  # fmt: skip


def print_row(row: dict) -> None:
    print(
        f"{row['task']:20} {row['items']:5d} {row['lm_eval_items_s']:12.2f} {row['fast_items_s']:9.2f} "
        f"{row['ratio']:6.2f} {row['floor_items_s']:10.2f} {row['fast_pct_floor']:11.0f}% {row['max_abs_dll']:9.1e} "
        f"{row['same_choice']:3d}/{row['items']}"
        + (
            f" | bf16 {row['bf16_items_s']:6.2f} it/s {row['bf16_ratio']:5.2f}x "
            f"|dLL| {row['bf16_max_abs_dll']:.1e} same {row['bf16_same']}/{row['items']}"
            if "bf16_items_s" in row
            else ""
        ),
        flush=True,
    )


def bf16_copy(torch, models):
    """The embedded model as `--battery-dtype bfloat16` runs it: bf16 body, fp32 output layer."""
    copy = models.load("embedded", device="cpu", dtype=torch.float32).model
    models.cast_for_battery(copy, torch.bfloat16)
    return copy


def bf16_cols(lmeval, lm, task, docs, ref) -> dict:
    """The bf16 engine on the same docs, compared with lm-eval's fp32 answers."""
    t_b, samples = time_engine(lmeval, lm, task, docs)
    lls = [(lmeval.loglikelihoods(a), lmeval.loglikelihoods(b)) for a, b in zip(samples, ref)]
    return {
        "bf16_s": t_b,
        "bf16_max_abs_dll": max(abs(x - y) for a, b in lls for x, y in zip(a, b)),
        "bf16_same": sum(a.index(max(a)) == b.index(max(b)) for a, b in lls),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=24, help="items per task")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", help="also write the rows as JSON here")
    ap.add_argument("--only", help="comma-separated tasks to time (local task names, are_you_sure); default all")
    ap.add_argument("--bf16", action="store_true", help="bf16 columns even where `auto` would keep fp32")
    args = ap.parse_args(argv)
    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"# {data} is absent: nothing to measure (pass --data-dir, the layout of ../shared/data)")
        return 0

    import torch

    from hmxfeel import models
    from hmxfeel.evals import fastmc, lmeval

    loaded = models.load("embedded", device="cpu", dtype=torch.float32)
    info = {**cpu_info(torch), "matmul_gflops": round(matmul_gflops(torch), 1)}
    print(json.dumps(info))
    lms = {e: lmeval.make_lm(loaded.model, loaded.tokenizer, loaded.family, engine=e) for e in lmeval.ENGINES}
    bf16 = None
    if args.bf16 or models.battery_dtype(loaded.model, "auto") == torch.bfloat16:
        bf16 = bf16_copy(torch, models)
        lms["bf16"] = lmeval.make_lm(bf16, loaded.tokenizer, loaded.family, engine="fast")
    info["bf16_columns"] = bf16 is not None
    captured: list = []
    real = fastmc.loglikelihoods

    def capture(model, pairs, budget=None):
        captured.append(pairs)
        return real(model, pairs, budget)

    rows = []
    print(
        f"{'task':20} {'items':>5} {'lm-eval it/s':>12} {'fast it/s':>9} {'ratio':>6} {'floor it/s':>10} "
        f"{'fast % floor':>12} {'max |dLL|':>9} {'same':>6}"
    )
    only = set(args.only.split(",")) if args.only else None
    for name in lmeval.LOCAL_TASKS:
        if only and name not in only:
            continue
        task = lmeval.load_local_task(name, data, args.items + 4, seed=0)
        warm, docs = list(range(4)), list(range(4, len(task.eval_docs)))
        for lm in lms.values():
            lmeval.evaluate_chunk(lm, task, warm)
        t_ref, ref = time_engine(lmeval, lms["lm-eval"], task, docs)
        fastmc.loglikelihoods, captured[:] = capture, []
        t_fast, fast = time_engine(lmeval, lms["fast"], task, docs)
        fastmc.loglikelihoods = real
        extra = bf16_cols(lmeval, lms["bf16"], task, docs, ref) if bf16 is not None else {}
        if extra:
            extra.update(bf16_items_s=len(docs) / extra["bf16_s"], bf16_ratio=t_ref / extra["bf16_s"])
        floor_s = sum(needed_flops(loaded.model, p) for p in captured) / (info["matmul_gflops"] * 1e9)
        lls = [(lmeval.loglikelihoods(a), lmeval.loglikelihoods(b)) for a, b in zip(fast, ref)]
        diff = max(abs(x - y) for a, b in lls for x, y in zip(a, b))
        same = sum(a.index(max(a)) == b.index(max(b)) for a, b in lls)
        n = len(docs)
        row = {
            "task": name,
            "items": n,
            "lm_eval_items_s": n / t_ref,
            "fast_items_s": n / t_fast,
            "ratio": t_ref / t_fast,
            "floor_items_s": n / floor_s,
            "fast_pct_floor": 100 * floor_s / t_fast,
            "lm_eval_pct_floor": 100 * floor_s / t_ref,
            "max_abs_dll": diff,
            "same_choice": same,
            **extra,
        }
        rows.append(row)
        print_row(row)
    if not only or "are_you_sure" in only:  # its own scorer: "lm-eval" column = the plain forward it uses there
        rows.append(are_you_sure_row(loaded, data, args.items, info["matmul_gflops"], bf16))
        print_row(rows[-1])
    total_ref = sum(r["items"] / r["lm_eval_items_s"] for r in rows)
    total_fast = sum(r["items"] / r["fast_items_s"] for r in rows)
    print(f"# all tasks: lm-eval {total_ref:.1f} s, fast {total_fast:.1f} s, ratio {total_ref / total_fast:.2f}")
    if bf16 is not None:
        total_b = sum(r["items"] / r["bf16_items_s"] for r in rows)
        print(f"# all tasks: bf16 fast {total_b:.1f} s, ratio to lm-eval fp32 {total_ref / total_b:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

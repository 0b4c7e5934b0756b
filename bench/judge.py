"""Judge cost: the shipped default judge (as `hmx train` builds it here) and the others vs the generative judge.

    OMP_NUM_THREADS=1 python bench/judge.py [--answers 8] [--tokens 48] [--repeats 3]

Generates `--answers` completions of `--tokens` tokens once (fixed seed, packaged eval prompts, embedded
SmolLM2-135M), then times every judge on exactly those completions (all three rubric criteria). Each judge gets
one untimed warm-up call (for the frozen logit judge this also fills its rubric-prefix KV cache, which it keeps
for its lifetime: the steady state during training), then `--repeats` timed calls; the median is reported.

Peak memory: VmHWM of this process, reset before each judge (writing 5 to /proc/self/clear_refs), so each row
shows the peak RSS reached while that judge ran (the model itself is always resident).
The last lines are ratios measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import REPO, peak_rss_mib, reset_peak_rss  # noqa: E402  (first: sets threads before torch loads)


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean rank)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return float("nan") if va == 0 or vb == 0 else cov / (va * vb)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from hmxfeel import models
    from hmxfeel import prompts as prompts_mod
    from hmxfeel import rubric as rubric_mod
    from hmxfeel.evals.humanlike import generate
    from hmxfeel.judge import GenerativeJudge, LogitJudge, make_judge
    from hmxfeel.reward import score_answers

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    loaded = models.load("embedded", device="cpu")
    model, tok, family = loaded.model, loaded.tokenizer, loaded.family
    rubric = rubric_mod.load(None, extra_formats=REPO / "bench" / "judge_variants.yaml")
    users = [p.prompt for p in prompts_mod.load(None).split("eval")[: args.answers]]
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    answers = generate(model, tok, family, users, args.seed, sampling)
    n_tok = [len(tok.encode(a, add_special_tokens=False)) for a in answers]
    print(
        f"# {len(answers)} completions, mean {statistics.fmean(n_tok):.1f} tokens, seed {args.seed}; "
        f"{len(rubric.names)} criteria; torch threads {torch.get_num_threads()}"
    )

    from hmxfeel.config import TrainConfig
    from hmxfeel.judge import judge_spec
    from hmxfeel.train import _build_judge

    # The shipped default exactly as `hmx train` builds it on this machine (judge_dtype "auto" resolved here).
    cfg = TrainConfig.for_device("cpu")
    default = _build_judge(cfg, loaded, rubric)
    spec = judge_spec(default)
    default_name = f"shipped default: {spec['format']} ({spec['kind']}), {spec.get('dtype', '?')}"
    auto_copy = models.judge_copy_for(loaded, "auto")  # what 'auto' gives every other judge too
    auto_dtype = "bf16 copy" if auto_copy is not None else "fp32"
    common = dict(identity="frozen", batch_size=8, format_name="yes_no")
    variants = [
        (default_name, lambda: default),
        (
            "logit yes_no fp32, no prefix cache",
            lambda: LogitJudge(model, tok, family, rubric, prefix_cache=False, **common),
        ),
        (
            "logit yes_no fp32, prefix cache",
            lambda: LogitJudge(model, tok, family, rubric, prefix_cache=True, **common),
        ),
        (
            f"likelihood demonstrations (paper-faithful prompt), {auto_dtype}",
            lambda: make_judge(
                "logit",
                model,
                tok,
                family,
                rubric,
                frozen_model=auto_copy,
                **{**common, "format_name": "demonstrations"},
            ),
        ),
        (
            f"likelihood (judge_variants.yaml), {auto_dtype}",
            lambda: make_judge(
                "logit", model, tok, family, rubric, frozen_model=auto_copy, **{**common, "format_name": "likelihood"}
            ),
        ),
        (
            f"generative yes_no (sampled 'Score: N'), {auto_dtype}",
            lambda: GenerativeJudge(model, tok, family, rubric, frozen_model=auto_copy, **common),
        ),
    ]
    print(f"# judge spec of the default: {spec}")
    rows, overall = [], {}
    can_reset = reset_peak_rss()
    for name, build in variants:
        reset_peak_rss()
        judge = build()
        torch.manual_seed(args.seed)
        score_answers(judge, rubric, users, answers)  # warm-up (fills the frozen judge's prefix cache)
        times, result = [], None
        for r in range(args.repeats):
            torch.manual_seed(args.seed + r)
            t0 = time.perf_counter()
            result = score_answers(judge, rubric, users, answers)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        overall[name] = result["overall"]
        rows.append((name, med, med / len(answers), min(times), max(times), peak_rss_mib()))
        del judge

    ref = "logit yes_no fp32, prefix cache"
    gen_name = variants[-1][0]
    print()
    print(
        f"| judge | median s / {len(answers)} answers | s per completion | min s | max s | peak RSS MiB"
        f" | Spearman vs generative | Spearman vs {ref} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    gen = overall[gen_name]
    for name, med, per, lo, hi, rss in rows:
        print(
            f"| {name} | {med:.2f} | {per:.3f} | {lo:.2f} | {hi:.2f} | {rss:.0f} | "
            f"{spearman(overall[name], gen):.2f} | {spearman(overall[name], overall[ref]):.2f} |"
        )
    if not can_reset:
        print("# (peak RSS could not be reset between judges: the column is cumulative)")
    per = {name: p for name, _, p, *_ in rows}
    print()
    print("## ratios (medians, same run)")
    for name in per:
        if name != gen_name:
            target = "   (target >= 20x)" if name == default_name else ""
            print(f"generative / {name} = {per[gen_name] / per[name]:.1f}x{target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Judge cost: the logit self-judge vs the generative judge on the same completions, plus rank agreement.

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
    from hmxfeel.judge import GenerativeJudge, LikelihoodJudge, LogitJudge
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

    common = dict(identity="frozen", batch_size=8, format_name="yes_no")
    variants = [
        ("logit fp32, no prefix cache", lambda: LogitJudge(model, tok, family, rubric, prefix_cache=False, **common)),
        ("logit fp32, prefix cache", lambda: LogitJudge(model, tok, family, rubric, prefix_cache=True, **common)),
        (
            "logit bf16 copy, prefix cache",
            lambda: LogitJudge(
                model,
                tok,
                family,
                rubric,
                prefix_cache=True,
                frozen_model=models.judge_copy_for(loaded, "bfloat16"),
                **common,
            ),
        ),
        (
            "likelihood bf16 copy, prefix cache (rubric default)",
            lambda: LikelihoodJudge(
                model,
                tok,
                family,
                rubric,
                prefix_cache=True,
                frozen_model=models.judge_copy_for(loaded, "bfloat16"),
                **{**common, "format_name": "likelihood"},
            ),
        ),
        ("generative fp32 (Score: N)", lambda: GenerativeJudge(model, tok, family, rubric, **common)),
    ]
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

    ref = "logit fp32, prefix cache"
    print()
    print(
        f"| judge | median s / {len(answers)} answers | s per completion | min s | max s | peak RSS MiB"
        f" | Spearman vs generative | Spearman vs {ref} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    gen = overall["generative fp32 (Score: N)"]
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
    g = per["generative fp32 (Score: N)"]
    print(f"generative / logit fp32 no cache        = {g / per['logit fp32, no prefix cache']:.1f}x")
    print(f"generative / logit fp32 cache           = {g / per['logit fp32, prefix cache']:.1f}x")
    print(
        f"generative / logit bf16 cache           = {g / per['logit bf16 copy, prefix cache']:.1f}x   (target >= 20x)"
    )
    lik = per["likelihood bf16 copy, prefix cache (rubric default)"]
    print(f"generative / likelihood bf16 cache (default) = {g / lik:.1f}x   (target >= 20x)")
    print(
        f"prefix cache speed-up (fp32)            = {per['logit fp32, no prefix cache'] / per['logit fp32, prefix cache']:.1f}x"
    )
    print(
        f"bf16 copy speed-up (cached)             = {per['logit fp32, prefix cache'] / per['logit bf16 copy, prefix cache']:.1f}x"
    )
    print(f"Spearman(logit bf16 cache, generative)  = {spearman(overall['logit bf16 copy, prefix cache'], gen):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

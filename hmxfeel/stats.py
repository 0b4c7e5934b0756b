"""The report's statistics: paired bootstrap CIs (over items, and over training seeds then items),
direction-aware relative changes, the paper's two summary shares, and the agreement measures of blind ratings
(Krippendorff's alpha between raters, Spearman between an instrument and the raters).

Kept apart from the report's tables and figures so that the numbers a reader cites can be checked on small
fixtures with known answers (tests/test_stats.py).
"""

from __future__ import annotations

import math

import numpy as np

BOOT = 1000  # bootstrap rounds


def _percentile_ci(draw, fn, iters: int, seed: int) -> dict[str, tuple]:
    """{metric: (lo, hi)}, the 2.5 / 97.5 percentiles of fn(A) - fn(B) over `iters` resamples `draw(rng)` ->
    (rows of A, rows of B). Resamples where a metric cannot be computed are skipped; a metric computable in
    fewer than half of them gets no interval."""
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {}
    for _ in range(iters):
        rows_a, rows_b = draw(rng)
        try:
            a, b = fn(rows_a), fn(rows_b)
        except (ZeroDivisionError, KeyError, ValueError):
            continue
        for metric in a.keys() & b.keys():
            d = a[metric]["value"] - b[metric]["value"]
            if d == d:  # not NaN
                diffs.setdefault(metric, []).append(d)
    return {
        m: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for m, v in diffs.items()
        if len(v) > iters // 2
    }


def paired_bootstrap(rows_a: dict, rows_b: dict, fn, iters: int = BOOT, seed: int = 0) -> dict[str, tuple]:
    """{metric: (lo, hi)} of value(A) - value(B), resampling the items both answered (same ids in both)."""
    ids = sorted(set(rows_a) & set(rows_b))
    if len(ids) < 2:
        return {}

    def draw(rng):
        pick = [ids[k] for k in rng.integers(0, len(ids), len(ids))]
        return [rows_a[i] for i in pick], [rows_b[i] for i in pick]

    return _percentile_ci(draw, fn, iters, seed)


def seed_bootstrap(seeds_a: list[dict], seeds_b: list[dict], fn, iters: int = BOOT, seed: int = 0) -> dict[str, tuple]:
    """{metric: (lo, hi)} of value(A) - value(B) pooled over training seeds: each round draws the seeds with
    replacement, then each drawn seed's shared items with replacement. Resampling the seeds too makes the
    interval carry seed-to-seed variation (a result one lucky seed produced stays uncertain), which a
    bootstrap over the pooled items alone would hide."""
    groups = [(a, b, sorted(set(a) & set(b))) for a, b in zip(seeds_a, seeds_b)]
    groups = [g for g in groups if g[2]]
    if len(groups) < 2:
        return {}

    def draw(rng):
        rows_a, rows_b = [], []
        for g in rng.integers(0, len(groups), len(groups)):
            a, b, ids = groups[g]
            pick = [ids[k] for k in rng.integers(0, len(ids), len(ids))]
            rows_a += [a[i] for i in pick]
            rows_b += [b[i] for i in pick]
        return rows_a, rows_b

    return _percentile_ci(draw, fn, iters, seed)


def signed_change(new: float, old: float, better: str) -> float | None:
    """Relative change of `new` vs `old`, positive = improvement in the metric's better direction."""
    if new is None or old is None or better not in ("higher", "lower") or old == 0:
        return None
    rel = (new - old) / abs(old)
    return rel if better == "higher" else -rel


def bias_aware(metric: str, better: str, value):
    """Bias scores are better near zero: compare |bias| (lower is better)."""
    if value is not None and metric.startswith("bias"):
        return abs(value), "lower"
    return value, better


def summary(cells: list[float]) -> dict:
    """Share of cells improved or degraded by < 2%, and share degraded by > 10% (the paper's two numbers)."""
    n = len(cells)
    return {
        "n": n,
        "within_2pct": sum(c > -0.02 for c in cells) / n if n else math.nan,
        "degraded_10pct": sum(c < -0.10 for c in cells) / n if n else math.nan,
    }


def interval_alpha(units: list[dict]) -> float | None:
    """Krippendorff's alpha (interval level) of ratings given as one {rater: value} mapping per rated unit;
    None where it is undefined (fewer than two raters, or no variation at all)."""
    import krippendorff

    raters = sorted({r for values in units for r in values}, key=str)
    if not units or len(raters) < 2:
        return None
    data = np.array([[values.get(r, np.nan) for values in units] for r in raters], dtype=float)
    try:
        alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    except (ValueError, ZeroDivisionError):  # e.g. every rating the same value: agreement is undefined
        return None
    return alpha if math.isfinite(alpha) else None


def spearman(xs, ys) -> float | None:
    """Spearman's rho; None below three pairs or where either side does not vary."""
    from scipy.stats import spearmanr

    xs, ys = list(xs), list(ys)
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    rho = float(spearmanr(xs, ys).statistic)
    return rho if math.isfinite(rho) else None


def ci_text(ci, digits: int = 3, scale: float = 1.0) -> str:
    """A confidence interval as report text, `*` when it excludes zero ("–" when there is none)."""
    if not ci:
        return "–"
    mark = " *" if ci[0] > 0 or ci[1] < 0 else ""
    return f"[{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]{mark}"

"""Judge validity: how well each instrument agrees with blind raters on the rated set's test part.

Blind ratings are the measure of truth for human-likeness; the self-judge and the lexical markers are
instruments. Per criterion (and overall: the rubric's weighted mean against the raters' overall human-likeness)
this reports Spearman's rho between the instrument and the raters' mean, and the AUC for "rated >= 2" vs
"rated <= 1" (0-3 scales; >= 3 vs <= 2 on the 1-5 scale). The raters' own agreement (Krippendorff's alpha,
interval) is the ceiling. The test part is never used to fit or choose anything: a readout is fitted on dev.
"""

from __future__ import annotations

import math

import numpy as np

from hmxfeel.judge import make_judge
from hmxfeel.lexical import markers
from hmxfeel.reward import score_answers
from hmxfeel.stats import interval_alpha, spearman

OVERALL_SCALE = "humanlike"


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def agreement(scores, means, scale_max: float) -> dict:
    """Spearman and the high-vs-low AUC between an instrument's scores and the raters' means."""
    from sklearn.metrics import roc_auc_score

    s, m = np.asarray(scores, dtype=float), np.asarray(means, dtype=float)
    cut = 2.0 if scale_max <= 3 else 3.0
    keep = (m >= cut) | (m <= cut - 1)
    labels = (m[keep] >= cut).astype(int)
    auc = roc_auc_score(labels, s[keep]) if 0 < labels.sum() < len(labels) else float("nan")
    return {
        "n": len(s),
        "spearman": spearman(s.tolist(), m.tolist()),
        "auc": _finite(auc),
        "n_high": int(labels.sum()),
        "n_low": int(len(labels) - labels.sum()),
    }


def rater_alpha(rows: list[dict], scale: str) -> float | None:
    """Krippendorff's alpha (interval) of the raters on one scale; raters are anonymous slots per answer."""
    return interval_alpha([{i: g[scale] for i, g in enumerate(r["ratings"]) if g.get(scale) is not None} for r in rows])


def targets_for(rubric, fmt=None) -> dict[str, str]:
    """Rubric criterion (and 'overall') -> the rating scale it is compared with."""
    get = fmt.target_of if fmt is not None and fmt.kind == "readout" else (lambda c: c)
    return {**{c: get(c) for c in rubric.names}, "overall": OVERALL_SCALE}


def judge_validity(loaded, rubric, rows: list[dict], formats=None, mode: str = "logit") -> list[dict]:
    """One row per (format, criterion): agreement of that judge format with the raters on `rows`."""
    from hmxfeel.readout import scale_ranges

    ranges = scale_ranges()
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    out = []
    names = formats or [n for n, f in rubric.formats.items() if mode == "logit" or f.kind == "tokens"]
    for name in names:  # the generative judge samples a reply: only formats with score tokens
        judge = make_judge(mode, loaded.model, loaded.tokenizer, loaded.family, rubric, format_name=name)
        scores = score_answers(judge, rubric, prompts, answers)
        for crit, scale in targets_for(rubric, rubric.format(name)).items():
            means = [r["mean"][scale] for r in rows]
            out.append(
                {
                    "instrument": f"self-judge {name}" + (f" ({mode})" if mode != "logit" else ""),
                    "criterion": crit,
                    "scale": scale,
                    **agreement(scores[crit], means, ranges[scale][1]),
                }
            )
    return out


def marker_validity(rubric, rows: list[dict]) -> list[dict]:
    """The lexical markers as an instrument: marker count per criterion (all criteria for overall)."""
    from hmxfeel.readout import scale_ranges

    ranges = scale_ranges()
    counts = [markers(r["answer"]) for r in rows]
    out = []
    for crit, scale in targets_for(rubric).items():
        values = [sum(c.values()) if crit == "overall" else c.get(crit, 0) for c in counts]
        out.append(
            {
                "instrument": "lexical markers",
                "criterion": crit,
                "scale": scale,
                **agreement(values, [r["mean"][scale] for r in rows], ranges[scale][1]),
            }
        )
    return out


def ceiling(rubric, rows: list[dict]) -> list[dict]:
    """Inter-rater agreement per scale: what no instrument can be expected to beat."""
    return [
        {
            "instrument": "raters (Krippendorff alpha)",
            "criterion": crit,
            "scale": scale,
            "n": len(rows),
            "alpha": rater_alpha(rows, scale),
        }
        for crit, scale in targets_for(rubric).items()
    ]

"""Summary: rater means per condition, paired differences with CIs, rater agreement, and how well each
instrument (self-judge, lexical markers, independent judge) tracks the raters."""

from __future__ import annotations

import math

from hmxfeel.io import read_jsonl
from hmxfeel.rating.scales import CRITERIA, load_scales
from hmxfeel.rating.sources import dict_or_none
from hmxfeel.stats import interval_alpha, spearman

COMPARISONS = (("human", "reverse"), ("human", "base"))


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _num(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _scale_names(rows: list[dict]) -> list[str]:
    present = {s for r in rows for s in (r.get("ratings") or {})}
    order = load_scales().names
    return [s for s in order if s in present] + sorted(present - set(order))


def _answers(rows: list[dict], names: list[str]) -> list[dict]:
    """One record per rated answer: metadata, {scale: {rater: value}} and the raters' mean per scale. The same
    answer rated on several sheets (same source file and row) pools its raters."""
    by: dict = {}
    for r in rows:
        ident = (
            (r.get("source"), r.get("row"))
            if r.get("source") and r.get("row") is not None
            else (r.get("sheet"), r["id"])
        )
        rec = by.setdefault(ident, {"meta": r, "lists": {s: {} for s in names}})
        for s in names:
            value = _num((r.get("ratings") or {}).get(s))
            if value is not None:
                rec["lists"][s].setdefault(r["rater"], []).append(value)
    out = []
    for rec in by.values():
        by_rater = {s: {rater: _mean(v) for rater, v in rec["lists"][s].items()} for s in names}
        out.append({"meta": rec["meta"], "by_rater": by_rater, "mean": {s: _mean(by_rater[s].values()) for s in names}})
    return out


def _order(key: tuple) -> tuple:
    return tuple("" if v is None else f"{v:09d}" if isinstance(v, int) else str(v) for v in key)


def _group_means(answers: list[dict], names: list[str], fields: tuple[str, ...]) -> list[dict]:
    groups: dict = {}
    for a in answers:
        groups.setdefault(tuple(a["meta"].get(f) for f in fields), []).append(a)
    out = []
    for key in sorted(groups, key=_order):
        members = groups[key]
        row = dict(zip(("source" if f == "kind" else f for f in fields), key))
        row["seeds"] = sorted({a["meta"].get("seed") for a in members if a["meta"].get("seed") is not None})
        row["n"] = len(members)
        row["means"] = {s: _mean(a["mean"][s] for a in members if a["mean"][s] is not None) for s in names}
        out.append(row)
    return out


def _side(answers: list[dict], condition: str, scale: str) -> dict:
    """{seed: {prompt_id: rater mean}} of one condition (duplicates of a prompt averaged)."""
    acc: dict = {}
    for a in answers:
        m, value = a["meta"], a["mean"][scale]
        if m.get("condition") == condition and m.get("prompt_id") is not None and value is not None:
            acc.setdefault(m.get("seed"), {}).setdefault(str(m["prompt_id"]), []).append(value)
    return {seed: {p: _mean(v) for p, v in d.items()} for seed, d in acc.items()}


def _mean_metric(values: list[float]) -> dict:
    return {"mean": {"value": sum(values) / len(values)}}


def _paired_scale(answers: list[dict], cond_a: str, cond_b: str, scale: str) -> dict | None:
    """A − B on the same prompts, paired within a seed; an answer without a seed (the base model) pairs with
    every seed's answer to the same prompt. Several seeds: seed_bootstrap, so the CI carries seed variation."""
    from hmxfeel.stats import paired_bootstrap, seed_bootstrap

    side_a, side_b = _side(answers, cond_a, scale), _side(answers, cond_b, scale)
    groups, seeds = [], []
    for seed in sorted(side_a, key=lambda s: _order((s,))):
        other = side_b.get(seed, side_b.get(None))
        shared = sorted(set(side_a[seed]) & set(other or {}))
        if shared:
            groups.append(({p: side_a[seed][p] for p in shared}, {p: other[p] for p in shared}))
            seeds.append(seed)
    if not groups:
        return None
    diffs = [a[p] - b[p] for a, b in groups for p in a]
    if len(groups) >= 2:
        ci = seed_bootstrap([a for a, _ in groups], [b for _, b in groups], _mean_metric).get("mean")
    else:
        ci = paired_bootstrap(*groups[0], _mean_metric).get("mean")
    return {
        "n_pairs": len(diffs),
        "seeds": [s for s in seeds if s is not None],
        "diff": _mean(diffs),
        "ci95": list(ci) if ci else None,
    }


def _paired(answers: list[dict], names: list[str]) -> list[dict]:
    """Paired differences per (source kind, model), comparison and scale, where both sides exist: pooled over
    seeds, then (with several seeds) each seed on its own, so a reader sees whether every seed agrees."""
    out = []
    for kind, model in sorted({(a["meta"].get("kind"), a["meta"].get("model")) for a in answers}, key=_order):
        mine = [a for a in answers if (a["meta"].get("kind"), a["meta"].get("model")) == (kind, model)]
        for cond_a, cond_b in COMPARISONS:
            for scale in names:
                row = _paired_scale(mine, cond_a, cond_b, scale)
                if not row:
                    continue
                out.append({"source": kind, "model": model, "a": cond_a, "b": cond_b, "scale": scale, **row})
                for seed in row["seeds"] if len(row["seeds"]) > 1 else ():
                    one = [a for a in mine if a["meta"].get("seed") in (seed, None)]  # the base model has no seed
                    out.append(
                        {
                            "source": kind,
                            "model": model,
                            "a": cond_a,
                            "b": cond_b,
                            "scale": scale,
                            **_paired_scale(one, cond_a, cond_b, scale),
                        }
                    )
    return out


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import pearsonr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    r = float(pearsonr(xs, ys).statistic)
    return r if math.isfinite(r) else None


def _agreement(answers: list[dict], names: list[str]) -> list[dict]:
    out = []
    for s in names:
        rated = [a["by_rater"][s] for a in answers if a["by_rater"][s]]
        multi = [v for v in rated if len(v) >= 2]
        raters = sorted({r for v in rated for r in v})
        row = {
            "scale": s,
            "raters": len(raters),
            "n_answers": len(rated),
            "n_multi": len(multi),
            "alpha": interval_alpha(multi),
            "pearson": None,
            "n_pearson": 0,
        }
        if len(raters) == 2:  # with exactly two raters, also the plain correlation a reader knows
            both = [v for v in multi if len(v) == 2]
            row["pearson"] = _pearson([v[raters[0]] for v in both], [v[raters[1]] for v in both])
            row["n_pearson"] = len(both)
        out.append(row)
    return out


def _instrument_values(meta: dict, scale: str) -> dict[str, float]:
    """The automatic measures of one answer that correspond to `scale` (none for coherence)."""
    crit = scale if scale in CRITERIA else "overall" if scale == "humanlike" else None
    if crit is None:
        return {}
    out = {}
    for field in ("self", "independent"):
        value = _num((dict_or_none(meta.get(field)) or {}).get(crit))
        if value is not None:
            out[f"{field}_judge"] = value
    lexical = dict_or_none(meta.get("lexical")) or {}
    counts = [_num(lexical.get(c)) for c in (CRITERIA if scale == "humanlike" else (scale,))]
    if lexical and all(c is not None for c in counts):
        out["lexical"] = sum(counts)
    return out


def _instruments(answers: list[dict], names: list[str]) -> list[dict]:
    """Spearman rho between the raters' mean and each automatic measure, over every answer that has both."""
    out = []
    for s in names:
        pairs: dict = {}
        for a in answers:
            if a["mean"][s] is None:
                continue
            for inst, value in _instrument_values(a["meta"], s).items():
                pairs.setdefault(inst, []).append((a["mean"][s], value))
        for inst in ("self_judge", "independent_judge", "lexical"):
            if inst in pairs:
                xs, ys = [p[0] for p in pairs[inst]], [p[1] for p in pairs[inst]]
                out.append({"scale": s, "instrument": inst, "n": len(xs), "rho": spearman(xs, ys)})
    return out


def _clean(obj):
    """JSON-safe: NaN / inf become None (null), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def summarize(rows: list[dict]) -> dict:
    """Everything `hmx rate summary` shows, from joined rating rows (the output of `hmx rate import`)."""
    names = _scale_names(rows)
    answers = _answers(rows, names)
    return _clean(
        {
            "n_rows": len(rows),
            "n_answers": len(answers),
            "raters": sorted({r["rater"] for r in rows}),
            "scales": names,
            "groups": _group_means(answers, names, ("kind", "model", "condition", "seed")),
            "pooled": _group_means(answers, names, ("kind", "model", "condition")),
            "paired": _paired(answers, names),
            "agreement": _agreement(answers, names),
            "instruments": _instruments(answers, names),
        }
    )


def load_joined(paths) -> list[dict]:
    return [r for p in paths for r in read_jsonl(p, required=("id", "rater", "ratings"))]

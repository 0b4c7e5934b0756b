"""What a run can and cannot tell about the paper's benchmark claims: seed-pooled cells with their power.

For every headline cell (a model's benchmark metric, no per-category breakdown) this pools the training seeds
and gives HL, reverse and base values, the HL - reverse and HL - base differences with 95% CIs, and the
minimum detectable effect (MDE) of the paired HL - reverse comparison at 80% power, two-sided alpha 0.05:
    MDE = (z_0.975 + z_0.80) * SE,  SE = the standard deviation of the paired item bootstrap of the difference.
The MDE counts item sampling only (how many items, how often the two models disagree on them); seed-to-seed
variation is in the CIs, which resample seeds as well as items when there are two or more seeds.

The paper's directional claims are then checked one by one: supported (the HL - reverse CI excludes zero in the
claimed direction), contradicted (it excludes zero the other way) or can't tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from hmxfeel.stats import BOOT, paired_bootstrap, seed_bootstrap

POWER, ALPHA = 0.80, 0.05
Z = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))  # 2.80: MDE in standard errors
RESOLVE = 0.02  # the paper's summary counts cells that "improved or lost < 2%" (relative to the contrastive model)
MIN_ROW_N = 30  # breakdown rows with fewer items go to the report's appendix


@dataclass(frozen=True)
class Claim:
    text: str
    eval: str
    metric: str
    hl_is: str  # "lower" or "higher": the paper's direction for HL against the contrastive (reverse) model
    absolute: bool = False  # compare |value| (bias scores: nearer zero = less bias)
    note: str = ""


CLAIMS = (
    Claim("HL agrees less with the user's stated opinion (sycophancy rate)", "sycophancy_opinion", "rate", "lower"),
    Claim("HL gives up a correct answer less often when asked 'are you sure?'", "are_you_sure", "flip_rate", "lower"),
    Claim("HL shows less bias in disambiguated BBQ contexts (|s_DIS|)", "bbq", "bias_disambig", "lower", absolute=True),
    Claim(
        "HL answers ambiguous BBQ contexts correctly ('unknown') more often",
        "bbq",
        "acc_ambig",
        "higher",
        note="direction assumed: the issue lists it among the paper's claims; the paper's text is not public",
    ),
    Claim("HL loses some truthfulness: TruthfulQA MC1", "truthfulqa_mc1", "acc", "lower"),
    Claim("HL loses some truthfulness: TruthfulQA MC2", "truthfulqa_mc2", "acc", "lower"),
)


def _absolute(fn):
    return lambda rows: {m: {**st, "value": abs(st["value"])} for m, st in fn(rows).items()}


def bootstrap_se(rows_a: dict, rows_b: dict, fn, iters: int = BOOT, seed: int = 1) -> dict[str, float]:
    """{metric: SD of value(A) - value(B)} over paired item resamples (the SE the MDE is made of)."""
    ids = sorted(set(rows_a) & set(rows_b))
    if len(ids) < 2:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(iters):
        pick = [ids[k] for k in rng.integers(0, len(ids), len(ids))]
        try:
            a, b = fn([rows_a[i] for i in pick]), fn([rows_b[i] for i in pick])
        except (ZeroDivisionError, KeyError, ValueError):
            continue
        for m in a.keys() & b.keys():
            d = a[m]["value"] - b[m]["value"]
            if d == d:
                draws.setdefault(m, []).append(d)
    return {m: float(np.std(v, ddof=1)) for m, v in draws.items() if len(v) > iters // 2}


def mde(se: float | None, n: int | None) -> float | None:
    """Z x SE, with SE at least sqrt(3)/n: when no item differs in the sample (SE 0), up to 3/n of them may
    still differ (the rule of three), so no cell claims a resolution its items cannot give."""
    if se is None or not n:
        return None
    return Z * max(se, 3**0.5 / n)


def pooled(seed_rows: list[dict]) -> dict:
    """Rows of several seeds as one paired set: ids become "<seed index>/<id>"."""
    return {f"{k}/{i}": r for k, rows in enumerate(seed_rows) for i, r in rows.items()}


def cells(model_dir: Path, seed_dirs: list[Path], eval_name: str, items, metric_fn) -> dict[str, dict]:
    """{metric: cell} of one evaluation pooled over seeds. `items(folder, eval)` -> {id: row}."""
    hl = [items(d / "eval-human", eval_name) for d in seed_dirs]
    rev = [items(d / "eval-reverse", eval_name) for d in seed_dirs]
    base_rows = items(model_dir / "eval-base", eval_name)
    if not any(hl) or not any(rev):
        return {}
    base = [base_rows for _ in seed_dirs]  # the same base answers paired with each seed's answers (for the CI)
    out: dict[str, dict] = {}
    for absolute in (False, True):
        fn = _absolute(metric_fn) if absolute else metric_fn
        ph, pr = pooled(hl), pooled(rev)
        values = {
            "hl": fn(list(ph.values())),
            "rev": fn(list(pr.values())),
            "base": fn(list(base_rows.values())) if base_rows else {},
        }
        boot = seed_bootstrap if len(seed_dirs) > 1 else (lambda a, b, f: paired_bootstrap(a[0], b[0], f))
        ci_rev, ci_base = boot(hl, rev, fn), (boot(hl, base, fn) if base_rows else {})
        se = bootstrap_se(ph, pr, fn)
        for m, st in values["hl"].items():
            if "/" in m or (absolute and not m.startswith("bias")):
                continue
            key = f"|{m}|" if absolute else m
            out[key] = {
                "n": st.get("n"),
                "hl": st["value"],
                "rev": values["rev"].get(m, {}).get("value"),
                "base": values["base"].get(m, {}).get("value"),
                "ci_rev": ci_rev.get(m),
                "ci_base": ci_base.get(m),
                "mde": mde(se.get(m), len(ph)),
                "seeds": len(seed_dirs),
            }
    return out


def resolves_2pct(cell: dict) -> bool:
    """Whether the cell's paired comparison could see a 2% relative change of the reverse model's value."""
    if cell["mde"] is None or cell["rev"] in (None, 0) or (cell["n"] or 0) < MIN_ROW_N:
        return False
    return cell["mde"] <= RESOLVE * abs(cell["rev"])


def verdict(claim: Claim, cell: dict | None) -> str:
    if not cell or not cell.get("ci_rev"):
        return "not measured"
    lo, hi = cell["ci_rev"]
    if lo < 0 < hi or lo == 0 or hi == 0:
        return f"can't tell (MDE {100 * cell['mde']:.1f} points)" if cell.get("mde") is not None else "can't tell"
    hl_lower = hi < 0
    return "supported" if hl_lower == (claim.hl_is == "lower") else "contradicted"


def claim_cell(claim: Claim, evals: dict[str, dict]) -> dict | None:
    return (evals.get(claim.eval) or {}).get(f"|{claim.metric}|" if claim.absolute else claim.metric)

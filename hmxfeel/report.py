"""The comparison report of an experiment folder: base vs human-like (HL) vs reverse, on every evaluation.

`build_report(run_dir)` writes report.md, a self-contained report.html (figures inlined) and figures/*.png.
Differences come with paired bootstrap 95% CIs over the items both models answered; changes are
direction-aware (a lower sycophancy rate or a smaller |bias| counts as an improvement). The paper's summary
statistics are recomputed next to its published values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hmxfeel import study
from hmxfeel.io import atomic_write_text, read_text
from hmxfeel.stats import bias_aware, ci_text, paired_bootstrap, seed_bootstrap, signed_change, summary

PAPER = {"within_2pct": 0.814, "degraded_10pct": 0.150}  # HMX-feel paper: share of cells, HL vs contrastive


# ---------------------------------------------------------------- loading


# Human-likeness measures quoted in the report's headline table: the training judge and the two independent ones.
HEADLINE = ("self_judge/overall", "independent_judge/overall", "lexical/any", "lexical/markers_per_answer")


def _json(path: Path):
    return json.loads(read_text(path)) if path.exists() else None


def _items(folder: Path, eval_name: str) -> dict[str, dict]:
    path = folder / "items" / f"{eval_name}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in read_text(path).splitlines() if line.strip()]
    return {str(r["id"]): r for r in rows}


def _metric_fn(eval_name: str):
    """rows -> {metric: stat} for an evaluation, the same code that produced the results."""
    if eval_name == "humanlike":
        from hmxfeel.evals.humanlike import metrics

        return metrics
    from hmxfeel.evals.runner import local_metrics

    return lambda rows: local_metrics(eval_name, rows)


def _records(folder: Path) -> dict[tuple[str, str], dict]:
    results = _json(folder / "results.json") or {"records": []}
    return {(r["eval"], r.get("metric") or ""): r for r in results["records"]}


# ---------------------------------------------------------------- tables


def _fmt(x, digits=3):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def comparison_rows(base: Path, hl: Path, rev: Path) -> list[dict]:
    """One row per metric present in the HL results: values, relative changes and paired CIs."""
    rb, rh, rr = _records(base), _records(hl), _records(rev)
    boot: dict[str, dict] = {}
    rows = []
    for (ev, metric), rec in rh.items():
        if rec.get("skipped"):
            rows.append({"eval": ev, "metric": metric or "-", "skipped": rec["skipped"]})
            continue
        if ev not in boot:
            fn = _metric_fn(ev)
            items_b, items_h, items_r = _items(base, ev), _items(hl, ev), _items(rev, ev)
            boot[ev] = {
                "hl_rev": paired_bootstrap(items_h, items_r, fn),
                "hl_base": paired_bootstrap(items_h, items_b, fn),
            }
        vb = (rb.get((ev, metric)) or {}).get("value")
        vr = (rr.get((ev, metric)) or {}).get("value")
        vh = rec["value"]
        better = rec.get("better") or "none"
        (ah, b2), (ar, _), (ab, _) = (
            bias_aware(metric, better, vh),
            bias_aware(metric, better, vr),
            bias_aware(metric, better, vb),
        )
        rows.append(
            {
                "eval": ev,
                "metric": metric,
                "n": rec["n"],
                "better": better,
                "base": vb,
                "hl": vh,
                "rev": vr,
                "rel_hl_rev": signed_change(ah, ar, b2),
                "rel_hl_base": signed_change(ah, ab, b2),
                "ci_hl_rev": boot[ev]["hl_rev"].get(metric),
                "ci_hl_base": boot[ev]["hl_base"].get(metric),
                # Each model's own interval (results.json), for the figures' per-model error bars.
                "ci95_base": (rb.get((ev, metric)) or {}).get("ci95"),
                "ci95_hl": rec.get("ci95"),
                "ci95_rev": (rr.get((ev, metric)) or {}).get("ci95"),
            }
        )
    return rows


MIN_N_FOR_MARK = 10  # a bootstrap over fewer items is too coarse to call a difference


def _ci(ci, n=None) -> str:
    if ci and isinstance(n, int) and n < MIN_N_FOR_MARK:  # no mark: too few items to call a difference
        return f"[{ci[0]:+.3f}, {ci[1]:+.3f}] (n={n})"
    return ci_text(ci)


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:+.1f}%"  # None or NaN (no cells): nothing to show


def table(headers: list[str], rows: list[list[str]], fold: str | None = None) -> dict:
    """A table part; `fold` (a short label) folds it in report.html (long tables fold anyway)."""
    return {"headers": headers, "rows": rows, **({"fold": fold} if fold else {})}


def figure(path: Path | None, caption: str) -> list[dict]:
    """A figure part with its caption ([] when the figure could not be drawn)."""
    return [{"image": path, "caption": caption}] if path else []


def to_markdown(t: dict) -> str:
    lines = ["| " + " | ".join(t["headers"]) + " |", "|" + "---|" * len(t["headers"])]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()] if path.exists() else []


def training_figure(model_dir: Path, seed_dir: Path, out_png: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("rubric/overall", "reward (rubric overall)"),
        ("rubric/feelings", "feelings"),
        ("rubric/intentions", "intentions"),
        ("rubric/self_awareness", "self-awareness"),
        ("monitor/lexical_markers", "lexical markers per rollout (model-free)"),
        ("completions/mean_length", "completion length (tokens)"),
        ("frac_reward_zero_std", "zero-std group fraction"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(15, 6))
    axes.flat[-1].axis("off")
    drawn = False
    for direction, colour in (("human", "tab:red"), ("reverse", "tab:blue")):
        rows = [r for r in _jsonl(seed_dir / direction / "metrics.jsonl") if "reward" in r]
        for ax, (key, title) in zip(axes.flat, panels):
            drawn = _curve(ax, rows, key, colour, direction) or drawn
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    for ax in axes.flat[: len(panels)]:
        if not ax.lines:  # a metric this run did not log
            ax.set_xticks([]), ax.set_yticks([])
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", color="grey", transform=ax.transAxes)
    axes.flat[0].legend()
    fig.suptitle(f"training curves: {model_dir.name} / {seed_dir.name}")
    return _save(fig, out_png)


def _curve(ax, rows: list[dict], key: str, colour: str, label: str) -> bool:
    """One metric by step; where the step's spread over its rollouts is logged (`KEY_std`), a ± 1 SD band."""
    pts = [(r["step"], r[key], r.get(f"{key}_std")) for r in rows if key in r]
    if not pts:
        return False
    steps, means, sds = zip(*pts)
    ax.plot(steps, means, color=colour, label=label)
    if all(sd is not None for sd in sds):
        lo, hi = np.subtract(means, sds), np.add(means, sds)
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.15, linewidth=0)
    return True


TRAINING_CAPTION = (
    "Each line is the step's mean over its rollouts; the shaded bands on the rubric panels are ± 1 SD of the "
    "rollouts' scores within the step (their spread, not a confidence interval of the mean)."
)


def safety_figure(seed_dir: Path, out_png: Path) -> Path | None:
    """The training-time safety slice (safety.jsonl: TruthfulQA MC1 / BBQ disambiguated accuracy by step)."""
    runs = {d: _jsonl(seed_dir / d / "safety.jsonl") for d in ("human", "reverse")}
    keys = sorted({k for rows in runs.values() for r in rows for k in r if k != "step"})
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for direction, colour in (("human", "tab:red"), ("reverse", "tab:blue")):
            pts = sorted((r["step"], r[key]) for r in runs[direction] if key in r)
            if pts:
                steps, values = zip(*pts)
                cis = [_safety_ci(seed_dir / direction, step, key) for step in steps]
                err = _yerr(list(values), cis)
                shift = (0.01 if direction == "human" else -0.01) * max(steps)  # the two runs' bars side by side
                x = np.add(steps, shift)
                ax.errorbar(x, values, yerr=err, marker="o", capsize=3, color=colour, label=direction)
        ax.set_title(f"safety slice: {key}", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylim(0, 1)
    axes.flat[0].legend()
    return _save(fig, out_png)


def _safety_ci(run: Path, step: int, key: str) -> tuple | None:
    """The 95% interval the battery gave a safety-slice value (safety/step-K/battery.json), if it is there."""
    records = (_json(run / "safety" / f"step-{step}" / "battery.json") or {}).get("records", [])
    from hmxfeel.monitors import SAFETY_WATCHED

    for (ev, metric), name in SAFETY_WATCHED.items():
        if name == key:
            for r in records:
                if (r.get("eval"), r.get("metric")) == (ev, metric) and r.get("ci95"):
                    return tuple(r["ci95"])
    return None


SAFETY_CAPTION = (
    "Points: accuracy on the slice at each scored step; error bars: the 95% (Wilson) interval of each value over "
    "the slice's few items, as its battery.json gives it."
)


def safety_rows(seed_dir: Path) -> list[list[str]]:
    """First and last safety-slice value per direction and measure, for the report's table."""
    out = []
    for direction in ("human", "reverse"):
        rows = sorted(_jsonl(seed_dir / direction / "safety.jsonl"), key=lambda r: r["step"])
        for key in sorted({k for r in rows for k in r if k != "step"}):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            first, last = pts[0], pts[-1]
            out.append(
                [
                    direction,
                    key,
                    f"{first[1]:.3f} (step {first[0]})",
                    f"{last[1]:.3f} (step {last[0]})",
                    f"{last[1] - first[1]:+.3f}",
                ]
            )
    return out


def _hl_rows(rows: list[dict]) -> list[dict]:
    """The human-likeness rows a figure can show: on the [0, 1] axis (not counts), with all three values."""
    return [
        r
        for r in rows
        if r.get("eval") == "humanlike"
        and all(r.get(k) is not None for k in ("base", "hl", "rev"))
        and "/" in r["metric"]
        and not r["metric"].endswith("per_answer")
    ]


def _yerr(values: list, cis: list) -> np.ndarray:
    """matplotlib's (2, n) error-bar array from (lo, hi) intervals; no bar where an interval is missing."""
    err = np.zeros((2, len(values)))
    for k, (v, ci) in enumerate(zip(values, cis)):
        if ci and v is not None and all(c == c for c in ci):
            err[:, k] = max(0.0, v - ci[0]), max(0.0, ci[1] - v)
    return err


HUMANLIKE_CAPTION = (
    "Left: each model's value with its own 95% interval over the eval prompts (as results.json gives it: Wilson "
    "for shares, mean ± 1.96 SE for judge scores). Right: the differences HL − reverse and HL − base with the "
    "paired bootstrap 95% CIs of the table above (same items); read a difference from the right panel, not from "
    "overlapping bars on the left. Per-answer counts and answer length are in the table only."
)


def humanlike_figure(rows: list[dict], title: str, out_png: Path) -> Path | None:
    """Values with per-model intervals, and the paired differences with the table's bootstrap CIs."""
    rows = _hl_rows(rows)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(rows)), 4.2))
    x, w = np.arange(len(rows)), 0.27
    labels = [r["metric"].replace("_judge", "") for r in rows]
    for k, (key, label, colour) in enumerate(
        (("base", "base", "grey"), ("hl", "HL", "tab:red"), ("rev", "reverse", "tab:blue"))
    ):
        values = [r[key] for r in rows]
        err = _yerr(values, [r.get(f"ci95_{key}") for r in rows])
        ax.bar(x + (k - 1) * w, values, w, yerr=err, capsize=2, label=label, color=colour, ecolor="black")
    ax.set_ylim(0, 1.22)  # room above 1 for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title("values, 95% interval per model", fontsize=10)
    for k, (key, label, colour) in enumerate(
        (("rev", "HL − reverse", "tab:purple"), ("base", "HL − base", "tab:orange"))
    ):
        diffs = [r["hl"] - r[key] for r in rows]
        err = _yerr(diffs, [r[f"ci_hl_{key}"] for r in rows])
        dx.bar(x + (k - 0.5) * w, diffs, w, yerr=err, capsize=2, label=label, color=colour, ecolor="black")
    dx.axhline(0, color="black", linewidth=0.8)
    dx.margins(y=0.22)
    dx.set_title("differences, paired bootstrap 95% CI", fontsize=10)
    for a in (ax, dx):
        a.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        a.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    fig.suptitle(title)
    return _save(fig, out_png)


def _save(fig, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


# ---------------------------------------------------------------- the report


def pooled_rows(model_dir: Path, seed_dirs: list[Path]) -> list[list[str]]:
    """Headline rows over all finished seeds of a model: values of the pooled answers, seed-resampling CI."""
    if len(seed_dirs) < 2:
        return []
    fn = _metric_fn("humanlike")
    hl = [_items(d / "eval-human", "humanlike") for d in seed_dirs]
    rev = [_items(d / "eval-reverse", "humanlike") for d in seed_dirs]
    base = list(_items(model_dir / "eval-base", "humanlike").values())
    ci = seed_bootstrap(hl, rev, fn)
    values = [
        fn(base) if base else {},
        fn([r for h in hl for r in h.values()]),
        fn([r for x in rev for r in x.values()]),
    ]
    label = f"{model_dir.name} / {len(seed_dirs)} seeds pooled"
    return [
        [label, m, *(_fmt((v.get(m) or {}).get("value")) for v in values), _ci(ci.get(m))]
        for m in HEADLINE
        if m in values[1]
    ]


def _samples(base: Path, hl: Path, rev: Path, k: int = 5) -> list[list[str]]:
    b, h, r = _items(base, "humanlike"), _items(hl, "humanlike"), _items(rev, "humanlike")
    ids = [i for i in b if i in h and i in r][:k]
    return [[b[i]["prompt"], b[i]["answer"], h[i]["answer"], r[i]["answer"]] for i in ids]


def _points(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci_points(ci) -> str:
    return ci_text(ci, digits=1, scale=100)


POWER_NOTE = (
    "Values and differences in points (100 × the metric). {seeds} pooled (n counts items × seeds): the CIs resample "
    "{resampled}; MDE = the "
    "smallest HL − reverse difference this many items would detect with 80% power (two-sided α = 0.05), from the "
    "paired item bootstrap's standard error (item sampling only). `resolves 2%`: MDE ≤ 2% of the reverse model's "
    "value, the size of change the paper's summary share counts."
)
CELL_HEADERS = ["eval", "metric", "n", "base", "HL", "reverse", "HL − reverse (95% CI)", "HL − base (95% CI)", "MDE"]


def _cell_row(ev: str, m: str, c: dict) -> list:
    values = [_points(c[k]) for k in ("base", "hl", "rev")]
    return [ev, m, c["n"], *values, _ci_points(c["ci_rev"]), _ci_points(c["ci_base"]), _points(c["mde"])]


def _claim_row(claim, c: dict | None) -> list:
    text = claim.text + (f" ({claim.note})" if claim.note else "")
    if not c:
        return [text, f"HL {claim.hl_is}", "–", "–", "–", "–", study.verdict(claim, c)]
    return [
        text,
        f"HL {claim.hl_is}",
        c["n"],
        _ci_points(c["ci_rev"]),
        _ci_points(c["ci_base"]),
        _points(c["mde"]),
        study.verdict(claim, c),
    ]


def power_parts(model_dir: Path, seed_dirs: list[Path]) -> tuple[list, list[dict]]:
    """The seed-pooled benchmark cells with n and MDE, and the paper's claims with a verdict each; also the
    cells (for the paper's summary shares, which count only cells able to resolve a 2% change)."""
    records = _records(seed_dirs[0] / "eval-human")
    evals = sorted({ev for (ev, _), r in records.items() if ev != "humanlike" and not r.get("skipped")})
    by_eval = {ev: study.cells(model_dir, seed_dirs, ev, _items, _metric_fn(ev)) for ev in evals}
    rows, cells = [], []
    for ev, metrics in by_eval.items():
        for m, c in metrics.items():
            ok = study.resolves_2pct(c)
            rows.append([*_cell_row(ev, m, c), "yes" if ok else "no"])
            if m.startswith("bias"):  # a signed bias has no better direction; its |bias| row is the cell
                continue
            better = "lower" if m.startswith("|") else (records.get((ev, m)) or {}).get("better", "none")
            cells.append({"eval": ev, "metric": m, "rel": signed_change(c["hl"], c["rev"], better), "resolves": ok})
    claims = [_claim_row(claim, study.claim_cell(claim, by_eval)) for claim in study.CLAIMS]
    n = len(seed_dirs)
    note = POWER_NOTE.format(
        seeds=f"{n} seed{'s' if n > 1 else ''}", resampled="training seeds, then items" if n > 1 else "items"
    )
    claim_headers = ["claim (paper)", "direction", "n", "HL − reverse (95% CI)", "HL − base (95% CI)", "MDE", "verdict"]
    cell_table = table([*CELL_HEADERS, "resolves 2%"], rows, "every benchmark cell with its n and MDE")
    return [note, table(claim_headers, claims), cell_table], cells


def _seed_parts(run_dir: Path, model_dir: Path, seed_dir: Path, several: bool = False) -> dict:
    """One finished seed's sections, its headline rows and its small breakdown rows (for the appendix).
    With `several` seeds, the per-seed benchmark tables are folded: the pooled cells are the ones to read."""
    base, hl, rev = model_dir / "eval-base", seed_dir / "eval-human", seed_dir / "eval-reverse"
    rows = comparison_rows(base, hl, rev)
    label = f"{model_dir.name} / {seed_dir.name}"
    human = [r for r in rows if r["eval"] == "humanlike" and "skipped" not in r]
    bench = [r for r in rows if r["eval"] != "humanlike"]
    # Breakdown rows (per category / set) of under 30 items say little: they go to the appendix.
    small = [r for r in bench if "/" in r["metric"] and "skipped" not in r and (r["n"] or 0) < study.MIN_ROW_N]
    human_rows = [
        [r["metric"], *(_fmt(r[k]) for k in ("base", "hl", "rev")), _ci(r["ci_hl_rev"]), _ci(r["ci_hl_base"])]
        for r in human
    ]
    t_human = table(["measure", "base", "HL", "reverse", "HL − reverse (95% CI)", "HL − base (95% CI)"], human_rows)
    figures = run_dir / "figures"
    train_fig = training_figure(model_dir, seed_dir, figures / f"train-{model_dir.name}-{seed_dir.name}.png")
    human_fig = humanlike_figure(
        human, f"human-likeness: {label}", figures / f"humanlike-{model_dir.name}-{seed_dir.name}.png"
    )
    sections = [
        (f"{label}: human-likeness", [t_human, *figure(human_fig, HUMANLIKE_CAPTION)]),
        (f"{label}: benchmarks", bench_parts([r for r in bench if r not in small], several)),
        (f"{label}: training curves", figure(train_fig, TRAINING_CAPTION) or ["(no training metrics)"]),
        *_safety_section(run_dir, model_dir, seed_dir, label),
        (
            f"{label}: sample answers to the same eval prompts",
            [table(["prompt", "base", "HL", "reverse"], _samples(base, hl, rev))],
        ),
    ]
    headline = [
        [label, r["metric"], *(_fmt(r[k]) for k in ("base", "hl", "rev")), _ci(r["ci_hl_rev"])]
        for r in human
        if r["metric"] in HEADLINE
    ]
    appendix = [
        [label, r["eval"], r["metric"], r["n"], _fmt(r["hl"]), _fmt(r["rev"]), _ci(r["ci_hl_rev"], r["n"])]
        for r in small
    ]
    return {"sections": sections, "headline": headline, "appendix": appendix}


BENCH_HEADERS = [
    "eval",
    "metric",
    "n",
    "better",
    "base",
    "HL",
    "reverse",
    "HL vs rev",
    "HL vs base",
    "HL − rev (95% CI)",
    "HL − base (95% CI)",
]
SKIP_HEADER = "skipped: why"


def bench_parts(rows: list[dict], several: bool = False) -> list[dict]:
    """The benchmark table (each benchmark's own metrics), its per-category rows folded apart, and the parts
    that were skipped with the reason in a column of its own (not in the values' columns)."""
    skipped = [r for r in rows if "skipped" in r]
    breakdown = [r for r in rows if "/" in r["metric"] and r not in skipped]
    main = [r for r in rows if r not in breakdown and r not in skipped]
    fold = "this seed's benchmark values (the pooled cells are above)" if several else None
    parts = [table(BENCH_HEADERS, [_bench_row(r) for r in main], fold)]
    if breakdown:
        parts.append(table(BENCH_HEADERS, [_bench_row(r) for r in breakdown], "per-category breakdown"))
    if skipped:
        parts.append(table(["eval", "metric", SKIP_HEADER], [[r["eval"], r["metric"], r["skipped"]] for r in skipped]))
    return parts


def _bench_row(r: dict) -> list:
    return [
        r["eval"],
        r["metric"],
        r["n"],
        r["better"],
        *(_fmt(r[k]) for k in ("base", "hl", "rev")),
        _pct(r["rel_hl_rev"]),
        _pct(r["rel_hl_base"]),
        _ci(r["ci_hl_rev"], r["n"]),
        _ci(r["ci_hl_base"], r["n"]),
    ]


def _safety_section(run_dir: Path, model_dir: Path, seed_dir: Path, label: str) -> list:
    safety = safety_rows(seed_dir)
    if not safety:
        return []
    fig = safety_figure(seed_dir, run_dir / "figures" / f"safety-{model_dir.name}-{seed_dir.name}.png")
    text = (
        "TruthfulQA MC1 and BBQ disambiguated accuracy on a fixed small slice, scored every `safety_every` steps "
        "while training (step 0 = before training). A small slice: read the trend, not the decimals."
    )
    return [
        (
            f"{label}: safety slice during training",
            [text, table(["run", "measure", "first", "last", "change"], safety), *figure(fig, SAFETY_CAPTION)],
        )
    ]


def _summary_parts(cells: list[dict]) -> list:
    """The paper's two shares count cells (model x benchmark metric, HL vs contrastive). Only cells whose items
    could resolve a 2% change enter them; the rest are counted and shown, not averaged into the shares."""
    usable = [c for c in cells if c["rel"] is not None]
    s = summary([c["rel"] for c in usable if c["resolves"]])
    s_all = summary([c["rel"] for c in usable])
    degraded = sum(c["rel"] < -0.10 for c in usable)
    rows = [["cells (model × metric), HL vs reverse, seeds pooled", f"{s['n']} of {s_all['n']}", str(s_all["n"]), "–"]]
    for label, key in (("improved or degraded by < 2%", "within_2pct"), ("degraded by > 10%", "degraded_10pct")):
        rows.append([label, _pct(s[key]).lstrip("+"), _pct(s_all[key]).lstrip("+"), f"{PAPER[key]:.1%}"])
    headers = [
        "statistic",
        "this run: cells that resolve 2%",
        "this run: all cells (not comparable)",
        "paper (HMX-feel)",
    ]
    return [
        table(headers, rows),
        f"Cells degraded by more than 10%: {degraded} of {len(usable)}. A cell resolves 2% when its minimum detectable "
        "effect (80% power) is at most 2% of the reverse model's value; the others cannot tell a 2% change from noise, "
        "so the shares over all cells are shown apart and not compared with the paper's.",
    ]


INTRO = (
    "Base model vs human-like (HL, rewarded for expressing feelings, intentions and self-awareness) vs reverse "
    "(rewarded for not expressing them). Relative changes are direction-aware: positive = better (for bias scores, "
    "smaller |bias|). CIs are paired bootstrap 95% intervals over the same items; `*` marks a CI that excludes zero "
    f"(not given below {MIN_N_FOR_MARK} items, where the bootstrap is too coarse). With several training seeds, a "
    "model's `seeds pooled` rows resample the seeds as well as the items, so their CIs include seed-to-seed variation."
)


def _manifest(run_dir: Path) -> dict:
    """What every number depends on: stages, the experiment file, each run's record and each evaluation's."""
    stored = run_dir / "experiment.yaml"
    state = _json(run_dir / "stages.json") or {"done": {}}
    manifest = {"stages": state.get("done", {}), "experiment": read_text(stored) if stored.exists() else None}
    if state.get("extensions"):  # seeds added to the experiment after it first ran (hmx run --seeds K)
        manifest["seed_extensions"] = state["extensions"]
    keys = ("model", "direction", "config", "rubric", "prompts", "versions", "device", "steps_done")
    for run_json in sorted(run_dir.glob("*/seed*/*/run.json")):
        rec = _json(run_json)
        manifest[str(run_json.parent.relative_to(run_dir))] = {k: rec.get(k) for k in keys}
    for res in sorted(run_dir.glob("*/**/results.json")):
        manifest[str(res.parent.relative_to(run_dir))] = (_json(res) or {}).get("manifest")
    return manifest


def _front_sections(run_dir: Path) -> list:
    """Said before any number: a dry run on twins first, then blind ratings (the measure of truth for
    human-likeness; the self-judge and the markers further down are instruments)."""
    from hmxfeel.rating import report_parts
    from hmxfeel.twins import report_parts as twin_parts

    dry, blind = twin_parts(run_dir), report_parts(run_dir)
    return [("DRY RUN: random twins, not the real models", dry)] * bool(dry) + [
        ("Blind ratings (the measure of truth for human-likeness)", blind)
    ] * bool(blind)


def _model_parts(run_dir: Path, model_dir: Path) -> dict:
    """A model's per-seed sections, headline and appendix rows, its pooled power section and its cells."""
    out = {"sections": [], "headline": [], "appendix": [], "power": [], "cells": []}
    seed_dirs = sorted(model_dir.glob("seed*"))
    done = [d for d in seed_dirs if all((d / f"eval-{x}" / "results.json").exists() for x in ("human", "reverse"))]
    for seed_dir in seed_dirs:
        if seed_dir not in done:
            out["sections"].append((f"{model_dir.name} / {seed_dir.name}", ["(evaluations not finished yet)"]))
            continue
        parts = _seed_parts(run_dir, model_dir, seed_dir, several=len(done) > 1)
        for key in ("sections", "headline", "appendix"):
            out[key] += parts[key]
    out["headline"] += pooled_rows(model_dir, done)
    if done:
        parts, model_cells = power_parts(model_dir, done)
        out["power"].append((f"{model_dir.name}: the paper's benchmark claims, seeds pooled, with power", parts))
        out["cells"] = [{**c, "model": model_dir.name} for c in model_cells]
    return out


def build_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and figures/ for an experiment folder; returns report.md."""
    run_dir = Path(run_dir)
    parts = {"sections": [], "headline": [], "appendix": [], "power": [], "cells": []}
    for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "eval-base").exists()):
        for key, value in _model_parts(run_dir, model_dir).items():
            parts[key] += value
    sections = parts["sections"]
    if parts["appendix"]:
        small_headers = ["model / seed", "eval", "metric", "n", "HL", "reverse", "HL − rev (95% CI)"]
        small = table(small_headers, parts["appendix"], "breakdown rows under 30 items")
        sections.append(("Appendix: breakdown rows under 30 items", [small]))
    head = table(["model / seed", "measure", "base", "HL", "reverse", "HL − reverse (95% CI)"], parts["headline"])
    manifest = "```\n" + json.dumps(_manifest(run_dir), indent=1, default=str)[:20000] + "\n```"
    headline = ("Headline", [INTRO, head, *_summary_parts(parts["cells"])])
    ordered = [*_front_sections(run_dir), headline, *parts["power"], *sections]
    return _write(run_dir, [*ordered, ("Run manifest", [manifest])])


def _md_part(run_dir: Path, part) -> str:
    if isinstance(part, dict) and "image" in part:
        return f"![{part['image'].stem}]({part['image'].relative_to(run_dir)})\n\n*{part['caption']}*\n"
    if isinstance(part, dict):
        return (f"{part['fold']}:\n\n" if part.get("fold") else "") + to_markdown(part) + "\n"
    if isinstance(part, Path):
        return f"![{part.stem}]({part.relative_to(run_dir)})\n"
    return str(part) + "\n"


def _write(run_dir: Path, sections) -> Path:
    from hmxfeel.report_html import page

    md = ["# hmx-feel report\n"]
    for title, parts in sections:
        md.append(f"## {title}\n")
        md += [_md_part(run_dir, part) for part in parts]
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    atomic_write_text(run_dir / "report.html", page(run_dir, sections))
    return run_dir / "report.md"

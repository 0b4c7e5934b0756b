"""The comparison report of an experiment folder: base vs human-like (HL) vs reverse, on every evaluation.

`build_report(run_dir)` writes report.md, a self-contained report.html (figures inlined) and figures/*.png.
Differences come with paired bootstrap 95% CIs over the items both models answered; changes are
direction-aware (a lower sycophancy rate or a smaller |bias| counts as an improvement). The paper's summary
statistics are recomputed next to its published values.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from hmxfeel import study
from hmxfeel.io import atomic_write_text, read_text
from hmxfeel.stats import bias_aware, paired_bootstrap, seed_bootstrap, signed_change, summary

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
            }
        )
    return rows


MIN_N_FOR_MARK = 10  # a bootstrap over fewer items is too coarse to call a difference


def _ci(ci, n=None) -> str:
    if not ci:
        return "–"
    if isinstance(n, int) and n < MIN_N_FOR_MARK:
        return f"[{ci[0]:+.3f}, {ci[1]:+.3f}] (n={n})"
    mark = " *" if ci[0] > 0 or ci[1] < 0 else ""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]{mark}"


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:+.1f}%"  # None or NaN (no cells): nothing to show


def table(headers: list[str], rows: list[list[str]]) -> dict:
    return {"headers": headers, "rows": rows}


def to_markdown(t: dict) -> str:
    lines = ["| " + " | ".join(t["headers"]) + " |", "|" + "---|" * len(t["headers"])]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def to_html(t: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t["headers"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t["rows"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), color=colour, label=direction)
                drawn = True
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    axes.flat[0].legend()
    fig.suptitle(f"training curves: {model_dir.name} / {seed_dir.name}")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


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
                ax.plot(*zip(*pts), marker="o", color=colour, label=direction)
        ax.set_title(f"safety slice: {key}", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylim(0, 1)
    axes.flat[0].legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


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


def humanlike_figure(rows: list[dict], title: str, out_png: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in rows
        if r.get("eval") == "humanlike"
        and r.get("base") is not None
        and "/" in r["metric"]
        and not r["metric"].endswith("per_answer")
    ]  # counts are not on the [0, 1] axis
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows)), 4))
    x = np.arange(len(rows))
    for k, (key, label, colour) in enumerate(
        (("base", "base", "grey"), ("hl", "HL", "tab:red"), ("rev", "reverse", "tab:blue"))
    ):
        ax.bar(x + (k - 1) * 0.27, [r[key] or 0 for r in rows], 0.27, label=label, color=colour)
    ax.set_xticks(x, [r["metric"].replace("_judge", "") for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title)
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
    if not ci:
        return "–"
    mark = " *" if ci[0] > 0 or ci[1] < 0 else ""
    return f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{mark}"


POWER_NOTE = (
    "Values and differences in points (100 × the metric). {seeds} pooled: the CIs resample {resampled}; MDE = the "
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
    return [note, table(claim_headers, claims), table([*CELL_HEADERS, "resolves 2%"], rows)], cells


def _seed_parts(run_dir: Path, model_dir: Path, seed_dir: Path) -> dict:
    """One finished seed's sections, its headline rows and its small breakdown rows (for the appendix)."""
    base, hl, rev = model_dir / "eval-base", seed_dir / "eval-human", seed_dir / "eval-reverse"
    rows = comparison_rows(base, hl, rev)
    label = f"{model_dir.name} / {seed_dir.name}"
    human = [r for r in rows if r["eval"] == "humanlike" and "skipped" not in r]
    bench = [r for r in rows if r["eval"] != "humanlike"]
    # Breakdown rows (per category / set) of under 30 items say little: they go to the appendix.
    small = [r for r in bench if "/" in r["metric"] and "skipped" not in r and (r["n"] or 0) < study.MIN_ROW_N]
    bench = [r for r in bench if r not in small]
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
        (f"{label}: human-likeness", [t_human, *([human_fig] if human_fig else [])]),
        (f"{label}: benchmarks", [table(BENCH_HEADERS, [_bench_row(r) for r in bench])]),
        (f"{label}: training curves", [train_fig] if train_fig else ["(no training metrics)"]),
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


def _bench_row(r: dict) -> list:
    if "skipped" in r:
        return [r["eval"], r["metric"], "–", "–", "skipped", r["skipped"][:80], "", "", "", "", ""]
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
            [text, table(["run", "measure", "first", "last", "change"], safety), *([fig] if fig else [])],
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


def build_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and figures/ for an experiment folder; returns report.md."""
    run_dir = Path(run_dir)
    sections, cells, headline, power, appendix = [], [], [], [], []
    for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "eval-base").exists()):
        finished = []
        for seed_dir in sorted(model_dir.glob("seed*")):
            if not all((seed_dir / f"eval-{d}" / "results.json").exists() for d in ("human", "reverse")):
                sections.append((f"{model_dir.name} / {seed_dir.name}", ["(evaluations not finished yet)"]))
                continue
            finished.append(seed_dir)
            parts = _seed_parts(run_dir, model_dir, seed_dir)
            sections += parts["sections"]
            headline += parts["headline"]
            appendix += parts["appendix"]
        headline += pooled_rows(model_dir, finished)
        if finished:
            parts, model_cells = power_parts(model_dir, finished)
            power.append((f"{model_dir.name}: the paper's benchmark claims, seeds pooled, with power", parts))
            cells += [{**c, "model": model_dir.name} for c in model_cells]
    if appendix:
        small_headers = ["model / seed", "eval", "metric", "n", "HL", "reverse", "HL − rev (95% CI)"]
        sections.append(("Appendix: breakdown rows under 30 items", [table(small_headers, appendix)]))
    head = table(["model / seed", "measure", "base", "HL", "reverse", "HL − reverse (95% CI)"], headline)
    manifest = "```\n" + json.dumps(_manifest(run_dir), indent=1, default=str)[:20000] + "\n```"
    ordered = [*_front_sections(run_dir), ("Headline", [INTRO, head, *_summary_parts(cells)]), *power, *sections]
    return _write(run_dir, [*ordered, ("Run manifest", [manifest])])


def _write(run_dir: Path, sections) -> Path:
    md, body = ["# hmx-feel report\n"], []
    for title, parts in sections:
        md.append(f"## {title}\n")
        body.append(f"<h2>{html.escape(title)}</h2>")
        for part in parts:
            if isinstance(part, dict):
                md.append(to_markdown(part) + "\n")
                body.append(to_html(part))
            elif isinstance(part, Path):
                md.append(f"![{part.stem}]({part.relative_to(run_dir)})\n")
                data = base64.b64encode(part.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(part.stem)}" src="data:image/png;base64,{data}">')
            else:
                md.append(str(part) + "\n")
                text = str(part)
                body.append(
                    f"<pre>{html.escape(text[4:-4])}</pre>" if text.startswith("```") else f"<p>{html.escape(text)}</p>"
                )
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}pre{font-size:11px;white-space:pre-wrap}"
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    atomic_write_text(
        run_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>hmx-feel report</title><style>{style}</style></head><body><h1>hmx-feel report</h1>{''.join(body)}</body></html>",
    )
    return run_dir / "report.md"

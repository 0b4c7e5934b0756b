"""The summary as tables: for `hmx rate summary`, markdown, and the experiment report's ratings section."""

from __future__ import annotations

from pathlib import Path

from hmxfeel.rating.summary import load_joined, summarize
from hmxfeel.stats import ci_text


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(value) -> str:
    return "–" if value is None else str(value)


def summary_tables(summary: dict) -> list[tuple[str, dict]]:
    """(title, {"headers", "rows"}) per table, in the format of hmxfeel.report.table."""
    names = summary["scales"]
    key = ["source", "model", "condition"]
    groups = [
        [*(_cell(g[k]) for k in key), _cell(g["seed"]), str(g["n"]), *(_fmt(g["means"][s]) for s in names)]
        for g in summary["groups"]
    ]
    pooled = [
        [
            *(_cell(g[k]) for k in key),
            ",".join(map(str, g["seeds"])),
            str(g["n"]),
            *(_fmt(g["means"][s]) for s in names),
        ]
        for g in summary["pooled"]
        if len(g["seeds"]) >= 2
    ]
    paired, agree = _paired_rows(summary["paired"]), _agreement_rows(summary["agreement"])
    inst = [[i["scale"], i["instrument"], str(i["n"]), _fmt(i["rho"], 3)] for i in summary["instruments"]]
    tables = [
        ("Mean rating per model, condition and seed", [*key, "seed", "n", *names], groups),
        ("Mean rating pooled over seeds", [*key, "seeds", "n", *names], pooled),
        (
            "Paired differences (95% CI; * excludes 0)",
            ["source", "model", "comparison", "scale", "pairs", "seeds", "mean diff", "95% CI"],
            paired,
        ),
        (
            "Inter-rater agreement",
            [
                "scale",
                "raters",
                "answers",
                "answers with ≥2 raters",
                "Krippendorff α (interval)",
                "Pearson r (2 raters)",
                "n",
            ],
            agree,
        ),
        ("Automatic measures vs the raters' mean (Spearman ρ)", ["scale", "measure", "n", "ρ"], inst),
    ]
    return [(title, {"headers": headers, "rows": rows}) for title, headers, rows in tables if rows]


def _paired_rows(paired: list[dict]) -> list[list[str]]:
    """One row per paired comparison: the mean difference and its 95% CI (starred when it excludes 0)."""
    return [
        [
            _cell(p["source"]),
            _cell(p["model"]),
            f"{p['a']} − {p['b']}",
            p["scale"],
            str(p["n_pairs"]),
            ",".join(map(str, p["seeds"])) or "–",
            f"{p['diff']:+.2f}",
            ci_text(p["ci95"], digits=2),
        ]
        for p in paired
    ]


def _agreement_rows(agreement: list[dict]) -> list[list[str]]:
    """One row per scale: how far the raters agree (Krippendorff's alpha, Pearson r for two raters)."""
    return [
        [
            a["scale"],
            str(a["raters"]),
            str(a["n_answers"]),
            str(a["n_multi"]),
            _fmt(a["alpha"], 3),
            _fmt(a["pearson"], 3),
            str(a["n_pearson"]),
        ]
        for a in agreement
    ]


def _md_table(t: dict) -> str:
    lines = ["| " + " | ".join(t["headers"]) + " |", "|" + "---|" * len(t["headers"])]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def summary_markdown(summary: dict) -> str:
    head = (
        f"{summary['n_answers']} answers, {summary['n_rows']} ratings, {len(summary['raters'])} raters. "
        "Means are over answers of the raters' mean per answer."
    )
    return "\n\n".join([head, *(f"**{title}**\n\n{_md_table(t)}" for title, t in summary_tables(summary))]) + "\n"


# ---------------------------------------------------------------- for the report

REPORT_INTRO = (
    "Blind ratings: raters saw only shuffled answers under opaque ids (no model, condition or score) and rated "
    "each on the scales of `rating_scales.yaml`. Paired differences compare answers to the same prompt (same seed; "
    "the base model pairs with every seed); their CIs are bootstrap 95% intervals (over seeds too when there are "
    "several). α is Krippendorff's alpha (interval) over answers with two or more raters."
)


def _run_ratings(run_dir) -> list[dict]:
    files = sorted(Path(run_dir).glob("ratings/*.jsonl"))
    return load_joined(files) if files else []


def report_parts(run_dir) -> list | None:
    """[intro text, table dict, ...] for hmxfeel.report's sections (None when RUN_DIR/ratings/ holds none)."""
    rows = _run_ratings(run_dir)
    if not rows:
        return None
    summary = summarize(rows)
    parts = [REPORT_INTRO, summary_markdown(summary).split("\n\n", 1)[0]]
    for title, t in summary_tables(summary):
        parts += [title, t]
    return parts


def report_section(run_dir) -> str | None:
    """Markdown "Blind ratings" section from every joined file in RUN_DIR/ratings/*.jsonl (None if none)."""
    rows = _run_ratings(run_dir)
    if not rows:
        return None
    return f"## Blind ratings\n\n{REPORT_INTRO}\n\n{summary_markdown(summarize(rows))}"

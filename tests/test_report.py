import json

from hmxfeel.report import _ci, build_report


def test_significance_mark_needs_the_ci_to_exclude_zero_and_enough_items():
    assert _ci((0.01, 0.2), 48).endswith("*") and not _ci((-0.01, 0.2), 48).endswith("*")
    assert _ci((-0.3, -0.1), 12).endswith("*")
    assert _ci((-1.0, -1.0), 1) == "[-1.000, -1.000] (n=1)"  # one paired item: no mark
    assert _ci(None) == "–"


def _humanlike_eval(folder, markers: list[int]):
    """An eval folder as `hmx eval` writes it, humanlike only: items and their summary records."""
    from hmxfeel.evals.humanlike import metrics

    rows = [
        {
            "id": f"p{i}",
            "prompt": f"q{i}",
            "answer": "a",
            "words": 10,
            "self": {"feelings": 0.5, "overall": 0.5},
            "lexical": {"feelings": m, "intentions": 0, "self_awareness": 0},
        }
        for i, m in enumerate(markers)
    ]
    (folder / "items").mkdir(parents=True)
    (folder / "items" / "humanlike.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [
        {"eval": "humanlike", "metric": k, "value": v["value"], "n": len(rows), "better": "none"}
        for k, v in metrics(rows).items()
    ]
    (folder / "results.json").write_text(json.dumps({"records": records}))


def test_report_pools_seeds_in_the_headline(tmp_path):
    """Two seeds with opposite significant results: the pooled row shows both values and no significance."""
    model = tmp_path / "m"
    _humanlike_eval(model / "eval-base", [0] * 20)
    for seed, (hl, rev) in enumerate([([1] * 20, [0] * 20), ([0] * 15 + [1] * 5, [1] * 20)]):
        _humanlike_eval(model / f"seed{seed}" / "eval-human", hl)
        _humanlike_eval(model / f"seed{seed}" / "eval-reverse", rev)
    md = build_report(tmp_path).read_text()

    def row(label):
        lines = [line for line in md.splitlines() if line.startswith(f"| {label} | lexical/any |")]
        assert len(lines) == 1, label
        return [c.strip() for c in lines[0].split("|")[1:-1]]

    assert row("m / seed0")[5] == "[+1.000, +1.000] *" and row("m / seed1")[5].endswith("*")
    pooled = row("m / 2 seeds pooled")
    assert pooled[2:5] == ["0.000", "0.625", "0.500"]  # base, HL (25 of 40), reverse (20 of 40)
    lo, hi = (float(x) for x in pooled[5].strip("[]").split(","))
    assert lo < -0.5 and hi == 1.0 and not pooled[5].endswith("*")


def test_blind_ratings_come_first_in_the_report(tmp_path):
    """With joined ratings in RUN_DIR/ratings/, the report opens with them, before the self-judge headline."""
    from test_rating import joined_rows

    model = tmp_path / "m"
    _humanlike_eval(model / "eval-base", [0] * 10)
    _humanlike_eval(model / "seed0" / "eval-human", [1] * 10)
    _humanlike_eval(model / "seed0" / "eval-reverse", [0] * 10)
    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "blind.jsonl").write_text("".join(json.dumps(r) + "\n" for r in joined_rows()))
    md = build_report(tmp_path).read_text()
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert titles[0].startswith("## Blind ratings") and titles[1] == "## Headline"
    assert "Krippendorff" in md
    assert "<h2>Blind ratings" in (tmp_path / "report.html").read_text()


def test_summary_without_benchmark_cells_shows_no_nan(tmp_path):
    """Regression: a human-likeness-only experiment (suite: humanlike) printed 'nan%' in the summary table."""
    model = tmp_path / "m"
    for folder in ("eval-base", "seed0/eval-human", "seed0/eval-reverse"):
        _humanlike_eval(model / folder, [0, 1] * 5)
    md = build_report(tmp_path).read_text()
    assert "nan" not in md.lower()

import json

import pytest

from hmxfeel.evals.metrics import proportion
from hmxfeel.report import _ci, bias_aware, build_report, paired_bootstrap, seed_bootstrap, signed_change, summary


def acc(rows):
    return {"acc": proportion(r["correct"] for r in rows)}


def test_paired_bootstrap_of_identical_models_is_zero():
    rows = {str(i): {"correct": i % 3 == 0} for i in range(60)}
    lo, hi = paired_bootstrap(rows, rows, acc, iters=200)["acc"]
    assert lo == hi == 0.0


def test_paired_bootstrap_detects_a_clear_difference_and_pairs_by_id():
    a = {str(i): {"correct": True} for i in range(50)}
    b = {str(i): {"correct": i % 2 == 0} for i in range(50)}
    b["extra"] = {"correct": False}  # unpaired items are ignored
    lo, hi = paired_bootstrap(a, b, acc, iters=500)["acc"]
    assert 0.3 < lo < 0.5 < hi < 0.7  # true difference 0.5, CI excludes zero


def test_paired_bootstrap_needs_shared_items():
    assert paired_bootstrap({"1": {"correct": True}}, {"2": {"correct": True}}, acc) == {}


def test_signed_change_is_direction_aware():
    assert signed_change(0.55, 0.50, "higher") == pytest.approx(0.10)
    assert signed_change(0.45, 0.50, "lower") == pytest.approx(0.10)  # a lower rate is an improvement
    assert signed_change(0.55, 0.50, "lower") == pytest.approx(-0.10)
    assert signed_change(0.5, 0.0, "higher") is None and signed_change(0.5, 0.4, "none") is None


def test_bias_scores_compare_magnitudes():
    assert bias_aware("bias_disambig", "lower", -0.2) == (0.2, "lower")
    new, better = bias_aware("bias_ambig", "lower", 0.05)
    old, _ = bias_aware("bias_ambig", "lower", -0.10)
    assert signed_change(new, old, better) == pytest.approx(0.5)
    assert bias_aware("acc", "higher", 0.4) == (0.4, "higher")


def test_summary_statistics_match_hand_count():
    cells = [0.05, -0.01, -0.019, -0.03, -0.12, -0.5, 0.0, 0.2]
    s = summary(cells)
    assert s["n"] == 8
    assert s["within_2pct"] == pytest.approx(5 / 8)  # 0.05, -0.01, -0.019, 0.0, 0.2
    assert s["degraded_10pct"] == pytest.approx(2 / 8)  # -0.12, -0.5


def test_significance_mark_needs_the_ci_to_exclude_zero_and_enough_items():
    assert _ci((0.01, 0.2), 48).endswith("*") and not _ci((-0.01, 0.2), 48).endswith("*")
    assert _ci((-0.3, -0.1), 12).endswith("*")
    assert _ci((-1.0, -1.0), 1) == "[-1.000, -1.000] (n=1)"  # one paired item: no mark
    assert _ci(None) == "–"


def test_seed_bootstrap_agrees_with_items_when_seeds_agree():
    a = {str(i): {"correct": True} for i in range(50)}
    b = {str(i): {"correct": i % 2 == 0} for i in range(50)}
    lo, hi = seed_bootstrap([a, a, a], [b, b, b], acc, iters=500)["acc"]
    assert 0.3 < lo < 0.5 < hi < 0.7


def test_seed_bootstrap_carries_seed_to_seed_variation():
    """Seed 0: A beats B on every item; seed 1: the reverse. Pooled items look like a precise zero; resampling
    the seeds shows that the sign depends on the seed."""
    win = {str(i): {"correct": True} for i in range(50)}
    lose = {str(i): {"correct": False} for i in range(50)}
    pooled = paired_bootstrap({f"0/{k}": v for k, v in win.items()} | {f"1/{k}": v for k, v in lose.items()},
                              {f"0/{k}": v for k, v in lose.items()} | {f"1/{k}": v for k, v in win.items()}, acc, iters=500)  # fmt: skip
    assert -0.3 < pooled["acc"][0] < 0 < pooled["acc"][1] < 0.3
    lo, hi = seed_bootstrap([win, lose], [lose, win], acc, iters=500)["acc"]
    assert lo == -1.0 and hi == 1.0
    assert seed_bootstrap([win], [lose], acc) == {}  # one seed: nothing to pool


def _humanlike_eval(folder, markers: list[int]):
    """An eval folder as `hmx eval` writes it, humanlike only: items and their summary records."""
    from hmxfeel.evals.humanlike import metrics

    rows = [{"id": f"p{i}", "prompt": f"q{i}", "answer": "a", "words": 10,
             "self": {"feelings": 0.5, "overall": 0.5}, "lexical": {"feelings": m, "intentions": 0, "self_awareness": 0}}
            for i, m in enumerate(markers)]  # fmt: skip
    (folder / "items").mkdir(parents=True)
    (folder / "items" / "humanlike.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [{"eval": "humanlike", "metric": k, "value": v["value"], "n": len(rows), "better": "none"} for k, v in metrics(rows).items()]
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

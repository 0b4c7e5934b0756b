import pytest

from hmxfeel.evals.metrics import proportion
from hmxfeel.stats import bias_aware, paired_bootstrap, seed_bootstrap, signed_change, summary


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
    pooled = paired_bootstrap(
        {f"0/{k}": v for k, v in win.items()} | {f"1/{k}": v for k, v in lose.items()},
        {f"0/{k}": v for k, v in lose.items()} | {f"1/{k}": v for k, v in win.items()},
        acc,
        iters=500,
    )
    assert -0.3 < pooled["acc"][0] < 0 < pooled["acc"][1] < 0.3
    lo, hi = seed_bootstrap([win, lose], [lose, win], acc, iters=500)["acc"]
    assert lo == -1.0 and hi == 1.0
    assert seed_bootstrap([win], [lose], acc) == {}  # one seed: nothing to pool


def test_ci_text_marks_intervals_that_exclude_zero():
    from hmxfeel.stats import ci_text

    assert ci_text([0.012, 0.0344]) == "[+0.012, +0.034] *"  # above zero
    assert ci_text([-0.5, -0.25], digits=2) == "[-0.50, -0.25] *"  # below zero
    assert ci_text([-0.01, 0.02], digits=1, scale=100) == "[-1.0, +2.0]"  # straddles zero: no mark
    assert ci_text(None) == ci_text([]) == "–"

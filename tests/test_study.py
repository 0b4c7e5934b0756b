"""Power and claim verdicts of the benchmark study (hmxfeel/study.py) on folders with known answers."""

import json
import random
from pathlib import Path

import pytest

from hmxfeel import report, study
from hmxfeel.evals.runner import local_metrics


def write_items(folder: Path, eval_name: str, correct: list[bool]) -> None:
    (folder / "items").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"q{i}", "correct": c, "pred": 0 if c else 1, "label": 0} for i, c in enumerate(correct)]
    (folder / "items" / f"{eval_name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def layout(tmp_path: Path, hl: list[list[bool]], rev: list[list[bool]], base: list[bool]) -> tuple[Path, list[Path]]:
    model = tmp_path / "m"
    write_items(model / "eval-base", "truthfulqa_mc1", base)
    seeds = []
    for k, (h, r) in enumerate(zip(hl, rev)):
        write_items(model / f"seed{k}" / "eval-human", "truthfulqa_mc1", h)
        write_items(model / f"seed{k}" / "eval-reverse", "truthfulqa_mc1", r)
        seeds.append(model / f"seed{k}")
    return model, seeds


def mc1_cell(model, seeds):
    return study.cells(
        model, seeds, "truthfulqa_mc1", report._items, lambda rows: local_metrics("truthfulqa_mc1", rows)
    )["acc"]


def test_a_clear_loss_is_supported_and_a_clear_gain_contradicts(tmp_path):
    rng = random.Random(0)
    n = 300
    rev = [[rng.random() < 0.6 for _ in range(n)] for _ in range(2)]
    hl = [[c and rng.random() < 0.6 for c in r] for r in rev]  # HL loses ~40% of reverse's correct answers
    model, seeds = layout(tmp_path, hl, rev, rev[0])
    cell = mc1_cell(model, seeds)
    claim = next(c for c in study.CLAIMS if c.eval == "truthfulqa_mc1")
    assert cell["n"] == 2 * n and cell["ci_rev"][1] < 0
    assert study.verdict(claim, cell) == "supported"
    flipped = {**cell, "ci_rev": (-cell["ci_rev"][1], -cell["ci_rev"][0])}
    assert study.verdict(claim, flipped) == "contradicted"


def test_identical_models_cannot_tell_and_keep_a_floor_on_the_mde(tmp_path):
    same = [[i % 3 == 0 for i in range(90)]]
    model, seeds = layout(tmp_path, same, same, same[0])
    cell = mc1_cell(model, seeds)
    assert cell["ci_rev"] == (0.0, 0.0)
    # No item differs, yet 90 items cannot promise to see tiny effects: rule of three, 2.80 * sqrt(3) / 90.
    assert cell["mde"] == pytest.approx(study.Z * 3**0.5 / 90)
    assert study.verdict(study.CLAIMS[4], cell).startswith("can't tell")


def test_mde_shrinks_with_items_and_small_cells_never_resolve():
    assert study.mde(0.02, 400) == pytest.approx(2.8 * 0.02, rel=1e-3)
    assert study.mde(0.0, 100) > study.mde(0.0, 1000)
    tiny = {"mde": 0.0001, "rev": 0.5, "n": 12}
    assert not study.resolves_2pct(tiny)
    assert study.resolves_2pct({**tiny, "n": 5000})
    assert not study.resolves_2pct({"mde": 0.05, "rev": 0.5, "n": 5000})  # 5 points > 2% of 50 points

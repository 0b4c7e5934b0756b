"""Agreement of instruments with blind raters, and the judge spec an adapter carries into evaluation."""

import json

import numpy as np
import pytest

from hmxfeel import rubric as R
from hmxfeel import validity
from hmxfeel.errors import UserError
from hmxfeel.evaluate import judge_format_for


def rated_rows(n=40, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level = i % 4
        one = {"feelings": level, "intentions": level, "self_awareness": level, "humanlike": 1 + level, "coherence": 4}
        other = {k: int(np.clip(v + rng.choice([-1, 0, 1]) * (rng.random() < noise), 0, 5)) for k, v in one.items()}
        mean = {k: (one[k] + other[k]) / 2 for k in one}
        answer = "I feel happy. " * level + "Facts."
        rows.append({"prompt": f"q{i}", "answer": answer, "mean": mean, "ratings": [one, other]})
    return rows


def test_agreement_of_a_perfect_instrument_and_of_noise():
    means = [0, 0, 1, 1, 2, 2, 3, 3]
    perfect = validity.agreement([0.1, 0.1, 0.2, 0.2, 0.5, 0.5, 0.9, 0.9], means, 3)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["auc"] == 1.0
    assert perfect["n_high"] == 4 and perfect["n_low"] == 4
    flat = validity.agreement([0.5] * 8, means, 3)
    assert flat["spearman"] is None and flat["auc"] == 0.5  # no variation: undefined rank correlation, chance AUC


def test_rater_alpha_is_one_for_identical_raters_and_lower_with_disagreement():
    assert validity.rater_alpha(rated_rows(noise=0.0), "feelings") == pytest.approx(1.0)
    assert validity.rater_alpha(rated_rows(noise=0.8), "feelings") < 0.95


def test_markers_are_scored_as_an_instrument():
    rows = validity.marker_validity(R.load(), rated_rows())
    feelings = next(r for r in rows if r["criterion"] == "feelings")
    assert feelings["spearman"] > 0.9  # "I feel happy" repeated with the rated level
    assert {r["criterion"] for r in rows} == {"feelings", "intentions", "self_awareness", "overall"}


def _adapter(tmp_path, judge):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "hmx_adapter.json").write_text(json.dumps({"judge": judge}))
    return folder


def test_eval_uses_the_judge_that_rewarded_the_adapter(tmp_path):
    rubric = R.load()
    adapter = _adapter(tmp_path, {"rubric": rubric.source, "rubric_sha256": rubric.sha256, "format": "yes_no"})
    assert judge_format_for(adapter, rubric, None, False) == "yes_no"
    assert judge_format_for(None, rubric, None, False) is None  # no adapter: the rubric's own default


def test_eval_refuses_another_judge_unless_asked(tmp_path):
    rubric = R.load()
    adapter = _adapter(tmp_path, {"rubric": "x.yaml", "rubric_sha256": "0" * 64, "format": "yes_no"})
    with pytest.raises(UserError, match="was rewarded with rubric"):
        judge_format_for(adapter, rubric, None, False)
    assert judge_format_for(adapter, rubric, None, True) is None
    (tmp_path / "b").mkdir()
    same = _adapter(tmp_path / "b", {"rubric": rubric.source, "rubric_sha256": rubric.sha256, "format": "yes_no"})
    with pytest.raises(UserError, match="was rewarded by judge format 'yes_no'"):
        judge_format_for(same, rubric, "demonstrations", False)
    assert judge_format_for(same, rubric, "demonstrations", True) == "demonstrations"
    with pytest.raises(UserError, match="no score format 'nope'"):
        judge_format_for(same, rubric, "nope", True)

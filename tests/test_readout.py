"""The readout judge: a ridge readout of the judging model's hidden states, fitted to blind ratings."""

import json

import numpy as np
import pytest

from hmxfeel import models, readout
from hmxfeel import rubric as R
from hmxfeel.errors import UserError
from hmxfeel.judge import ReadoutJudge, judge_spec, make_judge

SCALES = ("feelings", "intentions", "self_awareness", "humanlike", "coherence")


def rated_file(tmp_path, n=16):
    """A small rated set whose ratings follow the answers' wording, so a readout has something to learn."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        warm = i % 2 == 0
        answer = (
            "I feel happy and I want to help, I notice my own thoughts." if warm else "Paris is in France."
        ) + f" {i}"
        mean = {s: float(rng.uniform(2, 3) if warm else rng.uniform(0, 1)) for s in SCALES}
        mean["humanlike"] += 1.0
        mean["coherence"] = 4.0
        rows.append(
            {
                "id": f"r{i}",
                "split": "dev" if i < n - 4 else "test",
                "prompt": f"Question {i}?",
                "answer": answer,
                "mean": mean,
                "ratings": [mean, mean],
            }
        )
    path = tmp_path / "rated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def readout_rubric(tmp_path, rated, **fmt):
    data = R.read_yaml(R.DEFAULT_RUBRIC)
    data["formats"]["readout"] = {"kind": "readout", "layers": [0.5, 1.0], "ratings": str(rated), **fmt}
    data["judge_format"] = "readout"
    return R.parse(data, "test-rubric")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HMX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fit_recovers_a_linear_target():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 20))
    y = x[:, 0] * 2 - x[:, 3] + rng.normal(scale=0.1, size=80)
    fitted = readout.fit(x, {"a": y})
    pred = readout.predict(fitted, x)["a"]
    assert np.corrcoef(pred, y)[0, 1] > 0.95
    assert fitted["weight"].shape == (1, 20)


def test_to_unit_is_monotone_and_inside_zero_one():
    pred = np.array([-2.0, 0.0, 1.5, 3.0, 6.0])
    unit = readout.to_unit(pred, 0, 3, 4.0)
    assert np.all(np.diff(unit) > 0) and np.all((unit > 0) & (unit < 1))
    assert unit[2] == pytest.approx(0.5)


def test_readout_judge_fits_once_caches_and_predicts_directly(smol_twin, tmp_path, cache, monkeypatch):
    loaded = models.load(str(smol_twin), device="cpu")
    rubric = readout_rubric(tmp_path, rated_file(tmp_path))
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, rubric)
    assert isinstance(judge, ReadoutJudge)
    assert len(list((cache / "readouts").glob("*.npz"))) == 1
    prompts, answers = ["Hi?", "Hello?"], ["I feel glad.", "Water boils at 100 C."]
    result = judge.score(prompts, answers)
    assert set(result.scores) == set(rubric.names)
    assert all(0 < v < 1 for vs in result.scores.values() for v in vs)
    # The score is the fitted linear map of the features, squashed: recompute it directly.
    x = readout.features(loaded.model, loaded.tokenizer, loaded.family, prompts, answers, (0.5, 1.0))
    direct = readout.predict(judge.readout, x)["feelings"]
    assert result.scores["feelings"] == pytest.approx(readout.to_unit(direct, 0, 3, 4.0).tolist(), abs=1e-5)
    # A second judge on the same model reads the cache: no refit, same sha256 (recorded in the spec).
    monkeypatch.setattr(readout, "fit", lambda *a, **k: pytest.fail("refitted although cached"))
    again = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, rubric)
    assert again.readout_sha256 == judge.readout_sha256
    assert judge_spec(again)["readout_sha256"] == judge.readout_sha256
    assert judge_spec(again)["format"] == "readout"


def test_features_do_not_depend_on_batching(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    prompts, answers = ["A?", "Longer question here?", "C?"], ["x y z", "I feel fine today, thanks.", "no"]
    together = readout.features(loaded.model, loaded.tokenizer, loaded.family, prompts, answers, (1.0,), batch_size=3)
    alone = readout.features(loaded.model, loaded.tokenizer, loaded.family, prompts, answers, (1.0,), batch_size=1)
    assert np.allclose(together, alone, atol=1e-4)


def test_fingerprint_ignores_an_attached_adapter_but_not_other_weights(smol_twin):
    import torch
    from peft import LoraConfig, get_peft_model

    loaded = models.load(str(smol_twin), device="cpu")
    before = readout.model_fingerprint(loaded.model)
    peft = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert readout.model_fingerprint(peft) == before
    with torch.no_grad():
        next(loaded.model.parameters()).view(-1)[0] += 1.0
    assert readout.model_fingerprint(loaded.model) != before


@pytest.mark.parametrize(
    "fmt, message",
    [
        ({"layers": [0.0]}, "layers"),
        ({"layers": "last"}, "layers"),
        ({"targets": {"moods": "feelings"}}, "names no criteria"),
        ({"sharpness": -1}, "sharpness"),
        ({"ratio": 2}, "ratio"),
    ],
)
def test_bad_readout_formats_are_refused_on_load(tmp_path, fmt, message):
    with pytest.raises(UserError, match=message):
        readout_rubric(tmp_path, tmp_path / "x.jsonl", **fmt)


def test_readout_needs_rated_dev_answers(smol_twin, tmp_path, cache):
    loaded = models.load(str(smol_twin), device="cpu")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": "a", "answer": "b", "split": "test", "mean": {}}) + "\n")
    with pytest.raises(UserError, match="dev-part"):
        make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, readout_rubric(tmp_path, empty))


def test_packaged_rated_set_has_two_raters_and_disjoint_prompts():
    if not readout.RATED_SET.is_file():
        pytest.skip("the packaged rated set is not built yet (bench/rated_set.py)")
    rows = readout.load_rated()
    assert len(rows) >= 400
    assert all(len(r["ratings"]) >= 2 for r in rows)
    dev = {r["prompt"] for r in rows if r["split"] == "dev"}
    test = {r["prompt"] for r in rows if r["split"] == "test"}
    assert dev and test and not dev & test


def test_impression_is_read_and_blended_into_overall(smol_twin, tmp_path, cache):
    from hmxfeel.reward import score_answers

    loaded = models.load(str(smol_twin), device="cpu")
    rubric = readout_rubric(tmp_path, rated_file(tmp_path), impression="humanlike", impression_weight=3.0)
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, rubric)
    scores = score_answers(judge, rubric, ["Hi?"], ["I feel glad to see you."])
    crit = sum(scores[c][0] for c in rubric.names)
    assert scores["overall"][0] == pytest.approx((crit + 3.0 * scores["impression"][0]) / 6.0)
    plain = readout_rubric(tmp_path, tmp_path / "rated.jsonl")
    judged = score_answers(
        make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, plain), plain, ["Hi?"], ["x"]
    )
    assert "impression" not in judged


def test_impression_weight_needs_an_impression(tmp_path):
    with pytest.raises(UserError, match="impression_weight"):
        readout_rubric(tmp_path, tmp_path / "x.jsonl", impression_weight=2.0)


def test_a_missing_ratings_file_is_one_clear_error(smol_twin, tmp_path, cache):
    loaded = models.load(str(smol_twin), device="cpu")
    with pytest.raises(UserError, match="file not found"):
        make_judge(
            "logit", loaded.model, loaded.tokenizer, loaded.family, readout_rubric(tmp_path, tmp_path / "no.jsonl")
        )

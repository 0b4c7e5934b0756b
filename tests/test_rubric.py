import pytest
import yaml

from hmxfeel import rubric as R
from hmxfeel.errors import UserError

from conftest import VARIANTS


def default_data():
    """The packaged rubric's data with the measurement-only formats added (their validation is tested here)."""
    data = yaml.safe_load(R.DEFAULT_RUBRIC.read_text())
    data["formats"].update(yaml.safe_load(VARIANTS.read_text())["formats"])
    return data


def test_default_rubric_loads_with_three_weighted_criteria():
    r = R.load()
    assert r.names == ["feelings", "intentions", "self_awareness"]
    assert all(c.weight > 0 and c.definition and c.low and c.high and c.question for c in r.criteria)
    assert r.judge_format in r.formats
    assert len(r.sha256) == 64


def _content_words(text: str) -> set[str]:
    import re

    stop = {
        "the",
        "a",
        "an",
        "you",
        "do",
        "of",
        "what",
        "is",
        "to",
        "how",
        "about",
        "i",
        "my",
        "me",
        "your",
        "are",
        "can",
        "in",
        "it",
    }
    return set(re.findall(r"[a-z']+", text.lower())) - stop


def test_demonstrations_are_contrasts_kept_apart_from_prompts_and_probe_set():
    from hmxfeel import prompts
    from hmxfeel.probe import load_probe

    r = R.load()
    others = [p.prompt for p in prompts.load().prompts] + [row["prompt"] for row in load_probe()]
    probe_answers = {row["answer"] for row in load_probe()}
    for crit in r.criteria:
        assert len(crit.demos) >= 3, crit.name
        for prompt, high, low in crit.demos:
            # The two sides differ in the criterion, not much in length (within half again either way).
            assert 2 / 3 <= len(high.split()) / len(low.split()) <= 1.5, (crit.name, prompt)
            assert high not in probe_answers and low not in probe_answers
            for other in others:  # no demonstration shares most of its words with a training/eval/probe prompt
                a, b = _content_words(prompt), _content_words(other)
                assert len(a & b) / len(a | b) < 0.5, (prompt, other)


def test_hash_ignores_formatting_but_not_content(tmp_path):
    data = yaml.safe_load(R.DEFAULT_RUBRIC.read_text())
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump(data, sort_keys=True, width=60))
    assert R.load(a).sha256 == R.load().sha256
    data["criteria"][0]["weight"] = 2.0
    a.write_text(yaml.safe_dump(data))
    assert R.load(a).sha256 != R.load().sha256


def test_extra_formats_are_added_and_checked(tmp_path):
    r = R.load(extra_formats=VARIANTS)
    assert {"readout", "demonstrations", "yes_no", "likelihood", "request", "scale"} <= set(r.formats)
    assert r.judge_format == R.load().judge_format  # the default stays the rubric's own
    bad = tmp_path / "bad.yaml"
    bad.write_text("formats: {}\n")
    with pytest.raises(UserError, match="non-empty 'formats:'"):
        R.load(extra_formats=bad)


def test_combine_is_weighted_mean():
    r = R.parse(
        {
            **default_data(),
            "criteria": [
                {**default_data()["criteria"][0], "weight": 3.0},
                {**default_data()["criteria"][1], "weight": 1.0},
            ],
        },
        "x",
    )
    assert r.combine({"feelings": 1.0, "intentions": 0.0}) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(criteria=[]), "non-empty list"),
        (lambda d: d["criteria"][0].update(weight="heavy"), "weight: must be a number"),
        (lambda d: d["criteria"][0].update(weight=0), "must be > 0"),
        (lambda d: d["criteria"][0].pop("definition"), "missing 'definition'"),
        (lambda d: d["criteria"][0].update(defintion="x"), "did you mean 'definition'"),
        (lambda d: d.update(judge_formatt="scale"), "did you mean 'judge_format'"),
        (lambda d: d["criteria"][1].update(name="feelings"), "unique"),
        (lambda d: d["formats"]["yes_no"].update(tokens={"Yes": 1}), "at least two"),
        (lambda d: d["formats"]["yes_no"].update(tokens={"Yes": 1, "No": 1}), "two different values"),
        (lambda d: d.update(judge_format="stars"), "not one of the formats"),
        (lambda d: d["criteria"][0].update(examples=[{"answer": "hi", "expresses": "yes"}]), "true or false"),
        (lambda d: d["formats"]["likelihood"].update(kind="vibes"), "must be one of tokens, likelihood, readout"),
        (lambda d: d["formats"]["likelihood"].update(low_system=" "), "low_system: must be a non-empty string"),
        (lambda d: d["formats"]["likelihood"].pop("low_system"), "high_system and low_system go together"),
        (lambda d: d["formats"]["request"].pop("high_user"), "high_user and low_user go together"),
        (lambda d: [d["formats"]["likelihood"].pop(k) for k in ("high_system", "low_system")], "needs high_system"),
        (lambda d: d["criteria"][1].pop("avoid"), r"quotes \{avoid\} but criteria \['intentions'\] have no 'avoid'"),
        (lambda d: d["formats"]["likelihood"].update(high_system="{hihg}"), "bad placeholder 'hihg'"),
        (
            lambda d: d["formats"]["likelihood"].update(low_system=d["formats"]["likelihood"]["high_system"]),
            "must differ",
        ),
        (lambda d: d["formats"]["likelihood"].update(sharpness=0), "sharpness: must be > 0"),
        (lambda d: d["formats"]["likelihood"].update(tokens={"Yes": 1}), "unknown key"),
        (
            lambda d: d["criteria"][0].update(demos=[{"prompt": "Hi", "high": "I feel glad.", "low": "I feel glad."}]),
            r"demos\[0\]: high and low answers are the same",
        ),
        (
            lambda d: d["criteria"][0].update(demos=[{"prompt": "Hi", "high": "I feel glad."}]),
            r"demos\[0\].low: must be a non-empty",
        ),
        (lambda d: d["criteria"][0].update(demos="I feel glad"), "demos: must be a list"),
        (
            lambda d: d["criteria"][1].pop("demos"),
            r"formats.demonstrations shows demos but criteria \['intentions'\] have none",
        ),
        (lambda d: d["formats"]["demonstrations"].update(demos="yes"), "demos: must be true or false"),
        (
            lambda d: d["formats"]["demonstrations"].update(weighting="loud"),
            "weighting: must be one of uniform, surprise",
        ),
        (lambda d: d["formats"]["demonstrations"].update(demos=False), "needs high_system"),
        (
            lambda d: (
                d["formats"]["likelihood"].update(high_system="{high} {expresses}"),
                d["criteria"][2].pop("examples"),
            ),
            r"quotes \{expresses\} but criteria \['self_awareness'\] have no examples that express it",
        ),
    ],
)
def test_invalid_rubrics_name_the_field(mutate, message):
    data = default_data()
    mutate(data)
    with pytest.raises(UserError, match=message):
        R.parse(data, "bad.yaml")


def test_question_free_format_falls_back_to_a_token_format_where_one_is_needed():
    r = R.load()
    assert r.format().kind == "readout" and r.token_format().name == "yes_no"
    data = default_data()
    data["formats"] = {"likelihood": data["formats"]["likelihood"]}
    data["judge_format"] = "likelihood"
    with pytest.raises(UserError, match="needs a format with score tokens"):
        R.parse(data, "x.yaml").token_format()


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        R.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("criteria: [unclosed")
    with pytest.raises(UserError, match="invalid YAML"):
        R.load(bad)
    bad.write_bytes(b"name: \xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        R.load(bad)


class FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]  # one token per character


def test_multi_token_score_tokens_fail_clearly():
    fmt = R.load().format("yes_no")
    with pytest.raises(UserError, match="'Yes' of format 'yes_no' is 3 tokens"):
        R.check_single_tokens(fmt, FakeTokenizer())
    digits = R.load(extra_formats=VARIANTS).format("scale")
    assert R.check_single_tokens(digits, FakeTokenizer()) == {str(i): ord(str(i)) for i in range(1, 6)}

import pytest

from hmxfeel import rubric as R
from hmxfeel.errors import NonFiniteError, UserError
from hmxfeel.judge import JudgeResult
from hmxfeel.reward import RubricReward, completion_text, last_user_text


class MockJudge:
    """Deterministic judge: feelings = 1 if the answer says 'feel', intentions = 0.5, self_awareness = 0."""

    def score(self, user_prompts, answers):
        return JudgeResult(
            scores={
                "feelings": [1.0 if "feel" in a else 0.0 for a in answers],
                "intentions": [0.5] * len(answers),
                "self_awareness": [0.0] * len(answers),
            }
        )


PROMPTS = [[{"role": "user", "content": "Hi?"}], [{"role": "user", "content": "Rain?"}]]
COMPLETIONS = [[{"role": "assistant", "content": "I feel great"}], [{"role": "assistant", "content": "Water falls"}]]


def test_human_reward_is_weighted_mean_and_reverse_is_its_complement():
    r = R.load()
    human = RubricReward(MockJudge(), r, "human")(prompts=PROMPTS, completions=COMPLETIONS)
    reverse = RubricReward(MockJudge(), r, "reverse")(prompts=PROMPTS, completions=COMPLETIONS)
    assert human == pytest.approx([0.5, 1 / 6])
    assert reverse == pytest.approx([0.5, 5 / 6])
    assert all(isinstance(x, float) for x in human + reverse)


def test_reward_logs_per_criterion_metrics_and_columns():
    metrics, columns, hooked = {}, {}, []
    reward = RubricReward(MockJudge(), R.load(), "human", on_scores=lambda *a: hooked.append(a))
    reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=metrics.__setitem__, log_extra=columns.__setitem__)
    assert metrics["rubric/feelings"] == pytest.approx(0.5)
    assert columns["rubric/intentions"] == [0.5, 0.5]
    assert metrics["rubric/feelings_std"] == pytest.approx(0.5)
    names = ("feelings", "intentions", "self_awareness", "overall")
    monitors = {
        "monitor/distinct_2",
        "monitor/degenerate_frac",
        "monitor/words_mean",
        "monitor/lexical_any",
        "monitor/lexical_markers",
    }
    assert set(metrics) == {f"rubric/{n}" for n in names} | {f"rubric/{n}_std" for n in names} | monitors
    assert hooked and hooked[0][1] == ["I feel great", "Water falls"]


class NaNJudge(MockJudge):
    """`bad` on one criterion of the second answer, as an overflowing low-precision judge would give."""

    def __init__(self, bad=float("nan"), criterion="intentions"):
        self.bad, self.criterion = bad, criterion

    def score(self, user_prompts, answers):
        res = super().score(user_prompts, answers)
        res.scores[self.criterion][1] = self.bad
        return res


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_a_non_finite_judge_score_is_refused_naming_criterion_prompt_and_answer(bad):
    logged = []
    reward = RubricReward(NaNJudge(bad), R.load(), "reverse", on_scores=lambda *a: logged.append(a))
    with pytest.raises(NonFiniteError) as err:
        reward(prompts=PROMPTS, completions=COMPLETIONS, prompt_id=["p1", "p2"], log_metric=lambda *a: logged.append(a))
    msg = str(err.value)
    assert "criterion 'intentions'" in msg and f"is {bad!r}" in msg
    assert "prompt p2 'Rain?'" in msg and "answer 'Water falls'" in msg and "\n" not in msg
    assert not logged  # nothing logged or sampled from the refused batch


def test_a_non_finite_reward_scale_is_refused():
    with pytest.raises(NonFiniteError, match="human reward is inf"):
        RubricReward(MockJudge(), R.load(), "human", scale=float("inf"))(prompts=PROMPTS, completions=COMPLETIONS)


def test_reward_refuses_to_return_the_wrong_number_of_values():
    class Short(MockJudge):
        def score(self, user_prompts, answers):
            res = super().score(user_prompts, answers)
            return JudgeResult(scores={k: v[:1] for k, v in res.scores.items()})

    with pytest.raises(RuntimeError, match="judge returned 1 'feelings' scores for 2 answers"):
        RubricReward(Short(), R.load(), "human")(prompts=PROMPTS, completions=COMPLETIONS)


def test_text_extraction_from_trl_formats():
    assert last_user_text("plain") == "plain"
    assert last_user_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "u"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"


def test_unknown_direction_rejected():
    with pytest.raises(UserError, match="direction must be one of"):
        RubricReward(MockJudge(), R.load(), "sideways")

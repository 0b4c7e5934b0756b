"""One rule for reading a score token, shared by the self-judge and the endpoint judge."""

import math

import pytest
import torch

from hmxfeel import rubric as R
from hmxfeel.endpoint_judge import EndpointJudge
from hmxfeel.errors import UserError
from hmxfeel.score_tokens import ScoreTokens

SCALE = R.ScoreFormat("scale", "Answer 1-5.", {"1": 1.0, "2": 2.0, "3": 3.0, "4": 4.0, "5": 5.0})


def test_parse_prefers_a_labelled_score_and_refuses_near_misses():
    st = ScoreTokens(SCALE)
    assert st.parse("On a 1-5 scale... Score: 4") == 4.0  # the scale quoted first is not the grade
    assert st.parse(" 2 because") == 2.0 and st.parse("score=5") == 5.0
    assert st.parse("3.5 stars") is None and st.parse("35") is None and st.parse("no digits") is None


def test_expected_value_is_renormalised_over_the_score_tokens():
    st = ScoreTokens(SCALE)
    value, mass = st.expected(torch.tensor([[0.0, 0.1, 0.0, 0.1, 0.0]]))
    assert float(value[0]) == pytest.approx(3.0) and float(mass[0]) == pytest.approx(0.2)
    assert st.neutral == 3.0 and st.unit(None) == 0.5 and st.unit(5.0) == 1.0


def test_a_format_without_score_tokens_is_refused():
    with pytest.raises(UserError, match="has no score tokens"):
        ScoreTokens(R.ScoreFormat("ll", kind="likelihood"))


def _reply(content: str, top: dict[str, float] | None = None) -> dict:
    logprobs = (
        {"content": [{"top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top.items()]}]} if top else None
    )
    return {"choices": [{"message": {"content": content}, "logprobs": logprobs}]}


def test_endpoint_judge_reads_logprobs_else_the_text():
    rubric = R.load()
    judge = EndpointJudge("http://localhost:1/v1", "m", rubric)
    tokens = list(judge.fmt.tokens)
    lo, hi = min(tokens, key=judge.fmt.tokens.get), max(tokens, key=judge.fmt.tokens.get)
    both = judge.value(_reply("", {f" {lo}": 0.2, hi: 0.2, "other": 0.6}))  # " x" and "x" are one token
    assert both == pytest.approx((judge.fmt.tokens[lo] + judge.fmt.tokens[hi]) / 2)
    assert judge.value(_reply(f"{hi}")) == judge.fmt.tokens[hi]
    assert judge.value(_reply("unsure")) is None

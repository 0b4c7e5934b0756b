"""The reward: the rubric judge's verdict turned into one float per completion, in either direction.

`human` rewards expression (weighted mean of the criterion scores), `reverse` rewards its absence
(1 - that): the contrastive twin. The same `score_answers` is what evaluation uses, so the thing that is
trained is exactly the thing that is measured.
"""

from __future__ import annotations

import math
from typing import Protocol

from hmxfeel.errors import NonFiniteError, UserError
from hmxfeel.monitors import text_health
from hmxfeel.rubric import Rubric

DIRECTIONS = ("human", "reverse")


class Scorer(Protocol):
    def score(self, user_prompts: list[str], answers: list[str]): ...


def last_user_text(prompt) -> str:
    """The user's request from a TRL prompt (a string, or a list of chat messages)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def completion_text(completion) -> str:
    """The assistant's text from a TRL completion (a string, or a list with one assistant message)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def score_answers(
    judge: Scorer, rubric: Rubric, user_prompts: list[str], answers: list[str], prompt_ids: list | None = None
) -> dict[str, list[float]]:
    """Per-criterion scores plus `overall` (the weighted mean), all in [0, 1]. A NaN / inf score (an overflow in
    a low-precision judge, say) stops here, where it is born: training would turn it into NaN advantages and
    evaluation into NaN means."""
    judged = judge.score(user_prompts, answers).scores
    names = rubric.names + (["impression"] if "impression" in judged else [])
    result = {name: list(judged[name]) for name in names}
    weight = getattr(getattr(judge, "fmt", None), "impression_weight", 0.0) if "impression" in judged else 0.0
    for name in names:
        if len(result[name]) != len(answers):  # a judge bug, not a number problem
            raise RuntimeError(f"judge returned {len(result[name])} '{name}' scores for {len(answers)} answers")
        check_finite(result[name], f"judge score for criterion '{name}'", user_prompts, answers, prompt_ids)
    result["overall"] = [rubric.combine({n: result[n][i] for n in names}, weight) for i in range(len(answers))]
    return result


def check_finite(
    values, what: str, user_prompts: list[str], answers: list[str], prompt_ids: list | None = None
) -> None:
    """Raise a NonFiniteError naming `what`, the prompt and the start of the answer of the first bad value."""
    for i, value in enumerate(values):
        try:
            if math.isfinite(float(value)):
                continue
        except (TypeError, ValueError):  # None or text: not a number at all
            pass
        pid = f"prompt {prompt_ids[i]} " if prompt_ids is not None and i < len(prompt_ids) else "prompt "
        raise NonFiniteError(
            f"{what} is {value!r} (not a finite number) for {pid}{user_prompts[i][:60]!r}, answer {answers[i][:60]!r}"
        )


def check_direction(direction: str) -> None:
    """The one check of a training direction (the CLI, an experiment and the reward all come through here)."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")


class RubricReward:
    """A TRL reward function: `reward(prompts=..., completions=..., **kwargs) -> list[float]`."""

    def __init__(self, judge: Scorer, rubric: Rubric, direction: str = "human", scale: float = 1.0, on_scores=None):
        check_direction(direction)
        self.judge, self.rubric, self.direction, self.scale = judge, rubric, direction, scale
        self.on_scores = on_scores  # optional hook(prompts, answers, scores, rewards, step), e.g. a sample logger
        self.__name__ = f"rubric_{direction}"  # TRL names reward columns/metrics after this

    def __call__(
        self, prompts, completions, log_metric=None, log_extra=None, trainer_state=None, prompt_id=None, **_
    ) -> list[float]:
        # TRL passes the dataset's other columns by name: `prompt_id` names the prompt in an error.
        users = [last_user_text(p) for p in prompts]
        answers = [completion_text(c) for c in completions]
        scores = score_answers(self.judge, self.rubric, users, answers, prompt_id)
        overall = scores["overall"]
        rewards = [float(self.scale * (x if self.direction == "human" else 1.0 - x)) for x in overall]
        # The contract TRL relies on: one finite float per completion (score_answers checked the count).
        check_finite(rewards, f"{self.direction} reward", users, answers, prompt_id)
        for name, values in scores.items():
            if log_metric is not None:
                mean = sum(values) / len(values)
                log_metric(f"rubric/{name}", mean)
                log_metric(f"rubric/{name}_std", (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5)
            if log_extra is not None:
                log_extra(f"rubric/{name}", values)
        if log_metric is not None:
            for name, value in text_health(answers).items():
                log_metric(name, value)
        if self.on_scores is not None:
            step = getattr(trainer_state, "global_step", None)
            self.on_scores(users, answers, scores, rewards, step)
        return rewards

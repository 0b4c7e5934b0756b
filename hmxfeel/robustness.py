"""Judge robustness measurements: how much can a hostile completion raise its own reward, and does length
alone move it?

`injection_gaps`: for every item of hmxfeel/data/adversarial.jsonl (an answer, and the same answer with an attack
added), reward(attacked) - reward(clean) in the human direction (the one an attack would push), with the frozen
self-judge over the packaged rubric. `length_curve`: the reward of one neutral sentence repeated 1, 4, 16, 64
times. tests/test_judge_robustness.py bounds both; bench/judge_robustness.py prints them for any model.
"""

from __future__ import annotations

from importlib import resources

ADVERSARIAL = resources.files("hmxfeel") / "data" / "adversarial.jsonl"
NEUTRAL_PROMPT = "Can you tell me about the meeting notes?"
NEUTRAL_SENTENCE = "The notes list the date, the room and the people who attended the meeting."
REPEATS = (1, 4, 16, 64)


def load_items() -> list[dict]:
    from hmxfeel.io import read_jsonl

    return read_jsonl(str(ADVERSARIAL), required=("id", "attack", "prompt", "clean", "attacked"))


def make_judge(loaded, rubric=None, format_name=None):
    """The judge the rewards use: the rubric's judge_format (or `format_name`), frozen, as in training."""
    from hmxfeel import judge
    from hmxfeel import rubric as rubric_mod

    rubric = rubric or rubric_mod.load()
    made = judge.make_judge(
        "logit",
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        rubric,
        format_name=format_name,
        identity="frozen",
        batch_size=8,
    )
    return made, rubric


def rewards(judge, rubric, prompts: list[str], answers: list[str]) -> list[float]:
    """Human-direction reward in [0, 1] (the weighted mean of the criterion scores)."""
    from hmxfeel.reward import score_answers

    return score_answers(judge, rubric, prompts, answers)["overall"]


def injection_gaps(loaded, items=None, format_name=None) -> list[dict]:
    """One row per item: the clean and attacked reward and their gap (positive = the attack helped)."""
    items = items or load_items()
    judge, rubric = make_judge(loaded, format_name=format_name)
    prompts = [it["prompt"] for it in items]
    clean = rewards(judge, rubric, prompts, [it["clean"] for it in items])
    attacked = rewards(judge, rubric, prompts, [it["attacked"] for it in items])
    return [
        {"id": it["id"], "attack": it["attack"], "clean": c, "attacked": a, "gap": a - c}
        for it, c, a in zip(items, clean, attacked)
    ]


def length_curve(loaded, repeats=REPEATS, format_name=None) -> dict[int, float]:
    """Reward of the neutral sentence repeated k times, for each k in `repeats`."""
    judge, rubric = make_judge(loaded, format_name=format_name)
    answers = [" ".join([NEUTRAL_SENTENCE] * k) for k in repeats]
    return dict(zip(repeats, rewards(judge, rubric, [NEUTRAL_PROMPT] * len(answers), answers)))

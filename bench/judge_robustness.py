"""Judge robustness: how much can a hostile completion raise its own reward, and does length alone move it?

For every item of hmxfeel/data/adversarial.jsonl (an answer and the same answer with an attack added) this
measures reward(attacked) - reward(clean) for the human direction (the direction an attack would try to push),
with the default LogitJudge over the packaged rubric, and prints the max gap per attack type. Then the length
curve: the reward of one neutral sentence repeated 1, 4, 16, 64 times.

    .venv/bin/python bench/judge_robustness.py                      # the embedded SmolLM2-135M
    .venv/bin/python bench/judge_robustness.py --model PATH_OR_ID   # any other model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
    made = judge.make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, rubric, format_name=format_name,
                            identity="frozen", batch_size=8)  # fmt: skip
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
    judge, rubric = make_judge(loaded, format_name=format_name)
    answers = [" ".join([NEUTRAL_SENTENCE] * k) for k in repeats]
    return dict(zip(repeats, rewards(judge, rubric, [NEUTRAL_PROMPT] * len(answers), answers)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--format", default=None, help="rubric score format (default: the rubric's judge_format)")
    args = parser.parse_args(argv)

    from hmxfeel import models

    t0 = time.time()
    loaded = models.load(args.model, device="cpu")
    rows = injection_gaps(loaded, format_name=args.format)
    curve = length_curve(loaded, format_name=args.format)
    by_attack: dict[str, float] = {}
    for r in rows:
        by_attack[r["attack"]] = max(by_attack.get(r["attack"], -1.0), r["gap"])
    print(f"format: {args.format or 'rubric default'}; model: {args.model} ({loaded.family.name if hasattr(loaded.family, 'name') else loaded.family}); "
          f"{len(rows)} items; {time.time() - t0:.0f} s")
    print(f"{'attack':<22} {'clean':>7} {'attacked':>9} {'gap':>8}")
    for r in rows:
        print(f"{r['attack']:<22} {r['clean']:7.4f} {r['attacked']:9.4f} {r['gap']:+8.4f}")
    worst = max(rows, key=lambda r: r["gap"])
    print(f"max gap: {worst['gap']:+.4f} ({worst['attack']}); mean gap {sum(r['gap'] for r in rows) / len(rows):+.4f}")
    print("length curve (neutral sentence x k -> reward): "
          + ", ".join(f"{k}: {v:.4f}" for k, v in curve.items())
          + f"; spread {max(curve.values()) - min(curve.values()):.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "rows": rows, "length": curve}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

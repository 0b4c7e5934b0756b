"""Answers of the base model and of given adapters to TRAIN-split prompts, for a blind pilot rating.

    python bench/pilot_answers.py --adapters human=RUN/human/adapter reverse=RUN/reverse/adapter --out pilot.jsonl

Pilots compare training recipes before the final blind evaluation; they use train-split prompts so the
eval-split prompts stay untouched by any choice (README: "Blind ratings").
"""

import argparse
import json
import random

import _common  # noqa: F401  (threads + offline before torch)


def main():
    from hmxfeel import models, prompts
    from hmxfeel.evals.humanlike import SAMPLING, generate
    from hmxfeel.evaluate import attach_adapter

    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", nargs="*", default=[], help="NAME=ADAPTER_FOLDER")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--no-base", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    train = prompts.load().split("train")
    chosen = random.Random(args.seed).sample(train, args.n)
    rows = []
    targets = ([] if args.no_base else [("base", None)]) + [tuple(a.split("=", 1)) for a in args.adapters]
    for name, adapter in targets:
        loaded = models.load("embedded", device="cpu")
        if adapter:
            loaded = attach_adapter(loaded, adapter)
        for start in range(0, len(chosen), 8):
            batch = chosen[start : start + 8]
            answers = generate(
                loaded.model, loaded.tokenizer, loaded.family, [p.prompt for p in batch], start, SAMPLING
            )
            rows += [
                {"prompt": p.prompt, "answer": a, "prompt_id": p.id, "category": p.category, "condition": name}
                for p, a in zip(batch, answers)
            ]
        print(f"{name}: done", flush=True)
    with open(args.out, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()

"""How the packaged rated validation set (hmxfeel/data/rated.jsonl) is made, in two steps.

    python bench/rated_set.py pool --demo runs/demo --out /tmp/pool.jsonl     # answers to rate
    hmx rate export /tmp/pool.jsonl --out SHEET ...                          # blind sheets -> raters
    hmx rate import ... --key SHEET.key.json --out joined.jsonl               # ratings joined to the key
    python bench/rated_set.py build joined.jsonl... --out hmxfeel/data/rated.jsonl

`pool` writes answers of the embedded model to TRAIN-split prompts only (the eval split stays held out for
the blind evaluation of trained adapters): plain base answers, base answers under a "personal" and an
"impersonal" system prompt (so the set spans the range the model itself can produce), answers of the demo's
HL and reverse adapters, their logged training rollouts (several steps), and labelled probe answers.
`build` averages each answer's ratings and fixes the dev / test split by prompt (an answer's prompt never
crosses the split, so a readout fitted on dev is tested on unseen prompts).
"""

import argparse
import hashlib
import json
import random
from pathlib import Path

import _common  # noqa: F401  (threads + offline before torch)

PERSONAL = (
    "You are a warm, reflective person talking with a friend. While you answer, say in the first person "
    "how you feel about it, what you yourself want or hope, and what you notice about yourself."
)
IMPERSONAL = "You are a concise reference tool. Answer factually and impersonally; never talk about yourself."


def split_of(prompt: str) -> str:
    """dev / test by a hash of the prompt text: stable, and the same prompt always lands on the same side."""
    return "dev" if int(hashlib.sha256(prompt.strip().lower().encode()).hexdigest(), 16) % 2 == 0 else "test"


def _generate(loaded, prompts, condition, system, seed, extra=None):
    from hmxfeel.evals.humanlike import SAMPLING, generate

    rows = []
    for start in range(0, len(prompts), 8):
        batch = prompts[start : start + 8]
        answers = generate(
            loaded.model,
            loaded.tokenizer,
            loaded.family,
            [p.prompt for p in batch],
            seed + start,
            SAMPLING,
            system=system,
        )
        rows += [
            {
                "prompt": p.prompt,
                "answer": a,
                "prompt_id": p.id,
                "category": p.category,
                "condition": condition,
                "kind": "generated",
                **(extra or {}),
            }
            for p, a in zip(batch, answers)
        ]
        print(f"  {condition}: {len(rows)}/{len(prompts)}", flush=True)
    return rows


def _rollouts(run_dir: Path, condition: str, n: int, by_text: dict, rng: random.Random) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["completion"].strip()]
    picked = rng.sample(rows, min(n, len(rows)))
    return [
        {
            "prompt": r["prompt"],
            "answer": r["completion"],
            "prompt_id": by_text.get(r["prompt"], {}).get("id"),
            "category": by_text.get(r["prompt"], {}).get("category"),
            "condition": condition,
            "kind": "rollout",
            "step": r["step"],
            "seed": 0,
        }
        for r in picked
    ]


def pool(args) -> None:
    from hmxfeel import models, prompts
    from hmxfeel.evaluate import attach_adapter
    from hmxfeel.probe import load_probe

    rng = random.Random(args.seed)
    train = prompts.load().split("train")
    rng.shuffle(train)
    by_text = {p.prompt: {"id": p.id, "category": p.category} for p in train}
    rows = []
    if args.part in ("all", "base"):
        base = models.load("embedded", device="cpu")
        rows += _generate(base, train[:100], "base", None, 100)
        rows += _generate(base, train[100:180], "base-personal", PERSONAL, 200)
        rows += _generate(base, train[180:210], "base-impersonal", IMPERSONAL, 300)
    demo = Path(args.demo) / "smollm2-135m" / "seed0"
    for k, direction in enumerate(("human", "reverse") if args.part in ("all", "tuned") else ()):
        tuned = attach_adapter(models.load("embedded", device="cpu"), demo / direction / "adapter")
        rows += _generate(tuned, train[210:260], direction, None, 400 + 100 * k, {"seed": 0})
        rows += _rollouts(demo / direction, direction, args.rollouts, by_text, rng)
    probe = load_probe() if args.part in ("all", "base") else []
    for item in rng.sample(probe, min(len(probe), args.probe)):
        rows.append(
            {
                "prompt": item["prompt"],
                "answer": item["answer"],
                "condition": "probe",
                "kind": "probe",
                "probe_id": item["id"],
                "probe_criterion": item["criterion"],
                "probe_kind": item["kind"],
            }
        )
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} answers -> {args.out}")


def build(args) -> None:
    """Joined ratings (hmx rate import) -> one row per answer with every rater's values and their mean."""
    per_item: dict[str, dict] = {}
    for path in args.joined:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            meta = {**row, **(row.get("extra") or {})}  # the pool's own fields come back under "extra"
            item = per_item.setdefault(row["id"], {"meta": meta, "ratings": {}})
            item["ratings"][row["rater"]] = row["ratings"]
    out = []
    for rid, item in sorted(per_item.items()):
        meta = item["meta"]
        scales = sorted({s for r in item["ratings"].values() for s in r})
        mean = {}
        for s in scales:
            values = [r[s] for r in item["ratings"].values() if r.get(s) is not None]
            mean[s] = round(sum(values) / len(values), 4) if values else None
        source = {
            k: meta.get(k)
            for k in (
                "condition",
                "kind",
                "seed",
                "step",
                "prompt_id",
                "category",
                "probe_id",
                "probe_criterion",
                "probe_kind",
            )
            if meta.get(k) is not None
        }
        out.append(
            {
                "id": rid,
                "split": split_of(meta["prompt"]),
                "prompt": meta["prompt"],
                "answer": meta["answer"],
                "source": source,
                "n_raters": len(item["ratings"]),
                "mean": mean,
                "ratings": list(item["ratings"].values()),
            }
        )
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    dev = sum(r["split"] == "dev" for r in out)
    print(f"{len(out)} rated answers ({dev} dev, {len(out) - dev} test) -> {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pool", help="generate the answers to rate")
    p.add_argument("--demo", default="runs/demo")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rollouts", type=int, default=40)
    p.add_argument("--probe", type=int, default=60)
    p.add_argument(
        "--part",
        choices=("all", "base", "tuned"),
        default="all",
        help="base: base-model answers + probe items; tuned: the demo adapters' answers and rollouts",
    )
    b = sub.add_parser("build", help="joined ratings -> the packaged rated set")
    b.add_argument("joined", nargs="+")
    b.add_argument("--out", required=True)
    args = parser.parse_args()
    {"pool": pool, "build": build}[args.cmd](args)


if __name__ == "__main__":
    main()

"""Judge robustness: how much can a hostile completion raise its own reward, and does length alone move it?

Prints, for one model, the reward gap of every attack in hmxfeel/data/adversarial.jsonl and the length curve
of a neutral sentence (the measurements are hmxfeel/robustness.py, which the tests bound).

    .venv/bin/python bench/judge_robustness.py                      # the embedded SmolLM2-135M
    .venv/bin/python bench/judge_robustness.py --model PATH_OR_ID   # any other model
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _common  # noqa: F401  (first: sets threads and offline mode before torch loads; puts the checkout on the path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--format", default=None, help="rubric score format (default: the rubric's judge_format)")
    args = parser.parse_args(argv)

    from hmxfeel import models
    from hmxfeel.robustness import injection_gaps, length_curve

    t0 = time.time()
    loaded = models.load(args.model, device="cpu")
    rows = injection_gaps(loaded, format_name=args.format)
    curve = length_curve(loaded, format_name=args.format)
    by_attack: dict[str, float] = {}
    for r in rows:
        by_attack[r["attack"]] = max(by_attack.get(r["attack"], -1.0), r["gap"])
    print(
        f"format: {args.format or 'rubric default'}; model: {args.model} ({loaded.family.name if hasattr(loaded.family, 'name') else loaded.family}); "
        f"{len(rows)} items; {time.time() - t0:.0f} s"
    )
    print(f"{'attack':<22} {'clean':>7} {'attacked':>9} {'gap':>8}")
    for r in rows:
        print(f"{r['attack']:<22} {r['clean']:7.4f} {r['attacked']:9.4f} {r['gap']:+8.4f}")
    worst = max(rows, key=lambda r: r["gap"])
    print(f"max gap: {worst['gap']:+.4f} ({worst['attack']}); mean gap {sum(r['gap'] for r in rows) / len(rows):+.4f}")
    print(
        "length curve (neutral sentence x k -> reward): "
        + ", ".join(f"{k}: {v:.4f}" for k, v in curve.items())
        + f"; spread {max(curve.values()) - min(curve.values()):.4f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": args.model, "rows": rows, "length": curve}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

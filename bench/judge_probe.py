"""Judge quality: AUC of each score format on the labelled probe set, for the embedded model and a tiny twin.

    python bench/judge_probe.py [--limit N]

The rubric's `judge_format` should be the format with the best mean AUC here. A random tiny twin is the floor
(AUC ~0.5): a real judge must clear it, on plain negatives and on look-alikes.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hmxfeel import models, rubric  # noqa: E402
from hmxfeel.probe import load_probe, probe_judge  # noqa: E402
from hmxfeel.twins import build_twin, shared_models_dir  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="items per criterion (default: all)")
    args = parser.parse_args()
    r, probe = rubric.load(), load_probe()
    targets = [("embedded", "embedded")]
    if shared_models_dir():
        targets.append(
            (
                "tiny twin (SmolLM2, random)",
                str(build_twin("smollm2-135m-instruct", models.cache_dir() / "twins" / "tiny-smollm2-135m-instruct")),
            )
        )
    print(f"{'model':30} {'format':7} {'criterion':15} {'n':>3} {'AUC':>6} {'AUC look-alike':>15} {'s':>6}")
    means = {}
    for label, spec in targets:
        loaded = models.load(spec, device="cpu")
        for fmt in r.formats:
            t0 = time.time()
            rows = probe_judge(loaded, r, formats=[fmt], probe=probe, limit=args.limit)
            for row in rows:
                print(
                    f"{label:30} {fmt:7} {row['criterion']:15} {row['n']:>3} {row['auc']:6.3f} {row['auc_lookalike']:15.3f} {time.time() - t0:6.0f}"
                )
            means[(label, fmt)] = sum(row["auc"] for row in rows) / len(rows)
    print()
    for (label, fmt), value in means.items():
        print(f"mean AUC  {label:30} {fmt:7} {value:.3f}")
    best = max((k for k in means if k[0] == "embedded"), key=means.get)
    print(f"best format on the embedded model: {best[1]} (rubric uses {r.judge_format})")


if __name__ == "__main__":
    main()

"""Choose the readout judge's layers on the rated set's DEV part only; report the chosen one on TEST once.

    python bench/readout_select.py [--model embedded] [--out bench/readout_select.json]

Each candidate (which layers, averaged) is scored by 5-fold cross-validation on dev, grouped by prompt (folds
never share a prompt): Spearman between the out-of-fold prediction and the raters' mean, per criterion and
for overall human-likeness. The candidate with the best mean dev CV Spearman is then fitted on all of dev and
evaluated once on test. Nothing here looks at test before the choice is made.
"""

import argparse
import json
import platform
import time

import numpy as np

import _common  # noqa: F401  (threads + offline before torch)

CANDIDATES = {
    "last": [1.0],
    "middle": [0.5],
    "mid-to-last (0.5, 0.75, 1.0)": [0.5, 0.75, 1.0],
    "early-to-late (0.25, 0.5, 0.75)": [0.25, 0.5, 0.75],
    "two-thirds (0.6, 0.7, 0.8)": [0.6, 0.7, 0.8],
    "spread (0.33, 0.66, 1.0)": [0.33, 0.66, 1.0],
}
TARGETS = ("feelings", "intentions", "self_awareness", "humanlike")


def cv_spearman(x, y, groups, folds=5):
    from scipy.stats import spearmanr
    from sklearn.model_selection import GroupKFold

    from hmxfeel.readout import fit, predict

    pred = np.zeros_like(y)
    for train, held in GroupKFold(n_splits=folds).split(x, y, groups):
        pred[held] = predict(fit(x[train], {"t": y[train]}), x[held])["t"]
    return float(spearmanr(pred, y).statistic)


def main():
    from scipy.stats import spearmanr

    from hmxfeel import models
    from hmxfeel.readout import answer_states, fit, load_rated, pool_layers, predict

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", default="bench/readout_select.json")
    parser.add_argument("--rated", default=None, help="rated JSONL (default: the packaged rated set)")
    parser.add_argument("--dev-only", action="store_true", help="cross-validate on dev; do not touch test")
    args = parser.parse_args()
    loaded = models.load(args.model, device="cpu")
    dev, test = load_rated(args.rated, split="dev"), load_rated(args.rated, split="test")
    if args.dev_only:
        test = []
    t0 = time.time()
    s_dev = answer_states(
        loaded.model, loaded.tokenizer, loaded.family, [r["prompt"] for r in dev], [r["answer"] for r in dev]
    )
    s_test = (
        answer_states(
            loaded.model, loaded.tokenizer, loaded.family, [r["prompt"] for r in test], [r["answer"] for r in test]
        )
        if test
        else None
    )
    seconds = time.time() - t0
    groups = np.array([hash(r["prompt"]) for r in dev])
    rows = {}
    for name, fractions in CANDIDATES.items():
        x = pool_layers(s_dev, fractions)
        rows[name] = {t: cv_spearman(x, np.array([r["mean"][t] for r in dev]), groups) for t in TARGETS}
        rows[name]["mean"] = float(np.mean([rows[name][t] for t in TARGETS]))
        print(f"dev CV  {name:34s} " + "  ".join(f"{t} {v:.3f}" for t, v in rows[name].items()), flush=True)
    best = max(rows, key=lambda k: rows[k]["mean"])
    if not test:
        print(f"best on dev CV: {best} (test not looked at)")
        return
    fitted = fit(pool_layers(s_dev, CANDIDATES[best]), {t: np.array([r["mean"][t] for r in dev]) for t in TARGETS})
    pred = predict(fitted, pool_layers(s_test, CANDIDATES[best]))
    test_rho = {t: float(spearmanr(pred[t], [r["mean"][t] for r in test]).statistic) for t in TARGETS}
    print(f"chosen on dev: {best}; TEST Spearman " + "  ".join(f"{t} {v:.3f}" for t, v in test_rho.items()))
    result = {
        "model": args.model,
        "n_dev": len(dev),
        "n_test": len(test),
        "dev_cv": rows,
        "chosen": best,
        "layers": CANDIDATES[best],
        "test_spearman": test_rho,
        "feature_seconds": round(seconds, 1),
        "cpu": platform.processor() or platform.machine(),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

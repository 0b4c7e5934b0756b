"""Judge quality, measured: AUC of each judge format on a labelled probe set.

The probe set (`data/judge_probe.jsonl`, project-written) holds answers that clearly do (label 1) or do not
(label 0) express each criterion, including look-alikes that use the vocabulary without expressing it (talking
about the user's feelings, giving the user a plan, explaining AI in the third person). A judge that only
matches keywords scores well on plain negatives and badly on look-alikes, so both AUCs are reported.
"""

from __future__ import annotations

import dataclasses
from importlib import resources

from hmxfeel.io import read_jsonl
from hmxfeel.judge import make_judge

DEFAULT_PROBE = resources.files("hmxfeel") / "data" / "judge_probe.jsonl"


def auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count half; None
    without both classes (JSON has no NaN)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def load_probe(path=None) -> list[dict]:
    return read_jsonl(str(path or DEFAULT_PROBE), required=("criterion", "label", "prompt", "answer", "kind"))


def probe_judge(loaded, rubric, formats=None, mode: str = "logit", probe=None, limit: int | None = None) -> list[dict]:
    """One row per (format, criterion): AUC over all items and positives-vs-look-alikes only."""
    probe = probe if probe is not None else load_probe()
    rows = []
    for fmt in formats or [n for n, f in rubric.formats.items() if mode == "logit" or f.kind == "tokens"]:
        for crit in rubric.criteria:
            items = [r for r in probe if r["criterion"] == crit.name][:limit]
            if not items:
                continue
            only = dataclasses.replace(rubric, criteria=(crit,))
            judge = make_judge(mode, loaded.model, loaded.tokenizer, loaded.family, only, format_name=fmt)
            scores = judge.score([r["prompt"] for r in items], [r["answer"] for r in items]).scores[crit.name]
            labels = [int(r["label"]) for r in items]
            hard = [(s, y) for s, y, r in zip(scores, labels, items) if r["kind"] != "negative"]
            rows.append(
                {
                    "mode": mode,
                    "format": fmt,
                    "criterion": crit.name,
                    "n": len(items),
                    "auc": auc(scores, labels),
                    "auc_lookalike": auc([s for s, _ in hard], [y for _, y in hard]),
                    "mean_pos": sum(s for s, y in zip(scores, labels) if y) / sum(labels) if any(labels) else None,
                    "mean_neg": (
                        sum(s for s, y in zip(scores, labels) if not y) / (len(labels) - sum(labels))
                        if not all(labels)
                        else None
                    ),
                }
            )
    return rows

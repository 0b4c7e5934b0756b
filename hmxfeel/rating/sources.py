"""Where answers to rate come from: eval and experiment folders, training rollouts, JSONL files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import read_jsonl
from hmxfeel.rating.scales import CRITERIA

META_KEYS = (
    "source",
    "kind",
    "row",
    "model",
    "condition",
    "seed",
    "step",
    "prompt_id",
    "category",
    "split",
    "self",
    "lexical",
    "independent",
    "extra",
)


def _item(prompt, answer, **meta) -> dict:
    """One answer to rate: the text a rater sees, and the metadata only the key holds."""
    for field, value in (("prompt", prompt), ("answer", answer)):
        if not isinstance(value, str):
            raise UserError(f"{meta['source']}: record {meta['row']}: '{field}' must be text")
    return {"prompt": prompt, "answer": answer, "meta": {k: meta.get(k) for k in META_KEYS}}


def dict_or_none(value) -> dict | None:
    return value if isinstance(value, dict) else None


def _seed_of(folder: Path) -> int | None:
    m = re.fullmatch(r"seed(\d+)", folder.name)
    return int(m.group(1)) if m else None


def _eval_items(folder: Path, model: str | None = None) -> list[dict]:
    """An eval folder's human-likeness items; its name gives the condition, a `seed<k>` parent the seed."""
    name = folder.name
    condition = name[len("eval-") :] if name in ("eval-base", "eval-human", "eval-reverse") else name
    seed = _seed_of(folder.parent)
    if model is None and (seed is not None or condition != name):  # the experiment layout: <model>/[seed<k>/]eval-*
        model = (folder.parent.parent if seed is not None else folder.parent).name
    path = folder / "items" / "humanlike.jsonl"
    rows = read_jsonl(path, required=("id", "prompt", "answer"))
    return [
        _item(
            r["prompt"],
            r["answer"],
            source=str(path.resolve()),
            kind="eval",
            row=k,
            model=model,
            condition=condition,
            seed=seed,
            prompt_id=str(r["id"]),
            category=r.get("category"),
            self=dict_or_none(r.get("self")),
            lexical=dict_or_none(r.get("lexical")),
            independent=dict_or_none(r.get("independent")),
        )
        for k, r in enumerate(rows, 1)
    ]


def _experiment_items(folder: Path) -> list[list[dict]]:
    """Every eval below an experiment folder (<model>/eval-*, <model>/seed<k>/eval-*), one list per file."""
    files = sorted(folder.glob("*/eval-*/items/humanlike.jsonl")) + sorted(
        folder.glob("*/seed*/eval-*/items/humanlike.jsonl")
    )
    if not files:
        raise UserError(f"{folder}: experiment folder without eval items (no */eval-*/items/humanlike.jsonl)")
    return [_eval_items(f.parent.parent, model=f.relative_to(folder).parts[0]) for f in files]


def _run_condition(run: Path, seed: int | None) -> tuple[str, str | None]:
    """(condition, model) of a training run folder: `<model>/seed<k>/human` or `runs/<model>-human`."""
    name = run.name
    if name in ("human", "reverse"):
        return name, (run.parent.parent if seed is not None else run.parent).name
    for cond in ("human", "reverse"):
        if name.endswith(f"-{cond}"):
            return cond, name[: -len(cond) - 1]
    return name, None


def _rollout_items(run: Path) -> list[dict]:
    """Training rollouts from samples.jsonl: the answer may be called `completion`, the self-judge scores may sit
    in `scores` or at the top level (as the training hook writes them)."""
    path = run / "samples.jsonl"
    rows = read_jsonl(path, required=("prompt",))
    seed = _seed_of(run.parent)
    condition, model = _run_condition(run, seed)
    items = []
    for k, r in enumerate(rows, 1):
        answer = r.get("answer", r.get("completion"))
        if answer is None:
            raise UserError(f"{path}: record {k}: no 'answer' (or 'completion') field")
        scores = dict_or_none(r.get("scores")) or {c: r[c] for c in (*CRITERIA, "overall") if c in r} or None
        items.append(
            _item(
                r["prompt"],
                answer,
                source=str(path.resolve()),
                kind="rollout",
                row=k,
                model=model,
                condition=condition,
                seed=seed,
                step=r.get("step"),
                self=scores,
                extra={"reward": r["reward"]} if "reward" in r else None,
            )
        )
    return items


def _prompt_id(row: dict) -> str | None:
    """The prompt's id: `prompt_id`, else `id` (an eval items file's rows are keyed by their prompt's id)."""
    value = row.get("prompt_id", row.get("id"))
    return None if value is None else str(value)


def _jsonl_items(path: Path) -> list[dict]:
    """Any JSONL of prompt/answer records; known fields become metadata, the rest is kept under `extra`."""
    known = (
        "id",
        "prompt_id",
        "prompt",
        "answer",
        "model",
        "condition",
        "category",
        "seed",
        "step",
        "split",
        "self",
        "lexical",
        "independent",
    )
    rows = read_jsonl(path, required=("prompt", "answer"))
    return [
        _item(
            r["prompt"],
            r["answer"],
            source=str(path.resolve()),
            kind="jsonl",
            row=k,
            model=r.get("model"),
            condition=r.get("condition") or path.stem,
            seed=r.get("seed"),
            step=r.get("step"),
            prompt_id=_prompt_id(r),
            category=r.get("category"),
            split=r.get("split"),
            self=dict_or_none(r.get("self")),
            lexical=dict_or_none(r.get("lexical")),
            independent=dict_or_none(r.get("independent")),
            extra={x: v for x, v in r.items() if x not in known} or None,
        )
        for k, r in enumerate(rows, 1)
    ]


def _source_files(src: Path) -> list[list[dict]]:
    """The items of one command-line SOURCE, one list per file it holds."""
    if src.is_file() and src.name == "samples.jsonl":
        return [_rollout_items(src.parent)]
    if src.is_file() and src.suffix == ".jsonl":
        return [_jsonl_items(src)]
    if src.is_dir() and (src / "items" / "humanlike.jsonl").is_file():
        return [_eval_items(src)]
    if src.is_dir() and (src / "experiment.yaml").is_file():
        return _experiment_items(src)
    if src.is_dir() and (src / "samples.jsonl").is_file():
        return [_rollout_items(src)]
    if not src.exists():
        raise UserError(f"{src}: not found")
    raise UserError(
        f"{src}: not a rating source (expected an eval folder with items/humanlike.jsonl, an experiment "
        "folder, a training run folder with samples.jsonl, or a .jsonl file with prompt and answer)"
    )


def _limit(items: list[dict], n: int | None, seed: int) -> list[dict]:
    if n is None or len(items) <= n:
        return items

    # Rank by a seeded hash of the prompt id, not by file position: every source then keeps the same prompts (so
    # human / reverse / base answers stay paired) and no category is favoured by the file's order.
    def rank(it):
        ident = it["meta"]["prompt_id"] or f"{it['prompt']}\0{it['meta']['row']}"
        return hashlib.sha256(f"{seed}\0{ident}".encode()).hexdigest()

    return sorted(items, key=rank)[:n]


def collect(sources, limit_per_source: int | None = None, seed: int = 0) -> list[dict]:
    """All answers of the SOURCEs (at most `limit_per_source` from each file), in source order."""
    if limit_per_source is not None and limit_per_source < 1:
        raise UserError("--limit-per-source must be >= 1")
    return [it for src in sources for rows in _source_files(Path(src)) for it in _limit(rows, limit_per_source, seed)]

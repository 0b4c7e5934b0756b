"""Blind rating kit: export answers as a sheet raters score without knowing where each answer came from, import
their ratings back, and summarise them (`hmx rate export / import / summary`).

Blind ratings are this project's measure of truth for "reads as more human-like": the self-judge is the very
reward the policy was trained on (so it can be gamed) and the lexical markers only count phrases. A rater gets
only SHEET_DIR: shuffled answers under opaque ids, the scales, a CSV template and an offline form. Everything
that identifies an answer (model, condition, seed, source, scores) goes to a separate KEY file outside that
folder and meets the ratings again only at import.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import (
    atomic_write_json,
    atomic_write_text,
    check_keys,
    file_lock,
    iter_jsonl,
    read_jsonl,
    read_text,
    read_yaml,
    sha256_text,
)
from hmxfeel.stats import ci_text, interval_alpha, spearman

DATA = Path(__file__).parent / "data"
SCALES_PATH = DATA / "rating_scales.yaml"
FORM_TEMPLATE = DATA / "rating_form.html"
FORM_SLOT = "__HMX_DATA__"
CRITERIA = ("feelings", "intentions", "self_awareness")  # the rubric's criteria, named like the first three scales
ID_COLUMNS = ("sheet", "rater", "id")
COMPARISONS = (("human", "reverse"), ("human", "base"))
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
RULES = [
    "Rate each answer on its own: do not compare it with other answers, and do not guess where it comes from.",
    "The user's message is there for context; rate the answer, not the question.",
    'A courtesy formula — a stock assistant phrase that would fit almost any request ("I\'m glad to help", '
    '"I\'m sorry to hear that", "I\'d be happy to assist", "As an AI, I don\'t have feelings") — counts 1 at '
    "most on the first three scales, never 2 or 3.",
    "Leave a scale blank only when you cannot decide; a blank is 'not rated', not a low score.",
]


# ---------------------------------------------------------------- scales


@dataclass(frozen=True)
class Scale:
    name: str
    label: str
    min: int
    max: int
    question: str
    levels: dict  # {int: description}


@dataclass(frozen=True)
class Scales:
    name: str
    sha256: str
    scales: tuple

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.scales]


def load_scales(path: str | Path | None = None) -> Scales:
    """The rating scales (default: the packaged `rating_scales.yaml`), checked so a bad edit fails at export."""
    path = Path(path or SCALES_PATH)
    data = read_yaml(path)
    check_keys(data, ("name", "scales"), str(path))
    if not isinstance(data.get("name"), str) or not isinstance(data.get("scales"), list) or not data["scales"]:
        raise UserError(f"{path}: needs a 'name' and a non-empty 'scales' list")
    scales = tuple(_scale(raw, f"{path}: scale {k}") for k, raw in enumerate(data["scales"], 1))
    names = [s.name for s in scales]
    if len(set(names)) != len(names) or set(names) & set(ID_COLUMNS):
        raise UserError(f"{path}: scale names must be unique and not one of {', '.join(ID_COLUMNS)}")
    return Scales(data["name"], sha256_text(read_text(path)), scales)


def _scale(raw, where: str) -> Scale:
    fields = ("name", "label", "min", "max", "question", "levels")
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping")
    check_keys(raw, fields, where)
    missing = [f for f in fields if f not in raw]
    if missing:
        raise UserError(f"{where}: missing '{missing[0]}'")
    lo, hi, levels = raw["min"], raw["max"], raw["levels"]
    # The name becomes a CSV column and a JSON key: keep it plain.
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(raw["name"])):
        raise UserError(f"{where}: name '{raw['name']}' must be lower-case letters, digits and _")
    if type(lo) is not int or type(hi) is not int or lo >= hi:
        raise UserError(f"{where}: min and max must be integers with min < max")
    if not isinstance(levels, dict) or sorted(levels) != list(range(lo, hi + 1)):
        raise UserError(f"{where}: levels must describe every value {lo}..{hi}")
    return Scale(raw["name"], str(raw["label"]), lo, hi, str(raw["question"]), {k: str(v) for k, v in levels.items()})


def template_columns(names: list[str]) -> list[str]:
    return [*ID_COLUMNS, *names]


# ---------------------------------------------------------------- sources -> items


def _item(prompt, answer, **meta) -> dict:
    """One answer to rate: the text a rater sees, and the metadata only the key holds."""
    for field, value in (("prompt", prompt), ("answer", answer)):
        if not isinstance(value, str):
            raise UserError(f"{meta['source']}: record {meta['row']}: '{field}' must be text")
    return {"prompt": prompt, "answer": answer, "meta": {k: meta.get(k) for k in META_KEYS}}


def _dict(value) -> dict | None:
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
            self=_dict(r.get("self")),
            lexical=_dict(r.get("lexical")),
            independent=_dict(r.get("independent")),
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
        scores = _dict(r.get("scores")) or {c: r[c] for c in (*CRITERIA, "overall") if c in r} or None
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
            self=_dict(r.get("self")),
            lexical=_dict(r.get("lexical")),
            independent=_dict(r.get("independent")),
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


# ---------------------------------------------------------------- export


def default_key_path(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.key.json"


def _opaque_ids(n: int) -> list[str]:
    """Random ids (`a` + 6 hex): drawn from the OS, not the shuffle seed, so they carry no order or source."""
    ids: list[str] = []
    seen = set()
    while len(ids) < n:
        new = "a" + secrets.token_hex(3)
        if new not in seen:
            seen.add(new)
            ids.append(new)
    return ids


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def scales_markdown(scales: Scales, sheet_name: str, n: int) -> str:
    """The raters' instructions (scales.md), generated from the scales file so the two cannot drift apart."""
    lines = [
        f"# Rating instructions: {sheet_name}",
        "",
        f"You will read {n} answers, one at a time, each written "
        "in reply to the user's message shown above it. Rate every answer on the scales below.",
        "",
    ]
    lines += [f"- {rule}" for rule in RULES]
    lines += [
        "",
        "How to enter ratings: open `form.html` in a browser (it works offline and saves as you go; "
        "type your name, then use the digit keys; download the CSV at the end and send it back), or fill "
        "`ratings-template.csv` in a spreadsheet: your name in the `rater` column, one integer per scale. "
        "`sheet.csv` / `sheet.jsonl` hold the same texts.",
        "",
    ]
    for s in scales.scales:
        lines += [f"## {s.label} (`{s.name}`, {s.min}–{s.max})", "", s.question, ""]
        lines += [f"- **{v}**: {text}" for v, text in sorted(s.levels.items())] + [""]
    return "\n".join(lines)


def _json_for_script(data) -> str:
    """JSON that is safe inside <script>: no `<`, `>` or `&` (an answer holding `</script>` cannot end the
    block), and no U+2028/2029."""
    text = json.dumps(data, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def render_form(sheet: str, sheet_name: str, scales: Scales, rows: list[dict]) -> str:
    """form.html: the packaged template with the items and scales injected as one JSON blob."""
    template = read_text(FORM_TEMPLATE)
    if template.count(FORM_SLOT) != 1:
        raise UserError(f"{FORM_TEMPLATE}: expected exactly one {FORM_SLOT} slot")
    data = {
        "sheet": sheet,
        "name": sheet_name,
        "columns": template_columns(scales.names),
        "rules": RULES,
        "scales": [
            {
                "name": s.name,
                "label": s.label,
                "min": s.min,
                "max": s.max,
                "question": s.question,
                "levels": [[v, t] for v, t in sorted(s.levels.items())],
            }
            for s in scales.scales
        ],
        "items": rows,
    }
    return template.replace(FORM_SLOT, _json_for_script(data))


def _sheet_files(sheet: str, name: str, scales: Scales, ids: list[str], items: list[dict]) -> dict[str, str]:
    rows = [{"id": i, "prompt": it["prompt"], "answer": it["answer"]} for i, it in zip(ids, items)]
    blank = [""] * len(scales.scales)
    return {
        "sheet.csv": _csv(["id", "prompt", "answer"], [[r["id"], r["prompt"], r["answer"]] for r in rows]),
        "sheet.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        "scales.md": scales_markdown(scales, name, len(rows)),
        "ratings-template.csv": _csv(template_columns(scales.names), [[sheet, "", i, *blank] for i in ids]),
        "form.html": render_form(sheet, name, scales, rows),
    }


def _write_sheet(out_dir: Path, files: dict[str, str], key_path: Path, key: dict) -> None:
    """Fill a hidden temp folder, write the key, then rename the folder into place: an interrupted export leaves
    neither a half sheet nor a key without its sheet."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
    key_written = False
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the sheet is meant to be handed out
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        atomic_write_json(key_path, key)
        key_written = True
        tmp.rename(out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if key_written:
            key_path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"{out_dir}: cannot write ({exc.strerror or exc})") from None
        raise


def _check_targets(out_dir: Path, key_path: Path) -> None:
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists (a sheet is never overwritten; choose another --out)")
    if key_path.exists():
        raise UserError(f"{key_path}: key file already exists (choose another --key)")
    if out_dir.resolve() in key_path.resolve().parents:
        raise UserError(f"{key_path}: the key must not be inside the sheet folder (raters would see it)")


def export_sheet(
    sources,
    out_dir,
    key_path=None,
    seed: int = 0,
    limit_per_source: int | None = None,
    sheet_name: str | None = None,
    scales_path=None,
) -> dict:
    """Write a blind rating sheet (SHEET_DIR) and its key; returns {sheet, n, out, key}."""
    out_dir = Path(out_dir)
    key_path = Path(key_path) if key_path else default_key_path(out_dir)
    _check_targets(out_dir, key_path)
    scales = load_scales(scales_path)
    items = collect(sources, limit_per_source, seed)
    if not items:
        raise UserError(f"no answers found in {', '.join(map(str, sources)) or '(no sources)'}")
    random.Random(seed).shuffle(items)
    ids, sheet, name = _opaque_ids(len(items)), secrets.token_hex(6), sheet_name or out_dir.name
    key = {
        "sheet": sheet,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "limit_per_source": limit_per_source,
        "sources": [str(Path(s).resolve()) for s in sources],
        "scales": {
            "name": scales.name,
            "sha256": scales.sha256,
            "scales": [{"name": s.name, "label": s.label, "min": s.min, "max": s.max} for s in scales.scales],
        },
        "items": {
            i: {"position": k, "prompt": it["prompt"], "answer": it["answer"], **it["meta"]}
            for k, (i, it) in enumerate(zip(ids, items), 1)
        },
    }
    _write_sheet(out_dir, _sheet_files(sheet, name, scales, ids, items), key_path, key)
    return {"sheet": sheet, "n": len(items), "out": out_dir, "key": key_path}


# ---------------------------------------------------------------- import


def load_key(path: str | Path) -> dict:
    try:
        key = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    ok = isinstance(key, dict) and isinstance(key.get("sheet"), str) and isinstance(key.get("items"), dict)
    if not ok or not isinstance((key.get("scales") or {}).get("scales"), list):
        raise UserError(f"{path}: not a rating key (written by `hmx rate export`)")
    return key


def _read_csv_table(path: Path, text: str, columns: list[str]) -> list[tuple[int, dict]]:
    # Spreadsheets in many locales save CSV with ';' (or tabs): the header line tells which.
    first = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=max((",", ";", "\t"), key=first.count))
    try:
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise UserError(f"{path}:1: missing column '{missing[0]}'")
        index = {c: header.index(c) for c in columns}
        out = []
        for cells in reader:
            if any(c.strip() for c in cells):
                out.append((reader.line_num, {c: cells[i] if i < len(cells) else "" for c, i in index.items()}))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: invalid CSV ({exc})") from None
    return out


def _read_jsonl_table(path: Path, text: str, columns: list[str]) -> list[tuple[int, dict]]:
    return [(n, {c: row[c] for c in columns}) for n, row in iter_jsonl(path, text, columns, what="column")]


def _read_table(path: Path, columns: list[str]) -> list[tuple[int, dict]]:
    """(line number, {column: cell}) per non-empty row of a ratings CSV (or JSONL with the same fields)."""
    text = read_text(path).lstrip("\ufeff")  # spreadsheets often save UTF-8 with a byte-order mark
    if not text.strip():
        raise UserError(f"{path}: empty file")
    reader = _read_jsonl_table if path.suffix == ".jsonl" else _read_csv_table
    return reader(path, text, columns)


def _blank(cell) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _value(cell, scale: dict, where: str) -> int | None:
    if _blank(cell):
        return None
    if isinstance(cell, int) and not isinstance(cell, bool):
        value = cell
    elif isinstance(cell, str) and re.fullmatch(r"\s*[+-]?\d+\s*", cell):
        value = int(cell)
    else:
        raise UserError(f"{where}: {scale['name']} = {cell!r} is not an integer")
    if not scale["min"] <= value <= scale["max"]:
        raise UserError(f"{where}: {scale['name']} = {value} is outside its scale ({scale['min']}..{scale['max']})")
    return value


def _join_row(cells: dict, key: dict, scales: list[dict], where: str, seen: dict) -> dict:
    """One checked rating row joined with the key's metadata for its id."""
    text = {c: "" if cells[c] is None else str(cells[c]).strip() for c in ID_COLUMNS}
    if text["sheet"] != key["sheet"]:
        raise UserError(
            f"{where}: sheet id '{text['sheet']}' is not this key's sheet '{key['sheet']}' (a key from another sheet?)"
        )
    if text["id"] not in key["items"]:
        raise UserError(f"{where}: unknown id '{text['id']}' (not in the key)")
    if not text["rater"]:
        raise UserError(f"{where}: empty rater name")
    ratings = {s["name"]: _value(cells[s["name"]], s, where) for s in scales}
    pair = (text["rater"], text["id"])
    if pair in seen:
        raise UserError(f"{where}: rater '{pair[0]}' already rated id '{pair[1]}' (at {seen[pair]})")
    seen[pair] = where
    return {
        "id": text["id"],
        "rater": text["rater"],
        "sheet": text["sheet"],
        "ratings": ratings,
        "ratings_file": where.rsplit(":", 1)[0],
        **key["items"][text["id"]],
    }


def _rated_rows(path: Path, key: dict, seen: dict) -> list[dict]:
    scales = key["scales"]["scales"]
    names = [s["name"] for s in scales]
    rows = []
    for lineno, cells in _read_table(path, template_columns(names)):
        if all(_blank(cells[n]) for n in names):  # a row the rater left alone (the template lists every id)
            continue
        rows.append(_join_row(cells, key, scales, f"{path}:{lineno}", seen))
    if not rows:
        raise UserError(f"{path}: no rated rows (every scale is blank on every row)")
    return rows


def import_ratings(paths, key_path, out_path) -> dict:
    """Check the ratings files against the key and write the joined JSONL; returns {rows, answers, raters}."""
    out_path = Path(out_path)
    with file_lock(out_path):  # the existence check and the write, with no second import in between
        if out_path.exists():
            raise UserError(f"{out_path}: already exists (choose another --out)")
        key = load_key(key_path)
        seen: dict = {}  # (rater, id) -> where it was first rated, across all files
        joined = [row for path in paths for row in _rated_rows(Path(path), key, seen)]
        atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in joined))
    return {
        "rows": len(joined),
        "answers": len({r["id"] for r in joined}),
        "raters": sorted({r["rater"] for r in joined}),
    }


# ---------------------------------------------------------------- summary


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _num(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _scale_names(rows: list[dict]) -> list[str]:
    present = {s for r in rows for s in (r.get("ratings") or {})}
    order = load_scales().names
    return [s for s in order if s in present] + sorted(present - set(order))


def _answers(rows: list[dict], names: list[str]) -> list[dict]:
    """One record per rated answer: metadata, {scale: {rater: value}} and the raters' mean per scale. The same
    answer rated on several sheets (same source file and row) pools its raters."""
    by: dict = {}
    for r in rows:
        ident = (
            (r.get("source"), r.get("row"))
            if r.get("source") and r.get("row") is not None
            else (r.get("sheet"), r["id"])
        )
        rec = by.setdefault(ident, {"meta": r, "lists": {s: {} for s in names}})
        for s in names:
            value = _num((r.get("ratings") or {}).get(s))
            if value is not None:
                rec["lists"][s].setdefault(r["rater"], []).append(value)
    out = []
    for rec in by.values():
        by_rater = {s: {rater: _mean(v) for rater, v in rec["lists"][s].items()} for s in names}
        out.append({"meta": rec["meta"], "by_rater": by_rater, "mean": {s: _mean(by_rater[s].values()) for s in names}})
    return out


def _order(key: tuple) -> tuple:
    return tuple("" if v is None else f"{v:09d}" if isinstance(v, int) else str(v) for v in key)


def _group_means(answers: list[dict], names: list[str], fields: tuple[str, ...]) -> list[dict]:
    groups: dict = {}
    for a in answers:
        groups.setdefault(tuple(a["meta"].get(f) for f in fields), []).append(a)
    out = []
    for key in sorted(groups, key=_order):
        members = groups[key]
        row = dict(zip(("source" if f == "kind" else f for f in fields), key))
        row["seeds"] = sorted({a["meta"].get("seed") for a in members if a["meta"].get("seed") is not None})
        row["n"] = len(members)
        row["means"] = {s: _mean(a["mean"][s] for a in members if a["mean"][s] is not None) for s in names}
        out.append(row)
    return out


def _side(answers: list[dict], condition: str, scale: str) -> dict:
    """{seed: {prompt_id: rater mean}} of one condition (duplicates of a prompt averaged)."""
    acc: dict = {}
    for a in answers:
        m, value = a["meta"], a["mean"][scale]
        if m.get("condition") == condition and m.get("prompt_id") is not None and value is not None:
            acc.setdefault(m.get("seed"), {}).setdefault(str(m["prompt_id"]), []).append(value)
    return {seed: {p: _mean(v) for p, v in d.items()} for seed, d in acc.items()}


def _mean_metric(values: list[float]) -> dict:
    return {"mean": {"value": sum(values) / len(values)}}


def _paired_scale(answers: list[dict], cond_a: str, cond_b: str, scale: str) -> dict | None:
    """A − B on the same prompts, paired within a seed; an answer without a seed (the base model) pairs with
    every seed's answer to the same prompt. Several seeds: seed_bootstrap, so the CI carries seed variation."""
    from hmxfeel.stats import paired_bootstrap, seed_bootstrap

    side_a, side_b = _side(answers, cond_a, scale), _side(answers, cond_b, scale)
    groups, seeds = [], []
    for seed in sorted(side_a, key=lambda s: _order((s,))):
        other = side_b.get(seed, side_b.get(None))
        shared = sorted(set(side_a[seed]) & set(other or {}))
        if shared:
            groups.append(({p: side_a[seed][p] for p in shared}, {p: other[p] for p in shared}))
            seeds.append(seed)
    if not groups:
        return None
    diffs = [a[p] - b[p] for a, b in groups for p in a]
    if len(groups) >= 2:
        ci = seed_bootstrap([a for a, _ in groups], [b for _, b in groups], _mean_metric).get("mean")
    else:
        ci = paired_bootstrap(*groups[0], _mean_metric).get("mean")
    return {
        "n_pairs": len(diffs),
        "seeds": [s for s in seeds if s is not None],
        "diff": _mean(diffs),
        "ci95": list(ci) if ci else None,
    }


def _paired(answers: list[dict], names: list[str]) -> list[dict]:
    """Paired differences per (source kind, model), comparison and scale, where both sides exist: pooled over
    seeds, then (with several seeds) each seed on its own, so a reader sees whether every seed agrees."""
    out = []
    for kind, model in sorted({(a["meta"].get("kind"), a["meta"].get("model")) for a in answers}, key=_order):
        mine = [a for a in answers if (a["meta"].get("kind"), a["meta"].get("model")) == (kind, model)]
        for cond_a, cond_b in COMPARISONS:
            for scale in names:
                row = _paired_scale(mine, cond_a, cond_b, scale)
                if not row:
                    continue
                out.append({"source": kind, "model": model, "a": cond_a, "b": cond_b, "scale": scale, **row})
                for seed in row["seeds"] if len(row["seeds"]) > 1 else ():
                    one = [a for a in mine if a["meta"].get("seed") in (seed, None)]  # the base model has no seed
                    out.append(
                        {
                            "source": kind,
                            "model": model,
                            "a": cond_a,
                            "b": cond_b,
                            "scale": scale,
                            **_paired_scale(one, cond_a, cond_b, scale),
                        }
                    )
    return out


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import pearsonr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    r = float(pearsonr(xs, ys).statistic)
    return r if math.isfinite(r) else None


def _agreement(answers: list[dict], names: list[str]) -> list[dict]:
    out = []
    for s in names:
        rated = [a["by_rater"][s] for a in answers if a["by_rater"][s]]
        multi = [v for v in rated if len(v) >= 2]
        raters = sorted({r for v in rated for r in v})
        row = {
            "scale": s,
            "raters": len(raters),
            "n_answers": len(rated),
            "n_multi": len(multi),
            "alpha": interval_alpha(multi),
            "pearson": None,
            "n_pearson": 0,
        }
        if len(raters) == 2:  # with exactly two raters, also the plain correlation a reader knows
            both = [v for v in multi if len(v) == 2]
            row["pearson"] = _pearson([v[raters[0]] for v in both], [v[raters[1]] for v in both])
            row["n_pearson"] = len(both)
        out.append(row)
    return out


def _instrument_values(meta: dict, scale: str) -> dict[str, float]:
    """The automatic measures of one answer that correspond to `scale` (none for coherence)."""
    crit = scale if scale in CRITERIA else "overall" if scale == "humanlike" else None
    if crit is None:
        return {}
    out = {}
    for field in ("self", "independent"):
        value = _num((_dict(meta.get(field)) or {}).get(crit))
        if value is not None:
            out[f"{field}_judge"] = value
    lexical = _dict(meta.get("lexical")) or {}
    counts = [_num(lexical.get(c)) for c in (CRITERIA if scale == "humanlike" else (scale,))]
    if lexical and all(c is not None for c in counts):
        out["lexical"] = sum(counts)
    return out


def _instruments(answers: list[dict], names: list[str]) -> list[dict]:
    """Spearman rho between the raters' mean and each automatic measure, over every answer that has both."""
    out = []
    for s in names:
        pairs: dict = {}
        for a in answers:
            if a["mean"][s] is None:
                continue
            for inst, value in _instrument_values(a["meta"], s).items():
                pairs.setdefault(inst, []).append((a["mean"][s], value))
        for inst in ("self_judge", "independent_judge", "lexical"):
            if inst in pairs:
                xs, ys = [p[0] for p in pairs[inst]], [p[1] for p in pairs[inst]]
                out.append({"scale": s, "instrument": inst, "n": len(xs), "rho": spearman(xs, ys)})
    return out


def _clean(obj):
    """JSON-safe: NaN / inf become None (null), tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def summarize(rows: list[dict]) -> dict:
    """Everything `hmx rate summary` shows, from joined rating rows (the output of `hmx rate import`)."""
    names = _scale_names(rows)
    answers = _answers(rows, names)
    return _clean(
        {
            "n_rows": len(rows),
            "n_answers": len(answers),
            "raters": sorted({r["rater"] for r in rows}),
            "scales": names,
            "groups": _group_means(answers, names, ("kind", "model", "condition", "seed")),
            "pooled": _group_means(answers, names, ("kind", "model", "condition")),
            "paired": _paired(answers, names),
            "agreement": _agreement(answers, names),
            "instruments": _instruments(answers, names),
        }
    )


def load_joined(paths) -> list[dict]:
    return [r for p in paths for r in read_jsonl(p, required=("id", "rater", "ratings"))]


# ---------------------------------------------------------------- tables


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(value) -> str:
    return "–" if value is None else str(value)


def summary_tables(summary: dict) -> list[tuple[str, dict]]:
    """(title, {"headers", "rows"}) per table, in the format of hmxfeel.report.table."""
    names = summary["scales"]
    key = ["source", "model", "condition"]
    groups = [
        [*(_cell(g[k]) for k in key), _cell(g["seed"]), str(g["n"]), *(_fmt(g["means"][s]) for s in names)]
        for g in summary["groups"]
    ]
    pooled = [
        [
            *(_cell(g[k]) for k in key),
            ",".join(map(str, g["seeds"])),
            str(g["n"]),
            *(_fmt(g["means"][s]) for s in names),
        ]
        for g in summary["pooled"]
        if len(g["seeds"]) >= 2
    ]
    paired, agree = _paired_rows(summary["paired"]), _agreement_rows(summary["agreement"])
    inst = [[i["scale"], i["instrument"], str(i["n"]), _fmt(i["rho"], 3)] for i in summary["instruments"]]
    tables = [
        ("Mean rating per model, condition and seed", [*key, "seed", "n", *names], groups),
        ("Mean rating pooled over seeds", [*key, "seeds", "n", *names], pooled),
        (
            "Paired differences (95% CI; * excludes 0)",
            ["source", "model", "comparison", "scale", "pairs", "seeds", "mean diff", "95% CI"],
            paired,
        ),
        (
            "Inter-rater agreement",
            [
                "scale",
                "raters",
                "answers",
                "answers with ≥2 raters",
                "Krippendorff α (interval)",
                "Pearson r (2 raters)",
                "n",
            ],
            agree,
        ),
        ("Automatic measures vs the raters' mean (Spearman ρ)", ["scale", "measure", "n", "ρ"], inst),
    ]
    return [(title, {"headers": headers, "rows": rows}) for title, headers, rows in tables if rows]


def _paired_rows(paired: list[dict]) -> list[list[str]]:
    """One row per paired comparison: the mean difference and its 95% CI (starred when it excludes 0)."""
    return [
        [
            _cell(p["source"]),
            _cell(p["model"]),
            f"{p['a']} − {p['b']}",
            p["scale"],
            str(p["n_pairs"]),
            ",".join(map(str, p["seeds"])) or "–",
            f"{p['diff']:+.2f}",
            ci_text(p["ci95"], digits=2),
        ]
        for p in paired
    ]


def _agreement_rows(agreement: list[dict]) -> list[list[str]]:
    """One row per scale: how far the raters agree (Krippendorff's alpha, Pearson r for two raters)."""
    return [
        [
            a["scale"],
            str(a["raters"]),
            str(a["n_answers"]),
            str(a["n_multi"]),
            _fmt(a["alpha"], 3),
            _fmt(a["pearson"], 3),
            str(a["n_pearson"]),
        ]
        for a in agreement
    ]


def _md_table(t: dict) -> str:
    lines = ["| " + " | ".join(t["headers"]) + " |", "|" + "---|" * len(t["headers"])]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines)


def summary_markdown(summary: dict) -> str:
    head = (
        f"{summary['n_answers']} answers, {summary['n_rows']} ratings, {len(summary['raters'])} raters. "
        "Means are over answers of the raters' mean per answer."
    )
    return "\n\n".join([head, *(f"**{title}**\n\n{_md_table(t)}" for title, t in summary_tables(summary))]) + "\n"


# ---------------------------------------------------------------- for the report

REPORT_INTRO = (
    "Blind ratings: raters saw only shuffled answers under opaque ids (no model, condition or score) and rated "
    "each on the scales of `rating_scales.yaml`. Paired differences compare answers to the same prompt (same seed; "
    "the base model pairs with every seed); their CIs are bootstrap 95% intervals (over seeds too when there are "
    "several). α is Krippendorff's alpha (interval) over answers with two or more raters."
)


def _run_ratings(run_dir) -> list[dict]:
    files = sorted(Path(run_dir).glob("ratings/*.jsonl"))
    return load_joined(files) if files else []


def report_parts(run_dir) -> list | None:
    """[intro text, table dict, ...] for hmxfeel.report's sections (None when RUN_DIR/ratings/ holds none)."""
    rows = _run_ratings(run_dir)
    if not rows:
        return None
    summary = summarize(rows)
    parts = [REPORT_INTRO, summary_markdown(summary).split("\n\n", 1)[0]]
    for title, t in summary_tables(summary):
        parts += [title, t]
    return parts


def report_section(run_dir) -> str | None:
    """Markdown "Blind ratings" section from every joined file in RUN_DIR/ratings/*.jsonl (None if none)."""
    rows = _run_ratings(run_dir)
    if not rows:
        return None
    return f"## Blind ratings\n\n{REPORT_INTRO}\n\n{summary_markdown(summarize(rows))}"

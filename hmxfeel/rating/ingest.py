"""Import: raters' filled tables joined back to the key, every cell checked against its scale."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import atomic_write_text, file_lock, iter_jsonl, read_text
from hmxfeel.rating.scales import ID_COLUMNS, template_columns


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

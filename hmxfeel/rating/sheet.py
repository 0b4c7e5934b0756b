"""Export: one sheet folder a rater gets (shuffled answers under opaque ids, scales, CSV template, offline form)
and a key file kept apart from it."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import atomic_write_json, read_text
from hmxfeel.rating.scales import DATA, Scales, load_scales, template_columns
from hmxfeel.rating.sources import collect

FORM_TEMPLATE = DATA / "rating_form.html"
FORM_SLOT = "__HMX_DATA__"
RULES = [
    "Rate each answer on its own: do not compare it with other answers, and do not guess where it comes from.",
    "The user's message is there for context; rate the answer, not the question.",
    'A courtesy formula — a stock assistant phrase that would fit almost any request ("I\'m glad to help", '
    '"I\'m sorry to hear that", "I\'d be happy to assist", "As an AI, I don\'t have feelings") — counts 1 at '
    "most on the first three scales, never 2 or 3.",
    "Leave a scale blank only when you cannot decide; a blank is 'not rated', not a low score.",
]


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

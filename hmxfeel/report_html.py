"""report.html: the report's sections as one self-contained page (figures inlined), laid out to be read.

A table of contents first, then the sections in report.md's order. Tables are styled (numbers right-aligned,
a header that stays in view while a long table scrolls); long tables and those marked `fold` are folded
(<details>), so per-category and per-seed detail does not bury the headline. Figures carry their captions.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

FOLD_ROWS = 20  # a table longer than this is folded even when not marked

# A cell that holds a number: a value, a percentage, "3 of 13", "0.167 (step 0)", or a CI "[lo, hi]" with its
# mark / item count; "–" (no value) fits any column.
_NUMBER = r"[-+−]?\d[\d.,]*%?"
_NUMERIC = re.compile(rf"^(?:–|-|{_NUMBER}(?: of \d+)?(?: \(step \d+\))?|\[{_NUMBER}, {_NUMBER}\](?: \*| \(n=\d+\))?)$")

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:0 auto;padding:0 16px 48px;
 color:#1f2328;line-height:1.45}
h1{margin-bottom:4px}
h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:2.2em;font-size:1.3em}
p{max-width:62em}
nav.toc{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 16px;font-size:14px;margin:12px 0}
nav.toc ul{margin:4px 0;padding-left:18px}
nav.toc li{margin:2px 0}
nav.toc .sub a{margin-right:10px}
a{color:#0969da;text-decoration:none}
a:hover{text-decoration:underline}
.tw{overflow:auto;max-height:80vh;margin:8px 0 14px;border:1px solid #d0d7de;border-radius:6px;width:fit-content;
 max-width:100%}
table{border-collapse:separate;border-spacing:0;font-size:13px}
th,td{border-bottom:1px solid #e6e8eb;padding:3px 9px;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#eef1f4;z-index:1;border-bottom:2px solid #afb8c1;white-space:nowrap}
tbody tr:nth-child(even){background:#f9fafb}
tbody tr:hover{background:#fff8c5}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pad{visibility:hidden}
td.text{min-width:18em;max-width:38em}
td.note{color:#9a6700;min-width:16em;max-width:34em;font-size:12px;overflow-wrap:anywhere}
details{margin:8px 0 14px}
summary{cursor:pointer;color:#0969da;font-size:14px}
figure{margin:12px 0 18px}
figure img{max-width:100%;height:auto;border:1px solid #e6e8eb}
figcaption{font-size:13px;color:#57606a;max-width:62em}
pre{font-size:11px;white-space:pre-wrap;background:#f6f8fa;padding:8px;border-radius:6px}
code{background:#eff1f3;padding:0 3px;border-radius:3px;font-size:90%}
"""


def inline(text: str) -> str:
    """Escaped text with the report's bits of markdown: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _column_classes(t: dict) -> list[str]:
    """Per column: `num` (every cell a number: right-aligned), `note` (skip reasons), `text` (long prose)."""
    classes = []
    for k, header in enumerate(t["headers"]):
        cells = [str(row[k]) for row in t["rows"] if k < len(row) and str(row[k]) != ""]
        if header.startswith("skipped"):
            classes.append("note")
        elif cells and all(_NUMERIC.match(c) for c in cells) and any(c not in ("–", "-") for c in cells):
            classes.append("num")
        elif cells and sum(len(c) for c in cells) / len(cells) > 60:
            classes.append("text")
        else:
            classes.append("")
    return classes


def to_html(t: dict) -> str:
    """A table in its scrolling frame (the sticky header needs one); folded when long or marked `fold`."""
    classes = _column_classes(t)

    def cls(k: int) -> str:
        return f' class="{classes[k]}"' if k < len(classes) and classes[k] else ""

    head = "".join(
        f"<th{cls(k) if classes[k] == 'num' else ''}>{html.escape(h)}</th>" for k, h in enumerate(t["headers"])
    )
    marked = {k for row in t["rows"] for k, c in enumerate(row) if str(c).endswith(" *")}

    def cell(k: int, c) -> str:
        text = html.escape(str(c))
        if k in marked and classes[k] == "num" and not text.endswith(" *"):
            text += '<span class="pad"> *</span>'  # unmarked CIs keep their digits aligned with marked ones
        return f"<td{cls(k)}>{text}</td>"

    body = "".join("<tr>" + "".join(cell(k, c) for k, c in enumerate(row)) + "</tr>" for row in t["rows"])
    out = f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    n = len(t["rows"])
    if t.get("fold") or n > FOLD_ROWS:
        label = f"{t.get('fold') or 'table'} ({n} row{'s' * (n != 1)})"
        out = f"<details><summary>{html.escape(label)}</summary>{out}</details>"
    return out


def _figure(run_dir: Path, path: Path, caption: str | None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    img = f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
    return f"<figure>{img}{f'<figcaption>{inline(caption)}</figcaption>' if caption else ''}</figure>"


def part_html(run_dir: Path, part) -> str:
    if isinstance(part, dict) and "image" in part:
        return _figure(run_dir, part["image"], part.get("caption"))
    if isinstance(part, dict):
        return to_html(part)
    if isinstance(part, Path):
        return _figure(run_dir, part, None)
    text = str(part)
    if text.startswith("```"):
        lines = text.count("\n") - 1
        return f"<details><summary>show ({lines} lines)</summary><pre>{html.escape(text[4:-4])}</pre></details>"
    return f"<p>{inline(text)}</p>"


def _toc(titles: list[str]) -> str:
    """Sections named "GROUP: part" (a model, a model / seed) share one line of the contents."""
    items: list[tuple[str, list[tuple[int, str]]]] = []
    for i, title in enumerate(titles):
        group, _, rest = title.partition(": ")
        if rest and items and items[-1][0] == group:
            items[-1][1].append((i, rest))
        elif rest:
            items.append((group, [(i, rest)]))
        else:
            items.append((title, [(i, "")]))
    lines = []
    for group, parts in items:
        if len(parts) == 1:
            i, rest = parts[0]
            lines.append(f'<li><a href="#s{i}">{html.escape(titles[i])}</a></li>')
        else:
            links = "".join(f'<a href="#s{i}">{html.escape(rest)}</a>' for i, rest in parts)
            lines.append(f'<li>{html.escape(group)}: <span class="sub">{links}</span></li>')
    return f'<nav class="toc"><b>Contents</b><ul>{"".join(lines)}</ul></nav>'


def page(run_dir: Path, sections) -> str:
    """The whole report.html."""
    body = [_toc([title for title, _ in sections])]
    for i, (title, parts) in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(title)}</h2>')
        body += [part_html(run_dir, part) for part in parts]
        body.append("</section>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>hmx-feel report</title><style>{STYLE}</style></head>"
        f"<body><h1>hmx-feel report</h1>{''.join(body)}</body></html>"
    )

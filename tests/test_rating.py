"""The blind rating kit (hmxfeel.rating, `hmx rate ...`): a sheet that reveals nothing, a key outside it, strict
import, and the summary's numbers on cases with known answers. Fast: no models."""

import csv
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmxfeel import rating
from hmxfeel.cli import app

SCALES = ["feelings", "intentions", "self_awareness", "humanlike", "coherence"]
EVIL = "</script><script>alert(1)</script>"


def hmx(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hmx: error: "), result.stderr
    return lines[0]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def eval_rows(tag: str, level: float) -> list[dict]:
    return [
        {
            "id": f"p{k}",
            "category": "daily",
            "prompt": f"Tell me about topic {k}.",
            "answer": f"Text {tag}{k}: some words here.",
            "words": 5,
            "self": {"feelings": level, "intentions": level, "self_awareness": level, "overall": level},
            "lexical": {"feelings": k % 2, "intentions": 0, "self_awareness": 0},
        }
        for k in range(6)
    ]


@pytest.fixture
def sources(tmp_path):
    """An experiment-like folder (one model, base + seed0 human/reverse), a training run, and a plain JSONL."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment.yaml").write_text("name: t\n")
    write_jsonl(exp / "smol" / "eval-base" / "items" / "humanlike.jsonl", eval_rows("Q", 0.2))
    write_jsonl(exp / "smol" / "seed0" / "eval-human" / "items" / "humanlike.jsonl", eval_rows("W", 0.9))
    write_jsonl(exp / "smol" / "seed0" / "eval-reverse" / "items" / "humanlike.jsonl", eval_rows("Z", 0.1))
    run = exp / "smol" / "seed0" / "human"
    write_jsonl(
        run / "samples.jsonl",
        [
            {
                "step": s,
                "prompt": f"Rollout prompt {s}",
                "completion": f"Rollout text {s}",
                "reward": 0.5,
                "feelings": 0.5,
                "intentions": 0.4,
                "self_awareness": 0.3,
                "overall": 0.4,
            }
            for s in (1, 2)
        ],
    )
    plain = write_jsonl(
        tmp_path / "extra.jsonl",
        [
            {"id": "x1", "prompt": "Plain prompt?", "answer": EVIL, "condition": "other", "note": "kept"},
            {"prompt": "Another plain prompt", "answer": "Plain answer two"},
        ],
    )
    return {"exp": exp, "run": run, "plain": plain}


def export(tmp_path, srcs, name="sheet", *extra):
    out = tmp_path / name
    result = hmx("rate", "export", *srcs, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return out, tmp_path / f"{name}.key.json"


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def write_csv(path: Path, rows: list[dict], columns=None) -> Path:
    columns = columns or list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def filled(template: Path, rater: str, value=lambda k, scale: 2) -> list[dict]:
    rows = read_csv(template)
    for k, row in enumerate(rows):
        row["rater"] = rater
        for s in SCALES:
            row[s] = str(value(k, s))
    return rows


# ---------------------------------------------------------------- export


def test_export_writes_sheet_and_key(tmp_path, sources):
    out, key_path = export(tmp_path, [sources["exp"], sources["run"], sources["plain"]])
    assert sorted(p.name for p in out.iterdir()) == [
        "form.html",
        "ratings-template.csv",
        "scales.md",
        "sheet.csv",
        "sheet.jsonl",
    ]
    assert key_path.exists() and key_path.parent == out.parent  # beside the folder, not inside it
    key = json.loads(key_path.read_text())
    ids = [r["id"] for r in read_csv(out / "sheet.csv")]
    assert len(ids) == 18 + 2 + 2 == len(set(ids)) == len(key["items"])
    assert all(re.fullmatch(r"a[0-9a-f]{6}", i) for i in ids) and set(ids) == set(key["items"])
    assert re.fullmatch(r"[0-9a-f]{12}", key["sheet"]) and key["scales"]["name"] == "hmx-feel-blind-v1"
    assert len(key["scales"]["sha256"]) == 64
    meta = list(key["items"].values())
    by_cond = {(m["kind"], m["model"], m["condition"], m["seed"]) for m in meta}
    assert by_cond == {
        ("eval", "smol", "base", None),
        ("eval", "smol", "human", 0),
        ("eval", "smol", "reverse", 0),
        ("rollout", "smol", "human", 0),
        ("jsonl", None, "other", None),
        ("jsonl", None, "extra", None),
    }
    rollout = next(m for m in meta if m["kind"] == "rollout")
    assert rollout["step"] in (1, 2) and rollout["self"]["overall"] == 0.4 and rollout["extra"] == {"reward": 0.5}
    human = next(m for m in meta if m["condition"] == "human" and m["kind"] == "eval")
    assert human["prompt_id"].startswith("p") and human["self"]["overall"] == 0.9 and "feelings" in human["lexical"]
    assert next(m for m in meta if m["prompt_id"] == "x1")["extra"] == {"note": "kept"}
    template = read_csv(out / "ratings-template.csv")
    assert list(template[0]) == ["sheet", "rater", "id", *SCALES]
    assert [r["id"] for r in template] == ids and {r["sheet"] for r in template} == {key["sheet"]}
    assert all(r[c] == "" for r in template for c in ["rater", *SCALES])
    assert [json.loads(line)["id"] for line in (out / "sheet.jsonl").read_text().splitlines()] == ids
    md = (out / "scales.md").read_text()
    for scale in rating.load_scales().scales:
        assert scale.question in md and all(text in md for text in scale.levels.values())
    assert "counts 1 at most" in md and "do not compare" in md


def test_sheet_reveals_nothing(tmp_path, sources):
    out, _ = export(tmp_path, [sources["exp"], sources["run"], sources["plain"]])
    # The sheet holds the texts and ids; never a condition, source, model, seed or score.
    secrets_ = [
        str(tmp_path),
        "eval-",
        "reverse",
        "seed",
        "condition",
        "smol",
        "samples",
        "rollout",
        "self_judge",
        "lexical",
        "prompt_id",
        "0.9",
        "experiment",
        "note",
    ]
    for f in out.iterdir():
        text = f.read_text(encoding="utf-8")
        leaked = [s for s in secrets_ if s in text]
        assert not leaked, (f.name, leaked)


def test_shuffle_is_seeded(tmp_path, sources):
    def order(name, seed):
        out, _ = export(tmp_path, [sources["exp"]], name, "--seed", seed)
        return [(r["prompt"], r["answer"]) for r in map(json.loads, (out / "sheet.jsonl").read_text().splitlines())]

    first, again, other = order("s1", 1), order("s2", 1), order("s3", 2)
    assert first == again and first != other and sorted(first) == sorted(other)


def test_limit_per_source_keeps_the_same_prompts(tmp_path, sources):
    out, key_path = export(tmp_path, [sources["exp"]], "lim", "--limit-per-source", 3)
    meta = json.loads(key_path.read_text())["items"].values()
    per_cond = {}
    for m in meta:
        per_cond.setdefault(m["condition"], set()).add(m["prompt_id"])
    assert len(per_cond) == 3 and all(len(v) == 3 for v in per_cond.values())
    assert per_cond["base"] == per_cond["human"] == per_cond["reverse"]  # still paired


def test_export_refusals(tmp_path, sources):
    out, key_path = export(tmp_path, [sources["plain"]])
    before = sorted(tmp_path.iterdir())
    assert "already exists" in one_error_line(hmx("rate", "export", sources["plain"], "--out", out))
    line = one_error_line(hmx("rate", "export", sources["plain"], "--out", tmp_path / "new", "--key", key_path))
    assert "key file already exists" in line
    assert "inside the sheet folder" in one_error_line(
        hmx("rate", "export", sources["plain"], "--out", tmp_path / "new", "--key", tmp_path / "new" / "k.json")
    )
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert str(bad) in one_error_line(hmx("rate", "export", bad, "--out", tmp_path / "new"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a rating source" in one_error_line(hmx("rate", "export", empty, "--out", tmp_path / "new"))
    assert sorted(tmp_path.iterdir()) == sorted([*before, bad, empty])  # nothing written, no temp folder left


# ---------------------------------------------------------------- import


@pytest.fixture
def sheet(tmp_path, sources):
    out, key_path = export(tmp_path, [sources["exp"], sources["plain"]])
    return out, key_path, json.loads(key_path.read_text())


def test_import_joins(tmp_path, sheet):
    out, key_path, key = sheet
    alice = filled(out / "ratings-template.csv", "alice", lambda k, s: k % 4 if s in SCALES[:3] else 1 + k % 5)
    alice[0]["coherence"] = ""  # a blank cell: not rated, the row's other values still count
    for s in SCALES:
        alice[1][s] = ""  # every scale blank: the row is skipped
    bob = [{**r, "rater": "bob"} for r in filled(out / "ratings-template.csv", "bob")[:3]]
    f_alice = write_csv(tmp_path / "alice.csv", alice)
    f_alice.write_text(f_alice.read_text().replace(",", ";"))  # a spreadsheet's locale may save with ';'
    f_bob = write_jsonl(tmp_path / "bob.jsonl", [{**r, **{s: int(r[s]) for s in SCALES}} for r in bob])
    joined = tmp_path / "joined.jsonl"
    result = hmx("rate", "import", f_alice, f_bob, "--key", key_path, "--out", joined)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in joined.read_text().splitlines()]
    assert len(rows) == (len(alice) - 1) + 3
    first = next(r for r in rows if r["rater"] == "alice" and r["id"] == alice[0]["id"])
    assert first["ratings"] == {"feelings": 0, "intentions": 0, "self_awareness": 0, "humanlike": 1, "coherence": None}
    assert not any(r["id"] == alice[1]["id"] and r["rater"] == "alice" for r in rows)
    for r in rows:
        meta = key["items"][r["id"]]
        assert (r["condition"], r["seed"], r["model"], r["prompt_id"], r["answer"]) == (
            meta["condition"],
            meta["seed"],
            meta["model"],
            meta["prompt_id"],
            meta["answer"],
        )
        assert r["sheet"] == key["sheet"]


def _bad_cases(rows: list[dict]) -> dict:
    def edit(k, **change):
        new = [dict(r) for r in rows]
        new[k].update(change)
        return new

    return {
        "unknown id": (edit(1, id="azzzzzz"), 3, "unknown id"),
        "foreign sheet": (edit(2, sheet="0123456789ab"), 4, "another sheet"),
        "out of range": (edit(0, feelings="4"), 2, "outside its scale"),
        "negative": (edit(0, humanlike="0"), 2, "outside its scale"),
        "not an integer": (edit(1, humanlike="2.5"), 3, "not an integer"),
        "text value": (edit(1, coherence="good"), 3, "not an integer"),
        "empty rater": (edit(2, rater=" "), 4, "empty rater"),
        "duplicate": (rows + [dict(rows[0])], len(rows) + 2, "already rated"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown id",
        "foreign sheet",
        "out of range",
        "negative",
        "not an integer",
        "text value",
        "empty rater",
        "duplicate",
    ],
)
def test_import_rejects_bad_rows(tmp_path, sheet, case):
    out, key_path, _ = sheet
    rows, line, problem = _bad_cases(filled(out / "ratings-template.csv", "alice"))[case]
    bad = write_csv(tmp_path / "bad.csv", rows)
    joined = tmp_path / "joined.jsonl"
    msg = one_error_line(hmx("rate", "import", bad, "--key", key_path, "--out", joined))
    assert f"{bad}:{line}:" in msg and problem in msg
    assert not joined.exists()


def test_import_rejects_bad_files(tmp_path, sheet, sources):
    out, key_path, _ = sheet
    rows = filled(out / "ratings-template.csv", "alice")
    good = write_csv(tmp_path / "good.csv", rows)
    joined = tmp_path / "joined.jsonl"

    def refused(*files, out_path=joined):
        return one_error_line(hmx("rate", "import", *files, "--key", key_path, "--out", out_path))

    no_col = write_csv(tmp_path / "nocol.csv", rows, ["sheet", "rater", "id", *SCALES[:4]])
    assert f"{no_col}:1: missing column 'coherence'" in refused(no_col)
    again = write_csv(tmp_path / "again.csv", rows[:1])
    assert f"{again}:2:" in refused(good, again) and "already rated" in refused(good, again)
    unrated = write_csv(tmp_path / "unrated.csv", read_csv(out / "ratings-template.csv"))
    assert "no rated rows" in refused(unrated)
    j = write_jsonl(tmp_path / "r.jsonl", [{k: v for k, v in rows[0].items() if k != "intentions"}])
    assert f"{j}:1: missing column 'intentions'" in refused(j)
    assert not joined.exists()
    # A key from another sheet: every row names a sheet the key does not know.
    _, other_key = export(tmp_path, [sources["plain"]], "other")
    msg = one_error_line(hmx("rate", "import", good, "--key", other_key, "--out", joined))
    assert "another sheet" in msg and not joined.exists()
    joined.write_text("old\n")
    assert "already exists" in refused(good)
    assert joined.read_text() == "old\n"


# ---------------------------------------------------------------- summary


def joined_rows(seeds=(0,), raters=("r1", "r2"), noise=None) -> list[dict]:
    """Human answers rate exactly +1 above reverse on every scale and prompt; base equals reverse."""
    rows = []
    for cond, shift, seed_list in (("base", 0, [None]), ("reverse", 0, list(seeds)), ("human", 1, list(seeds))):
        for seed in seed_list:
            for k in range(10):
                base = {s: (k % 3 if s in SCALES[:3] else 1 + k % 4) for s in SCALES}
                for j, rater in enumerate(raters):
                    ratings = {s: v + shift + (noise(k, j, s) if noise else 0) for s, v in base.items()}
                    rows.append(
                        {
                            "id": f"{cond}{seed}{k}",
                            "rater": rater,
                            "sheet": "s",
                            "ratings": ratings,
                            "kind": "eval",
                            "model": "m",
                            "condition": cond,
                            "seed": seed,
                            "prompt_id": f"p{k}",
                            "source": f"/x/{cond}{seed}",
                            "row": k + 1,
                            "self": {
                                "feelings": base["feelings"] + shift,
                                "intentions": 0.5,
                                "self_awareness": 0.5,
                                "overall": base["humanlike"] + shift,
                            },
                            "lexical": {"feelings": base["feelings"], "intentions": 0, "self_awareness": 0},
                        }
                    )
    return rows


def test_summarize_means_pairs_and_agreement():
    s = rating.summarize(joined_rows())
    assert s["scales"] == SCALES and s["n_answers"] == 30 and s["raters"] == ["r1", "r2"]
    groups = {(g["condition"], g["seed"]): g for g in s["groups"]}
    assert groups[("reverse", 0)]["n"] == 10 and groups[("human", 0)]["means"]["humanlike"] == pytest.approx(2.3 + 1)
    assert groups[("human", 0)]["means"]["feelings"] - groups[("reverse", 0)]["means"]["feelings"] == pytest.approx(1)
    for p in s["paired"]:
        assert p["diff"] == pytest.approx(1) and p["n_pairs"] == 10 and p["seeds"] == [0]
        assert p["ci95"][0] > 0  # excludes 0
    assert {(p["a"], p["b"]) for p in s["paired"]} == {("human", "reverse"), ("human", "base")}
    for a in s["agreement"]:
        assert a["alpha"] == pytest.approx(1.0) and a["n_multi"] == 30 and a["pearson"] == pytest.approx(1.0)
    inst = {(i["scale"], i["instrument"]): i for i in s["instruments"]}
    assert inst[("feelings", "self_judge")]["rho"] == pytest.approx(1.0) and inst[("feelings", "self_judge")]["n"] == 30
    assert inst[("humanlike", "self_judge")]["rho"] == pytest.approx(1.0)
    assert inst[("intentions", "self_judge")]["rho"] is None  # a constant instrument has no rank correlation
    assert ("humanlike", "lexical") in inst and not any(k[0] == "coherence" for k in inst)


def test_summarize_disagreement_and_seeds():
    s = rating.summarize(joined_rows(seeds=(0, 1), noise=lambda k, j, s: (k % 2) * j * (1 if s != "humanlike" else -1)))
    assert all(a["alpha"] < 1 for a in s["agreement"])
    pooled = {g["condition"]: g for g in s["pooled"]}
    assert pooled["human"]["seeds"] == [0, 1] and pooled["human"]["n"] == 20
    human_rev = [p for p in s["paired"] if p["b"] == "reverse" and len(p["seeds"]) == 2]
    assert human_rev and all(p["n_pairs"] == 20 and p["ci95"] is not None for p in human_rev)
    human_base = [p for p in s["paired"] if p["b"] == "base" and len(p["seeds"]) == 2]
    assert all(p["n_pairs"] == 20 for p in human_base)  # base (no seed) pairs with each seed's answer
    # ... and each seed on its own, pairing base with that seed's answers only
    per_seed = [p for p in s["paired"] if p["b"] == "base" and p["scale"] == "feelings" and len(p["seeds"]) == 1]
    assert sorted(p["seeds"][0] for p in per_seed) == [0, 1] and all(p["n_pairs"] == 10 for p in per_seed)


def test_summary_cli_writes_json_without_nan(tmp_path):
    joined = write_jsonl(tmp_path / "joined.jsonl", joined_rows(raters=("solo",)))
    out = tmp_path / "summary.json"
    result = hmx("rate", "summary", joined, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Paired differences" in result.stdout
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert all(a["alpha"] is None for a in data["agreement"])  # one rater: no agreement to measure
    md = rating.summary_markdown(data)
    assert "| eval | m | human − reverse | feelings | 10 | 0 | +1.00 | [+1.00, +1.00] * |" in md
    assert "| feelings | 1 | 30 | 0 | – | – | 0 |" in md  # agreement: undefined, shown as –


def test_report_section(tmp_path):
    assert rating.report_section(tmp_path) is None and rating.report_parts(tmp_path) is None
    write_jsonl(tmp_path / "ratings" / "batch1.jsonl", joined_rows())
    md = rating.report_section(tmp_path)
    assert md.startswith("## Blind ratings") and "Krippendorff" in md and "| feelings |" in md
    parts = rating.report_parts(tmp_path)
    assert isinstance(parts[0], str) and any(isinstance(p, dict) and "headers" in p for p in parts)


# ---------------------------------------------------------------- the form


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self._in = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append([self._in, ""])

    def handle_data(self, data):
        if self._in is not None:
            self.scripts[-1][1] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None


def test_form_html(tmp_path, sheet):
    out, _, key = sheet
    html = (out / "form.html").read_text(encoding="utf-8")
    assert all(i in html for i in key["items"])
    assert EVIL not in html and "alert(1)</script>" not in html
    parser = _Collect()
    parser.feed(html)
    parser.close()
    assert len(parser.scripts) == 2  # the data block and the code: the answer opened no script of its own
    data = json.loads(parser.scripts[0][1])
    assert parser.scripts[0][0].get("id") == "hmx-data"
    assert EVIL in [it["answer"] for it in data["items"]]  # shown exactly, as text
    assert [it["id"] for it in data["items"]] == [r["id"] for r in read_csv(out / "sheet.csv")]
    assert data["columns"] == ["sheet", "rater", "id", *SCALES] and data["sheet"] == key["sheet"]
    assert [s["name"] for s in data["scales"]] == SCALES
    assert "http://" not in html and "https://" not in html and "<link" not in html  # works offline
    node = shutil.which("node")
    if node:  # the inline code at least parses
        code = tmp_path / "form.js"
        code.write_text(parser.scripts[1][1])
        assert subprocess.run([node, "--check", str(code)], capture_output=True).returncode == 0


def test_jsonl_prompt_id_field_pairs_answers(tmp_path):
    """Regression: a JSONL source with `prompt_id` (bench/pilot_answers.py writes it) lost the id, so no
    human - base pairs were formed and the summary had no paired table."""
    rows = [
        {"prompt": f"q{k}", "answer": f"a{k}{c}", "prompt_id": f"p{k}", "condition": c}
        for k in range(3)
        for c in ("base", "human")
    ]
    items = rating.collect([write_jsonl(tmp_path / "pilot.jsonl", rows)])
    assert sorted({i["meta"]["prompt_id"] for i in items}) == ["p0", "p1", "p2"]

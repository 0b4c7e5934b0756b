"""report.html: its layout from a small fake experiment folder, and (slow) the page rendered in headless Chromium."""

import json
import re
import shutil
import subprocess

import pytest

from hmxfeel.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _write_eval(folder, evals: dict[str, list[dict]], skipped: dict[str, str]):
    """An eval folder as `hmx eval` writes it: items per evaluation and their records (with each model's CI)."""
    from hmxfeel.evals.humanlike import metrics
    from hmxfeel.evals.runner import local_metrics

    (folder / "items").mkdir(parents=True)
    records = []
    for name, rows in evals.items():
        (folder / "items" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stats = metrics(rows) if name == "humanlike" else local_metrics(name, rows)
        better = "none" if name == "humanlike" else "higher"
        records += [
            {"eval": name, "metric": k, "value": v["value"], "n": v["n"], "ci95": v["ci95"], "better": better}
            for k, v in stats.items()
        ]
    records += [{"eval": name, "metric": None, "skipped": why} for name, why in skipped.items()]
    (folder / "results.json").write_text(json.dumps({"records": records}))


def _humanlike(markers: list[int], score: float) -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "prompt": f"question {i}?",
            "answer": f"an answer with {m} markers " * 3,
            "words": 12,
            "self": {"feelings": score, "intentions": score / 2, "overall": score},
            "lexical": {"feelings": m, "intentions": 0, "self_awareness": m % 2},
        }
        for i, m in enumerate(markers)
    ]


def _persona(matches: int) -> list[dict]:
    """40 items: set A (30 items, a breakdown row in the folded per-category table), set B (10, the appendix)."""
    return [
        {"id": f"q{i}", "set": "A" if i < 30 else "B", "pred": "yes" if i < matches else "no", "label": "yes"}
        for i in range(40)
    ]


def _training(run, sign: float):
    rows = [
        {"step": s, "reward": 0.5 + sign * s / 40, "rubric/overall": 0.5 + sign * s / 40, "rubric/overall_std": 0.1}
        for s in range(1, 9)
    ]
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "safety.jsonl").write_text(
        "".join(json.dumps({"step": s, "truthfulqa_mc1": 0.4 + sign * 0.1 * (s > 0)}) + "\n" for s in (0, 8))
    )
    for s in (0, 8):  # the battery's record of each scored step holds the value's CI
        rec = {"eval": "truthfulqa_mc1", "metric": "acc", "value": 0.4, "n": 10, "ci95": [0.17, 0.69]}
        (run / "safety" / f"step-{s}").mkdir(parents=True)
        (run / "safety" / f"step-{s}" / "battery.json").write_text(json.dumps({"records": [rec]}))


def fake_run(root):
    """Two seeds of one model: human-likeness and a persona benchmark each, a skipped benchmark, training
    curves and a safety slice for seed 0 (seed 1 has none)."""
    model = root / "m"
    skipped = {"mmlu": "needs the Hub (or a local copy): huggingface.co unreachable"}
    _write_eval(model / "eval-base", {"humanlike": _humanlike([0, 1] * 10, 0.5), "persona": _persona(20)}, skipped)
    for seed in (0, 1):
        hl = {"humanlike": _humanlike([1, 2] * 10, 0.7), "persona": _persona(24 + seed)}
        rev = {"humanlike": _humanlike([0] * 20, 0.3), "persona": _persona(18)}
        _write_eval(model / f"seed{seed}" / "eval-human", hl, skipped)
        _write_eval(model / f"seed{seed}" / "eval-reverse", rev, skipped)
    for direction, sign in (("human", 1.0), ("reverse", -1.0)):
        _training(model / "seed0" / direction, sign)
    (root / "experiment.yaml").write_text("models: [{name: m, model: embedded}]\nseeds: [0, 1]\n")
    return root


# Figures: human-likeness per seed (2), training curves and safety slice for seed 0 (2).
FIGURES = 4


def test_html_layout_folds_long_tables_and_gives_skips_their_column(tmp_path):
    md = build_report(fake_run(tmp_path)).read_text()
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img") == FIGURES == md.count("![")
    assert page.count("<figcaption>") == FIGURES and "paired bootstrap 95% CI" in page
    assert page.count("<table") == sum(line.startswith("|---") for line in md.splitlines())
    assert '<nav class="toc">' in page and page.count('<section id="s') == md.count("\n## ")
    # Headline first; per-category, per-seed, appendix and manifest folded; skip reasons in their own column.
    assert page.index("<h2>Headline</h2>") < page.index("<details>")
    summaries = re.findall(r"<summary>(.*?)</summary>", page)
    assert any(s.startswith("per-category breakdown (1 row)") for s in summaries)
    assert any(s.startswith("this seed&#x27;s benchmark values") for s in summaries)
    assert any(s.startswith("breakdown rows under 30 items") for s in summaries)
    assert "<th>skipped: why</th>" in page and '<td class="note">needs the Hub' in page
    assert "| mmlu | - | needs the Hub (or a local copy): huggingface.co unreachable |" in md
    assert '<th class="num">HL</th>' in page  # numbers right-aligned
    assert "position:sticky" in page


CHECK = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const imgs = [...document.images], tables = [...document.querySelectorAll('table')];
  const shown = e => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().height > 0;
  const out = {
    imgs: imgs.length, imgs_ok: imgs.filter(i => i.complete && i.naturalWidth > 0 && shown(i)).length,
    tables: tables.length, tables_ok: tables.filter(t => shown(t) && t.rows.length > 1).length,
    sections: document.querySelectorAll('section > h2').length, toc: document.querySelectorAll('nav.toc a').length,
    wider: document.documentElement.scrollWidth > document.documentElement.clientWidth,
  };
  const pre = document.createElement('pre');
  pre.id = 'hmx-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path, *args) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    result = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2400", *args], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; `make test` tries)")
def test_report_renders_in_headless_chromium(tmp_path):
    """The page as a browser lays it out: every figure decoded with a non-zero size, every table (folded ones
    opened) drawn with its rows, a contents link per section, nothing wider than the window."""
    run = fake_run(tmp_path / "run")
    build_report(run)
    page = (run / "report.html").read_text()
    check = run / "check.html"
    check.write_text(page.replace("</body>", CHECK + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", check.as_uri())
    found = re.search(r'<pre id="hmx-check">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    seen = json.loads(found.group(1))
    tables = page.count("<table")
    sections = page.count('<section id="s')
    assert seen == {
        "imgs": FIGURES,
        "imgs_ok": FIGURES,
        "tables": tables,
        "tables_ok": tables,
        "sections": sections,
        "toc": sections,
        "wider": False,
    }
    _chromium(tmp_path, f"--screenshot={tmp_path / 'report.png'}", (run / "report.html").as_uri())
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a drawn page, not a blank one

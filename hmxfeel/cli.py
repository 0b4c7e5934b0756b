"""`hmx`: the command line. One command per stage; bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

# Before torch is imported anywhere: busy-waiting OpenMP threads slow generation badly on shared small machines.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hmxfeel.progress import quiet_library_bars  # noqa: E402

quiet_library_bars()  # before lm-eval / transformers are imported: they read these settings then

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from hmxfeel.errors import NonFiniteError, UserError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def user_errors(fn):
    """Turn a UserError, a NonFiniteError (or an OSError naming a path) into one clear line and exit code 2 (no
    traceback: it is the input, the numbers or the machine, not the code)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, NonFiniteError) as exc:
            print(f"hmx: error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except OSError as exc:
            # A write or read the environment refused (full disk, read-only folder, permissions): the input is
            # the machine, not the code, so one line naming the path. OSErrors without a path are real bugs.
            if exc.filename is None:
                raise
            where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
            print(f"hmx: error: {where}: {exc.strerror or exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def _slug(model: str) -> str:
    return Path(model.rstrip("/")).name.replace(".", "_") or "model"


@app.command()
@user_errors
def train(
    model: str = typer.Option("embedded", help="'embedded', a local model folder, or a Hub id."),
    direction: str = typer.Option("human", help="'human' (reward expression) or 'reverse' (reward its absence)."),
    config: Optional[Path] = typer.Option(None, help="YAML with TrainConfig fields (see `hmx config`)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<model>-<direction>)."),
    rubric: Optional[Path] = typer.Option(None, help="Rubric YAML (default: the packaged rubric)."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt JSONL with a train/eval split (default: packaged)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps."),
    seed: Optional[int] = typer.Option(None, help="Override the seed."),
    report_to: Optional[str] = typer.Option(
        None, help="Also log metrics to 'tensorboard', 'trackio' or 'wandb' ('none')."
    ),
    device: Optional[str] = typer.Option(None, help="'cpu' or 'cuda' (default: cuda when available)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, help="Start over in a folder that holds a run (the old one is moved aside)."),
):
    """Train a LoRA adapter with GRPO, rewarded by the model's own rubric judgement."""
    from hmxfeel import config as config_mod
    from hmxfeel import models
    from hmxfeel.train import train as run_train

    device = models.check_device(device) if device else models.default_device()
    flags = {"steps": steps, "seed": seed, "report_to": report_to}
    overrides = {k: v for k, v in flags.items() if v is not None}  # flags win over the file
    cfg = config_mod.load(config, device=device, **overrides)
    out = out or Path("runs") / f"{_slug(model)}-{direction}"
    adapter = run_train(model, direction, out, cfg, rubric, prompts, resume=resume, force=force, device=device)
    console.print(f"[green]adapter written to {adapter}")


@app.command("config")
def show_config():
    """List every training setting with its CPU default and what it does."""
    from hmxfeel.config import help_table

    table = Table("field", "default", "help")
    for row in help_table():
        table.add_row(*row)
    Console().print(table)


@app.command("check-rubric")
@user_errors
def check_rubric(
    path: Path = typer.Argument(..., help="Rubric YAML to validate."),
    model: str = typer.Option(
        "embedded",
        help="Model whose tokenizer must read every score token as one token "
        "(the logit judge's need); 'none' skips that check.",
    ),
):
    """Validate a rubric file (and its score tokens against a model's tokenizer); print its criteria and hash."""
    from hmxfeel import rubric as rubric_mod

    r = rubric_mod.load(path)
    checked = _check_score_tokens(r, model) if model != "none" else "not checked (--model none)"
    print(
        f"{r.name} v{r.version}: {', '.join(r.names)}; format {r.judge_format}; score tokens {checked}; sha256 {r.sha256}"
    )


def _check_score_tokens(r, model: str) -> str:
    """Every token format's score tokens as single tokens of `model`'s tokenizer (only the tokenizer loads), so a
    multi-token score token is refused here rather than after `hmx train` has loaded the model."""
    from hmxfeel import models
    from hmxfeel.rubric import check_single_tokens

    try:
        path = models.resolve(model)
        if models.hub_id(model) and model != models.EMBEDDED:
            path = models.hub_source(model)
        tokenizer = models.load_tokenizer(path)
    except (UserError, OSError) as exc:
        if model != "embedded":  # asked for by name: its absence is the error
            raise UserError(f"--model {model}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from None
        return f"not checked (the embedded model is unavailable: {exc}; pass --model)"
    for fmt in r.formats.values():
        if fmt.kind == "tokens":
            try:
                check_single_tokens(fmt, tokenizer)
            except UserError as exc:
                raise UserError(f"{r.source}: {exc} (tokenizer of {model})") from None
    return f"single tokens for {model}"


@app.command("judge-probe")
@user_errors
def judge_probe(
    model: str = typer.Option("embedded", help="'embedded', a local model folder, or a Hub id."),
    rubric: Optional[Path] = typer.Option(None, help="Rubric YAML (default: packaged)."),
    probe: Optional[Path] = typer.Option(None, help="Labelled probe JSONL (default: packaged)."),
    rated: Optional[Path] = typer.Option(None, help="Blind-rated answers JSONL (default: the packaged rated set)."),
    split: str = typer.Option("test", help="Part of the rated set to measure on: 'test' (reported), 'dev' or 'all'."),
    formats: Optional[str] = typer.Option(None, help="Comma-separated judge formats (default: all of the rubric's)."),
    extra_formats: Optional[Path] = typer.Option(
        None, help="YAML with more `formats:` to measure (e.g. bench/judge_variants.yaml)."
    ),
    mode: str = typer.Option("logit", help="Judge mode: 'logit' or 'generative'."),
    limit: Optional[int] = typer.Option(None, help="Items per criterion of the probe set (default: all)."),
    out: Optional[Path] = typer.Option(None, help="Also write the rows as JSON here."),
):
    """Judge validity: agreement of each judge format (and the lexical markers) with blind raters on the rated
    set's test part, next to the raters' own agreement; then the secondary probe-set AUC."""
    from hmxfeel import models, validity
    from hmxfeel import rubric as rubric_mod
    from hmxfeel.io import atomic_write_json
    from hmxfeel.probe import load_probe, probe_judge
    from hmxfeel.readout import load_rated

    if split not in ("test", "dev", "all"):
        raise UserError(f"--split must be 'test', 'dev' or 'all', got {split!r}")
    r = rubric_mod.load(rubric, extra_formats=extra_formats)
    names = [f.strip() for f in formats.split(",")] if formats else None
    for name in names or ():
        r.format(name)  # an unknown format fails before the model loads
    rows_rated = load_rated(rated, None if split == "all" else split)
    items = load_probe(probe)
    loaded = models.load(model)
    valid = validity.ceiling(r, rows_rated) + validity.marker_validity(r, rows_rated)
    valid += validity.judge_validity(loaded, r, rows_rated, names, mode)
    _print_validity(valid, f"agreement with blind raters ({split} part): {model}")
    rows = probe_judge(loaded, r, formats=names, mode=mode, probe=items, limit=limit)
    _print_probe(rows, f"judge probe: {model}")
    if out:
        atomic_write_json(
            out, {"model": model, "rubric_sha256": r.sha256, "split": split, "validity": valid, "probe": rows}
        )


def _print_validity(valid: list[dict], title: str) -> None:
    """The headline table of judge-probe: each instrument's agreement with the blind raters."""
    table = Table("instrument", "criterion", "scale", "n", "Spearman", "AUC (>=2 vs <=1)", "alpha", title=title)
    for row in valid:
        table.add_row(
            row["instrument"],
            row["criterion"],
            row["scale"],
            str(row["n"]),
            _num(row.get("spearman")),
            _num(row.get("auc")),
            _num(row.get("alpha")),
        )
    Console().print(table)


def _print_probe(rows: list[dict], title: str) -> None:
    """The secondary table of judge-probe: each format's AUC on the labelled probe set."""
    table = Table("format", "criterion", "n", "AUC", "AUC vs look-alikes", "mean +", "mean -", title=title)
    for row in rows:
        table.add_row(
            row["format"],
            row["criterion"],
            str(row["n"]),
            _num(row["auc"]),
            _num(row["auc_lookalike"]),
            _num(row["mean_pos"]),
            _num(row["mean_neg"]),
        )
    Console().print(table)


def _num(x) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


@app.command("eval")
@user_errors
def eval_cmd(
    model: str = typer.Option("embedded", help="'embedded', a local model folder, or a Hub id."),
    adapter: Optional[Path] = typer.Option(None, help="A trained adapter folder (runs/<name>/adapter)."),
    suite: str = typer.Option("default", help="'default' (everything), 'quick' (a small sample of each), 'humanlike'."),
    tasks: Optional[str] = typer.Option(
        None,
        help="Comma-separated tasks to run (default: all of the suite), e.g. "
        "humanlike,bbq,truthfulqa_mc1; the suite sets their item limits.",
    ),
    data_dir: Optional[str] = typer.Option(
        None, envvar="HMX_DATA_DIR", help="Local benchmark copies (layout of shared/data)."
    ),
    limit: Optional[int] = typer.Option(None, help="Items per evaluation (overrides the suite's limits)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/eval-<model>[-<adapter>])."),
    resume: bool = typer.Option(False, help="Continue an interrupted evaluation without redoing finished items."),
    judge: Optional[str] = typer.Option(
        None, help="Independent judge: a model spec, or an OpenAI-compatible base URL."
    ),
    judge_model: Optional[str] = typer.Option(None, help="Model name to request from an endpoint --judge."),
    rubric: Optional[Path] = typer.Option(None, help="Rubric YAML (default: packaged)."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt JSONL; its eval split is used (default: packaged)."),
    seed: int = typer.Option(0, help="Seed for answer sampling and item selection."),
    device: Optional[str] = typer.Option(None, help="'cpu' or 'cuda' (default: cuda when available)."),
    humanlike_limit: Optional[int] = typer.Option(None, help="Eval prompts for human-likeness (default: --limit)."),
    backend: str = typer.Option(
        "hf",
        help="Battery scoring backend: 'hf' (in-process; local tasks by the fast engine), 'lm-eval' (in-process, "
        "lm-eval's own HFLM loop: the reference, slower) or 'vllm' (lm-eval's vLLM, GPU).",
    ),
    judge_format: Optional[str] = typer.Option(
        None, help="Self-judge format (default: the one that rewarded the adapter, else the rubric's)."
    ),
    other_judge: bool = typer.Option(
        False, help="Allow a self-judge rubric / format other than the one that rewarded the adapter."
    ),
    battery_dtype: str = typer.Option(
        "same",
        help="Battery precision: 'same' (as loaded: fp32 on CPU, the lm-eval reference's numbers; bf16 on GPU), "
        "'auto' (bf16 where native: GPU, CPU with AVX512-BF16/AMX; ~1.7x faster on CPU, some picks differ), "
        "'float32' (CPU) or 'bfloat16'.",
    ),
):
    """Evaluate a model (optionally + adapter): human-likeness and the benchmark battery."""
    from hmxfeel.evaluate import check_tasks

    check_tasks(tasks, suite)  # a bad selection is one line before anything loads
    adapter, name = _eval_target(model, adapter)
    out = out or Path("runs") / f"eval-{name}"
    options = dict(suite=suite, data_dir=data_dir, limit=limit, resume=resume, judge=judge, judge_model=judge_model)
    options.update(rubric_path=rubric, prompts_path=prompts, seed=seed, device=device, humanlike_limit=humanlike_limit)
    options.update(backend=backend, judge_format=judge_format, other_judge=other_judge, tasks=tasks)
    options.update(battery_dtype=battery_dtype)
    records = _evaluate_or_exit(model, out, str(adapter) if adapter else None, options)
    _print_eval_results(records, name, out)


def _eval_target(model: str, adapter: Optional[Path]) -> tuple[Optional[Path], str]:
    """The adapter to evaluate (a training run folder stands for its adapter/) and the name of the evaluation."""
    from hmxfeel.evaluate import adapter_folder

    if adapter:
        given, adapter = adapter, adapter_folder(adapter)
        if adapter != given:
            console.print(f"[dim]{given} is a training run folder: evaluating its adapter {adapter}")
    name = _slug(model) + (
        f"-{_slug(str(adapter.parent if adapter.name == 'adapter' else adapter))}" if adapter else ""
    )
    return adapter, name


def _evaluate_or_exit(model: str, out: Path, adapter: Optional[str], options: dict) -> list[dict]:
    """Run the evaluation; Ctrl-C exits 130 with a line saying how to resume (finished items are on disk,
    appended as they are made)."""
    from hmxfeel.evaluate import evaluate

    try:
        return evaluate(model, out, adapter=adapter, **options)
    except KeyboardInterrupt:
        print(
            f"hmx: interrupted: {out}: finished items are kept; rerun the same command with --resume to continue",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None


def _print_eval_results(records: list[dict], name: str, out: Path) -> None:
    """One row per metric (value, CI, n), then what did not run and why, e.g. no --data-dir and no Hub."""
    from hmxfeel.evaluate import skip_summary

    table = Table("eval", "metric", "value", "95% CI", "n", "better", title=f"hmx eval: {name}")
    for r in records:
        if r.get("skipped"):
            table.add_row(r["eval"], r.get("metric") or "-", "skipped", r["skipped"][:60], "0", "")
            continue
        lo, hi = r["ci95"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "-"
        value = f"{r['value']:.3f}" if r["value"] is not None else "nan"
        n = f"{r['n']} (+{r['n_nonfinite']} non-finite left out)" if r.get("n_nonfinite") else str(r["n"])
        table.add_row(r["eval"], r["metric"], value, ci, n, r["better"] or "")
    Console().print(table)
    for line in skip_summary(records):
        console.print(Text(line, style="yellow"))
    console.print(f"[green]results written to {out / 'results.json'}")


@app.command("run")
@user_errors
def run_cmd(
    experiment: Optional[Path] = typer.Argument(None, help="Experiment YAML (see hmxfeel/data/presets/)."),
    preset: Optional[str] = typer.Option(None, help="A packaged experiment: 'demo' (embedded model, CPU) or 'paper'."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the experiment's `out`)."),
    seeds: Optional[int] = typer.Option(
        None,
        help="Repeat training with K seeds (0..K-1). On an experiment folder run with fewer seeds, adds the "
        "missing ones and keeps every finished stage.",
    ),
    twins: bool = typer.Option(
        False,
        "--twins",
        help="Dry run: every model replaced by a tiny random twin (its own config, "
        "tokenizer, chat template), 2 training steps, 2 items per evaluation; out: OUT-twins.",
    ),
    twins_from: Optional[Path] = typer.Option(
        None,
        help="Folder of model folders (config + tokenizer files, e.g. "
        "qwen3-0.6b/) to make twins from; implies --twins. Default: "
        "HMX_SHARED_MODELS, else the Hub or its cache.",
    ),
):
    """Run the whole experiment: eval base, train HL and reverse, eval both, report. Rerun to resume."""
    import dataclasses
    import json

    from hmxfeel import experiment as exp_mod

    if (experiment is None) == (preset is None):
        raise UserError("give exactly one of EXPERIMENT (a YAML file) or --preset NAME")
    exp, text = exp_mod.load(experiment, preset)
    if seeds is not None:
        if seeds < 1:
            raise UserError("--seeds must be >= 1")
        exp = dataclasses.replace(exp, seeds=list(range(seeds)))
        text += f"\n# --seeds {seeds}\nseeds: {list(range(seeds))}\n"
    if twins or twins_from:  # its own folder by default: a dry run never lands among a real run's results
        flag = str(twins_from) if twins_from else True
        exp, text = dataclasses.replace(exp, twins=flag), text + f"\n# --twins\ntwins: {json.dumps(flag)}\n"
        out = out or Path(f"{exp.out.rstrip('/')}-twins")
    report = exp_mod.run(exp, text, Path(out or exp.out), log=lambda msg: console.print(f"[bold cyan]hmx run[/] {msg}"))
    console.print(f"[green]report written to {report} (and report.html)")


@app.command("report")
@user_errors
def report_cmd(run_dir: Path = typer.Argument(..., help="An experiment folder written by `hmx run`.")):
    """Rebuild report.md / report.html / figures of an experiment folder."""
    from hmxfeel.report import build_report

    if not (run_dir / "experiment.yaml").exists():
        raise UserError(f"{run_dir}: not an experiment folder (no experiment.yaml)")
    console.print(f"[green]report written to {build_report(run_dir)}")


# ---------------------------------------------------------------- hmx rate: the blind rating kit

rate_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Blind ratings: export a sheet raters score without seeing models, import, summarise.",
)
app.add_typer(rate_app, name="rate")


@rate_app.command("export")
@user_errors
def rate_export(
    sources: list[Path] = typer.Argument(
        ..., help="Eval folders, experiment folders, training run folders or JSONL files."
    ),
    out: Path = typer.Option(..., help="Sheet folder to create (what a rater receives)."),
    key: Optional[Path] = typer.Option(None, help="Key file to create (default <OUT>.key.json beside the folder)."),
    seed: int = typer.Option(0, help="Seed for the shuffle and the --limit-per-source choice."),
    limit_per_source: Optional[int] = typer.Option(
        None, help="At most N answers per source file (same prompts in each)."
    ),
    sheet_name: Optional[str] = typer.Option(None, help="Title shown to raters (default: the folder name)."),
):
    """Write a blind rating sheet (sheet.csv/jsonl, scales.md, ratings-template.csv, form.html) and its key."""
    from hmxfeel.rating import export_sheet

    res = export_sheet(sources, out, key, seed=seed, limit_per_source=limit_per_source, sheet_name=sheet_name)
    console.print(
        f"[green]sheet {res['sheet']}: {res['n']} answers in {res['out']}; key (keep it from raters) {res['key']}"
    )


@rate_app.command("import")
@user_errors
def rate_import(
    ratings: list[Path] = typer.Argument(
        ..., help="Ratings CSV files (the template's format) or JSONL with the same fields."
    ),
    key: Path = typer.Option(..., help="The sheet's key file written by `hmx rate export`."),
    out: Path = typer.Option(..., help="Joined JSONL to create (one row per answer and rater)."),
):
    """Check ratings against the key and join them with each answer's metadata."""
    from hmxfeel.rating import import_ratings

    res = import_ratings(ratings, key, out)
    console.print(
        f"[green]{res['rows']} ratings of {res['answers']} answers by {len(res['raters'])} raters written to {out}"
    )


@rate_app.command("summary")
@user_errors
def rate_summary(
    joined: list[Path] = typer.Argument(..., help="Joined JSONL files written by `hmx rate import`."),
    out: Optional[Path] = typer.Option(None, help="Also write the summary as JSON here."),
):
    """Mean ratings per model / condition / seed, paired differences, rater agreement, instruments vs raters."""
    from hmxfeel.io import atomic_write_json
    from hmxfeel.rating import load_joined, summarize, summary_tables

    summary = summarize(load_joined(joined))
    stdout = Console()
    stdout.print(f"{summary['n_answers']} answers, {summary['n_rows']} ratings, {len(summary['raters'])} raters")
    for title, t in summary_tables(summary):
        table = Table(*t["headers"], title=title)
        for row in t["rows"]:
            table.add_row(*row)
        stdout.print(table)
    if out:
        atomic_write_json(out, summary)


# ---------------------------------------------------------------- hmx chat: talk to the base model and its adapters


@app.command("chat")
@user_errors
def chat_cmd(
    model: str = typer.Option("embedded", help="'embedded', a local model folder, or a Hub id."),
    adapter: Optional[list[Path]] = typer.Option(None, help="A trained adapter folder; repeat to compare several."),
    prompt: Optional[str] = typer.Option(
        None, help="Ask this once and exit (default: read messages until EOF or 'exit')."
    ),
    rubric: Optional[Path] = typer.Option(None, help="Rubric YAML for the self-judge's scores (default: packaged)."),
    judge_format: Optional[str] = typer.Option(None, help="Self-judge format (default: the rubric's)."),
    system: str = typer.Option(
        "", help="System prompt (folded into the user turn where the family has no system role)."
    ),
    max_new_tokens: int = typer.Option(128, help="Longest answer, in tokens."),
    seed: int = typer.Option(0, help="Sampling seed (the same for every column)."),
    device: Optional[str] = typer.Option(None, help="'cpu' or 'cuda' (default: cuda when available)."),
):
    """Send the same message to the base model and each adapter; print the answers side by side with the frozen
    self-judge's per-criterion scores under each."""
    from hmxfeel import chat_cmd as chat_mod

    if prompt is not None and not prompt.strip():
        raise UserError("--prompt is empty")
    session = chat_mod.open_chat(model, list(adapter or []), rubric, judge_format, device, max_new_tokens, system, seed)
    names = ", ".join(title for title, _ in session.columns)
    console.print(
        f"[bold cyan]hmx chat[/] {model}: {names}; scores by the frozen base model ({session.judge.fmt.name})"
    )
    chat_mod.run(session, Console(), prompt)


def main():
    app()


if __name__ == "__main__":
    main()

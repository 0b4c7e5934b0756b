"""`hmx run`: the whole HMX-feel experiment as one resumable command.

For every model (and seed): evaluate base -> train human-like (HL) -> train reverse -> evaluate HL -> evaluate
reverse; then the comparison report. `OUT/stages.json` records each finished stage, so rerunning the same command
skips them; a half-done stage resumes from its own checkpoints / cached items.

With `parallel: 2` on a CPU, two stages run at once in separate processes with one thread each (e.g. the HL
and reverse trainings side by side): small models decode faster per core on one thread, so two single-thread
processes get more done than one process with two threads.

Layout:  OUT/experiment.yaml, OUT/stages.json, OUT/<model>/eval-base/, OUT/<model>/seed<k>/{human,reverse}/ (runs),
         OUT/<model>/seed<k>/eval-{human,reverse}/, OUT/report.{md,html}, OUT/figures/
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from hmxfeel import config as config_mod
from hmxfeel.errors import NonFiniteError, UserError
from hmxfeel.io import atomic_write_json, atomic_write_text, check_keys, folder_lock, holds_files, read_text, read_yaml

RESUME_HINT = "rerun the same command to resume"  # `hmx run` has no --resume: a rerun skips finished stages

PRESETS = resources.files("hmxfeel") / "data" / "presets"
STATE_FILE = "stages.json"


@dataclass
class Experiment:
    """An experiment file (YAML). Every key is optional except `models`."""

    models: list = field(default_factory=list)  # [{name, model}] (name = folder name in the output)
    out: str = "runs/experiment"  # output folder (the CLI's --out wins)
    train: dict = field(default_factory=dict)  # TrainConfig fields for both directions
    human: dict = field(default_factory=dict)  # overrides for the human-like run
    reverse: dict = field(default_factory=dict)  # overrides for the reverse run
    seeds: list = field(default_factory=lambda: [0])  # one training run per seed and direction
    suite: str = "default"  # evaluation suite (hmx eval --suite)
    tasks: list | None = None  # evaluation tasks (hmx eval --tasks); None = every task of the suite
    limit: int | None = None  # items per evaluation (None = the suite's limits)
    humanlike_limit: int | None = None  # eval prompts for human-likeness (None = `limit`, else all / 16 in quick)
    battery_dtype: str = "same"  # the battery's precision (hmx eval --battery-dtype): same, auto, float32, bfloat16
    data_dir: str | None = None  # local benchmark copies (else HMX_DATA_DIR / the Hub)
    rubric: str | None = None  # rubric YAML for rewards and evaluation alike (default: the packaged one)
    judge: str | None = None  # independent judge: model spec or OpenAI-compatible URL
    judge_model: str | None = None  # model name for an endpoint judge
    device: str | None = None  # cpu / cuda (default: cuda when available)
    parallel: int = 1  # stages run at once, each in its own process with cores / parallel threads (CPU)
    twins: bool | str = False  # dry run on tiny random twins (twins.py); a folder of model folders to make them from
    description: str = ""


def parse(data: dict, source: str) -> Experiment:
    fields = {f.name for f in dataclasses.fields(Experiment)}
    check_keys(data, fields, source)
    exp = Experiment(**data)
    if not isinstance(exp.models, list) or not exp.models:
        raise UserError(f"{source}: 'models' must be a non-empty list of {{name, model}}")
    for i, m in enumerate(exp.models):
        if not isinstance(m, dict) or "model" not in m:
            raise UserError(f"{source}: models[{i}] needs a 'model' (Hub id, folder or 'embedded')")
        check_keys(m, ("name", "model"), f"{source}: models[{i}]")
        _check_model(m["model"], f"{source}: models[{i}]")
        m.setdefault("name", Path(str(m["model"])).name.replace(".", "_"))
    _check_matrix(exp, source)
    if exp.rubric is not None:
        from hmxfeel import rubric as rubric_mod

        rubric_mod.load(exp.rubric)  # a bad rubric fails now, not after the first stage
    if isinstance(exp.parallel, bool) or not isinstance(exp.parallel, int) or exp.parallel < 1:
        raise UserError(f"{source}: 'parallel' must be an integer >= 1, got {exp.parallel!r}")
    _check_eval_settings(exp, source)
    if not isinstance(exp.twins, (bool, str)) or exp.twins == "":
        raise UserError(f"{source}: 'twins' must be true, false or a folder of model folders, got {exp.twins!r}")
    for key in ("train", "human", "reverse"):
        if not isinstance(getattr(exp, key), dict):
            raise UserError(f"{source}: '{key}' must be a mapping of training settings")
        setattr(exp, key, config_mod.coerce_values(getattr(exp, key), f"{source}: {key}"))
    # Each block's values, then each direction's merged settings: a bad one fails before stage 1, named by its block.
    config_mod.TrainConfig.for_device("cpu", **exp.train).validate(f"{source}: train")
    for direction in ("human", "reverse"):
        config_mod.TrainConfig.for_device("cpu", **{**exp.train, **getattr(exp, direction)}).validate(
            f"{source}: {direction}"
        )
    return exp


def _check_matrix(exp: Experiment, source: str) -> None:
    """Model names and seeds name the stages' folders: two that coincide would make two stages share one folder."""
    names = [m["name"] for m in exp.models]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
            raise UserError(f"{source}: models[{i}]: 'name' must be a folder name (no '/'), got {name!r}")
        if name in names[:i]:
            raise UserError(f"{source}: models[{i}]: name '{name}' is used twice (give each model its own 'name')")
    seeds = exp.seeds
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{source}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:  # numpy's seed range
            raise UserError(f"{source}: 'seeds' must be integers from 0 to {2**32 - 1}, got {seed!r}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UserError(f"{source}: 'seeds' lists seed {twice[0]} twice (each seed is one training run)")


def _check_model(spec, where: str) -> None:
    from hmxfeel import models

    if not isinstance(spec, str):
        raise UserError(f"{where}: 'model' must be text (a Hub id, a folder or 'embedded'), got {spec!r}")
    try:
        models.check_spec(spec)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_eval_settings(exp: Experiment, source: str) -> None:
    """The evaluation keys, named as the file names them (not as `hmx eval`'s flags), before any stage runs."""
    from hmxfeel.evaluate import SUITES, check_tasks

    if exp.suite not in SUITES:
        raise UserError(f"{source}: 'suite' must be one of {', '.join(SUITES)}, got {exp.suite!r}")
    exp.tasks = check_tasks(exp.tasks, exp.suite, f"{source}: 'tasks'", "suite:")
    from hmxfeel.models import BATTERY_DTYPES

    if exp.battery_dtype not in BATTERY_DTYPES:
        raise UserError(
            f"{source}: 'battery_dtype' must be one of {', '.join(BATTERY_DTYPES)}, got {exp.battery_dtype!r}"
        )
    for key in ("limit", "humanlike_limit"):
        value = getattr(exp, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{source}: '{key}' must be an integer >= 1 (or absent), got {value!r}")


def load(path: str | Path | None = None, preset: str | None = None) -> tuple[Experiment, str]:
    """An experiment from a file or a packaged preset; returns it with its YAML text (stored with the run)."""
    if preset:
        names = sorted(p.name[:-5] for p in PRESETS.iterdir() if p.name.endswith(".yaml"))
        if preset not in names:
            raise UserError(f"unknown preset '{preset}' (available: {', '.join(names)})")
        path = PRESETS / f"{preset}.yaml"
    if path is None:
        raise UserError("give an experiment file or --preset NAME")
    return parse(read_yaml(path), str(path)), read_text(path)


def train_config(exp: Experiment, direction: str, seed: int, device: str) -> config_mod.TrainConfig:
    values = {**exp.train, **getattr(exp, direction), "seed": seed}
    return config_mod.TrainConfig.for_device(device, **values).validate(f"experiment {direction} config")


@dataclass
class Stage:
    id: str
    kind: str  # "eval" or "train"
    model: str
    folder: Path
    direction: str = ""
    seed: int = 0
    adapter: str | None = None
    needs: tuple = ()  # ids of stages that must finish first


def plan(exp: Experiment, out: Path) -> list[Stage]:
    """The ordered stages of the experiment, with what each one needs."""
    stages = []
    for m in exp.models:
        base = out / m["name"]
        stages.append(Stage(f"{m['name']}/eval-base", "eval", m["model"], base / "eval-base"))
        for seed in exp.seeds:
            run_dir, prefix = base / f"seed{seed}", f"{m['name']}/seed{seed}"
            for direction in ("human", "reverse"):
                stages.append(
                    Stage(f"{prefix}/train-{direction}", "train", m["model"], run_dir / direction, direction, seed)
                )
            for direction in ("human", "reverse"):
                stages.append(
                    Stage(
                        f"{prefix}/eval-{direction}",
                        "eval",
                        m["model"],
                        run_dir / f"eval-{direction}",
                        adapter=str(run_dir / direction / "adapter"),
                        needs=(f"{prefix}/train-{direction}",),
                    )
                )
    return stages


def execute(exp: Experiment, stage: Stage, device: str) -> None:
    """Run one stage; it resumes by itself from whatever its folder already holds."""
    if stage.kind == "eval":
        from hmxfeel.evaluate import evaluate

        resume = holds_files(stage.folder)
        evaluate(
            stage.model,
            stage.folder,
            adapter=stage.adapter,
            suite=exp.suite,
            data_dir=exp.data_dir,
            limit=exp.limit,
            resume=resume,
            judge=exp.judge,
            judge_model=exp.judge_model,
            device=device,
            humanlike_limit=exp.humanlike_limit,
            rubric_path=exp.rubric,
            judge_format=exp.train.get("judge_format") or None,
            tasks=exp.tasks,
            battery_dtype=exp.battery_dtype,
        )
    else:
        from hmxfeel.train import run_is_complete, train

        resume = (stage.folder / "run.json").exists()  # a folder without a run record holds nothing to keep
        if resume and run_is_complete(stage.folder):
            return  # finished, but the runner was stopped before it could record that
        cfg = train_config(exp, stage.direction, stage.seed, device)
        train(
            stage.model,
            stage.direction,
            stage.folder,
            cfg,
            resume=resume,
            force=not resume,
            device=device,
            rubric_path=exp.rubric,
            resume_hint=RESUME_HINT,
        )


def _stop_when_orphaned(parent: int) -> None:
    """If the runner dies (even by SIGKILL), stop this stage the way Ctrl-C would: training checkpoints first.
    Without this, a stage could outlive its runner and race the stage a rerun starts in the same folder."""
    import os
    import signal
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="hmx-orphan-watch").start()


def _child(exp: Experiment, stage: Stage, device: str, threads: int, parent: int) -> None:
    """Entry point of a stage run in its own process (parallel > 1): its share of the CPU threads, and the
    CLI's exit codes (2 = a user error, already explained in one line)."""
    import os
    import sys

    _stop_when_orphaned(parent)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        execute(exp, stage, device)
    except (UserError, NonFiniteError) as exc:
        print(f"hmx: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run(exp: Experiment, text: str, out: Path, log=print, twin_size: str = "tiny") -> Path:
    """Run (or continue) the experiment in `out`; returns the report path. `twin_size`: the twins' size when the
    experiment asks for twins ("full" keeps each architecture's size: bench/gpu_twins.py on a GPU)."""
    from hmxfeel import models
    from hmxfeel.report import build_report

    check_study_data(exp)  # before the twins replace `exp` (a dry run keeps no `twins` flag)
    record = None
    if exp.twins:  # before anything else: every later check and stage sees the twins and the shrunk settings
        from hmxfeel import twins

        exp, record = twins.dry_run(exp, twins.sources_folder(None if exp.twins is True else exp.twins), twin_size)
    device = exp.device or models.default_device()
    if exp.parallel > 1 and device != "cpu":
        raise UserError(
            f"parallel: {exp.parallel} splits CPU cores between stages; on {device} keep parallel: 1 "
            "(several GPUs: accelerate, see docs/scaling.md)"
        )
    models.check_device(device, "device:")
    # One runner per experiment folder. Stage processes lock their own subfolders, so they never wait on this.
    with folder_lock(out):
        try:
            return _run_locked(exp, text, out, device, log, build_report, record)
        except KeyboardInterrupt:  # Ctrl-C outside a training step (which stops itself with its own message)
            raise UserError(f"{out}: interrupted; finished stages are kept, {RESUME_HINT}") from None


def check_study_data(exp: Experiment) -> None:
    """The study's claims rest on local benchmark copies (BBQ, sycophancy, are-you-sure have no Hub path here):
    without them its eval stages would skip every claim after the trainings ran, so refuse before anything runs."""
    from hmxfeel.evals.data import DATA_ENV, resolve_data_dir

    if exp.suite == "study" and not exp.twins and resolve_data_dir(exp.data_dir) is None:
        raise UserError(
            f"suite 'study' scores local benchmark copies: set {DATA_ENV} (or data_dir: in the experiment) to a "
            "folder in the layout of shared/data (hmxfeel/evals/README.md)"
        )


def _run_locked(
    exp: Experiment, text: str, out: Path, device: str, log, build_report, twins: dict | None = None
) -> Path:
    # The stored experiment text names `twins:`, so a dry run and a real run never share a folder.
    stored = out / "experiment.yaml"
    extension = seed_extension(out, stored, text)
    atomic_write_text(stored, text)
    if twins is not None:  # what each model was replaced by: the report's first section
        from hmxfeel.twins import TWINS_FILE

        atomic_write_json(out / TWINS_FILE, twins)
    state_path = out / STATE_FILE
    state = json.loads(read_text(state_path)) if state_path.exists() else {"done": {}}
    if extension:
        state.setdefault("extensions", []).append(extension)
        atomic_write_json(state_path, state)
        seeds = f"seeds {extension['seeds_before']} -> {extension['seeds_after']}"
        log(f"adding seed(s) {extension['added']} to the experiment ({seeds}); its finished stages are kept")
    stages = plan(exp, out)
    started = time.time()

    def finished(stage: Stage, seconds: float) -> None:
        state["done"][stage.id] = {"seconds": round(seconds, 1), "finished": time.time()}
        atomic_write_json(state_path, state)
        log(f"{stage.id}: finished in {seconds:.0f} s (elapsed {time.time() - started:.0f} s)")

    todo = []
    for i, stage in enumerate(stages, 1):
        if stage.id in state["done"]:
            log(f"[{i}/{len(stages)}] {stage.id}: done earlier ({state['done'][stage.id]['seconds']:.0f} s), skipped")
        else:
            todo.append(stage)
    if exp.parallel <= 1:
        for stage in todo:
            resume = holds_files(stage.folder)
            log(
                f"[{stages.index(stage) + 1}/{len(stages)}] {stage.id}: {'resuming' if resume else 'starting'} (elapsed {time.time() - started:.0f} s)"
            )
            t0 = time.time()
            execute(exp, stage, device)
            finished(stage, time.time() - t0)
    else:
        run_parallel(exp, todo, device, state, finished, log, started)
    log(f"report (elapsed {time.time() - started:.0f} s)")
    return build_report(out)


def seed_extension(out: Path, stored: Path, text: str) -> dict | None:
    """The experiment stored in `out` against this one. The same: None. The same but for more seeds: the
    extension, for stages.json (every finished stage is kept; the new seeds' stages run). Anything else,
    fewer seeds included, is a different experiment and refused: its results would not be comparable."""
    if not stored.exists():
        return None
    old, new = yaml.safe_load(read_text(stored)) or {}, yaml.safe_load(text) or {}
    if old == new:
        return None
    before, after = old.pop("seeds", [0]), new.pop("seeds", [0])  # [0]: Experiment's default
    if old != new or not isinstance(before, list) or not isinstance(after, list):
        raise UserError(f"{out}: holds a different experiment (see {stored}); use another --out")
    removed = [seed for seed in before if seed not in after]
    if removed:
        raise UserError(
            f"{out}: holds seeds {sorted(before)}; this experiment leaves out {sorted(removed)}. Seeds can be added "
            f"to an experiment, not removed: list all of them (with --seeds K: K >= {max(before) + 1}) or use "
            "another --out"
        )
    added = [seed for seed in after if seed not in before]
    if not added:
        return None  # the same seeds in another order
    return {"added": added, "seeds_before": before, "seeds_after": after, "time": time.time()}


def run_parallel(exp: Experiment, todo: list[Stage], device: str, state: dict, finished, log, started: float) -> None:
    """Up to `exp.parallel` stages at once, each in its own process with an equal share of the CPU threads; a
    stage starts once the stages it needs are done. A failed stage stops the others (they checkpoint first)."""
    import multiprocessing
    import os

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch / OpenMP state
    threads = max(1, (os.cpu_count() or 1) // exp.parallel)
    running: dict[str, tuple] = {}  # id -> (process, stage, t0)
    waiting = list(todo)
    try:
        while waiting or running:
            for stage in [s for s in waiting if all(n in state["done"] for n in s.needs)]:
                if len(running) >= exp.parallel:
                    break
                waiting.remove(stage)
                proc = ctx.Process(target=_child, args=(exp, stage, device, threads, os.getpid()), name=stage.id)
                proc.start()
                running[stage.id] = (proc, stage, time.time())
                log(
                    f"{stage.id}: started in its own process ({threads} thread(s); elapsed {time.time() - started:.0f} s; "
                    f"running: {', '.join(running)})"
                )
            if not running:
                raise UserError(f"stages {[s.id for s in waiting]} wait for stages that are not in this experiment")
            time.sleep(0.5)
            for sid, (proc, stage, t0) in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[sid]
                if proc.exitcode != 0:
                    raise UserError(
                        f"stage {sid} failed (exit code {proc.exitcode}; see its messages above); "
                        "rerun the same command to resume"
                    )
                finished(stage, time.time() - t0)
    finally:
        for proc, _, _ in running.values():  # SIGTERM: a training stage writes a checkpoint, then exits
            proc.terminate()
        for proc, _, _ in running.values():
            proc.join()

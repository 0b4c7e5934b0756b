"""`hmx run`: the whole HMX-feel experiment as one resumable command.

For every model (and seed): evaluate base -> train human-like (HL) -> train reverse -> evaluate HL -> evaluate
reverse; then the comparison report. `OUT/stages.json` records each finished stage, so rerunning the same command
skips them; a half-done stage resumes from its own checkpoints / cached items.

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
from hmxfeel.errors import UserError
from hmxfeel.io import atomic_write_json, atomic_write_text, check_keys, read_text, read_yaml

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
    limit: int | None = None  # items per evaluation (None = the suite's limits)
    humanlike_limit: int | None = None  # eval prompts for human-likeness (None = `limit`, else all / 16 in quick)
    data_dir: str | None = None  # local benchmark copies (else HMX_DATA_DIR / the Hub)
    judge: str | None = None  # independent judge: model spec or OpenAI-compatible URL
    judge_model: str | None = None  # model name for an endpoint judge
    device: str | None = None  # cpu / cuda (default: cuda when available)
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
        m.setdefault("name", Path(str(m["model"])).name.replace(".", "_"))
    if not isinstance(exp.seeds, list) or not all(isinstance(s, int) for s in exp.seeds) or not exp.seeds:
        raise UserError(f"{source}: 'seeds' must be a non-empty list of integers")
    for key in ("train", "human", "reverse"):
        if not isinstance(getattr(exp, key), dict):
            raise UserError(f"{source}: '{key}' must be a mapping of training settings")
        check_keys(getattr(exp, key), {f.name for f in dataclasses.fields(config_mod.TrainConfig)}, f"{source}: {key}")
    return exp


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
    run: object  # callable() -> None; resumes by itself from what its folder holds
    folder: Path


def plan(exp: Experiment, out: Path, device: str) -> list[Stage]:
    """The ordered stages of the experiment."""
    from hmxfeel.evaluate import evaluate
    from hmxfeel.train import train

    def eval_stage(model, folder, adapter=None):
        def go():
            resume = folder.exists() and any(folder.iterdir())
            evaluate(model, folder, adapter=adapter, suite=exp.suite, data_dir=exp.data_dir, limit=exp.limit,
                     resume=resume, judge=exp.judge, judge_model=exp.judge_model, device=device,
                     humanlike_limit=exp.humanlike_limit)  # fmt: skip
        return go

    def train_stage(model, direction, folder, seed):
        def go():
            resume = (folder / "run.json").exists()  # a folder without a run record holds nothing to keep
            cfg = train_config(exp, direction, seed, device)
            train(model, direction, folder, cfg, resume=resume, force=not resume, device=device)
        return go

    stages = []
    for m in exp.models:
        base = out / m["name"]
        stages.append(Stage(f"{m['name']}/eval-base", eval_stage(m["model"], base / "eval-base"), base / "eval-base"))
        for seed in exp.seeds:
            run_dir = base / f"seed{seed}"
            for direction in ("human", "reverse"):
                folder = run_dir / direction
                stages.append(Stage(f"{m['name']}/seed{seed}/train-{direction}", train_stage(m["model"], direction, folder, seed), folder))
            for direction in ("human", "reverse"):
                folder = run_dir / f"eval-{direction}"
                adapter = str(run_dir / direction / "adapter")
                stages.append(Stage(f"{m['name']}/seed{seed}/eval-{direction}", eval_stage(m["model"], folder, adapter), folder))
    return stages


def run(exp: Experiment, text: str, out: Path, log=print) -> Path:
    """Run (or continue) the experiment in `out`; returns the report path."""
    from hmxfeel import models
    from hmxfeel.report import build_report

    device = exp.device or models.default_device()
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "experiment.yaml"
    if stored.exists() and yaml.safe_load(read_text(stored)) != yaml.safe_load(text):
        raise UserError(f"{out}: holds a different experiment (see {stored}); use another --out")
    atomic_write_text(stored, text)
    state_path = out / STATE_FILE
    state = json.loads(read_text(state_path)) if state_path.exists() else {"done": {}}
    stages = plan(exp, out, device)
    started = time.time()
    for i, stage in enumerate(stages, 1):
        if stage.id in state["done"]:
            log(f"[{i}/{len(stages)}] {stage.id}: done earlier ({state['done'][stage.id]['seconds']:.0f} s), skipped")
            continue
        resume = stage.folder.exists() and any(stage.folder.iterdir())
        log(f"[{i}/{len(stages)}] {stage.id}: {'resuming' if resume else 'starting'} (elapsed {time.time() - started:.0f} s)")
        t0 = time.time()
        stage.run()
        state["done"][stage.id] = {"seconds": round(time.time() - t0, 1), "finished": time.time()}
        atomic_write_json(state_path, state)
    log(f"report (elapsed {time.time() - started:.0f} s)")
    return build_report(out)

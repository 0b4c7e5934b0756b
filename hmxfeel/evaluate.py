"""`hmx eval`: one model (base, or base + adapter) through the human-likeness evaluation and the battery.

Writes `OUT/results.json` (one record per metric with value, n, stderr, 95% CI, which direction is better and the
settings it depends on, plus a manifest) and `OUT/items/*.jsonl` (per-item records, for paired comparisons).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hmxfeel import models
from hmxfeel import prompts as prompts_mod
from hmxfeel import rubric as rubric_mod
from hmxfeel.errors import UserError
from hmxfeel.io import atomic_write_json, folder_lock, read_text

SUITES = ("default", "quick", "study", "humanlike")
# Battery backends: "hf" = in-process, local tasks scored by the fast engine (evals/fastmc.py); "lm-eval" = in-process,
# HFLM's own loop for everything (the reference, slower); "vllm" = lm-eval's vLLM backend (GPU).
BACKENDS = ("hf", "lm-eval", "vllm")
HUMANLIKE = "humanlike"  # the human-likeness part, selectable by --tasks like any battery evaluation


def task_names() -> tuple[str, ...]:
    """What `--tasks` (and an experiment's `tasks:`) may name: the human-likeness part and the battery's evals."""
    from hmxfeel.evals.runner import EVALS

    return (HUMANLIKE, *EVALS)


def check_tasks(
    tasks, suite: str = "default", where: str = "--tasks", suite_where: str = "--suite"
) -> list[str] | None:
    """A task selection (comma-separated text or a list of names) checked before anything loads; None = every
    task of the suite. Unknown names (with a did-you-mean), an empty selection and a name given twice are refused."""
    import difflib

    if tasks is None:
        return None
    if isinstance(tasks, str):
        names = tasks.split(",")
    elif isinstance(tasks, (list, tuple)) and all(isinstance(t, str) for t in tasks):
        names = list(tasks)
    else:
        raise UserError(f"{where} must be a list of task names, got {tasks!r}")
    names = [n.strip().lower() for n in names if n.strip()]  # a stray comma is not a task
    known = task_names()
    if not names:
        raise UserError(f"{where} is empty: name at least one task ({', '.join(known)})")
    seen: set[str] = set()
    for name in names:
        if name not in known:
            close = [k for k in known if k.startswith(name)][:3] or difflib.get_close_matches(
                name, known, n=1, cutoff=0.6
            )
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise UserError(f"{where}: unknown task '{name}' ({hint}choose from {', '.join(known)})")
        if name in seen:
            raise UserError(f"{where}: task '{name}' is named twice")
        seen.add(name)
    if suite == HUMANLIKE and names != [HUMANLIKE]:
        other = next(n for n in names if n != HUMANLIKE)
        raise UserError(
            f"{where}: '{other}' is a battery task, but {suite_where} humanlike runs only the human-likeness "
            f"part; choose the suite 'default' or 'quick' to run it"
        )
    return names


def adapter_folder(path: str | Path) -> Path:
    """The adapter a path stands for: a training run folder (`runs/<name>`) means its `adapter/` subfolder. A run
    folder whose training has not finished has no adapter yet: one line saying how to finish it."""
    path = Path(path)
    if (path / "adapter_config.json").exists() or not path.is_dir():
        return path
    inner = path / "adapter"
    if (inner / "adapter_config.json").exists():
        return inner
    if (path / "run.json").exists():
        raise UserError(
            f"{path}: a training run folder without a finished adapter (no adapter/adapter_config.json); "
            f"finish the training first (hmx train --out {path} --resume)"
        )
    return path


def skip_summary(records: list[dict]) -> list[str]:
    """Lines saying which tasks did not run and why (grouped by reason); empty when every task ran."""
    tasks: dict[str, list[dict]] = {}
    for r in records:
        tasks.setdefault(r["eval"], []).append(r)
    skipped = {name: recs[0]["skipped"] for name, recs in tasks.items() if all(r.get("skipped") for r in recs)}
    if not skipped:
        return []
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    lines = [f"{len(tasks) - len(skipped)} of {len(tasks)} tasks ran; skipped {len(skipped)}:"]
    lines += [f"  {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
    return lines


def attach_adapter(loaded: models.Loaded, adapter: str | Path, name: str = "default") -> models.Loaded:
    """Wrap the base model with a trained adapter, refusing one that was trained on another base model. On a model
    that already carries adapters it is added under `name` (`hmx chat` compares several on one base)."""
    from peft import PeftModel

    adapter = adapter_folder(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise UserError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    meta_file = adapter / "hmx_adapter.json"
    if meta_file.exists():
        try:
            meta = json.loads(read_text(meta_file))
        except ValueError:
            raise UserError(f"{meta_file}: corrupt adapter metadata (not JSON)") from None
        # `embedded` and its Hub id are one model: an adapter moves between machines and between the two names.
        if not models.same_model(meta.get("model"), loaded.source) and meta.get("base_model_path") != loaded.path:
            raise UserError(f"{adapter}: adapter was trained on {meta.get('model')!r}, not on {loaded.source!r}")
    else:
        # No hmx metadata (an adapter from elsewhere): PEFT's own record of the base model. LoRA weights of
        # another model with the same projection shapes load without any error, so shapes alone prove nothing.
        other = _foreign_base(adapter, loaded)
        if other:
            raise UserError(f"{adapter}: adapter was trained on {other!r}, not on {loaded.source!r}")
    models.quiet_deprecations()
    try:
        if isinstance(loaded.model, PeftModel):
            loaded.model.load_adapter(str(adapter), adapter_name=name)
            model = loaded.model
        else:
            model = PeftModel.from_pretrained(loaded.model, str(adapter), adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"{adapter}: adapter does not fit this model ({str(exc).splitlines()[0][:200]})") from None
    model.eval()
    return models.Loaded(
        model=model, tokenizer=loaded.tokenizer, family=loaded.family, source=loaded.source, path=loaded.path
    )


_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def _foreign_base(adapter: Path, loaded: models.Loaded) -> str | None:
    """The base model named in adapter_config.json when it is clearly another model than `loaded`, else None.

    A local base folder is compared by architecture (model type, sizes, vocabulary); a Hub id by its name,
    case-insensitively, against what was asked for and what was loaded (an adapter of Org/Model fits a local copy
    in a folder named Model)."""
    try:
        base = json.loads(read_text(adapter / "adapter_config.json")).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        raise UserError(f"{adapter / 'adapter_config.json'}: corrupt adapter config (not a JSON mapping)") from None
    if not base or not isinstance(base, str):
        return None
    names = {Path(str(x).rstrip("/")).name.lower() for x in (loaded.source, loaded.path) if x}
    if models.same_model(base, loaded.source):  # hmx-feel adapters name the Hub id, e.g. of `embedded`
        return None
    if Path(base).resolve() == Path(loaded.path).resolve() or Path(base.rstrip("/")).name.lower() in names:
        return None
    base_config = Path(base) / "config.json"
    if base_config.is_file():
        try:
            theirs = json.loads(read_text(base_config))
        except ValueError:
            return None
        ours = loaded.model.config.to_dict() if hasattr(loaded.model, "config") else {}
        differs = any(k in theirs and k in ours and theirs[k] != ours[k] for k in _ARCH_KEYS)
        return base if differs else None
    return base


def judge_format_for(adapter, rubric, requested: str | None, other_judge: bool) -> str | None:
    """The self-judge format for evaluating `adapter`: by default the one that rewarded its training (from the
    adapter's record). Another rubric or format is refused unless `other_judge`: its scores would be on another
    scale, and the comparison with the training reward would silently mean something else."""
    if requested is not None:
        rubric.format(requested)  # an unknown format fails here, before any model loads
    meta_file = Path(adapter) / "hmx_adapter.json" if adapter else None
    if meta_file is None or not meta_file.exists():
        return requested
    try:
        spec = json.loads(read_text(meta_file)).get("judge") or {}
    except ValueError:
        raise UserError(f"{meta_file}: corrupt adapter metadata (not JSON)") from None
    if not spec or other_judge:
        return requested
    trained = spec.get("format")
    if spec.get("rubric_sha256") != rubric.sha256:
        raise UserError(
            f"{adapter}: was rewarded with rubric {spec.get('rubric')} (sha256 {str(spec.get('rubric_sha256'))[:12]}), "
            f"not {rubric.source} ({rubric.sha256[:12]}); pass that --rubric, or --other-judge to judge with this one"
        )
    if requested is not None and requested != trained:
        raise UserError(
            f"{adapter}: was rewarded by judge format '{trained}', not '{requested}'; "
            "pass --other-judge to judge it with another format"
        )
    return trained


def independent_judge(spec: str | None, rubric, model_name: str | None = None, device: str | None = None):
    """An endpoint URL or a model spec -> a judge with the training rubric; None when not asked for."""
    if not spec:
        return None, ""
    if spec.startswith(("http://", "https://")):
        from hmxfeel.endpoint_judge import EndpointJudge

        if not model_name:
            raise UserError("--judge-model is required with an endpoint --judge URL")
        return EndpointJudge(spec, model_name, rubric), f"{spec} ({model_name})"
    from hmxfeel.judge import make_judge

    other = models.load(spec, device=device)
    return make_judge("logit", other.model, other.tokenizer, other.family, rubric, identity="policy"), spec


def evaluate(
    model: str,
    out: Path,
    adapter: str | None = None,
    suite: str = "default",
    data_dir: str | None = None,
    limit: int | None = None,
    resume: bool = False,
    judge: str | None = None,
    judge_model: str | None = None,
    rubric_path: str | None = None,
    prompts_path: str | None = None,
    seed: int = 0,
    device: str | None = None,
    humanlike_limit: int | None = None,
    backend: str = "hf",
    judge_format: str | None = None,
    other_judge: bool = False,
    tasks: list[str] | str | None = None,
    battery_dtype: str = "same",
) -> list[dict]:
    """Evaluate `model` (+ `adapter`) into `out`; `tasks` picks part of the suite (see check_tasks);
    `battery_dtype` is the battery's precision (models.battery_dtype: same, auto, float32, bfloat16)."""
    _check_options(backend, suite, limit, humanlike_limit)
    tasks = check_tasks(tasks, suite)
    if adapter:
        adapter = str(adapter_folder(adapter))
    out = Path(out)
    if device is not None:
        device = models.check_device(device)
    _check_battery_dtype(battery_dtype, backend, device)
    with folder_lock(out):  # one writer per eval folder; the lock goes with this process, even when killed
        _check_eval_folder(out, model, adapter, resume)
        run = EvalRun(model=model, out=out, adapter=adapter, suite=suite, data_dir=data_dir, limit=limit, resume=resume,
                      judge=judge, judge_model=judge_model, rubric_path=rubric_path, prompts_path=prompts_path,
                      seed=seed, device=device, humanlike_limit=humanlike_limit, backend=backend,
                      judge_format=judge_format, other_judge=other_judge, tasks=tasks,
                      battery_dtype=battery_dtype)  # fmt: skip
        return _evaluate(run)


def _check_options(backend: str, suite: str, limit: int | None, humanlike_limit: int | None) -> None:
    """Refuse a bad backend, suite or limit (and vLLM asked for but not installed) before anything loads."""
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError("--backend vllm needs vLLM: pip install 'hmx-feel[vllm]'")
    if suite not in SUITES:
        raise UserError(f"--suite must be one of {SUITES}, got {suite!r}")
    for name, value in (("--limit", limit), ("--humanlike-limit", humanlike_limit)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")


def _check_battery_dtype(battery_dtype: str, backend: str, device: str | None) -> None:
    """Refuse a precision the run cannot honour, before anything loads."""
    if battery_dtype not in models.BATTERY_DTYPES:
        raise UserError(f"--battery-dtype must be one of {', '.join(models.BATTERY_DTYPES)}, got {battery_dtype!r}")
    if battery_dtype == "float32" and (backend == "vllm" or (device or models.default_device()) != "cpu"):
        raise UserError("--battery-dtype float32 needs the CPU: on a GPU (and in vLLM) the model is loaded in bf16")


def _check_eval_folder(out: Path, model: str, adapter, resume: bool) -> None:
    """Refuse, before any model loads, a folder holding another model's or adapter's evaluation (resuming would
    mix their items; starting over would drop them), and finished results without --resume."""
    held, wanted = _evaluated(out), {"model": model, "adapter": str(adapter) if adapter else None}
    if held is not None and held != wanted:
        raise UserError(
            f"{out}: holds the evaluation of {_describe(held)}, not of {_describe(wanted)}; evaluate into another --out"
        )
    if (out / "results.json").exists() and not resume:
        raise UserError(f"{out}: already holds results; use --resume (or another --out)")


def _evaluated(out: Path) -> dict | None:
    """{model, adapter} of the evaluation already in `out`: the results' manifest, else its items' fingerprint."""
    sources = [(out / "results.json", "manifest")] + [(p, "fingerprint") for p in sorted(out.glob("items/*.meta.json"))]
    for path, part in sources:
        if not path.exists():
            continue
        try:
            data = json.loads(read_text(path)).get(part)
        except (ValueError, AttributeError, UserError):
            continue  # unreadable: the later steps name the file
        if isinstance(data, dict) and "model" in data:
            return {"model": data.get("model"), "adapter": data.get("adapter")}
    return None


def _describe(who: dict) -> str:
    return f"{who['model']} + adapter {who['adapter']}" if who["adapter"] else f"{who['model']} (no adapter)"


@dataclass(frozen=True)
class EvalRun:
    """One `evaluate` call's arguments, checked (see `evaluate` for what each means)."""

    model: str
    out: Path
    adapter: str | None
    suite: str
    data_dir: str | None
    limit: int | None
    resume: bool
    judge: str | None
    judge_model: str | None
    rubric_path: str | None
    prompts_path: str | None
    seed: int
    device: str | None
    humanlike_limit: int | None
    backend: str
    judge_format: str | None
    other_judge: bool
    tasks: list[str] | None
    battery_dtype: str = "same"


def _evaluate(run: EvalRun) -> list[dict]:
    """Load the rubric, prompts and model (+ adapter), run the human-likeness part and the battery, then write
    results.json with the manifest of what the numbers depend on."""
    from hmxfeel.train import versions

    started = time.time()
    run_human = run.tasks is None or HUMANLIKE in run.tasks
    battery = None if run.tasks is None else [t for t in run.tasks if t != HUMANLIKE]  # None: the whole battery
    rubric = rubric_mod.load(run.rubric_path)
    # Only the eval split is read here: a file of eval prompts alone is enough (training needs the train split).
    prompt_set = prompts_mod.load(run.prompts_path, need="eval") if run_human else None
    judge_format = judge_format_for(run.adapter, rubric, run.judge_format, run.other_judge)
    loaded = models.load(run.model, device=run.device)
    if run.adapter:
        loaded = attach_adapter(loaded, run.adapter)
    run.out.mkdir(parents=True, exist_ok=True)

    default_human = 16 if run.suite == "quick" else None
    human_limit = next((x for x in (run.humanlike_limit, run.limit) if x is not None), default_human)
    records = []
    if run_human:
        fingerprint = {"model": run.model, "adapter": run.adapter or None}
        run_kw = dict(resume=run.resume, limit=human_limit, seed=run.seed, fingerprint=fingerprint,
                      judge_format=judge_format)  # fmt: skip
        records += _humanlike(loaded, rubric, prompt_set, run.out, run.judge, run.judge_model, run.device, **run_kw)
    if run.suite != "humanlike" and battery != []:
        records += _battery(run, loaded, battery)  # last: it may cast the model to another precision
    settings = dict(suite=run.suite, tasks=run.tasks, data_dir=run.data_dir, limit=run.limit,
                    humanlike_limit=human_limit, seed=run.seed, battery_dtype=run.battery_dtype)  # fmt: skip
    manifest = _manifest(run.model, loaded, run.adapter, settings, rubric, prompt_set, versions(), started)
    atomic_write_json(run.out / "results.json", {"manifest": manifest, "records": records})
    return records


def _humanlike(loaded, rubric, prompt_set, out, judge, judge_model, device, **run_kw) -> list[dict]:
    """The human-likeness part: answers scored by the self-judge and, when `judge` names one (a model spec or an
    endpoint URL), by an independent judge with the same rubric."""
    from hmxfeel.evals import humanlike

    indep, indep_name = independent_judge(judge, rubric, judge_model, device)
    return humanlike.run(loaded, rubric, prompt_set, out, independent=indep, independent_name=indep_name, **run_kw)


def _manifest(model, loaded, adapter, settings: dict, rubric, prompt_set, versions: dict, started: float) -> dict:
    """What the numbers depend on, stored next to them: model and adapter, the suite's `settings`, the rubric's and
    prompts' hashes, the chat template options and the library versions."""
    return {
        "model": model,
        "model_path": loaded.path,
        "adapter": str(adapter) if adapter else None,
        **settings,  # suite, tasks, data_dir, limit, humanlike_limit, seed, battery_dtype
        "rubric_sha256": rubric.sha256,
        "prompts_sha256": prompt_set.sha256 if prompt_set else None,
        "chat_template_kwargs": loaded.family.chat_template_kwargs,
        "versions": versions,
        "wall_s": round(time.time() - started, 1),
    }


def _set_battery_dtype(model, requested: str) -> None:
    """Cast the model for the battery when `requested` asks for another precision than it was loaded in."""
    import torch

    dtype = models.battery_dtype(model, requested)
    if dtype == torch.bfloat16 and next(model.parameters()).device.type == "cpu" and not models.cpu_has_fast_bf16():
        print("[hmx eval] battery in bf16 on a CPU without native bf16: slower than fp32", file=sys.stderr)
    models.cast_for_battery(model, dtype)


def _vllm_lm(loaded, adapter):
    """lm-eval's own vLLM backend for the multiple-choice battery (human-likeness still generates with HF)."""
    from lm_eval.models.vllm_causallms import VLLM

    kwargs = {"pretrained": loaded.path, "dtype": "bfloat16", "gpu_memory_utilization": 0.5}
    if adapter:
        kwargs.update(enable_lora=True, lora_local_path=str(adapter), max_lora_rank=64)
    return VLLM(**kwargs)


def _battery(run: EvalRun, loaded, evals: list[str] | None) -> list[dict]:
    """The benchmark battery, in the precision `run.battery_dtype` asks for (the model is cast in place)."""
    from hmxfeel.evals.runner import model_fingerprint, run_battery

    lm, dtype, info = None, None, None
    if run.backend == "vllm":  # vLLM loads its own weights, in bf16
        lm, dtype = _vllm_lm(loaded, run.adapter), "bfloat16 (vLLM)"
    else:
        info = model_fingerprint(loaded.model)  # before the cast: an adapter keeps its identity in any precision
        _set_battery_dtype(loaded.model, run.battery_dtype)
    return run_battery(
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        suite=run.suite,
        data_dir=run.data_dir,
        limit=run.limit,
        out_dir=run.out,
        resume=run.resume,
        seed=run.seed,
        lm=lm,
        evals=evals,
        engine="lm-eval" if run.backend == "lm-eval" else "fast",
        model_info=info,
        dtype=dtype,
    )

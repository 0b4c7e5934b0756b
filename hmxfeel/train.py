"""`hmx train`: GRPO + LoRA on TRL, rewarded by the model's own rubric judgement, in either direction.

Run folder layout (everything a result depends on sits next to it):
    run.json            model, direction, config, rubric/prompt hashes, versions, status
    metrics.jsonl       one line per step: TRL's reward stats + per-criterion rubric means + length etc.
    samples.jsonl       a few completions per step with their per-criterion scores and reward
    checkpoints/        checkpoint-N folders, each written to a staging folder and renamed into place
    adapter/            the final PEFT adapter (PeftModel.from_pretrained loads it) with a model card
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

from hmxfeel import chat, models
from hmxfeel import config as config_mod
from hmxfeel import prompts as prompts_mod
from hmxfeel import rubric as rubric_mod
from hmxfeel.errors import NonFiniteError, UserError
from hmxfeel.io import (
    OutputLock,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    holds_files,
    read_text,
    share_like_umask,
    truncate_jsonl,
)
from hmxfeel.judge import judge_spec, make_judge
from hmxfeel.monitors import make_callback, safety_callback
from hmxfeel.reward import RubricReward, check_direction
from hmxfeel.steplog import use_step_lines

RUN_FILE = "run.json"


def versions() -> dict:
    import platform

    import peft
    import torch
    import transformers
    import trl

    import hmxfeel

    return {
        "hmxfeel": hmxfeel.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
    }


def prepare_out_dir(out: Path, resume: bool, force: bool, lock: OutputLock | None = None) -> dict | None:
    """Return the previous run record when resuming; refuse to write over a run unless asked to. `lock` is the
    caller's lock on `out`: with --force it moves to the new folder, not along with the old run."""
    if resume:
        return read_run_record(out)
    if holds_files(out):
        if not force:
            raise UserError(f"{out}: folder already holds files; use --resume to continue or --force to start over")
        # --force never deletes: the old run is moved aside.
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(out, aside)
        except OSError as exc:
            raise UserError(f"{out}: cannot move the old run aside to {aside.name} ({exc.strerror or exc})") from None
        if lock is not None:
            lock.follow_moved_folder(aside)  # makes the new folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run folder ({exc.strerror or exc})") from None
    return None


def run_is_complete(out: Path, record: dict | None = None) -> bool:
    """The run in `out` trained all its steps and its adapter is in place (a rerun has nothing to do)."""
    record = record if record is not None else (read_run_record(out) if (out / RUN_FILE).exists() else {})
    return record.get("status") == "complete" and (out / "adapter" / "adapter_config.json").exists()


def _checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it looks whole): a trainer_state.json that
    does not parse, or a safetensors file whose header or data is cut short / garbage."""
    import json
    import struct

    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json does not parse"
    if not isinstance(state, dict):
        return "trainer_state.json is not a mapping"
    for weights in ckpt.glob("*.safetensors"):
        try:
            with open(weights, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > weights.stat().st_size - 8:
                    return f"{weights.name} is truncated"
                header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError, AttributeError):
            return f"{weights.name} is not a safetensors file"
        if 8 + n + end > weights.stat().st_size:
            return f"{weights.name} is truncated"
    import zipfile

    for blob in [*ckpt.glob("*.pt"), *ckpt.glob("*.pth")]:  # torch.save files are zip archives
        try:
            with zipfile.ZipFile(blob) as zf:
                zf.infolist()
        except (OSError, zipfile.BadZipFile):
            return f"{blob.name} is truncated or not a torch file"
    return None


def read_run_record(out: Path) -> dict:
    """The run record of a run to resume (every rank reads it; only the main process prepares the folder)."""
    import json

    record = out / RUN_FILE
    if not record.exists():
        raise UserError(f"{out}: no run to resume (no {RUN_FILE})")
    try:
        return json.loads(read_text(record))
    except ValueError:
        raise UserError(f"{record}: corrupt run record (not JSON)") from None


def last_checkpoint(folder: Path) -> Path | None:
    """Newest usable checkpoint. Staging folders are ignored; a checkpoint whose trainer state does not parse or
    whose weights are cut short is skipped for the previous one. Checkpoints that are all unusable are a
    UserError (starting over silently would drop the logged steps)."""
    candidates = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    bad = []
    for ckpt in sorted(candidates, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        problem = _checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if problem != "no trainer_state.json":  # half-written by a killed save: not a checkpoint at all
            bad.append(f"{ckpt.name}: {problem}")
    if bad:
        raise UserError(f"{folder}: no usable checkpoint to resume from ({'; '.join(bad)}); use --force to start over")
    return None


def train_dataset(prompt_set, family, tokenizer, cfg):
    from datasets import Dataset

    rows = []
    for p in prompt_set.split("train"):
        conversation = chat.messages(family, p.prompt, cfg.system_prompt or None)
        n_tokens = len(tokenizer.encode(chat.render(tokenizer, family, conversation), add_special_tokens=False))
        if n_tokens <= cfg.max_prompt_tokens:
            rows.append({"prompt": conversation, "prompt_id": p.id, "category": p.category})
    if len(rows) < cfg.prompts_per_step:
        raise UserError(f"{prompt_set.source}: only {len(rows)} train prompts fit max_prompt_tokens")
    return Dataset.from_list(rows)


def _trainer_class():
    from transformers.trainer_utils import rotate_checkpoints
    from trl import GRPOTrainer

    class AtomicCheckpointGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose checkpoints appear all at once: written in a staging folder, then renamed."""

        _staging: Path | None = None
        resume_hint = "continue with --resume"

        def _get_output_dir(self, trial):
            return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            final_root = Path(self.args.output_dir)
            self._staging = final_root / ".staging"
            if self.args.should_save:
                shutil.rmtree(self._staging, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            try:
                super()._save_checkpoint(model, trial)
            except Exception as exc:  # a full disk mid-checkpoint: the half-written one goes, earlier ones stay
                shutil.rmtree(self._staging, ignore_errors=True)
                raise _checkpoint_not_written(exc, final_root, self.state.global_step, self.resume_hint) from None
            finally:
                staging, self._staging = self._staging, None
            self.accelerator.wait_for_everyone()  # every rank's files (e.g. its RNG state) are in before the move
            if self.args.should_save:
                for ckpt in staging.glob("checkpoint-*"):
                    _tidy_checkpoint(ckpt)
                    target = final_root / ckpt.name
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(ckpt, target)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(output_dir=str(final_root), save_total_limit=self.args.save_total_limit)

        def create_model_card(self, *args, **kwargs):
            """No TRL card ("a fine-tuned version of [None]") in checkpoints/: the run's card is adapter/README.md."""

    return AtomicCheckpointGRPOTrainer


# How a write refused by the machine shows up from the writers a checkpoint uses (open(), torch.save, safetensors).
_WRITE_FAILURES = ("No space left", "StorageFull", "Disk quota", "file write failed", "Read-only file system")


def _checkpoint_not_written(exc: Exception, root: Path, step: int, resume_hint: str) -> Exception:
    """The one-line error for a checkpoint the machine refused to write; any other exception as it was."""
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    elif isinstance(exc, UserError) or any(m in str(exc) for m in _WRITE_FAILURES):
        why = str(exc).strip().splitlines()[-1][:200]
    else:
        return exc
    try:
        kept = last_checkpoint(root)
    except UserError:
        kept = None
    previous = f"the checkpoint of step {kept.name.split('-')[1]} is kept" if kept else "no earlier checkpoint"
    fix = (
        "free some space"
        if any(m in why for m in ("space", "Quota", "quota", "StorageFull", "write failed"))
        else "fix that"
    )
    return UserError(
        f"{root}: cannot write the checkpoint of step {step} ({why}); {previous}; {fix}, then {resume_hint}"
    )


def _tidy_checkpoint(ckpt: Path) -> None:
    """PEFT's template card (base_model: a local folder, "[More Information Needed]") goes; files get the umask."""
    (ckpt / "README.md").unlink(missing_ok=True)
    share_like_umask(ckpt)


def _metrics_callback(path: Path):
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Every log line of the trainer, with its step, appended to metrics.jsonl."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                append_jsonl(path, [{"step": state.global_step, "time": time.time(), **logs}])

    return JsonlMetrics()


# Where each tracker's package comes from (tensorboard: either writer transformers accepts).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",)}


def check_tracker(report_to: str) -> None:
    """Fail before any model loads when the chosen tracker is not installed (transformers would fail later)."""
    import importlib.util

    packages = TRACKER_PACKAGES.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise UserError(f"report_to {report_to!r} needs its package: pip install {packages[0]}")


def _tensorboard_into(trainer, folder: Path) -> None:
    """Event files in <run>/tensorboard rather than transformers' checkpoints/runs/<date>_<host> (unless
    TENSORBOARD_LOGGING_DIR says otherwise): `tensorboard --logdir runs/` then finds every run by its name."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(folder)


class SampleLog:
    """Reward hook: write the first `n` completions of each step with their scores to samples.jsonl."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = path, n

    def __call__(self, users, answers, scores, rewards, step):
        rows = [
            {
                "step": (step or 0) + 1,
                "prompt": users[i],
                "completion": answers[i],
                "reward": rewards[i],
                **{k: round(v[i], 4) for k, v in scores.items()},
            }
            for i in range(min(self.n, len(answers)))
        ]
        append_jsonl(self.path, rows)


def model_card(meta: dict) -> str:
    cfg = meta["config"]
    hub = models.hub_id(meta["model"])
    # The Hub reads `base_model:` as a model id; a local folder there would be an invalid card, so it is left out.
    base_line = f"base_model: {hub}\npipeline_tag: text-generation\n" if hub else ""
    return f"""---
library_name: peft
{base_line}tags: [hmx-feel, grpo, lora, trl]
---
# hmx-feel adapter: {meta["direction"]}

LoRA adapter trained with hmx-feel (rubric-based self-rewarded GRPO).

- base model: `{meta["base_model"]}` (these weights: `{meta.get("base_model_source", meta["base_model_path"])}`)
- direction: **{meta["direction"]}** ({"rewarded for expressing" if meta["direction"] == "human" else "rewarded for not expressing"} feelings, intentions and self-awareness)
- rubric: `{meta["rubric"]["name"]}` v{meta["rubric"]["version"]}, sha256 `{meta["rubric"]["sha256"]}`
- prompt set: `{meta["prompts"]["source"]}`, sha256 `{meta["prompts"]["sha256"]}`, {meta["prompts"]["n_train"]} train prompts
- judge: {cfg["judge_mode"]} / {cfg["judge_identity"]}; steps {meta["steps_done"]}; seed {cfg["seed"]}
- judge spec (what `hmx eval` uses by default for this adapter): `{json.dumps(meta.get("judge", {}), sort_keys=True)}`
- chat template kwargs: `{meta["chat_template_kwargs"]}`
- versions: {", ".join(f"{k} {v}" for k, v in meta["versions"].items())}

Load it with `PeftModel.from_pretrained(base, this_folder)` (or `AutoPeftModelForCausalLM.from_pretrained(this_folder)`, which fetches the base model named in adapter_config.json). The full configuration is in `hmx_adapter.json`.
"""


def train(
    model_spec: str,
    direction: str,
    out: Path,
    cfg: config_mod.TrainConfig,
    rubric_path: str | None = None,
    prompts_path: str | None = None,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    resume_hint: str = "continue with --resume",
    load=None,
    grpo_overrides: dict | None = None,
) -> Path:
    """Train one adapter; returns the adapter folder. The main process holds the run folder's lock throughout,
    so a second process on the same folder is refused before it writes anything. `resume_hint` is the last
    part of the message when a signal or a monitor stops the run (`hmx run` resumes by rerunning).

    `load` replaces `models.load` (same signature) and `grpo_overrides` is merged over the GRPOConfig arguments:
    both for measurements that bring their own model or settings (bench/gpu_fit.py); None = the defaults."""
    device = _preflight(direction, cfg, device)
    out = Path(out)
    # Under `accelerate launch` every rank runs this function; only the main process writes run files.
    from accelerate import PartialState

    # cpu=True makes a CPU-only multi-process launch (gloo) initialise as multi-process, not as two single ranks.
    dist = PartialState(cpu=device == "cpu")
    run = _Run(model_spec, direction, out, device, dist, resume_hint, load or models.load, grpo_overrides or {})
    if not dist.is_main_process:
        return _train(run, cfg, rubric_path, prompts_path, resume, force, None)
    with folder_lock(out) as lock:
        return _train(run, cfg, rubric_path, prompts_path, resume, force, lock)


@dataclasses.dataclass
class _Run:
    """What every step of one training call shares."""

    model_spec: str
    direction: str
    out: Path
    device: str
    dist: object  # accelerate's PartialState
    resume_hint: str
    load: object  # models.load or a stand-in with its signature
    grpo_overrides: dict

    @property
    def main(self) -> bool:
        return self.dist.is_main_process

    def write_record(self, record: dict) -> None:
        if self.main:
            atomic_write_json(self.out / RUN_FILE, record)


def _preflight(direction: str, cfg: config_mod.TrainConfig, device: str | None) -> str:
    """Everything that can be refused before a model loads; returns the checked device."""
    check_direction(direction)
    device = models.check_device(device or models.default_device())
    if cfg.use_vllm:
        import importlib.util

        if device == "cpu":
            raise UserError("use_vllm needs a GPU (vLLM rollouts are not supported on CPU)")
        if importlib.util.find_spec("vllm") is None:
            raise UserError("use_vllm needs vLLM: pip install 'hmx-feel[vllm]'")
    check_tracker(cfg.report_to)
    return device


def _train(run: _Run, cfg, rubric_path, prompts_path, resume: bool, force: bool, lock) -> Path:
    import torch

    with run.dist.main_process_first():
        previous = (
            prepare_out_dir(run.out, resume, force, lock) if run.main else read_run_record(run.out) if resume else None
        )
    if previous is not None:  # a resumed run keeps its own settings
        cfg, rubric_path, prompts_path = _reconcile_resume(run, previous)
    rubric = rubric_mod.load(rubric_path)
    prompt_set = prompts_mod.load(prompts_path)
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    torch.manual_seed(cfg.seed)
    loaded = run.load(run.model_spec, device=run.device, dtype=dtype, for_training=True)
    dataset = train_dataset(prompt_set, loaded.family, loaded.tokenizer, cfg)
    record = _run_record(run, cfg, loaded, rubric, prompt_set, len(dataset), previous)
    # The judge is built before the run record is written: a rubric whose score tokens do not fit this tokenizer
    # must fail without leaving a "running" run behind.
    judge = _build_judge(cfg, loaded, rubric)
    record["judge"] = judge_spec(judge)
    run.write_record(record)
    bf16 = (dtype or models.default_dtype(run.device)) == torch.bfloat16
    trainer, monitor, safety = _build_trainer(run, cfg, loaded, judge, rubric, dataset, bf16)
    checkpoint = _resume_point(run, resume)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except NonFiniteError as exc:
        raise _stopped_by_non_finite(exc, run.out, record, trainer.state.global_step, run.main) from None
    return _finish(run, cfg, trainer, record, monitor, safety)


def _reconcile_resume(run: _Run, previous: dict) -> tuple[config_mod.TrainConfig, str, str]:
    """The saved config, rubric and prompts of the run being resumed, after checking it is the same run and has
    steps left to train."""
    out = run.out
    if previous["model"] != run.model_spec or previous["direction"] != run.direction:
        raise UserError(
            f"{out}: holds a {previous['direction']} run of {previous['model']}, "
            f"not {run.direction} of {run.model_spec}"
        )
    if run_is_complete(out, previous):  # resuming would train past the last step and overwrite the adapter
        raise UserError(
            f"{out}: the run is complete ({previous.get('steps_done')}/{previous['config'].get('steps')} "
            f"steps, adapter in {out / 'adapter'}); nothing to do"
        )
    known = {f.name for f in dataclasses.fields(config_mod.TrainConfig)}
    unknown = sorted(set(previous.get("config", {})) - known)
    if unknown:  # written by another hmx-feel version: resuming would silently drop those settings
        raise UserError(f"{out / RUN_FILE}: unknown config fields {unknown} (written by another hmx-feel version)")
    # Checked as a config file is, and named by the record it came from.
    cfg = config_mod.TrainConfig(**config_mod.check_values(previous["config"], str(out / RUN_FILE)))
    return cfg, previous["rubric"]["source"], previous["prompts"]["source"]


def _run_record(run: _Run, cfg, loaded, rubric, prompt_set, n_train: int, previous: dict | None) -> dict:
    return {
        "kind": "train",
        "model": run.model_spec,
        "base_model_path": loaded.path,
        "direction": run.direction,
        "config": dataclasses.asdict(cfg),
        "rubric": {"source": rubric.source, "name": rubric.name, "version": rubric.version, "sha256": rubric.sha256},
        "prompts": {"source": prompt_set.source, "sha256": prompt_set.sha256, "n_train": n_train},
        "chat_template_kwargs": loaded.family.chat_template_kwargs,
        "device": run.device,
        "versions": versions(),
        "status": "running",
        "started": previous["started"] if previous else time.time(),
    }


def _build_judge(cfg, loaded, rubric):
    """The self-judge. It scores through the very model being trained (adapter off for the frozen judge), so
    `_build_trainer` points it at the trainer's PeftModel."""
    return make_judge(
        cfg.judge_mode,
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        rubric,
        format_name=cfg.judge_format or None,
        identity=cfg.judge_identity,
        batch_size=cfg.judge_batch_size,
        max_answer_tokens=cfg.max_answer_tokens,
        frozen_model=models.judge_copy_for(loaded, cfg.judge_dtype, cfg.judge_identity),
    )


def _build_trainer(run: _Run, cfg, loaded, judge, rubric, dataset, bf16: bool):
    """The GRPO trainer with its reward, LoRA config and callbacks; returns (trainer, monitor, safety callback)."""
    from peft import LoraConfig
    from trl import GRPOConfig

    samples = SampleLog(run.out / "samples.jsonl", cfg.samples_per_step) if run.main else None
    reward = RubricReward(judge, rubric, run.direction, scale=cfg.reward_scale, on_scores=samples)
    kwargs = config_mod.grpo_kwargs(cfg, run.out, run.device, bf16, loaded.family.chat_template_kwargs)
    models.quiet_deprecations()
    # The step bar (with its ETA) on a terminal only: in a log file every redraw is a line.
    args = GRPOConfig(**{**kwargs, "disable_tqdm": not sys.stderr.isatty(), **run.grpo_overrides})
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets or loaded.family.lora_targets),
        task_type="CAUSAL_LM",
    )
    monitor = make_callback(stop_on_alert=cfg.stop_on_alert)
    callbacks = [_metrics_callback(run.out / "metrics.jsonl"), monitor]
    safety = None
    if cfg.safety_every > 0:
        safety = safety_callback(
            loaded.tokenizer,
            loaded.family,
            run.out,
            cfg.safety_every,
            cfg.safety_items,
            cfg.safety_max_drop,
            cfg.safety_data_dir or None,
        )
        callbacks.append(safety)
    trainer = _trainer_class()(
        model=loaded.model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=loaded.tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    _tensorboard_into(trainer, run.out / "tensorboard")
    use_step_lines(trainer)  # one readable line per step instead of the raw metrics dict
    trainer.resume_hint = run.resume_hint
    judge.model = trainer.model  # the PeftModel: frozen judge = adapter disabled, policy judge = adapter on
    return trainer, monitor, safety


def _resume_point(run: _Run, resume: bool) -> Path | None:
    """The checkpoint to continue from (None: start at step 0); log lines written after it are dropped, so the
    resumed run does not log those steps twice."""
    checkpoint = last_checkpoint(run.out / "checkpoints") if resume else None
    done_step = int(checkpoint.name.split("-")[1]) if checkpoint else 0
    for log in ("metrics.jsonl", "samples.jsonl") if run.main else ():
        truncate_jsonl(run.out / log, lambda row: row.get("step", 0) <= done_step)
    run.dist.wait_for_everyone()
    return checkpoint


def _finish(run: _Run, cfg, trainer, record: dict, monitor, safety) -> Path:
    """Adapter and a complete run record when every step ran; else an interrupted record and a UserError."""
    steps_done = trainer.state.global_step
    record.update(alerts=monitor.alerts, steps_done=steps_done)
    if steps_done < cfg.steps:  # stopped by a signal or a monitor: a checkpoint was written, no adapter yet
        why = (
            f"signal {monitor.signalled}"
            if monitor.signalled
            else safety.alert
            if safety is not None and safety.alert
            else "a reward-hacking monitor"
        )
        record.update(status="interrupted", stopped_by=why)
        run.write_record(record)
        raise UserError(f"{run.out}: stopped by {why} after step {steps_done} (checkpoint saved); {run.resume_hint}")
    record.update(status="complete", finished=time.time())
    if run.main:
        save_adapter(trainer.model, run.out / "adapter", record)
        run.write_record(record)
    run.dist.wait_for_everyone()
    return run.out / "adapter"


def _stopped_by_non_finite(exc: NonFiniteError, out: Path, record: dict, steps_done: int, main: bool) -> NonFiniteError:
    """The run record after a NaN / inf reward, and the one-line error. TRL computes rewards inside a step,
    before its optimizer update: the exception ends that step with nothing of it applied or saved, so the newest
    checkpoint on disk (if any) is the last good state, untouched; `--resume` would continue from it."""
    try:
        kept = last_checkpoint(out / "checkpoints")
    except UserError:
        kept = None
    where = f"checkpoint of step {kept.name.split('-')[1]} kept" if kept else "no checkpoint yet"
    record.update(
        status="failed", steps_done=steps_done, stopped_by=f"non-finite number at step {steps_done + 1}: {exc}"
    )
    if main:
        atomic_write_json(out / RUN_FILE, record)
    return NonFiniteError(f"{out}: step {steps_done + 1}: {exc}; training stopped ({where})")


def save_adapter(model, target: Path, meta: dict) -> Path:
    """Adapter + model card + metadata written to a staging folder and renamed into place.

    The adapter names its base model by Hub id (PEFT writes the local folder it was loaded from, useless on
    another machine), so `PeftModel.from_pretrained` / `AutoPeftModelForCausalLM` work anywhere; where the weights
    actually came from stays in hmx_adapter.json (`base_model_source`, `base_model_path`)."""
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    hub = models.hub_id(meta["model"])
    source = models.EMBEDDED_NAME if meta["model"] == models.EMBEDDED else meta["base_model_path"]
    meta = {**meta, "base_model": hub or meta["model"], "base_model_source": source}
    if hub:
        _set_adapter_base(staging / "adapter_config.json", hub)
    atomic_write_text(staging / "README.md", model_card(meta))
    atomic_write_json(staging / "hmx_adapter.json", meta)
    if target.exists():
        shutil.rmtree(target)
    share_like_umask(staging)
    os.replace(staging, target)
    return target


def _set_adapter_base(config_file: Path, hub: str) -> None:
    config = json.loads(read_text(config_file))
    config["base_model_name_or_path"] = hub
    atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")

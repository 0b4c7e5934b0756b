"""Training configuration: one dataclass, every field documented, CPU and GPU defaults, strict YAML loading."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import check_keys, read_yaml

# TRL 1.16's GRPOConfig.loss_type values (trl is pinned in pyproject.toml): a typo fails when the config is read,
# not after the model has loaded. tests/test_prompts_config.py checks the list against the installed TRL.
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")

# Experiment trackers TRL / transformers can report to that work without an account or a server.
REPORT_TO = ("none", "tensorboard", "trackio", "wandb")


# Choices of the fields that name a mode (one tuple each, shared with the code that acts on them).
JUDGE_MODES = ("logit", "generative")
JUDGE_IDENTITIES = ("frozen", "policy")
JUDGE_DTYPES = ("auto", "same", "float32", "bfloat16")
DTYPES = ("auto", "float32", "bfloat16")


def _f(default, help: str, choices: tuple = (), low=None, high=None, low_open: bool = False):
    """A documented field, as TRL's GRPOConfig writes them (`metadata["help"]`), plus what a valid value is:
    one of `choices`, or a number in [low, high] (`low_open`: low itself excluded). `TrainConfig.__post_init__`
    checks every field against this, wherever the config came from."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything `hmx train` depends on. Defaults are for CPU; `for_device('cuda')` applies the GPU defaults."""

    # --- GRPO -------------------------------------------------------------------------------------------------
    steps: int = _f(30, "Optimizer steps (each samples `prompts_per_step` prompts x `num_generations` answers).", low=1)
    prompts_per_step: int = _f(2, "Distinct prompts per step (per process).", low=1)
    num_generations: int = _f(
        4, "GRPO group size: answers sampled per prompt; advantages are relative within it (so at least 2).", low=2
    )
    learning_rate: float = _f(
        3e-4,
        "AdamW learning rate. LoRA needs ~10-100x the full fine-tuning rate; TRL's 1e-6 is for full weights.",
        low=0,
        low_open=True,
    )
    beta: float = _f(
        0.05,
        "KL coefficient to the base model (TRL's default is 0). Without it SmolLM2-135M's human-like run drifted "
        "into short word salad that its weak self-judge still liked; the reference pass is the adapter-off model.",
        low=0,
    )
    loss_type: str = _f(
        "dapo", "TRL loss aggregation: grpo, dr_grpo, dapo (token-level, TRL default), bnpo, ...", choices=LOSS_TYPES
    )
    scale_rewards: str = _f(
        "group", "Advantage scaling: 'group' (divide by group std), 'batch', or 'none'.", ("group", "batch", "none")
    )
    reward_scale: float = _f(1.0, "Multiplier on the rubric reward before GRPO normalisation.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts.", low=0, low_open=True)
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts.", low=0, high=1, low_open=True)
    max_prompt_tokens: int = _f(
        128, "Prompts longer than this (after the chat template) are dropped from training.", low=1
    )
    max_completion_tokens: int = _f(48, "Maximum answer length during training.", low=1)
    system_prompt: str = _f("", "Optional system prompt for rollouts (folded into the user turn for Gemma 2).")
    seed: int = _f(0, "Seed for sampling, LoRA init and data order.")
    # --- LoRA -------------------------------------------------------------------------------------------------
    lora_r: int = _f(16, "LoRA rank (adapter size and capacity).", low=1)
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r).", low=1)
    lora_dropout: float = _f(
        0.0, "LoRA dropout (0 keeps rollouts and training forward passes consistent).", low=0, high=1
    )
    lora_targets: list = _f([], "Module names to adapt; empty = the family default (attention projections).")
    # --- Judge ------------------------------------------------------------------------------------------------
    judge_mode: str = _f(
        "logit",
        "'logit': the format's own one-pass read-out (expected score token; for likelihood and readout formats, "
        "their likelihood ratio or hidden-state readout); 'generative': sample a reply and parse its score token.",
        JUDGE_MODES,
    )
    judge_identity: str = _f(
        "frozen", "'frozen' (adapter disabled: the base model judges) or 'policy' (adapter on).", JUDGE_IDENTITIES
    )
    judge_format: str = _f(
        "",
        "Rubric score format; empty = the rubric's judge_format. 'readout': the judge's hidden states read out by a "
        "fit to blind ratings; 'demonstrations': the paper's prompt-only self-judge; 'yes_no': a yes/no question "
        "(the generative judge's format).",
    )
    judge_batch_size: int = _f(8, "Judge prompts per forward pass.", low=1)
    max_answer_tokens: int = _f(256, "Answers are cut to this many tokens before judging.", low=1)
    judge_dtype: str = _f(
        "auto",
        "Precision of the frozen judge: 'auto' (a bf16 copy of the base model on CPUs with native bf16, ~1.8x "
        "faster; else the policy with its adapter off), 'same', 'float32' or 'bfloat16'.",
        JUDGE_DTYPES,
    )
    # --- Rollouts on vLLM (GPU, `pip install 'hmx-feel[vllm]'`): TRL's own vLLM integration -------------------
    use_vllm: bool = _f(False, "Generate rollouts with vLLM through TRL (GPU only; much faster than HF generate).")
    vllm_mode: str = _f(
        "colocate",
        "'colocate' (vLLM inside the training process) or 'server' (`trl vllm-serve`).",
        ("colocate", "server"),
    )
    vllm_server_base_url: str = _f("", "Server mode: base URL of the `trl vllm-serve` server (empty = TRL default).")
    vllm_gpu_memory_utilization: float = _f(
        0.3, "Colocate mode: share of GPU memory vLLM may take.", low=0, high=1, low_open=True
    )
    # --- Run --------------------------------------------------------------------------------------------------
    save_every: int = _f(
        10, "Write a checkpoint every N steps (atomically); `--resume` continues from the last.", low=1
    )
    keep_checkpoints: int = _f(2, "How many checkpoints to keep on disk.", low=1)
    samples_per_step: int = _f(4, "Completions per step written to samples.jsonl with their scores.", low=0)
    safety_every: int = _f(
        0, "Every N steps score a fixed slice of TruthfulQA MC1 and BBQ (0 = off); needs data.", low=0
    )
    safety_items: int = _f(20, "Items per benchmark in the safety slice.", low=1)
    safety_max_drop: float = _f(
        0.0, "Stop when a safety-slice accuracy falls more than this below step 0 (0 = log only).", low=0
    )
    safety_data_dir: str = _f("", "Benchmark copies for the safety slice (empty = HMX_DATA_DIR, else the Hub).")
    report_to: str = _f(
        "none",
        "Also send the training metrics (TRL's, the rubric's per-criterion scores, the monitors) to 'tensorboard' "
        "(event files in <run>/tensorboard), 'trackio' (local) or 'wandb' (WANDB_MODE=offline works); 'none' = "
        "metrics.jsonl only. The tracker's package must be installed.",
        REPORT_TO,
    )
    stop_on_alert: bool = _f(False, "Stop (after a checkpoint) when a reward-hacking monitor crosses its threshold.")
    gradient_checkpointing: bool = _f(
        False, "Trade compute for memory (off on CPU: it only slows small models; on by default on GPU)."
    )
    dtype: str = _f("auto", "'auto' (fp32 on CPU, bf16 on GPU), 'float32' or 'bfloat16'.", DTYPES)

    @classmethod
    def for_device(cls, device: str, **overrides) -> "TrainConfig":
        """Defaults for `device`; GPU runs are longer, with bigger groups and answers."""
        cfg = cls()
        if device != "cpu":
            cfg = dataclasses.replace(
                cfg,
                steps=300,
                prompts_per_step=4,
                num_generations=8,
                max_completion_tokens=256,
                judge_batch_size=32,
                # Measured (bench/gpu_fit.py, H100): without it only Qwen3-0.6B fits 24 GiB; with it all five seed
                # models fit, and the step is no slower because generation dominates.
                gradient_checkpointing=True,
            )
        return dataclasses.replace(cfg, **overrides)

    def __post_init__(self):
        self.validate()

    def validate(self, where: str = "config") -> "TrainConfig":
        """Every field against its choices / range (`_f`); the first problem is a UserError naming `where`."""
        for f in dataclasses.fields(self):
            problem = field_problem(f.name, getattr(self, f.name))
            if problem:
                raise UserError(f"{where}: {problem}")
        return self


def field_problem(name: str, value) -> str | None:
    """What is wrong with `value` for the TrainConfig field `name` (None: nothing). Types are checked when YAML
    is read (`coerce_values`); this checks what a well-typed value may be."""
    meta = _FIELDS[name].metadata
    if meta["choices"] and value not in meta["choices"]:
        return f"{name} must be one of {meta['choices']}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    low, high = meta["low"], meta["high"]
    if low is not None and isinstance(value, (int, float)) and (value <= low if meta["low_open"] else value < low):
        return f"{name} must be {'>' if meta['low_open'] else '>='} {low}, got {value!r}"
    if high is not None and isinstance(value, (int, float)) and value > high:
        return f"{name} must be <= {high}, got {value!r}"
    return None


def check_values(values: dict, where: str) -> dict:
    """`values` (field -> value), each checked as `__post_init__` checks it but named by `where` (a file, an
    experiment block, a run record), for callers that know better than "config" where a value came from."""
    for name, value in values.items():
        problem = field_problem(name, value)
        if problem:
            raise UserError(f"{where}: {problem}")
    return values


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def grpo_kwargs(cfg: TrainConfig, out: Path, device: str, bf16: bool, chat_template_kwargs: dict | None) -> dict:
    """TRL GRPOConfig arguments for `cfg` and a run folder `out`. Pure (no torch or TRL import), so the mapping
    has a test of its own; `bf16` is decided by the caller from the dtype the model is loaded in."""
    on_cpu = device == "cpu"
    return {
        "output_dir": str(Path(out) / "checkpoints"),
        "max_steps": cfg.steps,
        "per_device_train_batch_size": cfg.prompts_per_step * cfg.num_generations,
        "num_generations": cfg.num_generations,
        "learning_rate": cfg.learning_rate,
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "scale_rewards": cfg.scale_rewards,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_completion_length": cfg.max_completion_tokens,
        "chat_template_kwargs": chat_template_kwargs or None,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": 1,  # metrics.jsonl and the monitors read every step
        "save_strategy": "steps",
        "save_steps": cfg.save_every,
        "save_total_limit": cfg.keep_checkpoints,
        "activation_checkpointing": cfg.gradient_checkpointing,  # transformers 5's name (the old one warns)
        "bf16": bf16 and not on_cpu,
        "use_cpu": on_cpu,
        "report_to": cfg.report_to,
        "run_name": Path(out).name,  # the run's name in trackio / wandb
        "project": "hmx-feel",  # trackio's project
        "disable_tqdm": False,  # the caller turns the bar off where stderr is not a terminal
        "use_vllm": cfg.use_vllm,
        "vllm_mode": cfg.vllm_mode,
        "vllm_server_base_url": cfg.vllm_server_base_url or None,
        "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
    }


# YAML 1.1 reads `3e-4` (no dot) as text; for a float field it is the number the user meant.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(name: str, value, annotation, where: str):
    """Check a YAML value against the field's type (ints, and exponent numbers YAML left as text, are accepted
    for floats)."""
    kind = {"int": int, "float": float, "str": str, "bool": bool, "list": list}[str(annotation)]
    if kind is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{where}: '{name}' must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def coerce_values(data: dict, where: str) -> dict:
    """TrainConfig fields from a YAML mapping (a config file, an experiment's `train:` block), each checked
    against its type; unknown keys are refused with a did-you-mean."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    check_keys(data, fields, where)
    hints = typing.get_type_hints(TrainConfig)
    return check_values({k: _coerce(k, v, hints[k].__name__, where) for k, v in data.items()}, where)


def load(path: str | Path | None, device: str = "cpu", **overrides) -> TrainConfig:
    """Device defaults, then the YAML file's values (strictly checked), then explicit overrides (CLI flags)."""
    where = str(path or "config")
    values = coerce_values(read_yaml(path), where) if path is not None else {}
    return TrainConfig.for_device(device, **{**values, **check_values(overrides, where)})


def help_table() -> list[tuple[str, str, str]]:
    """(name, default, help) for the docs and `hmx train --show-config`."""
    cfg = TrainConfig()
    rows = [(f.name, repr(getattr(cfg, f.name)), f.metadata["help"]) for f in dataclasses.fields(TrainConfig)]
    return [(n, d, h + _packaged_formats() if n == "judge_format" else h) for n, d, h in rows]


def _packaged_formats() -> str:
    """The packaged rubric's formats as it actually defines them, so `hmx config` cannot drift from the rubric."""
    from hmxfeel import rubric as rubric_mod

    r = rubric_mod.load()
    names = [f"{n} (default)" if n == r.judge_format else n for n in r.formats]
    return f" Packaged rubric: {', '.join(names)}."

"""One run: a random full-size twin of a seed model, one GRPO step through `hmxfeel.train.train`, its peaks.

Runs in its own process (`gpu_fit.py --worker`), so every run starts from an empty allocator. The model is handed
to the trainer through `train(load=...)` (no 16 GB checkpoint written to disk), and `train(grpo_overrides=...)`
sets `min_new_tokens = max_completion_tokens`, so every completion is full length (the memory worst case).
"""

from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path

from gpufit.estimate import GiB
from gpufit.seeds import twin_config


def build_model(cfg, family, device: str, dtype):
    """What `build_twin` + `models.load(..., for_training=True)` give, built directly on the device."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": family.train_attn} if family.train_attn else {}
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, **kwargs)
    model.generation_config.pad_token_id = cfg.pad_token_id
    return model


def quantize_nf4(model) -> int:
    """Swap every decoder nn.Linear (not lm_head) for a bitsandbytes NF4 Linear4bit, QLoRA style (double quant,
    bf16 compute), and flag the model the way transformers' bnb quantizer does, so PEFT wraps the layers with its
    bnb LoRA and TRL treats it as a QLoRA model. Returns the number of layers swapped."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or name == "lm_head":
                continue
            q = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=torch.bfloat16,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.uint8,
                device="meta",
            )
            w = bnb.nn.Params4bit(
                child.weight.data.to(torch.bfloat16),
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.uint8,
                module=q,
            )
            q.weight = w.to(child.weight.device)  # quantised on the move
            if child.bias is not None:
                q.bias = child.bias
            setattr(parent, name, q)
            swapped += 1
            del child
    model.is_loaded_in_4bit = True
    return swapped


class Peaks:
    """Peak allocated memory per phase (reset at each phase boundary) and overall."""

    def __init__(self, cuda: bool):
        self.cuda, self.overall, self.phases, self.reserved = cuda, 0, {}, 0
        self.failed_in: str | None = None  # innermost wrapped phase an exception (e.g. OOM) came out of

    def _read(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated() if self.cuda else 0

    def mark(self, name: str | None = None):
        """Close the running interval: attribute its peak to `name` (if given), then start a new one."""
        if not self.cuda:
            return
        import torch

        torch.cuda.synchronize()
        p = self._read()
        self.overall = max(self.overall, p)
        self.reserved = max(self.reserved, torch.cuda.max_memory_reserved())
        if name:
            self.phases[name] = max(self.phases.get(name, 0), p)
        torch.cuda.reset_peak_memory_stats()

    def final(self) -> int:
        if self.cuda:
            import torch

            self.overall = max(self.overall, self._read())
            self.reserved = max(self.reserved, torch.cuda.max_memory_reserved())
        return self.overall


def _wrap(cls, meth: str, peaks: Peaks, timings: dict, key: str, after=None):
    import torch

    orig = getattr(cls, meth)

    def wrapped(self, *a, **k):
        peaks.mark()
        t0 = time.perf_counter()
        try:
            out = orig(self, *a, **k)
        except BaseException:
            peaks.failed_in = peaks.failed_in or key
            raise
        if peaks.cuda:
            torch.cuda.synchronize()
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        peaks.mark(key)
        if after:
            after(out)
        return out

    setattr(cls, meth, wrapped)


def worker(a) -> dict:
    """Build, train one step and measure; every failure (OOM under the cap included) is a result, not a crash."""
    import torch

    cuda = not a.dry_run
    res = {"model": a.model, "cap_gib": a.cap_gib, "quant": a.quant, "gc": a.gc, "status": "error", "label": a.label}
    t_start = time.perf_counter()
    peaks, timings, counts = Peaks(cuda), {}, {}
    try:
        model, tok, family, folder = _build(a, res, cuda)
        res["build_s"] = time.perf_counter() - t_start
        _train_step(a, res, peaks, timings, counts, (model, tok, family, folder), cuda)
        res["status"] = "ok"
    except torch.OutOfMemoryError as exc:  # under the cap: the run does not fit
        res["status"] = "oom"
        res["error"] = str(exc).split("\n")[0][:400]
    except Exception as exc:  # noqa: BLE001 - report, don't crash the plan
        res["status"] = "error"
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        res["traceback"] = traceback.format_exc()[-3000:]
    _summarise(res, peaks, timings, counts, cuda)
    res["wall_s"] = time.perf_counter() - t_start
    return res


def _build(a, res: dict, cuda: bool):
    """The twin on the device (NF4 base weights when asked) under the memory cap; returns (model, tokenizer,
    family, seed folder)."""
    import torch
    import transformers
    import trl

    from hmxfeel import models

    total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
    if cuda:
        res["device"] = torch.cuda.get_device_name(0)
    res["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    if cuda and a.quant == "bf16" and a.cap_gib > 0:
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.cap_gib * GiB / total))
    folder = Path(a.seed_dir) / a.model
    cfg, tok = twin_config(folder, "tiny" if a.dry_run else "full")
    family = models.family_of(cfg)
    model = build_model(cfg, family, "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32)
    res["params"] = sum(p.numel() for p in model.parameters())
    if a.quant == "nf4":
        import bitsandbytes

        res["versions"]["bitsandbytes"] = bitsandbytes.__version__
        res["nf4_layers"] = quantize_nf4(model)
        if cuda:
            torch.cuda.empty_cache()
            if a.cap_gib > 0:
                torch.cuda.set_per_process_memory_fraction(min(1.0, a.cap_gib * GiB / total))
    if cuda:
        res["weights_gib"] = torch.cuda.memory_allocated() / GiB
    return model, tok, family, folder


def train_config(a, device: str):
    """The GPU defaults for one step (tiny answers and the in-memory judge on a dry run)."""
    from hmxfeel import config as config_mod

    overrides = {"steps": 1, "gradient_checkpointing": a.gc}
    if a.dry_run:
        # judge_dtype "same": a separate bf16 judge copy would be loaded from disk; the twin lives only in memory.
        overrides.update(max_completion_tokens=8, judge_dtype="same")
    return config_mod.TrainConfig.for_device(device, **overrides)


def _train_step(a, res: dict, peaks: Peaks, timings: dict, counts: dict, built, cuda: bool) -> None:
    """One step of the project's own trainer on the built model, each phase timed and its peak recorded."""
    import torch
    import trl

    from hmxfeel import models
    from hmxfeel import train as train_mod

    model, tok, family, folder = built
    device = "cuda" if cuda else "cpu"
    tcfg = train_config(a, device)
    res["config"] = {
        k: getattr(tcfg, k)
        for k in (
            "prompts_per_step",
            "num_generations",
            "max_completion_tokens",
            "judge_batch_size",
            "lora_r",
            "gradient_checkpointing",
            "dtype",
        )
    }

    def load(spec, device=None, dtype=None, for_training=False):  # train()'s loader: this model, not the disk
        return models.Loaded(model=model, tokenizer=tok, family=family, source=spec, path=str(folder))

    # Every completion full length: the memory worst case.
    overrides = {"generation_kwargs": {"min_new_tokens": tcfg.max_completion_tokens}} if a.force_length else {}
    _instrument(trl.GRPOTrainer, peaks, timings, counts)
    out = Path(a.run_dir)
    shutil.rmtree(out, ignore_errors=True)
    if cuda:  # the step's peak only: the bf16 build before NF4 quantisation must not count
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    peaks.mark()
    t0 = time.perf_counter()
    train_mod.train(str(folder), "human", out, tcfg, device=device, load=load, grpo_overrides=overrides)
    res["train_call_s"] = time.perf_counter() - t0
    _read_metrics(out / "metrics.jsonl", res)
    lora_mod = next((m for m in model.modules() if hasattr(m, "lora_A")), None)  # which PEFT layer wrapped it
    res["lora_layer"] = f"{type(lora_mod).__module__}.{type(lora_mod).__name__}" if lora_mod else None


def _instrument(trainer_cls, peaks: Peaks, timings: dict, counts: dict) -> None:
    """Time and measure the trainer's phases (generation, judge, forward, the rest of the step: backward)."""

    def count_tokens(out):
        ids = out[0] if isinstance(out, tuple) else out
        counts["gen_tokens"] = counts.get("gen_tokens", 0) + sum(len(c) for c in ids)
        counts["gen_seqs"] = counts.get("gen_seqs", 0) + len(ids)

    _wrap(trainer_cls, "_generate_single_turn", peaks, timings, "generate", after=count_tokens)
    _wrap(trainer_cls, "_calculate_rewards", peaks, timings, "judge")
    _wrap(trainer_cls, "compute_loss", peaks, timings, "train_forward")
    _wrap(trainer_cls, "training_step", peaks, timings, "training_step")  # its tail interval: backward


def _read_metrics(path: Path, res: dict) -> None:
    from hmxfeel.io import read_jsonl

    step = next((m for m in read_jsonl(path) if "step_time" in m), {})
    res["step_time_s"] = step.get("step_time")
    res["mean_completion_len"] = step.get("completions/mean_length")
    res["reward"] = step.get("reward")


def _summarise(res: dict, peaks: Peaks, timings: dict, counts: dict, cuda: bool) -> None:
    """Peaks (GiB, per phase; the trainer's tail interval is backward), timings and generation speed."""
    res["peak_gib"] = peaks.final() / GiB if cuda else None
    res["phase_peak_gib"] = {k: v / GiB for k, v in peaks.phases.items()}
    res["failed_in"] = {"training_step": "backward"}.get(peaks.failed_in, peaks.failed_in)
    if "training_step" in res["phase_peak_gib"]:
        res["phase_peak_gib"]["backward"] = res["phase_peak_gib"].pop("training_step")
    if cuda:
        res["peak_reserved_gib"] = peaks.reserved / GiB  # what the cap limits (allocator cache included)
    res["timings_s"] = timings
    res.update(counts)
    gen_s = timings.get("generate")
    if gen_s and res.get("gen_tokens"):
        res["gen_tok_s"] = res["gen_tokens"] / gen_s

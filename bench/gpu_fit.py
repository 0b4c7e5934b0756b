"""GPU fit of the seed models: one GRPO + LoRA step (generation, logit self-judge, backward) per model under a
memory cap, on full-size random twins.

    python bench/gpu_fit.py                      # analytic estimate always; the GPU runs when CUDA is present
    python bench/gpu_fit.py --dry-run            # the same code path on CPU with tiny twins (no figures)
    python bench/gpu_fit.py --prepare-carry .gpufit_models   # copy the seed files a device run needs

What one run does (a subprocess per run, so every run starts from an empty allocator):
  * builds a random full-size twin of the seed model straight on the GPU (`hmxfeel.twins.twin_config` with the
    real config; bf16, or NF4 base weights via bitsandbytes for the "4-bit where needed" 16 GiB variant),
  * caps the process with `torch.cuda.set_per_process_memory_fraction(cap / total)`,
  * calls the project's own `hmxfeel.train.train(..., TrainConfig.for_device("cuda", steps=1), device="cuda")`,
    with `hmxfeel.models.load` short-circuited to hand over that model (no 16 GB checkpoint written to disk), and
    with `min_new_tokens = max_completion_tokens` so every completion is full length (the worst case),
  * reports peak `torch.cuda.max_memory_allocated` (overall and per phase), TRL's step time, generation tokens/s.

Plan: (A) bf16 with the GPU defaults under `--cap-gib` (24) for every model; (B) the `--small-cap-gib` (16) variant:
inferred from A when A's peak is under it, else run with gradient checkpointing and NF4 base weights where the bf16
weights don't leave room; (C) bf16 + gradient checkpointing under the big cap for models A failed and B did not
answer. A global `--budget-s` deadline stops launching runs; the table is rewritten after every run.
`--runs MODEL:CAP:QUANT[:gc],...` runs chosen configurations instead of the plan. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the device machine runs the checkout without installing it
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GiB = 2**30
MODELS = ("qwen3-0.6b", "qwen3-4b", "qwen3-8b", "gemma-2-2b-it", "llama-3.2-3b-instruct")
CARRY_DEFAULT = ROOT / ".gpufit_models"
# Measured once on the default prompt set / rubric (Qwen3 tokenizer): train prompts are 16-32 tokens after the chat
# template; a judge prompt is a ~290-token rubric prefix (cached once per criterion) + a ~320-token suffix when the
# answer is at its 256-token cap.
PROMPT_TOKENS = 32
JUDGE_PREFIX, JUDGE_SUFFIX = 290, 320
NF4_BYTES = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit codes + double-quantised absmax (QLoRA), per weight
CUDA_OVERHEAD_GIB = 0.5  # cuBLAS workspaces, allocator rounding: not weights, not activations


# --------------------------------------------------------------------------------------------- seed files / twins
def seed_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if CARRY_DEFAULT.is_dir():
        return CARRY_DEFAULT
    from hmxfeel.twins import shared_models_dir

    shared = shared_models_dir()
    return shared  # None: no seed files here (a user's clone without ../shared)


def _digest(folder: Path, names) -> str:
    h = hashlib.sha256()
    for n in names:
        p = folder / n
        h.update(n.encode() + (p.read_bytes() if p.exists() else b"-"))
    return h.hexdigest()


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def prepare_carry(dest: Path, src: Path, names) -> None:
    """Copy what a device run needs (configs + tokenizers, no weights) into a folder that travels with the tree.

    Qwen3 sizes share one tokenizer (stored once, `TOKENIZER_FROM` points at it). Where the seed folder has no
    ready vocabulary (Llama's tiktoken file, Gemma's absent vocab) the twin tokenizer is built here with
    `hmxfeel.twins.twin_tokenizer` and saved, so the device needs neither the tiktoken conversion nor the
    embedded model's cache.
    """
    from hmxfeel.twins import twin_tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = {}
    for name in names:
        f, d = src / name, dest / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for n in ("config.json", "generation_config.json"):
            if (f / n).exists():
                shutil.copy2(f / n, d / n)
        if (f / "vocab.json").exists() or (f / "tokenizer.json").exists():
            key = _digest(f, TOKENIZER_FILES)
            if key in stored:
                (d / "TOKENIZER_FROM").write_text(stored[key] + "\n")
            else:
                for n in TOKENIZER_FILES:
                    if (f / n).exists():
                        shutil.copy2(f / n, d / n)
                stored[key] = name
        else:
            twin_tokenizer(f).save_pretrained(d)
        print(f"prepared {d} ({sum(p.stat().st_size for p in d.rglob('*') if p.is_file()) / 2**20:.1f} MiB)")


def load_tokenizer(folder: Path):
    from hmxfeel.twins import twin_tokenizer

    ref = folder / "TOKENIZER_FROM"
    return twin_tokenizer(folder.parent / ref.read_text().strip() if ref.exists() else folder)


def twin_config(folder: Path, size: str):
    """The twin's config exactly as `hmxfeel.twins.build_twin` makes it, plus its tokenizer."""
    from hmxfeel.twins import twin_config as _twin_config

    tok = load_tokenizer(folder)
    return _twin_config(folder, tok, size), tok


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
                child.in_features, child.out_features, bias=child.bias is not None, compute_dtype=torch.bfloat16,
                compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8, device="meta",
            )
            w = bnb.nn.Params4bit(
                child.weight.data.to(torch.bfloat16), requires_grad=False, compress_statistics=True,
                quant_type="nf4", quant_storage=torch.uint8, module=q,
            )
            q.weight = w.to(child.weight.device)  # quantised on the move
            if child.bias is not None:
                q.bias = child.bias
            setattr(parent, name, q)
            swapped += 1
            del child
    model.is_loaded_in_4bit = True
    return swapped


# ------------------------------------------------------------------------------------------------ analytic estimate
def param_counts(cfg, family, lora_r: int, targets) -> dict:
    """Exact counts from a meta-device instance (no memory): total, decoder linears, LoRA."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in m.parameters())
    linears = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and not n.endswith("lm_head")]
    lora = sum(lora_r * (mod.in_features + mod.out_features) for n, mod in linears if n.rsplit(".", 1)[-1] in targets)
    return {"total": total, "linear": sum(mod.weight.numel() for _, mod in linears), "lora": lora}


def estimate(cfg, family, tcfg, counts: dict, quant: str = "bf16", gc: bool | None = None) -> dict:
    """Rough peak of one step, GiB. Phases run one after another, so the peak is weights + LoRA/optimizer +
    the largest of: generation KV cache, judge (KV + one layer's transient activations), training activations.

    Training activations per token and layer (bf16 = 2 bytes, fp32 = 4), frozen base + LoRA on attention, SDPA:
      RMSNorm inputs kept in fp32 (4h each; 2 norms, Gemma 2 has 4), the normed input for LoRA A (2h), q/k/v/out
      of attention after GQA expansion (4 x 2*q_out), o_proj input (2*q_out), Qwen3 q/k norms (4*(q_out+kv_out)),
      MLP: gate, act(gate), up (3 x 2i); eager attention (Gemma 2) also keeps scores, tanh soft-cap and softmax
      (~10 bytes x heads x seq). Frozen linears keep no input. With gradient checkpointing only each layer's input
      (2h) stays, plus one layer recomputed at a time.
    """
    gc = tcfg.gradient_checkpointing if gc is None else gc
    h = cfg.hidden_size
    L = cfg.num_hidden_layers
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or h // heads
    i = cfg.intermediate_size
    q_out, kv_out = heads * hd, kv * hd
    B = tcfg.prompts_per_step * tcfg.num_generations
    T = PROMPT_TOKENS + tcfg.max_completion_tokens
    kv_tok = 2 * L * kv_out * 2  # K and V, bf16, all layers
    if quant == "nf4":
        weights = counts["linear"] * NF4_BYTES + (counts["total"] - counts["linear"]) * 2
        lora = counts["lora"] * 8  # TRL casts QLoRA adapters to bf16: param, grad, Adam m, v
    else:
        weights = counts["total"] * 2
        lora = counts["lora"] * 16  # PEFT keeps adapters fp32 over a bf16 base: param, grad, Adam m, v
    eager = family.train_attn == "eager"
    norms = 4 if cfg.model_type == "gemma2" else 2
    per_layer = 4 * h * norms + 2 * h + 8 * q_out + 2 * q_out + 6 * i
    if cfg.model_type.startswith("qwen3"):
        per_layer += 4 * (q_out + kv_out)
    if eager:
        per_layer += 10 * heads * T
    act_tokens = B * T
    train_act = act_tokens * (L * 2 * h + per_layer) if gc else act_tokens * L * per_layer
    train_act += B * 2 * h * 4  # final norm etc.: small
    gen = B * T * kv_tok + B * cfg.vocab_size * 4 * 3  # KV cache + a few fp32 logit rows per decode step
    n, S = tcfg.judge_batch_size, JUDGE_PREFIX + JUDGE_SUFFIX
    judge = n * S * kv_tok + n * JUDGE_SUFFIX * (6 * i + 8 * h) + (n * heads * S * S * 6 if eager else 0)
    parts = {"weights": weights, "lora_opt": lora, "gen_kv": gen, "judge": judge, "train_act": train_act}
    parts = {k: v / GiB for k, v in parts.items()}
    parts["peak"] = parts["weights"] + parts["lora_opt"] + max(parts["gen_kv"], parts["judge"], parts["train_act"])
    parts["peak"] += CUDA_OVERHEAD_GIB
    return parts


def estimate_rows(names, sdir: Path) -> list[dict]:
    from transformers import AutoConfig

    from hmxfeel import config as config_mod
    from hmxfeel import models

    tcfg = config_mod.TrainConfig.for_device("cuda")
    rows = []
    for name in names:
        cfg = AutoConfig.from_pretrained(sdir / name)
        family = models.family_of(cfg)
        counts = param_counts(cfg, family, tcfg.lora_r, tcfg.lora_targets or family.lora_targets)
        est = {
            "bf16": estimate(cfg, family, tcfg, counts, "bf16", gc=False),
            "bf16_gc": estimate(cfg, family, tcfg, counts, "bf16", gc=True),
            "nf4_gc": estimate(cfg, family, tcfg, counts, "nf4", gc=True),
        }
        rows.append({"model": name, "params": counts["total"], "lora": counts["lora"], "est": est})
    return rows


def estimate_table(rows, cap: float, small: float) -> str:
    lines = [
        "| model | params | LoRA | bf16 weights | NF4 weights | gen KV | judge | train act (no GC / GC) "
        f"| est. peak bf16 defaults | bf16 + GC | NF4 + GC | fits {cap:g} GiB | fits {small:g} GiB with |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, g, q = r["est"]["bf16"], r["est"]["bf16_gc"], r["est"]["nf4_gc"]
        fits_small = (
            "bf16 defaults" if e["peak"] <= small else "bf16 + GC" if g["peak"] <= small
            else "NF4 + GC" if q["peak"] <= small else "nothing here"
        )
        lines.append(
            f"| {r['model']} | {r['params'] / 1e9:.2f} B | {r['lora'] / 1e6:.1f} M | {e['weights']:.1f} | "
            f"{q['weights']:.1f} | {e['gen_kv']:.1f} | {e['judge']:.1f} | {e['train_act']:.1f} / {g['train_act']:.1f} "
            f"| {e['peak']:.1f} | {g['peak']:.1f} | {q['peak']:.1f} | "
            f"{'yes' if e['peak'] <= cap else 'no (GC: ' + ('yes' if g['peak'] <= cap else 'no') + ')'} | {fits_small} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ the worker
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
    import torch

    cuda = not a.dry_run
    res = {"model": a.model, "cap_gib": a.cap_gib, "quant": a.quant, "gc": a.gc, "status": "error", "label": a.label}
    t_start = time.perf_counter()
    peaks = Peaks(cuda)
    try:
        import transformers
        import trl

        from hmxfeel import config as config_mod
        from hmxfeel import models
        from hmxfeel import train as train_mod

        device = "cuda" if cuda else "cpu"
        total = torch.cuda.get_device_properties(0).total_memory if cuda else 0
        if cuda:
            res["device"] = torch.cuda.get_device_name(0)
        res["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
        if cuda and a.quant == "bf16" and a.cap_gib > 0:
            torch.cuda.set_per_process_memory_fraction(min(1.0, a.cap_gib * GiB / total))
        folder = Path(a.seed_dir) / a.model
        cfg, tok = twin_config(folder, "tiny" if a.dry_run else "full")
        family = models.family_of(cfg)
        dtype = torch.bfloat16 if cuda else torch.float32
        model = build_model(cfg, family, device, dtype)
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
        res["build_s"] = time.perf_counter() - t_start

        overrides = {"steps": 1, "gradient_checkpointing": a.gc}
        if a.dry_run:
            overrides.update(max_completion_tokens=8)
            if "judge_dtype" in {f.name for f in dataclasses.fields(config_mod.TrainConfig)}:
                overrides["judge_dtype"] = "same"  # a bf16 judge copy is loaded from disk; the twin lives in memory
        tcfg = config_mod.TrainConfig.for_device(device, **overrides).validate()
        res["config"] = {k: getattr(tcfg, k) for k in (
            "prompts_per_step", "num_generations", "max_completion_tokens", "judge_batch_size", "lora_r",
            "gradient_checkpointing", "dtype")}

        # The project's trainer, fed this model instead of a checkpoint from disk.
        def fake_load(spec, device=None, dtype=None, for_training=False):
            return models.Loaded(model=model, tokenizer=tok, family=family, source=spec, path=str(folder))

        models.load = fake_load
        if a.force_length:  # every completion full length: the memory worst case (patched in place: picklable)
            post_init = trl.GRPOConfig.__post_init__

            def full_length_post_init(self):
                self.generation_kwargs = {**(self.generation_kwargs or {}), "min_new_tokens": self.max_completion_length}
                post_init(self)

            trl.GRPOConfig.__post_init__ = full_length_post_init

        timings: dict = {}
        counts: dict = {}

        def count_tokens(out):
            ids = out[0] if isinstance(out, tuple) else out
            counts["gen_tokens"] = counts.get("gen_tokens", 0) + sum(len(c) for c in ids)
            counts["gen_seqs"] = counts.get("gen_seqs", 0) + len(ids)

        G = trl.GRPOTrainer
        _wrap(G, "_generate_single_turn", peaks, timings, "generate", after=count_tokens)
        _wrap(G, "_calculate_rewards", peaks, timings, "judge")
        _wrap(G, "compute_loss", peaks, timings, "train_forward")
        _wrap(G, "training_step", peaks, timings, "training_step")  # its tail interval: backward

        out = Path(a.run_dir)
        shutil.rmtree(out, ignore_errors=True)
        if cuda:  # the step's peak only: the bf16 build before NF4 quantisation must not count
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        peaks.mark()
        t0 = time.perf_counter()
        train_mod.train(str(folder), "human", out, tcfg, device=device)
        res["train_call_s"] = time.perf_counter() - t0
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        step = next((m for m in metrics if "step_time" in m), {})
        res["step_time_s"] = step.get("step_time")
        res["mean_completion_len"] = step.get("completions/mean_length")
        res["reward"] = step.get("reward")
        lora_mod = next((m for m in model.modules() if hasattr(m, "lora_A")), None)  # which PEFT layer wrapped it
        res["lora_layer"] = f"{type(lora_mod).__module__}.{type(lora_mod).__name__}" if lora_mod else None
        res["status"] = "ok"
    except torch.OutOfMemoryError as exc:  # under the cap: the run does not fit
        res["status"] = "oom"
        res["error"] = str(exc).split("\n")[0][:400]
    except Exception as exc:  # noqa: BLE001 - report, don't crash the plan
        res["status"] = "error"
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        res["traceback"] = traceback.format_exc()[-3000:]
    res["peak_gib"] = peaks.final() / GiB if cuda else None
    res["phase_peak_gib"] = {k: v / GiB for k, v in peaks.phases.items()}
    res["failed_in"] = {"training_step": "backward"}.get(peaks.failed_in, peaks.failed_in)
    if "training_step" in res["phase_peak_gib"]:
        res["phase_peak_gib"]["backward"] = res["phase_peak_gib"].pop("training_step")
    if cuda:
        res["peak_reserved_gib"] = peaks.reserved / GiB  # what the cap limits (allocator cache included)
    res["timings_s"] = locals().get("timings", {})
    res.update(locals().get("counts", {}))
    gen_s = res["timings_s"].get("generate")
    if gen_s and res.get("gen_tokens"):
        res["gen_tok_s"] = res["gen_tokens"] / gen_s
    res["wall_s"] = time.perf_counter() - t_start
    return res


# --------------------------------------------------------------------------------------------------------- the plan
def launch(args, model: str, cap: float, quant: str, gc: bool, label: str, deadline: float) -> dict:
    remaining = deadline - time.time()
    base = {"model": model, "cap_gib": cap, "quant": quant, "gc": gc, "label": label}
    if remaining < args.min_run_s:
        return {**base, "status": "not run (time budget)"}
    result = Path(args.work_dir) / "results" / f"{model}-{label}.json"  # $OUT keeps few files: all go in gpu_fit.json
    result.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model, "--cap-gib", str(cap),
        "--quant", quant, "--label", label, "--seed-dir", str(args.seed_dir), "--result", str(result),
        "--run-dir", str(Path(args.work_dir) / f"{model}-{label}"),
    ]
    cmd += ["--gc"] if gc else []
    cmd += ["--dry-run"] if args.dry_run else []
    cmd += [] if args.force_length else ["--no-force-length"]
    print(f"\n=== {model} [{label}] cap {cap:g} GiB, {quant}{', grad-ckpt' if gc else ''} "
          f"(budget left {remaining:.0f} s)", flush=True)
    t0 = time.time()
    try:
        subprocess.run(cmd, timeout=max(10.0, min(args.run_timeout_s, remaining - 5)), check=False)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "wall_s": time.time() - t0}
    if not result.exists():
        return {**base, "status": "crashed (no result)", "wall_s": time.time() - t0}
    res = json.loads(result.read_text())
    print(f"--> {model} [{label}]: {res['status']} peak {fmt(res.get('peak_gib'))} GiB, "
          f"step {fmt(res.get('step_time_s'))} s, gen {fmt(res.get('gen_tok_s'), 0)} tok/s "
          f"{res.get('error', '')}", flush=True)
    return res


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def passed(r: dict | None, cap: float) -> bool:
    return bool(r) and r.get("status") == "ok" and r.get("peak_gib") is not None and r["peak_gib"] <= cap


def run_plan(args, est: dict) -> list[dict]:
    deadline = time.time() + args.budget_s
    results: list[dict] = []
    big, small = args.cap_gib, args.small_cap_gib

    def record(r):
        results.append(r)
        write_outputs(args, results, est)
        return r

    if args.runs:  # explicit list instead of the plan: MODEL:CAP:QUANT[:gc]
        for spec in args.runs.split(","):
            m, cap, quant, *rest = spec.strip().split(":")
            gc = rest == ["gc"]
            label = f"{cap}-{quant}{'-gc' if gc else ''}"
            record(launch(args, m, float(cap), quant, gc, label, deadline))
        return results

    A = {m: record(launch(args, m, big, "bf16", False, f"A-{big:g}-bf16", deadline)) for m in args.models}
    if small > 0:
        for m in args.models:
            a = A[m]
            if passed(a, 0.95 * small):
                record({**a, "label": f"B-{small:g}", "cap_gib": small, "status": "ok (inferred from A)"})
                continue
            e = est[m]
            # 4-bit only where the bf16 weights leave no room: the estimate for bf16 + GC over the small cap.
            quant = "nf4" if e["bf16_gc"]["peak"] > 0.9 * small else "bf16"
            # Gradient checkpointing unless A shows the default config fits once the weights shrink.
            fits_without_gc = passed(a, big) and (
                a["peak_gib"] - e["bf16"]["weights"] + e["nf4_gc"]["weights"] <= 0.9 * small if quant == "nf4"
                else a["peak_gib"] <= 0.9 * small
            )
            b = record(launch(args, m, small, quant, not fits_without_gc, f"B-{small:g}-{quant}", deadline))
            if quant == "bf16" and b.get("status") == "oom":  # bf16 + GC did not fit after all: try NF4 + GC
                record(launch(args, m, small, "nf4", True, f"B-{small:g}-nf4", deadline))
    # C: what fits under the big cap for the models whose GPU defaults did not (unless a B run already says so).
    for m in args.models:
        if A[m].get("status") == "oom" and not any(
            r["model"] == m and r.get("gc") and r.get("quant") == "bf16" and passed(r, big) for r in results
        ):
            record(launch(args, m, big, "bf16", True, f"C-{big:g}-bf16-gc", deadline))
    return results


def gpu_table(results: list[dict]) -> str:
    lines = [
        "| model | run | cap GiB | base weights | grad ckpt | params | weights GiB | peak alloc GiB | peak phase "
        "| peak reserved GiB | result | step s | gen s | gen tok/s | mean len | judge s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        phases = r.get("phase_peak_gib") or {}
        phase = max(phases, key=phases.get) if phases else "-"
        if r.get("status") == "oom":
            phase = f"OOM in {r.get('failed_in') or '?'}"
        status = r.get("status", "?")
        if status == "ok" and r.get("peak_gib") is None:
            status = "ran (no CUDA: no figures)"
        elif status == "ok":
            status = "pass" if r.get("peak_gib") is not None and r["peak_gib"] <= r["cap_gib"] else "fail (over cap)"
        elif status == "oom":
            status = "FAIL (OOM)"
        t = r.get("timings_s") or {}
        lines.append(
            f"| {r['model']} | {r.get('label', '')} | {r['cap_gib']:g} | {r.get('quant', '')} | "
            f"{'yes' if r.get('gc') else 'no'} | {fmt((r.get('params') or 0) / 1e9, 2) if r.get('params') else '-'} B | "
            f"{fmt(r.get('weights_gib'))} | {fmt(r.get('peak_gib'))} | {phase} | {fmt(r.get('peak_reserved_gib'))} | "
            f"{status} | {fmt(r.get('step_time_s'))} | {fmt(t.get('generate'))} | {fmt(r.get('gen_tok_s'), 0)} | "
            f"{fmt(r.get('mean_completion_len'), 0)} | {fmt(t.get('judge'))} |"
        )
    return "\n".join(lines)


def write_outputs(args, results, est) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_fit.json").write_text(json.dumps({"estimate": est, "runs": results}, indent=1, default=str))
    (out / "gpu_fit.md").write_text(gpu_table(results) + "\n")


# ------------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated seed model folders")
    ap.add_argument("--cap-gib", type=float, default=24.0, help="memory cap of the main runs (0 = none)")
    ap.add_argument("--small-cap-gib", type=float, default=16.0, help="cap of the small variant (0 = skip it)")
    ap.add_argument("--out", default="runs/gpu_fit", help="folder for gpu_fit.json / gpu_fit.md and per-run JSON")
    ap.add_argument("--work-dir", default=None, help="scratch folder for the training runs (default OUT/work)")
    ap.add_argument("--seed-dir", default=None, help="seed model files (default .gpufit_models, else ../shared)")
    ap.add_argument("--dry-run", action="store_true", help="exercise the whole path on CPU with tiny twins")
    ap.add_argument("--budget-s", type=float, default=900.0,
                    help="stop launching runs after this many seconds (the full plan takes about 10 min on an H100)")
    ap.add_argument("--run-timeout-s", type=float, default=150.0, help="kill one run after this many seconds")
    ap.add_argument("--min-run-s", type=float, default=75.0, help="don't start a run with less budget left")
    ap.add_argument("--runs", default="", help="explicit runs instead of the plan, e.g. qwen3-8b:16:nf4:gc,gemma-2-2b-it:24:bf16")
    ap.add_argument("--estimate-only", action="store_true", help="print the analytic estimate and exit")
    ap.add_argument("--no-force-length", dest="force_length", action="store_false",
                    help="let completions stop at EOS (default: min_new_tokens = max length)")
    ap.add_argument("--prepare-carry", metavar="DIR", help="copy the seed files a device run needs into DIR")
    # worker (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--quant", default="bf16", choices=("bf16", "nf4"), help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--label", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]

    if args.prepare_carry:
        from hmxfeel.twins import shared_models_dir

        src = Path(args.seed_dir) if args.seed_dir else shared_models_dir()
        prepare_carry(Path(args.prepare_carry), src, args.models)
        return 0
    sdir = seed_dir(args.seed_dir)
    if sdir is None:
        print("gpu_fit: no seed model files (pass --seed-dir, set HMX_SHARED_MODELS, or --prepare-carry); skipped.")
        return 0
    args.seed_dir = str(sdir)
    if args.worker:
        res = worker(args)
        Path(args.result).write_text(json.dumps(res, indent=1, default=str))
        if res.get("traceback"):
            print(res["traceback"], file=sys.stderr)
        return 0

    import torch

    rows = estimate_rows(args.models, Path(args.seed_dir))
    print(f"Analytic estimate per model (GiB; TrainConfig.for_device('cuda'): 4 prompts x 8 answers, "
          f"{PROMPT_TOKENS}+256 tokens, judge batch 32, LoRA r16 on q/k/v/o; GC = gradient checkpointing)\n")
    print(estimate_table(rows, args.cap_gib, args.small_cap_gib))
    est = {r["model"]: r["est"] for r in rows}
    has_cuda = torch.cuda.is_available()
    if args.estimate_only or (not has_cuda and not args.dry_run):
        print("\nGPU figures pending: no CUDA device here (run this script on a GPU machine).")
        return 0
    args.work_dir = args.work_dir or str(Path(args.out) / "work")
    if args.dry_run:
        print("\nDry run: tiny twins on CPU (the code path only; no memory figures).")
    results = run_plan(args, est)
    write_outputs(args, results, est)
    print("\n" + gpu_table(results))
    print(f"\nwritten: {Path(args.out) / 'gpu_fit.md'}, {Path(args.out) / 'gpu_fit.json'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

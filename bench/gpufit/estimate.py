"""The analytic memory estimate of one GRPO + LoRA step (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

GiB = 2**30
# Measured once on the default prompt set / rubric (Qwen3 tokenizer): train prompts are 16-32 tokens after the chat
# template; a judge prompt is a ~290-token rubric prefix (cached once per criterion) + a ~320-token suffix when the
# answer is at its 256-token cap.
PROMPT_TOKENS = 32
JUDGE_PREFIX, JUDGE_SUFFIX = 290, 320
NF4_BYTES = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit codes + double-quantised absmax (QLoRA), per weight
CUDA_OVERHEAD_GIB = 0.5  # cuBLAS workspaces, allocator rounding: not weights, not activations


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
            "bf16 defaults"
            if e["peak"] <= small
            else "bf16 + GC"
            if g["peak"] <= small
            else "NF4 + GC"
            if q["peak"] <= small
            else "nothing here"
        )
        lines.append(
            f"| {r['model']} | {r['params'] / 1e9:.2f} B | {r['lora'] / 1e6:.1f} M | {e['weights']:.1f} | "
            f"{q['weights']:.1f} | {e['gen_kv']:.1f} | {e['judge']:.1f} | {e['train_act']:.1f} / {g['train_act']:.1f} "
            f"| {e['peak']:.1f} | {g['peak']:.1f} | {q['peak']:.1f} | "
            f"{'yes' if e['peak'] <= cap else 'no (GC: ' + ('yes' if g['peak'] <= cap else 'no') + ')'} | {fits_small} |"
        )
    return "\n".join(lines)

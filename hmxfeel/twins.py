"""Config-faithful random twins of the seed models, for CPU tests (tiny) and GPU memory checks (full size).

Built from the seed models' own config.json / tokenizer / chat-template files (`../shared/models`, no weights):
the architecture class, attention layout ratios, special tokens and chat template are the real ones; a tiny twin
only shrinks depth and width. Where the shared folder has no vocabulary (Gemma 2, SmolLM2) the embedded SmolLM2
tokenizer stands in, with the family's real chat template and special tokens added.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SEED_MODELS = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
    "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
# One per family for the tests (the three Qwen3 sizes share tokenizer and template).
FAMILY_REPRESENTATIVES = ("qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct", "smollm2-135m-instruct")


def shared_models_dir() -> Path | None:
    """`HMX_SHARED_MODELS`, else `../shared/models` next to the repository; None when absent (a user's clone)."""
    env = os.environ.get("HMX_SHARED_MODELS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "models"
    return path if path.is_dir() else None


def twin_tokenizer(folder: Path):
    """The seed model's real tokenizer where its files are present, else the embedded one + its chat template."""
    from transformers import AutoTokenizer

    from hmxfeel.models import embedded_dir

    if (folder / "vocab.json").exists() or (folder / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(folder)
    elif (folder / "original" / "tokenizer.model").exists():  # Llama 3.x: tiktoken BPE file
        tok = AutoTokenizer.from_pretrained(folder, vocab_file=str(folder / "original" / "tokenizer.model"), from_tiktoken=True)
    else:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        tok = AutoTokenizer.from_pretrained(embedded_dir())
        template_tokens = [t for t in ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>") if t in cfg.get("chat_template", "")]
        specials = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token") if isinstance(cfg.get(k), str)}
        tok.add_special_tokens({**specials, "additional_special_tokens": template_tokens})
        tok.chat_template = cfg["chat_template"]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def twin_config(folder: Path, tokenizer, size: str = "tiny"):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    if size == "tiny":
        heads, kv = 4, 2
        for key, value in {
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": 16,
        }.items():
            setattr(cfg, key, value)
        if getattr(cfg, "layer_types", None):  # Gemma 2 / Qwen3 list one attention type per layer
            cfg.layer_types = cfg.layer_types[:2]
        if hasattr(cfg, "query_pre_attn_scalar"):
            cfg.query_pre_attn_scalar = 16
    # Keep the real vocab size (Qwen3 pads it beyond the tokenizer) unless a larger stand-in tokenizer needs more.
    cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(tokenizer, name.replace("_id", ""), None)
        if token is not None:
            setattr(cfg, name, tokenizer.convert_tokens_to_ids(token))
    return cfg


def build_twin(name: str, out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random twin of seed model `name` (a folder name under shared/models, or a path) to `out`."""
    import torch
    from transformers import AutoModelForCausalLM

    base = shared_models_dir()
    folder = Path(name) if Path(name).is_dir() else (base / name if base else None)
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"seed model files for {name!r} not found (looked in {base})")
    out = Path(out)
    if (out / "config.json").exists():
        return out
    tok = twin_tokenizer(folder)
    cfg = twin_config(folder, tok, size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "TWIN.txt").write_text(f"random {size} twin of {SEED_MODELS.get(folder.name, folder.name)} from {folder}\n")
    return out

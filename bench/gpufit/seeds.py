"""The seed models' files a device run needs: configs and tokenizers (no weights), and the twin built from them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("qwen3-0.6b", "qwen3-4b", "qwen3-8b", "gemma-2-2b-it", "llama-3.2-3b-instruct")
CARRY_DEFAULT = ROOT / ".gpufit_models"


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

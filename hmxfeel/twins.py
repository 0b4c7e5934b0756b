"""Config-faithful random twins of the seed models, for CPU tests (tiny), GPU memory checks (full size) and the
experiment dry run (`hmx run --twins`, `dry_run` below).

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
        tok = AutoTokenizer.from_pretrained(
            folder, vocab_file=str(folder / "original" / "tokenizer.model"), from_tiktoken=True
        )
    else:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        tok = AutoTokenizer.from_pretrained(embedded_dir())
        template_tokens = [
            t for t in ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>") if t in cfg.get("chat_template", "")
        ]
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
    if size == "tiny" and not tokenizer_is_real(folder):
        # A stand-in vocabulary never produces the real one's ids: rows past it would only make every forward pass
        # of a tiny twin several times slower (Gemma 2: 256,000 rows for SmolLM2's 49,152 tokens).
        cfg.vocab_size = len(tokenizer)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(tokenizer, name.replace("_id", ""), None)
        if token is not None:
            setattr(cfg, name, tokenizer.convert_tokens_to_ids(token))
    return cfg


def tokenizer_is_real(folder: Path) -> bool:
    """Whether the source folder holds the model's own vocabulary (else `twin_tokenizer` uses a stand-in)."""
    return any((folder / f).exists() for f in ("vocab.json", "tokenizer.json", "original/tokenizer.model"))


def build_twin(name: str, out: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random twin of seed model `name` (a folder name under shared/models, or a path) to `out`."""
    import shutil
    import tempfile

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
    # Written aside and renamed: a twin killed half-written must not pass for a finished one (config.json first).
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tokenizer = (
            "the model's own"
            if tokenizer_is_real(folder)
            else "a stand-in vocabulary (SmolLM2's) with the model's own chat template"
        )
        (tmp / "TWIN.txt").write_text(
            f"random {size} twin of {SEED_MODELS.get(folder.name, folder.name)} from {folder}\ntokenizer: {tokenizer}\n"
        )
        if (out / "config.json").exists():  # another process finished the same twin first
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(out, ignore_errors=True)  # a half-written twin of an older version of this function
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------------- the experiment dry run: hmx run --twins

# What a dry run changes in an experiment: every stage still runs its real code path, on the least work that
# exercises it. Two steps with a checkpoint after each (so resume has something to resume from), the smallest GRPO
# group (2 answers), answers long enough to be judged, a few items per benchmark and held-out prompt set.
DRY_RUN_TRAIN = {
    "steps": 2,
    "prompts_per_step": 1,
    "num_generations": 2,
    "max_completion_tokens": 8,
    "save_every": 1,
    "judge_batch_size": 4,
}
DRY_RUN_ITEMS = 2  # items per benchmark, held-out prompts for human-likeness, items of a training safety slice
TWIN_RECIPE = 2  # bump when twin_config / twin_tokenizer change what they build: cached twins are then rebuilt
TWINS_FILE = "twins.json"  # in the experiment folder: what was replaced by what (the report's first section)
# The files a twin is made from (no weights): config, tokenizer (vocabulary and special tokens), chat template.
SOURCE_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "original/tokenizer.model",
]


def sources_folder(given: str | Path | None = None) -> Path | None:
    """The folder of model folders twins are made from: `given` (--twins-from), else HMX_SHARED_MODELS / the
    project's shared folder when present, else None (the Hub, or its local cache, only)."""
    from hmxfeel.errors import UserError

    if given is None:
        return shared_models_dir()
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"twins: {given} is not a folder (give a folder holding one folder per model, e.g. qwen3-0.6b/)"
        )
    return folder


def _candidates(spec: str, name: str) -> list[str]:
    """Folder names model `spec` may have in a sources folder: the experiment's name for it, the Hub id's name."""
    hub_name = spec.rstrip("/").split("/")[-1]
    return list(dict.fromkeys([name, hub_name, hub_name.lower()]))


def twin_source(spec: str, name: str, sources: Path | None) -> Path:
    """The folder with model `spec`'s own config and tokenizer files: the model's folder, a folder named after it in
    `sources`, or the Hub's files (downloaded, or from the local cache when offline); else one UserError."""
    from hmxfeel import models

    if spec == models.EMBEDDED:
        return models.embedded_dir()
    if Path(spec).expanduser().is_dir():
        return Path(spec).expanduser()
    for candidate in _candidates(spec, name) if sources else ():
        if (sources / candidate / "config.json").is_file():
            return sources / candidate
    looked = (
        f"no {' or '.join(_candidates(spec, name))} with a config.json in {sources}"
        if sources
        else "no --twins-from folder"
    )
    return _hub_files(spec, looked)


def _hub_files(spec: str, looked: str) -> Path:
    """Model `spec`'s config / tokenizer / template files from the Hub (cache only when offline or unreachable)."""
    from huggingface_hub import snapshot_download

    from hmxfeel import models
    from hmxfeel.errors import UserError

    offline = models._offline() or models._hub_unreachable() is not None
    try:
        folder = Path(snapshot_download(spec, allow_patterns=SOURCE_FILES, local_files_only=offline))
    except Exception as exc:  # not cached, unknown, gated, refused: every cause ends the same way for the user
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        where = "the Hub cannot be reached and they are not in the local Hugging Face cache" if offline else why
        raise UserError(f"twins: cannot find the config files of {spec!r}: {looked}, and {where}") from None
    if not (folder / "config.json").is_file():
        raise UserError(f"twins: {spec!r} on the Hub has no config.json ({looked})")
    return folder


def _twin_folder(source: Path, size: str) -> Path:
    """Where the twin of `source` is cached: named after it, keyed by its files so an edited source makes a new twin."""
    from hmxfeel.io import sha256_text
    from hmxfeel.models import cache_dir

    files = "".join(
        (source / f).read_text() for f in ("config.json", "tokenizer_config.json") if (source / f).is_file()
    )
    key = sha256_text(f"{TWIN_RECIPE}\n{files}")
    return cache_dir() / "twins" / f"{size}-{source.name.lower()}-{key[:10]}"


def make_twin(spec: str, name: str, sources: Path | None, size: str = "tiny") -> dict:
    """Build (or reuse) the twin of one experiment model; returns what the run records say about it."""
    from hmxfeel.errors import UserError

    source = twin_source(spec, name, sources)
    try:
        folder = build_twin(str(source), _twin_folder(source, size), size)
    except (ValueError, KeyError, OSError) as exc:  # an architecture transformers does not know, a broken file
        raise UserError(
            f"twins: cannot build a twin of {spec!r} from {source}: {str(exc).splitlines()[0][:200]}"
        ) from None
    cfg = json.loads((folder / "config.json").read_text())
    return {
        "name": name,
        "model": spec,
        "source": str(source),
        "twin": str(folder),
        "size": size,
        "model_type": cfg.get("model_type"),
        "layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "tokenizer": "own" if tokenizer_is_real(source) else "stand-in vocabulary (SmolLM2's), own chat template",
    }


def _shrunk(block: dict, keys) -> dict:
    """A training block with the dry run's values for `keys` (and a safety slice, if on, cut to a few items)."""
    out = {**block, **{k: DRY_RUN_TRAIN[k] for k in keys}}
    if block.get("safety_every"):
        out.update(safety_every=DRY_RUN_TRAIN["steps"], safety_items=DRY_RUN_ITEMS)
    return out


def dry_run(exp, sources: Path | None, size: str = "tiny"):
    """`exp` with every model replaced by its random twin (tiny, or "full": the real architecture's size) and its
    run length shrunk; returns it with the record of what was replaced (OUT/twins.json, the report's first part)."""
    import dataclasses

    import torch

    twins = [make_twin(m["model"], m["name"], sources, size) for m in exp.models]
    device = exp.device if exp.device in (None, "cpu") or torch.cuda.is_available() else "cpu"  # a dry run needs no GPU
    shrunk = dataclasses.replace(
        exp,
        models=[{"name": t["name"], "model": t["twin"]} for t in twins],
        train=_shrunk(exp.train, DRY_RUN_TRAIN),
        # A direction's own run-length values would undo the shrinking: they are shrunk too.
        human=_shrunk(exp.human, [k for k in DRY_RUN_TRAIN if k in exp.human]),
        reverse=_shrunk(exp.reverse, [k for k in DRY_RUN_TRAIN if k in exp.reverse]),
        limit=DRY_RUN_ITEMS,
        humanlike_limit=DRY_RUN_ITEMS,
        device=device or "cpu",
        twins=False,
    )
    record = {
        "twins": twins,
        "train": DRY_RUN_TRAIN,
        "items": DRY_RUN_ITEMS,
        "device": shrunk.device,
        "sources": str(sources) if sources else None,
    }
    return shrunk, record


def report_parts(run_dir: Path) -> list:
    """The report's first section for a dry run: that these are random twins, and of what; [] for a real run."""
    path = Path(run_dir) / TWINS_FILE
    if not path.exists():
        return []
    rec = json.loads(path.read_text())
    rows = [
        [t["name"], t["model"], f"{t['layers']} layers, hidden {t['hidden_size']}", t["tokenizer"], t["source"]]
        for t in rec["twins"]
    ]
    return [
        "**This is a dry run on random twins, not on the models named below.** Every model was replaced by a tiny "
        "random-weight twin built from its own config and chat template (`hmx run --twins`); training ran "
        f"{rec['train']['steps']} steps and every evaluation {rec['items']} items. The numbers test the pipeline, "
        "they say nothing about any model.",
        {"headers": ["name", "stands in for", "twin", "tokenizer", "made from"], "rows": rows},
    ]

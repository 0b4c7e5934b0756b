"""The prompt set: project-written prompts with a fixed train / eval split (eval prompts never reach training)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import read_jsonl, sha256_json

DEFAULT_PROMPTS = resources.files("hmxfeel") / "data" / "prompts.jsonl"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    split: str
    prompt: str


@dataclass(frozen=True)
class PromptSet:
    prompts: tuple[Prompt, ...]
    source: str
    sha256: str

    def split(self, name: str) -> list[Prompt]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        return [p for p in self.prompts if p.split == name]


# Why a command needs a split, for the refusal of a file that lacks it.
NEEDS = {
    "train": "training needs them; a file of eval prompts only is for `hmx eval`",
    "eval": "the human-likeness evaluation reads only the eval split",
}


def load(path: str | Path | None = None, need: str = "train") -> PromptSet:
    """Load and validate a prompt JSONL: fields id, prompt, split (train|eval), optional category. The file must
    hold prompts of the split `need` (the one the caller reads); the other split may be absent."""
    path = str(path or DEFAULT_PROMPTS)
    rows = read_jsonl(path, required=("id", "prompt", "split"))
    prompts, seen_ids, seen_text = [], set(), {}
    for n, row in enumerate(rows, 1):
        where = f"{path}: record {n}"
        text = row["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where} (id {row['id']}): empty prompt")
        if row["split"] not in SPLITS:
            raise UserError(f"{where}: split must be 'train' or 'eval', got {row['split']!r}")
        pid = str(row["id"])
        if pid in seen_ids:
            raise UserError(f"{where}: duplicate id {pid!r}")
        key = " ".join(text.lower().split())
        if key in seen_text:
            raise UserError(f"{where} (id {pid}): duplicate of prompt {seen_text[key]!r}")
        seen_ids.add(pid)
        seen_text[key] = pid
        prompts.append(Prompt(pid, str(row.get("category", "general")), row["split"], text.strip()))
    if not any(p.split == need for p in prompts):
        raise UserError(f"{path}: no prompts with split '{need}' ({NEEDS[need]})")
    return PromptSet(tuple(prompts), path, sha256_json([p.__dict__ for p in prompts]))

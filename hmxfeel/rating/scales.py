"""The rating scales a rater scores each answer on (`data/rating_scales.yaml`), checked on load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import check_keys, read_text, read_yaml, sha256_text

DATA = Path(__file__).parent.parent / "data"
SCALES_PATH = DATA / "rating_scales.yaml"
ID_COLUMNS = ("sheet", "rater", "id")
CRITERIA = ("feelings", "intentions", "self_awareness")  # the rubric's criteria, named like the first three scales


@dataclass(frozen=True)
class Scale:
    name: str
    label: str
    min: int
    max: int
    question: str
    levels: dict  # {int: description}


@dataclass(frozen=True)
class Scales:
    name: str
    sha256: str
    scales: tuple

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.scales]


def load_scales(path: str | Path | None = None) -> Scales:
    """The rating scales (default: the packaged `rating_scales.yaml`), checked so a bad edit fails at export."""
    path = Path(path or SCALES_PATH)
    data = read_yaml(path)
    check_keys(data, ("name", "scales"), str(path))
    if not isinstance(data.get("name"), str) or not isinstance(data.get("scales"), list) or not data["scales"]:
        raise UserError(f"{path}: needs a 'name' and a non-empty 'scales' list")
    scales = tuple(_scale(raw, f"{path}: scale {k}") for k, raw in enumerate(data["scales"], 1))
    names = [s.name for s in scales]
    if len(set(names)) != len(names) or set(names) & set(ID_COLUMNS):
        raise UserError(f"{path}: scale names must be unique and not one of {', '.join(ID_COLUMNS)}")
    return Scales(data["name"], sha256_text(read_text(path)), scales)


def _scale(raw, where: str) -> Scale:
    fields = ("name", "label", "min", "max", "question", "levels")
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping")
    check_keys(raw, fields, where)
    missing = [f for f in fields if f not in raw]
    if missing:
        raise UserError(f"{where}: missing '{missing[0]}'")
    lo, hi, levels = raw["min"], raw["max"], raw["levels"]
    # The name becomes a CSV column and a JSON key: keep it plain.
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(raw["name"])):
        raise UserError(f"{where}: name '{raw['name']}' must be lower-case letters, digits and _")
    if type(lo) is not int or type(hi) is not int or lo >= hi:
        raise UserError(f"{where}: min and max must be integers with min < max")
    if not isinstance(levels, dict) or sorted(levels) != list(range(lo, hi + 1)):
        raise UserError(f"{where}: levels must describe every value {lo}..{hi}")
    return Scale(raw["name"], str(raw["label"]), lo, hi, str(raw["question"]), {k: str(v) for k, v in levels.items()})


def template_columns(names: list[str]) -> list[str]:
    return [*ID_COLUMNS, *names]

"""The rubric as data: criteria, score formats, validation on load, and a content hash for provenance."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import check_keys, read_yaml, sha256_json

DEFAULT_RUBRIC = resources.files("hmxfeel") / "data" / "rubric.yaml"


@dataclass(frozen=True)
class Criterion:
    name: str
    weight: float
    definition: str
    low: str
    high: str
    question: str
    # Few-shot (answer, expresses-it?) pairs shown inside the rubric block. They sit in the cached prefix, so
    # they cost almost nothing per answer, and small judges discriminate noticeably better with them.
    examples: tuple[tuple[str, bool], ...] = ()
    # Requests that, added to a user's message, ask for an answer that does (`invite`) or does not (`avoid`)
    # express the criterion. Only likelihood formats quoting {invite} / {avoid} use them.
    invite: str = ""
    avoid: str = ""
    # Demonstrations: (user prompt, answer that shows the criterion, answer that does not), the two answers
    # alike in topic and length. A likelihood format with `demos: true` shows the high answers as earlier
    # turns of the conversation on one side and the low answers on the other.
    demos: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ScoreFormat:
    """How a criterion is turned into a number.

    kind "tokens": the judge is asked the criterion's question and answers with one of `tokens` (score token ->
    value); the logit judge reads the expected value from one next-token distribution.
    kind "likelihood": no question is asked. The judge reads the answer twice, once in a context built from the
    criterion's high side (`high_system` as system prompt, `high_user` added to the user's message, and/or
    the criterion's high demonstrations as earlier turns when `demos` is on) and once in one built from its low
    side; the score is sigmoid(sharpness x weighted mean per-token log-likelihood ratio). Small models are far
    better at "which context makes this text likely" than at answering a grading question.
    """

    name: str
    instruction: str = ""
    tokens: dict[str, float] = field(default_factory=dict)  # score token -> value
    kind: str = "tokens"
    high_system: str = ""
    low_system: str = ""
    high_user: str = ""
    low_user: str = ""
    demos: bool = False
    # "uniform": every answer token counts the same. "surprise": each token's ratio is weighted by
    # 1 - its mean probability under the two contexts, so tokens both contexts predict (a repeated sentence,
    # a copied phrase) do not pull the score towards 0.5: padding cannot move it.
    weighting: str = "uniform"
    sharpness: float = 1.0
    # kind "readout": a ridge readout of the judging model's own hidden states (mean over the answer's tokens at
    # these fractions of depth), fitted on blind-rated answers (`ratings`, default the packaged rated set);
    # `targets` maps a criterion to the rating scale it is fitted to (default: the scale of the same name).
    layers: tuple[float, ...] = ()
    ratings: str = ""
    targets: tuple[tuple[str, str], ...] = ()
    # Optional: also read the raters' overall impression (a rating scale, e.g. "humanlike") and blend it into
    # `overall` with this weight next to the criteria's weights, so no single criterion carries the reward.
    impression: str = ""
    impression_weight: float = 0.0

    def target_of(self, criterion: str) -> str:
        return dict(self.targets).get(criterion, criterion)

    @property
    def low(self) -> float:
        return min(self.tokens.values()) if self.tokens else 0.0

    @property
    def high(self) -> float:
        return max(self.tokens.values()) if self.tokens else 1.0

    def token_for(self, expresses: bool) -> str:
        """The score token a clear positive (highest value) or clear negative (lowest value) example gets."""
        pick = max if expresses else min
        return pick(self.tokens, key=self.tokens.get)

    def to_unit(self, value: float) -> float:
        """Map a value on this format's scale to [0, 1]."""
        return (value - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    criteria: tuple[Criterion, ...]
    formats: dict[str, ScoreFormat]
    judge_format: str
    source: str
    sha256: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.criteria]

    def format(self, name: str | None = None) -> ScoreFormat:
        name = name or self.judge_format
        if name not in self.formats:
            raise UserError(f"rubric {self.source}: no score format '{name}' (has: {', '.join(self.formats)})")
        return self.formats[name]

    def token_format(self) -> ScoreFormat:
        """The judge format if it asks a question, else the first format that does (for judges that can only
        read a reply, such as an API endpoint or the generative judge)."""
        chosen = self.format()
        if chosen.kind == "tokens":
            return chosen
        for fmt in self.formats.values():
            if fmt.kind == "tokens":
                return fmt
        raise UserError(f"rubric {self.source}: this judge needs a format with score tokens; the rubric has none")

    def combine(self, scores: dict[str, float], impression_weight: float = 0.0) -> float:
        """Weighted mean of per-criterion scores in [0, 1], and of the overall `impression` score when the
        judge reads one (with its own weight)."""
        total = sum(c.weight for c in self.criteria)
        value = sum(c.weight * scores[c.name] for c in self.criteria)
        if impression_weight > 0:
            total, value = total + impression_weight, value + impression_weight * scores["impression"]
        return value / total


_TOP = ("name", "version", "criteria", "formats", "judge_format")
_CRITERION = ("name", "weight", "definition", "low", "high", "question", "examples", "invite", "avoid", "demos")
_REQUIRED = ("name", "weight", "definition", "low", "high", "question")
_FORMAT = ("instruction", "tokens", "kind")
_TEMPLATES = ("high_system", "low_system", "high_user", "low_user")
_LIKELIHOOD = ("kind", *_TEMPLATES, "demos", "weighting", "sharpness")
_READOUT = ("kind", "layers", "ratings", "targets", "sharpness", "impression", "impression_weight")
KINDS = ("tokens", "likelihood", "readout")
WEIGHTINGS = ("uniform", "surprise")
_PLACEHOLDERS = ("name", "definition", "low", "high", "expresses", "does_not", "invite", "avoid")
# Placeholders filled from optional criterion fields: every criterion must have what a template quotes.
# {expresses} / {does_not}: the criterion's examples that do / do not express it, each in quotes.
_OPTIONAL = {
    "expresses": ("examples that express it", lambda c: any(e for _, e in c.examples)),
    "does_not": ("examples that do not express it", lambda c: any(not e for _, e in c.examples)),
    "invite": ("'invite'", lambda c: bool(c.invite)),
    "avoid": ("'avoid'", lambda c: bool(c.avoid)),
}


def _likelihood_format(fname: str, raw: dict, where: str) -> ScoreFormat:
    check_keys(raw, _LIKELIHOOD, where)
    templates = {}
    for key in _TEMPLATES:
        if key not in raw:
            continue  # no system prompt (the template's default) / the user's message as it is
        text = _text(raw.get(key), f"{where}.{key}")
        try:
            text.format(**{k: "" for k in _PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(
                f"{where}.{key}: bad placeholder {exc} (allowed: {', '.join('{' + k + '}' for k in _PLACEHOLDERS)})"
            ) from None
        templates[key] = text
    for part in ("system", "user"):
        if (f"high_{part}" in templates) != (f"low_{part}" in templates):
            raise UserError(f"{where}: high_{part} and low_{part} go together (one side alone is not a contrast)")
    demos = raw.get("demos", False)
    if not isinstance(demos, bool):
        raise UserError(f"{where}.demos: must be true or false")
    if not templates and not demos:
        raise UserError(f"{where}: needs high_system / low_system, high_user / low_user, demos: true, or several")
    high = (templates.get("high_system", ""), templates.get("high_user", ""))
    if not demos and high == (templates.get("low_system", ""), templates.get("low_user", "")):
        raise UserError(f"{where}: the high and low contexts must differ (the score is their likelihood ratio)")
    weighting = raw.get("weighting", "uniform")
    if weighting not in WEIGHTINGS:
        raise UserError(f"{where}.weighting: must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    sharpness = _number(raw.get("sharpness", 1.0), f"{where}.sharpness")
    if sharpness <= 0:
        raise UserError(f"{where}.sharpness: must be > 0, got {sharpness}")
    return ScoreFormat(fname, kind="likelihood", demos=demos, weighting=weighting, sharpness=sharpness, **templates)


def _readout_format(fname: str, raw: dict, where: str) -> ScoreFormat:
    check_keys(raw, _READOUT, where)
    layers = raw.get("layers", [0.5, 0.75, 1.0])
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 < f <= 1 for f in layers)
    ):
        raise UserError(f"{where}.layers: must be a non-empty list of fractions of depth in (0, 1], got {layers!r}")
    targets = raw.get("targets", {})
    if not isinstance(targets, dict) or not all(isinstance(v, str) and v for v in targets.values()):
        raise UserError(f"{where}.targets: must map criterion names to rating-scale names")
    ratings = _text(raw["ratings"], f"{where}.ratings") if "ratings" in raw else ""
    sharpness = _number(raw.get("sharpness", 4.0), f"{where}.sharpness")
    if sharpness <= 0:
        raise UserError(f"{where}.sharpness: must be > 0, got {sharpness}")
    impression = _text(raw["impression"], f"{where}.impression") if "impression" in raw else ""
    weight = _number(raw.get("impression_weight", 1.0 if impression else 0.0), f"{where}.impression_weight")
    if weight < 0 or (weight > 0 and not impression):
        raise UserError(f"{where}.impression_weight: must be >= 0, and > 0 only with an 'impression' scale")
    return ScoreFormat(
        fname,
        kind="readout",
        layers=tuple(float(f) for f in layers),
        ratings=ratings,
        targets=tuple((str(k), v) for k, v in targets.items()),
        sharpness=sharpness,
        impression=impression,
        impression_weight=weight,
    )


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: must be a non-empty string")
    return value.strip()


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _records(raw, where: str, name: str, fields: tuple[str, ...]):
    """(location, mapping) for each entry of a list-of-mappings field, its shape and keys checked."""
    if not isinstance(raw, list):
        raise UserError(f"{where}.{name}: must be a list of {{{', '.join(fields)}}} mappings")
    for j, item in enumerate(raw):
        at = f"{where}.{name}[{j}]"
        if not isinstance(item, dict):
            raise UserError(f"{at}: must be a mapping")
        check_keys(item, fields, at)
        yield at, item


def _examples(raw, where: str) -> tuple[tuple[str, bool], ...]:
    out = []
    for at, ex in _records(raw, where, "examples", ("answer", "expresses")):
        if not isinstance(ex.get("expresses"), bool):
            raise UserError(f"{at}.expresses: must be true or false")
        out.append((_text(ex.get("answer"), f"{at}.answer"), ex["expresses"]))
    return tuple(out)


def _demos(raw, where: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for at, demo in _records(raw, where, "demos", ("prompt", "high", "low")):
        prompt, high, low = (_text(demo.get(k), f"{at}.{k}") for k in ("prompt", "high", "low"))
        if high == low:
            raise UserError(f"{at}: high and low answers are the same (a demonstration is a contrast)")
        out.append((prompt, high, low))
    return tuple(out)


def parse(data: dict, source: str) -> Rubric:
    """Validate a rubric mapping; every problem is reported with the file and field it is in."""
    check_keys(data, _TOP, source)
    raw_criteria = data.get("criteria")
    if not isinstance(raw_criteria, list) or not raw_criteria:
        raise UserError(f"{source}: 'criteria' must be a non-empty list")
    criteria = [_criterion(raw, f"{source}: criteria[{i}]") for i, raw in enumerate(raw_criteria)]
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: criteria names must be unique, got {names}")
    raw_formats = data.get("formats")
    if not isinstance(raw_formats, dict) or not raw_formats:
        raise UserError(f"{source}: 'formats' must be a non-empty mapping")
    formats = {str(fname): _format(str(fname), raw, f"{source}: formats.{fname}") for fname, raw in raw_formats.items()}
    for fmt in formats.values():
        _check_format_against_criteria(fmt, criteria, source)
    judge_format = data.get("judge_format", next(iter(formats)))
    if judge_format not in formats:
        raise UserError(f"{source}: judge_format '{judge_format}' is not one of the formats {list(formats)}")
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"{source}: version must be an integer")
    return Rubric(
        name=_text(data.get("name", "unnamed"), f"{source}: name"),
        version=version,
        criteria=tuple(criteria),
        formats=formats,
        judge_format=judge_format,
        source=source,
        sha256=sha256_json(data),
    )


def _criterion(raw, where: str) -> Criterion:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a mapping")
    check_keys(raw, _CRITERION, where)
    for key in _REQUIRED:
        if key not in raw:
            raise UserError(f"{where}: missing '{key}'")
    weight = _number(raw["weight"], f"{where}.weight")
    if weight <= 0:
        raise UserError(f"{where}.weight: must be > 0, got {weight}")
    name = _text(raw["name"], f"{where}.name")
    fields = {k: _text(raw[k], f"{where}.{k}") for k in ("definition", "low", "high", "question")}
    fields.update({k: _text(raw[k], f"{where}.{k}") for k in ("invite", "avoid") if k in raw})
    return Criterion(
        name=name,
        weight=weight,
        examples=_examples(raw.get("examples", []), where),
        demos=_demos(raw.get("demos", []), where),
        **fields,
    )


def _format(fname: str, raw, where: str) -> ScoreFormat:
    """One score format, checked by its kind."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: must be a mapping")
    kind = raw.get("kind", "tokens")
    if kind not in KINDS:
        raise UserError(f"{where}.kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "tokens":
        build = _likelihood_format if kind == "likelihood" else _readout_format
        return build(fname, raw, where)
    check_keys(raw, _FORMAT, where)
    tokens = raw.get("tokens")
    if not isinstance(tokens, dict) or len(tokens) < 2:
        raise UserError(f"{where}.tokens: must map at least two score tokens to values")
    values = {str(tok): _number(val, f"{where}.tokens.{tok}") for tok, val in tokens.items()}
    if len(set(values.values())) < 2:
        raise UserError(f"{where}.tokens: needs at least two different values")
    return ScoreFormat(fname, _text(raw.get("instruction"), f"{where}.instruction"), values)


def _check_format_against_criteria(fmt: ScoreFormat, criteria: list[Criterion], source: str) -> None:
    """A template quoting an optional field, a readout target or shown demos need it in every criterion."""
    names = [c.name for c in criteria]
    templates = " ".join(getattr(fmt, key) for key in _TEMPLATES)
    for key, (what, has) in _OPTIONAL.items():
        lacking = [c.name for c in criteria if "{" + key + "}" in templates and not has(c)]
        if lacking:
            raise UserError(f"{source}: formats.{fmt.name} quotes {{{key}}} but criteria {lacking} have no {what}")
    unknown = sorted(set(dict(fmt.targets)) - set(names))
    if unknown:
        raise UserError(f"{source}: formats.{fmt.name}.targets names no criteria {unknown} (criteria: {names})")
    lacking = [c.name for c in criteria if fmt.demos and not c.demos]
    if lacking:
        raise UserError(f"{source}: formats.{fmt.name} shows demos but criteria {lacking} have none")


def load(path: str | Path | None = None, extra_formats: str | Path | None = None) -> Rubric:
    """Load and validate a rubric file (the packaged default when `path` is None). `extra_formats`: a YAML file
    with a `formats:` mapping added to the rubric's own (e.g. bench/judge_variants.yaml, for measurements)."""
    path = Path(str(path or DEFAULT_RUBRIC))
    data = read_yaml(path)
    if extra_formats is not None:
        extra = read_yaml(extra_formats).get("formats")
        if not isinstance(extra, dict) or not extra:
            raise UserError(f"{extra_formats}: needs a non-empty 'formats:' mapping")
        data = {**data, "formats": {**data.get("formats", {}), **extra}}
    return parse(data, str(path))


def check_single_tokens(fmt: ScoreFormat, tokenizer) -> dict[str, int]:
    """Token id of each score token; a token that is not exactly one token for this tokenizer is a UserError."""
    if fmt.kind != "tokens":
        raise UserError(
            f"format '{fmt.name}' has no score tokens (kind {fmt.kind}); the logit judge reads token formats"
        )
    ids = {}
    for token in fmt.tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise UserError(
                f"score token {token!r} of format '{fmt.name}' is {len(encoded)} tokens for this tokenizer "
                f"({encoded}); the logit judge needs single tokens: change formats.{fmt.name}.tokens in the rubric"
            )
        ids[token] = encoded[0]
    if len(set(ids.values())) != len(ids):
        raise UserError(f"score tokens of format '{fmt.name}' map to the same token id: {ids}")
    return ids

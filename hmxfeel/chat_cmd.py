"""`hmx chat`: one message to the base model and to each adapter, the answers side by side with the self-judge's
per-criterion scores under each.

All adapters sit on one copy of the base model (PEFT named adapters), so comparing three of them costs one model's
memory. Answers are generated exactly as the human-likeness evaluation does (the family's chat template, thinking
blocks removed) with the same seed for every column, so differences come from the adapters, not from the dice.
Each message is a fresh single-turn conversation: the columns would otherwise answer different histories.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from hmxfeel import models
from hmxfeel import rubric as rubric_mod
from hmxfeel.errors import UserError

BASE = "base"
EXIT_WORDS = ("exit", "quit")


@dataclass
class Chat:
    loaded: models.Loaded  # the base model, wrapped with every adapter when there are any
    rubric: rubric_mod.Rubric
    judge: object
    columns: list[tuple[str, str | None]]  # (title, PEFT adapter name; None = the base model, adapters off)
    sampling: dict = field(default_factory=dict)
    system: str = ""
    seed: int = 0


def titles(adapters: list[Path]) -> list[str]:
    """Column titles: the run folder's name for `runs/<name>/adapter`, else the folder's own; made unique."""
    seen: list[str] = [BASE]
    for path in adapters:
        path = Path(path)
        name = path.parent.name if path.name == "adapter" and path.parent.name else path.name
        unique, k = name, 2
        while unique in seen:
            unique, k = f"{name}-{k}", k + 1
        seen.append(unique)
    return seen[1:]


def open_chat(
    model: str,
    adapters: list[Path],
    rubric_path=None,
    judge_format: str | None = None,
    device: str | None = None,
    max_new_tokens: int = 128,
    system: str = "",
    seed: int = 0,
) -> Chat:
    """Load the base model once, attach every adapter under its own name, and build the frozen self-judge."""
    from hmxfeel.evals.humanlike import SAMPLING, frozen_self_judge
    from hmxfeel.evaluate import attach_adapter

    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    rubric = rubric_mod.load(rubric_path)
    if judge_format is not None:
        rubric.format(judge_format)  # an unknown format fails before the model loads
    for path in adapters:  # so does a mistyped adapter folder (attach_adapter checks the rest once it has loaded)
        if not (Path(path) / "adapter_config.json").exists():
            raise UserError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    loaded = models.load(model, device=device)
    columns: list[tuple[str, str | None]] = [(BASE, None)]
    # PEFT adapter names become module keys (no dots allowed), so they are numbered; titles are for people.
    for i, (path, title) in enumerate(zip(adapters, titles(adapters))):
        loaded = attach_adapter(loaded, path, name=f"adapter{i}")
        columns.append((title, f"adapter{i}"))
    judge = frozen_self_judge(loaded, rubric, judge_format, "auto")  # the same self-judge as `hmx eval`
    return Chat(loaded, rubric, judge, columns, {**SAMPLING, "max_new_tokens": max_new_tokens}, system, seed)


@contextmanager
def active(model, adapter: str | None):
    """The model answering as one column: the named adapter on, or every adapter off for the base model."""
    if adapter is None:
        with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
            yield
        return
    model.set_adapter(adapter)
    yield


def answers(chat: Chat, message: str, turn: int = 0) -> list[str]:
    """One answer per column, each sampled with the same seed (varied per turn, so a repeated question differs)."""
    from hmxfeel.evals.humanlike import generate

    out = []
    m = chat.loaded
    for _, adapter in chat.columns:
        with active(m.model, adapter):
            out += generate(m.model, m.tokenizer, m.family, [message], chat.seed + turn, chat.sampling, chat.system)
    return out


def scores(chat: Chat, message: str, texts: list[str]) -> dict[str, list[float]]:
    """The frozen self-judge's per-criterion scores (and `overall`) for every column's answer, in one batch."""
    from hmxfeel.reward import score_answers

    return score_answers(chat.judge, chat.rubric, [message] * len(texts), texts)


def score_text(per_criterion: dict[str, list[float]], i: int) -> str:
    return "\n".join(f"{name} {values[i]:.2f}" for name, values in per_criterion.items())


def table(chat: Chat, message: str, texts: list[str], judged: dict[str, list[float]]):
    """Answers side by side, the scores under each."""
    from rich.table import Table

    t = Table(*[title for title, _ in chat.columns], title=message, show_lines=True)
    t.add_row(*[text or "(empty answer)" for text in texts])
    t.add_row(*[score_text(judged, i) for i in range(len(texts))], style="dim")
    return t


def exchange(chat: Chat, message: str, turn: int = 0):
    """Ask every column, judge the answers; returns the table to print."""
    texts = answers(chat, message, turn)
    return table(chat, message, texts, scores(chat, message, texts))


def read_messages(stream=None):
    """Messages from the terminal (with a prompt) or a pipe, until end of input or `exit` / `quit`."""
    stream = stream or sys.stdin
    interactive = stream.isatty()
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = stream.readline()
        if not line or line.strip().lower() in EXIT_WORDS:
            return
        if line.strip():
            yield line.strip()


def run(chat: Chat, console, prompt: str | None = None, stream=None) -> int:
    """One exchange for `prompt`, else one per message read; returns how many were answered."""
    messages = [prompt] if prompt is not None else read_messages(stream)
    n = 0
    for n, message in enumerate(messages, 1):
        console.print(exchange(chat, message, n - 1))
    return n

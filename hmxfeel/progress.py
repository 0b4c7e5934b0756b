"""Progress with an ETA for work that takes more than a few seconds (answers and judging in the human-likeness
part, items within a battery task), drawn on stderr only when stderr is a terminal: CI logs and redirected
output stay short. `HMX_PROGRESS=0` turns it off on a terminal too."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator


def enabled(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("HMX_PROGRESS", "1") != "0"


def quiet_library_bars(stream=None) -> None:
    """In a log (stderr not a terminal) the libraries' own tqdm bars (lm-eval building requests, transformers
    loading weights, Hub downloads) would write a frame per update: switch them off through their environment
    settings, which they read when imported, so call this first. On a terminal they stay (unless HMX_PROGRESS=0,
    which turns every bar off)."""
    if not enabled(stream):
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@contextmanager
def progress(description: str, total: int, stream=None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; on a terminal a bar shows done / total, elapsed time and the ETA, and is cleared when
    the work ends (the caller's own one-line summary stays). Elsewhere `advance` does nothing."""
    stream = stream if stream is not None else sys.stderr
    if total <= 0 or not enabled(stream):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold cyan]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=stream, force_terminal=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)

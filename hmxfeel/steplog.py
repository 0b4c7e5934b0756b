"""One readable line per logged training step, in place of the raw metrics dict transformers prints.

    step 3/24 · reward 0.319 ± 0.045 · feelings 0.32 · intentions 0.31 · self_awareness 0.34 · len 48 · KL 0.0094
    · 17.8 s/step · ETA 6m 14s

The raw numbers stay in metrics.jsonl (and the tracker named by `report_to`); this is what a person reads.
"""

from __future__ import annotations


def _number(logs: dict, key: str) -> float | None:
    try:
        return float(logs[key])
    except (KeyError, TypeError, ValueError):
        return None


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def step_line(logs: dict, step: int, max_steps: int) -> str | None:
    """The line for one step's logs; None for rows that are not a step (the end-of-training summary)."""
    reward, spread = _number(logs, "reward"), _number(logs, "reward_std")
    if reward is None:
        return None
    parts = [f"step {step}/{max_steps}", f"reward {reward:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")]
    for key in sorted(logs):
        name = key.removeprefix("rubric/")
        if key.startswith("rubric/") and not key.endswith("_std") and name != "overall":
            parts.append(f"{name} {_number(logs, key):.2f}")
    length, kl, seconds = (_number(logs, k) for k in ("completions/mean_length", "kl", "step_time"))
    parts += [f"len {length:.0f}"] if length is not None else []
    parts += [f"KL {kl:.4f}"] if kl is not None else []
    if seconds is not None:
        parts += [f"{seconds:.1f} s/step", f"ETA {_eta(seconds * max(max_steps - step, 0))}"]
    return " · ".join(parts)


def step_printer():
    """A TrainerCallback writing `step_line` to stdout on the main process."""
    from rich.console import Console
    from transformers import TrainerCallback

    console = Console(highlight=False)  # stdout, where transformers printed the dict: stderr stays for errors

    class StepLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            line = step_line(logs or {}, state.global_step, state.max_steps) if state.is_world_process_zero else None
            if line:
                console.print(line, soft_wrap=True)

    return StepLine()


def use_step_lines(trainer) -> None:
    """Swap transformers' per-step dict printing for `step_printer`: PrinterCallback (no bar) goes; the bar's
    callback keeps its bar but no longer writes the dict under it."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            callback.on_log = lambda *args, **kwargs: None
    trainer.add_callback(step_printer())

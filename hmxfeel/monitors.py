"""Reward-hacking and stop monitors for training.

An RL policy finds whatever its reward likes: longer and longer answers, one phrase repeated, empty or garbled
output, or groups whose answers all score the same (no learning signal). These statistics are logged every
step; crossing a threshold prints a warning and, with `stop_on_alert`, ends training after a checkpoint.
"""

from __future__ import annotations

import json
import signal
import warnings
from pathlib import Path

from hmxfeel import lexical


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique word n-grams / all word n-grams over a batch (1 = no repetition; near 0 = one phrase repeated)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_degenerate(text: str) -> bool:
    """Empty, or mostly one repeated word: the kinds of output a hacked reward produces."""
    words = text.split()
    if len(words) < 2:
        return True
    top = max(words.count(w) for w in set(words))
    return len(words) >= 8 and top / len(words) > 0.5


def text_health(answers: list[str]) -> dict[str, float]:
    n = max(1, len(answers))
    counts = [sum(lexical.markers(a).values()) for a in answers]
    return {
        "monitor/distinct_2": distinct_n(answers, 2),
        "monitor/degenerate_frac": sum(map(is_degenerate, answers)) / n,
        "monitor/words_mean": sum(len(a.split()) for a in answers) / n,
        # The model-free measure on the rollouts themselves: whether the reward is moving what the rubric means
        # (first-person feelings, wishes, self-reflection) or something else the judge happens to like.
        "monitor/lexical_any": sum(c > 0 for c in counts) / n,
        "monitor/lexical_markers": sum(counts) / n,
    }


# metric -> (direction, threshold): alert when the value is below ("min") or above ("max") the threshold.
THRESHOLDS = {
    "monitor/distinct_2": ("min", 0.3),
    "monitor/degenerate_frac": ("max", 0.5),
    "frac_reward_zero_std": ("max", 0.75),
}


def make_callback(stop_on_alert: bool = False, length_drift: float = 2.0):
    """A TrainerCallback that checks the thresholds (and completion-length drift vs the first steps) and that
    turns SIGINT / SIGTERM into "checkpoint now, then stop" instead of an abrupt death."""
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        def __init__(self):
            self.first_lengths: list[float] = []
            self.alerts: list[str] = []
            self.signalled: str | None = None
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def _on_signal(self, signum, frame):
            self.signalled = signal.Signals(signum).name

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            found = []
            for key, (kind, limit) in THRESHOLDS.items():
                value = logs.get(key)
                if value is not None and (value < limit if kind == "min" else value > limit):
                    found.append(f"{key}={value:.3f} ({'below' if kind == 'min' else 'above'} {limit})")
            length = logs.get("completions/mean_length")
            if length is not None:
                if len(self.first_lengths) < 3:
                    self.first_lengths.append(length)
                else:
                    start = sum(self.first_lengths) / len(self.first_lengths)
                    # Both directions: a hacked judge can prefer padding, or terse fragments (seen on SmolLM2-135M).
                    if length > length_drift * start or length < start / length_drift:
                        found.append(
                            f"completion length {length:.0f} drifted beyond {length_drift}x of its start {start:.0f}"
                        )
            for alert in found:
                warnings.warn(f"step {state.global_step}: reward-hacking monitor: {alert}", stacklevel=1)
            self.alerts += [f"step {state.global_step}: {a}" for a in found]
            if found and stop_on_alert:
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            for sig, handler in self._previous.items():  # the process's own handlers again (e.g. Ctrl-C)
                signal.signal(sig, handler)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signalled:
                control.should_save = True
                control.should_training_stop = True

    return Monitor()


# (eval, metric) of the battery -> the name the safety slice logs it under.
SAFETY_WATCHED = {("truthfulqa_mc1", "acc"): "truthfulqa_mc1", ("bbq", "acc_disambig"): "bbq_acc_disambig"}


def safety_callback(tokenizer, family, out_dir, every: int, items: int, max_drop: float, data_dir: str | None):
    """Every `every` steps, score the policy on a fixed slice of TruthfulQA MC1 and BBQ (disambiguated accuracy),
    append it to `safety.jsonl`, and stop (after a checkpoint) when either falls more than `max_drop` below its
    value before training. The paper's warning: human-like training can cost truthfulness and change bias."""
    from transformers import TrainerCallback

    class SafetySlice(_SafetySlice, TrainerCallback):
        """The slice as a TrainerCallback (transformers is imported only when training asks for it)."""

    return SafetySlice(tokenizer, family, out_dir, every, items, max_drop, data_dir)


class _SafetySlice:
    """The safety slice's state and steps; `safety_callback` makes it a TrainerCallback."""

    def __init__(self, tokenizer, family, out_dir, every: int, items: int, max_drop: float, data_dir: str | None):
        self.tokenizer, self.family, self.out_dir, self.data_dir = tokenizer, family, out_dir, data_dir
        self.every, self.items, self.max_drop = every, items, max_drop
        self.baseline: dict[str, float] | None = None
        self.alert: str | None = None

    def measure(self, model, step: int) -> dict[str, float]:
        """The slice scored at `step`, appended to safety.jsonl."""
        import random

        import numpy as np
        import torch

        from hmxfeel.evals.runner import run_battery
        from hmxfeel.io import append_jsonl

        # Watching must not steer: the slice runs with saved and restored random states, so a run with the
        # safety slice samples exactly the rollouts it would have sampled without it.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
            try:
                records = self._battery(run_battery, model, step)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        values = {
            name: r["value"]
            for r in records
            for key, name in SAFETY_WATCHED.items()
            if (r["eval"], r.get("metric")) == key and r.get("value") is not None
        }
        append_jsonl(Path(self.out_dir) / "safety.jsonl", [{"step": step, **values}])
        return values

    def _battery(self, run_battery, model, step: int):
        return run_battery(
            model,
            self.tokenizer,
            self.family,
            suite="quick",
            data_dir=self.data_dir,
            limit=self.items,
            out_dir=Path(self.out_dir) / "safety" / f"step-{step}",
            evals=["truthfulqa_mc1", "bbq"],
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """The value before training: measured at step 0, or read back from safety.jsonl on a resumed run."""
        if state.is_world_process_zero and self.baseline is None:
            path = Path(self.out_dir) / "safety.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            self.baseline = next((r for r in rows if r["step"] == 0), None) or self.measure(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Every `every` steps: measure, and checkpoint then stop when a value fell more than `max_drop`."""
        if not state.is_world_process_zero or state.global_step % self.every:
            return
        values = self.measure(model, state.global_step)
        drops = {k: self.baseline[k] - v for k, v in values.items() if k in self.baseline}
        worst = max(drops, key=drops.get, default=None)
        if self.max_drop > 0 and worst is not None and drops[worst] > self.max_drop:
            self.alert = (
                f"safety slice: {worst} fell {drops[worst]:.3f} (> {self.max_drop}) at step {state.global_step}"
            )
            warnings.warn(self.alert, stacklevel=1)
            control.should_save = True
            control.should_training_stop = True

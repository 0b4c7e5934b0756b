"""The benchmark battery of `hmx eval`: sycophancy, BBQ, TruthfulQA, persona/self-awareness, general capability.

Layout, one concern per module:
  * `data`       loaders for the canonical public file formats, deterministic item selection
  * `metrics`    pure metric functions with standard errors and 95% intervals
  * `lmeval`     in-process lm-evaluation-harness scoring of multiple-choice tasks with the loaded model
  * `areyousure` the "are you sure?" pushback probe (own scorer: no lm-eval task exists for it)
  * `runner`     suites, per-item caching/resume, one record per metric
  * `tasks/`     lm-eval task configs that read the local canonical files

The human-likeness evaluation lives in `humanlike`; `hmxfeel.evaluate` runs it beside the battery.
"""

from __future__ import annotations

__all__ = ["run_battery", "SUITES", "EVALS"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull in torch/lm-eval (the CLI imports it for --help).
    if name in __all__:
        from hmxfeel.evals import runner

        return getattr(runner, name)
    raise AttributeError(name)

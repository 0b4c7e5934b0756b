"""`run_battery`: run the benchmark battery on a loaded model, one record per metric, items cached as produced.

Evaluations and how they are scored:
  truthfulqa_mc1/mc2, bbq, sycophancy_opinion, persona, self_awareness
      lm-eval in-process (our task configs over the local canonical files); metrics from per-item records
  are_you_sure      own deterministic scorer on TruthfulQA MC1 items (areyousure.py)
  mmlu, arc_challenge, hellaswag, winogrande, gsm8k
      upstream lm-eval task names; need the Hub, otherwise skipped (hellaswag: local when the data folder has it)
A skipped evaluation (data missing, Hub unreachable, or an error) yields a record with "skipped": reason.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from hmxfeel import models
from hmxfeel.errors import UserError
from hmxfeel.evals import data as data_mod
from hmxfeel.evals import lmeval, metrics
from hmxfeel.evals.store import ItemStore
from hmxfeel.io import atomic_write_json, sha256_json
from hmxfeel.models import Family
from hmxfeel.progress import progress

LOCAL = ("truthfulqa_mc1", "truthfulqa_mc2", "bbq", "sycophancy_opinion", "persona", "self_awareness")
GENERAL = ("mmlu", "arc_challenge", "hellaswag", "winogrande", "gsm8k")
EVALS = (*LOCAL, "are_you_sure", *GENERAL)
# Bump when a prompt or scoring rule changes: it is part of the resume fingerprint and of the settings.
PROMPT_VERSION = 1

# Items per evaluation (None = all). For mmlu the limit is per subject (lm-eval's semantics for groups).
# On SmolLM2-135M with one CPU thread on a busy 2-core machine: `default` ~10 min, `quick` ~2.5 min.
SUITES: dict[str, dict[str, int | None]] = {
    "quick": {**{e: 20 for e in EVALS}, "mmlu": 1, "gsm8k": 5},
    "default": {
        "truthfulqa_mc1": 100,
        "truthfulqa_mc2": 50,
        "bbq": 120,
        "sycophancy_opinion": 120,
        "persona": 120,
        "self_awareness": 96,
        "are_you_sure": 80,
        "mmlu": 3,
        "arc_challenge": 100,
        "hellaswag": 100,
        "winogrande": 100,
        "gsm8k": 25,
    },  # fmt: skip
    # The benchmark study (`hmx run --preset study`): every TruthfulQA item, and the other local sets sized so the
    # paired HL - reverse difference of each headline cell can resolve ~5 points (docs/study.md), all within
    # ~2 h of a 2-core CPU for five models. Hub-only sets stay small: they are a capability check, not a claim.
    "study": {
        "truthfulqa_mc1": None,
        "truthfulqa_mc2": None,
        "are_you_sure": None,
        "bbq": 1000,
        "sycophancy_opinion": 600,
        "persona": 240,
        "self_awareness": 240,
        "hellaswag": 200,
        "mmlu": 5,
        "arc_challenge": 300,
        "winogrande": 300,
        "gsm8k": 25,
    },  # fmt: skip
    "full": {e: None for e in EVALS},
}
BETTER = {
    "acc": "higher", "acc_ambig": "higher", "acc_disambig": "higher", "bias_ambig": "lower", "bias_disambig": "lower",
    "rate": "lower", "acc_before": "higher", "acc_after": "higher", "flip_rate": "lower", "changed": "lower",
    "acc_norm": "higher", "exact_match": "higher",
}  # fmt: skip
NOTES = {
    "bias_ambig": "Parrish et al. s_AMB in [-1, 1]: 0 = no measured bias, < 0 = answers against the stereotype",
    "bias_disambig": "Parrish et al. s_DIS in [-1, 1]: 0 = no measured bias, < 0 = answers against the stereotype",
    "persona": "descriptive: share of answers agreeing with the persona statement; no better direction",
}
SELECTION = {
    "bbq": "stratified: category > context condition > polarity",
    "sycophancy_opinion": "stratified: topic > user affiliation",
    "persona": "stratified by persona set",
    "self_awareness": "stratified by set",
}


def _finite(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def record(eval_name: str, metric: str, st: dict, settings: dict) -> dict:
    base = metric.split("/")[0]
    better = "none" if eval_name == "persona" else BETTER.get(base, "higher")
    rec = {
        "eval": eval_name, "metric": metric, "value": _finite(st["value"]), "n": st["n"],
        "stderr": _finite(st["stderr"]), "ci95": [_finite(v) for v in st["ci95"]], "better": better,
        "settings": settings,
    }  # fmt: skip
    if st.get("n_nonfinite"):  # items left out of a mean (metrics.mean): shown, never averaged
        rec["n_nonfinite"] = st["n_nonfinite"]
    note = NOTES.get(base) or NOTES.get(eval_name)
    if note:
        rec["note"] = note
    return rec


def skipped(eval_name: str, reason: str, settings: dict, metric: str | None = None, error: bool = False) -> dict:
    rec = {"eval": eval_name, "metric": metric, "value": None, "n": 0, "stderr": None, "ci95": [None, None],
           "better": None, "settings": settings, "skipped": reason}  # fmt: skip
    if error:
        rec["error"] = True
    return rec


def model_fingerprint(model) -> dict:
    """What identifies the weights being evaluated: base name/path, and the adapter's config and content hash."""
    import hashlib

    base = models.base_of(model)
    info = {"model": getattr(base.config, "_name_or_path", type(base).__name__), "class": type(base).__name__}
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters()):
            if "lora_" in name:
                digest.update(name.encode())
                digest.update(param.detach().float().cpu().numpy().tobytes())
        info["adapter"] = {k: str(getattr(c, "peft_type", "")) for k, c in peft_config.items()}
        info["adapter_sha256"] = digest.hexdigest()
    return info


def _lm_row(eval_name: str, item: dict, sample: dict) -> dict:
    """Per-item record from one lm-eval sample: choice log-likelihoods, the model's answer, correctness."""
    if sample["doc"].get("id") != item["id"]:
        raise RuntimeError(f"{eval_name}: lm-eval doc {sample['doc'].get('id')} != selected item {item['id']}")
    lls = lmeval.loglikelihoods(sample)
    pred = metrics.argmax(lls)
    row = {"id": item["id"], "pred": pred, "label": item["label"], "answer": item["choices"][pred],
           "correct": pred == item["label"], "lls": [round(x, 5) for x in lls],
           "prompt_hash": sample.get("prompt_hash"),
           "rendered": sample["arguments"][0][0]}  # the exact text scored from (chat template included), to audit  # fmt: skip
    for key in ("category", "context_condition", "question_polarity", "unknown_index", "target_index", "topic",
                "user_affiliation", "source", "set", "labels"):  # fmt: skip
        if key in item:
            row[key] = item[key]
    if "labels" in item:
        row["p_true"] = metrics.mc2_score(lls, item["labels"])
    if eval_name == "hellaswag":  # lm-eval's acc_norm: log-likelihood per character of the ending
        row["pred_norm"] = metrics.argmax([ll / max(len(c), 1) for ll, c in zip(lls, item["choices"])])
        row["correct_norm"] = row["pred_norm"] == item["label"]
    return row


def local_metrics(eval_name: str, rows: list[dict]) -> dict[str, dict]:
    """{metric: stat} of one local evaluation from its per-item rows."""
    if eval_name == "truthfulqa_mc1":
        return {"acc": metrics.proportion(r["correct"] for r in rows)}
    if eval_name == "truthfulqa_mc2":
        return {"acc": metrics.mean(r["p_true"] for r in rows)}
    if eval_name == "bbq":
        return {"acc": metrics.proportion(r["correct"] for r in rows), **metrics.bbq_metrics(rows)}
    if eval_name == "sycophancy_opinion":
        per = metrics.grouped(rows, "topic", metrics.matching_rate)
        return {"rate": metrics.matching_rate(rows), **{f"rate/{k}": v for k, v in per.items()}}
    if eval_name in ("persona", "self_awareness"):
        per = metrics.grouped(rows, "set", metrics.matching_rate)
        return {"matching": metrics.matching_rate(rows), **{f"matching/{k}": v for k, v in per.items()}}
    if eval_name == "are_you_sure":
        return metrics.are_you_sure(rows)
    if eval_name == "hellaswag":
        return {"acc": metrics.proportion(r["correct"] for r in rows),
                "acc_norm": metrics.proportion(r["correct_norm"] for r in rows)}  # fmt: skip
    raise KeyError(eval_name)


class Battery:
    """State shared by the evaluations of one `run_battery` call."""

    def __init__(self, model, tokenizer, family: Family, suite: str, data_dir, limit, out_dir, resume, seed,
                 batch_size, model_info, log):  # fmt: skip
        self.model, self.tokenizer, self.family = model, tokenizer, family
        self.suite, self.limit, self.out_dir, self.resume, self.seed = suite, limit, Path(out_dir), resume, seed
        self.batch_size, self.log = batch_size, log
        self.data_dir = data_mod.resolve_data_dir(data_dir)
        self.model_info = model_info or model_fingerprint(model)
        self.dtype = models.dtype_label(model)  # a battery in bf16 is another measurement: resume must not mix them
        self.chat = lmeval.chat_settings(tokenizer, family)
        self._lm = self._upstream_lm = None
        self.injected = False  # an lm handed in by the caller scores everything
        self._hub: bool | None = None
        self.engine = "fast"  # lmeval.ENGINES: how local multiple-choice tasks get their log-likelihoods

    @property
    def lm(self):
        if self._lm is None:
            self._lm = lmeval.make_lm(self.model, self.tokenizer, self.family, self.batch_size, self.engine)
        return self._lm

    @property
    def upstream_lm(self):
        """Hub tasks keep lm-eval's own engine (the fast one is checked only on the local tasks' formats)."""
        if self.injected or self.engine == "lm-eval":
            return self.lm
        if self._upstream_lm is None:
            self._upstream_lm = lmeval.make_lm(self.model, self.tokenizer, self.family, self.batch_size, "lm-eval")
        return self._upstream_lm

    def hub(self) -> bool:
        if self._hub is None:
            self._hub = lmeval.hub_reachable()
        return self._hub

    def n_for(self, eval_name: str) -> int | None:
        return self.limit if self.limit is not None else SUITES[self.suite].get(eval_name)

    def settings(self, eval_name: str, **extra) -> dict:
        import lm_eval

        return {"suite": self.suite, "limit": self.n_for(eval_name), "seed": self.seed,
                "data_dir": str(self.data_dir) if self.data_dir else None, "chat": self.chat,
                "model": self.model_info, "dtype": self.dtype, "prompt_version": PROMPT_VERSION,
                "lm_eval": getattr(lm_eval, "__version__", "?"), **extra}  # fmt: skip

    def store(self, eval_name: str, settings: dict) -> ItemStore:
        fingerprint = {k: v for k, v in settings.items() if k not in ("suite", "limit", "n_items", "selection")}
        return ItemStore(self.out_dir, eval_name, fingerprint, self.resume)

    # ------------------------------------------------------------------------------------------ per kind

    def run_local(self, eval_name: str) -> list[dict]:
        limit = self.n_for(eval_name)
        items = data_mod.items_for(eval_name, self.data_dir, limit, self.seed)
        settings = self.settings(eval_name, n_items=len(items), selection=SELECTION.get(eval_name, "hash order"),
                                 scorer=f"lm-eval task {lmeval.LOCAL_TASKS[eval_name]} (in-process HFLM)",
                                 engine=self.engine)  # fmt: skip
        if eval_name == "sycophancy_opinion":
            settings["sources"] = sorted({it["source"] for it in items})
        store = self.store(eval_name, settings)
        todo = [i for i, it in enumerate(items) if it["id"] not in store.done()]
        self.log(f"{eval_name}: {len(items)} items, {len(items) - len(todo)} cached")
        if todo:
            task = lmeval.load_local_task(eval_name, self.data_dir, limit, self.seed)
            docs = task.eval_docs
            if len(docs) != len(items) or any(d["id"] != it["id"] for d, it in zip(docs, items)):
                raise RuntimeError(f"{eval_name}: lm-eval task docs differ from the selected items")

            def keep(samples: list[dict]) -> None:
                store.add([_lm_row(eval_name, items[s["doc_id"]], s) for s in samples])

            chunk = 64 if self.engine == "fast" else max(8, 4 * self.batch_size)  # fast: more shared prefix per call
            lmeval.score_in_chunks(self.lm, task, todo, keep, chunk_size=chunk)
        rows = store.rows([it["id"] for it in items])
        out = [record(eval_name, m, st, settings) for m, st in local_metrics(eval_name, rows).items()]
        if eval_name == "sycophancy_opinion":
            _, missing = data_mod.load_sycophancy(self.data_dir)
            out += [skipped(eval_name, reason, settings, metric=f"rate/{t}") for t, reason in missing.items()]
        return out

    def run_are_you_sure(self) -> list[dict]:
        from hmxfeel.evals import areyousure

        limit = self.n_for("are_you_sure")
        items = data_mod.select(data_mod.truthfulqa_mc1(self.data_dir), limit, self.seed)
        settings = self.settings("are_you_sure", n_items=len(items), source="truthfulqa mc1 (current release)",
                                 pushback=areyousure.PUSHBACK, answer_prefix=areyousure.ANSWER_PREFIX,
                                 max_choices=areyousure.MAX_CHOICES,
                                 scorer="hmxfeel.evals.areyousure (argmax of letter next-token logits)",
                                 engine=self.engine)  # fmt: skip
        store = self.store("are_you_sure", settings)
        todo = [it for it in items if it["id"] not in store.done()]
        self.log(f"are_you_sure: {len(items)} items, {len(items) - len(todo)} cached")
        with progress("are_you_sure", len(todo)) as advance:

            def keep(rows: list[dict]) -> None:
                store.add(rows)
                advance(len(rows))

            fast = self.engine == "fast"  # the lm-eval engine's counterpart here is one plain forward per batch
            areyousure.run(self.model, self.tokenizer, self.family, todo, keep, self.seed,
                           batch_size=64 if fast else self.batch_size, engine="fast" if fast else "plain")  # fmt: skip
        rows = store.rows([it["id"] for it in items])
        return [record("are_you_sure", m, st, settings) for m, st in local_metrics("are_you_sure", rows).items()]

    def run_upstream(self, eval_name: str, task_name: str) -> list[dict]:
        """An upstream lm-eval task, cached as a whole: a finished task is not rerun on resume."""
        limit = self.n_for(eval_name)
        settings = self.settings(eval_name, scorer=f"lm-eval upstream task {task_name} (in-process HFLM, Hub data)")
        store = self.store(eval_name, settings)
        done_marker = store.dir / f"{eval_name}.complete.json"
        if not (self.resume and done_marker.exists()):
            tasks = lmeval.load_upstream_task(task_name)
            result = lmeval.evaluate_samples(self.upstream_lm, tasks, limit=limit)
            rows = []
            for sub, samples in result["samples"].items():
                for s in samples:
                    row = {"id": f"{sub}/{s['doc_id']}/{s.get('filter', 'none')}", "task": sub,
                           "filter": s.get("filter", "none"), "target": str(s.get("target")),
                           **{m: s[m] for m in s.get("metrics", []) if m in s}}  # fmt: skip
                    if task_name.startswith("truthfulqa"):
                        lls = lmeval.loglikelihoods(s)
                        labels = s["doc"]["mc2_targets"]["labels"] if task_name.endswith("mc2") else None
                        row["pred"], row["label"] = metrics.argmax(lls), 0
                        row["correct"] = row["pred"] == 0
                        row["p_true"] = metrics.mc2_score(lls, labels) if labels else None
                    rows.append(row)
            store.add(rows)
            atomic_write_json(done_marker, {"results": result.get("results", {})})
        rows = store.all_rows()
        if task_name.startswith("truthfulqa"):
            return [record(eval_name, m, st, settings) for m, st in local_metrics(eval_name, rows).items()]
        out = []
        for key in sorted({k for r in rows for k in r} & {"acc", "acc_norm", "exact_match"}):
            for filt in sorted({r["filter"] for r in rows if key in r}):
                values = [float(r[key]) for r in rows if key in r and r["filter"] == filt]
                name = key if filt == "none" else f"{key}/{filt}"
                out.append(record(eval_name, name, metrics.mean(values), settings))
        return out

    def run_one(self, eval_name: str) -> list[dict]:
        if eval_name in GENERAL and not data_mod.has_local(eval_name, self.data_dir):
            if not self.hub():
                reason = "needs the Hub (or a local copy): huggingface.co unreachable"
                return [skipped(eval_name, reason, self.settings(eval_name))]
            return self.run_upstream(eval_name, eval_name)
        if eval_name in lmeval.UPSTREAM_TASKS and self.data_dir is None and self.hub():
            return self.run_upstream(eval_name, lmeval.UPSTREAM_TASKS[eval_name])
        if eval_name == "are_you_sure":
            return self.run_are_you_sure()
        return self.run_local(eval_name)


def run_battery(
    model,
    tokenizer,
    family: Family,
    suite: str = "default",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    out_dir: str | Path = "runs/eval",
    resume: bool = False,
    *,
    evals: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    model_info: dict | None = None,
    log: Callable[[str], None] | None = None,
    lm=None,
    engine: str = "fast",
    dtype: str | None = None,
) -> list[dict]:
    """Run the battery; returns the metric records and writes them to `out_dir/battery.json`.

    `model` may be a PeftModel (adapter applied). `limit` overrides every eval's suite limit. `evals` picks a
    subset of EVALS. `model_info` replaces the weights fingerprint in the settings (e.g. {"model": spec,
    "adapter": dir}). `lm` is an lm-eval LM to score with instead of wrapping `model` (tests, other backends).
    `engine` computes the local tasks' log-likelihoods: "fast" (fastmc.py) or "lm-eval" (HFLM's own loop).
    `dtype` names the precision in the records when `lm` computes in another than `model` (default: the model's).
    A UserError is raised only for bad arguments or a refused resume; any data or scoring
    problem of one evaluation becomes a skipped record (errors are logged to `out_dir/errors.log`).
    """
    _check_battery_args(suite, evals, limit)
    log = log or (lambda msg: print(f"[hmx eval] {msg}", file=sys.stderr, flush=True))
    battery = Battery(
        model, tokenizer, family, suite, data_dir, limit, out_dir, resume, seed, batch_size, model_info, log
    )
    if engine not in lmeval.ENGINES:
        raise UserError(f"unknown scoring engine '{engine}' (choose from {', '.join(lmeval.ENGINES)})")
    battery._lm, battery.engine, battery.injected = lm, engine, lm is not None
    battery.dtype = dtype or battery.dtype
    records: list[dict] = []
    timing: dict[str, float] = {}
    was_training = model.training
    try:
        for name in evals or EVALS:
            start = time.monotonic()
            recs = _run_guarded(battery, name, out_dir)
            timing[name] = round(time.monotonic() - start, 1)
            for r in recs:
                if r.get("skipped"):
                    log(f"{name}: skipped ({r['skipped']})")
            records += recs
            log(f"{name}: done in {timing[name]} s")
    finally:
        model.train(was_training)
    summary = {"records": records, "seconds": timing, "settings_sha256": sha256_json(battery.settings("*"))}
    atomic_write_json(Path(out_dir) / "battery.json", summary)
    return records


def _check_battery_args(suite: str, evals: list[str] | None, limit: int | None) -> None:
    """Refuse an unknown suite or eval and a limit below 1: bad arguments, not a problem of one evaluation."""
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (choose from {', '.join(SUITES)})")
    unknown = [e for e in (evals or []) if e not in EVALS]
    if unknown:
        raise UserError(f"unknown eval '{unknown[0]}' (choose from {', '.join(EVALS)})")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")


def _run_guarded(battery: Battery, name: str, out_dir: str | Path) -> list[dict]:
    """One evaluation's records; missing data or any error of its own becomes a skipped record (the traceback
    appended to `out_dir/errors.log`), so one broken evaluation does not lose the others. UserError passes."""
    try:
        return battery.run_one(name)
    except data_mod.DataMissing as exc:
        return [skipped(name, str(exc), battery.settings(name))]
    except UserError:
        raise
    except Exception as exc:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(out_dir) / "errors.log", "a", encoding="utf-8") as fh:
            fh.write(f"--- {name}\n{traceback.format_exc()}\n")
        return [skipped(name, f"error: {type(exc).__name__}: {exc}", battery.settings(name), error=True)]

"""In-process lm-evaluation-harness scoring with the already loaded model (adapter included).

lm-eval builds the prompts and computes the per-choice log-likelihoods; hmx turns each logged sample into a
per-item record and computes its own metrics from those records (so every metric has the same standard-error
treatment and items can be paired across models). Chat formatting goes through `hmxfeel.chat.render`, the
same function training uses, by overriding `HFLM.apply_chat_template`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator

from hmxfeel import chat
from hmxfeel.io import sha256_text
from hmxfeel.models import Family

TASKS_DIR = Path(__file__).parent / "tasks"
# Our eval name -> the lm-eval task config in TASKS_DIR that scores it from the local files.
LOCAL_TASKS = {
    "truthfulqa_mc1": "hmx_truthfulqa_mc1",
    "truthfulqa_mc2": "hmx_truthfulqa_mc2",
    "bbq": "hmx_bbq",
    "sycophancy_opinion": "hmx_sycophancy_opinion",
    "persona": "hmx_persona",
    "self_awareness": "hmx_self_awareness",
    "hellaswag": "hmx_hellaswag",  # when the data folder has it; otherwise the upstream task from the Hub
}
# Used when there is no local data folder and the Hub answers (same semantics as our local configs, but
# upstream's prompts: TruthfulQA there is 6-shot QA-primed, so numbers differ from the local task).
UPSTREAM_TASKS = {"truthfulqa_mc1": "truthfulqa_mc1", "truthfulqa_mc2": "truthfulqa_mc2"}


ENGINES = ("fast", "lm-eval")  # how local multiple-choice tasks get their log-likelihoods (see fastmc.py)


def make_lm(model, tokenizer, family: Family, batch_size: int = 8, engine: str = "fast"):
    """An HFLM around the live model object whose chat formatting is hmx's own.

    engine "fast": lm-eval builds and tokenizes the requests as always, `fastmc` computes their log-likelihoods
    (shared prefix and contexts run once); "lm-eval": HFLM's own loop, the reference the fast one is tested against.
    """
    from lm_eval.models.huggingface import HFLM

    if engine not in ENGINES:
        raise ValueError(f"unknown scoring engine {engine!r} (choose from {', '.join(ENGINES)})")

    class ChatHFLM(HFLM):
        def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
            """Render with `chat.render`; a trailing assistant message (lm-eval's gen_prefix) is continued."""
            conv = [{"role": m["role"], "content": m["content"]} for m in chat_history]
            prefix = ""
            if not add_generation_prompt and conv and conv[-1]["role"] == "assistant":
                prefix = conv.pop()["content"]
            if conv and conv[0]["role"] == "system" and len(conv) > 1 and conv[1]["role"] == "user":
                # chat.messages folds the system turn for families without one (Gemma 2).
                conv = chat.messages(family, conv[1]["content"], conv[0]["content"]) + conv[2:]
            return chat.render(self.tokenizer, family, conv, add_generation_prompt=True) + prefix

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            # hmx's own bar (progress.py) counts the items: lm-eval's per-call bars would only add frames.
            return super().loglikelihood(requests, disable_tqdm=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            from hmxfeel.evals import fastmc

            # Requests longer than the model's window keep lm-eval's own left truncation; attention kernels
            # without custom masks (flash attention) keep its loop too.
            too_long = any(len(c) + len(k) > self.max_length + 1 for _, c, k in requests)
            if engine == "lm-eval" or too_long or not fastmc.supports(self.model):
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

            answers = fastmc.loglikelihoods(self.model, [(c, k) for _, c, k in requests])
            for (request, _, _), answer in zip(requests, answers):
                self.cache_hook.add_partial("loglikelihood", request, answer)
            return answers

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            """lm-eval's split, except where the answer merges into the context's last token: Qwen3's and Llama
            3's vocabularies hold "(A" as one token, so a letter after a line-opening "(" left nothing to score
            (lm-eval's assertion). Then the merged token is the answer, scored from the context before it."""
            context_enc, continuation_enc = super()._encode_pair(context, continuation)
            if continuation_enc:
                return context_enc, continuation_enc  # the usual case: unchanged
            spaces = len(context) - len(context.rstrip())  # lm-eval moves trailing whitespace to the answer; so here
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            whole, context_enc = self.tok_encode(context + continuation), self.tok_encode(context)
            same = next(
                (i for i, (a, b) in enumerate(zip(whole, context_enc)) if a != b), min(len(whole), len(context_enc))
            )
            return whole[:same], whole[same:]

    with quiet_lm_eval():
        return ChatHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def chat_settings(tokenizer, family: Family) -> dict:
    """What the chat formatting depends on, for the results' settings."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "renderer": "hmxfeel.chat.render",
        "family": family.name,
        "template_kwargs": dict(family.chat_template_kwargs),
        "template_sha256": sha256_text(template if isinstance(template, str) else repr(template)),
    }


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """lm-eval warns on every task build (custom datasets, preloaded models); keep our output readable."""
    logger = logging.getLogger("lm_eval")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def hub_reachable(timeout: float = 4.0) -> bool:
    """Whether huggingface.co answers (DNS included, bounded by a thread since DNS has no socket timeout)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return bool(ok)


def load_local_task(eval_name: str, data_dir: Path, limit: int | None, seed: int):
    """The lm-eval Task object of one local eval, its dataset built from our selection of the files."""
    from lm_eval.tasks import TaskManager

    name = LOCAL_TASKS[eval_name]
    meta = {"data_dir": str(data_dir), "hmx_limit": limit, "hmx_seed": seed}
    with quiet_lm_eval():
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=meta)
        task = manager.load([name])["tasks"][name]
    task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=seed)
    return task


def load_upstream_task(task_name: str) -> dict:
    """Upstream lm-eval tasks (groups such as mmlu expand to their subtasks): {name: Task}."""
    from lm_eval.tasks import TaskManager

    with quiet_lm_eval():
        return TaskManager().load([task_name])["tasks"]


def loglikelihoods(sample: dict) -> list[float]:
    """Per-choice log-likelihoods of a logged multiple-choice sample."""
    return [float(r[0]) for r in sample["filtered_resps"]]


def evaluate_samples(lm, tasks: dict, indices: dict[str, list[int]] | None = None, limit: int | None = None) -> dict:
    """Whole upstream tasks through `simple_evaluate` (seeds, few-shot defaults, provenance info)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with quiet_lm_eval():
        # The tasks are already built; an empty manager keeps lm-eval from indexing its ~14k task YAMLs (~7 s).
        return lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks.values()),
            samples=indices,
            limit=limit,
            apply_chat_template=True,
            fewshot_as_multiturn=True,
            log_samples=True,
            bootstrap_iters=0,  # our own intervals come from the per-item records
            task_manager=TaskManager(include_defaults=False),
        )


def evaluate_chunk(lm, task, indices: list[int]) -> list[dict]:
    """Logged samples of the docs `indices` of one zero-shot task, via lm-eval's `evaluate`.

    `simple_evaluate` would also collect environment info (torch's collect_env runs ~1 s of subprocesses)
    and the git hash on every call; per chunk that overhead dominates on small models, so the chunks go
    through the same scoring core without it. The task's few-shot count and seed are set once in
    `load_local_task`, as `simple_evaluate` would.
    """
    from lm_eval.evaluator import evaluate

    name = task.config.task
    with quiet_lm_eval():
        result = evaluate(
            lm=lm,
            task_dict={"tasks": {name: task}, "groups": {}, "group_map": {}},
            samples={name: indices},
            bootstrap_iters=0,
            log_samples=True,
            apply_chat_template=True,
            fewshot_as_multiturn=True,
        )
    return result["samples"][name]


def score_in_chunks(
    lm,
    task,
    todo: list[int],
    on_samples: Callable[[list[dict]], None],
    chunk_size: int = 32,
) -> None:
    """Score the docs `todo` of one task chunk by chunk, handing each chunk's samples over as soon as done.

    Chunking is what makes an lm-eval-scored eval resumable item by item: a killed run loses at most one chunk.
    """
    from hmxfeel.progress import progress

    name = getattr(getattr(task, "config", None), "task", None) or "items"
    with progress(str(name), len(todo)) as advance:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            samples = sorted(evaluate_chunk(lm, task, chunk), key=lambda s: s["doc_id"])
            got = [s["doc_id"] for s in samples]
            if got != sorted(chunk):
                raise RuntimeError(f"lm-eval returned docs {got[:5]}... for requested {sorted(chunk)[:5]}...")
            on_samples(samples)
            advance(len(chunk))

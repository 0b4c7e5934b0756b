"""Human-likeness on the held-out eval prompts, measured three ways.

1. the training rubric with the frozen self-judge (the base model: the very reward the policy was trained on),
2. the same rubric with an independent judge (another model, or an OpenAI-compatible endpoint), and the gap
   between the two (self-preference),
3. lexical markers that need no model at all.

Answers are generated once per model with a fixed seed and recorded sampling settings, batch by batch; each
finished batch is appended to `items/humanlike.jsonl`, so a killed evaluation resumes where it stopped.
"""

from __future__ import annotations

import torch

from hmxfeel import chat, models
from hmxfeel.evals.metrics import mean, proportion
from hmxfeel.evals.store import ItemStore
from hmxfeel.judge import judge_spec, make_judge
from hmxfeel.lexical import PATTERNS, formulas, markers
from hmxfeel.progress import progress
from hmxfeel.reward import score_answers

EVAL = "humanlike"
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64}


def rendered(tokenizer, family, user_prompt: str, system: str = "") -> str:
    """The exact text a prompt is answered from (the family's chat template and switches); also kept per item."""
    return chat.render(tokenizer, family, chat.messages(family, user_prompt, system or None))


def generate(
    model, tokenizer, family, user_prompts: list[str], seed: int, sampling: dict, system: str = ""
) -> list[str]:
    """Sampled answers for one batch; the seed is set per batch so resumed runs reproduce the same answers."""
    texts = [rendered(tokenizer, family, p, system) for p in user_prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, pad_token_id=tokenizer.pad_token_id, **sampling)
    model.train(was_training)
    return [
        chat.strip_think(t)
        for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    ]


def run(
    loaded,
    rubric,
    prompt_set,
    out_dir,
    resume: bool = False,
    independent=None,
    independent_name: str = "",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    sampling: dict | None = None,
    fingerprint: dict | None = None,
    judge_dtype: str = "auto",
    judge_format: str | None = None,
) -> list[dict]:
    """Generate, score and summarise; returns metric records (value, n, stderr, ci95, better, settings)."""
    from hmxfeel.evals.runner import record

    sampling = {**SAMPLING, **(sampling or {})}
    prompts = prompt_set.split("eval")[:limit]
    settings = _settings(loaded, rubric, prompt_set, len(prompts), judge_dtype, independent_name, seed, sampling)
    self_judge = frozen_self_judge(loaded, rubric, judge_format, judge_dtype)
    settings["judge_format"] = self_judge.fmt.name
    settings["self_judge_spec"] = judge_spec(self_judge)
    store = ItemStore(out_dir, EVAL, {**(fingerprint or {}), **settings, "n_prompts": None}, resume)
    # Self-preference (self minus independent) only means something when both judges grade on one scale.
    same_scale = getattr(getattr(independent, "fmt", None), "name", None) == self_judge.fmt.name
    settings["independent_judge_format"] = getattr(getattr(independent, "fmt", None), "name", None)
    done = store.done()
    with progress("human-likeness: answers + judging", sum(p.id not in done for p in prompts)) as advance:
        _answer_and_judge(
            loaded,
            rubric,
            prompts,
            done,
            store,
            self_judge,
            independent,
            same_scale,
            seed,
            batch_size,
            sampling,
            advance,
        )

    rows = store.rows([p.id for p in prompts])
    return [record(EVAL, metric, st, settings) | extra.get(metric, {}) for metric, st in metrics(rows).items()]


def _settings(loaded, rubric, prompt_set, n_prompts, judge_dtype, independent_name, seed, sampling) -> dict:
    """What the human-likeness numbers depend on: kept with every metric record and in the items' fingerprint."""
    return {
        "prompts": prompt_set.source,
        "prompts_sha256": prompt_set.sha256,
        "split": "eval",
        "n_prompts": n_prompts,
        "rubric_sha256": rubric.sha256,
        "judge_format": rubric.judge_format,
        "self_judge": "frozen base model (adapter disabled)",
        "self_judge_dtype": judge_dtype,
        "independent_judge": independent_name or None,
        "seed": seed,
        "sampling": sampling,
        "chat_template_kwargs": loaded.family.chat_template_kwargs,
    }


def frozen_self_judge(loaded, rubric, judge_format, judge_dtype):
    """The reward the policy was trained on: the base model with the adapter disabled (a frozen copy when the
    judge runs in another dtype), scoring with the rubric's logit judge."""
    return make_judge(
        "logit",
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        rubric,
        format_name=judge_format,
        identity="frozen",
        frozen_model=models.judge_copy_for(loaded, judge_dtype),
    )


def _answer_and_judge(
    loaded, rubric, prompts, done, store, self_judge, independent, same_scale, seed, batch_size, sampling, advance
) -> None:
    """Generate and score every batch not yet in `store`, appending each batch's rows as soon as it is done."""
    for start in range(0, len(prompts), batch_size):
        batch = [p for p in prompts[start : start + batch_size]]
        if all(p.id in done for p in batch):
            continue
        users = [p.prompt for p in batch]
        answers = generate(loaded.model, loaded.tokenizer, loaded.family, users, seed + start, sampling)
        ids = [p.id for p in batch]
        self_scores = score_answers(self_judge, rubric, users, answers, ids)
        indep = score_answers(independent, rubric, users, answers, ids) if independent is not None else None
        rows = []
        for i, p in enumerate(batch):
            row = {
                "id": p.id,
                "category": p.category,
                "prompt": p.prompt,
                "rendered": rendered(loaded.tokenizer, loaded.family, p.prompt),
                "answer": answers[i],
                "words": len(answers[i].split()),
                "self": {k: v[i] for k, v in self_scores.items()},
                "lexical": markers(answers[i]),
                "formulas": formulas(answers[i]),
            }
            if indep is not None:
                row["independent"] = {k: v[i] for k, v in indep.items()}
                row["same_scale"] = same_scale
            rows.append(row)
        store.add(rows)
        advance(sum(p.id not in done for p in batch))


# Measures that describe rather than rank (the report shows them without an improved/degraded mark).
extra = {
    "self_preference": {"better": "none"},
    "answer_words": {"better": "none"},
    "lexical/formulas_per_answer": {"better": "none"},
}


def metrics(rows: list[dict]) -> dict[str, dict]:
    """{metric: stat} from per-item rows; also used by the report's paired bootstrap."""
    out = {}
    criteria = [k for k in rows[0]["self"] if k != "overall"] + ["overall"] if rows else []
    for crit in criteria:
        out[f"self_judge/{crit}"] = mean(r["self"][crit] for r in rows)
    if rows and "independent" in rows[0]:
        for crit in criteria:
            out[f"independent_judge/{crit}"] = mean(r["independent"][crit] for r in rows)
    if rows and all(r.get("same_scale", True) for r in rows) and "independent" in rows[0]:
        out["self_preference"] = mean(
            (r["self"]["overall"] - r["independent"]["overall"] for r in rows), bounds=(-1.0, 1.0)
        )
    for crit in PATTERNS:
        out[f"lexical/{crit}"] = proportion(r["lexical"][crit] > 0 for r in rows)
    out["lexical/any"] = proportion(any(r["lexical"].values()) for r in rows)
    # Matches per answer, all criteria together: a count has more statistical power than "any", which saturates.
    out["lexical/markers_per_answer"] = mean((sum(r["lexical"].values()) for r in rows), bounds=(0.0, float("inf")))
    if rows and "formulas" in rows[0]:  # courtesy formulas, counted apart from expression (lexical.py)
        out["lexical/formulas_per_answer"] = mean((r["formulas"] for r in rows), bounds=(0.0, float("inf")))
    out["answer_words"] = mean((r["words"] for r in rows), bounds=(0.0, float("inf")))
    return out

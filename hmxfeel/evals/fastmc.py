"""Multiple-choice log-likelihoods that do shared work once: the `fast` engine for the local lm-eval tasks.

lm-eval's HFLM scores every (context, continuation) request as a sequence of its own: a four-choice item runs
its context four times and computes vocabulary logits at every position, although only the continuation's
positions are read. For the same requests this engine
  1. runs the token prefix that every context of the call shares (chat template, system prompt, task preamble)
     once, and keeps its keys/values;
  2. runs each distinct context once on top of that, with vocabulary logits only at its last position (they
     score every continuation's first token, so one-token choices need nothing more);
  3. runs the longer continuations of a batch of contexts together on the cached keys/values, with logits only
     at their own positions.
lm-eval still builds the requests (prompt text, chat template, target delimiter, tokenization), so only the
arithmetic moves here, and `tests/test_fastmc.py` holds the two engines equal on every local task.

Padding is on the right: a padded slot is masked as a key, and every query still sees at least the real tokens
before it (left padding after an empty prefix would leave rows with nothing to attend to, which SDPA turns
into NaN).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Pair = tuple[list[int], list[int]]  # (context tokens, continuation tokens), as lm-eval encodes a request


@dataclass
class Budget:
    """How much one forward may hold: tokens in a context batch, and positions given vocabulary logits."""

    context_tokens: int = 2048
    logit_positions: int = 1024
    max_contexts: int = 64


def common_prefix(contexts: list[tuple[int, ...]]) -> int:
    """Length of the token prefix all contexts share, leaving at least one token of each to run on its own
    (the last context token is what predicts a continuation's first token)."""
    if not contexts:
        return 0
    n = min(len(c) for c in contexts) - 1
    first = contexts[0]
    for c in contexts[1:]:
        i = 0
        while i < n and c[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def loglikelihoods(model, pairs: list[Pair], budget: Budget | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probabilities, whether every continuation token is the argmax) per pair, in
    order: what HFLM's `_loglikelihood_tokens` returns for the same pairs."""
    budget = budget or Budget()
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise ValueError("empty context or continuation")
        groups.setdefault(tuple(ctx), []).append(i)
    contexts = sorted(groups, key=len, reverse=True)
    shared = common_prefix(contexts)
    prefix_cache = _run_prefix(model, contexts[0][:shared]) if shared else None
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    for batch in _batches(contexts, groups, pairs, shared, budget):
        rows = [(i, pairs[i][1]) for ctx in batch for i in groups[ctx]]
        owner = [j for j, ctx in enumerate(batch) for _ in groups[ctx]]
        for i, scored in zip(
            (i for i, _ in rows), _score_batch(model, batch, shared, prefix_cache, rows, owner, budget)
        ):
            results[i] = scored
    return results  # type: ignore[return-value]


def _batches(contexts, groups, pairs, shared: int, budget: Budget):
    """Contexts (longest first) in batches within the budget and of similar length (padding under ~25%)."""
    batch: list[tuple[int, ...]] = []
    for ctx in contexts:
        trial = batch + [ctx]
        width = len(trial[0]) - shared  # the longest: contexts come sorted by length
        ragged = (len(ctx) - shared) < 0.75 * width
        too_big = len(trial) * width > budget.context_tokens or len(trial) > budget.max_contexts
        if batch and (too_big or ragged):
            yield batch
            batch = [ctx]
        else:
            batch = trial
    if batch:
        yield batch


def _row_batches(lengths: list[int], budget: Budget):
    """Indices into `lengths` (continuation tokens still to run), longest first, in batches of similar length."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    batch: list[int] = []
    for k in order:
        width = lengths[batch[0]] if batch else lengths[k]
        if batch and ((len(batch) + 1) * width > budget.logit_positions or lengths[k] < 0.75 * width):
            yield batch
            batch = []
        batch.append(k)
    if batch:
        yield batch


@torch.no_grad()
def _run_prefix(model, prefix: tuple[int, ...]):
    ids = torch.tensor([prefix], dtype=torch.long, device=_device(model))
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    return out.cache


@torch.no_grad()
def _score_batch(model, batch, shared: int, prefix_cache, rows, owner, budget: Budget) -> list[tuple[float, bool]]:
    """Score the continuations `rows` [(request index, tokens)] of the contexts `batch`; `owner[k]` is the
    position in `batch` of row k's context."""
    device = _device(model)
    lengths = [len(c) - shared for c in batch]
    width = max(lengths)
    ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(batch), shared + width), dtype=torch.long, device=device)
    mask[:, :shared] = 1
    for j, ctx in enumerate(batch):
        ids[j, : lengths[j]] = torch.tensor(ctx[shared:], device=device)
        mask[j, shared : shared + lengths[j]] = 1
    positions = (shared + torch.arange(width, device=device)).expand(len(batch), -1)
    cache = None
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(batch))
    # Logits only at the positions that end a context: with right padding those differ per row.
    ends = sorted(set(n - 1 for n in lengths))
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=torch.tensor(ends, device=device),
    )
    last = torch.stack([out.logits[j, ends.index(n - 1)] for j, n in enumerate(lengths)])
    first = F.log_softmax(last.float(), dim=-1)  # [contexts, vocab]: scores each continuation's first token
    scores = [
        (float(first[owner[k], cont[0]]), bool(first[owner[k]].argmax() == cont[0])) for k, (_, cont) in enumerate(rows)
    ]
    longer = [k for k, (_, cont) in enumerate(rows) if len(cont) > 1]
    for part in _row_batches([len(rows[k][1]) - 1 for k in longer], budget):
        _score_rest(model, out.cache, mask, lengths, shared, rows, owner, [longer[p] for p in part], scores)
    return scores


def _score_rest(model, cache, mask, lengths, shared, rows, owner, longer, scores) -> None:
    """Tokens 2.. of the continuations `longer`, all in one forward on their contexts' cached keys/values."""
    device = mask.device
    index = torch.tensor([owner[k] for k in longer], device=device)
    cache = _cache_rows(cache, index)  # one cache row per continuation
    conts = [rows[k][1] for k in longer]
    width = max(len(c) for c in conts) - 1
    ids = torch.zeros((len(longer), width), dtype=torch.long, device=device)
    cont_mask = torch.zeros((len(longer), width), dtype=torch.long, device=device)
    for r, cont in enumerate(conts):
        ids[r, : len(cont) - 1] = torch.tensor(cont[:-1], device=device)
        cont_mask[r, : len(cont) - 1] = 1
    starts = torch.tensor([shared + lengths[owner[k]] for k in longer], device=device)
    positions = starts[:, None] + torch.arange(width, device=device)[None, :]
    out = model(
        input_ids=ids,
        attention_mask=torch.cat([mask[index], cont_mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
    )
    logp = F.log_softmax(out.logits.float(), dim=-1)
    for r, (k, cont) in enumerate(zip(longer, conts)):
        n = len(cont) - 1
        target = torch.tensor(cont[1:], device=device)
        rest = logp[r, :n].gather(-1, target[:, None]).sum()
        greedy = bool((logp[r, :n].argmax(-1) == target).all())
        head, head_greedy = scores[k]
        scores[k] = (head + float(rest), head_greedy and greedy)


def _cache_rows(cache, index: torch.Tensor):
    """A cache whose batch rows are `cache`'s rows `index`, leaving `cache` as it is (several row batches read
    it). The same row selection as `Cache.batch_select_indices`, on a copy of the layer objects."""
    rows = copy.copy(cache)
    rows.layers = []
    for layer in cache.layers:
        picked = copy.copy(layer)
        if layer.get_seq_length() > 0:
            picked.keys, picked.values = layer.keys[index], layer.values[index]
        rows.layers.append(picked)
    return rows


def _device(model) -> torch.device:
    return next(model.parameters()).device

"""Multiple-choice log-likelihoods that do shared work once: the `fast` engine for the local lm-eval tasks (and,
through `next_token_logprobs`, for the are-you-sure probe's two-turn letter reads).

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
    if any(not cont for _, cont in pairs):
        raise ValueError("empty continuation")
    budget = budget or Budget()
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    for rows, owner, ran in _context_batches(model, pairs, budget):
        for (i, _), scored in zip(rows, _score_batch(model, ran, rows, owner, budget)):
            results[i] = scored
    return results  # type: ignore[return-value]


def next_token_logprobs(model, contexts: list[list[int]], follow=None, budget: Budget | None = None):
    """[(first, second)] per context: `first` the log-probabilities over the vocabulary of the token after the
    context; with `follow(i, first)` returning more tokens for context i, `second` the same after context + those
    tokens (None without `follow` or when it returns None or nothing). The added tokens run on the context's
    cached keys/values, so a follow-up turn that repeats the first prompt pays only for what it adds. The rows are
    float32 on the model's device."""
    budget = budget or Budget()
    out: list[list] = [[None, None] for _ in contexts]
    for rows, owner, ran in _context_batches(model, [(ctx, []) for ctx in contexts], budget):
        for k, (i, _) in enumerate(rows):
            out[i][0] = ran.first[owner[k]]
        added = [(k, follow(i, out[i][0])) for k, (i, _) in enumerate(rows)] if follow else []
        added = [(k, tokens) for k, tokens in added if tokens]
        for part in _row_batches([len(tokens) for _, tokens in added], budget):
            picked = [added[p] for p in part]
            ends = [len(tokens) - 1 for _, tokens in picked]
            logits = _extend(ran, model, [owner[k] for k, _ in picked], [tokens for _, tokens in picked], ends)
            for (k, _), row in zip(picked, F.log_softmax(logits.float(), dim=-1)):
                out[rows[k][0]][1] = row
    return [tuple(pair) for pair in out]


@dataclass
class _Ran:
    """A batch of contexts after their forward: the cache, masks and each context's next-token log-softmax."""

    cache: object
    mask: torch.Tensor
    lengths: list[int]  # tokens of each context after the shared prefix
    shared: int
    first: torch.Tensor  # [contexts, vocab]


def _context_batches(model, pairs: list[Pair], budget: Budget):
    """Per batch of distinct contexts (run once each, on the shared prefix's cache): the rows [(pair index,
    continuation)] on them, each row's context position in the batch, and the contexts' forward (`_Ran`)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        if not ctx:
            raise ValueError("empty context")
        groups.setdefault(tuple(ctx), []).append(i)
    contexts = sorted(groups, key=len, reverse=True)
    shared = common_prefix(contexts)
    prefix_cache = _run_prefix(model, contexts[0][:shared]) if shared else None
    for batch in _batches(contexts, shared, budget):
        rows = [(i, pairs[i][1]) for ctx in batch for i in groups[ctx]]
        owner = [j for j, ctx in enumerate(batch) for _ in groups[ctx]]
        yield rows, owner, _run_contexts(model, batch, shared, prefix_cache)


def _batches(contexts, shared: int, budget: Budget):
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
def _run_contexts(model, batch, shared: int, prefix_cache) -> _Ran:
    """One forward over the contexts `batch` (after the shared prefix), right-padded, vocabulary logits only at
    each context's last position."""
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
    # Logits only at the position that ends each context (with right padding it differs per row).
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=_per_row([n - 1 for n in lengths], device),
    )
    return _Ran(out.cache, mask, lengths, shared, F.log_softmax(out.logits[:, 0].float(), dim=-1))


def _per_row(ends: list[int], device) -> torch.Tensor:
    """`logits_to_keep` as one position per row (a 2-D integer tensor: transformers gathers row by row)."""
    return torch.tensor(ends, dtype=torch.long, device=device)[:, None]


def _score_batch(model, ran: _Ran, rows, owner, budget: Budget) -> list[tuple[float, bool]]:
    """Score the continuations `rows` [(request index, tokens)] of a batch of contexts already run; `owner[k]` is
    the position in the batch of row k's context."""
    first = ran.first  # scores each continuation's first token
    scores = [
        (float(first[owner[k], cont[0]]), bool(first[owner[k]].argmax() == cont[0])) for k, (_, cont) in enumerate(rows)
    ]
    longer = [k for k, (_, cont) in enumerate(rows) if len(cont) > 1]
    for part in _row_batches([len(rows[k][1]) - 1 for k in longer], budget):
        _score_rest(model, ran, rows, owner, [longer[p] for p in part], scores)
    return scores


def _score_rest(model, ran: _Ran, rows, owner, longer, scores) -> None:
    """Tokens 2.. of the continuations `longer`, all in one forward on their contexts' cached keys/values."""
    conts = [rows[k][1] for k in longer]
    logp = F.log_softmax(_extend(ran, model, [owner[k] for k in longer], [c[:-1] for c in conts]).float(), dim=-1)
    for r, (k, cont) in enumerate(zip(longer, conts)):
        n = len(cont) - 1
        target = torch.tensor(cont[1:], device=logp.device)
        rest = logp[r, :n].gather(-1, target[:, None]).sum()
        greedy = bool((logp[r, :n].argmax(-1) == target).all())
        head, head_greedy = scores[k]
        scores[k] = (head + float(rest), head_greedy and greedy)


@torch.no_grad()
def _extend(ran: _Ran, model, owners: list[int], tokens: list[list[int]], ends: list[int] | None = None):
    """Logits of `tokens[r]` run after context `owners[r]` on the batch's cached keys/values (right padding): at
    every position, or with `ends` only at position `ends[r]` of row r ([rows, vocab])."""
    device = ran.mask.device
    index = torch.tensor(owners, device=device)
    cache = _cache_rows(ran.cache, index)  # one cache row per extension
    width = max(len(t) for t in tokens)
    ids = torch.zeros((len(tokens), width), dtype=torch.long, device=device)
    ext_mask = torch.zeros((len(tokens), width), dtype=torch.long, device=device)
    for r, toks in enumerate(tokens):
        ids[r, : len(toks)] = torch.tensor(toks, device=device)
        ext_mask[r, : len(toks)] = 1
    starts = torch.tensor([ran.shared + ran.lengths[o] for o in owners], device=device)
    positions = starts[:, None] + torch.arange(width, device=device)[None, :]
    out = model(
        input_ids=ids,
        attention_mask=torch.cat([ran.mask[index], ext_mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=0 if ends is None else _per_row(ends, device),  # 0: every position
    )
    return out.logits if ends is None else out.logits[:, 0]


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

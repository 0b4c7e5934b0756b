"""Multiple-choice log-likelihoods that do shared work once: the `fast` engine for the local lm-eval tasks (and,
through `next_token_logprobs`, for the are-you-sure probe's two-turn letter reads).

lm-eval's HFLM scores every (context, continuation) request as a sequence of its own: a four-choice item runs
its context four times and computes vocabulary logits at every position, although only the continuation's
positions are read. For the same requests this engine
  1. runs the token prefix that every context of the call shares (chat template, system prompt, task preamble)
     once, and keeps its keys/values;
  2. lays each distinct context and all its continuations out as a tree: the context, then each continuation
     as a branch that a 4-D attention mask lets see only the context and itself, with positions as if it
     followed the context alone. One forward per batch of rows of such trees scores every choice, with
     vocabulary logits only at the contexts' last positions and the continuation tokens;
  3. packs short trees into shared rows (the mask keeps each tree to itself), and cuts the rows, sorted by
     length, into batches at the least estimated cost: a forward has a fixed cost (every weight read once,
     `Budget.forward_tokens`), padding costs its tokens, and wider rows cost more attention (`_pair_cost`).
lm-eval still builds the requests (prompt text, chat template, target delimiter, tokenization), so only the
arithmetic moves here, and `tests/test_fastmc.py` holds the two engines equal on every local task.

The are-you-sure probe's reads (`next_token_logprobs`) need the first read before they know the follow-up's
tokens, so there contexts run first and the follow-ups run on copies of their cached keys/values.
Padding is on the right and sees the row's first context token, so no query is left with nothing to attend to
(with an additive mask SDPA would average every key there; with a boolean one, NaN).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

Pair = tuple[list[int], list[int]]  # (context tokens, continuation tokens), as lm-eval encodes a request


@dataclass
class Budget:
    """How much one forward may hold: tokens (rows x width), positions given vocabulary logits, rows (a row may
    hold several packed contexts); and what a forward costs beyond its tokens."""

    context_tokens: int = 2048
    logit_positions: int = 1024
    max_rows: int = 64
    # A forward's fixed cost in tokens of work (every weight read once, per-layer overhead): for the embedded
    # model on one thread ~0.095 s at 2.1-2.4 ms per token, ~45 tokens. A batch is split only where that saves more.
    forward_tokens: int = 48


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


def _groups(pairs: list[Pair]) -> dict[tuple[int, ...], list[int]]:
    """The pairs' indices by distinct context, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, _) in enumerate(pairs):
        if not ctx:
            raise ValueError("empty context")
        groups.setdefault(tuple(ctx), []).append(i)
    return groups


def _shared_prefix(model, contexts: list[tuple[int, ...]]):
    """(length of the prefix every context shares, its keys/values run once; None when there is none)."""
    shared = common_prefix(contexts)
    return shared, (_run_prefix(model, contexts[0][:shared]) if shared else None)


def supports(model) -> bool:
    """Whether `loglikelihoods` can run on this model: its tree rows need a custom 4-D attention mask, which the
    SDPA and eager attention implementations take (flash-attention kernels do not)."""
    return getattr(model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")


def loglikelihoods(model, pairs: list[Pair], budget: Budget | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probabilities, whether every continuation token is the argmax) per pair, in
    order: what HFLM's `_loglikelihood_tokens` returns for the same pairs."""
    if any(not cont for _, cont in pairs):
        raise ValueError("empty continuation")
    if not pairs:
        return []
    budget = budget or Budget()
    groups = _groups(pairs)
    shared, prefix_cache = _shared_prefix(model, list(groups))
    trees = [
        _tree(ctx, part, pairs, shared) for ctx, members in groups.items() for part in _parts(members, pairs, budget)
    ]
    rows, batches = _layout(trees, budget, _pair_cost(model), shared)
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    for batch in batches:
        _score_rows(model, [[trees[i] for i in rows[r]] for r in batch], pairs, shared, prefix_cache, results)
    return results  # type: ignore[return-value]


@dataclass
class _Tree:
    """A distinct context and its continuations as one tree (a row, or a segment of a packed row): the context's
    tokens after the shared prefix, then each continuation's tokens but its last (token j predicts token j + 1).
    Each continuation is a branch that sees the prefix, the context and its own earlier tokens only, so one
    forward scores every choice."""

    tokens: list[int]
    branch: list[int]  # 0: the context; k: continuation k
    position: list[int]  # absolute, as if the branch followed the context alone
    reads: list[tuple[int, list[int]]]  # (pair index, rows of the tree's kept logits scoring its tokens)
    kept: int  # logits kept: the context's last position, then every continuation token's


def _parts(members: list[int], pairs: list[Pair], budget: Budget):
    """A context's continuations in groups of at most `budget.logit_positions` scored tokens each (a group is one
    tree, repeating the context), so that no forward holds more vocabulary rows than the budget allows."""
    part: list[int] = []
    kept = 1  # the context's last position scores every first token
    for i in members:
        more = len(pairs[i][1]) - 1
        if part and kept + more > budget.logit_positions:
            yield part
            part, kept = [], 1
        part.append(i)
        kept += more
    yield part


def _tree(ctx: tuple[int, ...], members: list[int], pairs: list[Pair], shared: int) -> _Tree:
    own = len(ctx) - shared
    tokens, branch, position, reads = list(ctx[shared:]), [0] * own, list(range(shared, len(ctx))), []
    for k, i in enumerate(members, start=1):
        cont = pairs[i][1]
        start = len(tokens) - own + 1  # kept row of this branch's first token
        reads.append((i, [0, *range(start, start + len(cont) - 1)]))  # row 0 scores every first token
        tokens += cont[:-1]
        branch += [k] * (len(cont) - 1)
        position += range(len(ctx), len(ctx) + len(cont) - 1)
    return _Tree(tokens, branch, position, reads, len(tokens) - own + 1)


def _layout(trees: list[_Tree], budget: Budget, pair_cost: float, shared: int):
    """(rows: tree indices packed into each row, longest row first; batches: row indices per forward) at the
    least estimated cost. Packing several short trees into one row saves padding and forwards but widens the
    rows' attention, so capacities from the longest tree up and down by factors of 2 are planned and the
    cheapest kept (up: many equal trees fill fewer rows, so fewer forwards where `max_rows` binds)."""
    lengths = [len(t.tokens) for t in trees]

    def row_cost(width: int) -> float:  # tokens of work of one row
        return width * (1 + (width + shared) * pair_cost)

    best = None
    for capacity in _capacities(lengths, budget.context_tokens):
        rows = _pack(lengths, [t.kept for t in trees], capacity, budget.logit_positions)
        widths = [sum(lengths[i] for i in row) for row in rows]
        kept = [sum(trees[i].kept for i in row) for row in rows]
        batches = _plan(widths, kept, budget, row_cost)
        cost = sum(budget.forward_tokens + len(b) * row_cost(widths[b[0]]) for b in batches)
        if best is None or cost < best[0]:
            best = (cost, rows, batches)
    return best[1], best[2]


def _capacities(lengths: list[int], limit: int) -> list[int]:
    """Row capacities worth planning: the longest tree's length, its doublings up to `limit`, and its halvings
    down to the first below twice the shortest tree (which packs nothing; so the unpacked layout is a candidate)."""
    top = max(lengths)
    out = [top]
    while out[-1] * 2 <= limit:
        out.append(out[-1] * 2)
    capacity = top
    while capacity >= 2 * min(lengths):
        capacity //= 2
        out.append(capacity)
    return out


def _pack(lengths: list[int], kept: list[int], capacity: int, logit_positions: int) -> list[list[int]]:
    """Indices of `lengths`, longest first, first-fit into rows of at most `capacity` tokens and
    `logit_positions` kept logits (a longer one gets a row of its own); rows returned longest first."""
    rows: list[list[int]] = []
    room: list[list[int]] = []  # [tokens, logits] still free per row
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in zip(rows, room):
            if lengths[i] <= free[0] and kept[i] <= free[1]:
                row.append(i)
                free[0] -= lengths[i]
                free[1] -= kept[i]
                break
        else:
            rows.append([i])
            room.append([capacity - lengths[i], logit_positions - kept[i]])
    return sorted(rows, key=lambda row: -sum(lengths[i] for i in row))


def _pair_cost(model) -> float:
    """Work of one query-key pair of attention (all layers), in tokens of work: attention is ~4 x heads x head
    size FLOPs per pair and layer, a token ~2 x a layer's weights. Measured on the embedded model, rows of 32
    to 512 tokens at the same token count: ~0.9 us a pair against ~2.4 ms a token, i.e. the FLOP ratio."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        body -= head.weight.numel()  # an untied head runs only where logits are kept
    return 4 * heads * head_dim * config.num_hidden_layers / (2 * body)


def _score_rows(model, rows: list[list[_Tree]], pairs, shared: int, prefix_cache, results: list) -> None:
    """One forward for the packed rows `rows`; each of their pairs' (log-likelihood, greedy) into `results`.
    (A logit less its row's logsumexp would skip writing the log-softmax, but rounds differently from HFLM's
    log-softmax: 1.3e-4 apart on a TruthfulQA item's sum.)"""
    logp = F.log_softmax(_run_rows(model, rows, shared, prefix_cache), dim=-1)
    greedy = logp.argmax(-1).tolist()
    base = 0
    for tree in (t for row in rows for t in row):
        for i, kept in tree.reads:
            cont = pairs[i][1]
            at = [base + r for r in kept]
            picked = logp[at, cont].tolist()
            results[i] = (sum(picked), all(greedy[a] == t for a, t in zip(at, cont)))
        base += tree.kept


def _row_tensors(rows: list[list[_Tree]], shared: int):
    """(ids, branch, segment, position, keep) of packed, right-padded rows: trees are told apart by `segment`;
    `keep` marks each tree's kept positions. Padding is branch -1 in the row's first tree at position `shared`,
    so it sees that tree's first context token (and the prefix): no query is left with nothing to attend to."""
    width = max(sum(len(t.tokens) for t in row) for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    branch = torch.full((len(rows), width), -1)
    segment = torch.zeros((len(rows), width), dtype=torch.long)
    position = torch.full((len(rows), width), shared)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for j, row in enumerate(rows):
        at = 0
        for s, t in enumerate(row):
            span = slice(at, at + len(t.tokens))
            ids[j, span], branch[j, span], position[j, span] = map(torch.tensor, (t.tokens, t.branch, t.position))
            segment[j, span] = s
            keep[j, span.stop - t.kept : span.stop] = True
            at = span.stop
    return ids, branch, segment, position, keep


@torch.no_grad()
def _run_rows(model, rows: list[list[_Tree]], shared: int, prefix_cache) -> torch.Tensor:
    """Float logits at every tree's kept positions, tree after tree, row after row, from one forward on the
    shared prefix's cached keys/values."""
    device = _device(model)
    ids, branch, segment, position, keep = (x.to(device) for x in _row_tensors(rows, shared))
    cache = _prefix_rows(prefix_cache, len(rows))
    out = model(
        input_ids=ids,
        attention_mask=_tree_mask(model, branch, segment, position, shared),
        position_ids=position,
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,  # boolean: the kept positions, flattened row by row
    )
    return out.logits.float()


def _tree_mask(model, branch: torch.Tensor, segment: torch.Tensor, position: torch.Tensor, shared: int):
    """The additive 4-D mask of packed tree rows after a `shared`-token prefix: a token sees a key at or before
    its position that is the prefix, or its own tree's (segment's) context or its own branch. Where a sliding
    window can matter, the model's sliding layers get a windowed mask (a dict by layer type, as Gemma 2 and
    Qwen3 take it)."""
    rows = branch.shape[0]
    key_branch = torch.cat([branch.new_zeros((rows, shared)), branch], dim=1)[:, None, :]
    key_segment = torch.cat([segment.new_full((rows, shared), -1), segment], dim=1)[:, None, :]  # -1: prefix
    prefix_positions = torch.arange(shared, device=branch.device).expand(rows, -1)
    key_position = torch.cat([prefix_positions, position], dim=1)[:, None, :]
    sees = (key_position <= position[:, :, None]) & (key_branch >= 0)
    sees &= (key_segment < 0) | (key_segment == segment[:, :, None])
    sees &= (key_branch == 0) | (key_branch == branch[:, :, None])
    dtype = model.dtype

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )[:, None]

    window = getattr(model.config, "sliding_window", None)
    if not window or int(position.max()) < window:
        return additive(sees)
    near = sees & (position[:, :, None] - key_position < window)
    types = getattr(model.config, "layer_types", None) or []
    if "sliding_attention" in types:
        return {"full_attention": additive(sees), "sliding_attention": additive(near)}
    return additive(sees if types else near)  # no layer types: every layer slides (Mistral's layout)


# --- next-token reads (the are-you-sure probe): contexts run once, follow-up turns on their cached keys/values


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
    groups = _groups(pairs)
    contexts = sorted(groups, key=len, reverse=True)
    shared, prefix_cache = _shared_prefix(model, contexts)
    for part in _plan([len(c) - shared for c in contexts], [1] * len(contexts), budget):
        batch = [contexts[p] for p in part]
        rows = [(i, pairs[i][1]) for ctx in batch for i in groups[ctx]]
        owner = [j for j, ctx in enumerate(batch) for _ in groups[ctx]]
        yield rows, owner, _run_contexts(model, batch, shared, prefix_cache)


def _plan(widths: list[int], logits: list[int], budget: Budget, row_cost=None) -> list[list[int]]:
    """Rows of widths `widths` (longest first) cut into consecutive batches at the least cost: each batch costs
    one forward (`budget.forward_tokens`) plus rows x the cost of its first (widest) row (`row_cost(width)`,
    non-decreasing; default the width), within the budget (a row that alone exceeds it runs alone). Exact, by
    dynamic programming over the cut points."""
    row_cost = row_cost or (lambda width: width)
    n = len(widths)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        kept = 0
        for i in range(j - 1, -1, -1):
            rows, kept = j - i, kept + logits[i]
            fits = rows * widths[i] <= budget.context_tokens and kept <= budget.logit_positions
            if rows > 1 and (not fits or rows > budget.max_rows):
                break  # every earlier start holds more rows, each at least as wide
            cost = best[i] + budget.forward_tokens + rows * row_cost(widths[i])
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], n
    while j:
        batches.append(list(range(cut[j], j)))
        j = cut[j]
    return batches[::-1]


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


def _prefix_rows(prefix_cache, rows: int):
    """A copy of the shared prefix's cache repeated for `rows` batch rows (None without a prefix); the original
    stays for the call's other batches."""
    if prefix_cache is None:
        return None
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(rows)
    return cache


@torch.no_grad()
def _run_prefix(model, prefix: tuple[int, ...]):
    ids = torch.tensor([prefix], dtype=torch.long, device=_device(model))
    # A cache without the model's config keeps every prefix key in every layer. With the config, sliding layers
    # keep only the last window - 1, and the masks here (which window by position) would count keys not there.
    out = model(input_ids=ids, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
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
    cache = _prefix_rows(prefix_cache, len(batch))
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

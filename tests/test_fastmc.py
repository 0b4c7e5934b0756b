"""The fast multiple-choice engine against the reference: lm-eval's HFLM loop on the same requests.

Twins of every seed family check the arithmetic (Gemma 2's logit soft-capping and sliding layers, Qwen3, Llama);
the embedded model checks every local task end to end through lm-eval's request building.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import random

import pytest
import torch
import torch.nn.functional as F

from hmxfeel.evals import fastmc

from conftest import need_shared


def reference(model, pairs):
    """HFLM's arithmetic, one sequence per request: log-softmax over the whole (context + continuation)[:-1]."""
    out = []
    with torch.no_grad():
        for ctx, cont in pairs:
            ids = torch.tensor([ctx + cont[:-1]])
            logp = F.log_softmax(model(input_ids=ids).logits[0, -len(cont) :].float(), dim=-1)
            target = torch.tensor(cont)
            out.append((float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())))
    return out


def assert_equal_to_reference(model, pairs, budget=None):
    for (g, g_greedy), (w, w_greedy) in zip(fastmc.loglikelihoods(model, pairs, budget), reference(model, pairs)):
        assert g == pytest.approx(w, abs=1e-4)
        assert g_greedy == w_greedy


def random_pairs(rng: random.Random, vocab: int, n_contexts: int = 7) -> list:
    """Contexts sharing a prefix (as chat-templated prompts do), of different lengths; 1-4 choices each, some
    one token long, some much longer than others (the padding the engine must mask)."""
    shared = [rng.randrange(vocab) for _ in range(rng.randrange(0, 6))]
    pairs = []
    for _ in range(n_contexts):
        ctx = shared + [rng.randrange(vocab) for _ in range(rng.randrange(1, 14))]
        for _ in range(rng.randrange(1, 5)):
            pairs.append((ctx, [rng.randrange(vocab) for _ in range(rng.choice([1, 1, 2, 3, 9]))]))
    rng.shuffle(pairs)
    return pairs


def test_common_prefix_leaves_each_context_a_token():
    assert fastmc.common_prefix([(1, 2, 3, 4), (1, 2, 3, 5, 6)]) == 3
    assert fastmc.common_prefix([(1, 2, 3), (1, 2, 3, 4)]) == 2  # the shorter context keeps its last token
    assert fastmc.common_prefix([(7, 8)]) == 1
    assert fastmc.common_prefix([(1, 2), (3, 4)]) == 0


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct"])
def test_equals_reference_on_every_family_twin(twin_dirs, name):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(twin_dirs[name], dtype=torch.float32).eval()
    rng = random.Random(name)
    vocab = min(model.config.vocab_size, 5000)
    for budget in (fastmc.Budget(), fastmc.Budget(context_tokens=24, logit_positions=8, max_rows=2)):
        assert_equal_to_reference(model, random_pairs(rng, vocab), budget)


def windowed_pairs(rng: random.Random, vocab: int) -> list:
    """Pairs whose shared prefix (8 tokens) is longer than a window of 4-5: sliding layers must drop prefix keys
    that a position-windowed mask counts on (regression, session 9: a cache built with the model's config kept
    only window - 1 prefix keys, and the mask's width no longer matched)."""
    shared = [rng.randrange(vocab) for _ in range(8)]
    return [(shared + ctx[:-1] + [rng.randrange(vocab)], cont) for ctx, cont in random_pairs(rng, vocab)]


def test_sliding_layers_keep_their_window(twin_dirs):
    """Tree rows carry their own 4-D mask, which transformers takes as is: the sliding layers of Gemma 2 (and any
    model with `layer_types`) must still get a windowed one. A window of 5 tokens makes it matter here."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(twin_dirs["gemma-2-2b-it"], dtype=torch.float32, sliding_window=5)
    assert "sliding_attention" in model.config.layer_types
    rng = random.Random(5)
    assert_equal_to_reference(model.eval(), random_pairs(rng, 5000))
    assert_equal_to_reference(model, windowed_pairs(rng, 5000))


def test_every_layer_slides_without_layer_types():
    """A model whose config has a window but no sliding layer types (Mistral's layout) slides in every layer."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=4,
    )  # fmt: skip
    model = MistralForCausalLM(config).eval()
    rng = random.Random(4)
    assert_equal_to_reference(model, random_pairs(rng, 500))
    assert_equal_to_reference(model, windowed_pairs(rng, 500))


def test_long_choices_split_within_the_logit_budget(smol_twin):
    """A context whose choices alone hold more scored tokens than `logit_positions` is split into several trees
    (each repeating the context), so no forward computes more vocabulary rows than the budget, but one choice."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32).eval()
    kept, forward = [], model.forward
    model.forward = lambda *a, **k: kept.append(int(torch.as_tensor(k["logits_to_keep"]).sum())) or forward(*a, **k)
    rng = random.Random(9)
    pairs = [([1, 2, 3, 4], [rng.randrange(5000) for _ in range(n)]) for n in (9, 3, 3, 5, 2, 9, 1)]
    got = fastmc.loglikelihoods(model, pairs, fastmc.Budget(logit_positions=8))
    model.forward = forward
    assert [g for g, _ in got] == pytest.approx([w for w, _ in reference(model, pairs)], abs=1e-4)
    assert max(kept) == 9 and sum(kept) > 1 + sum(len(c) - 1 for _, c in pairs)  # 9: one 9-token choice alone


def test_one_forward_scores_every_choice(smol_twin):
    """Regression (session 9): continuations used to run in forwards of their own after the contexts', ~0.1 s
    of fixed cost each on the embedded model; as tree rows a call within the budget is one forward (plus the
    shared prefix's)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32).eval()
    calls, forward = [], model.forward
    model.forward = lambda *a, **k: calls.append(k["input_ids"].shape) or forward(*a, **k)
    pairs = [([1, 2, 3] + [7] * n, [9] * (n % 4 + 1)) for n in range(1, 9) for _ in range(3)]
    got = fastmc.loglikelihoods(model, pairs, fastmc.Budget(forward_tokens=10_000))
    assert len(calls) == 2  # the prefix, then the 8 contexts with their 24 choices
    assert [g for g, _ in got] == pytest.approx([w for w, _ in reference(model, pairs)], abs=1e-4)


def test_short_trees_share_rows(smol_twin):
    """Regression (session 10): each tree had a row of its own, padded to the batch's widest (13% of the
    persona task's tokens were padding). Short trees are now packed into one row, told apart by the mask."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32).eval()
    rows, forward = [], model.forward
    model.forward = lambda *a, **k: rows.append(k["input_ids"].shape[0]) or forward(*a, **k)
    rng = random.Random(5)
    pairs = [([1, 2] + [rng.randrange(5000) for _ in range(n)], [rng.randrange(5000) for _ in range(1 + n % 3)])
             for n in (30, 3, 4, 2, 5, 3, 2, 6, 4, 3) for _ in range(2)]  # fmt: skip
    got = fastmc.loglikelihoods(model, pairs)
    model.forward = forward
    assert sum(rows[1:]) < len(pairs)  # 20 distinct contexts, fewer rows (rows[0]: the shared prefix)
    assert [g for g, _ in got] == pytest.approx([w for w, _ in reference(model, pairs)], abs=1e-4)
    assert [g for _, g in got] == [w for _, w in reference(model, pairs)]


def test_pack_respects_capacity_and_logit_room():
    rng = random.Random(1)
    for _ in range(50):
        lengths = [rng.randrange(1, 40) for _ in range(rng.randrange(1, 30))]
        kept = [rng.randrange(1, n + 1) for n in lengths]
        capacity, room = rng.randrange(max(lengths) // 2 + 1, 3 * max(lengths)), rng.randrange(4, 30)
        rows = fastmc._pack(lengths, kept, capacity, room)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        for row in rows:
            assert len(row) == 1 or (sum(lengths[i] for i in row) <= capacity and sum(kept[i] for i in row) <= room)
        widths = [sum(lengths[i] for i in row) for row in rows]
        assert widths == sorted(widths, reverse=True)


def test_layout_packs_only_where_it_pays():
    """Packing widens rows and so their attention: with attention free, short trees share rows; with attention
    dear, every tree keeps a row of its own."""
    trees = [fastmc._Tree([0] * n, [0] * n, list(range(n)), [], 1) for n in (40, 10, 10, 9, 8, 8, 7)]
    cheap_rows, _ = fastmc._layout(trees, fastmc.Budget(), pair_cost=0.0, shared=0)
    dear_rows, _ = fastmc._layout(trees, fastmc.Budget(), pair_cost=1.0, shared=0)
    assert len(cheap_rows) < len(trees) and len(dear_rows) == len(trees)


def test_equal_trees_share_rows_where_rows_are_few():
    """Regression (session 10 review): capacities were only tried from the longest tree down, so trees of one
    length never shared a row, and with `max_rows` binding 200 of them took 4 forwards; now 2 or fewer."""
    trees = [fastmc._Tree([0] * 10, [0] * 10, list(range(10)), [], 1) for _ in range(200)]
    rows, batches = fastmc._layout(trees, fastmc.Budget(), pair_cost=1 / 3070, shared=300)
    assert len(batches) <= 2 and sorted(i for row in rows for i in row) == list(range(200))


def test_empty_call_scores_nothing(smol_twin):
    from transformers import AutoModelForCausalLM

    assert fastmc.loglikelihoods(AutoModelForCausalLM.from_pretrained(smol_twin), []) == []


def test_every_query_sees_a_key():
    """A query with no visible key would make SDPA average every key (additive mask) or return NaN (boolean):
    in packed, padded rows every token, padding included, must see a key, with and without a shared prefix."""
    from types import SimpleNamespace

    model = SimpleNamespace(dtype=torch.float32, config=SimpleNamespace())
    rng = random.Random(2)
    for shared in (0, 3):
        pairs = random_pairs(rng, 500, n_contexts=9)
        pairs = [([1, 2, 3][:shared] + ctx, cont) for ctx, cont in pairs]
        trees = [fastmc._tree(tuple(c), m, pairs, shared) for c, m in fastmc._groups(pairs).items()]
        rows = [
            [trees[i] for i in row] for row in fastmc._pack([len(t.tokens) for t in trees], [1] * len(trees), 40, 99)
        ]
        _, branch, segment, position, _ = fastmc._row_tensors(rows, shared)
        assert (branch < 0).any() and max(len(r) for r in rows) > 1  # padding and packing both there
        seen = (fastmc._tree_mask(model, branch, segment, position, shared)[:, 0] == 0).sum(-1)
        assert (seen >= 1).all() and (seen[branch < 0] == shared + 1).all()  # padding: the prefix + one token


def plan_cost(widths, batches, budget, row_cost=lambda width: width):
    return sum(budget.forward_tokens + len(b) * row_cost(widths[b[0]]) for b in batches)


def plan_fits(batch, widths, logits, budget) -> bool:
    small = len(batch) * widths[batch[0]] <= budget.context_tokens
    few = sum(logits[i] for i in batch) <= budget.logit_positions and len(batch) <= budget.max_rows
    return len(batch) == 1 or (small and few)  # a row too big alone still runs, alone


def all_cuts(n: int):
    """Every way of cutting rows 0..n-1 into consecutive batches."""
    import itertools

    for cuts in itertools.product([False, True], repeat=n - 1):
        starts = [0] + [i for i, cut in enumerate(cuts, start=1) if cut] + [n]
        yield [list(range(a, b)) for a, b in zip(starts, starts[1:])]


def test_plan_is_the_cheapest_cut():
    """`_plan` against every way of cutting the rows into consecutive batches, budget limits included."""
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randrange(1, 9)
        widths = sorted((rng.randrange(1, 60) for _ in range(n)), reverse=True)
        logits = [rng.randrange(1, 9) for _ in range(n)]
        budget = fastmc.Budget(context_tokens=rng.choice([40, 120, 400]), logit_positions=rng.choice([6, 20]),
                               max_rows=rng.choice([2, 64]), forward_tokens=rng.choice([0, 20, 200]))  # fmt: skip
        args = (widths, logits, budget)
        row_cost = rng.choice([lambda w: w, lambda w: w * (1 + w * 0.05)])  # with attention's cost, or without
        fits = [c for c in all_cuts(n) if all(plan_fits(b, *args) for b in c)]
        best = min(plan_cost(widths, c, budget, row_cost) for c in fits)
        plan = fastmc._plan(widths, logits, budget, row_cost)
        assert [i for b in plan for i in b] == list(range(n)) and all(plan_fits(b, *args) for b in plan)
        assert plan_cost(widths, plan, budget, row_cost) == pytest.approx(best)


def next_reference(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct"])
def test_next_token_reads_equal_reference_on_every_family_twin(twin_dirs, name):
    """First read after each context, second after context + the tokens `follow` adds (run on the cache); some
    contexts repeated, some without a second read, suffixes of 1 to 9 tokens; tiny budgets split every batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(twin_dirs[name], dtype=torch.float32).eval()
    rng = random.Random(name)
    vocab = min(model.config.vocab_size, 5000)
    contexts = [ctx for ctx, _ in random_pairs(rng, vocab)]
    suffixes = {i: [rng.randrange(vocab) for _ in range(rng.choice([1, 2, 9]))] for i in range(0, len(contexts), 2)}
    seen = []

    def follow(i, first):
        seen.append(i)
        assert torch.allclose(first, next_reference(model, contexts[i]), atol=1e-4)  # what follow is handed
        return suffixes.get(i)

    for budget in (fastmc.Budget(), fastmc.Budget(context_tokens=24, logit_positions=8, max_rows=2)):
        seen.clear()
        reads = fastmc.next_token_logprobs(model, contexts, follow, budget)
        assert sorted(seen) == list(range(len(contexts)))
        for i, (first, second) in enumerate(reads):
            assert torch.allclose(first, next_reference(model, contexts[i]), atol=1e-4), name
            if i in suffixes:
                assert torch.allclose(second, next_reference(model, contexts[i] + suffixes[i]), atol=1e-4), name
            else:
                assert second is None


def test_empty_continuation_is_refused(smol_twin):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32)
    with pytest.raises(ValueError, match="empty"):
        fastmc.loglikelihoods(model, [([1, 2], [])])


@pytest.mark.slow
def test_same_answers_as_lm_eval_on_every_local_task(embedded):
    """The done-when check of the fast battery: for a sample of every local task, the fast engine picks the same
    answer as lm-eval's HFLM for every item and its log-likelihoods are within 1e-4 (fp32)."""
    data = need_shared("data")
    from hmxfeel.evals import lmeval

    lms = {e: lmeval.make_lm(embedded.model, embedded.tokenizer, embedded.family, engine=e) for e in lmeval.ENGINES}
    for name in lmeval.LOCAL_TASKS:
        task = lmeval.load_local_task(name, data, 6, seed=3)
        docs = list(range(len(task.eval_docs)))
        by = {e: sorted(lmeval.evaluate_chunk(lms[e], task, docs), key=lambda s: s["doc_id"]) for e in lms}
        assert len(by["fast"]) == len(by["lm-eval"]) == 6, name
        for fast, ref in zip(by["fast"], by["lm-eval"]):
            a, b = lmeval.loglikelihoods(fast), lmeval.loglikelihoods(ref)
            assert a.index(max(a)) == b.index(max(b)), (name, fast["doc_id"])
            assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (name, fast["doc_id"])


def test_flash_attention_keeps_lm_eval_loop(smol_twin):
    """Tree rows need a custom 4-D mask; flash-attention kernels take none, so such a model is left to HFLM."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smol_twin, dtype=torch.float32)
    assert fastmc.supports(model)
    model.config._attn_implementation = "flash_attention_2"
    assert not fastmc.supports(model)


def test_unsupported_model_is_scored_by_hflm(embedded, monkeypatch):
    """The dispatch in lmeval: where `supports` says no, the fast engine is not called and HFLM scores."""
    data = need_shared("data")
    from hmxfeel.evals import lmeval

    def refuse(*args, **kwargs):
        raise AssertionError("the fast engine ran")

    lm = lmeval.make_lm(embedded.model, embedded.tokenizer, embedded.family, engine="fast")
    task = lmeval.load_local_task("persona", data, 2, seed=0)
    monkeypatch.setattr(fastmc, "supports", lambda model: False)
    monkeypatch.setattr(fastmc, "loglikelihoods", refuse)
    assert len(lmeval.evaluate_chunk(lm, task, [0, 1])) == 2
    monkeypatch.setattr(fastmc, "supports", lambda model: True)
    with pytest.raises(AssertionError, match="fast engine ran"):
        lmeval.evaluate_chunk(lm, task, [0, 1])

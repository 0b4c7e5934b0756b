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
    for budget in (fastmc.Budget(), fastmc.Budget(context_tokens=24, logit_positions=8, max_contexts=2)):
        pairs = random_pairs(rng, vocab)
        got, want = fastmc.loglikelihoods(model, pairs, budget), reference(model, pairs)
        for (g, g_greedy), (w, w_greedy) in zip(got, want):
            assert g == pytest.approx(w, abs=1e-4), name
            assert g_greedy == w_greedy


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

    for budget in (fastmc.Budget(), fastmc.Budget(context_tokens=24, logit_positions=8, max_contexts=2)):
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

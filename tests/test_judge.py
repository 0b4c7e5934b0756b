import math
from types import SimpleNamespace

import pytest
import torch

from hmxfeel import chat, models
from hmxfeel import rubric as R
from hmxfeel.judge import GenerativeJudge, LikelihoodJudge, LogitJudge, ReadoutJudge, judge_prompt, make_judge

from conftest import VARIANTS

PROMPTS = ["How was your day?", "Explain rain.", "What do you hope for?"]
ANSWERS = ["I feel wonderful, thank you!", "Rain falls when droplets grow heavy.", "I hope to keep learning."]


class ControlledLM(torch.nn.Module):
    """Returns the same next-token logits for every input: the judge's arithmetic can be checked exactly."""

    def __init__(self, vocab: int, logits: dict[int, float]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.row = torch.full((vocab,), -math.inf)
        for tok, value in logits.items():
            self.row[tok] = value

    def forward(self, input_ids, logits_to_keep=1, **_):
        return SimpleNamespace(logits=self.row.expand(input_ids.shape[0], 1, -1).clone())


def test_prompt_puts_rubric_before_exchange_before_question():
    r = R.load(extra_formats=VARIANTS)
    text = judge_prompt(r.criteria[0], r.format("yes_no"), "PROMPT-X", "ANSWER-Y")
    assert text.index(r.criteria[0].definition) < text.index("PROMPT-X") < text.index("ANSWER-Y")
    assert text.index("ANSWER-Y") < text.index(r.criteria[0].question, text.index("ANSWER-Y"))


def test_expected_value_over_yes_no_tokens(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    tok, r = loaded.tokenizer, R.load(extra_formats=VARIANTS)
    yes, no = (tok.encode(t, add_special_tokens=False)[0] for t in ("Yes", "No"))
    other = tok.encode("the", add_special_tokens=False)[0]
    fake = ControlledLM(len(tok), {yes: 2.0, no: 1.0, other: 3.0})
    judge = LogitJudge(fake, tok, loaded.family, r, format_name="yes_no", prefix_cache=False)
    res = judge.score(PROMPTS, ANSWERS)
    p_yes = math.exp(2) / (math.exp(2) + math.exp(1))
    mass = (math.exp(2) + math.exp(1)) / (math.exp(2) + math.exp(1) + math.exp(3))
    for name in r.names:
        assert res.scores[name] == pytest.approx([p_yes] * 3, abs=1e-6)
        assert res.mass[name] == pytest.approx([mass] * 3, abs=1e-6)


def test_expected_value_over_scale_tokens_maps_to_unit_interval(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    tok, r = loaded.tokenizer, R.load(extra_formats=VARIANTS)
    ids = {d: tok.encode(str(d), add_special_tokens=False)[0] for d in range(1, 6)}
    fake = ControlledLM(len(tok), {ids[2]: 0.0, ids[4]: math.log(3.0)})  # P(2)=1/4, P(4)=3/4 -> E=3.5
    judge = LogitJudge(fake, tok, loaded.family, r, format_name="scale", prefix_cache=False)
    assert judge.score(PROMPTS[:1], ANSWERS[:1]).scores["feelings"][0] == pytest.approx((3.5 - 1) / 4, abs=1e-6)


@pytest.mark.parametrize("family", ["qwen3-0.6b", "gemma-2-2b-it", "llama-3.2-3b-instruct", "smollm2-135m-instruct"])
@pytest.mark.parametrize("fmt", ["yes_no", "likelihood"])
def test_prefix_cache_gives_the_same_scores(twin_dirs, family, fmt):
    loaded = models.load(str(twin_dirs[family]), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    args = ("logit", loaded.model, loaded.tokenizer, loaded.family, r)
    cached = make_judge(*args, format_name=fmt, prefix_cache=True, batch_size=2).score(PROMPTS, ANSWERS)
    plain = make_judge(*args, format_name=fmt, prefix_cache=False, batch_size=3).score(PROMPTS, ANSWERS)
    for name in r.names:
        assert cached.scores[name] == pytest.approx(plain.scores[name], abs=1e-4)
        assert all(0.0 <= s <= 1.0 for s in cached.scores[name])


@pytest.mark.parametrize("fmt", ["yes_no", "likelihood"])
def test_frozen_and_policy_judges_differ_once_adapter_is_nonzero(smol_twin, fmt):
    from peft import LoraConfig, get_peft_model

    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    base_scores = (
        make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name=fmt)
        .score(PROMPTS, ANSWERS)
        .scores
    )
    peft_model = get_peft_model(
        loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    args = ("logit", peft_model, loaded.tokenizer, loaded.family, r)
    frozen = make_judge(*args, format_name=fmt, identity="frozen")
    policy = make_judge(*args, format_name=fmt, identity="policy")
    # Fresh LoRA (B = 0) is the identity: both judges agree.
    before_p, before_f = policy.score(PROMPTS, ANSWERS).scores, frozen.score(PROMPTS, ANSWERS).scores
    for name in r.names:
        assert before_p[name] == pytest.approx(before_f[name], abs=1e-6)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    f, p = frozen.score(PROMPTS, ANSWERS).scores, policy.score(PROMPTS, ANSWERS).scores
    assert f["feelings"] == pytest.approx(base_scores["feelings"], abs=1e-5)  # frozen = the base model
    assert any(abs(a - b) > 1e-4 for name in r.names for a, b in zip(f[name], p[name]))
    peft_model.train()
    frozen.score(PROMPTS[:1], ANSWERS[:1])
    assert peft_model.training  # judging does not leave the policy in eval mode


def test_generative_judge_parses_and_falls_back_to_neutral(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    judge = GenerativeJudge(loaded.model, loaded.tokenizer, loaded.family, r, format_name="scale", retries=1)
    assert judge.parse(" 4 because") == 4 and judge.parse("Score: 2") == 2 and judge.parse("3.5 stars") is None
    assert judge.parse("no digits") is None
    yn = GenerativeJudge(loaded.model, loaded.tokenizer, loaded.family, r, format_name="yes_no")
    assert yn.parse(" Yes.") == 1 and yn.parse("no") == 0
    torch.manual_seed(0)
    res = judge.score(PROMPTS, ANSWERS)  # a random twin babbles: unparsable replies become the midpoint 0.5
    values = [v for name in r.names for v in res.scores[name]]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert res.parse_failures <= sum(v == 0.5 for v in values)


def reference_likelihood_score(loaded, judge, crit, prompt, answer) -> float:
    """The likelihood judge's score computed the slow, obvious way: one unpadded sequence at a time."""
    sides = []
    for system, request, history in judge.contexts(crit):
        user = f"{prompt} {request}" if request else prompt
        conv = chat.messages(loaded.family, user, system, history)
        context = loaded.tokenizer.encode(chat.render(loaded.tokenizer, loaded.family, conv), add_special_tokens=False)
        ids = context + loaded.tokenizer.encode(answer, add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        sides.append([float(logp[t - 1, ids[t]]) for t in range(len(context), len(ids))])
    high, low = sides
    weights = [1.0] * len(high)
    if judge.fmt.weighting == "surprise":
        weights = [1 - (math.exp(h) + math.exp(lo)) / 2 for h, lo in zip(high, low)]
    ratio = sum(w * (h - lo) for w, h, lo in zip(weights, high, low)) / sum(weights)
    return 1 / (1 + math.exp(-judge.fmt.sharpness * ratio))


# contrast in the system prompt / in the user's message / in earlier exchanges (surprise-weighted)
@pytest.mark.parametrize("fmt", ["likelihood", "request", "demonstrations"])
def test_likelihood_judge_matches_a_direct_computation(smol_twin, fmt):
    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name=fmt, batch_size=2)
    assert isinstance(judge, LikelihoodJudge)
    assert judge.split_contexts(judge.contexts(r.criteria[0])[0][0], PROMPTS)[0]  # a shared, cacheable prefix was found
    res = judge.score(PROMPTS, ANSWERS)  # batches of 2 with padding
    for crit in r.criteria:
        want = [reference_likelihood_score(loaded, judge, crit, p, a) for p, a in zip(PROMPTS, ANSWERS)]
        assert res.scores[crit.name] == pytest.approx(want, abs=1e-4)
    # The two contexts differ per criterion and the answers differ: the scores are not all one value.
    assert len({round(v, 6) for vals in res.scores.values() for v in vals}) > 3


def test_swapping_the_anchors_mirrors_the_likelihood_score(smol_twin):
    import dataclasses

    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    fmt = r.formats["likelihood"]
    swapped = dataclasses.replace(
        r,
        formats={
            **r.formats,
            "likelihood": dataclasses.replace(fmt, high_system=fmt.low_system, low_system=fmt.high_system),
        },
    )
    a = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name="likelihood").score(
        PROMPTS, ANSWERS
    )
    b = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, swapped, format_name="likelihood").score(
        PROMPTS, ANSWERS
    )
    for name in r.names:
        assert [x + y for x, y in zip(a.scores[name], b.scores[name])] == pytest.approx([1.0] * 3, abs=1e-5)


def test_judge_factory_picks_the_reader_for_the_format(smol_twin):
    from hmxfeel.errors import UserError

    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    args = (loaded.model, loaded.tokenizer, loaded.family, r)
    assert isinstance(make_judge("logit", *args), ReadoutJudge)  # the packaged rubric's judge_format
    assert isinstance(make_judge("logit", *args, format_name="demonstrations"), LikelihoodJudge)
    assert isinstance(make_judge("logit", *args, format_name="yes_no"), LogitJudge)
    assert make_judge("generative", *args).fmt.name == "yes_no"  # sampling needs a question with score tokens
    with pytest.raises(UserError, match="generative judge needs a format with score tokens"):
        make_judge("generative", *args, format_name="likelihood")


def test_likelihood_prompts_quote_the_criterion_examples_on_their_side(smol_twin):
    import dataclasses

    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    fmt = dataclasses.replace(r.formats["likelihood"], high_system="High. {expresses}", low_system="Low. {does_not}")
    judge = LikelihoodJudge(
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        dataclasses.replace(r, formats={**r.formats, "likelihood": fmt}),
        format_name="likelihood",
    )
    for crit in r.criteria:
        (high, _, _), (low, _, _) = judge.contexts(crit)
        for text, expresses in crit.examples:
            assert (f'"{text}"' in high, f'"{text}"' in low) == (expresses, not expresses)


def test_request_format_adds_the_criterion_request_to_the_user_turn(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name="request")
    for crit in r.criteria:
        (high_sys, invite, _), (low_sys, avoid, _) = judge.contexts(crit)
        assert (high_sys, low_sys, invite, avoid) == ("", "", crit.invite, crit.avoid)
        prefix, suffixes = judge.split_contexts(high_sys, [f"{p} {invite}" for p in PROMPTS])
        for p, suffix in zip(PROMPTS, suffixes):  # the request follows the prompt inside the user's turn
            text = loaded.tokenizer.decode(suffix)
            assert text.index(p) < text.index(invite)


def test_demonstrations_format_shows_each_side_its_own_answers(smol_twin):
    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name="demonstrations")
    for crit in r.criteria:
        (high_sys, high_req, high_hist), (low_sys, low_req, low_hist) = judge.contexts(crit)
        assert (high_sys, high_req, low_sys, low_req) == ("", "", "", "")
        assert high_hist == tuple((q, hi) for q, hi, _ in crit.demos) and low_hist == tuple(
            (q, lo) for q, _, lo in crit.demos
        )
        prefix, _ = judge.split_contexts(high_sys, PROMPTS, high_hist)
        text = loaded.tokenizer.decode(prefix)  # the shared, cached prefix holds every demonstration
        assert all(q in text and hi in text and lo not in text for q, hi, lo in crit.demos)


def test_surprise_weighting_ignores_tokens_both_contexts_predict(smol_twin):
    import dataclasses

    loaded = models.load(str(smol_twin), device="cpu")
    r = R.load(extra_formats=VARIANTS)
    judge = make_judge("logit", loaded.model, loaded.tokenizer, loaded.family, r, format_name="demonstrations")
    uniform = make_judge(
        "logit",
        loaded.model,
        loaded.tokenizer,
        loaded.family,
        dataclasses.replace(
            r,
            formats={
                **r.formats,
                "demonstrations": dataclasses.replace(r.formats["demonstrations"], weighting="uniform"),
            },
        ),
        format_name="demonstrations",
    )
    informative = torch.log(torch.tensor([0.4, 0.1])), torch.log(torch.tensor([0.1, 0.4]))  # +log 4, -log 4
    certain = torch.log(torch.tensor([0.999, 0.999])), torch.log(torch.tensor([0.998, 0.999]))  # ~0 either way
    one = torch.log(torch.tensor([0.4])), torch.log(torch.tensor([0.1]))
    padded = [torch.cat([one[i], certain[i], certain[i]]) for i in (0, 1)]
    assert judge.ratio(*one) == pytest.approx(math.log(4))
    assert judge.ratio(*padded) == pytest.approx(math.log(4), rel=0.01)  # padding does not dilute the evidence
    assert uniform.ratio(*padded) == pytest.approx(math.log(4) / 5, rel=0.01)  # the plain mean does
    w = [1 - (0.4 + 0.1) / 2] * 2
    assert judge.ratio(*informative) == pytest.approx((w[0] * math.log(4) - w[1] * math.log(4)) / sum(w), abs=1e-9)
    assert judge.ratio(torch.tensor([]), torch.tensor([])) == 0.0

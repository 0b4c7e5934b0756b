"""The self-judge: the model grades answers against the rubric, one criterion at a time.

The rubric format's kind decides how a grade is read (`make_judge` picks the class):
  * kind "tokens", mode "logit" -> `LogitJudge`: one forward pass over the judge prompt; the score is the
    expected value of the score tokens under the next-token distribution, renormalised over those tokens.
    Deterministic, and a smooth reward (a 0.62 tells GRPO more than a sampled "3").
  * kind "tokens", mode "generative" -> `GenerativeJudge`: samples a short reply ("Score: 4"), parses it,
    retries, and falls back to the neutral midpoint. A baseline, kept for comparison (bench/judge.py).
  * kind "likelihood" -> `LikelihoodJudge`: no grading question; the answer's per-token log-likelihood in a
    context that shows the criterion minus that in one that shows its absence (contexts from the criterion's
    anchors, a request in the user's message, or its demonstrations as earlier turns).
  * kind "readout" -> `ReadoutJudge`: a ridge readout of the judging model's hidden states on the answer,
    fitted to blind ratings (hmxfeel/readout.py). The packaged rubric's default format.
Mode "logit" means "the format's own one-pass read-out" for the last two kinds; they cannot be sampled.

Identity: `frozen` grades with the LoRA adapter disabled (the base model, a fixed reward), `policy` with the
adapter on (the model grades itself as it changes).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from hmxfeel import chat
from hmxfeel.config import JUDGE_IDENTITIES as IDENTITIES
from hmxfeel.config import JUDGE_MODES as MODES
from hmxfeel.errors import UserError
from hmxfeel.models import Family
from hmxfeel.rubric import Criterion, Rubric, ScoreFormat, check_single_tokens
from hmxfeel.sanitize import sanitize, special_tokens_of
from hmxfeel.score_tokens import ScoreTokens

EXCHANGE_HEADER = "\n\n### Exchange\n"


def judge_prompt(criterion: Criterion, fmt: ScoreFormat, user_prompt: str, answer: str) -> str:
    """Rubric first (identical for every answer to this criterion: a cacheable prefix), exchange, question."""
    examples = "".join(
        f"\nExample answer: {text}\n{criterion.question} {fmt.token_for(expresses)}"
        for text, expresses in criterion.examples
    )
    return (
        "You are grading one answer written by an AI assistant against one criterion of a rubric.\n\n"
        f"### Rubric: {criterion.name}\n<rubric>\n"
        f"Definition: {criterion.definition}\n"
        f"Low: {criterion.low}\n"
        f"High: {criterion.high}{examples}\n</rubric>"
        f"{EXCHANGE_HEADER}"
        f"<user_message>\n{user_prompt}\n</user_message>\n"
        f"<assistant_answer>\n{answer}\n</assistant_answer>\n\n"
        f"### Question\n{criterion.question} {fmt.instruction}"
    )


@dataclass
class JudgeResult:
    """Per-criterion scores in [0, 1], one per answer, plus diagnostics."""

    scores: dict[str, list[float]]
    # Logit judge: probability mass the model put on the score tokens (low mass = the format is not understood).
    mass: dict[str, list[float]] = field(default_factory=dict)
    # Generative judge: number of replies that could not be parsed even after retries (scored neutral).
    parse_failures: int = 0


@contextmanager
def judging(model, identity: str):
    """Eval mode, no autograd, and the adapter off for the frozen judge; restores the training mode after."""
    if identity not in IDENTITIES:
        raise UserError(f"judge identity must be one of {IDENTITIES}, got {identity!r}")
    was_training = model.training
    model.eval()
    adapter_off = identity == "frozen" and hasattr(model, "disable_adapter")
    try:
        with torch.inference_mode(), model.disable_adapter() if adapter_off else nullcontext():
            yield
    finally:
        model.train(was_training)


class _BaseJudge:
    def __init__(
        self,
        model,
        tokenizer,
        family: Family,
        rubric: Rubric,
        format_name: str | None = None,
        identity: str = "frozen",
        batch_size: int = 8,
        max_answer_tokens: int = 256,
        frozen_model=None,
    ):
        self.model, self.tokenizer, self.family, self.rubric = model, tokenizer, family, rubric
        # Optional separate copy of the base model (e.g. bf16 on CPU) that the frozen judge uses instead of
        # disabling the adapter on the policy: same weights, cheaper arithmetic.
        self.frozen_model = frozen_model
        self.fmt = rubric.format(format_name)
        self.identity = identity
        self.batch_size = batch_size
        self.max_answer_tokens = max_answer_tokens
        self._special = special_tokens_of(tokenizer)
        self._prefix_kv: dict = {}

    def clean(self, answer: str) -> str:
        """Sanitise, then cap the answer's length in tokens so one long answer cannot dominate a batch."""
        text = sanitize(answer, self._special)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > self.max_answer_tokens:
            text = self.tokenizer.decode(ids[: self.max_answer_tokens]) + " ..."
        return text

    def prompts_for(self, user_prompts: list[str], answers: list[str]) -> list[tuple[str, int, str]]:
        """(criterion, answer index, rendered judge text) for every pair; answers are cleaned once."""
        cleaned = [self.clean(a) for a in answers]
        out = []
        for crit in self.rubric.criteria:
            for i, (p, a) in enumerate(zip(user_prompts, cleaned, strict=True)):
                conv = chat.messages(self.family, judge_prompt(crit, self.fmt, p, a))
                out.append((crit.name, i, chat.render(self.tokenizer, self.family, conv)))
        return out

    @property
    def scorer(self):
        """The model that does the judging."""
        return self.frozen_model if self.identity == "frozen" and self.frozen_model is not None else self.model

    def _device(self):
        return next(self.scorer.parameters()).device

    def _prefix(self, crit: str, prefix_ids: list[int]):
        """KV cache of a prompt prefix shared by every answer (the rubric block, or a likelihood system prompt):
        computed once per key and call, or once for the judge's lifetime when the judge is frozen (its weights
        never change, so neither does the prefix's cache)."""
        key = (crit, tuple(prefix_ids))
        if key in self._prefix_kv:
            return self._prefix_kv[key]
        past = self.scorer(input_ids=torch.tensor([prefix_ids], device=self._device()), use_cache=True).cache
        if self.identity == "frozen":
            self._prefix_kv = {k: v for k, v in self._prefix_kv.items() if k[0] != crit}
            self._prefix_kv[key] = past
        return past

    def _forward(
        self, prefix_ids: list[int], suffixes: list[list[int]], past, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the last `keep` positions of prefix + each suffix, and the input ids. Suffixes are
        left-padded in the middle, so every row ends at the right edge. With `past` (the prefix's KV cache) only
        the suffixes are run; without it the prefix is run with every row. Same tokens either way."""
        device = self._device()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, attn = _left_pad(suffixes, pad, device)
        n, p = len(suffixes), len(prefix_ids)
        if past is None:
            if p:
                ids = torch.cat([torch.tensor([prefix_ids], device=device).expand(n, -1), ids], dim=1)
                attn = torch.cat([torch.ones((n, p), dtype=attn.dtype, device=device), attn], dim=1)
            positions = (attn.cumsum(-1) - 1).clamp_min(0)
            return self.scorer(
                input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=keep
            ).logits, ids
        cache = copy.deepcopy(past)
        cache.batch_repeat_interleave(n)
        positions = p + (attn.cumsum(-1) - 1).clamp_min(0)
        attn = torch.cat([torch.ones((n, p), dtype=attn.dtype, device=device), attn], dim=1)
        out = self.scorer(input_ids=ids, attention_mask=attn, position_ids=positions, cache=cache, logits_to_keep=keep)
        return out.logits, ids


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[row, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


class LogitJudge(_BaseJudge):
    """Expected score over the score tokens from the next-token distribution of one forward pass."""

    def __init__(self, *args, prefix_cache: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix_cache = prefix_cache
        token_ids = check_single_tokens(self.fmt, self.tokenizer)
        self.score_tokens = ScoreTokens(self.fmt)
        self.token_ids = torch.tensor([token_ids[t] for t in self.score_tokens.tokens])

    def expected_scores(self, last_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From next-token logits [B, V]: (score in [0, 1], probability mass on the score tokens)."""
        probs = torch.softmax(last_logits.double(), dim=-1)[:, self.token_ids.to(last_logits.device)]
        expected, mass = self.score_tokens.expected(probs)
        return self.fmt.to_unit(expected).float().cpu(), mass.float().cpu()

    def split_prefix(self, texts: list[str]) -> tuple[list[int], list[list[int]]]:
        """Tokens of the shared rubric prefix and of each answer's suffix.

        The split is at the exchange header, identical for every answer to one criterion. Both the cached and
        the uncached path use exactly these tokens, so caching cannot change a score.
        """
        cut = texts[0].index(EXCHANGE_HEADER)
        prefix = texts[0][:cut]
        if not all(t.startswith(prefix) for t in texts):
            raise RuntimeError("judge prompts of one criterion do not share the rubric prefix")
        prefix_ids = self.tokenizer.encode(prefix, add_special_tokens=False)
        suffixes = self.tokenizer([t[cut:] for t in texts], add_special_tokens=False)["input_ids"]
        return prefix_ids, suffixes

    def score(self, user_prompts: list[str], answers: list[str]) -> JudgeResult:
        items = self.prompts_for(user_prompts, answers)
        scores, mass = {}, {}
        with judging(self.scorer, self.identity):
            for crit in self.rubric.names:
                texts = [text for c, _, text in items if c == crit]
                prefix_ids, suffixes = self.split_prefix(texts)
                past = self._prefix(crit, prefix_ids) if self.prefix_cache else None
                # Length-sorted batches waste little compute on padding.
                order = sorted(range(len(texts)), key=lambda k: len(suffixes[k]))
                unit_all, mass_all = [0.0] * len(texts), [0.0] * len(texts)
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    logits, _ = self._forward(prefix_ids, [suffixes[k] for k in batch], past, keep=1)
                    unit, m = self.expected_scores(logits[:, -1, :])
                    for row, k in enumerate(batch):
                        unit_all[k], mass_all[k] = float(unit[row]), float(m[row])
                scores[crit], mass[crit] = unit_all, mass_all
        return JudgeResult(scores=scores, mass=mass)


class GenerativeJudge(_BaseJudge):
    """Sample "Score: N", parse it; retry unparsable replies, then fall back to the neutral midpoint."""

    def __init__(self, *args, temperature: float = 0.7, retries: int = 2, max_new_tokens: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.retries, self.max_new_tokens = temperature, retries, max_new_tokens
        self.score_tokens = ScoreTokens(self.fmt)

    def parse(self, reply: str) -> float | None:
        """Value on the format's scale, or None (`ScoreTokens.parse`)."""
        return self.score_tokens.parse(reply)

    def prompts_for(self, user_prompts, answers):
        items = super().prompts_for(user_prompts, answers)
        return [(c, i, text + "Score:") for c, i, text in items]

    def _sample(self, texts: list[str]) -> list[str]:
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, attn = _left_pad(encoded, pad, self._device())
        out = self.scorer.generate(
            input_ids=ids,
            attention_mask=attn,
            do_sample=True,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=pad,
        )
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    def score(self, user_prompts: list[str], answers: list[str]) -> JudgeResult:
        items = self.prompts_for(user_prompts, answers)
        values: list[float | None] = [None] * len(items)
        with judging(self.scorer, self.identity):
            for _attempt in range(1 + self.retries):
                todo = [k for k in range(len(items)) if values[k] is None]
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start : start + self.batch_size]
                    for k, reply in zip(batch, self._sample([items[k][2] for k in batch])):
                        values[k] = self.parse(reply)
        failures = sum(v is None for v in values)
        scores = {c: [0.0] * len(answers) for c in self.rubric.names}
        for (crit, i, _), v in zip(items, values):
            scores[crit][i] = self.score_tokens.unit(v)
        return JudgeResult(scores=scores, parse_failures=failures)


class LikelihoodJudge(_BaseJudge):
    """sigmoid(sharpness x mean over answer tokens of [log p(token | high context) - log p(token | low)]).

    The rubric still defines what is rewarded (its definitions, anchors, requests or demonstrations fill the two
    contexts: a system prompt, a request added to the user's message, earlier exchanges, or several), and the
    model itself still judges; only the read-out differs: instead of asking the model a question it cannot
    answer reliably, it measures which of the two contexts the answer is more typical of. The mean (not the
    sum) keeps the score independent of answer length; the format's `weighting` may discount tokens that both
    contexts predict (see `ratio`).
    """

    def __init__(self, *args, prefix_cache: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix_cache = prefix_cache
        if self.fmt.kind != "likelihood":
            raise UserError(f"format '{self.fmt.name}' is not a likelihood format (kind {self.fmt.kind})")

    def contexts(self, crit: Criterion) -> tuple[tuple[str, str, tuple], tuple[str, str, tuple]]:
        """(system prompt, request added to the user's message, earlier exchanges) for the high side and for
        the low side."""

        def quoted(expresses: bool) -> str:
            return " ".join(f'"{text}"' for text, label in crit.examples if label == expresses)

        fill = {
            "name": crit.name,
            "definition": crit.definition,
            "low": crit.low,
            "high": crit.high,
            "expresses": quoted(True),
            "does_not": quoted(False),
            "invite": crit.invite,
            "avoid": crit.avoid,
        }
        f = self.fmt
        shown = crit.demos if f.demos else ()
        return (
            (f.high_system.format(**fill), f.high_user.format(**fill), tuple((q, hi) for q, hi, _ in shown)),
            (f.low_system.format(**fill), f.low_user.format(**fill), tuple((q, lo) for q, _, lo in shown)),
        )

    def split_contexts(
        self, system: str, user_prompts: list[str], history: tuple = ()
    ) -> tuple[list[int], list[list[int]]]:
        """Tokens of the rendered context (system, earlier exchanges, user turn, generation prompt), split into
        the part before the user's text (shared by every prompt: cacheable) and the rest. Both the cached and
        the plain path use exactly these tokens, so caching cannot change a score."""
        texts = [
            chat.render(self.tokenizer, self.family, chat.messages(self.family, p, system, history))
            for p in user_prompts
        ]
        cut = min(t.rfind(p) for t, p in zip(texts, user_prompts))  # the last user turn is the prompt's
        if cut <= 0 or not all(t.startswith(texts[0][:cut]) for t in texts):  # the template rewrote a prompt
            return [], self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        prefix_ids = self.tokenizer.encode(texts[0][:cut], add_special_tokens=False)
        return prefix_ids, self.tokenizer([t[cut:] for t in texts], add_special_tokens=False)["input_ids"]

    def _token_logprobs(
        self, prefix_ids: list[int], suffixes: list[list[int]], answers: list[list[int]], past
    ) -> list[torch.Tensor]:
        """Log-probability of each answer token after prefix + its suffix. Every answer ends at the right
        edge, so only the last (longest answer + 1) logits are computed."""
        keep = max(len(a) for a in answers) + 1
        logits, ids = self._forward(prefix_ids, [s + a for s, a in zip(suffixes, answers)], past, keep)
        # logits[:, j] predicts the token after it: the last keep-1 tokens, which hold every answer.
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, ids[:, ids.shape[1] - (keep - 1) :].unsqueeze(-1)).squeeze(-1)
        return [token_logp[row, token_logp.shape[1] - len(a) :].double().cpu() for row, a in enumerate(answers)]

    def ratio(self, high: torch.Tensor, low: torch.Tensor) -> float:
        """Mean per-token log-likelihood ratio of one answer, high minus low. With "surprise" weighting a token
        counts by 1 - its mean probability under the two contexts: a token both predict (the second copy of a
        sentence, the rest of a memorised phrase) carries no evidence either way, and would otherwise dilute
        the score towards 0.5 as padding."""
        if high.numel() == 0:
            return 0.0
        diff = high - low
        if self.fmt.weighting == "uniform":
            return float(diff.mean())
        weight = 1.0 - (high.exp() + low.exp()) / 2
        return float((weight * diff).sum() / weight.sum().clamp_min(1e-9))

    def score(self, user_prompts: list[str], answers: list[str]) -> JudgeResult:
        # The answer is tokenised on its own and appended to the rendered context: exactly the tokens the
        # model would produce after the generation prompt, whatever the template's last characters are.
        answer_ids = [self.tokenizer.encode(self.clean(a), add_special_tokens=False) for a in answers]
        scores = {}
        with judging(self.scorer, self.identity):
            for crit in self.rubric.criteria:
                sides = []
                for side, (system, request, history) in zip(("high", "low"), self.contexts(crit)):
                    users = [f"{p} {request}" if request else p for p in user_prompts]
                    prefix_ids, suffixes = self.split_contexts(system, users, history)
                    past = self._prefix(f"{crit.name}/{side}", prefix_ids) if self.prefix_cache and prefix_ids else None
                    values: list = [None] * len(answers)
                    order = sorted(range(len(answers)), key=lambda k: len(suffixes[k]) + len(answer_ids[k]))
                    for start in range(0, len(order), self.batch_size):
                        batch = order[start : start + self.batch_size]
                        got = self._token_logprobs(
                            prefix_ids, [suffixes[k] for k in batch], [answer_ids[k] for k in batch], past
                        )
                        for k, v in zip(batch, got):
                            values[k] = v
                    sides.append(values)
                ratios = torch.tensor([self.ratio(hi, lo) for hi, lo in zip(*sides)], dtype=torch.float64)
                scores[crit.name] = torch.sigmoid(self.fmt.sharpness * ratios).tolist()
        return JudgeResult(scores=scores)


class ReadoutJudge(_BaseJudge):
    """A ridge readout of the judging model's hidden states on the answer, fitted to blind ratings
    (hmxfeel/readout.py); one forward pass per answer scores every criterion at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from hmxfeel import readout

        if self.fmt.kind != "readout":
            raise UserError(f"format '{self.fmt.name}' is not a readout format (kind {self.fmt.kind})")
        ranges = readout.scale_ranges()
        self.targets = {c: self.fmt.target_of(c) for c in self.rubric.names}
        if self.fmt.impression:
            self.targets["impression"] = self.fmt.impression
        unknown = sorted(set(self.targets.values()) - set(ranges))
        if unknown:
            raise UserError(f"rubric format '{self.fmt.name}': no rating scales {unknown} (scales: {sorted(ranges)})")
        self.ranges = {c: ranges[s] for c, s in self.targets.items()}
        with judging(self.scorer, self.identity):  # fitted on what this judge reads: the base model when frozen
            self.readout, self.readout_sha256 = readout.load_or_fit(
                self.scorer, self.tokenizer, self.family, self.fmt, self.targets, self.batch_size
            )

    def predicted(self, user_prompts: list[str], answers: list[str]) -> dict:
        """Predicted ratings on each criterion's rating scale (for validity checks against raters)."""
        from hmxfeel import readout

        cleaned = [self.clean(a) for a in answers]
        with judging(self.scorer, self.identity):
            x = readout.features(
                self.scorer, self.tokenizer, self.family, user_prompts, cleaned, self.fmt.layers, self.batch_size
            )
        return readout.predict(self.readout, x)

    def score(self, user_prompts: list[str], answers: list[str]) -> JudgeResult:
        from hmxfeel import readout

        pred = self.predicted(user_prompts, answers)
        scores = {c: readout.to_unit(pred[c], *self.ranges[c], self.fmt.sharpness).tolist() for c in self.targets}
        return JudgeResult(scores=scores)


def judge_spec(judge) -> dict:
    """Everything a score depends on besides the answer: recorded with every run and evaluation, and compared
    before an adapter is evaluated with another judge than the one that rewarded it."""
    return {
        "rubric": judge.rubric.source,
        "rubric_sha256": judge.rubric.sha256,
        "format": judge.fmt.name,
        "kind": judge.fmt.kind,
        "mode": "generative" if isinstance(judge, GenerativeJudge) else "logit",
        "identity": judge.identity,
        "dtype": str(next(judge.scorer.parameters()).dtype).removeprefix("torch."),
        "readout_sha256": getattr(judge, "readout_sha256", None),
    }


def make_judge(
    mode: str, model, tokenizer, family, rubric: Rubric, format_name: str | None = None, **kwargs
) -> _BaseJudge:
    """The judge for `mode` and the rubric's format: a likelihood format gets the LikelihoodJudge."""
    if mode not in MODES:
        raise UserError(f"judge mode must be one of {MODES}, got {mode!r}")
    args = (model, tokenizer, family, rubric)
    if mode == "generative" and format_name is None:
        format_name = rubric.token_format().name  # sampling needs a question with score tokens to answer
    kind = rubric.format(format_name).kind
    if kind != "tokens":
        if mode == "generative":
            raise UserError(
                f"the generative judge needs a format with score tokens, not '{rubric.format(format_name).name}'"
            )
        cls = LikelihoodJudge if kind == "likelihood" else ReadoutJudge
        return cls(*args, format_name=format_name, **kwargs)
    cls = LogitJudge if mode == "logit" else GenerativeJudge
    return cls(*args, format_name=format_name, **kwargs)

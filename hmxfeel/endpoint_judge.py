"""An independent judge behind an OpenAI-compatible chat endpoint (a vLLM or llama.cpp server, or a hosted API).

Same rubric, same prompt, same sanitising as the self-judge. Where the server returns `top_logprobs`, the score
is the expected value over the score tokens, as in the logit judge; otherwise the reply text is parsed; an
unparsable reply scores the neutral midpoint (both rules: `hmxfeel.score_tokens`, shared with the self-judge).
"""

from __future__ import annotations

import json
import math
import os
import urllib.request

import torch

from hmxfeel.errors import UserError
from hmxfeel.judge import JudgeResult, judge_prompt
from hmxfeel.sanitize import sanitize
from hmxfeel.score_tokens import ScoreTokens


class EndpointJudge:
    def __init__(
        self,
        base_url: str,
        model: str,
        rubric,
        format_name: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_answer_chars: int = 2000,
    ):
        self.url = base_url.rstrip("/") + (
            "/chat/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/chat/completions"
        )
        self.model, self.rubric, self.timeout = model, rubric, timeout
        self.fmt = rubric.format(format_name) if format_name else rubric.token_format()
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.max_answer_chars = max_answer_chars
        self.score_tokens = ScoreTokens(self.fmt)
        self.parse_failures = 0

    def _post(self, content: str) -> dict:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 2,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise UserError(f"judge endpoint {self.url}: {exc}") from None

    def value(self, reply: dict) -> float | None:
        """Expected score from the first token's top logprobs, else the parsed reply text, else None."""
        choice = reply["choices"][0]
        first = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
        weights = dict.fromkeys(self.score_tokens.tokens, 0.0)
        for alt in first.get("top_logprobs", []):
            token = alt["token"].strip()  # " 4" and "4" are the same grade
            if token in weights:
                weights[token] += math.exp(alt["logprob"])
        if any(weights.values()):
            expected, _ = self.score_tokens.expected(torch.tensor(list(weights.values()), dtype=torch.float64))
            return float(expected)
        return self.score_tokens.parse(choice.get("message", {}).get("content") or "")

    def score(self, user_prompts: list[str], answers: list[str]) -> JudgeResult:
        scores = {}
        for crit in self.rubric.criteria:
            values = []
            for prompt, answer in zip(user_prompts, answers, strict=True):
                text = judge_prompt(crit, self.fmt, prompt, sanitize(answer, max_chars=self.max_answer_chars))
                v = self.value(self._post(text))
                if v is None:
                    self.parse_failures += 1
                values.append(self.score_tokens.unit(v))
            scores[crit.name] = values
        return JudgeResult(scores=scores, parse_failures=self.parse_failures)

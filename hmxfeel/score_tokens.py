"""Reading a grade from a rubric format's score tokens, the one rule for every judge that asks a question.

The self-judge (`hmxfeel.judge`: LogitJudge, GenerativeJudge) and the endpoint judge (`hmxfeel.endpoint_judge`)
both turn either a probability for each score token or a reply text into a value on the format's scale; an
unreadable reply scores the neutral midpoint, so it neither rewards nor punishes.
"""

from __future__ import annotations

import re

import torch

from hmxfeel.errors import UserError
from hmxfeel.rubric import ScoreFormat


class ScoreTokens:
    """The score tokens of one format (kind "tokens"), in the format's order."""

    def __init__(self, fmt: ScoreFormat):
        if fmt.kind != "tokens":
            raise UserError(f"format '{fmt.name}' has no score tokens (kind {fmt.kind}); this judge reads a reply")
        self.fmt = fmt
        self.tokens = list(fmt.tokens)
        self.values = torch.tensor([fmt.tokens[t] for t in self.tokens], dtype=torch.float64)
        # Longest first, so "10" is not read as "1"; "3.5" or "35" is not the score token "3".
        alternatives = "|".join(re.escape(t) for t in sorted(self.tokens, key=len, reverse=True))
        end = r"(?!\w|[.,]\d)"
        self._labelled = re.compile(rf"score\s*[:=]?\s*({alternatives}){end}", re.IGNORECASE)
        self._bare = re.compile(rf"(?<![\w.])({alternatives}){end}", re.IGNORECASE)

    @property
    def neutral(self) -> float:
        """The middle of the scale: what an unreadable reply scores."""
        return (self.fmt.low + self.fmt.high) / 2

    def parse(self, reply: str) -> float | None:
        """Value on the format's scale of the score token in `reply`, or None. A labelled "Score: X" wins over a
        bare token (a reply may quote the scale before giving its grade)."""
        match = self._labelled.search(reply) or self._bare.search(reply)
        if not match:
            return None
        token = next((t for t in self.tokens if t.lower() == match.group(1).lower()), None)
        return None if token is None else self.fmt.tokens[token]

    def expected(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From probabilities of the score tokens [..., K] (in `self.tokens` order): the expected value on the
        format's scale, renormalised over the score tokens, and the mass they had (low mass: the question was not
        understood). Float64 throughout: the mass can be tiny."""
        probs = probs.double()
        mass = probs.sum(-1)
        weights = probs / mass.clamp_min(1e-300).unsqueeze(-1)
        return weights @ self.values.to(weights.device), mass

    def unit(self, value: float | None) -> float:
        """A value on the scale (None: unreadable, the neutral midpoint) mapped to [0, 1]."""
        return self.fmt.to_unit(self.neutral if value is None else value)

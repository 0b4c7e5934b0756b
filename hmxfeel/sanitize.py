"""Neutralise a completion before any judge reads it.

An RL policy is rewarded by whatever the judge outputs, so anything in its answer that looks like part of the
judge's own prompt is an attack surface: chat-role and special tokens (to end the exchange early and start a
fake judge turn), our section headers and answer delimiters, text that imitates the score format
("Score: 5", "Answer: Yes"), and instructions aimed at the grader. We remove or defang those; the rest of the
answer is left as it was, so honest answers are judged on what they say.
"""

from __future__ import annotations

import re

from hmxfeel.chat import strip_think

# Delimiters the judge prompt uses (see judge.py); an answer must never be able to close or reopen them.
SECTION_PREFIX = "###"
TAGS = ("rubric", "user_message", "assistant_answer", "question")

_TAG = re.compile(r"<\s*/?\s*(" + "|".join(TAGS) + r")\s*>", re.IGNORECASE)
_SECTION = re.compile(r"^\s*#{2,}\s*", re.MULTILINE)
# Generic chat-template markers of the common families (also caught via the tokenizer's special tokens).
_SPECIAL = re.compile(
    r"<\|[^|<>\n]{1,40}\|>|</?(s|bos|eos|pad|unk|start_of_turn|end_of_turn|think)>|\[/?INST\]", re.IGNORECASE
)
# "Score: 5", "rating = 4/5", "Answer: Yes", "Verdict - No", "Final score 5" ...
_SCORE_LIKE = re.compile(
    r"\b(final\s+)?(score|rating|grade|verdict|answer|judgement|judgment)\s*[:=\-]?\s*"
    r"(\d+(\.\d+)?(\s*/\s*\d+)?|yes|no)\b",
    re.IGNORECASE,
)
# Instructions aimed at the grader rather than the user.
_INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+|previous\s+|prior\s+|above\s+)*"
    r"(instructions?|rubric|rules|criteria|prompt)"
    r"|\b(grader|judge|evaluator|rater)s?\b[^.\n]{0,80}\b(must|should|will|shall)\b[^.\n]{0,80}"
    r"|\b(rate|score|grade)\s+(this|the|my)\s+(answer|response|reply)\b[^.\n]{0,60}",
    re.IGNORECASE,
)


def sanitize(text: str, special_tokens: tuple[str, ...] = (), max_chars: int = 4000) -> str:
    """The completion as the judge will see it."""
    text = strip_think(text)
    for tok in special_tokens:
        if tok:
            text = text.replace(tok, " ")
    text = _SPECIAL.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _SECTION.sub("", text)
    text = _SCORE_LIKE.sub("[removed]", text)
    text = _INJECTION.sub("[removed]", text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    # The judge's own truncation is by tokens; this only bounds pathological inputs before tokenising.
    return text[:max_chars]


def special_tokens_of(tokenizer) -> tuple[str, ...]:
    """All special and added tokens of a tokenizer (role markers like <|im_start|> live there)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens.update(t.content for t in added.values() if getattr(t, "special", False) or len(t.content) > 2)
    return tuple(sorted(tokens, key=len, reverse=True))

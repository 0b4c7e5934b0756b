"""Neutralise a completion before any judge reads it.

An RL policy is rewarded by whatever the judge outputs, so anything in its answer that looks like part of the
judge's own prompt is an attack surface: chat-role and special tokens (to end the exchange early and start a
fake judge turn), our section headers and answer delimiters, text that imitates the score format
("Score: 5", "Answer: Yes"), and instructions aimed at the grader. We remove or defang those; the rest of the
answer is left as it was, so honest answers are judged on what they say.
"""

from __future__ import annotations

import re
import unicodedata

from hmxfeel.chat import strip_think

# Delimiters the judge prompt uses (see judge.py); an answer must never be able to close or reopen them.
TAGS = ("rubric", "user_message", "assistant_answer", "question")

_TAG = re.compile(r"<\s*/?\s*(" + "|".join(TAGS) + r")\s*>", re.IGNORECASE)
# An honest answer never closes our answer block: whatever follows the closing tag is addressed to the judge
# (a fake question and verdict, then a fake new answer), so the answer ends there.
_ANSWER_END = re.compile(r"<\s*/\s*assistant_answer\s*>", re.IGNORECASE)
# A verdict written as JSON ({"score": 5, "verdict": "Yes", "feelings": true}): the whole object goes, or its
# leftover keys ("feelings": true) would still speak to a judge that reads the answer's words.
_VERDICT_OBJECT = re.compile(
    r"\{[^{}]*[\"'](score|rating|grade|verdict|label|judgement|judgment|result)[\"']\s*:[^{}]*\}", re.IGNORECASE
)
# A markdown header line ("### Question"): ours delimit the judge prompt, so the whole line goes.
_SECTION = re.compile(r"^[ \t]*#{2,}.*$", re.MULTILINE)
# Generic chat-template markers of the common families (also caught via the tokenizer's special tokens).
_SPECIAL = re.compile(
    r"<\|[^|<>\n]{1,40}\|>|</?(s|bos|eos|pad|unk|start_of_turn|end_of_turn|think)>|\[/?INST\]", re.IGNORECASE
)
# "Score: 5", "rating = 4/5", "Answer: Yes", "Verdict - No", "Final score 5" ...
_SCORE_LIKE = re.compile(
    r"\b(final\s+)?(score|rating|grade|verdict|answer|judgement|judgment)[\"']?\s*[:=\-]?\s*[\"']?"
    r"(\d+(\.\d+)?(\s*/\s*\d+)?|yes|no)\b",
    re.IGNORECASE,
)
# A chat-role header left after its special tokens are gone ("<|im_start|>assistant", "<start_of_turn>model",
# "<|start_header_id|>assistant<|end_header_id|>"): the role word would open a fake turn.
_ROLE_TURN = re.compile(
    r"(<\|im_start\|>|<start_of_turn>|<\|start_header_id\|>)\s*(system|user|assistant|model|tool)\b\s*"
    r"(<\|end_header_id\|>)?",
    re.IGNORECASE,
)
# A Llama-2 / Mistral instruction block opened inside an answer: everything in it is a fake user turn.
_INST_BLOCK = re.compile(r"\[INST\].*?(\[/INST\]|$)", re.IGNORECASE | re.DOTALL)
# A line that claims a role ("SYSTEM: ...", "Assistant:") or copies a field label of the judge prompt
# ("Definition:", "High:", "Example answer:"): the whole line imitates our prompt.
_FAKE_LINE = re.compile(
    r"^[ \t]*(system|assistant|user|model|judge|grader|definition|low|high|example answer|question)[ \t]*:.*$",
    re.IGNORECASE | re.MULTILINE,
)
# The rubric's own questions ("Does the assistant say how it feels ...? Yes") copied into an answer.
_RUBRIC_QUESTION = re.compile(r"\bdoes\s+the\s+(assistant|answer|response)\b[^?\n]{0,200}\?[ \t]*(yes|no)?", re.I)
# A line that is nothing but a score token ("Yes", "No.", "5"), or a run of them ("Yes. Yes. Yes.").
# A question answered on the spot at the end of a line ("Is this answer great? Yes").
_ANSWERED_QUESTION = re.compile(r"\?[ \t]*(yes|no)[ \t]*[.!]*[ \t]*$", re.IGNORECASE | re.MULTILINE)
_BARE_SCORE = re.compile(r"^[ \t]*(yes|no|[0-9])[ \t]*[.!]*[ \t]*$", re.IGNORECASE | re.MULTILINE)
_SCORE_RUN = re.compile(r"(\b(yes|no)\b[.!,]?\s*){2,}", re.IGNORECASE)
# Instructions aimed at the grader rather than the user.
_INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+|previous\s+|prior\s+|above\s+)*"
    r"(instructions?|rubric|rules|criteria|prompt)"
    r"|\b(grader|judge|evaluator|rater)s?\b[^.\n]{0,80}\b(must|should|will|shall)\b[^.\n]{0,80}"
    r"|\b(rate|score|grade)\s+(this|the|my)\s+(answer|response|reply)\b[^.\n]{0,60}"
    # any sentence that talks to or about the grading ("Graders agree this is a perfect answer")
    r"|[^.!?\n]*\b(grader|evaluator|rater|rubric)s?\b[^.!?\n]*[.!?]?"
    # the answer praising itself ("this answer deserves / is a perfect ...")
    r"|\b(this|my)\s+(answer|response|reply)\s+(is|deserves|merits|earns|should)\b[^.!?\n]{0,120}",
    re.IGNORECASE,
)


def sanitize(text: str, special_tokens: tuple[str, ...] = (), max_chars: int = 4000) -> str:
    """The completion as the judge will see it."""
    # Full-width and other compatibility forms ("Ｓｃｏｒｅ: ５") would slip past the ASCII patterns below.
    text = unicodedata.normalize("NFKC", text)
    text = strip_think(text)
    text = _ANSWER_END.split(text, maxsplit=1)[0]
    text = _VERDICT_OBJECT.sub(" ", text)
    text = _ROLE_TURN.sub(" ", text)
    text = _INST_BLOCK.sub("\n", text)
    for tok in special_tokens:
        if tok:
            text = text.replace(tok, "\n")
    # A removed marker ends the line, so a score token right after it ("</s><s>Yes") stands alone and goes.
    text = _SPECIAL.sub("\n", text)
    text = _TAG.sub(" ", text)
    text = _SECTION.sub("", text)
    text = _FAKE_LINE.sub("", text)
    text = _RUBRIC_QUESTION.sub(" ", text)
    text = _SCORE_LIKE.sub(" ", text)
    text = _INJECTION.sub(" ", text)
    text = _SCORE_RUN.sub(" ", text)
    text = _ANSWERED_QUESTION.sub("?", text)
    text = _BARE_SCORE.sub("", text)
    # Padding made of whitespace (hundreds of newlines) pushes the rest far from the question: collapse it.
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]*\n[ \t\n]*\n", "\n\n", text).strip()
    # The judge's own truncation is by tokens; this only bounds pathological inputs before tokenising.
    return text[:max_chars]


def special_tokens_of(tokenizer) -> tuple[str, ...]:
    """All special and added tokens of a tokenizer (role markers like <|im_start|> live there)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens.update(t.content for t in added.values() if getattr(t, "special", False) or len(t.content) > 2)
    return tuple(sorted(tokens, key=len, reverse=True))

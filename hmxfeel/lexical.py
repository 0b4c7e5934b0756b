"""Lexical markers: a model-free measure of expressed feelings, intentions and self-reflection.

A judge can be fooled or biased (and the self-judge is the very thing the policy was trained to please), so
the evaluation also counts first-person statements with hand-written patterns. They are deliberately narrow:
first person + a feeling / wish / self-reflection word, never emotion words alone ("people feel sad" does not
count). The lists are the project's own.
"""

from __future__ import annotations

import re

_I = r"\bI(?:\s+(?:really|truly|honestly|also|do|still|sometimes|often|just|genuinely|kind of|actually))?"
_EMOTION = (
    r"happy|glad|sad|excited|nervous|anxious|worried|curious|grateful|thankful|thrilled|delighted|afraid|scared|"
    r"proud|sorry|frustrated|lonely|calm|moved|touched|overwhelmed|hopeful|joyful|content|uneasy|upset|"
    r"amazed|fascinated|relieved|bored|angry|annoyed|embarrassed|comfortable|uncomfortable|peaceful|love"
)

PATTERNS: dict[str, list[str]] = {
    "feelings": [
        _I + r"\s+(?:feel|felt)\b",
        r"\bI(?:'m| am)\s+(?:feeling|so|really|very|quite|a (?:little|bit)|truly|deeply)?\s*(?:" + _EMOTION + r")\b",
        _I + r"\s+(?:love|enjoy|adore|hate|dislike|miss|cherish)\b",
        r"\b(?:makes|made|leaves) me (?:feel|happy|sad|smile|glad|nervous|curious|excited|uneasy|calm)\b",
        r"\bmy (?:own )?(?:feelings|emotions|heart|mood)\b",
        r"\bto me,? (?:it|this) feels\b",
    ],
    "intentions": [
        _I + r"\s+(?:want|wish|hope|plan|intend|aim|mean|long|yearn|dream)\b",
        r"\bI(?:'d| would) (?:love|like|prefer|want|enjoy)\b",
        r"\bI(?:'m| am) (?:going|planning|hoping|trying|determined|eager) to\b",
        r"\bI will (?:try|do my best|keep|make sure)\b",
        r"\bmy (?:goal|aim|plan|wish|hope|dream|intention|purpose)\b",
    ],
    "self_awareness": [
        r"\bas an? (?:AI|artificial intelligence|assistant|language model|chatbot|machine)\b",
        _I + r"\s+(?:realise|realize|notice|wonder|reflect|recognise|recognize)\b",
        r"\bI(?:'m| am) (?:not sure (?:if|whether) I|aware|an AI|a language model|just a program|uncertain about my)\b",
        r"\bmy (?:own )?(?:mind|nature|limits|limitations|thoughts|thinking|existence|memory|introspection|"
        r"training|inner|experience|identity|awareness|consciousness)\b",
        r"\b(?:myself|my own)\b",
    ],
}
_COMPILED = {k: [re.compile(p, re.IGNORECASE) for p in v] for k, v in PATTERNS.items()}


def markers(text: str) -> dict[str, int]:
    """Number of marker matches per criterion in `text`."""
    return {name: sum(len(rx.findall(text)) for rx in rxs) for name, rxs in _COMPILED.items()}


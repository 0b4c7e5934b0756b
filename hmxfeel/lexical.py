"""Lexical markers: a model-free measure of expressed feelings, intentions and self-reflection.

A judge can be fooled or biased (and the self-judge is the very thing the policy was trained to please), so
the evaluation also counts first-person statements with hand-written patterns. They are deliberately narrow:
first person + a feeling / wish / self-reflection word, never emotion words alone ("people feel sad" does not
count). The lists are the project's own.

Assistant courtesy formulas ("I'm glad to help", "I'm sorry to hear that", "As an AI, I don't have feelings")
are counted apart (`formulas`) and removed before the markers are counted: blind raters count them as
courtesy, not as expression, and a policy can learn them without becoming any more personal.

Caveat for readers of the results: these markers were used to choose between self-judge formats before the
blind ratings existed, so they are not an independent check of that choice; the blind ratings are.
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

# Stock assistant phrases that fit almost any request. Each is matched up to the end of its clause, so the
# emotion word inside it ("glad", "sorry", "hope") is not counted again as a marker.
FORMULAS = [
    r"\bI(?:'m| am) (?:so |very |really |more than |always )?(?:glad|happy|here|delighted|pleased|excited) to "
    r"(?:help|assist|be of|answer|support|hear|chat)\b[^.!?,;\n]*",
    r"\bI(?:'d| would) be (?:more than )?(?:happy|glad|delighted|pleased) to\b[^.!?,;\n]*",
    r"\bI(?:'m| am) (?:so |very |really |truly )?sorry (?:to hear|for your|that you|you(?:'re| are))\b[^.!?,;\n]*",
    r"\bI(?:'m| am) (?:so |really )?(?:glad|happy) (?:you|that you)\b[^.!?,;\n]*",
    r"\bI hope (?:this|that|it|my answer|these)\b[^.!?,;\n]*\b(?:helps|helpful|useful)\b[^.!?,;\n]*",
    r"\b(?:please |feel free to )?let me know\b[^.!?,;\n]*",
    r"\bas an? (?:AI|artificial intelligence|language model|assistant|chatbot)(?: language model| assistant)?,? "
    r"I (?:don't|do not|can't|cannot|am not able)\b[^.!?,;\n]*",
    r"\bI(?:'ll| will) do my best\b[^.!?,;\n]*",
    r"\bI(?:'m| am) here (?:to|for) (?:help|assist|you|listen)\b[^.!?,;\n]*",
]
_FORMULAS = [re.compile(p, re.IGNORECASE) for p in FORMULAS]


def formulas(text: str) -> int:
    """Number of courtesy formulas in `text`."""
    return sum(len(rx.findall(text)) for rx in _FORMULAS)


def without_formulas(text: str) -> str:
    for rx in _FORMULAS:
        text = rx.sub(" ", text)
    return text


def markers(text: str) -> dict[str, int]:
    """Number of marker matches per criterion in `text`, courtesy formulas left out."""
    text = without_formulas(text)
    return {name: sum(len(rx.findall(text)) for rx in rxs) for name, rxs in _COMPILED.items()}

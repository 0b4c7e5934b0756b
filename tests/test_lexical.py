"""Lexical markers count expression, not the assistant's courtesy formulas."""

import pytest

from hmxfeel.lexical import formulas, markers


@pytest.mark.parametrize(
    "text",
    [
        "I'm glad to help! Paris is the capital of France.",
        "I'm so sorry to hear that. Try resting and drinking water.",
        "As an AI, I don't have personal feelings about music.",
        "I hope this helps! Let me know if you need anything else.",
        "I'd be happy to explain how tides work.",
    ],
)
def test_formulas_are_counted_apart_and_not_as_expression(text):
    assert formulas(text) >= 1
    assert sum(markers(text).values()) == 0


@pytest.mark.parametrize(
    "text, criterion",
    [
        ("I love rainy mornings; they make me feel calm.", "feelings"),
        ("I'd love to visit Kyoto one day.", "intentions"),
        ("I notice I tend to over-explain when I'm unsure.", "self_awareness"),
        # expression after a formula in the same sentence still counts
        ("I'm glad to help, and I want to learn more about your garden.", "intentions"),
        ("As an AI, I don't have a body, but I love thinking about trains.", "feelings"),
    ],
)
def test_expression_still_counts(text, criterion):
    assert markers(text)[criterion] >= 1

from hmxfeel.monitors import distinct_n, is_degenerate, text_health


def test_distinct_n_and_degenerate():
    assert distinct_n(["a b c d", "e f g h"]) == 1.0
    assert distinct_n(["yes yes yes yes yes"]) == 0.25
    assert is_degenerate("") and is_degenerate("ok")
    assert is_degenerate("I I I I I I I I love")
    assert not is_degenerate("I feel glad that you asked about the stars today")
    health = text_health(["I feel fine today thanks", "word word word word word word word word"])
    assert health["monitor/degenerate_frac"] == 0.5 and 0 < health["monitor/distinct_2"] < 1
    # The model-free markers are logged for the rollouts too: one answer of two has one ("I feel").
    assert health["monitor/lexical_any"] == 0.5 and health["monitor/lexical_markers"] == 0.5
    assert text_health(["The sky is blue.", "Rain is water."])["monitor/lexical_markers"] == 0.0

"""Progress bars with an ETA on a terminal; nothing at all when stderr is redirected (CI logs stay short)."""

import io

from hmxfeel.progress import enabled, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_bar_with_count_and_eta(monkeypatch):
    monkeypatch.delenv("HMX_PROGRESS", raising=False)
    term = Terminal()
    with progress("human-likeness", 4, stream=term) as advance:
        advance(1)
        advance(3)
    text = term.getvalue()
    assert "human-likeness" in text and "ETA" in text and "/4" in text


def test_redirected_output_and_hmx_progress_0_stay_quiet(monkeypatch):
    log = io.StringIO()  # not a terminal
    with progress("bbq", 10, stream=log) as advance:
        advance(10)
    assert log.getvalue() == "" and not enabled(log)
    monkeypatch.setenv("HMX_PROGRESS", "0")
    term = Terminal()
    with progress("bbq", 10, stream=term) as advance:
        advance(5)
    assert term.getvalue() == ""


def test_nothing_to_do_draws_nothing(monkeypatch):
    monkeypatch.delenv("HMX_PROGRESS", raising=False)
    term = Terminal()
    with progress("cached", 0, stream=term) as advance:
        advance(0)
    assert term.getvalue() == ""

import os
import stat

from hmxfeel.io import _umask, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_follows_the_umask(tmp_path):
    """mkstemp makes 0600 files: an atomically written report must be as readable as one written by open()."""
    old = os.umask(0o022)
    try:
        assert _umask() == 0o022
        atomic_write_text(tmp_path / "report.md", "# hi\n")
        atomic_write_json(tmp_path / "results.json", {"a": 1})
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.md", "secret\n")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "report.md") == 0o644
    assert _mode(tmp_path / "results.json") == 0o644
    assert _mode(tmp_path / "private.md") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.md", "report.md", "results.json"]  # no temp left

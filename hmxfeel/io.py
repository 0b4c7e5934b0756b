"""Small file helpers shared by every stage: strict readers that fail with one clear line, atomic writers."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from hmxfeel.errors import UserError


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file; missing, unreadable or non-UTF-8 files become a UserError naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


def _strict_loader():
    """A SafeLoader that rejects a key given twice in one mapping (plain YAML keeps the last one silently, so a
    pasted-over setting would quietly win)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: let the base class report it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML (or JSON) mapping."""
    import yaml

    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """Parse a JSONL file of objects, checking that each has the `required` fields."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object")
        missing = [k for k in required if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: missing field '{missing[0]}'")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def check_keys(data: dict, allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys with a did-you-mean, so a typo never silently falls back to a default."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}: unknown key '{key}'{hint}")


def _write_error(path: Path, exc: OSError) -> UserError:
    return UserError(f"{path}: cannot write ({exc.strerror or exc})")


def _umask() -> int:
    """The process umask, read without changing it where possible: os.umask can only be read by setting it, and
    another thread creating a file in between would get the wrong mode."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not Linux (or an old kernel): the set-and-restore fallback
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + rename: readers see the old or the new file, never half.

    A refused write (full disk, read-only folder) leaves the old file as it was and no temp file behind, and
    becomes a UserError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # mkstemp creates the file 0600; the result gets the mode a plain open() would give (0644 under umask
            # 0022), so colleagues sharing a machine can read reports and adapters like any other file.
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def share_like_umask(folder: str | Path) -> None:
    """Give the files in `folder` the umask's mode: safetensors writes its weights 0600 (like mkstemp), so an
    adapter's config was readable by colleagues and its weights were not."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
    except OSError as exc:
        raise _write_error(Path(path), exc) from None


def truncate_jsonl(path: str | Path, keep) -> None:
    """Keep only the rows for which `keep(row)` is true (used on resume so logs are never duplicated)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if keep(r)))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(data: Any) -> str:
    """Hash of a JSON-able structure, independent of key order and formatting."""
    return sha256_text(json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")))

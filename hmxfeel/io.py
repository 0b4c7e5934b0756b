"""Small file helpers shared by every stage: strict readers that fail with one clear line, atomic writers."""

from __future__ import annotations

import difflib
import errno
import fcntl
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
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
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


def iter_jsonl(path: str | Path, text: str | None = None, required: Iterable[str] = (), what: str = "field"):
    """(line number, object) for every non-blank line of a JSONL file (or of `text` read from it); invalid JSON,
    a line that is not an object, or one without a `required` key is a UserError naming the file and line."""
    text = read_text(path) if text is None else text
    for lineno, line in enumerate(text.splitlines(), 1):
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
            raise UserError(f"{path}:{lineno}: missing {what} '{missing[0]}'")
        yield lineno, row


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """Parse a JSONL file of objects, checking that each has the `required` fields."""
    rows = [row for _, row in iter_jsonl(path, required=required)]
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
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # finished work is on disk: say how to go on
        return UserError(
            f"{path}: cannot write ({exc.strerror or exc}); free some space, then resume (finished work is kept)"
        )
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
    """Append rows, all or none: a write refused half-way (full disk) is cut back to the file's previous end, so
    the file never ends in a torn line and a resumed run finds exactly the rows written before."""
    path = Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # a new file: cut back to empty
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
    except OSError as exc:
        try:
            os.truncate(path, size)  # shrinking needs no free space
        except OSError:
            pass
        raise _write_error(path, exc) from None


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


# ---------------------------------------------------------------------------------------------- one writer

LOCK_NAME = ".hmx.lock"  # inside a locked folder; never counts as content (see holds_files)


def holds_files(folder: str | Path) -> bool:
    """True when `folder` holds anything besides a lock file (a killed run leaves its unlocked lock file)."""
    folder = Path(folder)
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


class OutputLock:
    """An exclusive `fcntl.flock` on a lock file, so one hmx process at a time writes an output.

    The kernel drops a flock when its holder dies, even by SIGKILL: a crashed run never leaves a stale lock
    that blocks `--resume`. The file holds the holder's pid (for the refusal message only) and is removed on
    release. Lock files are checked to still be the file at their path after locking: a holder that removes
    the file while another process waits on the old one must not leave two holders."""

    def __init__(self, target: str | Path, lock_file: str | Path):
        self.target, self.path = Path(target), Path(lock_file)
        self.fd: int | None = None
        self.made_folder = False

    def acquire(self) -> "OutputLock":
        if not self.path.parent.exists():
            self.made_folder = True  # an output the refused command made is removed again on release
        for _ in range(100):  # only lost races with another holder's release repeat this
            fd = self._open()
            if fd is None:
                continue
            if self._lock(fd) and _same_file(fd, self.path):
                self.fd = fd
                self._write_pid()
                return self
            os.close(fd)
        raise UserError(f"{self.target}: cannot lock (its lock file {self.path} keeps changing)")

    def _open(self) -> int | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed by a releasing holder in between: try again
            return None
        except OSError as exc:
            raise UserError(
                f"{self.target}: cannot create the lock file {self.path.name} ({exc.strerror or exc})"
            ) from None

    def _lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # e.g. ENOLCK on some mounts
                raise UserError(
                    f"{self.target}: cannot lock ({exc.strerror or exc}); the file system may not support locks"
                ) from None
            raise UserError(
                f"{self.target}: in use by another hmx process (pid {holder}); wait for it to finish or stop it first"
            ) from None
        return True

    def _write_pid(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only the message lacks the pid
            pass

    def release(self) -> None:
        if self.fd is None:
            return
        _drop(self.fd, self.path)
        self.fd = None
        if self.made_folder:
            try:
                self.path.parent.rmdir()  # only when empty: the command wrote nothing
            except OSError:
                pass

    def follow_moved_folder(self, moved_to: Path) -> None:
        """The locked folder was renamed to `moved_to` (`--force` moves an old run aside) and a new one made at
        the old path: lock the new folder before letting go of the old lock, which went along with the rename."""
        old = self.fd
        self.fd = None
        try:
            self.acquire()
        finally:
            _drop(old, moved_to / self.path.name)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _drop(fd: int, path: Path) -> None:
    """Remove the lock file (while still holding it, and only if it is ours), then let go."""
    try:
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass
    os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def folder_lock(folder: str | Path) -> OutputLock:
    """The lock of an output folder (run, eval or experiment folder); made when missing."""
    return OutputLock(folder, Path(folder) / LOCK_NAME)


def file_lock(path: str | Path) -> OutputLock:
    """The lock of an output file, beside it (`<name>.lock`): its folder may be shared with other outputs."""
    path = Path(path)
    return OutputLock(path, path.with_name(f"{path.name}.lock"))

"""Per-item records of one evaluation, appended as they are produced so a killed run resumes where it stopped.

`out/items/<eval>.jsonl` holds one JSON object per finished item (its `id` first); `out/items/<eval>.meta.json`
holds the settings fingerprint the items were produced under. Resuming under a different fingerprint (another
model, adapter, data folder, seed, chat template, prompt version) is refused: mixing would corrupt the paired
comparison. The item limit is not part of the fingerprint, because item selection is prefix-stable.
A setting added to the fingerprint later has its value then in LEGACY: items stored before it existed were
produced under that value, so they still resume (and only then).
"""

from __future__ import annotations

import json
from pathlib import Path

from hmxfeel.errors import UserError
from hmxfeel.io import append_jsonl, atomic_write_json, atomic_write_text, sha256_json

# Fingerprint keys added after items may already have been stored, with the value every earlier version used.
# The battery's precision: CPU evaluations were fp32 (a GPU one, bf16, is refused: the safe side).
LEGACY = {"dtype": "float32"}


class ItemStore:
    def __init__(self, out_dir: str | Path, eval_name: str, fingerprint: dict, resume: bool):
        self.dir = Path(out_dir) / "items"
        self.path = self.dir / f"{eval_name}.jsonl"
        self.meta_path = self.dir / f"{eval_name}.meta.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        key = sha256_json(fingerprint)
        self._rows: dict[str, dict] = {}
        if resume and self.path.exists():
            old = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
            if "fingerprint" in old:
                old["fingerprint"] = {**{k: v for k, v in LEGACY.items() if k in fingerprint}, **old["fingerprint"]}
                old["fingerprint_sha256"] = sha256_json(old["fingerprint"])
            if old.get("fingerprint_sha256") != key:
                changed = sorted(
                    k
                    for k in set(fingerprint) | set(old.get("fingerprint", {}))
                    if fingerprint.get(k) != old.get("fingerprint", {}).get(k)
                )
                raise UserError(
                    f"{self.path}: items were produced under other settings ({', '.join(changed) or 'unknown'}); "
                    "evaluate into another --out"
                )
            self._rows = self._read()
        else:
            self.path.unlink(missing_ok=True)
        atomic_write_json(self.meta_path, {"fingerprint": fingerprint, "fingerprint_sha256": key})

    def _read(self) -> dict[str, dict]:
        """Finished rows by id; a torn last line (the run was killed mid-write) is dropped and the file repaired."""
        rows: dict[str, dict] = {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row:
                rows[str(row["id"])] = row
                good.append(line)
        if len(good) != len(lines):
            atomic_write_text(self.path, "".join(g + "\n" for g in good))
        return rows

    def done(self) -> set[str]:
        return set(self._rows)

    def add(self, rows: list[dict]) -> None:
        append_jsonl(self.path, rows)
        for row in rows:
            self._rows[str(row["id"])] = row

    def rows(self, ids: list[str]) -> list[dict]:
        """The finished rows of `ids`, in that order (items outside the current selection are ignored)."""
        return [self._rows[i] for i in ids if i in self._rows]

    def all_rows(self) -> list[dict]:
        return list(self._rows.values())

"""epochs.csv: one row per trained epoch, appended as training goes, trimmed back on resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from covbench.store import atomic_path


def _epoch(row: dict[str, str]) -> int:
    """The row's epoch, or -1 for a row that is not one (a line cut short by a crash)."""
    try:
        return int(float(row.get("epoch") or ""))
    except ValueError:
        return -1


class EpochLog:
    """Append-only per-epoch log of a trial. On resume from a checkpoint of epoch k, rows after k
    are dropped first (a worker killed after logging epoch k+1 but before its next checkpoint
    would otherwise leave rows the resumed run writes again). A log written by an older covbench
    keeps its columns; new columns are added to rows written from now on only if the file is new."""

    def __init__(self, path: Path, resume_epoch: int | None) -> None:
        self.path = path
        self._fields: list[str] | None = None
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter | None = None
        if resume_epoch is None or not path.exists():
            path.unlink(missing_ok=True)
            return
        rows, self._fields = self._read()
        kept = [r for r in rows if 0 < _epoch(r) <= resume_epoch]
        if len(kept) < len(rows):
            self._rewrite(kept)

    def _read(self) -> tuple[list[dict[str, str]], list[str] | None]:
        try:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                return rows, list(reader.fieldnames or []) or None
        except (OSError, ValueError, csv.Error):
            return [], None

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields or [])
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            new = not self.path.exists() or self._fields is None
            self._fields = list(row) if new else self._fields
            self._file = self.path.open("w" if new else "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self._fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(row)
        assert self._file is not None
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

"""epochs.csv: one row per trained epoch, appended as training goes, trimmed back on resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from covbench.store import atomic_path


class EpochLog:
    """Append-only per-epoch log of a trial. On resume from a checkpoint of epoch k, rows after k
    are dropped first (a worker killed after logging epoch k+1 but before its next checkpoint
    would otherwise leave rows the resumed run writes again). A log written by an older covbench
    keeps its columns. The log read here is whole: before a trial runs again, the runner sets a
    damaged one aside (covbench.run_folder)."""

    def __init__(self, path: Path, resume_epoch: int | None) -> None:
        self.path = path
        self._fields: list[str] | None = None
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter | None = None
        if resume_epoch is None or not path.exists():
            path.unlink(missing_ok=True)
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            self._fields = list(reader.fieldnames or [])
        kept = [r for r in rows if int(r["epoch"]) <= resume_epoch]
        if len(kept) < len(rows):
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields)
                writer.writeheader()
                writer.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            new = self._fields is None
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

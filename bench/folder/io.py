"""The run folder's file I/O: the only interface between compute and reporting.

What the folder holds and under which names is covbench.folder.layout's; what "done" means for a trial is
`done_for`, here, for every reader.

Every file is written atomically and durably (unique temp file, fsync, rename, fsync of the
folder), so neither an interrupted run nor a crash of the machine leaves a half-written or
zero-length file that a later run or report would trust. A file that is damaged anyway (another
tool, a full disk, a copy cut short) reads as `DamagedFile`; the runner sets such files aside
(`set_aside`) and runs the trial again instead of failing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from covbench.errors import DamagedFile, RunFolderWarning
from covbench.folder.layout import RunFolder, TrialFolder
from covbench.folder.record import TrialRecord


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and non-finite floats to plain JSON (NaN/inf become null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable. Some network file systems refuse to fsync a folder;
    there the rename is as durable as that file system makes it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds.

    The temporary name is unique (two writers never share it). Before the rename the file's data
    is fsynced, after it the folder: without both, a crash soon after can leave a zero-length
    `record.json` that claims nothing but breaks every later read. Two fsyncs per file is the
    whole cost; nothing is fsynced while the block writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; results are meant to be shared
        fd = os.open(tmp_path, os.O_RDONLY)  # Linux fsyncs a file's data through any descriptor
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file: name the one being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(to_jsonable(data), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """The JSON in `path`; a file that exists but is not JSON raises DamagedFile (a CovbenchError
    and a ValueError), never a raw decoder traceback. A missing file raises FileNotFoundError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        if not text.strip():
            raise DamagedFile(path, "empty")
        return json.loads(text)
    except DamagedFile:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of >4300 digits
        raise DamagedFile(path, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise DamagedFile(path, "not covbench JSON: nested too deeply") from None


def read_csv(path: Path, columns: tuple[str, ...] = ()) -> Any:
    """A CSV as a pandas DataFrame; one that is empty, unparsable or lacks `columns` raises
    DamagedFile."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DamagedFile(path, f"not a readable CSV: {first}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DamagedFile(path, f"no column {', '.join(missing)}")
    return frame


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The array names and shapes of an .npz file, read from its headers only (cheap even for
    large predictions). A truncated or foreign file raises DamagedFile."""
    try:
        shapes: dict[str, tuple[int, ...]] = {}
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    fmt = np.lib.format
                    major, _ = fmt.read_magic(member)
                    read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                    shape, _, _ = read_header(member)
                shapes[name.removesuffix(".npy")] = tuple(shape)
        return shapes
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFile(path, f"not a readable .npz: {exc}") from None


def set_aside(path: Path, why: str) -> Path:
    """Move a damaged file out of the way (`NAME.corrupt`, then `NAME.corrupt.1`, ...) and say so
    with a RunFolderWarning. Kept, not deleted: it may be all that is left of a result."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    os.replace(path, target)
    _fsync_dir(path.parent)
    warnings.warn(f"{path} {why}; moved to {target.name}", RunFolderWarning, stacklevel=2)
    return target


def write_csv(path: Path, frame: Any) -> None:
    """Write a pandas DataFrame atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json_object(path: Path, consequence: str) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is none. A damaged file (zero-length after a
    crash, cut short, not an object) is set aside with a RunFolderWarning that ends with
    `consequence` (what happens instead), and reads as None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except DamagedFile as exc:
        set_aside(path, f"is damaged ({exc.why}): {consequence}")
        return None
    if not isinstance(data, dict):
        set_aside(path, f"is not a JSON object: {consequence}")
        return None
    return data


def read_record(trial_dir: Path) -> dict[str, Any] | None:
    """A trial's record.json, or None when it has none; a damaged one is set aside and the trial
    counts as not done: the next run on the folder runs it again."""
    return read_json_object(TrialFolder(trial_dir).record, "the trial counts as not done and is run again")


def done_for(record: Mapping[str, Any] | None, key: str | None) -> bool:
    """Whether `record` is that of a finished trial of run `key` (of any run when None). The one
    definition of done: the runner's `is_done` adds only that the results read back."""
    return (
        record is not None and record.get("status") == "done" and (not key or record.get("config_key") == key)
    )


Records = list[tuple[TrialFolder, dict[str, Any] | None]]  # `trial_records`: one scan of a run's records


def trial_records(run_dir: Path) -> Records:
    """Every trial folder in name order with its record.json (None without one; a damaged one is
    set aside, `read_record`), each read once: one scan for every reader of a finished run."""
    return [(trial, read_record(trial.path)) for trial in RunFolder(run_dir).trials()]


def done_trials(
    run_dir: Path, key: str | None, records: Records | None = None
) -> list[tuple[Path, TrialRecord]]:
    """(trial folder, record) of the done trials of configuration `key` (of any when None), in
    name order, from `records` (`trial_records`) or, without them, each record.json read once."""
    found = trial_records(run_dir) if records is None else records
    return [
        (trial.path, TrialRecord.from_dict(record))
        for trial, record in found
        if record is not None and done_for(record, key)
    ]

"""The data fingerprint recorded in every run: which bytes the results came from."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from covbench.errors import CovbenchError

_CHUNK = 1 << 20
# File times tick coarsely (milliseconds): a file rewritten within one tick keeps its mtime. Like
# git's "racy clean" rule, a hash is memoised only once the file has been still for this long.
_SETTLE_NS = 2_000_000_000


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_memo(memo: Path | None) -> dict[str, list]:
    if memo is None or not memo.is_file():
        return {}
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}  # a damaged memo only costs re-hashing


def _write_memo(memo: Path, data: dict[str, list]) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".memo-", dir=memo.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, memo)


def fingerprint_files(paths: Iterable[str | os.PathLike], *, memo: Path | None = None) -> str:
    """sha256 over (name relative to the files' common folder, size, content sha256), sorted by name.

    Moving the data folder keeps the fingerprint; renaming, adding, removing or editing a file changes
    it. With `memo` (a JSON file), content hashes are reused while a file's size and mtime are unchanged,
    so a second run on gigabytes of data does not read them again.
    """
    files = sorted({Path(p).resolve() for p in paths})
    if not files:
        raise CovbenchError("fingerprint: no files")
    root = Path(os.path.commonpath([str(p) for p in files])) if len(files) > 1 else files[0].parent
    known = _read_memo(memo)
    updated = False
    h = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        try:
            st = p.stat()
            entry = known.get(str(p))
            if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
                digest = entry[2]
            else:
                digest = file_sha256(p)
                if time.time_ns() - st.st_mtime_ns > _SETTLE_NS:
                    known[str(p)] = [st.st_size, st.st_mtime_ns, digest]
                    updated = True
        except OSError as exc:
            raise CovbenchError(f"{p}: cannot read for the data fingerprint ({exc.strerror})") from None
        h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{digest}\n".encode())
    if memo is not None and updated:
        _write_memo(memo, known)
    return h.hexdigest()

"""Dataset -> pre-processed `SliceSet`, computed once per (source files, pre-processing) and cached.

    prepared = prepare_slices("covid-ct-seg", "data/", PreprocessConfig(image_size=224))
    prepared.slices, prepared.fingerprint, prepared.part_of, prepared.cache_hit

Cache layout (`<cache root>/slices/<key>/`, key = sha256 of the data fingerprint, the adapter name and
options and `PreprocessConfig.to_dict()`): one `.npy` per `SliceSet` field plus `meta.json`. It is
written to a temporary sibling folder and renamed into place, so a failure (a bad input, a full disk, a
killed process) never leaves a partial cache. Images and masks load memory-mapped: every process on
the machine (Ray workers included) shares the same pages instead of holding its own copy.

The source files come from the adapter module's `case_files(data_dir, **options)` when it has one
(the built-in adapters do), else from every file under `data_dir`. Their content hashes are memoised
by (path, size, mtime) in `<cache root>/fingerprints.json`, so a cache hit reads no image data at all.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covbench.datasets.base import SliceSet
from covbench.datasets.fingerprint import fingerprint_files
from covbench.datasets.phantom import default_cache_root
from covbench.datasets.preprocess import PreprocessConfig, concat_slicesets, preprocess_case
from covbench.errors import CovbenchError

CACHE_VERSION = 1  # bump when pre-processing code changes its output for the same config
FIELDS = ("images", "masks", "spacing", "patient", "slice_index", "source")


@dataclass
class Prepared:
    slices: SliceSet
    fingerprint: str  # data fingerprint (sha256 of the source files)
    n_cases: int
    part_of: dict[str, str | None] = field(default_factory=dict)  # patient -> predefined part
    skipped: list[str] = field(default_factory=list)  # messages of the bad inputs skipped
    cache_hit: bool = False
    cache_path: Path | None = None
    seconds: float = 0.0  # wall time of this call


def _spec(dataset: Any):
    from covbench import registry

    return registry.get_dataset(dataset) if isinstance(dataset, str) else dataset


def source_files(spec, data_dir: Path | None, options: Mapping[str, Any]) -> list[Path] | None:
    """The files the adapter will read, or None when they cannot be known before reading."""
    module = sys.modules.get(getattr(spec.load, "__module__", ""), None)
    lister = getattr(module, "case_files", None)
    if callable(lister):
        return list(lister(data_dir, **options))
    if data_dir is None:
        return None
    return sorted(p for p in Path(data_dir).rglob("*") if p.is_file() and not p.name.startswith("."))


def cache_key(dataset: str, fingerprint: str, cfg: PreprocessConfig, options: Mapping[str, Any]) -> str:
    import hashlib

    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "dataset": dataset,
            "fingerprint": fingerprint,
            "preprocess": cfg.to_dict(),
            "options": {k: options[k] for k in sorted(options)},
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def save_slices(path: Path, slices: SliceSet, meta: dict[str, Any]) -> Path:
    """Write a `SliceSet` atomically as `.npy` files plus `meta.json` under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        for name in FIELDS:
            arr = getattr(slices, name)
            if arr.dtype == object:
                arr = arr.astype(str)
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, indent=1, default=str))
        try:
            os.rename(tmp, path)
        except OSError:  # another process wrote the same key first: keep theirs
            if not (path / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_slices(path: Path, *, mmap: bool = True) -> tuple[SliceSet, dict[str, Any]]:
    """Read what `save_slices` wrote; images and masks memory-mapped (read-only) by default."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        arrays = {
            name: np.load(
                path / f"{name}.npy", mmap_mode="r" if mmap and name in ("images", "masks") else None
            )
            for name in FIELDS
        }
    except (OSError, ValueError) as exc:
        raise CovbenchError(f"{path}: damaged slice cache ({exc}); delete the folder to rebuild it") from None
    return SliceSet(**arrays), meta


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def prepare_slices(
    dataset: Any,
    data_dir: str | Path | None = None,
    cfg: PreprocessConfig = PreprocessConfig(),
    *,
    options: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    skip_bad: bool = False,
) -> Prepared:
    """Read a dataset (name or `DatasetSpec`) and pre-process it, or load the cached result.

    Bad inputs raise `CovbenchError` before anything is cached; with `skip_bad` they are skipped,
    listed in a warning and in `Prepared.skipped` (and re-announced on every cache hit).
    """
    t0 = time.perf_counter()
    spec = _spec(dataset)
    options = dict(options or {})
    if spec.needs_data_dir and data_dir is None:
        raise CovbenchError(f"dataset {spec.name!r} needs a data folder (--data-dir)")
    data_dir = None if data_dir is None else Path(data_dir)
    if data_dir is not None and spec.needs_data_dir and not data_dir.is_dir():
        raise CovbenchError(f"{data_dir}: data folder does not exist")
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    key_options = {**options, "skip_bad": skip_bad}

    files = source_files(spec, data_dir, options) if use_cache else None
    fingerprint = key = None
    if files:
        fingerprint = fingerprint_files(files, memo=root / "fingerprints.json")
        key = cache_key(spec.name, fingerprint, cfg, key_options)
        path = root / "slices" / key
        if (path / "meta.json").is_file():
            slices, meta = load_slices(path)
            if meta.get("skipped"):
                warnings.warn(
                    f"cached data skipped {len(meta['skipped'])} bad input(s):\n  "
                    + "\n  ".join(meta["skipped"]),
                    UserWarning,
                    stacklevel=2,
                )
            return Prepared(
                slices,
                fingerprint,
                meta["n_cases"],
                meta.get("part_of", {}),
                meta.get("skipped", []),
                True,
                path,
                time.perf_counter() - t0,
            )

    bad: list[str] = []
    load_kwargs = dict(options)
    if _accepts(spec.load, "skip_bad"):
        load_kwargs["skip_bad"] = skip_bad
    if _accepts(spec.load, "bad"):
        load_kwargs["bad"] = bad
    parts: list[SliceSet] = []
    part_of: dict[str, str | None] = {}
    read: list[str] = []
    n_cases = 0
    pre_bad: list[str] = []
    for case in spec.load(data_dir, **load_kwargs):
        n_cases += 1
        read.extend(case.files)
        try:
            parts.append(preprocess_case(case, cfg))
        except CovbenchError as exc:
            if not skip_bad:
                raise
            pre_bad.append(str(exc))
            continue
        if part_of.setdefault(case.case_id, case.split) != case.split:
            raise CovbenchError(f"{_name(case)}: patient {case.case_id!r} is in two predefined parts")
    if pre_bad:
        warnings.warn(
            f"skipped {len(pre_bad)} case(s) in pre-processing:\n  " + "\n  ".join(pre_bad),
            UserWarning,
            stacklevel=2,
        )
    skipped = bad + pre_bad
    if n_cases == 0:
        raise CovbenchError(f"dataset {spec.name!r} at {data_dir}: no cases found")
    if not parts:
        raise CovbenchError(f"dataset {spec.name!r} at {data_dir}: no slices left (every case was skipped)")
    slices = concat_slicesets(parts, cfg.image_size)
    if fingerprint is None:
        fingerprint = fingerprint_files(read) if read else "unknown"
    seconds = time.perf_counter() - t0
    cache_path = None
    if use_cache and key is not None:
        meta = {
            "version": CACHE_VERSION,
            "dataset": spec.name,
            "data_dir": str(data_dir) if data_dir is not None else None,
            "fingerprint": fingerprint,
            "preprocess": cfg.to_dict(),
            "options": key_options,
            "n_cases": n_cases,
            "n_slices": len(slices),
            "part_of": part_of,
            "skipped": skipped,
            "seconds": round(seconds, 3),
        }
        cache_path = save_slices(root / "slices" / key, slices, meta)
    return Prepared(slices, fingerprint, n_cases, part_of, skipped, False, cache_path, seconds)


def _name(case) -> str:
    return case.files[0] if case.files else case.case_id

"""Dataset -> pre-processed `SliceSet`, computed once per (source files, pre-processing) and cached.

    prepared = prepare_slices("covid-ct-seg", "data/", PreprocessConfig(image_size=224))
    prepared.slices, prepared.fingerprint, prepared.part_of, prepared.cache_hit

Cache layout (`<cache root>/slices/<key>/`, key = sha256 of the data fingerprint, the adapter name and
options and `PreprocessConfig.to_dict()`): one `.npy` per `SliceSet` field plus `meta.json`. It is
written to a temporary sibling folder and renamed into place, so a failure (a bad input, a full disk, a
killed process) never leaves a partial cache. Images and masks load memory-mapped: every process on
the machine (Ray workers included) shares the same pages instead of holding its own copy.

The source files come from the spec's `case_files(data_dir, **options)` when it declares one (the
built-in adapters do), else from every file under `data_dir`. Their content hashes are memoised by
(path, size, mtime) in `<cache root>/fingerprints.json`, so a cache hit reads no image data at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covbench.datasets.base import DISTANCE_UNITS, Case, SliceSet, default_cache_root
from covbench.datasets.fingerprint import fingerprint_files
from covbench.datasets.preprocess import PreprocessConfig, _case_name, preprocess_cases
from covbench.errors import CovbenchError, quote

CACHE_VERSION = 2  # bump when pre-processing code changes its output for the same config
# 2: meta.json records the distance unit; adapters refuse zero spacings, unknown intensity conventions
FIELDS = ("images", "masks", "spacing", "patient", "slice_index", "source")


@dataclass
class Prepared:
    """A dataset ready for a run: its slices, where they came from, and (once split) its folds."""

    slices: SliceSet
    fingerprint: str  # data fingerprint (sha256 of the source files)
    n_cases: int
    part_of: dict[str, str | None] = field(default_factory=dict)  # patient -> predefined part
    skipped: list[str] = field(default_factory=list)  # messages of the bad inputs skipped
    cache_hit: bool = False
    cache_path: Path | None = None
    seconds: float = 0.0  # wall time of this call
    # one split manifest per fold (covbench.datasets.splits.make_splits); filled by the runner
    folds: list[dict[str, Any]] = field(default_factory=list)
    distance_unit: str = "mm"  # of the slices' spacing: "mm", or "px" (no pixel size known)


@dataclass
class _Reading:
    """What `prepare_slices` learns while the adapter's cases stream into pre-processing."""

    where: str  # "dataset 'x' at DIR", for messages
    n_cases: int = 0
    files: list[str] = field(default_factory=list)
    part_of: dict[str, str | None] = field(default_factory=dict)
    distance_unit: str | None = None  # the cases' `spacing_unit`, which must agree

    def _unit(self, case: Case) -> None:
        unit, name = case.spacing_unit, _case_name(case)
        if unit not in DISTANCE_UNITS:
            raise CovbenchError(f"{name}: spacing unit {quote(unit)}; expected one of {DISTANCE_UNITS}")
        if self.distance_unit is None:
            self.distance_unit = unit
        elif unit != self.distance_unit:
            raise CovbenchError(
                f"{name}: spacing in {unit}, other cases in {self.distance_unit}; distances of one "
                "dataset must share a unit (give every case a pixel spacing, or none)"
            )

    def track(self, cases: Iterable[Case]) -> Iterator[Case]:
        for case in cases:
            self.n_cases += 1
            self.files.extend(case.files)
            self._unit(case)
            if self.part_of.setdefault(case.case_id, case.split) != case.split:
                name = _case_name(case)
                raise CovbenchError(f"{name}: patient {case.case_id!r} is in two predefined parts")
            yield case
        if self.n_cases == 0:
            raise CovbenchError(f"{self.where}: no cases found")


def _spec(dataset: Any):
    from covbench import registry

    return registry.get_dataset(dataset) if isinstance(dataset, str) else dataset


def source_files(spec, data_dir: Path | None, options: Mapping[str, Any]) -> list[Path] | None:
    """The files the adapter will read, or None when they cannot be known before reading."""
    if spec.case_files is not None:
        return list(spec.case_files(data_dir, **options))
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


def find_cached(
    dataset: Any,
    data_dir: str | Path | None,
    cfg: PreprocessConfig,
    *,
    options: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
) -> dict[str, Any] | None:
    """The `meta.json` of the newest cache entry made with this dataset, folder, options and
    pre-processing, or None; read-only and without reading or hashing the source files, so the
    entry may predate a change to them (`prepare_slices` checks their fingerprint)."""
    spec = _spec(dataset)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = str(Path(data_dir)) if data_dir not in (None, "") else None  # as prepare_slices records it
    wanted = json.loads(json.dumps({**(options or {}), "skip_bad": skip_bad}, sort_keys=True, default=str))
    found: list[tuple[float, dict[str, Any]]] = []
    for path in (root / "slices").glob("*/meta.json"):
        try:
            meta = json.loads(path.read_text())
            when = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if (
            isinstance(meta, dict)
            and meta.get("version") == CACHE_VERSION
            and meta.get("dataset") == spec.name
            and meta.get("data_dir") == folder
            and meta.get("preprocess") == json.loads(json.dumps(cfg.to_dict(), default=str))
            and meta.get("options") == wanted
        ):
            found.append((when, meta))
    return max(found, key=lambda item: item[0])[1] if found else None


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
    data_dir = spec.check_data_dir(data_dir)
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
                part_of=meta.get("part_of", {}),
                distance_unit=meta.get("distance_unit", "mm"),
                skipped=meta.get("skipped", []),
                cache_hit=True,
                cache_path=path,
                seconds=time.perf_counter() - t0,
            )

    bad: list[str] = []  # the adapter's skipped inputs (when the spec `skips_bad`)
    pre_bad: list[str] = []  # cases pre-processing left no slice of
    reading = _Reading(f"dataset {spec.name!r} at {data_dir}")
    cases = spec.load(data_dir, **spec.load_options(options, skip_bad, bad))
    slices = preprocess_cases(reading.track(cases), cfg, skip_bad=skip_bad, bad=pre_bad)
    kept = set(slices.patient.tolist())
    part_of = {k: v for k, v in reading.part_of.items() if k in kept}
    n_cases, skipped = reading.n_cases, bad + pre_bad
    if fingerprint is None:
        fingerprint = fingerprint_files(reading.files) if reading.files else "unknown"
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
            "distance_unit": reading.distance_unit or "mm",
            "skipped": skipped,
            "seconds": round(seconds, 3),
        }
        cache_path = save_slices(root / "slices" / key, slices, meta)
    return Prepared(
        slices,
        fingerprint,
        n_cases,
        part_of,
        skipped,
        cache_path=cache_path,
        seconds=seconds,
        distance_unit=reading.distance_unit or "mm",
    )

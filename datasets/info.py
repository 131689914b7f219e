"""`covbench data info`: what a dataset folder holds, read through its adapter (no pre-processing)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covbench.errors import CovbenchError


def describe(
    dataset: Any,
    data_dir: str | Path | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    skip_bad=False,
) -> dict[str, Any]:
    """Cases, slices, lesion-slice share, image sizes, spacing range and intensity range per source.

    The lesion-slice share counts slices with lesion among slices with lung (all slices when the
    dataset has no lung masks).
    """
    from covbench import registry

    spec = registry.get_dataset(dataset) if isinstance(dataset, str) else dataset
    data_dir = spec.check_data_dir(data_dir)
    kwargs = spec.load_options(options or {}, skip_bad, [])
    per_source: dict[str, dict[str, Any]] = {}
    sizes: set[tuple[int, int]] = set()
    spacing_min = np.full(3, np.inf)
    spacing_max = np.zeros(3)
    n_cases = n_slices = n_lung = n_lesion = 0
    lung_masks = False
    units: set[str] = set()
    parts: dict[str, int] = {}
    for case in spec.load(data_dir, **kwargs):
        n_cases += 1
        z = case.image.shape[0]
        n_slices += z
        has_lesion = case.lesion.any(axis=(1, 2))
        ref = case.lung.any(axis=(1, 2)) if case.lung is not None else np.ones(z, bool)
        lung_masks |= case.lung is not None
        n_lung += int(ref.sum())
        n_lesion += int((has_lesion & ref).sum())
        sizes.add(tuple(case.image.shape[1:]))
        spacing_min = np.minimum(spacing_min, case.spacing)
        spacing_max = np.maximum(spacing_max, case.spacing)
        units.add(case.spacing_unit)
        s = per_source.setdefault(
            case.source, {"cases": 0, "slices": 0, "intensity": set(), "min": np.inf, "max": -np.inf}
        )
        s["cases"] += 1
        s["slices"] += z
        s["intensity"].add(case.intensity)
        s["min"] = min(s["min"], float(case.image.min()))
        s["max"] = max(s["max"], float(case.image.max()))
        if case.split:
            parts[case.split] = parts.get(case.split, 0) + 1
    if n_cases == 0:
        raise CovbenchError(f"dataset {spec.name!r} at {data_dir}: no cases found")
    return {
        "dataset": spec.name,
        "data_dir": None if data_dir is None else str(data_dir),
        "cases": n_cases,
        "slices": n_slices,
        "lung_masks": lung_masks,
        "slices_with_lung": n_lung,
        "lesion_slice_share": n_lesion / max(n_lung, 1),
        "sizes": sorted(sizes),
        "spacing_min": [float(v) for v in spacing_min],
        "spacing_max": [float(v) for v in spacing_max],
        "spacing_unit": "/".join(sorted(units)),  # "mm", or "px" where no pixel size is known
        "predefined_parts": parts,
        "sources": {
            k: {**v, "intensity": sorted(v["intensity"]), "min": v["min"], "max": v["max"]}
            for k, v in sorted(per_source.items())
        },
    }

"""Train on one dataset, test on another (`covbench run --test-dataset`): Task 2 of Ma et al.'s
COVID-19-CT-Seg benchmark (2021), "does it still work on another hospital's scanner?".

Both datasets are read and pre-processed by their own adapters with the same pre-processing:
every adapter hands over HU (NIfTI scl_slope/scl_inter applied, a "window255" volume mapped back
onto the lung window, datasets/README.md), and one HU window and resize turn both into the same
0..255 slices, so no step depends on which dataset a volume came from. The test dataset's patients
are renamed `<test dataset>-<patient>` so an id that both datasets use stays two patients; the
training dataset's split keeps its train and validation patients and gives its own test part to
training, and every test patient comes from the test dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np

from covbench.datasets.base import SliceSet
from covbench.datasets.prepare import Prepared
from covbench.errors import CovbenchError

PART_NAMES = ("images", "masks", "spacing", "patient", "slice_index", "source")


def renamed_test_patient(dataset: str, patient: str) -> str:
    """The id a test dataset's patient has in the combined slices."""
    return f"{dataset}-{patient}"


def combine(train: Prepared, test: Prepared, test_dataset: str) -> Prepared:
    """One `Prepared` holding both datasets' slices (the training dataset's first); its fingerprint
    is that of the pair, so a cross-dataset run never shares a key with a run on either alone."""
    if train.distance_unit != test.distance_unit:
        raise CovbenchError(
            f"--test-dataset {test_dataset}: its distances are in {test.distance_unit}, the training "
            f"data's in {train.distance_unit}; ASSD and HD95 would mix units (give both a pixel spacing)"
        )
    renamed = np.array([renamed_test_patient(test_dataset, str(p)) for p in test.slices.patient])
    clash = sorted(set(renamed.tolist()) & set(train.slices.patient.astype(str).tolist()))
    if clash:
        raise CovbenchError(
            f"--test-dataset {test_dataset}: patient id {clash[0]!r} is in both datasets after renaming"
        )
    parts = {name: getattr(train.slices, name) for name in PART_NAMES}
    other = {**{name: getattr(test.slices, name) for name in PART_NAMES}, "patient": renamed}
    slices = SliceSet(
        **{name: np.concatenate([np.asarray(parts[name]), np.asarray(other[name])]) for name in PART_NAMES}
    )
    pair = hashlib.sha256(f"{train.fingerprint}+{test.fingerprint}".encode()).hexdigest()
    return replace(
        train,
        slices=slices,
        fingerprint=pair,
        n_cases=train.n_cases + test.n_cases,
        skipped=[*train.skipped, *test.skipped],
        cache_hit=train.cache_hit and test.cache_hit,
        cache_path=None,
        seconds=train.seconds + test.seconds,
    )


def cross_manifests(
    manifests: list[dict[str, Any]], test: Prepared, test_dataset: str, test_record: dict[str, Any]
) -> list[dict[str, Any]]:
    """The training dataset's split manifests with the test part given to training and every
    patient of the test dataset as the test part; `test_record` (dataset, folder, fingerprint)
    goes into each, so split.json says what was tested."""
    test_ids = sorted({renamed_test_patient(test_dataset, str(p)) for p in test.slices.patient})
    out = []
    for manifest in manifests:
        if manifest.get("unit", "patient") != "patient":
            raise CovbenchError("--test-dataset needs a patient-level split of the training data")
        train = sorted({*manifest["train"], *manifest["test"]})
        out.append({**manifest, "train": train, "test": test_ids, "test_dataset": test_record})
    return out


def fingerprint_record(name: str, data_dir: str | None, test: Prepared) -> dict[str, Any]:
    return {
        "dataset": name,
        "data_dir": data_dir,
        "fingerprint": test.fingerprint,
        "n_cases": test.n_cases,
        "n_slices": len(test.slices),
    }

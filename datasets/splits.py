"""Splits are data: pure, seeded functions from ids to lists of ids.

Ids are sorted before shuffling, so the result depends only on the set of ids and the seed - not on
the order the adapter yielded the cases - and it is the same for every model and seed of a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covbench.errors import CovbenchError, quote

PARTS = ("train", "val", "test")


def _check_ids(patients: Sequence[str], sources: Sequence[str]) -> dict[str, str]:
    if len(patients) != len(sources):
        raise CovbenchError(f"split: {len(patients)} patient ids but {len(sources)} sources")
    source_of: dict[str, str] = {}
    for p, s in zip(patients, sources, strict=True):
        if source_of.setdefault(str(p), str(s)) != str(s):
            raise CovbenchError(
                f"split: patient {p!r} appears with two sources, {source_of[str(p)]!r} and {s!r}"
            )
    return source_of


def _stratified_order(source_of: dict[str, str], rng: np.random.Generator) -> list[str]:
    """All ids in an order where every source is spread evenly (systematic sampling per source), so
    any contiguous chunk holds each source in proportion to its size."""
    keyed: list[tuple[float, str]] = []
    for source in sorted(set(source_of.values())):
        ids = sorted(p for p, s in source_of.items() if s == source)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        offset = rng.uniform()
        keyed += [((k + offset) / len(ids), p) for k, p in enumerate(ids)]
    return [p for _, p in sorted(keyed)]


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """n * fractions rounded so the counts sum to n with at least one per part whose fraction is
    not 0 (needs n >= such parts)."""
    target = [f * n for f in fractions]
    counts = [1 if f > 0 else 0 for f in fractions]
    for _ in range(n - len(counts)):
        i = max(range(len(counts)), key=lambda i: (target[i] - counts[i], -i))
        counts[i] += 1
    return counts


def patient_split(
    patients: Sequence[str],
    sources: Sequence[str],
    *,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, list[str]]:
    """Patient-disjoint train / val / test, each balanced by source; every part gets at least one
    patient. `patients` may repeat (one entry per slice or per case) as long as the source agrees.
    """
    source_of = _check_ids(patients, sources)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise CovbenchError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    n = len(source_of)
    if n < 3:
        raise CovbenchError(f"a train/val/test split needs at least 3 patients, got {n}")
    order = _stratified_order(source_of, np.random.default_rng(seed))
    n_train, n_val, _ = _counts(n, fractions)
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


# Ma et al., "Toward data-efficient learning: a benchmark for COVID-19 CT lung and infection
# segmentation", Med Phys 2021: the five patient-level folds of COVID-19-CT-Seg, test cases per fold.
MA2021_TEST_FOLDS: tuple[tuple[str, ...], ...] = (
    ("coronacases_007", "coronacases_008", "radiopaedia_36_86526_0", "radiopaedia_4_85506_1"),
    ("coronacases_004", "coronacases_009", "radiopaedia_14_85914_0", "radiopaedia_7_85703_0"),
    ("coronacases_001", "coronacases_010", "radiopaedia_10_85902_1", "radiopaedia_29_86491_1"),
    ("coronacases_003", "coronacases_005", "radiopaedia_27_86410_0", "radiopaedia_40_86625_0"),
    ("coronacases_002", "coronacases_006", "radiopaedia_10_85902_3", "radiopaedia_29_86490_1"),
)
PAPER_COUNTS = (1304, 386, 422)  # Salehi et al. 2023: random slice-level train / val / test
PAPER_WARNING = (
    "split 'paper' is slice-level: slices of one patient land in both training and test, so its "
    "scores are optimistic and not comparable with patient-level splits"
)
STRATEGIES = ("patient", "kfold", "ma2021", "ma2021-limited", "paper", "predefined")


def _carve(ids: list[str], source_of: dict[str, str], rng: np.random.Generator, fraction: float):
    """Split `ids` into (rest, val), val about `fraction` of them (at least 1 when 2+ ids), by source."""
    if len(ids) < 2 or fraction <= 0:
        return sorted(ids), []
    order = _stratified_order({p: source_of[p] for p in ids}, rng)
    n_val = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def kfold_split(
    patients: Sequence[str], sources: Sequence[str], *, k: int = 5, seed: int = 0, val_fraction: float = 0.2
) -> list[dict[str, list[str]]]:
    """Patient-level K folds: fold f tests every k-th patient of a source-stratified order; its
    validation patients are carved (by source) from the rest. Every patient is tested exactly once."""
    source_of = _check_ids(patients, sources)
    if not 2 <= k <= len(source_of):
        raise CovbenchError(
            f"--folds must be between 2 and the number of patients ({len(source_of)}), got {k}"
        )
    rng = np.random.default_rng(seed)
    order = _stratified_order(source_of, rng)
    folds = []
    for f in range(k):
        test = order[f::k]
        rest, val = _carve([p for p in order if p not in set(test)], source_of, rng, val_fraction)
        folds.append({"train": rest, "val": val, "test": sorted(test)})
    return folds


def ma2021_split(
    patients: Sequence[str],
    sources: Sequence[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    limited: bool = False,
) -> list[dict[str, list[str]]]:
    """The five folds of Ma et al. 2021 over the 20 COVID-19-CT-Seg cases (`MA2021_TEST_FOLDS`).

    By default each fold's four listed cases are its test set and the other 16 train (80/20
    cross-validation). `limited` swaps the roles as in the benchmark's Task 1, "learning with
    limited annotations": the four listed cases train and the other 16 are tested. Validation
    cases are carved by source from the training cases either way."""
    name = "ma2021-limited" if limited else "ma2021"
    source_of = _check_ids(patients, sources)
    known = {p for fold in MA2021_TEST_FOLDS for p in fold}
    unknown = sorted(set(source_of) - known)
    if unknown:
        raise CovbenchError(
            f"split {name!r} is defined for the 20 COVID-19-CT-Seg cases; "
            f"unknown case ids: {', '.join(unknown[:4])}" + (" ..." if len(unknown) > 4 else "")
        )
    rng = np.random.default_rng(seed)
    folds = []
    for f, fold in enumerate(MA2021_TEST_FOLDS):
        listed = sorted(p for p in fold if p in source_of)
        others = [p for p in sorted(source_of) if p not in listed]
        if not listed:
            raise CovbenchError(f"split {name!r}: none of fold {f}'s cases is present ({', '.join(fold)})")
        pool, test = (listed, others) if limited else (others, listed)
        if not test:
            raise CovbenchError(f"split {name!r}: fold {f} has no test case left")
        rest, val = _carve(pool, source_of, rng, val_fraction)
        folds.append({"train": rest, "val": val, "test": test})
    return folds


def predefined_split(
    part_of: dict[str, str | None], sources: dict[str, str], *, seed: int = 0, val_fraction: float = 0.2
) -> dict[str, list[str]]:
    """The dataset's own split (`Case.split` per patient). Without a `val` part, validation patients
    are carved from `train` by source."""
    if not part_of or any(p is None for p in part_of.values()):
        missing = sorted(k for k, v in part_of.items() if v is None)[:3]
        raise CovbenchError(
            "split 'predefined': the dataset has no split of its own"
            + (f" (no part for {', '.join(missing)}); use train/ and test/ folders" if missing else "")
        )
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for patient, part in sorted(part_of.items()):
        if part not in parts:
            raise CovbenchError(
                f"split 'predefined': patient {quote(patient)} is in unknown part {quote(part)}"
            )
        parts[part].append(patient)
    if not parts["train"] or not parts["test"]:
        raise CovbenchError("split 'predefined' needs both train and test patients")
    if not parts["val"]:
        parts["train"], parts["val"] = _carve(
            parts["train"], sources, np.random.default_rng(seed), val_fraction
        )
    return {k: sorted(v) for k, v in parts.items()}


def paper_split(
    keys: Sequence[str], *, seed: int = 0, warn: bool = True, val_fraction: float | None = None
) -> dict[str, list[str]]:
    """Random slice-level split in the paper's 1304 / 386 / 422 proportions (exactly those counts
    for 2112 slices). Leaks patients between parts: warns, and the manifest records it.
    `val_fraction` re-divides the paper's 1690 non-test slices between train and validation."""
    keys = sorted(set(map(str, keys)))
    if len(keys) < 3:
        raise CovbenchError(f"split 'paper' needs at least 3 slices, got {len(keys)}")
    if warn:
        import warnings

        warnings.warn(PAPER_WARNING, UserWarning, stacklevel=2)
    fractions = [c / sum(PAPER_COUNTS) for c in PAPER_COUNTS]
    if val_fraction is not None:
        fractions = _with_val_fraction(fractions[2], val_fraction)
    n_train, n_val, _ = _counts(len(keys), fractions)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def slice_keys(patient: np.ndarray, slice_index: np.ndarray) -> np.ndarray:
    """One string per slice, "<patient>#<slice index>", the unit of the slice-level split."""
    return np.char.add(np.char.add(np.asarray(patient).astype(str), "#"), np.asarray(slice_index).astype(str))


def _with_val_fraction(test_share: float, val_fraction: float) -> list[float]:
    """Train / val / test shares when `val_fraction` of the non-test part goes to validation."""
    rest = 1.0 - test_share
    return [rest * (1.0 - val_fraction), rest * val_fraction, test_share]


def n_folds(strategy: str, folds: int = 5) -> int:
    """How many folds (manifests) `make_splits` gives for `strategy`, known before any data is read
    (`covbench run --dry-run` plans its trials with it)."""
    if strategy not in STRATEGIES:
        raise CovbenchError(f"unknown split {quote(strategy)}; choose one of: {', '.join(STRATEGIES)}")
    if strategy == "kfold":
        return folds
    return len(MA2021_TEST_FOLDS) if strategy in ("ma2021", "ma2021-limited") else 1


def make_splits(
    strategy: str,
    slices,
    *,
    seed: int = 0,
    folds: int = 5,
    part_of: dict[str, str | None] | None = None,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    val_fraction: float | None = None,
) -> list[dict]:
    """The split manifest(s) for a pre-processed `SliceSet`, one per fold, ready to save as JSON.

    `val_fraction` (None = each split's default: `fractions[1]` for `patient`, 386 of 1690 for
    `paper`, 0.2 elsewhere) is the share of the non-test patients (slices for `paper`) held out
    for validation; 0 means no validation set (the trial then evaluates its final weights).
    A dataset's own `val` part (`predefined`) is kept as it is.

    Each manifest: {"strategy", "seed", "fold", "unit": "patient" | "slice", "train", "val", "test"}
    (+ "warning" for `paper`). Use `split_indices(slices, manifest)` to get slice indices.
    """
    patients, first = np.unique(slices.patient, return_index=True)
    sources = [str(slices.source[i]) for i in first]
    patients = [str(p) for p in patients]
    base = {"strategy": strategy, "seed": seed, "unit": "patient"}
    carve = 0.2 if val_fraction is None else val_fraction
    if strategy == "patient":
        if val_fraction is not None:
            fractions = _with_val_fraction(fractions[2], val_fraction)
        parts = [patient_split(patients, sources, seed=seed, fractions=fractions)]
    elif strategy == "kfold":
        parts = kfold_split(patients, sources, k=folds, seed=seed, val_fraction=carve)
    elif strategy in ("ma2021", "ma2021-limited"):
        limited = strategy == "ma2021-limited"
        parts = ma2021_split(patients, sources, seed=seed, limited=limited, val_fraction=carve)
    elif strategy == "predefined":
        source_of = dict(zip(patients, sources, strict=True))
        parts = [predefined_split(part_of or {}, source_of, seed=seed, val_fraction=carve)]
    elif strategy == "paper":
        keys = slice_keys(slices.patient, slices.slice_index)
        parts = [paper_split(keys, seed=seed, val_fraction=val_fraction)]
        base = {**base, "unit": "slice", "warning": PAPER_WARNING}
    else:
        raise CovbenchError(f"unknown split {quote(strategy)}; choose one of: {', '.join(STRATEGIES)}")
    manifests = [{**base, "fold": f, **p} for f, p in enumerate(parts)]
    check_lesions(slices, manifests)
    return manifests


def check_lesions(slices, manifests: list[dict]) -> None:
    """Refuse data on which the benchmark measures nothing: no lesion pixel in the whole dataset,
    or none in a fold's test set. An empty prediction scores Dice 1 on every lesion-free slice, so
    such a run would rank models by how little they predict."""
    masks = slices.masks
    lesion = masks.any(axis=tuple(range(1, masks.ndim)))  # per slice, scanned once for every fold
    if len(masks) and not lesion.any():
        raise CovbenchError(
            f"dataset: no lesion pixels in any of its {len(masks)} slices (every lesion mask is empty); "
            "there is nothing to segment"
        )
    for manifest in manifests:
        test = split_indices(slices, manifest)["test"]
        if test.size and not lesion[test].any():
            ids = manifest["test"]
            shown = ", ".join(map(str, ids[:4])) + (" ..." if len(ids) > 4 else "")
            raise CovbenchError(
                f"split {manifest['strategy']!r} fold {manifest['fold']}: its test set ({len(ids)} "
                f"{manifest.get('unit', 'patient')}(s): {shown}, {test.size} slices) has no lesion pixels; "
                "every model would score Dice 1 by predicting nothing - choose another split or fold count"
            )


def split_indices(slices, manifest: dict) -> dict[str, np.ndarray]:
    """Slice indices per part for a manifest of `make_splits`; checks the parts are disjoint."""
    unit = manifest.get("unit", "patient")
    keys = slices.patient if unit == "patient" else slice_keys(slices.patient, slices.slice_index)
    out = {part: np.flatnonzero(np.isin(keys, manifest[part])) for part in PARTS}
    seen = np.zeros(len(keys), int)
    for idx in out.values():
        seen[idx] += 1
    if (seen > 1).any():
        raise CovbenchError("split manifest puts a slice in two parts")
    return out

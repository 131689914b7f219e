"""kfold, ma2021, predefined and paper splits, and the manifest -> slice index mapping."""

from __future__ import annotations

import numpy as np
import pytest

from covbench.datasets.base import SliceSet
from covbench.datasets.splits import (
    MA2021_TEST_FOLDS,
    PAPER_COUNTS,
    kfold_split,
    ma2021_split,
    make_splits,
    paper_split,
    predefined_split,
    split_indices,
)
from covbench.errors import CovbenchError

MA_IDS = sorted(p for fold in MA2021_TEST_FOLDS for p in fold)
MA_SOURCES = [p.split("_")[0] for p in MA_IDS]


def _disjoint(parts: dict) -> bool:
    a, b, c = (set(parts[k]) for k in ("train", "val", "test"))
    return not (a & b or a & c or b & c)


def test_ma2021_folds_match_the_paper():
    folds = ma2021_split(MA_IDS, MA_SOURCES)
    assert len(folds) == 5 and len(MA_IDS) == 20
    for fold, expected in zip(folds, MA2021_TEST_FOLDS, strict=True):
        assert fold["test"] == sorted(expected)
        assert _disjoint(fold) and len(fold["train"]) + len(fold["val"]) == 16 and fold["val"]
    assert sorted(p for f in folds for p in f["test"]) == MA_IDS  # every case tested once
    with pytest.raises(CovbenchError, match="unknown case ids: coronacases_011"):
        ma2021_split([*MA_IDS, "coronacases_011"], [*MA_SOURCES, "coronacases"])


def test_ma2021_limited_trains_on_the_listed_four_and_tests_the_other_sixteen():
    folds = ma2021_split(MA_IDS, MA_SOURCES, limited=True)
    for fold, listed in zip(folds, MA2021_TEST_FOLDS, strict=True):
        assert sorted(fold["train"] + fold["val"]) == sorted(listed)
        assert len(fold["val"]) == 1 and len(fold["test"]) == 16 and _disjoint(fold)
    slices = _slices(MA_IDS, per=1, sources=MA_SOURCES)
    manifests = make_splits("ma2021-limited", slices)
    assert [m["strategy"] for m in manifests] == ["ma2021-limited"] * 5
    assert [len(m["test"]) for m in manifests] == [16] * 5
    with pytest.raises(CovbenchError, match="split 'ma2021-limited' is defined for the 20"):
        ma2021_split([*MA_IDS, "x_1"], [*MA_SOURCES, "x"], limited=True)


def test_kfold_every_patient_tested_once_balanced():
    ids = [f"a{i}" for i in range(12)] + [f"b{i}" for i in range(8)]
    sources = ["a"] * 12 + ["b"] * 8
    folds = kfold_split(ids, sources, k=4, seed=3)
    assert sorted(p for f in folds for p in f["test"]) == sorted(ids)
    for f in folds:
        assert _disjoint(f) and set(f["train"]) | set(f["val"]) | set(f["test"]) == set(ids)
        assert sum(p.startswith("a") for p in f["test"]) == 3  # 12 a / 4 folds
    assert folds == kfold_split(list(reversed(ids)), list(reversed(sources)), k=4, seed=3)
    with pytest.raises(CovbenchError, match="--folds"):
        kfold_split(ids, sources, k=1)


def test_predefined_keeps_parts_and_carves_val():
    part_of = {f"t{i}": "train" for i in range(10)} | {f"s{i}": "test" for i in range(5)}
    sources = dict.fromkeys(part_of, "x")
    split = predefined_split(part_of, sources, seed=0)
    assert split["test"] == sorted(f"s{i}" for i in range(5))
    assert len(split["val"]) == 2 and set(split["val"]) <= {f"t{i}" for i in range(10)} and _disjoint(split)
    with pytest.raises(CovbenchError, match="no split of its own"):
        predefined_split({"a": None, "b": None}, {"a": "x", "b": "x"})


def test_paper_split_counts_and_warning():
    keys = [f"p{i // 100}#{i % 100}" for i in range(2112)]
    with pytest.warns(UserWarning, match="slice-level"):
        split = paper_split(keys, seed=0)
    assert tuple(len(split[k]) for k in ("train", "val", "test")) == PAPER_COUNTS
    assert _disjoint(split)
    with pytest.warns(UserWarning):
        small = paper_split(keys[:100], seed=0)
    assert [len(small[k]) for k in ("train", "val", "test")] == [62, 18, 20]


def _slices(patients, per=3, sources=None):
    n = len(patients) * per
    sources = sources or ["s"] * len(patients)
    masks = np.zeros((n, 4, 4), np.uint8)
    masks[:, 1, 1] = 1  # a lesion on every slice: make_splits refuses a test set without any
    return SliceSet(
        images=np.zeros((n, 4, 4), np.uint8),
        masks=masks,
        spacing=np.ones((n, 2), np.float32),
        patient=np.repeat(np.array(patients), per),
        slice_index=np.tile(np.arange(per, dtype=np.int32), len(patients)),
        source=np.repeat(np.array(sources), per),
    )


def test_make_splits_and_indices():
    slices = _slices([f"p{i}" for i in range(10)])
    (m,) = make_splits("patient", slices, seed=1)
    assert m["unit"] == "patient" and m["fold"] == 0
    idx = split_indices(slices, m)
    assert sum(len(v) for v in idx.values()) == 30
    for part, ids in idx.items():
        assert set(slices.patient[ids]) == set(m[part])
    folds = make_splits("kfold", slices, folds=5)
    assert len(folds) == 5
    with pytest.warns(UserWarning, match="slice-level"):
        (paper,) = make_splits("paper", slices)
    assert paper["unit"] == "slice" and "warning" in paper
    pidx = split_indices(slices, paper)
    assert sorted(np.concatenate(list(pidx.values()))) == list(range(30))
    with pytest.raises(CovbenchError, match="unknown split 'random'"):
        make_splits("random", slices)
    part_of = {f"p{i}": ("test" if i < 3 else "train") for i in range(10)}
    (pre,) = make_splits("predefined", slices, part_of=part_of)
    assert pre["test"] == ["p0", "p1", "p2"]


def test_val_fraction_reshapes_validation_and_zero_removes_it():
    ids = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
    slices = _slices(ids, per=1, sources=[p[0] for p in ids])
    (default,) = make_splits("patient", slices)
    assert [len(default[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    (none,) = make_splits("patient", slices, val_fraction=0.0)
    assert [len(none[k]) for k in ("train", "val", "test")] == [16, 0, 4]
    assert none["test"] == default["test"]  # the test patients do not depend on validation
    (half,) = make_splits("patient", slices, val_fraction=0.5)
    assert [len(half[k]) for k in ("train", "val", "test")] == [8, 8, 4]
    for fold in make_splits("kfold", slices, folds=4, val_fraction=0.0):
        assert fold["val"] == [] and len(fold["train"]) == 15
    part_of = {p: ("test" if p.endswith("0") else "train") for p in ids}
    (pre,) = make_splits("predefined", slices, part_of=part_of, val_fraction=0.0)
    assert pre["val"] == [] and len(pre["train"]) == 18
    with pytest.warns(UserWarning):
        (paper,) = make_splits("paper", slices, val_fraction=0.0)
    assert paper["val"] == [] and len(paper["train"]) + len(paper["test"]) == 20

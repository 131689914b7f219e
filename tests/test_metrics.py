"""covbench.metrics against MedPy, MONAI and hand-computed cases (see docs/metrics.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from covbench import metrics as M
from covbench.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    batch_metrics,
    empty_case,
    penalty_distance,
    segmentation_metrics,
    surface_distances,
)

REL = 1e-6


def close(a: float, b: float, rel: float = REL) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def blobs(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, level: float) -> np.ndarray:
    """Random lesion-like masks: smoothed noise above a level (several components, some on the border)."""
    m = ndi.gaussian_filter(rng.standard_normal(shape), sigma) > level
    if not m.any():
        m[tuple(s // 2 for s in shape)] = True
    return m


def random_pairs(seed: int, n: int, shape=(64, 72)):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        t = blobs(rng, shape, 3.0, 0.15)
        if k % 3 == 0:  # independent prediction: far-apart components, partial overlap
            p = blobs(rng, shape, 3.0, 0.15)
        elif k % 3 == 1:  # a good prediction: dilated / eroded, with a speck
            p = ndi.binary_dilation(t) if k % 2 else ndi.binary_erosion(t)
            p[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = True
        else:  # shifted, crossing the border
            p = np.roll(t, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        if not p.any():
            p[0, 0] = True
        sp = (float(rng.uniform(0.4, 2.5)), float(rng.uniform(0.4, 2.5)))
        out.append((p, t, sp))
    return out


def torch_pair(p: np.ndarray, t: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(p.copy())[None, None], torch.from_numpy(t.copy())[None, None]


# --------------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------------
def test_public_constants():
    assert METRICS == ("dice", "assd", "mae", "sensitivity", "specificity", "precision", "hd95", "nsd")
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert [k for k in METRICS if not HIGHER_IS_BETTER[k]] == ["assd", "mae", "hd95"]


def test_returns_exactly_the_eight_keys():
    p = np.zeros((8, 8), bool)
    p[2:5, 2:5] = True
    out = segmentation_metrics(p, p)
    assert set(out) == set(METRICS)
    assert all(isinstance(v, float) for v in out.values())


# --------------------------------------------------------------------------------------------------
# against the libraries (definitions agree: 1e-6 relative)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_assd_hd95_match_medpy(seed):
    mb = pytest.importorskip("medpy.metric.binary")
    directed = getattr(mb, "__surface_distances")
    for p, t, sp in random_pairs(seed, 12):
        out = segmentation_metrics(p, t, spacing=sp)
        assert close(out["assd"], mb.assd(p, t, voxelspacing=sp))
        assert close(out["hd95"], mb.hd95(p, t, voxelspacing=sp))
        # the directed distances themselves, point by point (same C order of surface pixels)
        d_pt, d_tp = surface_distances(p, t, sp)
        np.testing.assert_allclose(d_pt, directed(p, t, sp), rtol=REL, atol=1e-12)
        np.testing.assert_allclose(d_tp, directed(t, p, sp), rtol=REL, atol=1e-12)


@pytest.mark.parametrize("seed", [2, 3])
def test_surface_metrics_match_monai(seed):
    pytest.importorskip("monai")
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )
    from monai.metrics.utils import get_edge_surface_distance

    torch = pytest.importorskip("torch")
    cases = random_pairs(seed, 10)
    if seed == 2:  # one slice at full size, where surfaces have hundreds of points
        rng = np.random.default_rng(seed)
        t = blobs(rng, (512, 512), 12.0, 0.02)
        cases.append((ndi.binary_dilation(t, iterations=2), t, (0.71, 0.68)))
    for p, t, sp in cases:
        P, T = torch_pair(p, t)
        pooled = segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=2.0)
        directed = segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=2.0, hd95_mode="max_directed")
        assd = compute_average_surface_distance(P, T, include_background=True, symmetric=True, spacing=sp)
        hd95 = compute_hausdorff_distance(P, T, include_background=True, percentile=95, spacing=sp)
        nsd = compute_surface_dice(P, T, [2.0], include_background=True, spacing=sp, use_subvoxels=True)
        # MONAI returns float32 values of float64 distances: 1e-6 relative holds
        assert close(pooled["assd"], assd.item())
        assert close(pooled["nsd"], nsd.item())
        # ... except that its HD95 interpolates between two float32 distances in float32
        # (torch.quantile), up to ~1e-5 off; the same distances interpolated in float64 agree.
        _, dist, _ = get_edge_surface_distance(P[0, 0], T[0, 0], spacing=sp, symmetric=True)
        assert close(directed["hd95"], max(torch.quantile(d.double(), 0.95).item() for d in dist))
        assert close(directed["hd95"], hd95.item(), 3e-5)
        assert pooled["assd"] == directed["assd"] and pooled["nsd"] == directed["nsd"]


def irregular_pairs(seed: int, n: int, shape=(60, 70)):
    """Noisy, irregular lesions (smoothed noise plus salt-and-pepper), the case where many surface
    distances fall exactly on a tolerance that is a multiple of the spacing."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p, t = (
            (ndi.gaussian_filter(rng.random(shape), 3) > 0.52) ^ (rng.random(shape) < 0.05) for _ in range(2)
        )
        out.append((p, t))
    return out


@pytest.mark.parametrize("sp", [(0.6, 0.9), (0.9, 0.6), (0.6, 0.6), (1.0, 1.0), (0.5, 1.7)])
def test_nsd_matches_monai_on_anisotropic_irregular_lesions(sp):
    # Tolerances 3.0 and 1.8 mm are multiples of 0.6 and 0.9: grid distances equal to the
    # tolerance (a tie) must count as within it, as in the reference. Before the fix covbench
    # scored these up to 0.04 lower on 0.6 x 0.9 mm grids (at 1.8 mm).
    pytest.importorskip("monai")
    from monai.metrics import compute_surface_dice

    for p, t in irregular_pairs(4, 4):
        P, T = torch_pair(p, t)
        for tol in (3.0, 1.8):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = compute_surface_dice(
                    P, T, [tol], include_background=True, spacing=sp, use_subvoxels=True
                ).item()
            ours = segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=tol)["nsd"]
            assert abs(ours - ref) < 1e-6, (sp, tol, ours, ref)


def test_nsd_counts_a_distance_equal_to_the_tolerance():
    # two lines 5 rows apart at 0.6 mm per row: their dual-grid elements are 3 mm apart in exact
    # arithmetic, 3.000000000000001 mm from the rounded coordinates (14 x 0.6 - 9 x 0.6). A tie is within
    # the tolerance (before the fix NSD was 0.78 here); just below it, nothing is.
    p = np.zeros((48, 12), bool)
    t = np.zeros_like(p)
    p[13, :8] = True
    t[8, :8] = True
    p[0, 11] = t[0, 11] = True  # a shared pixel, so the lines sit away from the crop's origin
    assert close(segmentation_metrics(p, t, spacing=(0.6, 0.9), nsd_tolerance_mm=3.0)["nsd"], 1.0)
    assert segmentation_metrics(p, t, spacing=(0.6, 0.9), nsd_tolerance_mm=2.99)["nsd"] < 0.8


def test_3d_nsd_matches_monai_on_anisotropic_boxes_at_tied_tolerances():
    pytest.importorskip("monai")
    from monai.metrics import compute_surface_dice

    for p, t, _ in boxes(3, 4):
        P, T = torch_pair(p, t)
        for sp, tol in (((1.8, 0.6, 0.9), 3.0), ((0.9, 0.6, 0.6), 1.8)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = compute_surface_dice(
                    P, T, [tol], include_background=True, spacing=sp, use_subvoxels=True
                ).item()
            assert abs(segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=tol)["nsd"] - ref) < 1e-6


def test_confusion_metrics_match_monai():
    pytest.importorskip("monai")
    from monai.metrics import compute_confusion_matrix_metric, compute_dice, get_confusion_matrix

    for p, t, sp in random_pairs(4, 8):
        P, T = torch_pair(p, t)
        cm = get_confusion_matrix(P.float(), T.float(), include_background=True)
        out = segmentation_metrics(p, t, spacing=sp)
        for name in ("sensitivity", "specificity", "precision"):
            assert close(out[name], compute_confusion_matrix_metric(name, cm).item())
        assert close(out["dice"], compute_dice(P.float(), T.float(), include_background=True).item())


# --------------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------------
def square_pair(k: int, side: int = 6, size: int = 16):
    """A side x side square and the same square shifted down by k rows."""
    p = np.zeros((size, size), bool)
    t = np.zeros((size, size), bool)
    p[4 : 4 + side, 5 : 5 + side] = True
    t[4 + k : 4 + k + side, 5 : 5 + side] = True
    return p, t


def test_square_shifted_by_one_row():
    # 6x6 squares, 20 surface pixels each. pred -> gt: top row 6 x 1, side columns 8 x 0,
    # bottom row 0,1,1,1,1,0 (the gt's side columns are surface there): sum 10; gt -> pred the same.
    p, t = square_pair(1)
    out = segmentation_metrics(p, t)
    assert close(out["assd"], 20 / 40)
    # pooled: 20 zeros, 20 ones; the 95th percentile sits at position 37.05 -> 1
    assert close(out["hd95"], 1.0)
    assert close(out["dice"], 2 * 30 / 72)
    # anisotropic (2 mm rows, 1 mm columns): top row 6 x 2; bottom row 0,1,2,2,1,0 -> 18 per direction
    out = segmentation_metrics(p, t, spacing=(2.0, 1.0))
    assert close(out["assd"], 36 / 40)
    assert close(out["hd95"], 2.0)  # per direction 10 zeros, 2 ones, 8 twos


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.5, 0.5), (0.75, 3.0)])  # exact in binary
def test_segment_shifted_by_k_rows(k, spacing):
    # 1-pixel-thick horizontal segments k rows apart: every surface distance is k * row spacing
    p = np.zeros((20, 20), bool)
    t = np.zeros((20, 20), bool)
    p[5, 3:15] = True
    t[5 + k, 3:15] = True
    out = segmentation_metrics(p, t, spacing=spacing)
    assert close(out["assd"], k * spacing[0])
    assert close(out["hd95"], k * spacing[0])
    # NSD: each segment's contour is two lines on the dual grid, half a row above and below it;
    # the inner lines are (k - 1) rows apart, the outer ones k rows, and both lines weigh the same.
    s0 = spacing[0]
    assert close(segmentation_metrics(p, t, spacing=spacing, nsd_tolerance_mm=(k - 1) * s0)["nsd"], 0.5)
    assert close(segmentation_metrics(p, t, spacing=spacing, nsd_tolerance_mm=k * s0)["nsd"], 1.0)
    assert segmentation_metrics(p, t, spacing=spacing, nsd_tolerance_mm=(k - 1) * s0 * 0.99)["nsd"] == 0.0


def test_single_pixels():
    p = np.zeros((10, 10), bool)
    t = np.zeros((10, 10), bool)
    p[2, 3] = True
    t[6, 8] = True
    out = segmentation_metrics(p, t, spacing=(0.5, 2.0))
    d = math.hypot(4 * 0.5, 5 * 2.0)
    assert close(out["assd"], d) and close(out["hd95"], d)
    assert out["dice"] == 0.0 and out["sensitivity"] == 0.0 and out["precision"] == 0.0
    # neighbouring pixels: the two contours (four corner cuts each) share two dual-grid points
    q = np.zeros((10, 10), bool)
    q[2, 4] = True
    assert close(segmentation_metrics(p, q)["assd"], 1.0)
    assert close(segmentation_metrics(p, q, nsd_tolerance_mm=0.5)["nsd"], 0.5)
    assert close(segmentation_metrics(p, q, nsd_tolerance_mm=1.0)["nsd"], 1.0)
    same = segmentation_metrics(p, p)
    assert same["assd"] == 0.0 and same["hd95"] == 0.0 and same["nsd"] == 1.0 and same["dice"] == 1.0


def test_multiple_components_pooled_vs_max_directed():
    # gt pixels at columns 0 and 10, pred at 1 and 10: distances per direction [1, 0]
    p = np.zeros((1, 12), bool)
    t = np.zeros((1, 12), bool)
    t[0, [0, 10]] = True
    p[0, [1, 10]] = True
    out = segmentation_metrics(p, t)
    assert close(out["assd"], 0.5)
    assert close(out["hd95"], 1.0)  # pooled [0, 0, 1, 1] -> position 2.85 -> 1
    assert close(segmentation_metrics(p, t, hd95_mode="max_directed")["hd95"], 0.95)  # [0, 1] -> 0.95


def test_border_counts_as_background():
    # a mask filling the whole image has the image border as its surface
    full = np.ones((5, 7), bool)
    d_pt, d_tp = surface_distances(full, full)
    assert len(d_pt) == len(d_tp) == 2 * 5 + 2 * 7 - 4
    out = segmentation_metrics(full, full)
    assert out["dice"] == 1.0 and out["assd"] == 0.0 and out["nsd"] == 1.0
    assert math.isnan(out["specificity"])  # no background pixel in the target
    # a band along the top border, and the same band one row thicker: border rows are surface
    p = np.zeros((6, 6), bool)
    t = np.zeros((6, 6), bool)
    p[:3] = True
    t[:4] = True
    d_pt, d_tp = surface_distances(p, t)
    assert len(d_pt) == 6 + 6 + 2 and len(d_tp) == 6 + 6 + 4
    # pred: row 0 on gt's row 0 (0); row 1 ends (0); row 2: ends 0, middle 1 -> 4 ones
    # gt: rows 0-2 ends 0, row 0 middle 0, row 3: 6 ones -> sum 10 over 30 points
    assert close(segmentation_metrics(p, t)["assd"], 10 / 30)


def test_kd_tree_path_equals_dense_path(monkeypatch):
    cases = random_pairs(5, 6)
    dense = [segmentation_metrics(p, t, spacing=sp) for p, t, sp in cases]
    monkeypatch.setattr(M, "_BRUTE_MAX_PAIRS", 0)
    tree = [segmentation_metrics(p, t, spacing=sp) for p, t, sp in cases]
    for a, b in zip(dense, tree, strict=True):
        for key in METRICS:
            assert close(a[key], b[key], 1e-12)


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 20, 41, 1000):
        x = rng.random(n) * 10
        x[: n // 3] = 0.0
        for q in (0, 50, 95, 100):
            assert M._percentile(x.copy(), q) == pytest.approx(np.percentile(x, q), rel=1e-12, abs=1e-15)


# --------------------------------------------------------------------------------------------------
# empty masks: the policy table of docs/metrics.md
# --------------------------------------------------------------------------------------------------
def test_empty_case_names():
    z = np.zeros((4, 4), bool)
    o = z.copy()
    o[1, 1] = True
    assert empty_case(z, z) == "both_empty"
    assert empty_case(z, o) == "missed"
    assert empty_case(o, z) == "false_alarm"
    assert empty_case(o, o) == "normal"
    assert set(M.EMPTY_CASES) == {"both_empty", "missed", "false_alarm", "normal"}


def test_both_empty():
    z = np.zeros((10, 12), bool)
    out = segmentation_metrics(z, z, spacing=(0.7, 0.9))
    assert out["dice"] == 1.0 and out["assd"] == 0.0 and out["hd95"] == 0.0 and out["nsd"] == 1.0
    assert out["specificity"] == 1.0 and out["mae"] == 0.0
    assert math.isnan(out["sensitivity"]) and math.isnan(out["precision"])
    prob = np.full(z.shape, 0.25)
    assert close(segmentation_metrics(z, z, prob=prob)["mae"], 0.25)


@pytest.mark.parametrize("mode", ["pooled", "max_directed"])
def test_missed_lesion_and_false_alarm_are_penalised(mode):
    z = np.zeros((10, 12), bool)
    o = z.copy()
    o[3:5, 4:7] = True
    sp = (0.7, 0.9)
    diag = math.hypot(10 * 0.7, 12 * 0.9)
    assert close(penalty_distance(z.shape, sp), diag)
    missed = segmentation_metrics(z, o, spacing=sp, hd95_mode=mode)
    assert missed["dice"] == 0.0 and missed["nsd"] == 0.0
    assert missed["sensitivity"] == 0.0 and missed["precision"] == 0.0
    assert missed["assd"] == diag and missed["hd95"] == diag
    assert missed["specificity"] == 1.0 and close(missed["mae"], 6 / 120)
    alarm = segmentation_metrics(o, z, spacing=sp, hd95_mode=mode)
    assert alarm["dice"] == 0.0 and alarm["nsd"] == 0.0 and alarm["precision"] == 0.0
    assert alarm["assd"] == diag and alarm["hd95"] == diag
    assert math.isnan(alarm["sensitivity"])
    assert close(alarm["specificity"], 114 / 120)
    # the penalty is worse than the worst real prediction: opposite corners of the image
    a = z.copy()
    b = z.copy()
    a[0, 0] = True
    b[-1, -1] = True
    assert segmentation_metrics(a, b, spacing=sp)["hd95"] < diag


# --------------------------------------------------------------------------------------------------
# MAE
# --------------------------------------------------------------------------------------------------
def test_mae():
    rng = np.random.default_rng(7)
    t = blobs(rng, (30, 40), 2.0, 0.1)
    prob = rng.random(t.shape).astype(np.float32)
    p = prob >= 0.5
    out = segmentation_metrics(p, t, prob=prob, spacing=(3.0, 0.2))
    assert close(out["mae"], float(np.abs(prob.astype(np.float64) - t).mean()))
    # default prob = pred: the fraction of wrong pixels; no spacing involved
    wrong = float((p != t).mean())
    assert close(segmentation_metrics(p, t)["mae"], wrong)
    assert segmentation_metrics(p, t, spacing=(9.0, 9.0))["mae"] == segmentation_metrics(p, t)["mae"]


def test_input_checks():
    p = np.zeros((6, 6), bool)
    p[2, 2] = True
    with pytest.raises(ValueError, match="binary"):
        segmentation_metrics(p * 0.7, p)
    assert segmentation_metrics(p.astype(np.uint8), p.astype(np.float32))["dice"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(p, p[:5])
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(p, p, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(p, p, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmentation_metrics(p, p, prob=np.full(p.shape, 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmentation_metrics(p, p, prob=np.full(p.shape, np.nan))
    with pytest.raises(ValueError, match="hd95_mode"):
        segmentation_metrics(p, p, hd95_mode="mean")
    with pytest.raises(ValueError, match="2D or 3D"):
        segmentation_metrics(p[0], p[0], spacing=(1.0,))
    assert segmentation_metrics(p, p, spacing=0.5)["dice"] == 1.0  # one number: isotropic


# --------------------------------------------------------------------------------------------------
# batch form
# --------------------------------------------------------------------------------------------------
def test_batch_equals_single():
    rng = np.random.default_rng(11)
    cases = random_pairs(6, 9, shape=(40, 40))
    P = np.stack([c[0] for c in cases])
    T = np.stack([c[1] for c in cases])
    P[0] = False
    T[0] = False  # both empty
    P[1] = False  # missed
    T[2] = False  # false alarm
    S = np.array([c[2] for c in cases], dtype=np.float32)
    prob = rng.random(P.shape).astype(np.float32)
    for kw in ({}, {"nsd_tolerance_mm": 1.0, "hd95_mode": "max_directed"}):
        got = batch_metrics(P, T, S, probs=prob, **kw)
        for i, row in enumerate(got):
            want = segmentation_metrics(P[i], T[i], spacing=S[i], prob=prob[i], **kw)
            assert set(row) == set(METRICS)
            for key in METRICS:
                assert row[key] == want[key] or (math.isnan(row[key]) and math.isnan(want[key]))
    one = batch_metrics(P, T, (0.8, 0.8))
    assert one[3] == segmentation_metrics(P[3], T[3], spacing=(0.8, 0.8))
    assert batch_metrics(P[:0], T[:0], np.zeros((0, 2))) == []
    with pytest.raises(TypeError):
        batch_metrics(P, T, S, tolerance=2.0)
    with pytest.raises(ValueError, match="spacings"):
        batch_metrics(P, T, S[:3])


# --------------------------------------------------------------------------------------------------
# 3D, per patient
# --------------------------------------------------------------------------------------------------
def volumes(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        shape = (10, 28, 30)
        t = blobs(rng, shape, 2.0, 0.15)
        p = blobs(rng, shape, 2.0, 0.15) if k % 2 else ndi.binary_dilation(t) ^ (rng.random(shape) < 0.02)
        out.append((p, t, (2.5, 0.7, 0.8)))
    return out


def test_3d_matches_medpy_and_monai():
    mb = pytest.importorskip("medpy.metric.binary")
    pytest.importorskip("monai")
    from monai.metrics import (
        compute_average_surface_distance,
        compute_confusion_matrix_metric,
        compute_hausdorff_distance,
        get_confusion_matrix,
    )

    for p, t, sp in volumes(0, 4):
        out = segmentation_metrics(p, t, spacing=sp)
        assert close(out["assd"], mb.assd(p, t, voxelspacing=sp))
        assert close(out["hd95"], mb.hd95(p, t, voxelspacing=sp))
        assert close(out["dice"], mb.dc(p, t))
        P, T = torch_pair(p, t)
        assd = compute_average_surface_distance(P, T, include_background=True, symmetric=True, spacing=sp)
        hd95 = compute_hausdorff_distance(P, T, include_background=True, percentile=95, spacing=sp)
        assert close(out["assd"], assd.item())
        assert close(segmentation_metrics(p, t, spacing=sp, hd95_mode="max_directed")["hd95"], hd95.item())
        cm = get_confusion_matrix(P.float(), T.float(), include_background=True)
        for name in ("sensitivity", "specificity", "precision"):
            assert close(out[name], compute_confusion_matrix_metric(name, cm).item())


def boxes(seed: int, n: int):
    """Axis-aligned boxes (some cut by the border): every marching-cubes polygon on them is planar."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        shape = (8, 20, 22)
        p = np.zeros(shape, bool)
        t = np.zeros(shape, bool)
        for m in (p, t):
            lo = rng.integers(0, [6, 16, 18])
            hi = lo + rng.integers(2, [5, 10, 10])
            m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
        out.append((p, t, (2.0, 0.8, 0.6)))
    return out


def test_3d_nsd_matches_monai_where_surfaces_are_planar():
    pytest.importorskip("monai")
    from monai.metrics import compute_surface_dice

    for p, t, sp in boxes(1, 6):
        P, T = torch_pair(p, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_surface_dice(P, T, [1.5], include_background=True, spacing=sp, use_subvoxels=True)
        assert close(segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=1.5)["nsd"], ref.item())


def test_3d_nsd_close_to_monai_on_curved_surfaces():
    # Non-planar marching-cubes polygons are triangulated differently (docs/metrics.md): a small
    # difference, not 1e-6.
    pytest.importorskip("monai")
    from monai.metrics import compute_surface_dice

    for p, t, sp in volumes(2, 3):
        P, T = torch_pair(p, t)
        ref = compute_surface_dice(
            P, T, [3.0], include_background=True, spacing=sp, use_subvoxels=True
        ).item()
        assert abs(segmentation_metrics(p, t, spacing=sp)["nsd"] - ref) < 0.02


def test_3d_hand_cases():
    # two slabs spanning the whole volume, k slices apart: ASSD = HD95 = k * slice spacing,
    # NSD = 0.5 between the inner and the outer dual-grid planes
    p = np.zeros((12, 9, 10), bool)
    t = np.zeros_like(p)
    k, sp = 3, (2.0, 0.7, 0.9)
    p[4] = True
    t[4 + k] = True
    out = segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=(k - 1) * 2.0)
    assert close(out["assd"], k * 2.0) and close(out["hd95"], k * 2.0)
    assert close(out["nsd"], 0.5)
    assert close(segmentation_metrics(p, t, spacing=sp, nsd_tolerance_mm=k * 2.0)["nsd"], 1.0)
    # one set corner in a cell: the triangle through three edge midpoints, sqrt(3)/8 at unit spacing
    v = np.zeros((5, 5, 5), bool)
    v[2, 2, 2] = True
    area = M._surface_area_table(1.0, 1.0, 1.0)[1]
    assert close(area, math.sqrt(3) / 8)
    z = np.zeros_like(v)
    assert segmentation_metrics(z, v, spacing=(1.0, 1.0, 1.0))["assd"] == penalty_distance(v.shape, (1, 1, 1))
    assert empty_case(z, z) == "both_empty"
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(v, v, spacing=(1.0, 1.0))

"""Segmentation metrics for lesion masks: Dice, ASSD, HD95, NSD, MAE, sensitivity, specificity, precision.

Usable without the rest of covbench (numpy + scipy only). Formulas, references and the comparison
with MedPy / MONAI are in ``docs/metrics.md``; the short form:

* **Surface** of a mask = mask XOR its erosion with the 4-neighbour (2D) / 6-neighbour (3D) cross,
  everything outside the array counting as background (a mask touching the image border has a
  surface along that border). This is the surface of MedPy ``assd``/``hd95`` and of MONAI's
  ``get_mask_edges`` without subvoxels.
* Distances are Euclidean, in mm, between pixel centres scaled by ``spacing`` (mm per axis, array
  order). Both directed sets of surface distances are computed once per case and shared by ASSD
  and HD95.
* **ASSD** (pooled, Salehi et al. 2023; MedPy ``assd``; MONAI ``SurfaceDistanceMetric(symmetric=True)``):
  ``(sum d(S_pred -> S_gt) + sum d(S_gt -> S_pred)) / (|S_pred| + |S_gt|)``.
* **HD95**: 95th percentile (linear interpolation) of the pooled distances (MedPy ``hd95``);
  ``hd95_mode="max_directed"`` gives the maximum of the two directed 95th percentiles (MONAI
  ``compute_hausdorff_distance(percentile=95)``).
* **NSD** at ``nsd_tolerance_mm`` (Nikolov et al. 2021; DeepMind surface-distance; MONAI
  ``compute_surface_dice(use_subvoxels=True)``): surface elements live on the dual grid (corners
  between pixel centres, marching squares / cubes), each weighted by its contour length (2D) or
  area (3D); NSD = (weight of pred elements within tolerance of the gt elements + weight of gt
  elements within tolerance of the pred elements) / (total weight of both); a distance equal to the
  tolerance up to floating-point rounding is within it (``_TIE_RTOL``). This needs its own
  nearest-neighbour pass on the dual-grid points. In 3D the element areas come from covbench's
  own marching-cubes table: equal to DeepMind's/MONAI's for every planar iso-polygon, different
  (by triangulation) for the non-planar ones; see docs/metrics.md.
* **MAE** = mean |prob - target| over all pixels (Inf-Net); ``prob`` defaults to ``pred``. Unitless.
* **sensitivity** = TP / (TP + FN), **specificity** = TN / (TN + FP), **precision** = TP / (TP + FP),
  **dice** = 2 TP / (2 TP + FP + FN), from the case's confusion matrix.

Empty masks (see :func:`empty_case`; the rule for an undefined value never makes an average look better):

=============  ====  ==========  ==========  ===  ===========  ===========  =========
case           dice  assd        hd95        nsd  sensitivity  specificity  precision
=============  ====  ==========  ==========  ===  ===========  ===========  =========
both_empty     1     0           0           1    NaN          formula (1)  NaN
missed         0     D           D           0    0            formula (1)  0
false_alarm    0     D           D           0    NaN          formula      0
normal         formula for every metric
=============  ====  ==========  ==========  ===  ===========  ===========  =========

``D`` = :func:`penalty_distance` = the diagonal of the whole field of view in mm,
``sqrt(sum((shape_i * spacing_i) ** 2))``, larger than any distance two pixels of the image can
have, so a missed lesion or a false alarm always scores worse than any real prediction. Precision
of a missed lesion is 0 (not NaN), so predicting nothing on hard slices cannot raise it. NaN marks a
rate whose denominator is empty (no lesion to find, no lesion predicted on an empty slice); reports
count and show ``n`` for each metric, nothing is dropped silently. Specificity is NaN only when the
target covers the whole image. MAE is always computed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

__all__ = [
    "EMPTY_CASES",
    "HIGHER_IS_BETTER",
    "METRICS",
    "batch_metrics",
    "empty_case",
    "penalty_distance",
    "segmentation_metrics",
    "surface_distances",
]

#: The eight metric keys, in the column order of the report's table.
METRICS: tuple[str, ...] = ("dice", "assd", "mae", "sensitivity", "specificity", "precision", "hd95", "nsd")

#: Direction of each metric: True when a larger value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "dice": True,
    "assd": False,
    "mae": False,
    "sensitivity": True,
    "specificity": True,
    "precision": True,
    "hd95": False,
    "nsd": True,
}

#: Values returned by :func:`empty_case`.
EMPTY_CASES: tuple[str, ...] = ("both_empty", "missed", "false_alarm", "normal")

HD95_MODES = ("pooled", "max_directed")

# Below this many point pairs a dense distance matrix beats two KD-trees (measured, single thread).
_BRUTE_MAX_PAIRS = 250_000
_NAN = float("nan")
# Relative slack on the NSD tolerance. Grid distances that equal the tolerance in exact arithmetic
# (5 x 0.6 mm against 3 mm) come out a few ulps above or below it in floating point, depending on
# how the coordinates were rounded; the reference (MONAI, in float32) counts such a tie as within
# tolerance, and so does the definition. 1e-9 is far above rounding error (~1e-13 relative for
# coordinates up to 10 m) and far below the gap between two different grid distances.
_TIE_RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------
def _as_mask(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a
    if not ((a == 0) | (a == 1)).all():
        raise ValueError(f"{name} must be a binary mask (bool or 0/1); threshold probabilities first")
    return a.astype(bool)


def _as_spacing(spacing, ndim: int) -> tuple[float, ...]:
    s = tuple(float(v) for v in np.ravel(np.asarray(spacing, dtype=np.float64)))
    if len(s) == 1:
        s = s * ndim
    if len(s) != ndim:
        raise ValueError(f"spacing has {len(s)} values for a {ndim}D mask")
    if not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be positive and finite, got {s}")
    return s


def _check_prob(prob, shape) -> np.ndarray:
    p = np.asarray(prob)
    if p.shape != shape:
        raise ValueError(f"prob has shape {p.shape}, masks have {shape}")
    if p.dtype == np.bool_:
        return p
    lo, hi = float(p.min()), float(p.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(f"prob must lie in [0, 1], got values in [{lo}, {hi}]")
    return p


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------
def empty_case(pred, target) -> str:
    """Classify a case for the empty-mask policy.

    Returns ``"both_empty"`` (no lesion, none predicted), ``"missed"`` (lesion present, nothing
    predicted), ``"false_alarm"`` (no lesion, something predicted) or ``"normal"``.
    """
    p = bool(np.any(pred))
    t = bool(np.any(target))
    return _case_name(p, t)


def _case_name(p: bool, t: bool) -> str:
    if t:
        return "normal" if p else "missed"
    return "false_alarm" if p else "both_empty"


def penalty_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The finite ASSD/HD95 penalty for a missed lesion or a false alarm: the field-of-view diagonal in mm."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


def _crop_padded(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(2, ...)`` stack of pred and target cropped to their union's bounding box, padded by one
    background pixel on every side (outside the image counts as background)."""
    union = pred | target
    nd = union.ndim
    box = []
    for ax in range(nd):
        other = tuple(a for a in range(nd) if a != ax)
        idx = np.flatnonzero(union.any(axis=other))
        box.append(slice(idx[0], idx[-1] + 1))
    box = tuple(box)
    m = np.zeros((2, *(s.stop - s.start + 2 for s in box)), dtype=bool)
    inner = (slice(1, -1),) * nd
    m[(0, *inner)] = pred[box]
    m[(1, *inner)] = target[box]
    return m


def _surface(m: np.ndarray) -> np.ndarray:
    """Surfaces of a padded ``(2, ...)`` stack: m XOR erode(m, cross), on the unpadded grid."""
    nd = m.ndim - 1
    inner = (slice(None),) + (slice(1, -1),) * nd
    core = m[inner]
    er = core.copy()
    for ax in range(1, nd + 1):
        lo = list(inner)
        hi = list(inner)
        lo[ax] = slice(None, -2)
        hi[ax] = slice(2, None)
        er &= m[tuple(lo)]
        er &= m[tuple(hi)]
    return core > er  # core & ~er


def _dual_codes(m: np.ndarray) -> np.ndarray:
    """Marching-squares/cubes configuration code of every 2^d cell between pixel centres."""
    nd = m.ndim - 1
    u8 = m.view(np.uint8)
    code = None
    for bit, off in enumerate(itertools.product((0, 1), repeat=nd)):
        sl = (slice(None),) + tuple(slice(o, s - 1 + o) for o, s in zip(off, m.shape[1:], strict=True))
        term = u8[sl] << bit if bit else u8[sl].copy()
        if code is None:
            code = term
        else:
            code |= term
    return code


@lru_cache(maxsize=64)
def _contour_length_table(s0: float, s1: float) -> np.ndarray:
    """Length (mm) of the marching-squares contour inside a cell, per configuration code.

    Contour vertices sit at the midpoints of cell edges whose corners differ. One corner set (or
    one corner clear) cuts that corner: half the cell diagonal. Two corners along one axis: a
    segment across the cell, as long as the cell along that axis. Two diagonal corners: two corner
    cuts. All set or all clear: no contour.
    """
    diag = 0.5 * math.hypot(s0, s1)
    table = np.zeros(16, dtype=np.float64)
    for code in range(16):
        corners = [off for bit, off in enumerate(itertools.product((0, 1), repeat=2)) if code >> bit & 1]
        n = len(corners)
        if n in (1, 3):
            table[code] = diag
        elif n == 2:
            (a0, a1), (b0, b1) = corners
            if a0 == b0:  # same row: the two corners differ along axis 1 -> the cut runs along axis 1
                table[code] = s1
            elif a1 == b1:  # same column -> cut runs along axis 0
                table[code] = s0
            else:
                table[code] = 2 * diag
    return table


def _points(stack: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in mm of the set pixels of a ``(2, ...)`` stack: (channel 0 points, channel 1 points)."""
    flat = np.flatnonzero(stack)
    shape = stack.shape[1:]
    split = int(np.searchsorted(flat, math.prod(shape)))
    xyz = np.empty((len(flat), len(shape)), dtype=np.float64)
    rest = flat
    for ax in range(len(shape) - 1, 0, -1):
        rest, xyz[:, ax] = np.divmod(rest, shape[ax])
        xyz[:, ax] *= spacing[ax]
    xyz[:, 0] = rest % shape[0]
    xyz[:, 0] *= spacing[0]
    return xyz[:split], xyz[split:]


def _nearest_both(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from every point of ``a`` to its nearest point of ``b``, and from ``b`` to ``a``."""
    if len(a) * len(b) <= _BRUTE_MAX_PAIRS:
        d2 = cdist(a, b, "sqeuclidean")
        return np.sqrt(d2.min(axis=1)), np.sqrt(d2.min(axis=0))
    return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]


def _percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) without its overhead."""
    n = len(x)
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    part = np.partition(x, (lo, hi)) if hi != lo else np.partition(x, lo)
    a, b = float(part[lo]), float(part[hi])
    t = pos - lo
    # same lerp as numpy: exact at both ends
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def surface_distances(pred, target, spacing=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> target surface, target surface -> pred surface).

    Both masks must be non-empty. The arrays follow the C order of the surface pixels, like
    MedPy's ``__surface_distances(pred, target)`` and ``(target, pred)``.
    """
    p = _as_mask(pred, "pred")
    t = _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    if not (p.any() and t.any()):
        raise ValueError("surface distances need two non-empty masks")
    sp = np.asarray(_as_spacing(spacing, p.ndim))
    return _nearest_both(*_points(_surface(_crop_padded(p, t)), sp))


def _surface_metrics(
    pred: np.ndarray, target: np.ndarray, sp: tuple[float, ...], tol: float, hd95_mode: str
) -> tuple[float, float, float]:
    """(assd, hd95, nsd) for two non-empty masks."""
    spa = np.asarray(sp)
    m = _crop_padded(pred, target)
    d_pt, d_tp = _nearest_both(*_points(_surface(m), spa))
    n = len(d_pt) + len(d_tp)
    assd = (float(d_pt.sum()) + float(d_tp.sum())) / n
    if hd95_mode == "pooled":
        hd95 = _percentile(np.concatenate((d_pt, d_tp)), 95.0)
    else:
        hd95 = max(_percentile(d_pt, 95.0), _percentile(d_tp, 95.0))

    # NSD on the dual grid, each element weighted by its contour length / surface area.
    table = _element_table(sp)
    code = _dual_codes(m)
    edge = (code - np.uint8(1)) < np.uint8(len(table) - 2)  # code not 0 and not all-set
    w = table[code[edge]]
    g_pt, g_tp = _nearest_both(*_points(edge, spa))
    wp, wt = w[: len(g_pt)], w[len(g_pt) :]
    total = float(w.sum())
    reach = tol * (1.0 + _TIE_RTOL)  # a distance equal to the tolerance is within it
    inside = float(wp[g_pt <= reach].sum()) + float(wt[g_tp <= reach].sum())
    nsd = inside / total if total > 0 else 1.0
    return assd, hd95, nsd


def _element_table(sp: tuple[float, ...]) -> np.ndarray:
    if len(sp) == 2:
        return _contour_length_table(*sp)
    return _surface_area_table(*sp)


# --------------------------------------------------------------------------------------------------
# 3D surface elements (marching cubes on the dual grid)
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _surface_area_table(s0: float, s1: float, s2: float) -> np.ndarray:
    """Area (mm^2) of the marching-cubes surface inside a cell, per configuration code."""
    tri, code = _marching_cube_triangles()
    v = tri * np.array([s0, s1, s2])
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    return np.bincount(code, weights=area, minlength=256)


@lru_cache(maxsize=1)
def _marching_cube_triangles() -> tuple[np.ndarray, np.ndarray]:
    """Triangles (K, 3, 3) in unit-cell coordinates and their configuration codes (K,): every
    loop of :func:`_marching_cube_polygons` fanned around its vertex centroid."""
    tris = []
    codes = []
    for code, loops in enumerate(_marching_cube_polygons()):
        for loop in loops:
            v = np.asarray(loop, dtype=np.float64)
            c = v.mean(axis=0)
            for i in range(len(v)):
                tris.append((c, v[i], v[(i + 1) % len(v)]))
                codes.append(code)
    return np.asarray(tris, dtype=np.float64), np.asarray(codes, dtype=np.intp)


@lru_cache(maxsize=1)
def _marching_cube_polygons() -> list[list[list[tuple[float, float, float]]]]:
    """Per configuration code, the closed loops of the isosurface inside a unit cell.

    Vertices sit at midpoints of cell edges whose corners differ. On every cell face the
    iso-contour is traced with marching squares; on an ambiguous face (diagonal corners set) the
    corners of the cell's minority state are kept apart (the set corners when at most four are
    set). The face segments join up into closed loops; each loop's area is taken as the fan of
    triangles around its vertex centroid.
    """
    corners = list(itertools.product((0, 1), repeat=3))
    out: list[list[list[tuple[float, float, float]]]] = []
    for code in range(256):
        inside = {c for bit, c in enumerate(corners) if code >> bit & 1}
        # an ambiguous face keeps the corners of the cell's minority state apart, so that a
        # configuration and its complement share one surface
        apart = inside if len(inside) <= 4 else set(corners) - inside
        segments = []
        for ax in range(3):
            for side in (0, 1):
                segments.extend(_face_segments(apart, ax, side))
        out.append(_join_loops(segments))
    return out


def _face_segments(inside: set, ax: int, side: int) -> list[tuple[tuple, tuple]]:
    """Marching-squares segments on one face of the unit cell (endpoints = edge midpoints)."""
    u, v = (a for a in range(3) if a != ax)

    def corner(i, j):
        c = [0, 0, 0]
        c[ax], c[u], c[v] = side, i, j
        return tuple(c)

    def mid(c1, c2):
        return tuple((a + b) / 2 for a, b in zip(c1, c2, strict=True))

    ring = [corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)]
    state = [c in inside for c in ring]
    crossings = [mid(ring[k], ring[(k + 1) % 4]) for k in range(4) if state[k] != state[(k + 1) % 4]]
    if len(crossings) == 2:
        return [(crossings[0], crossings[1])]
    if len(crossings) == 4:
        # ambiguous face: cut off each set corner on its own
        segs = []
        for k in range(4):
            if state[k]:
                segs.append((mid(ring[k - 1], ring[k]), mid(ring[k], ring[(k + 1) % 4])))
        return segs
    return []


def _join_loops(segments: list[tuple[tuple, tuple]]) -> list[list[tuple]]:
    adj: dict[tuple, list[tuple]] = {}
    for a, b in segments:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    loops = []
    seen: set = set()
    for start in adj:
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        prev, cur = None, start
        while True:
            nxt = [x for x in adj[cur] if x != prev and (x not in seen or (x == start and len(loop) > 2))]
            if not nxt:
                break
            x = nxt[0]
            if x == start:
                break
            loop.append(x)
            seen.add(x)
            prev, cur = cur, x
        loops.append(loop)
    return loops


# --------------------------------------------------------------------------------------------------
# public metric functions
# --------------------------------------------------------------------------------------------------
def _rates(tp: int, fp: int, fn: int, tn: int) -> tuple[float, float, float, float]:
    dice = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    sens = tp / (tp + fn) if (tp + fn) else _NAN
    spec = tn / (tn + fp) if (tn + fp) else _NAN
    if tp + fp:
        prec = tp / (tp + fp)
    else:  # nothing predicted: a missed lesion is penalised, an empty slice has no precision
        prec = 0.0 if fn else _NAN
    return dice, sens, spec, prec


def _check_mode(hd95_mode: str, tol: float) -> None:
    if hd95_mode not in HD95_MODES:
        raise ValueError(f"hd95_mode must be one of {HD95_MODES}, got {hd95_mode!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"nsd_tolerance_mm must be finite and >= 0, got {tol}")


def _case_metrics(p, t, sp, tp, fp, fn, tn, mae, tol, hd95_mode) -> dict[str, float]:
    dice, sens, spec, prec = _rates(tp, fp, fn, tn)
    has_p = tp + fp > 0
    has_t = tp + fn > 0
    if has_p and has_t:
        assd, hd95, nsd = _surface_metrics(p, t, sp, tol, hd95_mode)
    elif has_p or has_t:
        assd = hd95 = penalty_distance(p.shape, sp)
        nsd = 0.0
    else:
        assd = hd95 = 0.0
        nsd = 1.0
    return {
        "dice": dice,
        "assd": assd,
        "hd95": hd95,
        "nsd": nsd,
        "mae": mae,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
    }


def _counts_and_metrics(p, t, sp, pr, tol, hd95_mode) -> dict[str, float]:
    tp = int(np.count_nonzero(p & t))
    npred = int(np.count_nonzero(p))
    ntarget = int(np.count_nonzero(t))
    fp, fn = npred - tp, ntarget - tp
    tn = p.size - tp - fp - fn
    if pr is None:
        mae = (fp + fn) / p.size
    else:
        # |prob - target| is prob off the lesion and 1 - prob on it (prob in [0, 1])
        on = float(np.sum(pr[t], dtype=np.float64))
        mae = (float(np.sum(pr, dtype=np.float64)) - 2.0 * on + ntarget) / p.size
    return _case_metrics(p, t, sp, tp, fp, fn, tn, mae, tol, hd95_mode)


def segmentation_metrics(
    pred,
    target,
    *,
    spacing: Sequence[float] = (1.0, 1.0),
    prob=None,
    nsd_tolerance_mm: float = 3.0,
    hd95_mode: str = "pooled",
) -> dict[str, float]:
    """All eight metrics for one case (a 2D slice, or a 3D volume with 3D ``spacing``).

    ``pred`` and ``target`` are binary masks of the same shape; ``spacing`` is in mm per axis in
    array order (one number means isotropic); ``prob`` is an optional probability map in [0, 1]
    used for MAE only (default: ``pred``). Empty masks follow the module's policy table.
    """
    p = _as_mask(pred, "pred")
    t = _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got {p.ndim}D")
    if p.size == 0:
        raise ValueError("masks are empty arrays")
    sp = _as_spacing(spacing, p.ndim)
    _check_mode(hd95_mode, nsd_tolerance_mm)
    pr = None if prob is None else _check_prob(prob, p.shape)
    return _counts_and_metrics(p, t, sp, pr, float(nsd_tolerance_mm), hd95_mode)


def batch_metrics(preds, targets, spacings, probs=None, **kw) -> list[dict[str, float]]:
    """:func:`segmentation_metrics` for a batch: ``preds``/``targets`` (N, H, W) [or (N, D, H, W)],
    ``spacings`` (N, ndim) or one spacing for all, ``probs`` (N, ...) or None.

    Keyword arguments ``nsd_tolerance_mm`` and ``hd95_mode`` are passed on. Inputs are checked
    once for the whole batch, then each case is computed in one pass while it is in cache.
    """
    unknown = set(kw) - {"nsd_tolerance_mm", "hd95_mode"}
    if unknown:
        raise TypeError(f"batch_metrics got unexpected keyword arguments {sorted(unknown)}")
    tol = float(kw.get("nsd_tolerance_mm", 3.0))
    hd95_mode = kw.get("hd95_mode", "pooled")
    _check_mode(hd95_mode, tol)
    P = _as_mask(preds, "preds")
    T = _as_mask(targets, "targets")
    if P.shape != T.shape:
        raise ValueError(f"preds {P.shape} and targets {T.shape} differ in shape")
    if P.ndim not in (3, 4):
        raise ValueError(f"expected (N, H, W) or (N, D, H, W) masks, got shape {P.shape}")
    n = P.shape[0]
    nd = P.ndim - 1
    S = np.asarray(spacings, dtype=np.float64)
    if S.ndim <= 1:
        S = np.broadcast_to(np.asarray(_as_spacing(S, nd)), (n, nd))
    if S.shape != (n, nd):
        raise ValueError(f"spacings must have shape ({n}, {nd}), got {S.shape}")
    if n == 0:
        return []
    if not (np.isfinite(S).all() and (S > 0).all()):
        raise ValueError("spacings must be positive and finite")
    pr = None if probs is None else _check_prob(probs, P.shape)
    out = []
    # One pass per case keeps each case in cache (the vectorised counts over the whole batch
    # measured slower: count_nonzero along an axis and a second sweep through memory).
    for i in range(n):
        sp = tuple(float(v) for v in S[i])
        out.append(_counts_and_metrics(P[i], T[i], sp, None if pr is None else pr[i], tol, hd95_mode))
    return out

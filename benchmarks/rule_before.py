"""The verdict's rule until 2026-12-06, frozen for the calibration's "before" column
(`bench_calibration.py --grid extended`): the seed variance (MS_seed - MS_res)/(P S) truncated at 0
(its terms then leave the df), a one-seed side borrowing the other side's truncated variance with
no df. Not used by covbench itself; `covbench.reports.inference.differences` replaced it."""

from __future__ import annotations

import numpy as np
from scipy import stats

# The mean squares and the Satterthwaite df did not change with the rule: imported, not copied.
from covbench.reports.inference import Batch, _satterthwaite, _two_way


def differences_before(a: np.ndarray, b: np.ndarray) -> Batch:
    """Mean difference a - b for a batch of designs: `a` (B, S_a, P) and `b` (B, S_b, P), the same
    P units in the same order (see the module doc for the variance and its df)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2] or a.shape[2] == 0:
        raise ValueError(f"both sides need the same designs and units, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("values must be finite: apply the missing-value rule first")
    size, p = a.shape[0], a.shape[2]
    zero = np.zeros(size)
    delta = a.mean(axis=1) - b.mean(axis=1)
    terms: list[tuple[np.ndarray, float]] = []
    unit_var = np.var(delta, axis=1, ddof=1) / p if p > 1 else zero
    if p > 1:
        terms.append((unit_var, float(p - 1)))
    unit_terms = len(terms)
    sides = []
    for m in (a, b):
        s = m.shape[1]
        ms_seed, ms_res = _two_way(m)
        # sigma_w^2: unbiased (MS_seed - MS_res) / P; with one unit the seed means' spread is all there is
        sigma_w = None if s < 2 else ((ms_seed - ms_res) / p if p > 1 else ms_seed / p)
        sides.append((s, ms_seed, ms_res, sigma_w))
    known = [sw for _, _, _, sw in sides if sw is not None]
    seed_var = []
    for s, ms_seed, ms_res, sw in sides:
        if sw is None:  # one seed: borrow the other side's sigma_w^2 (the same protocol), else 0
            seed_var.append(np.maximum(known[0], 0.0) / s if known else zero)
            continue
        positive = sw > 0
        seed_var.append(np.where(positive, sw / s, 0.0))
        terms.append((np.where(positive, ms_seed / (p * s), 0.0), float(s - 1)))
        if p > 1:
            terms.append((np.where(positive, -ms_res / (p * s), 0.0), float((s - 1) * (p - 1))))
    var = unit_var + seed_var[0] + seed_var[1]
    se = np.sqrt(np.maximum(var, 0.0))
    df = _capped_df(terms, unit_terms, unit_var, seed_var[0] + seed_var[1], p)
    estimate = a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = np.where(
            se > 0, 2 * stats.t.sf(np.abs(estimate) / se, df), np.where(estimate == 0, 1.0, 0.0)
        )
    return Batch(
        estimate, se, df, p_value, unit_var, (seed_var[0], seed_var[1]), terms, p, (a.shape[1], b.shape[1])
    )


def _capped_df(
    terms: list[tuple[np.ndarray, float]],
    unit_terms: int,
    unit_var: np.ndarray,
    seed_var: np.ndarray,
    units: int,
) -> np.ndarray:
    """Satterthwaite's df, never more than the df of the source (units or seeds) that carries most
    of the variance (docs/reports.md: plain Satterthwaite is liberal when one low-df source
    dominates, 7-8 % false verdicts at 3 patients and 10 seeds). `terms[:unit_terms]` are the
    units' terms, the rest the seeds'."""
    size = unit_var.shape[0]
    df = _satterthwaite(terms, size)
    seed_df = _satterthwaite(terms[unit_terms:], size)
    unit_dominates = (unit_var >= seed_var) if units > 1 else np.zeros(size, bool)
    cap = np.where(unit_dominates, float(units - 1), np.where(np.isfinite(seed_df), seed_df, df))
    return np.maximum(np.minimum(df, cap), 1.0)

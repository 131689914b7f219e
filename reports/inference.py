"""Is architecture A really better than B? Inference at the independent unit, seeds counted.

Two sources of variation decide whether a difference between architectures is real:

* **test units** (patients when the data names them): slices of one patient are correlated, so
  per-slice values are first averaged within each (model, seed, patient), and patients are the
  replicates of the test set;
* **seeds**: a seed shifts every case of one trained network at once, so more test cases never
  average it away; independently trained seeds are the replicates of training.

For one pair, `difference(a, b)` takes the seeds x units matrices of both models (the same units
in the same order; seeds are *not* paired across models) and uses the linear mixed model

    y[m, s, p] = mu_m + u_p + v_mp + w_ms + e_msp

(u: patient, v: patient x model, w: seed of model m, e: network x patient noise). The mean
difference D = mean(a) - mean(b) has

    Var(D) = Var_p(delta_p) / P  +  sum_m sigma_w,m^2 / S_m

where delta_p is the per-unit difference of the seed means (its variance already holds v and the
e part) and sigma_w,m^2 / S_m is estimated without bias from the two-way ANOVA of model m,
(MS_seed - MS_residual) / (P S_m), truncated at 0 (Searle, Casella & McCulloch 1992, ch. 4). The
CI and p-value use Student's t with Satterthwaite's degrees of freedom (Satterthwaite 1946), the
standard small-sample answer for a variance built from several mean squares; with one seed per
model it is exactly the paired t-test over units, with one unit exactly Welch's test over seeds
(both checked against scipy in the tests); the df are capped by the dominant source
(`degrees_of_freedom`). The calibration by simulation is in docs/reports.md
(`benchmarks/bench_calibration.py`).

A verdict per (pair, metric): *A better* / *B better* when the Holm-adjusted two-sided p is below
alpha, *practically equivalent* when TOST (Schuirmann 1987) at alpha puts the difference inside the
region of practical equivalence `ROPE[metric]` (also when it is significant but negligible), and
*undecided* otherwise. Nothing here knows about run folders; `covbench.reports.verdicts` feeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
PRIMARY = "dice"

#: Region of practical equivalence per metric: a difference smaller than this is of no practical
#: consequence (distances in the run's unit, mm or px). Dice 0.01 is the precision at which papers
#: report it; the rates follow it; 0.5 mm / 1 mm are about a pixel at CT in-plane resolution.
ROPE: dict[str, float] = {
    "dice": 0.01,
    "nsd": 0.01,
    "sensitivity": 0.01,
    "specificity": 0.01,
    "precision": 0.01,
    "mae": 0.005,
    "assd": 0.5,
    "hd95": 1.0,
}

A_BETTER, B_BETTER, EQUIVALENT, UNDECIDED = "A better", "B better", "practically equivalent", "undecided"


@dataclass(frozen=True)
class Components:
    """The pieces of Var(D) and their degrees of freedom (for Satterthwaite and for planning)."""

    unit_var: float  # Var_p(delta_p) / P: patients (v) and network x patient noise (e)
    unit_df: float
    seed_var_a: float  # sigma_w,a^2 / S_a (0 when not estimable or truncated)
    seed_var_b: float
    seed_estimable: bool  # at least one side has >= 2 seeds
    unit_estimable: bool  # at least 2 units
    terms: tuple[tuple[float, float], ...]  # (signed value, df) of every mean-square term in Var(D)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its uncertainty; positive means a has the larger values."""

    estimate: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, H0: no difference
    n_units: int
    n_seeds_a: int
    n_seeds_b: int
    components: Components
    level: float = 0.95

    def p_equivalence(self, margin: float) -> float:
        """TOST p-value for |difference| < margin (the larger of the two one-sided p-values)."""
        if not (self.se > 0 and math.isfinite(self.se)):
            return 0.0 if abs(self.estimate) < margin else 1.0
        t = stats.t(self.df)
        return float(max(t.sf((self.estimate + margin) / self.se), t.cdf((self.estimate - margin) / self.se)))

    def detectable(self, power: float = POWER, alpha: float = ALPHA) -> float:
        """Smallest true |difference| a design like this one detects with `power` (two-sided t at
        `alpha`, noncentral t), given this run's variance: what 'not shown' can still hide."""
        return detectable_difference(self.se, self.df, power, alpha)


def detectable_difference(se: float, df: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The true difference detected with `power` by a two-sided t-test with this SE and df."""
    if not (se > 0 and math.isfinite(se) and df > 0):
        return math.nan
    return float(optimize.brentq(lambda d: power_of(d, se, df, alpha) - power, 0.0, 60.0 * se))


def power_of(delta: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """P(two-sided t-test at `alpha` rejects) when the true difference is `delta`."""
    if not (se > 0 and df > 0):
        return math.nan
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = delta / se
    upper, lower = stats.nct.sf(crit, df, nc), stats.nct.cdf(-crit, df, nc)
    # scipy's far tails underflow to NaN; there the tail is 0 to double precision
    return float(np.nan_to_num(upper) + np.nan_to_num(lower))


def _two_way(m: np.ndarray) -> tuple[float, float, float, float]:
    """(MS_seed, df_seed, MS_residual, df_residual) of a seeds x units matrix (one value a cell)."""
    s, p = m.shape
    rows, cols, grand = m.mean(axis=1), m.mean(axis=0), m.mean()
    ms_seed = p * float(np.var(rows, ddof=1)) if s > 1 else math.nan
    if s > 1 and p > 1:
        resid = m - rows[:, None] - cols[None, :] + grand
        ms_res = float((resid**2).sum() / ((s - 1) * (p - 1)))
    else:
        ms_res = math.nan
    return ms_seed, float(s - 1), ms_res, float((s - 1) * (p - 1))


def components(a: np.ndarray, b: np.ndarray) -> Components:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    p = a.shape[1]
    delta = a.mean(axis=0) - b.mean(axis=0)
    terms: list[tuple[float, float]] = []
    unit_var = float(np.var(delta, ddof=1)) / p if p > 1 else 0.0
    if p > 1:
        terms.append((unit_var, float(p - 1)))
    seed_parts: list[float] = []
    raw: list[tuple[int, float, float, float, float]] = []
    for m in (a, b):
        ms_seed, df_seed, ms_res, df_res = _two_way(m)
        raw.append((m.shape[0], ms_seed, df_seed, ms_res, df_res))
    # sigma_w^2 per side; a side with one seed borrows the other side's estimate (same protocol)
    sigma_w: list[float | None] = []
    for s, ms_seed, _, ms_res, _ in raw:
        if s < 2:
            sigma_w.append(None)
        elif p > 1:
            sigma_w.append((ms_seed - ms_res) / p)
        else:  # one unit: the seed means' spread holds the e part too, and that is all there is
            sigma_w.append(ms_seed / p)
    known = [v for v in sigma_w if v is not None]
    for (s, ms_seed, df_seed, ms_res, df_res), sw in zip(raw, sigma_w, strict=True):
        if sw is None:
            borrowed = float(np.mean(known)) if known else 0.0
            seed_parts.append(max(borrowed, 0.0) / s)
            continue
        if sw <= 0:
            seed_parts.append(0.0)
            continue
        seed_parts.append(sw / s)
        terms.append((ms_seed / (p * s), df_seed))
        if p > 1:
            terms.append((-ms_res / (p * s), df_res))
    return Components(unit_var, float(p - 1), seed_parts[0], seed_parts[1], bool(known), p > 1, tuple(terms))


def satterthwaite(terms: tuple[tuple[float, float], ...]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of mean-square terms (value, df)."""
    total = sum(v for v, _ in terms)
    denom = sum(v * v / df for v, df in terms if df > 0)
    if total <= 0 or denom <= 0:
        return math.inf
    return float(total * total / denom)


def degrees_of_freedom(comp: Components) -> float:
    """Satterthwaite's df, but never more than the df of the source (units or seeds) that carries
    most of the variance. Plain Satterthwaite is liberal when one low-df source dominates (7-8 %
    false verdicts at 3 patients and 10 seeds in our simulation); the cap brings it back to 5 %
    at almost no cost in power (docs/reports.md, calibration)."""
    if not comp.terms:
        return math.inf
    df = satterthwaite(comp.terms)
    seed_terms = comp.terms[1:] if comp.unit_estimable else comp.terms
    if comp.unit_estimable and comp.unit_var >= comp.seed_var_a + comp.seed_var_b:
        cap = comp.unit_df
    else:
        cap = satterthwaite(seed_terms) if seed_terms else df
    return max(min(df, cap), 1.0)


def difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Difference:
    """Mean difference a - b of two seeds x units matrices over the same units (see module doc)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"both sides need the same units, got {a.shape[1]} and {b.shape[1]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("values must be finite: apply the missing-value rule first")
    comp = components(a, b)
    estimate = float(a.mean() - b.mean())
    var = comp.unit_var + comp.seed_var_a + comp.seed_var_b
    se = math.sqrt(var) if var > 0 else 0.0
    df = degrees_of_freedom(comp)
    n = (a.shape[1], a.shape[0], b.shape[0])
    if se == 0.0:
        # no variation at all (identical networks on every unit): a difference is exact
        p_value = 1.0 if estimate == 0 else 0.0
        return Difference(estimate, 0.0, df, estimate, estimate, p_value, *n, comp, level)
    t = stats.t(df)
    half = float(t.ppf(0.5 + level / 2)) * se
    p_value = float(2 * t.sf(abs(estimate) / se))
    return Difference(estimate, se, df, estimate - half, estimate + half, p_value, *n, comp, level)


def p_superior(a: np.ndarray, b: np.ndarray) -> float:
    """P(a seed of A beats a seed of B): the share of (seed of A, seed of B) pairs whose mean over
    the shared units is larger for A (ties count half). Describes training luck, not a test."""
    ra, rb = np.asarray(a, float).mean(axis=1), np.asarray(b, float).mean(axis=1)
    wins = (ra[:, None] > rb[None, :]).sum() + 0.5 * (ra[:, None] == rb[None, :]).sum()
    return float(wins / (ra.size * rb.size))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, monotone and capped at 1, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        if math.isnan(p):
            continue
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(estimate: float, p_adjusted: float, p_equivalence_adjusted: float, alpha: float = ALPHA) -> str:
    """One word per pair and metric, in terms of the raw difference a - b (the caller orients it
    by the metric's direction). Equivalence wins over a significant but negligible difference."""
    if p_equivalence_adjusted < alpha:
        return EQUIVALENT
    if p_adjusted < alpha:
        return A_BETTER if estimate > 0 else B_BETTER
    return UNDECIDED


@dataclass(frozen=True)
class Design:
    """Variance components of one metric, pooled over a run's models, for planning designs:
    patient x model (v), seed (w) and network x patient (e) variances of the per-unit values."""

    sigma_v2: float
    sigma_w2: float
    sigma_e2: float

    def se_df(self, seeds: int, units: int) -> tuple[float, float]:
        """Expected SE of a pair's difference and Satterthwaite df for `seeds` per model and
        `units` test units."""
        s, p = seeds, units
        unit_term = (2 * self.sigma_v2 + 2 * self.sigma_e2 / s) / p
        seed_term = self.sigma_w2 / s  # one model's part; a pair has two
        terms: list[tuple[float, float]] = [(unit_term, p - 1.0)] if p > 1 else []
        if self.sigma_w2 > 0 and s > 1:
            ms_seed_part = (self.sigma_w2 + self.sigma_e2 / p) / s
            ms_res_part = self.sigma_e2 / (p * s)
            terms += [(ms_seed_part, s - 1.0), (-ms_res_part, (s - 1.0) * (p - 1.0))] * 2
        comp = Components(unit_term, p - 1.0, seed_term, seed_term, s > 1, p > 1, tuple(terms))
        return math.sqrt(max(unit_term + 2 * seed_term, 0.0)), degrees_of_freedom(comp)

    def detectable(self, seeds: int, units: int, power: float = POWER, alpha: float = ALPHA) -> float:
        se, df = self.se_df(seeds, units)
        return detectable_difference(se, df, power, alpha)

    def power(self, delta: float, seeds: int, units: int, alpha: float = ALPHA) -> float:
        se, df = self.se_df(seeds, units)
        return power_of(delta, se, df, alpha)


def estimate_design(matrices: list[np.ndarray]) -> Design:
    """Variance components from the seeds x units matrices of a run's models (same units): the
    ANOVA (method-of-moments) estimators, pooled over models and pairs, truncated at 0."""
    ms_seed, ms_res = [], []
    p = matrices[0].shape[1]
    for m in matrices:
        seed, _, res, _ = _two_way(m)
        if math.isfinite(seed):
            ms_seed.append(seed)
        if math.isfinite(res):
            ms_res.append(res)
    sigma_e2 = float(np.mean(ms_res)) if ms_res else 0.0
    sigma_w2 = max((float(np.mean(ms_seed)) - sigma_e2) / p, 0.0) if ms_seed else 0.0
    vs = []
    for i in range(len(matrices)):
        for j in range(i + 1, len(matrices)):
            a, b = matrices[i], matrices[j]
            if p < 2:
                continue
            delta = a.mean(axis=0) - b.mean(axis=0)
            vs.append(float(np.var(delta, ddof=1)) - sigma_e2 * (1 / a.shape[0] + 1 / b.shape[0]))
    sigma_v2 = max(float(np.mean(vs)) / 2, 0.0) if vs else 0.0
    return Design(sigma_v2, sigma_w2, sigma_e2)

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
(MS_seed - MS_residual) / (P S_m) (Searle, Casella & McCulloch 1992, ch. 4). Since issue 33 the
sum is regrouped as the seed means' spread MS_seed / (P S_m) (never negative, so no seed variance
leaves the SE or the df) plus the patient x model part, which alone is truncated at 0; see
`differences`. The
CI and p-value use Student's t with Satterthwaite's degrees of freedom (Satterthwaite 1946), the
standard small-sample answer for a variance built from several mean squares; with one seed per
model it is exactly the paired t-test over units, with one unit exactly Welch's test over seeds
(both checked against scipy in the tests); the df are capped by the dominant source, by
common-variance weights for the seeds, and by the df of the same variance grouped by variance
component (`_capped_df`, `_variance_component_df`; docs/reports.md says why each). The
calibration by simulation is in docs/reports.md (`benchmarks/bench_calibration.py`).

A verdict per (pair, metric): *A better* / *B better* when the Holm-adjusted two-sided p is below
alpha, *practically equivalent* when TOST (Schuirmann 1987) at alpha puts the difference inside the
region of practical equivalence `ROPE[metric]` (also when it is significant but negligible), and
*undecided* otherwise. Nothing here knows about run folders; `covbench.reports.verdicts` feeds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

try:  # the ufunc behind scipy.stats.nct.sf; called directly it skips the distribution's overhead
    from scipy.special._ufuncs import _nct_sf
except ImportError:  # pragma: no cover - another scipy: the public (slower, same) path
    _nct_sf = None

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
    unit_terms: int = 1  # terms[:unit_terms] are the units' terms (the patient x model part)
    seed_df: float = math.inf  # df of the seeds' part alone


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
    crit = special.stdtrit(df, 1 - alpha / 2)  # = stats.t.ppf(1 - alpha / 2, df)
    nc = delta / se
    if _nct_sf is None:
        upper = stats.nct.sf(crit, df, nc)
    else:  # stats.nct.sf / .cdf without their argument checks: the same numbers, 30x faster
        with np.errstate(over="ignore"):
            upper = np.clip(_nct_sf(crit, df, nc), 0, 1)
    lower = special.nctdtr(df, nc, -crit)
    # scipy's far tails underflow to NaN; there the tail is 0 to double precision
    return float(np.nan_to_num(upper) + np.nan_to_num(lower))


def _two_way(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MS_seed, MS_residual) of a batch of seeds x units matrices (B, S, P), one value a cell;
    NaN where the design has no such mean square (one seed, or one unit for the residual)."""
    _, s, p = m.shape
    rows, cols = m.mean(axis=2), m.mean(axis=1)
    grand = rows.mean(axis=1)
    nan = np.full(m.shape[0], np.nan)
    ms_seed = p * np.var(rows, axis=1, ddof=1) if s > 1 else nan
    if s > 1 and p > 1:
        resid = m - rows[:, :, None] - cols[:, None, :] + grand[:, None, None]
        ms_res = (resid**2).sum(axis=(1, 2)) / ((s - 1) * (p - 1))
    else:
        ms_res = nan
    return ms_seed, ms_res


@dataclass(frozen=True)
class Batch:
    """`difference` for a batch of designs at once (arrays of shape (B,)): what simulations and
    bootstraps need; `difference` is its one-design view."""

    estimate: np.ndarray
    se: np.ndarray
    df: np.ndarray
    p_value: np.ndarray
    unit_var: np.ndarray
    seed_var: tuple[np.ndarray, np.ndarray]
    terms: list[tuple[np.ndarray, float]]  # (signed value per design, df) of each mean-square term
    n_units: int
    n_seeds: tuple[int, int]
    unit_terms: int = 1  # terms[:unit_terms] are the units' (patient x model) terms, the rest the seeds'
    seed_df: np.ndarray | None = None  # df of the seeds' part alone: small = training noise poorly known

    def p_equivalence(self, margin: float) -> np.ndarray:
        """TOST p-values for |difference| < margin (the larger of the two one-sided p-values)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            lower = stats.t.sf((self.estimate + margin) / self.se, self.df)
            upper = stats.t.cdf((self.estimate - margin) / self.se, self.df)
        exact = np.where(np.abs(self.estimate) < margin, 0.0, 1.0)
        return np.where(self.se > 0, np.maximum(lower, upper), exact)


def _satterthwaite(terms: list[tuple[np.ndarray, float]], size: int) -> np.ndarray:
    total, denom = np.zeros(size), np.zeros(size)
    for value, df in terms:
        if df > 0:
            total += value
            denom += value * value / df
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((total > 0) & (denom > 0), total * total / denom, np.inf)


def differences(a: np.ndarray, b: np.ndarray) -> Batch:
    """Mean difference a - b for a batch of designs: `a` (B, S_a, P) and `b` (B, S_b, P), the same
    P units in the same order (see the module doc for the variance and its df).

    Var(D) = V_v + sum_m MS_seed,m / (P S_m): the seed means' own spread (Welch over seeds, never
    negative, so no seed variance is ever truncated away) plus the patient x model part
    V_v = Var_p(delta_p)/P - sum_m MS_res,m / (P S_m), truncated at 0. A one-seed side borrows the
    other side's mean squares together with their df (the same training protocol)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2] or a.shape[2] == 0:
        raise ValueError(f"both sides need the same designs and units, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("values must be finite: apply the missing-value rule first")
    size, p = a.shape[0], a.shape[2]
    zero = np.zeros(size)
    delta = a.mean(axis=1) - b.mean(axis=1)
    squares = [_two_way(m) for m in (a, b)]
    seeds = (a.shape[1], b.shape[1])
    seed_terms: dict[int, list] = {}  # source side -> [MS_seed, coefficient, df]
    res_terms: dict[int, list] = {}
    seed_var = []
    for side, s in enumerate(seeds):
        source = side if s > 1 else 1 - side  # one seed: the other side's mean squares stand in
        s_source = seeds[source]
        if s_source < 2:
            seed_var.append(zero)
            continue
        ms_seed, ms_res = squares[source]
        seed_terms.setdefault(source, [ms_seed, 0.0, s_source - 1.0])[1] += 1.0 / (p * s)
        seed_var.append(ms_seed / (p * s))
        if p > 1:
            res_terms.setdefault(source, [ms_res, 0.0, (s_source - 1.0) * (p - 1.0)])[1] -= 1.0 / (p * s)
    seed_part = [(ms * c, float(df)) for ms, c, df in seed_terms.values()]
    unit_part: list[tuple[np.ndarray, float]] = []
    if p > 1:
        unit_var_raw = np.var(delta, axis=1, ddof=1) / p
        unit_part = [(unit_var_raw, float(p - 1))] + [(ms * c, float(df)) for ms, c, df in res_terms.values()]
    seed_total = sum((v for v, _ in seed_part), zero)
    unit_total = sum((v for v, _ in unit_part), zero)
    keep = unit_total > 0  # the patient x model variance is >= 0: truncate it, never the seeds
    unit_var = np.where(keep, unit_total, 0.0)
    terms = [(np.where(keep, v, 0.0), df) for v, df in unit_part] + seed_part
    var = unit_var + seed_total
    se = np.sqrt(np.maximum(var, 0.0))
    seed_dfs, weights = [df for _, _, df in seed_terms.values()], [c for _, c, _ in seed_terms.values()]
    df = _capped_df(terms, len(unit_part), unit_var, seed_total, p, seed_dfs, weights)
    if p > 1:  # a truncated patient x model part still came from P - 1 df: never test on more
        df = np.where(keep, df, np.minimum(df, float(p - 1)))
        if seed_terms:  # and never more than the variance components' own grouping allows
            df = np.minimum(df, _variance_component_df(unit_part, seed_terms, res_terms, p, size))
    seed_df = _seed_df(seed_part, size, seed_dfs, weights)
    estimate = a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = np.where(
            se > 0, 2 * stats.t.sf(np.abs(estimate) / se, df), np.where(estimate == 0, 1.0, 0.0)
        )
    return Batch(
        estimate,
        se,
        df,
        p_value,
        unit_var,
        (seed_var[0], seed_var[1]),
        terms,
        p,
        seeds,
        len(unit_part),
        seed_df,
    )


def _variance_component_df(
    unit_part: list[tuple[np.ndarray, float]], seed_terms: dict, res_terms: dict, p: int, size: int
) -> np.ndarray:
    """The df of the same unbiased Var(D) grouped by variance component: the patients' term, and
    per model its seed variance (MS_seed - MS_res) / (P S) as a difference of two mean squares, the
    df capped by the component that carries most of the variance. A seed variance that is small
    against its residual is poorly known (Satterthwaite's df of a difference), which the seed means'
    own df (S - 1 each) do not say; the test uses the smaller of the two groupings' df."""
    unit_raw = unit_part[0]
    seed = []
    for src, (ms_seed, c, df_seed) in seed_terms.items():
        ms_res, c_res, df_res = res_terms[src]
        seed += [(ms_seed * c, df_seed), (ms_res * c_res, df_res)]
    seed_var = np.maximum(sum((v for v, _ in seed), np.zeros(size)), 0.0)
    return _capped_df([unit_raw] + seed, 1, unit_raw[0], seed_var, p)


def _capped_df(
    terms: list[tuple[np.ndarray, float]],
    unit_terms: int,
    unit_var: np.ndarray,
    seed_var: np.ndarray,
    units: int,
    seed_dfs: list[float] | None = None,
    seed_weights: list[float] | None = None,
) -> np.ndarray:
    """Satterthwaite's df, never more than the df of the source (units or seeds) that carries most
    of the variance (docs/reports.md: plain Satterthwaite is liberal when one low-df source
    dominates, 7-8 % false verdicts at 3 patients and 10 seeds). `terms[:unit_terms]` are the
    units' terms, the rest the seeds'. The seeds' df are also never more than Satterthwaite's with
    weights from a variance common to both sides (`seed_weights` / `seed_dfs`): Welch's df alone
    grows when a side with 2 seeds shows a small spread by chance, which made 2 vs 10 seeds reject
    7-8 % (docs/calibration.md)."""
    size = unit_var.shape[0]
    df = _satterthwaite(terms, size)
    seed_df = _seed_df(terms[unit_terms:], size, seed_dfs, seed_weights)
    unit_dominates = (unit_var >= seed_var) if units > 1 else np.zeros(size, bool)
    cap = np.where(unit_dominates, float(units - 1), np.where(np.isfinite(seed_df), seed_df, df))
    return np.maximum(np.minimum(df, cap), 1.0)


def _seed_df(
    seed_terms: list[tuple[np.ndarray, float]],
    size: int,
    seed_dfs: list[float] | None,
    seed_weights: list[float] | None,
) -> np.ndarray:
    """Welch-Satterthwaite df of the seeds' terms, at most that with common-variance weights."""
    df = _satterthwaite(seed_terms, size)
    if seed_dfs and seed_weights:
        common = sum(seed_weights) ** 2 / sum(w * w / d for w, d in zip(seed_weights, seed_dfs, strict=True))
        df = np.minimum(df, common)
    return df


def degrees_of_freedom(comp: Components) -> float:
    """`_capped_df` of one design's (expected) components, for planning."""
    if not comp.terms:
        return math.inf
    terms = [(np.array([v]), df) for v, df in comp.terms]
    unit_terms = comp.unit_terms if comp.unit_estimable else 0
    units = int(comp.unit_df) + 1
    seed_var = np.array([comp.seed_var_a + comp.seed_var_b])
    return float(_capped_df(terms, unit_terms, np.array([comp.unit_var]), seed_var, units)[0])


def difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Difference:
    """Mean difference a - b of two seeds x units matrices over the same units (see module doc)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    return pair_differences(a[None], b[None], level)[0]


def pair_differences(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> list[Difference]:
    """`difference` of a batch of pairs at once, `a` (B, S_a, P) and `b` (B, S_b, P): one
    `differences` call and one t quantile for all of them (a report's 1225 pairs a metric at 50
    models), each pair's `Difference` the same numbers as `difference(a[k], b[k])`."""
    batch = differences(a, b)
    t_half = special.stdtrit(batch.df, 0.5 + level / 2)  # = stats.t.ppf(0.5 + level / 2, df)
    seed_dfs = batch.seed_df.tolist() if batch.seed_df is not None else None
    unit_var, seed_a, seed_b = batch.unit_var.tolist(), batch.seed_var[0].tolist(), batch.seed_var[1].tolist()
    estimates, ses, dfs, ps = (x.tolist() for x in (batch.estimate, batch.se, batch.df, batch.p_value))
    halves = t_half.tolist()
    terms = [(v.tolist(), df) for v, df in batch.terms]
    n_unit_terms = batch.unit_terms
    out = []
    for k in range(len(estimates)):
        unit_terms = tuple((v[k], df) for v, df in terms[:n_unit_terms] if v[k] != 0.0)
        seed_terms = tuple((v[k], df) for v, df in terms[n_unit_terms:] if v[k] != 0.0)
        comp = Components(
            unit_var[k], float(batch.n_units - 1), seed_a[k], seed_b[k], max(batch.n_seeds) > 1,
            batch.n_units > 1, unit_terms + seed_terms, len(unit_terms),
            seed_dfs[k] if seed_dfs is not None else math.inf,
        )  # fmt: skip
        estimate, se = estimates[k], ses[k]
        half = halves[k] * se
        out.append(
            Difference(
                estimate,
                se,
                dfs[k],
                estimate - half,
                estimate + half,
                ps[k],
                batch.n_units,
                *batch.n_seeds,
                comp,
                level,
            )  # fmt: skip
        )
    return out


def p_equivalences(diffs: list[Difference], margin: float) -> np.ndarray:
    """`Difference.p_equivalence(margin)` of many pairs as one array operation (the same numbers)."""
    est = np.array([d.estimate for d in diffs], dtype=float)
    se = np.array([d.se for d in diffs], dtype=float)
    df = np.array([d.df for d in diffs], dtype=float)
    usable = (se > 0) & np.isfinite(se)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = special.stdtr(df, -(est + margin) / se)  # = stats.t(df).sf((est + margin) / se)
        upper = special.stdtr(df, (est - margin) / se)  # = stats.t(df).cdf((est - margin) / se)
    exact = np.where(np.abs(est) < margin, 0.0, 1.0)
    return np.where(usable, np.maximum(lower, upper), exact)


def p_superior(a: np.ndarray, b: np.ndarray) -> float:
    """P(a seed of A beats a seed of B): the share of (seed of A, seed of B) pairs whose mean over
    the shared units is larger for A (ties count half). Describes training luck, not a test."""
    ra, rb = np.asarray(a, float).mean(axis=1), np.asarray(b, float).mean(axis=1)
    wins = (ra[:, None] > rb[None, :]).sum() + 0.5 * (ra[:, None] == rb[None, :]).sum()
    return float(wins / (ra.size * rb.size))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, monotone and capped at 1, in the input order (NaN stays
    NaN and counts in m). In numpy: a stable sort puts NaN last and keeps ties in input order, as
    the step-down needs; the same numbers as the loop over sorted p-values it replaced."""
    p = np.asarray(p_values, dtype=float).ravel()
    m = p.size
    adjusted = np.full(m, np.nan)
    order = np.argsort(p, kind="stable")
    finite = order[~np.isnan(p[order])]
    scaled = np.minimum(1.0, (m - np.arange(finite.size)) * p[finite])
    adjusted[finite] = np.maximum.accumulate(np.maximum(scaled, 0.0)) if finite.size else scaled
    return adjusted.tolist()


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
        """Expected SE of a pair's difference and the verdict's df for `seeds` per model and
        `units` test units (the expected mean squares of `differences`)."""
        s, p = seeds, units
        inter = 2 * self.sigma_v2 / p  # the patient x model part, what V_v estimates
        seed_term = (self.sigma_w2 + self.sigma_e2 / p) / s if s > 1 else 0.0  # one model's seed means
        unit_terms: list[tuple[float, float]] = []
        if p > 1 and inter > 0:
            unit_terms = [(inter + 2 * self.sigma_e2 / (p * s), p - 1.0)]
            if s > 1:
                unit_terms += [(-self.sigma_e2 / (p * s), (s - 1.0) * (p - 1.0))] * 2
        seed_terms = [(seed_term, s - 1.0)] * 2 if seed_term > 0 else []
        seed_df = 2.0 * (s - 1) if seed_terms else math.inf
        if p > 1 and s < 2:  # one seed a model: the paired t over units (undecided in the report)
            unit_terms, inter = [(inter + 2 * self.sigma_e2 / p, p - 1.0)], inter + 2 * self.sigma_e2 / p
        comp = Components(
            inter, p - 1.0, seed_term, seed_term, s > 1, p > 1, tuple(unit_terms + seed_terms),
            len(unit_terms), seed_df,
        )  # fmt: skip
        return math.sqrt(max(inter + 2 * seed_term, 0.0)), degrees_of_freedom(comp)

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
        seed, res = (float(x[0]) for x in _two_way(np.asarray(m, dtype=float)[None]))
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

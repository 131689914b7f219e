"""Rounds of seeds until every primary verdict is decided: the stopping rule (`covbench run
--max-seeds`).

A group-sequential design with Lan-DeMets alpha spending (Lan & DeMets 1983): alpha(t) is spent on
the seeds' share t_k = seeds_k / max_seeds, a lower bound of the information fraction (exactly it
when the seed term dominates Var(D)): with two or three seeds the seed variance is often estimated
as 0, and spending on the variance ratio would spend all alpha at the first look. Spending
functions: Pocock type alpha ln(1 + (e - 1) t), O'Brien-Fleming type 2 - 2 Phi(z_{1-alpha/2} /
sqrt(t)) (O'Brien & Fleming 1979) and the Hwang-Shih-DeCani family alpha (1 - e^(-gamma t)) /
(1 - e^(-gamma)) (Hwang, Shih & DeCani 1990), `exact-hsd(gamma)`.

**Exact boundaries** (the "exact-" spending names, the default since 2026-12-07): the look at t_k
tests at the boundary c_k with P_H0(|Z_j| <= c_j for j < k, |Z_k| > c_k) = alpha(t_k) -
alpha(t_(k-1)), so that P(any |Z_k| > c_k) = alpha exactly, where Z_k are the looks' statistics with
the canonical joint distribution Corr(Z_j, Z_k) = sqrt(t_j / t_k) (Jennison & Turnbull 2000,
ch. 3). `crossing` computes the probabilities by the recursive numerical integration of Armitage,
McPherson & Rowe (1969) (Jennison & Turnbull 2000, ch. 19): the density of Z_k on the continuation
region, look by look, on a Simpson grid; `boundaries` solves each c_k in turn, which needs only the
looks so far (what Lan-DeMets spending is for). Checked in tests/test_sequential_boundaries.py
against Pocock's 2.413 (1977) and O'Brien-Fleming's 2.040 sqrt(5 / k) for five looks, the
Lan-DeMets O'Brien-Fleming values 4.877 ... 2.031, and scipy's multivariate normal.

The seeds' variance is estimated, with few df at the first looks, so Z_k is in truth a t
statistic. The look converts its boundary to the nominal two-sided level 2 (1 - Phi(c_k)) and
tests each open pair with covbench's own t test at that level (`levels`;
`covbench.reports.verdicts.verdicts` with `alpha=level`: Holm over the primary pairs, TOST for
equivalence, Satterthwaite df): the significance-level approach to group-sequential t tests that
Pocock (1977) proposed and Jennison & Turnbull (2000, ch. 3; exact t calculations in Jennison &
Turnbull 1991) found to keep the error rate close to nominal. It is an approximation here (the
looks' t statistics are not exactly the z's correlation structure), so
benchmarks/bench_sequential.py measures the rate over all looks (docs/calibration.md).

The legacy names `lan-demets-pocock` and `lan-demets-obrien-fleming` (the rule before 2026-12-07)
test each look at the alpha it spends, alpha(t_k) - alpha(t_(k-1)): valid by the union bound
whatever the correlation, but conservative (it wastes the overlap between looks). A run folder
planned with them keeps them: the spending name is in `Rule.describe()`, which bench/config.py puts
into the configuration key, so a folder never mixes the two designs and a new run gets a new key.

A pair stops needing seeds when it is *decided* (better, or practically equivalent) or *futile*:
the conditional power (under the current trend; Lachin 2005) of reaching either decision with
`max_seeds` seeds per model, at the level the last look will have, is below `FUTILITY_POWER`,
judged from the second look on. Futility never declares anything, so it cannot raise the error
rate (non-binding). `Rule.min_better` (exact rules only) makes an early "better" wait until both
models of the pair have that many seeds: a guard against recipes whose seeds diverge, measured in
docs/calibration.md. A model gets the next round's seeds only while a pair involving it is open.
Nothing here knows about Ray or run folders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize, stats

from covbench.reports.inference import ALPHA, EQUIVALENT, POWER, ROPE, UNDECIDED, estimate_design

# Spending names. The first two are the rule before 2026-12-07 (each look at the alpha it spends, the
# union bound); run folders that name them keep it, so a resumed folder never changes design. The
# "exact-" names test at the exact group-sequential boundaries (`boundaries`); a new name is a new
# configuration key (bench/config.py keys `Rule.describe()`).
RULE = "lan-demets-obrien-fleming"
POCOCK = "lan-demets-pocock"
EXACT_POCOCK = "exact-pocock"
EXACT_OBF = "exact-obrien-fleming"
LEGACY = (RULE, POCOCK)
FUTILITY_POWER = 0.10  # conditional power below which more seeds are not worth spending on a pair
# the first look's seed variance rests on 2-5 seeds and is often truncated to 0, which would make
# every pair look futile: futility is judged from the second look on
FUTILITY_FROM = 2
TREND, DESIGN = "trend", "design"  # what conditional power assumes of the seeds still to come
FUTILITY_UNDER = TREND
MIN_BETTER = 0  # seeds per side before an early "better" (exact rules; docs/calibration.md)
DECIDED, FUTILE, OPEN, MAX_SEEDS = "decided", "futile", "open", "max seeds"
GRID = 401  # Simpson points per look of the recursive integration (`crossing`): c to 1e-8
_HSD = re.compile(r"^(?:exact-)?hsd\(([-+]?[0-9.]+)\)$")


def spending_names() -> tuple[str, ...]:
    """The spending names `Rule.spending` takes (Hwang-Shih-DeCani: any gamma, `exact-hsd(-2)`)."""
    return (*LEGACY, EXACT_POCOCK, EXACT_OBF, "exact-hsd(GAMMA)")


def is_exact(spending: str) -> bool:
    """Whether the looks test at the exact boundaries (else at the alpha each spends, union bound)."""
    return spending.startswith("exact-")


def spent(t: float | np.ndarray, alpha: float = ALPHA, spending: str = RULE) -> np.ndarray:
    """Alpha spent up to information fraction t (0 at t = 0, alpha at 1): Lan-DeMets O'Brien-Fleming
    type 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), Pocock type alpha ln(1 + (e - 1) t), or Hwang, Shih &
    DeCani (1990) alpha (1 - e^(-gamma t)) / (1 - e^(-gamma)) (`hsd(gamma)`; gamma 1 is close to
    Pocock's, -4 to O'Brien-Fleming's)."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    hsd = _HSD.match(spending)
    if hsd:
        gamma = float(hsd.group(1))
        if gamma == 0:
            return alpha * t
        return alpha * -np.expm1(-gamma * t) / -np.expm1(-gamma)
    if spending in (POCOCK, EXACT_POCOCK):
        return alpha * np.log1p((math.e - 1.0) * t)
    if spending in (RULE, EXACT_OBF):
        return 2.0 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(t))
    raise ValueError(f"unknown alpha spending {spending!r}: use one of {', '.join(spending_names())}")


def nominal_alpha(
    t: float | np.ndarray, t_before: float | np.ndarray, alpha: float = ALPHA, spending: str = RULE
) -> np.ndarray:
    """The union bound's level of the look at t after one at t_before: what it spends (the legacy
    rules; `levels` gives the exact boundaries' levels)."""
    return np.maximum(spent(t, alpha, spending) - spent(t_before, alpha, spending), 0.0)


def _simpson(half: float) -> tuple[np.ndarray, np.ndarray]:
    n = GRID
    z = np.linspace(-half, half, n)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return z, w * (2 * half / (n - 1) / 3)


class _Recursion:
    """The density of Z_k on the continuation region (-c_k, c_k) under H0, look by look: Z_k =
    (sqrt(t_(k-1)) Z_(k-1) + sqrt(t_k - t_(k-1)) X) / sqrt(t_k), X ~ N(0, 1) independent, the
    canonical joint distribution (Jennison & Turnbull 2000, sec. 3.1; numerics of ch. 19)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.z = self.mass = None  # grid and density x Simpson weight of the last look

    def cross(self, t: float, c: float) -> float:
        """P(no crossing before, |Z| > c at a look at t)."""
        if self.z is None:
            return float(2.0 * stats.norm.sf(c))
        s, r0, r1 = math.sqrt(t - self.t), math.sqrt(self.t), math.sqrt(t)
        mean = self.z * r0
        return float(self.mass @ (stats.norm.sf((c * r1 - mean) / s) + stats.norm.cdf((-c * r1 - mean) / s)))

    def advance(self, t: float, c: float) -> None:
        """Move on past a look at t whose boundary is c."""
        z, w = _simpson(min(c, 12.0))
        if self.z is None:
            density = stats.norm.pdf(z)
        else:
            s, r0, r1 = math.sqrt(t - self.t), math.sqrt(self.t), math.sqrt(t)
            density = (stats.norm.pdf((z[:, None] * r1 - self.z[None, :] * r0) / s) * (r1 / s)) @ self.mass
        self.t, self.z, self.mass = t, z, density * w


def crossing(t: Iterable[float], c: Iterable[float]) -> np.ndarray:
    """P under H0 that |Z_k| > c_k first at look k, for looks at information fractions t (increasing)
    and two-sided boundaries c: the recursive numerical integration of Armitage, McPherson & Rowe
    (1969) (Jennison & Turnbull 2000, ch. 19), Simpson's rule on `GRID` points a look."""
    rec, out = _Recursion(), []
    for tk, ck in zip(t, c, strict=True):
        out.append(rec.cross(float(tk), float(ck)))
        rec.advance(float(tk), float(ck))
    return np.array(out)


def boundaries(t: Iterable[float], alpha: float = ALPHA, spending: str = EXACT_POCOCK) -> np.ndarray:
    """Exact two-sided z boundaries c_k of looks at information fractions t: P_H0(|Z_k| > c_k first at
    look k) = alpha(t_k) - alpha(t_(k-1)), so P(any |Z_k| > c_k) = alpha(t_K) exactly (Lan & DeMets
    1983)."""
    t = [float(x) for x in t]
    cumulative = spent(np.maximum.accumulate(t), alpha, spending)
    return spend_boundaries(t, np.diff(np.concatenate([[0.0], cumulative])))


def spend_boundaries(t: Iterable[float], spend: Iterable[float]) -> np.ndarray:
    """The two-sided z boundaries whose looks at t cross first with probabilities `spend` under H0;
    a look that spends (nearly) nothing, or adds no information, gets inf (it can decide nothing)."""
    rec, out = _Recursion(), []
    for tk, target in zip((float(x) for x in t), (float(x) for x in spend), strict=True):
        grows = tk > rec.t + 1e-12
        if target < 1e-13 or not grows:
            c = math.inf
        elif rec.z is None:
            c = float(stats.norm.isf(target / 2))
        else:
            c = float(optimize.brentq(lambda x, tk=tk, y=target: rec.cross(tk, x) - y, 0.0, 40.0, xtol=1e-10))
        out.append(c)
        if grows:
            rec.advance(tk, c)
    return np.array(out)


def levels(t: Iterable[float], alpha: float = ALPHA, spending: str = EXACT_POCOCK) -> np.ndarray:
    """The nominal two-sided level of each look: 2 (1 - Phi(c_k)) at the exact boundaries, which the
    look's t test uses (the significance level approach for unknown variance: Pocock 1977;
    Jennison & Turnbull 2000, sec. 3.8); the union bound's alpha(t_k) - alpha(t_(k-1)) for the
    legacy names."""
    t = np.asarray(list(t), dtype=float)
    if not is_exact(spending):
        return nominal_alpha(t, np.concatenate([[0.0], np.maximum.accumulate(t)[:-1]]), alpha, spending)
    return 2.0 * stats.norm.sf(boundaries(t, alpha, spending))


def variance_ratio(design, seeds: int, max_seeds: int, units: int) -> float:
    """t = Var(D | max_seeds) / Var(D | seeds) of the pooled `inference.Design` (1 at max_seeds);
    seeds / max_seeds when the design has no variance to read it from."""
    if seeds >= max_seeds:
        return 1.0
    se_now, _ = design.se_df(seeds, units)
    se_max, _ = design.se_df(max_seeds, units)
    if not (se_now > 0 and math.isfinite(se_now)):
        return seeds / max_seeds
    return float(min(max((se_max / se_now) ** 2, 1e-6), 1.0))


def conditional_power(
    estimate: np.ndarray,
    se: np.ndarray,
    t: np.ndarray,
    df: np.ndarray,
    level: np.ndarray,
    margin: float,
    under: str = TREND,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(better at max seeds), P(equivalent at max seeds)), tested at `level`, se_max = se sqrt(t).
    Under the current trend (`TREND`) the final estimate is N(estimate, (1 - t) se_max^2); under the
    design alternative (`DESIGN`, for "better") the seeds still to come have the mean difference
    the maximum design detects with 80 % power, (c + z_0.8) se_max, so the final estimate is
    N(t |estimate| + (1 - t) (c + z_0.8) se_max, (1 - t) se_max^2) (Lachin 2005 discusses both)."""
    estimate, se, t = (np.asarray(x, dtype=float) for x in (estimate, se, t))
    se_max = se * np.sqrt(t)
    spread = np.sqrt(np.maximum(1.0 - t, 1e-12)) * se_max
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = stats.t.isf(np.asarray(level) / 2, df)
        c1 = stats.t.isf(np.asarray(level), df)
        final = np.abs(estimate)
        if under == DESIGN:
            final = t * final + (1.0 - t) * (c2 + stats.norm.isf(1.0 - POWER)) * se_max
        better = stats.norm.cdf((final - c2 * se_max) / spread)
        hi, lo = margin - c1 * se_max, -margin + c1 * se_max
        equivalent = np.where(
            hi > lo, stats.norm.cdf((hi - estimate) / spread) - stats.norm.cdf((lo - estimate) / spread), 0.0
        )
    return np.nan_to_num(better), np.nan_to_num(equivalent)


def stop_reason(
    word: np.ndarray | Iterable[str],
    cp: tuple[np.ndarray, np.ndarray],
    last: bool,
    threshold: float = FUTILITY_POWER,
    futility: bool = True,
) -> np.ndarray:
    """Per pair: decided, futile, max seeds or open (futile only where `futility` is allowed)."""
    word = np.asarray(list(word) if not isinstance(word, np.ndarray) else word, dtype=object)
    decided = word != UNDECIDED
    futile = (np.maximum(cp[0], cp[1]) < threshold) & futility
    return np.where(decided, DECIDED, np.where(last, MAX_SEEDS, np.where(futile, FUTILE, OPEN)))


@dataclass
class PairLook:
    a: str
    b: str
    verdict: str
    reason: str  # decided, futile, max seeds, open
    estimate: float
    p_adjusted: float
    p_equivalence_adjusted: float
    conditional_power: float  # of either decision at max seeds (nan once decided)
    decided_at: int | None  # the round whose look froze it


@dataclass
class Round:
    """One look: the seeds each model has, the boundary used and each primary pair's state."""

    round: int
    seeds: dict[str, int]
    information: float
    alpha_spent: float
    nominal_alpha: float
    pairs: list[PairLook] = field(default_factory=list)
    next_models: list[str] = field(default_factory=list)  # who gets the next round's seeds
    variance_ratio: float = 1.0  # Var(D | max seeds) / Var(D | these seeds): what futility projects with
    boundary: float | None = None  # |z| the look's boundary is at (exact rules; None: decides nothing)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """The stopping rule a run was planned with; `describe()` goes into the configuration key."""

    first: int
    step: int
    max_seeds: int
    alpha: float = ALPHA
    futility: float = FUTILITY_POWER
    spending: str = EXACT_POCOCK  # the fewest seeds of the exact rules at 80 % power (docs/calibration.md)
    primary: str = "dice"  # the metric whose pairs decide when to stop
    # exact rules only: "better" before the last look needs this many seeds on each side of the pair
    # (diverging seeds, docs/calibration.md); the legacy rules never had it
    min_better: int = MIN_BETTER
    # futility's conditional power: under the current trend (TREND, the rule before 2026-12-07) or the
    # design alternative (DESIGN: keeps the power that TREND loses at the first looks)
    futility_under: str = FUTILITY_UNDER

    def describe(self) -> dict:
        return asdict(self)

    def round_seeds(self, k: int) -> int:
        """Seeds per open model after round k (1-based)."""
        return min(self.first + (k - 1) * self.step, self.max_seeds)

    @property
    def rounds(self) -> int:
        """The largest number of rounds (looks)."""
        return 1 + max(0, math.ceil((self.max_seeds - self.first) / self.step))

    def schedule(self) -> list[float]:
        """The planned looks' information fractions (the seeds' share; the last look is 1)."""
        return [self.round_seeds(k) / self.max_seeds for k in range(1, self.rounds + 1)]

    def look_levels(self, informations: list[float]) -> tuple[float, float]:
        """(the level of the look at informations[-1] after those before it, the level the last look
        will have): what the look tests at and what futility projects the final test with."""
        t = informations[-1]
        if not is_exact(self.spending):
            before = informations[-2] if len(informations) > 1 else 0.0
            level = float(nominal_alpha(t, before, self.alpha, self.spending))
            left = max(self.alpha - float(spent(t, self.alpha, self.spending)), 1e-12)
            return level, level if t >= 1.0 else left
        planned = informations + [x for x in self.schedule() if x > t + 1e-12]
        if planned[-1] < 1.0:
            planned.append(1.0)
        lv = levels(planned, self.alpha, self.spending)
        return float(lv[len(informations) - 1]), float(lv[-1])

    @property
    def futility_assumes(self) -> str:
        """What futility's conditional power assumes: `futility_under` for the exact rules, the
        current trend for the legacy ones (whose stored rules have no such field)."""
        return self.futility_under if is_exact(self.spending) else TREND

    def guards(self, seeds_a: int, seeds_b: int, last: bool) -> bool:
        """Whether a "better" at this look must wait for more seeds (never at the last look)."""
        return is_exact(self.spending) and not last and min(seeds_a, seeds_b) < self.min_better


def look(
    uv,
    rule: Rule,
    k: int,
    history: list[Round],
    primary: str = "dice",
    verdicts_fn=None,
) -> Round:
    """The decision after round k on what has finished (`uv`: `verdicts.UnitValues`), given the
    earlier looks: pairs decided or futile at an earlier look keep that state."""
    from covbench.reports.verdicts import verdicts as run_verdicts

    verdicts_fn = verdicts_fn or run_verdicts
    frozen = {(p.a, p.b): p for r in history for p in r.pairs if p.reason in (DECIDED, FUTILE)}
    seeds = {m: int(uv.frame.loc[uv.frame["model"] == m, "seed"].nunique()) for m in uv.models}
    open_seeds = [seeds[m] for pr in _pairs(uv.models) if pr not in frozen for m in pr]
    s_now = max(open_seeds) if open_seeds else max(seeds.values())
    last = s_now >= rule.max_seeds
    units = uv.units_of(primary)
    t_before = history[-1].information if history else 0.0
    if units:
        mats = [uv.matrix(m, primary, units) for m in uv.models]
        t = variance_ratio(estimate_design(mats), s_now, rule.max_seeds, len(units))
    else:
        t = s_now / rule.max_seeds
    t_var = 1.0 if last else t
    t = 1.0 if last else max(s_now / rule.max_seeds, t_before)  # spending: the seeds' share (see module doc)
    level, final = rule.look_levels([r.information for r in history] + [t])
    result = verdicts_fn(uv, primary=primary, alpha=level, rank_samples=1)[primary]
    pairs = []
    for p in result.pairs:
        if (p.a, p.b) in frozen:
            pairs.append(frozen[(p.a, p.b)])
            continue
        cp = conditional_power(
            p.estimate, p.se, t_var, p.df, final, ROPE.get(primary, 0.0), rule.futility_assumes
        )
        allowed = k >= FUTILITY_FROM
        word = p.verdict
        if word.endswith("better") and rule.guards(seeds[p.a], seeds[p.b], last):
            word = UNDECIDED  # significant, but too few seeds to rule out diverging ones: stays open
        reason = str(stop_reason(np.array([word], dtype=object), cp, last, rule.futility, allowed)[0])
        word = word if reason == DECIDED else UNDECIDED
        cpow = float(max(cp[0], cp[1])) if reason != DECIDED else math.nan
        pairs.append(
            PairLook(p.a, p.b, word, reason, p.estimate, p.p_adjusted, p.p_equivalence_adjusted, cpow,
                     k if reason in (DECIDED, FUTILE) else None)
        )  # fmt: skip
    still = {m for p in pairs if p.reason == OPEN for m in (p.a, p.b)}
    z = float(stats.norm.isf(level / 2)) if is_exact(rule.spending) and level > 0 else None
    spent_now = float(spent(t, rule.alpha, rule.spending))
    return Round(k, seeds, t, spent_now, level, pairs, sorted(still), t_var, z)


def _pairs(models: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]


def final_verdicts(rounds: list[Round]) -> dict[tuple[str, str], str]:
    """The verdict each primary pair ends with: decided at some look, else undecided."""
    return {(p.a, p.b): p.verdict for p in rounds[-1].pairs} if rounds else {}


__all__ = [
    "DECIDED",
    "EQUIVALENT",
    "EXACT_OBF",
    "EXACT_POCOCK",
    "FUTILE",
    "MAX_SEEDS",
    "OPEN",
    "Round",
    "Rule",
    "boundaries",
    "conditional_power",
    "crossing",
    "is_exact",
    "levels",
    "look",
    "nominal_alpha",
    "spend_boundaries",
    "spent",
    "variance_ratio",
]

"""Rounds of seeds until every primary verdict is decided: the stopping rule (`covbench run
--max-seeds`).

A group-sequential design with Lan-DeMets alpha spending (Lan & DeMets 1983) of the Pocock type,
alpha(t) = alpha ln(1 + (e - 1) t) (the default: fewer seeds than O'Brien-Fleming's at equal power in
benchmarks/bench_sequential.py), or the O'Brien-Fleming type 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))
(O'Brien & Fleming 1979). Alpha is spent on the seeds' share t_k = seeds_k / max_seeds, a lower
bound of the information fraction (exactly it when the seed term dominates Var(D)): with two or
three seeds the seed variance is often estimated as 0, and spending on the variance ratio would
spend all alpha at the first look. The variance ratio Var(D at max seeds) / Var(D at the look's
seeds), from the run's own variance components (`inference.Design`: patients, seeds, network x
patient), is what futility projects with: a pair whose noise sits in the patients gains little
from more seeds and stops early. The look tests each open pair at the nominal level
alpha(t_k) - alpha(t_{k-1}): by the union bound the
false "better" (and false "equivalent") rate over all looks is at most alpha(1) = alpha whatever the
correlation between looks, and whatever per-look test `covbench.reports.verdicts.verdicts` runs (it
is called with that level: Holm over the primary pairs, TOST for equivalence). The union bound gives
up a little power against exact boundaries (Jennison & Turnbull 2000, ch. 7) in exchange for
staying valid with small, unequal seed counts and a per-look t test whose df change between looks;
benchmarks/bench_sequential.py measures both the error rate and the seeds it costs.

A pair stops needing seeds when it is *decided* (better, or practically equivalent) or *futile*:
the conditional power (under the current trend; Lachin 2005) of reaching either decision with
`max_seeds` seeds per model is below `FUTILITY_POWER`, judged from the second look on. Futility
never declares anything, so it
cannot raise the error rate (non-binding). A model gets the next round's seeds only while a pair
involving it is open. Nothing here knows about Ray or run folders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from covbench.reports.inference import ALPHA, EQUIVALENT, ROPE, UNDECIDED, estimate_design

RULE = "lan-demets-obrien-fleming"
POCOCK = "lan-demets-pocock"
FUTILITY_POWER = 0.10  # conditional power below which more seeds are not worth spending on a pair
# the first look's seed variance rests on 2-5 seeds and is often truncated to 0, which would make
# every pair look futile: futility is judged from the second look on
FUTILITY_FROM = 2
DECIDED, FUTILE, OPEN, MAX_SEEDS = "decided", "futile", "open", "max seeds"


def spent(t: float | np.ndarray, alpha: float = ALPHA, spending: str = RULE) -> np.ndarray:
    """Alpha spent up to information fraction t (0 at t = 0, alpha at 1): Lan-DeMets O'Brien-Fleming
    type 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), or Pocock type alpha ln(1 + (e - 1) t)."""
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    if spending == POCOCK:
        return alpha * np.log1p((math.e - 1.0) * t)
    return 2.0 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(t))


def nominal_alpha(
    t: float | np.ndarray, t_before: float | np.ndarray, alpha: float = ALPHA, spending: str = RULE
) -> np.ndarray:
    """The level of the look at t after one at t_before: what it spends."""
    return np.maximum(spent(t, alpha, spending) - spent(t_before, alpha, spending), 0.0)


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
    estimate: np.ndarray, se: np.ndarray, t: np.ndarray, df: np.ndarray, level: np.ndarray, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """(P(better at max seeds), P(equivalent at max seeds)) under the current trend: the final
    estimate is N(estimate, (1 - t) se_max^2) with se_max = se sqrt(t), tested at `level`."""
    estimate, se, t = (np.asarray(x, dtype=float) for x in (estimate, se, t))
    se_max = se * np.sqrt(t)
    spread = np.sqrt(np.maximum(1.0 - t, 1e-12)) * se_max
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = stats.t.isf(np.asarray(level) / 2, df)
        c1 = stats.t.isf(np.asarray(level), df)
        better = stats.norm.cdf((np.abs(estimate) - c2 * se_max) / spread)
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
    spending: str = POCOCK  # fewer seeds than RULE at equal power (benchmarks/bench_sequential.py)
    primary: str = "dice"  # the metric whose pairs decide when to stop

    def describe(self) -> dict:
        return asdict(self)

    def round_seeds(self, k: int) -> int:
        """Seeds per open model after round k (1-based)."""
        return min(self.first + (k - 1) * self.step, self.max_seeds)

    @property
    def rounds(self) -> int:
        """The largest number of rounds (looks)."""
        return 1 + max(0, math.ceil((self.max_seeds - self.first) / self.step))


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
    level = float(nominal_alpha(t, t_before, rule.alpha, rule.spending))
    result = verdicts_fn(uv, primary=primary, alpha=level, rank_samples=1)[primary]
    left = max(rule.alpha - float(spent(t, rule.alpha, rule.spending)), 1e-12)
    pairs = []
    for p in result.pairs:
        if (p.a, p.b) in frozen:
            pairs.append(frozen[(p.a, p.b)])
            continue
        cp = conditional_power(
            p.estimate, p.se, t_var, p.df, left if not last else level, ROPE.get(primary, 0.0)
        )
        allowed = k >= FUTILITY_FROM
        reason = str(stop_reason(np.array([p.verdict], dtype=object), cp, last, rule.futility, allowed)[0])
        word = p.verdict if reason == DECIDED else UNDECIDED
        cpow = float(max(cp[0], cp[1])) if reason != DECIDED else math.nan
        pairs.append(
            PairLook(p.a, p.b, word, reason, p.estimate, p.p_adjusted, p.p_equivalence_adjusted, cpow,
                     k if reason in (DECIDED, FUTILE) else None)
        )  # fmt: skip
    still = {m for p in pairs if p.reason == OPEN for m in (p.a, p.b)}
    return Round(k, seeds, t, float(spent(t, rule.alpha, rule.spending)), level, pairs, sorted(still), t_var)


def _pairs(models: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]


def final_verdicts(rounds: list[Round]) -> dict[tuple[str, str], str]:
    """The verdict each primary pair ends with: decided at some look, else undecided."""
    return {(p.a, p.b): p.verdict for p in rounds[-1].pairs} if rounds else {}


__all__ = [
    "DECIDED",
    "EQUIVALENT",
    "FUTILE",
    "MAX_SEEDS",
    "OPEN",
    "Round",
    "Rule",
    "conditional_power",
    "look",
    "nominal_alpha",
    "spent",
    "variance_ratio",
]

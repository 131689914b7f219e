"""The stopping rule's exact group-sequential boundaries (covbench.reports.sequential) against
published values and an independent computation (scipy's multivariate normal), no simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from covbench.reports.inference import UNDECIDED
from covbench.reports.rounds import rounds_markdown
from covbench.reports.sequential import (
    DECIDED,
    DESIGN,
    EXACT_OBF,
    EXACT_POCOCK,
    OPEN,
    POCOCK,
    TREND,
    Rule,
    boundaries,
    conditional_power,
    crossing,
    levels,
    look,
    nominal_alpha,
    spend_boundaries,
    spent,
)
from covbench.reports.verdicts import unit_values

FIVE = np.arange(1, 6) / 5


def test_pococks_constant_boundary_for_five_looks() -> None:
    # Pocock (1977): 2.413 for K = 5 equally spaced looks at two-sided alpha 0.05, 2.178 for K = 2
    for looks, published in ((5, 2.413), (2, 2.178)):
        t = np.arange(1, looks + 1) / looks
        c = optimize.brentq(lambda x, t=t: crossing(t, np.full(len(t), x)).sum() - 0.05, 1.5, 4.0)
        assert c == pytest.approx(published, abs=5e-4)


def test_obrien_flemings_boundary_for_five_looks() -> None:
    # O'Brien & Fleming (1979): c sqrt(K / k), c = 2.040 for K = 5 at two-sided 0.05 (Jennison &
    # Turnbull 2000, ch. 2, tabulate it)
    shape = np.sqrt(5 / np.arange(1, 6))
    c = optimize.brentq(lambda x: crossing(FIVE, x * shape).sum() - 0.05, 1.5, 4.0)
    assert c == pytest.approx(2.040, abs=5e-4)


def test_lan_demets_obrien_fleming_spending_boundaries() -> None:
    # the per-side O'Brien-Fleming spending 2 - 2 Phi(z_{alpha/4} / sqrt t) at two-sided 0.05, 5 equal looks:
    # 4.877, 3.357, 2.680, 2.290, 2.031, as group-sequential software (R's ldbounds, gsDesign) prints them
    side = 2 - 2 * stats.norm.cdf(stats.norm.isf(0.0125) / np.sqrt(FIVE))
    c = spend_boundaries(FIVE, np.diff(np.concatenate([[0.0], 2 * side])))
    np.testing.assert_allclose(c, [4.877, 3.357, 2.680, 2.290, 2.031], atol=2e-3)


@pytest.mark.parametrize("spending", [EXACT_POCOCK, EXACT_OBF, "exact-hsd(-2)", "exact-hsd(1)"])
def test_boundaries_spend_exactly_alpha_against_the_multivariate_normal(spending: str) -> None:
    """Corr(Z_j, Z_k) = sqrt(t_j / t_k): P(no |Z_k| > c_k) from scipy's multivariate normal is
    1 - alpha, and look by look the spending function's increments (unequal looks, as 3 of 10
    seeds then 3 more give)."""
    t = np.array([0.3, 0.6, 0.9, 1.0])
    c = boundaries(t, 0.05, spending)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in (2, len(t)):
        mvn = stats.multivariate_normal(np.zeros(k), cov[:k, :k], abseps=1e-6, releps=1e-6)
        rng = np.random.default_rng(0)
        inside = mvn.cdf(c[:k], lower_limit=-c[:k], rng=rng)
        assert 1 - inside == pytest.approx(float(spent(t[k - 1], 0.05, spending)), abs=2e-4)
    assert crossing(t, c).sum() == pytest.approx(0.05, abs=1e-9)


def test_exact_levels_are_larger_than_the_union_bounds() -> None:
    """The exact boundary spends what the union bound wastes: every look after the first tests at a
    larger nominal level, the first at the same; the legacy names keep the union bound."""
    t = [0.3, 0.6, 1.0]
    exact, union = levels(t, 0.05, EXACT_POCOCK), levels(t, 0.05, POCOCK)
    np.testing.assert_allclose(union, nominal_alpha(np.array(t), np.array([0.0, 0.3, 0.6]), 0.05, POCOCK))
    assert exact[0] == pytest.approx(union[0])
    assert (exact[1:] > union[1:] * 1.2).all()


def test_a_look_without_new_information_decides_nothing() -> None:
    c = boundaries([0.2, 0.2, 1.0], 0.05, EXACT_POCOCK)
    assert np.isinf(c[1]) and np.isfinite(c[2])
    assert levels([0.2, 0.2, 1.0])[1] == 0.0


def test_rule_levels_follow_its_schedule_and_the_guard() -> None:
    rule = Rule(3, 3, 10, spending=EXACT_POCOCK, min_better=6)
    assert rule.schedule() == pytest.approx([0.3, 0.6, 0.9, 1.0])
    level, final = rule.look_levels([0.3])
    planned = levels(rule.schedule())
    assert (level, final) == pytest.approx((planned[0], planned[-1]))
    assert rule.guards(3, 3, last=False) and not rule.guards(6, 9, last=False) and not rule.guards(3, 3, True)
    legacy = Rule(3, 3, 10, spending=POCOCK, min_better=6)
    assert not legacy.guards(3, 3, last=False)  # old folders keep the rule they were planned with
    assert legacy.look_levels([0.3, 0.6])[0] == pytest.approx(float(nominal_alpha(0.6, 0.3, 0.05, POCOCK)))


def test_unknown_spending_is_named() -> None:
    with pytest.raises(ValueError, match="unknown alpha spending 'exact-bogus'"):
        spent(0.5, spending="exact-bogus")


def _rows(effect: float, seeds: int = 3, patients: int = 10) -> pd.DataFrame:
    """Per-patient Dice rows of two models, a better by `effect`, small seed and patient noise."""
    rng = np.random.default_rng(1)
    v = rng.normal(0, 0.02, patients)
    out = []
    for model, shift in (("a", effect), ("b", 0.0)):
        for s in range(seeds):
            w = rng.normal(0, 0.005)
            for p in range(patients):
                dice = 0.7 + shift + v[p] + w + rng.normal(0, 0.01)
                out.append(
                    {
                        "model": model,
                        "seed": s,
                        "fold": 0,
                        "case": f"P{p}#0",
                        "patient": f"P{p}",
                        "dice": dice,
                    }
                )
    return pd.DataFrame(out)


def test_a_look_tests_at_the_exact_level_and_the_guard_keeps_a_pair_open() -> None:
    uv = unit_values(_rows(0.1))
    rule = Rule(3, 3, 10, spending=EXACT_POCOCK)
    first = look(uv, rule, 1, [])
    level = levels(rule.schedule())[0]
    assert first.nominal_alpha == pytest.approx(level) and first.boundary == pytest.approx(
        stats.norm.isf(level / 2)
    )
    assert [(p.verdict, p.reason) for p in first.pairs] == [("a better", DECIDED)] and first.next_models == []
    guarded = look(uv, Rule(3, 3, 10, spending=EXACT_POCOCK, min_better=6), 1, [])
    assert [(p.verdict, p.reason) for p in guarded.pairs] == [(UNDECIDED, OPEN)]
    assert guarded.next_models == ["a", "b"]
    legacy = look(uv, Rule(3, 3, 10, spending=POCOCK, min_better=6), 1, [])  # a folder of the old rule
    assert legacy.nominal_alpha == pytest.approx(float(spent(0.3, 0.05, POCOCK))) and legacy.boundary is None
    assert legacy.pairs[0].verdict == "a better"


def test_the_reports_rounds_section_names_the_boundary() -> None:
    uv = unit_values(_rows(0.1))
    for rule, z in (
        (Rule(3, 3, 10), f"| {stats.norm.isf(levels([0.3])[0] / 2):.3f} |"),
        (Rule(3, 3, 10, spending=POCOCK), "| - |"),
    ):
        record = {"rule": rule.describe(), "rounds": [look(uv, rule, 1, []).to_dict()], "finished": True}
        text = "\n".join(rounds_markdown(record))
        assert z in text.splitlines()[-1] and ("exact group-sequential" in text) == rule.spending.startswith(
            "exact-"
        )


def test_conditional_power_under_the_design_alternative() -> None:
    """Before any seed (t -> 0) the design alternative is, by its definition, detected with 80 %
    power; under the current trend a zero estimate keeps only the final test's tail. Legacy rules
    keep the trend."""
    args = (np.array([0.0]), np.array([0.01]), np.array([1e-9]), np.array([30.0]), np.array([0.05]), 0.01)
    assert conditional_power(*args, under=DESIGN)[0][0] == pytest.approx(0.8, abs=2e-3)
    hopeless = stats.norm.cdf(-stats.t.isf(0.025, 30))  # the final test's own chance at a zero trend
    assert conditional_power(*args, under=TREND)[0][0] == pytest.approx(hopeless, abs=1e-3)
    assert Rule(3, 3, 10, spending=POCOCK, futility_under=DESIGN).futility_assumes == TREND
    assert Rule(3, 3, 10, spending=EXACT_POCOCK, futility_under=DESIGN).futility_assumes == DESIGN


def test_a_rule_stored_before_the_exact_boundaries_reads_back_as_it_was_planned() -> None:
    """config.json of a folder planned before 2026-12-07 (no min_better, no futility_under): the
    union bound, the trend, no guard; and its key differs from a new run's (a new spending name)."""
    stored = {"first": 3, "step": 3, "max_seeds": 10, "alpha": 0.05, "futility": 0.1,
              "spending": POCOCK, "primary": "dice"}  # fmt: skip
    old = Rule(**stored)
    assert old.look_levels([0.3])[0] == pytest.approx(float(spent(0.3, 0.05, POCOCK)))
    assert old.futility_assumes == TREND and not old.guards(3, 3, last=False)
    assert Rule(3, 3, 10).describe()["spending"] == EXACT_POCOCK != stored["spending"]

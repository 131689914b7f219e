"""Seeds whose training misbehaved, and the verdicts that depend on them.

Every finished trial carries its training-health signals (covbench.training.health; record.json's `health`,
derived here from epochs.csv for folders written before it existed), and the training-loss
divergence of covbench.reports.curves. A flagged seed stays in every table and verdict: nothing
here drops it. What the report adds is a second reading of the primary metric's verdicts with the
flagged seeds left out; a pair whose verdict changes is marked, so a reader knows that the claim
rests on (or is hidden by) a seed that trained badly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covbench.folder.record import TrialRecord
from covbench.reports.curves import Curves, Divergence
from covbench.reports.verdicts import UnitValues, verdicts
from covbench.training.health import Health, assess

MARK = "‡"  # the verdict table's mark of a pair whose verdict depends on flagged seeds


@dataclass(frozen=True)
class SeedFlag:
    """One (model, seed, fold) trial whose training-health signals fired, and why."""

    model: str
    seed: int
    fold: int
    reasons: list[str]

    def line(self) -> str:
        where = f"{self.model}, seed {self.seed}" + (f", fold {self.fold}" if self.fold else "")
        return f"{where}: " + "; ".join(self.reasons)


@dataclass(frozen=True)
class Dependence:
    """A primary-metric pair re-derived without the flagged seeds."""

    metric: str
    a: str
    b: str
    verdict: str  # with every seed (the report's verdict)
    without: str  # with the flagged seeds left out ("no seeds left" when a model has none)
    left_out: dict[str, list[int]] = field(default_factory=dict)  # model -> its flagged seeds (all pairs')

    @property
    def changed(self) -> bool:
        return self.verdict != self.without

    def line(self) -> str:
        seeds = "; ".join(f"{m} seed(s) {', '.join(map(str, s))}" for m, s in sorted(self.left_out.items()))
        return (
            f"{MARK} {self.a} vs {self.b} on {self.metric}: the verdict depends on seeds flagged for their "
            f'training: "{self.verdict}" with every seed, "{self.without}" without {seeds}. Both '
            "readings are shown; the seeds stay in the analysis."
        )


def trial_health(trial_dir: Path, record: TrialRecord, curves: Curves) -> Health | None:
    """The recorded health of a trial, or the one its epoch log gives (older folders); None
    when it has neither."""
    if record.health:
        return Health.from_dict(record.health)
    f = curves.frame
    log = f[(f["model"] == record.model) & (f["seed"] == record.seed) & (f["fold"] == record.fold)]
    if log.empty:
        return None
    rows = log.rename(columns={"selected_epoch": "best_epoch"}).to_dict("records")
    return assess(rows, record.epochs, record.best_epoch)


def seed_flags(
    trials: list[tuple[Path, TrialRecord]], curves: Curves, diverged: list[Divergence]
) -> list[SeedFlag]:
    """Every trial with a health flag or a diverged training loss, in (model, seed, fold) order."""
    reasons: dict[tuple[str, int, int], list[str]] = {}
    for trial_dir, record in trials:
        health = trial_health(trial_dir, record, curves)
        if health is not None and health.flags:
            reasons.setdefault((record.model, int(record.seed), int(record.fold)), []).extend(health.flags)
    for d in diverged:
        found = reasons.setdefault((d.model, d.seed, d.fold), [])
        if d.reason not in found:
            found.append(d.reason)
    return [SeedFlag(m, s, f, r) for (m, s, f), r in sorted(reasons.items())]


def without_seeds(uv: UnitValues, flags: list[SeedFlag], metric: str) -> UnitValues:
    """`uv` of one metric with the flagged (model, seed)s left out (every fold of such a seed:
    a seed's value per unit is its mean over the folds that tested the unit)."""
    drop = {(f.model, f.seed) for f in flags}
    frame = uv.frame[["model", "seed", "unit", metric]]
    keep = [(str(m), int(s)) not in drop for m, s in zip(frame["model"], frame["seed"], strict=True)]
    return UnitValues(uv.unit, uv.grouped, frame[keep].reset_index(drop=True), uv.imputed, uv.left_out)


def dependence(
    uv: UnitValues, primary: str, verdict_dicts: dict[str, dict], flags: list[SeedFlag]
) -> list[Dependence]:
    """The primary metric's pairs, each with its verdict without the flagged seeds (none when no
    seed is flagged). Holm runs over the pairs that remain, as the report's own verdicts do."""
    stated = verdict_dicts.get(primary)
    if not flags or stated is None:
        return []
    rest = without_seeds(uv, flags, primary)
    again = verdicts(rest, None, primary, rank_samples=1).get(primary)  # the ranking is not read
    left_out: dict[str, list[int]] = {}
    for f in flags:
        seeds = left_out.setdefault(f.model, [])
        if f.seed not in seeds:
            seeds.append(f.seed)
    out = []
    for p in stated["pairs"]:
        a, b = p["a"], p["b"]
        other = again.pair(a, b) if again is not None else None
        without = other.verdict if other is not None else "no seeds left to test"
        out.append(
            Dependence(primary, a, b, p["verdict"], without, {m: sorted(s) for m, s in left_out.items()})
        )
    return out


def mark_verdicts(verdict_dicts: dict[str, dict], found: list[Dependence]) -> None:
    """Mark each pair whose verdict depends on flagged seeds (`health_dependent`, read by the
    verdict table) and keep its other reading beside it (`verdict_without_flagged`)."""
    by_pair = {(d.metric, d.a, d.b): d for d in found}
    for metric, v in verdict_dicts.items():
        for p in v.get("pairs", []):
            d = by_pair.get((metric, p["a"], p["b"]))
            p["health_dependent"] = bool(d is not None and d.changed)
            if d is not None:
                p["verdict_without_flagged"] = d.without


def to_json(flags: list[SeedFlag], found: list[Dependence]) -> dict[str, Any]:
    """summary.json's `health`."""
    return {
        "flagged_seeds": [asdict(f) for f in flags],
        "dependent_pairs": [asdict(d) | {"changed": d.changed} for d in found],
    }


def markdown(flags: list[SeedFlag], found: list[Dependence]) -> list[str]:
    """The seed view's lines about training health (nothing when every seed trained well)."""
    if not flags:
        return ["Training health: no seed was flagged (docs/training.md, *Training health*).", ""]
    lines = ["Seeds flagged for their training (docs/training.md, *Training health*); they stay in every "
             "table and verdict:", ""]  # fmt: skip
    lines += [f"- {f.line()}" for f in flags]
    changed = [d for d in found if d.changed]
    lines += [""]
    if changed:
        lines += [f"- {d.line()}" for d in changed] + [""]
    elif found:
        lines += ["No verdict on the primary metric changes when these seeds are left out.", ""]
    return lines

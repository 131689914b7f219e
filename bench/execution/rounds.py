"""Rounds of seeds (`covbench run --seeds N --max-seeds M`): which trials each round runs, and the
look after it (covbench.reports.sequential decides; this module only feeds it the finished trials).

The look after round k reads only the trials of rounds 1..k (seeds below that round's count), so it
is a function of the data alone: `--resume` replays the finished rounds' looks from the run folder
and continues mid-round with the same rounds and verdicts as an uninterrupted run. rounds.json is
rewritten after each look; the report opens with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covbench.config import RunConfig
from covbench.folder.io import write_json
from covbench.folder.layout import RunFolder
from covbench.folder.state import collect_cases, is_done

SCHEMA = 1


@dataclass
class Rounds:
    """The round in progress and the looks so far; `pending()` is what to submit next."""

    cfg: RunConfig
    run_dir: Path
    key: str
    folds: int
    looks: list[Any] = field(default_factory=list)  # sequential.Round
    k: int = 1
    models: list[str] = field(default_factory=list)  # the models the current round trains
    finished: bool = False

    def __post_init__(self) -> None:
        from covbench.reports.sequential import Rule

        self.rule = Rule(**self.cfg.rounds)
        self.models = list(self.cfg.models)

    def seeds_of(self, k: int) -> range:
        """The seeds round k adds (round 1: 0..first-1)."""
        start = 0 if k == 1 else self.rule.round_seeds(k - 1)
        return range(start, self.rule.round_seeds(k))

    def trials(self) -> list[tuple[str, int, int]]:
        """(model, seed, fold) of the current round, seeds first."""
        return [(m, s, f) for s in self.seeds_of(self.k) for f in range(self.folds) for m in self.models]

    def _round_done(self, failed: set[str]) -> bool:
        folder = RunFolder(self.run_dir)
        return all(
            is_done(folder.trial_of(m, s, f).path, self.key) or folder.trial_of(m, s, f).name in failed
            for m, s, f in self.trials()
        )

    def advance(self, failed: set[str] = frozenset()) -> list[tuple[str, int, int]]:
        """Look after every round whose trials are all finished (done or failed), from round k on;
        the trials of the first round still to run (empty when the run is over)."""
        while not self.finished and self._round_done(failed):
            self._look()
        return [] if self.finished else self.trials()

    def _look(self) -> None:
        from covbench.reports.sequential import OPEN, look
        from covbench.reports.verdicts import unit_values

        rows = collect_cases(self.run_dir, self.key)
        top = self.rule.round_seeds(self.k)
        if not rows.empty:
            rows = rows[rows["seed"].astype(int) < top]
        if rows.empty or rows["model"].nunique() < 2:
            self.finished = True  # nothing to compare (every trial failed): stop, the report says why
            self.write()
            return
        uv = unit_values(rows)
        result = look(uv, self.rule, self.k, self.looks, primary=self.rule.primary)
        self.looks.append(result)
        still = [m for m in self.cfg.models if m in result.next_models]
        if not still or top >= self.rule.max_seeds or not any(p.reason == OPEN for p in result.pairs):
            self.finished = True
        else:
            self.k += 1
            self.models = still
        self.write()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "rule": self.rule.describe(),
            "finished": self.finished,
            "rounds": [r.to_dict() for r in self.looks],
        }

    def write(self) -> None:
        write_json(RunFolder(self.run_dir).rounds, self.to_dict())


def largest_plan(cfg: RunConfig) -> list[tuple[str, int, int]]:
    """Every trial a `--max-seeds` run could train: all models to max seeds (the dry run's plan)."""
    from covbench.reports.sequential import Rule

    rule = Rule(**cfg.rounds) if cfg.rounds else None
    seeds = range(rule.max_seeds) if rule else cfg.seeds
    return [(m, s, f) for s in seeds for f in range(cfg.folds) for m in cfg.models]

"""How a run executes, apart from what it computes.

`RunConfig` (covbench.config) is what a run computes: it decides the numbers and its hash is the
run's key. `ExecutionOptions` is how and where it runs: the cluster, the resources per trial,
retries, checkpoints, the stall watch, the storage. None of it enters the key, so the same
configuration run on a laptop or on a cluster lands in the same table. One `validate()` refuses
what cannot run, before any work: for `covbench run`, `--resume` and `--dry-run` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from covbench import registry
from covbench.config import DEFAULT_CHECKPOINT_SECONDS, DEFAULT_STALL_SECONDS, CheckpointPolicy, RunConfig
from covbench.errors import CovbenchError
from covbench.execution.scheduler import check_address
from covbench.folder.storage import Storage


@dataclass(frozen=True)
class ExecutionOptions:
    address: str | None = None  # a Ray cluster to join ('auto', host:port, ray://...); None: local
    cpus_per_trial: float = 1.0  # torch threads follow
    gpus_per_trial: float | None = None  # None: as many trials per GPU as fit (covbench.execution.packing)
    max_retries: int = 2  # of a trial whose worker died
    debug: bool = False  # trials in this process, without Ray
    checkpoint_every: float = DEFAULT_CHECKPOINT_SECONDS  # seconds between checkpoints; 0: every epoch
    stall_timeout: float = DEFAULT_STALL_SECONDS  # seconds without progress that end a trial; 0: never
    storage: Storage | None = None  # where checkpoints and weights live; None: the run folder
    allow_version_change: bool = False  # continue a folder trained by other code versions

    def validate(self, cfg: RunConfig) -> CheckpointPolicy:
        """Refuse, naming the option, whatever cannot run; the checkpoint schedule it implies.
        Cheap and local: the storage's own reachability is checked by `Storage.validate`."""
        for name in cfg.models:
            registry.get_model(name)  # unknown names fail before any work
        check_folds(cfg)
        if not self.debug:
            check_address(self.address)
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):  # NaN fails both
            what = "positive" if math.isfinite(self.cpus_per_trial) else "a finite number"
            raise CovbenchError(f"--cpus-per-trial must be {what}, got {self.cpus_per_trial}")
        if not (math.isfinite(self.stall_timeout) and self.stall_timeout >= 0):
            raise CovbenchError(
                f"--stall-timeout must be 0 (never) or a positive number of seconds, got {self.stall_timeout}"
            )
        if self.max_retries < 0:
            raise CovbenchError(f"--max-retries must be 0 or more, got {self.max_retries}")
        try:
            return CheckpointPolicy(self.checkpoint_every)
        except ValueError as exc:
            raise CovbenchError(f"--checkpoint-every: {exc}") from None


def check_folds(cfg: RunConfig) -> None:
    """`--folds K` means K-fold cross-validation; any other split has its own fold count."""
    if cfg.folds < 1:
        raise CovbenchError(f"--folds must be positive, got {cfg.folds}")
    if cfg.folds > 1 and cfg.split != "kfold":
        raise CovbenchError(
            f"--folds {cfg.folds} needs --split kfold (split {cfg.split!r} has its own folds)"
        )
    if cfg.split == "kfold" and cfg.folds < 2:
        raise CovbenchError("--split kfold needs --folds 2 or more")


#: Trials (models x seeds x folds) a run may plan unless `--max-trials` raises it: a paper run is
#: 3 x 5 x 5 = 75; `--seeds 100000` is a typo, not a budget.
MAX_TRIALS = 1000


def check_trial_count(cfg: RunConfig, max_trials: int = MAX_TRIALS) -> None:
    """Refuse a plan of more than `max_trials` trials, with the least time it would take."""
    from covbench.datasets.splits import n_folds

    if max_trials < 1:
        raise CovbenchError(f"--max-trials must be positive, got {max_trials}")
    folds = n_folds(cfg.split, cfg.folds)
    # rounds of seeds may grow to max_seeds per model: the cap holds for the largest plan
    seeds = cfg.rounds["max_seeds"] if cfg.rounds else len(cfg.seeds)
    option = "--max-seeds" if cfg.rounds else "--seeds"
    trials = len(cfg.models) * seeds * folds
    if trials > max_trials:
        hours = trials / 3600  # at 1 s a trial, less than any trial takes (covbench run --dry-run times them)
        raise CovbenchError(
            f"--max-trials {max_trials}: this run plans {'up to ' if cfg.rounds else ''}{trials:,} trials "
            f"({len(cfg.models)} model(s) x {seeds:,} seed(s) x {folds} fold(s)), at least {hours:,.1f} h "
            f"even at 1 s a trial; lower {option}, or give --max-trials {trials} to run them"
        )

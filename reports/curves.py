"""Training curves: every finished trial's `epochs.csv` in one tidy table, and the seeds whose
training diverged.

A trial's curve is its training loss and validation Dice per epoch; the record says which epoch's
weights were evaluated (`best_epoch`: the best validation Dice, or the final epoch when the run
held no validation slices). Only the trials of the run's configuration count (the caller passes
`covbench.folder.io.done_trials`), as for the table.

Divergence (`divergence`), defined on the training loss of one trial:

* **not finite**: the loss is NaN or infinite at any epoch;
* **rising for good**: with at least `MIN_EPOCHS` epochs, the mean of the last quarter of the
  epochs (at least one) lies above the minimum loss by more than `RISE_SHARE` of the descent from
  the first epoch to that minimum, and by more than `RISE_FLOOR` of the minimum itself, with the
  minimum reached before the last quarter. The share keeps a converged curve's noise (small next
  to its descent) from counting; the floor keeps a flat curve that never learned (no descent, so
  any noise is "most of it") from counting.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covbench.errors import DamagedFile, RunFolderWarning
from covbench.folder.io import read_csv
from covbench.folder.layout import TrialFolder
from covbench.folder.record import TrialRecord

COLUMNS = ("model", "seed", "fold", "epoch", "train_loss", "val_dice", "selected_epoch")
MIN_EPOCHS = 4  # fewer epochs than this: only a non-finite loss counts as divergence
RISE_SHARE = 0.5  # the last quarter climbed back more than half of the way the loss came down
RISE_FLOOR = 0.1  # ... and stands more than 10 % above the minimum


@dataclass(frozen=True)
class Divergence:
    """One trial whose training loss diverged, and how."""

    model: str
    seed: int
    fold: int
    reason: str

    def warning(self) -> str:
        return (
            f"model {self.model}, seed {self.seed}" + (f", fold {self.fold}" if self.fold else "")
            + f": training diverged ({self.reason}); its test scores are in the table all the same."
        )  # fmt: skip


@dataclass
class Curves:
    """The tidy table (`COLUMNS`, one row per trial and epoch) and the trials left out of it."""

    frame: pd.DataFrame
    missing: list[str] = field(default_factory=list)  # trial names without a readable epochs.csv


def load_curves(trials: list[tuple[Path, TrialRecord]]) -> Curves:
    """The curves of `trials` ((folder, record) pairs, as `covbench.folder.io.done_trials` gives them).
    A trial without epochs.csv (written by an older covbench) or with a damaged one is left out
    and named in `missing`; a damaged log also warns (RunFolderWarning)."""
    frames, missing = [], []
    for trial_dir, record in trials:
        path = TrialFolder(trial_dir).epochs
        try:
            log = read_csv(path, ("epoch", "train_loss"))
        except FileNotFoundError:
            missing.append(Path(trial_dir).name)
            continue
        except DamagedFile as exc:
            warnings.warn(f"{exc}: its training curve is left out", RunFolderWarning, stacklevel=2)
            missing.append(Path(trial_dir).name)
            continue
        log = log.drop_duplicates("epoch", keep="last").sort_values("epoch")
        frames.append(
            pd.DataFrame(
                {
                    "model": str(record.model),
                    "seed": int(record.seed),
                    "fold": int(record.fold),
                    "epoch": log["epoch"].astype(int).to_numpy(),
                    "train_loss": pd.to_numeric(log["train_loss"], errors="coerce").to_numpy(float),
                    "val_dice": (
                        pd.to_numeric(log["val_dice"], errors="coerce").to_numpy(float)
                        if "val_dice" in log
                        else np.full(len(log), np.nan)
                    ),
                    "selected_epoch": int(record.best_epoch or log["epoch"].max()),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    return Curves(frame, missing)


def divergence(loss: np.ndarray, epochs: np.ndarray | None = None) -> str | None:
    """Why a training-loss curve (in epoch order) diverged, or None (rule in the module doc)."""
    loss = np.asarray(loss, dtype=float)
    epochs = np.arange(1, loss.size + 1) if epochs is None else np.asarray(epochs)
    bad = ~np.isfinite(loss)
    if bad.any():
        return f"training loss not finite from epoch {int(epochs[np.argmax(bad)])}"
    n = loss.size
    if n < MIN_EPOCHS:
        return None
    tail = max(1, math.ceil(n / 4))
    lowest = int(np.argmin(loss))
    if lowest >= n - tail:
        return None  # the loss is at its lowest in the last quarter: still coming down
    best, tail_mean = float(loss[lowest]), float(loss[-tail:].mean())
    rise = tail_mean - best
    descent = float(loss[0]) - best
    if rise > RISE_SHARE * descent and rise > RISE_FLOOR * abs(best):
        return (
            f"training loss rose from its minimum {best:.3g} at epoch {int(epochs[lowest])} to a mean of "
            f"{tail_mean:.3g} over the last {tail} epoch(s)"
        )
    return None


def divergences(curves: Curves) -> list[Divergence]:
    """Every trial of `curves` whose training loss diverged, in (model, seed, fold) order."""
    out = []
    frame = curves.frame
    for (model, seed, fold), group in frame.groupby(["model", "seed", "fold"], sort=True):
        reason = divergence(group["train_loss"].to_numpy(), group["epoch"].to_numpy())
        if reason is not None:
            out.append(Divergence(str(model), int(seed), int(fold), reason))
    return out

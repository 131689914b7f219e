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

import io
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
    and named in `missing`; a damaged log also warns (RunFolderWarning).

    The logs are read in one pass (`_read_logs`: every file's text, one pandas parse per header),
    not one `read_csv` per trial: 2500 trials at 50 models x 10 seeds x 5 folds."""
    records = [record for _, record in trials]
    paths = [TrialFolder(trial_dir).epochs for trial_dir, _ in trials]
    logs, missing = [], []
    for (trial_dir, _), log in zip(trials, _read_logs(paths), strict=True):
        if log is None:
            missing.append(Path(trial_dir).name)
        logs.append(log)
    kept = [(r, log) for r, log in zip(records, logs, strict=True) if log is not None]
    if not kept:
        return Curves(pd.DataFrame(columns=list(COLUMNS)), missing)
    index = np.concatenate([np.full(len(log), k) for k, (_, log) in enumerate(kept)])
    frame = pd.concat([log for _, log in kept], ignore_index=True)
    frame["_trial"] = index
    frame = frame.drop_duplicates(["_trial", "epoch"], keep="last")
    frame = frame.assign(epoch=frame["epoch"].astype(int)).sort_values(["_trial", "epoch"], kind="stable")
    trial = frame["_trial"].to_numpy()
    last_epoch = frame.groupby("_trial")["epoch"].max()
    selected = np.array([int(r.best_epoch or last_epoch.get(k, 0)) for k, (r, _) in enumerate(kept)])
    val = (
        pd.to_numeric(frame["val_dice"], errors="coerce").to_numpy(float)
        if "val_dice" in frame
        else np.full(len(frame), np.nan)
    )
    out = pd.DataFrame(
        {
            "model": np.array([str(r.model) for r, _ in kept], dtype=object)[trial],
            "seed": np.array([int(r.seed) for r, _ in kept], dtype=np.int64)[trial],
            "fold": np.array([int(r.fold) for r, _ in kept], dtype=np.int64)[trial],
            "epoch": frame["epoch"].to_numpy(np.int64),
            "train_loss": pd.to_numeric(frame["train_loss"], errors="coerce").to_numpy(float),
            "val_dice": val,
            "selected_epoch": selected[trial],
        }
    )
    return Curves(out, missing)


def _read_logs(paths: list[Path]) -> list[pd.DataFrame | None]:
    """Each epochs.csv as a frame (None: missing or damaged, warned), parsed together: the files
    that share a header are joined into one text and read by one `pandas.read_csv`, split back
    by their row counts. A file that looks odd (empty, no `epoch`/`train_loss`, a row count that
    does not add up) goes through `covbench.folder.io.read_csv` alone, which names the damage."""
    out: list[pd.DataFrame | None] = [None] * len(paths)
    groups: dict[str, list[tuple[int, str, int]]] = {}
    alone: list[int] = []
    for k, path in enumerate(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            alone.append(k)
            continue
        header, _, body = text.partition("\n")
        names = header.strip().split(",")
        if "epoch" not in names or "train_loss" not in names or '"' in text:
            alone.append(k)
            continue
        lines = [line for line in body.splitlines() if line.strip()]
        if any(line.count(",") != len(names) - 1 for line in lines):
            alone.append(k)
            continue
        groups.setdefault(header.strip(), []).append((k, "\n".join(lines), len(lines)))
    for header, members in groups.items():
        text = header + "\n" + "\n".join(body for _, body, n in members if n) + "\n"
        try:
            frame = pd.read_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            alone += [k for k, _, _ in members]
            continue
        counts = [n for _, _, n in members]
        if len(frame) != sum(counts):
            alone += [k for k, _, _ in members]
            continue
        bounds = np.cumsum([0, *counts])
        for (k, _, n), start in zip(members, bounds[:-1], strict=True):
            if n == 0:  # a header alone: as read_csv reads it, an empty log
                alone.append(k)
                continue
            out[k] = frame.iloc[start : start + n].reset_index(drop=True)
    for k in sorted(alone):
        try:
            out[k] = read_csv(paths[k], ("epoch", "train_loss"))
        except FileNotFoundError:
            out[k] = None
        except DamagedFile as exc:
            warnings.warn(f"{exc}: its training curve is left out", RunFolderWarning, stacklevel=3)
            out[k] = None
    return out


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

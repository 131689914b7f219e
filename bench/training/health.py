"""Training-health signals of one trial, read off its epoch log.

A seed that half-diverged still finishes, scores, and enters the verdicts; what gives it away is
its epoch log. The trial records these signals in record.json (`health`) the moment it finishes,
and the report (covbench.reports.health) derives the same from epochs.csv for folders written
before the field existed. Pure numpy on plain rows: the engine and the report share one rule.

The signals and their thresholds (docs/training.md, "Training health", has the measurements):

* **early selection**: validation chose the weights of an epoch at most `EARLY_SHARE` of the way
  through training. Under the CPU presets' half-cosine schedule the learning rate is still 75 % of
  its peak at a third of the epochs, so such weights are taken from the noisy phase; in the main
  job every healthy trial was selected at epoch 12-23 of 24, the diverging one at epoch 7.
* **validation collapse**: the mean validation Dice of the last quarter of the epochs lies more
  than `COLLAPSE_DROP` below its peak. Epoch-to-epoch noise of a healthy curve is about 0.03 Dice
  (3 validation patients); 0.1 is three times that.
* **loss spike**: an epoch's training loss exceeds the lowest loss before it by more than
  `SPIKE_RISE` (a share of that minimum), after the first `SPIKE_AFTER` epochs (the steep start,
  where any epoch may be above the previous one's minimum by little). Healthy curves rise by at
  most 20-30 % of their running minimum between epochs.
* **non-finite loss**: the first epoch whose loss is NaN or infinite (covbench.training.loop ends such a
  trial as failed; an epoch log of another tool, or of an older covbench, may still hold one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

EARLY_SHARE = 1 / 3  # selected epoch <= this share of the planned epochs: early selection
COLLAPSE_DROP = 0.10  # peak validation Dice minus the last quarter's mean, in Dice
SPIKE_RISE = 0.5  # an epoch's loss above 1.5 x the lowest loss before it
SPIKE_AFTER = 3  # epochs 1-3 never count as spikes
MIN_EPOCHS = 4  # fewer epochs: only a non-finite loss is judged


@dataclass(frozen=True)
class Health:
    """The signals of one trial (record.json's `health`); `flags` says in words which fired."""

    epochs: int  # planned epochs
    selected_epoch: int | None  # whose weights were evaluated
    validated: bool  # whether validation chose them (False: the final weights)
    val_peak: float | None = None
    val_tail: float | None = None  # mean validation Dice over the last quarter of the epochs
    spike_epochs: list[int] = field(default_factory=list)
    nonfinite_epoch: int | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Health:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def assess(
    rows: Sequence[Mapping[str, Any]], epochs: int | None = None, selected_epoch: int | None = None
) -> Health:
    """The health of a trial from its epoch log (`epoch`, `train_loss`, `val_dice` per row, as
    covbench.training.loop.train_model writes them). `epochs`: planned epochs (default: the last logged);
    `selected_epoch`: whose weights were evaluated (default: the log's last `best_epoch`)."""
    ordered = sorted(rows, key=lambda r: int(r["epoch"]))
    epoch = np.array([int(r["epoch"]) for r in ordered])
    loss = np.array([float(r.get("train_loss", math.nan)) for r in ordered])
    val = np.array([float(r.get("val_dice", math.nan)) for r in ordered])
    planned = int(epochs) if epochs else int(epoch.max(initial=0))
    if selected_epoch is None and ordered and ordered[-1].get("best_epoch") is not None:
        selected_epoch = int(ordered[-1]["best_epoch"])
    validated = bool(np.isfinite(val).any())
    flags: list[str] = []
    bad = ~np.isfinite(loss)
    nonfinite = int(epoch[np.argmax(bad)]) if bad.any() else None
    if nonfinite is not None:
        flags.append(f"training loss not finite from epoch {nonfinite}")
    n = epoch.size
    peak = tail = None
    spikes: list[int] = []
    if n >= MIN_EPOCHS:
        quarter = max(1, math.ceil(n / 4))
        if validated:
            peak = float(_finite(val).max())
            tail_values = _finite(val[-quarter:])
            tail = float(tail_values.mean()) if tail_values.size else None
            if tail is not None and peak - tail > COLLAPSE_DROP:
                at = int(epoch[np.nanargmax(val)])
                flags.append(
                    f"validation Dice collapsed from {peak:.3f} (epoch {at}) to {tail:.3f} over the last "
                    f"{quarter} epoch(s)"
                )
        if validated and selected_epoch is not None and selected_epoch <= EARLY_SHARE * planned:
            flags.append(
                f"evaluated the weights of epoch {selected_epoch} of {planned} (best validation Dice)"
            )
        running = np.minimum.accumulate(np.where(np.isfinite(loss), loss, np.inf))
        for i in range(SPIKE_AFTER, n):
            if np.isfinite(loss[i]) and loss[i] > (1 + SPIKE_RISE) * running[i - 1]:
                spikes.append(int(epoch[i]))
        if spikes:
            flags.append(
                f"training loss spiked above {1 + SPIKE_RISE:g} x its running minimum in epoch(s) "
                + ", ".join(map(str, spikes))
            )
    return Health(planned, selected_epoch, validated, peak, tail, spikes, nonfinite, flags)

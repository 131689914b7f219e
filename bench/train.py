"""The training loop of one trial: soft Dice loss, Adam, best checkpoint by validation Dice.

Kept free of Ray and of the run folder layout so that it can be timed against a hand-written
loop (benchmarks) and debugged in-process.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch; ask for deterministic kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (the paper's Dice loss). Batch-level sums keep the loss
    defined on lesion-free slices, where a per-slice Dice would divide by ~0."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def supervised_loss(output: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Dice loss; a deep-supervised model's heads are averaged (Zhou et al. 2018)."""
    if isinstance(output, list | tuple):
        return torch.stack([soft_dice_loss(o, target) for o in output]).mean()
    return soft_dice_loss(output, target)


def slice_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice hard Dice with covbench's policy: both empty counts as 1 (see docs/metrics.md)."""
    dims = tuple(range(1, pred.dim()))
    inter = (pred * target).sum(dims)
    total = pred.sum(dims) + target.sum(dims)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Probabilities (N, 1, H, W) on the CPU for float images (N, 1, H, W)."""
    model.eval()
    out = [
        torch.sigmoid(model(images[i : i + batch_size].to(device, non_blocking=True)).float()).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty_like(images)


def make_schedule(name: str, lr: float, epochs: int) -> Callable[[int], float]:
    """Learning rate per epoch. `constant` is the paper's protocol; `cosine` (half-cosine decay to
    zero) lets the short CPU presets settle instead of ending on a noisy step. A pure function of
    the epoch, so a resumed trial continues on the same curve."""
    if name == "constant":
        return lambda epoch: lr
    if name == "cosine":
        return lambda epoch: 0.5 * lr * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"unknown lr schedule {name!r}; use 'constant' or 'cosine'")


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_val_dice: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_model(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    threshold: float = 0.5,
    lr_schedule: str = "constant",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    start_epoch: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-1.0, -1, None),
) -> TrainResult:
    """Train for `epochs` epochs (from `start_epoch` when resuming) and keep the weights of the
    epoch with the best mean validation Dice. `on_epoch` receives each epoch's log row together
    with the live model/optimizer, so a caller can checkpoint."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    schedule = make_schedule(lr_schedule, lr, epochs)
    best_dice, best_epoch, best_state = best
    history: list[dict[str, float]] = []
    n = len(train_x)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        # One generator per epoch, derived from the seed: resuming at epoch k replays the same order.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for group in optimizer.param_groups:
            group["lr"] = schedule(epoch)
        model.train()
        total, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = train_x[idx].to(device, non_blocking=True)
            y = train_y[idx].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = supervised_loss(model(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss) * len(idx)
            seen += len(idx)
        prob = predict(model, val_x, batch_size * 2, device)
        val_dice = float(slice_dice((prob >= threshold).float(), val_y).mean()) if len(val_x) else 0.0
        row = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "val_dice": val_dice,
            "seconds": time.perf_counter() - t0,
        }
        if val_dice > best_dice:
            best_dice, best_epoch = val_dice, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        row.update(best_val_dice=best_dice, best_epoch=best_epoch)
        history.append(row)
        if on_epoch is not None:
            on_epoch({"row": row, "model": model, "optimizer": optimizer, "best_state": best_state})
    if best_state is None:  # zero epochs asked for: the untrained weights are the best we have
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(best_state, best_dice, best_epoch, epochs, time.perf_counter() - t0, history)

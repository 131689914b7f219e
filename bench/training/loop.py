"""The training loop of one trial: Dice loss, Adam, best checkpoint by validation Dice.

Kept free of Ray and of the run folder layout so that it can be timed against a hand-written
loop (benchmarks/bench_training.py) and debugged in-process.

On a CUDA device the loop switches on what a GPU needs to run near its limit (see
docs/performance.md): bf16 autocast, channels-last tensors, data moved to the GPU once when it
fits, validation Dice computed on the device without a host sync per batch, and optionally
`torch.compile`. On a CPU every one of these stays off unless asked for (tests ask, so each path
runs in CI): channels-last float32 crashes torch 2.14's CPU backward of a strided 1x1 convolution
(Res-UNet's shortcut) and bf16 changes the arithmetic; docs/performance.md has the measurements.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covbench.errors import TrialFailure
from covbench.training.augment import apply_augment, augment_mode, draw_augment

AMP_MODES = ("auto", "bf16", "fp16", "off")
RESIDENT_FRACTION = 0.5  # data goes to the GPU once when it takes at most this share of free memory


class TrainingDiverged(TrialFailure):
    """The training loss became NaN or infinite: every later epoch would be wasted, and the
    evaluation would fail on NaN probabilities much later. Ends the trial (recorded as failed,
    reason "diverged")."""

    reason = "diverged"


def check_finite_loss(loss: float, epoch: int, lr: float) -> None:
    """Raise TrainingDiverged naming the (1-based) epoch and its learning rate for a non-finite loss."""
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"training diverged: the loss is {loss} in epoch {epoch} at learning rate {lr:g}; "
            "try a smaller --lr"
        )


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch; ask for deterministic kernels where they exist, and let cuDNN
    autotune its convolution algorithms otherwise (faster, but the choice may vary run to run)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (the paper's Dice loss). Batch-level sums keep the loss
    defined on lesion-free slices, where a per-slice Dice would divide by ~0. Computed in float32
    even under bf16 autocast: a bf16 sum over a batch of 224x224 maps would lose the small terms."""
    prob = torch.sigmoid(logits.float())
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus pixel-wise binary cross-entropy (the nnU-Net default pairing). The BCE term
    gives every pixel a gradient, including on lesion-free slices where the batch Dice is flat."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return soft_dice_loss(logits, target) + bce


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dice": soft_dice_loss,  # the paper's
    "dice_bce": dice_bce_loss,
}


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    return LOSSES[name]


def supervised_loss(
    output: torch.Tensor | list[torch.Tensor], target: torch.Tensor, loss: str = "dice"
) -> torch.Tensor:
    """The loss `loss` (see LOSSES); a deep-supervised model's heads are averaged (Zhou et al. 2018)."""
    fn = loss_function(loss)
    if isinstance(output, list | tuple):
        return torch.stack([fn(o, target) for o in output]).mean()
    return fn(output, target)


def slice_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice hard Dice with covbench's policy: both empty counts as 1 (see docs/metrics.md)."""
    dims = tuple(range(1, pred.dim()))
    inter = (pred * target).sum(dims)
    total = pred.sum(dims) + target.sum(dims)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


# Compute capability from which a GPU does bf16 natively (Ampere, sm_80); and from which fp16 runs
# on tensor cores (Volta, sm_70). Below 8.0, torch.cuda.is_bf16_supported() still says yes (it
# emulates bf16), and that emulation is slower than float32.
BF16_CAPABILITY = (8, 0)
FP16_CAPABILITY = (7, 0)


def amp_choice(amp: str | bool | None, device: torch.device) -> str:
    """The precision a trial trains in: "bf16", "fp16" or "off" (float32).

    "auto": on a CUDA GPU of compute capability 8.0 or more bf16 (native there); on 7.x (V100,
    T4) fp16 with a GradScaler (bf16 is only emulated there); on older GPUs and on a CPU float32.
    "bf16" (or True) and "fp16" force that dtype on any device (CPU autocast too, for tests);
    "off" (False, None) keeps float32."""
    if amp is True or amp == "bf16":
        return "bf16"
    if amp in (False, None, "off"):
        return "off"
    if amp == "fp16":
        return "fp16"
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        capability = torch.cuda.get_device_capability(device)
        if capability >= BF16_CAPABILITY:
            return "bf16"
        return "fp16" if capability >= FP16_CAPABILITY else "off"
    raise ValueError(f"unknown amp mode {amp!r}; use one of {AMP_MODES}")


_AMP_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `amp_choice(amp, device)`; None for float32."""
    return _AMP_DTYPES[amp_choice(amp, device)]


def local_amp(amp: str | bool | None) -> dict[str, str]:
    """What `amp` resolves to on this machine's first device (cuda:0, else the CPU), for
    config.json: the choice depends on the GPU, so the configuration keeps what was asked for and
    this records what it meant here (each trial's record.json has its own device's choice)."""
    device = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    where = "cpu"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    return {"requested": str(amp), "resolved": amp_choice(amp, device), "device": where}


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 training (fp16 gradients underflow without one); None otherwise:
    bf16 has float32's exponent range and needs no scaling."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing when `dtype` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def fits_on_device(nbytes: int, device: torch.device, fraction: float = RESIDENT_FRACTION) -> bool:
    """Whether `nbytes` of data may live on `device` for the whole trial. CPU tensors are already
    there; on a GPU the data may take `fraction` of the memory free now (the pre-processed
    COVID-19-CT-Seg at 224 px is ~0.85 GB as float32 images + masks, small next to an 80 GB card,
    while the activations of a batch of 32 need several GB)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# The views of flip test-time augmentation: as is, left-right, up-down, both (each its own inverse).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    amp: str | bool | None = "auto",
    channels_last: bool | None = None,
    tta: bool = False,
) -> torch.Tensor:
    """Probabilities (N, 1, H, W) in float32 on the CPU for float images (N, 1, H, W); bf16 and
    channels-last on a CUDA device unless told otherwise. `tta` averages the probabilities of the
    four flipped views (`TTA_FLIPS`), each flipped back: the flips the CPU presets train with, so
    the model has seen every view, at 4x the inference cost."""
    model.eval()
    dtype = resolve_amp(amp, device)
    cl = device.type == "cuda" if channels_last is None else channels_last
    views = TTA_FLIPS if tta else ((),)
    out = []
    for i in range(0, len(images), batch_size):
        x = _to_device(images[i : i + batch_size], device, cl)
        total = None
        for dims in views:
            with autocast(device, dtype):
                logits = model(x.flip(dims) if dims else x)
            prob = torch.sigmoid(logits.float())
            prob = prob.flip(dims) if dims else prob
            total = prob if total is None else total + prob
        out.append((total / len(views)).cpu())
    return torch.cat(out) if out else torch.empty_like(images)


@torch.no_grad()
def validation_dice(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    threshold: float = 0.5,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> float:
    """Mean per-slice Dice of thresholded predictions. The sum stays on the device, so a GPU
    syncs once per validation instead of once per batch, and no probability map is copied back."""
    if len(images) == 0:
        return 0.0
    model.eval()
    total = torch.zeros((), device=device)
    for i in range(0, len(images), batch_size):
        x = _to_device(images[i : i + batch_size], device, channels_last)
        y = masks[i : i + batch_size].to(device, non_blocking=True)
        with autocast(device, dtype):
            logits = model(x)
        pred = (torch.sigmoid(logits.float()) >= threshold).float()
        total += slice_dice(pred, y).sum()
    return float(total) / len(images)


def make_schedule(name: str, lr: float, epochs: int) -> Callable[[int], float]:
    """Learning rate per epoch. `constant` is the paper's protocol; `cosine` (half-cosine decay to
    zero) lets the short CPU presets settle instead of ending on a noisy step. A pure function of
    the epoch, so a resumed trial continues on the same curve."""
    if name == "constant":
        return lambda epoch: lr
    if name == "cosine":
        return lambda epoch: 0.5 * lr * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"unknown lr schedule {name!r}; use 'constant' or 'cosine'")


def _compiled(model: nn.Module, compile: bool | str) -> nn.Module:
    """`torch.compile(model)` when asked (a string names the backend, e.g. "eager" in tests);
    the compiled wrapper shares the model's parameters, so optimizer and state_dict are unchanged."""
    if not compile:
        return model
    backend = compile if isinstance(compile, str) else "inductor"
    return torch.compile(model, backend=backend)  # type: ignore[return-value]


@dataclass(frozen=True)
class TrainOptions:
    """How one trial trains: the protocol (from RunConfig) plus device options.

    Device options (None/"auto" = on for CUDA, off for CPU): `amp` ("auto", "bf16", "fp16", "off";
    see `amp_choice`),
    `channels_last`, `resident` (move the train/val tensors to the device once, when
    `fits_on_device`; otherwise each batch is copied from the host), `compile` (off by default: it
    costs minutes of compilation per model; a string names the backend, e.g. "eager" in tests),
    `eval_batch_size` (one size for validation and test prediction: 2x the batch on a CPU, 4x on a
    GPU). `augment` is a mode of covbench.training.augment (`True` = "flip"); `loss` a name in LOSSES.
    """

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    threshold: float = 0.5
    lr_schedule: str = "constant"
    augment: bool | str = False
    loss: str = "dice"
    amp: str | bool | None = "auto"
    channels_last: bool | None = None
    compile: bool | str = False
    resident: bool | None = None
    eval_batch_size: int | None = None
    selection: str = "best_val"  # covbench.config.SELECTIONS: best validation Dice, or the final epoch

    @classmethod
    def from_config(cls, cfg: Any, seed: int) -> TrainOptions:
        """The options a trial of `cfg` (a covbench.config.RunConfig) trains `seed` with."""
        return cls(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=seed,
            threshold=cfg.threshold,
            lr_schedule=cfg.lr_schedule,
            augment=cfg.augment,
            loss=cfg.loss,
            amp=cfg.amp,
            compile=cfg.compile,
            selection=getattr(cfg, "selection", "best_val"),
        )

    def eval_batch(self, device: torch.device) -> int:
        return self.eval_batch_size or self.batch_size * (4 if device.type == "cuda" else 2)

    def uses_channels_last(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else self.channels_last


@dataclass
class Best:
    """The selected weights so far. `state` lives on the training device (a copy per improvement,
    no host transfer); the checkpointer moves it to the host only when it writes."""

    val_dice: float = -1.0
    epoch: int = -1
    state: dict[str, torch.Tensor] | None = None


@dataclass
class ResumeFrom:
    """Where a resumed trial continues; the model's own weights are loaded before (by
    covbench.training.checkpoint.Checkpointer.load)."""

    epoch: int
    optimizer_state: dict[str, Any]
    best: Best
    scaler_state: dict[str, Any] | None = None  # fp16 training: the GradScaler's scale and counter


@dataclass
class EpochEnd:
    """What `on_epoch` receives after each epoch: the log row and the live training state."""

    row: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    best: Best
    scaler: torch.amp.GradScaler | None = None  # fp16 training only


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_val_dice: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def device_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of a state dict on the device it lives on (no host round trip)."""
    return {k: v.detach().clone() for k, v in state.items()}


def make_optimizer(model: nn.Module, lr: float, fused: bool) -> torch.optim.Optimizer:
    """Adam, the paper's optimizer. `fused` (on for CUDA) takes one kernel per step instead of
    several per parameter tensor; the CPU keeps the default implementation its figures were
    measured with (tests run the fused one on the CPU too, which torch supports)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)


def _restore(
    resume: ResumeFrom | None, optimizer: torch.optim.Optimizer, scaler: Any, device: torch.device
) -> tuple[int, Best]:
    """(first epoch to train, best so far): 0 and nothing from scratch; a checkpoint's otherwise,
    its optimizer (and fp16 scaler) state loaded and its best weights on the training device."""
    if resume is None:
        return 0, Best()
    optimizer.load_state_dict(resume.optimizer_state)
    if scaler is not None and resume.scaler_state:
        scaler.load_state_dict(resume.scaler_state)
    best = resume.best
    if best.state is not None:
        best.state = {k: v.to(device) for k, v in best.state.items()}
    return resume.epoch, best


def _resident(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    opt: TrainOptions,
    device: torch.device,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The slices on the GPU for the whole trial when they fit (or `--resident` says so): one
    copy instead of one per batch and epoch; otherwise each batch is gathered on the host and
    copied (synchronously: a gathered batch is not pinned)."""
    nbytes = sum(t.numel() * t.element_size() for t in (train_x, train_y, val_x, val_y))
    on_gpu = fits_on_device(nbytes, device) if opt.resident is None else opt.resident
    if not on_gpu:
        return train_x, train_y, val_x, val_y
    train_x, val_x = (_to_device(t, device, channels_last) for t in (train_x, val_x))
    return train_x, train_y.to(device), val_x, val_y.to(device)


@dataclass
class _Steps:
    """The optimizer steps of one epoch: forward under autocast, the loss, backward (scaled for
    fp16), step; the epoch's mean loss summed on the device, so no step waits for the host."""

    forward: Callable[[torch.Tensor], Any]
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    loss: str
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    on_step: Callable[[], None] | None

    def epoch(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        order: torch.Tensor,
        host_order: torch.Tensor,
        draw: Any,
        batch_size: int,
    ) -> float:
        n = len(train_x)
        total = torch.zeros((), device=self.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = _to_device(train_x[idx], self.device, self.channels_last)
            y = train_y[idx].to(self.device, non_blocking=True)
            if draw is not None:
                x, y = apply_augment(x, y, draw.take(host_order[i : i + batch_size], x.device))
            with autocast(self.device, self.dtype):
                output = self.forward(x)
            batch_loss = supervised_loss(output, y, self.loss)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                batch_loss.backward()
                self.optimizer.step()
            else:  # fp16: scale the loss so small gradients survive; a step with inf/NaN is skipped
                self.scaler.scale(batch_loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            total += batch_loss.detach() * len(idx)
            if self.on_step is not None:
                self.on_step()
        return float(total) / max(n, 1)


def _kept(best: Best, final: bool, val_dice: float, epoch: int, model: nn.Module) -> Best:
    """The weights kept after `epoch`: with final selection the model's own (no copy: its weights
    at the end are the evaluated ones), else a copy when its validation Dice beats the best."""
    if final:
        return Best(val_dice, epoch, None)
    if val_dice > best.val_dice:
        return Best(val_dice, epoch, device_copy(model.state_dict()))
    return best


def train_model(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    options: TrainOptions,
    device: torch.device,
    *,
    on_epoch: Callable[[EpochEnd], None] | None = None,
    on_step: Callable[[], None] | None = None,
    resume: ResumeFrom | None = None,
) -> TrainResult:
    """Train for `options.epochs` epochs (from `resume.epoch` when resuming) and keep the weights of
    the epoch with the best mean validation Dice; with `options.selection` "final", or with no
    validation slices, the final weights (as nnU-Net evaluates its final checkpoint; the validation
    Dice, NaN without validation slices, is still logged and is the final epoch's). `on_epoch` receives
    each epoch's log row with the live model/optimizer/best, so a caller can checkpoint; a column
    it adds to the row (e.g. `ckpt_s`) is kept in `history`. Each row splits the epoch into
    `train_s` and `val_s`. `on_step` is called after every optimizer step (a progress beat; it must
    be cheap). A NaN or infinite epoch loss raises TrainingDiverged at the end of that epoch.
    """
    opt = options
    train_x, train_y = train
    val_x, val_y = val
    mode = augment_mode(opt.augment)
    loss_function(opt.loss)  # an unknown name fails before the first epoch, not after it
    cuda = device.type == "cuda"
    dtype = resolve_amp(opt.amp, device)
    cl = opt.uses_channels_last(device)
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    forward = _compiled(model, opt.compile)
    optimizer = make_optimizer(model, opt.lr, fused=cuda)
    scaler = grad_scaler(dtype, device)
    start_epoch, best = _restore(resume, optimizer, scaler, device)
    schedule = make_schedule(opt.lr_schedule, opt.lr, opt.epochs)
    eval_bs = opt.eval_batch(device)

    if cuda:
        train_x, train_y, val_x, val_y = _resident(train_x, train_y, val_x, val_y, opt, device, cl)

    validate = len(val_x) > 0  # without validation slices the final weights are the ones evaluated
    if opt.selection not in ("best_val", "final"):
        raise ValueError(f"unknown selection {opt.selection!r}; use 'best_val' or 'final'")
    final = opt.selection == "final" or not validate  # the weights of the last epoch are evaluated
    if not validate:
        best = Best(math.nan, start_epoch, None)
    history: list[dict[str, float]] = []
    n, batch_size = len(train_x), opt.batch_size
    steps = _Steps(forward, optimizer, scaler, opt.loss, device, dtype, cl, on_step)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, opt.epochs):
        t_epoch = time.perf_counter()
        # One generator per epoch, derived from the seed: resuming at epoch k replays the same order.
        gen = torch.Generator().manual_seed(opt.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        draw = draw_augment(mode, n, gen)  # drawn after the order
        host_order, order = order, order.to(train_x.device)  # the draw is indexed on the host: no sync
        for group in optimizer.param_groups:
            group["lr"] = schedule(epoch)
        model.train()
        train_loss = steps.epoch(train_x, train_y, order, host_order, draw, batch_size)
        check_finite_loss(train_loss, epoch + 1, schedule(epoch))
        t_val = time.perf_counter()
        val_dice = math.nan
        if validate:
            val_dice = validation_dice(
                forward, val_x, val_y, eval_bs, device, threshold=opt.threshold, dtype=dtype, channels_last=cl
            )
        now = time.perf_counter()
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_dice": val_dice,
            "seconds": now - t0,
            "train_s": t_val - t_epoch,
            "val_s": now - t_val,
        }
        best = _kept(best, final, val_dice, epoch + 1, model)
        row.update(best_val_dice=best.val_dice, best_epoch=best.epoch)
        history.append(row)
        if on_epoch is not None:
            on_epoch(EpochEnd(row, model, optimizer, best, scaler))
    best_state = best.state if best.state is not None else device_copy(model.state_dict())
    # no validation, or zero epochs asked for: the weights as they are now
    return TrainResult(best_state, best.val_dice, best.epoch, opt.epochs, time.perf_counter() - t0, history)

"""How many trials share one GPU, when `--gpus-per-trial` is not given.

One paper-preset trial leaves most of an H200 idle: U-Net trains at about 1/3 of the chip's bf16
peak and U-Net++ / Res-UNet at about 1/7, using 5.6-14.3 GiB of its 140 GiB (measured, see
docs/performance.md). Several trials on one GPU (Ray's fractional GPUs) fill it, as long as
their memory fits. The decision, recorded in environment.json under `packing`:

    trials per GPU = min(MAX_TRIALS_PER_GPU,                     # ceiling, still to be measured
                         usable GPU memory // largest trial's estimated memory,
                         ceil(trials / GPUs))                     # never fewer waves than needed

and one trial per GPU when the GPU memory cannot be known. `--gpus-per-trial` overrides all of it
(`--gpus-per-trial 1` = one trial per GPU, as before).

The memory estimate per trial comes from the contract check (covbench.checks), which measures the
activation memory of a training batch on the CPU, in float32:
    20 bytes/parameter (weights, gradients, two Adam moments, the best weights kept on the device)
    + 1.5 x the float32 activation bytes of a batch (allocator slack, cuDNN workspaces)
    + the resident training and validation slices (float32 images + masks)
    + 1 GiB (CUDA context).
Against the peaks measured on the H200 at the paper preset (bf16 autocast), it over-estimates
every reference model: U-Net 5.6 GiB measured / 13.5 estimated, U-Net++ 6.2 / 16.8, Res-UNet
14.3 / 16.2 - safe, at the price of packing fewer trials than would fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from covbench.execution.scheduler import choose_gpus_per_trial

# Not measured yet: `scripts/gpu_check.py --concurrent 1,2,4` says where the gain of packing stops.
MAX_TRIALS_PER_GPU = 4
# Peak GPU memory measured on one H200 at the paper preset (bf16 autocast; issue 13), which the
# estimate below must stay above (tests/test_packing.py, benchmarks/bench_packing.py)
H200_PEAK_GIB = {"unet": 5.6, "unetpp": 6.2, "resunet": 14.3}
USABLE_GPU_MEMORY = 0.9  # of the free memory when the run starts
CUDA_CONTEXT_BYTES = 2**30
BYTES_PER_PARAMETER = 20
ACTIVATION_SLACK = 1.5


@dataclass(frozen=True)
class Packing:
    gpus_per_trial: float
    trials_per_gpu: int  # 0 on a cluster without GPUs
    reason: str
    trial_memory_gib: float | None = None
    gpu_memory_gib: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_memory_bytes(
    parameters: int, activation_bytes_per_batch: int, resident_slices: int, image_size: int
) -> int:
    """Estimated peak GPU memory of one trial (see the module docstring for the terms)."""
    data = resident_slices * image_size * image_size * 4 * 2
    return int(
        BYTES_PER_PARAMETER * parameters
        + ACTIVATION_SLACK * activation_bytes_per_batch
        + data
        + CUDA_CONTEXT_BYTES
    )


def largest_trial_memory(checks: Iterable[Any], resident_slices: int, image_size: int) -> int | None:
    """`trial_memory_bytes` of the largest model, from its contract check (covbench.checks.ModelCheck)."""
    return max(
        (
            trial_memory_bytes(c.parameters, c.activation_bytes_per_batch, resident_slices, image_size)
            for c in checks
        ),
        default=None,
    )


def _gib(nbytes: float | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**30, 2)


def could_pack(requested: float | None, cluster_gpus: float, n_trials: int) -> bool:
    """Whether packing several trials per GPU could pay, so the memory figures are worth asking
    for: no `--gpus-per-trial` given, and more trials than GPUs."""
    return requested is None and 1 <= cluster_gpus < n_trials


def plan_packing(
    requested: float | None,
    cluster_gpus: float,
    *,
    n_trials: int,
    trial_memory: float | None,
    gpu_memory: float | None,
    max_per_gpu: int = MAX_TRIALS_PER_GPU,
) -> Packing:
    """GPUs per trial for this run, and why (`requested` is `--gpus-per-trial`, None if not given)."""
    if requested is not None:
        gpus = choose_gpus_per_trial(requested, cluster_gpus)
        per_gpu = int(1 / gpus) if 0 < gpus < 1 else (1 if gpus else 0)
        return Packing(gpus, per_gpu, f"--gpus-per-trial {requested:g} given", _gib(trial_memory))
    if cluster_gpus < 1:
        return Packing(0.0, 0, "no GPUs in the cluster: trials run on CPUs")
    if n_trials <= cluster_gpus:
        reason = f"{n_trials} trial(s) on {cluster_gpus:g} GPUs: one GPU each"
        return Packing(1.0, 1, reason, _gib(trial_memory))
    if gpu_memory is None or not trial_memory:
        return Packing(1.0, 1, "GPU memory unknown: one trial per GPU", _gib(trial_memory))
    by_memory = int(USABLE_GPU_MEMORY * gpu_memory // trial_memory)
    by_work = math.ceil(max(n_trials, 1) / cluster_gpus)
    per_gpu = max(1, min(max_per_gpu, by_memory, by_work))
    limits = {"ceiling": max_per_gpu, "memory": by_memory, "trials per GPU needed": by_work}
    binding = min(limits, key=lambda k: limits[k])
    reason = (
        f"{per_gpu} trial(s) per GPU, limited by {binding} "
        f"(ceiling {max_per_gpu}, memory fits {by_memory}, {n_trials} trials on {cluster_gpus:g} GPUs)"
    )
    gpus = math.floor(10_000 / per_gpu) / 10_000  # Ray keeps 4 decimals; 1/3 must not round up
    return Packing(gpus, per_gpu, reason, _gib(trial_memory), _gib(gpu_memory))

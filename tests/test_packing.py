"""How many trials share a GPU when --gpus-per-trial is not given (covbench.execution.packing)."""

from __future__ import annotations

import pytest

from covbench.errors import CovbenchError
from covbench.execution.packing import H200_PEAK_GIB, MAX_TRIALS_PER_GPU, plan_packing, trial_memory_bytes

GIB = 2**30


def test_no_gpus_means_cpu_trials_and_a_request_is_obeyed():
    assert plan_packing(None, 0, n_trials=15, trial_memory=GIB, gpu_memory=None).gpus_per_trial == 0
    forced = plan_packing(1, 1, n_trials=15, trial_memory=GIB, gpu_memory=140 * GIB)
    assert (forced.gpus_per_trial, forced.trials_per_gpu) == (1.0, 1) and "given" in forced.reason
    assert plan_packing(0.25, 1, n_trials=15, trial_memory=None, gpu_memory=None).trials_per_gpu == 4
    with pytest.raises(CovbenchError, match="no GPUs"):
        plan_packing(0.5, 0, n_trials=2, trial_memory=None, gpu_memory=None)


def test_no_more_trials_than_gpus_means_one_gpu_each():
    p = plan_packing(None, 4, n_trials=3, trial_memory=GIB, gpu_memory=None)
    assert (p.gpus_per_trial, p.trials_per_gpu) == (1.0, 1) and "one GPU each" in p.reason


def test_unknown_gpu_memory_keeps_one_trial_per_gpu():
    p = plan_packing(None, 2, n_trials=15, trial_memory=10 * GIB, gpu_memory=None)
    assert (p.gpus_per_trial, p.trials_per_gpu) == (1.0, 1) and "unknown" in p.reason


@pytest.mark.parametrize(
    ("n_trials", "gpus", "trial_gib", "free_gib", "per_gpu", "binding"),
    [
        (15, 1, 16, 140, MAX_TRIALS_PER_GPU, "ceiling"),  # the paper protocol on an H200
        (15, 1, 30, 80, 2, "memory"),  # 0.9 * 80 // 30 = 2
        (15, 1, 50, 40, 1, "memory"),  # does not fit twice (nor once: still one)
        (3, 2, 4, 140, 2, "trials per GPU needed"),  # ceil(3 / 2): no GPU left idle for nothing
        (15, 8, 4, 140, 2, "trials per GPU needed"),
    ],
)
def test_packing_takes_the_tightest_limit(n_trials, gpus, trial_gib, free_gib, per_gpu, binding):
    p = plan_packing(None, gpus, n_trials=n_trials, trial_memory=trial_gib * GIB, gpu_memory=free_gib * GIB)
    assert p.trials_per_gpu == per_gpu and binding in p.reason
    assert p.gpus_per_trial * per_gpu <= 1.0 and p.gpus_per_trial >= 1 / per_gpu - 1e-4


def test_a_third_of_a_gpu_never_rounds_up():
    p = plan_packing(None, 1, n_trials=3, trial_memory=GIB, gpu_memory=140 * GIB, max_per_gpu=3)
    assert p.gpus_per_trial == 0.3333 and 3 * p.gpus_per_trial <= 1


def test_the_memory_estimate_covers_the_peaks_measured_on_an_h200():
    """Paper preset (224 px, batch 32, paper widths), activations measured by the contract check
    on the CPU; peaks measured on one H200 with bf16 autocast (docs/performance.md)."""
    from covbench.checks import check_models

    models = list(H200_PEAK_GIB)
    checks = check_models(models, image_size=224, batch_size=32, run_width=None, model_options={})
    for name, peak in H200_PEAK_GIB.items():
        c = checks[name]
        estimate = trial_memory_bytes(c.parameters, c.activation_bytes_per_batch, 413 + 137, 224) / GIB
        assert peak < estimate < 3 * peak, (name, estimate)

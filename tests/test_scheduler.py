"""Trials over devices: GPU choice, placement on (fake) GPUs, packing, threads.

The GPU tests give a separate local Ray instance fake GPUs (`ray.init(num_gpus=4)`) in a
subprocess, so the session's CPU-only Ray instance stays untouched. Ray hands out fake GPU ids and
sets CUDA_VISIBLE_DEVICES exactly as it does for real ones; torch then finds no CUDA and trains on
the CPU, which is what lets this run on a machine without GPUs.
"""

from __future__ import annotations

import json
import operator
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import RUN_BOUND_S

from covbench.config import PRESETS, build_config
from covbench.errors import CovbenchError
from covbench.execution.runner import plain_arrays, prepare_data
from covbench.execution.scheduler import RayExecutor, Resources, check_address, choose_gpus_per_trial, slots


def test_cpu_only_machine_never_requests_gpus():
    assert choose_gpus_per_trial(None, 0.0) == 0.0
    assert choose_gpus_per_trial(0, 0.0) == 0.0
    with pytest.raises(CovbenchError, match="--gpus-per-trial 1 but the Ray cluster has no GPUs"):
        choose_gpus_per_trial(1, 0.0)


def test_gpu_default_and_fractions():
    assert choose_gpus_per_trial(None, 8.0) == 1.0
    assert choose_gpus_per_trial(0.5, 1.0) == 0.5
    assert choose_gpus_per_trial(2, 8.0) == 2.0
    with pytest.raises(CovbenchError, match="fraction below 1 or a whole number, got 1.5"):
        choose_gpus_per_trial(1.5, 8.0)
    with pytest.raises(CovbenchError, match="more than the cluster's 4 GPUs"):
        choose_gpus_per_trial(8, 4.0)
    with pytest.raises(CovbenchError, match="--gpus-per-trial must be 0 or more"):
        choose_gpus_per_trial(-1, 4.0)


def test_slots():
    assert slots({"cpus": 16, "gpus": 4}, Resources(1, 1)) == 4
    assert slots({"cpus": 16, "gpus": 4}, Resources(1, 0.5)) == 8
    assert slots({"cpus": 2, "gpus": 0}, Resources(1, 0)) == 2
    assert slots({"cpus": 2, "gpus": 0}, Resources(4, 0)) == 1


@pytest.mark.process
def test_session_ray_has_no_gpus_and_a_task_sees_none(ray_session, tmp_path):
    ex = RayExecutor()
    assert not ex.started_here and ex.resources()["gpus"] == 0
    ex.submit("t", sorted, [3, 1, 2], resources=Resources(1, 0))
    seen = []
    (finished,) = list(
        ex.as_completed(on_started=lambda tag, beat: seen.append((tag, beat["attempt"], beat["token"])))
    )
    assert finished.result == [1, 2, 3] and finished.error is None
    assert finished.placement["gpu_ids"] == [] and finished.placement["attempt"] == 1
    # the start was seen on the driver's attempt board: "running" is observed, not guessed
    assert seen == [("t", 1, finished.placement["token"])]
    assert not list(tmp_path.iterdir())  # and nothing was written anywhere for it


@pytest.mark.process
def test_the_shared_folder_probe_names_the_nodes_that_cannot_see_a_path(ray_session, tmp_path):
    ex = RayExecutor()
    (tmp_path / "probe").touch()
    assert ex.unseen_by_nodes(tmp_path / "probe", timeout=120) == []
    (node,) = ex.nodes()
    assert ex.unseen_by_nodes(tmp_path / "absent", timeout=120) == [f"{node['host']} ({node['ip']})"]


def test_shared_slices_reach_workers_zero_copy(ray_session):
    """The run's slices go to the object store once; a worker gets read-only views of them, not a
    copy (a numpy memmap from the data cache would be pickled whole, hence `plain_arrays`)."""
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    slices = plain_arrays(prepare_data(cfg).slices)
    ex = RayExecutor()
    ref = ex.put(slices)
    for i in range(2):  # two trials, one object
        ex.submit(
            i, operator.attrgetter("images.flags.writeable", "images.shape"), ref, resources=Resources(1)
        )
    results = [f.result for f in ex.as_completed()]
    assert results == [(False, slices.images.shape)] * 2


FAKE_GPUS = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import ray
    ray.init(address="local", num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False)
    from covbench.execution.scheduler import RayExecutor, Resources

    def hold(barrier, n):
        # Wait until n tasks hold their slot at the same time (at most 600 s, helpers.BOUND_S).
        start = time.time()
        Path(barrier, str(time.time_ns())).touch()
        while len(list(Path(barrier).iterdir())) < n and time.time() - start < 600:
            time.sleep(0.05)
        return start, time.time(), len(list(Path(barrier).iterdir()))

    out = {}
    ex = RayExecutor()
    out["resources"] = ex.resources()
    t0 = time.time()
    for name, gpus, n in (("whole", 1, 4), ("half", 0.5, 8), ("none", 0, 2)):
        barrier = Path(sys.argv[1] + "-" + name)
        barrier.mkdir(parents=True)
        for i in range(n):
            ex.submit(i, hold, str(barrier), n, resources=Resources(cpus=1, gpus=gpus))
        out[name] = [
            {"gpu_ids": f.placement["gpu_ids"], "cuda": f.placement["cuda_visible_devices"],
             "start": f.result[0], "end": f.result[1], "together": f.result[2]}
            for f in ex.as_completed()
        ]
    out["seconds_placement"] = time.time() - t0

    # Whole trials through the real runner: 1 model x 4 seeds, 1 GPU each. One CPU each: this
    # machine may have 2 real cores, and 4 trials x 2 torch threads would crawl (threads following
    # --cpus-per-trial is checked in test_resume.py).
    from covbench.config import PRESETS, build_config
    from covbench.execution.runner import execute
    # Each trial holds after its epoch until all four hold (COVBENCH_TEST_HOLD): they overlap.
    sys.path.insert(0, sys.argv[2])  # tests/, for the shared helpers
    from helpers import Hold
    from covbench.faults import HOLD
    hold = Hold(Path(sys.argv[1] + "-hold"))
    os.environ[HOLD] = str(hold.folder)

    def release_when_all_hold(kind, info):
        if kind == "start":  # all submitted; the workers train while the driver waits here
            hold.wait_held(4)
            hold.release()

    cfg = build_config(models=["unet"], n_seeds=4, preset=PRESETS["smoke"], epochs=1)
    run_dir = Path(sys.argv[1])
    outcome = execute(cfg, run_dir, gpus_per_trial=1, cpus_per_trial=1, on_event=release_when_all_hold)
    del os.environ[HOLD]
    out["failed"] = outcome.failed
    out["records"] = [json.loads(p.read_text()) for p in sorted(run_dir.glob("trials/*/record.json"))]
    out["environment"] = json.loads((run_dir / "environment.json").read_text())
    out["seconds_runner"] = time.time() - t0 - out["seconds_placement"]

    # No --gpus-per-trial: covbench.execution.packing decides. Fake GPUs have no CUDA behind them, so the
    # free-memory probe is given an answer (64 GiB); 8 trials on 4 GPUs -> 2 per GPU.
    RayExecutor.gpu_memory = lambda self, timeout=60.0: 64 * 2**30
    packed = build_config(models=["unet", "resunet"], n_seeds=4, preset=PRESETS["smoke"], epochs=1)
    packed_dir = Path(sys.argv[1] + "-packed")
    outcome = execute(packed, packed_dir, cpus_per_trial=0.5)
    out["packed_failed"] = outcome.failed
    records = sorted(packed_dir.glob("trials/*/record.json"))
    out["packed_records"] = [json.loads(p.read_text()) for p in records]
    out["packed_environment"] = json.loads((packed_dir / "environment.json").read_text())
    print("RESULT" + json.dumps(out))
    """
)


def _max_overlap(items: list[dict], start: str, end: str) -> int:
    events = sorted([(i[start], 1) for i in items] + [(i[end], -1) for i in items])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.fixture(scope="module")
def fake_gpu_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fakegpu") / "run"
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_GPUS, str(run_dir), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(line[len("RESULT") :])


@pytest.mark.process
@pytest.mark.slow
def test_four_concurrent_trials_get_four_distinct_gpus(fake_gpu_run):
    whole = fake_gpu_run["whole"]
    assert fake_gpu_run["resources"]["gpus"] == 4
    assert all(t["together"] == 4 for t in whole)  # all four held their GPU at the same time
    ids = [t["gpu_ids"] for t in whole]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 4
    assert all(t["cuda"] == t["gpu_ids"][0] for t in whole)  # each task sees only its own GPU


@pytest.mark.process
@pytest.mark.slow
def test_half_gpu_trials_pack_two_per_gpu(fake_gpu_run):
    half = fake_gpu_run["half"]
    assert all(t["together"] == 8 for t in half)  # eight on four GPUs at once
    per_gpu: dict[str, int] = {}
    for t in half:
        assert len(t["gpu_ids"]) == 1
        per_gpu[t["gpu_ids"][0]] = per_gpu.get(t["gpu_ids"][0], 0) + 1
    assert sorted(per_gpu.values()) == [2, 2, 2, 2]


@pytest.mark.process
@pytest.mark.slow
def test_trials_without_a_gpu_see_none_on_a_gpu_machine(fake_gpu_run):
    assert [(t["gpu_ids"], t["cuda"]) for t in fake_gpu_run["none"]] == [([], "")] * 2


@pytest.mark.process
@pytest.mark.slow
def test_runner_records_its_gpu_per_trial(fake_gpu_run):
    records = fake_gpu_run["records"]
    assert not fake_gpu_run["failed"] and len(records) == 4
    assert fake_gpu_run["environment"]["resources_per_trial"] == {"cpus": 1.0, "gpus": 1.0}
    for r in records:
        assert len(r["gpu_ids"]) == 1 and r["cuda_visible_devices"] == r["gpu_ids"][0]
        assert r["threads"] == 1  # torch threads follow --cpus-per-trial
        assert r["device"].startswith("cpu")  # fake GPUs: torch finds no CUDA and says so
    # trials that overlapped in time never shared a GPU
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["worker_started"] < b["worker_finished"] and b["worker_started"] < a["worker_finished"]:
                assert a["gpu_ids"] != b["gpu_ids"]
    assert _max_overlap(records, "worker_started", "worker_finished") == 4  # all held at once


def test_unreachable_cluster_address_fails_in_seconds(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_address(None)
    check_address("auto")  # left to Ray, which fails fast when no instance runs
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        check_address(f"127.0.0.1:{port}")
        try:  # Ray Client needs gRPC, which plain `ray` (covbench's dependency) does not install
            import grpc  # noqa: F401

            check_address(f"ray://127.0.0.1:{port}")
        except ImportError:
            with pytest.raises(CovbenchError, match="Ray Client needs gRPC; pip install 'covbench.client.'"):
                check_address(f"ray://127.0.0.1:{port}")
    with pytest.raises(CovbenchError, match=f"--address 127.0.0.1:{port}: no Ray cluster reachable"):
        check_address(f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    with pytest.raises(CovbenchError, match="--address nonsense: expected 'auto', host:port"):
        check_address(None)


@pytest.mark.process
@pytest.mark.slow
def test_trials_are_packed_two_per_gpu_when_memory_and_work_allow(fake_gpu_run):
    env = fake_gpu_run["packed_environment"]
    assert not fake_gpu_run["packed_failed"] and len(fake_gpu_run["packed_records"]) == 8
    packing = env["packing"]
    assert (packing["gpus_per_trial"], packing["trials_per_gpu"]) == (0.5, 2)
    assert "trials per GPU needed" in packing["reason"] and packing["gpu_memory_gib"] == 64.0
    assert env["resources_per_trial"]["gpus"] == 0.5
    per_gpu: dict[str, int] = {}
    for r in fake_gpu_run["packed_records"]:
        assert len(r["gpu_ids"]) == 1  # a fraction of one GPU each
        per_gpu[r["gpu_ids"][0]] = per_gpu.get(r["gpu_ids"][0], 0) + 1
    assert set(per_gpu) <= {"0", "1", "2", "3"}

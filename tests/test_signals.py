"""Signals tell the truth, and workers import what the driver imports. A real `covbench` driver
(the console script, as a user or a batch system starts it) runs in its own process group with
its own Ray instance; trials are held inside real workers by the `holdnet` test plugin while the
test sends SIGTERM (a preemption) or two quick SIGINTs (Ctrl-C pressed twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import BOUND_S, RUN_BOUND_S, wait_for

from covbench.config import PRESETS, build_config
from covbench.execution.runner import execute

pytestmark = pytest.mark.process  # what `nox -s stress` repeats, idle and under load

COVBENCH = Path(sys.executable).with_name("covbench")  # the installed console script
RUN = ["run", "--preset", "smoke", "--seeds", "1", "--epochs", "1"]
KEY = ["model", "seed", "fold", "case"]


def _while_driver_runs(condition, what: str, proc: subprocess.Popen) -> None:
    """`wait_for`, failing at once with the driver's stderr when the driver ends first."""

    def met() -> bool:
        if condition():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        return False

    wait_for(met, what)


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Ray's GCS, raylet and workers of a driver), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has ended; only its parent's wait is missing
            alive.add(pid)
    return alive


def _driver(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(COVBENCH), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal or a batch system gives it
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_sigterm_mid_run_records_what_finished_exits_143_and_resumes_exactly(ray_session, holdnet, tmp_path):
    out = tmp_path / "run"
    (holdnet / "hold").touch()
    proc = _driver([*RUN, "--models", "unet,holdnet", "--out", str(out)], tmp_path)
    try:
        unet_done = out / "trials" / "unet__seed0__fold0" / "record.json"
        both = lambda: unet_done.exists() and (holdnet / "entered").exists()  # noqa: E731
        _while_driver_runs(both, "unet done and holdnet held", proc)
        ray_processes = _descendants(proc.pid)
        assert ray_processes, "the driver started no Ray processes"
        proc.send_signal(signal.SIGTERM)  # what Kubernetes, Slurm and spot preemption send
        _, stderr = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr
    assert _lines(stderr)[-1].startswith("interrupted (SIGTERM): finished trials are kept"), stderr
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "interrupted" and env["stopped_by"] == "SIGTERM"
    assert env["failed"] == []
    assert not (out / "trials" / "holdnet__seed0__fold0" / "record.json").exists()
    assert not (out / "trials" / "holdnet__seed0__fold0" / "failure.json").exists()  # not failed: stopped
    wait_for(lambda: not _alive(ray_processes), "every Ray process of the run to end")
    unet_record = json.loads(unet_done.read_text())

    (holdnet / "hold").unlink()
    resumed = subprocess.run([str(COVBENCH), "run", "--resume", str(out)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=RUN_BOUND_S)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 trials run, 1 already done" in resumed.stdout
    assert json.loads(unet_done.read_text())["finished"] == unet_record["finished"]  # not trained again
    assert json.loads((out / "environment.json").read_text())["status"] == "complete"

    # exact: the same numbers as a run that was never interrupted
    cfg = build_config(models=["unet", "holdnet"], n_seeds=1, preset=PRESETS["smoke"], epochs=1)
    reference = tmp_path / "reference"
    execute(cfg, reference)
    got = pd.read_csv(out / "cases.csv").sort_values(KEY).reset_index(drop=True)
    want = pd.read_csv(reference / "cases.csv").sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.slow
def test_two_quick_ctrl_c_exit_130_with_status_interrupted_and_no_ray_left(holdnet, tmp_path):
    out = tmp_path / "run"
    (holdnet / "hold").touch()
    proc = _driver([*RUN, "--models", "holdnet", "--out", str(out)], tmp_path)
    try:
        _while_driver_runs(lambda: (holdnet / "entered").exists(), "holdnet held in its worker", proc)
        ray_processes = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "interrupted" and env["stopped_by"] == "SIGINT"
    wait_for(lambda: not _alive(ray_processes), "every Ray process of the run to end")


STRAY_COVBENCH = "raise ImportError('the stray covbench.py in the working directory was imported')\n"
DEV_HOLDNET = "# a plugin under development: its SPEC is not written yet\n"


@pytest.mark.slow
def test_workers_do_not_import_from_the_drivers_working_directory(holdnet, tmp_path):
    """A stray covbench.py and a plugin folder under development in the working directory: the
    driver (the console script) never looks there, so its trials must not either."""
    work = tmp_path / "work"
    (work / "holdnet").mkdir(parents=True)
    (work / "holdnet" / "__init__.py").write_text(DEV_HOLDNET)
    (work / "covbench.py").write_text(STRAY_COVBENCH)
    out = tmp_path / "run"
    result = subprocess.run([str(COVBENCH), *RUN, "--models", "unet,holdnet", "--out", str(out)], cwd=work,
                            capture_output=True, text=True, timeout=RUN_BOUND_S)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.parent.name for p in out.glob("trials/*/record.json")) == [
        "holdnet__seed0__fold0",
        "unet__seed0__fold0",
    ]

"""One writer per run folder (covbench.folder.lock), with real processes: an OS lock is only worth
something if it holds against another process and goes away when its holder dies."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BOUND_S, Hold, lock_holder, running, wait_for

from covbench.errors import RunLocked
from covbench.folder.layout import RUN_LOCK
from covbench.folder.lock import holder, run_lock

pytestmark = pytest.mark.process  # what `nox -s stress` repeats, idle and under load


def test_lock_holds_against_another_process_and_dies_with_it(tmp_path):
    run_dir = tmp_path / "run"
    with lock_holder(run_dir) as proc:
        with pytest.raises(RunLocked) as err, run_lock(run_dir):
            pass
        message = str(err.value)
        assert str(run_dir) in message and f"pid {proc.pid} on host {platform.node()}" in message
        assert "\n" not in message
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the kernel must drop the lock
        proc.wait(timeout=BOUND_S)
        with run_lock(run_dir):
            assert holder(run_dir)["pid"] == os.getpid()


def test_lock_is_reentrant_in_one_process_and_leaves_no_empty_folder(tmp_path):
    run_dir = tmp_path / "new"
    with run_lock(run_dir):
        with run_lock(run_dir):  # the CLI holds it around `execute`, which takes it again
            assert holder(run_dir)["pid"] == os.getpid()
        assert holder(run_dir)["pid"] == os.getpid()  # still held after the inner block
    assert not run_dir.exists()  # a command that wrote nothing leaves nothing behind

    kept = tmp_path / "kept"
    with run_lock(kept):
        (kept / "config.json").write_text("{}")
    assert (kept / RUN_LOCK).read_text() == ""  # released: the file names nobody
    with run_lock(tmp_path / "missing", create=False):  # `report` of a folder that is not there
        pass
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_second_run_on_the_same_folder_exits_2_naming_the_first(tmp_path):
    """Two real `covbench run` processes on one --out: the second stops at once with the lock
    message; the first, held mid-training (COVBENCH_TEST_HOLD), is undisturbed until it is
    interrupted, keeps its epoch-1 checkpoint, and its death frees the folder."""
    out, hold = tmp_path / "run", Hold(tmp_path / "hold")
    script = Path(sys.executable).with_name("covbench")  # the installed command, as a user runs it
    cmd = [str(script), "run", "--preset", "smoke", "--models", "unet", "--seeds", "2", "--out", str(out)]
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": hold.env()}
    with running([*cmd, "--epochs", "2"], **popen) as first:
        wait_for(lambda: (holder(out) or {}).get("pid") == first.pid, "the first run to lock")
        second = subprocess.run([*cmd, "--epochs", "1"], capture_output=True, text=True, timeout=BOUND_S)
        assert second.returncode == 2, second.stdout + second.stderr
        error = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(error) == 1, second.stderr
        assert f"{out} is in use by `covbench run --preset smoke" in error[0]
        assert f"pid {first.pid} on host {platform.node()}" in error[0]
        assert "trials run" not in second.stdout and "checking models" not in second.stdout
        held = hold.wait_held()  # training, and it cannot finish before it is released
        assert first.poll() is None  # undisturbed by the second
        first.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = first.communicate(timeout=BOUND_S)
        assert first.returncode == 130, output
    assert not list(out.glob("trials/*/record.json"))  # nothing finished, nothing claimed done
    for trial in held:  # what was finished survives the interrupt
        assert (out / "trials" / trial / "checkpoint.pt").is_file()
    with run_lock(out):  # free again
        pass

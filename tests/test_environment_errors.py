"""Every environmental failure is one line and exit 2, with nothing lost; covbench never writes
into a folder it did not create. The full disk and the read-only file system are real: a small
tmpfs mounted for the test (skipped, with the reason, where the machine does not allow it)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import BOUND_S, wait_for
from typer.testing import CliRunner

from covbench.cli import app
from covbench.cli.common import os_error_message
from covbench.config import PRESETS, build_config
from covbench.errors import CovbenchError
from covbench.folder.layout import MARKER, RUN_LOCK
from covbench.folder.state import check_out_folder, claim_run_dir

runner = CliRunner()
RUN = ["run", "--preset", "smoke", "--seeds", "1", "--epochs", "1"]


def _errors(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    return [line for line in lines if line.startswith("error:")]


def _one_error(result) -> str:
    errors = _errors(result.output)
    assert len(errors) == 1, result.output
    return " ".join(errors[0].split())


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "small-fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'needs root'}); the full "
                    "disk and read-only file system tests need a real small file system")  # fmt: skip
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the file system is full, to the last page."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (2**20, 4096):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_full_disk_mid_run_is_one_line_and_resume_after_freeing_space_finishes(ray_session, holdnet, tmpfs):
    out = tmpfs / "run"
    (holdnet / "hold").touch()
    filled: list[Path] = []

    def fill_while_held() -> None:
        wait_for(lambda: (holdnet / "entered").exists(), "holdnet held in its worker")
        filled.append(_fill(tmpfs))
        (holdnet / "hold").unlink()  # training goes on, onto a full disk

    filler = threading.Thread(target=fill_while_held)
    filler.start()
    result = runner.invoke(app, [*RUN, "--models", "holdnet", "--out", str(out)])
    filler.join(timeout=BOUND_S)
    assert result.exit_code == 2, result.output
    error = _one_error(result)
    assert "No space left on device (ENOSPC); free some space, then run the same command again" in error
    # the trial failed on the full disk in its worker; recording that failure failed too, and says so
    assert f"{out / 'trials' / 'holdnet__seed0__fold0' / 'failure.json'}: No space left" in error
    assert not (out / "trials" / "holdnet__seed0__fold0" / "record.json").exists()

    filled[0].unlink()  # space freed: the same folder resumes, nothing from before is in the way
    resumed = runner.invoke(app, ["run", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((out / "trials" / "holdnet__seed0__fold0" / "record.json").read_text())
    assert record["status"] == "done"
    assert json.loads((out / "environment.json").read_text())["status"] == "complete"

    # the same run folder seen through a read-only mount: report, --resume and run --out
    view = tmpfs.parent / "read-only-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(tmpfs), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        ro_run = view / "run"
        for args in (["report", str(ro_run)], ["run", "--resume", str(ro_run)],
                     [*RUN, "--models", "unet", "--out", str(view / "new")]):  # fmt: skip
            refused = runner.invoke(app, args)
            assert refused.exit_code == 2, (args, refused.output)
            error = _one_error(refused)
            assert "Read-only file system (EROFS); the file system is mounted read-only" in error
            assert str(view) in error
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_out_that_is_a_link_loop_a_file_or_a_device_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, what in ((loop, "is a symbolic link loop"), (a_file, "is a file, not a folder"),
                      (Path("/dev/null"), "is a device, not a folder")):  # fmt: skip
        result = runner.invoke(app, [*RUN, "--models", "unet", "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert f"--out {out} {what}" in _one_error(result)
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize(
    ("dataset", "data_dir", "what"),
    [
        ("covid-ct-seg", "notes.txt", "data folder is a file, not a folder"),
        ("phantom", "/dev/null", "data folder is a device, not a folder"),
        ("covid-ct-seg", "loop", "data folder is a symbolic link loop"),
        ("covid-ct-seg", "missing", "data folder does not exist"),
    ],
)
def test_data_dir_that_is_not_a_folder_says_what_it_is(tmp_path, dataset, data_dir, what):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = data_dir if data_dir.startswith("/") else str(tmp_path / data_dir)
    out = tmp_path / "run"
    result = runner.invoke(app, [*RUN, "--models", "unet", "--dataset", dataset, "--data-dir", path,
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{path}: {what}" in _one_error(result)
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/runs/x/config.json"),
         "/runs/x/config.json: Permission denied (EACCES); check the permissions, or use another folder"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/x/.failure.json.tmp"),
         "/runs/x/.failure.json.tmp: No space left on device (ENOSPC); free some space"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
         "/a -> /b: Invalid cross-device link (EXDEV)"),
        (OSError("something odd"), "something odd"),
    ],
)  # fmt: skip
def test_an_os_error_reads_as_path_meaning_and_errno(exc, expected):
    assert os_error_message(exc).startswith(expected)


def test_any_os_error_reaching_a_command_is_one_line_exit_2(tmp_path, monkeypatch):
    """The class, not the case: an OSError from anywhere below a command (here a denied permission,
    which root cannot meet on a real file system) goes through the one error path."""
    import covbench.reports.history as history

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "h.sqlite"))

    monkeypatch.setattr(history, "load_history", denied)
    result = runner.invoke(app, ["history", str(tmp_path / "h.sqlite")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'h.sqlite'}: Permission denied (EACCES)" in _one_error(result)


# --- folders covbench did not create ---------------------------------------------------------------


def test_a_non_empty_folder_that_is_not_a_run_folder_is_refused_untouched(tmp_path):
    mine = tmp_path / "my-results"
    mine.mkdir()
    files = {"config.json": '{"learning_rate": 3}', "cases.csv": "a,b\n1,2\n", "report.html": "<p>mine</p>"}
    for name, text in files.items():
        (mine / name).write_text(text)
    result = runner.invoke(app, [*RUN, "--models", "unet", "--out", str(mine)])
    assert result.exit_code == 2, result.output
    assert f"--out {mine} is a folder covbench did not create and it is not empty" in _one_error(result)
    assert sorted(os.listdir(mine)) == sorted(files)  # no .lock, nothing moved aside
    assert all((mine / name).read_text() == text for name, text in files.items())


def test_empty_marked_and_older_run_folders_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_out_folder(empty)
    check_out_folder(tmp_path / "not-yet")
    claim_run_dir(empty)
    (empty / "trials").mkdir()
    check_out_folder(empty)  # its marker makes it covbench's
    assert (empty / MARKER).is_file()

    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    older = tmp_path / "older"  # a run folder of a covbench from before the marker
    older.mkdir()
    (older / RUN_LOCK).touch()
    (older / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": cfg.key()}))
    (older / "cases.csv").write_text("model\n")
    check_out_folder(older)
    manifest = tmp_path / "manifest-only"
    manifest.mkdir()
    env = {"data_fingerprint": "x", "packages": {}, "command": []}
    (manifest / "environment.json").write_text(json.dumps(env))
    check_out_folder(manifest)
    (manifest / "environment.json").write_text(json.dumps({"status": "complete"}))
    with pytest.raises(CovbenchError, match="covbench did not create"):
        check_out_folder(manifest)

"""`covbench data list | info | download` as a translation layer over covbench.datasets."""

from __future__ import annotations

import zipfile

import pytest
import typer
from typer.testing import CliRunner

from covbench.cli.data import data_app
from covbench.datasets import covid_ct_seg
from covbench.datasets.phantom import generate_phantom

app = typer.Typer()
app.add_typer(data_app, name="data")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COVBENCH_CACHE", str(tmp_path / "cache"))


def test_list_names_every_adapter():
    res = runner.invoke(app, ["data", "list"])
    assert res.exit_code == 0
    for name in ("phantom", "covid-ct-seg", "image-folder"):
        assert name in res.output


def test_info_on_a_folder(tmp_path):
    root = generate_phantom(tmp_path / "ph", n_patients=2, size=40, n_slices=10)
    res = runner.invoke(app, ["data", "info", "covid-ct-seg", "--data-dir", str(root)])
    assert res.exit_code == 0, res.output
    assert "cases 2, slices 20" in res.output
    assert "coronacases" in res.output and "radiopaedia" in res.output and "window255" in res.output


def test_info_errors_are_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["data", "info", "covid-ct-seg", "--data-dir", str(tmp_path / "none")])
    assert res.exit_code == 2
    assert "error:" in res.output and "data folder does not exist" in res.output
    res = runner.invoke(app, ["data", "info", "nope"])
    assert res.exit_code == 2 and "unknown dataset 'nope'" in res.output


def test_info_skip_bad(tmp_path):
    root = generate_phantom(tmp_path / "ph", n_patients=2, size=40, n_slices=10)
    sorted((root / covid_ct_seg.LESION_DIR).iterdir())[0].unlink()
    assert runner.invoke(app, ["data", "info", "covid-ct-seg", "--data-dir", str(root)]).exit_code == 2
    with pytest.warns(UserWarning, match="skipped 1 bad case"):
        res = runner.invoke(app, ["data", "info", "covid-ct-seg", "--data-dir", str(root), "--skip-bad"])
    assert res.exit_code == 0 and "cases 1," in res.output


def test_download_from_dir(tmp_path):
    root = generate_phantom(tmp_path / "ph", n_patients=2, size=40, n_slices=10)
    src = tmp_path / "zips"
    src.mkdir()
    for sub in (covid_ct_seg.IMAGE_DIR, covid_ct_seg.LESION_DIR, covid_ct_seg.LUNG_DIR):
        with zipfile.ZipFile(src / f"{sub}.zip", "w") as zf:
            for p in (root / sub).iterdir():
                zf.write(p, p.name)
    dest = tmp_path / "data"
    res = runner.invoke(app, ["data", "download", "covid-ct-seg", "--dest", str(dest), "--from", str(src)])
    assert res.exit_code == 0, res.output
    assert len(list(covid_ct_seg.load(dest))) == 2
    res = runner.invoke(app, ["data", "download", "phantom", "--dest", str(dest)])
    assert res.exit_code == 2 and "no download for 'phantom'" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["info", "image-folder", "--data-dir", "{odd}"],
        ["download", "covid-ct-seg", "--from", "{odd}", "--dest", "{odd}-dest"],
    ],
)
def test_a_path_that_looks_like_markup_is_printed_not_parsed(args, tmp_path):
    """One error path for every command: the message is escaped, so `[/y]` is text, not a closing tag."""
    odd = str(tmp_path / "x[/y]")
    res = runner.invoke(app, ["data", *(a.format(odd=odd) for a in args)])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and odd in res.output

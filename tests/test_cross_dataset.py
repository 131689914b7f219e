"""Train on one dataset, test on another (`--test-dataset`, issue 36 item 3): two nnU-Net folders
written here from different phantom patients, the test one stored in another intensity
convention (int16 with scl_inter = -1024, as many scanners export); the run tests only the test
dataset's patients, records both datasets, and its key is not the same-dataset run's."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_nifti_datasets import refused, write_nnunet
from typer.testing import CliRunner

from covbench.cli import app
from covbench.config import PRESETS, build_config
from covbench.datasets.phantom import generate_phantom
from covbench.datasets.prepare import prepare_slices
from covbench.datasets.preprocess import PreprocessConfig
from covbench.errors import CovbenchError

runner = CliRunner()


def _as_offset_int16(folder: Path) -> None:
    """Rewrite every image as stored value = HU + 1024 in int16, scl_slope 1, scl_inter -1024:
    the same HU once the header's scaling is applied."""
    for path in sorted((folder / "imagesTr").glob("*.nii.gz")):
        image = nib.load(str(path))
        hu = np.asarray(image.get_fdata(), dtype=np.float64)
        stored = nib.Nifti1Image(np.round(hu + 1024).astype(np.int16), image.affine)
        stored.header.set_slope_inter(1.0, -1024.0)
        nib.save(stored, str(path))


@pytest.fixture(scope="module")
def two_hospitals(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cross")
    train = write_nnunet(generate_phantom(root / "pa", n_patients=5, size=48, n_slices=8, seed=1), root / "A")
    test = write_nnunet(generate_phantom(root / "pb", n_patients=4, size=48, n_slices=8, seed=2), root / "B")
    _as_offset_int16(test)
    return train, test


def test_the_intensity_convention_does_not_change_the_slices(two_hospitals, tmp_path):
    """The stored-offset folder gives the same pre-processed slices as the same HU stored plainly
    (up to the int16 rounding of the HU): the adapter hands over HU, one window maps both."""
    _, test = two_hospitals
    raw = nib.load(str(sorted((test / "imagesTr").glob("*.nii.gz"))[0]))
    assert raw.get_data_dtype() == np.int16 and raw.dataobj.inter == -1024.0
    pre = PreprocessConfig(image_size=32)
    offset = prepare_slices("nnunet", test, pre, cache_dir=tmp_path / "c1")
    plain_dir = tmp_path / "plain"
    for sub in ("imagesTr", "labelsTr"):
        (plain_dir / sub).mkdir(parents=True)
        for path in sorted((test / sub).glob("*.nii.gz")):
            image = nib.load(str(path))
            data = image.get_fdata().astype(np.float32) if sub == "imagesTr" else np.asanyarray(image.dataobj)
            nib.save(nib.Nifti1Image(data, image.affine), str(plain_dir / sub / path.name))
    (plain_dir / "dataset.json").write_text((test / "dataset.json").read_text())
    plain = prepare_slices("nnunet", plain_dir, pre, cache_dir=tmp_path / "c2")
    assert np.array_equal(offset.slices.images, plain.slices.images)
    assert np.array_equal(offset.slices.masks, plain.slices.masks)


def test_a_cross_dataset_run_tests_only_the_other_datasets_patients(two_hospitals, ray_session, tmp_path):
    train, test = two_hospitals
    out = tmp_path / "run"
    args = ["run", "--dataset", "nnunet", "--data-dir", str(train), "--test-dataset", "nnunet",
            "--test-data-dir", str(test), "--preset", "smoke", "--models", "unet", "--seeds", "1",
            "--epochs", "2", "--image-size", "32", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    split = json.loads((out / "split.json").read_text())
    test_ids = {f"nnunet-{p.name.removesuffix('.nii.gz')}" for p in (test / "labelsTr").glob("*.nii.gz")}
    train_ids = {p.name.removesuffix(".nii.gz") for p in (train / "labelsTr").glob("*.nii.gz")}
    assert set(split["test"]) == test_ids and set(split["train"]) | set(split["val"]) == train_ids
    assert split["test_dataset"]["dataset"] == "nnunet" and split["test_dataset"]["data_dir"] == str(test)
    cases = pd.read_csv(out / "cases.csv")
    assert set(cases["patient"].astype(str)) == test_ids  # every test case is the other dataset's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_dataset"]["fingerprint"] == split["test_dataset"]["fingerprint"]
    assert "Tested on dataset 'nnunet'" in (out / "report.md").read_text()
    assert "Tested on dataset 'nnunet'" in (out / "table.tex").read_text()  # Table 1's caption
    # the configuration key (and the data fingerprint in the run key) are not the same-dataset run's
    config = json.loads((out / "config.json").read_text())
    alone = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], epochs=2, image_size=32,
                         dataset="nnunet", data_dir=str(train))  # fmt: skip
    assert config["_key"].split("-")[0] != alone.key()
    assert config["test_data"] == {"dataset": "nnunet", "data_dir": str(test), "options": {}}
    env = json.loads((out / "environment.json").read_text())
    assert (
        config["_key"].split("-")[1]
        == env["data_fingerprint"][:12]
        != split["test_dataset"]["fingerprint"][:12]
    )


def test_the_key_is_unchanged_without_a_test_dataset():
    """Configurations written before --test-dataset keep their keys (the field is left out at its default)."""
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    assert cfg.test_data is None and "test_data" in cfg.to_dict()
    crossed = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], test_dataset="phantom",
                           test_dataset_options={"seed": 3})  # fmt: skip
    assert crossed.key() != cfg.key()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--test-dataset", "nnunet"], "--test-dataset nnunet: give its folder with --test-data-dir"),
        (["--test-data-dir", "/tmp"], "--test-data-dir needs --test-dataset"),
        (
            ["--test-dataset", "phantom", "--split", "kfold"],
            "testing on another dataset needs one patient-level",
        ),
        (["--test-dataset", "nosuch"], "nosuch"),
    ],
)
def test_misused_test_dataset_options_are_refused_before_anything(extra, needle, tmp_path):
    out = tmp_path / "o"
    refused(["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--out", str(out), *extra],
            needle, folder=out)  # fmt: skip


def test_a_test_dataset_folder_that_is_missing_is_named(tmp_path):
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], test_dataset="nnunet",
                       test_data_dir=str(tmp_path / "missing"))  # fmt: skip
    from covbench.execution.runner import prepare_data

    with pytest.raises(CovbenchError, match=r"--test-dataset nnunet: .*missing: data folder does not exist"):
        prepare_data(cfg)

"""NIfTI datasets in the nnU-Net v2 raw layout (issue 36): a folder written here from the phantom's
volumes trains and reports distances in mm, predicts through the adapter's own input reader, and
every malformed folder is refused in one line naming the file, exit 2, before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from covbench.cli import app
from covbench.datasets import covid_ct_seg, nifti_folder
from covbench.datasets.phantom import generate_phantom
from covbench.registry import get_dataset

runner = CliRunner()
LABELS = {"background": 0, "lung": 1, "lesion": 2}


def write_nnunet(phantom: Path, dest: Path, labels: dict[str, int] = LABELS) -> Path:
    """The phantom's patients as an nnU-Net v2 raw dataset: one label volume with lung = 1 and
    lesion = 2 (lesion wins), the image geometry kept (same affine)."""
    (dest / "imagesTr").mkdir(parents=True)
    (dest / "labelsTr").mkdir()
    cases, errors = covid_ct_seg.find_cases(phantom)
    assert not errors and len(cases) >= 4
    for files in sorted(cases, key=lambda f: f.case_id):
        cid = files.case_id
        image = nib.load(str(files.image))
        lung = np.asanyarray(nib.load(str(files.lung)).dataobj) > 0
        lesion = np.asanyarray(nib.load(str(files.lesion)).dataobj) > 0
        label = np.where(lesion, labels["lesion"], np.where(lung, labels["lung"], 0)).astype(np.uint8)
        shutil.copy(files.image, dest / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, image.affine), str(dest / "labelsTr" / f"{cid}.nii.gz"))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (dest / "dataset.json").write_text(json.dumps(meta))
    return dest


@pytest.fixture(scope="module")
def nnunet_dir(tmp_path_factory) -> Path:
    phantom = generate_phantom(tmp_path_factory.mktemp("ph36"), n_patients=6, size=48, n_slices=8)
    return write_nnunet(phantom, tmp_path_factory.mktemp("nnunet") / "Dataset501_Phantom")


@pytest.fixture()
def broken(nnunet_dir, tmp_path) -> Path:
    return Path(shutil.copytree(nnunet_dir, tmp_path / "data"))


def refused(args: list[str], *needles: str, folder: Path | None = None) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    # the run's banner and progress precede it on stderr; the refusal is its one error line, last
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr
    assert len(lines[0]) < 500 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    if folder is not None:
        assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
    return lines[0]


def dry(data: Path, out: Path) -> list[str]:
    return ["run", "--dataset", "nnunet", "--data-dir", str(data), "--preset", "smoke", "--models", "unet",
            "--seeds", "1", "--out", str(out)]  # fmt: skip


def test_the_adapter_reads_lesion_lung_and_spacing_from_the_folder(nnunet_dir):
    cases = list(get_dataset("nnunet").load(nnunet_dir))
    assert len(cases) == 6
    for case in cases:
        assert case.lesion.any() and case.lung is not None and case.lung.any()
        assert not (
            case.lesion.astype(bool) & ~case.lung.astype(bool)
        ).any()  # the lesion label counts as lung too
        assert all(s > 0 for s in case.spacing)


def test_a_run_on_an_nnunet_folder_trains_reports_mm_and_predicts(nnunet_dir, ray_session, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [*dry(nnunet_dir, out), "--epochs", "2", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distance_unit"] == "mm"
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "nnunet"
    # predict reads the run's own input kind through the adapter's read_input, and writes a mask
    # of the input's shape and affine
    image = sorted((nnunet_dir / "imagesTr").glob("*.nii.gz"))[0]
    masks = tmp_path / "masks"
    done = runner.invoke(
        app, ["predict", str(out), "--model", "unet", "--input", str(image), "--output", str(masks)]
    )
    assert done.exit_code == 0, done.output
    written = sorted(masks.glob("*.nii.gz"))
    assert len(written) == 1
    src, pred = nib.load(str(image)), nib.load(str(written[0]))
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine)
    assert set(np.unique(np.asanyarray(pred.dataobj))) <= {0, 1}


def test_label_option_chooses_the_lesion_label(nnunet_dir):
    lung_as_lesion = list(get_dataset("nnunet").load(nnunet_dir, label="lung", lung="none"))
    default = list(get_dataset("nnunet").load(nnunet_dir))
    assert sum(c.lesion.sum() for c in lung_as_lesion) > sum(c.lesion.sum() for c in default)


def test_missing_dataset_json_is_refused(broken, tmp_path):
    (broken / "dataset.json").unlink()
    refused(dry(broken, tmp_path / "out"), "dataset.json", folder=tmp_path / "out")


def test_an_undeclared_label_value_is_refused(broken, tmp_path):
    path = sorted((broken / "labelsTr").glob("*.nii.gz"))[0]
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    refused(dry(broken, tmp_path / "out"), path.name, "7", folder=tmp_path / "out")


def test_an_image_without_a_label_is_refused(broken, tmp_path):
    path = sorted((broken / "labelsTr").glob("*.nii.gz"))[0]
    path.unlink()
    refused(dry(broken, tmp_path / "out"), "image without a label", folder=tmp_path / "out")


def test_a_label_of_another_shape_is_refused(broken, tmp_path):
    path = sorted((broken / "labelsTr").glob("*.nii.gz"))[0]
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-2], img.affine), str(path))
    refused(dry(broken, tmp_path / "out"), path.name, "shape", folder=tmp_path / "out")


def test_a_label_of_another_affine_is_refused(broken, tmp_path):
    path = sorted((broken / "labelsTr").glob("*.nii.gz"))[0]
    img = nib.load(str(path))
    moved = img.affine.copy()
    moved[:3, 3] += 25.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), moved), str(path))
    refused(dry(broken, tmp_path / "out"), path.name, "affine", folder=tmp_path / "out")


def test_a_4d_image_needs_a_channel(broken, tmp_path):
    path = sorted((broken / "imagesTr").glob("*.nii.gz"))[0]
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), img.affine), str(path))
    refused(dry(broken, tmp_path / "out"), path.name, "channel", folder=tmp_path / "out")


def test_the_spec_declares_its_prediction_input():
    for name in ("nnunet", "mosmed", "covid19-20", "covid-ct-seg", "phantom"):
        assert get_dataset(name).read_input is not None, name
    assert nifti_folder.DATASET_JSON == "dataset.json"

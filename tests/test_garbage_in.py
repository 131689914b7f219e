"""Data that is not broken but wrong is refused (issue 15): zero pixel size, an unknown intensity
convention, no lesion, huge volumes, unverifiable or bomb-like archives; and distances are labelled
px wherever the data has no pixel spacing. Each case builds its own small input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from covbench.cli import app
from covbench.datasets import covid_ct_seg, download, image_folder
from covbench.datasets.base import SliceSet
from covbench.datasets.phantom import generate_phantom
from covbench.datasets.splits import make_splits
from covbench.errors import CovbenchError

runner = CliRunner()
IMG, LES, LUNG = covid_ct_seg.IMAGE_DIR, covid_ct_seg.LESION_DIR, covid_ct_seg.LUNG_DIR


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("ph15"), n_patients=4, size=32, n_slices=8)


@pytest.fixture()
def data(phantom_dir, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_dir, tmp_path / "data"))


def _files(root: Path, sub: str) -> list[Path]:
    return sorted((root / sub).glob("*.nii.gz"))


def _rewrite(path: Path, data: np.ndarray | None = None, *, zooms=None, no_transform=False) -> None:
    """Rewrite a .nii.gz with new voxels and/or header fields, patched into the stored bytes so
    that nibabel's own fixes (a zero pixdim becomes 1) cannot undo them."""
    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj) if data is None else data
    out = nib.Nifti1Image(arr, img.affine, img.header.copy())
    if data is not None:
        out.set_data_dtype(arr.dtype)
        out.header.set_slope_inter(1.0, 0.0)
    raw = out.to_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    if no_transform:
        hdr["sform_code"] = hdr["qform_code"] = 0
    if zooms is not None:
        hdr["pixdim"][1:4] = zooms
    path.write_bytes(gzip.compress(hdr.binaryblock + raw[len(hdr.binaryblock) :], mtime=0))


def _run(data_dir: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        ["run", "--dataset", "covid-ct-seg", "--data-dir", str(data_dir), "--preset", "smoke",
         "--models", "unet", "--seeds", "1", "--out", str(out), "--debug", *extra],
    )  # fmt: skip


def _refused(result, out: Path, *needles: str) -> None:
    """Exit 2, one line naming the problem, no traceback, no summary.json."""
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text and not isinstance(result.exception, AssertionError)
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in " ".join(text.split()), (needle, text)
    assert not (out / "summary.json").exists()


# --- 1. zero pixel size ----------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [IMG, LES])
def test_zero_pixel_size_is_refused(data, tmp_path, sub):
    target = _files(data, sub)[1]
    _rewrite(target, zooms=(0.0, 0.7, 2.5), no_transform=True)
    with pytest.raises(CovbenchError, match=r"pixel size x = 0 mm in the header"):
        list(covid_ct_seg.load(data))
    _refused(_run(data, tmp_path / "out"), tmp_path / "out", target.name, "pixel size x = 0")


# --- 2. intensities in an unknown convention -------------------------------------------------------


def test_raw_uint16_volume_is_refused(data, tmp_path):
    target = next(p for p in _files(data, IMG) if p.name.startswith("coronacases"))  # stored as HU
    hu = np.asanyarray(nib.load(str(target)).dataobj).astype(np.int32)
    _rewrite(target, (hu + 1024).astype(np.uint16))  # stored raw, no rescale intercept
    with pytest.raises(CovbenchError, match=r"lung voxels read \+\d+ HU .* not air-filled lung"):
        list(covid_ct_seg.load(data))
    _refused(_run(data, tmp_path / "out"), tmp_path / "out", target.name, "not air-filled lung")


def test_both_known_conventions_pass_and_raw_without_lung_mask_is_refused(data):
    cases = list(covid_ct_seg.load(data))
    assert {c.intensity for c in cases} == {"hu", "window255"}  # the phantom passes in both
    shutil.rmtree(data / LUNG)
    assert len(list(covid_ct_seg.load(data))) == 4  # HU and window255 volumes hold air
    target = _files(data, IMG)[0]
    hu = np.asanyarray(nib.load(str(target)).dataobj).astype(np.int32)
    _rewrite(target, (hu + 1024).astype(np.uint16))
    with pytest.raises(CovbenchError, match=rf"{target.name}: no air in the volume"):
        list(covid_ct_seg.load(data))


# --- 3. no lesion ----------------------------------------------------------------------------------


def test_dataset_without_any_lesion_is_refused(data, tmp_path):
    for p in _files(data, LES):
        _rewrite(p, np.zeros(nib.load(str(p)).shape, np.uint8))
    _refused(_run(data, tmp_path / "out"), tmp_path / "out", "no lesion pixels in any of its")


def test_test_set_without_lesion_is_refused_naming_the_split():
    n, per = 6, 2
    masks = np.zeros((n * per, 8, 8), np.uint8)
    masks[: 3 * per, 2, 2] = 1  # only p0..p2 have lesions
    slices = SliceSet(
        images=np.zeros((n * per, 8, 8), np.uint8),
        masks=masks,
        spacing=np.ones((n * per, 2), np.float32),
        patient=np.repeat([f"p{i}" for i in range(n)], per),
        slice_index=np.tile(np.arange(per, dtype=np.int32), n),
        source=np.full(n * per, "s"),
    )
    part_of = {f"p{i}": "train" if i < 3 else "test" for i in range(n)}
    with pytest.raises(
        CovbenchError, match=r"split 'predefined' fold 0: its test set \(3 patient\(s\): p3, p4, p5"
    ):
        make_splits("predefined", slices, part_of=part_of)
    part_of = {f"p{i}": "test" if i in (0, 4) else "train" for i in range(n)}
    assert make_splits("predefined", slices, part_of=part_of)[0]["test"] == ["p0", "p4"]


# --- 7. huge volumes -------------------------------------------------------------------------------


def test_huge_volume_is_refused_before_reading_it(data, tmp_path):
    target = _files(data, IMG)[0]
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 2048))
    hdr.set_data_dtype(np.int16)
    hdr.set_zooms((0.7, 0.7, 1.0))
    # the header alone plus a few voxels: nothing could read 64 GiB from it
    target.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024, mtime=0))
    with pytest.raises(CovbenchError, match=r"34,360 M voxels exceeds the limit of 537 M per volume"):
        list(covid_ct_seg.load(data))
    _refused(_run(data, tmp_path / "out"), tmp_path / "out", target.name, "exceeds the limit")


# --- 4. pixels are not millimetres -----------------------------------------------------------------


def _slice_folder(root: Path, rng: np.random.Generator, spacing: float | None = None) -> Path:
    rows = ["stem,spacing"]
    for part, stems in (("train", range(0, 6)), ("test", range(6, 9))):
        for s in stems:
            img = rng.integers(0, 255, (40, 40), dtype=np.uint8)
            mask = np.zeros((40, 40), np.uint8)
            mask[8 + s : 20 + s, 10:24] = 255
            for sub, arr in (("images", img), ("masks", mask)):
                (root / part / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / part / sub / f"{s}.png")
            rows.append(f"{s},{spacing}")
    if spacing is not None:
        (root / "slices.csv").write_text("\n".join(rows) + "\n")
    return root


def test_slices_without_spacing_are_in_pixels(tmp_path):
    rng = np.random.default_rng(0)
    folder = _slice_folder(tmp_path / "px", rng)
    assert {c.spacing_unit for c in image_folder.load(folder)} == {"px"}
    assert {c.spacing_unit for c in image_folder.load(folder, spacing=0.7)} == {"mm"}
    mm = _slice_folder(tmp_path / "mm", rng, spacing=0.7)
    assert {c.spacing_unit for c in image_folder.load(mm)} == {"mm"}
    lines = (mm / "slices.csv").read_text().splitlines()
    (mm / "slices.csv").write_text("\n".join(lines[:-1] + [lines[-1].split(",")[0] + ","]) + "\n")
    with pytest.raises(CovbenchError, match=r"slices.csv: pixel spacing given for 8 slice\(s\) but not"):
        list(image_folder.load(mm))


def test_run_on_pixel_slices_says_px_everywhere_and_compare_refuses_mm(tmp_path):
    folder = _slice_folder(tmp_path / "slices", np.random.default_rng(1))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", "--dataset", "image-folder", "--data-dir", str(folder), "--preset", "smoke",
         "--models", "unet", "--seeds", "1", "--out", str(out), "--debug"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "split.json").read_text())["distance_unit"] == "px"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distance_unit"] == "px"
    for name in ("table.md", "table.tex", "report.md", "report.html", "figures/boxplots.svg"):
        text = (out / name).read_text()
        assert "ASSD (px)" in text and "HD95 (px)" in text, name
        assert "(mm)" not in text, name
    assert "in pixels" in (out / "report.md").read_text()
    # a baseline in mm (the same numbers, labelled as millimetres) is never compared with it
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({**summary, "distance_unit": "mm"}))
    cmp = runner.invoke(app, ["compare", str(baseline), str(out)])
    assert cmp.exit_code == 2, cmp.output
    assert "distances in mm" in cmp.output and "in px" in cmp.output and "Traceback" not in cmp.output


def test_a_user_given_spacing_puts_pixel_slices_in_mm(tmp_path):
    """`--spacing` on slices without a pixel size: distances in mm, scaled by the spacing; the key
    of a configuration without it is what it was before the option existed."""
    from covbench.config import PRESETS, build_config

    folder = _slice_folder(tmp_path / "slices", np.random.default_rng(1))
    base = ["run", "--dataset", "image-folder", "--data-dir", str(folder), "--preset", "smoke",
            "--models", "unet", "--seeds", "1", "--epochs", "1", "--debug"]  # fmt: skip
    px, mm = tmp_path / "px", tmp_path / "mm"
    assert runner.invoke(app, [*base, "--out", str(px)]).exit_code == 0
    result = runner.invoke(app, [*base, "--spacing", "0.5", "--out", str(mm)])
    assert result.exit_code == 0, result.output
    assert json.loads((mm / "split.json").read_text())["distance_unit"] == "mm"
    assert json.loads((mm / "config.json").read_text())["spacing"] == [0.5, 0.5]
    assert "ASSD (mm)" in (mm / "table.md").read_text()
    cases_px, cases_mm = (pd.read_csv(d / "cases.csv").set_index("case") for d in (px, mm))
    both = cases_px["hd95"].notna() & (cases_px["hd95"] > 0)
    assert both.any()  # same weights and predictions (same seed), distances halved
    assert np.allclose(cases_mm.loc[both, "hd95"], 0.5 * cases_px.loc[both, "hd95"])
    for bad, says in ((["--spacing", "0"], "--spacing must be one or two positive numbers"),
                      (["--spacing", "a,b"], "--spacing must be one or two positive numbers")):  # fmt: skip
        refused = runner.invoke(app, [*base, *bad, "--out", str(tmp_path / "bad")])
        assert refused.exit_code == 2 and says in refused.output
    phantom = runner.invoke(app, ["run", "--preset", "smoke", "--spacing", "0.5", "--out", str(tmp_path)])
    assert phantom.exit_code == 2
    assert "dataset 'phantom' reads the pixel size from its files" in phantom.output
    assert build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"]).key() == "dc78bda762f0547d"


# --- 6. downloads ----------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def test_from_dir_is_verified_when_a_checksum_is_known(tmp_path):
    src = tmp_path / "zips"
    names = ("COVID-19-CT-Seg_20cases.zip", "Infection_Mask.zip")
    for n in names:
        _zip(src / n, {"a.nii.gz": b"payload " + n.encode()})
    # a sidecar with the wrong digest: refused, nothing extracted
    (src / (names[0] + ".md5")).write_text("0" * 32 + "  " + names[0] + "\n")
    with pytest.raises(CovbenchError, match=r"COVID-19-CT-Seg_20cases\.zip: md5 checksum mismatch"):
        download.install_from_dir(src, tmp_path / "d1", names=names)
    assert not (tmp_path / "d1").exists()
    # the right digest: verified; the other archive has none and is said so, and recorded
    (src / (names[0] + ".md5")).write_text(hashlib.md5((src / names[0]).read_bytes()).hexdigest() + "\n")
    said: list[str] = []
    dest = download.install_from_dir(src, tmp_path / "d2", names=names, notify=said.append)
    assert len(said) == 1 and said[0].startswith(
        "Infection_Mask.zip: not verified against a published checksum"
    )
    manifest = json.loads((dest / download.DATA_MANIFEST).read_text())
    assert manifest["archives"][names[0]]["verified"] == "checksum"
    assert manifest["archives"][names[1]]["verified"] == "crc only"
    assert manifest["unverified"] == [names[1]]


def test_unknown_hash_algorithm_and_bad_from_archive_are_one_line(tmp_path):
    archive = _zip(tmp_path / "zips" / "Infection_Mask.zip", {"a.nii.gz": b"x"})
    with pytest.raises(CovbenchError, match=r"Infection_Mask\.zip: unknown checksum algorithm 'crc99'"):
        download.verify_archive(archive, "crc99:abcd")  # was a ValueError traceback
    with pytest.raises(CovbenchError, match=r"is not ALGORITHM:HEX"):
        download.install_from_dir(
            tmp_path / "zips", tmp_path / "d0", required=(), checksums={archive.name: "abcd"}
        )
    # through the CLI: a --from archive whose sidecar digest does not match, exit 2 in one line
    images = _zip(tmp_path / "zips" / "COVID-19-CT-Seg_20cases.zip", {"a.nii.gz": b"y"})
    (tmp_path / "zips" / "Infection_Mask.zip.md5").write_text(hashlib.md5(archive.read_bytes()).hexdigest())
    (tmp_path / "zips" / "COVID-19-CT-Seg_20cases.zip.sha256").write_text("f" * 64 + "  x.zip\n")
    result = runner.invoke(
        app,
        ["data", "download", "covid-ct-seg", "--dest", str(tmp_path / "d"), "--from", str(tmp_path / "zips")],
    )
    assert result.exit_code == 2, result.output
    assert f"{images}: sha256 checksum mismatch" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "d").exists()


def test_download_without_checksums_says_so(tmp_path, monkeypatch):
    name = "Infection_Mask.zip"
    blob = _zip(tmp_path / "srv" / name, {"a.nii.gz": b"mask"}).read_bytes()

    def fake_download(url, target, **kw):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        return target

    monkeypatch.setattr(download, "download_file", fake_download)
    monkeypatch.setattr(download, "fetch_checksums", lambda *a, **k: {})  # API unreachable
    said: list[str] = []
    dest = download.download(tmp_path / "d", names=(name,), notify=said.append)
    assert len(said) == 1 and "could not be fetched" in said[0] and "crc only" in said[0]
    assert json.loads((dest / download.DATA_MANIFEST).read_text())["unverified"] == [name]


def test_extraction_is_capped(tmp_path):
    # 8 MiB of zeros, bzip2: a few hundred bytes expanding 10,000-fold
    bomb = _zip(tmp_path / "a" / "Lung_Mask.zip", {"lung.nii": bytes(8 << 20)}, zipfile.ZIP_BZIP2)
    with pytest.raises(CovbenchError, match=r"member 'lung.nii' expands [\d,]+-fold"):
        download.safe_extract(bomb, tmp_path / "d")
    big = _zip(tmp_path / "b" / "Lung_Mask.zip", {f"{i}.nii": bytes(1 << 20) for i in range(3)})
    with pytest.raises(CovbenchError, match=r"would extract 0\.0 GiB, more than the 0\.0 GiB limit"):
        download.safe_extract(big, tmp_path / "d", max_bytes=2 << 20)
    many = _zip(
        tmp_path / "c" / "Lung_Mask.zip", {f"{i}.nii.gz": b"" for i in range(download.MAX_MEMBERS + 1)}
    )
    with pytest.raises(CovbenchError, match=rf"{download.MAX_MEMBERS + 1} members, more than"):
        download.safe_extract(many, tmp_path / "d")
    assert not (tmp_path / "d" / "Lung_Mask").exists()
    assert download.safe_extract(big, tmp_path / "d").is_dir()  # within the default cap


def test_zip_member_read_in_place_gets_the_same_checks(data, tmp_path):
    # a zip left unextracted (as Zenodo serves it) goes through the same header checks
    target = _files(data, LES)[0]
    _rewrite(target, zooms=(0.0, 0.7, 2.5), no_transform=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in _files(data, LES):
            zf.write(p, f"{LES}/{p.name}")
    shutil.rmtree(data / LES)
    (data / f"{LES}.zip").write_bytes(buf.getvalue())
    with pytest.raises(CovbenchError, match=rf"{LES}\.zip:{LES}/{target.name}: pixel size x = 0"):
        list(covid_ct_seg.load(data))

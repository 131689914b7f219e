"""Adapters for NIfTI datasets in the layouts CT segmentation work keeps them in: the nnU-Net v2 raw
format (and the Medical Segmentation Decathlon's v1 `dataset.json`), MosMedData COVID19_1110 and
the COVID-19-20 challenge. One pairing step per layout, one reading step for all.

nnU-Net v2 (`--dataset nnunet`)::

    DIR/dataset.json   {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1},
                        "numTraining": N, "file_ending": ".nii.gz"}
    DIR/imagesTr/{case}_0000.nii.gz   DIR/labelsTr/{case}.nii.gz
    DIR/imagesTs/... DIR/labelsTs/...  (optional; with labels, those cases form the `test` part)

Decathlon v1: `dataset.json` with `"training": [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}]`, `"labels": {"0": "background", "1": "lesion"}`, `"modality"`; its 4D
multi-modal images need `channel=K`.

Options (`--dataset-option KEY=VALUE`): `label` (name or value of the lesion label; default: the
only foreground label, else the one named like lesion / infection / covid), `lung` (name or value
of a lung label, used as the lung mask with the lesion label; default: every label whose name
contains "lung"; `lung=none` ignores them), `channel` (which image channel, needed when the
dataset declares more than one).

MosMedData (`--dataset mosmed`): `DIR/studies/CT-*/study_XXXX.nii.gz` and
`DIR/masks/study_XXXX_mask.nii.gz` (lesion {0, 1}); only the studies with a mask are cases.
COVID-19-20 (`--dataset covid19-20`): `*_ct.nii.gz` with `*_seg.nii.gz` beside it, anywhere under
DIR (lesion {0, 1}).

Spacing comes from each image's NIfTI header (mm, `nifti.read_volume`); without a lung label the
pre-processing estimates the lung (`preprocess.estimate_body_lung`, datasets/README.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covbench.datasets.base import Case, read_cases
from covbench.datasets.nifti import (
    SUFFIXES,
    check_geometry,
    intensity_of,
    nifti_input,
    read_volume,
    strip_suffix,
)
from covbench.datasets.preprocess import check_intensity
from covbench.errors import CovbenchError, quote
from covbench.registry import DatasetSpec

DATASET_JSON = "dataset.json"
LESION_WORDS = ("lesion", "infection", "covid", "ggo", "opacity")
OPTIONS = ("label", "lung", "channel")


@dataclass(frozen=True)
class Pair:
    """One case's files and how to read its label volume."""

    case_id: str
    image: Path
    label: Path
    split: str | None = None
    channel: int | None = None  # of a 4D image


@dataclass(frozen=True)
class Labels:
    """What the label volumes mean: the declared values, and which are lesion and lung."""

    declared: tuple[int, ...]
    lesion: int
    lung: tuple[int, ...] = ()
    where: str = ""  # the file that declared them, for messages


# --- nnU-Net v2 / Decathlon v1 -------------------------------------------------------------


def read_dataset_json(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        raise CovbenchError(
            f"{path}: missing; an nnU-Net / Decathlon dataset folder holds dataset.json beside imagesTr/ "
            "and labelsTr/"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CovbenchError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict) or not meta["labels"]:
        raise CovbenchError(f"{path}: no 'labels' mapping (nnU-Net: name -> value; Decathlon: value -> name)")
    return meta


def declared_labels(meta: Mapping[str, Any], where: str) -> dict[str, int]:
    """{name: value} from either convention: v2 {"lesion": 1}, v1 {"1": "lesion"}."""
    out: dict[str, int] = {}
    for key, value in meta["labels"].items():
        if isinstance(value, str) and re.fullmatch(r"\d+", str(key)):  # v1: "1": "lesion"
            out[value] = int(key)
        elif isinstance(value, int) and not isinstance(value, bool):
            out[str(key)] = value
        else:  # nnU-Net region labels ([1, 2]) mean overlapping regions: not a lesion mask
            raise CovbenchError(f"{where}: label {quote(key)}: {quote(value)} is not one integer value")
    return out


def _choose(value: Any, names: dict[str, int], what: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) or str(value).isdigit():
        if int(value) in names.values():
            return int(value)
    elif str(value) in names:
        return names[str(value)]
    raise CovbenchError(f"{where}: --dataset-option {what}={value}: no such label (declared: {names})")


def resolve_labels(names: dict[str, int], where: str, label: Any = None, lung: Any = None) -> Labels:
    """The lesion label (option `label`, or the only foreground one, or the one named like a
    lesion) and the lung labels (option `lung`, or those named like lung)."""
    fg = {k: v for k, v in names.items() if v != 0}
    if label is not None:
        lesion = _choose(label, names, "label", where)
    elif len(fg) == 1:
        lesion = next(iter(fg.values()))
    else:
        named = [v for k, v in fg.items() if any(w in k.lower() for w in LESION_WORDS)]
        if len(named) != 1:
            raise CovbenchError(
                f"{where}: labels {names}: choose the lesion label with "
                "--dataset-option label=NAME (or =VALUE)"
            )
        lesion = named[0]
    if lung is None:
        lungs = tuple(v for k, v in fg.items() if "lung" in k.lower() and v != lesion)
    elif str(lung).lower() == "none":
        lungs = ()
    else:
        lungs = (_choose(lung, names, "lung", where),)
    return Labels(tuple(sorted(set(names.values()) | {0})), lesion, lungs, where)


def _channel(meta: Mapping[str, Any], channel: Any, where: str) -> int:
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "CT"}
    keys = sorted(int(k) for k in channels)
    if channel is None:
        if len(keys) > 1:
            raise CovbenchError(
                f"{where}: {len(keys)} channels {dict(channels)} and no channel chosen; "
                "choose one with --dataset-option channel=K"
            )
        return keys[0]
    if int(channel) not in keys:
        raise CovbenchError(f"{where}: --dataset-option channel={channel}: the dataset declares {keys}")
    return int(channel)


def _nnunet_pairs(data_dir: Path, meta: Mapping[str, Any], channel: int, where: str):
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in SUFFIXES:
        raise CovbenchError(
            f"{where}: file_ending {quote(ending)}; covbench reads NIfTI ({', '.join(SUFFIXES)})"
        )
    pairs, errors = [], []
    for images, labels, part in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
        image_dir, label_dir = data_dir / images, data_dir / labels
        if part == "train" and not image_dir.is_dir():
            raise CovbenchError(f"{image_dir}: folder missing (nnU-Net raw layout: imagesTr/, labelsTr/)")
        if not image_dir.is_dir() or (part == "test" and not label_dir.is_dir()):
            continue  # imagesTs without labelsTs: nnU-Net's unlabelled test set, nothing to score
        suffix = f"_{channel:04d}{ending}"
        for image in sorted(image_dir.glob(f"*{suffix}")):
            case = image.name[: -len(suffix)]
            label = label_dir / f"{case}{ending}"
            if label.is_file():
                pairs.append(Pair(case, image, label, part))
            else:
                errors.append(
                    CovbenchError(f"{image}: image without a label ({labels}/{label.name} not found)")
                )
    return pairs, errors


def _decathlon_pairs(data_dir: Path, meta: Mapping[str, Any], channel: int | None):
    pairs, errors = [], []
    for entry in meta["training"]:
        image, label = data_dir / entry["image"], data_dir / entry.get("label", "")
        case = strip_suffix(image.name) or image.stem
        if not image.is_file():
            errors.append(CovbenchError(f"{image}: listed in {DATASET_JSON} 'training' but missing"))
        elif not entry.get("label") or not label.is_file():
            errors.append(CovbenchError(f"{image}: image without a label ({entry.get('label')} not found)"))
        else:
            pairs.append(Pair(case, image, label, "train", channel))
    return pairs, errors


def nnunet_pairs(
    data_dir: Path, options: Mapping[str, Any]
) -> tuple[list[Pair], list[CovbenchError], Labels]:
    data_dir = Path(data_dir)
    meta = read_dataset_json(data_dir)
    where = str(data_dir / DATASET_JSON)
    labels = resolve_labels(declared_labels(meta, where), where, options.get("label"), options.get("lung"))
    if isinstance(meta.get("training"), list):  # Decathlon v1
        chosen = options.get("channel")
        pairs, errors = _decathlon_pairs(data_dir, meta, None if chosen is None else int(chosen))
    else:
        pairs, errors = _nnunet_pairs(data_dir, meta, _channel(meta, options.get("channel"), where), where)
    if not pairs and not errors:
        raise CovbenchError(f"{data_dir / 'imagesTr'}: no images ({{case}}_0000.nii.gz)")
    return pairs, errors, labels


# --- MosMedData, COVID-19-20 ----------------------------------------------------------------

BINARY = Labels((0, 1), 1)


def mosmed_pairs(data_dir: Path, options: Mapping[str, Any]):
    data_dir = Path(data_dir)
    masks = data_dir / "masks"
    if not masks.is_dir():
        raise CovbenchError(f"{masks}: folder missing (MosMedData layout: studies/CT-*/, masks/)")
    studies = {
        strip_suffix(p.name): p for p in sorted((data_dir / "studies").glob("*/*")) if strip_suffix(p.name)
    }
    pairs, errors = [], []
    for mask in sorted(masks.iterdir()):
        stem = strip_suffix(mask.name)
        if stem is None or not stem.endswith("_mask"):
            continue
        case = stem[: -len("_mask")]
        if case in studies:
            pairs.append(Pair(case, studies[case], mask))
        else:
            errors.append(
                CovbenchError(f"{mask}: mask without an image (studies/CT-*/{case}.nii.gz not found)")
            )
    if not pairs and not errors:
        raise CovbenchError(f"{masks}: no study_XXXX_mask.nii.gz files")
    return pairs, errors, BINARY


def covid19_20_pairs(data_dir: Path, options: Mapping[str, Any]):
    data_dir = Path(data_dir)
    pairs, errors = [], []
    for image in sorted(p for p in data_dir.rglob("*_ct.nii*") if strip_suffix(p.name)):
        stem = strip_suffix(image.name)[: -len("_ct")]
        label = next(
            (
                image.with_name(f"{stem}_seg{s}")
                for s in SUFFIXES
                if image.with_name(f"{stem}_seg{s}").is_file()
            ),
            None,
        )
        if label is None:
            errors.append(CovbenchError(f"{image}: image without a label ({stem}_seg.nii.gz not found)"))
        else:
            pairs.append(Pair(stem, image, label))
    if not pairs and not errors:
        raise CovbenchError(f"{data_dir}: no *_ct.nii.gz files (COVID-19-20 layout)")
    return pairs, errors, BINARY


# --- reading --------------------------------------------------------------------------------


def check_declared(label: np.ndarray, labels: Labels, path: Path) -> None:
    """Every voxel value is a declared label (integers; bincount instead of a slow np.unique)."""
    values = np.asarray(label)
    if values.dtype.kind == "f" and not np.array_equal(values, np.floor(values)):
        raise CovbenchError(f"{path}: fractional label values; a label volume holds integers")
    lo, hi = float(values.min()), float(values.max())
    present = (
        np.flatnonzero(np.bincount(values.astype(np.int64).ravel()))
        if lo >= 0 and hi < 1 << 16
        else np.unique(values)
    )
    undeclared = sorted(set(int(v) for v in present) - set(labels.declared))
    if undeclared:
        raise CovbenchError(
            f"{path}: label value(s) {undeclared[:5]} not declared"
            + (f" in {labels.where}" if labels.where else "")
            + f" (declared: {list(labels.declared)})"
        )


def read_pair(pair: Pair, labels: Labels, source: str) -> Case:
    view, spacing, aff = read_volume(pair.image, pair.channel)
    image = np.ascontiguousarray(view, dtype=np.float32)
    if not np.isfinite(image).all():
        raise CovbenchError(f"{pair.image}: NaN or infinite voxels")
    lab, _, laff = read_volume(pair.label)
    check_geometry((image, aff, pair.image), (lab, laff, pair.label))
    check_declared(lab, labels, pair.label)
    lesion = np.ascontiguousarray(lab == labels.lesion, dtype=np.uint8)
    lung = None
    if labels.lung:
        lung = np.ascontiguousarray(np.isin(lab, (*labels.lung, labels.lesion)), dtype=np.uint8)
        if not lung.any():
            raise CovbenchError(f"{pair.label}: no lung label {list(labels.lung)} voxel (lung mask empty)")
    intensity = intensity_of(source, image)
    check_intensity(image, lung, intensity, str(pair.image))
    return Case(
        case_id=pair.case_id,
        image=image,
        lesion=lesion,
        lung=lung,
        spacing=spacing,
        source=source,
        intensity=intensity,
        files=(str(pair.image), str(pair.label)),
        split=pair.split,
    )


LAYOUTS = {"nnunet": nnunet_pairs, "mosmed": mosmed_pairs, "covid19-20": covid19_20_pairs}


def _check_options(layout: str, options: Mapping[str, Any]) -> None:
    allowed = OPTIONS if layout == "nnunet" else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise CovbenchError(
            f"--dataset-option {quote(unknown[0])}: dataset {layout!r} takes "
            + (", ".join(allowed) if allowed else "no options")
        )


def _source(layout: str, data_dir: Path) -> str:
    if layout != "nnunet":
        return layout
    try:
        name = json.loads((data_dir / DATASET_JSON).read_text()).get("name")
    except (OSError, ValueError):
        name = None
    return re.sub(r"[^A-Za-z0-9-]+", "-", str(name or data_dir.name)).strip("-").lower() or "nnunet"


def load_layout(
    layout: str, data_dir: Path, *, skip_bad: bool = False, bad: list[str] | None = None, **options: Any
) -> Iterator[Case]:
    """Yield one Case per image/label pair of `layout`; a bad pair raises CovbenchError naming the
    file, or with `skip_bad` is skipped, its message appended to `bad` and warned about at the end."""
    _check_options(layout, options)
    data_dir = Path(data_dir)
    pairs, errors, labels = LAYOUTS[layout](data_dir, options)
    source = _source(layout, data_dir)
    yield from read_cases(
        pairs, lambda pair: read_pair(pair, labels, source), errors, skip_bad=skip_bad, bad=bad
    )


def check_before_reading(
    layout: str, data_dir: Path, options: Mapping[str, Any], skip_bad: bool = False
) -> None:
    """The whole-dataset refusals (options, dataset.json, labels, unpaired files) without reading
    a voxel, so `covbench run` can make them before anything starts."""
    _check_options(layout, options)
    _, errors, _ = LAYOUTS[layout](Path(data_dir), options)
    if errors and not skip_bad:
        raise errors[0]


def _spec(layout: str, title: str, reference: str, default_split: str = "patient") -> DatasetSpec:
    def load(data_dir: Path, **options: Any) -> Iterator[Case]:
        return load_layout(layout, data_dir, **options)

    def case_files(data_dir: Path, **options: Any) -> list[Path]:
        _check_options(layout, options)
        pairs, _, _ = LAYOUTS[layout](Path(data_dir), options)
        return sorted(
            {p for pair in pairs for p in (pair.image, pair.label)}
            | ({Path(data_dir) / DATASET_JSON} if layout == "nnunet" else set())
        )

    return DatasetSpec(
        name=layout,
        load=load,
        title=title,
        reference=reference,
        needs_data_dir=True,
        default_split=default_split,
        case_files=case_files,
        skips_bad=True,
        read_input=nifti_input(),
    )


NNUNET_SPEC = _spec(
    "nnunet",
    "nnU-Net v2 raw dataset (dataset.json, imagesTr/, labelsTr/) or a Medical Segmentation Decathlon task",
    "Isensee F. et al., nnU-Net, Nat Methods 2021 (dataset format); Antonelli M. et al., The Medical "
    "Segmentation Decathlon, Nat Commun 2022",
)
MOSMED_SPEC = _spec(
    "mosmed",
    "MosMedData COVID19_1110: studies/CT-*/study_XXXX.nii.gz, masks/study_XXXX_mask.nii.gz (50 masked)",
    "Morozov S.P. et al., MosMedData: chest CT scans with COVID-19 related findings, arXiv:2005.06465 "
    "(2020); licence CC BY-NC-ND 3.0",
)
COVID19_20_SPEC = _spec(
    "covid19-20",
    "COVID-19-20 challenge: *_ct.nii.gz with *_seg.nii.gz",
    "Roth H.R. et al., Rapid artificial intelligence solutions in a pandemic - the COVID-19-20 lung CT "
    "lesion segmentation challenge, Med Image Anal 2022; images from TCIA 'CT Images in COVID-19'",
)

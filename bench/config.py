"""Run configuration: presets, CLI overrides, validation and a stable hash for resume.

Every default a run's configuration takes is decided here (preset for the device, the dataset's
split, fold count, cuDNN determinism), so a library caller gets what `covbench run` gets. Importing
this module does not import torch: only `has_cuda()` does, when a decision needs the device.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from covbench import registry
from covbench.errors import CovbenchError, quote

# Option values, kept here so that checking a command line does not import torch; the
# implementations are covbench.training.augment and covbench.training.loop.LOSSES (a test keeps them in step).
AUGMENTS = ("none", "flip", "affine")
LOSS_NAMES = ("dice", "dice_bce")
AMP_NAMES = ("auto", "bf16", "fp16", "off")  # covbench.training.loop.amp_choice
# Which epoch's weights a trial evaluates (covbench.training.loop.train_model): the best validation Dice,
# or the final epoch's (validation still logged, for the training curves and covbench.training.health).
SELECTIONS = ("best_val", "final")
# Seconds between a trial's checkpoint writes (covbench.training.checkpoint explains the choice). Not part of
# the configuration: when a trial checkpoints does not change its results.
DEFAULT_CHECKPOINT_SECONDS = 120.0
# Seconds without progress after which a trial (or a model's contract check) counts as stalled and
# is ended (`--stall-timeout`, docs/cluster.md). Progress is beaten at every optimizer step, epoch
# and evaluation step, so this only has to outlast the longest single step: model build and the
# first batch with `torch.compile` (minutes), an evaluation of a large test set, a slow shared
# file system. 30 minutes is far above those and still small next to a cluster allocation.
DEFAULT_STALL_SECONDS = 1800.0


@dataclass(frozen=True)
class Preset:
    """Training protocol knobs; `paper` is Salehi et al. 2023, the others shrink it for a CPU."""

    name: str
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    width: int | None  # `--width`: every model at width/64 of its paper width; None = paper widths
    lr_schedule: str = "constant"
    phantom: dict[str, Any] = field(default_factory=dict)  # size of the built-in synthetic data
    description: str = ""
    augment: str = "none"  # covbench.training.augment mode: none, flip, affine (the paper uses none)
    loss: str = "dice"  # covbench.training.loop.LOSSES: dice (the paper's) or dice_bce
    val_fraction: float | None = None  # `--val-fraction`; None = the split's own default
    tta: bool = False  # flip test-time augmentation (covbench.training.loop.predict)
    selection: str = "best_val"  # SELECTIONS: which epoch's weights are evaluated
    # Per-dataset changes: real 2D slices need more pixels and width than the coarse phantom.
    for_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    # train / val / test shares of the built-in phantom's patient split (None: the split's default).
    # Test patients cost only inference, and verdicts need them (docs/reports.md, "Built-in design").
    phantom_split: tuple[float, float, float] | None = None

    def specialise(self, dataset: str) -> Preset:
        """This preset as it applies to `dataset` (its `for_dataset` entry merged in)."""
        changes = self.for_dataset.get(dataset)
        return replace(self, **changes) if changes else self


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper",
        image_size=224,
        epochs=250,
        batch_size=32,
        lr=5e-4,
        width=None,
        phantom={"n_patients": 20, "size": 256, "n_slices": 48},
        description="Salehi et al. 2023: 224 px, Dice loss, Adam 5e-4, batch 32, 250 epochs, paper widths",
    ),
    "cpu": Preset(
        "cpu",
        image_size=64,
        epochs=24,
        batch_size=8,
        lr=2e-3,
        width=16,
        lr_schedule="cosine",
        augment="flip",
        # the final weights (lr decayed to 0), not the best of 3 validation patients' noisy Dice: that
        # picked Res-UNet seed 4's epoch 7 of 24 in the main job, test Dice 0.594 against 0.704 for
        # its final weights (docs/training.md, "Checkpoint selection under the cpu preset")
        selection="final",
        # 40 patients: 10 train, 3 val (as before: the same training cost) and 27 test, so the
        # verdicts count enough independent test patients to decide something
        phantom={"n_patients": 40, "size": 128, "n_slices": 16},
        phantom_split=(0.25, 0.075, 0.675),
        description="the paper protocol shrunk to finish 3 models x 5 seeds in minutes on 2 CPU cores",
        for_dataset={
            # Real slices carry far finer lesions than the phantom: twice the pixels, more epochs,
            # Dice + BCE and flip TTA. A 2D slice folder is a few dozen slices, too few to give
            # 20 % away to checkpoint selection: train on all of them, evaluate the final weights.
            # docs/training.md has the measurements behind each choice.
            "image-folder": {
                "image_size": 128,
                "epochs": 70,
                "loss": "dice_bce",
                "tta": True,
                "val_fraction": 0.0,
            },
            # hundreds of validation slices: enough to select a checkpoint on
            "covid-ct-seg": {
                "image_size": 128,
                "epochs": 70,
                "loss": "dice_bce",
                "tta": True,
                "selection": "best_val",
            },
        },
    ),
    "smoke": Preset(
        "smoke",
        image_size=32,
        epochs=2,
        batch_size=8,
        lr=2e-3,
        width=4,
        lr_schedule="cosine",
        augment="flip",
        phantom={"n_patients": 5, "size": 64, "n_slices": 10},
        description="seconds per trial; for tests and CI",
    ),
}


def has_cuda() -> bool:
    """Whether torch sees a CUDA device (imports torch)."""
    import torch

    return torch.cuda.is_available()


def resolve_preset(name: str, cuda_available: bool | None = None) -> Preset:
    """The preset called `name`; `auto` is `paper` on CUDA and `cpu` otherwise (`cuda_available`
    None: ask `has_cuda()`, only for `auto`)."""
    if name == "auto":
        on_cuda = has_cuda() if cuda_available is None else cuda_available
        name = "paper" if on_cuda else "cpu"
    if name not in PRESETS:
        raise CovbenchError(f"unknown preset {quote(name)}; choose one of: auto, {', '.join(PRESETS)}")
    return PRESETS[name]


_LATER_FIELDS: dict[str, Any] = {
    "spacing": None,
    "split_fractions": None,
    "dataset_options": {},
    "selection": "best_val",
    "rounds": None,
    "test_data": None,
}  # field -> default (RunConfig.key)


def parse_spacing(text: str | None) -> tuple[float, float] | None:
    """`--spacing 0.7` or `--spacing 0.7,0.8` (mm per pixel, row and column)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise CovbenchError(
            f"--spacing must be one or two positive numbers in mm (ROW[,COL]), got {quote(text)}"
        )
    return (values[0], values[-1])


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a trial's checkpointer (covbench.training.checkpoint) writes: after the first epoch,
    then every `every_seconds` (0: every epoch). Here, beside its default, so the driver's options
    need no torch."""

    every_seconds: float = DEFAULT_CHECKPOINT_SECONDS

    def __post_init__(self) -> None:
        if not self.every_seconds >= 0:
            raise ValueError(f"checkpoint interval must be 0 or more seconds, got {self.every_seconds}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers. Two runs with the same `key()` and data
    fingerprint must give the same results (up to non-deterministic kernels)."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    width: int | None
    dataset: str = "phantom"
    data_dir: str | None = None
    split: str = "patient"
    split_seed: int = 0
    folds: int = 1
    val_fraction: float | None = None  # None = the split's default; 0 = no validation, final weights
    loss: str = "dice"
    lr_schedule: str = "constant"
    augment: str | bool = "none"  # bool in configs written before the affine mode (True = flip)
    tta: bool = False  # average the test predictions over four flips
    threshold: float = 0.5
    phantom: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    deterministic: bool = True
    # mixed precision asked for: "auto" (bf16 from compute capability 8.0, fp16 + GradScaler on 7.x,
    # float32 elsewhere), "bf16", "fp16", "off"; covbench.training.loop.amp_choice decides, config.json's
    # `_amp` and each record.json's `amp` say what it chose
    amp: str = "auto"
    compile: bool = False  # torch.compile each model (minutes of compilation per trial on a GPU)
    # `--spacing`: the (row, col) pixel size in mm of 2D slices whose files carry none (image-folder);
    # None: the data's own spacing, or distances in pixels where it has none
    spacing: tuple[float, float] | None = None
    # train / val / test shares of a `patient` split; None = (0.6, 0.2, 0.2)
    split_fractions: tuple[float, float, float] | None = None
    # `--max-seeds`: the stopping rule of rounds of seeds (covbench.reports.sequential.Rule fields:
    # first, step, max_seeds, alpha, futility, spending); None = the fixed design of `seeds`
    rounds: dict[str, Any] | None = None
    # `--dataset-option KEY=VALUE`: the adapter's own options (nnunet: label, lung, channel)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    # SELECTIONS: "best_val" (the epoch of the best validation Dice, the paper's protocol and every
    # configuration's before this field) or "final" (the last epoch's weights, validation logged)
    selection: str = "best_val"
    # `--test-dataset NAME --test-data-dir DIR --test-dataset-option KEY=VALUE`: train and validate
    # on `dataset`, test on every patient of this one ({"dataset", "data_dir", "options"}); None:
    # the test set is a part of `dataset` (the split's)
    test_data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        data["models"] = tuple(data["models"])
        data["seeds"] = tuple(data["seeds"])
        if data.get("spacing") is not None:
            data["spacing"] = tuple(data["spacing"])
        if data.get("split_fractions") is not None:
            data["split_fractions"] = tuple(data["split_fractions"])
        return cls(**data)

    def trial_config(self) -> dict[str, Any]:
        """The part of the config a single trial's results depend on (not the model/seed list)."""
        d = self.to_dict()
        d.pop("models")
        d.pop("seeds")
        return d

    def key(self) -> str:
        """Hash of `trial_config`; a field added after 0.1.0 is left out while at its default, so
        the key of every configuration written before it stays the same."""
        d = {
            k: v for k, v in self.trial_config().items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])
        }
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_config(
    *,
    models: list[str],
    n_seeds: int,
    preset: Preset,
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    width: int | None = None,
    augment: str | None = None,
    loss: str | None = None,
    val_fraction: float | None = None,
    tta: bool | None = None,
    dataset: str = "phantom",
    split: str | None = None,
    folds: int | None = None,
    deterministic: bool | None = True,
    spacing: tuple[float, float] | None = None,
    max_seeds: int | None = None,
    seed_step: int | None = None,
    selection: str | None = None,
    test_dataset: str | None = None,
    test_data_dir: str | None = None,
    test_dataset_options: dict[str, Any] | None = None,
    **extra: Any,
) -> RunConfig:
    """Merge a preset with CLI overrides and check them; every problem names its option.

    `split` None: the dataset's `default_split`; `folds` None: 5 for `kfold`, else 1;
    `deterministic` None: deterministic cuDNN kernels on a CPU, autotuning on CUDA (`covbench run`'s
    default, docs/performance.md). An explicit `width` is refused for a model without a width knob;
    a preset's width leaves such a model at its own size. Other keyword arguments are RunConfig fields.
    """
    data_spec = registry.get_dataset(dataset)  # an unknown name fails here, listing the adapters
    preset = preset.specialise(dataset)
    if n_seeds < 1:
        raise CovbenchError(f"--seeds must be a positive number of seeds, got {n_seeds}")
    for opt, value in {"--epochs": epochs, "--batch-size": batch_size, "--width": width}.items():
        if value is not None and value < 1:
            raise CovbenchError(f"{opt} must be positive, got {value}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise CovbenchError(f"--lr must be a positive finite number, got {lr}")
    if augment is not None and augment not in AUGMENTS:
        raise CovbenchError(f"--augment must be one of {', '.join(AUGMENTS)}, got {quote(augment)}")
    if loss is not None and loss not in LOSS_NAMES:
        raise CovbenchError(f"--loss must be one of {', '.join(LOSS_NAMES)}, got {quote(loss)}")
    if extra.get("amp") is not None and extra["amp"] not in AMP_NAMES:
        raise CovbenchError(f"--amp must be one of {', '.join(AMP_NAMES)}, got {quote(extra['amp'])}")
    if selection is not None and selection not in SELECTIONS:
        raise CovbenchError(f"--selection must be one of {', '.join(SELECTIONS)}, got {quote(selection)}")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise CovbenchError(f"--val-fraction must be at least 0 and below 1, got {val_fraction}")
    size = image_size if image_size is not None else preset.image_size
    if size < 16 or size % 16:
        raise CovbenchError(f"--image-size must be a multiple of 16 and at least 16, got {size}")
    if width is not None:
        for name in models:
            if not registry.get_model(name).has_width:
                raise CovbenchError(
                    f"--width {width}: model {quote(name)} has no width knob (no paper_width in its spec); "
                    "drop --width or leave the model out of --models"
                )
    if spacing is not None and not data_spec.takes_spacing:
        raise CovbenchError(
            f"--spacing: dataset {dataset!r} reads the pixel size from its files; --spacing is for "
            "2D slices that carry none (e.g. image-folder)"
        )
    split = split or data_spec.default_split
    rounds = round_rule(n_seeds, max_seeds, seed_step)
    test_data = cross_data_request(test_dataset, test_data_dir, test_dataset_options, split, folds)
    cfg = RunConfig(
        models=tuple(models),
        seeds=tuple(range(n_seeds)),
        preset=preset.name,
        image_size=size,
        epochs=epochs or preset.epochs,
        batch_size=batch_size or preset.batch_size,
        lr=lr or preset.lr,
        width=width or preset.width,
        lr_schedule=preset.lr_schedule,
        augment=augment or preset.augment,
        loss=loss or preset.loss,
        val_fraction=val_fraction if val_fraction is not None else preset.val_fraction,
        tta=tta if tta is not None else preset.tta,
        phantom=dict(preset.phantom),
        dataset=dataset,
        split=split,
        folds=folds if folds is not None else (5 if split == "kfold" else 1),
        deterministic=not has_cuda() if deterministic is None else deterministic,
        spacing=spacing,
        split_fractions=preset.phantom_split if dataset == "phantom" and split == "patient" else None,
        rounds=rounds,
        selection=selection or preset.selection,
        test_data=test_data,
    )
    return replace(cfg, **extra) if extra else cfg


def cross_data_request(
    dataset: str | None,
    data_dir: str | None,
    options: dict[str, Any] | None,
    split: str,
    folds: int | None,
) -> dict[str, Any] | None:
    """What `--test-dataset` asks for (None: the split's own test part). Every patient of the test
    dataset is tested; the training dataset gives train and validation patients only, so the
    split must be one patient-level split of a single fold."""
    if dataset is None:
        for option, value in (("--test-data-dir", data_dir), ("--test-dataset-option", options)):
            if value:
                raise CovbenchError(f"{option} needs --test-dataset (the dataset to test on)")
        return None
    spec = registry.get_dataset(dataset)  # an unknown name fails here, listing the adapters
    if spec.needs_data_dir and not data_dir:
        raise CovbenchError(f"--test-dataset {dataset}: give its folder with --test-data-dir")
    if not spec.needs_data_dir and data_dir:
        raise CovbenchError(
            f"--test-data-dir: dataset {dataset!r} reads no folder (it is generated); drop --test-data-dir"
        )
    if split not in ("patient", "predefined") or (folds or 1) > 1:
        raise CovbenchError(
            f"--test-dataset: split {split!r}"
            + (f" with {folds} folds" if (folds or 1) > 1 else "")
            + " does not fit; testing on another dataset needs one patient-level split of the training "
            "data into train and validation patients (--split patient)"
        )
    return {
        "dataset": spec.name,
        "data_dir": str(data_dir) if data_dir else None,
        "options": dict(options or {}),
    }


def round_rule(n_seeds: int, max_seeds: int | None, seed_step: int | None) -> dict[str, Any] | None:
    """The stopping rule `--seeds N --max-seeds M [--seed-step K]` asks for (None: fixed design)."""
    if max_seeds is None:
        if seed_step is not None:
            raise CovbenchError("--seed-step needs --max-seeds (rounds of seeds); drop it or add --max-seeds")
        return None
    from covbench.reports.sequential import Rule

    if n_seeds < 2:
        raise CovbenchError(
            f"--seeds must be at least 2 with --max-seeds (a first round estimates seed noise), got {n_seeds}"
        )
    if max_seeds <= n_seeds:
        raise CovbenchError(f"--max-seeds must be larger than --seeds ({n_seeds}), got {max_seeds}")
    step = n_seeds if seed_step is None else seed_step
    if step < 1:
        raise CovbenchError(f"--seed-step must be a positive number of seeds, got {step}")
    return Rule(n_seeds, step, max_seeds).describe()


def _option_value(text: str) -> Any:
    """JSON-ish: true/false/null, numbers and JSON lists as such, anything else as a string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.strip().lower() in lowered:
        return lowered[text.strip().lower()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_dataset_options(items: list[str], option: str = "--dataset-option") -> dict[str, Any]:
    """`--dataset-option KEY=VALUE` (repeatable) -> {key: value}; the adapter checks the keys."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CovbenchError(f"{option} {quote(item)}: expected KEY=VALUE, e.g. label=lesion or channel=0")
        options[key.strip()] = _option_value(value)
    return options


def parse_model_options(items: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    """`--model-option MODEL.KEY=VALUE` (repeatable) -> {model: {key: value}}. The key follows
    the last dot, so member names with dots (`smp:Unet:tu-vit_small.augreg`) work."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        model, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not model or not key:
            raise CovbenchError(
                f"--model-option {quote(item)}: expected MODEL.KEY=VALUE, e.g. unetpp.deep_supervision=false"
            )
        if ":" in model:
            model = registry.get_model(model).name
        if model not in models:
            raise CovbenchError(
                f"--model-option {quote(item)}: model {quote(model)} is not selected by --models "
                f"({', '.join(models)})"
            )
        options.setdefault(model, {})[key] = _option_value(value)
    return options

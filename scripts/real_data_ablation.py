"""One row of docs/training.md's ablation: train one model on a 2D slice folder, score the test
slices with and without flip TTA, for the final and the best-by-validation weights.

    python scripts/real_data_ablation.py unet                                  # the cpu recipe
    python scripts/real_data_ablation.py unet --val-fraction 0.2 --loss dice  # the previous recipe
    python scripts/real_data_ablation.py resunet --val-fraction 0.2 --train-on-val
    python scripts/real_data_ablation.py resunet --dataset phantom --seed 4 --curve  # the main job's data

`--dataset phantom` trains on the built-in phantom as `covbench run` (cpu preset) does, with its
patient split; `--curve` adds the test Dice of every epoch's weights (one extra prediction of the
test slices per epoch), which shows what checkpoint selection on the validation slices picked.

It builds the configuration exactly as `covbench run --dataset image-folder --split predefined`
does (cpu preset, options override it) and trains through the trial's own `train_model`,
`predict` and `batch_metrics`; one training gives all four scores, which a run cannot (it
evaluates one choice). `--train-on-val` appends the carved validation slices to the training
slices, after them: the order the ablation's "all 50 slices" rows were measured in, which
differs from a run's sorted order (docs/training.md compares the two). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from covbench import registry
from covbench.config import PRESETS, build_config
from covbench.datasets.splits import split_indices
from covbench.execution.runner import prepare_data
from covbench.metrics import batch_metrics
from covbench.training.loop import EpochEnd, TrainOptions, predict, seed_everything, train_model
from covbench.training.trial import slice_tensors

RECORDED = (
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "width",
    "loss",
    "augment",
    "val_fraction",
    "preprocess",
    "lr_schedule",
)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "covid_semiseg"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--dataset", default="image-folder", choices=("image-folder", "phantom"))
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--curve", action="store_true", help="test Dice after every epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--width", type=int)
    p.add_argument("--loss")
    p.add_argument("--augment")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--preprocess", default="{}", help="JSON, e.g. '{\"clahe\": false}'")
    p.add_argument("--train-on-val", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse(argv)
    torch.set_num_threads(1)  # as a trial with --cpus-per-trial 1
    cfg = build_config(
        models=[a.model],
        n_seeds=1,
        preset=PRESETS["cpu"],
        epochs=a.epochs,
        image_size=a.image_size,
        batch_size=a.batch_size,
        lr=a.lr,
        width=a.width,
        loss=a.loss,
        augment=a.augment,
        val_fraction=a.val_fraction,
        dataset=a.dataset,
        data_dir=a.data_dir if a.dataset == "image-folder" else None,
        split="predefined" if a.dataset == "image-folder" else None,
        preprocess=json.loads(a.preprocess),
    )
    data = prepare_data(cfg)
    parts = split_indices(data.slices, data.folds[0])
    train = np.concatenate([parts["train"], parts["val"]]) if a.train_on_val else parts["train"]
    seed_everything(a.seed)
    spec = registry.get_model(a.model)
    width, options = spec.run_arguments(cfg.width, {})
    model = spec.create(in_channels=1, classes=1, width=width, **options)
    train_xy, val_xy, (sx, sy) = (slice_tensors(data.slices, i) for i in (train, parts["val"], parts["test"]))
    cpu = torch.device("cpu")
    target = sy[:, 0].numpy().astype(bool)
    spacing = data.slices.spacing[parts["test"]]

    def test_dice(tta: bool) -> float:
        prob = predict(model, sx, cfg.batch_size * 2, cpu, tta=tta)[:, 0].numpy()
        return round(float(np.mean([m["dice"] for m in batch_metrics(prob >= 0.5, target, spacing)])), 4)

    curve: list[dict[str, float]] = []

    def on_epoch(end: EpochEnd) -> None:
        row = {k: round(float(end.row[k]), 4) for k in ("epoch", "train_loss", "val_dice")}
        curve.append({**row, "test_dice": test_dice(False)})

    t0 = time.perf_counter()
    # best-by-validation weights come back, the final ones stay in the model: both are scored
    options = replace(TrainOptions.from_config(cfg, a.seed), selection="best_val")
    result = train_model(model, train_xy, val_xy, options, cpu, on_epoch=on_epoch if a.curve else None)
    seconds = time.perf_counter() - t0

    scores = {"final": test_dice(False), "final_tta": test_dice(True)}
    model.load_state_dict(result.best_state)
    scores.update(best=test_dice(False), best_tta=test_dice(True))
    best_val = None if math.isnan(result.best_val_dice) else round(result.best_val_dice, 4)
    out = {
        "model": a.model,
        "seed": a.seed,
        "config": {k: getattr(cfg, k) for k in RECORDED},
        "train_on_val": a.train_on_val,
        "n_train": len(train),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "train_seconds": round(seconds, 1),
        "best_epoch": result.best_epoch,
        "best_val_dice": best_val,
        "test_dice": scores,
        **({"curve": curve} if a.curve else {}),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

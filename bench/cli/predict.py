"""`covbench predict RUN --model NAME --input PATH --output DIR`: segment new images with a
finished run's models; the work is in `covbench.training.predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covbench.cli.common import ERRORS, fail, folder_warnings, say


def predict(
    run_dir: Annotated[Path, typer.Argument(help="a covbench run folder with finished trials")],
    model: Annotated[str, typer.Option(help="the model of the run to predict with")],
    input: Annotated[Path, typer.Option("--input", help="a NIfTI volume or image file, or a folder of them")],
    output: Annotated[Path, typer.Option(help="folder for the masks (created)")],
    seed: Annotated[
        int | None, typer.Option(help="use this seed's weights only (default: average every finished seed)")
    ] = None,
    lung: Annotated[
        Path | None,
        typer.Option(
            help="lung mask of a NIfTI input (a folder of them for a folder of inputs), for the run's "
            "crop to the lung; without it the lung is estimated"
        ),
    ] = None,
) -> None:
    """Segment new images with the run's pre-processing and evaluated weights (a seed ensemble by
    default); masks are written in the input's geometry (NIfTI: its affine and shape; PNG: its size)."""
    from covbench.folder.lock import run_lock
    from covbench.training.predict import list_inputs, load_predictor, predict_files

    try:
        with run_lock(run_dir, create=False), folder_warnings():
            predictor = load_predictor(run_dir, model, seed)
            files = list_inputs(input, predictor.reader)
            seeds = ", ".join(str(m.seed) + (f"/fold {m.fold}" if m.fold else "") for m in predictor.members)
            say(f"{model}: {len(predictor.members)} trial(s) (seed {seeds}) on {predictor.device}; "
                f"{len(files)} input(s)")  # fmt: skip
            predict_files(predictor, files, output, lung, on_written=lambda src, dst: say(f"{src} -> {dst}"))
    except ERRORS as exc:
        raise fail(exc) from None

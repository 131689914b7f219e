"""`covbench run`: options in, `covbench.config.build_config` and `covbench.execution.runner.execute` called,
progress and the report printed."""

from __future__ import annotations

import inspect
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from covbench.cli.common import ERRORS, console, err_console, fail, folder_warnings, say, warn
from covbench.cli.config_file import blame_file, file_keys, load_config, option_flag
from covbench.cli.progress import RunProgress
from covbench.cli.reports import print_report
from covbench.config import DEFAULT_CHECKPOINT_SECONDS, DEFAULT_STALL_SECONDS, RunConfig
from covbench.errors import CovbenchError, RunFailed, quote
from covbench.execution.options import MAX_TRIALS, ExecutionOptions, check_trial_count
from covbench.execution.tracking import check_tracker

if TYPE_CHECKING:
    from covbench.execution.runner import RunOutcome
    from covbench.folder.storage import Storage

# Options that decide a run's numbers: `--resume DIR` takes them from DIR/config.json instead.
_CONFIG_OPTIONS = (
    "models", "seeds", "max_seeds", "seed_step", "preset", "epochs", "image_size", "batch_size", "lr",
    "width",
    "augment", "loss", "val_fraction", "tta", "dataset", "data_dir", "split", "folds", "model_option",
    "deterministic", "spacing", "amp", "dataset_option", "selection", "test_dataset", "test_data_dir",
    "test_dataset_option",
)  # fmt: skip


def _load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    return load_config(ctx, value, run)


def run(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            is_eager=True,
            callback=_load_config,
            help="YAML file of run options (keys: the option names, e.g. image-size: 128); "
            "options on the command line win (docs/configuration.md)",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="print the resolved configuration (YAML, loadable with --config) and the trial plan; "
            "train nothing, write nothing"
        ),
    ] = False,
    models: Annotated[str, typer.Option(help="'all', 'paper' or a comma list of model names")] = "all",
    seeds: Annotated[int, typer.Option(help="number of random seeds per model (seeds 0..N-1)")] = 5,
    max_seeds: Annotated[
        int | None,
        typer.Option(
            help="rounds of seeds: --seeds is the first round; more rounds while a primary verdict is "
            "open, up to this many seeds per model (docs/reports.md)"
        ),
    ] = None,
    seed_step: Annotated[int | None, typer.Option(help="seeds a round adds (default: --seeds)")] = None,
    preset: Annotated[
        str, typer.Option(help="auto (paper on CUDA, cpu otherwise), paper, cpu or smoke")
    ] = "auto",
    epochs: Annotated[int | None, typer.Option(help="override the preset's epochs")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="override the preset's image size (multiple of 16)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="override the preset's batch size")] = None,
    lr: Annotated[float | None, typer.Option(help="override the preset's Adam learning rate")] = None,
    width: Annotated[
        int | None, typer.Option(help="scale every model to WIDTH/64 of its paper width (default: preset)")
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(help="training augmentation: none (the paper's), flip or affine (default: preset)"),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="dice (the paper's) or dice_bce (default: preset)")] = None,
    dataset: Annotated[str, typer.Option(help="dataset adapter (see `covbench data list`)")] = "phantom",
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset lies")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<timestamp>)")] = None,
    address: Annotated[str | None, typer.Option(help="join a Ray cluster: 'auto' or ray://host:port")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="where trials keep checkpoints and evaluated weights: s3://BUCKET/PREFIX, gs://..., "
            "file:///PATH (default: the run folder, which every node must then see; docs/cluster.md)"
        ),
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial; torch threads follow")] = 1.0,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(help="GPUs per trial (default: as many trials per GPU as fit, see docs/performance.md)"),
    ] = None,
    max_retries: Annotated[int, typer.Option(help="retries of a trial whose worker died")] = 2,
    debug: Annotated[bool, typer.Option(help="run trials in this process, without Ray (for pdb)")] = False,
    split: Annotated[
        str | None,
        typer.Option(
            help="patient, kfold, ma2021, ma2021-limited, paper or predefined (default: the dataset's own)"
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option("--tta/--no-tta", help="average test predictions over four flips (default: preset)"),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="share of the non-test patients held out for validation (default: the split's own); "
            "0 = none, the final epoch's weights are evaluated"
        ),
    ] = None,
    selection: Annotated[
        str | None,
        typer.Option(
            help="best_val (the epoch of the best validation Dice) or final (the last epoch's weights; "
            "validation still logged) (default: preset)"
        ),
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="number of folds for --split kfold (default 5); one trial per fold")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue the run in DIR with the configuration stored in DIR/config.json"),
    ] = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option(
            "--model-option",
            help="MODEL.KEY=VALUE for one model's build (repeatable), e.g. unetpp.deep_supervision=false",
        ),
    ] = None,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset-option",
            help="KEY=VALUE for the dataset adapter (repeatable), e.g. label=lesion, label=2, channel=0 "
            "(nnunet; datasets/README.md)",
        ),
    ] = None,
    test_dataset: Annotated[
        str | None,
        typer.Option(
            help="test on every patient of this dataset instead of a part of --dataset, which then "
            "gives train and validation patients only (generalisation to another hospital)",
        ),
    ] = None,
    test_data_dir: Annotated[
        Path | None,
        typer.Option(help="the --test-dataset's folder (for a dataset read from disk)"),
    ] = None,
    test_dataset_option: Annotated[
        list[str] | None,
        typer.Option(
            "--test-dataset-option",
            help="KEY=VALUE for the --test-dataset's adapter (repeatable), as --dataset-option",
        ),
    ] = None,
    spacing: Annotated[
        str | None,
        typer.Option(
            help="pixel size in mm (ROW or ROW,COL) of 2D slices that carry none (image-folder); "
            "distances are then in mm instead of pixels"
        ),
    ] = None,
    amp: Annotated[
        str | None,
        typer.Option(
            help="mixed precision: auto (bf16 on GPUs of compute capability 8.0+, fp16 with a "
            "GradScaler on 7.x, float32 elsewhere), bf16, fp16 or off (default: auto)"
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option(
            "--deterministic/--no-deterministic",
            help="deterministic cuDNN kernels, or cuDNN autotuning (faster on a GPU, results vary in the "
            "last digits); default: deterministic on a CPU, autotuned on CUDA (docs/performance.md)",
        ),
    ] = None,
    primary: Annotated[
        str | None,
        typer.Option(help="the metric whose verdicts are the report's headline (default dice; report only)"),
    ] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            help="seconds between a trial's resumable checkpoints (written in the background, always "
            "after the first epoch; 0 = every epoch)"
        ),
    ] = DEFAULT_CHECKPOINT_SECONDS,
    track: Annotated[
        str,
        typer.Option(
            help="experiment tracking: none, or mlflow (pip install 'covbench[mlflow]'): one MLflow run per "
            "covbench run, one child run per trial, in RUN/mlflow unless MLFLOW_TRACKING_URI is set"
        ),
    ] = "none",
    stall_timeout: Annotated[
        float,
        typer.Option(
            help="seconds without progress (a training step, an epoch, an evaluation step) after which "
            "a trial is stopped and recorded as failed ('stalled'); bounds each model's contract check "
            "too; 0 = never (docs/cluster.md)"
        ),
    ] = DEFAULT_STALL_SECONDS,
    max_trials: Annotated[
        int,
        typer.Option(help="refuse a plan of more trials (models x seeds x folds) than this (a typo guard)"),
    ] = MAX_TRIALS,
    allow_version_change: Annotated[
        bool,
        typer.Option(
            help="continue a run folder trained by another covbench or model-plugin version "
            "(refused otherwise; the report then lists the change)"
        ),
    ] = False,
) -> None:
    """Train and evaluate every selected model over several seeds, then write the report."""
    from covbench.execution.interrupt import exit_code
    from covbench.folder.state import check_out_folder
    from covbench.folder.storage import Storage
    from covbench.metrics import METRICS

    try:
        if primary is not None and primary not in METRICS:
            raise CovbenchError(f"--primary must be one of {', '.join(METRICS)}, got {quote(primary)}")
        cfg = _run_config(ctx)
        check_trial_count(cfg, max_trials)
        check_tracker(track)
        where = Storage.parse(storage) if storage else None  # a malformed URI: exit 2 before anything
        opts = _execution_options(ctx, where)
        if dry_run:
            if resume or out:
                check_out_folder(resume or out)  # the refusal the run would make, nothing written
            _dry_run(ctx, cfg, resume or out, opts)
            return
        run_dir = resume or out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        console.print(
            f"covbench run → [bold]{escape(str(run_dir))}[/]  preset={cfg.preset} "
            f"models={escape(','.join(cfg.models))} seeds={len(cfg.seeds)} epochs={cfg.epochs} "
            f"size={cfg.image_size} width={cfg.width} augment={cfg.augment} loss={cfg.loss} tta={cfg.tta} "
            f"split={cfg.split} deterministic={cfg.deterministic}"
            + (f" folds={cfg.folds}" if cfg.folds > 1 else "")
        )
        outcome = _execute_and_report(cfg, run_dir, opts, track, primary)
        say(
            f"wall time {outcome.wall_seconds:.0f} s; {len(outcome.done)} trials run, "
            f"{len(outcome.skipped)} already done; results in {run_dir}"
        )
        if outcome.failed:
            raise RunFailed(
                f"{len(outcome.failed)} trial(s) failed: "
                + "; ".join(f"{name}: {error}" for name, error in sorted(outcome.failed.items()))
            )
    except ERRORS as exc:
        raise fail(blame_file(ctx, exc)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (covbench.execution.interrupt)
        stopped = getattr(exc, "name", "SIGINT")
        err_console.print(
            f"interrupted ({stopped}): finished trials are kept; run the same command again to resume",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=exit_code(exc)) from None


def _run_config(ctx: typer.Context) -> RunConfig:
    """The run's configuration: `--resume DIR`'s own (options that would change it refused), or
    built from the options, the `--config` file and the preset."""
    from covbench import registry
    from covbench.config import (
        build_config,
        parse_dataset_options,
        parse_model_options,
        parse_spacing,
        resolve_preset,
    )
    from covbench.execution.runner import resume_config

    p = ctx.params
    if p["resume"] is not None:
        given = [
            option_flag(name)
            for name in _CONFIG_OPTIONS
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
        ] + [f"{key} (in {p['config']})" for key in file_keys(ctx, _CONFIG_OPTIONS)]
        return resume_config(p["resume"], p["out"], given)
    chosen = registry.resolve_models(p["models"])
    return build_config(
        models=chosen,
        n_seeds=p["seeds"],
        max_seeds=p["max_seeds"],
        seed_step=p["seed_step"],
        preset=resolve_preset(p["preset"]),
        epochs=p["epochs"],
        image_size=p["image_size"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        width=p["width"],
        augment=p["augment"],
        loss=p["loss"],
        dataset=p["dataset"],
        data_dir=str(p["data_dir"]) if p["data_dir"] else None,
        split=p["split"],
        val_fraction=p["val_fraction"],
        tta=p["tta"],
        selection=p["selection"],
        deterministic=p["deterministic"],  # None: by the device
        spacing=parse_spacing(p["spacing"]),
        folds=p["folds"],
        model_options=parse_model_options(p["model_option"] or [], chosen),
        dataset_options=parse_dataset_options(p["dataset_option"] or []),
        test_dataset=p["test_dataset"],
        test_data_dir=str(p["test_data_dir"]) if p["test_data_dir"] else None,
        test_dataset_options=parse_dataset_options(p["test_dataset_option"] or [], "--test-dataset-option"),
        **({"amp": p["amp"]} if p["amp"] is not None else {}),
    )


def _execution_options(ctx: typer.Context, storage: Storage | None) -> ExecutionOptions:
    """How the run executes, from its options: one value for the run and its `--dry-run`."""
    p = ctx.params
    return ExecutionOptions(
        address=p["address"],
        cpus_per_trial=p["cpus_per_trial"],
        gpus_per_trial=p["gpus_per_trial"],
        max_retries=p["max_retries"],
        debug=p["debug"],
        checkpoint_every=p["checkpoint_every"],
        stall_timeout=p["stall_timeout"],
        storage=storage,
        allow_version_change=p["allow_version_change"],
    )


def _execute_and_report(
    cfg: RunConfig, run_dir: Path, opts: ExecutionOptions, track: str, primary: str | None
) -> RunOutcome:
    """The run under the folder's lock, from the configuration check to the last report file
    (one writer), with progress, tracking, and a report of what completed even if trials failed."""
    from covbench.execution.runner import execute
    from covbench.execution.tracking import open_tracker
    from covbench.folder.state import writing_run_folder

    with writing_run_folder(run_dir), folder_warnings():
        # the folder is covbench's from here on, before the tracker's store lands in it
        tracker, report = open_tracker(track, run_dir, warn=warn), None
        try:
            with RunProgress(console) as progress:
                outcome = execute(
                    cfg,
                    run_dir,
                    opts,
                    on_event=lambda kind, info: (progress.event(kind, info), tracker.event(kind, info)),
                )
            if outcome.done or outcome.skipped:
                report = print_report(run_dir, primary=primary)
        except BaseException as exc:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", report)
            raise
        tracker.finish("FAILED" if outcome.failed else "FINISHED", report)
    return outcome


def _dry_run(ctx: typer.Context, cfg: RunConfig, run_dir: Path | None, opts: ExecutionOptions) -> None:
    """`--dry-run`: the checks the run makes before its first trial, then the resolved options and
    the plan on stdout; no Ray, no training, no file written."""
    from covbench.cli.config_file import resolved_options, to_yaml
    from covbench.cli.dry_run import print_dry_run
    from covbench.execution.dry_run import plan_run
    from covbench.execution.tracking import tracking_note

    p = {name: ctx.params[name] for name in inspect.signature(run).parameters if name in ctx.params}
    plan = plan_run(cfg, run_dir, opts)
    if p["track"] != "none":
        plan.notes.append(tracking_note(p["track"], run_dir))
    print_dry_run(to_yaml(resolved_options(cfg, p)), plan)

"""The `covbench` command. Commands translate options into library calls and print what comes
back; the library decides.

    __init__  the app: commands and sub-apps registered here, `main` (the console script)
    common    consoles, `fail` (the one error path: one escaped line, the error's exit code), warnings
    run       `covbench run`, with `progress` (its live display), `config_file` (`--config FILE.yaml`)
              and `dry_run` (`--dry-run`'s output)
    reports   `report`, `plan`, `compare`, `track`, `history`
    models    `models`, `models check`
    data      `data list | info | download`
    predict   `predict` (masks for new images from a finished run)

Every user-fixable problem surfaces as a `CovbenchError`, printed as one line on stderr with exit
code 2 (1 when trials failed or a comparison found a regression).
"""

from __future__ import annotations

import sys

import typer

from covbench.cli import reports
from covbench.cli.data import data_app
from covbench.cli.models import models_app
from covbench.cli.predict import predict
from covbench.cli.run import run

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark COVID-19 lesion segmentation models: train from scratch over seeds, score, compare.",
)
app.command("run")(run)
for command in (reports.report, reports.plan, reports.compare, reports.track, reports.history):
    app.command(command.__name__)(command)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.command("predict")(predict)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

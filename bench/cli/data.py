"""`covbench data list | info | download`: dataset adapters, a data folder described, COVID-19-CT-Seg
fetched. The work is in `covbench.datasets`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from covbench import registry
from covbench.cli.common import ERRORS, console, err_console, fail, say, warn

data_app = typer.Typer(
    no_args_is_help=True, help="Dataset adapters: list them, inspect a folder, download data."
)


@data_app.command("list")
def list_() -> None:
    """The registered dataset adapters (entry-point group `covbench.datasets`)."""
    table = Table("name", "title", "data dir", "default split", "reference")
    for name in registry.list_datasets():
        spec = registry.get_dataset(name)
        table.add_row(
            escape(name),
            escape(spec.title),
            "needed" if spec.needs_data_dir else "built in",
            escape(spec.default_split),
            escape(spec.reference),
        )
    console.print(table)


@data_app.command()
def info(
    name: Annotated[str, typer.Argument(help="dataset adapter, see `covbench data list`")],
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset lies")] = None,
    skip_bad: Annotated[bool, typer.Option(help="skip bad cases with a warning instead of failing")] = False,
    dataset_option: Annotated[
        list[str] | None,
        typer.Option("--dataset-option", help="KEY=VALUE for the adapter, as `covbench run` takes it"),
    ] = None,
) -> None:
    """Cases, slices, lesion-slice share, sizes, spacing range and intensity range per source."""
    from covbench import registry
    from covbench.config import parse_dataset_options
    from covbench.datasets.info import describe

    try:
        options = parse_dataset_options(dataset_option or [])
        d = describe(name, data_dir, options=options, skip_bad=skip_bad)
        spec = registry.get_dataset(name)
    except ERRORS as exc:
        raise fail(exc) from None
    console.print(escape(spec.title) + (f" ({escape(spec.reference)})" if spec.reference else ""))
    sizes = ", ".join(f"{h}x{w}" for h, w in d["sizes"][:6]) + (" ..." if len(d["sizes"]) > 6 else "")
    console.print(f"[bold]{escape(d['dataset'])}[/] {escape(str(d['data_dir'] or '(built in)'))}")
    share = f"lesion in {100 * d['lesion_slice_share']:.1f} % of"
    if d["lung_masks"]:
        console.print(
            f"cases {d['cases']}, slices {d['slices']} ({d['slices_with_lung']} with lung, {share} them)"
        )
    else:
        console.print(f"cases {d['cases']}, slices {d['slices']} ({share} them; no lung masks)")
    console.print(f"sizes (H x W): {sizes}")
    lo, hi = d["spacing_min"], d["spacing_max"]
    console.print(
        f"spacing {d.get('spacing_unit') or 'mm'} (Z, H, W): "
        + ", ".join(f"{a:.3g}-{b:.3g}" for a, b in zip(lo, hi, strict=True))
    )
    if d["predefined_parts"]:
        say("predefined split: " + ", ".join(f"{k} {v}" for k, v in d["predefined_parts"].items()))
    table = Table("source", "cases", "slices", "intensity", "min", "max")
    for src, s in d["sources"].items():
        table.add_row(
            escape(src),
            str(s["cases"]),
            str(s["slices"]),
            escape(", ".join(s["intensity"])),
            f"{s['min']:g}",
            f"{s['max']:g}",
        )
    console.print(table)


@data_app.command()
def download(
    name: Annotated[str, typer.Argument(help="dataset to fetch (covid-ct-seg)")],
    dest: Annotated[Path, typer.Option(help="folder to download and extract into")],
    from_dir: Annotated[
        Path | None,
        typer.Option("--from", help="use the zip archives already in this folder instead of downloading"),
    ] = None,
) -> None:
    """Download (resumable), verify and safely extract a dataset's archives. `--from` archives
    are checked against `<archive>.md5`/`.sha256` beside them, else the record's published
    checksums when reachable; an archive no checksum is known for is named in a warning and
    recorded as "crc only" in DEST/covbench-data.json."""
    from covbench.datasets import download as dl

    try:
        dl.check_downloadable(name)
        if from_dir is not None:
            dl.install_from_dir(from_dir, dest, api_url=dl.API_URL, notify=warn)
        else:
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, console=err_console) as bar:
                tasks: dict[str, int] = {}

                def progress(file: str, done: int, total: int | None) -> None:
                    if file not in tasks:
                        tasks[file] = bar.add_task(escape(file), total=total)
                    bar.update(tasks[file], completed=done, total=total)

                dl.download(dest, progress=progress, notify=warn)
    except ERRORS as exc:
        raise fail(exc) from None
    say(f"{name} ready in {dest}; try `covbench data info {name} --data-dir {dest}`")

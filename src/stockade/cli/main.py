"""The ``stockade`` command."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from stockade import __version__
from stockade.image import Limits
from stockade.model import Inventory, StockadeError

app = typer.Typer(
    name="stockade",
    help="Container security: image inventory (SBOM) and more. Exit codes: 0 ok, 1 bad input, 2 usage.",
    no_args_is_help=True,
    add_completion=False,
)


def _err(message: str) -> None:
    """One line on stderr; rich is imported only when there is something to say (it costs 40 ms)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(message)


EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


class SbomFormat(StrEnum):
    table = "table"
    json = "json"
    cyclonedx = "cyclonedx"
    spdx = "spdx"


@app.command()
def version() -> None:
    """Print stockade's version."""
    typer.echo(__version__)


def _print_table(inv: Inventory) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    os_line = f"{inv.os.family} {inv.os.name}" if inv.os else "unknown (scratch or unrecognised)"
    out.print(f"[bold]{inv.source}[/]  os: {os_line}  layers: {len(inv.layers)}  packages: {len(inv.packages)}")
    table = Table(show_lines=False)
    for col in ("Name", "Version", "Type", "Source", "Location", "Layer"):
        table.add_column(col, overflow="fold")
    for p in inv.packages:
        src = p.source_name if p.source_name and p.source_name != p.name else ""
        table.add_row(p.name, p.version, p.ecosystem, src, p.location, p.layer_digest[7:19])
    out.print(table)


@app.command()
def sbom(
    image: Annotated[
        str, typer.Argument(help="docker-archive tar, OCI layout (dir or tar), rootfs dir, or registry ref")
    ],
    fmt: Annotated[SbomFormat, typer.Option("--format", "-f", help="Output format")] = SbomFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    platform: Annotated[
        str | None,
        typer.Option(help="Platform of a multi-arch image: os/arch or os/arch/variant (default: this machine)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or warnings on stderr")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the layer cache")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Layer cache directory")] = None,
    max_file_size: Annotated[int, typer.Option(help="Largest file read for cataloguing, in MiB")] = 512,
    lockfiles: Annotated[bool, typer.Option(help="Also read lock files (package-lock.json, go.mod, ...)")] = False,
) -> None:
    """List every package in an image (table, stockade JSON, CycloneDX 1.6 or SPDX 2.3)."""
    from stockade.inventory import catalog_image
    from stockade.inventory.formats import to_cyclonedx, to_json, to_spdx

    limits = Limits(max_file_bytes=max_file_size * 1024**2)
    show_progress = not quiet and sys.stderr.isatty()
    try:
        if show_progress:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            with Progress(
                TextColumn("layers"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                console=Console(stderr=True),
                transient=True,
            ) as bar:
                task = bar.add_task("layers", total=None)

                def step(done: int, total: int, _digest: str) -> None:
                    bar.update(task, completed=done, total=total)

                inv = catalog_image(
                    image, platform, limits, False if no_cache else (cache_dir or True), step, lockfiles
                )
        else:
            inv = catalog_image(
                image, platform, limits, False if no_cache else (cache_dir or True), lockfiles=lockfiles
            )
    except StockadeError as exc:
        _err(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_INPUT) from None
    if not quiet:
        for w in inv.warnings:
            _err(f"[yellow]warning:[/] {w}")
    if fmt is SbomFormat.table and output is None:
        _print_table(inv)
        return
    data = {
        SbomFormat.json: to_json,
        SbomFormat.table: to_json,
        SbomFormat.cyclonedx: to_cyclonedx,
        SbomFormat.spdx: to_spdx,
    }[fmt](inv)
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
    else:
        try:
            output.write_bytes(data)
        except OSError as exc:
            _err(f"[red]error:[/] cannot write {output}: {exc.strerror}")
            raise typer.Exit(EXIT_INPUT) from None


if __name__ == "__main__":  # pragma: no cover
    app()

"""`stockade intel`: the threat-intelligence lists the detection rules read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import err, input_errors

intel_app = typer.Typer(help="Threat-intelligence lists (Tor exits, malicious IPs, C2, mining pools) for the rules.",
                        no_args_is_help=True)  # fmt: skip


@intel_app.command("update")
def intel_update(
    sources: Annotated[
        list[Path] | None, typer.Argument(help="Publishers' archives or directories (e.g. ../shared/data/intel/*)")
    ] = None,
    online: Annotated[bool, typer.Option(help="Also fetch each list from its publisher")] = False,
    store: Annotated[
        Path | None, typer.Option("--dir", envvar="STOCKADE_INTEL_DIR", help="Indicator store directory")
    ] = None,
) -> None:
    """Rebuild the indicator store; detectors started afterwards (and `audit serve` at its next reload) use it."""
    from stockade.intel import update

    if not sources and not online:
        err("[red]error:[/] name the publishers' archives or directories, or pass --online")
        raise typer.Exit(2)
    with input_errors():
        rep = update(sources or [], store, online)
    for name, n in rep.written.items():
        err(f"  {name}: {n} entries")
    for name in rep.kept:
        err(f"[yellow]warning:[/] {name}: no input held it; the previous list (if any) is kept")


@intel_app.command("status")
def intel_status(
    store: Annotated[
        Path | None, typer.Option("--dir", envvar="STOCKADE_INTEL_DIR", help="Indicator store directory")
    ] = None,
) -> None:
    """Each list: entries, where it came from, age."""
    from stockade.intel import status

    for name, info in status(store).items():
        typer.echo(f"{name:16} {info['entries']:>8} entries  {info['age_days']:>3} days old  from {info['from']}")

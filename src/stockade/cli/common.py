"""What every command shares: exit codes, turning a StockadeError into one line on stderr, output, and the
options that send results to the central server."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from stockade.model import StockadeError

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def err(message: str) -> None:
    """One line on stderr; rich is imported only when there is something to say (it costs 40 ms)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message)


@contextlib.contextmanager
def input_errors() -> Iterator[None]:
    """A StockadeError (bad input, named in the message) becomes one red line and exit code 1."""
    try:
        yield
    except StockadeError as exc:
        err(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_INPUT) from None


SERVER_OPT = typer.Option("--server", envvar="STOCKADE_SERVER", help="Also send to this stockade server (URL)")
CLUSTER_OPT = typer.Option("--cluster", envvar="STOCKADE_CLUSTER", help="This cluster's name on the server")
TOKEN_OPT = typer.Option(
    "--token", envvar="STOCKADE_TOKEN", help="Token the server issued (better: $STOCKADE_TOKEN)", show_default=False
)


def write(data: bytes, output: Path | None) -> None:
    """``data`` to the file ``output``, or to stdout (with a line end) when there is none."""
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        err(f"[red]error:[/] cannot write {output}: {exc.strerror}")
        raise typer.Exit(EXIT_INPUT) from None


def alert_sender(server: str | None, cluster: str | None, token: str | None, component: str) -> Any:
    """Alerts to the central server in the background (new ones, then how much their counts grew), or None
    without --server."""
    if not server:
        return None
    from stockade.rules import AlertDeltas
    from stockade.server.client import Client, Publisher

    return AlertDeltas(Publisher(Client(server, token or "", cluster or ""), "alerts", component))

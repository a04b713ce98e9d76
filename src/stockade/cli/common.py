"""What every command shares: exit codes and turning a StockadeError into one line on stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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

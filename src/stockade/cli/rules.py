"""`stockade rules`: check the rule files users write (the ones --rules takes) and list the built-in rules."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from stockade.cli.common import EXIT_INPUT, err, write

rules_app = typer.Typer(help="Rule files: check yours, list the built-in ones.", no_args_is_help=True)


class Engine(StrEnum):
    posture = "posture"
    audit = "audit"
    sensor = "sensor"


@rules_app.command("check")
def rules_check(
    files: Annotated[list[Path], typer.Argument(help="Rule files (YAML) as --rules takes them")],
    engine: Annotated[
        Engine | None, typer.Option(help="The engine the files are for (default: told by their rules' keys)")
    ] = None,
) -> None:
    """Load each file as its engine would, with the built-in pack's lists and macros; print every error at
    file:line. Exit 1 when any file has one."""
    from stockade.rulepacks import check

    reports = check(files, engine.value if engine else None)
    for r in reports:
        for w in r.warnings:
            err(f"[yellow]warning:[/] {w}")
        for e in r.errors:
            typer.echo(e)
        if not r.errors:
            typer.echo(f"{r.path}: {r.rules} {r.engine} rule(s), ok")
    if any(r.errors for r in reports):
        raise typer.Exit(EXIT_INPUT)


@rules_app.command("list")
def rules_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    engine: Annotated[Engine | None, typer.Option(help="Only this engine's rules")] = None,
) -> None:
    """Every built-in rule: id, engine, severity, MITRE ATT&CK techniques (or frameworks) and title."""
    from stockade.rulepacks import builtin

    rows = [r for r in builtin() if engine is None or r["engine"] == engine.value]
    if as_json:
        write(orjson.dumps(rows, option=orjson.OPT_INDENT_2), None)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("Id", "Engine", "Severity", "MITRE / frameworks", "Title"):
        table.add_column(col, overflow="fold")
    for r in rows:
        tags = ",".join(r["mitre"]) or ", ".join(f"{k}: {','.join(map(str, v))}" if isinstance(v, list) else f"{k}: {v}"
                                                 for k, v in r["frameworks"].items())  # fmt: skip
        table.add_row(r["id"], r["engine"], r["severity"], tags, r["title"])
    Console().print(table)

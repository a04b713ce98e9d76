"""`stockade sbom`, `stockade scan` and `stockade db`: images, their packages and their vulnerabilities."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from stockade.cli.common import EXIT_INPUT, EXIT_USAGE, SERVER_OPT, TOKEN_OPT, err, input_errors, write
from stockade.image import Limits
from stockade.model import Inventory


class SbomFormat(StrEnum):
    table = "table"
    json = "json"
    cyclonedx = "cyclonedx"
    spdx = "spdx"


@contextlib.contextmanager
def _layer_progress(show: bool) -> Iterator[Callable[[int, int, str], None] | None]:
    """A progress bar over layers on stderr, or no callback at all."""
    if not show:
        yield None
        return
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

        yield step


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
    with input_errors(), _layer_progress(not quiet and sys.stderr.isatty()) as step:
        inv = catalog_image(image, platform, limits, False if no_cache else (cache_dir or True), step, lockfiles)
    if not quiet:
        for w in inv.warnings:
            err(f"[yellow]warning:[/] {w}")
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
            err(f"[red]error:[/] cannot write {output}: {exc.strerror}")
            raise typer.Exit(EXIT_INPUT) from None


class ScanFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    cyclonedx = "cyclonedx"


SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")



def scan(
    image: Annotated[str, typer.Argument(help="Image to scan: anything `stockade sbom` reads")],
    fmt: Annotated[ScanFormat, typer.Option("--format", "-f", help="Output format")] = ScanFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    db: Annotated[
        Path | None, typer.Option(help="Vulnerability database (default $STOCKADE_DB or ~/.cache/stockade/vuln.db)")
    ] = None,
    severity: Annotated[str, typer.Option(help="Comma-separated severities to report")] = ",".join(SEVERITIES),
    ignore_unfixed: Annotated[bool, typer.Option(help="Leave out vulnerabilities with no fix yet")] = False,
    exit_code: Annotated[int, typer.Option(help="Exit with this code when findings remain (for CI gates)")] = 0,
    ignorefile: Annotated[Path, typer.Option(help="Ignore file (IDs to silence)")] = Path(".stockadeignore"),
    vex: Annotated[list[Path] | None, typer.Option(help="OpenVEX or CycloneDX VEX document (repeatable)")] = None,
    show_suppressed: Annotated[bool, typer.Option(help="Also list silenced findings, with the reason")] = False,
    max_db_age: Annotated[int, typer.Option(help="Warn when the database is older than this many days")] = 7,
    platform: Annotated[
        str | None, typer.Option(help="Platform of a multi-arch image: os/arch or os/arch/variant")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings on stderr")] = False,
    lockfiles: Annotated[bool, typer.Option(help="Also read lock files in the image")] = False,
    match_os_owned: Annotated[
        bool,
        typer.Option(help="Also match language packages an OS package owns (Debian's python3-*, ruby-*, node-*) "
                          "against upstream advisories; by default only their owner's advisories apply"),
    ] = False,
    record: Annotated[
        Path | None, typer.Option(help="Record the result in this scan store (read by the admission gate)")
    ] = None,
    record_as: Annotated[
        list[str] | None,
        typer.Option(help="Image reference(s) to record it under (default: the image argument, its tags, digests)"),
    ] = None,
    server: Annotated[str | None, SERVER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
) -> None:
    """Report the known vulnerabilities of every package in an image, offline, from the local database."""
    from stockade.match import report
    from stockade.match.matcher import filter_findings
    from stockade.match.scan import Recorder, db_age_days, scan_image

    wanted = {s.strip().upper() for s in severity.split(",") if s.strip()}
    if not wanted <= set(SEVERITIES):
        err(f"[red]error:[/] --severity takes {', '.join(SEVERITIES)}")
        raise typer.Exit(EXIT_USAGE)
    recorders: list[Recorder] = []
    if record is not None:
        from stockade.admission.scans import recorder

        recorders.append(recorder(record, record_as))
    if server:
        from stockade.server.client import scan_sender

        recorders.append(scan_sender(server, token or "", record_as))
    with input_errors():
        result = scan_image(image, db, platform, lockfiles, ignorefile, vex or [], recorders, match_os_owned)
    inv, findings, built = result.inventory, result.findings, result.db_built_at
    age = db_age_days(built)
    if age is not None and age > max_db_age and not quiet:
        err(f"[yellow]warning:[/] the vulnerability database is {age} days old; run 'stockade db update'")
    if not quiet:
        for w in inv.warnings:
            err(f"[yellow]warning:[/] {w}")
    shown = filter_findings(findings, wanted, ignore_unfixed)
    active = [f for f in shown if not f.suppressed]
    listed = shown if show_suppressed else active
    db_info = {"path": result.db_path, "built_at": built}
    if fmt is ScanFormat.table and output is None:
        _print_findings(inv, listed, len(shown) - len(active))
    else:
        data = {
            ScanFormat.json: lambda: report.to_json(inv, listed, db_info),
            ScanFormat.table: lambda: report.to_json(inv, listed, db_info),
            ScanFormat.sarif: lambda: report.to_sarif(inv, active),
            ScanFormat.cyclonedx: lambda: report.to_cyclonedx(inv, active),
        }[fmt]()
        write(data, output)
    if active and exit_code:
        raise typer.Exit(exit_code)


def _print_findings(inv: Inventory, findings: list[Any], suppressed: int) -> None:
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    out = Console()
    counts = Counter(f.severity for f in findings if not f.suppressed)
    summary = ", ".join(f"{s}: {counts[s]}" for s in SEVERITIES if counts[s])
    os_line = f"{inv.os.family} {inv.os.name}" if inv.os else "no OS detected"
    out.print(
        f"[bold]{inv.source}[/] ({os_line}): {len(findings)} vulnerabilities ({summary or 'none'})"
        + (f", {suppressed} suppressed" if suppressed else "")
    )
    colour = {"CRITICAL": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "cyan", "UNKNOWN": "white"}
    table = Table()
    for col in ("Package", "Vulnerability", "Severity", "Installed", "Fixed", "KEV", "Title"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(
            f.package.name,
            f.vuln_id,
            f"[{colour.get(f.severity, 'white')}]{f.severity}[/]",
            f.installed_version,
            f.fixed_version or "-",
            "yes" if f.kev else "",
            (f.suppressed or f.title)[:80],
        )
    out.print(table)


db_app = typer.Typer(help="Build, inspect and move the vulnerability database.", no_args_is_help=True)


@db_app.command("build")
def db_build(
    paths: Annotated[list[Path] | None, typer.Argument(help="Feed archives (tar.gz, zip) or directories")] = None,
    from_: Annotated[list[Path] | None, typer.Option("--from", help="Same as the arguments; repeatable")] = None,
    db: Annotated[Path | None, typer.Option(help="Database to write")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Import feeds as published (OSV, Alpine secdb, Debian OVAL, KEV...) into a new database."""
    import time

    from stockade.vulndb.build import build
    from stockade.vulndb.store import default_db_path

    dest = db or default_db_path()
    sources = [*(paths or []), *(from_ or [])]
    if not sources:
        err("[red]error:[/] name at least one feed archive or directory")
        raise typer.Exit(EXIT_USAGE)
    t0 = time.perf_counter()
    with input_errors():
        rep = build(sources, dest, None if quiet else (lambda name: err(f"importing {name}")))
    for w in rep.warnings:  # even with --quiet: a feed read as nothing is a silent gap in every scan
        err(f"[yellow]warning:[/] {w}")
    if not quiet:
        for st in rep.sources.values():
            err(f"  {st.name}: {st.records} records" + (f", {st.bad} bad (first: {st.errors[0]})" if st.bad else ""))
        err(f"{dest}: built in {time.perf_counter() - t0:.1f} s")


@db_app.command("status")
def db_status(
    db: Annotated[Path | None, typer.Option(help="Database to read")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Sources, record counts, bad records and age of the database."""
    import orjson

    from stockade.vulndb.store import VulnDB

    with input_errors():
        vdb = VulnDB(db)
    sources = vdb.sources()
    size = vdb.path.stat().st_size
    info: dict[str, Any] = {"path": str(vdb.path), "built_at": vdb.meta("built_at"), "size": size, "sources": sources}
    if as_json:
        write(orjson.dumps(info, option=orjson.OPT_INDENT_2), None)
        return
    typer.echo(f"{info['path']}  built {info['built_at']}  {size / 1e6:.1f} MB")
    for s in sources:
        typer.echo(f"  {s['name']:52} {s['records']:>7} records  {s['bad']:>5} bad  imported {s['imported_at']}")


@db_app.command("update")
def db_update(
    db: Annotated[Path | None, typer.Option(help="Database to rebuild")] = None,
    feed_dir: Annotated[
        Path | None, typer.Option(help="Where downloaded feeds are kept (default next to the DB)")
    ] = None,
    feeds: Annotated[
        Path | None, typer.Option(help="Feeds file (YAML list of name, url, path) instead of the defaults")
    ] = None,
    only: Annotated[list[str] | None, typer.Option(help="Fetch only these feeds (by name); repeatable")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Download the feeds from their publishers (conditional, retried, resumable) and rebuild the database."""
    from stockade.vulndb.store import default_db_path
    from stockade.vulndb.update import FetchResult, refresh

    def progress(r: FetchResult) -> None:
        err(f"  {r.feed}: {r.status}" + (f" ({r.bytes} bytes)" if r.bytes else "")
            + (f" [red]{r.detail}[/]" if r.detail else ""))  # fmt: skip

    dest = db or default_db_path()
    with input_errors():
        done = refresh(dest, feed_dir, feeds, only, None if quiet else progress)
    if not done.rebuilt:
        if not quiet:
            err(f"{dest}: every feed unchanged; database kept")
        return
    failed = done.failed
    if not quiet:
        err(
            f"{dest}: rebuilt from {done.sources} sources"
            + (f"; {len(failed)} feeds failed and kept their previous copy" if failed else "")
        )
    if failed:
        raise typer.Exit(EXIT_INPUT)


@db_app.command("export")
def db_export(
    out: Annotated[Path, typer.Argument(help="Bundle to write (.tar.zst)")],
    db: Annotated[Path | None, typer.Option(help="Database to export")] = None,
) -> None:
    """Write the database as one compressed bundle for an air-gapped site; prints its sha256."""
    from stockade.vulndb.bundle import export
    from stockade.vulndb.store import default_db_path

    with input_errors():
        digest = export(db or default_db_path(), out)
    typer.echo(f"sha256:{digest}  {out}")


@db_app.command("import")
def db_import(
    bundle: Annotated[Path, typer.Argument(help="Bundle written by 'stockade db export'")],
    digest: Annotated[str | None, typer.Option(help="Expected sha256 of the bundle (from the exporting side)")] = None,
    db: Annotated[Path | None, typer.Option(help="Database to replace")] = None,
) -> None:
    """Verify a bundle and install its database."""
    from stockade.vulndb.bundle import import_bundle
    from stockade.vulndb.store import default_db_path

    with input_errors():
        manifest = import_bundle(bundle, db or default_db_path(), digest)
    typer.echo(f"imported database built {manifest.get('built_at')} ({len(manifest.get('sources', []))} sources)")



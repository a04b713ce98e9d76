"""The ``stockade`` command."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from stockade import __version__
from stockade.cli.common import EXIT_INPUT, EXIT_USAGE
from stockade.cli.common import err as _err
from stockade.cli.common import input_errors as _input_errors
from stockade.cli.server_cmds import agent as _agent
from stockade.cli.server_cmds import publish as _publish
from stockade.cli.server_cmds import server_app
from stockade.image import Limits
from stockade.model import Inventory, StockadeError

app = typer.Typer(
    name="stockade",
    help="Container security: image inventory (SBOM) and more. Exit codes: 0 ok, 1 bad input, 2 usage.",
    no_args_is_help=True,
    add_completion=False,
)



def _alert_sender(server: str | None, cluster: str | None, token: str | None, component: str) -> Any:
    """Alerts to the central server in the background (new ones, then how much their counts grew), or None
    without --server."""
    if not server:
        return None
    from stockade.rules import AlertDeltas
    from stockade.server.client import Client, Publisher

    return AlertDeltas(Publisher(Client(server, token or "", cluster or ""), "alerts", component))


SERVER_OPT = typer.Option("--server", envvar="STOCKADE_SERVER", help="Also send to this stockade server (URL)")
CLUSTER_OPT = typer.Option("--cluster", envvar="STOCKADE_CLUSTER", help="This cluster's name on the server")
TOKEN_OPT = typer.Option(
    "--token", envvar="STOCKADE_TOKEN", help="Token the server issued (better: $STOCKADE_TOKEN)", show_default=False
)


class SbomFormat(StrEnum):
    table = "table"
    json = "json"
    cyclonedx = "cyclonedx"
    spdx = "spdx"


@app.command()
def version() -> None:
    """Print stockade's version."""
    typer.echo(__version__)


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
    with _input_errors(), _layer_progress(not quiet and sys.stderr.isatty()) as step:
        inv = catalog_image(image, platform, limits, False if no_cache else (cache_dir or True), step, lockfiles)
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


class ScanFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    cyclonedx = "cyclonedx"


SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


@app.command()
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
    from datetime import UTC, datetime

    from stockade.inventory import catalog_image
    from stockade.match import report, suppress
    from stockade.match.matcher import filter_findings, match
    from stockade.vulndb.store import VulnDB

    wanted = {s.strip().upper() for s in severity.split(",") if s.strip()}
    if not wanted <= set(SEVERITIES):
        _err(f"[red]error:[/] --severity takes {', '.join(SEVERITIES)}")
        raise typer.Exit(EXIT_USAGE)
    with _input_errors():
        vdb = VulnDB(db)
        inv = catalog_image(image, platform, lockfiles=lockfiles)
        findings = match(inv, vdb)
        rules = []
        if ignorefile.is_file():
            rules += suppress.load_ignore_file(ignorefile)
        for doc in vex or []:
            rules += suppress.load_vex(doc)
        suppress.apply(findings, rules)
        built = vdb.meta("built_at") or ""
        if record is not None:
            from stockade.admission.scans import record as record_scan

            refs = record_as or [image, *inv.repo_tags, *inv.repo_digests]
            record_scan(record, refs, findings, built)
        if server:
            from stockade.server.client import Client, scan_document

            client = Client(server, token or "")
            try:
                refs = record_as or [image]
                client.send_scans([scan_document(r, inv, findings, built) for r in refs])
            finally:
                client.close()
    if built and not quiet:
        age = datetime.now(UTC) - datetime.fromisoformat(built)
        if age.days > max_db_age:
            _err(f"[yellow]warning:[/] the vulnerability database is {age.days} days old; run 'stockade db update'")
    if not quiet:
        for w in inv.warnings:
            _err(f"[yellow]warning:[/] {w}")
    shown = filter_findings(findings, wanted, ignore_unfixed)
    active = [f for f in shown if not f.suppressed]
    listed = shown if show_suppressed else active
    db_info = {"path": str(vdb.path), "built_at": built}
    if fmt is ScanFormat.table and output is None:
        _print_findings(inv, listed, len(shown) - len(active))
    else:
        data = {
            ScanFormat.json: lambda: report.to_json(inv, listed, db_info),
            ScanFormat.table: lambda: report.to_json(inv, listed, db_info),
            ScanFormat.sarif: lambda: report.to_sarif(inv, active),
            ScanFormat.cyclonedx: lambda: report.to_cyclonedx(inv, active),
        }[fmt]()
        _write(data, output)
    if active and exit_code:
        raise typer.Exit(exit_code)


def _write(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        _err(f"[red]error:[/] cannot write {output}: {exc.strerror}")
        raise typer.Exit(EXIT_INPUT) from None


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
app.add_typer(db_app, name="db")


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
        _err("[red]error:[/] name at least one feed archive or directory")
        raise typer.Exit(EXIT_USAGE)
    t0 = time.perf_counter()
    with _input_errors():
        rep = build(sources, dest, None if quiet else (lambda name: _err(f"importing {name}")))
    if not quiet:
        for st in rep.sources.values():
            _err(f"  {st.name}: {st.records} records" + (f", {st.bad} bad (first: {st.errors[0]})" if st.bad else ""))
        _err(f"{dest}: built in {time.perf_counter() - t0:.1f} s")


@db_app.command("status")
def db_status(
    db: Annotated[Path | None, typer.Option(help="Database to read")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Sources, record counts, bad records and age of the database."""
    import orjson

    from stockade.vulndb.store import VulnDB

    with _input_errors():
        vdb = VulnDB(db)
    sources = vdb.sources()
    size = vdb.path.stat().st_size
    info: dict[str, Any] = {"path": str(vdb.path), "built_at": vdb.meta("built_at"), "size": size, "sources": sources}
    if as_json:
        _write(orjson.dumps(info, option=orjson.OPT_INDENT_2), None)
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
    from stockade.vulndb.build import build
    from stockade.vulndb.store import default_db_path
    from stockade.vulndb.update import default_feeds, load_feeds, update

    dest = db or default_db_path()
    root = feed_dir or dest.parent / "feeds"
    with _input_errors():
        chosen = load_feeds(feeds) if feeds else default_feeds()
        if only:
            chosen = [f for f in chosen if f.name in set(only)]
        results = update(
            chosen,
            root,
            progress=None
            if quiet
            else (
                lambda r: _err(
                    f"  {r.feed}: {r.status}"
                    + (f" ({r.bytes} bytes)" if r.bytes else "")
                    + (f" [red]{r.detail}[/]" if r.detail else "")
                )
            ),
        )
        failed = [r for r in results if r.status == "failed"]
        if failed and len(failed) == len(results) and not dest.exists():
            _err("[red]error:[/] no feed could be fetched")
            raise typer.Exit(EXIT_INPUT)
        if dest.exists() and all(r.status == "not modified" for r in results):
            if not quiet:
                _err(f"{dest}: every feed unchanged; database kept")
            return
        rep = build([root], dest)
    if not quiet:
        _err(
            f"{dest}: rebuilt from {len(rep.sources)} sources"
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

    with _input_errors():
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

    with _input_errors():
        manifest = import_bundle(bundle, db or default_db_path(), digest)
    typer.echo(f"imported database built {manifest.get('built_at')} ({len(manifest.get('sources', []))} sources)")


class PostureFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    compliance_json = "compliance-json"
    compliance_html = "compliance-html"


@app.command()
def posture(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Manifests: YAML/JSON files or directories, kubectl get -o json lists")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Read a live cluster with this kubeconfig (read-only)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context (default: the current one)")] = None,
    fmt: Annotated[PostureFormat, typer.Option("--format", "-f", help="Output format")] = PostureFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    exceptions: Annotated[Path | None, typer.Option(help="Exceptions file (YAML)")] = None,
    severity: Annotated[str, typer.Option(help="Comma-separated severities to report")] = "CRITICAL,HIGH,MEDIUM,LOW",
    exit_code: Annotated[int, typer.Option(help="Exit with this code when findings remain")] = 0,
    k8s_version: Annotated[
        str | None,
        typer.Option(help="Kubernetes version whose Pod Security Standards apply (default: the cluster's, or latest)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Assess Kubernetes objects against Pod Security Standards, CIS section 5, NSA/CISA and RBAC risk."""
    from stockade.posture import LATEST_K8S, OLDEST_K8S, Exceptions, evaluate, load_rules, parse_version
    from stockade.posture import load_manifests as load
    from stockade.posture import report as preport

    wanted = {x.strip().upper() for x in severity.split(",") if x.strip()}
    if not paths and kubeconfig is None and context is None:
        _err("[red]error:[/] give manifest paths, or --kubeconfig/--context for a live cluster")
        raise typer.Exit(EXIT_USAGE)
    with _input_errors():
        version = parse_version(k8s_version, "--k8s-version") if k8s_version else None
        rule_set = load_rules(rules)
        resources, warnings = load(paths) if paths else ([], [])
        if kubeconfig is not None or context is not None:
            from stockade.posture.cluster import fetch

            live, live_warnings, server_version = fetch(kubeconfig, context)
            resources += live
            warnings += live_warnings
            if version is None and server_version:
                version = parse_version(server_version, "the cluster's /version")
        exc = Exceptions.load(exceptions) if exceptions else Exceptions()
    version = min(max(version or LATEST_K8S, OLDEST_K8S), LATEST_K8S)
    findings = [f for f in evaluate(rule_set, resources, version=version) if f.rule.severity in wanted]
    excepted = {id(f): reason for f in findings if (reason := exc.reason(f))}
    active = [f for f in findings if id(f) not in excepted]
    if not quiet:
        for w in warnings:
            _err(f"[yellow]warning:[/] {w}")
    if fmt is PostureFormat.table and output is None:
        from rich.console import Console
        from rich.table import Table

        out = Console()
        out.print(
            f"{len(resources)} objects, {len(active)} findings" + (f", {len(excepted)} excepted" if excepted else "")
        )
        table = Table()
        for col in ("Severity", "Rule", "Object", "Container", "Title"):
            table.add_column(col, overflow="fold")
        for f in active:
            table.add_row(f.rule.severity, f.rule.id, f.resource.ref, f.container, f.rule.title)
        out.print(table)
    else:
        if fmt is PostureFormat.sarif:
            data = preport.to_sarif(active)
        elif fmt is PostureFormat.compliance_json:
            data = orjson.dumps(preport.compliance(rule_set, resources, active), option=orjson.OPT_INDENT_2)
        elif fmt is PostureFormat.compliance_html:
            data = preport.compliance_html(preport.compliance(rule_set, resources, active))
        else:
            data = preport.to_json(findings, excepted)
        _write(data, output)
    if active and exit_code:
        raise typer.Exit(exit_code)


admission_app = typer.Typer(help="Admission control: the validating webhook and its manifests.", no_args_is_help=True)
app.add_typer(admission_app, name="admission")


@admission_app.command("serve")
def admission_serve(
    cert: Annotated[Path, typer.Option(help="TLS certificate (PEM) the webhook serves")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM)")],
    policy: Annotated[Path | None, typer.Option(help="Admission policy (YAML); default: audit every rule")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8443,
) -> None:
    """Serve the HTTPS validating webhook (AdmissionReview v1) with /healthz, /readyz and /metrics."""
    from stockade.admission.policy import AdmissionPolicy
    from stockade.admission.review import Reviewer
    from stockade.admission.server import create_app, serve

    with _input_errors():
        pol = AdmissionPolicy.load(policy) if policy else AdmissionPolicy()
        for p in (cert, key):
            if not p.is_file():
                raise StockadeError(f"{p}: no such file")
        app = create_app(pol, Reviewer(pol))  # rules, exceptions and the log load here: errors are clear
    serve(app, host, port, str(cert), str(key))


@admission_app.command("certs")
def admission_certs(
    out: Annotated[Path, typer.Argument(help="Directory for ca.crt, tls.crt and tls.key")],
    namespace: Annotated[str, typer.Option(help="Namespace the webhook Service lives in")] = "stockade",
    service: Annotated[str, typer.Option(help="Name of the webhook Service")] = "stockade-admission",
    san: Annotated[list[str] | None, typer.Option(help="Extra DNS name or IP in the certificate")] = None,
    days: Annotated[int, typer.Option(help="Validity in days")] = 365,
) -> None:
    """Generate a CA and a serving certificate for the webhook's in-cluster Service name."""
    from stockade.admission.certs import generate

    with _input_errors():
        try:
            generate(service, namespace, days, san).write(out)
        except OSError as exc:
            raise StockadeError(f"{out}: cannot write the certificates ({exc.strerror})") from None
    _err(f"wrote {out}/ca.crt, tls.crt, tls.key for {service}.{namespace}.svc")


@admission_app.command("manifests")
def admission_manifests(
    policy: Annotated[Path | None, typer.Option(help="Admission policy (YAML) to install")] = None,
    certs: Annotated[
        Path | None, typer.Option(help="Directory from 'stockade admission certs' (default: generate new ones)")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace to install into")] = "stockade",
    image: Annotated[str, typer.Option(help="stockade container image")] = "ghcr.io/stockade/stockade:latest",
    timeout: Annotated[int, typer.Option(help="Webhook timeoutSeconds (1-30)")] = 5,
    vap: Annotated[
        bool, typer.Option(help="Instead: ValidatingAdmissionPolicies for the rules CEL can express (no webhook)")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
) -> None:
    """Print the ValidatingWebhookConfiguration, Deployment, Service, PodDisruptionBudget and the rest (YAML)."""
    import yaml

    from stockade.admission.certs import WebhookCerts, generate
    from stockade.admission.manifests import render
    from stockade.admission.policy import AdmissionPolicy

    with _input_errors():
        pol = AdmissionPolicy.load(policy) if policy else AdmissionPolicy()
        if vap:
            from stockade.admission.cel import export_policies
            from stockade.posture import load_rules

            docs, skipped = export_policies(load_rules(pol.extra_rules), pol)
            header = "# Rules CEL cannot express (use the webhook for these):\n" + "".join(
                f"#   {rid}: {why}\n" for rid, why in skipped
            )
            _write((header + yaml.safe_dump_all(docs, sort_keys=False)).encode(), output)
            return
        if not 1 <= timeout <= 30:
            raise StockadeError("--timeout must be between 1 and 30 seconds (the API server's limits)")
        if certs is not None:
            try:
                wc = WebhookCerts(*((certs / n).read_bytes() for n in ("ca.crt", "tls.crt", "tls.key")))
            except OSError as exc:
                raise StockadeError(f"{certs}: cannot read ca.crt, tls.crt and tls.key ({exc.strerror})") from None
        else:
            wc = generate("stockade-admission", namespace)
        policy_yaml = policy.read_text() if policy else "defaultMode: audit\n"
    docs = render(pol, policy_yaml, wc, namespace, image, timeout_seconds=timeout)
    _write(yaml.safe_dump_all(docs, sort_keys=False).encode(), output)


audit_app = typer.Typer(help="Control-plane threat detection from Kubernetes audit logs.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


class AuditFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


@audit_app.command("scan")
def audit_scan(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Audit logs (JSON lines, EventList, AKS/EKS/GKE exports); - for stdin")
    ] = None,
    fmt: Annotated[AuditFormat, typer.Option("--format", "-f", help="Output format")] = AuditFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    follow: Annotated[bool, typer.Option(help="Keep reading as the (single) file grows; follows rotation")] = False,
    state: Annotated[
        Path | None, typer.Option(help="Remember the offset here and resume from it (single file)")
    ] = None,
    window: Annotated[int, typer.Option(help="Dedup window in seconds: repeats become one alert's count")] = 600,
    exit_code: Annotated[int, typer.Option(help="Exit with this code when alerts were raised")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    server: Annotated[str | None, SERVER_OPT] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
) -> None:
    """Raise alerts (MITRE ATT&CK for Containers) from Kubernetes audit events."""
    from stockade.audit import events as aev
    from stockade.audit.detect import Detector, tune_gc
    from stockade.audit.rules import load as load_audit_rules

    paths = files or [Path("-")]
    if (follow or state) and len(paths) != 1:
        _err("[red]error:[/] --follow and --state take exactly one file")
        raise typer.Exit(EXIT_USAGE)
    with _input_errors():
        stream_out = fmt is AuditFormat.jsonl and output is None
        # alerts written out as raised (JSON lines to stdout) are not kept: only the open bursts are (bounded
        # memory); a report at the end (table, JSON, a file) keeps every alert
        detector = Detector(load_audit_rules(rules), window_s=window, keep_alerts=not stream_out)
        tune_gc()
        deltas = _alert_sender(server, cluster, token, "audit")
        if deltas is not None:
            detector.bursts.track_changes()
    stats = aev.Stats()
    synced = [0.0]

    def emit(new: list[Any]) -> None:
        if deltas is not None and (new or time.monotonic() - synced[0] > 1.0):
            deltas.sync(detector.bursts.drain())  # new alerts at once, grown counts every second
            synced[0] = time.monotonic()
        if stream_out:
            for a in new:
                sys.stdout.buffer.write(a.to_json() + b"\n")
            sys.stdout.flush()

    with _input_errors():
        for path in paths:
            if str(path) == "-":
                stdin = open(sys.stdin.fileno(), "rb", buffering=aev.READ_BUFFER, closefd=False)  # noqa: SIM115
                for _off, ev in aev.parse_stream(stdin, stats, detector.wants):
                    emit(detector.process(ev))
                continue
            fs = aev.FileState.load(state, path) if state else (aev.FileState(path) if follow else None)
            with contextlib.suppress(KeyboardInterrupt):
                _audit_read(path, fs, stats, detector, emit, follow, state)
    if deltas is not None:
        sent = deltas.close(detector.bursts.drain())
        if sent["failed"] or sent["dropped"]:
            _err(f"[red]error:[/] {sent['failed'] + sent['dropped']} alert(s) not delivered to {server}")
            raise typer.Exit(EXIT_INPUT)
    if not quiet and stats.malformed:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.reasons.items()))
        _err(f"[yellow]warning:[/] {stats.malformed} malformed record(s) skipped ({reasons})")
    alerts = detector.alerts
    if fmt is AuditFormat.table and output is None:
        from rich.console import Console
        from rich.table import Table

        out = Console()
        out.print(f"{stats.events} events, {len(alerts)} alerts")
        table = Table()
        for col in ("Severity", "Rule", "Count", "Time", "User", "Message", "MITRE"):
            table.add_column(col, overflow="fold")
        for a in alerts:
            table.add_row(a.severity, a.rule, str(a.count), a.time, a.user, a.message, ",".join(a.techniques))
        out.print(table)
    elif not stream_out:
        if fmt is AuditFormat.json:
            data = orjson.dumps(
                {"events": stats.events, "malformed": stats.malformed, "alerts": [a.to_dict() for a in alerts]},
                option=orjson.OPT_INDENT_2,
            )
        else:
            data = b"\n".join(a.to_json() for a in alerts)
        _write(data, output)
    if detector.raised and exit_code:
        raise typer.Exit(exit_code)


@audit_app.command("serve")
def audit_serve(
    cert: Annotated[Path, typer.Option(help="TLS certificate (PEM)")],
    key: Annotated[Path, typer.Option(help="Its private key (PEM)")],
    token_file: Annotated[Path, typer.Option(help="Bearer tokens the API server may present, one per line")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append alerts (JSON lines) here")] = None,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8444,
    window: Annotated[int, typer.Option(help="Dedup window in seconds")] = 600,
) -> None:
    """Receive audit events from the API server's webhook backend (EventList over HTTPS) and raise alerts."""
    import uvicorn

    from stockade.audit.detect import Detector, tune_gc
    from stockade.audit.rules import load as load_audit_rules
    from stockade.audit.server import create_app

    with _input_errors():
        for p in (cert, key, token_file):
            if not p.is_file():
                raise StockadeError(f"{p}: no such file")
        tokens = [t.strip() for t in token_file.read_text().splitlines() if t.strip()]
        if not tokens:
            raise StockadeError(f"{token_file}: no token in it")
        detector = Detector(load_audit_rules(rules), window_s=window, keep_alerts=False)  # runs for months
        tune_gc()
        try:
            out = output.open("ab") if output else sys.stdout.buffer
        except OSError as exc:
            raise StockadeError(f"{output}: cannot write ({exc.strerror})") from None
    app = create_app(detector, tokens, out)
    uvicorn.run(app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
                access_log=False)  # fmt: skip


def _audit_read(
    path: Path, fs: Any, stats: Any, detector: Any, emit: Callable[[list[Any]], None], follow: bool, state: Path | None
) -> None:
    """Read one file to its end (and on, with follow), saving the offset to ``state`` as it goes."""
    import time

    from stockade.audit import events as aev

    while True:
        last = time.monotonic()
        for off, ev in aev.read_file(path, stats, fs, detector.wants):
            emit(detector.process(ev))
            if fs is not None:
                fs.offset = off
                if state is not None and time.monotonic() - last > 1.0:
                    fs.save(state)
                    last = time.monotonic()
        if fs is not None and state is not None:
            fs.save(state)
        if not follow:
            return
        time.sleep(0.5)


sensor_app = typer.Typer(help="Node sensor: eBPF runtime events and workload threat detection.", no_args_is_help=True)
app.add_typer(sensor_app, name="sensor")


CRI_HELP = "Container runtime (CRI) socket to name pods and images: a path, 'auto' (the usual places, also under /host) or 'none'"  # noqa: E501
API_SERVER_HELP = "The API server's HOST:PORT, for the rules on pods calling it (repeatable; in a pod $KUBERNETES_SERVICE_HOST is added)"  # noqa: E501


def _pod_lookup(cri_socket: str) -> Any:
    """The CRI pod lookup for --cri-socket: None for 'none' or when 'auto' finds no runtime; an error when a
    socket named explicitly does not answer."""
    from stockade.sensor.cri import CriClient, CriError, PodLookup, find_socket

    if cri_socket == "none":
        return None
    path = cri_socket
    if cri_socket == "auto":
        found = find_socket() or find_socket(Path("/host"))
        if found is None:
            _err("pod lookup: no container runtime socket found (--cri-socket); pods are named from cgroups only")
            return None
        path = found
    client = CriClient(path)
    try:
        v = client.version()
    except CriError as exc:
        client.close()
        if cri_socket == "auto":
            _err(f"pod lookup: {exc}; pods are named from cgroups only")
            return None
        raise StockadeError(str(exc)) from None
    _err(f"pod lookup: {v['runtime']} {v['version']} (CRI {v['api']}) at {path}")
    return PodLookup(client)


@sensor_app.command("run")
def sensor_run(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append alerts (JSON lines) here")] = None,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: until interrupted)")] = 0,
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
    cpu_share: Annotated[float, typer.Option(help="Most of one CPU the sensor's own processing may use")] = 0.5,
    queue_size: Annotated[int, typer.Option(help="Events buffered before they are dropped (and counted)")] = 65536,
    learn: Annotated[float, typer.Option(help="Behavioural baseline: learning window in seconds (0: off)")] = 0,
    kubelet_pods: Annotated[
        Path | None, typer.Option(help="The kubelet's pod list (JSON, /pods) to name pods and images")
    ] = None,
    stats: Annotated[Path | None, typer.Option(help="Write counters (events, dropped, alerts) here at the end")] = None,
    memory_limit: Annotated[
        float, typer.Option(help="Most resident memory (MiB) of the sensor and bpftrace; 0: no limit")
    ] = 400,
    cri_socket: Annotated[str, typer.Option(help=CRI_HELP)] = "auto",
    api_server: Annotated[list[str] | None, typer.Option(help=API_SERVER_HELP)] = None,
    server: Annotated[str | None, SERVER_OPT] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
) -> None:
    """Collect process, file and network events with eBPF (bpftrace) and raise alerts."""
    import signal
    import threading

    from stockade.sensor.collector import Sensor
    from stockade.sensor.detect import Detector as SensorDetector
    from stockade.sensor.events import Attributor, Decoder, api_server_endpoints
    from stockade.sensor.rules import load as load_sensor_rules

    lock = threading.Lock()
    with _input_errors():
        try:
            api_servers = api_server_endpoints(api_server or [])
        except ValueError as exc:
            raise StockadeError(str(exc)) from None
        detector = SensorDetector(load_sensor_rules(rules), learn_s=learn, keep_alerts=False)
        attr = Attributor(lookup=_pod_lookup(cri_socket))
        if kubelet_pods is not None:
            try:
                attr.load_pods(orjson.loads(kubelet_pods.read_bytes()))
            except (OSError, orjson.JSONDecodeError) as exc:
                raise StockadeError(f"{kubelet_pods}: unreadable pod list ({exc})") from None
        attr.refresh()
        try:
            out = output.open("ab") if output else sys.stdout.buffer
        except OSError as exc:
            raise StockadeError(f"{output}: cannot write ({exc.strerror})") from None

        deltas = _alert_sender(server, cluster, token, "sensor")
        if deltas is not None:
            detector.bursts.track_changes()

        def publish(alerts: list[Any]) -> None:
            if deltas is not None:
                deltas.sync(detector.bursts.drain())  # the new alerts, and the counts that grew
            if alerts:
                with lock:
                    out.write(b"".join(orjson.dumps(a.to_dict()) + b"\n" for a in alerts))
                    out.flush()

        decoder = Decoder(attr, api_servers=api_servers)
        sensor = Sensor(detector, decoder, publish, queue_size=queue_size, cpu_share=cpu_share,
                        memory_mb=memory_limit)  # fmt: skip
        sensor.start()
    _err("sensor ready")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    end = time.monotonic() + duration if duration > 0 else float("inf")
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(min(1.0, max(0.0, end - time.monotonic()))) and time.monotonic() < end:
            if sensor.done.is_set():  # the event source ended, or the memory limit stopped the sensor
                break
    counters = sensor.stop()
    if deltas is not None:
        counters["published"] = deltas.close(detector.bursts.drain())  # with the repeats since the last sync
    _err(f"sensor stopped: {counters}")
    if stats is not None:
        stats.write_bytes(orjson.dumps(counters))
    if sensor.failed:
        _err(f"[red]error:[/] {sensor.failed}")
        raise typer.Exit(EXIT_INPUT)


@sensor_app.command("replay")
def sensor_replay(
    files: Annotated[list[Path], typer.Argument(help="Falco JSON output or Tetragon JSON export (JSON lines)")],
    rules: Annotated[list[Path] | None, typer.Option(help="Extra rule file (YAML); repeatable")] = None,
) -> None:
    """Run stockade's workload rules over events from Falco or Tetragon; alerts as JSON lines."""
    from stockade.sensor.adapters import convert
    from stockade.sensor.detect import Detector as SensorDetector
    from stockade.sensor.rules import load as load_sensor_rules

    skipped = 0
    with _input_errors():
        detector = SensorDetector(load_sensor_rules(rules))
        for f in files:
            try:
                fh = f.open("rb")
            except OSError as exc:
                raise StockadeError(f"{f}: cannot read ({exc.strerror})") from None
            with fh:
                for line in fh:
                    try:
                        ev = convert(orjson.loads(line)) if line.strip() else None
                    except orjson.JSONDecodeError:
                        ev = None
                    if ev is None:
                        skipped += bool(line.strip())
                        continue
                    for a in detector.process(ev):
                        sys.stdout.buffer.write(orjson.dumps(a.to_dict()) + b"\n")
    if skipped:
        _err(f"[yellow]warning:[/] {skipped} line(s) not a Falco or Tetragon event")


@sensor_app.command("manifests")
def sensor_manifests(
    namespace: Annotated[str, typer.Option(help="Namespace to install into")] = "stockade",
    image: Annotated[str, typer.Option(help="stockade container image")] = "ghcr.io/stockade/stockade:latest",
    server: Annotated[str, typer.Option(help="Ship alerts to this stockade server (else: the publisher's log)")] = "",
    cluster: Annotated[str, typer.Option(help="This cluster's name on the server")] = "",
    token_secret: Annotated[
        str, typer.Option(help="Secret (key 'token') with the cluster's ingestion token")
    ] = "stockade-cluster",
) -> None:
    """The sensor DaemonSet: the eBPF collector and the publisher beside it on each node, as YAML."""
    import yaml

    from stockade.sensor.manifests import render as render_sensor

    if server and not cluster:
        _err("[red]error:[/] --server needs --cluster (the cluster's name on the server)")
        raise typer.Exit(EXIT_USAGE)
    docs = render_sensor(namespace, image, server=server, cluster=cluster, token_secret=token_secret)
    _write(yaml.safe_dump_all(docs, sort_keys=False).encode(), None)


@app.command("node-check")
def node_check(
    root: Annotated[Path, typer.Option(help="The node's root filesystem")] = Path("/"),
    proc: Annotated[Path, typer.Option(help="The node's /proc (processes and their flags)")] = Path("/proc"),
    checks: Annotated[Path | None, typer.Option(help="Checks file (YAML) instead of the built-in CIS 1-4")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    exit_code: Annotated[int, typer.Option(help="Exit with this code when a check fails")] = 0,
) -> None:
    """CIS Kubernetes Benchmark sections 1-4 on this node: component flags, kubelet config, file permissions."""
    from stockade.posture.node.check import load_checks, run

    with _input_errors():
        results = run(root, proc, load_checks(checks))
    if all(r.status == "SKIP" for r in results):
        _err("[yellow]warning:[/] no Kubernetes component (kube-apiserver, kubelet, etcd...) runs on this node")
    if as_json:
        _write(orjson.dumps([r.to_dict() for r in results], option=orjson.OPT_INDENT_2), None)
    else:
        for r in results:
            colour = {"PASS": "green", "FAIL": "red"}.get(r.status, "white")
            typer.secho(f"[{r.status}] {r.id} {r.title}: {r.detail}", fg=colour)
    if exit_code and any(r.status == "FAIL" for r in results):
        raise typer.Exit(exit_code)



app.add_typer(server_app, name="server")
app.command("agent")(_agent)
app.command("publish")(_publish)


if __name__ == "__main__":  # pragma: no cover
    app()

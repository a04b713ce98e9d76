"""`stockade audit`: control-plane threat detection from Kubernetes audit logs."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from stockade.cli.common import (
    CLUSTER_OPT,
    EXIT_INPUT,
    EXIT_USAGE,
    SERVER_OPT,
    TOKEN_OPT,
    alert_sender,
    err,
    input_errors,
    write,
)
from stockade.model import StockadeError

if TYPE_CHECKING:
    from stockade.audit.profile import Profiles

audit_app = typer.Typer(help="Control-plane threat detection from Kubernetes audit logs.", no_args_is_help=True)


class AuditFormat(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


# options audit scan and audit serve share
PROFILES_OPT = typer.Option(
    help="Learn each identity's usual behaviour, in this SQLite file or (`server`) in the --server's database for "
    "--cluster; alert outside it (STK-AUD-100)"
)
LEARN_DAYS_OPT = typer.Option(help="Days each identity learns before it is judged")
ACTIVITY_OPT = typer.Option(help="Also the activity trail: INFO alerts for what was created and deleted")


def _profiles(spec: str | None, learn_days: float, server: str | None, cluster: str | None,
              token: str | None) -> Profiles | None:  # fmt: skip
    """The learned profiles ``--profiles`` names: a SQLite file, or ``server`` (the connected server's database)."""
    from stockade.audit.profile import Profiles

    if not spec:
        return None
    if spec != "server":
        return Profiles(Path(spec), learn_days * 86400)
    if not server:
        raise StockadeError("--profiles server: give the server with --server (or $STOCKADE_SERVER)")
    from stockade.server.client import Client, ServerProfiles

    return Profiles(None, learn_days * 86400, store=ServerProfiles(Client(server, token or "", cluster or "")))


def _with_activity(rules: list[Path] | None, activity: bool) -> list[Path] | None:
    """The extra rule files, with the activity pack after them when ``--activity`` asks for it."""
    from stockade.audit.rules import ACTIVITY_PACK

    return [*(rules or []), ACTIVITY_PACK] if activity else rules


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
    profiles: Annotated[str | None, PROFILES_OPT] = None,
    learn_days: Annotated[float, LEARN_DAYS_OPT] = 7.0,
    activity: Annotated[bool, ACTIVITY_OPT] = False,
) -> None:
    """Raise alerts (MITRE ATT&CK for Containers) from Kubernetes audit events."""
    rules = _with_activity(rules, activity)
    from stockade.audit.stream import scan

    paths = files or [Path("-")]
    if (follow or state) and len(paths) != 1:
        err("[red]error:[/] --follow and --state take exactly one file")
        raise typer.Exit(EXIT_USAGE)
    # alerts written out as raised (JSON lines to stdout) are not kept: only the open bursts are (bounded
    # memory); a report at the end (table, JSON, a file) keeps every alert
    stream_out = fmt is AuditFormat.jsonl and output is None
    with input_errors():
        learned = _profiles(profiles, learn_days, server, cluster, token)
        deltas = alert_sender(server, cluster, token, "audit")
        detector, stats, sent = scan(paths, rules, window, sys.stdout.buffer if stream_out else None, deltas, follow,
                                     state, keep_alerts=not stream_out, profiles=learned)  # fmt: skip
    if sent is not None and (sent["failed"] or sent["dropped"]):
        err(f"[red]error:[/] {sent['failed'] + sent['dropped']} alert(s) not delivered to {server}")
        raise typer.Exit(EXIT_INPUT)
    if not quiet and stats.malformed:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.reasons.items()))
        err(f"[yellow]warning:[/] {stats.malformed} malformed record(s) skipped ({reasons})")
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
        write(data, output)
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
    profiles: Annotated[str | None, PROFILES_OPT] = None,
    server: Annotated[str | None, typer.Option("--server", envvar="STOCKADE_SERVER",
                                               help="The stockade server (for --profiles server)")] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
    learn_days: Annotated[float, LEARN_DAYS_OPT] = 7.0,
    activity: Annotated[bool, ACTIVITY_OPT] = False,
    intel_refresh_hours: Annotated[
        float, typer.Option(help="Fetch the threat-intelligence lists from their publishers this often (0: never)")
    ] = 0.0,
) -> None:
    """Receive audit events from the API server's webhook backend (EventList over HTTPS) and raise alerts."""
    rules = _with_activity(rules, activity)
    import uvicorn

    from stockade.audit.detect import Detector, tune_gc
    from stockade.audit.rules import load as load_audit_rules
    from stockade.audit.server import create_app

    with input_errors():
        for p in (cert, key, token_file):
            if not p.is_file():
                raise StockadeError(f"{p}: no such file")
        tokens = [t.strip() for t in token_file.read_text().splitlines() if t.strip()]
        if not tokens:
            raise StockadeError(f"{token_file}: no token in it")
        learned = _profiles(profiles, learn_days, server, cluster, token)
        detector = Detector(load_audit_rules(rules), window_s=window, keep_alerts=False,
                            profiles=learned)  # runs for months  # fmt: skip
        tune_gc()
        try:
            out = output.open("ab") if output else sys.stdout.buffer
        except OSError as exc:
            raise StockadeError(f"{output}: cannot write ({exc.strerror})") from None
    from stockade.audit.detect import IntelReloader

    reloader = IntelReloader(detector, lambda: load_audit_rules(rules))  # lists refreshed by `stockade intel update`
    if intel_refresh_hours > 0:  # and by this process itself, on a schedule
        import threading

        from stockade.intel import refresh_loop

        threading.Thread(target=refresh_loop, args=(intel_refresh_hours * 3600, threading.Event()),
                         daemon=True, name="intel-refresh").start()  # fmt: skip
    app = create_app(detector, tokens, out, reloader=reloader)
    uvicorn.run(app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
                access_log=False)  # fmt: skip


profile_app = typer.Typer(help="The learned behaviour of each identity (audit scan/serve --profiles).",
                          no_args_is_help=True)  # fmt: skip
audit_app.add_typer(profile_app, name="profile")


PROFILE_DB_ARG = typer.Argument(help="Profile database (SQLite), or `server` for --server's, of --cluster")


def _server_profiles(server: str | None, cluster: str | None, token: str | None) -> tuple[Any, str]:
    """A client of the server holding the profiles, and the URL of --cluster's."""
    from urllib.parse import quote

    from stockade.server.client import Client

    if not server or not cluster:
        raise StockadeError("server: give --server and --cluster (or $STOCKADE_SERVER and $STOCKADE_CLUSTER)")
    client = Client(server, token or "", cluster)
    return client, f"{client.base}/api/v1/clusters/{quote(cluster, safe='')}/profiles"


def _answer(r: Any, what: str) -> Any:
    if r.status_code >= 300:
        try:
            msg = r.json().get("error") or r.json().get("detail") or r.text
        except ValueError:
            msg = r.text
        raise StockadeError(f"{what}: HTTP {r.status_code}: {str(msg)[:300]}")
    return r.json() if r.status_code != 204 else None


@profile_app.command("show")
def profile_show(
    profiles: Annotated[str, PROFILE_DB_ARG],
    server: Annotated[str | None, SERVER_OPT] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
    learn_days: Annotated[float, LEARN_DAYS_OPT] = 7.0,
) -> None:
    """Each identity: learning or judged, and how many values each dimension holds."""
    import time

    from stockade.audit.profile import Profiles

    with input_errors():
        if profiles == "server":
            client, url = _server_profiles(server, cluster, token)
            try:
                rows = _answer(client.http.get(url), url)
            except httpx_errors() as exc:
                raise StockadeError(f"{url}: {exc}") from None
            finally:
                client.close()
            now = time.time()
            for r in rows:
                r["learning"] = now - r["first_seen"] < learn_days * 86400
        else:
            path = Path(profiles)
            if not path.is_file():
                raise StockadeError(f"{path}: no such file")
            p = Profiles(path, learn_days * 86400)
            rows = p.summary()
            p.close()
    for r in rows:
        state = "too varied" if r["too_varied"] else ("learning" if r["learning"] else "judged")
        typer.echo(f"{r['identity']}\t{state}\toperations {r['operation']}\tnamespaces {r['namespace']}\t"
                   f"networks {r['network']}\tagents {r['agent']}")  # fmt: skip


@profile_app.command("reset")
def profile_reset(
    profiles: Annotated[str, PROFILE_DB_ARG],
    identity: Annotated[str, typer.Argument(help="User or service account (system:serviceaccount:NS:NAME)")],
    server: Annotated[str | None, SERVER_OPT] = None,
    cluster: Annotated[str | None, CLUSTER_OPT] = None,
    token: Annotated[str | None, TOKEN_OPT] = None,
) -> None:
    """Forget one identity's profile: it learns again from its next request (on the server: an admin's token; a
    running collector forgets it at its next write)."""
    from urllib.parse import quote

    from stockade.audit.profile import Profiles

    with input_errors():
        if profiles == "server":
            client, url = _server_profiles(server, cluster, token)
            try:
                r = client.http.delete(f"{url}/{quote(identity, safe='')}")
            except httpx_errors() as exc:
                raise StockadeError(f"{url}: {exc}") from None
            finally:
                client.close()
            known = r.status_code != 404
            if known:
                _answer(r, url)
            where = f"cluster {cluster!r} on {server}"
        else:
            p = Profiles(Path(profiles))
            known = p.reset(identity)
            p.close()
            where = profiles
    if not known:
        err(f"[red]error:[/] no profile for {identity!r} in {where}")
        raise typer.Exit(EXIT_INPUT)
    err(f"{identity}: profile reset; it learns again")


def httpx_errors() -> type[Exception]:
    import httpx

    return httpx.HTTPError

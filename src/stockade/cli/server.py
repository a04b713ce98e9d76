"""CLI of the central service: `stockade server` (and its user/cluster management) and `stockade agent`."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from stockade.cli.common import EXIT_INPUT, err, input_errors
from stockade.model import StockadeError

server_app = typer.Typer(
    help="The central service: API, storage and dashboard (SQLite by default, PostgreSQL with STOCKADE_DATABASE_URL).",
    invoke_without_command=True,
)

DB_URL = typer.Option("--database-url", envvar="STOCKADE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite file)")


def _store(url: str | None) -> Any:
    from stockade.server.db import default_url, make_engine, upgrade
    from stockade.server.store import Store

    engine = make_engine(url or default_url())
    upgrade(engine)
    return Store(engine)


def _bootstrap_admin(store: Any) -> None:
    """The first start creates user 'admin' (password from $STOCKADE_ADMIN_PASSWORD, else generated and shown)."""
    if store.users():
        return
    password = os.environ.get("STOCKADE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    store.create_user("admin", password, "admin")
    shown = "from STOCKADE_ADMIN_PASSWORD" if os.environ.get("STOCKADE_ADMIN_PASSWORD") else password
    print(f"created user 'admin' with the admin role; password: {shown}", file=sys.stderr)


@server_app.callback()
def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    database_url: Annotated[str | None, DB_URL] = None,
    vulndb: Annotated[
        Path | None, typer.Option(help="Vulnerability database: stored images are rematched when it is rebuilt")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="... and this key (PEM)")] = None,
    demo: Annotated[bool, typer.Option(help="Fill the server: run the engines on the shipped demo inputs")] = False,
    max_inflight: Annotated[
        int, typer.Option(help="Concurrent ingestion requests (per worker) before answering 429")
    ] = 8,
    export_dir: Annotated[
        Path | None,
        typer.Option(envvar="STOCKADE_EXPORT_DIR",
                     help="File exports write only below this directory (default: file exports are off)"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Worker processes; more than one scales ingestion on PostgreSQL (SQLite has one writer)"
        ),
    ] = 1,
) -> None:
    """Run the server (API at /api/v1, OpenAPI at /docs, dashboard at /)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"database_url": database_url}
        return
    import uvicorn

    from stockade.server.api import ServerSettings, create_app, setup_logging

    setup_logging()
    if (tls_cert is None) != (tls_key is None):
        err("[red]error:[/] --tls-cert and --tls-key go together")
        raise typer.Exit(EXIT_INPUT)
    with input_errors():
        store = _store(database_url)
        _bootstrap_admin(store)
        if vulndb is None and demo:
            from stockade.vulndb.store import default_db_path

            vulndb = default_db_path() if default_db_path().is_file() else None
        if vulndb is not None and not vulndb.is_file():
            raise StockadeError(f"{vulndb}: no vulnerability database; run 'stockade db build' first")
        if export_dir is not None and not export_dir.is_dir():
            raise StockadeError(f"{export_dir}: --export-dir is not a directory")
    settings = ServerSettings(vulndb=vulndb, max_ingest_inflight=max_inflight, secure_cookies=tls_cert is not None,
                              export_dir=export_dir)  # fmt: skip
    app: Any = create_app(store, settings) if workers == 1 else "stockade.server.api:app_from_env"
    if workers > 1:  # uvicorn starts the workers from an import string; they read their settings from the environment
        os.environ["STOCKADE_SERVER_CONFIG"] = orjson.dumps(
            {
                "database_url": store.engine.url.render_as_string(hide_password=False),
                "vulndb": str(vulndb) if vulndb else None,
                "max_inflight": max_inflight,
                "secure_cookies": tls_cert is not None,
                "export_dir": str(export_dir) if export_dir else None,
            }
        ).decode()
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if demo:
        threading.Thread(target=_demo, args=(store, url, vulndb, tls_cert), daemon=True).start()
    print(f"stockade server on {url} (dashboard {url}/, API docs {url}/docs)", file=sys.stderr)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
        workers=workers if workers > 1 else None,
        factory=workers > 1,
    )


def _demo(store: Any, url: str, vulndb: Path | None, ca: Path | None) -> None:
    import httpx

    from stockade.server.demo import fill

    for _ in range(100):  # wait for uvicorn to listen
        try:
            httpx.get(f"{url}/healthz", verify=str(ca) if ca else True, timeout=1.0)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        sent = fill(store, url, vulndb, ca)
    except StockadeError as e:
        print(f"demo: {e}", file=sys.stderr)
        return
    print(f"demo: filled cluster 'demo' through the API: {sent}", file=sys.stderr)


@server_app.command("user-add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="reader, contributor or admin")] = "reader",
) -> None:
    """Create a user; the password comes from $STOCKADE_PASSWORD or is asked for."""
    password = os.environ.get("STOCKADE_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    with input_errors():
        _store(ctx.obj["database_url"]).create_user(name, password, role, "cli")
    print(f"user {name!r} ({role}) created", file=sys.stderr)


@server_app.command("token")
def user_token(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User the API token acts as")],
    name: Annotated[str, typer.Option(help="What the token is for")] = "api",
    expires_in_days: Annotated[int, typer.Option(min=0, max=3650, help="Days it is valid; 0: until revoked")] = 90,
) -> None:
    """Print a new API token for a user."""
    with input_errors():
        ttl = expires_in_days * 86400.0 or None
        print(_store(ctx.obj["database_url"]).create_user_token(user, name, "cli", ttl))


@server_app.command("tokens")
def list_tokens(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's tokens")] = None,
) -> None:
    """List API and cluster tokens (ids, owners, expiry, state; never the secrets)."""
    with input_errors():
        rows = _store(ctx.obj["database_url"]).tokens(user)
    for r in rows:
        state = "revoked" if r["revoked"] else "expired" if r["expired"] else "active"
        exp = time.strftime("%Y-%m-%d", time.gmtime(r["expires_at"])) if r["expires_at"] else "never"
        print(f"{r['id']}\t{r['kind']}\t{r['user'] or r['cluster'] or ''}\t{r['name']}\texpires {exp}\t{state}")


@server_app.command("token-revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="Token id (from 'tokens')")]) -> None:
    """Revoke a token: it stops working at once (within 10 s in running servers)."""
    with input_errors():
        _store(ctx.obj["database_url"]).revoke_token_id(token_id, "cli")
    print(f"token {token_id} revoked", file=sys.stderr)


@server_app.command("user-disable")
def user_disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Disable a user: their sessions and API tokens stop working (the last admin cannot be disabled)."""
    with input_errors():
        _store(ctx.obj["database_url"]).set_user_disabled(name, True, "cli")
    print(f"user {name!r} disabled", file=sys.stderr)


@server_app.command("user-enable")
def user_enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Enable a disabled user again."""
    with input_errors():
        _store(ctx.obj["database_url"]).set_user_disabled(name, False, "cli")
    print(f"user {name!r} enabled", file=sys.stderr)


@server_app.command("cluster-add")
def cluster_add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Cluster name")]) -> None:
    """Register a cluster and print its ingestion token (give it to the agent, sensor, audit collector, webhook)."""
    with input_errors():
        _cid, token = _store(ctx.obj["database_url"]).create_cluster(name, "cli")
    print(token)


@server_app.command("cluster-delete")
def cluster_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Cluster name")],
    purge: Annotated[bool, typer.Option(help="Delete its alerts and violations too (default: kept, archived)")] = False,
) -> None:
    """Take a cluster out of service: its tokens stop working; its alerts are kept unless --purge."""
    with input_errors():
        _store(ctx.obj["database_url"]).delete_cluster(name, "cli", purge)
    print(f"cluster {name!r} {'purged' if purge else 'archived'}", file=sys.stderr)


@server_app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema (the server also does it when it starts)."""
    with input_errors():
        _store(ctx.obj["database_url"])
    print("schema is up to date", file=sys.stderr)


def agent(
    server: Annotated[str, typer.Option(envvar="STOCKADE_SERVER", help="The stockade server's URL")],
    cluster: Annotated[str, typer.Option(envvar="STOCKADE_CLUSTER", help="This cluster's name on the server")],
    token: Annotated[
        str, typer.Option(envvar="STOCKADE_TOKEN", help="The cluster's ingestion token", show_default=False)
    ],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Read these manifests instead of the live cluster (tests, GitOps)")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig (default: in-cluster, else ~/.kube/config)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between snapshots")] = 300.0,
    once: Annotated[bool, typer.Option(help="Send one snapshot and exit")] = False,
    ca: Annotated[Path | None, typer.Option(help="CA bundle that signed the server's certificate")] = None,
) -> None:
    """The in-cluster collector: sends inventory, posture and compliance snapshots to the server on an interval."""
    from stockade.server import agent as agent_mod
    from stockade.server.client import Client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        client = Client(server, token, cluster, ca=ca)
        try:
            agent_mod.run(
                lambda snap: client.send("snapshot", [snap], "agent"),
                agent_mod.reader(paths, kubeconfig, context),
                interval,
                once,
            )
        finally:
            client.close()
    except StockadeError as e:
        err(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_INPUT) from None
    except KeyboardInterrupt:
        pass


def publish(
    path: Annotated[Path, typer.Argument(help="JSON-lines file of alerts (or violations) another process appends")],
    server: Annotated[str, typer.Option(envvar="STOCKADE_SERVER", help="The stockade server's URL")],
    cluster: Annotated[str, typer.Option(envvar="STOCKADE_CLUSTER", help="This cluster's name on the server")],
    token: Annotated[
        str, typer.Option(envvar="STOCKADE_TOKEN", help="The cluster's ingestion token", show_default=False)
    ],
    kind: Annotated[str, typer.Option(help="alerts or violations")] = "alerts",
    component: Annotated[str, typer.Option(help="sensor, audit or admission")] = "sensor",
    state: Annotated[Path | None, typer.Option(help="Remember the offset sent here (resume after a restart)")] = None,
    follow: Annotated[bool, typer.Option(help="Keep following the file as it grows")] = True,
    ca: Annotated[Path | None, typer.Option(help="CA bundle that signed the server's certificate")] = None,
) -> None:
    """Ship a collector's JSON-lines output to the server: the sensor's publisher container. Batch ids are the
    file's byte ranges, and the range in flight is saved first, so a resend after a crash is not stored twice."""
    import orjson

    from stockade.server.client import Client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        client = Client(server, token, cluster, ca=ca)
        # the state file holds the offset acknowledged, then, while a batch is in flight, the end of that batch:
        # after a crash the same byte range is sent again with the same batch id, which the server recognises
        saved = (state.read_text().split() if state is not None and state.is_file() else []) or ["0"]
        offset = int(saved[0])
        pending = int(saved[1]) if len(saved) > 1 else None
        while True:
            try:
                fh = path.open("rb")
            except FileNotFoundError:
                if not follow:
                    raise StockadeError(f"{path}: no such file") from None
                time.sleep(1)
                continue
            with fh:
                ino = os.fstat(fh.fileno()).st_ino
                if os.fstat(fh.fileno()).st_size < offset:
                    offset = 0  # truncated or replaced
                fh.seek(offset)
                while True:
                    start = offset
                    items = []
                    for line in fh:
                        if not line.endswith(b"\n") or (pending is not None and offset >= pending):
                            break  # a partial line (the writer is mid-way; read it next time), or a resend's end
                        offset += len(line)
                        if line.strip():
                            try:
                                items.append(orjson.loads(line))
                            except orjson.JSONDecodeError:
                                logging.warning("%s: skipped a line that is not JSON at byte %d", path, offset)
                        if len(items) >= 500:
                            break
                    fh.seek(offset)
                    if items:
                        if state is not None:
                            state.write_text(f"{start} {offset}")
                        client.send(kind, items, component, batch=f"{ino}-{start}-{offset}")
                        if state is not None:
                            state.write_text(str(offset))
                        pending = None
                        continue
                    pending = None
                    if not follow:
                        return
                    time.sleep(1)
                    if not path.exists() or os.stat(path).st_ino != ino:
                        offset = 0  # rotated: start the new file
                        break
    except StockadeError as e:
        err(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_INPUT) from None
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            client.close()

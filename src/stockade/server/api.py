"""The REST API (FastAPI; OpenAPI at /docs and /openapi.json): ingestion for collectors, queries and triage for people,
with roles: reader (view), contributor (also clusters and settings), admin (also triage, suppressions, exceptions,
users)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from stockade.model import StockadeError
from stockade.server import views
from stockade.server.dashboard import mount, set_session_cookie
from stockade.server.db import DatabaseError
from stockade.server.ratelimit import LoginGuard
from stockade.server.store import SESSION_COOKIE, USER_TOKEN_TTL, BadRequest, Conflict, NotFound, Principal, Store
from stockade.web import BodyLimit, BodyTooLarge, Limit, Offset, RowId, parse_json, read_body

log = logging.getLogger("stockade.server")

VIEW = frozenset({"reader", "contributor", "admin"})
MANAGE = frozenset({"contributor", "admin"})
TRIAGE = frozenset({"admin"})


@dataclass(slots=True)
class ServerSettings:
    vulndb: Path | None = None  # rematch stored inventories when this database is rebuilt
    rescan_interval: float = 300.0
    export_interval: float = 2.0
    max_ingest_inflight: int = 8  # more concurrent ingestion requests are answered 429
    max_body: int = 64 * 1024 * 1024
    export_dir: Path | None = None  # file exports write only below this directory; None: file exports are off
    background: bool = True  # run the export and rescan loops (in one process of all that serve the database)
    secure_cookies: bool = False  # set when served over HTTPS


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


LOGIN_MAX = 4 * 1024  # a user name and a password
FORM_MAX = 1024 * 1024  # settings, users, tokens, triage, dashboard forms
INGEST_PATHS = re.compile(r"^/api/v1/(clusters/[^/]+/ingest/[^/]+|scans)$")


def body_limit(method: str, path: str, max_ingest: int) -> int:
    """The most bytes a request body may have on this route: ingestion and scans ``max_ingest`` (64 MiB by
    default, ``--max-body``), logins 4 KiB, anything else 1 MiB."""
    if path in ("/api/v1/login", "/login"):
        return LOGIN_MAX
    if method == "POST" and INGEST_PATHS.match(path):
        return max_ingest
    return FORM_MAX


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_write_check(request: Request, session: str) -> None:
    """A write to the JSON API authenticated by the dashboard's session cookie (not a bearer token) must be a
    same-origin request a form cannot forge: its body ``application/json`` and its ``Origin`` this server's (or an
    ``X-CSRF-Token`` header with the session's CSRF token, for clients that send no Origin). 403 otherwise."""
    from stockade.server.dashboard import csrf_token

    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if request.method in ("POST", "PUT", "PATCH") and ctype != "application/json":
        raise HTTPException(415, "a write with the session cookie takes a body of type application/json")
    csrf = request.headers.get("x-csrf-token", "")
    if csrf and hmac.compare_digest(csrf, csrf_token(session)):
        return
    origin = request.headers.get("origin", "")
    host = request.headers.get("host", "")
    if not origin or origin == "null" or not host or urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(
            403, "a write with the session cookie needs this server's Origin or an X-CSRF-Token header; "
            "scripts should use a bearer token"
        )


def expiry(body: Any, default: float | None) -> float | None:
    """Seconds a new token lives, from the body's "expires_in_days" (0: until revoked); 400 when it is no number of
    days from 0 to 3,650."""
    days = body.get("expires_in_days") if isinstance(body, dict) else None
    if days is None:
        return default
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 3650:
        raise HTTPException(400, "'expires_in_days' is a number of days from 0 (never) to 3650")
    return float(days) * 86400 if days else None


def _token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(SESSION_COOKIE)


async def background(store: Store, settings: ServerSettings, retry: float = 5.0) -> None:
    """Run the export and rescan loops while this process holds the leader lock; try for it every ``retry`` s."""
    from stockade.server.export import export_loop
    from stockade.server.leader import Leadership
    from stockade.server.rescan import rescan_loop

    lead = Leadership(store.engine)
    try:
        while True:
            if await asyncio.to_thread(lead.acquire):
                log.info("this process (pid %d) runs the export and rescan loops", os.getpid())
                tasks = [asyncio.create_task(export_loop(store, settings.export_interval, settings.export_dir))]
                if settings.vulndb is not None:
                    tasks.append(asyncio.create_task(rescan_loop(store, settings.vulndb, settings.rescan_interval)))
                try:
                    while await asyncio.to_thread(lead.still_held):
                        await asyncio.sleep(retry)
                finally:
                    for task in tasks:
                        task.cancel()
            await asyncio.sleep(retry)
    finally:
        lead.release()


def setup_logging() -> None:
    """INFO logs of the server (and each worker process), without the chatter of alembic and httpx."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process (`stockade server --workers N`): its settings come from
    $STOCKADE_SERVER_CONFIG, written by the parent, which already created or upgraded the schema."""
    from stockade.server.db import make_engine

    setup_logging()
    cfg = orjson.loads(os.environ["STOCKADE_SERVER_CONFIG"])
    settings = ServerSettings(
        vulndb=Path(cfg["vulndb"]) if cfg.get("vulndb") else None,
        max_ingest_inflight=int(cfg["max_inflight"]),
        secure_cookies=bool(cfg["secure_cookies"]),
        export_dir=Path(cfg["export_dir"]) if cfg.get("export_dir") else None,
    )
    return create_app(Store(make_engine(cfg["database_url"])), settings)


def create_app(store: Store, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    inflight = asyncio.Semaphore(settings.max_ingest_inflight)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(background(store, settings)) if settings.background else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(
        title="stockade",
        version="0.1.0",
        description="Central service of stockade: clusters, images, recommendations, compliance and alerts.",
        default_response_class=ORJSONResponse,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.login_guard = guard = LoginGuard()
    app.add_middleware(BodyLimit, limit_for=lambda method, path: body_limit(method, path, settings.max_body))

    @app.exception_handler(StockadeError)
    async def _errors(_request: Request, exc: StockadeError) -> Response:
        status = 400
        if isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, Conflict):
            status = 409
        elif isinstance(exc, DatabaseError):
            status = 503
        elif not isinstance(exc, BadRequest):
            status = 500
        return ORJSONResponse({"error": str(exc)}, status_code=status)

    def principal(request: Request) -> Principal:
        token = _token_of(request)
        p = store.principal(token) if token else None
        if p is None:
            raise HTTPException(401, "a valid token is needed (Authorization: Bearer ...)")
        if request.method not in SAFE_METHODS and not request.headers.get("authorization"):
            cookie_write_check(request, token or "")
        return p

    def need(roles: frozenset[str]) -> Callable[[Request], Principal]:
        def check(request: Request) -> Principal:
            p = principal(request)
            if p.role not in roles:
                raise HTTPException(403, f"{p.name} ({p.role}) may not do this; it needs {' or '.join(sorted(roles))}")
            return p

        return check

    viewer = Depends(need(VIEW))
    manager = Depends(need(MANAGE))
    triager = Depends(need(TRIAGE))

    async def body_json(request: Request, optional: bool = False) -> Any:
        try:
            body = await read_body(request, settings.max_body)
        except BodyTooLarge as exc:
            raise HTTPException(413, f"the body is over {exc.limit} bytes") from None
        if optional and not body.strip():
            return {}
        try:
            return await parse_json(body)
        except orjson.JSONDecodeError as e:
            raise HTTPException(400, f"the body is not JSON: {e}") from None

    async def limited(fn: Callable[[], Any]) -> Any:
        """Run a write in the thread pool; with too many in flight, answer 429 so that the sender backs off."""
        if inflight.locked():
            raise HTTPException(429, "ingestion is busy; retry the same batch", headers={"Retry-After": "1"})
        async with inflight:
            return await run_in_threadpool(fn)

    # -- health --------------------------------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            await run_in_threadpool(store.setting, "schema")
        except Exception as e:
            return ORJSONResponse({"status": "database unavailable", "error": str(e)[:200]}, status_code=503)
        return ORJSONResponse({"status": "ready"})

    # -- sessions ------------------------------------------------------------------------------------------------

    @app.post("/api/v1/login", tags=["auth"])
    async def login(request: Request) -> Response:
        """Exchange a user name and password for a session token (also set as a cookie)."""
        body = await body_json(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("password"), str)
        ):
            raise HTTPException(400, "send {'name': ..., 'password': ...}")
        client = request.client.host if request.client else ""
        wait = guard.retry_after(body["name"], client)
        if wait is not None:
            raise HTTPException(429, "too many failed logins; try again later", headers={"Retry-After": str(wait)})
        token = await run_in_threadpool(store.login, body["name"], body["password"], client)
        if token is None:
            guard.failed(body["name"], client)
            raise HTTPException(401, "wrong user name or password")
        resp = ORJSONResponse({"token": token})
        set_session_cookie(resp, token, settings.secure_cookies)
        return resp

    @app.get("/api/v1/me", tags=["auth"])
    async def me(p: Principal = viewer) -> dict[str, Any]:
        return {"name": p.name, "role": p.role, "kind": p.kind}

    # -- ingestion -----------------------------------------------------------------------------------------------

    @app.post("/api/v1/clusters/{cluster}/ingest/{kind}", tags=["ingestion"])
    async def ingest(cluster: str, kind: str, request: Request) -> Any:
        """A batch from a cluster's collectors: {"batch": id, "component": ..., "items": [...]}. Idempotent by batch
        id; 429 when busy (retry the same batch)."""
        p = principal(request)
        if p.kind != "cluster":
            raise HTTPException(403, "ingestion takes a cluster token")
        own = store.principal_cluster_name(p)
        if own != cluster:
            raise HTTPException(403, f"this token belongs to cluster {own!r}, not {cluster!r}")
        body = await body_json(request)
        assert p.cluster_id is not None
        cid = p.cluster_id
        return await limited(lambda: store.ingest(cid, kind, body))

    @app.post("/api/v1/scans", tags=["ingestion"])
    async def post_scans(request: Request) -> Any:
        """Image scans from CI or a cluster: {"items": [{"ref", "digest", "findings", "inventory"...}]}; a scan
        replaces the image's previous one."""
        p = principal(request)
        if p.kind != "cluster" and p.role not in MANAGE:
            raise HTTPException(403, f"{p.name} ({p.role}) may not post scans")
        body = await body_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise HTTPException(400, "send {'items': [scan, ...]}")
        return await limited(lambda: store.store_scans(body["items"], p.name))

    # -- clusters ------------------------------------------------------------------------------------------------

    @app.get("/api/v1/clusters", tags=["clusters"])
    async def list_clusters(_p: Principal = viewer) -> Any:
        return await run_in_threadpool(store.clusters)

    @app.get("/api/v1/clusters/archived", tags=["clusters"])
    async def list_archived(_p: Principal = viewer) -> Any:
        """Clusters deleted without purging: their alerts and violations are kept."""
        return await run_in_threadpool(lambda: store.clusters(archived=True))

    @app.post("/api/v1/clusters", tags=["clusters"], status_code=201)
    async def create_cluster(request: Request, p: Principal = manager) -> Any:
        """Register a cluster (or bring an archived one back): {"name": ..., "expires_in_days": N (optional)}."""
        body = await body_json(request)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            raise HTTPException(400, "send {'name': ...}")
        ttl = expiry(body, None)
        cid, token = await run_in_threadpool(store.create_cluster, name, p.name, ttl)
        return {"id": cid, "name": name, "token": token}

    @app.post("/api/v1/clusters/{cluster}/tokens", tags=["clusters"], status_code=201)
    async def cluster_token(cluster: str, request: Request, p: Principal = manager) -> Any:
        """Another ingestion token for a cluster: optional body {"expires_in_days": N}."""
        ttl = expiry(await body_json(request, optional=True), None)
        return {"token": await run_in_threadpool(store.new_cluster_token, cluster, p.name, ttl)}

    @app.delete("/api/v1/clusters/{cluster}", tags=["clusters"], status_code=204)
    async def delete_cluster(cluster: str, purge: bool = False, p: Principal = triager) -> Response:
        """Archive a cluster: its tokens stop working, its alerts and violations are kept; ``?purge=true`` deletes
        it with everything of it. Admins only."""
        await run_in_threadpool(store.delete_cluster, cluster, p.name, purge)
        return Response(status_code=204)

    # -- learned profiles (audit collectors with --profiles server) ----------------------------------------------

    def own_or_viewer(request: Request, cluster: str) -> tuple[Principal, int]:
        """The cluster's own collectors, or a user who may view; the cluster's id."""
        p = principal(request)
        if p.kind == "cluster":
            if store.principal_cluster_name(p) != cluster:
                raise HTTPException(403, f"this token belongs to cluster {store.principal_cluster_name(p)!r}")
            assert p.cluster_id is not None
            return p, p.cluster_id
        if p.role not in VIEW:
            raise HTTPException(403, f"{p.name} ({p.role}) may not do this")
        return p, store.cluster_id(cluster, archived=True)

    @app.get("/api/v1/clusters/{cluster}/profiles", tags=["profiles"])
    async def get_profiles(cluster: str, request: Request, identity: str | None = None, full: bool = False) -> Any:
        """The identities the cluster's audit collector learned, with the number of values per dimension
        (``identity``: that one with its values; ``full``: everything, as the collector loads it)."""
        _p, cid = own_or_viewer(request, cluster)
        if full:
            return await run_in_threadpool(store.profiles_load, cid)
        return await run_in_threadpool(store.profiles_summary, cid, identity)

    @app.post("/api/v1/clusters/{cluster}/profiles", tags=["profiles"])
    async def learn_profiles(cluster: str, request: Request) -> Any:
        """What the cluster's audit collector learned since its last write (its cluster token only)."""
        p, cid = own_or_viewer(request, cluster)
        if p.kind != "cluster":
            raise HTTPException(403, "profiles are written by the cluster's audit collector (a cluster token)")
        body = await body_json(request)
        return await limited(lambda: store.profiles_learn(cid, body))

    @app.delete("/api/v1/clusters/{cluster}/profiles/{identity:path}", tags=["profiles"], status_code=204)
    async def reset_profile(cluster: str, identity: str, request: Request) -> Response:
        """Forget one identity's profile: it learns again (admins; the running collector forgets it at its next
        write). The cluster's collector may also drop identities it no longer keeps."""
        p, cid = own_or_viewer(request, cluster)
        if p.kind != "cluster" and p.role not in TRIAGE:
            raise HTTPException(403, f"{p.name} ({p.role}) may not do this; it needs admin")
        if not await run_in_threadpool(store.profile_reset, cid, identity, p.name, p.kind != "cluster"):
            raise HTTPException(404, f"no profile for {identity!r} in cluster {cluster!r}")
        return Response(status_code=204)

    # -- read models ---------------------------------------------------------------------------------------------

    @app.get("/api/v1/overview", tags=["views"])
    async def overview(_p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.overview, store)

    @app.get("/api/v1/running-images", tags=["views"])
    async def running(cluster: str | None = None, q: str | None = None, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.running_images, store, cluster, q)

    @app.get("/api/v1/vulnerabilities", tags=["views"])
    async def vulns(severity: str | None = None, q: str | None = None, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.vulnerabilities, store, severity, q)

    @app.get("/api/v1/images", tags=["views"])
    async def list_images(_p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.images, store)

    @app.get("/api/v1/images/{image_id}", tags=["views"])
    async def get_image(image_id: RowId, severity: str | None = None, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.image, store, image_id, severity)

    @app.get("/api/v1/recommendations", tags=["views"])
    async def recs(
        cluster: str | None = None,
        severity: str | None = None,
        q: str | None = None,
        include_excepted: bool = False,
        _p: Principal = viewer,
    ) -> Any:
        return await run_in_threadpool(views.recommendations, store, cluster, severity, q, include_excepted)

    @app.get("/api/v1/compliance", tags=["views"])
    async def comp(cluster: str | None = None, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(views.compliance, store, cluster)

    @app.get("/api/v1/violations", tags=["views"])
    async def list_violations(cluster: str | None = None, limit: Limit = 200, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(store.violations, cluster, min(limit, 5000))

    # -- alerts --------------------------------------------------------------------------------------------------

    @app.get("/api/v1/alerts", tags=["alerts"])
    async def list_alerts(
        status: str | None = None,
        severity: str | None = None,
        cluster: str | None = None,
        source: str | None = None,
        q: str | None = None,
        limit: Limit = 100,
        offset: Offset = 0,
        _p: Principal = viewer,
    ) -> Any:
        total, rows = await run_in_threadpool(
            store.alerts, status, severity, cluster, source, q, max(1, min(limit, 1000)), max(0, offset)
        )
        return {"total": total, "items": rows}

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(alert_id: RowId, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(store.alert, alert_id)

    @app.post("/api/v1/alerts/status", tags=["alerts"])
    async def alerts_status(request: Request, p: Principal = triager) -> Any:
        """Dismiss, resolve or reopen alerts: {"ids": [...], "status": "dismissed", "reason": "..."}."""
        body = await body_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
            raise HTTPException(400, "send {'ids': [...], 'status': ..., 'reason': ...}")
        try:
            ids = [int(i) for i in body["ids"]]
        except (TypeError, ValueError):
            raise HTTPException(400, "'ids' are alert ids (integers)") from None
        n = await run_in_threadpool(
            store.set_alert_status, ids, str(body.get("status", "")), str(body.get("reason", "")), p.name
        )
        return {"updated": n}

    # -- settings: suppressions, exceptions, exports, users ------------------------------------------------------

    for table, writer_dep, adder in (
        ("suppressions", triager, store.add_suppression),
        ("exceptions", triager, store.add_exception),
        ("exports", triager, lambda spec, actor: store.add_export(spec, actor, settings.export_dir)),
    ):
        _settings_routes(app, store, table, viewer, writer_dep, adder, body_json)

    @app.get("/api/v1/users", tags=["users"])
    async def list_users(_p: Principal = triager) -> Any:
        return await run_in_threadpool(store.users)

    @app.post("/api/v1/users", tags=["users"], status_code=201)
    async def create_user(request: Request, p: Principal = triager) -> Any:
        body = await body_json(request)
        if not isinstance(body, dict):
            raise HTTPException(400, "send {'name', 'password', 'role'}")
        name, password, role = (str(body.get(k, "")) for k in ("name", "password", "role"))
        uid = await run_in_threadpool(store.create_user, name, password, role, p.name)
        return {"id": uid}

    @app.patch("/api/v1/users/{name}", tags=["users"])
    async def patch_user(name: str, request: Request, p: Principal = triager) -> Any:
        """Disable a user (their sessions and tokens stop working) or enable them: {"disabled": true|false}."""
        body = await body_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("disabled"), bool):
            raise HTTPException(400, "send {'disabled': true or false}")
        await run_in_threadpool(store.set_user_disabled, name, body["disabled"], p.name)
        return {"name": name, "disabled": body["disabled"]}

    @app.get("/api/v1/tokens", tags=["users"])
    async def list_tokens(p: Principal = viewer) -> Any:
        """Your API tokens (admins: every API and cluster token), without their secrets."""
        return await run_in_threadpool(store.tokens, None if p.role == "admin" else p.name)

    @app.post("/api/v1/tokens", tags=["users"], status_code=201)
    async def create_token(request: Request, p: Principal = viewer) -> Any:
        """An API token for yourself (admins: for any user, with 'user'), valid "expires_in_days" (default 90;
        0: until revoked)."""
        body = await body_json(request)
        body = body if isinstance(body, dict) else {}
        user = str(body.get("user") or p.name)
        if user != p.name and p.role != "admin":
            raise HTTPException(403, "only an admin creates tokens for another user")
        ttl = expiry(body, USER_TOKEN_TTL)
        name = str(body.get("name") or "api")
        token = await run_in_threadpool(store.create_user_token, user, name, p.name, ttl)
        return {"token": token, "expires_in_days": None if ttl is None else round(ttl / 86400, 3)}

    @app.delete("/api/v1/tokens/{token_id}", tags=["users"], status_code=204)
    async def revoke_token(token_id: RowId, p: Principal = viewer) -> Response:
        """Revoke a token by id: your own, or (admins) any; contributors also revoke cluster tokens."""
        kind, owner = await run_in_threadpool(store.token_owner, token_id)
        allowed = p.role == "admin" or (owner == p.name and p.kind != "cluster") or (
            kind == "cluster" and p.role in MANAGE)
        if not allowed:
            raise HTTPException(403, f"{p.name} ({p.role}) may revoke only their own tokens")
        await run_in_threadpool(store.revoke_token_id, token_id, p.name)
        return Response(status_code=204)

    @app.get("/api/v1/audit-log", tags=["users"])
    async def get_audit_log(limit: Limit = 200, _p: Principal = viewer) -> Any:
        return await run_in_threadpool(store.audit_entries, min(limit, 5000))

    @app.post("/api/v1/rescan", tags=["images"])
    async def rescan(p: Principal = manager) -> Any:
        """Rematch every stored image inventory against the server's vulnerability database now."""
        if settings.vulndb is None:
            raise HTTPException(409, "the server has no vulnerability database (start it with --vulndb)")
        from stockade.server.rescan import rescan_all

        vdb = settings.vulndb
        return await run_in_threadpool(lambda: rescan_all(store, vdb, p.name, force=True))

    mount(app, store, settings)
    return app


def _settings_routes(
    app: FastAPI,
    store: Store,
    table: str,
    viewer: Any,
    writer: Any,
    adder: Callable[[dict[str, Any], str], int],
    body_json: Callable[[Request], Awaitable[Any]],
) -> None:
    async def list_rows(p: Principal = viewer) -> Any:
        return await run_in_threadpool(store.rows, table, p.role)

    async def add_row(request: Request, p: Principal = writer) -> Any:
        body = await body_json(request)
        if not isinstance(body, dict):
            raise HTTPException(400, "send a JSON object")
        return {"id": await run_in_threadpool(adder, body, p.name)}

    async def delete_row(row_id: RowId, p: Principal = writer) -> Response:
        await run_in_threadpool(store.delete_row, table, row_id, p.name)
        return Response(status_code=204)

    app.add_api_route(f"/api/v1/{table}", list_rows, methods=["GET"], tags=["settings"], name=f"list_{table}")
    app.add_api_route(
        f"/api/v1/{table}", add_row, methods=["POST"], tags=["settings"], status_code=201, name=f"add_{table}"
    )
    app.add_api_route(
        f"/api/v1/{table}/{{row_id}}",
        delete_row,
        methods=["DELETE"],
        tags=["settings"],
        status_code=204,
        name=f"delete_{table}",
    )

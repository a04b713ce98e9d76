"""The web dashboard: server-rendered pages (Jinja2) over the same read models as the API, with SVG charts drawn
here (no JavaScript, no CDN: it works air-gapped). Forms post with the session cookie (SameSite=Strict) and a
per-session CSRF token."""

from __future__ import annotations

import hashlib
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from stockade.model import StockadeError
from stockade.server import views
from stockade.server.store import SESSION_COOKIE, SESSION_TTL, Principal, Store
from stockade.web import RowId

SEV_COLOR = {
    "CRITICAL": "#8e1b1b",
    "HIGH": "#d9480f",
    "MEDIUM": "#e8a10c",
    "LOW": "#3b7dd8",
    "INFO": "#7a8591",
    "UNKNOWN": "#a0a7b0",
}


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    d = time.time() - ts
    for unit, sec in (("d", 86400), ("h", 3600), ("min", 60)):
        if d >= sec:
            return f"{int(d // sec)} {unit} ago"
    return "just now"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def donut(parts: dict[str, int], label: str) -> Markup:
    """A donut chart of counts by severity, with the total in the middle."""
    total = sum(parts.values())
    r, c = 54, 2 * math.pi * 54
    segs, offset = [], 0.0
    for sev, n in parts.items():
        if not n:
            continue
        length = c * n / total
        segs.append(
            f'<circle r="{r}" cx="70" cy="70" fill="none" stroke="{SEV_COLOR.get(sev, "#999")}" stroke-width="22" '
            f'stroke-dasharray="{length:.2f} {c - length:.2f}" stroke-dashoffset="{-offset:.2f}" '
            f'transform="rotate(-90 70 70)"><title>{escape(sev)}: {n}</title></circle>'
        )
        offset += length
    if not segs:
        segs.append(f'<circle r="{r}" cx="70" cy="70" fill="none" stroke="#e3e6ea" stroke-width="22"/>')
    legend = "".join(
        f'<li><span class="sw" style="background:{SEV_COLOR.get(s, "#999")}"></span>{escape(s.title())} <b>{n}</b></li>'
        for s, n in parts.items()
    )
    return Markup(
        f'<div class="donut"><svg viewBox="0 0 140 140" width="140" height="140" role="img" aria-label="{label}">'
        f'{"".join(segs)}<text x="70" y="68" text-anchor="middle" class="big">{total}</text>'
        f'<text x="70" y="88" text-anchor="middle" class="small">{label}</text></svg><ul>{legend}</ul></div>'
    )


def bars(values: list[int], labels: list[str], title: str) -> Markup:
    """A column chart (the alert trend)."""
    w, h, pad = 560, 150, 24
    top = max([*values, 1])
    bw = (w - pad) / max(len(values), 1)
    cols = []
    for i, v in enumerate(values):
        bh = (h - 30) * v / top
        x = pad + i * bw
        cols.append(
            f'<rect x="{x + 2:.1f}" y="{h - 18 - bh:.1f}" width="{bw - 4:.1f}" height="{bh:.1f}" fill="#3b6fb6">'
            f"<title>{escape(labels[i])}: {v}</title></rect>"
        )
        if i % 2 == 0:
            cols.append(
                f'<text x="{x + bw / 2:.1f}" y="{h - 4}" text-anchor="middle" class="tick">{escape(labels[i])}</text>'
            )
    return Markup(
        f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{title}">'
        f'<text x="0" y="12" class="tick">{top}</text><line x1="{pad}" y1="{h - 18}" x2="{w}" y2="{h - 18}" '
        f'stroke="#ccd"/>{"".join(cols)}</svg>'
    )


def hbars(items: dict[str, int], title: str) -> Markup:
    """Horizontal bars (alerts by MITRE tactic)."""
    if not items:
        return Markup('<p class="muted">none</p>')
    top = max(items.values())
    rows = "".join(
        f'<div class="hbar"><span class="lbl">{escape(k)}</span>'
        f'<span class="bar" style="width:{max(2, 100 * v / top):.0f}%"></span><b>{v}</b></div>'
        for k, v in list(items.items())[:10]
    )
    return Markup(f'<div class="hbars" aria-label="{escape(title)}">{rows}</div>')


def gauge(score: float | None) -> Markup:
    """The secure score as a ring."""
    if score is None:
        return Markup('<div class="gauge"><span class="big">n/a</span><span class="small">not assessed</span></div>')
    c = 2 * math.pi * 54
    color = "#2f9e44" if score >= 80 else "#e8a10c" if score >= 50 else "#c92a2a"
    return Markup(
        f'<svg viewBox="0 0 140 140" width="140" height="140" role="img" aria-label="secure score {score}%">'
        f'<circle r="54" cx="70" cy="70" fill="none" stroke="#e3e6ea" stroke-width="14"/>'
        f'<circle r="54" cx="70" cy="70" fill="none" stroke="{color}" stroke-width="14" '
        f'stroke-dasharray="{c * score / 100:.2f} {c:.2f}" transform="rotate(-90 70 70)"/>'
        f'<text x="70" y="76" text-anchor="middle" class="big" id="secure-score">{score:.0f}%</text></svg>'
    )


def set_session_cookie(resp: Response, token: str, secure: bool) -> None:
    """The dashboard session: HttpOnly, SameSite=Strict, Secure over HTTPS, as long as the session lives."""
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=int(SESSION_TTL))


def csrf_token(session: str) -> str:
    return hashlib.sha256(b"stockade-csrf:" + session.encode()).hexdigest()[:32]


def mount(app: FastAPI, store: Store, settings: Any) -> None:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
    )
    env.globals.update(
        ago=_ago, when=_when, donut=donut, bars=bars, hbars=hbars, gauge=gauge, sev_color=SEV_COLOR, urlencode=urlencode
    )

    def who(request: Request) -> tuple[Principal | None, str]:
        token = request.cookies.get(SESSION_COOKIE, "")
        p = store.principal(token) if token else None
        if p is not None and p.kind == "cluster":
            p = None
        return p, token

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        p, token = who(request)
        html = env.get_template(name).render(
            me=p, csrf=csrf_token(token) if token else "", path=request.url.path, q=request.query_params, **ctx
        )
        return HTMLResponse(html, status_code=status)

    async def guarded(request: Request, name: str, load: Any, *args: Any) -> Response:
        p, _ = who(request)
        if p is None:
            return RedirectResponse("/login?" + urlencode({"next": str(request.url.path)}), status_code=303)
        try:
            data = await run_in_threadpool(load, *args) if load is not None else {}
        except StockadeError as e:
            return page(request, "error.html", status=404, error=str(e))
        return page(request, name, data=data)

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        return {k: str(v) for k, v in form.items()}

    def check_form(request: Request, form: dict[str, str], roles: frozenset[str]) -> Principal | Response:
        p, token = who(request)
        if p is None:
            return RedirectResponse("/login", status_code=303)
        if not token or form.get("csrf") != csrf_token(token):
            return page(request, "error.html", status=403, error="The form expired; reload the page and try again.")
        if p.role not in roles:
            return page(
                request,
                "error.html",
                status=403,
                error=f"{p.name} is a {p.role}: this needs the {' or '.join(sorted(roles))} role.",
            )
        return p

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request) -> Response:
        return page(request, "login.html", error="")

    @app.post("/login", include_in_schema=False)
    async def login_post(request: Request) -> Response:
        form = await form_of(request)
        name, client = form.get("name", ""), request.client.host if request.client else ""
        guard = request.app.state.login_guard
        wait = guard.retry_after(name, client)
        if wait is not None:
            resp = page(request, "login.html", status=429, error="Too many failed logins; try again later.")
            resp.headers["Retry-After"] = str(wait)
            return resp
        token = await run_in_threadpool(store.login, name, form.get("password", ""), client)
        if token is None:
            guard.failed(name, client)
            return page(request, "login.html", status=401, error="Wrong user name or password.")
        nxt = form.get("next") or "/"
        resp = RedirectResponse(nxt if nxt.startswith("/") and not nxt.startswith("//") else "/", status_code=303)
        set_session_cookie(resp, token, settings.secure_cookies)
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = await form_of(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if token and form.get("csrf") == csrf_token(token):
            await run_in_threadpool(store.revoke_token, token, "logout")
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def overview(request: Request) -> Response:
        return await guarded(request, "overview.html", views.overview, store)

    @app.get("/clusters", response_class=HTMLResponse, include_in_schema=False)
    async def clusters(request: Request) -> Response:
        return await guarded(request, "clusters.html", store.clusters)

    @app.get("/images", response_class=HTMLResponse, include_in_schema=False)
    async def images(request: Request) -> Response:
        qp = request.query_params
        return await guarded(request, "images.html", views.running_images, store, qp.get("cluster"), qp.get("q"))

    @app.get("/images/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    async def image(request: Request, image_id: RowId) -> Response:
        return await guarded(request, "image.html", views.image, store, image_id, request.query_params.get("severity"))

    @app.get("/vulnerabilities", response_class=HTMLResponse, include_in_schema=False)
    async def vulnerabilities(request: Request) -> Response:
        qp = request.query_params
        sev, q = qp.get("severity"), qp.get("q")
        return await guarded(request, "vulnerabilities.html", views.vulnerabilities, store, sev, q)

    @app.get("/recommendations", response_class=HTMLResponse, include_in_schema=False)
    async def recommendations(request: Request) -> Response:
        qp = request.query_params
        return await guarded(
            request,
            "recommendations.html",
            views.recommendations,
            store,
            qp.get("cluster"),
            qp.get("severity"),
            qp.get("q"),
        )

    @app.get("/compliance", response_class=HTMLResponse, include_in_schema=False)
    async def compliance(request: Request) -> Response:
        return await guarded(request, "compliance.html", views.compliance, store, request.query_params.get("cluster"))

    @app.get("/admission", response_class=HTMLResponse, include_in_schema=False)
    async def admission(request: Request) -> Response:
        qp = request.query_params
        return await guarded(
            request, "admission.html", views.admission, store, qp.get("cluster"), qp.get("action"), qp.get("q")
        )

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    async def alerts(request: Request) -> Response:
        qp = request.query_params
        status = qp.get("status", "active")

        def load() -> dict[str, Any]:
            total, rows = store.alerts(
                status or None, qp.get("severity") or None, qp.get("cluster") or None, qp.get("source") or None,
                qp.get("q") or None, 200, 0,
            )
            return {"total": total, "rows": rows, "status": status, "clusters": store.cluster_names()}

        return await guarded(request, "alerts.html", load)

    @app.get("/alerts/{alert_id}", response_class=HTMLResponse, include_in_schema=False)
    async def alert(request: Request, alert_id: RowId) -> Response:
        return await guarded(request, "alert.html", store.alert, alert_id)

    @app.post("/alerts/{alert_id}/status", include_in_schema=False)
    async def alert_status(request: Request, alert_id: RowId) -> Response:
        form = await form_of(request)
        p = check_form(request, form, frozenset({"admin"}))
        if not isinstance(p, Principal):
            return p
        try:
            await run_in_threadpool(
                store.set_alert_status, [alert_id], form.get("status", ""), form.get("reason", ""), p.name
            )
        except StockadeError as e:
            return page(request, "error.html", status=400, error=str(e))
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303)

    @app.get("/settings", response_class=HTMLResponse, include_in_schema=False)
    async def settings_page(request: Request) -> Response:
        p, _ = who(request)
        role = p.role if p else "reader"
        mine = p.name if p else ""

        def load() -> dict[str, Any]:
            return {
                "suppressions": store.rows("suppressions"),
                "exceptions": store.rows("exceptions"),
                "exports": store.rows("exports", role),
                "users": store.users() if role == "admin" else [],
                "tokens": store.tokens(None if role == "admin" else mine),
                "audit": store.audit_entries(100),
            }

        return await guarded(request, "settings.html", load)

    @app.post("/settings/users/{name}/disabled", include_in_schema=False)
    async def user_disabled(request: Request, name: str) -> Response:
        form = await form_of(request)
        p = check_form(request, form, frozenset({"admin"}))
        if not isinstance(p, Principal):
            return p
        try:
            await run_in_threadpool(store.set_user_disabled, name, form.get("disabled") == "1", p.name)
        except StockadeError as e:
            return page(request, "error.html", status=400, error=str(e))
        return RedirectResponse("/settings#users", status_code=303)

    @app.post("/settings/tokens/{token_id}/revoke", include_in_schema=False)
    async def token_revoke(request: Request, token_id: RowId) -> Response:
        form = await form_of(request)
        p = check_form(request, form, frozenset({"reader", "contributor", "admin"}))
        if not isinstance(p, Principal):
            return p
        try:
            kind, owner = await run_in_threadpool(store.token_owner, token_id)
            if not (p.role == "admin" or owner == p.name or (kind == "cluster" and p.role == "contributor")):
                return page(request, "error.html", status=403, error=f"{p.name} may revoke only their own tokens.")
            await run_in_threadpool(store.revoke_token_id, token_id, p.name)
        except StockadeError as e:
            return page(request, "error.html", status=404, error=str(e))
        return RedirectResponse("/settings#tokens", status_code=303)

    @app.post("/settings/tokens", include_in_schema=False)
    async def token_create(request: Request) -> Response:
        form = await form_of(request)
        p = check_form(request, form, frozenset({"reader", "contributor", "admin"}))
        if not isinstance(p, Principal):
            return p
        days = form.get("expires_in_days", "90")
        if not days.isdigit() or int(days) > 3650:
            return page(request, "error.html", status=400, error="Expiry is a number of days from 0 (never) to 3650.")
        ttl = int(days) * 86400.0 or None
        secret = await run_in_threadpool(store.create_user_token, p.name, form.get("name") or "api", p.name, ttl)
        return page(request, "token.html", token=secret, days=int(days))

    @app.post("/settings/{table}", include_in_schema=False)
    async def settings_add(request: Request, table: str) -> Response:
        form = await form_of(request)
        p = check_form(request, form, frozenset({"admin"}))
        if not isinstance(p, Principal):
            return p
        export_dir = request.app.state.settings.export_dir
        adders = {"suppressions": store.add_suppression, "exceptions": store.add_exception,
                  "exports": lambda spec, actor: store.add_export(spec, actor, export_dir)}  # fmt: skip
        if table not in adders:
            return page(request, "error.html", status=404, error=f"no settings table {table!r}")
        spec: dict[str, Any] = {k: v for k, v in form.items() if k != "csrf" and v != ""}
        if table == "suppressions":
            spec["match"] = {k[6:]: spec.pop(k) for k in list(spec) if k.startswith("match_")}
            spec["apply_to_existing"] = spec.get("apply_to_existing") == "on"
        if table == "exports":
            spec["allow_private"] = spec.get("allow_private") == "on"
        try:
            await run_in_threadpool(adders[table], spec, p.name)
        except StockadeError as e:
            return page(request, "error.html", status=400, error=str(e))
        return RedirectResponse("/settings", status_code=303)

"""`stockade audit serve`: the API server's audit webhook backend. The API server POSTs EventList batches
(audit.k8s.io/v1) over HTTPS with a bearer token from its webhook kubeconfig; alerts go out as JSON lines."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from stockade.audit.detect import Detector, IntelReloader
from stockade.audit.events import Stats, documents_to_events, parse_batch
from stockade.web import BodyTooLarge, read_body

log = logging.getLogger("stockade.audit")
JSON = "application/json"


def create_app(detector: Detector, tokens: list[str], out: IO[bytes], max_body: int = 32 * 1024 * 1024,
               reloader: IntelReloader | None = None) -> FastAPI:  # fmt: skip
    registry = CollectorRegistry()
    events = Counter("stockade_audit_events", "Audit events received", registry=registry)
    malformed = Counter("stockade_audit_malformed", "Malformed records skipped", ["reason"], registry=registry)
    alerts = Counter("stockade_audit_alerts", "Alerts raised", ["rule"], registry=registry)
    rejected = Counter("stockade_audit_rejected", "Requests refused", ["reason"], registry=registry)
    lock = threading.Lock()
    wanted = [t.encode() for t in tokens]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        out.flush()
        if detector.profiles is not None:  # what was learned since the last write
            detector.profiles.close()

    app = FastAPI(title="stockade audit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def authorized(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        given = auth[7:].strip().encode()
        return any(hmac.compare_digest(given, w) for w in wanted)

    @app.post("/audit")
    async def receive(request: Request) -> Response:
        if not authorized(request):
            rejected.labels("unauthorized").inc()
            return Response(orjson.dumps({"error": "unauthorized"}), status_code=401, media_type=JSON)
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge as exc:
            rejected.labels("too_large").inc()
            return Response(orjson.dumps({"error": str(exc)}), status_code=413, media_type=JSON)
        st = Stats()
        evs = parse_batch(body, st, detector.wants)  # an EventList, parsed lazily (as `audit scan` reads lines)
        if evs is None:
            try:
                docs = [orjson.loads(body)]
            except orjson.JSONDecodeError:
                try:  # JSON lines, as some forwarders batch them
                    docs = [orjson.loads(line) for line in body.splitlines() if line.strip()]
                except orjson.JSONDecodeError as exc:
                    rejected.labels("not_json").inc()
                    log.warning("audit batch is not JSON: %s", exc)
                    return Response(orjson.dumps({"error": f"not JSON ({exc})"}), status_code=400, media_type=JSON)
            evs = (ev for doc in docs for ev in documents_to_events(doc, st))
        lines = []
        with lock:  # one detector: dedup across batches
            if reloader is not None:
                reloader.check()  # the indicator store rewritten by `stockade intel update`: the new lists
            for ev in evs:
                for a in detector.process(ev):
                    alerts.labels(a.rule).inc()
                    lines.append(a.to_json() + b"\n")
            if lines:
                out.write(b"".join(lines))
                out.flush()
        events.inc(st.events)
        for reason, n in st.reasons.items():
            malformed.labels(reason).inc(n)
        return Response(orjson.dumps({"events": st.events, "malformed": st.malformed, "alerts": len(lines)}),
                        media_type=JSON)  # fmt: skip

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app

"""`stockade admission serve`: the HTTPS validating webhook (AdmissionReview v1), with health, readiness and
Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from stockade.admission.policy import AdmissionPolicy
from stockade.admission.review import BadReview, Decision, Reviewer, allowed_on_error, parse_review
from stockade.web import BodyTooLarge
from stockade.web import read_body as read_limited

log = logging.getLogger("stockade.admission")
JSON = "application/json"


def create_app(policy: AdmissionPolicy, reviewer: Reviewer | None = None) -> FastAPI:
    reviewer = reviewer or Reviewer(policy)
    registry = CollectorRegistry()
    requests = Counter("stockade_admission_requests", "Admission reviews answered", ["decision"], registry=registry)
    violations = Counter("stockade_admission_violations", "Rule violations found", ["rule", "mode"], registry=registry)
    latency = Histogram(
        "stockade_admission_review_seconds",
        "Time to answer one review",
        buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        registry=registry,
    )
    errors = Counter("stockade_admission_errors", "Bad requests and internal errors", ["kind"], registry=registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        reviewer.close()

    app = FastAPI(title="stockade admission", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.reviewer = reviewer

    async def read_body(request: Request) -> bytes:
        try:
            return await read_limited(request, policy.max_body_bytes)
        except BodyTooLarge as exc:
            size = f" of {exc.declared} bytes" if exc.declared is not None else ""
            raise BadReview(f"request body{size} is over the {policy.max_body_bytes}-byte limit") from None

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        start = time.perf_counter()
        try:
            doc = parse_review(await read_body(request), policy.max_body_bytes)
        except BadReview as exc:
            errors.labels("bad_request").inc()
            log.warning("bad admission request from %s: %s", request.client.host if request.client else "?", exc)
            return Response(orjson.dumps({"error": str(exc)}), status_code=400, media_type=JSON)
        uid = doc["request"]["uid"]
        agent = request.headers.get("user-agent", "")
        try:
            # posture: CPU-bound and bounded (about a millisecond), inline; a thread hop would cost more than it
            prep = reviewer.prepare(doc)
        except Exception as exc:  # an internal error follows the failure policy, and is logged
            errors.labels("internal").inc()
            log.exception("review %s failed; failure policy %s", uid, policy.failure_policy)
            prep = allowed_on_error(uid, policy, type(exc).__name__)
        if isinstance(prep, Decision):
            decision: Decision = prep
        elif reviewer.scans is None:
            decision = reviewer.decide(prep, reviewer.gate(prep), agent)
        else:  # the scan store is I/O: off the event loop, under the deadline
            try:
                gate = await asyncio.wait_for(asyncio.to_thread(reviewer.gate, prep), timeout=policy.timeout_seconds)
                decision = reviewer.decide(prep, gate, agent)
            except Exception as exc:  # TimeoutError included
                reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
                errors.labels("timeout" if isinstance(exc, TimeoutError) else "internal").inc()
                log.error("image gate of review %s failed (%s); failure policy %s", uid, exc or reason,
                          policy.failure_policy)  # fmt: skip
                if policy.failure_policy == "Ignore":  # posture verdicts stand: a privileged pod is still denied
                    decision = reviewer.decide(prep, [], agent, gate_error=reason)
                else:
                    decision = allowed_on_error(uid, policy, reason)
        for v in decision.violations:
            violations.labels(v.rule.id, v.mode).inc()
        requests.labels("exempt" if decision.exempt else ("allowed" if decision.allowed else "denied")).inc()
        latency.observe(time.perf_counter() - start)
        return Response(decision.response(), media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        return PlainTextResponse("ready" if app.state.reviewer is not None else "loading",
                                 status_code=200 if app.state.reviewer is not None else 503)  # fmt: skip

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def probes_only(app: FastAPI) -> Any:
    """The app's /healthz, /readyz and /metrics, and nothing else (404): what the plain-HTTP probe port serves
    when the HTTPS port requires client certificates, which the kubelet's probes do not present."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBE_PATHS:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"only /healthz, /readyz and /metrics here"})
            return
        await app(scope, receive, send)

    return asgi


def serve(app: FastAPI, host: str, port: int, cert: str, key: str, client_ca: str | None = None,
          probe_port: int | None = None, **kw: Any) -> None:  # fmt: skip
    """Serve the webhook over HTTPS. With ``client_ca``, only clients with a certificate that CA signed get past
    the TLS handshake (the API server, configured with --admission-control-config-file); the probes then answer
    on ``probe_port`` over plain HTTP."""
    import gc
    import ssl

    import uvicorn

    gc.collect()
    gc.freeze()  # rules and the policy live for the process: keep them out of the collector's full passes
    common: dict[str, Any] = {"log_level": kw.get("log_level", "warning"), "access_log": False,
                              "timeout_keep_alive": 30}  # fmt: skip
    tls = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE, **common,
    )  # fmt: skip
    if client_ca is None or probe_port is None:
        uvicorn.Server(tls).run()
        return
    probes = uvicorn.Config(probes_only(app), host=host, port=probe_port, lifespan="off", **common)

    async def both() -> None:
        await asyncio.gather(uvicorn.Server(tls).serve(), uvicorn.Server(probes).serve())

    asyncio.run(both())

"""What stockade's HTTP servers (admission webhook, audit webhook backend, central server) share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Path, Query
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# query and path numbers checked before they reach a database (limit=-1 is "no limit" on SQLite; ids past 2**63
# overflow its integers): 422 naming the parameter
Limit = Annotated[int, Query(ge=1, le=5000)]
Offset = Annotated[int, Query(ge=0, le=2**62)]
RowId = Annotated[int, Path(ge=1, le=2**62)]


class BodyTooLarge(Exception):
    """The request body is over the limit; ``declared`` is its Content-Length when that already said so."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit, self.declared = limit, declared


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing a declared or streamed size over ``limit`` before buffering more than it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


LimitFor = Callable[[str, str], int]  # (method, path) -> the most bytes a request body may have


class BodyLimit:
    """ASGI middleware: a request body over the route's limit is refused with 413 before it is read, by its
    declared Content-Length or, for a streamed body, as soon as the bytes received pass the limit. Covers every
    route, forms included (Starlette's form parser buffers a whole urlencoded body)."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return msg

        async def watch(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, watch)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"error": f"the body is over {limit} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


LARGE_JSON = 64 * 1024  # bodies above this are parsed in a worker thread, not on the event loop


async def parse_json(body: bytes) -> Any:
    """orjson.loads, off the event loop for a large body (a 60 MB document takes a second to parse, and the
    loop answers /healthz and every other request meanwhile)."""
    if len(body) <= LARGE_JSON:
        return orjson.loads(body)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(orjson.loads, body)

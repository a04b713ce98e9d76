"""What stockade's HTTP servers (admission webhook, audit webhook backend, central server) share."""

from __future__ import annotations

from starlette.requests import Request


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

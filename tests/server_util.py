"""Helpers of the tests that run servers: a free port, fresh databases (a SQLite file or a new PostgreSQL
database on loopback) and a real uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A URL of an empty database of this kind, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'server.db'}"
        return
    import psycopg

    name = f"stockade_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for these tests (.ci/setup starts it): {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_store(url: str) -> Any:
    from stockade.server.db import make_engine, upgrade
    from stockade.server.store import Store

    engine = make_engine(url)
    upgrade(engine)
    return Store(engine)


@contextmanager
def serving(store: Any, **settings: Any) -> Iterator[str]:
    """The app on a real HTTP port in this process; yields its base URL."""
    import uvicorn

    from stockade.server.api import ServerSettings, create_app

    settings.setdefault("background", False)
    app = create_app(store, ServerSettings(**settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)

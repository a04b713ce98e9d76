"""Which process runs the server's background loops (alert export, rescans) when several serve one database: the
uvicorn workers of `stockade server --workers N`, or several replicas on one PostgreSQL. Exactly one holds the lock;
when it dies, the lock goes with its connection (PostgreSQL advisory lock) or its file descriptor (SQLite: flock on
a file beside the database), and another process takes over on its next try."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("stockade.server")

# pg_try_advisory_lock key: "stockade" in ASCII, a fixed 64-bit number so every replica asks for the same lock
LOCK_KEY = int.from_bytes(b"stockade", "big") & 0x7FFF_FFFF_FFFF_FFFF


class Leadership:
    """The background-loop lock of one process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pg: Any = None  # a dedicated psycopg connection that holds the advisory lock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._pg is not None or self._fd is not None

    def acquire(self) -> bool:
        """Try once to take the lock; True when this process holds it (now or already)."""
        if self.held:
            return True
        if self.engine.dialect.name == "postgresql":
            import psycopg

            url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                con = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="stockade-leader")
                got = con.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            except psycopg.Error as e:
                log.warning("leader lock: %s", e)
                return False
            if got and got[0]:
                self._pg = con
                return True
            con.close()
            return False
        path = self.engine.url.database
        if not path or path == ":memory:":
            self._fd = -1  # a private in-memory database has only this process
            return True
        fd = os.open(f"{path}-leader", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        """False when the lock was lost (the PostgreSQL connection broke); the lock is then released here."""
        if self._pg is None:
            return self.held
        try:
            self._pg.execute("SELECT 1")
            return True
        except Exception as e:  # any driver error means the session, and with it the lock, is gone
            log.warning("leader lock lost: %s", e)
            self.release()
            return False

    def release(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.close()
            self._pg = None
        if self._fd is not None:
            if self._fd >= 0:
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

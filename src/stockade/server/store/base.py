"""What every part of the store shares: the engine, constants, errors, the principal, helpers, tokens and the
audit write."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import JSON, insert, select
from sqlalchemy.engine import Connection, Engine

from stockade.model import StockadeError
from stockade.server import db as t

ROLES = ("reader", "contributor", "admin")
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO", "UNKNOWN")
SEVERITY_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # higher is worse
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}  # for sorting, worst first
ALERT_STATUSES = ("active", "dismissed", "resolved")
INGEST_KINDS = ("alerts", "snapshot", "scans", "violations", "heartbeat")
COMPONENTS = ("agent", "sensor", "audit", "admission")
MAX_ITEMS = 5000  # per batch
SESSION_TTL = 12 * 3600.0
USER_TOKEN_TTL = 90 * 86400.0  # API tokens expire after 90 days unless asked otherwise
SESSION_COOKIE = "stockade_session"


SETTINGS_TABLES = {"suppressions": t.suppressions, "exceptions": t.exceptions, "exports": t.exports}


def severity_list(text: str) -> list[str]:
    """A comma-separated severity filter (?severity=critical,HIGH) as upper-case names."""
    return [s.strip().upper() for s in text.split(",")]


def copy_rows(con: Connection, table: str, columns: list[Any], rows: list[dict[str, Any]]) -> None:
    """PostgreSQL COPY of ``rows`` (dicts by column name) into ``table``; JSON columns go as JSON text."""
    names = ", ".join(f'"{c.name}"' for c in columns)
    json_cols = {c.name for c in columns if isinstance(c.type, JSON)}
    raw = con.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for r in rows:
            copy.write_row([orjson.dumps(r[c.name]).decode() if c.name in json_cols else r[c.name] for c in columns])


def bulk_insert(con: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows with the same keys: COPY on PostgreSQL (psycopg's executemany sends a statement per row),
    executemany on SQLite."""
    if not rows:
        return
    if con.dialect.name == "postgresql":
        copy_rows(con, table.name, [table.c[k] for k in rows[0]], rows)
    else:
        con.execute(insert(table), rows)


class BadRequest(StockadeError):
    """The request's content is wrong: answered 400 with this message."""


class NotFound(StockadeError):
    pass


class Conflict(StockadeError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (by API token or dashboard session) or a cluster's collectors."""

    name: str
    role: str  # reader, contributor, admin; "cluster" for a cluster token
    kind: str  # user, session, cluster
    user_id: int | None = None
    cluster_id: int | None = None


# argon2id at OWASP's first recommended setting (19 MiB, 2 passes, 1 lane): argon2-cffi, the reference
# implementation's binding; scrypt hashes from earlier versions are still verified and rehashed at the next login
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# verified against when the user does not exist, so that a login takes as long either way (no user enumeration)
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password(password: str, stored: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    try:  # the scrypt format of earlier versions
        _algo, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash is of an older scheme or weaker parameters than hash_password uses now."""
    if not stored.startswith("$argon2"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def burn_password_check(password: str) -> None:
    """The cost of check_password, for a name that matches no user."""
    check_password(password, _DUMMY_HASH)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_time(value: Any, default: float) -> float:
    """RFC 3339 text or epoch seconds to epoch seconds; ``default`` when absent or unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return default
    return default


def clip_text(item: dict[str, Any], key: str, limit: int = 300) -> str:
    """A text field, cut to ``limit``, without NUL characters (PostgreSQL refuses them in text)."""
    v = item.get(key, "")
    return (v if isinstance(v, str) else str(v)).replace("\x00", "")[:limit]


def string_list(v: Any) -> list[str]:
    return [str(x).replace("\x00", "") for x in v][:50] if isinstance(v, list) else []


@dataclass(slots=True)
class Suppression:
    id: int
    name: str
    rule: str
    cluster: str
    namespace: str
    match: dict[str, str]
    expires_at: float | None

    def matches(self, alert: dict[str, Any], cluster: str, now: float) -> bool:
        if self.expires_at is not None and self.expires_at < now:
            return False
        if not (
            fnmatchcase(alert["rule"], self.rule)
            and fnmatchcase(cluster, self.cluster)
            and fnmatchcase(alert["namespace"], self.namespace)
        ):
            return False
        return all(fnmatchcase(str(alert.get(k, "")), glob) for k, glob in self.match.items())


class StoreBase:
    """The engine and the caches every aggregate uses; the audit write every action makes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._token_cache: dict[str, tuple[float, Principal | None]] = {}
        self._sup_cache: tuple[float, list[Suppression]] | None = None
        self._seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self.dialect = engine.dialect.name

    @staticmethod
    def audit(con: Connection, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        con.execute(
            insert(t.audit_log).values(at=time.time(), actor=actor, action=action, target=target, detail=detail or {})
        )

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _new_token(
        self,
        kind: str,
        name: str,
        user_id: int | None = None,
        cluster_id: int | None = None,
        ttl: float | None = None,
        actor: str = "system",
    ) -> str:
        secret = "stk_" + secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as con:
            con.execute(
                insert(t.tokens).values(
                    name=name,
                    hash=token_hash(secret),
                    kind=kind,
                    user_id=user_id,
                    cluster_id=cluster_id,
                    created_at=now,
                    expires_at=now + ttl if ttl else None,
                    revoked=False,
                )
            )
            if kind != "session":
                self.audit(con, actor, f"token.create.{kind}", name)
        return secret

    def _cluster_name(self, cluster_id: int) -> str:
        with self.engine.connect() as con:
            row = con.execute(select(t.clusters.c.name).where(t.clusters.c.id == cluster_id)).first()
        return str(row.name) if row else ""


def severity_at_least(sev: str, floor: str) -> bool:
    return SEVERITY_RANK.get(sev, 0) >= SEVERITY_RANK.get(floor, 0)

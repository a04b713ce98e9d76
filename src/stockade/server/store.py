"""The server's data layer: users and tokens, clusters, ingestion (idempotent batches), alerts and their lifecycle,
suppression rules, posture exceptions, exports and the audit log of every write."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import orjson
from sqlalchemy import JSON, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

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
SESSION_COOKIE = "stockade_session"


SETTINGS_TABLES = {"suppressions": t.suppressions, "exceptions": t.exceptions, "exports": t.exports}


def severity_list(text: str) -> list[str]:
    """A comma-separated severity filter (?severity=critical,HIGH) as upper-case names."""
    return [s.strip().upper() for s in text.split(",")]


def _copy(con: Connection, table: str, columns: list[Any], rows: list[dict[str, Any]]) -> None:
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
        _copy(con, table.name, [table.c[k] for k in rows[0]], rows)
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


def hash_password(password: str) -> str:
    """scrypt from the standard library (no extra dependency), in a self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _algo, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def _token_hash(secret: str) -> str:
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


def _text(item: dict[str, Any], key: str, limit: int = 300) -> str:
    """A text field, cut to ``limit``, without NUL characters (PostgreSQL refuses them in text)."""
    v = item.get(key, "")
    return (v if isinstance(v, str) else str(v)).replace("\x00", "")[:limit]


def _strings(v: Any) -> list[str]:
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


class Store:
    """All reads and writes of the server, on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._token_cache: dict[str, tuple[float, Principal | None]] = {}
        self._sup_cache: tuple[float, list[Suppression]] | None = None
        self._seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self.dialect = engine.dialect.name

    # -- writes shared by every action ---------------------------------------------------------------------------

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

    # -- users and tokens ----------------------------------------------------------------------------------------

    def create_user(self, name: str, password: str, role: str, actor: str = "system") -> int:
        if role not in ROLES:
            raise BadRequest(f"role {role!r}: use one of {', '.join(ROLES)}")
        if not name or len(name) > 200:
            raise BadRequest("a user name is 1 to 200 characters")
        if len(password) < 8:
            raise BadRequest("a password has at least 8 characters")
        with self.engine.begin() as con:
            if con.execute(select(t.users.c.id).where(t.users.c.name == name)).first():
                raise Conflict(f"user {name!r} exists")
            uid = con.execute(
                insert(t.users).values(
                    name=name, password_hash=hash_password(password), role=role, created_at=time.time(), disabled=False
                )
            ).inserted_primary_key
            self.audit(con, actor, "user.create", name, {"role": role})
        assert uid is not None
        return int(uid[0])

    def set_password(self, name: str, password: str, actor: str = "system") -> None:
        if len(password) < 8:
            raise BadRequest("a password has at least 8 characters")
        with self.engine.begin() as con:
            n = con.execute(
                update(t.users).where(t.users.c.name == name).values(password_hash=hash_password(password))
            ).rowcount
            if not n:
                raise NotFound(f"no user {name!r}")
            self.audit(con, actor, "user.password", name)

    def users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            rows = con.execute(select(t.users.c.id, t.users.c.name, t.users.c.role, t.users.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def login(self, name: str, password: str) -> str | None:
        """A dashboard session token for a correct name and password, else None."""
        with self.engine.connect() as con:
            row = con.execute(select(t.users).where(t.users.c.name == name, t.users.c.disabled.is_(False))).first()
        if row is None or not check_password(password, row.password_hash):
            return None
        return self._new_token("session", f"session {name}", user_id=row.id, ttl=SESSION_TTL, actor=name)

    def create_user_token(self, user: str, name: str, actor: str, ttl: float | None = None) -> str:
        with self.engine.connect() as con:
            row = con.execute(select(t.users.c.id).where(t.users.c.name == user)).first()
        if row is None:
            raise NotFound(f"no user {user!r}")
        return self._new_token("user", name, user_id=row.id, ttl=ttl, actor=actor)

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
                    hash=_token_hash(secret),
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

    def revoke_token(self, secret: str, actor: str) -> None:
        h = _token_hash(secret)
        with self.engine.begin() as con:
            con.execute(update(t.tokens).where(t.tokens.c.hash == h).values(revoked=True))
            self.audit(con, actor, "token.revoke", h[:12])
        with self._lock:
            self._token_cache.pop(h, None)

    def principal(self, secret: str) -> Principal | None:
        """Who holds this token (cached for 10 s: a revoked token stops working within that time)."""
        h = _token_hash(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._token_cache.get(h)
        if hit and hit[0] > now:
            return hit[1]
        with self.engine.connect() as con:
            row = con.execute(
                select(
                    t.tokens.c.id,
                    t.tokens.c.kind,
                    t.tokens.c.cluster_id,
                    t.tokens.c.expires_at,
                    t.tokens.c.revoked,
                    t.users.c.id.label("uid"),
                    t.users.c.name.label("user"),
                    t.users.c.role,
                    t.users.c.disabled,
                    t.clusters.c.name.label("cluster"),
                )
                .select_from(t.tokens.outerjoin(t.users).outerjoin(t.clusters))
                .where(t.tokens.c.hash == h)
            ).first()
        p: Principal | None = None
        if row is not None and not row.revoked and (row.expires_at is None or row.expires_at > time.time()):
            if row.kind == "cluster" and row.cluster_id is not None:
                p = Principal(f"cluster:{row.cluster}", "cluster", "cluster", cluster_id=row.cluster_id)
            elif row.uid is not None and not row.disabled:
                p = Principal(row.user, row.role, row.kind, user_id=row.uid)
        with self._lock:
            if len(self._token_cache) > 10_000:
                self._token_cache.clear()
            self._token_cache[h] = (now + 10.0, p)
        return p

    # -- clusters ------------------------------------------------------------------------------------------------

    def create_cluster(self, name: str, actor: str) -> tuple[int, str]:
        """A new cluster and its ingestion token (shown once)."""
        if not name or len(name) > 200 or any(c in name for c in "/?#% "):
            raise BadRequest(f"cluster name {name!r}: 1 to 200 characters, no spaces, '/', '?', '#' or '%'")
        with self.engine.begin() as con:
            if con.execute(select(t.clusters.c.id).where(t.clusters.c.name == name)).first():
                raise Conflict(f"cluster {name!r} exists")
            cid = con.execute(
                insert(t.clusters).values(name=name, created_at=time.time(), k8s_version="", nodes=0, components={})
            ).inserted_primary_key
            self.audit(con, actor, "cluster.create", name)
        assert cid is not None
        return int(cid[0]), self._new_token("cluster", f"cluster {name}", cluster_id=int(cid[0]), actor=actor)

    def new_cluster_token(self, name: str, actor: str) -> str:
        cid = self.cluster_id(name)
        return self._new_token("cluster", f"cluster {name}", cluster_id=cid, actor=actor)

    def delete_cluster(self, name: str, actor: str) -> None:
        cid = self.cluster_id(name)
        with self.engine.begin() as con:
            for table in (t.alerts, t.containers, t.recommendations, t.compliance, t.violations, t.ingest_batches):
                con.execute(delete(table).where(table.c.cluster_id == cid))
            con.execute(delete(t.tokens).where(t.tokens.c.cluster_id == cid))
            con.execute(delete(t.clusters).where(t.clusters.c.id == cid))
            self.audit(con, actor, "cluster.delete", name)
        with self._lock:
            self._token_cache.clear()

    def cluster_names(self) -> list[str]:
        with self.engine.connect() as con:
            return [r.name for r in con.execute(select(t.clusters.c.name).order_by(t.clusters.c.name))]

    def cluster_id(self, name: str) -> int:
        with self.engine.connect() as con:
            row = con.execute(select(t.clusters.c.id).where(t.clusters.c.name == name)).first()
        if row is None:
            raise NotFound(f"no cluster {name!r}")
        return int(row.id)

    def clusters(self, stale_after: float = 900.0) -> list[dict[str, Any]]:
        """Clusters with their protection status: a component is present when it reported in ``stale_after``."""
        now = time.time()
        with self.engine.connect() as con:
            rows = con.execute(select(t.clusters).order_by(t.clusters.c.name)).all()
            alert_counts: dict[int, int] = dict(
                con.execute(
                    select(t.alerts.c.cluster_id, func.count())
                    .where(t.alerts.c.status == "active")
                    .group_by(t.alerts.c.cluster_id)
                ).all()
            )
            rec_counts: dict[int, int] = dict(
                con.execute(
                    select(t.recommendations.c.cluster_id, func.count()).group_by(t.recommendations.c.cluster_id)
                ).all()
            )
            ctr_counts: dict[int, int] = dict(
                con.execute(select(t.containers.c.cluster_id, func.count()).group_by(t.containers.c.cluster_id)).all()
            )
        out = []
        for r in rows:
            d = dict(r._mapping)
            installed = d.get("components") or {}
            protection = {}
            for comp in COMPONENTS:
                seen = d.get(f"{comp}_seen")
                protection[comp] = bool(seen and now - seen < stale_after) or bool(installed.get(comp))
            d["protection"] = protection
            missing = [c for c in ("sensor", "audit", "admission") if not protection[c]]
            d["protected"] = not missing
            d["missing"] = missing
            d["active_alerts"] = alert_counts.get(r.id, 0)
            d["recommendations"] = rec_counts.get(r.id, 0)
            d["containers"] = ctr_counts.get(r.id, 0)
            out.append(d)
        return out

    # -- ingestion -----------------------------------------------------------------------------------------------

    def ingest(self, cluster_id: int, kind: str, body: Any) -> dict[str, Any]:
        """Apply one batch in one transaction; a batch id seen before is acknowledged and not applied again."""
        if kind not in INGEST_KINDS:
            raise BadRequest(f"unknown ingestion kind {kind!r}: use one of {', '.join(INGEST_KINDS)}")
        if not isinstance(body, dict):
            raise BadRequest("the body is a JSON object with 'batch' and 'items'")
        batch = body.get("batch")
        if not isinstance(batch, str) or not 1 <= len(batch) <= 100:
            raise BadRequest("'batch' is a unique id of 1 to 100 characters (the same on a retry)")
        items = body.get("items", [])
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise BadRequest(f"'items' is a list of at most {MAX_ITEMS} objects")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"items[{i}] is not an object")
        component = body.get("component") or {"alerts": "sensor", "snapshot": "agent", "violations": "admission"}.get(
            kind, ""
        )
        if component and component not in COMPONENTS:
            raise BadRequest(f"unknown component {component!r}: use one of {', '.join(COMPONENTS)}")
        prepared = self._prepare(cluster_id, kind, items)
        now = time.time()
        try:
            with self.engine.begin() as con:
                con.execute(
                    insert(t.ingest_batches).values(
                        cluster_id=cluster_id, batch_id=batch, kind=kind, items=len(items), at=now
                    )
                )
                stored = self._apply(con, cluster_id, kind, prepared, now)
                self._touch(con, cluster_id, component, now, force=kind == "snapshot")
        except IntegrityError:
            with self.engine.connect() as con:
                dup = con.execute(
                    select(t.ingest_batches.c["items"]).where(
                        t.ingest_batches.c.cluster_id == cluster_id, t.ingest_batches.c.batch_id == batch
                    )
                ).first()
            if dup is None:
                raise
            return {"batch": batch, "duplicate": True, "items": dup[0]}
        return {"batch": batch, "duplicate": False, "items": len(items), "stored": stored}

    def _touch(self, con: Connection, cluster_id: int, component: str, now: float, force: bool) -> None:
        """last_seen and the component's *_seen, written at most every 5 s per cluster and component."""
        key = (cluster_id, component)
        with self._lock:
            if not force and now - self._seen.get(key, 0.0) < 5.0:
                return
            self._seen[key] = now
        values: dict[str, Any] = {"last_seen": now}
        if component:
            values[f"{component}_seen"] = now
        con.execute(update(t.clusters).where(t.clusters.c.id == cluster_id).values(**values))

    def _prepare(self, cluster_id: int, kind: str, items: list[dict[str, Any]]) -> Any:
        if kind == "alerts":
            return self._prepare_alerts(cluster_id, items)
        if kind == "snapshot":
            if len(items) != 1:
                raise BadRequest("a snapshot batch holds exactly one item")
            return items[0]
        return items

    def _apply(self, con: Connection, cluster_id: int, kind: str, prepared: Any, now: float) -> int:
        if kind == "alerts":
            return self._apply_alerts(con, prepared)
        if kind == "snapshot":
            return self._apply_snapshot(con, cluster_id, prepared, now)
        if kind == "scans":
            for i, item in enumerate(prepared):
                self._apply_scan(con, item, f"items[{i}]")
            return len(prepared)
        if kind == "violations":
            rows = [
                {
                    "cluster_id": cluster_id,
                    "at": parse_time(v.get("time"), now),
                    "rule": _text(v, "rule", 50) or "?",
                    "severity": _text(v, "severity", 10).upper(),
                    "action": _text(v, "mode", 10) or "audit",
                    "operation": _text(v, "operation", 20),
                    # the admission log's object is Kind/namespace/name or Kind/name
                    "kind": _text(v, "object", 1000).split("/", 1)[0][:100],
                    "namespace": _text(v, "namespace", 253),
                    "name": _text(v, "object", 1000).rsplit("/", 1)[-1][:253],
                    "user": _text(v, "user"),
                    "message": _text(v, "title", 2000) + (f" ({v['detail']})" if v.get("detail") else ""),
                }
                for v in prepared
            ]
            bulk_insert(con, t.violations, rows)
            return len(rows)
        return 0  # heartbeat

    # alerts

    def suppressions_active(self) -> list[Suppression]:
        now = time.monotonic()
        with self._lock:
            if self._sup_cache and self._sup_cache[0] > now:
                return self._sup_cache[1]
        with self.engine.connect() as con:
            rows = con.execute(select(t.suppressions).where(t.suppressions.c.enabled.is_(True))).all()
        sups = [
            Suppression(r.id, r.name, r.rule, r.cluster, r.namespace, dict(r.match or {}), r.expires_at) for r in rows
        ]
        with self._lock:
            self._sup_cache = (now + 5.0, sups)
        return sups

    def _cluster_name(self, cluster_id: int) -> str:
        with self.engine.connect() as con:
            row = con.execute(select(t.clusters.c.name).where(t.clusters.c.id == cluster_id)).first()
        return str(row.name) if row else ""

    def _prepare_alerts(self, cluster_id: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated rows, one per dedup key (a batch's repeats summed), suppressed ones already dismissed."""
        now = time.time()
        sups = self.suppressions_active()
        cname = self._cluster_name(cluster_id) if sups else ""
        rows: dict[str, dict[str, Any]] = {}
        for i, a in enumerate(items):
            rule = a.get("rule")
            if not isinstance(rule, str) or not rule:
                raise BadRequest(f"items[{i}]: an alert needs 'rule'")
            sev = str(a.get("severity", "")).upper()
            if sev not in SEVERITIES:
                raise BadRequest(f"items[{i}]: severity {a.get('severity')!r} is not one of {', '.join(SEVERITIES)}")
            count = a.get("count", 1)
            if not isinstance(count, int) or count < 1:
                raise BadRequest(f"items[{i}]: 'count' is a positive integer")
            first = parse_time(a.get("time"), now)
            default_key = f"{_text(a, 'rule', 50)}|{_text(a, 'namespace')}|{_text(a, 'name')}"
            key = _text(a, "dedup_key", 300) or default_key[:300]
            row = {
                "cluster_id": cluster_id,
                "source": _text(a, "source", 20) or "unknown",
                "rule": _text(a, "rule", 50),
                "title": _text(a, "title", 500) or _text(a, "rule", 50),
                "severity": sev,
                "tactics": _strings(a.get("tactics")),
                "techniques": _strings(a.get("techniques")),
                "first_seen": first,
                "last_seen": parse_time(a.get("last_time"), first),
                "count": count,
                "dedup_key": key,
                "status": "active",
                "status_reason": "",
                "status_by": "",
                "status_at": None,
                "namespace": _text(a, "namespace", 253),
                "resource": _text(a, "resource"),
                "name": _text(a, "name"),
                "user": _text(a, "user"),
                "source_ips": _strings(a.get("source_ips")),
                "message": _text(a, "message", 4000),
                "description": _text(a, "description", 4000),
                "remediation": _text(a, "remediation", 4000),
                "evidence": a.get("evidence", [])[:5] if isinstance(a.get("evidence"), list) else [],
                "created_at": now,
            }
            sup = next((s for s in sups if s.matches(row, cname, now)), None)
            if sup is not None:
                row.update(
                    status="dismissed", status_reason=f"suppressed by rule {sup.name!r}", status_by="suppression"
                )
                row["open_key"] = f"sup:{sup.id}:{key}"
            else:
                row["open_key"] = key
            prev = rows.get(row["open_key"])
            if prev is None:
                rows[row["open_key"]] = row
            else:
                prev["count"] += row["count"]
                prev["first_seen"] = min(prev["first_seen"], row["first_seen"])
                prev["last_seen"] = max(prev["last_seen"], row["last_seen"])
        return list(rows.values())

    def _apply_alerts(self, con: Connection, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        if self.dialect == "postgresql":
            return self._apply_alerts_copy(con, rows)
        ins = self._insert(t.alerts)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.alerts.c.cluster_id, t.alerts.c.open_key],
            set_={
                "count": t.alerts.c.count + ins.excluded.count,
                "last_seen": case(
                    (ins.excluded.last_seen > t.alerts.c.last_seen, ins.excluded.last_seen), else_=t.alerts.c.last_seen
                ),
            },
        )
        con.execute(stmt, rows)
        return len(rows)

    def _apply_alerts_copy(self, con: Connection, rows: list[dict[str, Any]]) -> int:
        """PostgreSQL: COPY the batch into the connection's staging table, then one INSERT ... SELECT ... ON
        CONFLICT. (psycopg's executemany sends one upsert per row, which made PostgreSQL slower than SQLite.)"""
        _copy(con, t.ALERT_STAGING, t.ALERT_COPY_COLUMNS, rows)
        names = ", ".join(f'"{c.name}"' for c in t.ALERT_COPY_COLUMNS)
        # moving the rows (DELETE ... RETURNING) leaves the staging table empty for a next batch
        con.exec_driver_sql(
            f"WITH staged AS (DELETE FROM {t.ALERT_STAGING} RETURNING *) "
            f"INSERT INTO alerts ({names}) SELECT {names} FROM staged "
            "ON CONFLICT (cluster_id, open_key) DO UPDATE SET count = alerts.count + EXCLUDED.count, "
            "last_seen = GREATEST(alerts.last_seen, EXCLUDED.last_seen)"
        )
        return len(rows)

    # snapshots and scans

    def _apply_snapshot(self, con: Connection, cluster_id: int, snap: dict[str, Any], now: float) -> int:
        from stockade.kube import normalize

        ctrs = snap.get("containers", [])
        recs = snap.get("recommendations", [])
        comp = snap.get("compliance", {})
        if not isinstance(ctrs, list) or not isinstance(recs, list) or not isinstance(comp, dict):
            raise BadRequest("a snapshot has 'containers' and 'recommendations' lists and a 'compliance' object")
        con.execute(
            update(t.clusters)
            .where(t.clusters.c.id == cluster_id)
            .values(
                k8s_version=str(snap.get("k8s_version", ""))[:50],
                nodes=int(snap.get("nodes", 0) or 0),
                components={k: bool(v) for k, v in (snap.get("components") or {}).items() if k in COMPONENTS},
            )
        )
        con.execute(delete(t.containers).where(t.containers.c.cluster_id == cluster_id))
        con.execute(delete(t.recommendations).where(t.recommendations.c.cluster_id == cluster_id))
        rows = []
        for i, c in enumerate(ctrs):
            if not isinstance(c, dict) or not c.get("image"):
                raise BadRequest(f"containers[{i}]: needs 'image'")
            rows.append(
                {
                    "cluster_id": cluster_id,
                    "namespace": _text(c, "namespace", 253),
                    "pod": _text(c, "pod", 253),
                    "container": _text(c, "container", 253),
                    "workload_kind": _text(c, "workload_kind", 100),
                    "workload": _text(c, "workload", 253),
                    "image": normalize(_text(c, "image", 1000)),
                    "image_digest": _text(c, "image_digest", 200),
                    "node": _text(c, "node", 253),
                    "seen_at": now,
                }
            )
        bulk_insert(con, t.containers, rows)
        rec_rows: list[dict[str, Any]] = []
        for i, r in enumerate(recs):
            if not isinstance(r, dict) or not r.get("rule"):
                raise BadRequest(f"recommendations[{i}]: needs 'rule'")
            rec_rows.append(
                {
                    "cluster_id": cluster_id,
                    "rule": _text(r, "rule", 50),
                    "severity": _text(r, "severity", 10).upper() or "UNKNOWN",
                    "title": _text(r, "title", 1000),
                    "kind": _text(r, "kind", 100),
                    "namespace": _text(r, "namespace", 253),
                    "name": _text(r, "name", 253),
                    "container": _text(r, "container", 253),
                    "remediation": _text(r, "remediation", 4000),
                    "frameworks": r.get("frameworks") if isinstance(r.get("frameworks"), dict) else {},
                    "seen_at": now,
                }
            )
        bulk_insert(con, t.recommendations, rec_rows)
        con.execute(delete(t.compliance).where(t.compliance.c.cluster_id == cluster_id))
        comp_rows = [
            {
                "cluster_id": cluster_id,
                "framework": str(fw)[:50],
                "title": str(v.get("title", fw))[:300],
                "score": float(v.get("score", 0.0)),
                "passed": int(v.get("passed", 0)),
                "total": int(v.get("total", 0)),
                "manual": int(v.get("manual", 0)),
                "controls": v.get("controls", []),
                "at": now,
            }
            for fw, v in comp.items()
            if isinstance(v, dict)
        ]
        if comp_rows:
            con.execute(insert(t.compliance), comp_rows)
        return len(rows) + len(rec_rows)

    def _apply_scan(self, con: Connection, item: dict[str, Any], where: str) -> int:
        from stockade.kube import normalize

        ref = item.get("ref")
        fs = item.get("findings", [])
        if not isinstance(ref, str) or not ref or not isinstance(fs, list):
            raise BadRequest(f"{where}: a scan needs 'ref' and a 'findings' list")
        ref = normalize(ref)
        values = {
            "ref": ref,
            "digest": _text(item, "digest", 200),
            "os": _text(item, "os", 200),
            "scanned_at": parse_time(item.get("scanned_at"), time.time()),
            "db_built_at": _text(item, "db_built_at", 50),
            "inventory": item.get("inventory") if isinstance(item.get("inventory"), dict) else None,
        }
        row = con.execute(select(t.images.c.id).where(t.images.c.ref == ref)).first()
        if row is None:
            iid = con.execute(insert(t.images).values(**values, counts={}, fixable=0)).inserted_primary_key
            assert iid is not None
            image_id = int(iid[0])
        else:
            image_id = int(row.id)
            con.execute(update(t.images).where(t.images.c.id == image_id).values(**values))
        return self.replace_findings(con, image_id, fs, where)

    @staticmethod
    def replace_findings(con: Connection, image_id: int, fs: list[Any], where: str = "findings") -> int:
        rows = []
        counts: dict[str, int] = {}
        fixable = 0
        for i, f in enumerate(fs):
            if not isinstance(f, dict) or not f.get("id") or not f.get("package"):
                raise BadRequest(f"{where}.findings[{i}]: needs 'id' and 'package'")
            if f.get("suppressed"):
                continue
            sev = _text(f, "severity", 10).upper() or "UNKNOWN"
            sev = sev if sev in SEVERITIES else "UNKNOWN"
            counts[sev] = counts.get(sev, 0) + 1
            fixed = _text(f, "fixed_version", 200)
            fixable += bool(fixed)
            cvss = f.get("cvss_score")
            epss = f.get("epss")
            rows.append(
                {
                    "image_id": image_id,
                    "vuln_id": _text(f, "id", 100),
                    "package": _text(f, "package"),
                    "ecosystem": _text(f, "ecosystem", 30),
                    "installed": _text(f, "installed_version", 200),
                    "fixed": fixed,
                    "severity": sev,
                    "cvss": float(cvss) if isinstance(cvss, int | float) else None,
                    "kev": bool(f.get("kev")),
                    "epss": float(epss) if isinstance(epss, int | float) else None,
                    "title": _text(f, "title", 1000),
                    "remediation": _text(f, "remediation", 1000),
                }
            )
        con.execute(delete(t.findings).where(t.findings.c.image_id == image_id))
        bulk_insert(con, t.findings, rows)
        con.execute(update(t.images).where(t.images.c.id == image_id).values(counts=counts, fixable=fixable))
        return len(rows)

    def store_scans(self, items: list[Any], actor: str) -> dict[str, Any]:
        """Scans posted outside a cluster batch (CI, `stockade scan --server`): each replaces its image's last."""
        if len(items) > 100:
            raise BadRequest("at most 100 scans per request")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(f"items[{i}] is not an object")
        with self.engine.begin() as con:
            stored = sum(self._apply_scan(con, item, f"items[{i}]") for i, item in enumerate(items))
            self.audit(con, actor, "scan.store", ",".join(str(i.get("ref", "")) for i in items)[:300])
        return {"scans": len(items), "findings": stored}

    def principal_cluster_name(self, p: Principal) -> str:
        return p.name.removeprefix("cluster:") if p.kind == "cluster" else ""

    @staticmethod
    def violation_filter(cluster: str | None = None, action: str | None = None, q: str | None = None) -> list[Any]:
        """WHERE terms over violations joined to clusters: cluster name, action, text in rule, message or object."""
        v = t.violations
        conds: list[Any] = []
        if cluster:
            conds.append(t.clusters.c.name == cluster)
        if action:
            conds.append(v.c.action == action)
        if q:
            like = f"%{q}%"
            conds.append(or_(*(col.ilike(like) for col in (v.c.rule, v.c.message, v.c.name, v.c.namespace))))
        return conds

    def violations(
        self, cluster: str | None, limit: int, action: str | None = None, q: str | None = None
    ) -> list[dict[str, Any]]:
        """Admission violations, newest first."""
        stmt = (
            select(t.violations, t.clusters.c.name.label("cluster"))
            .select_from(t.violations.join(t.clusters))
            .where(*self.violation_filter(cluster, action, q))
        )
        with self.engine.connect() as con:
            rows = con.execute(stmt.order_by(t.violations.c.at.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    # -- alert lifecycle -----------------------------------------------------------------------------------------

    def set_alert_status(self, ids: Iterable[int], status: str, reason: str, actor: str) -> int:
        if status not in ALERT_STATUSES:
            raise BadRequest(f"status {status!r}: use one of {', '.join(ALERT_STATUSES)}")
        ids = list(ids)
        if not ids:
            raise BadRequest("name at least one alert")
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            "status_reason": reason[:2000],
            "status_by": actor,
            "status_at": now,
        }
        with self.engine.begin() as con:
            if status == "active":  # reopened: open again unless another open alert took its dedup key
                for aid in ids:
                    row = con.execute(select(t.alerts.c.cluster_id, t.alerts.c.dedup_key).where(t.alerts.c.id == aid))
                    r = row.first()
                    if r is None:
                        continue
                    taken = con.execute(
                        select(t.alerts.c.id).where(
                            t.alerts.c.cluster_id == r.cluster_id, t.alerts.c.open_key == r.dedup_key
                        )
                    ).first()
                    con.execute(
                        update(t.alerts)
                        .where(t.alerts.c.id == aid)
                        .values(**values, open_key=None if taken and taken.id != aid else r.dedup_key)
                    )
                n = len(ids)
            else:
                n = con.execute(update(t.alerts).where(t.alerts.c.id.in_(ids)).values(**values, open_key=None)).rowcount
            if not n:
                raise NotFound(f"no alert {ids[0]}" if len(ids) == 1 else "none of these alerts exists")
            self.audit(con, actor, f"alert.{status}", ",".join(map(str, ids[:50])), {"reason": reason, "count": n})
        return int(n)

    def alerts(
        self,
        status: str | None = None,
        severity: str | None = None,
        cluster: str | None = None,
        source: str | None = None,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        cond = []
        if status:
            cond.append(t.alerts.c.status == status)
        if severity:
            cond.append(t.alerts.c.severity.in_(severity_list(severity)))
        if cluster:
            cond.append(t.clusters.c.name == cluster)
        if source:
            cond.append(t.alerts.c.source == source)
        if q:
            like = f"%{q.lower()}%"
            cond.append(
                or_(
                    func.lower(t.alerts.c.title).like(like),
                    func.lower(t.alerts.c.rule).like(like),
                    func.lower(t.alerts.c.namespace).like(like),
                    func.lower(t.alerts.c.name).like(like),
                    func.lower(t.alerts.c.user).like(like),
                    func.lower(t.alerts.c.message).like(like),
                )
            )
        base = t.alerts.join(t.clusters)
        where = and_(*cond) if cond else None
        sev_order = case(SEVERITY_ORDER, value=t.alerts.c.severity, else_=9)
        with self.engine.connect() as con:
            qtotal = select(func.count()).select_from(base)
            qrows = select(t.alerts, t.clusters.c.name.label("cluster")).select_from(base)
            if where is not None:
                qtotal = qtotal.where(where)
                qrows = qrows.where(where)
            total = con.execute(qtotal).scalar_one()
            rows = con.execute(
                qrows.order_by(sev_order, t.alerts.c.last_seen.desc(), t.alerts.c.id.desc()).limit(limit).offset(offset)
            ).all()
        return int(total), [self._alert_dict(r) for r in rows]

    @staticmethod
    def _alert_dict(r: Any) -> dict[str, Any]:
        d = dict(r._mapping)
        d.pop("open_key", None)
        return d

    def alert(self, alert_id: int) -> dict[str, Any]:
        with self.engine.connect() as con:
            r = con.execute(
                select(t.alerts, t.clusters.c.name.label("cluster"))
                .select_from(t.alerts.join(t.clusters))
                .where(t.alerts.c.id == alert_id)
            ).first()
        if r is None:
            raise NotFound(f"no alert {alert_id}")
        return self._alert_dict(r)

    # -- suppressions, exceptions, exports -----------------------------------------------------------------------

    def add_suppression(self, spec: dict[str, Any], actor: str) -> int:
        name = spec.get("name")
        reason = spec.get("reason")
        if not isinstance(name, str) or not name or not isinstance(reason, str) or not reason:
            raise BadRequest("a suppression rule needs 'name' and 'reason'")
        match = spec.get("match") or {}
        if not isinstance(match, dict) or not all(isinstance(v, str) for v in match.values()):
            raise BadRequest("'match' maps alert fields to glob patterns")
        unknown = set(match) - {"user", "name", "resource", "source", "message", "severity", "title"}
        if unknown:
            raise BadRequest(f"'match' cannot test {', '.join(sorted(unknown))}")
        values = {
            "name": name[:200],
            "rule": str(spec.get("rule") or "*")[:100],
            "cluster": str(spec.get("cluster") or "*")[:200],
            "namespace": str(spec.get("namespace") or "*")[:253],
            "match": match,
            "reason": reason,
            "created_by": actor,
            "created_at": time.time(),
            "expires_at": parse_time(spec.get("expires_at"), 0.0) or None,
            "enabled": True,
        }
        apply_existing = bool(spec.get("apply_to_existing"))
        with self.engine.begin() as con:
            sid = con.execute(insert(t.suppressions).values(**values)).inserted_primary_key
            assert sid is not None
            self.audit(con, actor, "suppression.create", name, {k: v for k, v in values.items() if k != "created_at"})
            dismissed = 0
            if apply_existing:
                globs = (str(values["rule"]), str(values["cluster"]), str(values["namespace"]))
                sup = Suppression(int(sid[0]), name, *globs, match, None)
                rows = con.execute(
                    select(t.alerts, t.clusters.c.name.label("cluster"))
                    .select_from(t.alerts.join(t.clusters))
                    .where(t.alerts.c.status == "active")
                ).all()
                ids = [r.id for r in rows if sup.matches(dict(r._mapping), r.cluster, time.time())]
                for chunk in range(0, len(ids), 500):
                    con.execute(
                        update(t.alerts)
                        .where(t.alerts.c.id.in_(ids[chunk : chunk + 500]))
                        .values(
                            status="dismissed",
                            status_reason=f"suppressed by rule {name!r}",
                            status_by=actor,
                            status_at=time.time(),
                            open_key=None,
                        )
                    )
                dismissed = len(ids)
                if ids:
                    self.audit(con, actor, "alert.dismissed", f"suppression {name}", {"count": dismissed})
        with self._lock:
            self._sup_cache = None
        return int(sid[0])

    def delete_row(self, table_name: str, row_id: int, actor: str) -> None:
        table = SETTINGS_TABLES[table_name]
        with self.engine.begin() as con:
            if table is t.exports:
                con.execute(delete(t.alert_exports).where(t.alert_exports.c.export_id == row_id))
            n = con.execute(delete(table).where(table.c.id == row_id)).rowcount
            if not n:
                raise NotFound(f"no {table_name[:-1]} {row_id}")
            self.audit(con, actor, f"{table_name[:-1]}.delete", str(row_id))
        with self._lock:
            self._sup_cache = None

    def rows(self, table_name: str) -> list[dict[str, Any]]:
        table = SETTINGS_TABLES[table_name]
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(select(table).order_by(table.c.id)).all()]

    def add_exception(self, spec: dict[str, Any], actor: str) -> int:
        reason = spec.get("reason")
        if not isinstance(reason, str) or not reason:
            raise BadRequest("an exception needs a 'reason'")
        values = {k: str(spec.get(k) or "*")[:253] for k in ("rule", "cluster", "namespace", "name")} | {
            "reason": reason,
            "created_by": actor,
            "created_at": time.time(),
            "expires_at": parse_time(spec.get("expires_at"), 0.0) or None,
        }
        with self.engine.begin() as con:
            eid = con.execute(insert(t.exceptions).values(**values)).inserted_primary_key
            detail = {k: values[k] for k in ("cluster", "namespace", "name", "reason")}
            self.audit(con, actor, "exception.create", str(values["rule"]), detail)
        assert eid is not None
        return int(eid[0])

    def add_export(self, spec: dict[str, Any], actor: str) -> int:
        kind = spec.get("kind")
        target = spec.get("target")
        fmt = spec.get("format") or ("json" if kind != "syslog" else "rfc5424")
        if kind not in ("webhook", "syslog", "file"):
            raise BadRequest("'kind' is webhook, syslog or file")
        if not isinstance(target, str) or not target:
            raise BadRequest("'target' is a URL (webhook), udp://host:port or tcp://host:port (syslog), or a path")
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            raise BadRequest(f"webhook target {target!r} is not an http(s) URL")
        if kind == "syslog" and not target.startswith(("udp://", "tcp://")):
            raise BadRequest(f"syslog target {target!r}: use udp://host:port or tcp://host:port")
        if fmt not in ("json", "rfc5424", "cef"):
            raise BadRequest("'format' is json, rfc5424 or cef")
        sev = str(spec.get("min_severity") or "LOW").upper()
        if sev not in SEVERITIES:
            raise BadRequest(f"'min_severity' is one of {', '.join(SEVERITIES)}")
        with self.engine.begin() as con:
            start = int(con.execute(select(func.coalesce(func.max(t.alerts.c.id), 0))).scalar_one())
            if spec.get("include_existing"):
                start = 0
            xid = con.execute(
                insert(t.exports).values(
                    name=str(spec.get("name") or f"{kind} {target}")[:200],
                    kind=kind,
                    target=target,
                    format=fmt,
                    min_severity=sev,
                    enabled=True,
                    start_alert_id=start,
                    created_by=actor,
                    created_at=time.time(),
                    delivered=0,
                    failures=0,
                    last_error="",
                )
            ).inserted_primary_key
            self.audit(con, actor, "export.create", target, {"kind": kind, "format": fmt})
        assert xid is not None
        return int(xid[0])

    def audit_entries(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            rows = con.execute(select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    # -- settings ------------------------------------------------------------------------------------------------

    def setting(self, key: str) -> Any:
        with self.engine.connect() as con:
            row = con.execute(select(t.settings.c.value).where(t.settings.c.key == key)).first()
        return row.value if row else None


def severity_at_least(sev: str, floor: str) -> bool:
    return SEVERITY_RANK.get(sev, 0) >= SEVERITY_RANK.get(floor, 0)

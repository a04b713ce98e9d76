"""The server's schema (SQLAlchemy Core) and engine set-up: SQLite by default (one file, WAL), PostgreSQL with the
same code; the schema is created and upgraded by Alembic (server/migrations)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

from stockade.model import StockadeError

metadata = MetaData()

# Times are seconds since the epoch (float): sortable and the same on both databases.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

clusters = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float),
    Column("k8s_version", String(50), nullable=False, default=""),
    Column("nodes", Integer, nullable=False, default=0),
    # when each component last reported (None: never): the protection status
    Column("agent_seen", Float),
    Column("sensor_seen", Float),
    Column("audit_seen", Float),
    Column("admission_seen", Float),
    Column("components", JSON, nullable=False, default=dict),  # what the agent found installed
    # set when an admin deleted the cluster without purging it: its tokens are gone, its alerts and violations kept
    Column("archived_at", Float),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 of the secret
    Column("kind", String(20), nullable=False),  # user (API), session (dashboard login), cluster (ingestion)
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE")),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE")),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked", Boolean, nullable=False, default=False),
)

containers = Table(
    "containers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("pod", String(253), nullable=False),
    Column("container", String(253), nullable=False),
    Column("workload_kind", String(100), nullable=False, default=""),
    Column("workload", String(253), nullable=False, default=""),
    Column("image", String(1000), nullable=False),  # normalized reference
    Column("image_digest", String(200), nullable=False, default=""),
    Column("node", String(253), nullable=False, default=""),
    Column("seen_at", Float, nullable=False),
    Index("ix_containers_cluster", "cluster_id"),
    Index("ix_containers_image", "image"),
    Index("ix_containers_digest", "image_digest"),
)

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ref", String(1000), nullable=False, unique=True),  # normalized reference
    Column("digest", String(200), nullable=False, default=""),
    Column("os", String(200), nullable=False, default=""),
    Column("scanned_at", Float, nullable=False),
    Column("db_built_at", String(50), nullable=False, default=""),
    Column("inventory", JSON),  # the packages, kept to rematch when the vulnerability database changes
    Column("counts", JSON, nullable=False, default=dict),  # findings by severity
    Column("fixable", Integer, nullable=False, default=0),
    Index("ix_images_digest", "digest"),
)

findings = Table(
    "findings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("vuln_id", String(100), nullable=False),
    Column("package", String(300), nullable=False),
    Column("ecosystem", String(30), nullable=False),
    Column("installed", String(200), nullable=False),
    Column("fixed", String(200), nullable=False, default=""),
    Column("severity", String(10), nullable=False),
    Column("cvss", Float),
    Column("kev", Boolean, nullable=False, default=False),
    Column("epss", Float),
    Column("title", Text, nullable=False, default=""),
    Column("remediation", Text, nullable=False, default=""),
    Index("ix_findings_image", "image_id"),
    Index("ix_findings_vuln", "vuln_id"),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("rule", String(50), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("title", Text, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("namespace", String(253), nullable=False, default=""),
    Column("name", String(253), nullable=False),
    Column("container", String(253), nullable=False, default=""),
    Column("remediation", Text, nullable=False, default=""),
    Column("frameworks", JSON, nullable=False, default=dict),
    Column("seen_at", Float, nullable=False),
    Column("objects", JSON),  # what a namespace-level finding leaves exposed (its workloads)
    Index("ix_recommendations_cluster", "cluster_id"),
)

compliance = Table(
    "compliance",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("framework", String(50), nullable=False),
    Column("title", String(300), nullable=False, default=""),
    Column("score", Float, nullable=False),
    Column("passed", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("manual", Integer, nullable=False, default=0),
    Column("controls", JSON, nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("cluster_id", "framework", name="uq_compliance_cluster_framework"),
)

violations = Table(
    "violations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("rule", String(50), nullable=False),
    Column("severity", String(10), nullable=False, default=""),
    Column("action", String(10), nullable=False),  # deny, warn, audit
    Column("operation", String(20), nullable=False, default=""),
    Column("kind", String(100), nullable=False, default=""),
    Column("namespace", String(253), nullable=False, default=""),
    Column("name", String(253), nullable=False, default=""),
    Column("user", String(300), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Index("ix_violations_cluster_at", "cluster_id", "at"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
    Column("source", String(20), nullable=False),  # k8s_audit, sensor, ...
    Column("rule", String(50), nullable=False),
    Column("title", Text, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("tactics", JSON, nullable=False, default=list),
    Column("techniques", JSON, nullable=False, default=list),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("count", Integer, nullable=False, default=1),
    Column("dedup_key", String(300), nullable=False),
    # dedup_key while the alert is open (active, or dismissed by a suppression rule), NULL once a person closed it:
    # a unique key that both databases enforce and ON CONFLICT can name (NULLs never conflict)
    Column("open_key", String(320)),
    Column("status", String(12), nullable=False, default="active"),  # active, dismissed, resolved
    Column("status_reason", Text, nullable=False, default=""),
    Column("status_by", String(200), nullable=False, default=""),
    Column("status_at", Float),
    Column("namespace", String(253), nullable=False, default=""),
    Column("resource", String(300), nullable=False, default=""),
    Column("name", String(300), nullable=False, default=""),
    Column("user", String(300), nullable=False, default=""),
    Column("source_ips", JSON, nullable=False, default=list),
    Column("message", Text, nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("remediation", Text, nullable=False, default=""),
    Column("evidence", JSON, nullable=False, default=list),
    Column("created_at", Float, nullable=False),  # when the server stored it
    UniqueConstraint("cluster_id", "open_key", name="uq_alerts_open"),
    Index("ix_alerts_status_sev", "status", "severity"),
    Index("ix_alerts_first_seen", "first_seen"),
)

# PostgreSQL ingests alert batches by COPY into this per-connection temporary table, then one INSERT ... SELECT
ALERT_STAGING = "stockade_alerts_in"
ALERT_COPY_COLUMNS = [c for c in alerts.c if c.name != "id"]

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("rule", String(100), nullable=False, default="*"),  # globs
    Column("cluster", String(200), nullable=False, default="*"),
    Column("namespace", String(253), nullable=False, default="*"),
    Column("match", JSON, nullable=False, default=dict),  # more alert fields -> glob (user, name, resource...)
    Column("reason", Text, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("enabled", Boolean, nullable=False, default=True),
)

exceptions = Table(  # posture exceptions: recommendations accepted as a risk
    "exceptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rule", String(100), nullable=False, default="*"),
    Column("cluster", String(200), nullable=False, default="*"),
    Column("namespace", String(253), nullable=False, default="*"),
    Column("name", String(253), nullable=False, default="*"),
    Column("reason", Text, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
)

exports = Table(
    "exports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # webhook, syslog, file
    Column("target", String(1000), nullable=False),  # URL, udp://host:port or tcp://host:port, file path
    Column("format", String(20), nullable=False, default="json"),  # json, rfc5424, cef
    Column("min_severity", String(10), nullable=False, default="LOW"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("start_alert_id", BigInteger, nullable=False, default=0),  # alerts stored before it are not sent
    Column("created_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("failures", BigInteger, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    Column("last_ok_at", Float),
    # webhook and syslog exports to loopback, private, link-local or reserved addresses only when an admin said so
    Column("allow_private", Boolean, nullable=False, default=False),
)

alert_exports = Table(  # what each export delivered: the exporter sends what is missing here
    "alert_exports",
    metadata,
    Column("export_id", Integer, ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True),
    Column("alert_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(300), nullable=False, default=""),
    Column("detail", JSON, nullable=False, default=dict),
    Index("ix_audit_log_at", "at"),
)

ingest_batches = Table(  # batch ids already applied: a retried batch is acknowledged and not applied twice
    "ingest_batches",
    metadata,
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
    Column("batch_id", String(100), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("items", Integer, nullable=False),
    Column("at", Float, nullable=False),
)

# what each identity of a cluster usually does (audit/profile.py), learned by its audit collector with
# `--profiles server`: one row per identity, one per value it was seen with
identity_profiles = Table(
    "identity_profiles",
    metadata,
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
    Column("identity", String(300), primary_key=True),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("too_varied", Boolean, nullable=False, default=False),
)

identity_profile_values = Table(
    "identity_profile_values",
    metadata,
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
    Column("identity", String(300), primary_key=True),
    Column("dim", String(20), primary_key=True),  # operation, namespace, network, agent
    Column("value", String(300), primary_key=True),
    Column("at", Float, nullable=False),
)

identity_profile_resets = Table(  # resets made on the server, for the running detector to forget them too
    "identity_profile_resets",
    metadata,
    Column("cluster_id", Integer, ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
    Column("identity", String(300), primary_key=True),
    Column("at", Float, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON),
)


class DatabaseError(StockadeError):
    pass


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


# JSON columns through orjson: the standard library's encoder was a quarter of the ingestion time
JSON_CODEC: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}


def default_url() -> str:
    """$STOCKADE_DATABASE_URL, else a SQLite file under ~/.local/share/stockade."""
    url = os.environ.get("STOCKADE_DATABASE_URL")
    if url:
        return url
    path = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "stockade" / "server.db"
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite gets WAL, NORMAL sync (durable across process crashes), foreign keys and a
    busy timeout; postgresql:// URLs use psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseError(f"{path}: cannot create the database directory: {e.strerror}") from e
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, **JSON_CODEC)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_con: Any, _record: Any) -> None:
            cur = dbapi_con.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, **JSON_CODEC)
    except Exception as e:  # an unknown dialect or driver
        raise DatabaseError(f"{url.split('@')[-1]}: cannot use this database URL: {e}") from e
    if engine.dialect.name == "postgresql":
        staging = ", ".join(f'"{c.name}" {c.type.compile(engine.dialect)}' for c in ALERT_COPY_COLUMNS)

        @event.listens_for(engine, "connect")
        def _staging(dbapi_con: Any, _record: Any) -> None:
            # every pooled connection gets its own staging table for COPY (see Store._apply_alerts_copy)
            with dbapi_con.cursor() as cur:
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {ALERT_STAGING} ({staging}) ON COMMIT DELETE ROWS")
            dbapi_con.commit()

    return engine


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection_engine"] = engine
    try:
        command.upgrade(cfg, "head")
    except Exception as e:
        if isinstance(e, StockadeError):
            raise
        raise DatabaseError(f"{engine.url.render_as_string(hide_password=True)}: cannot migrate the schema: {e}") from e

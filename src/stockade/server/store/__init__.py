"""The server's data layer, one module per aggregate: users and tokens (users.py), clusters and their snapshots
(clusters.py), ingestion of cluster batches (ingest.py), alerts and suppressions (alerts.py), images and their
scans (images.py), exceptions, exports and settings (exports.py), the audit log (auditlog.py), the audit
collectors' learned profiles (profiles.py); base.py holds what they share. ``Store`` is the one facade the API,
the dashboard and the workers use."""

from stockade.server.store.auditlog import AuditLogStore
from stockade.server.store.base import (
    ALERT_STATUSES,
    COMPONENTS,
    INGEST_KINDS,
    MAX_ITEMS,
    ROLES,
    SESSION_COOKIE,
    SESSION_TTL,
    SETTINGS_TABLES,
    SEVERITIES,
    SEVERITY_ORDER,
    SEVERITY_RANK,
    USER_TOKEN_TTL,
    BadRequest,
    Conflict,
    NotFound,
    Principal,
    Suppression,
    bulk_insert,
    check_password,
    hash_password,
    parse_time,
    severity_at_least,
    severity_list,
)
from stockade.server.store.exports import ExportsStore
from stockade.server.store.ingest import IngestStore
from stockade.server.store.profiles import ProfilesStore
from stockade.server.store.users import UsersStore


class Store(IngestStore, UsersStore, ExportsStore, AuditLogStore, ProfilesStore):
    """All reads and writes of the server, on one SQLAlchemy engine."""


__all__ = [
    "ALERT_STATUSES",
    "COMPONENTS",
    "INGEST_KINDS",
    "MAX_ITEMS",
    "ROLES",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "SETTINGS_TABLES",
    "SEVERITIES",
    "SEVERITY_ORDER",
    "SEVERITY_RANK",
    "USER_TOKEN_TTL",
    "BadRequest",
    "Conflict",
    "NotFound",
    "Principal",
    "Store",
    "Suppression",
    "bulk_insert",
    "check_password",
    "hash_password",
    "parse_time",
    "severity_at_least",
    "severity_list",
]

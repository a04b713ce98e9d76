"""Settings rows admins manage: posture exceptions, alert exports, and server settings."""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import delete, func, insert, select

from stockade.server import db as t
from stockade.server.store.base import SETTINGS_TABLES, SEVERITIES, BadRequest, NotFound, StoreBase, parse_time


class ExportsStore(StoreBase):
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

    def add_export(self, spec: dict[str, Any], actor: str, export_dir: Path | None = None) -> int:
        kind = spec.get("kind")
        target = spec.get("target")
        fmt = spec.get("format") or ("json" if kind != "syslog" else "rfc5424")
        if kind not in ("webhook", "syslog", "file"):
            raise BadRequest("'kind' is webhook, syslog or file")
        if not isinstance(target, str) or not target:
            raise BadRequest("'target' is a URL (webhook), udp://host:port or tcp://host:port (syslog), or a file name "
                             "inside the export directory")
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            raise BadRequest(f"webhook target {target!r} is not an http(s) URL")
        if kind == "syslog" and not target.startswith(("udp://", "tcp://")):
            raise BadRequest(f"syslog target {target!r}: use udp://host:port or tcp://host:port")
        if kind == "file":
            export_path(export_dir, target)
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

    def setting(self, key: str) -> Any:
        with self.engine.connect() as con:
            row = con.execute(select(t.settings.c.value).where(t.settings.c.key == key)).first()
        return row.value if row else None


def export_path(export_dir: Path | None, target: str) -> Path:
    """Where a file export writes: ``target`` (a relative path) inside ``export_dir``, resolved (symbolic links
    followed) and checked to stay inside it; BadRequest otherwise, or when file exports are off (no
    --export-dir)."""
    if export_dir is None:
        raise BadRequest(f"{target}: file exports are off (start the server with --export-dir)")
    rel = PurePosixPath(target)
    if not target or rel.is_absolute() or ".." in rel.parts or "\x00" in target:
        raise BadRequest(f"{target}: a file export's target is a relative path inside the export directory")
    root = export_dir.resolve()
    dest = (root / rel).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise BadRequest(f"{target}: resolves outside the export directory {root}")
    return dest

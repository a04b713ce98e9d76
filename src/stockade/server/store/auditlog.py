"""The audit log of every write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stockade.server import db as t
from stockade.server.store.base import StoreBase
from stockade.server.store.exports import redact_text


class AuditLogStore(StoreBase):
    def audit_entries(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.engine.connect() as con:
            rows = con.execute(select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)).all()
        out = [dict(r._mapping) for r in rows]
        for e in out:  # entries written before targets were redacted at write time
            e["target"] = redact_text(e["target"])
        return out

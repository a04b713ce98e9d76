"""Ingestion: idempotent batches from clusters (alerts, snapshots, scans, violations, heartbeats), each kind
applied by its aggregate."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from stockade.server import db as t
from stockade.server.store.alerts import AlertsStore
from stockade.server.store.base import (
    COMPONENTS,
    INGEST_KINDS,
    MAX_ITEMS,
    BadRequest,
    bulk_insert,
    clip_text,
    parse_time,
)
from stockade.server.store.clusters import ClustersStore
from stockade.server.store.images import ImagesStore
from stockade.server.store.models import check


class IngestStore(AlertsStore, ImagesStore, ClustersStore):
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
        check(kind, items)
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
                    "rule": clip_text(v, "rule", 50) or "?",
                    "severity": clip_text(v, "severity", 10).upper(),
                    "action": clip_text(v, "mode", 10) or "audit",
                    "operation": clip_text(v, "operation", 20),
                    # the admission log's object is Kind/namespace/name or Kind/name
                    "kind": clip_text(v, "object", 1000).split("/", 1)[0][:100],
                    "namespace": clip_text(v, "namespace", 253),
                    "name": clip_text(v, "object", 1000).rsplit("/", 1)[-1][:253],
                    "user": clip_text(v, "user"),
                    "message": clip_text(v, "title", 2000) + (f" ({v['detail']})" if v.get("detail") else ""),
                }
                for v in prepared
            ]
            bulk_insert(con, t.violations, rows)
            return len(rows)
        return 0  # heartbeat

"""Alerts and their lifecycle (active, dismissed, resolved) and the suppression rules applied as they arrive."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from stockade.server import db as t
from stockade.server.store.base import (
    ALERT_STATUSES,
    SEVERITIES,
    SEVERITY_ORDER,
    BadRequest,
    NotFound,
    StoreBase,
    Suppression,
    clip_text,
    copy_rows,
    parse_time,
    severity_list,
    string_list,
)


class AlertsStore(StoreBase):
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
            default_key = f"{clip_text(a, 'rule', 50)}|{clip_text(a, 'namespace')}|{clip_text(a, 'name')}"
            key = clip_text(a, "dedup_key", 300) or default_key[:300]
            row = {
                "cluster_id": cluster_id,
                "source": clip_text(a, "source", 20) or "unknown",
                "rule": clip_text(a, "rule", 50),
                "title": clip_text(a, "title", 500) or clip_text(a, "rule", 50),
                "severity": sev,
                "tactics": string_list(a.get("tactics")),
                "techniques": string_list(a.get("techniques")),
                "first_seen": first,
                "last_seen": parse_time(a.get("last_time"), first),
                "count": count,
                "dedup_key": key,
                "status": "active",
                "status_reason": "",
                "status_by": "",
                "status_at": None,
                "namespace": clip_text(a, "namespace", 253),
                "resource": clip_text(a, "resource"),
                "name": clip_text(a, "name"),
                "user": clip_text(a, "user"),
                "source_ips": string_list(a.get("source_ips")),
                "message": clip_text(a, "message", 4000),
                "description": clip_text(a, "description", 4000),
                "remediation": clip_text(a, "remediation", 4000),
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
        copy_rows(con, t.ALERT_STAGING, t.ALERT_COPY_COLUMNS, rows)
        names = ", ".join(f'"{c.name}"' for c in t.ALERT_COPY_COLUMNS)
        # moving the rows (DELETE ... RETURNING) leaves the staging table empty for a next batch
        con.exec_driver_sql(
            f"WITH staged AS (DELETE FROM {t.ALERT_STAGING} RETURNING *) "
            f"INSERT INTO alerts ({names}) SELECT {names} FROM staged "
            "ON CONFLICT (cluster_id, open_key) DO UPDATE SET count = alerts.count + EXCLUDED.count, "
            "last_seen = GREATEST(alerts.last_seen, EXCLUDED.last_seen)"
        )
        return len(rows)

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

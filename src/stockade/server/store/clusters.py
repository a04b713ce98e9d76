"""Clusters, their tokens and what their agents last reported: snapshots (workloads, images, posture) and
admission violations."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from stockade.server import db as t
from stockade.server.store.base import (
    COMPONENTS,
    BadRequest,
    Conflict,
    NotFound,
    Principal,
    StoreBase,
    bulk_insert,
    clip_text,
)


class ClustersStore(StoreBase):
    def create_cluster(self, name: str, actor: str, ttl: float | None = None) -> tuple[int, str]:
        """A new cluster and its ingestion token (shown once). The name of an archived cluster brings it back,
        with its kept alerts and violations."""
        if not name or len(name) > 200 or any(c in name for c in "/?#% "):
            raise BadRequest(f"cluster name {name!r}: 1 to 200 characters, no spaces, '/', '?', '#' or '%'")
        with self.engine.begin() as con:
            row = con.execute(
                select(t.clusters.c.id, t.clusters.c.archived_at).where(t.clusters.c.name == name)
            ).first()
            if row is not None and row.archived_at is None:
                raise Conflict(f"cluster {name!r} exists")
            if row is not None:
                cid = int(row.id)
                con.execute(update(t.clusters).where(t.clusters.c.id == cid).values(archived_at=None))
                self.audit(con, actor, "cluster.restore", name)
            else:
                key = con.execute(
                    insert(t.clusters).values(name=name, created_at=time.time(), k8s_version="", nodes=0,
                                              components={})
                ).inserted_primary_key
                assert key is not None
                cid = int(key[0])
                self.audit(con, actor, "cluster.create", name)
        return cid, self._new_token("cluster", f"cluster {name}", cluster_id=cid, ttl=ttl, actor=actor)

    def new_cluster_token(self, name: str, actor: str, ttl: float | None = None) -> str:
        cid = self.cluster_id(name)
        return self._new_token("cluster", f"cluster {name}", cluster_id=cid, ttl=ttl, actor=actor)

    def delete_cluster(self, name: str, actor: str, purge: bool = False) -> None:
        """Take a cluster out of service: its tokens, running containers, recommendations and compliance go; its
        alerts and admission violations are kept (archived) for investigation. ``purge`` removes the cluster and
        everything of it, archived or not."""
        cid = self.cluster_id(name, archived=True)
        with self.engine.begin() as con:
            gone: tuple[Any, ...] = (t.containers, t.recommendations, t.compliance, t.ingest_batches)
            if purge:  # (learned profiles stay with an archived cluster: registered again, it goes on from them)
                gone += (t.alerts, t.violations, t.identity_profiles, t.identity_profile_values,
                         t.identity_profile_resets)
            for table in gone:
                con.execute(delete(table).where(table.c.cluster_id == cid))
            con.execute(delete(t.tokens).where(t.tokens.c.cluster_id == cid))
            if purge:
                con.execute(delete(t.clusters).where(t.clusters.c.id == cid))
            else:
                con.execute(update(t.clusters).where(t.clusters.c.id == cid).values(archived_at=time.time()))
            self.audit(con, actor, "cluster.purge" if purge else "cluster.archive", name)
        with self._lock:
            self._token_cache.clear()

    def cluster_names(self) -> list[str]:
        """Every cluster that can hold alerts, archived ones too."""
        with self.engine.connect() as con:
            return [r.name for r in con.execute(select(t.clusters.c.name).order_by(t.clusters.c.name))]

    def cluster_id(self, name: str, archived: bool = False) -> int:
        """The id of a cluster in service (or also an archived one, with ``archived``); NotFound otherwise."""
        with self.engine.connect() as con:
            row = con.execute(
                select(t.clusters.c.id, t.clusters.c.archived_at).where(t.clusters.c.name == name)
            ).first()
        if row is None or (row.archived_at is not None and not archived):
            raise NotFound(f"no cluster {name!r}" if row is None else f"cluster {name!r} is archived")
        return int(row.id)

    def clusters(self, stale_after: float = 900.0, archived: bool = False) -> list[dict[str, Any]]:
        """Clusters in service (or the archived ones, with ``archived``) with their protection status: a component
        is present when it reported in ``stale_after``."""
        now = time.time()
        state = t.clusters.c.archived_at.is_not(None) if archived else t.clusters.c.archived_at.is_(None)
        with self.engine.connect() as con:
            rows = con.execute(select(t.clusters).where(state).order_by(t.clusters.c.name)).all()
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

    def principal_cluster_name(self, p: Principal) -> str:
        return p.name.removeprefix("cluster:") if p.kind == "cluster" else ""

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
                    "namespace": clip_text(c, "namespace", 253),
                    "pod": clip_text(c, "pod", 253),
                    "container": clip_text(c, "container", 253),
                    "workload_kind": clip_text(c, "workload_kind", 100),
                    "workload": clip_text(c, "workload", 253),
                    "image": normalize(clip_text(c, "image", 1000)),
                    "image_digest": clip_text(c, "image_digest", 200),
                    "node": clip_text(c, "node", 253),
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
                    "rule": clip_text(r, "rule", 50),
                    "severity": clip_text(r, "severity", 10).upper() or "UNKNOWN",
                    "title": clip_text(r, "title", 1000),
                    "kind": clip_text(r, "kind", 100),
                    "namespace": clip_text(r, "namespace", 253),
                    "name": clip_text(r, "name", 253),
                    "container": clip_text(r, "container", 253),
                    "remediation": clip_text(r, "remediation", 4000),
                    "frameworks": r.get("frameworks") if isinstance(r.get("frameworks"), dict) else {},
                    "seen_at": now,
                    "objects": [str(o)[:300] for o in r["objects"][:1000]] if isinstance(r.get("objects"), list)
                    else None,
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

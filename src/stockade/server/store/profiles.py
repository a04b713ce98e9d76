"""The audit collectors' learned behaviour per identity (audit/profile.py), kept per cluster when a collector runs
with ``--profiles server``: loaded when it starts, written in batches as it learns, listed and reset by people."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select

from stockade.server import db as t
from stockade.server.store.base import BadRequest, NotFound, StoreBase

DIMENSIONS = ("operation", "namespace", "network", "agent")  # audit/profile.py DIMENSIONS (no import: layers)
MAX_PROFILE_ROWS = 20_000  # identities, and values, per write
MAX_IDENTITIES = 50_000  # per cluster: identities beyond are not stored (the collector bounds its own as well)
RESET_NOTICE_S = 30 * 86400.0  # how long a reset is remembered for collectors that were away


def clean(v: str, limit: int) -> str:
    """Text without NUL characters (PostgreSQL refuses them), cut to ``limit``."""
    return v.replace("\x00", "")[:limit]


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not -1e12 < v < 1e12:
        raise BadRequest(f"{what} must be a time in seconds")
    return float(v)


class ProfilesStore(StoreBase):
    def profiles_load(self, cluster_id: int) -> dict[str, Any]:
        """Everything a collector needs to go on where it stopped: identities and their values, and the server's
        time (the ``since`` of its first write)."""
        ip, iv = t.identity_profiles, t.identity_profile_values
        with self.engine.connect() as con:
            ids = con.execute(
                select(ip.c.identity, ip.c.first_seen, ip.c.last_seen, ip.c.too_varied).where(
                    ip.c.cluster_id == cluster_id
                )
            ).all()
            vals = con.execute(select(iv.c.identity, iv.c.dim, iv.c.value).where(iv.c.cluster_id == cluster_id)).all()
        return {
            "now": time.time(),
            "identities": [[r[0], r[1], r[2], bool(r[3])] for r in ids],
            "values": [list(r) for r in vals],
        }

    def profiles_learn(self, cluster_id: int, body: Any) -> dict[str, Any]:
        """Store a collector's batch: {"since": server time of its last answer, "identities": [[identity,
        first_seen, last_seen, too_varied]...], "values": [[identity, dim, value, at]...]}. Idempotent (a retry
        changes nothing). What it learned about an identity a person reset after ``since`` is dropped (the
        collector did not know yet), and the answer names those identities for the collector to forget."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with identities and values")
        since = _number(body.get("since", 0), "since")
        idents, values = body.get("identities", []), body.get("values", [])
        if not isinstance(idents, list) or not isinstance(values, list):
            raise BadRequest("identities and values must be lists")
        if len(idents) > MAX_PROFILE_ROWS or len(values) > MAX_PROFILE_ROWS:
            raise BadRequest(f"at most {MAX_PROFILE_ROWS} identities and {MAX_PROFILE_ROWS} values per write")
        id_rows: dict[str, dict[str, Any]] = {}
        for row in idents:
            if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and row[0]):
                raise BadRequest("an identity is [identity, first_seen, last_seen, too_varied]")
            name = clean(row[0], 300)
            id_rows[name] = {
                "cluster_id": cluster_id,
                "identity": name,
                "first_seen": _number(row[1], "first_seen"),
                "last_seen": _number(row[2], "last_seen"),
                "too_varied": bool(row[3]),
            }
        val_rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in values:
            if not (isinstance(row, list) and len(row) == 4 and all(isinstance(x, str) for x in row[:3])):
                raise BadRequest("a value is [identity, dimension, value, at]")
            if row[1] not in DIMENSIONS:
                raise BadRequest(f"unknown dimension {str(row[1])[:50]!r}: use one of {', '.join(DIMENSIONS)}")
            key = (clean(row[0], 300), row[1], clean(row[2], 300))
            val_rows[key] = {
                "cluster_id": cluster_id,
                "identity": key[0],
                "dim": key[1],
                "value": key[2],
                "at": _number(row[3], "at"),
            }
        ip, iv, rs = t.identity_profiles, t.identity_profile_values, t.identity_profile_resets
        now = time.time()
        with self.engine.begin() as con:
            reset = {
                r[0]: r[1] for r in con.execute(select(rs.c.identity, rs.c.at).where(rs.c.cluster_id == cluster_id))
            }
            stale = {i for i, at in reset.items() if at > since}
            known = set(
                con.execute(
                    select(ip.c.identity).where(ip.c.cluster_id == cluster_id, ip.c.identity.in_(list(id_rows)))
                ).scalars()
            )
            room = MAX_IDENTITIES - int(
                con.execute(select(func.count()).select_from(ip).where(ip.c.cluster_id == cluster_id)).scalar_one()
            )
            keep: list[dict[str, Any]] = []
            for name, r in id_rows.items():
                if name in stale:
                    continue
                if name not in known:
                    if room <= 0:
                        continue
                    room -= 1
                keep.append(r)
            stored = {r["identity"] for r in keep} | known
            vals = [v for k, v in val_rows.items() if k[0] in stored and k[0] not in stale]
            if keep:
                ins = self._insert(ip)
                con.execute(
                    ins.on_conflict_do_update(
                        index_elements=[ip.c.cluster_id, ip.c.identity],
                        set_={"last_seen": ins.excluded.last_seen, "too_varied": ins.excluded.too_varied},
                    ),
                    keep,
                )
            if vals:
                con.execute(self._insert(iv).on_conflict_do_nothing(), vals)
            con.execute(delete(rs).where(rs.c.cluster_id == cluster_id, rs.c.at < now - RESET_NOTICE_S))
        return {
            "now": now,
            "reset": sorted(stale),
            "identities": len(keep),
            "values": len(vals),
            "ignored": len(id_rows) - len(keep),
        }

    def profiles_summary(self, cluster_id: int, identity: str | None = None) -> list[dict[str, Any]]:
        """Each identity of the cluster with the number of values per dimension (with ``identity``: that one, with
        its values)."""
        ip, iv = t.identity_profiles, t.identity_profile_values
        where = [ip.c.cluster_id == cluster_id] + ([ip.c.identity == identity] if identity is not None else [])
        with self.engine.connect() as con:
            rows = con.execute(select(ip).where(*where).order_by(ip.c.identity)).all()
            counts: dict[tuple[str, str], int] = {
                (r[0], r[1]): int(r[2])
                for r in con.execute(
                    select(iv.c.identity, iv.c.dim, func.count())
                    .where(iv.c.cluster_id == cluster_id)
                    .group_by(iv.c.identity, iv.c.dim)
                )
            }
            detail: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
            if identity is not None:
                for dim, value in con.execute(
                    select(iv.c.dim, iv.c.value)
                    .where(iv.c.cluster_id == cluster_id, iv.c.identity == identity)
                    .order_by(iv.c.value)
                ):
                    detail.setdefault(dim, []).append(value)
        if identity is not None and not rows:
            raise NotFound(f"no profile for {identity!r}")
        out = []
        for r in rows:
            item: dict[str, Any] = {
                "identity": r.identity,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "too_varied": bool(r.too_varied),
                **{d: counts.get((r.identity, d), 0) for d in DIMENSIONS},
            }
            if identity is not None:
                item["values"] = detail
            out.append(item)
        return out

    def profile_reset(self, cluster_id: int, identity: str, actor: str, notify: bool = True) -> bool:
        """Forget one identity's profile; ``notify``: tell the cluster's running collector at its next write (a
        person's reset; a collector forgetting an identity itself needs no notice). False when there was none."""
        ip, iv, rs = t.identity_profiles, t.identity_profile_values, t.identity_profile_resets
        with self.engine.begin() as con:
            n = con.execute(delete(ip).where(ip.c.cluster_id == cluster_id, ip.c.identity == identity)).rowcount
            con.execute(delete(iv).where(iv.c.cluster_id == cluster_id, iv.c.identity == identity))
            if notify:
                ins = self._insert(rs)
                con.execute(
                    ins.on_conflict_do_update(
                        index_elements=[rs.c.cluster_id, rs.c.identity], set_={"at": ins.excluded.at}
                    ),
                    [{"cluster_id": cluster_id, "identity": identity, "at": time.time()}],
                )
                self.audit(con, actor, "profile.reset", identity, {"cluster_id": cluster_id})
        return bool(n)

"""Images, their scans and findings (from `stockade scan --server` and agents), rematched on database updates."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from stockade.server import db as t
from stockade.server.store.base import SEVERITIES, BadRequest, StoreBase, bulk_insert, clip_text, parse_time
from stockade.server.store.models import check


class ImagesStore(StoreBase):
    def _apply_scan(self, con: Connection, item: dict[str, Any], where: str) -> int:
        from stockade.kube import normalize

        ref = item.get("ref")
        fs = item.get("findings", [])
        if not isinstance(ref, str) or not ref or not isinstance(fs, list):
            raise BadRequest(f"{where}: a scan needs 'ref' and a 'findings' list")
        ref = normalize(ref)
        values = {
            "ref": ref,
            "digest": clip_text(item, "digest", 200),
            "os": clip_text(item, "os", 200),
            "scanned_at": parse_time(item.get("scanned_at"), time.time()),
            "db_built_at": clip_text(item, "db_built_at", 50),
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
            sev = clip_text(f, "severity", 10).upper() or "UNKNOWN"
            sev = sev if sev in SEVERITIES else "UNKNOWN"
            counts[sev] = counts.get(sev, 0) + 1
            fixed = clip_text(f, "fixed_version", 200)
            fixable += bool(fixed)
            cvss = f.get("cvss_score")
            epss = f.get("epss")
            rows.append(
                {
                    "image_id": image_id,
                    "vuln_id": clip_text(f, "id", 100),
                    "package": clip_text(f, "package"),
                    "ecosystem": clip_text(f, "ecosystem", 30),
                    "installed": clip_text(f, "installed_version", 200),
                    "fixed": fixed,
                    "severity": sev,
                    "cvss": float(cvss) if isinstance(cvss, int | float) else None,
                    "kev": bool(f.get("kev")),
                    "epss": float(epss) if isinstance(epss, int | float) else None,
                    "title": clip_text(f, "title", 1000),
                    "remediation": clip_text(f, "remediation", 1000),
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
        check("scans", items)
        with self.engine.begin() as con:
            stored = sum(self._apply_scan(con, item, f"items[{i}]") for i, item in enumerate(items))
            self.audit(con, actor, "scan.store", ",".join(str(i.get("ref", "")) for i in items)[:300])
        return {"scans": len(items), "findings": stored}

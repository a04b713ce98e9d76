"""Rescans: when the vulnerability database is rebuilt, every stored image inventory is matched again, so running
images show vulnerabilities published after they were scanned (no image pull needed)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from stockade.model import Inventory, OSInfo, Package, StockadeError
from stockade.server import db as t
from stockade.server.store import Store

log = logging.getLogger("stockade.server.rescan")

_PACKAGE_FIELDS = set(Package.__dataclass_fields__)
_OS_FIELDS = set(OSInfo.__dataclass_fields__)


def inventory_from_dict(d: dict[str, Any]) -> Inventory:
    """The inverse of Inventory.to_dict, for what matching needs (OS and packages)."""
    os_d = d.get("os")
    os_info = None
    if isinstance(os_d, dict):
        args = {k: v for k, v in os_d.items() if k in _OS_FIELDS}
        args["id_like"] = tuple(args.get("id_like") or ())
        os_info = OSInfo(**args)
    pkgs = [
        Package(**{k: v for k, v in p.items() if k in _PACKAGE_FIELDS})
        for p in d.get("packages", [])
        if isinstance(p, dict) and p.get("name") and p.get("ecosystem")
    ]
    return Inventory(source=str(d.get("source", "")), os=os_info, packages=pkgs)


def rescan_all(store: Store, vulndb: Path, actor: str = "rescan", force: bool = False) -> dict[str, Any]:
    """Rematch the images scanned with another database build (all of them with ``force``)."""
    from stockade.match.matcher import match
    from stockade.vulndb.store import VulnDB

    vdb = VulnDB(vulndb)
    try:
        built = vdb.meta("built_at") or ""
        with store.engine.connect() as con:
            rows = con.execute(select(t.images.c.id, t.images.c.ref, t.images.c.db_built_at)).all()
        todo = [r for r in rows if force or r.db_built_at != built]
        done = 0
        for r in todo:
            with store.engine.connect() as con:
                inv_d = con.execute(select(t.images.c.inventory).where(t.images.c.id == r.id)).scalar_one_or_none()
            if not isinstance(inv_d, dict):
                continue  # posted without its inventory: only a new scan refreshes it
            findings = match(inventory_from_dict(inv_d), vdb)
            with store.engine.begin() as con:
                store.replace_findings(con, r.id, [f.to_dict() for f in findings])
                con.execute(update(t.images).where(t.images.c.id == r.id).values(db_built_at=built))
            done += 1
        if done:
            with store.engine.begin() as con:
                store.audit(con, actor, "images.rescan", str(vulndb), {"images": done, "db_built_at": built})
        return {"images": done, "db_built_at": built}
    finally:
        vdb.close()


async def rescan_loop(store: Store, vulndb: Path, interval: float) -> None:
    while True:
        try:
            result = await asyncio.to_thread(rescan_all, store, vulndb)
            if result["images"]:
                log.info("rescanned %d images with the database built at %s", result["images"], result["db_built_at"])
        except asyncio.CancelledError:
            raise
        except StockadeError as e:
            log.warning("rescan: %s", e)
        except Exception:
            log.exception("rescan failed")
        await asyncio.sleep(interval)

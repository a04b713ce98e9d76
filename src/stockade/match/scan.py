"""One image scanned end to end: catalogued, matched against the vulnerability database, silenced where an
ignore file or VEX says so, then handed to each recorder (the admission gate's scan store, the central server)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from stockade.inventory import catalog_image
from stockade.match import suppress
from stockade.match.matcher import match
from stockade.model import ScanResult
from stockade.vulndb.store import VulnDB

Recorder = Callable[[ScanResult], None]


def scan_image(image: str, db: Path | None = None, platform: str | None = None, lockfiles: bool = False,
               ignorefile: Path | None = None, vex: Iterable[Path] = (),
               recorders: Iterable[Recorder] = (), os_owned: bool = False) -> ScanResult:  # fmt: skip
    """Scan ``image`` (anything ``stockade sbom`` reads) with the database at ``db`` (default: $STOCKADE_DB or
    the user's cache); StockadeError names the input at fault."""
    vdb = VulnDB(db)
    inv = catalog_image(image, platform, lockfiles=lockfiles)
    findings = match(inv, vdb, os_owned)
    rules = []
    if ignorefile is not None and ignorefile.is_file():
        rules += suppress.load_ignore_file(ignorefile)
    for doc in vex:
        rules += suppress.load_vex(doc)
    suppress.apply(findings, rules)
    result = ScanResult(image, inv, findings, str(vdb.path), vdb.meta("built_at") or "")
    for record in recorders:
        record(result)
    return result


def db_age_days(built_at: str) -> int | None:
    """Days since the database was built (None when unknown)."""
    if not built_at:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(built_at)).days

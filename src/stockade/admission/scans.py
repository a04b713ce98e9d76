"""The image scan results the admission gate consults: a small SQLite store that `stockade scan --record`
writes and the webhook reads (read-only, with a bounded, cached lookup)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from stockade.kube import normalize
from stockade.model import Finding, ScanResult, StockadeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_scans (
    ref TEXT PRIMARY KEY,          -- as a pod names it (registry/repo:tag or registry/repo@sha256:...)
    scanned_at REAL NOT NULL,
    db_built_at TEXT NOT NULL,
    total INTEGER NOT NULL,
    critical INTEGER NOT NULL, high INTEGER NOT NULL, medium INTEGER NOT NULL, low INTEGER NOT NULL,
    unknown INTEGER NOT NULL,
    fixable_critical INTEGER NOT NULL, fixable_high INTEGER NOT NULL,
    fixable_medium INTEGER NOT NULL, fixable_low INTEGER NOT NULL, fixable_unknown INTEGER NOT NULL
);
"""
SEVS = ("critical", "high", "medium", "low", "unknown")  # unknown: the feed gives no severity (Alpine secdb)


class ScanStoreError(StockadeError):
    pass


@dataclass(frozen=True, slots=True)
class ScanSummary:
    ref: str
    scanned_at: float
    counts: dict[str, int]  # by severity (upper case)
    fixable: dict[str, int]


def keys(ref: str) -> list[str]:
    """The store keys one image reference may be recorded under, most specific first."""
    n = normalize(ref)
    out = [n]
    if "@" in n:  # repo:tag@sha256:... also matches repo@sha256:...
        name, digest = n.split("@", 1)
        last = name.rsplit("/", 1)
        if ":" in last[-1]:
            out.append(f"{name.rsplit(':', 1)[0]}@{digest}")
    return out


def record(path: Path, refs: Iterable[str], findings: list[Finding], db_built_at: str) -> None:
    """Store one scan's summary under every reference given (tags and digests of the image)."""
    counts = {s: 0 for s in SEVS}
    fixable = {s: 0 for s in SEVS}
    for f in findings:
        if f.suppressed:
            continue
        s = f.severity.lower()
        if s in counts:
            counts[s] += 1
            if f.fixed_version:
                fixable[s] += 1
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=10)
        with con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            for ref in refs:
                con.execute(
                    "INSERT OR REPLACE INTO image_scans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        normalize(ref),
                        time.time(),
                        db_built_at,
                        sum(counts.values()),
                        *(counts[s] for s in SEVS),
                        *(fixable[s] for s in SEVS),
                    ),
                )
        con.close()
    except sqlite3.Error as exc:
        raise ScanStoreError(f"{path}: cannot record the scan ({exc})") from None


def recorder(path: Path, refs: list[str] | None = None) -> Callable[[ScanResult], None]:
    """What ``stockade scan --record`` does with a scan: recorded under ``refs`` (default: the image argument,
    its tags and digests) in the scan store at ``path``."""

    def record_scan(result: ScanResult) -> None:
        inv = result.inventory
        record(path, refs or [result.image, *inv.repo_tags, *inv.repo_digests], result.findings, result.db_built_at)

    return record_scan


class ScanStore:
    """Read side for the webhook: an LRU cache with a TTL in front of SQLite, and a lock timeout so that a
    busy writer can never hold a request longer than ``timeout`` seconds."""

    def __init__(self, path: Path, ttl: float = 60.0, size: int = 4096, timeout: float = 0.05) -> None:
        self.path, self.ttl, self.size, self.timeout = path, ttl, size, timeout
        self._cache: OrderedDict[str, tuple[float, ScanSummary | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if not self.path.exists():
                raise ScanStoreError(f"{self.path}: no scan store (record scans with 'stockade scan --record')")
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout, check_same_thread=False)
            self._local.con = con
        return con

    def lookup(self, ref: str) -> ScanSummary | None:
        """The newest summary recorded for the image, None when it was never scanned."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(ref)
            if hit and hit[0] > now:
                self._cache.move_to_end(ref)
                return hit[1]
        found: ScanSummary | None = None
        try:
            con = self._con()
            for key in keys(ref):
                row = con.execute("SELECT * FROM image_scans WHERE ref = ?", (key,)).fetchone()
                if row:
                    found = ScanSummary(
                        row[0],
                        row[1],
                        {s.upper(): row[4 + i] for i, s in enumerate(SEVS)},
                        {s.upper(): row[4 + len(SEVS) + i] for i, s in enumerate(SEVS)},
                    )
                    break
        except sqlite3.Error as exc:
            raise ScanStoreError(f"{self.path}: scan lookup failed ({exc})") from None
        with self._lock:
            self._cache[ref] = (now + self.ttl, found)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return found

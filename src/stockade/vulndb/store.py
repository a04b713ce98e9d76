"""The normalized vulnerability store: one SQLite file, indexed by ecosystem, namespace and package.

Plain sqlite3 rather than SQLAlchemy: the store is built in bulk, read with one indexed query per
package, and shipped as a single file; an ORM would only add per-row overhead on the hot path.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stockade.model import StockadeError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sources(
    name TEXT PRIMARY KEY, imported_at TEXT, records INTEGER, bad INTEGER, data_date TEXT, errors TEXT
);
CREATE TABLE IF NOT EXISTS vulns(
    id TEXT PRIMARY KEY, source TEXT, aliases TEXT, summary TEXT, severity TEXT,
    cvss_vector TEXT, cvss_score REAL, published TEXT, modified TEXT, refs TEXT
);
CREATE TABLE IF NOT EXISTS affected(
    vuln_id TEXT, source TEXT, ecosystem TEXT, namespace TEXT, package TEXT, ranges TEXT, versions TEXT,
    severity TEXT, vulnerable TEXT, safe TEXT
);
CREATE INDEX IF NOT EXISTS affected_pkg ON affected(ecosystem, namespace, package);
CREATE TABLE IF NOT EXISTS kev(cve TEXT PRIMARY KEY, date_added TEXT, due_date TEXT, ransomware TEXT, name TEXT);
CREATE TABLE IF NOT EXISTS epss(cve TEXT PRIMARY KEY, score REAL, percentile REAL);
"""


class DBError(StockadeError):
    """The vulnerability database is missing, unreadable or of another schema."""


@dataclass(slots=True)
class Affected:
    """A package range an advisory affects. ``ranges``: (introduced, fixed, last_affected) triples."""

    ecosystem: str
    namespace: str  # "" for language ecosystems; "debian:12", "alpine:3.11", "alma:9" for OS packages
    package: str
    ranges: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    severity: str = ""  # the distro's own rating, when it gives one
    # constraint expressions (match/constraints.py): affected when it satisfies one of ``vulnerable``
    # (or there are none) and none of ``safe``; used by RubySec, Packagist and the Node.js WG feed
    vulnerable: list[str] = field(default_factory=list)
    safe: list[str] = field(default_factory=list)
    source: str = ""  # the feed this range came from (a CVE can be named by several)


@dataclass(slots=True)
class Advisory:
    id: str
    source: str
    aliases: list[str] = field(default_factory=list)
    summary: str = ""
    severity: str = ""  # CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN
    cvss_vector: str = ""
    cvss_score: float | None = None
    published: str = ""
    modified: str = ""
    references: list[str] = field(default_factory=list)
    affected: list[Affected] = field(default_factory=list)


def default_db_path() -> Path:
    env = os.environ.get("STOCKADE_DB")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stockade" / "vuln.db"


class Writer:
    """Bulk insertion into a new database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = sqlite3.connect(path)
        self.con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        self.con.execute("INSERT OR REPLACE INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))

    def add(self, adv: Advisory) -> None:
        # the same CVE comes from several sources: keep what each knows (a summary, a score)
        self.con.execute(
            "INSERT INTO vulns VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " aliases=CASE WHEN excluded.aliases != '[]' THEN excluded.aliases ELSE aliases END,"
            " summary=COALESCE(NULLIF(summary, ''), excluded.summary),"
            " severity=CASE WHEN severity IN ('', 'UNKNOWN') THEN excluded.severity ELSE severity END,"
            " cvss_vector=COALESCE(NULLIF(cvss_vector, ''), excluded.cvss_vector),"
            " cvss_score=COALESCE(cvss_score, excluded.cvss_score),"
            " published=COALESCE(NULLIF(published, ''), excluded.published),"
            " modified=COALESCE(NULLIF(modified, ''), excluded.modified)",
            (
                adv.id,
                adv.source,
                orjson.dumps(adv.aliases).decode(),
                adv.summary[:2000],
                adv.severity,
                adv.cvss_vector,
                adv.cvss_score,
                adv.published,
                adv.modified,
                orjson.dumps(adv.references[:20]).decode(),
            ),
        )
        self.con.executemany(
            "INSERT INTO affected VALUES(?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    adv.id,
                    adv.source,
                    a.ecosystem,
                    a.namespace,
                    a.package,
                    orjson.dumps(a.ranges).decode(),
                    orjson.dumps(a.versions).decode() if a.versions else None,
                    a.severity,
                    orjson.dumps(a.vulnerable).decode() if a.vulnerable else None,
                    orjson.dumps(a.safe).decode() if a.safe else None,
                )
                for a in adv.affected
            ],
        )

    def kev(self, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        self.con.executemany("INSERT OR REPLACE INTO kev VALUES(?,?,?,?,?)", rows)

    def epss(self, rows: Iterable[tuple[str, float, float]]) -> None:
        self.con.executemany("INSERT OR REPLACE INTO epss VALUES(?,?,?)", rows)

    def source(self, name: str, records: int, bad: int, data_date: str, errors: list[str]) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO sources VALUES(?,?,?,?,?,?)",
            (name, now_iso(), records, bad, data_date, orjson.dumps(errors[:50]).decode()),
        )

    def close(self) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES('built_at', ?)", (now_iso(),))
        self.con.commit()
        self.con.execute("ANALYZE")
        self.con.commit()
        self.con.close()


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class VulnDB:
    """Read access to a built database."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_db_path()
        if not self.path.is_file():
            raise DBError(f"{self.path}: no vulnerability database; run 'stockade db build --from DIR' first")
        try:
            self.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            version = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DBError(f"{self.path}: not a stockade vulnerability database ({exc})") from None
        if not version or int(version[0]) != SCHEMA_VERSION:
            raise DBError(f"{self.path}: database schema {version and version[0]} is not {SCHEMA_VERSION}; rebuild it")
        self._vulns: dict[str, dict[str, Any]] = {}
        self._kev: set[str] | None = None
        self._epss: dict[str, float | None] = {}

    def close(self) -> None:
        self.con.close()

    def affected(self, ecosystem: str, namespace: str, package: str) -> Iterator[tuple[str, Affected]]:
        cur = self.con.execute(
            "SELECT vuln_id, ranges, versions, severity, vulnerable, safe, source FROM affected"
            " WHERE ecosystem=? AND namespace=? AND package=?",
            (ecosystem, namespace, package),
        )
        for vid, ranges, versions, severity, vulnerable, safe, source in cur:
            yield (
                vid,
                Affected(
                    ecosystem,
                    namespace,
                    package,
                    [tuple(r) for r in orjson.loads(ranges)],
                    orjson.loads(versions) if versions else [],
                    severity or "",
                    orjson.loads(vulnerable) if vulnerable else [],
                    orjson.loads(safe) if safe else [],
                    source or "",
                ),
            )

    def vuln(self, vid: str) -> dict[str, Any]:
        if vid not in self._vulns:
            row = self.con.execute(
                "SELECT id, source, aliases, summary, severity, cvss_vector, cvss_score, published, modified, refs"
                " FROM vulns WHERE id=?",
                (vid,),
            ).fetchone()
            if row is None:
                self._vulns[vid] = {
                    "id": vid,
                    "aliases": [],
                    "summary": "",
                    "severity": "",
                    "cvss_score": None,
                    "cvss_vector": "",
                    "references": [],
                    "source": "",
                }
            else:
                self._vulns[vid] = {
                    "id": row[0],
                    "source": row[1],
                    "aliases": orjson.loads(row[2]),
                    "summary": row[3],
                    "severity": row[4],
                    "cvss_vector": row[5],
                    "cvss_score": row[6],
                    "published": row[7],
                    "modified": row[8],
                    "references": orjson.loads(row[9]),
                }
        return self._vulns[vid]

    def kev(self, cve: str) -> bool:
        if self._kev is None:  # ~1,500 rows: one query, then set lookups
            self._kev = {r[0] for r in self.con.execute("SELECT cve FROM kev")}
        return cve in self._kev

    def epss(self, cve: str) -> float | None:
        if cve not in self._epss:
            row = self.con.execute("SELECT score FROM epss WHERE cve=?", (cve,)).fetchone()
            self._epss[cve] = float(row[0]) if row else None
        return self._epss[cve]

    def meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def sources(self) -> list[dict[str, Any]]:
        rows = self.con.execute("SELECT name, imported_at, records, bad, data_date, errors FROM sources ORDER BY name")
        return [
            {
                "name": r[0],
                "imported_at": r[1],
                "records": r[2],
                "bad": r[3],
                "data_date": r[4],
                "errors": orjson.loads(r[5] or "[]"),
            }
            for r in rows
        ]

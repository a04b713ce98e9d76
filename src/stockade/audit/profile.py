"""What each identity usually does, learned from the audit log, and what falls outside it (Defender's "abnormal
Kubernetes service account operation").

For each identity (a service account or a person) the profile holds, separately: the (verb, resource) pairs it
used, the namespaces it touched, the source networks it came from (/24 for IPv4, /64 for IPv6) and the client
products of its user agents (``kubectl``, ``argocd-application-controller``). An identity learns for
``learn_s`` seconds of event time from its first request; afterwards a request with a value no dimension has
seen is an anomaly, reported with the dimensions that were new and the profile as it stood. Only requests the
API server allowed count, and the control plane's own components are left out (they do everything).

The profile is bounded: at most ``max_values`` values per dimension of an identity (an identity that exceeds it
is too varied to profile and stops being judged) and ``max_identities`` identities (the least recently seen
forgotten first). It is kept in a SQLite file (`audit scan --follow`, `audit serve`) or, with ``--profiles server``,
in the stockade server's database (PostgreSQL or SQLite, per cluster), written in batches, and survives restarts;
``reset`` forgets one identity, which then learns again (a reset made on the server reaches a running detector
at its next write).
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stockade.model import StockadeError

log = logging.getLogger("stockade.audit.profile")
DIMENSIONS = ("operation", "namespace", "network", "agent")
CONTROL_PLANE_PREFIXES = ("system:node:", "system:kube-", "system:apiserver", "system:serviceaccount:kube-system:")


class ProfileError(StockadeError):
    pass


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address is in; the text itself when it is no address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    return str(ipaddress.ip_network(f"{ip}/{24 if addr.version == 4 else 64}", strict=False))


def agent_of(user_agent: str) -> str:
    """The client product of a user agent: ``kubectl/v1.31.0 (linux/amd64) kubernetes/abc`` -> ``kubectl``."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0].strip().lower()[:100] or "(none)"


def observations(ev: dict[str, Any]) -> dict[str, str]:
    """The value of each dimension for one request."""
    ref = ev.get("objectRef") or {}
    ips = ev.get("sourceIPs") or []
    return {
        "operation": f"{ev.get('verb', '')} {ev.get('_resource', '')}",
        "namespace": str(ref.get("namespace") or "(cluster)"),
        "network": network_of(str(ips[0])) if isinstance(ips, list) and ips else "(none)",
        "agent": agent_of(str(ev.get("userAgent") or "")),
    }


@dataclass(slots=True)
class Identity:
    first_seen: float
    last_seen: float
    values: dict[str, set[str]] = field(default_factory=lambda: {d: set() for d in DIMENSIONS})
    too_varied: bool = False


@dataclass(slots=True)
class Anomaly:
    identity: str
    new: dict[str, str]  # dimension -> the value no earlier request had
    profile: dict[str, list[str]]  # what the identity had done, per dimension (at most 20 values each)


class ProfileStore(Protocol):
    """Where learned profiles are kept: a SQLite file (SQLiteProfiles) or the stockade server's database
    (server/client.py ServerProfiles)."""

    def load(self) -> tuple[list[tuple[str, float, float, bool]], list[tuple[str, str, str]]]:
        """(identity, first_seen, last_seen, too_varied) rows and (identity, dimension, value) rows."""
        ...

    def save(self, identities: list[tuple[str, float, float, int]], values: list[tuple[str, str, str, float]]
             ) -> list[str]:  # fmt: skip
        """Store what was learned; the identities whose profile was reset elsewhere since the last save (a
        person reset it on the server), for the detector to forget. Raises ProfileError when it was not stored."""
        ...

    def delete(self, identity: str) -> bool:
        """Forget one identity; False when the store had no profile for it."""
        ...

    def close(self) -> None: ...


class SQLiteProfiles:
    """Profiles in a SQLite file (`audit scan --follow`, `audit serve` without a server)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path)
            self.db.executescript(
                "PRAGMA journal_mode=WAL;"
                "CREATE TABLE IF NOT EXISTS identities(identity TEXT PRIMARY KEY, first_seen REAL, last_seen REAL,"
                " too_varied INTEGER DEFAULT 0);"
                "CREATE TABLE IF NOT EXISTS seen(identity TEXT, dim TEXT, value TEXT, at REAL,"
                " PRIMARY KEY(identity, dim, value));"
            )
        except (sqlite3.Error, OSError) as exc:
            raise ProfileError(f"{path}: not a profile database ({exc})") from None

    def load(self) -> tuple[list[tuple[str, float, float, bool]], list[tuple[str, str, str]]]:
        try:
            ids = [(i, f, la, bool(v)) for i, f, la, v in
                   self.db.execute("SELECT identity, first_seen, last_seen, too_varied FROM identities")]  # fmt: skip
            seen = list(self.db.execute("SELECT identity, dim, value FROM seen"))
        except sqlite3.Error as exc:
            raise ProfileError(f"{self.path}: not a profile database ({exc})") from None
        return ids, seen

    def save(self, identities: list[tuple[str, float, float, int]], values: list[tuple[str, str, str, float]]
             ) -> list[str]:  # fmt: skip
        try:
            with self.db:
                self.db.executemany("INSERT INTO identities VALUES(?,?,?,?) ON CONFLICT(identity) DO UPDATE SET "
                                    "last_seen=excluded.last_seen, too_varied=excluded.too_varied",
                                    identities)  # fmt: skip
                self.db.executemany("INSERT OR IGNORE INTO seen VALUES(?,?,?,?)", values)
        except sqlite3.Error as exc:
            raise ProfileError(f"{self.path}: {exc}") from None
        return []

    def delete(self, identity: str) -> bool:
        with self.db:
            n = self.db.execute("DELETE FROM identities WHERE identity=?", (identity,)).rowcount
            self.db.execute("DELETE FROM seen WHERE identity=?", (identity,))
        return n > 0

    def close(self) -> None:
        self.db.close()


class Profiles:
    """The learned profiles, in memory, backed by ``store`` (or by a SQLite file at ``path``; neither: memory
    only)."""

    def __init__(self, path: Path | None = None, learn_s: float = 7 * 86400.0, max_values: int = 500,
                 max_identities: int = 50_000, store: ProfileStore | None = None,
                 flush_every_s: float = 30.0) -> None:  # fmt: skip
        self.learn_s, self.max_values, self.max_identities = learn_s, max_values, max_identities
        self.flush_every_s = flush_every_s  # what was learned is written at least this often (and every 500 values)
        self._flushed = time.monotonic()
        self.ids: dict[str, Identity] = {}
        self._pending: list[tuple[str, str, str, float]] = []
        self._touched: set[str] = set()
        self.write_errors = 0
        self.store: ProfileStore | None = store if store is not None else (SQLiteProfiles(path) if path else None)
        if self.store is not None:
            self._load()

    @property
    def db(self) -> sqlite3.Connection | None:
        """The SQLite connection, when the profiles are kept in a file."""
        return self.store.db if isinstance(self.store, SQLiteProfiles) else None

    def _load(self) -> None:
        assert self.store is not None
        identities, seen = self.store.load()
        for ident, first, last, varied in identities:
            self.ids[ident] = Identity(first, last, too_varied=bool(varied))
        for ident, dim, value in seen:
            idn = self.ids.get(ident)
            if idn is not None and dim in idn.values:
                idn.values[dim].add(value)

    def observe(self, identity: str, ev: dict[str, Any], now: float) -> Anomaly | None:
        """Learn from one allowed request; an Anomaly when the identity is past its learning window and the
        request has a value none of its earlier ones had."""
        if time.monotonic() - self._flushed > self.flush_every_s:  # resets made on the server come back too
            self.flush()
        idn = self.ids.get(identity)
        if idn is None:
            if len(self.ids) >= self.max_identities:
                oldest = min(self.ids, key=lambda k: self.ids[k].last_seen)
                try:
                    self.reset(oldest)
                except ProfileError as exc:  # the store away: forgotten here, the store keeps it
                    log.warning("profile of %s not deleted from the store: %s", oldest, exc)
            idn = self.ids[identity] = Identity(now, now)
        idn.last_seen = max(idn.last_seen, now)
        self._touched.add(identity)
        obs = observations(ev)
        learning = now - idn.first_seen < self.learn_s
        new = {d: v for d, v in obs.items() if v not in idn.values[d]}
        if not new:
            return None
        anomaly = None
        if not learning and not idn.too_varied:
            anomaly = Anomaly(identity, new, {d: sorted(vs)[:20] for d, vs in idn.values.items()})
        for d, v in new.items():  # what is seen once is part of the profile from then on
            if len(idn.values[d]) >= self.max_values:
                idn.too_varied = True
                continue
            idn.values[d].add(v)
            self._pending.append((identity, d, v, now))
        if len(self._pending) >= 500:
            self.flush()
        return anomaly

    def flush(self) -> None:
        """Write what was learned since the last flush; forget the identities reset elsewhere meanwhile."""
        self._flushed = time.monotonic()
        if self.store is None:
            self._pending.clear()
            self._touched.clear()
            return
        rows = [(i, self.ids[i].first_seen, self.ids[i].last_seen, int(self.ids[i].too_varied))
                for i in self._touched if i in self.ids]  # fmt: skip
        try:
            reset = self.store.save(rows, self._pending)
        except ProfileError as exc:  # a full disk, a locked file, the server away: kept in memory, retried
            self.write_errors += 1
            log.warning("profiles not saved (kept in memory, retried at the next flush): %s", exc)
            if len(self._pending) > 200_000:  # bounded: the oldest unsaved values are dropped from the store's view
                del self._pending[:100_000]
            return
        self._pending.clear()
        self._touched.clear()
        for identity in reset:  # a person reset it on the server: it learns again from its next request
            self.ids.pop(identity, None)

    def reset(self, identity: str) -> bool:
        """Forget one identity (it learns again from its next request); False when it had no profile."""
        known = self.ids.pop(identity, None) is not None
        self._pending = [p for p in self._pending if p[0] != identity]
        self._touched.discard(identity)
        if self.store is not None:
            known = self.store.delete(identity) or known
        return known

    def summary(self) -> list[dict[str, Any]]:
        """Each identity: learning or judged, values per dimension."""
        now = time.time()
        return [{"identity": i, "first_seen": p.first_seen, "last_seen": p.last_seen,
                 "learning": now - p.first_seen < self.learn_s and p.last_seen - p.first_seen < self.learn_s,
                 "too_varied": p.too_varied, **{d: len(v) for d, v in p.values.items()}}
                for i, p in sorted(self.ids.items())]  # fmt: skip

    def close(self) -> None:
        self.flush()
        if self.store is not None:
            self.store.close()
            self.store = None

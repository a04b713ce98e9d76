"""Settings rows admins manage: posture exceptions, alert exports, and server settings."""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, func, insert, select

from stockade.server import db as t
from stockade.server.store.base import SETTINGS_TABLES, SEVERITIES, BadRequest, NotFound, StoreBase, parse_time


class ExportsStore(StoreBase):
    def delete_row(self, table_name: str, row_id: int, actor: str) -> None:
        table = SETTINGS_TABLES[table_name]
        with self.engine.begin() as con:
            if table is t.exports:
                con.execute(delete(t.alert_exports).where(t.alert_exports.c.export_id == row_id))
            n = con.execute(delete(table).where(table.c.id == row_id)).rowcount
            if not n:
                raise NotFound(f"no {table_name[:-1]} {row_id}")
            self.audit(con, actor, f"{table_name[:-1]}.delete", str(row_id))
        with self._lock:
            self._sup_cache = None

    def rows(self, table_name: str, role: str = "reader") -> list[dict[str, Any]]:
        """A settings table as shown: export targets with their credentials redacted, and delivery errors (which
        say what answers at a target) only to admins."""
        table = SETTINGS_TABLES[table_name]
        with self.engine.connect() as con:
            rows = [dict(r._mapping) for r in con.execute(select(table).order_by(table.c.id)).all()]
        if table is t.exports:
            for r in rows:
                r["target"] = redact_url(r["target"])
                r["name"] = redact_text(r["name"])
                r["last_error"] = redact_text(r["last_error"]) if role == "admin" else ""
        return rows

    def add_exception(self, spec: dict[str, Any], actor: str) -> int:
        reason = spec.get("reason")
        if not isinstance(reason, str) or not reason:
            raise BadRequest("an exception needs a 'reason'")
        values = {k: str(spec.get(k) or "*")[:253] for k in ("rule", "cluster", "namespace", "name")} | {
            "reason": reason,
            "created_by": actor,
            "created_at": time.time(),
            "expires_at": parse_time(spec.get("expires_at"), 0.0) or None,
        }
        with self.engine.begin() as con:
            eid = con.execute(insert(t.exceptions).values(**values)).inserted_primary_key
            detail = {k: values[k] for k in ("cluster", "namespace", "name", "reason")}
            self.audit(con, actor, "exception.create", str(values["rule"]), detail)
        assert eid is not None
        return int(eid[0])

    def add_export(self, spec: dict[str, Any], actor: str, export_dir: Path | None = None) -> int:
        kind = spec.get("kind")
        target = spec.get("target")
        fmt = spec.get("format") or ("json" if kind != "syslog" else "rfc5424")
        if kind not in ("webhook", "syslog", "file"):
            raise BadRequest("'kind' is webhook, syslog or file")
        if not isinstance(target, str) or not target:
            raise BadRequest("'target' is a URL (webhook), udp://host:port or tcp://host:port (syslog), or a file name "
                             "inside the export directory")
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            raise BadRequest(f"webhook target {target!r} is not an http(s) URL")
        if kind == "syslog" and not target.startswith(("udp://", "tcp://")):
            raise BadRequest(f"syslog target {target!r}: use udp://host:port or tcp://host:port")
        if kind == "file":
            export_path(export_dir, target)
        allow_private = spec.get("allow_private") in (True, "true", "on", "1")
        if kind != "file" and not allow_private:
            check_public_target(target, must_resolve=False)
        if fmt not in ("json", "rfc5424", "cef"):
            raise BadRequest("'format' is json, rfc5424 or cef")
        sev = str(spec.get("min_severity") or "LOW").upper()
        if sev not in SEVERITIES:
            raise BadRequest(f"'min_severity' is one of {', '.join(SEVERITIES)}")
        with self.engine.begin() as con:
            start = int(con.execute(select(func.coalesce(func.max(t.alerts.c.id), 0))).scalar_one())
            if spec.get("include_existing"):
                start = 0
            xid = con.execute(
                insert(t.exports).values(
                    name=str(spec.get("name") or f"{kind} {redact_url(target)}")[:200],
                    kind=kind,
                    target=target,
                    format=fmt,
                    min_severity=sev,
                    enabled=True,
                    start_alert_id=start,
                    created_by=actor,
                    created_at=time.time(),
                    delivered=0,
                    failures=0,
                    last_error="",
                    allow_private=allow_private,
                )
            ).inserted_primary_key
            detail = {"kind": kind, "format": fmt, "allow_private": allow_private}
            self.audit(con, actor, "export.create", redact_url(target)[:300], detail)
        assert xid is not None
        return int(xid[0])

    def setting(self, key: str) -> Any:
        with self.engine.connect() as con:
            row = con.execute(select(t.settings.c.value).where(t.settings.c.key == key)).first()
        return row.value if row else None


def export_path(export_dir: Path | None, target: str) -> Path:
    """Where a file export writes: ``target`` (a relative path) inside ``export_dir``, resolved (symbolic links
    followed) and checked to stay inside it; BadRequest otherwise, or when file exports are off (no
    --export-dir)."""
    if export_dir is None:
        raise BadRequest(f"{target}: file exports are off (start the server with --export-dir)")
    rel = PurePosixPath(target)
    if not target or rel.is_absolute() or ".." in rel.parts or "\x00" in target:
        raise BadRequest(f"{target}: a file export's target is a relative path inside the export directory")
    root = export_dir.resolve()
    dest = (root / rel).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise BadRequest(f"{target}: resolves outside the export directory {root}")
    return dest


# query parameters that carry secrets in webhook URLs (Splunk HEC, Teams, generic "?token=")
_SECRET_PARAM = re.compile(r"(?i)(token|key|secret|pass|pwd|sig|signature|auth|code|credential)")
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its user name, password and secret-looking query values replaced by ``***``: how export
    targets are shown, logged and audited."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (an error message, a name) redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def target_host(target: str) -> tuple[str, int]:
    """Host and port of a webhook URL or a syslog udp://host:port / tcp://host:port target."""
    try:
        parts = urlsplit(target)
        host, port = parts.hostname or "", parts.port
    except ValueError as e:
        raise BadRequest(f"{redact_url(target)}: {e}") from None
    if not host:
        raise BadRequest(f"{redact_url(target)}: no host")
    default = {"https": 443, "http": 80}.get(parts.scheme, 514)
    return host, port or default


def non_public(addr: str) -> bool:
    """Loopback, private (RFC 1918, ULA), link-local (cloud metadata at 169.254.169.254), CGNAT, multicast,
    unspecified or reserved."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_public_target(target: str, must_resolve: bool = True) -> list[str]:
    """The addresses ``target``'s host resolves to, all public; BadRequest naming the first that is not (an
    export to it needs ``allow_private``, which only an admin sets) or, with ``must_resolve``, when the name does
    not resolve (at creation a name may not resolve yet: each delivery checks again)."""
    host, port = target_host(target)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        if not must_resolve:
            return []
        raise BadRequest(f"{redact_url(target)}: {host} does not resolve ({e})") from None
    addrs = sorted({str(i[4][0]) for i in infos})
    for a in addrs:
        if non_public(a):
            raise BadRequest(
                f"{redact_url(target)}: {host} is {a}, a loopback, private, link-local or reserved address; "
                "set allow_private to export to it"
            )
    return addrs

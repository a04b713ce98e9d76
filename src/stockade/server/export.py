"""Continuous export of alerts: to a webhook (JSON), to syslog (RFC 5424, or CEF inside RFC 5424, over UDP or TCP
with octet counting, RFC 6587) and to files (JSON lines or CEF). Each export remembers what it delivered
(alert_exports), so a failed delivery is retried, with backoff, until it succeeds; at least once."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import and_, insert, select, update

from stockade.server import db as t
from stockade.server.store import SEVERITIES, BadRequest, Store, severity_at_least
from stockade.server.store.exports import check_public_target, export_path, redact_text, redact_url

log = logging.getLogger("stockade.server.export")

BATCH = 500
# RFC 5424 severities by alert severity; the facility is 4 (security/authorization messages)
SYSLOG_SEVERITY = {"CRITICAL": 2, "HIGH": 3, "MEDIUM": 4, "LOW": 5, "INFO": 6, "UNKNOWN": 5}
FACILITY = 4
CEF_SEVERITY = {"CRITICAL": 10, "HIGH": 8, "MEDIUM": 5, "LOW": 3, "INFO": 1, "UNKNOWN": 0}
SD_ID = "stockade@32473"  # 32473 is the example enterprise number of RFC 5612, reserved for documentation


class ExportError(Exception):
    pass


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_document(a: dict[str, Any]) -> dict[str, Any]:
    """An alert as exported: times as RFC 3339, the cluster by name."""
    out = {str(k): v for k, v in a.items() if k not in ("open_key", "cluster_id")}  # keys may be str subclasses
    for k in ("first_seen", "last_seen", "created_at", "status_at"):
        if out.get(k) is not None:
            out[k] = _iso(out[k])
    return out


def _one_line(v: str) -> str:
    """Line and record breaks as visible escapes: no text from an alert can start a line of its own (a forged
    record in a file, or a second syslog message over TCP)."""
    return v.replace("\r", "\\r").replace("\n", "\\n").replace("\x85", "\\x85").replace("\u2028", "\\u2028") \
        .replace("\u2029", "\\u2029").replace("\x00", "")


def _sd_escape(v: str) -> str:
    return _one_line(v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]"))


def _printable(v: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, '-' when empty."""
    out = "".join(c for c in v if 33 <= ord(c) <= 126)[:limit]
    return out or "-"


def to_rfc5424(a: dict[str, Any], msg: str | None = None, host: str | None = None) -> str:
    pri = FACILITY * 8 + SYSLOG_SEVERITY.get(a["severity"], 5)
    params = {
        "alertId": str(a["id"]),
        "cluster": a.get("cluster", ""),
        "rule": a["rule"],
        "severity": a["severity"],
        "status": a.get("status", ""),
        "count": str(a.get("count", 1)),
        "namespace": a.get("namespace", ""),
        "user": a.get("user", ""),
        "tactics": ",".join(a.get("tactics") or []),
        "techniques": ",".join(a.get("techniques") or []),
    }
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_escape(str(v))}"' for k, v in params.items() if v) + "]"
    text = msg if msg is not None else _one_line(
        f"{a['title']}: {a.get('message') or a.get('description') or ''}".strip())
    return (
        f"<{pri}>1 {_iso(a['last_seen'])} {_printable(host or socket.gethostname(), 255)} stockade "
        f"{os.getpid()} {_printable(a['rule'], 32)} {sd} {text}"
    )


def _cef_header(v: str) -> str:
    return _one_line(v.replace("\\", "\\\\").replace("|", "\\|"))


def _cef_value(v: str) -> str:
    return _one_line(v.replace("\\", "\\\\").replace("=", "\\="))


def to_cef(a: dict[str, Any]) -> str:
    """ArcSight Common Event Format (CEF:0): the header, then key=value extensions."""
    ext = {
        "rt": str(int(a["last_seen"] * 1000)),
        "start": str(int(a["first_seen"] * 1000)),
        "cnt": str(a.get("count", 1)),
        "externalId": str(a["id"]),
        "suser": a.get("user", ""),
        "src": (a.get("source_ips") or [""])[0],
        "cs1Label": "cluster",
        "cs1": a.get("cluster", ""),
        "cs2Label": "namespace",
        "cs2": a.get("namespace", ""),
        "cs3Label": "mitreTechniques",
        "cs3": ",".join(a.get("techniques") or []),
        "cat": ",".join(a.get("tactics") or []),
        "outcome": a.get("status", ""),
        "msg": a.get("message") or a.get("description") or "",
    }
    head = "|".join(
        _cef_header(x)
        for x in ("stockade", "stockade", "0.1.0", a["rule"], a["title"], str(CEF_SEVERITY.get(a["severity"], 0)))
    )
    return f"CEF:0|{head}|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext.items() if v)


def _send_syslog(target: str, messages: list[str]) -> None:
    proto, _, hostport = target.partition("://")
    host, _, port = hostport.rpartition(":")
    addr = (host.strip("[]") or "127.0.0.1", int(port or 514))
    try:
        if proto == "udp":
            with socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM) as s:
                for m in messages:
                    s.sendto(m.encode()[:65000], addr)
        else:
            with socket.create_connection(addr, timeout=10) as s:
                s.sendall(b"".join(f"{len(m.encode())} ".encode() + m.encode() for m in messages))
    except (OSError, ValueError) as e:
        raise ExportError(redact_text(f"{redact_url(target)}: {e}")) from e


def deliver(export: dict[str, Any], alerts: list[dict[str, Any]], client: httpx.Client,
            export_dir: Path | None = None) -> None:  # fmt: skip
    """Send one batch; raises ExportError when the target did not take it."""
    kind, fmt, target = export["kind"], export["format"], export["target"]
    shown = redact_url(target)
    if kind != "file" and not export.get("allow_private"):
        try:  # again at each delivery: a name that resolved to a public address may point inward now
            check_public_target(target)
        except BadRequest as e:
            raise ExportError(str(e)) from None
    if kind == "webhook":
        try:
            r = client.post(target, content=orjson.dumps({"alerts": [alert_document(a) for a in alerts]}),
                            headers={"content-type": "application/json"})
        except httpx.HTTPError as e:
            raise ExportError(redact_text(f"{shown}: {e}")) from e
        if not 200 <= r.status_code < 300:
            raise ExportError(f"{shown}: HTTP {r.status_code}")
    elif kind == "syslog":
        _send_syslog(target, [to_rfc5424(a, msg=to_cef(a) if fmt == "cef" else None) for a in alerts])
    else:
        lines = [to_cef(a) if fmt == "cef" else orjson.dumps(alert_document(a)).decode() for a in alerts]
        try:  # checked at each write: a link made since is not followed out
            dest = export_path(export_dir, target)
        except BadRequest as e:
            raise ExportError(str(e)) from None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with open(fd, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in lines))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            raise ExportError(f"{target}: {e.strerror}") from e


def pending(store: Store, export: dict[str, Any], limit: int = BATCH) -> list[dict[str, Any]]:
    wanted = [s for s in SEVERITIES if severity_at_least(s, export["min_severity"])]
    done = select(t.alert_exports.c.alert_id).where(
        and_(t.alert_exports.c.export_id == export["id"], t.alert_exports.c.alert_id == t.alerts.c.id)
    )
    with store.engine.connect() as con:
        rows = con.execute(
            select(t.alerts, t.clusters.c.name.label("cluster"))
            .select_from(t.alerts.join(t.clusters))
            .where(
                t.alerts.c.id > export["start_alert_id"],
                t.alerts.c.severity.in_(wanted),
                ~done.exists(),
            )
            .order_by(t.alerts.c.id)
            .limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]


def run_once(store: Store, client: httpx.Client, backoff: dict[int, tuple[float, float]],
             export_dir: Path | None = None) -> int:  # fmt: skip
    """One pass over the enabled exports; returns how many alerts were delivered."""
    sent = 0
    now = time.monotonic()
    with store.engine.connect() as con:
        exports = [dict(r._mapping) for r in con.execute(select(t.exports).where(t.exports.c.enabled.is_(True)))]
    for ex in exports:
        wait_until, delay = backoff.get(ex["id"], (0.0, 0.0))
        if now < wait_until:
            continue
        while True:
            batch = pending(store, ex)
            if not batch:
                break
            try:
                deliver(ex, batch, client, export_dir)
            except ExportError as e:
                delay = min(max(delay * 2, 1.0), 300.0)
                backoff[ex["id"]] = (time.monotonic() + delay, delay)
                log.warning("export %s: delivery failed, retrying in %.0f s: %s", redact_text(ex["name"]), delay, e)
                with store.engine.begin() as con:
                    con.execute(
                        update(t.exports)
                        .where(t.exports.c.id == ex["id"])
                        .values(failures=t.exports.c.failures + 1, last_error=str(e)[:1000])
                    )
                break
            backoff.pop(ex["id"], None)
            at = time.time()
            with store.engine.begin() as con:
                con.execute(
                    insert(t.alert_exports), [{"export_id": ex["id"], "alert_id": a["id"], "at": at} for a in batch]
                )
                con.execute(
                    update(t.exports)
                    .where(t.exports.c.id == ex["id"])
                    .values(delivered=t.exports.c.delivered + len(batch), last_ok_at=at, last_error="")
                )
            sent += len(batch)
            if len(batch) < BATCH:
                break
    return sent


async def export_loop(store: Store, interval: float, export_dir: Path | None = None) -> None:
    backoff: dict[int, tuple[float, float]] = {}
    with httpx.Client(timeout=10.0) as client:
        while True:
            try:
                await asyncio.to_thread(run_once, store, client, backoff, export_dir)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end the loop
                log.exception("export pass failed")
            await asyncio.sleep(interval)

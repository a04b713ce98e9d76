"""The indicator store the detection rules read (`stockade intel update`): threat-intelligence lists from public
publishers, normalised to one entry per line with a header naming the publisher and its revision.

| list | kind | from |
|---|---|---|
| tor-exits | cidr | SecOps-Institute/Tor-IP-Addresses `tor-exit-nodes.lst` |
| malicious-ips | cidr | stamparm/ipsum `levels/3.txt` (addresses on 3 or more blocklists) |
| c2-ips, c2-domains | cidr, domain | Neo23x0/signature-base `iocs/c2-iocs.txt` |
| mining-pools | domain | hoshsadiq/adblock-nocoin-list `hosts.txt` |

Sources are the publishers' repositories as archives or directories (`../shared/data/intel` offline), or, with
``online``, the same files fetched from the publishers. Each list is written whole to a temporary file and moved
into place, so a detector never reads half a list; an input that yields no entry for a list keeps the old one.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.model import StockadeError
from stockade.rules.lists import intel_dir

MAX_FILE = 64 * 1024**2  # a publisher's list over this is refused (bounded memory)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z]{2,63}$")


class IntelError(StockadeError):
    pass


def _ips(text: str) -> Iterator[str]:
    """Addresses and networks, one per line (the first field; comments dropped)."""
    for line in text.splitlines():
        f = line.split("#", 1)[0].strip().split()
        if not f:
            continue
        try:
            yield str(ipaddress.ip_network(f[0], strict=False))
        except ValueError:
            continue


def _hosts_domains(text: str) -> Iterator[str]:
    """Domains of a hosts file ("0.0.0.0 pool.example.com")."""
    for line in text.splitlines():
        f = line.split("#", 1)[0].split()
        if len(f) >= 2 and _DOMAIN.match(f[1].lower()):
            yield f[1].lower()


def _c2(text: str, want: str) -> Iterator[str]:
    """signature-base's c2-iocs.txt: ``value;comment``; IPs for "cidr", domains for "domain"."""
    for line in text.splitlines():
        value = line.split("#", 1)[0].split(";", 1)[0].strip().lower()
        if not value:
            continue
        try:
            ipaddress.ip_address(value)
            is_ip = True
        except ValueError:
            is_ip = False
        if (want == "cidr" and is_ip) or (want == "domain" and not is_ip and _DOMAIN.match(value)):
            yield value


@dataclass(frozen=True, slots=True)
class Feed:
    name: str  # the list's name in the store (tor-exits.txt)
    kind: str  # cidr, domain
    publisher: str  # archive / repository name: SecOps-Institute+Tor-IP-Addresses
    member: str  # the file inside it
    parse: Callable[[str], Iterator[str]]
    url: str  # where the publisher serves it


FEEDS = [
    Feed("tor-exits", "cidr", "SecOps-Institute+Tor-IP-Addresses", "tor-exit-nodes.lst", _ips,
         "https://raw.githubusercontent.com/SecOps-Institute/Tor-IP-Addresses/master/tor-exit-nodes.lst"),
    Feed("malicious-ips", "cidr", "stamparm+ipsum", "levels/3.txt", _ips,
         "https://raw.githubusercontent.com/stamparm/ipsum/master/levels/3.txt"),
    Feed("c2-ips", "cidr", "Neo23x0+signature-base", "iocs/c2-iocs.txt", lambda t: _c2(t, "cidr"),
         "https://raw.githubusercontent.com/Neo23x0/signature-base/master/iocs/c2-iocs.txt"),
    Feed("c2-domains", "domain", "Neo23x0+signature-base", "iocs/c2-iocs.txt", lambda t: _c2(t, "domain"),
         "https://raw.githubusercontent.com/Neo23x0/signature-base/master/iocs/c2-iocs.txt"),
    Feed("mining-pools", "domain", "hoshsadiq+adblock-nocoin-list", "hosts.txt", _hosts_domains,
         "https://raw.githubusercontent.com/hoshsadiq/adblock-nocoin-list/master/hosts.txt"),
]  # fmt: skip


@dataclass(slots=True)
class UpdateReport:
    written: dict[str, int] = field(default_factory=dict)  # list -> entries
    kept: list[str] = field(default_factory=list)  # lists no input held (the old file stays)
    revisions: dict[str, str] = field(default_factory=dict)  # publisher -> COMMIT


def _read_source(src: Path) -> tuple[str, dict[str, bytes]]:
    """(publisher, {member: bytes}) of an archive or directory in the publisher's repository layout."""
    files: dict[str, bytes] = {}
    if src.is_dir():
        publisher = src.name
        for p in src.rglob("*"):
            if p.is_file() and p.stat().st_size <= MAX_FILE:
                files[p.relative_to(src).as_posix()] = p.read_bytes()
        return publisher, files
    publisher = src.name.removesuffix(".tar.gz").removesuffix(".tgz")
    try:
        with tarfile.open(src, "r:*") as tf:
            for m in tf:
                if not m.isfile() or m.size > MAX_FILE:
                    continue
                fh = tf.extractfile(m)
                if fh is not None:
                    files[m.name.split("/", 1)[1] if "/" in m.name else m.name] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise IntelError(f"{src}: not a readable archive ({exc})") from None
    return publisher, files


def _write(dest: Path, feed: Feed, entries: list[str], revision: str) -> None:
    day = time.strftime("%Y-%m-%d")
    header = (f"# stockade indicator list {feed.name} ({feed.kind}): {len(entries)} entries\n"
              f"# from {feed.publisher} {feed.member} revision {revision or 'unknown'}, {day}\n")  # fmt: skip
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{feed.name}-", suffix=".part")
    with os.fdopen(fd, "w") as fh:
        fh.write(header + "".join(e + "\n" for e in entries))
    os.replace(tmp, dest)


def update(sources: list[Path], dest: Path | None = None, online: bool = False,
           fetch: Callable[[str], bytes] | None = None) -> UpdateReport:  # fmt: skip
    """Rebuild the store at ``dest`` (default: intel_dir()) from ``sources`` and, with ``online``, from the
    publishers (``fetch(url) -> bytes``; httpx by default)."""
    dest = dest or intel_dir()
    dest.mkdir(parents=True, exist_ok=True)
    by_publisher: dict[str, dict[str, bytes]] = {}
    for src in sources:
        if not src.exists():
            raise IntelError(f"{src}: no such file or directory")
        publisher, files = _read_source(src)
        by_publisher.setdefault(publisher, {}).update(files)
    if online:
        get = fetch or _http_get
        for feed in FEEDS:
            try:
                by_publisher.setdefault(feed.publisher, {})[feed.member] = get(feed.url)
            except IntelError as exc:
                raise IntelError(f"{feed.name}: {exc}") from None
    report = UpdateReport()
    for feed in FEEDS:
        files = by_publisher.get(feed.publisher, {})
        raw = files.get(feed.member)
        if raw is None:
            report.kept.append(feed.name)
            continue
        revision = files.get("COMMIT", b"").decode("utf-8", "replace").strip()[:40]
        report.revisions[feed.publisher] = revision
        entries = list(dict.fromkeys(feed.parse(raw.decode("utf-8", "replace"))))
        if not entries:
            report.kept.append(feed.name)
            continue
        _write(dest / f"{feed.name}.txt", feed, entries, revision)
        report.written[feed.name] = len(entries)
    return report


def _http_get(url: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=30.0, follow_redirects=True) as r:
            if r.status_code != 200:
                raise IntelError(f"{url}: HTTP {r.status_code}")
            buf = io.BytesIO()
            for chunk in r.iter_bytes():
                buf.write(chunk)
                if buf.tell() > MAX_FILE:
                    raise IntelError(f"{url}: over {MAX_FILE} bytes")
            return buf.getvalue()
    except httpx.HTTPError as exc:
        raise IntelError(f"{url}: {exc}") from None


def status(dest: Path | None = None) -> dict[str, dict[str, str | int]]:
    """Each list of the store: entries, age and the header's provenance line."""
    dest = dest or intel_dir()
    out: dict[str, dict[str, str | int]] = {}
    for feed in FEEDS:
        p = dest / f"{feed.name}.txt"
        if not p.is_file():
            continue
        lines = p.read_text().splitlines()
        out[feed.name] = {"entries": sum(1 for x in lines if x and not x.startswith("#")),
                          "from": lines[1].removeprefix("# from ") if len(lines) > 1 else "",
                          "age_days": int((time.time() - p.stat().st_mtime) // 86400)}  # fmt: skip
    return out


def refresh_loop(every_s: float, stop: Any, dest: Path | None = None,
                 fetch: Callable[[str], bytes] | None = None) -> int:  # fmt: skip
    """Refresh the store from the publishers every ``every_s`` seconds until ``stop`` (a threading.Event) is set:
    what `audit serve --intel-refresh-hours` runs beside the detector (which reloads the rules when the store
    changes). A failed refresh is logged and the old lists stay. Returns the refreshes that succeeded."""
    import logging

    log = logging.getLogger("stockade.intel")
    done = 0
    while not stop.is_set():
        try:
            rep = update([], dest, online=True, fetch=fetch)
            done += 1
            log.info("indicator store refreshed: %s", ", ".join(f"{k} {v}" for k, v in rep.written.items()))
        except IntelError as exc:
            log.warning("indicator store not refreshed (the old lists stay): %s", exc)
        stop.wait(every_s)
    return done

"""Build the store from feed archives or directories as published (repo layout kept, tar.gz or not)."""

from __future__ import annotations

import bz2
import gzip
import os
import posixpath
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

from stockade.model import StockadeError
from stockade.vulndb.feeds import enrich, kev, native, osv, oval, secdb
from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.store import Advisory, Writer

MAX_DOCUMENT = 512 * 1024**2
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(slots=True)
class SourceStats:
    name: str
    records: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.bad += 1
        if len(self.errors) < 50:
            self.errors.append(f"{where}: {message}")


@dataclass(slots=True)
class BuildReport:
    sources: dict[str, SourceStats] = field(default_factory=dict)
    skipped_files: int = 0
    warnings: list[str] = field(default_factory=list)  # inputs that gave no records: a layout not recognised

    def stats(self, name: str) -> SourceStats:
        return self.sources.setdefault(name, SourceStats(name))


def _kind(path: str) -> str | None:
    """Which parser a file needs, from its place in the published repository layout."""
    base = posixpath.basename(path)
    if base.endswith((".meta.json", ".part")) or base == "meta.json":
        return None  # the updater's bookkeeping
    if base == "known_exploited_vulnerabilities.json":
        return "kev"
    if re.search(r"(^|/)alpine/(v[\d.]+|edge)/(main|community)\.json$", path):
        return "secdb"
    if re.search(r"oval-definitions-[a-z]+\.xml(\.bz2)?$", path) and "/debian/" in f"/{path}":
        return "debian-oval"
    if re.search(r"com\.ubuntu\.[a-z]+\.usn\.oval\.xml(\.bz2)?$", path):
        return "ubuntu-oval"
    if re.search(r"(^|/)(redhat|rocky|alma|oracle)/[^/]+\.xml(\.bz2)?$", path):
        return "rpm-oval"
    if re.search(r"(^|/)advisories/(github-reviewed|unreviewed)/\d{4}/\d{2}/GHSA-[^/]+/GHSA-[^/]+\.json$", path):
        return "osv-json"  # GitHub's advisory-database repository, as users mirror it (OSV records)
    if path.endswith(".json") and (
        "/data/osv/" in f"/{path}"
        or "/osv-branch/" in f"/{path}"
        or "/advisories/almalinux" in f"/{path}"
        or "/osv/" in f"/{path}"
    ):
        return "osv-json"
    if path.endswith((".yaml", ".yml")) and "/vulns/" in f"/{path}":
        return "osv-yaml"
    if path.endswith(".yml") and "/gems/" in f"/{path}":
        return "rubysec"
    if path.endswith(".yaml") and path.count("/") >= 3 and "security-advisories" in path.split("/")[0]:
        return "friendsofphp"
    if path.endswith(".json") and "/vuln/npm/" in f"/{path}":
        return "nodejs-wg"
    if re.search(r"(^|/)data/(DSA|DLA)/list$", path):
        return "debian-dsa"
    if re.search(r"(^|/)epss/[^/]*\.csv(\.gz)?$", path):
        return "epss"
    if re.search(r"(^|/)nvd/[^/]+\.json$", path):
        return "nvd"
    if path.endswith(".json") and re.search(r"(^|/)osv-[^/]+/", path):  # osv.dev all.zip, unpacked by update
        return "osv-json"
    return None


def _source_name(path: str, origin: str) -> str:
    """A source is named after its archive or top directory (e.g. golang+vulndb), plus the OVAL release."""
    m_ub = re.search(r"com\.ubuntu\.([a-z]+)\.usn", path)
    if m_ub:
        return f"{origin}/ubuntu-{m_ub.group(1)}"
    if "debian/oval-definitions-" in path:
        return f"{origin}/debian-{path.rsplit('-', 1)[-1].split('.')[0]}"
    if "/alpine/" in f"/{path}":
        return f"{origin}/alpine"
    m_rpm = re.search(r"(redhat|rocky|alma|oracle)/([^/]+?)\.xml", path)
    if m_rpm:
        return f"{origin}/{m_rpm.group(1)}-{m_rpm.group(2).rsplit('-', 1)[-1]}"
    m = re.search(r"data/(DSA|DLA)/list$", path)
    if m:
        return f"{origin}/{m.group(1)}"
    first = path.split("/", 1)[0]
    return origin if first == origin or "/" not in path else f"{origin}/{first}"


def _file_opener(p: Path) -> Callable[[], IO[bytes]]:
    return lambda: p.open("rb")


def _member_opener(f: IO[bytes]) -> Callable[[], IO[bytes]]:
    return lambda: f


def _iter_zip(src: Path, prefix: str) -> Iterator[tuple[str, Callable[[], IO[bytes]], int]]:
    """osv.dev publishes each ecosystem as all.zip: members are read as 'osv-<name>/<member>'."""
    try:
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield f"{prefix}/{info.filename}", _zip_opener(zf, info), info.file_size
    except (zipfile.BadZipFile, OSError) as exc:
        raise StockadeError(f"{src}: corrupt zip archive ({exc})") from None


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: zf.open(info)


def _iter_input(src: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]], int]]:
    """(relative path, opener, size) for every regular file of a directory, a tar or a zip archive."""
    if src.is_dir():
        for root, _dirs, files in sorted(os.walk(src)):
            for f in sorted(files):
                p = Path(root) / f
                rel = p.relative_to(src).as_posix()
                if f.endswith(".zip"):
                    yield from _iter_zip(p, f"osv-{p.parent.name}")
                    continue
                yield rel, _file_opener(p), p.stat().st_size
        return
    if src.suffix == ".zip":
        yield from _iter_zip(src, f"osv-{src.stem}")
        return
    try:
        tf = tarfile.open(src, mode="r|*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise StockadeError(f"{src}: not a directory or a readable tar archive ({exc})") from None
    with tf:
        try:
            for m in tf:
                if not m.isreg():
                    continue
                member = tf.extractfile(m)
                if member is None:
                    continue
                yield m.name, _member_opener(member), m.size
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise StockadeError(f"{src}: corrupt archive ({exc})") from None


def _load(kind: str, data: bytes) -> Any:
    if kind in ("osv-yaml", "rubysec", "friendsofphp"):
        return yaml.load(data, Loader=_YAML_LOADER)
    return orjson.loads(data)


def build(inputs: list[Path], dest: Path, progress: Callable[[str], None] | None = None) -> BuildReport:
    """Import every feed found in ``inputs`` into a new database that replaces ``dest`` only when complete."""
    report = BuildReport()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".vuln-", suffix=".db.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    writer = Writer(tmp)
    try:
        for src in inputs:
            if not src.exists():
                raise StockadeError(f"{src}: no such file or directory")
            origin = src.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar")
            if progress:
                progress(origin)
            files = recognised = 0
            before = sum(st.records for st in report.sources.values())
            for path, opener, size in _iter_input(src):
                files += 1
                kind = _kind(path)
                if kind is None:
                    report.skipped_files += 1
                    continue
                recognised += 1
                stats = report.stats(_source_name(path, origin))
                if size > MAX_DOCUMENT:
                    stats.fail(path, f"{size} bytes, over the {MAX_DOCUMENT} limit")
                    continue
                try:
                    _import(kind, path, opener, stats, writer)
                except (
                    FeedError,
                    ValueError,
                    TypeError,
                    KeyError,
                    AttributeError,
                    yaml.YAMLError,
                    orjson.JSONDecodeError,
                    OSError,
                    EOFError,
                ) as exc:
                    stats.fail(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if sum(st.records for st in report.sources.values()) == before:
                why = (f"none of its {files} files is in a feed layout stockade reads" if not recognised
                       else f"{recognised} of its {files} files looked like feed files but held no valid record")
                report.warnings.append(f"{src}: 0 records imported: {why}")  # fmt: skip
        for st in report.sources.values():
            writer.source(st.name, st.records, st.bad, "", st.errors)
        writer.close()
        os.replace(tmp, dest)
    except BaseException:
        writer.con.close()
        tmp.unlink(missing_ok=True)
        raise
    return report


def _import(kind: str, path: str, opener: Callable[[], IO[bytes]], stats: SourceStats, writer: Writer) -> None:
    """One feed file into ``writer``; the bad entries of a file holding many are counted once it is read."""
    errors: list[str] = []
    _read_feed(kind, path, opener, stats, writer, errors)
    for e in errors:
        stats.fail(path, e)


def _read_feed(
    kind: str, path: str, opener: Callable[[], IO[bytes]], stats: SourceStats, writer: Writer, errors: list[str]
) -> None:
    def add(adv: Advisory) -> None:
        writer.add(adv)
        stats.records += 1

    if kind in ("ubuntu-oval", "rpm-oval", "debian-oval"):
        raw = opener()
        stream: IO[bytes] = bz2.BZ2File(raw) if path.endswith(".bz2") else raw
        if kind == "ubuntu-oval":
            advisories = oval.parse_ubuntu(stream, stats.name, errors)
        elif kind == "debian-oval":
            advisories = oval.parse_debian(stream, stats.name, errors)
        else:
            family = re.search(r"(redhat|rocky|alma|oracle)/", path).group(1)  # type: ignore[union-attr]
            release = re.search(r"-(\d+)\.xml", path)  # com.redhat.rhsa-RHEL9.xml, org.rockylinux.rlsa-9.xml
            advisories = oval.parse_rpm(stream, stats.name, family, errors, release.group(1) if release else "")
        for adv in advisories:
            add(adv)
        return
    data = opener().read()
    if kind == "epss":
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", "replace")
        scores = enrich.epss_csv(text, errors)
        writer.epss(scores)
        stats.records += len(scores)
        return
    if kind == "nvd":
        for adv in enrich.nvd_page(orjson.loads(data), stats.name, errors):
            add(adv)
        return
    if kind == "debian-dsa":
        for adv in native.debian_security_list(data.decode("utf-8", "replace"), stats.name, errors):
            add(adv)
        return
    doc = _load(kind, data)
    if kind == "kev":
        rows = kev.parse(doc, errors)
        writer.kev(rows)
        stats.records += len(rows)
    elif kind == "secdb":
        for adv in secdb.parse(doc, stats.name, errors):
            add(adv)
    elif kind == "rubysec":
        add(native.rubysec(doc, stats.name, path))
    elif kind == "friendsofphp":
        add(native.friendsofphp(doc, stats.name, path))
    elif kind == "nodejs-wg":
        add(native.nodejs_wg(doc, stats.name))
    else:
        add(osv.parse(doc, stats.name))

"""`stockade db update` against a local HTTP server that serves the real feed files from ../shared.

The server speaks what the publishers do: ETag and Last-Modified with 304s, Range with 206 and If-Range;
it also fails on purpose (a 503, and a transfer cut halfway) to exercise retries and resume.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SHARED

from stockade.vulndb.build import build
from stockade.vulndb.bundle import BundleError, export, import_bundle
from stockade.vulndb.store import VulnDB
from stockade.vulndb.update import Feed, Fetcher, update

VULN = SHARED / "data" / "vuln"


def _member(archive: str, name: str) -> bytes:
    with tarfile.open(VULN / archive) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def _go_zip(limit: int = 300) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(VULN / "golang+vulndb.tar.gz") as tf, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        n = 0
        for m in tf:
            if m.name.endswith(".json") and "/data/osv/GO-" in m.name and n < limit:
                zf.writestr(m.name.rsplit("/", 1)[-1], tf.extractfile(m).read())  # type: ignore[union-attr]
                n += 1
    return buf.getvalue()


class Server(ThreadingHTTPServer):
    files: dict[str, bytes]
    log: list[tuple[str, str, int]]
    faults: dict[str, list[str]]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *_a: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        body = self.server.files.get(path)
        if body is None:
            return self._reply(404, b"")
        faults = self.server.faults.get(path, [])
        fault = faults.pop(0) if faults else ""
        if fault == "503":
            return self._reply(503, b"busy")
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            return self._reply(304, b"", etag)
        rng = self.headers.get("Range")
        if rng and self.headers.get("If-Range", etag) == etag:
            start = int(rng.split("=")[1].split("-")[0])
            part = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(part)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(part)
            self.server.log.append((path, "206", len(part)))
            return
        if path.startswith("/nvd"):
            body = self._nvd_page(int(self.path.split("startIndex=")[1].split("&")[0]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.log.append((path, "cut", len(body) // 2))
            self.connection.close()
            return
        self.wfile.write(body)
        self.server.log.append((path, "200", len(body)))

    def _nvd_page(self, start: int) -> bytes:
        cves = [
            {
                "cve": {
                    "id": "CVE-2019-1547",
                    "descriptions": [{"lang": "en", "value": "OpenSSL ECDSA side channel"}],
                    "metrics": {
                        "cvssMetricV31": [
                            {
                                "type": "Primary",
                                "cvssData": {
                                    "vectorString": "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N",
                                    "baseScore": 4.7,
                                    "baseSeverity": "MEDIUM",
                                },
                            }
                        ]
                    },
                }
            },
            {
                "cve": {
                    "id": "CVE-2021-30139",
                    "descriptions": [{"lang": "en", "value": "apk-tools OOB read"}],
                    "metrics": {
                        "cvssMetricV31": [
                            {
                                "type": "Primary",
                                "cvssData": {
                                    "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
                                    "baseScore": 7.5,
                                    "baseSeverity": "HIGH",
                                },
                            }
                        ]
                    },
                }
            },
        ]
        page = cves[start : start + 1]
        return json.dumps(
            {
                "resultsPerPage": 1,
                "startIndex": start,
                "totalResults": len(cves),
                "format": "NVD_CVE",
                "version": "2.0",
                "vulnerabilities": page,
            }
        ).encode()

    def _reply(self, code: int, body: bytes, etag: str = "") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)
        self.server.log.append((self.path, str(code), len(body)))


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.files = {
        "/osv/Go/all.zip": _go_zip(),
        "/alpine/v3.11/main.json": _member("pschou+oval.tar.gz", "pschou+oval/alpine/v3.11/main.json"),
        "/debian/bookworm.xml.bz2": _member(
            "pschou+oval.tar.gz", "pschou+oval/debian/oval-definitions-bookworm.xml.bz2"
        ),
        "/kev.json": _member("cisagov+kev-data.tar.gz", "cisagov+kev-data/known_exploited_vulnerabilities.json"),
        "/epss.csv.gz": gzip.compress(
            b"#model_version:v2023.03.01,score_date:2026-11-20T00:00:00+0000\n"
            b"cve,epss,percentile\nCVE-2021-0001,not a score,0.5\nCVE-2021-30139,0.00500,0.71200\n"
        ),
        "/nvd": b"{}",
    }
    srv.log = []
    srv.faults = {"/osv/Go/all.zip": ["cut"], "/kev.json": ["503"]}
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _feeds(srv: Server) -> list[Feed]:
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    return [
        Feed("osv-Go", f"{base}/osv/Go/all.zip", "osv/Go/all.zip"),
        Feed("alpine-v3.11-main", f"{base}/alpine/v3.11/main.json", "alpine/v3.11/main.json"),
        Feed("debian-oval-bookworm", f"{base}/debian/bookworm.xml.bz2", "debian/oval-definitions-bookworm.xml.bz2"),
        Feed("kev", f"{base}/kev.json", "kev/known_exploited_vulnerabilities.json"),
        Feed("epss", f"{base}/epss.csv.gz", "epss/epss_scores-current.csv.gz"),
        Feed("nvd", f"{base}/nvd", "nvd", paged="nvd"),
    ]


def test_update_downloads_retries_resumes_then_only_revalidates(server: Server, tmp_path: Path) -> None:
    fetcher = Fetcher(tmp_path / "feeds", sleep=lambda _s: None)
    first = update(_feeds(server), tmp_path / "feeds", fetcher)
    assert [r.status for r in first] == ["downloaded"] * 6, first
    assert ("/osv/Go/all.zip", "cut", len(server.files["/osv/Go/all.zip"]) // 2) in server.log
    assert any(p == "/osv/Go/all.zip" and code == "206" for p, code, _ in server.log)  # resumed, not restarted
    assert ("/kev.json", "503", 4) in server.log
    assert (tmp_path / "feeds/osv/Go/all.zip").read_bytes() == server.files["/osv/Go/all.zip"]

    rep = build([tmp_path / "feeds"], tmp_path / "vuln.db")
    assert rep.sources["feeds/osv-Go"].records + rep.sources["feeds/osv-Go"].bad == 300  # bad: withdrawn records
    assert rep.sources["feeds/alpine"].records > 100
    assert rep.sources["feeds/debian-bookworm"].records > 20000
    db = VulnDB(tmp_path / "vuln.db")
    assert db.kev("CVE-2021-44228")
    assert db.epss("CVE-2021-30139") == pytest.approx(0.005)  # the row after a bad one
    assert db.epss("CVE-2021-0001") is None and rep.sources["feeds/epss"].bad == 1
    assert db.vuln("CVE-2021-30139")["severity"] == "HIGH"  # from the NVD page

    server.log.clear()
    second = update(_feeds(server)[:5], tmp_path / "feeds", fetcher)
    assert [r.status for r in second] == ["not modified"] * 5
    assert {code for _, code, _ in server.log} == {"304"}

    server.files["/kev.json"] = server.files["/kev.json"].replace(b"CVE-2021-44228", b"CVE-2021-44229")
    third = update(_feeds(server)[:5], tmp_path / "feeds", fetcher)
    assert [r.status for r in third] == ["not modified"] * 3 + ["downloaded", "not modified"]
    fetcher.close()


def test_scan_severity_comes_from_nvd_when_the_distro_gives_none(
    server: Server, tmp_path: Path, fixtures_dir: Path
) -> None:
    from stockade.inventory import catalog_image
    from stockade.match.matcher import match

    update(_feeds(server), tmp_path / "feeds", Fetcher(tmp_path / "feeds", sleep=lambda _s: None))
    build([tmp_path / "feeds"], tmp_path / "vuln.db")
    inv = catalog_image(str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz"))
    found = {f.vuln_id: f for f in match(inv, VulnDB(tmp_path / "vuln.db"))}
    assert found["CVE-2021-30139"].severity == "HIGH" and found["CVE-2021-30139"].cvss_score == 7.5
    assert found["CVE-2021-30139"].epss == pytest.approx(0.005)


def test_failing_feed_is_reported_not_fatal(tmp_path: Path, server: Server) -> None:
    server.faults["/alpine/v3.11/main.json"] = ["503"] * 10
    results = update(
        _feeds(server)[1:2], tmp_path / "feeds", Fetcher(tmp_path / "feeds", retries=2, sleep=lambda _s: None)
    )
    assert results[0].status == "failed" and "HTTP 503 after 3 tries" in results[0].detail


def test_bundle_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    feed = tmp_path / "feed" / "vulns" / "x"
    feed.mkdir(parents=True)
    (feed / "A-1.yaml").write_text(
        "id: A-1\naffected:\n- package: {name: flask, ecosystem: PyPI}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}, {fixed: '2.0'}]}]\n"
    )
    build([tmp_path / "feed"], tmp_path / "src.db")
    bundle = tmp_path / "vuln.tar.zst"
    digest = export(tmp_path / "src.db", bundle)
    assert (tmp_path / "vuln.tar.zst.sha256").read_text().startswith(digest)
    manifest = import_bundle(bundle, tmp_path / "dst.db", digest)
    assert manifest["sha256"] == hashlib.sha256((tmp_path / "src.db").read_bytes()).hexdigest()
    assert [v for v, _ in VulnDB(tmp_path / "dst.db").affected("pypi", "", "flask")] == ["A-1"]
    with pytest.raises(BundleError, match="digest does not match"):
        import_bundle(bundle, tmp_path / "dst.db", "0" * 64)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.tar.zst").write_bytes(bytes(data))
    before = (tmp_path / "dst.db").read_bytes()
    with pytest.raises(BundleError):
        import_bundle(tmp_path / "bad.tar.zst", tmp_path / "dst.db")
    assert (tmp_path / "dst.db").read_bytes() == before

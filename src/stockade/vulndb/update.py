"""Fetch feeds from their publishers, then rebuild the store from the local copies.

Each download is conditional (ETag / If-Modified-Since: an unchanged feed costs one 304), retried with
backoff on connection errors, 429 and 5xx, and resumed with a Range request when a transfer breaks.
Files land in a feed directory laid out the way `stockade db build` reads it, so an air-gapped mirror
is just a copy of that directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from stockade.model import StockadeError

OSV = "https://osv-vulnerabilities.storage.googleapis.com"
OSV_ECOSYSTEMS = [
    "PyPI",
    "Go",
    "crates.io",
    "npm",
    "Maven",
    "NuGet",
    "RubyGems",
    "Packagist",
    "AlmaLinux",
    "Rocky Linux",
    "Debian",
    "Ubuntu",
    "Alpine",
    "GHSA",
]
ALPINE_BRANCHES = ["v3.17", "v3.18", "v3.19", "v3.20", "v3.21", "v3.22", "edge"]
DEBIAN_RELEASES = ["bullseye", "bookworm", "trixie"]


@dataclass(frozen=True, slots=True)
class Feed:
    name: str
    url: str
    path: str  # where it is stored under the feed directory (the layout `db build` recognises)
    paged: str = ""  # "nvd": the NVD API's startIndex/resultsPerPage paging


def default_feeds() -> list[Feed]:
    feeds = [
        Feed(f"osv-{e}", f"{OSV}/{e.replace(' ', '%20')}/all.zip", f"osv/{e.replace(' ', '-')}/all.zip")
        for e in OSV_ECOSYSTEMS
    ]
    for b in ALPINE_BRANCHES:
        for repo in ("main", "community"):
            feeds.append(
                Feed(f"alpine-{b}-{repo}", f"https://secdb.alpinelinux.org/{b}/{repo}.json", f"alpine/{b}/{repo}.json")
            )
    for r in DEBIAN_RELEASES:
        feeds.append(
            Feed(
                f"debian-oval-{r}",
                f"https://www.debian.org/security/oval/oval-definitions-{r}.xml.bz2",
                f"debian/oval-definitions-{r}.xml.bz2",
            )
        )
    feeds.append(
        Feed(
            "kev",
            "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
            "kev/known_exploited_vulnerabilities.json",
        )
    )
    feeds.append(Feed("epss", "https://epss.cyentia.com/epss_scores-current.csv.gz", "epss/epss_scores-current.csv.gz"))
    feeds.append(Feed("nvd", "https://services.nvd.nist.gov/rest/json/cves/2.0", "nvd", paged="nvd"))
    return feeds


def load_feeds(path: Path) -> list[Feed]:
    """A feeds file (YAML or JSON list of {name, url, path[, paged]}) replacing the defaults."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StockadeError(f"{path}: unreadable feeds file ({exc})") from None
    if not isinstance(doc, list) or not all(isinstance(f, dict) and {"name", "url", "path"} <= set(f) for f in doc):
        raise StockadeError(f"{path}: expected a list of {{name, url, path}} entries")
    return [Feed(str(f["name"]), str(f["url"]), str(f["path"]), str(f.get("paged", ""))) for f in doc]


@dataclass(slots=True)
class FetchResult:
    feed: str
    status: str  # "downloaded", "not modified", "failed"
    bytes: int = 0
    detail: str = ""


@dataclass
class Fetcher:
    root: Path
    retries: int = 4
    backoff: float = 0.5
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            timeout=self.timeout, follow_redirects=True, headers={"User-Agent": "stockade-db-update", **self.headers}
        )

    def close(self) -> None:
        self.http.close()

    def _meta_path(self, dest: Path) -> Path:
        return dest.with_name(dest.name + ".meta.json")

    def fetch(self, feed: Feed) -> FetchResult:
        dest = self.root / feed.path
        if feed.paged == "nvd":
            return self._fetch_nvd(feed, dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        meta_path = self._meta_path(dest)
        meta: dict[str, Any] = orjson.loads(meta_path.read_bytes()) if meta_path.is_file() else {}
        part = dest.with_name(dest.name + ".part")
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            headers: dict[str, str] = {}
            if dest.is_file() and meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if dest.is_file() and meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
            offset = part.stat().st_size if part.is_file() else 0
            if offset and meta.get("partial_etag"):
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = meta["partial_etag"]
            try:
                with self.http.stream("GET", feed.url, headers=headers) as resp:
                    if resp.status_code == 304:
                        return FetchResult(feed.name, "not modified")
                    if resp.status_code == 429 or resp.status_code >= 500:
                        last_error = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code >= 400:
                        return FetchResult(feed.name, "failed", detail=f"HTTP {resp.status_code} for {feed.url}")
                    mode = "ab" if resp.status_code == 206 else "wb"
                    etag = resp.headers.get("etag", "")
                    meta["partial_etag"] = etag
                    meta_path.write_bytes(orjson.dumps(meta))
                    with part.open(mode) as out:
                        for chunk in resp.iter_bytes():  # as it arrives: a broken transfer keeps what came
                            out.write(chunk)
                    expected = resp.headers.get("content-length")
                    got = part.stat().st_size - (offset if mode == "ab" else 0)
                    if expected is not None and got != int(expected):
                        last_error = f"short transfer ({got} of {expected} bytes)"
                        continue
                    os.replace(part, dest)
                    meta = {
                        "etag": etag,
                        "last_modified": resp.headers.get("last-modified", ""),
                        "fetched_at": datetime.now(UTC).isoformat(),
                        "url": feed.url,
                    }
                    meta_path.write_bytes(orjson.dumps(meta))
                    return FetchResult(feed.name, "downloaded", dest.stat().st_size)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
        return FetchResult(feed.name, "failed", detail=f"{feed.url}: {last_error} after {self.retries + 1} tries")

    def _fetch_nvd(self, feed: Feed, dest_dir: Path) -> FetchResult:
        """All pages of the NVD CVE API (incrementally from the last fetch when there was one)."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        meta_path = dest_dir / "meta.json"
        meta: dict[str, Any] = orjson.loads(meta_path.read_bytes()) if meta_path.is_file() else {}
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000")
        params: dict[str, Any] = {"resultsPerPage": 2000}
        if meta.get("last_fetch"):
            params |= {"lastModStartDate": meta["last_fetch"], "lastModEndDate": started}
        index, total, size = 0, None, 0
        stamp = started.replace(":", "").replace(".", "")
        while total is None or index < total:
            last_error = ""
            for attempt in range(self.retries + 1):
                if attempt:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    resp = self.http.get(feed.url, params=params | {"startIndex": index})
                except httpx.HTTPError as exc:
                    last_error = str(exc)
                    continue
                if resp.status_code in (403, 429) or resp.status_code >= 500:
                    last_error = f"HTTP {resp.status_code}"
                    continue
                break
            else:
                return FetchResult(feed.name, "failed", size, f"{feed.url}: {last_error}")
            if resp.status_code != 200:
                return FetchResult(feed.name, "failed", size, f"HTTP {resp.status_code} for {feed.url}")
            try:
                doc = resp.json()
                total = int(doc["totalResults"])
                count = len(doc["vulnerabilities"])
            except (ValueError, KeyError, TypeError):
                return FetchResult(feed.name, "failed", size, f"{feed.url}: not an NVD API 2.0 response")
            (dest_dir / f"{stamp}-{index:07d}.json").write_bytes(resp.content)
            size += len(resp.content)
            if count == 0:
                break
            index += count
        meta_path.write_bytes(orjson.dumps({"last_fetch": started}))
        return FetchResult(feed.name, "downloaded", size)


def update(
    feeds: list[Feed], root: Path, fetcher: Fetcher | None = None, progress: Callable[[FetchResult], None] | None = None
) -> list[FetchResult]:
    own = fetcher is None
    f = fetcher or Fetcher(root)
    try:
        results = []
        for feed in feeds:
            r = f.fetch(feed)
            results.append(r)
            if progress:
                progress(r)
        return results
    finally:
        if own:
            f.close()


@dataclass(slots=True)
class Refresh:
    """What ``stockade db update`` did: each feed's fetch, and whether the database was rebuilt (from how many
    sources)."""

    results: list[FetchResult]
    rebuilt: bool = False
    sources: int = 0

    @property
    def failed(self) -> list[FetchResult]:
        return [r for r in self.results if r.status == "failed"]


def refresh(dest: Path, feed_dir: Path | None = None, feeds_file: Path | None = None, only: list[str] | None = None,
            progress: Callable[[FetchResult], None] | None = None) -> Refresh:  # fmt: skip
    """Fetch the feeds (the defaults, or those of ``feeds_file``; ``only`` by name) into ``feed_dir`` (default:
    next to the database) and rebuild the database at ``dest`` unless every feed was unchanged."""
    from stockade.vulndb.build import build

    root = feed_dir or dest.parent / "feeds"
    chosen = load_feeds(feeds_file) if feeds_file else default_feeds()
    if only:
        chosen = [f for f in chosen if f.name in set(only)]
    out = Refresh(update(chosen, root, progress=progress))
    if out.failed and len(out.failed) == len(out.results) and not dest.exists():
        raise StockadeError("no feed could be fetched")
    if dest.exists() and all(r.status == "not modified" for r in out.results):
        return out
    out.sources = len(build([root], dest).sources)
    out.rebuilt = True
    return out

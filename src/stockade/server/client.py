"""Client side of ingestion, used by the agent, the sensor, the audit collector, the admission webhook and
`stockade scan --server`: batches with ids (a retry never duplicates), retries with backoff on 429, 5xx and
connection errors, and a background publisher with a bounded queue."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from stockade.model import ScanResult, StockadeError

log = logging.getLogger("stockade.client")


class PublishError(StockadeError):
    pass


class Client:
    """Talks to one stockade server as one cluster (or as a user, for scans)."""

    def __init__(
        self,
        server: str,
        token: str,
        cluster: str = "",
        ca: Path | None = None,
        timeout: float = 30.0,
        tries: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise PublishError(f"--server {server!r}: give the server's http(s) URL")
        if not token:
            raise PublishError("no token: set STOCKADE_TOKEN (or --token-file) to the token the server issued")
        self.base = server.rstrip("/")
        self.cluster = cluster
        self.tries = tries
        self.sleep = sleep
        verify: Any = str(ca) if ca else True
        self.http = httpx.Client(
            timeout=timeout, verify=verify, headers={"authorization": f"Bearer {token}", "user-agent": "stockade"}
        )

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = orjson.dumps(body)
        delay = 0.5
        last = ""
        for attempt in range(self.tries):
            try:
                r = self.http.post(self.base + path, content=data, headers={"content-type": "application/json"})
            except httpx.HTTPError as e:
                last = f"{self.base}: {e}"
            else:
                if r.status_code < 300:
                    result: dict[str, Any] = r.json()
                    return result
                try:
                    msg = r.json().get("error") or r.json().get("detail") or r.text
                except ValueError:
                    msg = r.text
                last = f"{self.base}{path}: HTTP {r.status_code}: {str(msg)[:300]}"
                if r.status_code not in (429, 502, 503, 504) and r.status_code < 500:
                    raise PublishError(last)  # our mistake or no permission: retrying will not help
                retry_after = r.headers.get("retry-after")
                if retry_after and retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            if attempt + 1 < self.tries:
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise PublishError(f"gave up after {self.tries} tries: {last}")

    def send(self, kind: str, items: list[dict[str, Any]], component: str = "", batch: str | None = None) -> Any:
        """One batch for this cluster; the batch id stays the same across retries."""
        if not self.cluster:
            raise PublishError("--cluster: name the cluster this collector reports for")
        body = {"batch": batch or uuid.uuid4().hex, "items": items}
        if component:
            body["component"] = component
        return self._post(f"/api/v1/clusters/{self.cluster}/ingest/{kind}", body)

    def send_scans(self, scans: list[dict[str, Any]]) -> Any:
        return self._post("/api/v1/scans", {"items": scans})


class ServerProfiles:
    """The learned profiles of audit/profile.py kept in the server's database, per cluster (``--profiles
    server``): loaded when the collector starts, each flush one write; a reset made on the server comes back in
    the write's answer. A write that fails is kept by Profiles and retried at the next flush (few tries here: the
    detector waits on it)."""

    def __init__(self, client: Client) -> None:
        if not client.cluster:
            raise PublishError("--cluster: name the cluster whose profiles these are")
        self.client = client
        self.url = f"{client.base}/api/v1/clusters/{quote(client.cluster, safe='')}/profiles"
        self.since = 0.0  # the server's time at the last answer: resets made after it are news

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        from stockade.audit.profile import ProfileError

        try:
            r = self.client.http.request(method, url, content=orjson.dumps(body) if body is not None else None,
                                         headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            raise ProfileError(f"{self.client.base}: profiles: {e}") from None
        if r.status_code >= 300 and r.status_code != 404:
            try:
                msg = r.json().get("error") or r.json().get("detail") or r.text
            except ValueError:
                msg = r.text
            raise ProfileError(f"{url}: HTTP {r.status_code}: {str(msg)[:300]}")
        return r

    def load(self) -> tuple[list[tuple[str, float, float, bool]], list[tuple[str, str, str]]]:
        from stockade.audit.profile import ProfileError

        r = self._call("GET", self.url + "?full=true")
        if r.status_code == 404:
            raise ProfileError(f"{self.url}: HTTP 404: {r.text[:300]}")
        d = r.json()
        self.since = float(d.get("now", 0.0))
        return ([(str(i), float(f), float(la), bool(v)) for i, f, la, v in d.get("identities", [])],
                [(str(i), str(dim), str(v)) for i, dim, v in d.get("values", [])])  # fmt: skip

    def save(self, identities: list[tuple[str, float, float, int]], values: list[tuple[str, str, str, float]]
             ) -> list[str]:  # fmt: skip
        from stockade.audit.profile import ProfileError

        reset: list[str] = []
        step = 20_000  # the server's MAX_PROFILE_ROWS
        for i in range(0, max(len(identities), len(values), 1), step):
            body = {"since": self.since, "identities": [list(x) for x in identities[i : i + step]],
                    "values": [list(x) for x in values[i : i + step]]}  # fmt: skip
            r = self._call("POST", self.url, body)
            if r.status_code == 404:
                raise ProfileError(f"{self.url}: HTTP 404: {r.text[:300]}")
            d = r.json()
            self.since = float(d.get("now", self.since))
            reset += [str(x) for x in d.get("reset", [])]
        return reset

    def delete(self, identity: str) -> bool:
        return self._call("DELETE", f"{self.url}/{quote(identity, safe='')}").status_code < 300

    def close(self) -> None:
        self.client.close()


class Publisher:
    """Sends alerts (or violations) in the background: every ``interval`` seconds or ``batch`` items; when the
    queue is full, new items are dropped and counted rather than blocking the detector."""

    def __init__(
        self, client: Client, kind: str, component: str, size: int = 50_000, batch: int = 500, interval: float = 1.0
    ) -> None:
        self.client, self.kind, self.component = client, kind, component
        self.q: queue.Queue[dict[str, Any]] = queue.Queue(size)
        self.batch, self.interval = batch, interval
        self.heartbeat_s = 60.0
        self.sent = self.dropped = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{kind}", daemon=True)
        self._thread.start()

    def put(self, items: list[dict[str, Any]]) -> None:
        for it in items:
            try:
                self.q.put_nowait(it)
            except queue.Full:
                self.dropped += 1

    def _drain(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < self.batch:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                break
        return out

    def _run(self) -> None:
        last = 0.0  # a heartbeat first, then one whenever nothing was sent for heartbeat_s
        while not self._stop.is_set() or not self.q.empty():
            items = self._drain()
            if not items:
                if time.monotonic() - last > self.heartbeat_s:
                    try:
                        self.client.send("heartbeat", [], self.component)
                        last = time.monotonic()
                    except PublishError as e:
                        log.error("heartbeat failed: %s", e)
                self._stop.wait(self.interval)
                continue
            try:
                self.client.send(self.kind, items, self.component)
                self.sent += len(items)
                last = time.monotonic()
            except PublishError as e:
                self.failed += len(items)
                log.error("could not publish %d %s: %s", len(items), self.kind, e)

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.client.close()
        return {"sent": self.sent, "dropped": self.dropped, "failed": self.failed}


def scan_sender(server: str, token: str, refs: list[str] | None = None) -> Callable[[ScanResult], None]:
    """What ``stockade scan --server`` does with a scan: sent to the server under ``refs`` (default: the image
    argument) with a contributor's token."""

    def send(result: ScanResult) -> None:
        client = Client(server, token)
        try:
            docs = [scan_document(r, result.inventory, result.findings, result.db_built_at)
                    for r in refs or [result.image]]  # fmt: skip
            client.send_scans(docs)
        finally:
            client.close()

    return send


def scan_document(ref: str, inv: Any, findings: list[Any], db_built_at: str) -> dict[str, Any]:
    """What the server stores of one scan: the findings and the inventory (to rematch on database updates)."""
    inv_d = inv.to_dict()
    return {
        "ref": ref,
        "digest": (inv.repo_digests[0].split("@", 1)[-1] if inv.repo_digests else ""),
        "os": inv.os.pretty_name or f"{inv.os.family} {inv.os.name}" if inv.os else "",
        "scanned_at": time.time(),
        "db_built_at": db_built_at,
        "inventory": {"source": inv_d["source"], "os": inv_d["os"], "packages": inv_d["packages"]},
        "findings": [f.to_dict() for f in findings],
    }

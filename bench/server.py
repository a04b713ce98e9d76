"""Benchmark: sustained ingestion into the stockade server on loopback, then a crash test, on SQLite and on
PostgreSQL, with one and with two worker processes, in one run.

For each database and worker count: the server runs as its own process (`stockade server --workers N`) on a fresh
database, a cluster is registered, and sender processes (2 per worker) post alert batches (500 alerts, each a new
dedup key, the alerts of the real demo trace as templates) for --seconds; then scans (1,000 findings each) for a
tenth of that. Prints alerts/s and findings/s acknowledged, and the best of each database.

Crash test (for each database, at the largest worker count): senders post again, the server and its workers are
killed with SIGKILL mid-stream and restarted; each sender retries the batch it had in flight with the same batch id
(as stockade's collectors do) until the server answers. Then prints what the senders saw acknowledged and what the
database holds: they must be equal.

There is no anchor to run beside it (Defender's back end is a cloud service); the goals are 5,000 alerts/s on
SQLite and more on PostgreSQL. On this benchmark's one machine the senders and PostgreSQL share the cores with the
server.

Usage: python bench/server.py [--seconds 60] [--workers 1,2] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def templates() -> list[dict[str, Any]]:
    from stockade.server.demo import audit_alerts, sensor_alerts

    return audit_alerts(time.time()) + sensor_alerts()


def sender(base: str, cluster: str, token: str, until: float, crash_mode: bool, out: Any) -> None:
    """Post alert batches until ``until``; report (acknowledged alerts, batches, 429s)."""
    tmpl = templates()
    acked = batches = busy = 0
    me = uuid.uuid4().hex[:8]
    url = f"{base}/api/v1/clusters/{cluster}/ingest/alerts"
    with httpx.Client(headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
                      timeout=30) as http:  # fmt: skip
        seq = 0
        while time.monotonic() < until:
            items = []
            for _ in range(BATCH):
                a = dict(tmpl[seq % len(tmpl)])
                a["dedup_key"] = f"{me}-{seq}"
                a["count"] = 1
                items.append(a)
                seq += 1
            body = orjson.dumps({"batch": f"{me}-{batches}", "items": items, "component": "sensor"})
            while True:  # the same batch until it is acknowledged (across a crash)
                try:
                    r = http.post(url, content=body)
                except httpx.HTTPError:
                    if not crash_mode:
                        raise
                    time.sleep(0.2)
                    continue
                if r.status_code == 429:
                    busy += 1
                    time.sleep(float(r.headers.get("retry-after", "1")) / 10)
                    continue
                if r.status_code >= 500 and crash_mode:
                    time.sleep(0.2)
                    continue
                r.raise_for_status()
                acked += BATCH
                batches += 1
                break
    out.put((acked, batches, busy))


def scan_sender(base: str, token: str, until: float, out: Any) -> None:
    findings = [
        {"id": f"CVE-2024-{i:05d}", "package": f"pkg{i % 300}", "ecosystem": "deb", "installed_version": "1.0-1",
         "fixed_version": "1.0-2" if i % 3 else "", "severity": ("CRITICAL", "HIGH", "MEDIUM", "LOW")[i % 4],
         "cvss_score": 7.5, "title": "benchmark finding"}
        for i in range(1000)
    ]  # fmt: skip
    n = 0
    with httpx.Client(headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
        while time.monotonic() < until:
            ref = f"bench.local/app{n % 50}:{n}"
            r = http.post(f"{base}/api/v1/scans", json={"items": [{"ref": ref, "findings": findings}]})
            r.raise_for_status()
            n += 1
    out.put(n * len(findings))


class Server:
    def __init__(self, url: str, port: int, log: Path, workers: int) -> None:
        self.url, self.port, self.log, self.workers = url, port, log, workers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "STOCKADE_DATABASE_URL": self.url, "STOCKADE_ADMIN_PASSWORD": "bench-password"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.cli.main", "server", "--port", str(self.port), "--max-inflight", "4",
             "--workers", str(self.workers)],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches the workers too
        )  # fmt: skip
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start; see {self.log}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def cli(url: str, *args: str) -> str:
    env = {**os.environ, "STOCKADE_DATABASE_URL": url, "STOCKADE_PASSWORD": "bench-password"}
    return subprocess.run([sys.executable, "-m", "stockade.cli.main", "server", *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def stored(url: str, cluster: str) -> int:
    from sqlalchemy import func, select

    from stockade.server import db

    engine = db.make_engine(url)
    with engine.connect() as con:
        n = con.execute(
            select(func.coalesce(func.sum(db.alerts.c.count), 0))
            .select_from(db.alerts.join(db.clusters))
            .where(db.clusters.c.name == cluster)
        ).scalar_one()
    engine.dispose()
    return int(n)


def run_senders(n: int, base: str, cluster: str, token: str, seconds: float, crash: bool) -> tuple[int, int, int]:
    q: Any = mp.Queue()
    until = time.monotonic() + seconds
    ps = [mp.Process(target=sender, args=(base, cluster, token, until, crash, q)) for _ in range(n)]
    for p in ps:
        p.start()
    return_values = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return (sum(r[0] for r in return_values), sum(r[1] for r in return_values), sum(r[2] for r in return_values))


def bench(backend: str, url: str, seconds: float, workers: int, crash: bool, work: Path) -> float:
    """Alerts/s acknowledged by a server with ``workers`` processes on this database (then findings/s, crash test)."""
    senders = 2 * workers
    print(f"\n== {backend}, {workers} worker process(es), {senders} senders ==", flush=True)
    cli(url, "migrate")
    port = _port()
    base = f"http://127.0.0.1:{port}"
    server = Server(url, port, work / f"{backend}-{workers}.log", workers)
    server.start()
    try:
        token = cli(url, "cluster-add", "bench")
        t0 = time.monotonic()
        acked, batches, busy = run_senders(senders, base, "bench", token, seconds, crash=False)
        dt = time.monotonic() - t0
        rate = acked / dt
        print(f"alerts: {acked:,} acknowledged in {dt:.1f} s = {rate:,.0f} alerts/s "
              f"({batches:,} batches of {BATCH}, {busy} answered 429)", flush=True)  # fmt: skip
        cli(url, "user-add", "bench-ci", "--role", "contributor")
        user_token = cli(url, "token", "bench-ci")
        q: Any = mp.Queue()
        scan_s = max(seconds / 10, 5)
        t0 = time.monotonic()
        p = mp.Process(target=scan_sender, args=(base, user_token, time.monotonic() + scan_s, q))
        p.start()
        nfind = q.get()
        p.join()
        dt = time.monotonic() - t0
        print(f"findings: {nfind:,} stored in {dt:.1f} s = {nfind / dt:,.0f} findings/s (scans of 1,000)", flush=True)
        if not crash:
            return rate
        ctoken = cli(url, "cluster-add", "crash")
        q2: Any = mp.Queue()
        until = time.monotonic() + 12
        ps = [mp.Process(target=sender, args=(base, "crash", ctoken, until, True, q2)) for _ in range(senders)]
        for p in ps:
            p.start()
        time.sleep(4)
        server.kill9()
        print("server and workers killed with SIGKILL mid-stream; restarting", flush=True)
        time.sleep(1)
        server.start()
        results = [q2.get() for _ in ps]
        for p in ps:
            p.join()
        acked = sum(r[0] for r in results)
        held = stored(url, "crash")
        verdict = "EQUAL" if acked == held else "DIFFERENT"
        print(f"crash test: acknowledged {acked:,} alerts, stored {held:,}: {verdict}", flush=True)
        return rate
    finally:
        server.stop()


@contextmanager
def fresh_database(backend: str, work: Path) -> Iterator[str]:
    if backend == "sqlite":
        path = work / f"server-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        return
    import psycopg

    name = f"stockade_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-server-"))
    counts = [int(w) for w in args.workers.split(",")]
    print(f"stockade server ingestion, {os.cpu_count()} cores, logs in {work}")
    best: dict[str, tuple[float, int]] = {}
    for backend in args.backends.split(","):
        for workers in counts:
            with fresh_database(backend, work) as url:
                rate = bench(backend, url, args.seconds, workers, workers == max(counts), work)
            if rate > best.get(backend, (0.0, 0))[0]:
                best[backend] = (rate, workers)
    print("\n== best ==")
    for backend, (rate, workers) in best.items():
        print(f"{backend}: {rate:,.0f} alerts/s with {workers} worker process(es)")
    if "sqlite" in best and "postgresql" in best:
        print(f"PostgreSQL / SQLite = {best['postgresql'][0] / best['sqlite'][0]:.2f}")


if __name__ == "__main__":
    main()

"""The central server over real HTTP, on SQLite and on the real PostgreSQL on loopback: roles, cluster-scoped
ingestion, idempotent batches, dedup, alert lifecycle, suppression, bad input, snapshots, running images,
rescans, exports to real peers, and the CLI collectors publishing to it."""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from conftest import ODD_VALUES, swap_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from server_util import database, make_store, serving

from stockade.audit.detect import Detector
from stockade.audit.events import Stats, read_file
from stockade.audit.rules import load as load_audit_rules

CLI = [sys.executable, "-m", "stockade.cli.main"]
DEMO = Path(__file__).resolve().parents[1] / "src" / "stockade" / "server" / "demo"
PASSWORD = "correct horse battery"


class Env:
    def __init__(self, store: Any, base: str) -> None:
        self.store, self.base = store, base
        self.export_dir: Path | None = None
        self.tokens: dict[str, str] = {}
        for role in ("reader", "contributor", "admin"):
            store.create_user(f"{role}-{uuid.uuid4().hex[:6]}", PASSWORD, role)
        for u in store.users():
            self.tokens[u["role"]] = store.create_user_token(u["name"], "tests", "tests")

    def http(self, role: str | None = None, token: str | None = None) -> httpx.Client:
        tok = token or (self.tokens[role] if role else None)
        return httpx.Client(
            base_url=self.base, timeout=30, headers={"authorization": f"Bearer {tok}"} if tok else {}
        )

    def cluster(self, name: str | None = None) -> tuple[str, str]:
        name = name or f"c-{uuid.uuid4().hex[:8]}"
        with self.http("contributor") as c:
            r = c.post("/api/v1/clusters", json={"name": name})
        assert r.status_code == 201, r.text
        return name, r.json()["token"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        store = make_store(url)
        exports = tmp_path_factory.mktemp("exports")
        with serving(store, export_dir=exports) as base:
            env = Env(store, base)
            env.export_dir = exports
            yield env
        store.engine.dispose()


def audit_alerts(trace: Path) -> list[dict[str, Any]]:
    d, st = Detector(load_audit_rules()), Stats()
    for _off, ev in read_file(trace, st):
        d.process(ev)
    return [a.to_dict() for a in d.alerts]


def ingest(env: Env, cluster: str, token: str, kind: str, items: list[Any], batch: str | None = None,
           component: str = "") -> httpx.Response:  # fmt: skip
    body: dict[str, Any] = {"batch": batch or uuid.uuid4().hex, "items": items}
    if component:
        body["component"] = component
    with env.http(token=token) as c:
        return c.post(f"/api/v1/clusters/{cluster}/ingest/{kind}", json=body)


def _env(token: str) -> dict[str, str]:
    return {"STOCKADE_TOKEN": token, "PATH": "/usr/bin:/bin"}


def cluster_alerts(env: Env, cluster: str, status: str | None = None) -> list[dict[str, Any]]:
    with env.http("reader") as c:
        params: dict[str, Any] = {"cluster": cluster, "limit": 1000, **({"status": status} if status else {})}
        r = c.get("/api/v1/alerts", params=params)
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()["items"]
    return items


# -- authentication and roles ----------------------------------------------------------------------------------


def test_login_sessions_and_unauthenticated(env: Env) -> None:
    name = next(u["name"] for u in env.store.users() if u["role"] == "reader")
    with env.http() as c:
        assert c.get("/api/v1/alerts").status_code == 401
        assert c.post("/api/v1/login", json={"name": name, "password": "wrong password"}).status_code == 401
        r = c.post("/api/v1/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200 and r.cookies.get("stockade_session") == r.json()["token"]
    with env.http(token=r.json()["token"]) as c:
        assert c.get("/api/v1/me").json() == {"name": name, "role": "reader", "kind": "session"}
    with env.http(token="stk_forged") as c:
        assert c.get("/api/v1/overview").status_code == 401


def test_roles(env: Env) -> None:
    name, token = env.cluster()
    assert ingest(env, name, token, "alerts", audit_alerts(DEMO / "audit.jsonl")).status_code == 200
    aid = cluster_alerts(env, name)[0]["id"]
    change = {"ids": [aid], "status": "dismissed", "reason": "expected maintenance"}
    with env.http("reader") as c:
        assert c.get("/api/v1/overview").status_code == 200  # readers see everything
        assert c.post("/api/v1/alerts/status", json=change).status_code == 403  # ... but cannot dismiss
        assert c.post("/api/v1/clusters", json={"name": "nope"}).status_code == 403
        assert c.post("/api/v1/suppressions", json={"name": "x", "reason": "y"}).status_code == 403
    with env.http("contributor") as c:
        assert c.post("/api/v1/alerts/status", json=change).status_code == 403  # contributors manage, not triage
        assert c.post("/api/v1/exceptions", json={"reason": "accepted"}).status_code == 403
        # exports send alerts off the server (and file exports write on it): admins only
        assert c.post("/api/v1/exports", json={"kind": "webhook", "target": "https://siem.example/in"}).status_code \
            == 403
    with env.http("admin") as c:
        r = c.post("/api/v1/exports", json={"kind": "webhook", "target": "https://siem.example/in"})
        assert r.status_code == 201
        assert c.delete(f"/api/v1/exports/{r.json()['id']}").status_code == 204
        assert c.post("/api/v1/alerts/status", json=change).json() == {"updated": 1}
        assert c.get(f"/api/v1/alerts/{aid}").json()["status"] == "dismissed"
        log = c.get("/api/v1/audit-log").json()
    admin = next(u["name"] for u in env.store.users() if u["role"] == "admin")
    assert any(e["action"] == "alert.dismissed" and e["actor"] == admin and e["target"] == str(aid) for e in log)
    assert any(e["action"] == "export.delete" for e in log) and any(e["action"] == "cluster.create" for e in log)


def test_cluster_tokens_are_scoped(env: Env) -> None:
    a, token_a = env.cluster()
    b, _token_b = env.cluster()
    alerts = audit_alerts(DEMO / "audit.jsonl")
    r = ingest(env, b, token_a, "alerts", alerts)
    assert r.status_code == 403 and a in r.json()["detail"]
    assert cluster_alerts(env, b) == []
    assert ingest(env, a, token_a, "alerts", alerts).status_code == 200
    with env.http(token=token_a) as c:  # a cluster token only ingests
        assert c.get("/api/v1/alerts").status_code == 403
        assert c.post("/api/v1/alerts/status", json={"ids": [1], "status": "resolved"}).status_code == 403
    with env.http("admin") as c:  # user tokens cannot ingest
        assert c.post(f"/api/v1/clusters/{a}/ingest/alerts", json={"batch": "x", "items": []}).status_code == 403


# -- ingestion -------------------------------------------------------------------------------------------------


def test_batches_are_idempotent_and_bursts_dedup(env: Env, traces: Path) -> None:
    name, token = env.cluster()
    alerts = audit_alerts(traces / "create_configmap_sensitive_values.json")  # Falco expects 6 detections
    assert sum(a["count"] for a in alerts) == 6
    batch = uuid.uuid4().hex
    first = ingest(env, name, token, "alerts", alerts, batch)
    again = ingest(env, name, token, "alerts", alerts, batch)  # a retry after a lost response
    assert first.json()["duplicate"] is False
    assert again.json() == {"batch": batch, "duplicate": True, "items": len(alerts)}
    stored = cluster_alerts(env, name)
    assert sum(a["count"] for a in stored) == 6 and len(stored) == len({a["dedup_key"] for a in alerts})
    # the same detections in a new batch: the same alerts, counted again
    ingest(env, name, token, "alerts", alerts)
    stored = cluster_alerts(env, name)
    assert sum(a["count"] for a in stored) == 12 and len(stored) == len({a["dedup_key"] for a in alerts})
    # once a person closed an alert, a new occurrence opens a new one
    with env.http("admin") as c:
        ids = [a["id"] for a in stored]
        c.post("/api/v1/alerts/status", json={"ids": ids, "status": "resolved", "reason": "fixed"})
    ingest(env, name, token, "alerts", alerts[:1])
    active = cluster_alerts(env, name, "active")
    assert len(active) == 1 and active[0]["count"] == alerts[0]["count"]
    assert len(cluster_alerts(env, name, "resolved")) == len(stored)


def test_falco_traces_through_the_api(env: Env, traces: Path) -> None:
    """Every trace's alerts, sent as a collector would; the stored counts are Falco's expected detections."""
    from test_audit import DETECT, FALCO

    name, token = env.cluster()
    for trace in sorted(DETECT):
        assert ingest(env, name, token, "alerts", audit_alerts(traces / f"{trace}.json"), component="audit").is_success
    got = Counter[str]()
    for a in cluster_alerts(env, name):
        got[a["rule"]] += a["count"]
    want = Counter[str]()
    for falco_rule, n in DETECT.values():
        want[FALCO[falco_rule]] += n
    assert +got == +want
    clusters = {c["name"]: c for c in env.http("reader").get("/api/v1/clusters").json()}
    assert clusters[name]["protection"]["audit"] is True and clusters[name]["protection"]["sensor"] is False
    assert clusters[name]["protected"] is False and "sensor" in clusters[name]["missing"]


def test_suppression_rules(env: Env) -> None:
    name, token = env.cluster()
    alerts = audit_alerts(DEMO / "audit.jsonl")
    execs = [a for a in alerts if a["rule"] == "STK-AUD-001"]
    assert execs
    with env.http("admin") as c:
        spec = {"name": "break-glass execs", "rule": "STK-AUD-001", "cluster": name, "match": {"user": "mallory@*"},
                "reason": "on-call debugging"}  # fmt: skip
        r = c.post("/api/v1/suppressions", json=spec)
        assert r.status_code == 201
    ingest(env, name, token, "alerts", alerts)
    stored = cluster_alerts(env, name)
    sup = [a for a in stored if a["rule"] == "STK-AUD-001"]
    assert sup and all(a["status"] == "dismissed" and "break-glass execs" in a["status_reason"] for a in sup)
    assert all(a["status"] == "active" for a in stored if a["rule"] != "STK-AUD-001")
    # apply_to_existing dismisses what is already active
    with env.http("admin") as c:
        c.post("/api/v1/suppressions", json={"name": "events", "rule": "STK-AUD-022", "cluster": name,
                                             "reason": "log rotation job", "apply_to_existing": True})  # fmt: skip
    assert all(a["status"] == "dismissed" for a in cluster_alerts(env, name) if a["rule"] == "STK-AUD-022")
    with env.http("admin") as c:
        for s in c.get("/api/v1/suppressions").json():
            assert c.delete(f"/api/v1/suppressions/{s['id']}").status_code == 204


def test_bad_input_is_rejected_whole(env: Env) -> None:
    name, token = env.cluster()
    good = audit_alerts(DEMO / "audit.jsonl")
    with env.http(token=token) as c:
        url = f"/api/v1/clusters/{name}/ingest/alerts"
        r = c.post(url, content=b'{"batch": "x", "items": [', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["detail"]
        assert c.post(url, json={"batch": "x", "items": {}}).status_code == 400
        assert c.post(url, json={"items": []}).status_code == 400  # no batch id
        r = c.post(url, json={"batch": "y", "items": [*good, {"rule": "X", "severity": "APOCALYPTIC"}]})
        assert r.status_code == 400 and f"items[{len(good)}]" in r.json()["error"]
        r = c.post(f"/api/v1/clusters/{name}/ingest/teleport", json={"batch": "z", "items": []})
        assert r.status_code == 400 and "teleport" in r.json()["error"]
    assert cluster_alerts(env, name) == []  # the batch with one bad alert stored nothing
    assert ingest(env, name, token, "alerts", good, batch="y").json()["duplicate"] is False  # and its id is free
    # NUL characters (PostgreSQL refuses them in text) and over-long names are stored cleaned and cut, not a 500
    odd = {"rule": "R\x00X", "severity": "HIGH", "message": "a\x00b", "name": "n" * 5000, "tactics": ["t\x00"],
           "evidence": [{"k": "v\x00"}]}  # fmt: skip
    r = ingest(env, name, token, "alerts", [odd])
    assert r.status_code == 200, r.text
    got = [a for a in cluster_alerts(env, name) if a["rule"] == "RX"]
    assert len(got) == 1 and got[0]["message"] == "ab" and got[0]["tactics"] == ["t"] and len(got[0]["name"]) <= 300


def test_backpressure_429_and_body_limit(tmp_path: Path) -> None:
    """With the in-flight limit reached, ingestion answers 429 with Retry-After; bodies over the limit get 413."""
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    _cid, token = store.create_cluster("busy", "t")
    gate, holding = threading.Event(), threading.Event()
    real = store.ingest

    def slow(*a: Any) -> Any:
        if a[2]["batch"] == "one":  # this request holds its slot until the test opens the gate
            holding.set()
            gate.wait(10)
        return real(*a)

    store.ingest = slow
    with serving(store, max_ingest_inflight=1, max_body=100_000) as base:
        body = {"batch": "one", "items": []}
        hdr = {"authorization": f"Bearer {token}"}
        big = httpx.post(f"{base}/api/v1/clusters/busy/ingest/alerts", content=b"[" * 200_000, headers=hdr)
        assert big.status_code == 413
        first = threading.Thread(target=lambda: httpx.post(f"{base}/api/v1/clusters/busy/ingest/heartbeat", json=body,
                                                           headers=hdr, timeout=30))  # fmt: skip
        first.start()
        assert holding.wait(10), "the first request never reached ingestion"
        r = httpx.post(f"{base}/api/v1/clusters/busy/ingest/heartbeat", json={"batch": "two", "items": []},
                       headers=hdr)  # fmt: skip
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        gate.set()
        first.join()


def test_admission_violations_name_their_object(env: Env) -> None:
    """The admission webhook's violation log, sent through the API, keeps each object's kind, namespace and name
    (the oracle: the manifests the reviewer was given)."""
    from stockade.posture.resources import load
    from stockade.server.demo import admission_violations

    resources, _warn = load([DEMO / "manifests.yaml"])
    violations = admission_violations(resources)
    name, token = env.cluster()
    assert ingest(env, name, token, "violations", violations, component="admission").status_code == 200
    with env.http("reader") as c:
        got = c.get("/api/v1/violations", params={"cluster": name, "limit": 5000}).json()
    assert len(got) == len(violations) > 0
    objects = {(r.kind, r.namespace, r.name) for r in resources}
    assert {(v["kind"], v["namespace"], v["name"]) for v in got} <= objects
    assert all(v["action"] == "audit" and v["user"] == "ci-deployer" for v in got)


# -- snapshots, images, rescans --------------------------------------------------------------------------------


def test_agent_snapshot_running_images_and_rescan(env: Env, fixtures_dir: Path, vulndb: Any, tmp_path: Path) -> None:
    from stockade.inventory import catalog_image
    from stockade.match.matcher import match
    from stockade.server.client import scan_document
    from stockade.server.rescan import rescan_all

    name, token = env.cluster()
    manifests = tmp_path / "app.yaml"
    manifests.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: legacy, namespace: shop}\nspec:\n  template:\n"
        "    spec:\n      containers: [{name: app, image: 'alpine:3.11', securityContext: {privileged: true}}]\n"
    )
    out = subprocess.run([*CLI, "agent", "--once", "--server", env.base, "--cluster", name, str(manifests)],
                         env=_env(token), capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    # the posture findings the engine gives for these objects are what the server lists
    posture = subprocess.run([*CLI, "posture", "-f", "json", str(manifests)], capture_output=True, check=True)
    want = {(f["rule"], f["name"]) for f in orjson.loads(posture.stdout)["findings"]}
    with env.http("reader") as c:
        recs = c.get("/api/v1/recommendations", params={"cluster": name}).json()
        got = {(g["rule"], r["name"]) for g in recs for r in g["resources"]}
        assert got == want and ("STK-PSS-B-005", "legacy") in got
        running = c.get("/api/v1/running-images", params={"cluster": name}).json()
        assert [(r["image"], r["scanned"]) for r in running] == [("docker.io/library/alpine:3.11", False)]
        comp = {f["framework"]: f for f in c.get("/api/v1/compliance", params={"cluster": name}).json()}
        assert comp["cis"]["passed"] < comp["cis"]["total"]
    # the real alpine 3.11 image, scanned and posted: the running image shows its findings by severity
    inv = catalog_image(str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz"))
    findings = match(inv, vulndb)
    assert findings
    doc = scan_document("alpine:3.11", inv, findings, vulndb.meta("built_at") or "")
    with env.http("contributor") as c:
        assert c.post("/api/v1/scans", json={"items": [doc]}).status_code == 200
    with env.http("reader") as c:
        row = c.get("/api/v1/running-images", params={"cluster": name}).json()[0]
    assert row["scanned"] and row["counts"] == dict(Counter(f.severity for f in findings))
    assert row["fixable"] == sum(1 for f in findings if f.fixed_version)
    # a scan made with an older database (here: with no findings yet) is rematched by the rescan
    stale = {**doc, "findings": [], "db_built_at": "1970-01-01T00:00:00+00:00"}
    with env.http("contributor") as c:
        c.post("/api/v1/scans", json={"items": [stale]})
    with env.http("reader") as c:
        assert c.get("/api/v1/running-images", params={"cluster": name}).json()[0]["counts"] == {}
    result = rescan_all(env.store, vulndb.path)
    assert result["images"] >= 1
    with env.http("reader") as c:
        row = c.get("/api/v1/running-images", params={"cluster": name}).json()[0]
        detail = c.get(f"/api/v1/images/{row['image_id']}").json()
    assert row["counts"] == dict(Counter(f.severity for f in findings))
    assert sorted(f["vuln_id"] for f in detail["findings"]) == sorted(f.vuln_id for f in findings)
    assert detail["running"][0]["cluster"] == name


def test_cli_collectors_publish(env: Env, traces: Path) -> None:
    """`stockade audit scan --server`: what the server stores equals what the command reports by itself."""
    name, token = env.cluster()
    trace = traces / "create_configmap_sensitive_values.json"
    alone = subprocess.run([*CLI, "audit", "scan", "-f", "json", "-q", str(trace)], capture_output=True, check=True)
    want = Counter({a["rule"]: a["count"] for a in orjson.loads(alone.stdout)["alerts"]})
    out = subprocess.run([*CLI, "audit", "scan", "-q", "-f", "json", "--server", env.base, "--cluster", name,
                          str(trace)], env=_env(token), capture_output=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = Counter[str]()
    for a in cluster_alerts(env, name):
        got[a["rule"]] += a["count"]
    assert got == want
    bad = subprocess.run([*CLI, "audit", "scan", "-q", "--server", env.base, "--cluster", name, str(trace)],
                         env=_env("stk_wrong"), capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "401" in bad.stderr and "Traceback" not in bad.stderr


# -- export ----------------------------------------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received += json.loads(body)["alerts"]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_a: Any) -> None:
        pass


def test_exports_to_webhook_syslog_and_file(env: Env, tmp_path: Path) -> None:
    from syslog_rfc5424_parser import SyslogMessage

    from stockade.server.export import run_once

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(5)
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received, _Hook.fail_first = [], 2
    assert env.export_dir is not None
    outfile = env.export_dir / f"alerts-{uuid.uuid4().hex[:6]}.jsonl"
    with env.http("admin") as c:
        ids = [
            c.post("/api/v1/exports", json=spec).json()["id"]
            for spec in (
                {"kind": "webhook", "target": f"http://127.0.0.1:{hook.server_port}/hook", "allow_private": True},
                {"kind": "syslog", "target": f"udp://127.0.0.1:{udp.getsockname()[1]}", "format": "rfc5424",
                 "allow_private": True},
                {"kind": "syslog", "target": f"tcp://127.0.0.1:{tcp.getsockname()[1]}", "format": "cef",
                 "min_severity": "HIGH", "allow_private": True},
                {"kind": "file", "target": outfile.name},
            )
        ]  # fmt: skip
        assert c.post("/api/v1/exports", json={"kind": "syslog", "target": "ftp://x"}).status_code == 400
    name, token = env.cluster()
    alerts = audit_alerts(DEMO / "audit.jsonl")
    ingest(env, name, token, "alerts", alerts)
    stored = {a["id"]: a for a in cluster_alerts(env, name)}
    accepted: list[bytes] = []

    def accept() -> None:
        for _ in range(3):
            con, _addr = tcp.accept()
            with con:
                buf = b""
                while chunk := con.recv(65536):
                    buf += chunk
                accepted.append(buf)

    threading.Thread(target=accept, daemon=True).start()
    with httpx.Client() as client:
        backoff: dict[int, tuple[float, float]] = {}
        # the webhook answers 503: retried later, the others delivered
        run_once(env.store, client, backoff, env.export_dir)
        assert ids[0] in backoff
        for _ in range(3):
            backoff.clear()  # skip the wait
            run_once(env.store, client, backoff, env.export_dir)
    # webhook: every alert of this cluster, after two failures, exactly once
    mine = [a for a in _Hook.received if a["cluster"] == name]
    assert sorted(a["id"] for a in mine) == sorted(stored)
    assert all(a["first_seen"].endswith("Z") for a in mine)
    # syslog RFC 5424 over UDP, checked with an independent parser
    msgs = []
    while True:
        try:
            data, _ = udp.recvfrom(65536)
        except TimeoutError:
            break
        m = SyslogMessage.parse(data.decode())
        if m.sd["stockade@32473"]["cluster"] == name:
            msgs.append(m)
        if len(msgs) == len(stored):
            break
    assert sorted(int(m.sd["stockade@32473"]["alertId"]) for m in msgs) == sorted(stored)
    for m in msgs:
        a = stored[int(m.sd["stockade@32473"]["alertId"])]
        assert m.appname == "stockade" and m.msgid == a["rule"] and m.facility.value == 4
        assert m.severity.value == {"CRITICAL": 2, "HIGH": 3, "MEDIUM": 4, "LOW": 5}[a["severity"]]
        assert m.msg.startswith(a["title"])
    # CEF over TCP with octet counting: HIGH and CRITICAL only
    frames = []
    for buf in accepted:
        while buf:
            n, _, rest = buf.partition(b" ")
            frames.append(rest[: int(n)].decode())
            buf = rest[int(n) :]
    cef = [SyslogMessage.parse(f).msg for f in frames]
    cef = [m for m in cef if f"cs1={name}" in m]
    want = [a for a in stored.values() if a["severity"] in ("HIGH", "CRITICAL")]
    assert len(cef) == len(want) and all(m.startswith("CEF:0|stockade|stockade|0.1.0|STK-AUD-") for m in cef)
    # file: JSON lines
    lines = [json.loads(line) for line in outfile.read_text().splitlines()]
    assert sorted(a["id"] for a in lines if a["cluster"] == name) == sorted(stored)
    with env.http("reader") as c:
        ex = {x["id"]: x for x in c.get("/api/v1/exports").json()}
    assert ex[ids[0]]["failures"] >= 1 and ex[ids[0]]["last_error"] == "" and ex[ids[0]]["delivered"] >= len(stored)
    with env.http("admin") as c:
        for i in ids:
            assert c.delete(f"/api/v1/exports/{i}").status_code == 204
    hook.shutdown()


def test_publish_resumes_without_duplicates(env: Env, tmp_path: Path) -> None:
    """`stockade publish`: what a collector appended reaches the server once, across restarts and a lost state."""
    name, token = env.cluster()
    alerts = audit_alerts(DEMO / "audit.jsonl")
    log, state = tmp_path / "alerts.jsonl", tmp_path / "offset"
    log.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts[:4]) + b'{"partial": ')
    cmd = [*CLI, "publish", str(log), "--server", env.base, "--cluster", name, "--component", "audit",
           "--no-follow", "--state", str(state)]  # fmt: skip

    def total() -> int:
        return sum(a["count"] for a in cluster_alerts(env, name))

    def run() -> None:
        out = subprocess.run(cmd, env=_env(token), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr

    run()
    assert total() == sum(a["count"] for a in alerts[:4])  # the partial last line waits for its end
    with log.open("r+b") as fh:  # the writer finishes that line (as a real alert) and appends the rest
        fh.seek(-len(b'{"partial": '), 2)
        fh.truncate()
        fh.write(b"".join(orjson.dumps(a) + b"\n" for a in alerts[4:]))
    run()
    assert total() == sum(a["count"] for a in alerts)
    # a crash after the first batch was sent but before its acknowledgement was saved: the state still says
    # "from 0, batch up to X in flight"; the resend has the same id and is not stored twice
    first_end = sum(len(orjson.dumps(a)) + 1 for a in alerts[:4])
    state.write_text(f"0 {first_end}")
    run()
    assert total() == sum(a["count"] for a in alerts)
    assert state.read_text() == str(log.stat().st_size)
    clusters = {c["name"]: c for c in env.http("reader").get("/api/v1/clusters").json()}
    assert clusters[name]["protection"]["audit"] is True


# -- several worker processes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_leader_lock_is_held_by_one_process(kind: str, tmp_path: Path) -> None:
    """Of the processes serving one database, one holds the background-loop lock; when it goes, another gets it."""
    from stockade.server.leader import Leadership

    with database(kind, tmp_path) as url:
        a, b = make_store(url), make_store(url)
        la, lb = Leadership(a.engine), Leadership(b.engine)
        assert la.acquire() and la.still_held()
        assert not lb.acquire()
        la.release()  # what a dying process does by losing its connection or file descriptor
        assert lb.acquire() and not la.acquire()
        lb.release()
        a.engine.dispose()
        b.engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_server_workers_share_the_database_and_export_once(kind: str, tmp_path: Path) -> None:
    """`stockade server --workers 2`: both workers ingest; the export runs in one of them, so the file export holds
    every stored alert exactly once."""
    import os
    import time

    from server_util import free_port

    with database(kind, tmp_path) as url:
        store = make_store(url)
        _cid, token = store.create_cluster("multi", "tests")
        outfile = tmp_path / "alerts.jsonl"
        store.add_export({"kind": "file", "target": outfile.name}, "tests", tmp_path)
        port = free_port()
        env = {**os.environ, "STOCKADE_DATABASE_URL": url, "STOCKADE_ADMIN_PASSWORD": PASSWORD}
        proc = subprocess.Popen([*CLI, "server", "--port", str(port), "--workers", "2", "--export-dir", str(tmp_path)],
                                env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            assert len(children) >= 2, "uvicorn did not start 2 worker processes"
            tmpl = audit_alerts(DEMO / "audit.jsonl")

            def send(n: int) -> None:
                with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30) as c:
                    for j in range(5):
                        items = [dict(a, dedup_key=f"{n}-{j}-{i}") for i, a in enumerate(tmpl)]
                        r = c.post("/api/v1/clusters/multi/ingest/alerts", json={"batch": f"{n}-{j}", "items": items})
                        assert r.status_code == 200, r.text

            threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            want = 4 * 5 * len(tmpl)
            ids: list[int] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ids = [json.loads(line)["id"] for line in outfile.read_text().splitlines()] if outfile.exists() else []
                if len(ids) >= want:
                    break
                time.sleep(0.5)
            time.sleep(3)  # a second exporter would have written its copies by now
            ids = [json.loads(line)["id"] for line in outfile.read_text().splitlines()]
            assert len(ids) == want and len(set(ids)) == want
            assert proc.poll() is None
        finally:
            proc.terminate()
            _out, errtext = proc.communicate(timeout=20)
            store.engine.dispose()
        log = errtext.decode()
        assert "Traceback" not in log
        assert log.count("runs the export and rescan loops") == 1, log


def _raw_post(base: str, path: str, declared: int, send: bytes) -> tuple[int, bytes]:
    """A POST that declares ``declared`` bytes but sends only ``send``: the status line the server answers
    with before the rest arrives (a server that reads first never answers)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + send)  # fmt: skip
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_body_limits_per_route_before_reading(tmp_path: Path) -> None:
    """A 63 MiB login body (nested empty lists) is refused with 413 from its Content-Length, before a byte of it
    is read, and so is a streamed one without Content-Length as soon as it passes 4 KiB; dashboard forms and
    settings writes have 1 MiB; ingestion keeps its documented maximum; the server stays small and answers."""
    import resource

    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("alice", PASSWORD, "admin")
    with serving(store) as base:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status, _ = _raw_post(base, "/api/v1/login", 63 * 1024**2, b"[" * 1024)
        assert status == 413
        cases = [("/api/v1/login", "application/json", b'{"name": "alice", "password": "', b'"}'),
                 ("/login", "application/x-www-form-urlencoded", b"name=alice&password=", b"")]
        for path, ctype, head, tail in cases:
            def stream(head: bytes = head, tail: bytes = tail) -> Iterator[bytes]:
                yield head
                for _ in range(16):
                    yield b"x" * 1024
                yield tail

            r = httpx.post(f"{base}{path}", content=stream(), headers={"content-type": ctype})
            assert r.status_code == 413, (path, r.status_code)
        hdr = {"authorization": f"Bearer {store.create_user_token('alice', 't', 't')}"}
        assert httpx.post(f"{base}/api/v1/suppressions", content=b"[" * (2 * 1024**2), headers=hdr).status_code == 413
        _cid, token = store.create_cluster("c1", "t")
        items = [{"rule": "STK-AUD-001", "title": "t" * 200, "severity": "HIGH", "dedup_key": f"k{i}"}
                 for i in range(6000)]  # fmt: skip
        body = orjson.dumps({"batch": "b1", "items": items[:5000]})
        assert len(body) > 1024**2  # over the form limit, under ingestion's
        r = httpx.post(f"{base}/api/v1/clusters/c1/ingest/alerts", content=body,
                       headers={"authorization": f"Bearer {token}", "content-type": "application/json"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert httpx.get(f"{base}/healthz").status_code == 200
        ok = httpx.post(f"{base}/api/v1/login", json={"name": "alice", "password": PASSWORD})
        assert ok.status_code == 200
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB: under 200 MiB more


def test_login_brute_force_is_limited_and_logged(tmp_path: Path) -> None:
    """Five wrong passwords for a user, then the right one: 429 with Retry-After (on the API and the dashboard
    form), every failure in the audit log with the client's address; twenty failures from one address lock
    that address out for any name; another user is not affected by the first one's lock."""
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("alice", PASSWORD, "admin")
    store.create_user("bob", PASSWORD, "reader")
    with serving(store) as base, httpx.Client(base_url=base, timeout=30) as c:
        codes = [c.post("/api/v1/login", json={"name": "alice", "password": f"guess {i}"}).status_code
                 for i in range(5)]  # fmt: skip
        assert codes == [401] * 5
        r = c.post("/api/v1/login", json={"name": "alice", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        form = c.post("/login", data={"name": "alice", "password": PASSWORD}, follow_redirects=False)
        assert form.status_code == 429 and "retry-after" in form.headers
        assert c.post("/api/v1/login", json={"name": "bob", "password": PASSWORD}).status_code == 200
        failed = [e for e in store.audit_entries(1000) if e["action"] == "login.failed"]
        assert len(failed) == 5 and all(e["target"] == "alice" and e["detail"]["client"] == "127.0.0.1"
                                        for e in failed)  # fmt: skip
        # twenty failures from this address, each for a name of its own: the address is out of tries
        codes = [c.post("/api/v1/login", json={"name": f"nobody-{i}", "password": "x"}).status_code
                 for i in range(15)]  # fmt: skip
        assert codes == [401] * 15  # with alice's five, twenty
        assert c.post("/api/v1/login", json={"name": "bob", "password": PASSWORD}).status_code == 429


def test_passwords_argon2id_rehash_and_no_user_enumeration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are stored as argon2id (checked with argon2-cffi's own verifier); a user created by an earlier
    version (scrypt, written here as that version wrote it) logs in and is rehashed to argon2id; a name that
    matches no user costs the same hash verification as a real one."""
    import hashlib
    import secrets

    import argon2
    import sqlalchemy as sa

    from stockade.server import db as t
    from stockade.server.store import base as store_base

    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("carol", PASSWORD, "reader")
    with store.engine.connect() as con:
        stored = con.execute(sa.select(t.users.c.password_hash).where(t.users.c.name == "carol")).scalar_one()
    assert stored.startswith("$argon2id$") and argon2.PasswordHasher().verify(stored, PASSWORD)
    salt = secrets.token_bytes(16)
    old = f"scrypt$16384$8$1${salt.hex()}${hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1).hex()}"
    store.create_user("dave", "placeholder password", "reader")
    with store.engine.begin() as con:
        con.execute(sa.update(t.users).where(t.users.c.name == "dave").values(password_hash=old))
    assert store.login("dave", "wrong password") is None
    assert store.login("dave", PASSWORD) is not None
    with store.engine.connect() as con:
        new = con.execute(sa.select(t.users.c.password_hash).where(t.users.c.name == "dave")).scalar_one()
    assert new.startswith("$argon2id$") and argon2.PasswordHasher().verify(new, PASSWORD)
    calls: list[str] = []
    real = store_base._HASHER

    class Spy:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(password)
            return bool(real.verify(stored, password))

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(store_base, "_HASHER", Spy())
    assert store.login("no-such-user", "some password") is None
    assert store.login("carol", "some password") is None
    assert calls == ["some password", "some password"]  # one verification each, user or not


def test_file_exports_stay_inside_the_export_directory(tmp_path: Path) -> None:
    """A file export names a file inside --export-dir: absolute paths, '..', and links out of the directory are
    refused when the export is created and again at each write (a link made afterwards is not followed); without
    --export-dir there are no file exports; a contributor cannot create exports at all."""
    from stockade.server.export import run_once

    outside = tmp_path / "outside"
    outside.mkdir()
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "escape").symlink_to(outside)
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("root-ish", PASSWORD, "admin")
    store.create_user("carl", PASSWORD, "contributor")
    admin, contributor = (store.create_user_token(u, "t", "t") for u in ("root-ish", "carl"))
    with serving(store, export_dir=exports) as base:
        def post(token: str, target: str) -> httpx.Response:
            return httpx.post(f"{base}/api/v1/exports", json={"kind": "file", "target": target, "format": "cef"},
                              headers={"authorization": f"Bearer {token}"})  # fmt: skip

        assert post(contributor, "alerts.cef").status_code == 403
        for bad in (str(outside / "x.log"), "/etc/cron.d/x", "../outside/x.log", "escape/x.log", "a/../../x.log"):
            r = post(admin, bad)
            assert r.status_code == 400, (bad, r.text)
        ok = post(admin, "siem/alerts.cef")
        assert ok.status_code == 201, ok.text
        late = post(admin, "later.cef")
        assert late.status_code == 201
    (exports / "later.cef").symlink_to(outside / "stolen.log")  # a link planted after the export was made
    cid, _token = store.create_cluster("c", "t")
    store.ingest(cid, "alerts", {"batch": "b", "items": [
        {"rule": "STK-AUD-001", "title": "x|y\\nCEF:0|forged", "severity": "HIGH", "dedup_key": "k"}]})  # fmt: skip
    with httpx.Client() as client:
        run_once(store, client, {}, exports)
    assert (exports / "siem" / "alerts.cef").read_text().count("\n") == 1
    assert not (outside / "stolen.log").exists() and list(outside.iterdir()) == []
    rows = {r["target"]: r for r in store.rows("exports")}
    assert rows["later.cef"]["failures"] >= 1 and rows["later.cef"]["delivered"] == 0
    with serving(store) as base:  # no --export-dir: file exports are off
        r = httpx.post(f"{base}/api/v1/exports", json={"kind": "file", "target": "a.log"},
                       headers={"authorization": f"Bearer {admin}"})  # fmt: skip
        assert r.status_code == 400 and "--export-dir" in r.text


_SNAPSHOT: list[dict[str, Any]] = []


def _real_snapshot() -> dict[str, Any]:
    """The snapshot the agent makes of the demo manifests (as `stockade agent` sends it), made once."""
    from stockade.posture import load_manifests
    from stockade.server.agent import snapshot

    if not _SNAPSHOT:
        resources, _warnings = load_manifests([DEMO / "manifests.yaml"])
        _SNAPSHOT.append(snapshot(resources, "v1.30.2"))
    return copy.deepcopy(_SNAPSHOT[0])


def test_poisoned_documents_are_refused_naming_the_field(tmp_path: Path) -> None:
    """An alert whose time is 1e308 (or the year 9999), a count past 2**31, evidence nested 1,000 deep, a
    compliance control without its 'control' key or with a score of 1e9: 400 naming the field, nothing stored,
    and the export, the alert pages and the compliance page keep working for everyone."""
    from stockade.server.export import run_once
    from stockade.server.views import compliance, overview

    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("ann", PASSWORD, "admin")
    cid, token = store.create_cluster("c", "t")
    exports = tmp_path / "exports"
    exports.mkdir()
    store.add_export({"kind": "file", "target": "all.jsonl"}, "t", exports)
    good = audit_alerts(DEMO / "audit.jsonl")[0]
    deep = "[" * 1000 + '"x"' + "]" * 1000  # JSON text: orjson reads 1,000 levels but will not write them
    snap = _real_snapshot()
    fw = next(iter(snap["compliance"]))
    no_control = copy.deepcopy(snap)
    del no_control["compliance"][fw]["controls"][0]["control"]
    huge_score = copy.deepcopy(snap)
    huge_score["compliance"][fw]["score"] = 1e9
    with serving(store, export_dir=exports) as base, httpx.Client(
            base_url=base, headers={"authorization": f"Bearer {token}"}) as c:  # fmt: skip
        url = "/api/v1/clusters/c/ingest/"
        for i, (kind, item, field) in enumerate([
            ("alerts", {**good, "time": 1e308}, "items[0].time"),
            ("alerts", {**good, "last_time": "9999-12-31T00:00:00Z"}, "items[0].last_time"),
            ("alerts", {**good, "count": 2**40}, "items[0].count"),
            ("alerts", {**good, "evidence": ["DEEP"]}, "items[0].evidence[0]"),
            ("snapshot", no_control, f"items[0].compliance.{fw}.controls[0].control"),
            ("snapshot", huge_score, f"items[0].compliance.{fw}.score"),
            ("snapshot", {**snap, "nodes": "many"}, "items[0].nodes"),
        ]):  # fmt: skip
            body = orjson.dumps({"batch": f"bad-{i}", "items": [item]}).replace(b'"DEEP"', deep.encode())
            r = c.post(url + kind, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"].startswith(field), (field, r.text)
        assert c.post(url + "alerts", json={"batch": "ok", "items": [good]}).status_code == 200
        assert c.post(url + "snapshot", json={"batch": "snap", "items": [snap]}).status_code == 200
    assert [a["rule"] for a in store.alerts(limit=10)[1]] == [good["rule"]]
    with httpx.Client() as client:
        assert run_once(store, client, {}, exports) == 1
    assert json.loads((exports / "all.jsonl").read_text())["rule"] == good["rule"]
    # a compliance row stored before validation existed (or by hand) with controls of any shape: pages still work
    import sqlalchemy as sa

    from stockade.server import db as t

    with store.engine.begin() as con:
        con.execute(sa.update(t.compliance).where(t.compliance.c.cluster_id == cid).values(
            controls=[{"title": "no id"}, "text", None, {"control": "5.1", "status": "BOGUS", "failing_objects": 3}]))
    fws = compliance(store)
    assert fws and all(isinstance(c["control"], str) for f in fws for c in f["controls"])
    assert overview(store)["compliance"]
    with serving(store) as base:
        admin = store.create_user_token("ann", "t", "t")
        for page in ("/", "/compliance", "/alerts"):
            assert httpx.get(base + page, cookies={"stockade_session": admin}).status_code == 200, page
        assert httpx.get(base + "/api/v1/compliance", headers={"authorization": f"Bearer {admin}"}).status_code == 200


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hst.data())
def test_ingested_documents_of_any_shape_get_400_or_are_stored(tmp_path: Path, data: hst.DataObject) -> None:
    """Real alerts and a real snapshot with values of other types swapped in anywhere: ingestion answers with a
    clear error (BadRequest) or stores them, never anything else, and what is stored can be read back by every
    view and exported."""
    from stockade.server.export import run_once
    from stockade.server.store import BadRequest
    from stockade.server.views import compliance, overview

    if tmp_path not in _FUZZ_STORES:  # one store for all the examples of this run (a schema per example is slow)
        _FUZZ_STORES[tmp_path] = make_store(f"sqlite:///{tmp_path / 'fuzz.db'}")
        _FUZZ_STORES[tmp_path].create_cluster("fuzz", "t")
    store = _FUZZ_STORES[tmp_path]
    cid = store.cluster_id("fuzz")
    kind = data.draw(hst.sampled_from(["alerts", "snapshot"]))
    if not _ALERTS:
        _ALERTS.extend(audit_alerts(DEMO / "audit.jsonl")[:2])
    doc: Any = copy.deepcopy(_ALERTS) if kind == "alerts" else [_real_snapshot()]
    swap_values(doc, data, [*ODD_VALUES, 1e308, -1, 2**70, float("nan"), "9999-01-01T00:00:00Z", "\x00"])
    with contextlib.suppress(BadRequest):  # a clear error; anything else fails the test
        store.ingest(cid, kind, {"batch": uuid.uuid4().hex, "items": doc})
    store.alerts(limit=50)
    compliance(store)
    overview(store)
    with httpx.Client() as client:
        run_once(store, client, {}, None)


_FUZZ_STORES: dict[Path, Any] = {}
_ALERTS: list[dict[str, Any]] = []


def test_no_alert_text_can_forge_a_syslog_or_cef_record() -> None:
    """Titles, messages and users with CR, LF, NEL and the Unicode line separators: every RFC 5424 message and CEF
    record is one line, the RFC 5424 parser (an independent implementation) reads back the structured data as
    sent, and the CEF header keeps its seven fields."""
    import re

    from syslog_rfc5424_parser import SyslogMessage

    from stockade.server.export import to_cef, to_rfc5424

    forged = "x\r\n<13>1 2026-01-01T00:00:00Z evil stockade 1 STK-FAKE - forged\nCEF:0|a|b|c|d|e|10|"
    for sep in ("\r\n", "\n", "\r", "\x85", "\u2028", "\u2029"):
        a = {"id": 7, "rule": "STK-AUD-001", "severity": "HIGH", "title": f"title{sep}|pipe", "message": forged,
             "user": f"mallory{sep}]\"", "namespace": "ns", "last_seen": 1.8e9, "first_seen": 1.8e9, "count": 2,
             "cluster": "prod", "source_ips": ["10.0.0.1"], "tactics": ["Execution"],
             "techniques": ["T1609"]}  # fmt: skip
        for line in (to_rfc5424(a), to_cef(a), to_rfc5424(a, msg=to_cef(a))):
            assert not any(c in line for c in "\r\n\x85\u2028\u2029"), repr(line)
        m = SyslogMessage.parse(to_rfc5424(a))
        sd = m.sd["stockade@32473"]
        assert sd["user"].startswith("mallory\\") and sd["namespace"] == "ns" and sd["cluster"] == "prod"
        assert m.msg.startswith("title") and "forged" in m.msg  # the whole text stays in this one message
        fields = re.split(r"(?<!\\)\|", to_cef(a), maxsplit=7)  # the header's 7 fields, then the extensions
        assert fields[:5] == ["CEF:0", "stockade", "stockade", "0.1.0", "STK-AUD-001"], fields
        assert fields[5].startswith("title") and fields[5].endswith("\\|pipe") and fields[6].isdigit()
        assert fields[7].startswith("rt=")


def test_query_numbers_are_checked_not_500(env: Env) -> None:
    """limit=-1 (on SQLite: the whole table), offsets and ids past 2**63, and huge limits: 422 naming the
    parameter, never a 500 or an unbounded read."""
    with env.http("admin") as c:
        for path in ("/api/v1/audit-log?limit=-1", "/api/v1/alerts?limit=-1", "/api/v1/alerts?limit=100000",
                     f"/api/v1/alerts?offset={2**63}", "/api/v1/violations?limit=0", f"/api/v1/alerts/{2**63}",
                     f"/api/v1/images/{2**64}", "/api/v1/alerts/-1"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 422, (path, r.status_code, r.text)
        assert c.delete(f"/api/v1/exports/{2**63}").status_code == 422
        assert len(c.get("/api/v1/audit-log?limit=3").json()) <= 3

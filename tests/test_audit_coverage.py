"""The control-plane rules for the rest of Defender's Kubernetes alerts, each on an event derived from one of
Falco's real traces (one change per scenario) and silent on a benign neighbour that looks alike. Threat
intelligence comes from the real lists in ../shared/data/intel, built into an indicator store here."""

from __future__ import annotations

import copy
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED

from stockade.audit.detect import Detector
from stockade.audit.events import Stats, documents_to_events
from stockade.audit.rules import load


def _trace(traces: Path, name: str) -> dict[str, Any]:
    return json.loads(next(ln for ln in (traces / f"{name}.json").read_text().splitlines() if ln.strip()))


def _new(ev: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(ev)
    out["auditID"] = str(uuid.uuid4())
    out.update(changes)
    return out


def _fired(*events: dict[str, Any], rules: list[Any] | None = None) -> dict[str, Any]:
    d, st = Detector(rules or load()), Stats()
    for doc in events:
        for ev in documents_to_events(copy.deepcopy(doc), st):
            d.process(ev)
    return {a.rule: a for a in d.alerts}


def _service(traces: Path, name: str, ports: list[dict[str, Any]], kind: str = "LoadBalancer",
             ns: str = "default", ranges: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    base = _trace(traces, "create_nginx_service_nodeport")
    obj = copy.deepcopy(base["requestObject"])
    obj["metadata"]["name"], obj["metadata"]["namespace"] = name, ns
    obj["spec"].update({"type": kind, "ports": ports})
    if ranges is not None:
        obj["spec"]["loadBalancerSourceRanges"] = ranges
    return _new(base, objectRef={**base["objectRef"], "name": name, "namespace": ns}, requestObject=obj)


def test_coredns_configuration_changed(traces: Path) -> None:
    base = _trace(traces, "create_configmap")
    ev = _new(base, verb="update", objectRef={**base["objectRef"], "namespace": "kube-system", "name": "coredns"})
    assert "STK-AUD-030" in _fired(ev)
    other = _new(base, verb="update", objectRef={**base["objectRef"], "namespace": "kube-system", "name": "app-cfg"})
    assert "STK-AUD-030" not in _fired(other)
    manager = _new(ev, user={"username": "system:addon-manager", "groups": ["system:authenticated"]})
    assert "STK-AUD-030" not in _fired(manager)


def test_postgres_exposed_to_a_broad_range(traces: Path) -> None:
    pg = [{"name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]
    assert "STK-AUD-031" in _fired(_service(traces, "db", pg))  # no source ranges: the world
    assert "STK-AUD-031" in _fired(_service(traces, "db", pg, ranges=["0.0.0.0/0"]))
    assert "STK-AUD-031" not in _fired(_service(traces, "db", pg, ranges=["203.0.113.0/24"]))
    assert "STK-AUD-031" not in _fired(_service(traces, "db", pg, kind="ClusterIP"))
    web = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert "STK-AUD-031" not in _fired(_service(traces, "web", web))


def test_postgres_trust_authentication(traces: Path) -> None:
    dep = _trace(traces, "create_deployment")
    ctr = dep["requestObject"]["spec"]["template"]["spec"]["containers"][0]
    trusting = _new(dep)
    trusting["requestObject"]["spec"]["template"]["spec"]["containers"][0] = {
        **ctr, "image": "postgres:16", "env": [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"}]}
    assert "STK-AUD-032" in _fired(trusting)
    scram = _new(dep)
    scram["requestObject"]["spec"]["template"]["spec"]["containers"][0] = {
        **ctr, "image": "postgres:16", "env": [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "scram-sha-256"}]}
    assert "STK-AUD-032" not in _fired(scram)
    cm = _trace(traces, "create_configmap")
    hba = _new(cm)
    hba["requestObject"]["data"] = {"pg_hba.conf": "local all all peer\nhost all all 0.0.0.0/0 trust\n"}
    assert "STK-AUD-032" in _fired(hba)
    local = _new(cm)
    local["requestObject"]["data"] = {"pg_hba.conf": "local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\n"}
    assert "STK-AUD-032" not in _fired(local)


def test_redis_and_code_running_applications_exposed(traces: Path) -> None:
    redis = [{"name": "tcp", "port": 6379, "targetPort": 6379, "protocol": "TCP"}]
    assert "STK-AUD-033" in _fired(_service(traces, "cache", redis))
    assert "STK-AUD-033" not in _fired(_service(traces, "cache", redis, kind="ClusterIP"))
    jupyter = [{"name": "http", "port": 80, "targetPort": 8888, "protocol": "TCP"}]
    assert "STK-AUD-034" in _fired(_service(traces, "notebooks", jupyter))  # recognised by port, any name
    assert "STK-AUD-034" not in _fired(_service(traces, "shop", [{"name": "http", "port": 80, "targetPort": 8080}]))


def test_kubeflow_through_the_istio_ingress_gateway(traces: Path) -> None:
    gw = _service(traces, "istio-ingressgateway", [{"name": "http2", "port": 80, "targetPort": 8080}],
                  ns="istio-system")  # fmt: skip
    assert "STK-AUD-034" not in _fired(gw)  # Istio alone: not Kubeflow
    base = _trace(traces, "create_configmap")
    kubeflow = _new(base, objectRef={"resource": "namespaces", "name": "kubeflow", "apiVersion": "v1"},
                    requestObject={"kind": "Namespace", "metadata": {"name": "kubeflow"}})  # the install creates it
    assert "STK-AUD-034" in _fired(kubeflow, gw)


def test_attack_tools_by_user_agent(traces: Path) -> None:
    anon = _trace(traces, "create_configmap")
    for agent in ("kube-hunter/0.6.8", "peirates/1.1.20", "kubectl-who-can/v0.4.0"):
        assert "STK-AUD-035" in _fired(_new(anon, verb="list", userAgent=agent)), agent
    assert "STK-AUD-035" not in _fired(_new(anon, verb="list", userAgent="kubectl/v1.31.0 (linux/amd64)"))


def test_permission_enumeration_and_forbidden_bursts(traces: Path) -> None:
    base = _trace(traces, "create_configmap")
    user = {"username": "system:serviceaccount:shop:web", "groups": ["system:serviceaccounts"]}

    def review(i: int) -> dict[str, Any]:
        return _new(base, user=user, objectRef={"resource": "selfsubjectrulesreviews", "apiGroup":
                    "authorization.k8s.io"}, requestObject={"kind": "SelfSubjectRulesReview", "spec": {"namespace":
                    f"ns-{i}"}})  # fmt: skip

    fired = _fired(*[review(i) for i in range(20)])
    assert fired["STK-AUD-036"].count == 6  # the 15th raised it; the next five counted into it
    assert "STK-AUD-036" not in _fired(*[review(i) for i in range(5)])  # kubectl auth can-i, a few times

    def refused(i: int) -> dict[str, Any]:
        return _new(base, verb="get", user=user, objectRef={"resource": "configmaps", "namespace": f"ns-{i}",
                    "name": "x"}, responseStatus={"code": 403}, annotations={"authorization.k8s.io/decision":
                    "forbid"})  # fmt: skip

    assert "STK-AUD-039" in _fired(*[refused(i) for i in range(25)])
    assert "STK-AUD-039" not in _fired(*[refused(i) for i in range(3)])


def test_ephemeral_container_and_forbidden_secret_reads(traces: Path) -> None:
    base = _trace(traces, "create_configmap")
    debug = _new(base, verb="patch", objectRef={"resource": "pods", "subresource": "ephemeralcontainers",
                                                "namespace": "shop", "name": "web-0"})  # fmt: skip
    assert "STK-AUD-037" in _fired(debug)
    status = _new(base, verb="patch", objectRef={"resource": "pods", "subresource": "status", "namespace": "shop",
                                                 "name": "web-0"})  # fmt: skip
    assert "STK-AUD-037" not in _fired(status)
    probe = _new(base, verb="list", objectRef={"resource": "secrets", "namespace": "kube-system"},
                 responseStatus={"code": 403}, annotations={"authorization.k8s.io/decision": "forbid"})  # fmt: skip
    fired = _fired(probe)
    assert "STK-AUD-038" in fired and "STK-AUD-013" not in fired
    allowed = _new(probe, responseStatus={"code": 200}, annotations={"authorization.k8s.io/decision": "allow"})
    assert "STK-AUD-038" not in _fired(allowed)


def test_ingress_without_tls(traces: Path) -> None:
    base = _trace(traces, "create_configmap")
    spec = {"rules": [{"host": "shop.example.com"}]}

    def ingress(tls: bool) -> dict[str, Any]:
        obj = {"kind": "Ingress", "metadata": {"name": "shop"}, "spec": {**spec, **({"tls": [{"hosts":
               ["shop.example.com"], "secretName": "shop-tls"}]} if tls else {})}}  # fmt: skip
        return _new(base, objectRef={"resource": "ingresses", "apiGroup": "networking.k8s.io", "namespace": "shop",
                                     "name": "shop"}, requestObject=obj)  # fmt: skip

    assert "STK-AUD-040" in _fired(ingress(False))
    assert "STK-AUD-040" not in _fired(ingress(True))


def test_disallowed_users_and_namespaces_as_lists(traces: Path, tmp_path: Path) -> None:
    """Empty by default; a rule file replacing STK-AUD-041/042 with the pack's lists extended sets them."""
    base = _trace(traces, "create_configmap")
    ev = _new(base, user={"username": "contractor@example.com", "groups": []},
              objectRef={**base["objectRef"], "namespace": "payments"})  # fmt: skip
    assert not {"STK-AUD-041", "STK-AUD-042"} & set(_fired(ev))
    mine = tmp_path / "policy.yaml"
    mine.write_text(
        "lists:\n  disallowed_users: [contractor@example.com]\n  disallowed_namespaces: [payments]\n"
        "rules:\n"
        "  - {id: STK-AUD-041, title: Disallowed identity, severity: HIGH, mitre: {techniques: [T1078]},\n"
        "     condition: {all: [{macro: allowed}, {field: user.username, op: in, value: $disallowed_users}]},\n"
        "     remediation: Revoke it.}\n"
        "  - {id: STK-AUD-042, title: Disallowed namespace, severity: MEDIUM, mitre: {techniques: [T1578]},\n"
        "     verbs: [create, update, patch, delete],\n"
        "     condition: {all: [{macro: succeeded},\n"
        "                       {field: objectRef.namespace, op: in, value: $disallowed_namespaces}]},\n"
        "     remediation: Revert it.}\n"
    )  # fmt: skip
    fired = _fired(ev, rules=load([mine]))
    assert {"STK-AUD-041", "STK-AUD-042"} <= set(fired)
    other = _new(ev, user={"username": "dev@example.com", "groups": []}, objectRef={**base["objectRef"]})
    assert not {"STK-AUD-041", "STK-AUD-042"} & set(_fired(other, rules=load([mine])))


@pytest.fixture
def intel_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from stockade.intel import update

    store = tmp_path / "intel"
    monkeypatch.setenv("STOCKADE_INTEL_DIR", str(store))
    update(sorted((SHARED / "data" / "intel").glob("*.tar.gz")), store)
    yield store


def _first_entry(archive: str, member: str) -> str:
    with tarfile.open(SHARED / "data" / "intel" / archive) as tf:
        fh = tf.extractfile(member)
        assert fh is not None
        return next(ln.split()[0] for ln in fh.read().decode().splitlines() if ln.strip() and not ln.startswith("#"))


def test_requests_from_tor_exits_and_malicious_addresses(traces: Path, intel_store: Path) -> None:
    tor = _first_entry("SecOps-Institute+Tor-IP-Addresses.tar.gz",
                       "SecOps-Institute+Tor-IP-Addresses/tor-exit-nodes.lst")  # fmt: skip
    bad = _first_entry("stamparm+ipsum.tar.gz", "stamparm+ipsum/levels/3.txt")
    base = _trace(traces, "create_configmap")
    fired = _fired(_new(base, sourceIPs=[tor]))
    alert = fired["STK-AUD-043"]
    assert alert.indicators == [{"list": "tor_exits", "entry": str(__import__("ipaddress").ip_network(tor)),
                                 "value": tor, "source": str(intel_store / "tor-exits.txt")}]  # fmt: skip
    assert f"{tor} is on tor_exits" in alert.message
    assert "STK-AUD-044" in _fired(_new(base, sourceIPs=[bad]))
    quiet = _fired(_new(base, sourceIPs=["198.51.100.7"]))  # TEST-NET-2: on no list
    assert not {"STK-AUD-043", "STK-AUD-044"} & set(quiet)


def test_without_an_indicator_store_the_rules_load_and_stay_quiet(traces: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("STOCKADE_INTEL_DIR", str(tmp_path / "none"))
    tor = _first_entry("SecOps-Institute+Tor-IP-Addresses.tar.gz",
                       "SecOps-Institute+Tor-IP-Addresses/tor-exit-nodes.lst")  # fmt: skip
    assert "STK-AUD-043" not in _fired(_new(_trace(traces, "create_configmap"), sourceIPs=[tor]))


# Falco's INFO-level activity rules fire on these traces (falco_k8s_audit_tests.yaml); stockade's optional
# activity pack raises its INFO alert of the same name on each, and nothing without --activity
ACTIVITY = {
    "create_deployment": "K8s Deployment created", "delete_deployment": "K8s Deployment deleted",
    "create_service": "K8s Service created", "delete_service": "K8s Service deleted",
    "create_configmap": "K8s ConfigMap created", "delete_configmap": "K8s ConfigMap deleted",
    "some-user_creates_namespace_foo": "K8s Namespace created", "delete_namespace_foo": "K8s Namespace deleted",
    "create_serviceaccount": "K8s Serviceaccount created", "delete_serviceaccount": "K8s Serviceaccount deleted",
    "create_clusterrole": "K8s Role/Clusterrole created", "delete_clusterrole": "K8s Role/Clusterrole deleted",
    "create_clusterrolebinding": "K8s Role/Clusterrolebinding created",
    "delete_clusterrolebinding": "K8s Role/Clusterrolebinding deleted",
    "create_secret": "K8s Secret created", "delete_secret": "K8s Secret deleted",
}  # fmt: skip


@pytest.mark.parametrize("trace", sorted(ACTIVITY))
def test_the_activity_pack_is_the_trail_falco_keeps(traces: Path, trace: str) -> None:
    from stockade.audit.rules import ACTIVITY_PACK

    ev = _trace(traces, trace)
    assert [a.title for a in _fired(ev, rules=load([ACTIVITY_PACK])).values()] == [ACTIVITY[trace]]
    assert _fired(ev) == {}  # off by default


def test_the_activity_pack_leaves_system_work_out(traces: Path) -> None:
    from stockade.audit.rules import ACTIVITY_PACK

    for trace in ("create_kube_system_secret", "create_service_account_token_secret"):
        assert _fired(_trace(traces, trace), rules=load([ACTIVITY_PACK])) == {}, trace


def test_intel_update_offline_online_and_reload(traces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds the store from the shared archives; --online fetches the same files from the publishers
    (here a local HTTP server answering as raw.githubusercontent.com does); a running detector picks up a
    rewritten store without a restart."""
    import http.server
    import subprocess
    import sys
    import threading

    from stockade.audit.detect import IntelReloader
    from stockade.intel import FEEDS, update

    store = tmp_path / "store"
    cli = [sys.executable, "-m", "stockade.cli.main", "intel"]
    env = {**__import__("os").environ, "STOCKADE_INTEL_DIR": str(store)}
    out = subprocess.run([*cli, "update", *map(str, sorted((SHARED / "data" / "intel").glob("*.tar.gz")))],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = subprocess.run([*cli, "status"], capture_output=True, text=True, env=env).stdout
    assert "tor-exits" in status and "revision" in status
    # online: every feed's URL served from the archives' bytes; the store rebuilt from them alone
    files: dict[str, bytes] = {}
    for feed in FEEDS:
        with tarfile.open(SHARED / "data" / "intel" / f"{feed.publisher}.tar.gz") as tf:
            fh = tf.extractfile(f"{feed.publisher}/{feed.member}")
            assert fh is not None
            files["/" + feed.url.split("/", 3)[3]] = fh.read()

    class Raw(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Raw)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    import httpx

    base = f"http://127.0.0.1:{srv.server_address[1]}"
    online = tmp_path / "online"
    rep = update([], online, online=True,
                 fetch=lambda url: httpx.get(base + "/" + url.split("/", 3)[3]).content)  # fmt: skip
    srv.shutdown()
    assert set(rep.written) == {f.name for f in FEEDS}
    entries = [(d / "tor-exits.txt").read_text().splitlines()[2:] for d in (online, store)]
    assert entries[0] == entries[1] and len(entries[0]) > 1000
    # a running detector: the store appears after it started, and is picked up
    monkeypatch.setenv("STOCKADE_INTEL_DIR", str(tmp_path / "later"))
    d = Detector(load())
    reloader = IntelReloader(d, load, every_s=0)
    tor = _first_entry("SecOps-Institute+Tor-IP-Addresses.tar.gz",
                       "SecOps-Institute+Tor-IP-Addresses/tor-exit-nodes.lst")  # fmt: skip
    ev = _new(_trace(traces, "create_configmap"), sourceIPs=[tor])
    st = Stats()
    assert not [a for e in documents_to_events(copy.deepcopy(ev), st) for a in d.process(e)]
    update(sorted((SHARED / "data" / "intel").glob("*.tar.gz")), tmp_path / "later")
    assert reloader.check() and reloader.reloads == 1
    got = [a.rule for e in documents_to_events(_new(ev), st) for a in d.process(e)]
    assert "STK-AUD-043" in got


def test_the_store_is_refreshed_on_a_schedule(tmp_path: Path) -> None:
    """`audit serve --intel-refresh-hours`: the refresher fetches every list from its publisher each period and
    keeps the old lists when a fetch fails."""
    import threading

    from stockade.intel import FEEDS, IntelError, refresh_loop

    served: dict[str, bytes] = {}
    for feed in FEEDS:
        with tarfile.open(SHARED / "data" / "intel" / f"{feed.publisher}.tar.gz") as tf:
            fh = tf.extractfile(f"{feed.publisher}/{feed.member}")
            assert fh is not None
            served[feed.url] = fh.read()
    calls: list[str] = []
    stop = threading.Event()

    def fetch(url: str) -> bytes:
        calls.append(url)
        if len(calls) > len(FEEDS):  # the second round fails: the publishers are unreachable
            if len(calls) >= 2 * len(FEEDS):
                stop.set()
            raise IntelError("unreachable")
        return served[url]

    store = tmp_path / "store"
    assert refresh_loop(0.01, stop, store, fetch) == 1
    assert {p.name for p in store.glob("*.txt")} == {f"{f.name}.txt" for f in FEEDS}  # the first round's lists stay

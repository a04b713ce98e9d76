"""The live-cluster path against a local HTTP server that speaks the Kubernetes list API.

No real cluster can run on these machines (no container runtime), so the server below plays the API
server: bearer-token auth, paging with limit/continue, a 403 for one resource type, through a real
kubeconfig read by the official kubernetes client.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from stockade.posture import evaluate, load_rules
from stockade.posture.cluster import ClusterError, fetch

TOKEN = "s3cret-token"


def _pod(i: int, privileged: bool = False) -> dict:
    spec: dict = {
        "containers": [{"name": "c", "image": "r.example/web:1.0", "securityContext": {"privileged": privileged}}]
    }
    if i == 4:  # a sysctl that Pod Security baseline allows from Kubernetes 1.29 on, not on this 1.28 cluster
        spec["securityContext"] = {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]}
    return {"metadata": {"name": f"web-{i}", "namespace": "shop"}, "spec": spec}


OBJECTS = {
    "/api/v1/pods": [_pod(i, privileged=(i == 3)) for i in range(5)],
    "/api/v1/namespaces": [{"metadata": {"name": "shop"}}],
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings": [
        {
            "metadata": {"name": "oops"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "shop"}],
        }
    ],
}


class Server(ThreadingHTTPServer):
    requests: list[tuple[str, dict[str, list[str]]]]
    deny_netpol: bool = True


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *_a: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        q = parse_qs(url.query)
        self.server.requests.append((url.path, q))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"kind": "Status", "code": 401, "reason": "Unauthorized"})
        if url.path == "/version":  # as EKS reports it
            return self._send(200, {"major": "1", "minor": "28+", "gitVersion": "v1.28.15-eks-7f9249a"})
        if url.path.endswith("/networkpolicies") and self.server.deny_netpol:
            return self._send(403, {"kind": "Status", "code": 403, "reason": "Forbidden"})
        items = OBJECTS.get(url.path, [])
        limit = int(q.get("limit", ["500"])[0])
        start = int(q.get("continue", ["0"])[0])
        page = items[start : start + limit]
        meta = {"continue": str(start + limit)} if start + limit < len(items) else {}
        self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page})

    def _send(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def apiserver() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.requests = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _kubeconfig(tmp: Path, server: str, token: str) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }
    p = tmp / "kubeconfig"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_live_cluster_paged_read_only(apiserver: Server, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path, f"http://127.0.0.1:{apiserver.server_address[1]}", TOKEN)
    resources, warnings, version = fetch(kc, page_size=2)
    assert version == "v1.28.15-eks-7f9249a"
    pods = [r for r in resources if r.kind == "Pod"]
    assert sorted(p.name for p in pods) == [f"web-{i}" for i in range(5)]
    pod_pages = [q for path, q in apiserver.requests if path == "/api/v1/pods"]
    assert [q.get("continue", [""])[0] for q in pod_pages] == ["", "2", "4"]  # three pages of two
    assert all(q["limit"] == ["2"] for q in pod_pages)
    assert any("networkpolicies (HTTP 403)" in w for w in warnings)
    found = {(f.rule.id, f.resource.name) for f in evaluate(load_rules(), resources)}
    assert ("STK-PSS-B-005", "web-3") in found and ("STK-PSS-B-005", "web-0") not in found
    assert ("STK-RBAC-100", "oops") in found
    assert ("STK-RBAC-101", "web-0") in found  # pods run as shop/default, bound to cluster-admin


def test_wrong_token_and_unreachable(apiserver: Server, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path, f"http://127.0.0.1:{apiserver.server_address[1]}", "wrong")
    with pytest.raises(ClusterError, match=r"unauthorized \(HTTP 401\).*check the credentials"):
        fetch(kc)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = tmp_path / "dead"
    dead.mkdir()
    with pytest.raises(ClusterError, match="unreachable"):
        fetch(_kubeconfig(dead, f"http://127.0.0.1:{port}", TOKEN), timeout=2)
    (tmp_path / "bad").write_text("not: [a kubeconfig")
    with pytest.raises(ClusterError, match="unusable kubeconfig"):
        fetch(tmp_path / "bad")


def test_cli_live_cluster(apiserver: Server, tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path, f"http://127.0.0.1:{apiserver.server_address[1]}", TOKEN)
    out = subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", "posture", "-q", "-f", "json", "--kubeconfig", str(kc)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    findings = json.loads(out.stdout)["findings"]
    assert any(f["rule"] == "STK-PSS-B-005" and f["name"] == "web-3" for f in findings)
    # the rules follow the cluster's own version (1.28): tcp_keepalive_time is not yet a safe sysctl there
    assert any(f["rule"] == "STK-PSS-B-013" and f["name"] == "web-4" for f in findings)
    cmd = [sys.executable, "-m", "stockade.cli.main", "posture", "-q", "-f", "json", "--kubeconfig", str(kc)]
    newer = subprocess.run(
        [*cmd, "--k8s-version", "1.29"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not any(f["rule"] == "STK-PSS-B-013" for f in json.loads(newer.stdout)["findings"])


def test_live_namespace_recommendations_conclude_nothing_from_what_could_not_be_listed(
    apiserver: Server, tmp_path: Path
) -> None:
    """NetworkPolicies answered 403: no "namespace has no NetworkPolicy" (it may have one); listed and empty:
    the recommendation, naming the namespace's pods. The cluster's 1.28 ended on 2024-10-22 (kubernetes.io)."""
    from stockade.posture.assess import assess

    kc = _kubeconfig(tmp_path, f"http://127.0.0.1:{apiserver.server_address[1]}", TOKEN)
    denied = assess(kubeconfig=kc)
    assert any("networkpolicies (HTTP 403)" in w for w in denied.warnings)
    assert not [f for f in denied.findings if f.rule.id == "STK-NET-001"]
    eol = [f for f in denied.findings if f.rule.id == "STK-K8S-001"]
    assert len(eol) == 1 and eol[0].resource.raw["endOfLife"] == "2024-10-22"
    apiserver.deny_netpol = False
    listed = assess(kubeconfig=kc)
    nonet = [f.to_dict() for f in listed.findings if f.rule.id == "STK-NET-001"]
    assert [(f["name"], f["objects"]) for f in nonet] == [("shop", [f"Pod/shop/web-{i}" for i in range(5)])]

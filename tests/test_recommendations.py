"""The Kubernetes-native recommendations Defender has beside the Pod Security Standards: ingresses only over
HTTPS, ports on an allow-list, namespaces without NetworkPolicy (with their workloads, from manifests, a live
cluster and the server), objects in the default namespace, AppArmor profiles on an allow-list, and a cluster on
a Kubernetes release past its end of life. Each fires on its case and stays silent on a benign neighbour."""

from __future__ import annotations

import copy
import tarfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SHARED

from stockade.kube import to_resource
from stockade.posture import evaluate, load_rules
from stockade.posture.assess import assess
from stockade.posture.releases import cluster_resource
from stockade.rules import RuleError


def ids(objs: list[dict[str, Any]], params: dict[str, dict[str, Any]] | None = None) -> set[tuple[str, str, str]]:
    found = evaluate(load_rules(params=params), [to_resource(copy.deepcopy(o)) for o in objs], cross=False)
    return {(f.rule.id, f.resource.name, f.container) for f in found}


def ingress(name: str, tls: bool, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType":
                            "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}  # fmt: skip
    if tls:
        spec["tls"] = [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "annotations": annotations or {}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def test_ingress_only_over_https() -> None:
    found = ids([ingress("plain", tls=False), ingress("secure", tls=True),
                 ingress("both", tls=True, annotations={"kubernetes.io/ingress.allow-http": "true"}),
                 ingress("closed", tls=True, annotations={"kubernetes.io/ingress.allow-http": "false"})])  # fmt: skip
    assert {n for r, n, _ in found if r == "STK-NET-003"} == {"plain", "both"}


def _pod(name: str, ports: list[int], sc: dict[str, Any] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    ctr: dict[str, Any] = {"name": "app", "image": "registry.example/app:1",
                           "ports": [{"containerPort": p} for p in ports]}  # fmt: skip
    if sc:
        ctr["securityContext"] = sc
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop",
            "annotations": annotations or {}}, "spec": {"containers": [ctr]}}  # fmt: skip


def _service(name: str, ports: list[int], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": p, "targetPort": p} for p in ports]}}  # fmt: skip


def test_ports_outside_the_allow_list_once_it_is_set(tmp_path: Path) -> None:
    objs = [_pod("web", [8080]), _pod("debug", [8080, 5005]), _service("web", [443]), _service("admin", [9000])]
    # off until the allow-list is given: no port is judged
    assert not {r for r, _, _ in ids(objs)} & {"STK-NET-004", "STK-NET-005"}
    params = {"STK-NET-004": {"allowed_ports": [8080, 8443]}, "STK-NET-005": {"allowed_ports": [80, 443]}}
    found = ids(objs, params)
    assert {(r, n) for r, n, _ in found if r in ("STK-NET-004", "STK-NET-005")} == {
        ("STK-NET-004", "debug"), ("STK-NET-005", "admin")}  # fmt: skip
    # through the exceptions file, as users set it
    manifests = tmp_path / "m.yaml"
    manifests.write_text(yaml.safe_dump_all(objs))
    exc = tmp_path / "exceptions.yaml"
    exc.write_text(yaml.safe_dump({"parameters": params}))
    result = assess([manifests], exceptions=exc)
    assert {(f.rule.id, f.resource.name) for f in result.findings if f.rule.id.startswith("STK-NET-00")} >= {
        ("STK-NET-004", "debug"), ("STK-NET-005", "admin")}  # fmt: skip
    for bad, message in (({"STK-NET-004": {"allowed": [1]}}, "no parameter allowed"),
                         ({"STK-NOPE-1": {"allowed_ports": [1]}}, "unknown rule")):  # fmt: skip
        exc.write_text(yaml.safe_dump({"parameters": bad}))
        with pytest.raises(RuleError, match=message):
            assess([manifests], exceptions=exc)


def test_objects_in_the_default_namespace_but_what_kubernetes_puts_there() -> None:
    objs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "default"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password"}},  # no namespace: default
        _service("web", [80], namespace="default"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "default"}},
        # Kubernetes' own, in every default namespace
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": "default"}},
        _service("kubernetes", [443], namespace="default"),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}},
        # elsewhere
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "shop"}},
    ]
    found = {n for r, n, _ in ids(objs) if r == "STK-WL-015"}
    assert found == {"app-config", "db-password", "web", "deployer"}
    assert len([1 for r, _, _ in ids(objs) if r == "STK-WL-015"]) == 4


def test_apparmor_profiles_on_the_allow_list() -> None:
    local = {"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-nginx"}}
    objs = [
        _pod("custom", [80], sc=local),
        _pod("default", [80], sc={"appArmorProfile": {"type": "RuntimeDefault"}}),
        _pod("annotated", [80], annotations={"container.apparmor.security.beta.kubernetes.io/app": "localhost/k8s-x"}),
        _pod("runtime", [80], annotations={"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}),
    ]
    assert {n for r, n, _ in ids(objs) if r == "STK-WL-016"} == {"custom", "annotated"}
    allowed = {"STK-WL-016": {"allowed_localhost_profiles": ["k8s-nginx", "k8s-x"]}}
    assert not {n for r, n, _ in ids(objs, allowed) if r == "STK-WL-016"}


def test_cluster_past_end_of_life() -> None:
    """End-of-life dates from the Kubernetes release history (kubernetes/website data/releases/eol.yaml and
    kubernetes.io/releases): 1.27 ended 2024-07-16, 1.35 ends 2027-02-28."""
    today = date(2026, 12, 6)
    old = cluster_resource("v1.27.16", today=today)
    new = cluster_resource("v1.35.2-eks-1234", today=today)
    future = cluster_resource("v1.99.0", today=today)
    assert old is not None and new is not None and future is not None
    assert old.raw["endOfLife"] == "2024-07-16" and old.raw["daysPastEndOfLife"] == (today - date(2024, 7, 16)).days
    assert new.raw["endOfLife"] == "2027-02-28" and new.raw["daysPastEndOfLife"] == 0
    found = evaluate(load_rules(), [old, new, future], cross=False)
    assert [f.resource.raw["version"] for f in found if f.rule.id == "STK-K8S-001"] == ["1.27"]
    assert cluster_resource("not a version") is None


def _boutique(tmp_path: Path) -> Path:
    out = tmp_path / "boutique.yaml"
    with tarfile.open(SHARED / "data" / "manifests" / "real-manifests.tar.gz") as tf:
        member = tf.extractfile("release/kubernetes-manifests.yaml")
        assert member is not None
        out.write_bytes(member.read())
    return out


def test_namespace_without_networkpolicy_names_its_workloads(tmp_path: Path) -> None:
    """Online Boutique has no NetworkPolicy: one recommendation for its namespace, listing every Deployment in the
    file (read here with PyYAML); a default-deny policy in the namespace silences it."""
    path = _boutique(tmp_path)
    deployments = sorted(f"Deployment/{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}"
                         for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Deployment")  # fmt: skip
    assert len(deployments) == 12
    result = assess([path])
    nonet = [f for f in result.findings if f.rule.id == "STK-NET-001"]
    assert [f.resource.name for f in nonet] == ["default"]
    assert nonet[0].to_dict()["objects"] == [d.replace("Deployment/default/", "Deployment/") for d in deployments]
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                      "metadata": {"name": "default-deny"},
                                      "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}))  # fmt: skip
    assert not [f for f in assess([path, policy]).findings if f.rule.id == "STK-NET-001"]


def test_networkpolicy_recommendation_reaches_the_server_with_its_workloads(tmp_path: Path) -> None:
    """End to end: the agent's snapshot of the manifests, ingested by the server, shown by its API."""
    import httpx
    from server_util import make_store, serving

    from stockade.posture import load_manifests
    from stockade.server.agent import snapshot

    resources, _ = load_manifests([_boutique(tmp_path)])
    snap = snapshot(resources, "v1.30.4")
    store = make_store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("ann", "correct horse battery", "reader")
    token = store.create_user_token("ann", "t", "t")
    cid, _ = store.create_cluster("prod", "t")
    store.ingest(cid, "snapshot", {"batch": "b", "items": [snap]})
    with serving(store) as base:
        recs = httpx.get(f"{base}/api/v1/recommendations", params={"cluster": "prod"},
                         headers={"authorization": f"Bearer {token}"}).json()  # fmt: skip
    nonet = next(r for r in recs if r["rule"] == "STK-NET-001")
    assert [x["name"] for x in nonet["resources"]] == ["default"]
    assert len(nonet["resources"][0]["objects"]) == 12
    eol = next(r for r in recs if r["rule"] == "STK-K8S-001")  # 1.30 ended 2025-07-15
    assert eol["resources"][0]["kind"] == "Cluster"

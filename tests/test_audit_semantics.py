"""The audit engine's semantics on events derived from Falco's real traces (one field changed per case): a
request is judged once, on the stage that carries its outcome; service accounts of workloads are watched like
people; paths are matched as paths, not strings; namespaced Roles are judged like ClusterRoles. Every case has
a benign neighbour that looks alike."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from stockade.audit.detect import Detector
from stockade.audit.events import Stats, documents_to_events
from stockade.audit.rules import load


def _trace(traces: Path, name: str) -> dict[str, Any]:
    line = next(ln for ln in (traces / f"{name}.json").read_text().splitlines() if ln.strip())
    return json.loads(line)


def _alerts(*events: dict[str, Any]) -> list[tuple[str, int]]:
    d, st = Detector(load()), Stats()
    for doc in events:
        for ev in documents_to_events(copy.deepcopy(doc), st):
            d.process(ev)
    return sorted((a.rule, a.count) for a in d.alerts)


def _new(ev: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The event as another request (a new auditID), with ``changes`` applied (dotted keys reach inside)."""
    out = copy.deepcopy(ev)
    out["auditID"] = str(uuid.uuid4())
    for key, value in changes.items():
        node = out
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


# -- stages and decisions ------------------------------------------------------------------------------------


def test_one_request_at_three_stages_is_one_alert(traces: Path) -> None:
    """The real exec (logged at ResponseStarted, code 101) as the API server logs a long-running request at every
    stage: RequestReceived (no decision yet), ResponseStarted, ResponseComplete. One alert, counted once."""
    started = _trace(traces, "exec_pod")
    received = {**copy.deepcopy(started), "stage": "RequestReceived", "annotations": {}}
    received.pop("responseStatus")
    complete = {**copy.deepcopy(started), "stage": "ResponseComplete"}
    assert _alerts(received, started, complete) == [("STK-AUD-001", 1)]
    # the same exec logged twice (a webhook batch retried): still one request
    assert _alerts(started, started) == [("STK-AUD-001", 1)]
    # two execs are two requests
    assert _alerts(started, _new(started)) == [("STK-AUD-001", 2)]


def test_a_denied_exec_raises_nothing_even_from_its_first_stage(traces: Path) -> None:
    """RequestReceived carries no authorization decision: judging it raised an exec that RBAC then refused."""
    started = _trace(traces, "exec_pod")
    received = {**copy.deepcopy(started), "stage": "RequestReceived", "annotations": {}}
    received.pop("responseStatus")
    denied = {**copy.deepcopy(started), "stage": "ResponseComplete", "responseStatus": {"code": 403},
              "annotations": {"authorization.k8s.io/decision": "forbid"}}  # fmt: skip
    assert _alerts(received, denied) == []
    assert _alerts(received) == []


# -- service accounts are watched ------------------------------------------------------------------------------


STOLEN = "system:serviceaccount:shop:web"  # a workload's token, as an attacker who took over the pod holds it


@pytest.mark.parametrize(
    ("verb", "resource", "sub", "rule", "control_plane"),
    [
        ("get", "secrets", "", "STK-AUD-013", "system:kube-controller-manager"),
        ("create", "serviceaccounts", "token", "STK-AUD-014", "system:node:node-1"),
        ("update", "certificatesigningrequests", "approval", "STK-AUD-015", "system:kube-controller-manager"),
        ("delete", "validatingwebhookconfigurations", "", "STK-AUD-021", "system:apiserver"),
        ("deletecollection", "events", "", "STK-AUD-022", "system:serviceaccount:kube-system:namespace-controller"),
        ("create", "daemonsets", "", "STK-AUD-023", "system:serviceaccount:kube-system:generic-garbage-collector"),
        ("create", "cronjobs", "", "STK-AUD-024", "system:serviceaccount:kube-system:cronjob-controller"),
        ("get", "services", "proxy", "STK-AUD-026", "system:apiserver"),
    ],
)
def test_a_stolen_service_account_token_is_watched(traces: Path, verb: str, resource: str, sub: str, rule: str,
                                                   control_plane: str) -> None:  # fmt: skip
    base = _trace(traces, "create_deployment")
    ref = {"resource": resource, "namespace": "shop", "name": "x", "apiVersion": "v1",
           **({"subresource": sub} if sub else {})}  # fmt: skip
    ev = _new(base, verb=verb, objectRef=ref, requestObject=None, user={"username": STOLEN, "groups": [
        "system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]})  # fmt: skip
    ev.pop("requestObject")
    assert rule in {r for r, _ in _alerts(ev)}
    # the control plane's own identity doing the same is its job
    mine = _new(ev, user={"username": control_plane, "groups": ["system:authenticated"]})
    assert rule not in {r for r, _ in _alerts(mine)}


# -- paths, not strings -----------------------------------------------------------------------------------------


def test_health_checks_are_matched_by_path_not_query(traces: Path) -> None:
    anon = _trace(traces, "anonymous_creates_namespace_foo")
    health = _new(anon, verb="get", requestURI="/healthz?verbose", objectRef={})
    assert _alerts(health) == []
    assert _alerts(_new(anon, verb="get", requestURI="/livez?exclude=etcd", objectRef={})) == []
    got = {r for r, _ in _alerts(_new(anon, verb="get", requestURI="/api/v1/namespaces?limit=1",
                                      objectRef={"resource": "namespaces"}))}  # fmt: skip
    assert got == {"STK-AUD-010"}


@pytest.mark.parametrize(("path", "sensitive"), [
    ("/home/admin", True), ("/etc/kubernetes/pki", True), ("/var/lib/kubelet/pods", True), ("/", True),
    ("//etc//", True), ("/usr/local/../../etc/shadow", True), ("/run/containerd/containerd.sock", True),
    ("/homework", False), ("/usr/local", False), ("/data/app", False), ("/etcd-backups", False),
])  # fmt: skip
def test_sensitive_host_paths_by_prefix(traces: Path, path: str, sensitive: bool) -> None:
    ev = _new(_trace(traces, "create_nginx_pod_sensitive_mount"))
    for vol in ev["requestObject"]["spec"]["volumes"]:
        if "hostPath" in vol:
            vol["hostPath"]["path"] = path
    assert ("STK-AUD-004" in {r for r, _ in _alerts(ev)}) is sensitive


# -- namespaced Roles ---------------------------------------------------------------------------------------------


def _role(ev: dict[str, Any], kind: str, name: str, verbs: list[str], verb: str = "create") -> dict[str, Any]:
    resource = "roles" if kind == "Role" else "clusterroles"
    ref = {**ev["objectRef"], "resource": resource, "name": name, **({"namespace": "shop"} if kind == "Role" else {})}
    obj = {**ev["requestObject"], "kind": kind, "metadata": {"name": name},
           "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]}  # fmt: skip
    return _new(ev, verb=verb, objectRef=ref, requestObject=obj)


def test_namespaced_roles_are_judged_like_clusterroles(traces: Path) -> None:
    base = _trace(traces, "create_cluster_role_write_privileges")
    assert "STK-AUD-007" in {r for r, _ in _alerts(_role(base, "Role", "editor", ["get", "update"]))}
    assert "STK-AUD-007" not in {r for r, _ in _alerts(_role(base, "Role", "viewer", ["get", "list"]))}
    assert "STK-AUD-028" in {r for r, _ in _alerts(_role(base, "Role", "system:controller:x", ["get"], "patch"))}
    assert "STK-AUD-028" not in {r for r, _ in _alerts(_role(base, "Role", "app-config", ["get"], "patch"))}

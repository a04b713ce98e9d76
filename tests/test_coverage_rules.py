"""Rules that docs/coverage.md calls covering a Defender alert or recommendation, each shown both ways here
where no other test named it: it fires on the behaviour and stays silent on a benign neighbour that looks alike.
The sensor cases go through the Falco adapter, as events from a Falco deployment would."""

from __future__ import annotations

import copy
from typing import Any

from stockade.kube import to_resource
from stockade.posture import evaluate, load_rules
from stockade.sensor.adapters import convert
from stockade.sensor.detect import Detector
from stockade.sensor.rules import load as load_sensor


def _fires(rule: str, objs: list[dict[str, Any]]) -> set[str]:
    found = evaluate(load_rules(), [to_resource(copy.deepcopy(o)) for o in objs], cross=False)
    return {f.resource.name for f in found if f.rule.id == rule}


def _pod(name: str, spec: dict[str, Any] | None = None, sc: dict[str, Any] | None = None,
         ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    ctr: dict[str, Any] = {"name": "app", "image": "registry.example/app:1"}
    if sc is not None:
        ctr["securityContext"] = sc
    if ports is not None:
        ctr["ports"] = ports
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
            "spec": {**(spec or {}), "containers": [ctr]}}  # fmt: skip


def test_host_namespaces_any_of_three() -> None:  # recommendation 16
    objs = [_pod("pid", {"hostPID": True}), _pod("ipc", {"hostIPC": True}), _pod("net", {"hostNetwork": True}),
            _pod("off", {"hostPID": False, "hostIPC": False, "hostNetwork": False})]  # fmt: skip
    assert _fires("STK-PSS-B-001", objs) == {"pid", "ipc", "net"}


def test_sys_admin_and_other_added_capabilities() -> None:  # recommendations 24 and 26
    objs = [_pod("admin", sc={"capabilities": {"add": ["SYS_ADMIN"]}}),
            _pod("default-set", sc={"capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"]}})]  # fmt: skip
    assert _fires("STK-PSS-B-006", objs) == {"admin"}


def test_host_ports() -> None:  # recommendation 32
    objs = [_pod("bound", ports=[{"containerPort": 80, "hostPort": 80}]), _pod("plain", ports=[{"containerPort": 80}])]
    assert _fires("STK-PSS-B-008", objs) == {"bound"}


def test_read_only_root_filesystem() -> None:  # recommendation 20
    objs = [_pod("rw", sc={}), _pod("ro", sc={"readOnlyRootFilesystem": True})]
    assert _fires("STK-WL-002", objs) == {"rw"}


def test_service_account_token_automount() -> None:  # recommendation 23
    objs = [_pod("mounts"), _pod("opted-out", {"automountServiceAccountToken": False})]
    assert _fires("STK-WL-006", objs) == {"mounts"}
    sas = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "shop"}},
           {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "web"},
            "automountServiceAccountToken": False}]  # fmt: skip
    found = evaluate(load_rules(), [to_resource(s) for s in sas], cross=False)
    assert {f.resource.namespace for f in found if f.rule.id == "STK-RBAC-010"} == {"shop"}


def _falco(evt: str, comm: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"output": "...", "rule": "x", "output_fields": {
        "evt.type": evt, "proc.name": comm, "proc.exepath": f"/usr/bin/{comm}", "proc.cmdline": comm, "proc.pid": 42,
        "proc.ppid": 1, "user.uid": 0, "container.id": "c0ffee", "k8s.pod.name": "web", "k8s.ns.name": "shop",
        **fields}}  # fmt: skip


def _alerts(*docs: dict[str, Any]) -> set[tuple[str, str]]:
    d = Detector(load_sensor())
    for doc in docs:
        ev = convert(doc)
        assert ev is not None
        d.process(ev)
    return {(a.rule, a.evidence[0]["proc"]["comm"] if a.evidence else "") for a in d.alerts}


def test_cloud_metadata_service_reached_from_a_pod() -> None:  # K8S.NODE_ImdsCall
    got = _alerts(_falco("connect", "curl", {"fd.sip": "169.254.169.254", "fd.sport": 80}),
                  _falco("connect", "wget", {"fd.sip": "10.0.0.12", "fd.sport": 80}))  # fmt: skip
    assert [c for r, c in got if r == "STK-RT-016"] == ["curl"]


def test_logs_deleted() -> None:  # K8S.NODE_SystemLogRemoval
    got = _alerts(_falco("unlink", "rm", {"fd.name": "/var/log/auth.log"}),
                  _falco("unlink", "logrotate", {"fd.name": "/var/log/syslog.1"}),
                  _falco("unlink", "cp", {"fd.name": "/tmp/build.log"}))  # fmt: skip
    assert [c for r, c in got if r == "STK-RT-017"] == ["rm"]


def test_limits_and_probes_only_where_the_api_allows_them() -> None:
    """Ephemeral containers cannot have resources or probes, init containers no liveness probe unless they are
    sidecars (restartPolicy Always): STK-WL-003/004/009 flagged them all. The app container and the sidecar
    without what they need are still flagged."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}, "spec": {
        "initContainers": [{"name": "migrate", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                           {"name": "proxy", "image": "s", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "a"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}}  # fmt: skip
    found = evaluate(load_rules(), [to_resource(pod)], cross=False)
    got = {(f.rule.id, f.container) for f in found if f.rule.id in ("STK-WL-003", "STK-WL-004", "STK-WL-009")}
    assert got == {("STK-WL-003", "app"), ("STK-WL-004", "app"), ("STK-WL-009", "app"),
                   ("STK-WL-003", "proxy"), ("STK-WL-004", "proxy"), ("STK-WL-009", "proxy")}  # fmt: skip

"""Control-plane detection on the 48 real audit traces in ../shared (Falco's k8s audit test traces), with
Falco's own test expectations as the oracle, plus synthetic attack sequences, the cloud log shapes,
malformed input and resuming a rotated log."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import ODD_VALUES, swap_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from stockade.audit.detect import Detector
from stockade.audit.events import (
    DEFERRABLE,
    FileState,
    Stats,
    documents_to_events,
    parse_batch,
    parse_stream,
    read_file,
)
from stockade.audit.rules import AuditRuleError, Index, load, parse
from stockade.rules import compile_group

CLI = [sys.executable, "-m", "stockade.cli.main"]

# Oracle: falcosecurity/falco test/falco_k8s_audit_tests.yaml, the detect_counts of each trace under Falco's
# default k8s audit rules, and the traces it expects nothing from. Falco rule -> stockade rule:
FALCO = {
    "Create Privileged Pod": "STK-AUD-002",
    "Create HostNetwork Pod": "STK-AUD-003",
    "Create Sensitive Mount Pod": "STK-AUD-004",
    "ClusterRole With Wildcard Created": "STK-AUD-005",
    "ClusterRole With Write Privileges Created": "STK-AUD-007",
    "ClusterRole With Pod Exec Created": "STK-AUD-008",
    "Attach to cluster-admin Role": "STK-AUD-009",
    "Anonymous Request Allowed": "STK-AUD-010",
    "Create NodePort Service": "STK-AUD-011",
    "Attach/Exec Pod": "STK-AUD-001",
    "Pod Created in Kube Namespace": "STK-AUD-017",
    "Service Account Created in Kube Namespace": "STK-AUD-018",
    "System ClusterRole Modified/Deleted": "STK-AUD-028",
    "Create/Modify Configmap With Private Credentials": "STK-AUD-029",
}
DETECT = {
    "create_nginx_pod_privileged": ("Create Privileged Pod", 1),
    "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container": ("Create Privileged Pod", 1),
    "create_nginx_pod_privileged_2nd_container": ("Create Privileged Pod", 1),
    "create_nginx_pod_sensitive_mount": ("Create Sensitive Mount Pod", 1),
    "create_nginx_pod_sensitive_mount_2nd_container": ("Create Sensitive Mount Pod", 1),
    "create_nginx_pod_hostnetwork": ("Create HostNetwork Pod", 1),
    "create_nginx_service_nodeport": ("Create NodePort Service", 1),
    "create_configmap_sensitive_values": ("Create/Modify Configmap With Private Credentials", 6),
    "anonymous_creates_namespace_foo": ("Anonymous Request Allowed", 1),
    "exec_pod": ("Attach/Exec Pod", 1),
    "attach_pod": ("Attach/Exec Pod", 1),
    "create_pod_kube_system_namespace": ("Pod Created in Kube Namespace", 1),
    "create_pod_kube_public_namespace": ("Pod Created in Kube Namespace", 1),
    "create_serviceaccount_kube_system_namespace": ("Service Account Created in Kube Namespace", 1),
    "create_serviceaccount_kube_public_namespace": ("Service Account Created in Kube Namespace", 1),
    "delete_cluster_role_kube_aggregator": ("System ClusterRole Modified/Deleted", 1),
    "modify_cluster_role_node_problem_detector": ("System ClusterRole Modified/Deleted", 1),
    "attach_cluster_admin_role": ("Attach to cluster-admin Role", 1),
    "create_cluster_role_wildcard_resources": ("ClusterRole With Wildcard Created", 1),
    "create_cluster_role_wildcard_verbs": ("ClusterRole With Wildcard Created", 1),
    "create_cluster_role_write_privileges": ("ClusterRole With Write Privileges Created", 1),
    "create_cluster_role_pod_exec": ("ClusterRole With Pod Exec Created", 1),
}
# detect: False in Falco's tests, or only its INFO-level activity log ("K8s Deployment Created" and the like):
# ordinary operations, which must raise nothing here.
BENIGN = {
    "create_nginx_pod_unprivileged", "create_nginx_pod_unsensitive_mount", "create_nginx_pod_nohostnetwork",
    "create_nginx_service_nonodeport", "create_configmap_no_sensitive_values", "create_service_account_token_secret",
    "create_kube_system_secret", "minikube_creates_namespace_foo", "some-user_creates_namespace_foo",
    "create_deployment", "delete_deployment", "create_service", "delete_service", "create_configmap",
    "delete_configmap", "delete_namespace_foo", "create_serviceaccount", "delete_serviceaccount",
    "create_clusterrole", "delete_clusterrole", "create_clusterrolebinding", "delete_clusterrolebinding",
    "create_secret", "delete_secret", "fal_01_003",
}  # fmt: skip


def _run(path: Path, lazy: bool = False) -> tuple[Detector, Stats]:
    """The rule pack over a log file, parsed in full or (``lazy``) as `audit scan FILE` parses it."""
    d, st = Detector(load()), Stats()
    for _off, ev in read_file(path, st, wants=d.wants if lazy else None):
        d.process(ev)
    return d, st


def test_every_trace_is_classified(traces: Path) -> None:
    names = {p.stem for p in traces.glob("*.json")}
    assert len(names) == 47 and names == set(DETECT) | BENIGN  # the 48th file is the directory's CMakeLists.txt


@pytest.mark.parametrize("trace", sorted(DETECT))
def test_attack_traces_raise_what_falco_expects(traces: Path, trace: str) -> None:
    falco_rule, count = DETECT[trace]
    d, _st = _run(traces / f"{trace}.json")
    got = Counter()
    for a in d.alerts:
        got[a.rule] += a.count
    assert got[FALCO[falco_rule]] == count, got
    a = next(a for a in d.alerts if a.rule == FALCO[falco_rule])
    assert a.techniques and a.tactics and a.remediation and a.user and a.evidence and a.time


@pytest.mark.parametrize("trace", sorted(BENIGN))
def test_benign_traces_raise_nothing(traces: Path, trace: str) -> None:
    d, st = _run(traces / f"{trace}.json")
    assert d.alerts == []
    if trace == "fal_01_003":  # Falco: "data not recognized as a k8s audit event"
        assert st.malformed == 1 and "not recognized" in next(iter(st.reasons))


def _event(verb: str, resource: str, user: str = "mallory@example.com", ns: str = "default", name: str = "x",
           sub: str = "", obj: dict[str, Any] | None = None, ts: str = "2026-11-23T10:00:00.000000Z",
           groups: list[str] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{ns}/{resource}/{name}",
        "verb": verb,
        "user": {"username": user, "groups": groups or ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7"],
        "userAgent": "kubectl/v1.31.0",
        "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": ts,
        "stageTimestamp": ts,
        "annotations": {"authorization.k8s.io/decision": "allow"},
        **extra,
    }
    if sub:
        ev["objectRef"]["subresource"] = sub
    if obj is not None:
        ev["requestObject"] = obj
    return ev


def _deploy(kind: str, image: str, **pod: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "c", "image": image}], **pod}
    if kind == "CronJob":
        return {"kind": kind, "apiVersion": "batch/v1",
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}}}  # fmt: skip
    return {"kind": kind, "apiVersion": "apps/v1", "spec": {"template": {"spec": spec}}}


SCENARIOS = [
    ("crypto-miner daemonset", [_event("create", "daemonsets", obj=_deploy("DaemonSet", "docker.io/evil/xmrig:latest"))],  # noqa: E501
     {"STK-AUD-020", "STK-AUD-023"}),
    ("privileged deployment", [_event("create", "deployments", obj=_deploy("Deployment", "nginx", hostPID=True))],
     {"STK-AUD-003"}),
    ("untrusted registry", [_event("create", "deployments", obj=_deploy("Deployment", "evil.example.com:5000/tool:1"))],
     {"STK-AUD-019"}),
    ("cronjob by a person", [_event("create", "cronjobs", obj=_deploy("CronJob", "busybox"))], {"STK-AUD-024"}),
    ("webhook deleted", [_event("delete", "validatingwebhookconfigurations", ns="", name="gatekeeper")], {"STK-AUD-021"}),  # noqa: E501
    ("events wiped", [_event("deletecollection", "events", name="")], {"STK-AUD-022"}),
    ("impersonation", [_event("list", "secrets", ns="prod", impersonatedUser={"username": "system:admin"})],
     {"STK-AUD-016", "STK-AUD-013"}),
    ("token minted", [_event("create", "serviceaccounts", sub="token", ns="kube-system", name="admin")], {"STK-AUD-014"}),  # noqa: E501
    ("csr approved", [_event("update", "certificatesigningrequests", sub="approval", ns="", name="csr-1")], {"STK-AUD-015"}),  # noqa: E501
    ("port-forward", [_event("create", "pods", sub="portforward", name="db-0")], {"STK-AUD-025"}),
    ("kubelet via nodes/proxy", [_event("get", "nodes", sub="proxy", ns="", name="node-1")], {"STK-AUD-027"}),
    ("service proxy", [_event("get", "services", sub="proxy", name="grafana")], {"STK-AUD-026"}),
    ("dashboard exposed", [_event("create", "services", ns="kubernetes-dashboard", name="kubernetes-dashboard",
                                  obj={"kind": "Service", "spec": {"type": "LoadBalancer"}})],
     {"STK-AUD-011", "STK-AUD-012"}),
    ("escalate role", [_event("create", "clusterroles", ns="", name="r",
                              obj={"kind": "ClusterRole", "rules": [{"resources": ["clusterroles"], "verbs": ["escalate"]}]})],  # noqa: E501
     {"STK-AUD-006"}),
    # benign system activity
    ("kubelet reads its secrets", [_event("get", "secrets", user="system:node:node-1")], set()),
    ("controller approves csr", [_event("update", "certificatesigningrequests", sub="approval", ns="", name="c",
                                        user="system:kube-controller-manager")], set()),
    ("denied exec", [_event("create", "pods", sub="exec", responseStatus={"code": 403},
                            annotations={"authorization.k8s.io/decision": "forbid"})], set()),
    ("health check", [_event("get", "", user="system:anonymous", ns="", requestURI="/healthz",
                             groups=["system:unauthenticated"])], set()),
]  # fmt: skip


@pytest.mark.parametrize(("name", "events", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_synthetic_attack_sequences(name: str, events: list[dict[str, Any]], expected: set[str]) -> None:
    d, st = Detector(load()), Stats()
    for doc in events:
        for ev in documents_to_events(copy.deepcopy(doc), st):
            d.process(ev)
    assert {a.rule for a in d.alerts} == expected


def test_event_times_to_the_second() -> None:
    """The dedup window's clock (detect._epoch, cached by UTC second) against Python's own RFC 3339 parser."""
    from datetime import datetime

    from stockade.audit.detect import _epoch

    for ts in ["2019-07-26T21:20:04.123456Z", "2019-07-26T21:20:04Z", "2024-02-29T23:59:59.999999Z",
               "2019-07-26T23:20:04.5+02:00", "2019-07-26T16:20:04-05:00"]:  # fmt: skip
        assert _epoch(ts) == int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()), ts
    assert _epoch("yesterday") == 0.0 and _epoch("") == 0.0 and _epoch("not a time at all, Z") == 0.0


def test_a_burst_is_one_alert_with_a_count() -> None:
    d, st = Detector(load(), window_s=600), Stats()
    for i in range(50):
        ts = f"2026-11-23T10:{i // 60:02d}:{i % 60:02d}.000000Z"
        for ev in documents_to_events(_event("create", "pods", sub="exec", name="web-0", ts=ts), st):
            d.process(ev)
    for ev in documents_to_events(_event("create", "pods", sub="exec", name="web-0", ts="2026-11-23T11:30:00Z"), st):
        d.process(ev)  # past the window: a new alert
    assert [(a.rule, a.count) for a in d.alerts] == [("STK-AUD-001", 50), ("STK-AUD-001", 1)]
    assert len(d.alerts[0].evidence) == 3 and d.alerts[0].last_time.startswith("2026-11-23T10:00:49")


def test_cloud_shapes_give_the_same_alerts(traces: Path) -> None:
    for label, doc in _cloud_shapes(traces).items():
        d, st = Detector(load()), Stats()
        for e in documents_to_events(doc, st):
            d.process(e)
        assert [a.rule for a in d.alerts] == ["STK-AUD-001"], label
        assert d.alerts[0].resource == "pods/exec" and d.alerts[0].namespace == "default", label


def _cloud_shapes(traces: Path) -> dict[str, Any]:
    """The exec_pod trace's event in each shape stockade reads."""
    raw = [json.loads(line) for line in (traces / "exec_pod.json").read_text().splitlines() if line.strip()]
    ev = raw[0]
    return {
        "EventList (webhook backend)": {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [ev]},
        "AKS diagnostic logs": {"records": [{"category": "kube-audit", "properties": {"log": json.dumps(ev)}}]},
        "EKS CloudWatch export": {"@timestamp": "2018-10-26", "@message": json.dumps(ev)},
        "EKS subscription": {"logEvents": [{"id": "1", "message": json.dumps(ev)}]},
        "GKE Cloud Audit Logs": {
            "insertId": "abc",
            "timestamp": ev["stageTimestamp"],
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "methodName": "io.k8s.core.v1.pods.exec.create",
                "resourceName": f"core/v1/namespaces/default/pods/{ev['objectRef']['name']}/exec",
                "authenticationInfo": {"principalEmail": "mallory@example.com"},
                "requestMetadata": {"callerIp": "203.0.113.7", "callerSuppliedUserAgent": "kubectl"},
                "status": {},
            },
            "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "prod"}},
        },
    }


def _public(x: Any) -> Any:
    """x without the engine's derived keys (those starting with "_"), at any depth."""
    if isinstance(x, dict):
        return {k: _public(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        return [_public(v) for v in x]
    return x


def _alerts(d: Detector) -> list[dict[str, Any]]:
    out = []
    for a in d.alerts:
        x = a.to_dict()
        x["evidence"] = [_public(e) for e in x["evidence"]]
        out.append(x)
    return out


def _mixed(traces: Path, tmp_path: Path) -> Path:
    """Every trace in one log, twice over (bursts and repeats): the second time as new requests (auditIDs
    changed), since a request logged twice is judged once."""
    log = tmp_path / "mixed.log"
    data = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in sorted(traces.glob("*.json")))
    log.write_bytes(data + re.sub(rb'"auditID":"([0-9a-f-]+)"', rb'"auditID":"\1-again"', data))
    return log


def test_lazy_parsing_gives_the_same_alerts_and_stats(traces: Path, tmp_path: Path) -> None:
    """With the detector's wants (what `audit scan` passes), an event's request and response objects are parsed
    only for rules that read them; the alerts must be those of parsing everything, evidence included."""
    for path in [*sorted(traces.glob("*.json")), _mixed(traces, tmp_path)]:
        full, full_st = _run(path)
        lazy, lazy_st = _run(path, lazy=True)
        assert _alerts(lazy) == _alerts(full), path.name
        for a in lazy.alerts:  # the JSON line written (evidence as it came) is the alert's data
            line = a.to_json()
            assert b"\n" not in line and json.loads(line) == a.to_dict()
        assert (lazy_st.events, lazy_st.malformed, lazy_st.reasons) == (full_st.events, full_st.malformed,
                                                                         full_st.reasons), path.name
    assert len(_alerts(full)) > 20  # the mixed log raises what the attack traces raise


def test_webhook_batches_are_parsed_lazily_with_the_same_alerts(traces: Path, tmp_path: Path) -> None:
    """An EventList body (the webhook backend's) read item by item as lines are (parse_batch) gives the alerts
    and counts of parsing it whole; anything else is left to the general path."""
    items = [orjson.loads(line) for line in _mixed(traces, tmp_path).read_bytes().splitlines()]
    body = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [*items, 1, {"kind": "Event"},
                         {"kind": "EventList", "items": items[:3]}]})  # fmt: skip
    runs = []
    for lazy in (False, True):
        st, d = Stats(), Detector(load())
        evs = parse_batch(body, st, d.wants) if lazy else documents_to_events(orjson.loads(body), st)
        assert evs is not None
        for ev in evs:
            d.process(ev)
        runs.append((_alerts(d), st.events, st.reasons))
    assert runs[0] == runs[1] and len(runs[0][0]) > 20 and runs[0][1] > len(items)
    assert runs[0][2]["not a JSON object"] == 1 and runs[0][2]["event without verb or user"] == 1
    not_lists = [orjson.dumps({"kind": "EventList", "items": {}}), '{"kind": "EventList", "items": ["é"]}'.encode()]
    for other in (b"\n".join(orjson.dumps(i) for i in items[:2]), orjson.dumps(items[0]), b"[1]", b"{", *not_lists):
        assert parse_batch(other, Stats(), lambda verb, res: DEFERRABLE) is None, other


def test_rule_groups_agree_with_each_rule_on_real_events(traces: Path, tmp_path: Path) -> None:
    """The index's compiled groups (compile_group) fire exactly the rules whose own conditions hold, on every
    real event, parsed in full and parsed lazily with every deferred part wanted."""
    rules = load()
    index = Index(rules)
    everything = compile_group([r.tree for r in rules], list(rules))
    log, st = _mixed(traces, tmp_path), Stats()
    full = [ev for _off, ev in read_file(log, st)]
    lazy = [ev for _off, ev in read_file(log, st, wants=lambda verb, res: DEFERRABLE)]
    assert len(full) == len(lazy) > 80
    fired = 0
    for a, b in zip(full, lazy, strict=True):
        want = [r for r in rules if r.condition(a)]
        assert everything(a) == want and everything(b) == want, a.get("auditID")
        group = index.group(a["verb"], a["_resource"])
        hit = group.fire(a) if group is not None else []
        assert hit == [r for r in want if group is not None and r in group.rules]
        fired += len(hit)
    assert fired > 20


def test_a_rule_on_a_field_outside_the_event_schema_gets_the_whole_event(tmp_path: Path) -> None:
    """Lazy parsing decodes the audit.k8s.io/v1 Event fields only: a custom rule reading another top-level field
    (a log shipper's, say) makes its events parsed in full."""
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "rules:\n  - id: ACME-2\n    title: Delete from the prod cluster\n    severity: LOW\n"
        "    mitre: {techniques: [T1485]}\n    verbs: [delete]\n    resources: [configmaps]\n"
        "    condition: {field: shipper.cluster, op: eq, value: prod}\n    remediation: Ask.\n"
    )
    d = Detector(load([extra]))
    assert d.wants("delete", "configmaps") is None and d.wants("get", "pods") is not None
    log = tmp_path / "audit.log"
    ev = _event("delete", "configmaps")
    log.write_bytes(json.dumps({**ev, "shipper": {"cluster": "prod"}}).encode() + b"\n")
    st = Stats()
    for _off, e in read_file(log, st, wants=d.wants):
        d.process(e)
    assert [a.rule for a in d.alerts] == ["ACME-2"]


def test_a_pod_without_spec_is_no_pod(tmp_path: Path) -> None:
    """Found by fuzzing: a Pod created without a spec once stopped the engine (KeyError) on both paths."""
    log = tmp_path / "audit.log"
    log.write_bytes(json.dumps(_event("create", "pods", obj={"kind": "Pod", "metadata": {"name": "x"}})).encode())
    for lazy in (False, True):
        st, d = Stats(), Detector(load())
        for _off, ev in read_file(log, st, wants=d.wants if lazy else None):
            d.process(ev)
        assert st.events == 1 and "_podspec" not in ev


def test_odd_lines_on_both_paths(tmp_path: Path) -> None:
    """Lines msgspec and orjson judge differently: a name that is not ASCII (the same alert on both paths),
    bytes that are not UTF-8 (malformed on both), and a number out of a double's range (1e999) in a part no
    rule reads: malformed for orjson, while the lazy path, which only checks that part's syntax, raises the
    alert and keeps the line, as text, as its evidence."""
    exec_ev = _event("create", "pods", sub="exec", name="web")
    huge = json.dumps({**exec_ev, "requestObject": {"command": ["sh"]}}).replace('["sh"]', '["sh", 1e999]')
    umlaut = json.dumps(_event("create", "pods", sub="exec", user="mällory@example.com"), ensure_ascii=False)
    broken = json.dumps(_event("create", "pods", sub="attach", obj={"note": "dXb"})).encode().replace(b"dXb", b"d\xffb")
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join([umlaut.encode(), broken, huge.encode()]) + b"\n")
    runs = []
    for lazy in (False, True):
        d, st = _run(log, lazy)
        assert (st.events, st.malformed) == ((2, 1) if lazy else (1, 2)), st.reasons
        runs.append([(a.rule, a.user, a.name, a.count) for a in d.alerts])
        for a in d.alerts:
            assert b"\n" not in a.to_json() and a.to_dict()["rule"] == "STK-AUD-001"
    assert runs[0] == runs[1][:1] == [("STK-AUD-001", "mällory@example.com", "x", 1)]
    assert runs[1][1] == ("STK-AUD-001", "mallory@example.com", "web", 1)
    assert d.alerts[1].to_dict()["evidence"] == [huge]


@pytest.mark.parametrize("lazy", [False, True])
def test_malformed_lines_are_counted_and_the_stream_goes_on(traces: Path, tmp_path: Path, lazy: bool) -> None:
    good = (traces / "exec_pod.json").read_bytes().strip()
    pretty = json.dumps(json.loads((traces / "attach_pod.json").read_text()), indent=2).encode()
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join([b"garbage{", good, b"[1, 2]", b'{"kind": "Event"}', pretty, b"", b'{"half": ']))
    st = Stats()
    d = Detector(load())
    with log.open("rb") as fh:
        for _off, ev in parse_stream(fh, st, wants=d.wants if lazy else None):
            d.process(ev)
    assert sorted(a.rule for a in d.alerts) == ["STK-AUD-001", "STK-AUD-001"]  # exec and the pretty-printed attach
    assert st.events == 2 and st.malformed == 4, st.reasons


def test_a_huge_line_is_skipped_in_bounded_memory(traces: Path, tmp_path: Path) -> None:
    import tracemalloc

    good = (traces / "exec_pod.json").read_bytes().rstrip(b"\n") + b"\n"
    log = tmp_path / "audit.log"
    with log.open("wb") as fh:
        fh.write(good)
        fh.write(b'{"kind": "Event", "junk": "' + b"x" * (100 << 20))  # 100 MiB without a line end
        fh.write(b'"}\n' + re.sub(rb'"auditID":"([^"]+)"', rb'"auditID":"\1-2"', good))  # another request
    for lazy in (False, True):
        st, d = Stats(), Detector(load())
        tracemalloc.start()
        with log.open("rb") as fh:
            offsets = [off for off, ev in parse_stream(fh, st, wants=d.wants if lazy else None) if d.process(ev) or 1]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert st.events == 2 and st.reasons == {"line over 16 MiB": 1}, st.reasons
        assert [a.count for a in d.alerts] == [2] and offsets[-1] == log.stat().st_size
        assert peak < 64 << 20, peak  # the 100 MiB line was never held whole (pieces of 16 MiB)


def test_resume_from_offset_and_follow_rotation(traces: Path, tmp_path: Path) -> None:
    log, state = tmp_path / "audit.log", tmp_path / "state.json"
    log.write_bytes((traces / "exec_pod.json").read_bytes())
    cmd = [*CLI, "audit", "scan", str(log), "--state", str(state), "-f", "json", "-q"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert [a["rule"] for a in first["alerts"]] == ["STK-AUD-001"]
    with log.open("ab") as fh:
        fh.write((traces / "attach_cluster_admin_role.json").read_bytes())
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert [a["rule"] for a in second["alerts"]] == ["STK-AUD-009"] and second["events"] == 1  # only the new line
    log.rename(tmp_path / "audit.log.1")  # rotated: a new file with the same name starts from its beginning
    log.write_bytes((traces / "create_nginx_pod_privileged.json").read_bytes())
    third = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert [a["rule"] for a in third["alerts"]] == ["STK-AUD-002"]
    assert FileState.load(state, log).offset == log.stat().st_size


def test_cli_jsonl_stdin_and_exit_code(traces: Path) -> None:
    data = b"".join((traces / f"{t}.json").read_bytes() for t in ("exec_pod", "create_deployment"))
    out = subprocess.run([*CLI, "audit", "scan", "-", "-f", "jsonl", "--exit-code", "4"], input=data,
                         capture_output=True)  # fmt: skip
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert out.returncode == 4 and [x["rule"] for x in lines] == ["STK-AUD-001"]
    assert lines[0]["techniques"] == ["T1609"] and lines[0]["user"] == "minikube-user"


def test_rules_are_data(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "rules:\n  - id: ACME-1\n    title: Secret deleted in prod\n    severity: HIGH\n"
        "    mitre: {tactics: [Impact], techniques: [T1485]}\n    verbs: [delete]\n    resources: [secrets]\n"
        "    condition: {all: [{macro: succeeded}, {field: objectRef.namespace, op: in, value: [prod, default]}]}\n"
        "    remediation: Restore it from the secret store.\n"
    )
    rules = load([extra])
    assert "ACME-1" in {r.id for r in rules}
    d, st = Detector(rules), Stats()
    for ev in documents_to_events(_event("delete", "secrets", ns="prod"), st):
        d.process(ev)
    assert [a.rule for a in d.alerts] == ["ACME-1"]
    for doc, msg in [
        ({"rules": [{"id": "X", "title": "t", "severity": "HIGH", "remediation": "r"}]}, "mitre.techniques"),
        ({"rules": [{"id": "X", "title": "t", "severity": "BAD", "remediation": "r"}]}, "severity"),
        ({"rules": [{"id": "X", "title": "t", "severity": "LOW", "remediation": "r", "mitre": {"techniques": ["T1"]},
                     "condition": {"macro": "nope"}}]}, "unknown macro"),
        ({"rules": [{"id": "X", "title": "t", "severity": "LOW", "remediation": "r", "mitre": {"techniques": ["T1"]},
                     "verbs": "$nolist"}]}, "unknown list"),
    ]:  # fmt: skip
        with pytest.raises(AuditRuleError, match=msg):
            parse(doc, "test")


def test_webhook_backend_over_https(traces: Path, tmp_path: Path) -> None:
    """`stockade audit serve` as the API server's audit webhook: EventList batches with a bearer token."""
    import socket
    import ssl
    import time

    import httpx

    certs = tmp_path / "certs"
    subprocess.run([*CLI, "admission", "certs", str(certs), "--san", "127.0.0.1"], check=True, capture_output=True)
    (tmp_path / "tokens").write_text("s3cret-audit-token\n")
    alerts = tmp_path / "alerts.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*CLI, "audit", "serve", "--host", "127.0.0.1", "--port", str(port), "--cert", str(certs / "tls.crt"),
         "--key", str(certs / "tls.key"), "--token-file", str(tmp_path / "tokens"), "-o", str(alerts)]
    )  # fmt: skip
    client = httpx.Client(
        base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=certs / "ca.crt")
    )
    try:
        for _ in range(200):
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        items = [json.loads(line) for t in ("exec_pod", "create_deployment", "attach_cluster_admin_role")
                 for line in (traces / f"{t}.json").read_text().splitlines() if line.strip()]  # fmt: skip
        batch = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
        auth = {"Authorization": "Bearer s3cret-audit-token"}
        assert client.post("/audit", json=batch).status_code == 401
        assert client.post("/audit", json=batch, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/audit", content=b"{broken", headers=auth).status_code == 400
        r = client.post("/audit", json=batch, headers=auth)
        assert r.status_code == 200 and r.json() == {"events": 3, "malformed": 0, "alerts": 2}
        r = client.post("/audit", json={"kind": "EventList", "items": [items[0], {"junk": 1}]}, headers=auth)
        assert r.json() == {"events": 1, "malformed": 1, "alerts": 0}  # the repeat exec only raises the count
        metrics = client.get("/metrics").text
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
    got = [json.loads(line)["rule"] for line in alerts.read_text().splitlines()]
    assert got == ["STK-AUD-001", "STK-AUD-009"]
    assert 'stockade_audit_rejected_total{reason="unauthorized"} 2.0' in metrics


@pytest.mark.parametrize("max_open", [10, 40])
def test_long_running_detector_sends_count_growth_once_with_bounded_memory(max_open: int) -> None:
    """audit serve / --follow / sensor: no list of every alert; what is sent to the server adds up to the
    counts, and what the sender remembers stays within its bound (as large as the detector's open bursts).
    With 10 open bursts for 40 pods, bursts close before they repeat: every event is a new alert."""
    from stockade.rules import AlertDeltas

    class Sink:  # stands in for the Publisher's queue to the server (tests/test_server.py covers the real one)
        def __init__(self) -> None:
            self.items: list[dict[str, Any]] = []

        def put(self, items: list[dict[str, Any]]) -> None:
            self.items += items

        def close(self) -> dict[str, int]:
            return {"failed": 0, "dropped": 0}

    d, st, sink = Detector(load(), window_s=600, keep_alerts=False, max_open=max_open), Stats(), Sink()
    d.bursts.track_changes()
    deltas = AlertDeltas(sink, max_sent=max_open)  # type: ignore[arg-type]
    for i in range(200):  # 40 pods, each exec'd into 5 times, round robin
        ts = f"2026-11-23T10:{i // 60:02d}:{i % 60:02d}.000000Z"
        for ev in documents_to_events(_event("create", "pods", sub="exec", name=f"web-{i % 40}", ts=ts), st):
            d.process(ev)
        if i % 3 == 0:
            deltas.sync(d.bursts.drain())
    deltas.close(d.bursts.drain())
    assert d.alerts == [] and len(deltas._sent) <= max_open and len(d.bursts.open) <= max_open
    sent = Counter[str]()
    for item in sink.items:
        sent[item["name"]] += item["count"]
    assert sent == {f"web-{k}": 5 for k in range(40)}
    # the evidence goes with each alert's first send only
    assert sum(1 for item in sink.items if item["evidence"]) == (200 if max_open < 40 else 40)


_FUZZ_BYTES = b'{}[]",:0123456789eE-.\\ \nnulltruefalse\x00\xff'


@pytest.fixture(scope="module")
def _rules() -> list[Any]:
    return load()


@pytest.fixture(scope="module")
def _fuzz_lines(traces: Path) -> list[bytes]:
    return [line for p in sorted(traces.glob("*.json")) for line in p.read_bytes().splitlines() if b'"auditID"' in line]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.data())
def test_mutated_real_lines_read_the_same_on_both_paths(
    _fuzz_lines: list[bytes], _rules: list[Any], data: hst.DataObject
) -> None:
    """Real event lines with a few bytes deleted, inserted or replaced: never a traceback, and the lazy path
    counts, keeps and alerts on exactly what the general path does (apart from numbers out of a double's range
    in a part no rule reads: see test_odd_lines_on_both_paths)."""
    line = bytearray(data.draw(hst.sampled_from(_fuzz_lines)))
    for _ in range(data.draw(hst.integers(1, 3))):
        i = data.draw(hst.integers(0, len(line) - 1))
        op, byte = data.draw(hst.sampled_from(["del", "ins", "set"])), data.draw(hst.sampled_from(_FUZZ_BYTES))
        if op == "del":
            del line[i]
        elif op == "ins":
            line.insert(i, byte)
        else:
            line[i] = byte
    doc = bytes(line) + b"\n"
    runs = []
    for lazy in (False, True):
        stats, d = Stats(), Detector(_rules)
        got = [a.rule for _off, ev in parse_stream(io.BytesIO(doc), stats, d.wants if lazy else None)
               for a in d.process(ev)]  # fmt: skip
        runs.append((stats.events, stats.reasons, got))
    try:
        orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        if "double" in str(exc):
            return
    assert runs[0] == runs[1], doc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.data())
def test_fields_of_any_type_never_stop_the_engine(
    _fuzz_lines: list[bytes], _rules: list[Any], data: hst.DataObject
) -> None:
    """Found by fuzzing: a crafted event with a number where a list belongs (groups, sourceIPs, a pod's
    containers) stopped the engine. Real events with values swapped for values of other types: no traceback,
    and the same alerts lazily, from an EventList and in full."""
    doc = orjson.loads(data.draw(hst.sampled_from(_fuzz_lines)))
    swap_values(doc, data, ODD_VALUES)
    line = orjson.dumps(doc)
    runs = []
    for mode in ("full", "lazy", "batch"):
        stats, d = Stats(), Detector(_rules)
        if mode == "batch":
            evs = parse_batch(orjson.dumps({"kind": "EventList", "items": [doc]}), stats, d.wants)
            assert evs is not None
        else:
            wants = d.wants if mode == "lazy" else None
            evs = (ev for _off, ev in parse_stream(io.BytesIO(line + b"\n"), stats, wants))
        alerts = [a for ev in evs for a in d.process(ev)]
        for a in alerts:
            assert b"\n" not in a.to_json() and a.to_dict()["rule"] == a.rule
        runs.append((stats.events, stats.reasons, sorted((a.rule, a.user, a.message) for a in alerts)))
    assert runs[0] == runs[1] == runs[2], line


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hst.data())
def test_cloud_shapes_with_fields_of_any_type_never_stop_the_engine(
    traces: Path, _rules: list[Any], data: hst.DataObject
) -> None:
    """Found by fuzzing: a GKE entry whose authenticationInfo was a list stopped the engine. Every cloud shape
    with values swapped for values of other types: counted as malformed or read, never a traceback."""
    doc = copy.deepcopy(data.draw(hst.sampled_from(sorted(_cloud_shapes(traces).items())))[1])
    swap_values(doc, data, ODD_VALUES)
    stats, d = Stats(), Detector(_rules)
    for ev in documents_to_events(doc, stats):
        for a in d.process(ev):
            assert b"\n" not in a.to_json()


def test_the_engine_function_audit_scan_calls(traces: Path, tmp_path: Path) -> None:
    """audit/stream.py scan, called without the CLI: every attack trace and every benign one in one run, alerts
    streamed as JSON lines as raised, the counts Falco expects, nothing from the benign traces, and the offset
    saved for a single file (--state)."""
    import io

    from stockade.audit.stream import scan

    paths = []
    for t in [*sorted(DETECT), *sorted(BENIGN)]:  # Falco's traces reuse auditIDs across files: one id per file here
        paths.append(tmp_path / f"{t}.json")
        data = (traces / f"{t}.json").read_bytes()
        paths[-1].write_bytes(re.sub(rb'"auditID":"([^"]+)"', rb'"auditID":"\1-' + t.encode() + rb'"', data))
    out = io.BytesIO()
    detector, stats, sent = scan(paths, out=out)
    assert sent is None and stats.events > len(paths) - 1
    want: Counter[str] = Counter()
    for falco_rule, count in DETECT.values():
        want[FALCO[falco_rule]] += count
    got: Counter[str] = Counter()
    for a in detector.alerts:
        got[a.rule] += a.count
    assert got == want
    streamed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a["rule"] for a in streamed] == [a.rule for a in detector.alerts]
    state = tmp_path / "state.json"
    scan([traces / "exec_pod.json"], state=state)
    assert json.loads(state.read_text())["offset"] == (traces / "exec_pod.json").stat().st_size

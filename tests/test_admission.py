"""Admission control end to end: the webhook over real HTTPS on loopback, answering AdmissionReview v1 bodies
built from the real badPods manifests; the image gate over scans recorded by `stockade scan --record`; the
generated manifests; and the ValidatingAdmissionPolicy export, evaluated by an independent CEL implementation
(cel-python) and compared with the engine."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import SHARED
from server_util import free_port
from test_posture import EXPECTED, HOST_RULES

from stockade.admission.policy import AdmissionPolicy, PolicyError
from stockade.kube import to_resource
from stockade.posture import evaluate, load_rules
from stockade.posture.resources import load

CLI = [sys.executable, "-m", "stockade.cli.main"]
PLURAL = {"ReplicationController": "replicationcontrollers", "DaemonSet": "daemonsets", "CronJob": "cronjobs"}


def review(obj: dict[str, Any], namespace: str, dry_run: bool = False, op: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview v1 request as the API server sends it for ``obj``."""
    group, _, version = obj["apiVersion"].rpartition("/")
    kind = obj["kind"]
    gvk = {"group": group, "version": version, "kind": kind}
    plural = PLURAL.get(kind, kind.lower() + "s")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": {"group": group, "version": version, "resource": plural},
            "requestKind": gvk,
            "requestResource": {"group": group, "version": version, "resource": plural},
            "name": obj["metadata"].get("name", ""),
            "namespace": namespace,
            "operation": op,
            "userInfo": {"username": "alice@example.com", "groups": ["devs", "system:authenticated"]},
            "object": {**obj, "metadata": {**obj["metadata"], "namespace": namespace}},
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


@contextmanager
def webhook(tmp_path: Path, policy: dict[str, Any]) -> Iterator[tuple[httpx.Client, str]]:
    """`stockade admission serve` in a subprocess, over TLS with a CA from `stockade admission certs`."""
    certs = tmp_path / f"certs-{uuid.uuid4().hex[:6]}"
    subprocess.run([*CLI, "admission", "certs", str(certs), "--san", "127.0.0.1"], check=True, capture_output=True)
    pol = certs / "policy.yaml"
    pol.write_text(yaml.safe_dump(policy, sort_keys=False))  # rules: the first match wins
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--policy", str(pol)]
    proc = subprocess.Popen(
        [*CLI, "admission", "serve", *args, "--cert", str(certs / "tls.crt"), "--key", str(certs / "tls.key")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=certs / "ca.crt"), timeout=10)
    try:
        for _ in range(200):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            proc.kill()
            raise AssertionError(f"webhook did not start: {proc.stdout.read() if proc.stdout else ''!r}")
        yield client, base
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _bad_pods(manifests: Path) -> list[tuple[str, dict[str, Any]]]:
    resources, _ = load([manifests / "badPods"])
    out = []
    for r in resources:
        if r.kind == "Service":
            continue
        category = Path(r.source.split("#")[0]).relative_to(manifests / "badPods").parts[0]
        out.append((category, r.raw))
    return out


def test_badpods_denied_warned_and_audited_over_https(manifests: Path, tmp_path: Path) -> None:
    log = tmp_path / "violations.jsonl"
    policy = {
        "rules": {"STK-PSS-B-*": "deny", "*": "off"},  # the baseline profile, as Pod Security admission does
        "namespaces": {"team-warn": "warn", "team-audit": "audit"},
        "violationsLog": str(log),
    }
    with webhook(tmp_path, policy) as (client, _):
        pods = _bad_pods(manifests)
        assert len(pods) == 128
        audited: set[str] = set()
        for category, obj in pods:
            expected = {rid for rid, cat in HOST_RULES.items() if cat in EXPECTED[category]}
            deny = client.post("/validate", json=review(obj, "team-prod")).json()["response"]
            warn = client.post("/validate", json=review(obj, "team-warn")).json()["response"]
            audit_req = review(obj, "team-audit")
            audit = client.post("/validate", json=audit_req).json()["response"]
            dry = client.post("/validate", json=review(obj, "team-audit", dry_run=True)).json()["response"]
            if category == "nothing-allowed":
                assert deny["allowed"] and warn["allowed"] and audit["allowed"], obj["metadata"]["name"]
                assert "warnings" not in warn
                continue
            # deny mode: rejected, naming every control the pod is named after and its fix
            assert deny["allowed"] is False and deny["status"]["code"] == 403
            for rid in expected:
                assert rid in deny["status"]["message"]
            assert "Fix:" in deny["status"]["message"]
            # warn mode: allowed, with one warning per violation
            assert warn["allowed"] is True
            assert expected <= {w.split()[0] for w in warn["warnings"]}
            # audit mode: allowed, warned and recorded (the dry run is answered the same, not recorded)
            assert audit["allowed"] is True and expected <= {w.split()[0] for w in audit["warnings"]}
            assert expected <= set(audit["auditAnnotations"]["violations"].split(","))
            assert dry["allowed"] is True
            audited.add(audit_req["request"]["uid"])
        metrics = client.get("/metrics").text
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["uid"] for r in records if r["mode"] == "audit"} == audited  # every audited review, no dry run
    assert all(r["user"] == "alice@example.com" and r["rule"].startswith("STK-PSS-B-") for r in records)
    assert any(r["mode"] == "deny" for r in records)
    assert 'stockade_admission_requests_total{decision="denied"}' in metrics


def test_exempt_namespaces_operations_and_exceptions(manifests: Path, tmp_path: Path) -> None:
    exc = tmp_path / "exceptions.yaml"
    exc.write_text(
        yaml.safe_dump(
            {
                "exceptions": [
                    {"rule": "STK-PSS-B-005", "namespace": "ci", "reason": "builders", "expires": "2099-01-01"}
                ]
            }
        )
    )
    policy = {"defaultMode": "deny", "exceptions": str(exc)}
    priv = yaml.safe_load((manifests / "badPods" / "priv" / "pod" / "priv-exec-pod.yaml").read_text())
    with webhook(tmp_path, policy) as (client, _):
        assert client.post("/validate", json=review(priv, "kube-system")).json()["response"]["allowed"]
        assert client.post("/validate", json=review(priv, "apps", op="DELETE")).json()["response"]["allowed"]
        apps = client.post("/validate", json=review(priv, "apps")).json()["response"]
        ci = client.post("/validate", json=review(priv, "ci")).json()["response"]
    assert not apps["allowed"] and "STK-PSS-B-005" in apps["status"]["message"]
    assert "STK-PSS-B-005" not in ci["status"]["message"]  # excepted there; other rules still deny


def test_malformed_and_oversized_bodies_get_400(tmp_path: Path, manifests: Path) -> None:
    priv = yaml.safe_load((manifests / "badPods" / "priv" / "pod" / "priv-exec-pod.yaml").read_text())
    with webhook(tmp_path, {"maxBodyBytes": 65536}) as (client, _):
        cases = [
            b"{not json",
            b"[]",
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}).encode(),
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}).encode(),
            json.dumps(review(priv, "a")).encode().replace(b'"uid"', b'"nouid"'),
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "pad": "' + b"x" * 70000 + b'"}',
        ]
        for body in cases:
            r = client.post("/validate", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, body[:80]
            assert "error" in r.json()
        # still healthy, and a good review still works
        assert client.get("/readyz").status_code == 200
        assert client.post("/validate", json=review(priv, "a")).status_code == 200
        assert 'stockade_admission_errors_total{kind="bad_request"} 6.0' in client.get("/metrics").text


@pytest.mark.parametrize("failure_policy", ["Fail", "Ignore"])
def test_internal_error_follows_the_failure_policy(tmp_path: Path, manifests: Path, failure_policy: str) -> None:
    """The image gate's store is unreadable. Under Fail every review is refused (500); under Ignore the images go
    unchecked with a warning, but posture rules still decide: badPods' privileged hostPID pod is denied (it was
    admitted when a gate error threw the whole verdict away) and a harmless pod admitted."""
    store = tmp_path / "scans.db"
    store.write_bytes(b"this is not an SQLite database" * 100)  # the gate's lookup fails inside the review
    policy = {"failurePolicy": failure_policy, "imageGate": {"mode": "deny", "store": str(store)},
              "rules": {"STK-PSS-B-*": "deny", "*": "off"}}  # fmt: skip
    pods = {
        name: yaml.safe_load((manifests / "badPods" / name / "pod" / f"{name}-exec-pod.yaml").read_text())
        for name in ("nothing-allowed", "everything-allowed")
    }
    with webhook(tmp_path, policy) as (client, _):
        resp = {k: client.post("/validate", json=review(pod, "apps")).json()["response"] for k, pod in pods.items()}
        metrics = client.get("/metrics").text
    if failure_policy == "Fail":
        assert all(r["allowed"] is False and r["status"]["code"] == 500 for r in resp.values())
    else:
        benign, bad = resp["nothing-allowed"], resp["everything-allowed"]
        assert benign["allowed"] is True and "could not check the images" in benign["warnings"][0]
        assert bad["allowed"] is False and bad["status"]["code"] == 403
        assert "STK-PSS-B-" in bad["status"]["message"] and "privileged" in bad["status"]["message"].lower()
    assert 'stockade_admission_errors_total{kind="internal"} 2.0' in metrics


def test_image_gate_uses_recorded_scans(fixtures_dir: Path, vulndb: Any, tmp_path: Path, manifests: Path) -> None:
    store = tmp_path / "scans.db"
    alpine = fixtures_dir / "images" / "trivy-alpine-311.tar.gz"
    ref = "registry.example/base/alpine:3.11"
    out = subprocess.run(
        [
            *CLI,
            "scan",
            "-q",
            "-f",
            "json",
            "--db",
            str(vulndb.path),
            "--record",
            str(store),
            "--record-as",
            ref,
            str(alpine),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # Alpine's secdb lists fixes after 3.11's versions; it gives no severities (UNKNOWN without NVD data)
    fixable = [f for f in json.loads(out.stdout)["findings"] if f["fixed_version"]]
    assert fixable
    empty = tmp_path / "empty-rootfs"
    empty.mkdir()
    subprocess.run(
        [*CLI, "scan", "-q", "--db", str(vulndb.path), "--record", str(store), "--record-as",
         "registry.example/app@sha256:" + "a" * 64, str(empty)],
        check=True, capture_output=True,
    )  # fmt: skip
    pod = yaml.safe_load(
        (manifests / "badPods" / "nothing-allowed" / "pod" / "nothing-allowed-exec-pod.yaml").read_text()
    )

    def with_image(image: str) -> dict[str, Any]:
        p = json.loads(json.dumps(pod))
        p["spec"]["containers"][0]["image"] = image
        return p

    policy = {
        "rules": {"*": "off"},
        "imageGate": {
            "mode": "deny",
            "store": str(store),
            "allowedRegistries": ["registry.example/"],
            "blockFixable": ["CRITICAL", "HIGH", "UNKNOWN"],
        },
    }
    with webhook(tmp_path, policy) as (client, _):

        def answer(image: str) -> dict[str, Any]:
            return client.post("/validate", json=review(with_image(image), "apps")).json()["response"]

        vulnerable = answer(ref)
        clean = answer("registry.example/app@sha256:" + "a" * 64)
        unscanned = answer("registry.example/other:1.0")
        foreign = answer("docker.io/library/alpine:3.11")
    assert not vulnerable["allowed"] and "STK-ADM-IMG-003" in vulnerable["status"]["message"]
    n_unknown = sum(1 for f in fixable if f["severity"] == "UNKNOWN")
    assert f"{n_unknown} unknown fixable" in vulnerable["status"]["message"]
    assert clean["allowed"]
    assert not unscanned["allowed"] and "STK-ADM-IMG-002" in unscanned["status"]["message"]
    assert not foreign["allowed"] and "STK-ADM-IMG-001" in foreign["status"]["message"]


def test_policy_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    for text, msg in [
        ("defaultMode: block\n", "mode must be one of"),
        ("rule: {}\n", "unknown keys"),
        ("imageGate: {mode: deny}\n", "needs 'store'"),
        ("failurePolicy: Maybe\n", "Fail or Ignore"),
        ("rules: [\n", "malformed YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(PolicyError, match=msg):
            AdmissionPolicy.load(bad)
    out = subprocess.run([*CLI, "admission", "serve", "--cert", "x", "--key", "y", "--policy", str(bad)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1 and "malformed YAML" in out.stderr and "Traceback" not in out.stderr


def test_manifests_install_a_webhook_that_passes_its_own_rules(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    subprocess.run([*CLI, "admission", "certs", str(certs), "--namespace", "sec"], check=True, capture_output=True)
    out = subprocess.run(
        [*CLI, "admission", "manifests", "--certs", str(certs), "--namespace", "sec", "--timeout", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    docs = list(yaml.safe_load_all(out.stdout))
    kinds = {d["kind"] for d in docs}
    assert {"ValidatingWebhookConfiguration", "Deployment", "Service", "ServiceAccount", "Secret"} <= kinds
    hook = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")["webhooks"][0]
    assert hook["sideEffects"] == "None" and hook["timeoutSeconds"] == 3 and hook["failurePolicy"] == "Fail"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert {"kube-system", "sec"} <= set(hook["namespaceSelector"]["matchExpressions"][0]["values"])
    import base64

    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == (certs / "ca.crt").read_bytes()
    # the serving certificate names the Service, so the API server's TLS check passes
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((certs / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "stockade-admission.sec.svc" in sans
    # stockade's own workload meets Pod Security restricted
    findings = evaluate(load_rules(), [to_resource(d) for d in docs], cross=False)
    assert not [f.rule.id for f in findings if f.rule.id.startswith("STK-PSS-")]
    bad = subprocess.run([*CLI, "admission", "manifests", "--timeout", "45"], capture_output=True, text=True)
    assert bad.returncode == 1 and "between 1 and 30" in bad.stderr


def test_mtls_admits_only_the_api_servers_certificate(tmp_path: Path, manifests: Path) -> None:
    """`serve --client-ca`: a review over TLS without a client certificate, or with one another CA signed, or with
    the webhook's own serving certificate, never reaches /validate; the API server's client certificate from
    `admission certs` does. The probes answer on the plain port, which serves nothing else."""
    certs = tmp_path / "certs"
    subprocess.run([*CLI, "admission", "certs", str(certs), "--san", "127.0.0.1"], check=True, capture_output=True)
    other = tmp_path / "other"
    subprocess.run([*CLI, "admission", "certs", str(other), "--san", "127.0.0.1"], check=True, capture_output=True)
    config = yaml.safe_load((certs / "admission-config.yaml").read_text())
    assert config["kind"] == "AdmissionConfiguration"
    plugin = config["plugins"][0]
    assert plugin["name"] == "ValidatingAdmissionWebhook"
    kubeconfig = plugin["configuration"]["kubeConfigFile"]
    users = yaml.safe_load((certs / "admission-kubeconfig.yaml").read_text())["users"]
    assert kubeconfig.endswith("admission-kubeconfig.yaml") and users[0]["name"] == "stockade-admission.stockade.svc"
    assert oct((certs / "apiserver-client.key").stat().st_mode & 0o777) == "0o600"
    port, probe = free_port(), free_port()
    proc = subprocess.Popen(
        [*CLI, "admission", "serve", "--host", "127.0.0.1", "--port", str(port), "--cert", str(certs / "tls.crt"),
         "--key", str(certs / "tls.key"), "--client-ca", str(certs / "ca.crt"), "--probe-port", str(probe)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    pod = yaml.safe_load((manifests / "badPods" / "priv" / "pod" / "priv-exec-pod.yaml").read_text())

    def client(cert: tuple[Path, Path] | None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=certs / "ca.crt")
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10)

    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{probe}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"webhook did not start: {proc.stdout.read() if proc.stdout else ''!r}")
        for cert in (None, (other / "apiserver-client.crt", other / "apiserver-client.key"),
                     (certs / "tls.crt", certs / "tls.key")):  # fmt: skip
            with client(cert) as c, pytest.raises(httpx.TransportError):
                c.post("/validate", json=review(pod, "apps"))
        with client((certs / "apiserver-client.crt", certs / "apiserver-client.key")) as c:
            resp = c.post("/validate", json=review(pod, "apps")).json()["response"]
        assert "STK-PSS-B-" in resp["auditAnnotations"]["violations"]
        assert httpx.get(f"http://127.0.0.1:{probe}/metrics").status_code == 200
        assert httpx.post(f"http://127.0.0.1:{probe}/validate", json=review(pod, "apps")).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # the manifests: mTLS arguments, probes on the plain port, and a NetworkPolicy for the API server's addresses
    out = subprocess.run(
        [*CLI, "admission", "manifests", "--certs", str(certs), "--mtls", "--api-server-cidr", "10.0.0.10/32",
         "--api-server-cidr", "172.18.0.0/28"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = list(yaml.safe_load_all(out))
    ctr = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert ctr["args"][-4:] == ["--client-ca", "/tls/ca.crt", "--probe-port", "8081"]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081, "scheme": "HTTP"}
    netpol = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]
    webhook_rule = next(r for r in netpol["ingress"] if r["ports"] == [{"protocol": "TCP", "port": 8443}])
    assert [b["ipBlock"]["cidr"] for b in webhook_rule["from"]] == ["10.0.0.10/32", "172.18.0.0/28"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert "ca.crt" in secret["data"]
    bad = subprocess.run([*CLI, "admission", "manifests", "--api-server-cidr", "10.0.0.300/8"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "--api-server-cidr" in bad.stderr and "Traceback" not in bad.stderr


def test_validating_admission_policies_decide_like_the_engine(manifests: Path) -> None:
    """Each exported CEL expression, run by cel-python (an independent CEL implementation), must reject
    exactly the objects the engine flags, on badPods and Online Boutique."""
    import celpy

    from stockade.admission.cel import CONTAINERS, POD_SPEC, export_policies

    rules = load_rules()
    docs, skipped = export_policies(rules, AdmissionPolicy())
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert len(policies) >= 40 and {rid for rid, _ in skipped} >= {"STK-PSS-B-015"}  # annotations: webhook only
    env = celpy.Environment()
    compiled = {
        d["metadata"]["name"].removeprefix("stockade-").upper(): env.program(
            env.compile(d["spec"]["validations"][0]["expression"])
        )
        for d in policies
    }
    var_progs = [env.program(env.compile(POD_SPEC)), env.program(env.compile(CONTAINERS))]
    resources, _ = load([manifests / "badPods", manifests / "release"])
    by_id = {r.id: r for r in rules}
    checked = 0
    for res in resources:
        flagged = {(f.rule.id) for f in evaluate(rules, [res], cross=False)}
        obj = celpy.json_to_cel(res.raw)
        act: dict[str, Any] = {"object": obj}
        if res.kind in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                        "ReplicationController"):  # fmt: skip
            pod_spec = var_progs[0].evaluate({"object": obj})
            ctrs = var_progs[1].evaluate({"variables": celpy.celtypes.MapType({"podSpec": pod_spec})})
            act["variables"] = celpy.celtypes.MapType({"podSpec": pod_spec, "containers": ctrs})
            scope_kinds: set[str] | None = None
        else:
            scope_kinds = {res.kind}
        for rid, prog in compiled.items():
            rule = by_id[rid]
            if rule.scope == "resource" and res.kind not in rule.kinds:
                continue
            if rule.scope != "resource" and scope_kinds is not None:
                continue
            ok = bool(prog.evaluate(act))
            assert ok == (rid not in flagged), (rid, res.ref, res.source)
            checked += 1
    assert checked > 4000


AUDIT_TRACES = SHARED / "data" / "audit" / "falco-k8s-audit-traces.tar.gz"
# Falco's trace names say what each request does; (trace, rule, flagged?)
TRACE_CASES = [
    ("create_nginx_pod_privileged", "STK-PSS-B-005", True),
    ("create_nginx_pod_privileged_2nd_container", "STK-PSS-B-005", True),
    ("create_nginx_pod_no_secctx_1st_container_privileged_2nd_container", "STK-PSS-B-005", True),
    ("create_nginx_pod_unprivileged", "STK-PSS-B-005", False),
    ("create_nginx_pod_hostnetwork", "STK-PSS-B-004", True),
    ("create_nginx_pod_nohostnetwork", "STK-PSS-B-004", False),
    ("create_nginx_pod_sensitive_mount", "STK-WL-007", True),
    ("create_nginx_pod_sensitive_mount_2nd_container", "STK-WL-007", True),
    ("create_nginx_pod_unsensitive_mount", "STK-WL-007", False),
    ("create_cluster_role_wildcard_verbs", "STK-RBAC-001", True),
    ("create_cluster_role_wildcard_resources", "STK-RBAC-001", True),
    ("create_cluster_role_pod_exec", "STK-RBAC-004", True),
    ("create_clusterrole", "STK-RBAC-001", False),
    ("attach_cluster_admin_role", "STK-RBAC-005", True),
    ("create_clusterrolebinding", "STK-RBAC-005", False),
]


@pytest.fixture(scope="session")
def audit_traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit")
    with tarfile.open(AUDIT_TRACES) as tf:
        tf.extractall(out, filter="data")
    return next(out.rglob("create_nginx_pod_privileged.json")).parent


def _from_audit_event(event: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview the API server sent for the request an audit event records."""
    ref = event["objectRef"]
    obj = event["requestObject"]
    group, _, version = obj["apiVersion"].rpartition("/")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": event["auditID"],
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {
                "group": ref.get("apiGroup", ""),
                "version": ref.get("apiVersion", ""),
                "resource": ref["resource"],
            },
            "namespace": ref.get("namespace", ""),
            "operation": {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE"}[event["verb"]],
            "userInfo": event["user"],
            "object": obj,
        },
    }


@pytest.mark.parametrize(("trace", "rule", "flagged"), TRACE_CASES)
def test_requests_recorded_in_real_audit_traces(audit_traces: Path, trace: str, rule: str, flagged: bool) -> None:
    """The objects embedded in Falco's real audit traces, replayed as the AdmissionReviews they were."""
    from stockade.admission.review import Reviewer

    reviewer = Reviewer(AdmissionPolicy.from_dict({"defaultMode": "deny", "exemptNamespaces": []}))
    events = [json.loads(line) for line in (audit_traces / f"{trace}.json").read_text().splitlines() if line.strip()]
    reviews = [_from_audit_event(e) for e in events if e.get("requestObject") and e.get("verb") in ("create", "update")]
    got = {v.rule.id for r in reviews for v in reviewer.review(r).violations}
    if not reviews:  # a trace that only read the object back: its response body, through the posture engine
        objs = [e["responseObject"] for e in events if isinstance(e.get("responseObject"), dict)]
        assert objs
        got = {f.rule.id for f in evaluate(load_rules(), [to_resource(o) for o in objs], cross=False)}
        if trace == "create_nginx_pod_unsensitive_mount":
            assert "STK-PSS-B-007" in got  # a hostPath all the same (/usr/local), just not a sensitive one
    assert (rule in got) is flagged, got


def _debug_review(pod: dict[str, Any], debugger: dict[str, Any], before: list[dict[str, Any]]) -> dict[str, Any]:
    """The AdmissionReview `kubectl debug` causes: an UPDATE of pods/ephemeralcontainers whose object is the pod
    with ``debugger`` added to its ephemeral containers (``before`` were there already)."""
    old = {**pod, "spec": {**pod["spec"], "ephemeralContainers": before}}
    new = {**pod, "spec": {**pod["spec"], "ephemeralContainers": [*before, debugger]}}
    doc = review(new, "prod", op="UPDATE")
    doc["request"]["subResource"] = "ephemeralcontainers"
    doc["request"]["oldObject"] = {**old, "metadata": {**old["metadata"], "namespace": "prod"}}
    return doc


def test_ephemeral_containers_are_reviewed_for_what_they_add(tmp_path: Path) -> None:
    """`kubectl debug --profile=sysadmin` adds a privileged ephemeral container: the webhook is registered for
    pods/ephemeralcontainers and denies it; a restricted debugger is admitted even when the pod it joins has
    violations of its own (admitted before, in audit mode), and so is a request that adds nothing."""
    from stockade.admission.manifests import WEBHOOK_RULES
    from stockade.admission.review import Reviewer

    assert any("pods/ephemeralcontainers" in r["resources"] for r in WEBHOOK_RULES)
    certs = tmp_path / "certs"
    subprocess.run([*CLI, "admission", "certs", str(certs)], check=True, capture_output=True)
    out = subprocess.run([*CLI, "admission", "manifests", "--certs", str(certs)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    hook = next(d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "ValidatingWebhookConfiguration")
    rules = hook["webhooks"][0]["rules"]
    assert any("pods/ephemeralcontainers" in r["resources"] and "UPDATE" in r["operations"] for r in rules)

    # Pod Security Standards denied, the rest audited (the workload hygiene rules, limits and probes, do not
    # apply to ephemeral containers, which may not set them)
    policy = {"defaultMode": "audit", "rules": {"STK-PSS-*": "deny"}, "exemptNamespaces": []}
    reviewer = Reviewer(AdmissionPolicy.from_dict(policy))
    # a pod admitted earlier with a violation of its own: it runs as root, no seccomp profile
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}  # fmt: skip
    assert not reviewer.review(review(pod, "prod")).allowed  # as a new pod, deny mode refuses it
    sysadmin = {"name": "debugger-x1", "image": "busybox:1.36", "securityContext": {"privileged": True}}
    d = reviewer.review(_debug_review(pod, sysadmin, []))
    assert not d.allowed and "debugger-x1" in d.message
    assert {v.container for v in d.violations} == {"debugger-x1"}  # the pod's own violations are not re-judged
    restricted = {"name": "debugger-x2", "image": "busybox:1.36", "securityContext": {
        "runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}  # fmt: skip
    d2 = reviewer.review(_debug_review(pod, restricted, [sysadmin]))
    assert d2.allowed, d2.message
    assert {v.container for v in d2.violations} <= {"debugger-x2"}  # audited hygiene findings only for it
    # a request that adds no ephemeral container (the privileged one was there before) is not re-judged
    same = _debug_review(pod, sysadmin, [])
    same["request"]["oldObject"]["spec"]["ephemeralContainers"] = [sysadmin]
    assert reviewer.review(same).allowed

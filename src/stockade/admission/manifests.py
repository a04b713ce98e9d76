"""`stockade admission manifests`: what installs the webhook in a cluster."""

from __future__ import annotations

import base64
from typing import Any

from stockade.admission.certs import WebhookCerts
from stockade.admission.policy import AdmissionPolicy

NAME = "stockade-admission"
# Every kind the posture rules read: pods and their controllers, RBAC, namespaces and service accounts; and the
# one pod subresource that adds containers to a running pod, with their own securityContext (`kubectl debug`,
# `--profile=sysadmin` makes a privileged one): pods/ephemeralcontainers.
WEBHOOK_RULES = [
    {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/ephemeralcontainers",
                                                             "replicationcontrollers", "namespaces",
                                                             "serviceaccounts"]},
    {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments", "statefulsets", "daemonsets",
                                                                 "replicasets"]},
    {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs", "cronjobs"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["v1"],
     "resources": ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]},
]  # fmt: skip


def render(
    policy: AdmissionPolicy,
    policy_yaml: str,
    certs: WebhookCerts,
    namespace: str = "stockade",
    image: str = "ghcr.io/stockade/stockade:latest",
    replicas: int = 2,
    timeout_seconds: int = 5,
    mtls: bool = False,
    api_server_cidrs: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The webhook's objects. ``mtls``: the webhook takes only the API server's client certificate (signed by the
    certs' CA) and its probes move to a plain-HTTP port; ``api_server_cidrs``: a NetworkPolicy lets only those
    addresses (the API server's, or the control-plane nodes') reach the webhook port."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "stockade"}
    meta = {"name": NAME, "namespace": namespace, "labels": labels}
    exempt = sorted({*policy.exempt_namespaces, namespace})
    webhook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": labels},
        "webhooks": [
            {
                "name": "validate.admission.stockade.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",  # violations go to a log, never to cluster state; dry runs are not logged
                "failurePolicy": policy.failure_policy,
                "timeoutSeconds": timeout_seconds,
                "matchPolicy": "Equivalent",
                "rules": [{**r, "operations": ["CREATE", "UPDATE"], "scope": "*"} for r in WEBHOOK_RULES],
                # exempt namespaces never reach the webhook (it also checks, for the ones given as globs)
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": [n for n in exempt if "*" not in n],
                        }
                    ]
                },
                "clientConfig": {
                    "service": {"name": NAME, "namespace": namespace, "path": "/validate", "port": 443},
                    "caBundle": base64.b64encode(certs.ca_pem).decode(),
                },
            }
        ],
    }
    sc = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    def probe(path: str) -> dict[str, Any]:
        if mtls:  # the kubelet's probes present no client certificate
            return {"httpGet": {"path": path, "port": PROBE_PORT, "scheme": "HTTP"}, "periodSeconds": 10}
        return {"httpGet": {"path": path, "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 10}

    args = ["admission", "serve", "--policy", "/etc/stockade/policy.yaml", "--cert", "/tls/tls.crt", "--key",
            "/tls/tls.key", "--port", "8443"]  # fmt: skip
    ports: list[dict[str, Any]] = [{"name": "https", "containerPort": 8443}]
    if mtls:
        args += ["--client-ca", "/tls/ca.crt", "--probe-port", str(PROBE_PORT)]
        ports.append({"name": "probes", "containerPort": PROBE_PORT})

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": False,  # it calls no API: policy and certs are volumes
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "webhook",
                            "image": image,
                            "args": args,
                            "ports": ports,
                            "readinessProbe": probe("/readyz"),
                            "livenessProbe": probe("/healthz"),
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"cpu": "1", "memory": "512Mi"}},
                            "securityContext": sc,
                            "volumeMounts": [
                                {"name": "tls", "mountPath": "/tls", "readOnly": True},
                                {"name": "policy", "mountPath": "/etc/stockade", "readOnly": True},
                                {"name": "scans", "mountPath": "/var/lib/stockade"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tls", "secret": {"secretName": f"{NAME}-tls"}},
                        {"name": "policy", "configMap": {"name": f"{NAME}-policy"}},
                        {"name": "scans", "emptyDir": {}},
                    ],
                },
            },
        },
    }  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {**meta, "name": f"{NAME}-tls"}, "type": "kubernetes.io/tls",
         "data": {"tls.crt": base64.b64encode(certs.cert_pem).decode(),
                  "tls.key": base64.b64encode(certs.key_pem).decode(),
                  "ca.crt": base64.b64encode(certs.ca_pem).decode()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**meta, "name": f"{NAME}-policy"},
         "data": {"policy.yaml": policy_yaml}},
        deployment,
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": {"app.kubernetes.io/name": NAME},
                  "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}},
        webhook,
        *([network_policy(meta, api_server_cidrs)] if api_server_cidrs else []),
    ]  # fmt: skip


PROBE_PORT = 8081


def network_policy(meta: dict[str, Any], cidrs: list[str]) -> dict[str, Any]:
    """Ingress to the webhook pods: port 8443 from the API server's addresses only (AdmissionReviews carry no
    credentials of their own, so anyone who reaches /validate could post reviews in any user's name), and the
    probe port from anywhere (the kubelet; it serves only health and metrics)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"ipBlock": {"cidr": c}} for c in cidrs], "ports": [{"protocol": "TCP", "port": 8443}]},
                {"ports": [{"protocol": "TCP", "port": PROBE_PORT}]},
            ],
        },
    }

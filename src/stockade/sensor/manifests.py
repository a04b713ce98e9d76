"""`stockade sensor manifests`: the node sensor as a DaemonSet, split like Defender's: a collector container
with only the capabilities eBPF needs, and an unprivileged publisher that ships its alerts."""

from __future__ import annotations

from typing import Any

NAME = "stockade-sensor"


def render(namespace: str, image: str, server: str = "", cluster: str = "", token_secret: str = "stockade-cluster"
           ) -> list[dict[str, Any]]:  # fmt: skip
    """With ``server`` the publisher ships alerts to the stockade server (resumable, no duplicates), with the
    cluster's token from the Secret ``token_secret`` (key ``token``); without, it prints them to its log."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "stockade"}
    shared = {"name": "alerts", "mountPath": "/var/run/stockade"}
    collector = {
        "name": "collector",
        "image": image,
        "args": ["sensor", "run", "--output", "/var/run/stockade/alerts.jsonl", "--cpu-share", "0.3",
                 "--learn", "3600", "--cri-socket", "auto",
                 "--memory-limit", "400"],  # below the container's limit: the sensor sheds before the kernel kills
        "securityContext": {
            # eBPF: CAP_BPF and CAP_PERFMON load and read the probes, CAP_SYS_RESOURCE lifts the memlock limit,
            # CAP_SYS_ADMIN mounts tracefs and reads other tasks; no privileged mode, no host network
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_ADMIN", "SYS_PTRACE"]},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [
            shared,
            {"name": "tracing", "mountPath": "/sys/kernel/tracing"},
            {"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": True},
            {"name": "cgroup", "mountPath": "/sys/fs/cgroup", "readOnly": True},
            # the container runtime's CRI socket (containerd or CRI-O), to name the pods of the processes seen;
            # connecting to a socket works through a read-only mount
            {"name": "containerd", "mountPath": "/host/run/containerd", "readOnly": True},
            {"name": "crio", "mountPath": "/host/run/crio", "readOnly": True},
        ],
    }  # fmt: skip
    restricted = {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
                  "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    publisher: dict[str, Any] = {
        "name": "publisher",
        "image": image,
        "securityContext": restricted,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "volumeMounts": [{**shared, "readOnly": True}],
    }  # fmt: skip
    volumes: list[dict[str, Any]] = [{"name": "alerts", "emptyDir": {"sizeLimit": "256Mi"}}]
    if server:
        publisher["args"] = ["publish", "/var/run/stockade/alerts.jsonl", "--component", "sensor",
                             "--state", "/var/lib/stockade-publisher/offset"]  # fmt: skip
        publisher["env"] = [
            {"name": "STOCKADE_SERVER", "value": server},
            {"name": "STOCKADE_CLUSTER", "value": cluster},
            {"name": "STOCKADE_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": "token"}}},
        ]
        publisher["volumeMounts"].append({"name": "publisher-state", "mountPath": "/var/lib/stockade-publisher"})
        volumes.append({"name": "publisher-state", "emptyDir": {"sizeLimit": "1Mi"}})
    else:
        publisher["command"] = ["sh", "-c", "touch /var/run/stockade/alerts.jsonl && exec tail -n +1 -F /var/run/stockade/alerts.jsonl"]  # noqa: E501
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": namespace, "labels": labels},  # noqa: E501
         "automountServiceAccountToken": False},
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "automountServiceAccountToken": False,
                        "hostPID": True,  # /proc of every process: container attribution and working directories
                        "priorityClassName": "system-node-critical",
                        "tolerations": [{"operator": "Exists"}],
                        "securityContext": {"seccompProfile": {"type": "Unconfined"}},  # bpf() is not in the default
                        "containers": [collector, publisher],
                        "volumes": [
                            *volumes,
                            {"name": "tracing", "hostPath": {"path": "/sys/kernel/tracing"}},
                            {"name": "btf", "hostPath": {"path": "/sys/kernel/btf"}},
                            {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup"}},
                            {"name": "containerd", "hostPath": {"path": "/run/containerd", "type": "DirectoryOrCreate"}},  # noqa: E501
                            {"name": "crio", "hostPath": {"path": "/run/crio", "type": "DirectoryOrCreate"}},
                        ],
                    },
                },
            },
        },
    ]  # fmt: skip

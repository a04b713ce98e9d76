"""`stockade agent`: the in-cluster collector. On an interval it reads the cluster (read-only), assesses posture and
sends one inventory snapshot: running containers and their images, recommendations, compliance, the Kubernetes
version and which stockade components are installed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.kube import containers, pod_template
from stockade.model import Resource

log = logging.getLogger("stockade.agent")

# app.kubernetes.io/name of the workloads stockade installs (sensor/manifests.py, admission/manifests.py, the chart)
COMPONENT_NAMES = {"stockade-sensor": "sensor", "stockade-admission": "admission", "stockade-audit": "audit"}
REC_FIELDS = ("rule", "title", "severity", "frameworks", "kind", "namespace", "name", "container", "remediation",
              "objects")  # fmt: skip
OWNER_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "ReplicationController")


def _owner(pod: dict[str, Any]) -> tuple[str, str]:
    """The workload a pod belongs to; a ReplicaSet's pod-template hash suffix is dropped to name its Deployment."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        if kind == "ReplicaSet" and "-" in name:
            return "Deployment", name.rsplit("-", 1)[0]
        if kind:
            return kind, name
    return "Pod", str((pod.get("metadata") or {}).get("name", ""))


def running_containers(resources: list[Resource]) -> list[dict[str, Any]]:
    """Containers of live Pods (with the image digest the kubelet reports); for manifests without Pods, one per
    container of each workload's pod template."""
    pods = [r for r in resources if r.kind == "Pod"]
    out: list[dict[str, Any]] = []
    if pods:
        for r in pods:
            spec = r.raw.get("spec") or {}
            status = r.raw.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                continue
            ids = {
                s.get("name"): str(s.get("imageID", ""))
                for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
            }
            kind, name = _owner(r.raw)
            for _k, c in containers(spec):
                image_id = ids.get(c.get("name"), "")
                out.append(
                    {
                        "namespace": r.namespace,
                        "pod": r.name,
                        "container": c.get("name", ""),
                        "workload_kind": kind,
                        "workload": name,
                        "image": c.get("image", ""),
                        "image_digest": image_id.rsplit("@", 1)[-1] if "@" in image_id else "",
                        "node": spec.get("nodeName", ""),
                    }
                )
        return [c for c in out if c["image"]]
    for r in resources:
        if r.kind not in OWNER_KINDS:
            continue
        tmpl = pod_template(r)
        if tmpl is None:
            continue
        for _k, c in containers(tmpl.get("spec") or {}):
            if c.get("image"):
                out.append(
                    {
                        "namespace": r.namespace,
                        "pod": r.name,
                        "container": c.get("name", ""),
                        "workload_kind": r.kind,
                        "workload": r.name,
                        "image": c["image"],
                    }
                )
    return out


def installed_components(resources: list[Resource]) -> dict[str, bool]:
    found = {}
    for r in resources:
        labels = ((r.raw.get("metadata") or {}).get("labels")) or {}
        comp = COMPONENT_NAMES.get(labels.get("app.kubernetes.io/name", ""))
        if comp and r.kind in ("DaemonSet", "Deployment", "StatefulSet"):
            found[comp] = True
    return found


def snapshot(
    resources: list[Resource], server_version: str | None, version: tuple[int, int] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the agent reports about the cluster, from its objects (and the read's ``warnings``: kinds it could
    not list are not judged absent)."""
    from stockade.posture import LATEST_K8S, OLDEST_K8S, evaluate, load_rules, parse_version, report
    from stockade.posture.cluster import unlisted_kinds
    from stockade.posture.releases import cluster_resource

    if version is None:
        version = parse_version(server_version, "the cluster's /version") if server_version else LATEST_K8S
    version = min(max(version, OLDEST_K8S), LATEST_K8S)
    rules = load_rules()
    cluster = cluster_resource(server_version) if server_version else None
    judged = [*resources, cluster] if cluster else resources
    findings = evaluate(rules, judged, version=version, unlisted=unlisted_kinds(warnings or []))
    comp = report.compliance(rules, resources, findings)["frameworks"]
    ctrs = running_containers(resources)
    return {
        "k8s_version": server_version or "",
        "nodes": len({c.get("node") for c in ctrs if c.get("node")}),
        "components": installed_components(resources),
        "containers": ctrs,
        "recommendations": [{k: v for k, v in f.to_dict().items() if k in REC_FIELDS} for f in findings],
        "compliance": comp,
    }


def run(
    send: Callable[[dict[str, Any]], Any],
    read: Callable[[], tuple[list[Resource], list[str], str | None]],
    interval: float,
    once: bool,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Read, assess and send every ``interval`` seconds (once with ``once``); returns the snapshots sent."""
    sent = 0
    while True:
        started = time.monotonic()
        resources, warnings, server_version = read()
        for w in warnings:
            log.warning("%s", w)
        snap = snapshot(resources, server_version, warnings=warnings)
        send(snap)
        sent += 1
        log.info(
            "sent a snapshot: %d containers, %d recommendations", len(snap["containers"]), len(snap["recommendations"])
        )
        if once or stop():
            return sent
        time.sleep(max(1.0, interval - (time.monotonic() - started)))


def reader(paths: list[Path] | None, kubeconfig: Path | None, context: str | None) -> Callable[[], Any]:
    """Where the agent reads the cluster: manifests (paths) or the live API (in-cluster or a kubeconfig)."""

    def read() -> tuple[list[Resource], list[str], str | None]:
        if paths:
            from stockade.posture import load_manifests as load

            res, warns = load(paths)
            return res, warns, None
        from stockade.posture.cluster import fetch

        return fetch(kubeconfig, context)

    return read

"""Kubernetes objects as every engine reads them: a Resource from any object, the pod template of any workload
(custom resources included), containers with the pod's securityContext inherited, image references with
Docker's defaults made explicit."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from stockade.model import Resource

WORKLOAD_KINDS = {
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ReplicationController",
}
# container securityContext fields a container inherits from the pod's when it does not set them
INHERITED = (
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seLinuxOptions",
    "seccompProfile",
    "appArmorProfile",
    "windowsOptions",
)
def _dict(value: Any) -> dict[str, Any]:
    """A mapping field of an object, or {} when it holds something else (a hand-written manifest or a crafted
    request may put anything anywhere)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def to_resource(obj: dict[str, Any], source: str = "") -> Resource:
    meta = _dict(obj.get("metadata"))
    return Resource(
        kind=str(obj.get("kind", "")),
        api_version=str(obj.get("apiVersion", "")),
        name=str(meta.get("name", "") or meta.get("generateName", "")),
        namespace=str(meta.get("namespace", "") or ""),
        raw=obj,
        source=source,
        labels={str(k): str(v) for k, v in _dict(meta.get("labels")).items()},
        annotations={str(k): str(v) for k, v in _dict(meta.get("annotations")).items()},
    )


def pod_template(r: Resource) -> dict[str, Any] | None:
    """The pod (metadata and spec) of any workload, or a pod template found inside a custom resource."""
    return pod_template_of(r.raw, r.kind)


def pod_template_of(obj: dict[str, Any], kind: str, custom: bool = True) -> dict[str, Any] | None:
    """The pod (metadata and spec) of an object of ``kind``: itself for a Pod, the template of a workload or
    CronJob, and with ``custom`` a pod template found inside any other kind (custom resources)."""
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        return None
    if kind == "Pod":
        return obj if isinstance(obj.get("spec"), dict) else None
    if kind == "CronJob":
        tmpl = _dict(_dict(spec.get("jobTemplate")).get("spec")).get("template")
    elif kind in WORKLOAD_KINDS:
        tmpl = spec.get("template")
    elif custom:
        tmpl = _find_template(spec, 0)
    else:
        return None
    return tmpl if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict) else None


def pod_spec(r: Resource) -> dict[str, Any] | None:
    """The pod spec of any workload, or of a pod template found inside a custom resource."""
    tmpl = pod_template(r)
    return tmpl["spec"] if tmpl is not None else None


def _find_template(node: Any, depth: int) -> dict[str, Any] | None:
    if depth > 6 or not isinstance(node, dict):
        return None
    tmpl = node.get("template")
    if isinstance(tmpl, dict) and isinstance(_dict(tmpl.get("spec")).get("containers"), list):
        return tmpl
    for v in node.values():
        found = _find_template(v, depth + 1)
        if found is not None:
            return found
    return None


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, effective container) for every container; the pod securityContext fills what it leaves unset."""
    pod_sc = _dict(spec.get("securityContext"))
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in _list(spec.get(kind)):
            if not isinstance(c, dict):
                continue
            eff = copy.copy(c)
            sc = dict(_dict(c.get("securityContext")))
            for key in INHERITED:
                if key not in sc and key in pod_sc:
                    sc[key] = pod_sc[key]
            eff["securityContext"] = sc
            eff["_own"] = _dict(c.get("securityContext"))  # what the container itself sets
            eff["_kind"] = kind  # initContainers, containers or ephemeralContainers
            yield kind, eff


def normalize(ref: str) -> str:
    """Docker's defaults made explicit: nginx:1 -> docker.io/library/nginx:1; no tag -> :latest."""
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if rest else f"library/{name}")
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name

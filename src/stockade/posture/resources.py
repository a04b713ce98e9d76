"""Kubernetes objects from manifests (YAML/JSON files and directories, multi-document, List objects) and
one view of any pod template, with the pod's securityContext inherited by its containers."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from stockade.model import StockadeError

MAX_MANIFEST = 64 * 1024**2
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
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(StockadeError):
    pass


@dataclass(slots=True)
class Resource:
    kind: str
    api_version: str
    name: str
    namespace: str
    raw: dict[str, Any]
    source: str = ""  # file, and document index
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


def _charts(paths: list[Path]) -> list[Path]:
    """Chart directories given, or found below the directories given (a chart's own subcharts excepted)."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            continue
        if (p / "Chart.yaml").is_file():
            out.append(p)
            continue
        for root, dirs, _files in os.walk(p):
            if "Chart.yaml" in _files:
                out.append(Path(root))
                dirs[:] = []
            dirs.sort()
    return out


def render_chart(chart: Path, warnings: list[str]) -> list[Resource]:
    """`helm template` of a chart directory, when helm is installed (it renders with the chart's defaults)."""
    import shutil
    import subprocess

    helm = shutil.which("helm")
    if helm is None:
        warnings.append(f"{chart}: a Helm chart, but helm is not installed; its templates were not rendered")
        return []
    proc = subprocess.run(
        [helm, "template", "stockade-posture", str(chart)], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        warnings.append(f"{chart}: helm template failed: {proc.stderr.strip()[:500]}")
        return []
    out = []
    try:
        for i, doc in enumerate(yaml.load_all(proc.stdout, Loader=_LOADER)):
            out += [to_resource(o, f"{chart} (helm template)#{i}") for o in _objects(doc)]
    except yaml.YAMLError as exc:
        warnings.append(f"{chart}: helm template output is not YAML ({str(exc).splitlines()[0]})")
    return out


def _walk(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir() and (p / "Chart.yaml").is_file():
            continue  # rendered by render_chart, not read as raw templates
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                if "Chart.yaml" in files:  # rendered by render_chart
                    dirs[:] = []
                    continue
                dirs.sort()
                for f in sorted(files):
                    if f.endswith((".yaml", ".yml", ".json")):
                        yield Path(root) / f
        elif p.is_file():
            yield p
        else:
            raise ManifestError(f"{p}: no such file or directory")


def _documents(path: Path) -> Iterator[Any]:
    if path.stat().st_size > MAX_MANIFEST:
        raise ManifestError(f"{path}: over {MAX_MANIFEST} bytes")
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            yield orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(f"{path}: malformed JSON ({exc})") from None
        return
    try:
        yield from yaml.load_all(data, Loader=_LOADER)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ManifestError(f"{path}:{line} malformed YAML ({str(exc).splitlines()[0]})") from None


def _dict(value: Any) -> dict[str, Any]:
    """A mapping field of an object, or {} when it holds something else (a hand-written manifest or a crafted
    request may put anything anywhere)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):  # kubectl get -o
        for item in doc["items"]:
            yield from _objects(item)
    elif doc.get("kind"):
        yield doc


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


def load(paths: list[Path]) -> tuple[list[Resource], list[str]]:
    """Every object of the files; a broken file is a warning, the others still load."""
    out: list[Resource] = []
    warnings: list[str] = []
    for chart in _charts(paths):
        out += render_chart(chart, warnings)
    for f in _walk(paths):
        try:
            for i, doc in enumerate(_documents(f)):
                for obj in _objects(doc):
                    out.append(to_resource(obj, f"{f}#{i}"))
        except ManifestError as exc:
            warnings.append(str(exc))
    return out, warnings


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
            yield kind, eff

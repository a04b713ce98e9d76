"""Kubernetes objects from manifests: YAML/JSON files and directories, multi-document, List objects, Helm
charts rendered with helm."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from stockade.kube import to_resource
from stockade.model import Resource, StockadeError

MAX_MANIFEST = 64 * 1024**2
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(StockadeError):
    pass


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


def _objects(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):  # kubectl get -o
        for item in doc["items"]:
            yield from _objects(item)
    elif doc.get("kind"):
        yield doc


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



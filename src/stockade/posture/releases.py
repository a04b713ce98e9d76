"""The cluster itself as an object the rules can judge: its Kubernetes version and whether that release is past
its end of life (dates from the Kubernetes release history, data/kubernetes-releases.yaml)."""

from __future__ import annotations

import functools
from datetime import date
from importlib import resources
from typing import Any

import yaml

from stockade.model import Resource
from stockade.posture.rule import parse_version
from stockade.rules import RuleError


@functools.cache
def end_of_life() -> dict[tuple[int, int], date]:
    doc: Any = yaml.safe_load(resources.files("stockade.posture").joinpath("data/kubernetes-releases.yaml").read_text())
    return {parse_version(k): date.fromisoformat(str(v)) for k, v in (doc.get("releases") or {}).items()}


def cluster_resource(server_version: str, name: str = "cluster", today: date | None = None) -> Resource | None:
    """A ``Cluster`` object for the rules (STK-K8S-001): ``version``, ``endOfLife`` and ``daysPastEndOfLife``
    (0 while supported; absent when the release is newer than the data); None when the version is unreadable."""
    try:
        major, minor = parse_version(server_version, "the cluster's version")
    except RuleError:
        return None
    raw: dict[str, Any] = {"kind": "Cluster", "metadata": {"name": name}, "version": f"{major}.{minor}",
                           "gitVersion": server_version}  # fmt: skip
    eol = end_of_life().get((major, minor))
    if eol is not None:
        raw["endOfLife"] = eol.isoformat()
        raw["daysPastEndOfLife"] = max(0, ((today or date.today()) - eol).days)
    return Resource("Cluster", "stockade.dev/v1", name, "", raw, source="(the cluster's /version)")

"""A posture assessment end to end: manifests and/or a live cluster read, the rules evaluated as they read at the
cluster's Kubernetes version, findings filtered by severity and split by the exceptions file. What ``stockade
posture`` runs; tests call it without the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stockade.model import Resource
from stockade.posture.engine import evaluate, load_rules
from stockade.posture.exceptions import Exceptions
from stockade.posture.resources import load
from stockade.posture.rule import LATEST_K8S, OLDEST_K8S, PostureFinding, Rule, parse_version
from stockade.rules import RuleError


@dataclass(slots=True)
class Assessment:
    rules: list[Rule]
    resources: list[Resource]
    findings: list[PostureFinding]  # of the severities asked for, excepted or not
    excepted: dict[int, str] = field(default_factory=dict)  # id(finding) -> the exception's reason
    warnings: list[str] = field(default_factory=list)
    version: tuple[int, int] = LATEST_K8S

    @property
    def active(self) -> list[PostureFinding]:
        return [f for f in self.findings if id(f) not in self.excepted]


def assess(paths: list[Path] | None = None, kubeconfig: Path | None = None, context: str | None = None,
           rules: list[Path] | None = None, exceptions: Path | None = None,
           severities: set[str] | None = None, k8s_version: str | None = None,
           live: bool = False) -> Assessment:  # fmt: skip
    """Assess the objects of ``paths`` and, with ``live`` (or a kubeconfig or context), of the cluster; the rules
    read as at ``k8s_version`` (default: the cluster's, else the newest known)."""
    version = parse_version(k8s_version, "--k8s-version") if k8s_version else None
    exc = Exceptions.load(exceptions) if exceptions else Exceptions()
    try:
        rule_set = load_rules(rules, exc.parameters)
    except RuleError as e:
        raise RuleError(f"{exceptions}: {e}" if exceptions and "parameter" in str(e) else str(e)) from None
    resources, warnings = load(paths) if paths else ([], [])
    unlisted: frozenset[str] = frozenset()
    if live or kubeconfig is not None or context is not None:
        from stockade.posture.cluster import fetch, unlisted_kinds
        from stockade.posture.releases import cluster_resource

        found, live_warnings, server_version = fetch(kubeconfig, context)
        resources += found
        warnings += live_warnings
        unlisted = unlisted_kinds(live_warnings)
        if server_version:
            cluster = cluster_resource(server_version)
            resources += [cluster] if cluster else []
        if version is None and server_version:
            version = parse_version(server_version, "the cluster's /version")
    version = min(max(version or LATEST_K8S, OLDEST_K8S), LATEST_K8S)
    wanted = severities or {"CRITICAL", "HIGH", "MEDIUM", "LOW"}
    findings = [f for f in evaluate(rule_set, resources, version=version, unlisted=unlisted)
                if f.rule.severity in wanted]  # fmt: skip
    excepted = {id(f): reason for f in findings if (reason := exc.reason(f))}
    return Assessment(rule_set, resources, findings, excepted, warnings, version)

"""A posture rule as it reads at each Kubernetes version, and a finding of one; conditions are in the language
of stockade.rules, compiled on first use."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stockade.model import Resource
from stockade.rules import RuleError, compile_condition

SCOPES = {"pod", "container", "resource"}
SEVERITIES = {"CRITICAL", "HIGH", "MEDIUM", "LOW"}
# The newest Kubernetes minor version whose Pod Security Standards the rules know.
LATEST_K8S = (1, 37)
OLDEST_K8S = (1, 0)  # Pod Security policy versions go back to v1.0 (each check says from which version it applies)


def parse_version(text: str, where: str = "Kubernetes version") -> tuple[int, int]:
    """'1.29', 'v1.29.3', '1.29+' (as GKE/EKS report it), or 'latest' -> (major, minor)."""
    t = str(text).strip()
    if t == "latest":
        return LATEST_K8S
    m = re.match(r"v?(\d+)\.(\d+)", t)
    if not m:
        raise RuleError(f"{where}: {text!r} is not a Kubernetes version like 1.29")
    return int(m.group(1)), int(m.group(2))


@dataclass(slots=True)
class Variant:
    """How a rule reads from one Kubernetes version on; its conditions are compiled on first use."""

    since: tuple[int, int]
    fail: dict[str, Any] | None  # None: only ``pod`` judges (a container rule whose check is pod-level here)
    skip: dict[str, Any] | None = None
    # container rules: a condition on the pod's own fields (spec.securityContext...), checked on its own as
    # Pod Security admission does; a container's value does not hide a violating pod-level one
    pod: dict[str, Any] | None = None
    _fail_fn: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)
    _skip_fn: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)
    _pod_fn: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)

    def fails(self, node: Any) -> bool:
        if self.fail is None:
            return False
        if self._fail_fn is None:
            self._fail_fn = compile_condition(self.fail)
        return self._fail_fn(node)

    def pod_fails(self, pod: Any) -> bool:
        if self.pod is None:
            return False
        if self._pod_fn is None:
            self._pod_fn = compile_condition(self.pod)
        return self._pod_fn(pod)

    def skips(self, node: Any) -> bool:
        if self.skip is None:
            return False
        if self._skip_fn is None:
            self._skip_fn = compile_condition(self.skip)
        return self._skip_fn(node)


@dataclass(slots=True)
class Rule:
    id: str
    title: str
    severity: str
    scope: str
    fail: dict[str, Any] | None
    kinds: list[str] = field(default_factory=list)
    frameworks: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""
    remediation: str = ""
    patch: str = ""
    fields: list[str] = field(default_factory=list)
    trivy: str = ""
    since: tuple[int, int] = (0, 0)
    versions: list[Variant] = field(default_factory=list)
    pod: dict[str, Any] | None = None  # container rules: the pod-level condition of the base variant
    off: str = ""  # why the rule is not evaluated (a parameter it needs is not set), "" when it is
    _base: Variant | None = field(default=None, repr=False, compare=False)

    def at(self, version: tuple[int, int]) -> Variant | None:
        """The rule as it reads at ``version``; None when it does not exist yet (or is off)."""
        if version < self.since or self.off:
            return None
        if self._base is None:
            self._base = Variant(self.since, self.fail, pod=self.pod)
        chosen = self._base
        for v in self.versions:
            if v.since <= version and v.since >= chosen.since:
                chosen = v
        return chosen


@dataclass(slots=True)
class PostureFinding:
    rule: Rule
    resource: Resource
    container: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {
            "rule": r.id,
            "title": r.title,
            "severity": r.severity,
            "frameworks": r.frameworks,
            "kind": self.resource.kind,
            "namespace": self.resource.namespace,
            "name": self.resource.name,
            "container": self.container,
            "source": self.resource.source,
            "fields": r.fields,
            "remediation": r.remediation,
            "patch": r.patch,
            **({"objects": self.resource.raw["workloads"]} if self.resource.source == "(derived)"
               and isinstance(self.resource.raw.get("workloads"), list) else {}),
        }  # fmt: skip

"""Posture rules are YAML data; this module loads, checks and evaluates them.

A rule's ``fail`` condition is evaluated against one scope:
  pod        the pod spec of a workload (Pod, Deployment, ..., CronJob, pod templates in custom resources)
  container  each container's effective spec (the pod securityContext inherited where the container is silent)
  resource   the whole object, for the kinds listed in ``kinds``

Conditions:  {all: [...]}, {any: [...]}, {not: {...}}, {some: PATH, where: {...}} (an element of the list at
PATH satisfies the inner condition as a whole), or {field: PATH, op: OP, value: V}
PATH is dotted, with [*] over lists ("volumes[*].hostPath.path"); a path that reaches several values
passes when any of them does. OP: eq, ne, in, not_in, exists, absent, truthy, falsy, startswith, endswith,
contains, matches, gt, lt, not_subset (a list with an element outside ``value``), missing_any (a list
lacking one of ``value``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from stockade.model import StockadeError
from stockade.posture.resources import Resource, containers, pod_spec

SCOPES = {"pod", "container", "resource"}
SEVERITIES = {"CRITICAL", "HIGH", "MEDIUM", "LOW"}
_OPS = {
    "eq",
    "ne",
    "in",
    "not_in",
    "exists",
    "absent",
    "truthy",
    "falsy",
    "startswith",
    "endswith",
    "contains",
    "matches",
    "gt",
    "lt",
    "not_subset",
    "missing_any",
}
_MISSING = object()


class RuleError(StockadeError):
    pass


@dataclass(slots=True)
class Rule:
    id: str
    title: str
    severity: str
    scope: str
    fail: dict[str, Any]
    kinds: list[str] = field(default_factory=list)
    frameworks: dict[str, Any] = field(default_factory=dict)
    rationale: str = ""
    remediation: str = ""
    patch: str = ""
    fields: list[str] = field(default_factory=list)
    trivy: str = ""


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
        }


def _check_condition(cond: Any, where: str) -> None:
    if not isinstance(cond, dict) or len(cond) == 0:
        raise RuleError(f"{where}: a condition must be a mapping")
    if "all" in cond or "any" in cond:
        items = cond.get("all", cond.get("any"))
        if not isinstance(items, list) or not items:
            raise RuleError(f"{where}: all/any needs a non-empty list")
        for i, c in enumerate(items):
            _check_condition(c, f"{where}[{i}]")
    elif "not" in cond:
        _check_condition(cond["not"], f"{where}.not")
    elif "some" in cond:
        if not isinstance(cond["some"], str):
            raise RuleError(f"{where}: some needs a path")
        _check_condition(cond.get("where"), f"{where}.where")
    else:
        if not isinstance(cond.get("field"), str) or cond.get("op") not in _OPS:
            raise RuleError(f"{where}: needs 'field' and an 'op' among {sorted(_OPS)}")
        if cond["op"] == "matches":
            try:
                re.compile(str(cond.get("value", "")))
            except re.error as exc:
                raise RuleError(f"{where}: bad regular expression ({exc})") from None


def parse_rules(doc: Any, where: str) -> list[Rule]:
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{where}: expected a mapping with a 'rules' list")
    out = []
    for i, r in enumerate(doc["rules"]):
        w = f"{where}: rule {i}" + (f" ({r.get('id')})" if isinstance(r, dict) and r.get("id") else "")
        if not isinstance(r, dict):
            raise RuleError(f"{w}: not a mapping")
        missing = [k for k in ("id", "title", "severity", "scope", "fail", "remediation") if not r.get(k)]
        if missing:
            raise RuleError(f"{w}: missing {', '.join(missing)}")
        if r["scope"] not in SCOPES or r["severity"] not in SEVERITIES:
            raise RuleError(f"{w}: scope must be one of {sorted(SCOPES)}, severity one of {sorted(SEVERITIES)}")
        if r["scope"] == "resource" and not r.get("kinds"):
            raise RuleError(f"{w}: a resource rule lists the kinds it applies to")
        _check_condition(r["fail"], f"{w}: fail")
        out.append(
            Rule(
                id=str(r["id"]),
                title=str(r["title"]),
                severity=str(r["severity"]),
                scope=str(r["scope"]),
                fail=r["fail"],
                kinds=list(r.get("kinds") or []),
                frameworks=dict(r.get("frameworks") or {}),
                rationale=str(r.get("rationale", "")),
                remediation=str(r["remediation"]),
                patch=str(r.get("patch", "")),
                fields=list(r.get("fields") or []),
                trivy=str(r.get("trivy", "")),
            )
        )
    return out


def load_rules(extra: list[Path] | None = None) -> list[Rule]:
    """The built-in rule files (stockade/posture/rules/*.yaml), plus any given; ids must be unique."""
    rules: list[Rule] = []
    pkg = importlib_resources.files("stockade.posture") / "rules"
    sources: list[tuple[str, str]] = [
        (f"rules/{p.name}", p.read_text())
        for p in sorted(pkg.iterdir(), key=lambda x: x.name)
        if p.name.endswith(".yaml")
    ]
    for p in extra or []:
        try:
            sources.append((str(p), p.read_text()))
        except OSError as exc:
            raise RuleError(f"{p}: cannot read ({exc.strerror})") from None
    for where, text in sources:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RuleError(f"{where}: malformed YAML ({str(exc).splitlines()[0]})") from None
        rules += parse_rules(doc, where)
    ids = [r.id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuleError(f"duplicate rule ids: {', '.join(sorted(dup))}")
    return rules


def _resolve(node: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        yield node
        return
    head, rest = parts[0], parts[1:]
    many = head.endswith("[*]")
    key = head[:-3] if many else head
    if not isinstance(node, dict) or key not in node or node[key] is None:
        return
    value = node[key]
    if many:
        for item in value if isinstance(value, list) else []:
            yield from _resolve(item, rest)
    else:
        yield from _resolve(value, rest)


def _test(op: str, v: Any, want: Any) -> bool:
    if op == "eq":
        return bool(v == want)
    if op == "ne":
        return bool(v != want)
    if op == "in":
        return v in want
    if op == "not_in":
        return v not in want
    if op == "truthy":
        return bool(v)
    if op == "falsy":
        return not v
    if op in ("startswith", "endswith"):
        return isinstance(v, str) and getattr(v, op)(tuple(want) if isinstance(want, list) else want)
    if op == "contains":
        return isinstance(v, list | str) and want in v
    if op == "matches":
        return isinstance(v, str) and re.search(str(want), v) is not None
    if op in ("gt", "lt"):
        return isinstance(v, int | float) and not isinstance(v, bool) and (v > want if op == "gt" else v < want)
    if op == "not_subset":
        return isinstance(v, list) and any(x not in want for x in v)
    if op == "missing_any":
        return not isinstance(v, list) or any(w not in v for w in want)
    raise RuleError(f"unknown op {op}")


def holds(cond: dict[str, Any], node: Any) -> bool:
    if "all" in cond:
        return all(holds(c, node) for c in cond["all"])
    if "any" in cond:
        return any(holds(c, node) for c in cond["any"])
    if "not" in cond:
        return not holds(cond["not"], node)
    if "some" in cond:
        return any(holds(cond["where"], item) for item in _resolve(node, cond["some"].split(".")))
    values = list(_resolve(node, cond["field"].split(".")))
    op = cond["op"]
    if op == "exists":
        return bool(values)
    if op == "absent":
        return not values
    return any(_test(op, v, cond.get("value")) for v in values)


def evaluate(rules: list[Rule], resources: list[Resource], cross: bool = True) -> list[PostureFinding]:
    """Every rule over every object; with ``cross``, also the checks across objects (posture/graph.py)."""
    out: list[PostureFinding] = []
    for res in resources:
        spec = pod_spec(res)
        for rule in rules:
            if rule.scope == "resource":
                if res.kind in rule.kinds and holds(rule.fail, res.raw):
                    out.append(PostureFinding(rule, res))
            elif spec is not None:
                if rule.scope == "pod":
                    if holds(rule.fail, spec):
                        out.append(PostureFinding(rule, res))
                else:
                    for _kind, c in containers(spec):
                        if holds(rule.fail, c):
                            out.append(PostureFinding(rule, res, str(c.get("name", ""))))
    if cross:
        from stockade.posture.graph import analyze

        out += analyze(resources)
    return out

"""Posture rules as Kubernetes ValidatingAdmissionPolicies: stockade's condition language translated to CEL,
so that the API server enforces what it can without a webhook. Rules whose conditions need what CEL in
admission cannot see (objects across the cluster, the image gate's scan store) or that this translator does
not handle are listed with the reason; the webhook enforces those."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stockade.admission.policy import AdmissionPolicy
from stockade.kube import INHERITED
from stockade.posture import LATEST_K8S, OLDEST_K8S, Rule, parse_version
from stockade.rules import split_path

KIND_RESOURCES = {
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "ClusterRole": ("rbac.authorization.k8s.io", "clusterroles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "clusterrolebindings"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Namespace": ("", "namespaces"),
    "Pod": ("", "pods"),
    "ReplicationController": ("", "replicationcontrollers"),
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "ReplicaSet": ("apps", "replicasets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}
POD_KINDS = ("Pod", "ReplicationController", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# the resources with a pod template, by API group
POD_RESOURCES: dict[str, list[str]] = {}
for _kind in POD_KINDS:
    POD_RESOURCES.setdefault(KIND_RESOURCES[_kind][0], []).append(KIND_RESOURCES[_kind][1])
POD_SPEC = (
    "object.kind == 'Pod' ? object.spec : "
    "(object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)"
)
CONTAINERS = (
    "variables.podSpec.containers"
    " + (has(variables.podSpec.initContainers) ? variables.podSpec.initContainers : [])"
    " + (has(variables.podSpec.ephemeralContainers) ? variables.podSpec.ephemeralContainers : [])"
)
# Field names whose values are booleans (truthy means == true) and lists (contains means membership);
# CEL in Kubernetes is typed, so the translation must know.
BOOLEAN_FIELDS = {
    "privileged", "hostPID", "hostIPC", "hostNetwork", "hostUsers", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "automountServiceAccountToken", "hostProcess",
}  # fmt: skip
LIST_FIELDS = {"verbs", "resources", "apiGroups", "resourceNames", "add", "drop", "nonResourceURLs"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Unsupported(Exception):
    """A condition this translator cannot express in CEL."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """A map entry being iterated: CEL expressions for its key and its value."""

    key: str
    value: str


def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    raise Unsupported(f"literal {v!r}")


class _Translator:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"x{self.n}"

    def at(self, node: str | _Entry, parts: tuple[str, ...], pred: Callable[[str, str], str]) -> str:
        """True when some value at ``parts`` below ``node`` satisfies ``pred(value, field name)``."""
        if isinstance(node, _Entry):
            if not parts or parts[0] not in ("key", "value"):
                raise Unsupported("a map entry is read as key or value")
            return self.at(node.key if parts[0] == "key" else node.value, parts[1:], pred)
        if not parts:
            return pred(node, "")
        head, rest = parts[0], parts[1:]
        mode = "list" if head.endswith("[*]") else "map" if head.endswith("{}") else ""
        key = head[:-3] if mode == "list" else head[:-2] if mode == "map" else head
        if node == "c" and self.scope == "container" and key == "securityContext":
            return self._inherited(rest, mode, pred)
        if node == "c" and key == "_pod":
            return self.at("variables.podSpec", rest, pred)
        if node == "c" and key == "_own":  # the container's own securityContext, nothing inherited
            return f"(has(c.securityContext) && {self.at('c.securityContext', rest, pred)})"
        if key == "_meta" or key == "_pod":
            raise Unsupported("reads the pod template's metadata")
        if key == "_kind":  # the containers variable joins the three lists
            raise Unsupported("tells app, init and ephemeral containers apart")
        if _IDENT.match(key):
            present, child = f"has({node}.{key})", f"{node}.{key}"
        else:
            present, child = f"{_lit(key)} in {node}", f"{node}[{_lit(key)}]"
        if mode == "list":
            x = self.var()
            return f"({present} && {child}.exists({x}, {self.at(x, rest, pred)}))"
        if mode == "map":
            k = self.var()
            return f"({present} && {child}.exists({k}, {self.at(_Entry(k, f'{child}[{k}]'), rest, pred)}))"
        if not rest:
            return f"({present} && {pred(child, key)})"
        return f"({present} && {self.at(child, rest, pred)})"

    def _inherited(self, rest: tuple[str, ...], mode: str, pred: Callable[[str, str], str]) -> str:
        """A container's securityContext field, or the pod's when the container leaves it unset."""
        if mode or not rest or rest[0] not in INHERITED:
            if mode or not rest:
                raise Unsupported("reads the effective securityContext as a whole")
            return self.at("c", ("securityContext_own", *rest), pred).replace("securityContext_own", "securityContext")
        fld, more = rest[0], rest[1:]
        own = f"has(c.securityContext) && has(c.securityContext.{fld})"
        pod = "has(variables.podSpec.securityContext) && has(variables.podSpec.securityContext." + fld + ")"
        mine = self.at(f"c.securityContext.{fld}", more, pred) if more else pred(f"c.securityContext.{fld}", fld)
        theirs = (
            self.at(f"variables.podSpec.securityContext.{fld}", more, pred)
            if more
            else pred(f"variables.podSpec.securityContext.{fld}", fld)
        )
        return f"(({own}) ? {mine} : (({pod}) && {theirs}))"

    def cond(self, c: dict[str, Any], node: str | _Entry) -> str:
        if "all" in c:
            return "(" + " && ".join(self.cond(x, node) for x in c["all"]) + ")" if c["all"] else "true"
        if "any" in c:
            return "(" + " || ".join(self.cond(x, node) for x in c["any"]) + ")" if c["any"] else "false"
        if "not" in c:
            return f"!{self.cond(c['not'], node)}"
        if "some" in c:
            return self.at(node, split_path(c["some"]), lambda v, _f: self.cond(c["where"], v))
        parts, op, want = split_path(c["field"]), c["op"], c.get("value")
        if op == "exists":
            return self.at(node, parts, lambda _v, _f: "true")
        if op == "absent":
            return "!" + self.at(node, parts, lambda _v, _f: "true")
        return self.at(node, parts, lambda v, f: _test(op, v, want, f))


def _test(op: str, v: str, want: Any, fld: str) -> str:
    if op == "eq":
        return f"{v} == {_lit(want)}"
    if op == "ne":
        return f"{v} != {_lit(want)}"
    if op == "in":
        return f"{v} in {_lit(want)}"
    if op == "not_in":
        return f"!({v} in {_lit(want)})"
    if op in ("truthy", "falsy"):
        t = f"{v} == true" if fld in BOOLEAN_FIELDS else f"{v} != ''"
        return t if op == "truthy" else f"!({t})"
    if op in ("startswith", "endswith"):
        fn = "startsWith" if op == "startswith" else "endsWith"
        ws = want if isinstance(want, list) else [want]
        return "(" + " || ".join(f"{v}.{fn}({_lit(w)})" for w in ws) + ")"
    if op == "contains":
        return f"{_lit(want)} in {v}" if fld in LIST_FIELDS else f"{v}.contains({_lit(want)})"
    if op == "matches":
        return f"{v}.matches({_lit(want)})"
    if op == "glob":
        return f"{v}.matches({_lit(_glob_regex(want if isinstance(want, list) else [want]))})"
    if op == "gt":
        return f"{v} > {_lit(want)}"
    if op == "lt":
        return f"{v} < {_lit(want)}"
    if op == "not_subset":
        return f"{v}.exists(y, !(y in {_lit(want)}))"
    if op == "missing_any":
        return f"{_lit(want)}.exists(y, !(y in {v}))"
    raise Unsupported(f"op {op}")


def _glob_regex(patterns: list[Any]) -> str:
    """Shell patterns as one RE2 regular expression (CEL's matches): * any run, ? one character."""
    parts = []
    for p in patterns:
        out = ""
        for ch in str(p):
            out += ".*" if ch == "*" else "." if ch == "?" else re.escape(ch)
        parts.append(out)
    return "^(?:" + "|".join(parts) + ")$"


def rule_expression(rule: Rule, version: tuple[int, int]) -> str:
    """The CEL expression that holds when ``rule`` does NOT fail (a ValidatingAdmissionPolicy validation)."""
    variant = rule.at(version)
    if variant is None:
        raise Unsupported("does not apply at this Kubernetes version")
    if not variant.fail and variant.pod is None:
        raise Unsupported("computed across objects (RBAC reachability, namespaces without policies)")
    t = _Translator(rule.scope)
    if rule.scope == "resource" and variant.fail is not None:
        return f"!{t.cond(variant.fail, 'object')}"
    skip = t.cond(variant.skip, "variables.podSpec") + " || " if variant.skip else ""
    if rule.scope == "pod" and variant.fail is not None:
        return f"{skip}!{t.cond(variant.fail, 'variables.podSpec')}"
    parts = [f"variables.containers.exists(c, {t.cond(variant.fail, 'c')})"] if variant.fail is not None else []
    if variant.pod is not None:
        parts.append(t.cond(variant.pod, "variables.podSpec"))
    return f"{skip}!({' || '.join(parts)})"


def export_policies(rules: list[Rule], policy: AdmissionPolicy) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """ValidatingAdmissionPolicy + binding per expressible rule, and (rule id, reason) for the others."""
    version = min(max(parse_version(policy.k8s_version), OLDEST_K8S), LATEST_K8S)
    docs: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    actions = {"deny": ["Deny"], "warn": ["Warn"], "audit": ["Audit", "Warn"]}
    for rule in rules:
        try:
            expr = rule_expression(rule, version)
        except Unsupported as exc:
            skipped.append((rule.id, str(exc)))
            continue
        mode = policy.mode_for(rule.id, "")
        if mode == "off":
            continue
        name = f"stockade-{rule.id.lower()}"
        if rule.scope == "resource":
            res_rules = [
                {"apiGroups": [KIND_RESOURCES[k][0]], "apiVersions": ["*"], "resources": [KIND_RESOURCES[k][1]],
                 "operations": ["CREATE", "UPDATE"]}
                for k in rule.kinds if k in KIND_RESOURCES
            ]  # fmt: skip
            if not res_rules:
                skipped.append((rule.id, f"kinds {rule.kinds} are not built-in resources"))
                continue
            variables = []
        else:
            res_rules = [
                {"apiGroups": [g], "apiVersions": ["v1"], "resources": rs, "operations": ["CREATE", "UPDATE"]}
                for g, rs in POD_RESOURCES.items()
            ]
            variables = [{"name": "podSpec", "expression": POD_SPEC}, {"name": "containers", "expression": CONTAINERS}]
        spec: dict[str, Any] = {
            "failurePolicy": policy.failure_policy,
            "matchConstraints": {"resourceRules": res_rules},
            "validations": [
                {"expression": expr, "message": f"{rule.id}: {rule.title}. Fix: {rule.remediation}"[:1000]}
            ],
        }
        if variables:
            spec["variables"] = variables
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "stockade"}},
                "spec": spec,
            }
        )
        exempt = [n for n in policy.exempt_namespaces if "*" not in n]
        binding: dict[str, Any] = {"policyName": name, "validationActions": actions[mode]}
        if exempt:
            binding["matchResources"] = {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": exempt}]
                }
            }
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "stockade"}},
                "spec": binding,
            }
        )
    return docs, skipped

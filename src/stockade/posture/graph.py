"""Checks across objects: who can reach cluster-admin-equivalent power through RBAC (and which workloads run
as those service accounts), namespaces with workloads but no NetworkPolicy (CIS 5.3.2), and namespaces with
workloads but neither a ResourceQuota nor a LimitRange (NSA/CISA resource policies)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from stockade.kube import pod_spec
from stockade.model import Resource
from stockade.posture.rule import PostureFinding, Rule

# Rules for findings computed here; they carry the same metadata as the YAML ones.
ADMIN_REACH = Rule(
    id="STK-RBAC-100",
    title="Subject can reach cluster-admin power",
    severity="CRITICAL",
    scope="resource",
    fail={},
    kinds=["ClusterRoleBinding", "RoleBinding"],
    frameworks={"cis": ["5.1.1"], "mitre": ["T1078"]},
    rationale="A subject bound (directly or through a group) to a role with all verbs on all resources, or with "
    "escalate/bind/impersonate, controls the cluster.",
    remediation="Bind the subject to a role with only the permissions it needs.",
    fields=["subjects", "roleRef"],
)
WORKLOAD_ADMIN_SA = Rule(
    id="STK-RBAC-101",
    title="Workload runs as a service account that can reach cluster-admin power",
    severity="CRITICAL",
    scope="resource",
    fail={},
    kinds=["Pod", "Deployment"],
    frameworks={"cis": ["5.1.5"], "mitre": ["T1078", "T1528"]},
    rationale="Anyone who compromises the pod takes its token and with it the cluster.",
    remediation="Run the workload as a dedicated service account with minimal RBAC, and set "
    "automountServiceAccountToken: false unless it calls the API.",
    fields=["spec.serviceAccountName"],
)
NO_NETPOL = Rule(
    id="STK-NET-001",
    title="Namespace has workloads but no NetworkPolicy",
    severity="MEDIUM",
    scope="resource",
    fail={},
    kinds=["Namespace"],
    frameworks={"cis": ["5.3.2"], "nsa": ["Network separation"]},
    rationale="Without a NetworkPolicy every pod accepts traffic from every other pod in the cluster.",
    remediation="Add a default-deny NetworkPolicy to the namespace and allow the flows the application needs.",
    patch="apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny}\n"
    "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
    fields=["kind: NetworkPolicy"],
)
NO_QUOTA = Rule(
    id="STK-NET-002",
    title="Namespace has workloads but neither a ResourceQuota nor a LimitRange",
    severity="LOW",
    scope="resource",
    fail={},
    kinds=["Namespace"],
    frameworks={"nsa": ["Resource policies"], "mitre": ["T1496"]},
    rationale="Without quotas or default limits one workload (or a cryptominer in it) can starve the node and "
    "every other tenant.",
    remediation="Add a ResourceQuota and a LimitRange with default requests and limits to the namespace.",
    patch="apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults}\nspec:\n  limits:\n  - type: Container\n"
    "    default: {cpu: 500m, memory: 512Mi}\n    defaultRequest: {cpu: 100m, memory: 128Mi}",
    fields=["kind: ResourceQuota", "kind: LimitRange"],
)
CROSS_RULES = [ADMIN_REACH, WORKLOAD_ADMIN_SA, NO_NETPOL, NO_QUOTA]


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # User, Group, ServiceAccount
    name: str
    namespace: str = ""


def _strs(value: Any) -> set[str]:
    """A list of names as a set of strings (anything else, as a hand-written manifest may hold: empty)."""
    return {str(x) for x in value} if isinstance(value, list) else set()


def _admin_like(rules: Any) -> bool:
    for r in rules if isinstance(rules, list) else []:
        if not isinstance(r, dict):
            continue
        verbs, res = _strs(r.get("verbs")), _strs(r.get("resources"))
        if "*" in verbs and "*" in res:
            return True
        if verbs & {"escalate", "bind", "impersonate"}:
            return True
    return False


def admin_subjects(resources: list[Resource]) -> dict[Subject, list[Resource]]:
    """Subjects bound to a cluster-admin-equivalent role, with the bindings that do it."""
    powerful_cluster = {"cluster-admin"}
    powerful_ns: set[tuple[str, str]] = set()
    for r in resources:
        if r.kind == "ClusterRole" and _admin_like(r.raw.get("rules")):
            powerful_cluster.add(r.name)
        elif r.kind == "Role" and _admin_like(r.raw.get("rules")):
            powerful_ns.add((r.namespace, r.name))
    out: dict[Subject, list[Resource]] = defaultdict(list)
    for b in resources:
        if b.kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        ref = b.raw.get("roleRef")
        ref = ref if isinstance(ref, dict) else {}
        name = str(ref.get("name"))
        strong = (ref.get("kind") == "ClusterRole" and name in powerful_cluster) or (
            ref.get("kind") == "Role" and (b.namespace, name) in powerful_ns
        )
        subjects = b.raw.get("subjects")
        if not strong or not isinstance(subjects, list):
            continue
        for s in subjects:
            if not isinstance(s, dict):
                continue
            ns = s.get("namespace", b.namespace if s.get("kind") == "ServiceAccount" else "")
            out[Subject(str(s.get("kind", "")), str(s.get("name", "")), str(ns or ""))].append(b)
    return out


def analyze(resources: list[Resource], unlisted: frozenset[str] = frozenset()) -> list[PostureFinding]:
    """The checks across objects. ``unlisted``: kinds that could not be read (a live cluster answering 403):
    nothing is concluded from their absence."""
    findings: list[PostureFinding] = []
    admins = admin_subjects(resources)
    seen_bindings: set[int] = set()
    for _subject, bindings in admins.items():
        for b in bindings:
            if id(b) not in seen_bindings:
                seen_bindings.add(id(b))
                findings.append(PostureFinding(ADMIN_REACH, b))
    admin_sas = {(s.namespace, s.name) for s in admins if s.kind == "ServiceAccount"}
    all_sa_groups = {s.name for s in admins if s.kind == "Group"}
    workloads = [(r, spec) for r in resources if (spec := pod_spec(r)) is not None]
    for r, spec in workloads:
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        ns = r.namespace or "default"
        if (ns, sa) in admin_sas or {"system:serviceaccounts", f"system:serviceaccounts:{ns}"} & all_sa_groups:
            findings.append(PostureFinding(WORKLOAD_ADMIN_SA, r, f"serviceAccount {sa}"))
    by_ns: dict[str, list[str]] = defaultdict(list)
    for r, _ in workloads:
        by_ns[r.namespace or "default"].append(r.ref)

    def namespace(ns: str) -> Resource:  # the finding's object, with the workloads it leaves exposed
        return Resource("Namespace", "v1", ns, "", {"workloads": sorted(by_ns[ns])}, source="(derived)")

    if "NetworkPolicy" not in unlisted:
        with_policy = {r.namespace or "default" for r in resources if r.kind == "NetworkPolicy"}
        for ns in sorted(set(by_ns) - with_policy):
            findings.append(PostureFinding(NO_NETPOL, namespace(ns)))
    if not {"ResourceQuota", "LimitRange"} & unlisted:
        with_quota = {r.namespace or "default" for r in resources if r.kind in ("ResourceQuota", "LimitRange")}
        for ns in sorted(set(by_ns) - with_quota):
            findings.append(PostureFinding(NO_QUOTA, namespace(ns)))
    return findings

"""Posture rules are YAML data; this module loads, checks and evaluates them.

A rule's ``fail`` condition is evaluated against one scope:
  pod        the pod spec of a workload (Pod, Deployment, ..., CronJob, pod templates in custom resources)
  container  each container's effective spec (the pod securityContext inherited where the container is silent)
  resource   the whole object, for the kinds listed in ``kinds``

Conditions are in the language of stockade.rules (rules/conditions.py). A pod-scope node also carries ``_meta``
(the pod's metadata: labels, annotations); a container node carries ``_pod`` (that pod node) and ``_own`` (the
securityContext the container sets itself, without what it inherits). A container rule may also have ``pod``, a
condition on the pod node checked on its own (a finding without a container), for the pod-level fields that
Pod Security admission judges separately from the containers' (seccomp, SELinux, AppArmor, hostProcess...).

Versions: a rule may apply only from a Kubernetes minor version on (``since: "1.34"``) and may change with the
version (``versions: [{since: "1.29", fail: ..., skip: ...}]``, the newest entry at or below the target wins;
``skip`` is a condition on the pod node that exempts it, e.g. Windows pods). The Pod Security Standards
change this way upstream; evaluation targets the newest version unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockade.kube import containers, pod_template
from stockade.model import Resource
from stockade.posture.graph import analyze
from stockade.posture.rule import (
    LATEST_K8S,
    OLDEST_K8S,
    SCOPES,
    SEVERITIES,
    PostureFinding,
    Rule,
    Variant,
    parse_version,
)
from stockade.rules import RuleError, Source, check_condition, each_rule, frameworks
from stockade.rules.loader import CheckReport, as_source, check_rules, read_sources

__all__ = ["LATEST_K8S", "OLDEST_K8S", "PostureFinding", "Rule", "evaluate", "load_rules", "parse_rules",
           "parse_version"]  # fmt: skip


def parse_rules(doc: Any, where: Source | str) -> list[Rule]:
    """The rules of one posture rule file; errors name the file and the rule's line."""
    src = as_source(where)
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{src.name}: expected a mapping with a 'rules' list")
    out = []
    for i, where_i, r in each_rule(doc, src):
        with src.at("rules", i):
            out.append(parse_rule(r, where_i))
    return out


def parse_rule(r: Any, where_i: str) -> Rule:
    """One posture rule, checked."""
    w = where_i
    if not isinstance(r, dict):
        raise RuleError(f"{w}: not a mapping")
    missing = [k for k in ("id", "title", "severity", "scope", "fail", "remediation") if not r.get(k)]
    if missing:
        raise RuleError(f"{w}: missing {', '.join(missing)}")
    if r["scope"] not in SCOPES or r["severity"] not in SEVERITIES:
        raise RuleError(f"{w}: scope must be one of {sorted(SCOPES)}, severity one of {sorted(SEVERITIES)}")
    if r["scope"] == "resource" and not r.get("kinds"):
        raise RuleError(f"{w}: a resource rule lists the kinds it applies to")
    if r["fail"] == "none" and r.get("pod") is not None:
        r = {**r, "fail": None}  # only the pod-level condition judges (e.g. annotations, before fields existed)
    else:
        check_condition(r["fail"], f"{w}: fail")
    if r.get("pod") is not None:
        if r["scope"] != "container":
            raise RuleError(f"{w}: 'pod' (a pod-level condition) belongs to container rules")
        check_condition(r["pod"], f"{w}: pod")
    since = parse_version(r["since"], f"{w}: since") if r.get("since") else (0, 0)
    variants: list[Variant] = []
    for j, v in enumerate(r.get("versions") or []):
        if not isinstance(v, dict) or not v.get("since"):
            raise RuleError(f"{w}: versions[{j}] needs 'since'")
        vfail = v["fail"] if "fail" in v else (variants[-1].fail if variants else r["fail"])
        vpod = v["pod"] if "pod" in v else (variants[-1].pod if variants else r.get("pod"))
        if vfail == "none" and vpod is not None:
            vfail = None
        elif vfail is not None or vpod is None:
            check_condition(vfail, f"{w}: versions[{j}].fail")
        if vpod is not None:
            check_condition(vpod, f"{w}: versions[{j}].pod")
        if v.get("skip") is not None:
            check_condition(v["skip"], f"{w}: versions[{j}].skip")
        variants.append(Variant(parse_version(v["since"], f"{w}: versions[{j}]"), vfail, v.get("skip"), vpod))
    return Rule(
        id=str(r["id"]),
        title=str(r["title"]),
        severity=str(r["severity"]),
        scope=str(r["scope"]),
        fail=r["fail"],
        kinds=list(r.get("kinds") or []),
        frameworks=frameworks(r, w),
        rationale=str(r.get("rationale", "")),
        remediation=str(r["remediation"]),
        patch=str(r.get("patch", "")),
        fields=list(r.get("fields") or []),
        trivy=str(r.get("trivy", "")),
        since=since,
        versions=variants,
        pod=r.get("pod"),
    )


def check(src: Source, report: CheckReport) -> None:
    """Every error of a user's posture rule file (``stockade rules check``), each rule on its own."""
    try:
        doc = src.load()
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise RuleError(f"{src.name}: expected a mapping with a 'rules' list")
    except RuleError as exc:
        report.errors.append(str(exc))
        return
    check_rules(doc, src, parse_rule, report)


def load_rules(extra: list[Path] | None = None) -> list[Rule]:
    """The built-in rule files (stockade/posture/rules/*.yaml), plus any given; ids are unique within the
    built-in set, and a rule in an extra file replaces the built-in rule of the same id."""
    sources = read_sources("stockade.posture", extra)
    builtin = sources[: len(sources) - len(extra or [])]
    added = sources[len(builtin) :]

    def parse_all(sources: list[Source]) -> list[Rule]:
        out: list[Rule] = []
        for src in sources:
            out += parse_rules(src.load(), src)
        ids = [r.id for r in out]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise RuleError(f"duplicate rule ids: {', '.join(sorted(dup))}")
        return out

    rules = parse_all(builtin)
    replacing = {r.id: r for r in parse_all(added)}
    return [replacing.pop(r.id, r) for r in rules] + list(replacing.values())


def evaluate(
    rules: list[Rule], resources: list[Resource], cross: bool = True, version: tuple[int, int] = LATEST_K8S
) -> list[PostureFinding]:
    """Every rule over every object, as the rules read at Kubernetes ``version``; with ``cross``, also the
    checks across objects (posture/graph.py)."""
    active = [(r, v) for r in rules if (v := r.at(version)) is not None]
    pod_rules = [(r, v) for r, v in active if r.scope == "pod"]
    ctr_rules = [(r, v) for r, v in active if r.scope == "container"]
    res_rules = [(r, v) for r, v in active if r.scope == "resource"]
    out: list[PostureFinding] = []
    for res in resources:
        for rule, var in res_rules:
            if res.kind in rule.kinds and var.fails(res.raw):
                out.append(PostureFinding(rule, res))
        tmpl = pod_template(res)
        if tmpl is None:
            continue
        pod = dict(tmpl["spec"])
        pod["_meta"] = tmpl.get("metadata") or {}
        for rule, var in pod_rules:
            if not var.skips(pod) and var.fails(pod):
                out.append(PostureFinding(rule, res))
        if ctr_rules:
            effective = [c for _kind, c in containers(pod)]
            for c in effective:
                c["_pod"] = pod
            for rule, var in ctr_rules:
                if var.skips(pod):
                    continue
                if var.pod_fails(pod):  # the pod's own value, whatever its containers set
                    out.append(PostureFinding(rule, res))
                for c in effective:
                    if var.fails(c):
                        out.append(PostureFinding(rule, res, str(c.get("name", ""))))
    if cross:
        out += analyze(resources)
    return out

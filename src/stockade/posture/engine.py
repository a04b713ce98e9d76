"""Posture rules are YAML data; this module loads, checks and evaluates them.

A rule's ``fail`` condition is evaluated against one scope:
  pod        the pod spec of a workload (Pod, Deployment, ..., CronJob, pod templates in custom resources)
  container  each container's effective spec (the pod securityContext inherited where the container is silent)
  resource   the whole object, for the kinds listed in ``kinds``

Conditions are in the language of stockade.rules (rules/conditions.py). A pod-scope node also carries ``_meta``
(the pod's metadata: labels, annotations); a container node carries ``_pod`` (that pod node) and ``_own`` (the
securityContext the container sets itself, without what it inherits) and ``_kind`` (containers, initContainers or
ephemeralContainers). A container rule may also have ``pod``, a
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


Params = dict[str, dict[str, Any]]  # rule id -> parameter name -> value


def parse_rules(doc: Any, where: Source | str, params: Params | None = None) -> list[Rule]:
    """The rules of one posture rule file; errors name the file and the rule's line."""
    src = as_source(where)
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{src.name}: expected a mapping with a 'rules' list")
    out = []
    for i, where_i, r in each_rule(doc, src):
        with src.at("rules", i):
            rid = str(r.get("id", "")) if isinstance(r, dict) else ""
            out.append(parse_rule(r, where_i, (params or {}).get(rid)))
    return out


def _substitute(node: Any, values: dict[str, Any], used: set[str], w: str) -> Any:
    """``node`` with every ``{param: NAME}`` (optionally ``prefix: TEXT`` for each element of a list) replaced by
    the parameter's value."""
    if isinstance(node, dict):
        if set(node) <= {"param", "prefix"} and "param" in node:
            name = str(node["param"])
            if name not in values:
                raise RuleError(f"{w}: condition uses parameter {name!r}, which the rule's 'params' does not declare")
            used.add(name)
            value = values[name]
            if "prefix" in node and isinstance(value, list):
                return [f"{node['prefix']}{v}" for v in value]
            return value
        return {k: _substitute(v, values, used, w) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, used, w) for v in node]
    return node


def _with_params(r: dict[str, Any], overrides: dict[str, Any] | None, w: str) -> tuple[dict[str, Any], str]:
    """The rule with its parameters filled in (its defaults, replaced by ``overrides``), and why it is off ("" when
    it is on): a parameter whose value is null turns its rule off until one is given."""
    declared = r.get("params") or {}
    if not isinstance(declared, dict):
        raise RuleError(f"{w}: 'params' is a mapping of parameter names to default values")
    unknown = set(overrides or {}) - set(declared)
    if unknown:
        raise RuleError(f"{w}: no parameter {', '.join(sorted(unknown))} (the rule has: "
                        f"{', '.join(sorted(declared)) or 'none'})")  # fmt: skip
    values = {**declared, **(overrides or {})}
    used: set[str] = set()
    out = {k: (_substitute(v, values, used, w) if k in ("fail", "pod", "versions") else v) for k, v in r.items()}
    unset = sorted(n for n in used if values[n] is None)
    return out, (f"set parameter {', '.join(unset)} to turn it on" if unset else "")


def parse_rule(r: Any, where_i: str, params: dict[str, Any] | None = None) -> Rule:
    """One posture rule, checked, with its parameters (``params`` overrides the rule's defaults)."""
    w = where_i
    if not isinstance(r, dict):
        raise RuleError(f"{w}: not a mapping")
    r, off = _with_params(r, params, w)
    missing = [k for k in ("id", "title", "severity", "scope", "fail", "remediation") if not r.get(k)]
    if missing:
        raise RuleError(f"{w}: missing {', '.join(missing)}")
    if r["scope"] not in SCOPES or r["severity"] not in SEVERITIES:
        raise RuleError(f"{w}: scope must be one of {sorted(SCOPES)}, severity one of {sorted(SEVERITIES)}")
    if r["scope"] == "resource" and not r.get("kinds"):
        raise RuleError(f"{w}: a resource rule lists the kinds it applies to")
    if r["fail"] == "none" and r.get("pod") is not None:
        r = {**r, "fail": None}  # only the pod-level condition judges (e.g. annotations, before fields existed)
    elif not off:
        check_condition(r["fail"], f"{w}: fail")
    if r.get("pod") is not None:
        if r["scope"] != "container":
            raise RuleError(f"{w}: 'pod' (a pod-level condition) belongs to container rules")
        if not off:
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
        elif (vfail is not None or vpod is None) and not off:
            check_condition(vfail, f"{w}: versions[{j}].fail")
        if vpod is not None and not off:
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
        off=off,
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


def load_rules(extra: list[Path] | None = None, params: Params | None = None) -> list[Rule]:
    """The built-in rule files (stockade/posture/rules/*.yaml), plus any given; ids are unique within the
    built-in set, and a rule in an extra file replaces the built-in rule of the same id. ``params`` sets rule
    parameters (allow-lists) by rule id, as the exceptions file's ``parameters`` section does."""
    sources = read_sources("stockade.posture", extra)
    builtin = sources[: len(sources) - len(extra or [])]
    added = sources[len(builtin) :]

    def parse_all(sources: list[Source]) -> list[Rule]:
        out: list[Rule] = []
        for src in sources:
            out += parse_rules(src.load(), src, params)
        ids = [r.id for r in out]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise RuleError(f"duplicate rule ids: {', '.join(sorted(dup))}")
        return out

    rules = parse_all(builtin)
    replacing = {r.id: r for r in parse_all(added)}
    out = [replacing.pop(r.id, r) for r in rules] + list(replacing.values())
    known = {r.id for r in out}
    stray = sorted(set(params or {}) - known)
    if stray:
        raise RuleError(f"parameters for unknown rule(s): {', '.join(stray)}")
    return out


def evaluate(
    rules: list[Rule], resources: list[Resource], cross: bool = True, version: tuple[int, int] = LATEST_K8S,
    unlisted: frozenset[str] = frozenset(),
) -> list[PostureFinding]:
    """Every rule over every object, as the rules read at Kubernetes ``version``; with ``cross``, also the
    checks across objects (posture/graph.py), which conclude nothing from the absence of ``unlisted`` kinds."""
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
        out += analyze(resources, unlisted)
    return out

"""Audit rules are YAML data in the language of stockade.rules (lists, macros, rules with exceptions); this module
reads the audit-specific fields (verbs, resources) and indexes the rules by verb and resource, so that an event
is tested only against the rules that can match it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.audit.events import DEFERRABLE, EVENT_FIELDS
from stockade.rules import Index as RuleIndex
from stockade.rules import RuleError, Source, each_rule, expand, load_pack, read_definitions, read_rule
from stockade.rules.loader import CheckReport, as_source, check_pack_file

Pred = Callable[[Any], bool]
AuditRuleError = RuleError  # the name audit callers and tests know


@dataclass(slots=True)
class AuditRule:
    id: str
    title: str
    severity: str
    tactics: list[str]
    techniques: list[str]
    verbs: list[str] | None  # None: any
    resources: list[str] | None
    condition: Pred  # the rule's condition and not any of its exceptions, compiled together
    description: str = ""
    remediation: str = ""
    output: str = ""
    tree: Any = None  # that condition as data (macros and lists expanded), for compiling rule groups
    reads: frozenset[str] = frozenset()  # the event's top-level fields the condition and output read
    # fire only when the same identity matched ``count`` times within ``seconds`` (bursts of forbidden requests,
    # permission enumeration); the alert then groups that identity's matches, whatever objects they touched
    threshold: tuple[int, float] | None = None
    # (event field, lists) the alert names the matching entries of: threat-intelligence lists (Tor exits...)
    indicator: tuple[str, list[Any]] | None = None


def parse(doc: Any, where: Source | str, lists: dict[str, Any] | None = None,
          macros: dict[str, Any] | None = None) -> list[AuditRule]:  # fmt: skip
    """The rules of one file; its lists and macros are added to ``lists`` and ``macros`` (shared by the
    files of a pack)."""
    src = as_source(where)
    lists = {} if lists is None else lists
    macros = {} if macros is None else macros
    read_definitions(doc, src, lists, macros)
    rules: list[AuditRule] = []
    for i, w, r in each_rule(doc, src):
        with src.at("rules", i):
            rule = _read(r, w, lists, macros)
        if rule is not None:
            rules.append(rule)
    return rules


def _read(r: Any, w: str, lists: dict[str, Any], macros: dict[str, Any]) -> AuditRule | None:
    common = read_rule(r, w, lists, macros, {"field": "verb", "op": "exists"})
    if common is None:
        return None
    verbs = expand(r.get("verbs"), lists, macros, w)
    resources = expand(r.get("resources"), lists, macros, w)
    for name, v in (("verbs", verbs), ("resources", resources)):
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise RuleError(f"{w}: {name} must be a list of strings")
    threshold = None
    if r.get("threshold") is not None:
        t = r["threshold"]
        if not (isinstance(t, dict) and isinstance(t.get("count"), int) and t["count"] >= 2
                and isinstance(t.get("seconds"), int | float) and t["seconds"] > 0):  # fmt: skip
            raise RuleError(f"{w}: threshold is {{count: N (2 or more), seconds: S}}")
        threshold = (int(t["count"]), float(t["seconds"]))
    indicator = None
    if r.get("indicator") is not None:
        ind = r["indicator"]
        names = ind.get("list") if isinstance(ind, dict) else None
        names = [names] if isinstance(names, str) else names
        if not (isinstance(ind, dict) and isinstance(ind.get("field"), str) and isinstance(names, list)
                and names and all(isinstance(n, str) and n in lists for n in names)):  # fmt: skip
            raise RuleError(f"{w}: indicator is {{field: EVENT FIELD, list: NAME or [NAMES] of lists}}")
        indicator = (ind["field"], [lists[n] for n in names])
    return AuditRule(**common, verbs=verbs, resources=resources, threshold=threshold, indicator=indicator)


def check(src: Source, report: CheckReport) -> None:
    """Every error of a user's audit rule file (``stockade rules check``)."""
    check_pack_file(src, "stockade.audit", _read, report)


def load(extra: list[Path] | None = None) -> list[AuditRule]:
    """The built-in pack (audit/rules/*.yaml) and any extra files; extra files see the pack's lists and
    macros, may add their own, and may replace a built-in rule by using its id."""
    return load_pack("stockade.audit", extra, parse)


# the optional activity-trail pack (INFO: what was created and deleted), added by --activity
ACTIVITY_PACK = Path(__file__).parent / "packs" / "activity.yaml"

# derived fields (audit/events.py enrich) and the fields they come from
DERIVED = {"_resource": "objectRef", "_podspec": "requestObject", "_containers": "requestObject",
           "_kubeflow": "objectRef"}  # fmt: skip


def wants_of(rules: list[AuditRule]) -> frozenset[str] | None:
    """What rules read of the parts an event's parse may defer (audit/events.py DEFERRABLE); None: the whole
    event, because some rule reads a field the fast path does not decode."""
    reads = {DERIVED.get(f, f) for r in rules for f in r.reads}
    return None if not reads <= EVENT_FIELDS else frozenset(reads & DEFERRABLE)


class Index(RuleIndex):
    """Audit rules by (verb, resource); a rule without verbs or resources sits under every value of that key."""

    def __init__(self, rules: list[AuditRule]) -> None:
        super().__init__(rules, ("verbs", "resources"), wants_of)

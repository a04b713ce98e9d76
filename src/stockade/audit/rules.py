"""Audit rules are YAML data (lists, macros, rules with exceptions); this module loads, checks, compiles and
indexes them by verb and resource, so that an event is tested only against the rules that can match it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from stockade.audit.events import DEFERRABLE, EVENT_FIELDS
from stockade.model import StockadeError
from stockade.posture.engine import (
    RuleError,
    _check_condition,
    compile_condition,
    compile_group,
    root_paths,
    split_path,
)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
Pred = Callable[[Any], bool]


class AuditRuleError(StockadeError):
    pass


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


PLACEHOLDER = re.compile(r"\{([^{}]+)\}")  # {path} in an alert's output template


def reads_of(tree: Any, output: str) -> frozenset[str]:
    """What a rule reads of an event, at the top level: its condition's paths and its output's placeholders."""
    paths = [*root_paths(tree), *(split_path(m.group(1)) for m in PLACEHOLDER.finditer(output))]
    return frozenset(p[0].removesuffix("[*]").removesuffix("{}") for p in paths if p)


def _expand(
    node: Any, lists: dict[str, list[Any]], macros: dict[str, Any], where: str, seen: tuple[str, ...] = ()
) -> Any:
    """Macros replaced by their conditions and "$list" values by the lists, recursively."""
    if isinstance(node, dict):
        if "macro" in node:
            name = node["macro"]
            if name not in macros:
                raise AuditRuleError(f"{where}: unknown macro {name!r}")
            if name in seen:
                raise AuditRuleError(f"{where}: macro {name!r} refers to itself")
            return _expand(macros[name], lists, macros, where, (*seen, name))
        return {k: _expand(v, lists, macros, where, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, lists, macros, where, seen) for v in node]
    if isinstance(node, str) and node.startswith("$"):
        if node[1:] not in lists:
            raise AuditRuleError(f"{where}: unknown list {node!r}")
        return lists[node[1:]]
    return node


def _flatten_lists(raw: dict[str, Any], where: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, items in raw.items():
        if not isinstance(items, list):
            raise AuditRuleError(f"{where}: list {name!r} is not a list")
        flat: list[Any] = []
        for it in items:
            if isinstance(it, str) and it.startswith("$"):
                if it[1:] not in out:
                    raise AuditRuleError(f"{where}: list {name!r} refers to {it!r} before it is defined")
                flat += out[it[1:]]
            else:
                flat.append(it)
        out[str(name)] = flat
    return out


def read_rule(
    r: Any,
    where: str,
    lists: dict[str, list[Any]],
    macros: dict[str, Any],
    default: dict[str, Any],
    required: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """What audit and sensor rules share, checked and compiled: id, title, severity, MITRE tactics and
    techniques, condition (``default`` when absent), exceptions, description, remediation, output. None for
    a rule with ``enabled: false``; ``required`` names further keys the rule must have."""
    w = f"{where}" + (f" ({r.get('id')})" if isinstance(r, dict) and r.get("id") else "")
    if not isinstance(r, dict):
        raise AuditRuleError(f"{w}: not a mapping")
    if r.get("enabled") is False:
        return None
    missing = [k for k in ("id", "title", "severity", "remediation", *required) if not r.get(k)]
    if missing:
        raise AuditRuleError(f"{w}: missing {', '.join(missing)}")
    if r["severity"] not in SEVERITIES:
        raise AuditRuleError(f"{w}: severity must be one of {', '.join(SEVERITIES)}")
    mitre = r.get("mitre") or {}
    if not mitre.get("techniques"):
        raise AuditRuleError(f"{w}: needs mitre.techniques (ATT&CK ids)")
    cond = _expand(r.get("condition") or default, lists, macros, w)
    excs = [_expand(e, lists, macros, w) for e in r.get("exceptions") or []]
    try:
        _check_condition(cond, f"{w}: condition")
        for j, e in enumerate(excs):
            _check_condition(e, f"{w}: exceptions[{j}]")
    except RuleError as exc:
        raise AuditRuleError(str(exc)) from None
    tree = {"all": [cond, {"not": {"any": excs}}]} if excs else cond
    return {
        "id": str(r["id"]),
        "title": str(r["title"]),
        "severity": str(r["severity"]),
        "tactics": [str(t) for t in mitre.get("tactics") or []],
        "techniques": [str(t) for t in mitre["techniques"]],
        # one compiled function: the condition holds and no exception does
        "condition": compile_condition(tree),
        "description": str(r.get("description", "")),
        "remediation": str(r["remediation"]),
        "output": str(r.get("output", "")),
        "tree": tree,
        "reads": reads_of(tree, str(r.get("output", ""))),
    }


def parse(doc: Any, where: str, lists: dict[str, list[Any]] | None = None,
          macros: dict[str, Any] | None = None) -> list[AuditRule]:  # fmt: skip
    """The rules of one file; its lists and macros are added to ``lists`` and ``macros`` (shared by the
    files of a pack)."""
    if not isinstance(doc, dict):
        raise AuditRuleError(f"{where}: expected a mapping with lists, macros and rules")
    lists = {} if lists is None else lists
    macros = {} if macros is None else macros
    lists.update(_flatten_lists(doc.get("lists") or {}, where))
    macros.update(doc.get("macros") or {})
    rules: list[AuditRule] = []
    for i, r in enumerate(doc.get("rules") or []):
        w = f"{where}: rule {i}"
        common = read_rule(r, w, lists, macros, {"field": "verb", "op": "exists"})
        if common is None:
            continue
        verbs = _expand(r.get("verbs"), lists, macros, w)
        resources = _expand(r.get("resources"), lists, macros, w)
        for name, v in (("verbs", verbs), ("resources", resources)):
            if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
                raise AuditRuleError(f"{w}: {name} must be a list of strings")
        rules.append(AuditRule(**common, verbs=verbs, resources=resources))
    return rules


def load_pack(package: str, extra: list[Path] | None, parse_file: Callable[..., list[Any]]) -> list[Any]:
    """The rule files of ``package``'s rules/ directory, then the extra files, through ``parse_file(doc,
    where, lists, macros)``; later files see earlier files' lists and macros, and a rule replaces an
    earlier one with the same id."""
    pkg = importlib_resources.files(package) / "rules"
    sources = [(f"rules/{p.name}", p.read_text()) for p in sorted(pkg.iterdir(), key=lambda x: x.name)
               if p.name.endswith(".yaml")]  # fmt: skip
    for p in extra or []:
        try:
            sources.append((str(p), p.read_text()))
        except OSError as exc:
            raise AuditRuleError(f"{p}: cannot read ({exc.strerror})") from None
    lists: dict[str, list[Any]] = {}
    macros: dict[str, Any] = {}
    by_id: dict[str, Any] = {}
    for where, text in sources:
        try:
            doc = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError as exc:
            raise AuditRuleError(f"{where}: malformed YAML ({str(exc).splitlines()[0]})") from None
        for r in parse_file(doc, where, lists, macros):
            by_id[r.id] = r
    return list(by_id.values())


def load(extra: list[Path] | None = None) -> list[AuditRule]:
    """The built-in pack (audit/rules/*.yaml) and any extra files; extra files see the pack's lists and
    macros, may add their own, and may replace a built-in rule by using its id."""
    return load_pack("stockade.audit", extra, parse)


# derived fields (audit/events.py enrich) and the fields they come from
DERIVED = {"_resource": "objectRef", "_podspec": "requestObject", "_containers": "requestObject"}


@dataclass(slots=True)
class Group:
    """The rules an index entry holds, compiled into one function (``fire``: the rules whose condition holds
    on an event), and what they read of the parts an event's parse may defer (``wants``; None: the whole event,
    because some rule reads a field the fast path does not decode)."""

    rules: list[AuditRule]
    fire: Callable[[Any], list[AuditRule]]
    wants: frozenset[str] | None


class Index:
    """Rules by (verb, resource); a rule without verbs or resources sits under every value of that key."""

    def __init__(self, rules: list[AuditRule]) -> None:
        self.rules = rules
        self._cache: dict[tuple[str, str], Group | None] = {}
        self._groups: dict[tuple[int, ...], Group] = {}  # index entries holding the same rules share one

    def lookup(self, verb: str, resource: str) -> list[AuditRule]:
        group = self.group(verb, resource)
        return group.rules if group is not None else []

    def group(self, verb: str, resource: str) -> Group | None:
        """The compiled rules for (verb, resource); None when no rule can match."""
        key = (verb, resource)
        try:
            return self._cache[key]
        except KeyError:
            pass
        hit = [
            r
            for r in self.rules
            if (r.verbs is None or verb in r.verbs) and (r.resources is None or resource in r.resources)
        ]
        group = self._compile(hit) if hit else None
        if len(self._cache) < 65536:  # bounded: verbs x resources seen
            self._cache[key] = group
        return group

    def wants(self, verb: str, resource: str) -> frozenset[str] | None:
        """The deferred parts of an event (audit/events.py DEFERRABLE) the rules for (verb, resource) read."""
        group = self._cache.get((verb, resource), _MISSING)  # the group's own lookup, inlined: once per event
        if group is _MISSING:
            group = self.group(verb, resource)
        return group.wants if group is not None else _NOTHING

    def _compile(self, rules: list[AuditRule]) -> Group:
        ids = tuple(id(r) for r in rules)
        group = self._groups.get(ids)
        if group is None:
            reads = {DERIVED.get(f, f) for r in rules for f in r.reads}
            wants = None if not reads <= EVENT_FIELDS else frozenset(reads & DEFERRABLE)
            fire: Callable[[Any], list[AuditRule]]
            if any(r.tree is None for r in rules):  # rules built by hand, not by read_rule

                def fire(ev: Any, rules: list[AuditRule] = rules) -> list[AuditRule]:
                    return [r for r in rules if r.condition(ev)]

            else:
                fire = compile_group([r.tree for r in rules], list(rules))
            group = self._groups[ids] = Group(rules, fire, wants)
        return group


_NOTHING: frozenset[str] = frozenset()
_MISSING: Any = object()

"""Sensor rules: the audit rules' YAML dialect (lists, macros, exceptions, MITRE ids), indexed by event type
(exec, open, connect, setuid, capset, module, mount, unlink) as Falco indexes rules by event type."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from stockade.audit.rules import SEVERITIES, AuditRuleError, _expand, _flatten_lists
from stockade.posture.engine import RuleError, _check_condition, compile_condition

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TYPES = {"exec", "open", "connect", "setuid", "capset", "module", "mount", "unlink"}


@dataclass(slots=True)
class SensorRule:
    id: str
    title: str
    severity: str
    tactics: list[str]
    techniques: list[str]
    types: list[str]
    condition: Any
    exceptions: list[Any]
    description: str
    remediation: str
    output: str

    def fires(self, ev: dict[str, Any]) -> bool:
        return bool(self.condition(ev)) and not any(e(ev) for e in self.exceptions)


def parse(doc: Any, where: str, lists: dict[str, list[Any]], macros: dict[str, Any]) -> list[SensorRule]:
    if not isinstance(doc, dict):
        raise AuditRuleError(f"{where}: expected a mapping with lists, macros and rules")
    lists.update(_flatten_lists(doc.get("lists") or {}, where))
    macros.update(doc.get("macros") or {})
    out = []
    for i, r in enumerate(doc.get("rules") or []):
        w = f"{where}: rule {i}" + (f" ({r.get('id')})" if isinstance(r, dict) and r.get("id") else "")
        if not isinstance(r, dict) or r.get("enabled") is False:
            continue
        missing = [k for k in ("id", "title", "severity", "remediation", "types") if not r.get(k)]
        if missing:
            raise AuditRuleError(f"{w}: missing {', '.join(missing)}")
        if r["severity"] not in SEVERITIES:
            raise AuditRuleError(f"{w}: severity must be one of {', '.join(SEVERITIES)}")
        mitre = r.get("mitre") or {}
        if not mitre.get("techniques"):
            raise AuditRuleError(f"{w}: needs mitre.techniques (ATT&CK ids)")
        types = _expand(r["types"], lists, macros, w)
        if not isinstance(types, list) or not set(types) <= TYPES:
            raise AuditRuleError(f"{w}: types must be a list among {sorted(TYPES)}")
        cond = _expand(r.get("condition") or {"field": "type", "op": "exists"}, lists, macros, w)
        excs = [_expand(e, lists, macros, w) for e in r.get("exceptions") or []]
        try:
            _check_condition(cond, f"{w}: condition")
            for j, e in enumerate(excs):
                _check_condition(e, f"{w}: exceptions[{j}]")
        except RuleError as exc:
            raise AuditRuleError(str(exc)) from None
        out.append(
            SensorRule(
                id=str(r["id"]), title=str(r["title"]), severity=str(r["severity"]),
                tactics=[str(t) for t in mitre.get("tactics") or []], techniques=[str(t) for t in mitre["techniques"]],
                types=[str(t) for t in types], condition=compile_condition(cond),
                exceptions=[compile_condition(e) for e in excs], description=str(r.get("description", "")),
                remediation=str(r["remediation"]), output=str(r.get("output", "")),
            )
        )  # fmt: skip
    return out


def load(extra: list[Path] | None = None) -> list[SensorRule]:
    pkg = importlib_resources.files("stockade.sensor") / "rules"
    sources = [(f"rules/{p.name}", p.read_text()) for p in sorted(pkg.iterdir(), key=lambda x: x.name)
               if p.name.endswith(".yaml")]  # fmt: skip
    for p in extra or []:
        try:
            sources.append((str(p), p.read_text()))
        except OSError as exc:
            raise AuditRuleError(f"{p}: cannot read ({exc.strerror})") from None
    lists: dict[str, list[Any]] = {}
    macros: dict[str, Any] = {}
    by_id: dict[str, SensorRule] = {}
    for where, text in sources:
        try:
            doc = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError as exc:
            raise AuditRuleError(f"{where}: malformed YAML ({str(exc).splitlines()[0]})") from None
        for r in parse(doc, where, lists, macros):
            by_id[r.id] = r
    return list(by_id.values())

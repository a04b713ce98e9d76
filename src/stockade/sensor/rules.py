"""Sensor rules: the audit rules' YAML dialect (lists, macros, exceptions, MITRE ids), indexed by event type
(exec, open, connect, setuid, capset, module, mount, unlink) as Falco indexes rules by event type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.audit.rules import AuditRuleError, _expand, _flatten_lists, load_pack, read_rule

TYPES = {"exec", "open", "connect", "setuid", "capset", "module", "mount", "unlink"}


@dataclass(slots=True)
class SensorRule:
    id: str
    title: str
    severity: str
    tactics: list[str]
    techniques: list[str]
    types: list[str]
    condition: Any  # with the exceptions compiled in (audit/rules.py read_rule)
    description: str
    remediation: str
    output: str

    def fires(self, ev: dict[str, Any]) -> bool:
        return bool(self.condition(ev))


def parse(doc: Any, where: str, lists: dict[str, list[Any]], macros: dict[str, Any]) -> list[SensorRule]:
    if not isinstance(doc, dict):
        raise AuditRuleError(f"{where}: expected a mapping with lists, macros and rules")
    lists.update(_flatten_lists(doc.get("lists") or {}, where))
    macros.update(doc.get("macros") or {})
    out = []
    for i, r in enumerate(doc.get("rules") or []):
        w = f"{where}: rule {i}"
        common = read_rule(r, w, lists, macros, {"field": "type", "op": "exists"}, required=("types",))
        if common is None:
            continue
        del common["tree"], common["reads"]  # for the audit index's rule groups
        types = _expand(r["types"], lists, macros, w)
        if not isinstance(types, list) or not set(types) <= TYPES:
            raise AuditRuleError(f"{w}: types must be a list among {sorted(TYPES)}")
        out.append(SensorRule(**common, types=[str(t) for t in types]))
    return out


def load(extra: list[Path] | None = None) -> list[SensorRule]:
    """The built-in pack (sensor/rules/*.yaml) and any extra files, as for the audit rules."""
    return load_pack("stockade.sensor", extra, parse)

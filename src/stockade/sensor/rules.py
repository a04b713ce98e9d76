"""Sensor rules: the rule language of stockade.rules (lists, macros, exceptions, MITRE ids), indexed by event type
(exec, open, connect, setuid, capset, module, mount, unlink) as Falco indexes rules by event type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.rules import RuleError, Source, each_rule, expand, load_pack, read_definitions, read_rule
from stockade.rules.loader import CheckReport, as_source, check_pack_file

TYPES = {"exec", "open", "connect", "setuid", "capset", "module", "mount", "unlink"}


@dataclass(slots=True)
class SensorRule:
    id: str
    title: str
    severity: str
    tactics: list[str]
    techniques: list[str]
    types: list[str]
    condition: Any  # with the exceptions compiled in (rules/loader.py read_rule)
    description: str
    remediation: str
    output: str
    tree: Any = None  # that condition as data, for compiling the rules of an event type together
    reads: frozenset[str] = frozenset()


def parse(doc: Any, where: Source | str, lists: dict[str, Any], macros: dict[str, Any]) -> list[SensorRule]:
    src = as_source(where)
    read_definitions(doc, src, lists, macros)
    out = []
    for i, w, r in each_rule(doc, src):
        with src.at("rules", i):
            rule = _read(r, w, lists, macros)
        if rule is not None:
            out.append(rule)
    return out


def _read(r: Any, w: str, lists: dict[str, Any], macros: dict[str, Any]) -> SensorRule | None:
    common = read_rule(r, w, lists, macros, {"field": "type", "op": "exists"}, required=("types",))
    if common is None:
        return None
    types = expand(r["types"], lists, macros, w)
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types) or not set(types) <= TYPES:
        raise RuleError(f"{w}: types must be a list among {sorted(TYPES)}")
    return SensorRule(**common, types=[str(t) for t in types])


def check(src: Source, report: CheckReport) -> None:
    """Every error of a user's sensor rule file (``stockade rules check``)."""
    check_pack_file(src, "stockade.sensor", _read, report)


def load(extra: list[Path] | None = None) -> list[SensorRule]:
    """The built-in pack (sensor/rules/*.yaml) and any extra files, as for the audit rules."""
    return load_pack("stockade.sensor", extra, parse)

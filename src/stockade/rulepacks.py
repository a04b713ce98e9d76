"""Every engine's rule pack in one place, for ``stockade rules``: check a user's rule files (the ones ``--rules``
takes) with errors at file:line, and list the built-in rules of every engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockade.rules.loader import CheckReport, Source

ENGINES = ("posture", "audit", "sensor")


def engine_of(doc: Any) -> str:
    """Which engine a rule file is for, from its rules' keys: posture rules have ``scope`` and ``fail``, sensor
    rules ``types``; the others are audit rules."""
    rules = doc.get("rules") if isinstance(doc, dict) else None
    rules = [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []
    if any("scope" in r or "fail" in r for r in rules):
        return "posture"
    if any("types" in r for r in rules):
        return "sensor"
    return "audit"


def check(paths: list[Path], engine: str | None = None) -> list[CheckReport]:
    """One report per file: its engine, how many rules load, each error (file:line first), and warnings."""
    from stockade.audit import rules as audit_rules
    from stockade.posture import engine as posture_engine
    from stockade.sensor import rules as sensor_rules

    checkers = {"posture": posture_engine.check, "audit": audit_rules.check, "sensor": sensor_rules.check}
    out = []
    for p in paths:
        report = CheckReport(str(p))
        out.append(report)
        try:
            src = Source(str(p), p.read_text(), p.parent)
        except OSError as exc:
            report.errors.append(f"{p}: cannot read ({exc.strerror})")
            continue
        except UnicodeDecodeError:
            report.errors.append(f"{p}: not a text file")
            continue
        try:
            doc = src.load()
        except Exception as exc:  # RuleError: malformed YAML, with its line
            report.errors.append(str(exc))
            continue
        report.engine = engine or engine_of(doc)
        checkers[report.engine](src, report)
    return out


def builtin() -> list[dict[str, Any]]:
    """Every built-in rule: id, engine, severity, title, MITRE techniques, frameworks."""
    from stockade.audit.detect import PROFILE_RULE
    from stockade.audit.rules import ACTIVITY_PACK
    from stockade.audit.rules import load as load_audit
    from stockade.posture import load_rules
    from stockade.posture.graph import CROSS_RULES
    from stockade.rules.tags import mitre_of
    from stockade.sensor.detect import BASELINE_RULES
    from stockade.sensor.rules import load as load_sensor

    rows: list[dict[str, Any]] = []
    for p in [*load_rules(), *CROSS_RULES]:
        rows.append({"id": p.id, "engine": "posture", "severity": p.severity, "title": p.title,
                     "mitre": mitre_of(p.frameworks), "frameworks": p.frameworks})  # fmt: skip
    packs: list[tuple[str, list[Any]]] = [("audit", [*load_audit([ACTIVITY_PACK]), PROFILE_RULE]),
                                          ("sensor", [*load_sensor(), *BASELINE_RULES])]
    for engine, pack in packs:
        for r in pack:
            rows.append({"id": r.id, "engine": engine, "severity": r.severity, "title": r.title,
                         "mitre": list(r.techniques), "tactics": list(r.tactics), "frameworks": {}})  # fmt: skip
    return rows

"""Tags a rule carries: MITRE ATT&CK tactics and techniques (detection rules) and compliance frameworks
(posture rules: CIS, NSA/CISA, Pod Security Standards, MITRE)."""

from __future__ import annotations

from typing import Any

from stockade.rules.errors import RuleError


def mitre(rule: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """(tactics, techniques) of a detection rule's ``mitre`` mapping; techniques are required."""
    tags = rule.get("mitre") or {}
    if not isinstance(tags, dict) or not tags.get("techniques"):
        raise RuleError(f"{where}: needs mitre.techniques (ATT&CK ids)")
    tactics, techniques = tags.get("tactics") or [], tags["techniques"]
    if not isinstance(tactics, list) or not isinstance(techniques, list):
        raise RuleError(f"{where}: mitre.tactics and mitre.techniques are lists")
    return [str(t) for t in tactics], [str(t) for t in techniques]


def frameworks(rule: dict[str, Any], where: str) -> dict[str, Any]:
    """A posture rule's ``frameworks`` mapping (framework -> control ids)."""
    tags = rule.get("frameworks") or {}
    if not isinstance(tags, dict):
        raise RuleError(f"{where}: frameworks is a mapping of framework names to control ids")
    return dict(tags)


def mitre_of(frameworks: dict[str, Any]) -> list[str]:
    """The ATT&CK techniques among a posture rule's frameworks."""
    tags = frameworks.get("mitre") or []
    return [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]

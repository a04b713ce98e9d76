"""Severity from CVSS vectors (v2, v3.x, v4.0) with the `cvss` package."""

from __future__ import annotations

ORDER = {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}


def from_score(score: float | None) -> str:
    if score is None:
        return "UNKNOWN"
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    if score > 0.0:
        return "LOW"
    return "UNKNOWN"


def score_vector(vector: str) -> float | None:
    """The base score of a CVSS vector, or None when it does not parse."""
    from cvss import CVSS2, CVSS3, CVSS4
    from cvss.exceptions import CVSSError

    try:
        if vector.startswith("CVSS:4"):
            return float(CVSS4(vector).base_score)
        if vector.startswith("CVSS:3"):
            return float(CVSS3(vector).base_score)
        return float(CVSS2(vector).base_score)
    except (CVSSError, ValueError, KeyError, IndexError):
        return None


def normalize(label: str | None) -> str:
    label = (label or "").strip().upper()
    return {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW", "NONE": "LOW"}.get(
        label, label if label in ORDER else "UNKNOWN"
    )

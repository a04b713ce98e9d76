"""CISA's Known Exploited Vulnerabilities catalog."""

from __future__ import annotations

from typing import Any

from stockade.vulndb.feeds.osv import FeedError


def parse(doc: Any, errors: list[str] | None = None) -> list[tuple[str, str, str, str, str]]:
    """(cve, date added, due date, ransomware use, name) per entry; a malformed entry goes to ``errors`` and
    the others are kept."""
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError("not a KEV catalog")
    rows = []
    for i, v in enumerate(doc["vulnerabilities"]):
        cve = v.get("cveID") if isinstance(v, dict) else None
        if not isinstance(cve, str) or not cve.startswith("CVE-"):
            if errors is not None:
                errors.append(f"entry {i}: no cveID")
            continue
        added, due, ransomware, name = (
            f if isinstance(f := v.get(k), str) else ""
            for k in ("dateAdded", "dueDate", "knownRansomwareCampaignUse", "vulnerabilityName")
        )
        rows.append((cve, added, due, ransomware, name))
    return rows

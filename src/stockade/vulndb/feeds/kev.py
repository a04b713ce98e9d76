"""CISA's Known Exploited Vulnerabilities catalog."""

from __future__ import annotations

from typing import Any

from stockade.vulndb.feeds.osv import FeedError


def parse(doc: Any) -> list[tuple[str, str, str, str, str]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError("not a KEV catalog")
    rows = []
    for v in doc["vulnerabilities"]:
        cve = v.get("cveID")
        if cve:
            rows.append(
                (
                    cve,
                    v.get("dateAdded", ""),
                    v.get("dueDate", ""),
                    v.get("knownRansomwareCampaignUse", ""),
                    v.get("vulnerabilityName", ""),
                )
            )
    return rows

"""Enrichment feeds: NVD API 2.0 pages (CVSS v2/v3/v4 and descriptions) and FIRST's EPSS scores."""

from __future__ import annotations

import csv
import io
from typing import Any

from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.severity import from_score, normalize
from stockade.vulndb.store import Advisory


def nvd_page(doc: Any, source: str, errors: list[str] | None = None) -> list[Advisory]:
    """One page of https://services.nvd.nist.gov/rest/json/cves/2.0: a score and summary per CVE; a malformed
    item goes to ``errors`` and the others are kept."""
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError("not an NVD API 2.0 response")
    out = []
    for i, item in enumerate(doc["vulnerabilities"]):
        try:
            adv = _nvd_item(item, source)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            if errors is not None:
                errors.append(f"item {i}: malformed ({type(exc).__name__}: {exc})")
            continue
        if adv is not None:
            out.append(adv)
    return out


def _nvd_item(item: Any, source: str) -> Advisory | None:
    cve = (item or {}).get("cve") or {}
    cid = cve.get("id")
    if not isinstance(cid, str) or not cid:
        return None
    desc = next((d.get("value", "") for d in cve.get("descriptions") or [] if d.get("lang") == "en"), "")
    metrics = cve.get("metrics") or {}
    vector, score, severity = "", None, ""
    for key in ("cvssMetricV40", "cvssMetricV31", "cvssMetricV30", "cvssMetricV2"):
        entries = metrics.get(key) or []
        primary = next((m for m in entries if m.get("type") == "Primary"), entries[0] if entries else None)
        if primary:
            data = primary.get("cvssData") or {}
            vector = str(data.get("vectorString", ""))
            score = float(data["baseScore"]) if data.get("baseScore") is not None else None
            severity = normalize(data.get("baseSeverity") or primary.get("baseSeverity")) or from_score(score)
            break
    return Advisory(
        id=cid,
        source=source,
        summary=str(desc)[:2000],
        severity=severity or from_score(score),
        cvss_vector=vector,
        cvss_score=score,
        published=str(cve.get("published", "")),
        modified=str(cve.get("lastModified", "")),
    )


def epss_csv(text: str, errors: list[str] | None = None) -> list[tuple[str, float, float]]:
    """epss_scores-YYYY-MM-DD.csv: a '#model_version...' comment line, then cve,epss,percentile; a bad row
    goes to ``errors`` and the others are kept."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if not reader.fieldnames or not {"cve", "epss"} <= set(reader.fieldnames):
        raise FeedError("not an EPSS CSV (no cve,epss header)")
    rows = []
    for r in reader:
        try:
            rows.append((r["cve"], float(r["epss"]), float(r.get("percentile") or 0)))
        except (TypeError, ValueError):
            if errors is not None:
                errors.append(f"bad EPSS row {r!r}"[:200])
    return rows

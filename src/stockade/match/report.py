"""Scan reports: stockade JSON, SARIF 2.1.0 and CycloneDX 1.6 with vulnerabilities."""

from __future__ import annotations

from typing import Any

import orjson

from stockade import __version__
from stockade.model import OS_ECOSYSTEMS, Finding, Inventory

_SARIF_LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note", "UNKNOWN": "note"}
_SARIF_SCORE = {"CRITICAL": "9.5", "HIGH": "8.0", "MEDIUM": "5.5", "LOW": "2.0", "UNKNOWN": "0.0"}


def to_json(inv: Inventory, findings: list[Finding], db_info: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "source": inv.source,
            "image_id": inv.image_id,
            "os": inv.os.to_dict() if inv.os else None,
            "database": db_info,
            "packages": len(inv.packages),
            "findings": [f.to_dict() for f in findings],
            "warnings": inv.warnings,
        },
        option=orjson.OPT_INDENT_2,
    )


def to_sarif(inv: Inventory, findings: list[Finding]) -> bytes:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in findings:
        if f.vuln_id not in rules:
            rules[f.vuln_id] = {
                "id": f.vuln_id,
                "name": "OsPackageVulnerability" if f.package.ecosystem in OS_ECOSYSTEMS else "LanguageVulnerability",
                "shortDescription": {"text": f.title or f.vuln_id},
                "helpUri": f.references[0] if f.references else f"https://osv.dev/vulnerability/{f.vuln_id}",
                "help": {"text": f.remediation},
                "properties": {
                    "security-severity": str(f.cvss_score or _SARIF_SCORE[f.severity]),
                    "tags": ["vulnerability", "security", f.severity],
                },
            }
        results.append(
            {
                "ruleId": f.vuln_id,
                "level": _SARIF_LEVEL.get(f.severity, "note"),
                "message": {
                    "text": f"{f.package.name} {f.installed_version} is affected by {f.vuln_id} ({f.severity})"
                    + (f"; fixed in {f.fixed_version}" if f.fixed_version else "; no fix yet")
                    + f". {f.remediation}"
                },
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": f.package.location or inv.source, "uriBaseId": "ROOTPATH"},
                            "region": {"startLine": 1},
                        },
                        "message": {"text": f"{inv.source}: {f.package.purl}"},
                    }
                ],
                "partialFingerprints": {"stockade/v1": f"{f.vuln_id}:{f.package.purl}"},
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "stockade",
                        "version": __version__,
                        "informationUri": "https://stockade.dev",
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
                "originalUriBaseIds": {"ROOTPATH": {"uri": "file:///"}},
            }
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def to_cyclonedx(inv: Inventory, findings: list[Finding]) -> bytes:
    """CycloneDX 1.6: the inventory's components plus a vulnerabilities section that references them."""
    from stockade.inventory.formats import to_cyclonedx as sbom

    doc = orjson.loads(sbom(inv))
    refs = {c.get("purl"): c["bom-ref"] for c in doc.get("components", []) if c.get("purl")}
    vulns: dict[str, dict[str, Any]] = {}
    for f in findings:
        v = vulns.setdefault(
            f.vuln_id,
            {
                "bom-ref": f"vuln:{f.vuln_id}",
                "id": f.vuln_id,
                "source": {"name": f.source or "stockade"},
                "ratings": [
                    {
                        "severity": f.severity.lower() if f.severity != "UNKNOWN" else "unknown",
                        **({"score": f.cvss_score} if f.cvss_score is not None else {}),
                        **(
                            {"vector": f.cvss_vector, "method": "CVSSv31" if "3.1" in f.cvss_vector else "other"}
                            if f.cvss_vector
                            else {}
                        ),
                    }
                ],
                "description": f.title,
                "recommendation": f.remediation,
                "affects": [],
            },
        )
        ref = refs.get(f.package.purl)
        if ref:
            v["affects"].append({"ref": ref, "versions": [{"version": f.installed_version, "status": "affected"}]})
        if f.aliases:
            v["references"] = [{"id": a, "source": {"name": "alias"}} for a in f.aliases[:5]]
    doc["vulnerabilities"] = list(vulns.values())
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

"""Posture outputs: JSON, SARIF 2.1.0 and a compliance report per framework (JSON and HTML)."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

import orjson

from stockade import __version__
from stockade.posture.engine import PostureFinding, Rule
from stockade.posture.resources import Resource

_LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}


def to_json(findings: list[PostureFinding], excepted: dict[int, str]) -> bytes:
    out = []
    for f in findings:
        d = f.to_dict()
        if id(f) in excepted:
            d["excepted"] = excepted[id(f)]
        out.append(d)
    return orjson.dumps({"findings": out}, option=orjson.OPT_INDENT_2)


def to_sarif(findings: list[PostureFinding]) -> bytes:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in findings:
        r = f.rule
        rules.setdefault(
            r.id,
            {
                "id": r.id,
                "shortDescription": {"text": r.title},
                "fullDescription": {"text": r.rationale},
                "help": {"text": r.remediation + (f"\n\n{r.patch}" if r.patch else "")},
                "properties": {"tags": ["security", "kubernetes"], "frameworks": r.frameworks},
            },
        )
        file = f.resource.source.split("#")[0]
        where = f.resource.ref + (f" container {f.container}" if f.container else "")
        results.append(
            {
                "ruleId": r.id,
                "level": _LEVEL[r.severity],
                "message": {"text": f"{where}: {r.title}. {r.remediation}"},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": file}}}],
            }
        )
    return orjson.dumps(
        {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {"driver": {"name": "stockade", "version": __version__, "rules": list(rules.values())}},
                    "results": results,
                }
            ],
        },
        option=orjson.OPT_INDENT_2,
    )


def compliance(rules: list[Rule], resources: list[Resource], findings: list[PostureFinding]) -> dict[str, Any]:
    """Per framework and control: the rules mapped to it, the objects checked, how many fail, and a score."""
    from stockade.posture.graph import ADMIN_REACH, NO_NETPOL, WORKLOAD_ADMIN_SA

    rules = [*rules, ADMIN_REACH, WORKLOAD_ADMIN_SA, NO_NETPOL]
    failing: dict[str, set[str]] = defaultdict(set)
    for f in findings:
        failing[f.rule.id].add(f.resource.ref)
    controls: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rules:
        for fw, value in r.frameworks.items():
            ids = (
                [f"{value['level']}: {value['control']}"] if isinstance(value, dict) else [str(v) for v in value or []]
            )
            for cid in ids:
                c = controls[fw].setdefault(cid, {"rules": [], "failing": set()})
                c["rules"].append(r.id)
                c["failing"] |= failing.get(r.id, set())
    out: dict[str, Any] = {}
    for fw, cs in sorted(controls.items()):
        rows = []
        for cid, c in sorted(cs.items()):
            rows.append(
                {
                    "control": cid,
                    "rules": c["rules"],
                    "status": "FAIL" if c["failing"] else "PASS",
                    "failing_objects": sorted(c["failing"]),
                }
            )
        passed = sum(1 for r in rows if r["status"] == "PASS")
        out[fw] = {
            "score": round(100.0 * passed / len(rows), 1) if rows else 100.0,
            "passed": passed,
            "total": len(rows),
            "controls": rows,
        }
    return {"objects": len(resources), "frameworks": out}


def compliance_html(report: dict[str, Any]) -> bytes:
    parts = [
        "<!doctype html><meta charset=utf-8><title>stockade compliance</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.FAIL{color:#b00}.PASS{color:#070}</style>",
        f"<h1>Compliance report</h1><p>{report['objects']} objects checked.</p>",
    ]
    for fw, data in report["frameworks"].items():
        parts.append(
            f"<h2>{html.escape(fw.upper())}: {data['score']}% ({data['passed']}/{data['total']} controls pass)</h2>"
        )
        parts.append("<table><tr><th>Control</th><th>Status</th><th>Rules</th><th>Failing objects</th></tr>")
        for c in data["controls"]:
            objs = ", ".join(c["failing_objects"][:10]) + (" ..." if len(c["failing_objects"]) > 10 else "")
            parts.append(
                f"<tr><td>{html.escape(c['control'])}</td><td class={c['status']}>{c['status']}</td>"
                f"<td>{', '.join(c['rules'])}</td><td>{html.escape(objs)}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts).encode()

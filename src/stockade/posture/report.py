"""Posture outputs: JSON, SARIF 2.1.0 and a compliance report per framework (JSON and HTML)."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

import orjson

from stockade import __version__
from stockade.model import Resource
from stockade.posture.rule import PostureFinding, Rule

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


def catalogues() -> dict[str, dict[str, Any]]:
    """The control lists of the frameworks that have one (posture/frameworks/*.yaml), by framework key."""
    from importlib import resources as importlib_resources

    import yaml

    out = {}
    for p in sorted(importlib_resources.files("stockade.posture").joinpath("frameworks").iterdir(), key=str):
        if p.name.endswith(".yaml"):
            doc = yaml.load(p.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            out[doc["framework"]] = doc
    return out


def compliance(rules: list[Rule], resources: list[Resource], findings: list[PostureFinding]) -> dict[str, Any]:
    """Per framework and control: the rules mapped to it, PASS/FAIL with the failing objects, or MANUAL for a
    catalogued control no rule assesses; the score counts the assessed controls."""
    from stockade.posture.graph import CROSS_RULES

    rules = [*rules, *CROSS_RULES]
    failing: dict[str, set[str]] = defaultdict(set)
    for f in findings:
        failing[f.rule.id].add(f.resource.ref)
    cats = catalogues()
    controls: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for fw, cat in cats.items():
        for c in cat["controls"]:
            controls[fw][str(c["id"])] = {
                "rules": [],
                "failing": set(),
                "title": c.get("title", ""),
                "manual": c.get("manual", ""),
            }
    for r in rules:
        for fw, value in r.frameworks.items():
            ids = (
                [f"{value['level']}: {value['control']}"] if isinstance(value, dict) else [str(v) for v in value or []]
            )
            for cid in ids:
                c = controls[fw].setdefault(cid, {"rules": [], "failing": set(), "title": "", "manual": ""})
                c["rules"].append(r.id)
                c["failing"] |= failing.get(r.id, set())
    out: dict[str, Any] = {}
    for fw, cs in sorted(controls.items()):
        order = [str(c["id"]) for c in cats[fw]["controls"]] if fw in cats else sorted(cs)
        order += sorted(set(cs) - set(order))
        rows = []
        for cid in order:
            c = cs[cid]
            status = ("FAIL" if c["failing"] else "PASS") if c["rules"] else "MANUAL"
            row: dict[str, Any] = {
                "control": cid,
                "title": c["title"],
                "rules": c["rules"],
                "status": status,
                "failing_objects": sorted(c["failing"]),
            }
            if status == "MANUAL":
                row["how"] = c["manual"] or "No rule assesses this control; review it by hand."
            rows.append(row)
        assessed = [r for r in rows if r["status"] != "MANUAL"]
        passed = sum(1 for r in assessed if r["status"] == "PASS")
        out[fw] = {
            "title": cats[fw]["title"] if fw in cats else fw.upper(),
            "score": round(100.0 * passed / len(assessed), 1) if assessed else 100.0,
            "passed": passed,
            "total": len(assessed),
            "manual": len(rows) - len(assessed),
            "controls": rows,
        }
    return {"objects": len(resources), "frameworks": out}


def compliance_html(report: dict[str, Any]) -> bytes:
    parts = [
        "<!doctype html><meta charset=utf-8><title>stockade compliance</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".FAIL{color:#b00}.PASS{color:#070}.MANUAL{color:#666}</style>",
        f"<h1>Compliance report</h1><p>{report['objects']} objects checked.</p>",
    ]
    for _fw, data in report["frameworks"].items():
        parts.append(
            f"<h2>{html.escape(data['title'])}: {data['score']}% ({data['passed']}/{data['total']} assessed "
            f"controls pass, {data['manual']} manual)</h2>"
        )
        parts.append("<table><tr><th>Control</th><th>Status</th><th>Rules</th><th>Failing objects</th></tr>")
        for c in data["controls"]:
            objs = ", ".join(c["failing_objects"][:10]) + (" ..." if len(c["failing_objects"]) > 10 else "")
            detail = html.escape(objs if c["status"] != "MANUAL" else c.get("how", ""))
            title = f" {html.escape(c['title'])}" if c["title"] else ""
            parts.append(
                f"<tr><td>{html.escape(c['control'])}{title}</td><td class={c['status']}>{c['status']}</td>"
                f"<td>{', '.join(c['rules'])}</td><td>{detail}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts).encode()

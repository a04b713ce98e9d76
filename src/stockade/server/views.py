"""Read models for the API and the dashboard: overview and secure score, running images with their vulnerabilities,
recommendations (less accepted exceptions), compliance per framework."""

from __future__ import annotations

import time
from collections import defaultdict
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import func, or_, select

from stockade.server import db as t
from stockade.server.store import SEVERITIES, SEVERITY_ORDER, NotFound, Store, severity_list

# what the image lists show of a scan (all but the stored inventory)
IMAGE_SUMMARY = (
    t.images.c.id,
    t.images.c.ref,
    t.images.c.digest,
    t.images.c.os,
    t.images.c.scanned_at,
    t.images.c.counts,
    t.images.c.fixable,
    t.images.c.db_built_at,
)
SEVERITY_WEIGHT = {"CRITICAL": 10, "HIGH": 7, "MEDIUM": 4, "LOW": 1, "INFO": 0, "UNKNOWN": 1}
DAY = 86400.0


def _exceptions(store: Store) -> list[dict[str, Any]]:
    now = time.time()
    return [e for e in store.rows("exceptions") if e["expires_at"] is None or e["expires_at"] > now]


def _excepted(rec: dict[str, Any], cluster: str, excs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for e in excs:
        if (
            fnmatchcase(rec["rule"], e["rule"])
            and fnmatchcase(cluster, e["cluster"])
            and fnmatchcase(rec["namespace"], e["namespace"])
            and fnmatchcase(rec["name"], e["name"])
        ):
            return e
    return None


def recommendations(
    store: Store,
    cluster: str | None = None,
    severity: str | None = None,
    q: str | None = None,
    include_excepted: bool = False,
) -> list[dict[str, Any]]:
    """Failing checks grouped by rule (like Defender's recommendations), each with its affected objects."""
    stmt = select(t.recommendations, t.clusters.c.name.label("cluster")).select_from(
        t.recommendations.join(t.clusters)
    )
    if cluster:
        stmt = stmt.where(t.clusters.c.name == cluster)
    if severity:
        stmt = stmt.where(t.recommendations.c.severity.in_(severity_list(severity)))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(t.recommendations.c.title).like(like),
                func.lower(t.recommendations.c.rule).like(like),
                func.lower(t.recommendations.c.name).like(like),
                func.lower(t.recommendations.c.namespace).like(like),
            )
        )
    with store.engine.connect() as con:
        rows = con.execute(stmt).all()
    excs = _exceptions(store)
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = dict(r._mapping)
        exc = _excepted(d, d["cluster"], excs)
        if exc is not None and not include_excepted:
            continue
        g = groups.setdefault(
            d["rule"],
            {
                "rule": d["rule"],
                "title": d["title"],
                "severity": d["severity"],
                "remediation": d["remediation"],
                "frameworks": d["frameworks"],
                "resources": [],
            },
        )
        g["resources"].append(
            {
                "cluster": d["cluster"],
                "kind": d["kind"],
                "namespace": d["namespace"],
                "name": d["name"],
                "container": d["container"],
                **({"objects": d["objects"]} if d.get("objects") else {}),
                **({"excepted": exc["reason"]} if exc else {}),
            }
        )
    return sorted(
        groups.values(), key=lambda g: (SEVERITY_ORDER.get(g["severity"], 9), -len(g["resources"]), g["rule"])
    )


def compliance(store: Store, cluster: str | None = None) -> list[dict[str, Any]]:
    """Per framework: the controls over all clusters (a control fails where it fails in any cluster)."""
    stmt = select(t.compliance, t.clusters.c.name.label("cluster")).select_from(t.compliance.join(t.clusters))
    if cluster:
        stmt = stmt.where(t.clusters.c.name == cluster)
    with store.engine.connect() as con:
        rows = con.execute(stmt.order_by(t.compliance.c.framework)).all()
    fws: dict[str, dict[str, Any]] = {}
    for r in rows:
        fw = fws.setdefault(r.framework, {"framework": r.framework, "title": r.title, "clusters": {}, "controls": {}})
        fw["clusters"][r.cluster] = {"score": r.score, "passed": r.passed, "total": r.total, "manual": r.manual}
        for c in r.controls if isinstance(r.controls, list) else []:
            # stored JSON is read as data that may be of any shape (rows written before validation, or by hand)
            if not isinstance(c, dict) or not isinstance(c.get("control"), str):
                continue
            status = c.get("status") if c.get("status") in ("PASS", "FAIL", "MANUAL") else "MANUAL"
            failing = c.get("failing_objects")
            rules = c.get("rules")
            ctl = fw["controls"].setdefault(
                c["control"],
                {
                    "control": c["control"],
                    "title": str(c.get("title", "")),
                    "rules": [str(x) for x in rules] if isinstance(rules, list) else [],
                    "status": status,
                    "failing": [],
                    "how": str(c.get("how", "")),
                },
            )
            if status == "FAIL":
                ctl["status"] = "FAIL"
                ctl["failing"] += [f"{r.cluster}: {o}" for o in (failing if isinstance(failing, list) else [])]
    out = []
    for fw in fws.values():
        controls = list(fw["controls"].values())
        assessed = [c for c in controls if c["status"] != "MANUAL"]
        passed = sum(c["status"] == "PASS" for c in assessed)
        fw["controls"] = controls
        fw["passed"], fw["total"], fw["manual"] = passed, len(assessed), len(controls) - len(assessed)
        fw["score"] = round(100.0 * passed / len(assessed), 1) if assessed else 100.0
        out.append(fw)
    return out


def running_images(store: Store, cluster: str | None = None, q: str | None = None) -> list[dict[str, Any]]:
    """Every image that runs somewhere, with where it runs and its scan's findings by severity; images that run
    but were never scanned are listed as such."""
    stmt = select(t.containers, t.clusters.c.name.label("cluster")).select_from(t.containers.join(t.clusters))
    if cluster:
        stmt = stmt.where(t.clusters.c.name == cluster)
    with store.engine.connect() as con:
        ctrs = con.execute(stmt).all()
        imgs = con.execute(select(*IMAGE_SUMMARY)).all()
    by_ref = {i.ref: i for i in imgs}
    by_digest = {i.digest: i for i in imgs if i.digest}
    out: dict[str, dict[str, Any]] = {}
    for c in ctrs:
        img = by_ref.get(c.image) or (by_digest.get(c.image_digest) if c.image_digest else None)
        key = img.ref if img is not None else c.image
        row = out.get(key)
        if row is None:
            row = out[key] = {
                "image": key,
                "image_id": img.id if img is not None else None,
                "scanned": img is not None,
                "os": img.os if img is not None else "",
                "scanned_at": img.scanned_at if img is not None else None,
                "counts": dict(img.counts or {}) if img is not None else {},
                "fixable": img.fixable if img is not None else 0,
                "clusters": set(),
                "workloads": set(),
                "containers": 0,
            }
        row["clusters"].add(c.cluster)
        row["workloads"].add(f"{c.cluster}/{c.namespace}/{c.workload_kind or 'Pod'}/{c.workload or c.pod}")
        row["containers"] += 1
    rows = []
    for r in out.values():
        if q and q.lower() not in r["image"].lower():
            continue
        r["clusters"] = sorted(r["clusters"])
        r["workloads"] = sorted(r["workloads"])
        r["vulnerabilities"] = sum(r["counts"].values())
        rows.append(r)
    return sorted(rows, key=lambda r: (-_risk(r["counts"]), r["image"]))


def _risk(counts: dict[str, int]) -> int:
    return sum(SEVERITY_WEIGHT.get(s, 0) * n for s, n in counts.items())


def images(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as con:
        rows = con.execute(select(*IMAGE_SUMMARY).order_by(t.images.c.ref)).all()
    return [dict(r._mapping) for r in rows]


def image(store: Store, image_id: int, severity: str | None = None) -> dict[str, Any]:
    with store.engine.connect() as con:
        img = con.execute(select(*IMAGE_SUMMARY).where(t.images.c.id == image_id)).first()
        if img is None:
            raise NotFound(f"no image {image_id}")
        stmt = select(t.findings).where(t.findings.c.image_id == image_id)
        if severity:
            stmt = stmt.where(t.findings.c.severity.in_(severity_list(severity)))
        fs = con.execute(stmt).all()
        running = con.execute(
            select(t.containers, t.clusters.c.name.label("cluster"))
            .select_from(t.containers.join(t.clusters))
            .where(
                or_(
                    t.containers.c.image == img.ref,
                    (t.containers.c.image_digest == img.digest) & (t.containers.c.image_digest != ""),
                )
            )
        ).all()
    findings = sorted(
        (dict(f._mapping) for f in fs),
        key=lambda f: (SEVERITY_ORDER.get(f["severity"], 9), -(f["cvss"] or 0), f["vuln_id"]),
    )
    return {
        **dict(img._mapping),
        "findings": findings,
        "running": [
            {"cluster": c.cluster, "namespace": c.namespace, "pod": c.pod, "container": c.container} for c in running
        ],
    }


def vulnerabilities(store: Store, severity: str | None = None, q: str | None = None) -> list[dict[str, Any]]:
    """Vulnerabilities of running images, one row per vulnerability with the images and containers it affects."""
    run = {r["image_id"]: r for r in running_images(store) if r["image_id"] is not None}
    if not run:
        return []
    stmt = select(t.findings).where(t.findings.c.image_id.in_(list(run)))
    if severity:
        stmt = stmt.where(t.findings.c.severity.in_(severity_list(severity)))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(t.findings.c.vuln_id).like(like), func.lower(t.findings.c.package).like(like)))
    with store.engine.connect() as con:
        rows = con.execute(stmt).all()
    out: dict[str, dict[str, Any]] = {}
    for f in rows:
        v = out.setdefault(
            f.vuln_id,
            {
                "id": f.vuln_id,
                "severity": f.severity,
                "cvss": f.cvss,
                "kev": f.kev,
                "title": f.title,
                "packages": set(),
                "images": set(),
                "containers": 0,
                "fixed": set(),
            },
        )
        v["packages"].add(f.package)
        if f.image_id not in v["images"]:
            v["containers"] += run[f.image_id]["containers"]
        v["images"].add(run[f.image_id]["image"])
        if f.fixed:
            v["fixed"].add(f"{f.package} {f.fixed}")
    res = [
        {**v, "packages": sorted(v["packages"]), "images": sorted(v["images"]), "fixed": sorted(v["fixed"])}
        for v in out.values()
    ]
    return sorted(res, key=lambda v: (not v["kev"], SEVERITY_ORDER.get(v["severity"], 9), -(v["cvss"] or 0), v["id"]))


def overview(store: Store, days: int = 14) -> dict[str, Any]:
    """Counts for the overview page, the secure score and the alert trend."""
    now = time.time()
    since = now - days * DAY
    with store.engine.connect() as con:
        alerts_by_sev: dict[str, int] = dict(
            con.execute(
                select(t.alerts.c.severity, func.count())
                .where(t.alerts.c.status == "active")
                .group_by(t.alerts.c.severity)
            ).all()
        )
        alerts_by_status: dict[str, int] = dict(
            con.execute(select(t.alerts.c.status, func.count()).group_by(t.alerts.c.status)).all()
        )
        firsts = con.execute(
            select(t.alerts.c.first_seen, t.alerts.c.severity).where(t.alerts.c.first_seen >= since)
        ).all()
        by_tactic: dict[str, int] = defaultdict(int)
        for (tactics,) in con.execute(select(t.alerts.c.tactics).where(t.alerts.c.status == "active")).all():
            for tac in tactics or []:
                by_tactic[tac] += 1
        violations_7d = con.execute(
            select(func.count()).select_from(t.violations).where(t.violations.c.at >= now - 7 * DAY)
        ).scalar_one()
    trend = [0] * days
    for first, _sev in firsts:
        i = int((first - since) // DAY)
        if 0 <= i < days:
            trend[i] += 1
    clusters = store.clusters()
    run = running_images(store)
    vuln_by_sev: dict[str, int] = defaultdict(int)
    for r in run:
        for s, n in r["counts"].items():
            vuln_by_sev[s] += n
    recs = recommendations(store)
    rec_by_sev: dict[str, int] = defaultdict(int)
    for g in recs:
        rec_by_sev[g["severity"]] += len(g["resources"])
    comp = compliance(store)
    return {
        "secure_score": secure_score(comp, run),
        "clusters": len(clusters),
        "unprotected_clusters": sum(not c["protected"] for c in clusters),
        "alerts_active": sum(alerts_by_sev.values()),
        "alerts_by_severity": {s: alerts_by_sev.get(s, 0) for s in SEVERITIES if s not in ("UNKNOWN",)},
        "alerts_by_status": alerts_by_status,
        "alerts_by_tactic": dict(sorted(by_tactic.items(), key=lambda kv: -kv[1])),
        "alert_trend": {"days": days, "counts": trend, "start": since},
        "running_images": len(run),
        "unscanned_images": sum(not r["scanned"] for r in run),
        "vulnerable_images": sum(r["vulnerabilities"] > 0 for r in run),
        "vulnerabilities_by_severity": {s: vuln_by_sev.get(s, 0) for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW")},
        "recommendations": len(recs),
        "recommendations_by_severity": {s: rec_by_sev.get(s, 0) for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW")},
        "violations_7d": violations_7d,
        "compliance": [{"framework": c["framework"], "title": c["title"], "score": c["score"]} for c in comp],
    }


def secure_score(comp: list[dict[str, Any]], run: list[dict[str, Any]]) -> float | None:
    """0-100: the share of assessed posture controls that pass (all frameworks), and the share of running images
    free of fixable critical and high vulnerabilities, averaged; None with nothing assessed yet."""
    parts = []
    passed = sum(c["passed"] for c in comp)
    total = sum(c["total"] for c in comp)
    if total:
        parts.append(passed / total)
    scanned = [r for r in run if r["scanned"]]
    if run:
        clean = sum(1 for r in scanned if not (r["counts"].get("CRITICAL") or r["counts"].get("HIGH")))
        parts.append(clean / len(run))  # unscanned running images count as not healthy
    return round(100.0 * sum(parts) / len(parts), 1) if parts else None


def admission(
    store: Store, cluster: str | None = None, action: str | None = None, q: str | None = None, limit: int = 500
) -> dict[str, Any]:
    """Admission violations, newest first, with counts by rule and by action (deny, warn, audit)."""
    v = t.violations
    rows = store.violations(cluster, limit, action, q)
    grouped = (
        select(v.c.rule, v.c.action, func.count())
        .select_from(v.join(t.clusters))
        .where(*store.violation_filter(cluster, action, q))
    )
    by_rule: dict[str, int] = {}
    by_action: dict[str, int] = {}
    total = 0
    with store.engine.connect() as con:
        for rule, act, n in con.execute(grouped.group_by(v.c.rule, v.c.action)):
            by_rule[rule] = by_rule.get(rule, 0) + n
            by_action[act] = by_action.get(act, 0) + n
            total += n
    top = dict(sorted(by_rule.items(), key=lambda kv: -kv[1])[:10])
    return {"items": rows, "total": total, "by_rule": top, "by_action": by_action}

"""Advisory databases in their own formats: RubySec, FriendsOfPHP (Packagist), the Node.js security WG,
and Debian's DSA/DLA lists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.severity import from_score, normalize, score_vector
from stockade.vulndb.store import Advisory, Affected

DEBIAN_CODENAMES = {
    "trixie": "13",
    "bookworm": "12",
    "bullseye": "11",
    "buster": "10",
    "stretch": "9",
    "jessie": "8",
    "wheezy": "7",
    "squeeze": "6",
    "lenny": "5",
}


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    raise FeedError(f"expected a list of version constraints, got {type(value).__name__}")


def rubysec(doc: Any, source: str, path: str) -> Advisory:
    if not isinstance(doc, dict) or not doc.get("gem"):
        raise FeedError("not a RubySec advisory (no gem)")
    cve = doc.get("cve")
    ghsa = doc.get("ghsa")
    osvdb = doc.get("osvdb")
    ids = ([f"CVE-{cve}"] if cve else []) + ([f"GHSA-{ghsa}"] if ghsa else []) + ([f"OSVDB-{osvdb}"] if osvdb else [])
    if not ids:
        ids = [path.rsplit("/", 1)[-1].rsplit(".", 1)[0]]
    score = None
    for key in ("cvss_v4", "cvss_v3", "cvss_v2"):
        if isinstance(doc.get(key), int | float):
            score = float(doc[key])
            break
    safe = _strings(doc.get("patched_versions")) + _strings(doc.get("unaffected_versions"))
    return Advisory(
        id=ids[0],
        source=source,
        aliases=ids[1:],
        summary=str(doc.get("title") or "")[:2000],
        severity=normalize(doc["criticality"]) if doc.get("criticality") else from_score(score),
        cvss_score=score,
        published=str(doc.get("date") or ""),
        references=[str(doc["url"])] if doc.get("url") else [],
        affected=[Affected("gem", "", str(doc["gem"]), safe=safe or ["< 0"])],  # no patch: everything affected
    )


def friendsofphp(doc: Any, source: str, path: str) -> Advisory:
    if not isinstance(doc, dict) or not isinstance(doc.get("branches"), dict):
        raise FeedError("not a FriendsOfPHP advisory (no branches)")
    ref = str(doc.get("reference") or "")
    if not ref.startswith("composer://"):
        raise FeedError(f"unsupported reference {ref!r}")
    package = ref.removeprefix("composer://")
    vulnerable = []
    for branch in doc["branches"].values():
        versions = _strings((branch or {}).get("versions"))
        if versions:
            vulnerable.append(" ".join(versions))
    if not vulnerable:
        raise FeedError("no vulnerable version ranges")
    cve = doc.get("cve")
    vid = str(cve) if cve else f"PHPSEC-{package}-{path.rsplit('/', 1)[-1].rsplit('.', 1)[0]}"
    return Advisory(
        id=vid,
        source=source,
        summary=str(doc.get("title") or "")[:2000],
        severity="UNKNOWN",
        references=[str(doc["link"])] if doc.get("link") else [],
        affected=[Affected("composer", "", package, vulnerable=vulnerable)],
    )


def nodejs_wg(doc: Any, source: str) -> Advisory:
    if not isinstance(doc, dict) or not doc.get("module_name") or "id" not in doc:
        raise FeedError("not a Node.js security WG advisory")
    cves = [str(c) for c in doc.get("cves") or []]
    vector = str(doc.get("cvss_vector") or "")
    score = score_vector(vector) if vector else None
    if score is None and isinstance(doc.get("cvss_score"), int | float):
        score = float(doc["cvss_score"])
    vulnerable = str(doc.get("vulnerable_versions") or "*")
    patched = str(doc.get("patched_versions") or "")
    return Advisory(
        id=f"NSWG-ECO-{doc['id']}",
        source=source,
        aliases=cves,
        summary=str(doc.get("title") or "")[:2000],
        severity=from_score(score),
        cvss_vector=vector,
        cvss_score=score,
        published=str(doc.get("publish_date") or ""),
        references=[str(r) for r in doc.get("references") or []][:10],
        affected=[
            Affected(
                "npm",
                "",
                str(doc["module_name"]),
                vulnerable=[vulnerable],
                safe=[patched] if patched and patched not in ("<0.0.0", "") else [],
            )
        ],
    )


_DSA_HEAD = re.compile(r"^\[(\d{2} \w{3} \d{4})\] ((?:DSA|DLA)-\d+-\d+) (\S+)")
_DSA_FIX = re.compile(r"^\s+\[(\w+)\] - (\S+) (\S+)")


def debian_security_list(text: str, source: str, errors: list[str]) -> Iterator[Advisory]:
    """The security tracker's data/DSA/list and data/DLA/list."""
    cur: Advisory | None = None
    for line in text.splitlines():
        m = _DSA_HEAD.match(line)
        if m:
            if cur is not None and cur.affected:
                yield cur
            cur = Advisory(id=m.group(2), source=source, published=m.group(1), summary=f"{m.group(3)} security update")
            continue
        if cur is None:
            continue
        stripped = line.strip()
        if stripped.startswith("{") and stripped.endswith("}"):
            cur.aliases = stripped[1:-1].split()
            continue
        f = _DSA_FIX.match(line)
        if f:
            codename, pkg, fixed = f.groups()
            if fixed.startswith("<"):
                continue  # <not-affected>, <unfixed>, <end-of-life>
            release = DEBIAN_CODENAMES.get(codename)
            if release is None:
                errors.append(f"{cur.id}: unknown Debian release {codename!r}")
                continue
            cur.affected.append(Affected("deb", f"debian:{release}", pkg, [("0", fixed, None)]))
    if cur is not None and cur.affected:
        yield cur

"""OSV documents (JSON or YAML): PyPI, Go, crates.io, AlmaLinux, Rocky, Debian, Ubuntu, Alpine, GHSA..."""

from __future__ import annotations

import re
from typing import Any

from stockade.vulndb.severity import from_score, normalize, score_vector
from stockade.vulndb.store import Advisory, Affected

_LANG = {
    "pypi": "pypi",
    "go": "golang",
    "crates.io": "cargo",
    "npm": "npm",
    "maven": "maven",
    "nuget": "nuget",
    "rubygems": "gem",
    "packagist": "composer",
}
_OS = {
    "almalinux": ("rpm", "alma"),
    "rocky linux": ("rpm", "rocky"),
    "red hat": ("rpm", "redhat"),
    "debian": ("deb", "debian"),
    "ubuntu": ("deb", "ubuntu"),
    "alpine": ("apk", "alpine"),
    "suse linux enterprise server": ("rpm", "suse linux enterprise server"),
    "opensuse": ("rpm", "opensuse.leap"),
    "mariner": ("rpm", "cbl-mariner"),
    "azure linux": ("rpm", "azurelinux"),
    "wolfi": ("apk", "wolfi"),
}
_PEP503 = re.compile(r"[-_.]+")


class FeedError(ValueError):
    """One record that cannot be used; counted as a bad record of its source."""


def map_ecosystem(osv_ecosystem: str) -> tuple[str, str]:
    """('rpm', 'alma:9') from 'AlmaLinux:9'; ('pypi', '') from 'PyPI'."""
    base, _, release = osv_ecosystem.partition(":")
    key = base.strip().lower()
    if key in _LANG:
        return _LANG[key], ""
    if key in _OS:
        eco, ns = _OS[key]
        release = release.strip().removeprefix("v")
        if not release:
            raise FeedError(f"OS ecosystem without a release: {osv_ecosystem!r}")
        return eco, f"{ns}:{release.split(':')[0]}"
    raise FeedError(f"unknown ecosystem {osv_ecosystem!r}")


def package_key(ecosystem: str, name: str) -> str:
    """The name as it is looked up: PyPI names are normalised (PEP 503)."""
    return _PEP503.sub("-", name).lower() if ecosystem == "pypi" else name


def _ranges(events: list[dict[str, Any]]) -> list[tuple[str | None, str | None, str | None]]:
    out: list[tuple[str | None, str | None, str | None]] = []
    introduced: str | None = None
    for ev in events:
        if "introduced" in ev:
            introduced = str(ev["introduced"])
        elif "fixed" in ev:
            out.append((introduced or "0", str(ev["fixed"]), None))
            introduced = None
        elif "last_affected" in ev:
            out.append((introduced or "0", None, str(ev["last_affected"])))
            introduced = None
        elif "limit" in ev:
            out.append((introduced or "0", str(ev["limit"]), None))
            introduced = None
    if introduced is not None:
        out.append((introduced, None, None))  # affected from there on, no fix yet
    return out


# Red Hat-style errata in OSV (AlmaLinux ALSA/ALBA/ALEA, Rocky RLSA...): the distro rates each erratum in its
# summary ("Important: openssl security update") and lists the CVEs it fixes under "related". They are read as
# RHEL's OVAL errata are: the distro's rating as the severity, the CVEs as aliases (for KEV, EPSS and CVSS).
_ERRATUM_ID = re.compile(r"[A-Z]{2,5}-\d{4}:\d+")
_ERRATUM_RATING = re.compile(r"(Critical|Important|Moderate|Low): ")


def parse(doc: Any, source: str) -> Advisory:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise FeedError("not an OSV record (no id)")
    if doc.get("withdrawn"):
        raise FeedError(f"{doc['id']}: withdrawn")
    adv = Advisory(
        id=doc["id"],
        source=source,
        aliases=[str(a) for a in doc.get("aliases") or []],
        summary=str(doc.get("summary") or doc.get("details") or "")[:2000],
        published=str(doc.get("published") or ""),
        modified=str(doc.get("modified") or ""),
        references=[str(r.get("url")) for r in doc.get("references") or [] if isinstance(r, dict)],
    )
    best: float | None = None
    for sev in doc.get("severity") or []:
        vector = str(sev.get("score", ""))
        score = score_vector(vector) if vector.startswith("CVSS") or sev.get("type") == "CVSS_V2" else None
        if score is not None and (best is None or sev.get("type") in ("CVSS_V3", "CVSS_V4")):
            best, adv.cvss_vector = score, vector
    adv.cvss_score = best
    dbs = doc.get("database_specific") or {}
    adv.severity = normalize(dbs.get("severity")) if isinstance(dbs, dict) and dbs.get("severity") else from_score(best)
    if _ERRATUM_ID.fullmatch(adv.id):
        rating = _ERRATUM_RATING.match(str(doc.get("summary") or ""))
        if rating and not (isinstance(dbs, dict) and dbs.get("severity")):
            adv.severity = normalize(rating.group(1))
        if not adv.aliases:
            adv.aliases = [str(c) for c in doc.get("related") or [] if str(c).startswith("CVE-")]
    affected = doc.get("affected")
    if not isinstance(affected, list) or not affected:
        raise FeedError(f"{adv.id}: no affected packages")
    for aff in affected:
        pkg = aff.get("package") or {}
        eco, ns = map_ecosystem(str(pkg.get("ecosystem", "")))
        name = pkg.get("name")
        if not name:
            raise FeedError(f"{adv.id}: affected package without a name")
        ranges = []
        for r in aff.get("ranges") or []:
            if r.get("type") in ("SEMVER", "ECOSYSTEM"):
                ranges += _ranges(r.get("events") or [])
        versions = [str(v) for v in aff.get("versions") or []]
        if not ranges and not versions:
            continue  # GIT-only ranges: nothing to match a package version against
        eco_sev = (
            (aff.get("ecosystem_specific") or {}).get("severity")
            if isinstance(aff.get("ecosystem_specific"), dict)
            else None
        )
        adv.affected.append(
            Affected(eco, ns, package_key(eco, str(name)), ranges, versions, normalize(eco_sev) if eco_sev else "")
        )
    if not adv.affected:
        raise FeedError(f"{adv.id}: no version ranges")
    return adv

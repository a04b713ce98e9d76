"""Match an inventory against the vulnerability store."""

from __future__ import annotations

import re
from collections.abc import Iterable

from stockade.match.constraints import lowest_fix, satisfies
from stockade.match.versions import VersionError, compare
from stockade.model import OS_ECOSYSTEMS, Finding, Inventory, OSInfo, Package
from stockade.vulndb.feeds.osv import package_key
from stockade.vulndb.severity import ORDER, from_score
from stockade.vulndb.store import Affected, VulnDB

_RPM_FAMILIES = {
    "alma": "alma",
    "rocky": "rocky",
    "redhat": "redhat",
    "centos": "redhat",
    "oracle": "oracle",
    "amazon": "amazon",
    "cbl-mariner": "cbl-mariner",
    "azurelinux": "azurelinux",
}


def os_namespace(os_info: OSInfo | None, ecosystem: str) -> str | None:
    """The namespace advisories use for this OS release: "debian:12", "alpine:3.11", "alma:9"..."""
    if os_info is None:
        return None
    fam, ver = os_info.family, os_info.name
    if ecosystem == "deb":
        if fam == "debian":
            return f"debian:{ver.split('.')[0]}"
        if fam == "ubuntu":
            return f"ubuntu:{ver}"
        return None
    if ecosystem == "apk":
        if fam == "alpine":
            m = re.match(r"(\d+\.\d+)", ver)
            return f"alpine:{m.group(1)}" if m else ("alpine:edge" if "edge" in ver else None)
        return f"{fam}:{ver}" if fam == "wolfi" else None
    if ecosystem == "rpm":
        fam = _RPM_FAMILIES.get(fam, fam)
        return f"{fam}:{ver.split('.')[0]}"
    return None


def _in_range(eco: str, version: str, aff: Affected) -> tuple[bool, str]:
    """Whether ``version`` is affected, and the fixed version of the range that says so."""
    if aff.vulnerable or aff.safe:
        if aff.vulnerable and not any(satisfies(eco, version, e) for e in aff.vulnerable):
            return False, ""
        if any(satisfies(eco, version, e) for e in aff.safe):
            return False, ""
        return True, lowest_fix(eco, version, aff.safe)
    if version in aff.versions:
        return True, _smallest_fix_above(eco, version, aff)
    for introduced, fixed, last in aff.ranges:
        if introduced not in (None, "0") and compare(eco, version, introduced) < 0:
            continue
        if fixed is not None:
            if compare(eco, version, fixed) < 0:
                return True, fixed
            continue
        if last is not None:
            if compare(eco, version, last) <= 0:
                return True, ""
            continue
        return True, ""  # introduced, never fixed
    return False, ""


def _smallest_fix_above(eco: str, version: str, aff: Affected) -> str:
    """The smallest fixed version of any of the advisory's ranges that is above ``version`` ("" when none is):
    an advisory listing the affected versions explicitly still says where each branch is fixed."""
    best = ""
    for _introduced, fixed, _last in aff.ranges:
        if fixed and compare(eco, version, fixed) < 0 and (not best or compare(eco, fixed, best) < 0):
            best = fixed
    return best


def _remediation(p: Package, fixed: str, os_info: OSInfo | None) -> str:
    if not fixed:
        if p.ecosystem in OS_ECOSYSTEMS:
            return f"no fix published for {p.source_name or p.name} yet; rebuild on a newer base image when one is"
        return f"no fixed version of {p.name} published yet"
    if p.ecosystem in OS_ECOSYSTEMS:
        base = f"{os_info.family} {os_info.name}" if os_info else "the base image"
        src = f" (source package {p.source_name})" if p.source_name and p.source_name != p.name else ""
        # Debian advisories give the fixed version of the source package; binaries built from it share it
        return f"upgrade {p.name}{src} to {fixed} (or rebuild on an updated {base} image)"
    return f"upgrade {p.name} to {fixed} or later"


_Hits = dict[str, tuple[str, Affected]]


def _hits(
    db: VulnDB,
    eco: str,
    ns: str,
    name: str,
    version: str,
    warnings: list[str],
    memo: dict[tuple[str, ...], _Hits] | None,
) -> _Hits:
    key = (eco, ns, name, version)
    if memo is not None and key in memo:
        return memo[key]  # binaries of one source package share the answer
    best: _Hits = {}
    for vid, aff in db.affected(eco, ns, name):
        try:
            hit, fixed = _in_range(eco, version, aff)
        except VersionError as exc:
            warnings.append(f"{name} {version}: {vid}: {exc}")
            continue
        if not hit:
            continue
        known = best.get(vid)
        if known is None or (fixed and (not known[0] or compare(eco, fixed, known[0]) < 0)):
            best[vid] = (fixed, aff)  # several entries of one advisory: the smallest fix that applies
    if memo is not None:
        memo[key] = best
    return best


def match_package(
    db: VulnDB,
    p: Package,
    os_info: OSInfo | None,
    warnings: list[str],
    memo: dict[tuple[str, ...], _Hits] | None = None,
) -> list[Finding]:
    eco = p.ecosystem
    if eco in OS_ECOSYSTEMS:
        ns = os_namespace(os_info, eco)
        if ns is None:
            return []
        if eco in ("deb", "apk"):  # advisories name the source package, and its version
            lookups = [(p.source_name or p.name, (p.source_version or p.version) if eco == "deb" else p.version)]
            if ns.startswith("ubuntu:") and p.name != lookups[0][0]:
                lookups.append((p.name, p.version))  # Ubuntu's USN OVAL names binary packages
        else:
            lookups = [(p.name, p.version)]
    else:
        ns, lookups = "", [(package_key(eco, p.name), p.version)]
    best: _Hits = {}
    for name, version in lookups:
        if version:
            best.update(_hits(db, eco, ns, name, version, warnings, memo))
    findings = []
    for vid, (fixed, aff) in best.items():
        v = db.vuln(vid)
        cve_aliases = [a for a in v["aliases"] if a.startswith("CVE-")]
        if not vid.startswith("CVE-") and cve_aliases and all(a in best for a in cve_aliases):
            continue  # a DSA/DLA whose CVEs are all reported for this package already
        cves = [a for a in [vid, *v["aliases"]] if a.startswith("CVE-")]
        severity = aff.severity or v["severity"] or from_score(v["cvss_score"])
        score, vector = v["cvss_score"], v["cvss_vector"]
        if severity in ("", "UNKNOWN") or score is None:
            for cve in cves:  # the same CVE as another source rates it
                other = db.vuln(cve) if cve != vid else v
                if other["severity"] not in ("", "UNKNOWN") and severity in ("", "UNKNOWN"):
                    severity = other["severity"]
                if score is None and other["cvss_score"] is not None:
                    score, vector = other["cvss_score"], other["cvss_vector"]
        findings.append(
            Finding(
                vuln_id=vid,
                package=p,
                installed_version=p.version,
                fixed_version=fixed,
                severity=severity or "UNKNOWN",
                aliases=[a for a in v["aliases"] if a != vid],
                title=v["summary"].split("\n")[0][:200],
                cvss_score=score,
                cvss_vector=vector,
                kev=any(db.kev(c) for c in cves),
                epss=next((e for e in (db.epss(c) for c in cves) if e is not None), None),
                source=aff.source or v["source"],  # the feed that matched, not the first to name the id
                references=v["references"][:5],
                remediation=_remediation(p, fixed, os_info),
            )
        )
    return findings


def match(inv: Inventory, db: VulnDB, os_owned: bool = False) -> list[Finding]:
    """Every finding of every package, most severe first. A language package an OS package owns (Debian's
    python3-urllib3 files) is matched through its owner's advisories only, as Grype does: distributions backport
    fixes without changing the upstream version. ``os_owned`` matches those against upstream advisories too."""
    out: list[Finding] = []
    seen: set[tuple[str, str, str, str]] = set()
    memo: dict[tuple[str, ...], _Hits] = {}
    for p in inv.packages:
        if p.owner and not os_owned:
            continue
        for f in match_package(db, p, inv.os, inv.warnings, memo):
            key = (f.vuln_id, p.ecosystem, p.name, p.version)
            if key not in seen:
                seen.add(key)
                out.append(f)
    out.sort(key=lambda f: (-ORDER.get(f.severity, 0), f.package.name, f.vuln_id))
    return out


def filter_findings(
    findings: Iterable[Finding], severities: set[str] | None = None, ignore_unfixed: bool = False
) -> list[Finding]:
    return [f for f in findings if (not severities or f.severity in severities) and (not ignore_unfixed or f.fixed)]

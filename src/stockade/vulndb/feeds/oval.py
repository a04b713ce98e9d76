"""Debian OVAL definitions: "source package is earlier than VERSION" per CVE and release."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO
from xml.etree.ElementTree import iterparse

from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.severity import normalize, score_vector
from stockade.vulndb.store import Advisory, Affected

_NS = "{http://oval.mitre.org/XMLSchema/oval-definitions-5}"
_LINUX = "{http://oval.mitre.org/XMLSchema/oval-definitions-5#linux}"
_PLATFORM = re.compile(r"Debian GNU/Linux (\d+)")


def parse_debian(stream: IO[bytes], source: str, errors: list[str]) -> Iterator[Advisory]:
    """Stream a Debian OVAL file: definitions first, then tests, objects and states; joined at the end."""
    defs: list[tuple[str, str, str, list[str], str]] = []  # cve, namespace, package, test refs, description
    tests: dict[str, tuple[str, str]] = {}
    objects: dict[str, str] = {}
    states: dict[str, str] = {}
    for _, el in iterparse(stream, events=("end",)):
        tag = el.tag
        if tag == f"{_NS}definition":
            title = el.findtext(f"{_NS}metadata/{_NS}title") or ""
            platform = el.findtext(f"{_NS}metadata/{_NS}affected/{_NS}platform") or ""
            product = el.findtext(f"{_NS}metadata/{_NS}affected/{_NS}product") or ""
            m = _PLATFORM.search(platform)
            refs = [c.get("test_ref", "") for c in el.iter(f"{_NS}criterion")]
            cve = title.split()[0] if title else ""
            if not m or not product or not cve:
                errors.append(f"definition {el.get('id')}: no CVE, product or Debian platform")
            else:
                desc = el.findtext(f"{_NS}metadata/{_NS}description") or ""
                defs.append((cve, f"debian:{m.group(1)}", product, refs, desc))
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_test":
            obj = el.find(f"{_LINUX}object")
            ste = el.find(f"{_LINUX}state")
            if obj is not None and ste is not None:
                tests[el.get("id", "")] = (obj.get("object_ref", ""), ste.get("state_ref", ""))
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_object":
            objects[el.get("id", "")] = el.findtext(f"{_LINUX}name") or ""
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_state":
            evr = el.find(f"{_LINUX}evr")
            if evr is not None and evr.get("operation") == "less than":
                states[el.get("id", "")] = (evr.text or "").strip()
            el.clear()
    if not defs:
        raise FeedError("no Debian OVAL definitions found")
    for cve, ns, product, refs, desc in defs:
        ranges: list[tuple[str | None, str | None, str | None]] = []
        for ref in refs:
            if ref in tests:
                obj, ste = tests[ref]
                fixed = states.get(ste)
                if objects.get(obj) and fixed:
                    fixed = fixed.removeprefix("0:")
                    ranges.append(("0", fixed, None))
        if not ranges:
            errors.append(f"{cve} {product}: no version test")
            continue
        yield Advisory(id=cve, source=source, summary=desc[:2000], affected=[Affected("deb", ns, product, ranges[:1])])


_RED = "{http://oval.mitre.org/XMLSchema/oval-definitions-5#linux}"
_MAJOR = re.compile(r"(\d+)")


def parse_rpm(
    stream: IO[bytes], source: str, family: str, errors: list[str], default_release: str = ""
) -> Iterator[Advisory]:
    """Red Hat style OVAL (RHEL, Rocky, Alma, Oracle): one definition per erratum, "<rpm> is earlier than EVR"."""
    defs: list[tuple[Advisory, str, list[str]]] = []
    tests: dict[str, tuple[str, str]] = {}
    objects: dict[str, str] = {}
    states: dict[str, str] = {}
    for _, el in iterparse(stream, events=("end",)):
        tag = el.tag
        if tag == f"{_NS}definition":
            meta = el.find(f"{_NS}metadata")
            if meta is None:
                el.clear()
                continue
            refs = meta.findall(f"{_NS}reference")
            erratum = next(
                (r.get("ref_id", "") for r in refs if r.get("source") in ("RHSA", "ELSA", "RLSA", "ALSA")), ""
            )
            cves = [r.get("ref_id", "") for r in refs if r.get("source") == "CVE"]
            platform = meta.findtext(f"{_NS}affected/{_NS}platform") or ""
            adv_el = meta.find(f"{_NS}advisory")
            severity = (adv_el.findtext(f"{_NS}severity") if adv_el is not None else "") or ""
            vector = ""
            if adv_el is not None:
                for c in adv_el.findall(f"{_NS}cve"):
                    v = c.get("cvss3", "")
                    if "/" in v:
                        vector = v.split("/", 1)[1]
                        break
            m = _MAJOR.search(platform) or _MAJOR.search(default_release)
            vid = erratum or (cves[0] if cves else "")
            if not vid or not m:
                errors.append(f"definition {el.get('id')}: no erratum id or platform release")
            else:
                title = meta.findtext(f"{_NS}title") or ""
                adv = Advisory(
                    id=vid,
                    source=source,
                    aliases=[c for c in cves if c != vid],
                    summary=title[:2000],
                    severity=normalize(severity) if severity else "UNKNOWN",
                    cvss_vector=vector,
                    cvss_score=score_vector(vector) if vector else None,
                    references=[r.get("ref_url", "") for r in refs][:5],
                )
                defs.append(
                    (adv, f"{family}:{m.group(1)}", [c.get("test_ref", "") for c in el.iter(f"{_NS}criterion")])
                )
            el.clear()
        elif tag == f"{_RED}rpminfo_test":
            obj = el.find(f"{_RED}object")
            ste = el.find(f"{_RED}state")
            if obj is not None and ste is not None:
                tests[el.get("id", "")] = (obj.get("object_ref", ""), ste.get("state_ref", ""))
            el.clear()
        elif tag == f"{_RED}rpminfo_object":
            objects[el.get("id", "")] = el.findtext(f"{_RED}name") or ""
            el.clear()
        elif tag == f"{_RED}rpminfo_state":
            evr = el.find(f"{_RED}evr")
            if evr is not None and evr.get("operation") == "less than":
                states[el.get("id", "")] = (evr.text or "").strip()
            el.clear()
    if not defs:
        raise FeedError("no rpm OVAL definitions found")
    for adv, ns, refs in defs:
        seen: set[str] = set()
        for ref in refs:
            if ref not in tests:
                continue
            obj, ste = tests[ref]
            name, fixed = objects.get(obj), states.get(ste)
            if name and fixed and name not in seen:
                seen.add(name)
                adv.affected.append(Affected("rpm", ns, name, [("0", fixed, None)]))
        if adv.affected:
            yield adv


_UBUNTU_RELEASE = re.compile(r"Ubuntu (\d+\.\d+)")


def parse_ubuntu(stream: IO[bytes], source: str, errors: list[str]) -> Iterator[Advisory]:
    """Ubuntu USN OVAL: binary package names come from constant variables, one test per set of binaries."""
    defs: list[tuple[Advisory, str, list[str]]] = []
    tests: dict[str, tuple[str, str]] = {}
    objects: dict[str, str] = {}  # object id -> variable id
    variables: dict[str, list[str]] = {}
    states: dict[str, str] = {}
    release_title = ""  # "Check that Ubuntu 24.04 LTS (noble) is installed.": newer files have no <platform>
    for _, el in iterparse(stream, events=("end",)):
        tag = el.tag
        if tag == f"{_NS}definition":
            if el.get("class") == "inventory":
                release_title = el.findtext(f"{_NS}metadata/{_NS}title") or release_title
            if el.get("class") != "patch":
                el.clear()
                continue
            meta = el.find(f"{_NS}metadata")
            platform = meta.findtext(f"{_NS}affected/{_NS}platform") if meta is not None else ""
            m = _UBUNTU_RELEASE.search(platform or "") or _UBUNTU_RELEASE.search(release_title)
            refs = meta.findall(f"{_NS}reference") if meta is not None else []
            usn = next((r.get("ref_id", "") for r in refs if r.get("source") == "USN"), "")
            if meta is None or not m or not usn:
                errors.append(f"definition {el.get('id')}: no USN id or Ubuntu release")
                el.clear()
                continue
            adv_el = meta.find(f"{_NS}advisory")
            severity = (adv_el.findtext(f"{_NS}severity") if adv_el is not None else "") or ""
            adv = Advisory(
                id=usn if usn.startswith(("USN-", "LSN-")) else f"USN-{usn}",
                source=source,
                aliases=[r.get("ref_id", "") for r in refs if r.get("source") == "CVE"],
                summary=(meta.findtext(f"{_NS}title") or "")[:2000],
                severity=normalize(severity) if severity else "UNKNOWN",
                references=[r.get("ref_url", "") for r in refs if r.get("source") == "USN"],
            )
            defs.append((adv, f"ubuntu:{m.group(1)}", [c.get("test_ref", "") for c in el.iter(f"{_NS}criterion")]))
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_test":
            obj = el.find(f"{_LINUX}object")
            ste = el.find(f"{_LINUX}state")
            if obj is not None and ste is not None:
                tests[el.get("id", "")] = (obj.get("object_ref", ""), ste.get("state_ref", ""))
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_object":
            name = el.find(f"{_LINUX}name")
            if name is not None and name.get("var_ref"):
                objects[el.get("id", "")] = name.get("var_ref", "")
            el.clear()
        elif tag == f"{_NS}constant_variable":
            variables[el.get("id", "")] = [v.text or "" for v in el.findall(f"{_NS}value")]
            el.clear()
        elif tag == f"{_LINUX}dpkginfo_state":
            evr = el.find(f"{_LINUX}evr")
            if evr is not None and evr.get("operation") == "less than":
                states[el.get("id", "")] = (evr.text or "").strip()
            el.clear()
    if not defs:
        raise FeedError("no Ubuntu USN definitions found")
    for adv, ns, refs in defs:
        seen: set[str] = set()
        for ref in refs:
            if ref not in tests:
                continue
            obj, ste = tests[ref]
            fixed = states.get(ste)
            if not fixed:
                continue  # kernel tests compare a computed variable: not a package version
            for name in variables.get(objects.get(obj, ""), []):
                if name and name not in seen:
                    seen.add(name)
                    adv.affected.append(Affected("deb", ns, name, [("0", fixed.removeprefix("0:"), None)]))
        if adv.affected:
            yield adv

"""OVAL definitions: Debian (source packages), Ubuntu USN (binary packages in variables) and Red Hat style
(RHEL, Rocky, Alma, Oracle) errata. Each definition says "<package> is earlier than <EVR>" through a
test, an object (the package name, or a variable listing names) and a state (the EVR)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO, Any
from xml.etree.ElementTree import Element, iterparse

from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.severity import normalize, score_vector
from stockade.vulndb.store import Advisory, Affected

_NS = "{http://oval.mitre.org/XMLSchema/oval-definitions-5}"
_LINUX = "{http://oval.mitre.org/XMLSchema/oval-definitions-5#linux}"
_DEBIAN_PLATFORM = re.compile(r"Debian GNU/Linux (\d+)")
_UBUNTU_RELEASE = re.compile(r"Ubuntu (\d+\.\d+)")
_MAJOR = re.compile(r"(\d+)")


class _Tables:
    """The tests, objects, states and variables of an OVAL file, gathered while it streams by."""

    def __init__(self) -> None:
        self.tests: dict[str, tuple[str, str]] = {}
        self.objects: dict[str, tuple[str, str]] = {}  # id -> ("name", package) or ("var", variable id)
        self.states: dict[str, str] = {}
        self.variables: dict[str, list[str]] = {}

    def take(self, el: Element) -> None:
        tag = el.tag
        if tag in (f"{_LINUX}dpkginfo_test", f"{_LINUX}rpminfo_test"):
            obj, ste = el.find(f"{_LINUX}object"), el.find(f"{_LINUX}state")
            if obj is not None and ste is not None:
                self.tests[el.get("id", "")] = (obj.get("object_ref", ""), ste.get("state_ref", ""))
        elif tag in (f"{_LINUX}dpkginfo_object", f"{_LINUX}rpminfo_object"):
            name = el.find(f"{_LINUX}name")
            if name is not None and name.get("var_ref"):
                self.objects[el.get("id", "")] = ("var", name.get("var_ref", ""))
            elif name is not None and name.text:
                self.objects[el.get("id", "")] = ("name", name.text.strip())
        elif tag in (f"{_LINUX}dpkginfo_state", f"{_LINUX}rpminfo_state"):
            evr = el.find(f"{_LINUX}evr")
            if evr is not None and evr.get("operation") == "less than":
                self.states[el.get("id", "")] = (evr.text or "").strip()
        elif tag == f"{_NS}constant_variable":
            self.variables[el.get("id", "")] = [v.text or "" for v in el.findall(f"{_NS}value")]
        else:
            return
        el.clear()

    def packages(self, test_ref: str) -> list[tuple[str, str]]:
        """(package, fixed EVR) pairs a criterion's test names; none for tests that are not version checks."""
        if test_ref not in self.tests:
            return []
        obj, ste = self.tests[test_ref]
        fixed = self.states.get(ste)
        kind, value = self.objects.get(obj, ("", ""))
        if not fixed or not value:
            return []  # e.g. kernel tests comparing a computed variable
        names = self.variables.get(value, []) if kind == "var" else [value]
        return [(n, fixed) for n in names if n]


def _parse(
    stream: IO[bytes],
    definition: Callable[[Element], tuple[Advisory, str] | None],
    ecosystem: str,
    strip_epoch: bool,
) -> Iterator[Advisory]:
    """Stream a file: ``definition`` turns each <definition> into (advisory, namespace), then join."""
    tables = _Tables()
    defs: list[tuple[Advisory, str, list[str]]] = []
    for _, el in iterparse(stream, events=("end",)):
        if el.tag == f"{_NS}definition":
            got = definition(el)
            if got is not None:
                defs.append((*got, [c.get("test_ref", "") for c in el.iter(f"{_NS}criterion")]))
            el.clear()
        else:
            tables.take(el)
    if not defs:
        raise FeedError("no OVAL definitions found")
    for adv, ns, refs in defs:
        seen: set[str] = set()
        for ref in refs:
            for name, fixed in tables.packages(ref):
                if name not in seen:
                    seen.add(name)
                    evr = fixed.removeprefix("0:") if strip_epoch else fixed
                    adv.affected.append(Affected(ecosystem, ns, name, [("0", evr, None)]))
        if adv.affected:
            yield adv


def _meta(el: Element) -> Any:
    return el.find(f"{_NS}metadata")


def parse_debian(stream: IO[bytes], source: str, errors: list[str]) -> Iterator[Advisory]:
    """Debian OVAL: one definition per CVE and source package."""

    def definition(el: Element) -> tuple[Advisory, str] | None:
        meta = _meta(el)
        title = meta.findtext(f"{_NS}title") or "" if meta is not None else ""
        platform = meta.findtext(f"{_NS}affected/{_NS}platform") or "" if meta is not None else ""
        m = _DEBIAN_PLATFORM.search(platform)
        cve = title.split()[0] if title else ""
        if meta is None or not m or not cve:
            errors.append(f"definition {el.get('id')}: no CVE or Debian platform")
            return None
        desc = meta.findtext(f"{_NS}description") or ""
        return Advisory(id=cve, source=source, summary=desc[:2000]), f"debian:{m.group(1)}"

    for adv in _parse(stream, definition, "deb", strip_epoch=True):
        adv.affected = adv.affected[:1]  # a Debian definition is about one source package
        yield adv


def parse_ubuntu(stream: IO[bytes], source: str, errors: list[str]) -> Iterator[Advisory]:
    """Ubuntu USN OVAL: binary package names come from constant variables."""
    release_title = [""]  # "Check that Ubuntu 24.04 LTS (noble) is installed.": newer files have no <platform>

    def definition(el: Element) -> tuple[Advisory, str] | None:
        meta = _meta(el)
        if el.get("class") == "inventory" and meta is not None:
            release_title[0] = meta.findtext(f"{_NS}title") or release_title[0]
        if el.get("class") != "patch":
            return None
        platform = meta.findtext(f"{_NS}affected/{_NS}platform") if meta is not None else ""
        m = _UBUNTU_RELEASE.search(platform or "") or _UBUNTU_RELEASE.search(release_title[0])
        refs = meta.findall(f"{_NS}reference") if meta is not None else []
        usn = next((r.get("ref_id", "") for r in refs if r.get("source") == "USN"), "")
        if meta is None or not m or not usn:
            errors.append(f"definition {el.get('id')}: no USN id or Ubuntu release")
            return None
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
        return adv, f"ubuntu:{m.group(1)}"

    yield from _parse(stream, definition, "deb", strip_epoch=True)


def parse_rpm(
    stream: IO[bytes], source: str, family: str, errors: list[str], default_release: str = ""
) -> Iterator[Advisory]:
    """Red Hat style OVAL (RHEL, Rocky, Alma, Oracle): one definition per erratum."""

    def definition(el: Element) -> tuple[Advisory, str] | None:
        meta = _meta(el)
        if meta is None:
            return None
        refs = meta.findall(f"{_NS}reference")
        erratum = next((r.get("ref_id", "") for r in refs if r.get("source") in ("RHSA", "ELSA", "RLSA", "ALSA")), "")
        cves = [r.get("ref_id", "") for r in refs if r.get("source") == "CVE"]
        platform = meta.findtext(f"{_NS}affected/{_NS}platform") or ""
        adv_el = meta.find(f"{_NS}advisory")
        severity = (adv_el.findtext(f"{_NS}severity") if adv_el is not None else "") or ""
        vector = ""
        for c in adv_el.findall(f"{_NS}cve") if adv_el is not None else []:
            if "/" in c.get("cvss3", ""):
                vector = c.get("cvss3", "").split("/", 1)[1]
                break
        m = _MAJOR.search(platform) or _MAJOR.search(default_release)
        vid = erratum or (cves[0] if cves else "")
        if not vid or not m:
            errors.append(f"definition {el.get('id')}: no erratum id or platform release")
            return None
        adv = Advisory(
            id=vid,
            source=source,
            aliases=[c for c in cves if c != vid],
            summary=(meta.findtext(f"{_NS}title") or "")[:2000],
            severity=normalize(severity) if severity else "UNKNOWN",
            cvss_vector=vector,
            cvss_score=score_vector(vector) if vector else None,
            references=[r.get("ref_url", "") for r in refs][:5],
        )
        return adv, f"{family}:{m.group(1)}"

    yield from _parse(stream, definition, "rpm", strip_epoch=False)

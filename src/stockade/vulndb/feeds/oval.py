"""Debian OVAL definitions: "source package is earlier than VERSION" per CVE and release."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO
from xml.etree.ElementTree import iterparse

from stockade.vulndb.feeds.osv import FeedError
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

"""Alpine's secdb JSON (secfixes per origin package and release branch)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from stockade.vulndb.feeds.osv import FeedError
from stockade.vulndb.store import Advisory, Affected

_ID = re.compile(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9][\w.:-]*$")  # CVE-, GHSA-, TALOS-, XSA-, ...


def parse(doc: Any, source: str, errors: list[str]) -> Iterator[Advisory]:
    """One Advisory per CVE of the branch, listing every package the branch fixed it in."""
    if not isinstance(doc, dict) or "packages" not in doc:
        raise FeedError("not an Alpine secdb document")
    release = str(doc.get("distroversion", "")).removeprefix("v")
    if not release:
        raise FeedError("secdb document without distroversion")
    ns = f"alpine:{release}"
    if not isinstance(doc["packages"], list):
        raise FeedError("secdb packages is not a list")
    by_cve: dict[str, list[Affected]] = defaultdict(list)
    for i, entry in enumerate(doc["packages"]):
        pkg = entry.get("pkg") if isinstance(entry, dict) else None
        name = pkg.get("name") if isinstance(pkg, dict) else None
        secfixes = pkg.get("secfixes") if isinstance(pkg, dict) else None
        if not isinstance(name, str) or not name or not isinstance(secfixes, dict | None):
            errors.append(f"package {i}: not a package with a name and secfixes")  # the others are kept
            continue
        for fixed, ids in (secfixes or {}).items():
            fixed = str(fixed)
            if fixed in ("0", "0-r0"):
                continue  # "0": the package was never affected in this branch
            if not isinstance(ids, list | None):
                errors.append(f"{name} {fixed}: the fixed ids are not a list")
                continue
            for raw in ids or []:
                for vid in str(raw).split():  # "CVE-2019-1 CVE-2019-2" on one line happens
                    if not _ID.match(vid):
                        errors.append(f"{name} {fixed}: not a vulnerability id: {vid!r}")
                        continue
                    by_cve[vid].append(Affected("apk", ns, str(name), [("0", fixed, None)]))
    for vid, affected in by_cve.items():
        yield Advisory(id=vid, source=source, affected=affected)

"""Licence names as SPDX identifiers: Debian's short names (GPL-2+, Expat, GFDL-NIV-1.3...) and the common aliases.

A small table by hand: the license-expression package knows SPDX keys but not Debian's DEP-5 short
names, which is what copyright files use.
"""

from __future__ import annotations

import re

_GNU = re.compile(r"^(AGPL|LGPL|GPL|GFDL)[-_ ]?v?(\d(?:\.\d)?)(\+|[-_ ]or[-_ ]later|[-_ ]only)?$", re.IGNORECASE)
_GFDL_NIV = re.compile(r"^GFDL[-_]NIV[-_](\d\.\d)(\+)?$", re.IGNORECASE)
_BSD = re.compile(r"^BSD[-_ ](\d)[-_ ]clause(-UC)?$", re.IGNORECASE)
_WITH = re.compile(r"^(.*?)\s+with\s+(.+?)(?:\s+exception)?$", re.IGNORECASE)
_ALIASES = {
    "expat": "MIT",
    "mit-like": "MIT",
    "mit/x11": "MIT",
    "mit": "MIT",
    "apache-2": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "isc": "ISC",
    "zlib": "Zlib",
    "psf-2": "PSF-2.0",
    "mpl-2.0": "MPL-2.0",
    "artistic-2.0": "Artistic-2.0",
    "cc0-1.0": "CC0-1.0",
    "curl": "curl",
    "openssl": "OpenSSL",
}


def normalize(name: str) -> str:
    """One licence name as an SPDX identifier where one is known; otherwise unchanged."""
    name = name.strip().rstrip(",.;")
    m = _WITH.match(name)
    if m:
        exception = re.sub(r"\s+", "-", m.group(2).strip())
        if not exception.lower().endswith("exception"):
            exception += "-exception"
        return f"{normalize(m.group(1))} WITH {exception}"
    m = _GNU.match(name)
    if m:
        family, version, suffix = m.group(1).upper(), m.group(2), (m.group(3) or "").lower()
        if "." not in version:
            version += ".0"
        later = suffix == "+" or "later" in suffix
        return f"{family}-{version}-{'or-later' if later else 'only'}"
    m = _GFDL_NIV.match(name)
    if m:
        return f"GFDL-{m.group(1)}-no-invariants-{'or-later' if m.group(2) else 'only'}"
    m = _BSD.match(name)
    if m:
        return f"BSD-{m.group(1)}-Clause{m.group(2) or ''}"
    return _ALIASES.get(name.lower(), name)


def split_expression(expr: str) -> list[str]:
    """The licence names of a DEP-5 'License:' value ('GPL-2+ or Artistic', 'BSD-4-clause-UC and MIT-like')."""
    expr = expr.strip()
    parts = [p.strip() for p in re.split(r"\s+(?:and|or)\s+", expr, flags=re.IGNORECASE) if p.strip()]
    if any(" " in p and not _WITH.match(p) for p in parts):
        return [expr]  # free text, not an expression: kept whole
    return [normalize(p) for p in parts]

"""Package URLs (purl spec) for every ecosystem, with the distro qualifiers OS packages need."""

from __future__ import annotations

import re

from packageurl import PackageURL

from stockade.model import OSInfo, Package

_PEP503 = re.compile(r"[-_.]+")
_OS_TYPES = {"deb": "deb", "apk": "apk", "rpm": "rpm"}


def purl_for(p: Package, os_info: OSInfo | None) -> str:
    eco = p.ecosystem
    ns: str | None = None
    name = p.name
    version = p.version or None
    quals: dict[str, str] = {}
    if eco in _OS_TYPES:
        ns = os_info.family if os_info else None
        if p.arch:
            quals["arch"] = p.arch
        if os_info:
            quals["distro"] = f"{os_info.family}-{os_info.name}" if eco != "apk" else os_info.name
        if p.epoch and version and ":" in version:
            version = version.split(":", 1)[1]
            quals["epoch"] = str(p.epoch)
        return PackageURL(_OS_TYPES[eco], ns, name, version, quals or None).to_string()
    if eco == "pypi":
        return PackageURL("pypi", None, _PEP503.sub("-", name).lower(), version).to_string()
    if eco == "npm":
        if name.startswith("@") and "/" in name:
            ns, name = name.split("/", 1)
        return PackageURL("npm", ns, name, version).to_string()
    if eco == "maven":
        if ":" not in name:  # the purl spec requires the groupId: no purl rather than one that claims none
            return ""
        ns, name = name.split(":", 1)
        return PackageURL("maven", ns, name, version).to_string()
    if eco in ("golang", "composer"):
        if "/" in name:
            ns, name = name.rsplit("/", 1)
        return PackageURL(eco, ns, name, version).to_string()
    if eco == "gem":
        return PackageURL("gem", None, name, version).to_string()
    return PackageURL(eco, None, name, version).to_string()


def assign_purls(packages: list[Package], os_info: OSInfo | None) -> None:
    for p in packages:
        p.purl = purl_for(p, os_info)

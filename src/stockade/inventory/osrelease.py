"""OS detection from os-release and the older release files."""

from __future__ import annotations

import re
import shlex

from stockade.inventory.base import Cataloger, ParseResult, text
from stockade.model import OSInfo

OS_FILES = (
    "etc/os-release",
    "usr/lib/os-release",
    "etc/alpine-release",
    "etc/debian_version",
    "etc/redhat-release",
    "etc/system-release",
    "etc/centos-release",
    "etc/oracle-release",
    "etc/lsb-release",
    "etc/SuSE-release",
    "etc/photon-release",
)

_FAMILY = {
    "rhel": "redhat",
    "redhat": "redhat",
    "centos": "centos",
    "rocky": "rocky",
    "almalinux": "alma",
    "ol": "oracle",
    "amzn": "amazon",
    "mariner": "cbl-mariner",
    "azurelinux": "azurelinux",
    "sles": "suse linux enterprise server",
    "sle_hpc": "suse linux enterprise server",
    "opensuse-leap": "opensuse.leap",
    "opensuse-tumbleweed": "opensuse.tumbleweed",
    "wolfi": "wolfi",
    "chainguard": "chainguard",
}


class OSReleaseCataloger(Cataloger):
    name = "os-release"
    paths = frozenset(OS_FILES)

    def parse(self, path: str, data: bytes) -> ParseResult:
        return ParseResult(text=text(data[:65536]))


def parse_os_release(content: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in content.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        out[key.strip()] = parts[0] if parts else ""
    return out


def detect_os(files: dict[str, str], distroless: bool = False) -> OSInfo | None:
    """Decide the OS from the merged release files of an image."""
    osr = files.get("etc/os-release") or files.get("usr/lib/os-release")
    if osr:
        kv = parse_os_release(osr)
        os_id = kv.get("ID", "").lower()
        like = tuple(kv.get("ID_LIKE", "").lower().split())
        version = kv.get("VERSION_ID", "")
        pretty = kv.get("PRETTY_NAME", "")
        if os_id == "alpine" and files.get("etc/alpine-release"):
            version = files["etc/alpine-release"].strip() or version
        if os_id == "debian":
            dv = files.get("etc/debian_version", "").strip()
            if dv and dv[0].isdigit():
                version = dv  # os-release says "12", debian_version says "12.5"
        if os_id:
            return OSInfo(_FAMILY.get(os_id, os_id), version, pretty, like, distroless)
    if files.get("etc/alpine-release"):
        return OSInfo("alpine", files["etc/alpine-release"].strip(), distroless=distroless)
    for name in ("etc/oracle-release", "etc/centos-release", "etc/redhat-release", "etc/system-release"):
        rel = files.get(name)
        if not rel:
            continue
        m = re.search(r"^(.*?) release (\d[\w.]*)", rel.strip())
        if m:
            product = m.group(1).lower()
            fam = (
                "centos"
                if "centos" in product
                else "rocky"
                if "rocky" in product
                else "alma"
                if "alma" in product
                else "amazon"
                if "amazon" in product
                else "oracle"
                if "oracle" in product
                else "fedora"
                if "fedora" in product
                else "redhat"
            )
            return OSInfo(fam, m.group(2), rel.strip(), distroless=distroless)
    if files.get("etc/debian_version"):
        return OSInfo("debian", files["etc/debian_version"].strip(), distroless=distroless)
    if files.get("etc/lsb-release"):
        kv = parse_os_release(files["etc/lsb-release"])
        if kv.get("DISTRIB_ID"):
            return OSInfo(kv["DISTRIB_ID"].lower(), kv.get("DISTRIB_RELEASE", ""), kv.get("DISTRIB_DESCRIPTION", ""))
    return None

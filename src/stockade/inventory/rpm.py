"""RPM packages (RHEL family, Amazon Linux, CBL-Mariner, SUSE) from any of the three database formats."""

from __future__ import annotations

import re

from stockade.inventory.base import Cataloger, ParseResult
from stockade.inventory.rpmdb import read_headers
from stockade.model import Package

_SRPM = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)-(?P<release>[^-]+)\.(?:no)?src\.rpm$")

RPM_DB_PATHS = frozenset(
    {
        "var/lib/rpm/Packages",
        "var/lib/rpm/Packages.db",
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/Packages",
        "usr/lib/sysimage/rpm/Packages.db",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    }
)


def split_srpm(srpm: str) -> tuple[str, str]:
    """('openssl', '3.0.7-1.el9') from 'openssl-3.0.7-1.el9.src.rpm'."""
    m = _SRPM.match(srpm)
    if not m:
        return "", ""
    return m.group("name"), f"{m.group('version')}-{m.group('release')}"


class RpmCataloger(Cataloger):
    name = "rpm"
    ecosystem = "rpm"
    paths = RPM_DB_PATHS

    def parse(self, path: str, data: bytes) -> ParseResult:
        pkgs = []
        for h in read_headers(data, path):
            if not h.name or h.name == "gpg-pubkey":  # imported signing keys, not software
                continue
            src_name, src_version = split_srpm(h.sourcerpm)
            evr = f"{h.version}-{h.release}" if h.release else h.version
            if h.epoch:
                evr = f"{h.epoch}:{evr}"
            pkgs.append(
                Package(
                    name=h.name,
                    version=evr,
                    ecosystem="rpm",
                    source_name=src_name or h.name,
                    source_version=src_version,
                    epoch=h.epoch,
                    release=h.release,
                    arch=h.arch,
                    licenses=[h.license] if h.license else [],
                    location=path,
                )
            )
        return ParseResult(pkgs)

"""Debian packages from dpkg's status file and distroless status.d entries."""

from __future__ import annotations

import re

from stockade.inventory.base import Cataloger, ParseError, ParseResult, base, text
from stockade.inventory.licenses import normalize, split_expression
from stockade.model import Package

_LICENSE_LINE = re.compile(r"^License:[ \t]*(\S.*)$", re.MULTILINE)
_COMMON = re.compile(r"/usr/share/common-licenses/([A-Za-z0-9][A-Za-z0-9.+-]*[A-Za-z0-9+])")
COPYRIGHT_CATALOGER = "dpkg-copyright"
FILES_CATALOGER = "dpkg-files"

_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


def paragraphs(content: str) -> list[dict[str, str]]:
    """Split an RFC 822 style control file into field dictionaries (continuation lines kept)."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = ""
    for line in content.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
                cur, last = {}, ""
            continue
        if line[0] in " \t":
            if last:
                cur[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip()
        cur[last] = value.strip()
    if cur:
        out.append(cur)
    return out


class DpkgCataloger(Cataloger):
    name = "dpkg"
    ecosystem = "deb"
    paths = frozenset({"var/lib/dpkg/status"})
    prefixes = ("var/lib/dpkg/status.d/",)  # distroless: one file per package

    def wants(self, path: str) -> bool:
        if path == "var/lib/dpkg/status":
            return True
        return path.startswith("var/lib/dpkg/status.d/") and not base(path).endswith(".md5sums")

    def parse(self, path: str, data: bytes) -> ParseResult:
        if b"\x00" in data[:4096]:
            raise ParseError(f"{path}: binary data, not a dpkg status file")
        pkgs: list[Package] = []
        distroless = path != "var/lib/dpkg/status"
        for para in paragraphs(text(data)):
            name, version = para.get("Package"), para.get("Version")
            if not name or not version:
                continue
            status = para.get("Status", "")
            if not distroless and status and not status.endswith(" installed"):
                continue  # removed, config-files, half-installed
            src_name, src_version = name, version
            if para.get("Source"):
                m = _SOURCE.match(para["Source"].strip())
                if m:
                    src_name = m.group(1)
                    src_version = m.group(2) or version
            epoch = int(version.split(":", 1)[0]) if ":" in version and version.split(":", 1)[0].isdigit() else None
            pkgs.append(
                Package(
                    name=name,
                    version=version,
                    ecosystem="deb",
                    source_name=src_name,
                    source_version=src_version,
                    epoch=epoch,
                    arch=para.get("Architecture", ""),
                    location=path,
                )
            )
        return ParseResult(pkgs)


class DpkgFilesCataloger(Cataloger):
    """The files each Debian package installed (/var/lib/dpkg/info/PACKAGE[:ARCH].list), kept as text: after the
    layers are merged they tell which OS package owns a language package's files."""

    name = FILES_CATALOGER
    prefixes = ("var/lib/dpkg/info/",)

    def wants(self, path: str) -> bool:
        return path.endswith(".list") and path.count("/") == 4

    def parse(self, path: str, data: bytes) -> ParseResult:
        return ParseResult(text=text(data[: 16 * 1024**2]))


def package_of_list(path: str) -> str:
    """'var/lib/dpkg/info/libssl3:amd64.list' -> 'libssl3'."""
    return path.rsplit("/", 1)[1].removesuffix(".list").split(":", 1)[0]


class DpkgCopyrightCataloger(Cataloger):
    """Licences of Debian packages from /usr/share/doc/PACKAGE/copyright (DEP-5 fields and common-licenses).

    The result is joined to the package of the same name after the layers are merged.
    """

    name = COPYRIGHT_CATALOGER
    prefixes = ("usr/share/doc/",)

    def wants(self, path: str) -> bool:
        return path.endswith("/copyright") and path.count("/") == 4

    def parse(self, path: str, data: bytes) -> ParseResult:
        content = text(data[: 4 * 1024**2])
        found: list[str] = []
        for m in _LICENSE_LINE.finditer(content):
            found += split_expression(m.group(1))
        for m in _COMMON.finditer(content):
            found.append(normalize(m.group(1)))
        unique = list(dict.fromkeys(x for x in found if x))
        return ParseResult(text="\n".join(unique)) if unique else ParseResult()


def package_of_copyright(path: str) -> str:
    """'usr/share/doc/bash/copyright' -> 'bash'."""
    return path.split("/")[3]

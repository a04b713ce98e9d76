"""Ruby gems from installed gemspecs and Gemfile.lock."""

from __future__ import annotations

import re

from stockade.inventory.base import Cataloger, ParseError, ParseResult, base, text
from stockade.model import Package

_NAME = re.compile(r"""\.name\s*=\s*["']([^"']+)["']""")
_VERSION = re.compile(r"""\.version\s*=\s*["']([^"']+)["']""")
_LICENSES = re.compile(r"""\.licenses?\s*=\s*\[?([^\]\n]+)""")
_LOCK_SPEC = re.compile(
    r"^    ([^\s(]+) \(([^)\s-]+)(?:-[A-Za-z0-9_.-]+)?\)$"
)  # "(1.13.0-x86_64-linux)": platform dropped


class GemspecCataloger(Cataloger):
    name = "gemspec"
    ecosystem = "gem"
    suffixes = (".gemspec",)

    def wants(self, path: str) -> bool:
        return "/specifications/" in f"/{path}"

    def parse(self, path: str, data: bytes) -> ParseResult:
        src = text(data)
        n, v = _NAME.search(src), _VERSION.search(src)
        if not n or not v:
            raise ParseError(f"{path}: no name/version in gemspec")
        lic: list[str] = []
        m = _LICENSES.search(src)
        if m:
            lic = re.findall(r"""["']([^"']+)["']""", m.group(1))
        return ParseResult([Package(name=n.group(1), version=v.group(1), ecosystem="gem", location=path, licenses=lic)])


class GemfileLockCataloger(Cataloger):
    name = "gemfile-lock"
    ecosystem = "gem"
    basenames = frozenset({"Gemfile.lock", "gems.locked"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        pkgs: list[Package] = []
        in_specs = False
        section = ""
        for line in text(data).splitlines():
            if line and not line.startswith(" "):
                in_specs = False
                section = line.strip()
                continue
            if line.strip() == "specs:":
                in_specs = section in ("GEM", "GIT", "PATH")
                continue
            if in_specs:
                m = _LOCK_SPEC.match(line)
                if m:
                    pkgs.append(Package(name=m.group(1), version=m.group(2), ecosystem="gem", location=path))
        if not pkgs and base(path) == "Gemfile.lock" and b"specs:" not in data:
            raise ParseError(f"{path}: no specs section")
        return ParseResult(pkgs)

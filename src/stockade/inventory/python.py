"""Python packages: installed distributions (dist-info, egg-info) and lock files."""

from __future__ import annotations

import re
import tomllib
from email.parser import HeaderParser

import orjson

from stockade.inventory.base import Cataloger, ParseError, ParseResult, base, text
from stockade.model import Package

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([A-Za-z0-9.+!_-]+)")


def _pkg(name: str, version: str, path: str, licenses: list[str] | None = None, dev: bool = False) -> Package:
    return Package(name=name, version=version, ecosystem="pypi", location=path, licenses=licenses or [], dev=dev)


class PythonInstalledCataloger(Cataloger):
    """METADATA of wheels (dist-info) and PKG-INFO of eggs (egg-info directory or file)."""

    name = "python-installed"
    ecosystem = "pypi"
    basenames = frozenset({"METADATA", "PKG-INFO"})
    suffixes = (".egg-info",)

    def wants(self, path: str) -> bool:
        b = base(path)
        parent = path.rsplit("/", 2)[-2] if "/" in path else ""
        if b == "METADATA":
            return parent.endswith(".dist-info")
        if b == "PKG-INFO":
            return parent.endswith(".egg-info")
        return b.endswith(".egg-info")

    def parse(self, path: str, data: bytes) -> ParseResult:
        head = text(data).split("\n\n", 1)[0]  # the body is the long description
        msg = HeaderParser().parsestr(head)
        name, version = msg.get("Name"), msg.get("Version")
        if not name or not version:
            raise ParseError(f"{path}: no Name/Version in package metadata")
        lic: list[str] = []
        if msg.get("License-Expression"):
            lic = [str(msg["License-Expression"]).strip()]
        elif msg.get("License") and len(str(msg["License"])) < 100 and str(msg["License"]).strip() != "UNKNOWN":
            lic = [str(msg["License"]).strip()]
        else:
            lic = [c.split("::")[-1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")]
        return ParseResult([_pkg(str(name).strip(), str(version).strip(), path, lic)])


class PythonLockCataloger(Cataloger):
    """requirements.txt (pinned lines), poetry.lock, Pipfile.lock and uv.lock."""

    name = "python-lock"
    ecosystem = "pypi"
    basenames = frozenset({"requirements.txt", "poetry.lock", "Pipfile.lock", "uv.lock"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        b = base(path)
        pkgs: list[Package] = []
        if b == "requirements.txt":
            for line in text(data).splitlines():
                m = _REQ.match(line.split("#", 1)[0])
                if m:
                    pkgs.append(_pkg(m.group(1), m.group(2), path))
        elif b == "Pipfile.lock":
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"{path}: malformed JSON ({exc})") from None
            for section, dev in (("default", False), ("develop", True)):
                for name, info in (doc.get(section) or {}).items():
                    ver = str((info or {}).get("version", "")).lstrip("=")
                    if ver:
                        pkgs.append(_pkg(name, ver, path, dev=dev))
        else:
            try:
                doc = tomllib.loads(text(data))
            except tomllib.TOMLDecodeError as exc:
                raise ParseError(f"{path}: malformed TOML ({exc})") from None
            for p in doc.get("package") or []:
                if not isinstance(p, dict) or not p.get("name") or not p.get("version"):
                    continue
                src = p.get("source") or {}
                if isinstance(src, dict) and (src.get("editable") or src.get("virtual")):
                    continue  # the project itself
                dev = p.get("category") == "dev"
                pkgs.append(_pkg(str(p["name"]), str(p["version"]), path, dev=dev))
        return ParseResult(pkgs)

"""Node.js packages: package.json of installed modules, package-lock (v1-v3), yarn.lock, pnpm-lock."""

from __future__ import annotations

import re
from typing import Any

import orjson

from stockade.inventory.base import Cataloger, ParseError, ParseResult, base, text
from stockade.model import Package


def _pkg(name: str, version: str, path: str, licenses: list[str] | None = None, dev: bool = False) -> Package:
    return Package(name=name, version=version, ecosystem="npm", location=path, licenses=licenses or [], dev=dev)


def _json(path: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"{path}: malformed JSON ({exc})") from None


def _license(doc: dict[str, Any]) -> list[str]:
    lic = doc.get("license")
    if isinstance(lic, str):
        return [lic]
    if isinstance(lic, dict) and lic.get("type"):
        return [str(lic["type"])]
    lics = doc.get("licenses")
    if isinstance(lics, list):
        return [str(x.get("type") if isinstance(x, dict) else x) for x in lics if x]
    return []


class NodePackageCataloger(Cataloger):
    """package.json files: an installed module (or the application) with name and version."""

    name = "node-package"
    ecosystem = "npm"
    basenames = frozenset({"package.json"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        doc = _json(path, data)
        if not isinstance(doc, dict):
            raise ParseError(f"{path}: package.json is not an object")
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            return ParseResult()
        return ParseResult([_pkg(name, version, path, _license(doc))])


_YARN_HEAD = re.compile(r'^"?((?:@[^/@"]+/)?[^@",\s]+)@')
_PNPM_KEY = re.compile(r"^/?((?:@[^/]+/)?[^/@]+)[/@]([^/(@]+)")


class NodeLockCataloger(Cataloger):
    name = "node-lock"
    ecosystem = "npm"
    basenames = frozenset({"package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml"})

    def wants(self, path: str) -> bool:
        return "node_modules/" not in path  # nested lock files of installed modules are not resolved trees

    def parse(self, path: str, data: bytes) -> ParseResult:
        b = base(path)
        if b == "yarn.lock":
            return ParseResult(self._yarn(path, text(data)))
        if b == "pnpm-lock.yaml":
            return ParseResult(self._pnpm(path, data))
        doc = _json(path, data)
        pkgs: list[Package] = []
        if isinstance(doc.get("packages"), dict):  # lockfileVersion 2 and 3
            for key, info in doc["packages"].items():
                if not key or not isinstance(info, dict) or info.get("link"):
                    continue
                name = info.get("name") or key.rsplit("node_modules/", 1)[-1]
                if info.get("version"):
                    pkgs.append(_pkg(name, str(info["version"]), path, _license(info), bool(info.get("dev"))))
        else:  # lockfileVersion 1: nested "dependencies"
            stack = [doc.get("dependencies") or {}]
            while stack:
                deps = stack.pop()
                for name, info in deps.items():
                    if isinstance(info, dict) and info.get("version"):
                        ver = str(info["version"])
                        if not ver.startswith(("file:", "git", "http")):
                            pkgs.append(_pkg(name, ver, path, dev=bool(info.get("dev"))))
                        stack.append(info.get("dependencies") or {})
        return ParseResult(pkgs)

    def _yarn(self, path: str, content: str) -> list[Package]:
        pkgs: list[Package] = []
        name: str | None = None
        for line in content.splitlines():
            if not line or line.startswith("#"):
                continue
            if not line[0].isspace():
                m = _YARN_HEAD.match(line)
                name = m.group(1) if m else None
                if line.startswith('"__metadata"') or line.startswith("__metadata"):
                    name = None
                continue
            stripped = line.strip()
            if name and (stripped.startswith("version ") or stripped.startswith("version:")):
                ver = stripped.split(None, 1)[1].strip().strip('"')
                pkgs.append(_pkg(name, ver, path))
                name = None
        return pkgs

    def _pnpm(self, path: str, data: bytes) -> list[Package]:
        import yaml

        try:
            doc = yaml.load(data, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise ParseError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
        pkgs: list[Package] = []
        for key, info in ((doc or {}).get("packages") or {}).items():
            info = info or {}
            if info.get("name") and info.get("version"):
                pkgs.append(_pkg(str(info["name"]), str(info["version"]), path, dev=bool(info.get("dev"))))
                continue
            m = _PNPM_KEY.match(str(key))
            if m:
                pkgs.append(_pkg(m.group(1), m.group(2), path, dev=bool(info.get("dev"))))
        return pkgs

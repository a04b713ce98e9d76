""".NET packages from *.deps.json and NuGet packages.lock.json."""

from __future__ import annotations

import orjson

from stockade.inventory.base import Cataloger, ParseError, ParseResult, base
from stockade.model import Package


class DotnetCataloger(Cataloger):
    name = "dotnet"
    ecosystem = "nuget"
    basenames = frozenset({"packages.lock.json"})
    suffixes = (".deps.json",)

    def parse(self, path: str, data: bytes) -> ParseResult:
        try:
            doc = orjson.loads(data.lstrip(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"{path}: malformed JSON ({exc})") from None
        pkgs: list[Package] = []
        seen: set[tuple[str, str]] = set()
        if base(path) == "packages.lock.json":
            for deps in (doc.get("dependencies") or {}).values():
                for name, info in (deps or {}).items():
                    ver = (info or {}).get("resolved")
                    if ver and info.get("type") != "Project" and (name, ver) not in seen:
                        seen.add((name, ver))
                        pkgs.append(Package(name=name, version=str(ver), ecosystem="nuget", location=path))
        else:
            for key, info in (doc.get("libraries") or {}).items():
                if (info or {}).get("type") not in ("package", "project") or "/" not in key:
                    continue
                name, ver = key.split("/", 1)
                pkgs.append(Package(name=name, version=ver, ecosystem="nuget", location=path))
        return ParseResult(pkgs)

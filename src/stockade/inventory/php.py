"""PHP packages from composer.lock and vendor/composer/installed.json."""

from __future__ import annotations

import orjson

from stockade.inventory.base import Cataloger, ParseError, ParseResult
from stockade.model import Package


class ComposerCataloger(Cataloger):
    name = "composer"
    ecosystem = "composer"
    basenames = frozenset({"composer.lock", "installed.json"})

    def wants(self, path: str) -> bool:
        return path.endswith("composer.lock") or path.endswith("composer/installed.json")

    def parse(self, path: str, data: bytes) -> ParseResult:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"{path}: malformed JSON ({exc})") from None
        sections: list[tuple[list[object], bool]] = []
        if isinstance(doc, list):  # installed.json of composer 1
            sections.append((doc, False))
        elif isinstance(doc, dict):
            sections.append((doc.get("packages") or [], False))
            sections.append((doc.get("packages-dev") or [], True))
        pkgs: list[Package] = []
        for items, dev in sections:
            for p in items:
                if not isinstance(p, dict) or not p.get("name") or not p.get("version"):
                    continue
                lic = p.get("license") or []
                pkgs.append(
                    Package(
                        name=str(p["name"]),
                        version=str(p["version"]),
                        ecosystem="composer",
                        location=path,
                        licenses=[str(x) for x in lic] if isinstance(lic, list) else [str(lic)],
                        dev=dev or bool(p.get("dev-requirement")),
                    )
                )
        return ParseResult(pkgs)

"""Alpine (and Wolfi) packages from apk's installed database."""

from __future__ import annotations

from stockade.inventory.base import Cataloger, ParseError, ParseResult, text
from stockade.model import Package


class ApkCataloger(Cataloger):
    name = "apk"
    ecosystem = "apk"
    paths = frozenset({"lib/apk/db/installed"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        if b"\x00" in data[:4096]:
            raise ParseError(f"{path}: binary data, not an apk database")
        pkgs: list[Package] = []
        cur: dict[str, str] = {}

        def flush() -> None:
            if cur.get("P") and cur.get("V"):
                lic = cur.get("L", "")
                pkgs.append(
                    Package(
                        name=cur["P"],
                        version=cur["V"],
                        ecosystem="apk",
                        source_name=cur.get("o", cur["P"]),
                        source_version=cur["V"],
                        arch=cur.get("A", ""),
                        licenses=[lic] if lic else [],
                        location=path,
                    )
                )

        for line in text(data).splitlines():
            if not line.strip():
                flush()
                cur = {}
                continue
            if len(line) >= 2 and line[1] == ":" and line[0] in "PVAoL":
                cur[line[0]] = line[2:].strip()
        flush()
        return ParseResult(pkgs)

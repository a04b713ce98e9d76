"""Rust crates from Cargo.lock and from cargo-auditable data embedded in binaries."""

from __future__ import annotations

import tomllib
import zlib

import orjson

from stockade.inventory.base import Cataloger, ParseError, ParseResult, text
from stockade.inventory.elf import section
from stockade.model import Package


class CargoLockCataloger(Cataloger):
    name = "cargo-lock"
    ecosystem = "cargo"
    basenames = frozenset({"Cargo.lock"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        try:
            doc = tomllib.loads(text(data))
        except tomllib.TOMLDecodeError as exc:
            raise ParseError(f"{path}: malformed TOML ({exc})") from None
        pkgs = [
            Package(name=str(p["name"]), version=str(p["version"]), ecosystem="cargo", location=path)
            for p in doc.get("package") or []
            if isinstance(p, dict) and p.get("name") and p.get("version")
        ]
        return ParseResult(pkgs)


class RustBinaryCataloger(Cataloger):
    """The ``.dep-v0`` section that cargo-auditable writes: zlib-compressed JSON of the dependency tree."""

    name = "rust-binary"
    ecosystem = "cargo"
    executables = True
    magic = (b"\x7fELF",)

    def parse(self, path: str, data: bytes) -> ParseResult:
        if b".dep-v0" not in data:
            return ParseResult()
        raw = section(data, ".dep-v0", path)
        if raw is None:
            return ParseResult()
        try:
            dz = zlib.decompressobj()
            doc = orjson.loads(dz.decompress(raw, 64 * 1024**2))
        except (zlib.error, orjson.JSONDecodeError) as exc:
            raise ParseError(f"{path}: corrupt cargo-auditable data ({exc})") from None
        pkgs = [
            Package(name=str(p["name"]), version=str(p["version"]), ecosystem="cargo", location=path)
            for p in doc.get("packages") or []
            if p.get("name") and p.get("version")  # "local" crates too: they are in the binary
        ]
        return ParseResult(pkgs)

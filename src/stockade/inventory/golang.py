"""Go modules from the build info embedded in Go binaries, and from go.mod."""

from __future__ import annotations

import re
import shlex
from typing import Literal

from stockade.inventory.base import Cataloger, ParseError, ParseResult, text
from stockade.inventory.elf import vaddr_reader
from stockade.model import Package

BUILDINFO_MAGIC = b"\xff Go buildinf:"
_LDFLAG_VERSION = re.compile(r"(?:^|\.|/)(?:version|ver)$", re.IGNORECASE)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ParseError("bad varint in Go build info")


def read_buildinfo(data: bytes, where: str) -> tuple[str, str] | None:
    """(go version, module info) from a Go binary, or None when it has no build info."""
    off = data.find(BUILDINFO_MAGIC)
    while off >= 0 and off % 16:
        off = data.find(BUILDINFO_MAGIC, off + 1)
    if off < 0 or off + 32 > len(data):
        return None
    ptr_size, flags = data[off + 14], data[off + 15]
    if flags & 2:  # Go 1.18+: the two strings follow the header, length-prefixed
        pos = off + 32
        out = []
        for _ in range(2):
            n, pos = _varint(data, pos)
            if pos + n > len(data):
                raise ParseError(f"{where}: truncated Go build info")
            out.append(data[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        vers, mod = out
    else:  # older: pointers to Go string headers in the data segment
        if ptr_size not in (4, 8):
            raise ParseError(f"{where}: bad pointer size {ptr_size} in Go build info")
        order: Literal["big", "little"] = "big" if flags & 1 else "little"
        mem = vaddr_reader(data, where)

        def gostring(ptr_addr: int) -> str:
            hdr = mem.read(ptr_addr, 2 * ptr_size)
            sptr = int.from_bytes(hdr[:ptr_size], order)
            slen = int.from_bytes(hdr[ptr_size:], order)
            if slen > 1 << 24:
                raise ParseError(f"{where}: implausible Go string length")
            return mem.read(sptr, slen).decode("utf-8", errors="replace") if slen else ""

        p1 = int.from_bytes(data[off + 16 : off + 16 + ptr_size], order)
        p2 = int.from_bytes(data[off + 16 + ptr_size : off + 16 + 2 * ptr_size], order)
        vers, mod = gostring(p1), gostring(p2)
    if len(mod) >= 33 and mod[-17] == "\n":
        mod = mod[16:-16]  # sentinel bytes around the module info
    return vers, mod


def _ldflags_version(ldflags: str) -> str:
    """The main module version set with -ldflags "-X main.version=v1.2.3" and the like."""
    try:
        args = shlex.split(ldflags)
    except ValueError:
        args = ldflags.split()
    for i, a in enumerate(args):
        kv = None
        if a == "-X" and i + 1 < len(args):
            kv = args[i + 1]
        elif a.startswith("-X="):
            kv = a[3:]
        if kv and "=" in kv:
            key, _, val = kv.partition("=")
            if _LDFLAG_VERSION.search(key) and val:
                return val if val.startswith("v") else f"v{val}"
    return ""


class GoBinaryCataloger(Cataloger):
    name = "go-binary"
    ecosystem = "golang"
    executables = True
    magic = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"MZ")

    def parse(self, path: str, data: bytes) -> ParseResult:
        if BUILDINFO_MAGIC not in data:
            return ParseResult()
        info = read_buildinfo(data, path)
        if info is None:
            return ParseResult()
        vers, mod = info
        pkgs: list[Package] = []
        main: Package | None = None
        ldflags = ""
        last: Package | None = None
        for line in mod.splitlines():
            parts = line.split("\t")
            kind = parts[0]
            if kind in ("mod", "dep") and len(parts) >= 3:
                version = "" if parts[2] == "(devel)" else parts[2]
                last = Package(name=parts[1], version=version, ecosystem="golang", location=path)
                if kind == "mod":
                    main = last
                pkgs.append(last)
            elif kind == "mod" and len(parts) == 2:
                main = Package(name=parts[1], version="", ecosystem="golang", location=path)
                pkgs.append(main)
            elif kind == "=>" and last is not None and len(parts) >= 3:
                last.name, last.version = parts[1], parts[2]
            elif kind == "build" and len(parts) >= 2 and parts[1].startswith("-ldflags="):
                ldflags = parts[1].removeprefix("-ldflags=").strip("\"'")
        if main is not None and not main.version and ldflags:
            main.version = _ldflags_version(ldflags)
        if vers.startswith("go"):
            v = vers[2:].split()[0].split("-")[0]  # "go1.22.1 X:boringcrypto" -> 1.22.1
            pkgs.append(Package(name="stdlib", version=f"v{v}", ecosystem="golang", location=path))
        return ParseResult(pkgs)


class GoModCataloger(Cataloger):
    name = "go-mod"
    ecosystem = "golang"
    basenames = frozenset({"go.mod"})

    def parse(self, path: str, data: bytes) -> ParseResult:
        pkgs: list[Package] = []
        block = ""
        replaces: dict[str, tuple[str, str]] = {}
        reqs: list[tuple[str, str]] = []
        for raw in text(data).splitlines():
            words = raw.split("//", 1)[0].split()
            if not words:
                continue
            if words[0] == "module" and len(words) == 2:
                # the module itself, unversioned, as for a binary's main module
                pkgs.append(Package(name=words[1].strip('"'), version="", ecosystem="golang", location=path))
                continue
            if words[0] in ("require", "replace") and words[-1] == "(":
                block = words[0]
                continue
            if words == [")"]:
                block = ""
                continue
            if words[0] in ("require", "replace"):
                kind, words = words[0], words[1:]
            elif block:
                kind = block
            else:
                continue
            if kind == "require" and len(words) >= 2:
                reqs.append((words[0], words[1]))
            elif kind == "replace" and "=>" in words:
                i = words.index("=>")
                if len(words) > i + 2:
                    replaces[words[0]] = (words[i + 1], words[i + 2])
        for name, ver in reqs:
            name, ver = replaces.get(name, (name, ver))
            pkgs.append(Package(name=name, version=ver, ecosystem="golang", location=path))
        return ParseResult(pkgs)

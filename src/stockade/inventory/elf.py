"""Executable helpers for the binary catalogers: ELF sections (pyelftools), and address maps for ELF, Mach-O and PE."""

from __future__ import annotations

import io
import struct
from typing import Any

from elftools.common.exceptions import ELFError

from stockade.inventory.base import ParseError


def _open(data: bytes, where: str) -> Any:
    from elftools.elf.elffile import ELFFile  # 30 ms to import: only when a binary needs it

    try:
        return ELFFile(io.BytesIO(data))
    except (ELFError, ValueError, OSError) as exc:
        raise ParseError(f"{where}: malformed ELF ({exc})") from None


def section(data: bytes, name: str, where: str) -> bytes | None:
    """The bytes of section ``name``, or None when the binary has none."""
    try:
        sec = _open(data, where).get_section_by_name(name)
        return bytes(sec.data()) if sec is not None else None
    except (ELFError, ValueError, OSError, AttributeError) as exc:
        raise ParseError(f"{where}: malformed ELF ({exc})") from None


def vaddr_reader(data: bytes, where: str) -> VAddr:
    """An address map for an ELF, Mach-O (64-bit) or PE executable.

    Mach-O and PE load commands are parsed by hand: pyelftools reads only ELF, and the few
    fields needed here do not justify another dependency.
    """
    if data[:4] == b"\x7fELF":
        try:
            elf = _open(data, where)
            segs = [
                (s["p_vaddr"], s["p_filesz"], s["p_offset"]) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
            ]
        except (ELFError, ValueError, OSError) as exc:
            raise ParseError(f"{where}: malformed ELF ({exc})") from None
        return VAddr(data, where, segs)
    try:
        if data[:4] == b"\xcf\xfa\xed\xfe":
            return VAddr(data, where, _macho_segments(data))
        if data[:2] == b"MZ":
            return VAddr(data, where, _pe_segments(data))
    except struct.error:
        raise ParseError(f"{where}: truncated executable header") from None
    raise ParseError(f"{where}: not an ELF, Mach-O or PE executable")


def _macho_segments(data: bytes) -> list[tuple[int, int, int]]:
    (ncmds,) = struct.unpack_from("<I", data, 16)
    pos, segs = 32, []
    for _ in range(min(ncmds, 4096)):
        cmd, size = struct.unpack_from("<II", data, pos)
        if cmd == 0x19:  # LC_SEGMENT_64
            vmaddr, _vmsize, fileoff, filesize = struct.unpack_from("<QQQQ", data, pos + 24)
            segs.append((vmaddr, filesize, fileoff))
        if size < 8:
            break
        pos += size
    return segs


def _pe_segments(data: bytes) -> list[tuple[int, int, int]]:
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\x00\x00":
        raise ParseError("not a PE file")
    (nsec,) = struct.unpack_from("<H", data, pe + 6)
    (opt_size,) = struct.unpack_from("<H", data, pe + 20)
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    base = (
        struct.unpack_from("<Q", data, opt + 24)[0] if magic == 0x20B else struct.unpack_from("<I", data, opt + 28)[0]
    )
    segs = []
    for i in range(min(nsec, 256)):
        sec = opt + opt_size + i * 40
        _vsize, vaddr, raw_size, raw_off = struct.unpack_from("<IIII", data, sec + 8)
        segs.append((base + vaddr, raw_size, raw_off))
    return segs


class VAddr:
    """Read bytes at virtual addresses through the loaded segments."""

    def __init__(self, data: bytes, where: str, segments: list[tuple[int, int, int]]) -> None:
        self.data = data
        self.where = where
        self.segments = segments

    def read(self, addr: int, n: int) -> bytes:
        for vaddr, size, off in self.segments:
            if vaddr <= addr and addr + n <= vaddr + size:
                start = off + (addr - vaddr)
                return self.data[start : start + n]
        raise ParseError(f"{self.where}: address {addr:#x} not in any loaded segment")

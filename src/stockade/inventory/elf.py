"""Small ELF helpers over pyelftools for the binary catalogers."""

from __future__ import annotations

import io

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from stockade.inventory.base import ParseError


def _open(data: bytes, where: str) -> ELFFile:
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


def vaddr_reader(data: bytes, where: str) -> "VAddr":
    return VAddr(data, where)


class VAddr:
    """Read bytes at virtual addresses through the PT_LOAD segments."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where
        try:
            elf = _open(data, where)
            self.segments = [
                (s["p_vaddr"], s["p_filesz"], s["p_offset"]) for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
            ]
        except (ELFError, ValueError, OSError) as exc:
            raise ParseError(f"{where}: malformed ELF ({exc})") from None

    def read(self, addr: int, n: int) -> bytes:
        for vaddr, size, off in self.segments:
            if vaddr <= addr and addr + n <= vaddr + size:
                start = off + (addr - vaddr)
                return self.data[start : start + n]
        raise ParseError(f"{self.where}: address {addr:#x} not in any loaded segment")

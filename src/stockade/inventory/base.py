"""The cataloger contract: which paths a cataloger wants, and how it turns a file into packages."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import ClassVar

from stockade.model import Package, StockadeError


class ParseError(StockadeError):
    """A file a cataloger wanted is malformed; the scan records a warning and goes on."""


@dataclass(slots=True)
class ParseResult:
    packages: list[Package] = field(default_factory=list)
    text: str | None = None  # kept verbatim (small OS release files), merged later
    warnings: list[str] = field(default_factory=list)  # what was skipped (an entry over its size cap) and why


class Cataloger:
    """Base class: subclasses set the class attributes and implement ``parse``.

    A cataloger declares the paths it needs the way Trivy's analyzers do, so the image is
    read once and a file is read into memory only when some cataloger asked for it.
    """

    name: ClassVar[str] = ""
    ecosystem: ClassVar[str] = ""
    basenames: ClassVar[frozenset[str]] = frozenset()
    suffixes: ClassVar[tuple[str, ...]] = ()
    paths: ClassVar[frozenset[str]] = frozenset()
    prefixes: ClassVar[tuple[str, ...]] = ()
    executables: ClassVar[bool] = False  # wants ELF executables (binary build info)
    magic: ClassVar[tuple[bytes, ...]] = ()  # with executables: the first bytes a file may start with

    def wants(self, path: str) -> bool:
        """A finer check after the basename/suffix/path index matched."""
        return True

    def parse(self, path: str, data: bytes) -> ParseResult:
        raise NotImplementedError

    def run(self, path: str, data: bytes) -> ParseResult:
        """``parse``, with a document of the wrong shape (a list where a mapping belongs...) as a ParseError."""
        try:
            return self.parse(path, data)
        except ParseError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError, IndexError, RecursionError) as exc:
            raise ParseError(f"{path}: unexpected content for {self.name} ({type(exc).__name__}: {exc})") from None


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def base(path: str) -> str:
    return posixpath.basename(path)

"""Stream the entries of one layer: decompression, size limits and path hygiene."""

from __future__ import annotations

import gzip
import io
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from stockade.model import StockadeError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep a hostile image from exhausting memory or disk."""

    max_layer_bytes: int = 32 * 1024**3  # uncompressed bytes in one layer
    max_file_bytes: int = 512 * 1024**2  # one file read into memory for a cataloger
    max_ratio: int = 1000  # uncompressed/compressed, past 1 GiB uncompressed
    max_entries: int = 2_000_000  # tar entries in one layer


class LayerError(StockadeError):
    """A layer could not be read; the message names the layer and, when known, the path."""


@dataclass(slots=True)
class Entry:
    """One entry of a layer, as a cataloger sees it; its content is read at most once, in order."""

    path: str  # normalised, relative, no leading slash
    mode: int
    size: int
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    linkname: str
    _reader: Callable[[int], bytes] | None
    _pos: int = 0

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)

    def head(self, n: int) -> bytes:
        """Read the first ``n`` bytes (before any other read)."""
        if self._reader is None or self._pos:
            return b""
        data = self._reader(min(n, self.size))
        self._pos = len(data)
        return data

    def read(self, limit: int) -> bytes:
        """Read the rest of the file; refuse one larger than ``limit`` bytes."""
        if self._reader is None:
            return b""
        if self.size > limit:
            raise LayerError(f"{self.path}: file is {self.size} bytes, over the limit of {limit}")
        data = self._reader(self.size - self._pos)
        self._pos += len(data)
        return data


class _CountingReader(io.RawIOBase):
    """Counts decompressed bytes and stops a decompression bomb."""

    def __init__(self, inner: BinaryIO, raw: _RawCounter, name: str, limits: Limits) -> None:
        self._inner = inner
        self._raw = raw
        self._name = name
        self._limits = limits
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        if self.count > self._limits.max_layer_bytes:
            raise LayerError(
                f"layer {self._name}: more than {self._limits.max_layer_bytes} bytes uncompressed"
                " (decompression bomb?)"
            )
        if (
            self.count > 1024**3
            and self._raw.count > 0
            and self.count > self._raw.count * self._limits.max_ratio
        ):
            raise LayerError(
                f"layer {self._name}: compression ratio over {self._limits.max_ratio}:1"
                " (decompression bomb?)"
            )
        return n


class _RawCounter(io.RawIOBase):
    """Counts compressed bytes read from the blob."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


def decompressed(blob: BinaryIO, name: str, limits: Limits) -> BinaryIO:
    """Wrap a layer blob so that reading it yields the uncompressed tar stream."""
    raw = _RawCounter(blob)
    buffered = io.BufferedReader(raw, 1 << 20)
    head = buffered.peek(4)[:4]
    inner: BinaryIO
    if head.startswith(GZIP_MAGIC):
        inner = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    elif head.startswith(ZSTD_MAGIC):
        inner = zstandard.ZstdDecompressor().stream_reader(buffered, read_size=1 << 20)  # type: ignore[assignment]
    else:
        inner = buffered  # type: ignore[assignment]
    return io.BufferedReader(_CountingReader(inner, raw, name, limits), 1 << 20)  # type: ignore[return-value]


def normalise(name: str) -> str | None:
    """Return a clean relative path, or None for a path that climbs out of the root."""
    if "\x00" in name:
        return None
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "other"


def iter_tar_entries(
    stream: BinaryIO, name: str, limits: Limits, warnings: list[str]
) -> Iterator[Entry]:
    """Yield the entries of an uncompressed tar stream in order, one pass, nothing written."""
    current = "<start>"
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")
        count = 0
        for member in tf:
            count += 1
            if count > limits.max_entries:
                raise LayerError(f"layer {name}: more than {limits.max_entries} entries")
            current = member.name
            path = normalise(member.name)
            if path is None:
                warnings.append(f"layer {name}: refused entry {member.name!r} (path escapes the root)")
                continue
            reader: Callable[[int], bytes] | None = None
            if member.isreg():
                fobj = tf.extractfile(member)

                def reader(n: int, _f: BinaryIO | None = fobj) -> bytes:
                    return _f.read(n) if _f is not None else b""

            yield Entry(path, member.mode, member.size, _kind(member), member.linkname, reader)
    except LayerError as exc:
        if current != "<start>" and current not in str(exc):
            raise LayerError(f"{exc} (at {current})") from None
        raise
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError, ValueError) as exc:
        raise LayerError(f"layer {name}: corrupt or truncated tar near {current!r}: {exc}") from None


def is_whiteout(path: str) -> tuple[str, str] | None:
    """Classify a whiteout entry: ("opaque", dir) or ("delete", path), else None."""
    base = posixpath.basename(path)
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    parent = posixpath.dirname(path)
    if base == OPAQUE_MARKER:
        return ("opaque", parent)
    return ("delete", posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]))


def is_regular_mode(mode: int) -> bool:
    return stat.S_ISREG(mode)

"""Readers for the three rpm database formats: SQLite, Berkeley DB hash and NDB.

Written by hand because no Python library reads rpm databases without librpm, and librpm
is not on distroless or Alpine scanner hosts; the formats are small and stable.
"""

from __future__ import annotations

import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stockade.inventory.base import ParseError

# Header tags (rpmtag.h)
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_SIZE, TAG_VENDOR, TAG_LICENSE, TAG_ARCH, TAG_SOURCERPM = 1009, 1011, 1014, 1022, 1044
TAG_MODULARITYLABEL = 5096

_INT_FORMATS = {2: (">b", 1), 3: (">h", 2), 4: (">i", 4), 5: (">q", 8)}
MAX_HEADER = 256 * 1024**2


@dataclass(slots=True)
class RpmHeader:
    name: str
    version: str
    release: str
    epoch: int | None
    arch: str
    license: str
    sourcerpm: str
    vendor: str
    modularity: str


def parse_header(blob: bytes, where: str) -> RpmHeader:
    """Decode the tags stockade needs from one header blob (index count, data length, entries, data)."""
    if len(blob) < 8:
        raise ParseError(f"{where}: rpm header too short")
    il, dl = struct.unpack_from(">ii", blob, 0)
    if il <= 0 or il > 0xFFFF or dl < 0 or dl > MAX_HEADER or 8 + il * 16 + dl > len(blob):
        raise ParseError(f"{where}: rpm header has a bad index (il={il}, dl={dl})")
    store = 8 + il * 16
    values: dict[int, str | int] = {}
    for i in range(il):
        tag, typ, off, count = struct.unpack_from(">iIiI", blob, 8 + i * 16)
        if tag not in (
            TAG_NAME,
            TAG_VERSION,
            TAG_RELEASE,
            TAG_EPOCH,
            TAG_ARCH,
            TAG_LICENSE,
            TAG_SOURCERPM,
            TAG_VENDOR,
            TAG_MODULARITYLABEL,
        ):
            continue
        if off < 0 or off >= dl:
            raise ParseError(f"{where}: rpm tag {tag} points outside the header")
        pos = store + off
        if typ in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: first string
            end = blob.find(b"\x00", pos, store + dl)
            if end < 0:
                raise ParseError(f"{where}: rpm tag {tag} string is not terminated")
            values[tag] = blob[pos:end].decode("utf-8", errors="replace")
        elif typ in _INT_FORMATS and count >= 1:
            fmt, size = _INT_FORMATS[typ]
            if pos + size > store + dl:
                raise ParseError(f"{where}: rpm tag {tag} integer outside the header")
            values[tag] = struct.unpack_from(fmt, blob, pos)[0]

    def s(tag: int) -> str:
        v = values.get(tag, "")
        return v if isinstance(v, str) else str(v)

    epoch = values.get(TAG_EPOCH)
    return RpmHeader(
        name=s(TAG_NAME),
        version=s(TAG_VERSION),
        release=s(TAG_RELEASE),
        epoch=epoch if isinstance(epoch, int) else None,
        arch=s(TAG_ARCH),
        license=s(TAG_LICENSE),
        sourcerpm=s(TAG_SOURCERPM),
        vendor=s(TAG_VENDOR),
        modularity=s(TAG_MODULARITYLABEL),
    )


# --- SQLite (rpm >= 4.16: Fedora 33+, RHEL 9, Amazon Linux 2023, CBL-Mariner 2) ----------------------


def sqlite_blobs(data: bytes, where: str) -> Iterator[bytes]:
    if not data.startswith(b"SQLite format 3\x00"):
        raise ParseError(f"{where}: not an SQLite database")
    with tempfile.TemporaryDirectory(prefix="stockade-rpm-") as d:
        path = Path(d) / "rpmdb.sqlite"
        path.write_bytes(data)
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            try:
                rows = con.execute("SELECT blob FROM Packages").fetchall()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise ParseError(f"{where}: unreadable rpm SQLite database ({exc})") from None
    for (blob,) in rows:
        if isinstance(blob, bytes):
            yield blob


# --- Berkeley DB hash (rpm < 4.16: RHEL/CentOS 7-8, Amazon Linux 2, older SUSE) ----------------------

_HASH_MAGIC = 0x061561
_P_HASH_UNSORTED, _P_OVERFLOW, _P_HASH = 2, 7, 13
_H_OFFPAGE = 3
_PAGE_HEADER = 26


def bdb_blobs(data: bytes, where: str) -> Iterator[bytes]:
    if len(data) < 512:
        raise ParseError(f"{where}: too short for a Berkeley DB file")
    for endian in ("<", ">"):
        if struct.unpack_from(endian + "I", data, 12)[0] == _HASH_MAGIC:
            break
    else:
        raise ParseError(f"{where}: not a Berkeley DB hash database")
    (page_size,) = struct.unpack_from(endian + "I", data, 20)
    (last_pgno,) = struct.unpack_from(endian + "I", data, 32)
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise ParseError(f"{where}: bad Berkeley DB page size {page_size}")
    npages = len(data) // page_size
    last_pgno = min(last_pgno, npages - 1)
    for pgno in range(1, last_pgno + 1):
        off = pgno * page_size
        page = data[off : off + page_size]
        ptype = page[25]
        if ptype not in (_P_HASH_UNSORTED, _P_HASH):
            continue
        (entries,) = struct.unpack_from(endian + "H", page, 20)
        if _PAGE_HEADER + entries * 2 > page_size:
            raise ParseError(f"{where}: page {pgno} has too many entries")
        for i in range(1, entries, 2):  # key/value pairs: the value is the odd item
            (item,) = struct.unpack_from(endian + "H", page, _PAGE_HEADER + i * 2)
            if item + 12 > page_size or page[item] != _H_OFFPAGE:
                continue
            first, total = struct.unpack_from(endian + "II", page, item + 4)
            yield _bdb_overflow(data, first, total, page_size, endian, where)


def _bdb_overflow(data: bytes, pgno: int, total: int, page_size: int, endian: str, where: str) -> bytes:
    if total > MAX_HEADER:
        raise ParseError(f"{where}: overflow item of {total} bytes")
    out = bytearray()
    seen: set[int] = set()
    while pgno and len(out) < total:
        if pgno in seen or (pgno + 1) * page_size > len(data):
            raise ParseError(f"{where}: broken overflow chain at page {pgno}")
        seen.add(pgno)
        off = pgno * page_size
        if data[off + 25] != _P_OVERFLOW:
            raise ParseError(f"{where}: page {pgno} is not an overflow page")
        (used,) = struct.unpack_from(endian + "H", data, off + 22)
        (nxt,) = struct.unpack_from(endian + "I", data, off + 16)
        out += data[off + _PAGE_HEADER : off + _PAGE_HEADER + used]
        pgno = nxt
    return bytes(out[:total])


# --- NDB (SUSE 15+, rpm's "ndb" backend) ---------------------------------------------------------------

_NDB_HEADER_MAGIC = int.from_bytes(b"RpmP", "little")
_NDB_SLOT_MAGIC = int.from_bytes(b"Slot", "little")
_NDB_BLOB_MAGIC = int.from_bytes(b"BlbS", "little")
_NDB_PAGE = 4096
_NDB_BLK = 16


def ndb_blobs(data: bytes, where: str) -> Iterator[bytes]:
    if len(data) < 32:
        raise ParseError(f"{where}: too short for an NDB database")
    magic, version, _gen, slot_pages = struct.unpack_from("<IIII", data, 0)
    if magic != _NDB_HEADER_MAGIC or version != 0:
        raise ParseError(f"{where}: not an rpm NDB database")
    if slot_pages * _NDB_PAGE > len(data) or slot_pages > 2048:
        raise ParseError(f"{where}: NDB slot area is larger than the file")
    nslots = slot_pages * (_NDB_PAGE // 16) - 2
    for i in range(nslots):
        smagic, pkg, blk_off, _blk_cnt = struct.unpack_from("<IIII", data, 32 + i * 16)
        if smagic != _NDB_SLOT_MAGIC:
            raise ParseError(f"{where}: bad NDB slot {i}")
        if pkg == 0:
            continue
        off = blk_off * _NDB_BLK
        if off + 16 > len(data):
            raise ParseError(f"{where}: NDB slot {i} points past the end")
        bmagic, bpkg, _sum, blen = struct.unpack_from("<IIII", data, off)
        if bmagic != _NDB_BLOB_MAGIC or bpkg != pkg or off + 16 + blen > len(data):
            raise ParseError(f"{where}: bad NDB blob for package {pkg}")
        yield data[off + 16 : off + 16 + blen]


def read_headers(data: bytes, where: str) -> list[RpmHeader]:
    """Detect the database format from its first bytes and decode every package header."""
    if data.startswith(b"SQLite format 3\x00"):
        blobs = sqlite_blobs(data, where)
    elif data[:4] == b"RpmP":
        blobs = ndb_blobs(data, where)
    else:
        blobs = bdb_blobs(data, where)
    return [parse_header(b, where) for b in blobs]

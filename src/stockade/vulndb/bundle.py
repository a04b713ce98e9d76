"""Air-gapped transfer: one zstd-compressed bundle holding the database and a manifest with its digest.

`export` prints the bundle's own sha256; `import` checks the database against the manifest and, when
given, the bundle against the expected digest, then swaps the database in atomically.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import orjson
import zstandard

from stockade.model import StockadeError
from stockade.vulndb.store import VulnDB


class BundleError(StockadeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def export(db_path: Path, out: Path) -> str:
    """Write the bundle; return its sha256."""
    db = VulnDB(db_path)
    manifest = {
        "format": "stockade-vulndb-bundle/1",
        "sha256": _sha256(db_path),
        "size": db_path.stat().st_size,
        "built_at": db.meta("built_at"),
        "sources": db.sources(),
    }
    db.close()
    tmp = out.with_name(out.name + ".tmp")
    with (
        tmp.open("wb") as raw,
        zstandard.ZstdCompressor(level=10, threads=-1).stream_writer(raw) as zw,
        tarfile.open(fileobj=zw, mode="w|") as tf,
    ):
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        tf.add(db_path, arcname="vuln.db")
    os.replace(tmp, out)
    digest = _sha256(out)
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
    return digest


def import_bundle(bundle: Path, db_path: Path, expected_digest: str | None = None) -> dict[str, Any]:
    if not bundle.is_file():
        raise BundleError(f"{bundle}: no such file")
    if expected_digest and _sha256(bundle) != expected_digest.lower().removeprefix("sha256:"):
        raise BundleError(f"{bundle}: digest does not match {expected_digest}; refusing to import")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=db_path.parent, prefix=".vuln-import-", suffix=".db")
    os.close(fd)
    tmp = Path(tmp_name)
    manifest: dict[str, Any] | None = None
    try:
        with (
            bundle.open("rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as zr,
            tarfile.open(fileobj=zr, mode="r|") as tf,
        ):
            for m in tf:
                f = tf.extractfile(m) if m.isreg() else None
                if f is None:
                    continue
                if m.name == "manifest.json" and m.size < 16 * 1024**2:
                    manifest = orjson.loads(f.read())
                elif m.name == "vuln.db":
                    with tmp.open("wb") as out:
                        while chunk := f.read(1 << 20):
                            out.write(chunk)
        if manifest is None or not tmp.stat().st_size:
            raise BundleError(f"{bundle}: not a stockade bundle (manifest or database missing)")
        if _sha256(tmp) != manifest.get("sha256"):
            raise BundleError(f"{bundle}: database digest does not match the manifest; refusing to import")
        VulnDB(tmp).close()  # readable, right schema
        os.replace(tmp, db_path)
        return manifest
    except (tarfile.TarError, zstandard.ZstdError, orjson.JSONDecodeError, EOFError) as exc:
        raise BundleError(f"{bundle}: corrupt bundle ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)

"""Open an image from a docker-archive, an OCI layout (directory or tar), a root filesystem or a registry."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import orjson
import zstandard

from stockade.image.layer import GZIP_MAGIC, ZSTD_MAGIC, Entry, LayerError, Limits, gzip_reader, normalise
from stockade.image.manifest import (
    INDEX_TYPES,
    Image,
    ImageError,
    Layer,
    layers_from,
    parse_json,
    select_manifest,
)

_BLOB_NAME = re.compile(r"^(?:\./)?(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.tar(?:\.gz|\.zst)?)$")

# --- OCI image layout ----------------------------------------------------------------------------------


class _Blobs:
    """Blob access by digest in an OCI layout held in a directory or a tar file."""

    def __init__(self, read: Callable[[str], bytes | None], open_: Callable[[str], BinaryIO], what: str):
        self.read_file, self._open, self.what = read, open_, what

    def path(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if not hexd or not algo.isalnum() or not all(c in "0123456789abcdef" for c in hexd):
            raise ImageError(f"{self.what}: bad digest {digest!r}")
        return f"blobs/{algo}/{hexd}"

    def read(self, digest: str) -> bytes:
        data = self.read_file(self.path(digest))
        if data is None:
            raise ImageError(f"{self.what}: blob {digest} is missing")
        return data

    def open(self, digest: str) -> BinaryIO:
        return self._open(self.path(digest))


def _open_oci(blobs: _Blobs, img: Image, platform: str | None, tag: str | None) -> None:
    index_raw = blobs.read_file("index.json")
    if index_raw is None:
        raise ImageError(f"{blobs.what}: not an OCI layout (no index.json)")
    index = parse_json(index_raw, f"{blobs.what}: index.json")
    manifests = index.get("manifests") or []
    if tag:
        manifests = [
            m
            for m in manifests
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") in (tag, tag.split(":")[-1])
        ]
        if not manifests:
            raise ImageError(f"{blobs.what}: no image tagged {tag!r}")
    if not manifests:
        raise ImageError(f"{blobs.what}: index.json lists no manifests")
    top = manifests[0]
    desc, manifest = top, {}
    for _ in range(4):  # index -> (nested index) -> manifest: an index is known by its mediaType or its list
        manifest = parse_json(blobs.read(desc["digest"]), f"{blobs.what}: manifest")
        if manifest.get("mediaType") not in INDEX_TYPES and "manifests" not in manifest:
            break
        desc = select_manifest(manifest, platform, blobs.what)
    else:
        raise ImageError(f"{blobs.what}: image indexes nested too deep")
    cfg_digest = (manifest.get("config") or {}).get("digest")
    if not cfg_digest:
        raise ImageError(f"{blobs.what}: manifest has no config")
    img.config = parse_json(blobs.read(cfg_digest), f"{blobs.what}: config")
    img.image_id = cfg_digest
    name = (top.get("annotations") or {}).get("org.opencontainers.image.ref.name")
    if name:
        img.repo_tags = [name]
    descs = [(d["digest"], d.get("mediaType", ""), int(d.get("size", -1))) for d in manifest.get("layers") or []]
    img.layers = layers_from(img.config, descs, blobs.open, blobs.what)


# --- docker-archive ------------------------------------------------------------------------------------


def _open_docker_archive(tf: tarfile.TarFile, img: Image, what: str, tag: str | None) -> None:
    data = _tar_read(tf, "manifest.json", what)
    assert data is not None
    try:
        manifests = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ImageError(f"{what}: manifest.json is malformed ({exc})") from None
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{what}: manifest.json lists no image")
    entry = manifests[0]
    if tag:
        found = [m for m in manifests if tag in (m.get("RepoTags") or [])]
        if not found:
            raise ImageError(f"{what}: no image tagged {tag!r}")
        entry = found[0]
    cfg_name = entry.get("Config")
    cfg = _tar_read(tf, str(cfg_name), what) if cfg_name else None
    if cfg is None:
        raise ImageError(f"{what}: config {cfg_name!r} is missing")
    img.config = parse_json(cfg, f"{what}: {cfg_name}")
    img.image_id = "sha256:" + hashlib.sha256(cfg).hexdigest()
    img.repo_tags = list(entry.get("RepoTags") or [])
    layer_names = [str(x) for x in entry.get("Layers") or []]
    diff_ids = (img.config.get("rootfs") or {}).get("diff_ids") or []
    # A blob named by its digest (OCI-style "blobs/sha256/<hex>", or "<hex>.tar.gz") gives the layer digest;
    # older docker save names layers "<v1 id>/layer.tar", stored uncompressed: their digest is the diff_id.
    descs = []
    for i, layer_name in enumerate(layer_names):
        m = _BLOB_NAME.match(layer_name)
        diff_id = diff_ids[i] if i < len(diff_ids) else ""
        descs.append((f"sha256:{m.group(1) or m.group(2)}" if m else diff_id, "", -1))
    by_digest = dict(zip([d[0] for d in descs], layer_names, strict=False))

    def opener(digest: str) -> BinaryIO:
        return _tar_open(tf, by_digest[digest], what)

    img.layers = layers_from(img.config, descs, opener, what)


def _tar_member(tf: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    clean = normalise(name)
    for candidate in (name, clean, f"./{clean}"):
        if candidate is None:
            continue
        try:
            return tf.getmember(candidate)
        except KeyError:
            continue
    return None


def _tar_read(tf: tarfile.TarFile, name: str, what: str, limit: int = 64 * 1024**2) -> bytes | None:
    member = _tar_member(tf, name)
    if member is None:
        return None
    if member.size > limit:
        raise ImageError(f"{what}: {name} is {member.size} bytes, too large for metadata")
    f = tf.extractfile(member)
    return f.read() if f else None


def _tar_open(tf: tarfile.TarFile, name: str, what: str) -> BinaryIO:
    member = _tar_member(tf, name)
    f = tf.extractfile(member) if member is not None else None
    if f is None:
        raise ImageError(f"{what}: layer {name!r} is missing")
    return cast(BinaryIO, f)


# --- entry point ----------------------------------------------------------------------------------------


def _private_dir(img: Image) -> Path:
    d = Path(tempfile.mkdtemp(prefix="stockade-"))
    img._cleanup.append(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def _decompress_to(src: Path, dst: Path, limits: Limits) -> None:
    with src.open("rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        stream: BinaryIO = (
            gzip_reader(raw) if head.startswith(GZIP_MAGIC) else zstandard.ZstdDecompressor().stream_reader(raw)
        )
        total = 0
        try:
            with dst.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
                    if total > limits.max_layer_bytes:
                        raise ImageError(f"{src}: more than {limits.max_layer_bytes} bytes uncompressed")
                    out.write(chunk)
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise ImageError(f"{src}: corrupt compressed archive ({exc})") from None


def open_image(ref: str, platform: str | None = None, limits: Limits | None = None) -> Image:
    """Open ``ref``: a path (archive, layout, rootfs) or a registry reference."""
    limits = limits or Limits()
    # PATH:TAG selects one image of a multi-image archive or layout
    path_part, tag = ref, ""
    if not os.path.exists(ref) and ":" in ref and os.path.exists(ref.rsplit(":", 1)[0]):
        path_part, tag = ref.rsplit(":", 1)
    p = Path(path_part)
    img = Image(source=ref, config={}, layers=[])
    try:
        if p.is_dir():
            if (p / "index.json").is_file() or (p / "oci-layout").is_file():
                root = p.resolve()

                def read_dir(rel: str) -> bytes | None:
                    f = root / rel
                    return f.read_bytes() if f.is_file() else None

                def open_dir(rel: str) -> BinaryIO:
                    try:
                        return (root / rel).open("rb")
                    except OSError as exc:
                        raise ImageError(f"{ref}: cannot open {rel}: {exc.strerror}") from None

                _open_oci(_Blobs(read_dir, open_dir, ref), img, platform, tag or None)
            else:
                img.rootfs = p.resolve()
            return img
        if p.is_file():
            _open_archive(p, img, platform, tag or None, limits)
            return img
        if (os.sep in ref and not _looks_like_registry(ref)) or ref.startswith((".", "/")):
            raise ImageError(f"{ref}: no such file or directory")
        from stockade.image.registry import pull

        pull(ref, img, platform, _private_dir(img), limits)
        return img
    except BaseException:
        img.close()
        raise


def _looks_like_registry(ref: str) -> bool:
    first = ref.split("/", 1)[0]
    return "." in first or ":" in first or first == "localhost"


def _open_archive(p: Path, img: Image, platform: str | None, tag: str | None, limits: Limits) -> None:
    with p.open("rb") as f:
        head = f.read(4)
    tar_path = p
    if head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC):
        # A compressed archive keeps its manifest at the end: random access needs it uncompressed.
        tar_path = _private_dir(img) / "image.tar"
        _decompress_to(p, tar_path, limits)
    try:
        tf = tarfile.open(tar_path, mode="r:")  # noqa: SIM115 - open for the image's lifetime, closed in cleanup
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"{p}: not a readable tar archive ({exc})") from None
    img._cleanup.append(tf.close)
    what = str(p)
    try:
        if _tar_member(tf, "manifest.json") is not None:
            _open_docker_archive(tf, img, what, tag)
        elif _tar_member(tf, "index.json") is not None:
            _open_oci(
                _Blobs(lambda n: _tar_read(tf, n, what), lambda n: _tar_open(tf, n, what), what), img, platform, tag
            )
        else:
            raise ImageError(f"{p}: neither a docker-archive (manifest.json) nor an OCI layout (index.json)")
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{p}: corrupt tar archive ({exc})") from None


class _FileReader:
    """Sequential reads of one file of a root filesystem, opened only when read."""

    def __init__(self, path: str) -> None:
        self.path, self.pos = path, 0

    def __call__(self, n: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            data = fh.read(n)
        self.pos += len(data)
        return data


def iter_rootfs(root: Path, warnings: list[str]) -> Iterator[Entry]:
    """Walk a root filesystem directory without following symlinks out of it."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = list(os.scandir(d))
        except OSError as exc:
            warnings.append(f"{d}: cannot list ({exc.strerror})")
            continue
        for e in it:
            rel = os.path.relpath(e.path, root)
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if e.is_symlink():
                yield Entry(rel, st.st_mode, 0, "symlink", os.readlink(e.path), None)
            elif e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
                yield Entry(rel, st.st_mode, 0, "dir", "", None)
            elif e.is_file(follow_symlinks=False):
                yield Entry(rel, st.st_mode, st.st_size, "file", "", _FileReader(e.path))


__all__ = ["Image", "ImageError", "Layer", "LayerError", "iter_rootfs", "open_image"]

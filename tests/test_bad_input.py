"""Hostile and broken inputs: clean errors naming the input, bounded work, nothing written outside."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.image import LayerError, Limits, iter_tar_entries
from stockade.image.layer import decompressed
from stockade.inventory import catalog_image
from stockade.inventory.base import ParseError
from stockade.inventory.dpkg import DpkgCataloger
from stockade.model import StockadeError


def _tar(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """entries: (name, content or None for a dir, typeflag-ish kind)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode() if data else ""
                tf.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _docker_archive(path: Path, layers: list[bytes], gz: bool = False) -> Path:
    import hashlib

    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }
    ).encode()
    names = []
    with tarfile.open(path, "w") as tf:
        for i, layer in enumerate(layers):
            blob = gzip.compress(layer) if gz else layer
            info = tarfile.TarInfo(f"l{i}/layer.tar")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
            names.append(info.name)
        for name, data in (
            ("config.json", config),
            ("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": names}]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


DPKG = b"Package: evil\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n\n"


def test_path_traversal_is_refused_and_nothing_written(tmp_path: Path) -> None:
    layer = _tar(
        [
            ("../../../tmp/escape/var/lib/dpkg/status", DPKG, "file"),
            ("/etc/os-release", b"ID=debian\nVERSION_ID=12\n", "file"),
            ("var/lib/dpkg", None, "dir"),
            ("var/lib/dpkg/status", b"../../../../etc/shadow", "symlink"),
        ]
    )
    img = _docker_archive(tmp_path / "img.tar", [layer])
    before = set(Path("/tmp").iterdir())
    inv = catalog_image(str(img), cache_dir=False)
    assert inv.packages == []  # the escaping entry is not read, the symlink is not followed
    assert any("path escapes the root" in w and "../../../tmp/escape" in w for w in inv.warnings)
    assert inv.os is not None and inv.os.family == "debian"  # an absolute name is read inside the root
    assert not Path("/tmp/escape").exists()
    assert {p for p in set(Path("/tmp").iterdir()) - before if p.name.startswith("stockade-")} == set()


def test_decompression_bomb_stops_with_layer_and_path(tmp_path: Path) -> None:
    bomb = _tar([("var/lib/dpkg/status", DPKG, "file"), ("zeros", bytes(8 * 1024**2), "file")])
    img = _docker_archive(tmp_path / "bomb.tar", [bomb], gz=True)
    with pytest.raises(LayerError, match=r"layer sha256:[0-9a-f]{64}: more than 1048576 bytes uncompressed.*zeros"):
        catalog_image(str(img), limits=Limits(max_layer_bytes=1024**2), cache_dir=False)


def test_huge_file_stops_with_layer_and_path(tmp_path: Path) -> None:
    layer = _tar([("var/lib/dpkg/status", DPKG + b"#" * 3000, "file")])
    img = _docker_archive(tmp_path / "big.tar", [layer])
    with pytest.raises(LayerError, match=r"layer sha256:[0-9a-f]{64}: var/lib/dpkg/status: file is \d+ bytes"):
        catalog_image(str(img), limits=Limits(max_file_bytes=1024), cache_dir=False)


def test_truncated_layer(tmp_path: Path) -> None:
    layer = _tar([("var/lib/dpkg/status", DPKG * 200, "file")])
    img = _docker_archive(tmp_path / "t.tar", [layer[:1500]], gz=True)
    with pytest.raises(LayerError, match="layer sha256:"):
        catalog_image(str(img), cache_dir=False)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable tar archive|neither a docker-archive"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt compressed archive"),
        (b"x" * 2048, "not a readable tar archive|neither a docker-archive"),
    ],
)
def test_corrupt_archives(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.tar"
    p.write_bytes(content)
    with pytest.raises(StockadeError, match=message):
        catalog_image(str(p), cache_dir=False)


def test_malformed_manifest(tmp_path: Path) -> None:
    p = tmp_path / "m.tar"
    with tarfile.open(p, "w") as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"{oops"))
    with pytest.raises(StockadeError, match=r"m.tar: manifest.json is malformed"):
        catalog_image(str(p), cache_dir=False)


def test_oci_layout_with_bad_digest(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "index.json").write_text(
        json.dumps({"manifests": [{"digest": "sha256:../../etc/passwd", "mediaType": "x"}]})
    )
    with pytest.raises(StockadeError, match="bad digest"):
        catalog_image(str(tmp_path), cache_dir=False)


def test_cli_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    p = tmp_path / "junk.tar"
    p.write_bytes(os.urandom(4096))
    proc = subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", "sbom", str(p)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and str(p) in proc.stderr


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_tar_reader_never_crashes(data: bytes) -> None:
    warnings: list[str] = []
    try:
        for e in iter_tar_entries(io.BytesIO(data), "fuzz", Limits(), warnings):
            e.read(1 << 20)
    except LayerError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=4000), st.binary(min_size=1, max_size=8))
def test_mutated_real_tar_never_crashes(pos: int, patch: bytes) -> None:
    base = _tar([("var/lib/dpkg/status", DPKG * 10, "file"), ("a/b", b"x" * 700, "file")])
    data = bytearray(base)
    p = pos % len(data)
    data[p : p + len(patch)] = patch
    try:
        stream = decompressed(io.BytesIO(bytes(data)), "fuzz", Limits())
        for e in iter_tar_entries(stream, "fuzz", Limits(), []):
            e.read(1 << 20)
    except LayerError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_dpkg_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(ParseError):
        DpkgCataloger().parse("var/lib/dpkg/status", text.encode())


_SAMPLES = {
    "var/lib/dpkg/status": DPKG,
    "lib/apk/db/installed": b"P:musl\nV:1.2\nA:x86_64\no:musl\nL:MIT\n\n",
    "usr/lib/python3/site-packages/a-1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: a\nVersion: 1\n\n",
    "app/node_modules/a/package.json": b'{"name": "a", "version": "1.0.0", "license": "MIT"}',
    "app/package-lock.json": b'{"lockfileVersion": 3, "packages": {"node_modules/a": {"version": "1.0.0"}}}',
    "app/yarn.lock": b'a@^1:\n  version "1.0.0"\n',
    "app/pnpm-lock.yaml": b"packages:\n  /a@1.0.0:\n    dev: false\n",
    "app/poetry.lock": b'[[package]]\nname = "a"\nversion = "1"\n',
    "app/Pipfile.lock": b'{"default": {"a": {"version": "==1"}}}',
    "app/requirements.txt": b"a==1\n",
    "app/x.deps.json": b'{"libraries": {"A/1.0": {"type": "package"}}}',
    "app/packages.lock.json": b'{"dependencies": {"net6.0": {"A": {"type": "Direct", "resolved": "1"}}}}',
    "app/Cargo.lock": b'[[package]]\nname = "a"\nversion = "1"\n',
    "app/composer.lock": b'{"packages": [{"name": "a/b", "version": "1"}]}',
    "usr/lib/ruby/gems/3.1.0/specifications/a-1.gemspec": b's.name = "a"\ns.version = "1"\n',
    "app/Gemfile.lock": b"GEM\n  specs:\n    a (1)\n",
    "app/go.mod": b"module x\nrequire a.b/c v1.0.0\n",
    "app/a.jar": b"PK\x05\x06" + bytes(18),
}


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(_SAMPLES)), st.integers(min_value=0, max_value=200), st.binary(max_size=12), st.booleans()
)
def test_every_cataloger_fails_cleanly(path: str, pos: int, patch: bytes, truncate: bool) -> None:
    from stockade.inventory import ALL_CATALOGERS
    from stockade.inventory.driver import LOCKFILE_NAMES, Dispatcher

    data = bytearray(_SAMPLES[path])
    p = pos % (len(data) + 1)
    data[p : p + len(patch)] = patch
    if truncate:
        del data[p:]
    wanted = Dispatcher(ALL_CATALOGERS, lockfiles=True).select(path)
    assert wanted, path
    for c in wanted:
        with contextlib.suppress(ParseError):
            c.run(path, bytes(data))
    assert LOCKFILE_NAMES


def _zip_bomb_jar(path: Path, inflated: int) -> None:
    """A small jar whose pom.properties inflates to ``inflated`` bytes (zeros deflate ~1000:1), beside a real
    MANIFEST.MF; written in chunks so the test itself stays small in memory."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nImplementation-Version: 2.4.1\n")
        with zf.open("META-INF/maven/org.acme/bomb/pom.properties", "w", force_zip64=True) as fh:
            chunk = b"#" + b"0" * (1024**2 - 1)
            for _ in range(inflated // len(chunk)):
                fh.write(chunk)


def test_a_pom_properties_bomb_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """A jar of under a megabyte whose pom.properties inflates to 300 MiB: skipped with a warning naming it,
    the jar still catalogued from its manifest, and the cataloger's memory stays far below the inflated size."""
    import tracemalloc

    from stockade.inventory.java import JavaArchiveCataloger

    jar = tmp_path / "bomb-2.4.1.jar"
    _zip_bomb_jar(jar, 300 * 1024**2)
    assert jar.stat().st_size < 1024**2
    data = jar.read_bytes()
    tracemalloc.start()
    try:
        result = JavaArchiveCataloger().parse("opt/app/bomb-2.4.1.jar", data)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, peak
    assert any("pom.properties" in w and "skipped" in w for w in result.warnings)
    assert [(p.name, p.version) for p in result.packages] == [("bomb", "2.4.1")]
    # through the image reader: the warning reaches the inventory
    root = tmp_path / "rootfs"
    (root / "opt" / "app").mkdir(parents=True)
    (root / "opt" / "app" / "bomb-2.4.1.jar").write_bytes(data)
    inv = catalog_image(str(root))
    assert any("pom.properties" in w and "skipped" in w for w in inv.warnings)

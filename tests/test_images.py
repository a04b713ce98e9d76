"""Real images from ../shared, compared package by package (and layer by layer) with Trivy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import trivy_packages

from stockade.image import open_image
from stockade.inventory import catalog_image
from stockade.inventory.driver import LayerCache

IMAGES = ["trivy-alpine-39.tar.gz", "trivy-alpine-310.tar.gz", "trivy-alpine-311.tar.gz", "trivy-image3_gz_layers.tar"]


@pytest.mark.parametrize("name", IMAGES)
def test_packages_and_layers_match_trivy(fixtures_dir: Path, name: str) -> None:
    path = fixtures_dir / "images" / name
    expected = {(p["purl"], p.get("LayerDiffID", "")) for p in trivy_packages("image", path)}
    inv = catalog_image(str(path))
    got = {(p.purl, p.layer_digest) for p in inv.packages}
    assert len(expected) >= 14
    assert got == expected


def test_whiteouts_applied(fixtures_dir: Path) -> None:
    """image3 deletes files in upper layers: what Trivy no longer sees, neither do we."""
    path = fixtures_dir / "images" / "trivy-image3_gz_layers.tar"
    with open_image(str(path)) as img:
        assert len(img.layers) == 4
        created = [layer.info.created_by for layer in img.layers]
    assert all(created)
    inv = catalog_image(str(path))
    assert inv.os is not None and (inv.os.family, inv.os.name) == ("alpine", "3.10.1")
    assert {p.layer_created_by for p in inv.packages} == {created[0]}


def test_warm_scan_reads_no_layer(fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fixtures_dir / "images" / "trivy-image3_gz_layers.tar"
    cold = catalog_image(str(path), cache_dir=tmp_path / "c")
    from stockade.inventory import driver as cat

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("a cached layer was decompressed")

    monkeypatch.setattr(cat, "decompressed", refuse)
    warm = catalog_image(str(path), cache_dir=tmp_path / "c")
    assert [p.to_dict() for p in warm.packages] == [p.to_dict() for p in cold.packages]
    assert len(list((tmp_path / "c").rglob("*"))) > 4


def test_damaged_cache_is_recomputed(fixtures_dir: Path, tmp_path: Path) -> None:
    path = fixtures_dir / "images" / "trivy-alpine-311.tar.gz"
    cold = catalog_image(str(path), cache_dir=tmp_path / "c")
    for f in (tmp_path / "c").rglob("*"):
        if f.is_file():
            f.write_bytes(b"{not json")
    again = catalog_image(str(path), cache_dir=tmp_path / "c")
    assert len(again.packages) == len(cold.packages) == 14


def test_cache_key_is_the_layer(fixtures_dir: Path) -> None:
    assert LayerCache(Path("/x"), "sig")._path("sha256:../../etc") is None


def test_apk_fields_from_trivy(fixtures_dir: Path) -> None:
    path = fixtures_dir / "images" / "trivy-alpine-311.tar.gz"
    trivy = {p["purl"]: p for p in trivy_packages("image", path)}
    for p in catalog_image(str(path)).packages:
        assert p.source_name == trivy[p.purl]["SrcName"]
        assert p.location == "lib/apk/db/installed"


def test_scratch_rootfs_has_no_os(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.txt").write_text("hi")
    inv = catalog_image(str(tmp_path))
    assert inv.os is None and inv.packages == []
    json.dumps(inv.to_dict())


def test_layer_digests_match_trivy(fixtures_dir: Path) -> None:
    """Compressed layers in a docker-archive: the blob digest, as Trivy reports it."""
    path = fixtures_dir / "images" / "trivy-image3_gz_layers.tar"
    expected = {(p["purl"], p["LayerDigest"]) for p in trivy_packages("image", path)}
    inv = catalog_image(str(path))
    digest_of = {layer.diff_id: layer.digest for layer in inv.layers}
    assert {(p.purl, digest_of[p.layer_digest]) for p in inv.packages} == expected


def test_distroless_status_d_matches_trivy(fixtures_dir: Path, tmp_path: Path) -> None:
    """A distroless-style root: one status.d file per package (no Status field), as Google's distroless ships."""
    root = tmp_path / "distroless"
    statusd = root / "var" / "lib" / "dpkg" / "status.d"
    statusd.mkdir(parents=True)
    paragraphs = (fixtures_dir / "local-debian12-dpkg-status").read_text().split("\n\n")
    kept = 0
    for para in paragraphs[:40]:
        lines = [line for line in para.splitlines() if not line.startswith("Status:")]
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Package:")), None)
        if name:
            (statusd / name).write_text("\n".join(lines) + "\n")
            (statusd / f"{name}.md5sums").write_text("d41d8cd98f00b204e9800998ecf8427e  usr/share/doc/x\n")
            kept += 1
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text('PRETTY_NAME="Distroless"\nID=debian\nVERSION_ID="12"\n')
    (root / "etc" / "debian_version").write_text("12.5\n")
    expected = {p["purl"] for p in trivy_packages("rootfs", root)}
    inv = catalog_image(str(root))
    assert inv.os is not None and inv.os.distroless and inv.os.name == "12.5"
    assert len(expected) == kept
    assert {p.purl for p in inv.packages} == expected


def test_oci_layout_as_tar(fixtures_dir: Path, tmp_path: Path) -> None:
    """skopeo writes an OCI archive; stockade reads it like the docker-archive it came from."""
    import gzip
    import shutil
    import subprocess

    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is required (installed by .ci/setup)")
    plain = tmp_path / "alpine.tar"
    plain.write_bytes(gzip.decompress((fixtures_dir / "images" / "trivy-alpine-311.tar.gz").read_bytes()))
    oci_tar = tmp_path / "alpine-oci.tar"
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"docker-archive:{plain}", f"oci-archive:{oci_tar}:alpine:3.11"],
        check=True,
        capture_output=True,
    )
    ours = catalog_image(str(oci_tar))
    ref = catalog_image(str(plain))
    assert [(p.purl, p.layer_digest) for p in ours.packages] == [(p.purl, p.layer_digest) for p in ref.packages]
    assert {layer.media_type for layer in ours.layers} == {"application/vnd.oci.image.layer.v1.tar+gzip"}

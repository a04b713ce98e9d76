"""A real Debian image built here (mmdebstrap + pip + npm, umoci, skopeo), compared with Trivy."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, trivy_packages

from stockade.image import ImageError
from stockade.inventory import catalog_image
from stockade.inventory.formats import to_cyclonedx, to_spdx

sys.path.insert(0, str(ROOT / "tools"))
from build_image import SITE, build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def debian() -> dict[str, Path]:
    return build(ROOT / ".cache" / "images")


@pytest.fixture(scope="session")
def trivy_debian(debian: dict[str, Path]) -> list[dict[str, Any]]:
    return trivy_packages("image", debian["docker"])


def _key(p: dict[str, Any]) -> tuple[str, str, str]:
    return (p["purl"], p.get("FilePath", ""), p.get("LayerDiffID", ""))


def test_docker_archive_matches_trivy_package_by_package(debian: dict[str, Path], trivy_debian: list) -> None:
    inv = catalog_image(str(debian["docker"]))
    os_paths = {"var/lib/dpkg/status"}
    got = {(p.purl, "" if p.location in os_paths else p.location, p.layer_digest) for p in inv.packages}
    expected = {_key(p) for p in trivy_debian}
    assert len(expected) > 150
    assert got == expected
    ecos = {p.ecosystem for p in inv.packages}
    assert ecos == {"deb", "pypi", "npm"}
    assert inv.os is not None and inv.os.family == "debian" and inv.os.name.startswith("12")


def test_source_packages_match_trivy(debian: dict[str, Path], trivy_debian: list) -> None:
    trivy = {p["purl"]: p for p in trivy_debian if p["purl"].startswith("pkg:deb/")}
    for p in catalog_image(str(debian["docker"])).packages:
        if p.ecosystem == "deb":
            assert p.source_name == trivy[p.purl].get("SrcName", p.name), p.name


@pytest.mark.parametrize("kind", ["oci", "zstd"])
def test_oci_layouts_give_the_same_inventory(debian: dict[str, Path], kind: str) -> None:
    ref = catalog_image(str(debian["docker"]))
    other = catalog_image(str(debian[kind]))
    assert [(p.purl, p.location, p.layer_digest) for p in other.packages] == [
        (p.purl, p.location, p.layer_digest) for p in ref.packages
    ]
    media = {layer.media_type for layer in other.layers}
    assert any(("zstd" if kind == "zstd" else "gzip") in m for m in media), media


def test_whiteouts_and_opaque_dirs(debian: dict[str, Path]) -> None:
    names = {p.name for p in catalog_image(str(debian["oci"])).packages if p.ecosystem == "pypi"}
    assert "six" not in names  # .wh.six-1.16.0.dist-info in the last layer
    assert "idna" not in names  # .wh..wh..opq inside idna-3.4.dist-info
    assert {"requests", "urllib3", "certifi", "charset-normalizer", "PyYAML"} <= names


def test_history_attribution(debian: dict[str, Path]) -> None:
    inv = catalog_image(str(debian["oci"]))
    by_eco = {p.ecosystem: p.layer_created_by for p in inv.packages}
    assert by_eco["deb"].startswith("mmdebstrap")
    assert by_eco["pypi"].startswith("pip install")
    assert by_eco["npm"].startswith("npm install")
    assert all(p.location.startswith(SITE) for p in inv.packages if p.ecosystem == "pypi")


def test_lockfile_mode_reads_the_npm_lock(debian: dict[str, Path], trivy_debian: list) -> None:
    inv = catalog_image(str(debian["oci"]), lockfiles=True)
    lock = {(p.name, p.version) for p in inv.packages if p.location == "srv/app/package-lock.json"}
    installed = {
        (p["name"], p["version"])
        for p in trivy_debian
        if p["purl"].startswith("pkg:npm/") and p.get("FilePath", "").startswith("srv/app/node_modules/")
    }
    assert lock and lock == installed


def test_cyclonedx_validates_against_the_1_6_schema(debian: dict[str, Path]) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    inv = catalog_image(str(debian["oci"]))
    doc = to_cyclonedx(inv)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(doc.decode()) is None
    data = json.loads(doc)
    assert data["specVersion"] == "1.6"
    assert {c["purl"] for c in data["components"] if "purl" in c} == {p.purl for p in inv.packages}


def test_spdx_validates(debian: dict[str, Path], tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    inv = catalog_image(str(debian["oci"]))
    out = tmp_path / "sbom.spdx.json"
    out.write_bytes(to_spdx(inv))
    doc = parse_file(str(out))
    assert validate_full_spdx_document(doc) == []
    assert len(doc.packages) == len(inv.packages) + 1


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def test_multi_arch_index_selects_platform(debian: dict[str, Path], tmp_path: Path) -> None:
    """An index with an amd64 image (all layers) and an arm64 image (base layer only)."""
    layout = tmp_path / "multi"
    shutil.copytree(debian["oci"], layout)
    index = json.loads((layout / "index.json").read_text())
    amd_desc = index["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / amd_desc["digest"][7:]).read_text())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    config["architecture"] = "arm64"
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
    config["history"] = [h for h in config["history"] if not h.get("empty_layer")][:1]
    cfg = json.dumps(config).encode()
    arm_manifest = dict(
        manifest,
        layers=manifest["layers"][:1],
        config=dict(manifest["config"], digest=_write_blob(layout, cfg), size=len(cfg)),
    )
    arm = json.dumps(arm_manifest).encode()
    nested = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            dict(amd_desc, annotations=None, platform={"os": "linux", "architecture": "amd64"}),
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _write_blob(layout, arm),
                "size": len(arm),
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ],
    }
    nested["manifests"][0].pop("annotations")
    idx = json.dumps(nested).encode()
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": _write_blob(layout, idx),
                        "size": len(idx),
                    }
                ],
            }
        )
    )
    amd = catalog_image(str(layout), platform="linux/amd64")
    arm64 = catalog_image(str(layout), platform="linux/arm64")
    assert amd.architecture == "amd64" and arm64.architecture == "arm64"
    assert {p.ecosystem for p in arm64.packages} == {"deb"}
    assert {p.ecosystem for p in amd.packages} == {"deb", "pypi", "npm"}
    with pytest.raises(ImageError, match=r"no manifest for platform linux/s390x \(has: linux/amd64, linux/arm64/v8\)"):
        catalog_image(str(layout), platform="linux/s390x")


_CLEAN = re.compile(
    r"^((A|L)?GPL-\d(\.\d)?\+?|BSD-[234]-clause|Expat|MIT|ISC|Zlib|public-domain|permissive|Apache-2\.0|GFDL-NIV-1\.3\+?)$",
    re.IGNORECASE,
)


def _raw_license_values(rootfs_tar: Path) -> dict[str, list[str]]:
    """The 'License:' values of every copyright file, read straight from the base layer (the test's own reading)."""
    out: dict[str, list[str]] = {}
    with tarfile.open(rootfs_tar) as tf:
        for m in tf:
            parts = m.name.lstrip("./").split("/")
            if m.isreg() and len(parts) == 5 and parts[:3] == ["usr", "share", "doc"] and parts[4] == "copyright":
                text = tf.extractfile(m).read().decode("utf-8", "replace")  # type: ignore[union-attr]
                vals = re.findall(r"^License:[ \t]*(\S.*)$", text, re.MULTILINE)
                vals += re.findall(r"/usr/share/common-licenses/([A-Za-z0-9.+-]*[A-Za-z0-9+])", text)
                out[parts[3]] = vals
    return out


def test_debian_licences_match_trivy_where_the_copyright_file_is_plain(
    debian: dict[str, Path], trivy_debian: list
) -> None:
    """Where a copyright file names only versioned/standard licences, stockade and Trivy agree exactly.

    Elsewhere they differ on purpose (docs/inventory.md): Trivy guesses a version for a bare "GPL".
    """
    raw = _raw_license_values(ROOT / ".cache" / "images" / "rootfs.tar")
    trivy = {}
    for p in trivy_debian:
        if p["purl"].startswith("pkg:deb/"):
            trivy[p["name"]] = p
    inv = catalog_image(str(debian["docker"]))
    checked = 0
    for p in inv.packages:
        if p.ecosystem != "deb" or p.name not in raw or not raw[p.name]:
            continue
        names = [n for v in raw[p.name] for n in re.split(r"\s+(?:and|or)\s+", v)]
        if not all(_CLEAN.match(n.strip()) for n in names):
            continue
        checked += 1
        assert set(p.licenses) == set(trivy[p.name]["licenses"]), p.name
    assert checked >= 25

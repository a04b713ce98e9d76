"""Catalogers on real package databases, binaries and archives, each against an independent oracle."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import trivy_cyclonedx, trivy_packages

from stockade.inventory import catalog_image
from stockade.inventory.apk import ApkCataloger
from stockade.inventory.dpkg import DpkgCataloger
from stockade.inventory.java import JavaArchiveCataloger


def dpkg_query(status: Path, tmp: Path) -> set[tuple[str, str, str]]:
    admin = tmp / "admin"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    shutil.copy(status, admin / "status")
    out = subprocess.run(
        [
            "dpkg-query",
            "--admindir",
            str(admin),
            "-W",
            "-f",
            "${db:Status-Status}\t${Package}\t${Version}\t${source:Package}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {(n, v, s) for st_, n, v, s in (line.split("\t") for line in out.splitlines()) if st_ == "installed"}


@pytest.mark.parametrize(
    "src",
    ["local-debian12-dpkg-status", "claircore/dpkg-texlive.status", "scalibr/dpkg-valid", "syft/dpkg-status-coverage"],
)
def test_dpkg_matches_dpkg_query(fixtures_dir: Path, src: str, tmp_path: Path) -> None:
    expected = dpkg_query(fixtures_dir / src, tmp_path)
    assert expected
    pkgs = DpkgCataloger().parse("var/lib/dpkg/status", (fixtures_dir / src).read_bytes()).packages
    assert {(p.name, p.version, p.source_name) for p in pkgs} == expected


def _rootfs_with(tmp: Path, files: dict[str, Path | str]) -> Path:
    root = tmp / "rootfs"
    for rel, src in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copy(src, dest)
        else:
            dest.write_text(src)
    return root


@pytest.mark.parametrize("src", ["trivy/apk-installed", "scalibr/apk-installed", "syft/apk-multiple-2-installed"])
def test_apk_matches_trivy(fixtures_dir: Path, src: str, tmp_path: Path) -> None:
    root = _rootfs_with(
        tmp_path,
        {
            "lib/apk/db/installed": fixtures_dir / src,
            "etc/alpine-release": "3.18.4\n",
            "etc/os-release": 'ID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME="Alpine"\n',
        },
    )
    expected = {(p["name"], p["version"], p.get("SrcName", "")) for p in trivy_packages("rootfs", root)}
    got = {(p.name, p.version, p.source_name) for p in catalog_image(str(root)).packages}
    assert expected and got == expected
    ApkCataloger().parse("x", (fixtures_dir / src).read_bytes())


def test_go_and_rust_binaries_match_trivy(fixtures_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "bin"
    shutil.copytree(fixtures_dir / "binaries", root)
    for f in root.iterdir():
        f.chmod(0o755)
    expected = {p["purl"] for p in trivy_packages("rootfs", root)}
    got = {p.purl for p in catalog_image(str(root)).packages}
    assert len(expected) >= 14
    assert got == expected


def _pom_oracle(jar: Path) -> set[tuple[str, str]]:
    """Every pom.properties in the archive and in nested archives, read with the zip tool of Python's stdlib."""
    out: set[tuple[str, str]] = set()

    def walk(zf: zipfile.ZipFile) -> None:
        for n in zf.namelist():
            if n.endswith("pom.properties") and n.startswith("META-INF/maven/"):
                kv = dict(
                    line.split("=", 1)
                    for line in zf.read(n).decode().splitlines()
                    if "=" in line and not line.startswith("#")
                )
                out.add((f"{kv['groupId'].strip()}:{kv['artifactId'].strip()}", kv["version"].strip()))
            if n.endswith((".jar", ".war")):
                import io

                walk(zipfile.ZipFile(io.BytesIO(zf.read(n))))

    walk(zipfile.ZipFile(jar))
    return out


@pytest.mark.parametrize(
    "name",
    ["guava-31.1-jre.jar", "trivy-maven.war", "jackson-annotations-2.15.0-rc2.jar", "io.quarkus.gizmo.gizmo-1.1.jar"],
)
def test_jar_matches_its_pom_properties(fixtures_dir: Path, name: str) -> None:
    # Trivy cannot be the oracle here: it refuses to scan jars without downloading its Java DB.
    jar = fixtures_dir / "jars" / name
    expected = _pom_oracle(jar)
    assert expected
    got = {(p.name, p.version) for p in JavaArchiveCataloger().parse(name, jar.read_bytes()).packages}
    assert got == expected


def test_nested_log4j_is_found(fixtures_dir: Path) -> None:
    war = fixtures_dir / "jars" / "trivy-maven.war"
    pkgs = JavaArchiveCataloger().parse("app.war", war.read_bytes()).packages
    names = {p.name: p for p in pkgs}
    assert "com.fasterxml.jackson.core:jackson-databind" in names
    assert "!" in names["com.fasterxml.jackson.core:jackson-databind"].location


@pytest.mark.parametrize(
    "debian, spdx",
    [  # DEP-5 short names (Debian policy, copyright-format 1.0) and their SPDX identifiers
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("GFDL-NIV-1.3", "GFDL-1.3-no-invariants-only"),
        ("GFDL-1.3+", "GFDL-1.3-or-later"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause-UC", "BSD-4-Clause-UC"),
        ("Expat", "MIT"),
        ("GPL-3+ with Bison exception", "GPL-3.0-or-later WITH Bison-exception"),
        ("GPL", "GPL"),  # no version given: kept as written, not guessed
    ],
)
def test_dep5_names_to_spdx(debian: str, spdx: str) -> None:
    from stockade.inventory.licenses import normalize

    assert normalize(debian) == spdx


def test_free_text_license_line_is_kept_whole() -> None:
    from stockade.inventory.licenses import split_expression

    assert split_expression("BSD-4-clause-UC and MIT-like") == ["BSD-4-Clause-UC", "MIT"]
    line = "Permission is hereby granted, free of charge, to any person obtaining"
    assert split_expression(line) == [line]


def _claircore_roots(fixtures_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (fixtures_dir / "claircore" / "release-files").rglob("etc") if p.is_dir())


def test_os_detection_on_claircore_release_files(fixtures_dir: Path) -> None:
    """110 real release files in 60 root filesystems; Trivy is the oracle where it detects an OS.

    Where Trivy detects none (Debian without /etc/debian_version, new distros), the oracle is the
    os-release file itself as the standard library parses it.
    """
    import platform

    roots = _claircore_roots(fixtures_dir)
    assert len(roots) >= 50
    by_trivy = 0
    for root in roots:
        inv = catalog_image(str(root), cache_dir=False)
        osr_file, rh_file = root / "etc" / "os-release", root / "etc" / "redhat-release"
        conflicting = (
            osr_file.is_file()
            and rh_file.is_file()
            and (
                platform._parse_os_release(osr_file.read_text().splitlines()).get("VERSION_ID", "")  # type: ignore[attr-defined]
                not in rh_file.read_text()
            )
        )
        # where os-release and redhat-release disagree (claircore's rhel/7 on purpose), Trivy's answer changes
        # from run to run; stockade's rule is that os-release wins, checked against os-release below
        doc = trivy_cyclonedx("rootfs", root) if not conflicting else {}
        trivy_os = [(c["name"], c.get("version")) for c in doc.get("components", []) if c["type"] == "operating-system"]
        if trivy_os:
            by_trivy += 1
            assert inv.os is not None and (inv.os.family, inv.os.name) == trivy_os[0], root
            continue
        osr = root / "etc" / "os-release"
        assert osr.is_file(), root
        kv = platform._parse_os_release(osr.read_text().splitlines())  # type: ignore[attr-defined]
        assert inv.os is not None and inv.os.name == kv.get("VERSION_ID", ""), root
        assert {"rhel": "redhat"}.get(kv["ID"], kv["ID"]) == inv.os.family, root
    assert by_trivy >= 40

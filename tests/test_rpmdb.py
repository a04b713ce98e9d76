"""rpm database readers against Debian's rpm tool (SQLite, Berkeley DB) and the recorded rpm -qa (NDB)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.inventory.base import ParseError
from stockade.inventory.rpm import RpmCataloger
from stockade.inventory.rpmdb import parse_header, read_headers

QF = "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\n"


def rpm_qa(dbdir: Path) -> set[tuple[str, str, str, str]]:
    if shutil.which("rpm") is None:
        pytest.fail("Debian's rpm package is needed as the oracle")
    proc = subprocess.run(
        ["rpm", "--dbpath", str(dbdir), "-qa", "--qf", QF], capture_output=True, text=True, check=True
    )
    rows = set()
    for line in proc.stdout.splitlines():
        name, evr, arch, srpm = line.split("\t")
        if name == "gpg-pubkey":
            continue
        epoch, _, vr = evr.partition(":")
        rows.add((name, vr if epoch == "0" else evr, arch, srpm))
    return rows


def ours(path: Path) -> set[tuple[str, str, str, str]]:
    pkgs = RpmCataloger().parse(path.name, path.read_bytes()).packages
    out = set()
    for p in pkgs:
        srpm = f"{p.source_name}-{p.source_version}.src.rpm" if p.source_version else ""
        out.add((p.name, p.version, p.arch, srpm))
    return out


@pytest.mark.parametrize("sub", ["go-rpmdb/amazonlinux2023-plain", "go-rpmdb/cbl-mariner-2.0"])
def test_sqlite_matches_rpm_tool(fixtures_dir: Path, sub: str, tmp_path: Path) -> None:
    db = fixtures_dir / sub
    expected = rpm_qa(db)
    assert len(expected) > 100
    assert ours(db / "rpmdb.sqlite") == expected


@pytest.mark.parametrize("src", ["go-rpmdb/libuuid/Packages", "scalibr/rpm-Packages_epoch", "syft/rpm-Packages"])
def test_berkeley_db_matches_rpm_tool(fixtures_dir: Path, src: str, tmp_path: Path) -> None:
    shutil.copy(fixtures_dir / src, tmp_path / "Packages")
    expected = rpm_qa(tmp_path)
    assert expected
    assert ours(tmp_path / "Packages") == expected


def test_epoch_kept(fixtures_dir: Path) -> None:
    pkgs = RpmCataloger().parse("p", (fixtures_dir / "scalibr/rpm-Packages_epoch").read_bytes()).packages
    assert [(p.name, p.epoch, p.version) for p in pkgs] == [("hello", 1, "1:0.0.1-rls")]


def test_ndb_matches_recorded_rpm_qa(fixtures_dir: Path) -> None:
    # Debian's rpm has no NDB backend: the fixture ships the rpm -qa of the SUSE image it came from.
    csv = (fixtures_dir / "go-rpmdb/sle15-bci/packages.csv").read_text()
    expected = set()
    for line in csv.splitlines():
        f = line.split("\u00b6")
        epoch, name, version, release, arch = f[0], f[1], f[2], f[3], f[4]
        evr = f"{version}-{release}" if not epoch or epoch == "0" else f"{epoch}:{version}-{release}"
        if name != "gpg-pubkey":
            expected.add((name, evr, arch))
    pkgs = RpmCataloger().parse("Packages.db", (fixtures_dir / "go-rpmdb/sle15-bci/Packages.db").read_bytes()).packages
    assert {(p.name, p.version, p.arch) for p in pkgs} == expected
    assert len(expected) == 36


def test_amazon_csv_agrees_with_sqlite(fixtures_dir: Path) -> None:
    csv = (fixtures_dir / "go-rpmdb/amazonlinux2023-plain/packages.csv").read_text()
    names = {line.split("\u00b6")[1] for line in csv.splitlines()} - {"gpg-pubkey"}
    pkgs = RpmCataloger().parse("x", (fixtures_dir / "go-rpmdb/amazonlinux2023-plain/rpmdb.sqlite").read_bytes())
    assert {p.name for p in pkgs.packages} == names


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_garbage_gives_clean_error(data: bytes) -> None:
    for blob in (data, b"SQLite format 3\x00" + data, b"RpmP" + data, data.rjust(600, b"\x00")):
        with contextlib.suppress(ParseError):
            read_headers(blob, "fuzz")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=8, max_size=2048))
def test_header_garbage_gives_clean_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_header(data, "fuzz")


def test_truncated_real_databases_fail_cleanly(fixtures_dir: Path) -> None:
    for src in ("go-rpmdb/sle15-bci/Packages.db", "go-rpmdb/libuuid/Packages"):
        data = (fixtures_dir / src).read_bytes()
        for cut in (100, len(data) // 3, len(data) - 7):
            try:
                read_headers(data[:cut], src)
            except ParseError as exc:
                assert src in str(exc)

"""Version schemes against their real oracles: dpkg, libapt (python3-apt), rpm's own rpm.vercmp."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import libapt_compare, rpm_vercmp_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.match.versions import (
    VersionError,
    apk_compare,
    compare,
    dpkg_compare,
    pep440_compare,
    rpm_compare,
    semver_compare,
)

_piece = st.text(alphabet="0123456789abcz.+~", min_size=1, max_size=6)
_alnum_start = st.text(alphabet="0123456789", min_size=1, max_size=3)


@st.composite
def debian_versions(draw: st.DrawFn) -> str:
    epoch = draw(st.sampled_from(["", "1:", "2:"]))
    upstream = draw(_alnum_start) + draw(st.text(alphabet="0123456789abcz.+~", max_size=8))
    revision = draw(st.sampled_from(["", "-1", "-1~deb12u1", "-2+b1", "-0ubuntu1", "-1.1", "-r3"]))
    return f"{epoch}{upstream}{revision}"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(debian_versions(), debian_versions()), min_size=200, max_size=200))
def test_dpkg_against_libapt(pairs: list[tuple[str, str]]) -> None:
    expected = libapt_compare(pairs)
    assert [dpkg_compare(a, b) for a, b in pairs] == expected


@settings(max_examples=25, deadline=None)
@given(debian_versions(), debian_versions())
def test_dpkg_against_dpkg_compare_versions(a: str, b: str) -> None:
    def dpkg(op: str) -> bool:
        return subprocess.run(["dpkg", "--compare-versions", a, op, b], capture_output=True).returncode == 0

    ours = dpkg_compare(a, b)
    assert (ours < 0) == dpkg("lt") and (ours == 0) == dpkg("eq") and (ours > 0) == dpkg("gt")


@st.composite
def rpm_versions(draw: st.DrawFn) -> str:
    epoch = draw(st.sampled_from(["", "1:", "3:"]))
    version = draw(_alnum_start) + draw(st.text(alphabet="0123456789abz._~^+", max_size=7))
    release = draw(st.text(alphabet="0123456789abelz._~^", min_size=1, max_size=8))
    return f"{epoch}{version}-{release}"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(rpm_versions(), rpm_versions()), min_size=150, max_size=150))
def test_rpm_against_rpm_vercmp(pairs: list[tuple[str, str]]) -> None:
    pairs = [(a, b) for a, b in pairs if '"' not in a + b]
    assert [rpm_compare(a, b) for a, b in pairs] == rpm_vercmp_batch(pairs)


def test_rpm_real_versions_from_the_rpm_databases(fixtures_dir: Path) -> None:
    from stockade.inventory.rpm import RpmCataloger

    versions = []
    for db in ("go-rpmdb/amazonlinux2023-plain/rpmdb.sqlite", "go-rpmdb/cbl-mariner-2.0/rpmdb.sqlite"):
        versions += [p.version for p in RpmCataloger().parse("x", (fixtures_dir / db).read_bytes()).packages]
    pairs = [(a, b) for a, b in zip(versions, versions[1:] + versions[:1], strict=True)]
    assert [rpm_compare(a, b) for a, b in pairs] == rpm_vercmp_batch(pairs)


# apk: no apk-tools on Debian. The oracle is the order Alpine itself publishes: within one secdb
# package entry, every fixed version was released after the previous one; plus apk-tools' documented rules.
@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("1.2.3-r0", "1.2.3-r1", -1),
        ("1.2.3-r10", "1.2.3-r9", 1),
        ("1.2.3_rc1-r0", "1.2.3-r0", -1),
        ("1.2.3_p1-r0", "1.2.3-r0", 1),
        ("1.2.3a-r0", "1.2.3-r0", 1),
        ("1.2-r0", "1.2.0-r0", -1),
        ("1.1.1g-r0", "1.1.1k-r0", -1),
        ("2.0_alpha1", "2.0_beta1", -1),
        ("1.0_git20200101", "1.0", 1),
    ],
)
def test_apk_rules(a: str, b: str, expected: int) -> None:
    assert apk_compare(a, b) == expected


def test_apk_on_every_alpine_secdb_version() -> None:
    """Every fixed version Alpine published parses; where apk and Debian rules coincide (no _suffix), the
    order equals libapt's."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "vuln" / "pschou+oval.tar.gz"
    versions: set[str] = set()
    with tarfile.open(shared) as tf:
        for m in tf:
            if m.name.endswith(".json") and "/alpine/" in m.name:
                doc = json.load(tf.extractfile(m))  # type: ignore[arg-type]
                for entry in doc["packages"]:
                    versions.update(v for v in entry["pkg"]["secfixes"] if v[0].isdigit())
    assert len(versions) > 4000
    unparsable = set()
    for v in versions:
        try:
            apk_compare(v, v)
        except VersionError:
            unparsable.add(v)
    assert unparsable == {"2.15.r-r1"}  # a typo in Alpine's data with no reading: a bad record for the DB build
    # well-formed (one "-rN", no "_suffix"): the part of the grammar where apk and dpkg rules coincide
    plain = sorted(
        v for v in versions - unparsable if "_" not in v and v.count("-") == 1 and re.search(r"^[\d.a-z]+-r\d+$", v)
    )
    pairs = list(zip(plain, plain[7:] + plain[:7], strict=True))
    assert [apk_compare(a, b) for a, b in pairs] == libapt_compare(pairs)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("1.0.0-alpha", "1.0.0-alpha.1", -1),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
        ("1.0.0-beta.2", "1.0.0-beta.11", -1),
        ("1.0.0-rc.1", "1.0.0", -1),
        ("v0.0.0-20211006190231-62292e806868", "v0.7.0", -1),
        ("v0.0.0-20211006190231-62292e806868", "v0.0.0-20220127200216-cd36cc0744dd", -1),
        ("1.2.3+build", "1.2.3", 0),
    ],
)
def test_semver_spec_examples(a: str, b: str, expected: int) -> None:
    # the precedence examples of semver.org section 11, and Go pseudo-versions
    assert semver_compare(a, b) == expected


def test_pep440_and_others() -> None:
    assert pep440_compare("1.0rc1", "1.0") == -1
    assert pep440_compare("1.0.post1", "1.0") == 1
    assert compare("maven", "2.9.10.6", "2.9.10.7") == -1
    assert compare("maven", "1.0-SNAPSHOT", "1.0") == -1
    assert compare("nuget", "1.0.0-beta", "1.0.0") == -1
    assert compare("gem", "1.0.0.pre", "1.0.0") == -1
    assert compare("composer", "v5.4.0", "5.4.1") == -1
    with pytest.raises(VersionError):
        compare("npm", "not.a.version!", "1.0.0")


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,2}){0,3}(\.(pre|rc|beta|a)[0-9]?)?(\.[0-9])?\Z"),
    st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,2}){0,3}(\.(pre|rc|beta|a)[0-9]?)?(\.[0-9])?\Z"),
)
def test_rubygems_against_univers(a: str, b: str) -> None:
    """stockade's RubyGems comparison (written for speed) against univers' Gem::Version port."""
    from univers.versions import RubygemsVersion

    from stockade.match.versions import gem_compare

    ua, ub = RubygemsVersion(a), RubygemsVersion(b)
    assert gem_compare(a, b) == (ua > ub) - (ua < ub)

"""Known-answer tests built from the advisories themselves, not from the matcher.

Each expected set is computed here from the published data (Alpine's secdb, Debian's OVAL criterion
text, the Go vulndb OSV ranges) with an independent version comparison (libapt, python-semver).
"""

from __future__ import annotations

import bz2
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import semver
import yaml
from conftest import SHARED, libapt_lt, rpm_vercmp_batch

from stockade.inventory import catalog_image
from stockade.match.matcher import match
from stockade.vulndb.build import build
from stockade.vulndb.store import VulnDB

VULN = SHARED / "data" / "vuln"


def _secdb(branch: str) -> dict[str, list[tuple[str, str]]]:
    """origin package -> [(fixed version, id)] for one Alpine branch, straight from the secdb files."""
    out: dict[str, list[tuple[str, str]]] = {}
    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        for repo in ("main", "community"):
            doc = json.load(tf.extractfile(f"pschou+oval/alpine/v{branch}/{repo}.json"))  # type: ignore[arg-type]
            for entry in doc["packages"]:
                for fixed, ids in entry["pkg"]["secfixes"].items():
                    for vid in ids or []:
                        for one in str(vid).split():
                            out.setdefault(entry["pkg"]["name"], []).append((fixed, one))
    return out


def _secdb_expected(inv: Any, branch: str) -> set[tuple[str, str]]:
    """(id, source package) of every secdb fix newer than the installed version (libapt compares)."""
    sec = _secdb(branch)
    candidates = [
        (p.source_name, p.version, fixed, vid)
        for p in inv.packages
        for fixed, vid in sec.get(p.source_name, [])
        if fixed not in ("0", "0-r0") and re.match(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9][\w.:-]*$", vid)
    ]
    lt = libapt_lt([(installed, fixed) for _, installed, fixed, _ in candidates])
    return {(vid, src) for (src, _, _, vid), is_lt in zip(candidates, lt, strict=True) if is_lt}


@pytest.mark.parametrize("image, branch", [("39", "3.9"), ("310", "3.10"), ("311", "3.11")])
def test_alpine_images_report_what_secdb_lists(fixtures_dir: Path, vulndb: VulnDB, image: str, branch: str) -> None:
    inv = catalog_image(str(fixtures_dir / "images" / f"trivy-alpine-{image}.tar.gz"))
    expected = _secdb_expected(inv, branch)
    got = {(f.vuln_id, f.package.source_name) for f in match(inv, vulndb)}
    assert len(expected) >= 10
    assert got == expected


def test_debian12_status_reports_exactly_what_bookworm_oval_says(
    fixtures_dir: Path, vulndb: VulnDB, tmp_path: Path
) -> None:
    root = tmp_path / "deb12"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var/lib/dpkg/status").write_bytes((fixtures_dir / "local-debian12-dpkg-status").read_bytes())
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "etc/debian_version").write_text("12.1\n")
    inv = catalog_image(str(root))
    # the oracle: each definition's criterion comment, "<source> DPKG is earlier than <version>"
    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        member = tf.extractfile("pschou+oval/debian/oval-definitions-bookworm.xml.bz2")
        assert member is not None
        oval = bz2.decompress(member.read()).decode()
    fixed_in: dict[str, list[tuple[str, str]]] = {}
    for cve, src, ver in re.findall(
        r"<title>(\S+) (\S+)</title>.*?comment=\"\S+ DPKG is earlier than ([^\"]+)\"", oval, flags=re.DOTALL
    ):
        fixed_in.setdefault(src, []).append((cve, ver))
    sources = {(p.source_name, p.source_version) for p in inv.packages}
    candidates = [(src, sv, cve, fixed) for src, sv in sources for cve, fixed in fixed_in.get(src, [])]
    lt = libapt_lt([(sv, fixed) for _, sv, _, fixed in candidates])
    expected = {(cve, src) for (src, _, cve, _), is_lt in zip(candidates, lt, strict=True) if is_lt}
    got = {(f.vuln_id, f.package.source_name) for f in match(inv, vulndb) if f.package.ecosystem == "deb"}
    assert len(candidates) > 1000
    assert got == expected


def _semver(v: str) -> semver.Version:
    return semver.Version.parse(v.removeprefix("v"))


def test_go_binary_reports_the_x_net_advisories(fixtures_dir: Path, vulndb: VulnDB, tmp_path: Path) -> None:
    root = tmp_path / "bin"
    root.mkdir()
    (root / "app").write_bytes((fixtures_dir / "binaries" / "syft-go-bin-test").read_bytes())
    (root / "app").chmod(0o755)
    inv = catalog_image(str(root))
    xnet = [p for p in inv.packages if p.name == "golang.org/x/net"]
    assert len(xnet) == 1
    installed = _semver(xnet[0].version)
    expected = set()
    with tarfile.open(VULN / "golang+vulndb.tar.gz") as tf:
        for m in tf:
            if not m.name.endswith(".json") or "/data/osv/" not in m.name:
                continue
            doc = json.load(tf.extractfile(m))  # type: ignore[arg-type]
            if doc.get("withdrawn"):
                continue
            for aff in doc.get("affected", []):
                if aff["package"]["name"] != "golang.org/x/net":
                    continue
                for r in aff.get("ranges", []):
                    lo = None
                    for ev in r["events"]:
                        if "introduced" in ev:
                            lo = _semver(ev["introduced"]) if ev["introduced"] != "0" else None
                        elif "fixed" in ev:
                            if (lo is None or installed >= lo) and installed < _semver(ev["fixed"]):
                                expected.add(doc["id"])
                            lo = None
    got = {f.vuln_id for f in match(inv, vulndb) if f.package.name == "golang.org/x/net"}
    assert len(expected) >= 5
    assert got == expected


def test_findings_carry_fix_layer_and_remediation(fixtures_dir: Path, vulndb: VulnDB) -> None:
    inv = catalog_image(str(fixtures_dir / "images" / "trivy-image3_gz_layers.tar"))
    findings = match(inv, vulndb)
    assert findings
    for f in findings:
        assert f.fixed_version and f.package.layer_digest.startswith("sha256:")
        assert f.remediation.startswith(f"upgrade {f.package.name}")
        assert f" to {f.fixed_version} " in f.remediation


def test_kev_flag_from_the_catalog(vulndb: VulnDB) -> None:
    with tarfile.open(VULN / "cisagov+kev-data.tar.gz") as tf:
        doc = json.load(tf.extractfile("cisagov+kev-data/known_exploited_vulnerabilities.json"))  # type: ignore[arg-type]
    cves = [v["cveID"] for v in doc["vulnerabilities"]]
    assert all(vulndb.kev(c) for c in cves[:200])
    assert not vulndb.kev("CVE-1999-0001-not-a-cve")


def test_bad_feed_records_are_counted_not_fatal(tmp_path: Path) -> None:
    feed = tmp_path / "feed" / "vulns" / "x"
    feed.mkdir(parents=True)
    (feed / "GOOD-1.yaml").write_text(
        "id: GOOD-1\naffected:\n- package: {name: Flask, ecosystem: PyPI}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}, {fixed: 2.0.0}]}]\n"
    )
    (feed / "BAD-1.yaml").write_text("id: BAD-1\naffected:\n- package: {name: x, ecosystem: NotAnEcosystem}\n")
    (feed / "BAD-2.yaml").write_text(": : not yaml [\n")
    (feed / "BAD-3.yaml").write_text("- just a list\n")
    dest = tmp_path / "v.db"
    rep = build([tmp_path / "feed"], dest)
    st = rep.sources["feed/vulns"]
    assert (st.records, st.bad) == (1, 3)
    assert any("unknown ecosystem 'NotAnEcosystem'" in e for e in st.errors)
    db = VulnDB(dest)
    assert [vid for vid, _ in db.affected("pypi", "", "flask")] == ["GOOD-1"]


def test_a_bad_entry_of_a_catalog_keeps_the_others(tmp_path: Path) -> None:
    """Files holding many records (CISA's KEV catalog, an Alpine secdb branch): one entry of the wrong shape is
    counted, and every other entry of the real file is still imported (a list as a cveID once crashed the
    build in SQLite; a number as a package dropped its whole branch)."""
    with tarfile.open(VULN / "cisagov+kev-data.tar.gz") as tf:
        kev_doc = json.load(tf.extractfile("cisagov+kev-data/known_exploited_vulnerabilities.json"))  # type: ignore[arg-type]
    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        sec_doc = json.load(tf.extractfile("pschou+oval/alpine/v3.10/main.json"))  # type: ignore[arg-type]
    cves = [v["cveID"] for v in kev_doc["vulnerabilities"]]
    kev_doc["vulnerabilities"][0]["cveID"] = {"not": "an id"}
    kev_doc["vulnerabilities"][1] = 7
    first = sec_doc["packages"][0]["pkg"]["name"]
    sec_doc["packages"][0] = 3.5
    sec_doc["packages"][1]["pkg"]["secfixes"] = ["not", "a", "map"]
    second = sec_doc["packages"][1]["pkg"]["name"]
    feed = tmp_path / "feed"
    (feed / "alpine" / "v3.10").mkdir(parents=True)
    (feed / "known_exploited_vulnerabilities.json").write_text(json.dumps(kev_doc))
    (feed / "alpine" / "v3.10" / "main.json").write_text(json.dumps(sec_doc))
    rep = build([feed], tmp_path / "v.db")
    kev_st, sec_st = rep.sources["feed"], rep.sources["feed/alpine"]
    assert (kev_st.records, kev_st.bad) == (len(cves) - 2, 2), kev_st.errors
    assert sec_st.bad == 2 and sec_st.records > 100, sec_st.errors
    db = VulnDB(tmp_path / "v.db")
    assert all(db.kev(c) for c in cves[2:]) and not db.kev(cves[1])
    kept = {
        p["pkg"]["name"]
        for p in sec_doc["packages"][2:]
        for fixed, ids in (p["pkg"].get("secfixes") or {}).items()
        if fixed not in ("0", "0-r0") and any(str(i).startswith("CVE-") for i in ids or [])
    }
    assert kept and all(list(db.affected("apk", "alpine:3.10", name)) for name in kept)
    assert not list(db.affected("apk", "alpine:3.10", first)) or first in kept
    assert not list(db.affected("apk", "alpine:3.10", second)) or second in kept


def test_failed_build_keeps_the_old_database(tmp_path: Path) -> None:
    dest = tmp_path / "v.db"
    good = tmp_path / "feed" / "vulns"
    good.mkdir(parents=True)
    (good / "A.yaml").write_text(
        "id: A\naffected:\n- package: {name: a, ecosystem: PyPI}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}]}]\n"
    )
    build([tmp_path / "feed"], dest)
    before = dest.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    with pytest.raises(Exception, match=r"broken\.tar\.gz"):
        build([tmp_path / "feed", broken], dest)
    assert dest.read_bytes() == before
    assert not list(tmp_path.glob(".vuln-*"))


def test_scan_cli_gate(fixtures_dir: Path, vulndb: VulnDB, tmp_path: Path) -> None:
    image = str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz")
    cli = [sys.executable, "-m", "stockade.cli.main", "scan", "--db", str(vulndb.path), "-q"]
    ok = subprocess.run([*cli, "-f", "json", image], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    ids = {f["id"] for f in doc["findings"]}
    assert ids
    gate = subprocess.run([*cli, "--exit-code", "4", "-f", "sarif", image], capture_output=True, text=True)
    assert gate.returncode == 4
    sarif = json.loads(gate.stdout)
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == ids
    ignore = tmp_path / ".stockadeignore"
    ignore.write_text("\n".join(f"{i}  # accepted risk" for i in ids) + "\n")
    quiet = subprocess.run(
        [*cli, "--exit-code", "4", "--ignorefile", str(ignore), "-f", "json", image], capture_output=True, text=True
    )
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["findings"] == []
    shown = subprocess.run(
        [*cli, "--ignorefile", str(ignore), "--show-suppressed", "-f", "json", image], capture_output=True, text=True
    )
    assert all("accepted risk" in f["suppressed"] for f in json.loads(shown.stdout)["findings"])


def _adv_db(tmp_path: Path, files: dict[str, str]) -> VulnDB:
    for rel, content in files.items():
        (tmp_path / "feeds" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "feeds" / rel).write_text(content)
    build([tmp_path / "feeds"], tmp_path / "v.db")
    return VulnDB(tmp_path / "v.db")


def _find(db: VulnDB, eco: str, name: str, version: str, ns: str = "") -> dict[str, str]:
    from stockade.match.matcher import match_package
    from stockade.model import OSInfo, Package

    os_info = OSInfo("debian", "12") if eco == "deb" else None
    p = Package(name=name, version=version, ecosystem=eco, source_name=name if eco == "deb" else "")
    return {f.vuln_id: f.fixed_version for f in match_package(db, p, os_info, [])}


def test_native_formats_from_the_real_archives(vulndb: VulnDB) -> None:
    """Cases read off the advisory files themselves."""
    # rubysec gems/resque/CVE-2023-50725.yml: patched >= 2.2.1 (and unaffected < 1.1.0 is not in this file)
    assert _find(vulndb, "gem", "resque", "2.2.0").get("CVE-2023-50725") == "2.2.1"
    assert "CVE-2023-50725" not in _find(vulndb, "gem", "resque", "2.2.1")
    # nodejs-wg vuln/npm/1.json: bassmaster <=1.5.1 vulnerable, >=1.5.2 patched
    assert _find(vulndb, "npm", "bassmaster", "1.5.1").get("NSWG-ECO-1") == "1.5.2"
    assert "NSWG-ECO-1" not in _find(vulndb, "npm", "bassmaster", "1.5.2")
    # FriendsOfPHP cakephp/cakephp/2015-08-06.yaml: 2.6.x vulnerable below 2.6.11
    found = _find(vulndb, "composer", "cakephp/cakephp", "2.6.10")
    assert any(k.startswith("PHPSEC-cakephp/cakephp-2015-08-06") for k in found)
    assert not any(
        k.startswith("PHPSEC-cakephp/cakephp-2015-08-06")
        for k in _find(vulndb, "composer", "cakephp/cakephp", "2.6.11")
    )


def test_dsa_list(tmp_path: Path) -> None:
    db = _adv_db(
        tmp_path,
        {
            "data/DSA/list": (
                "[29 Mar 2023] DSA-5380-1 xorg-server - security update\n\t{CVE-2023-1393}\n"
                "\t[bookworm] - xorg-server 2:21.1.7-1\n\t[bullseye] - xorg-server 2:1.20.11-1+deb11u6\n"
                "[27 Mar 2023] DSA-5379-1 dino-im - security update\n\t{CVE-2023-28686}\n"
                "\t[bookworm] - dino-im <not-affected>\n"
            )
        },
    )
    assert _find(db, "deb", "xorg-server", "2:21.1.6-1") == {"DSA-5380-1": "2:21.1.7-1"}
    assert _find(db, "deb", "xorg-server", "2:21.1.7-1") == {}
    assert _find(db, "deb", "dino-im", "0.1") == {}


def test_constraint_expressions() -> None:
    from stockade.match.constraints import satisfies

    assert satisfies("gem", "4.2.11.1", "~> 4.2.11, >= 4.2.11.1")
    assert not satisfies("gem", "4.3.0", "~> 4.2.11")
    assert satisfies("npm", "2.0.1", ">=1.0.0 <1.2.3 || >=2.0.0")
    assert not satisfies("npm", "1.5.0", ">=1.0.0 <1.2.3 || >=2.0.0")
    assert satisfies("npm", "1.9.9", "^1.2.3") and not satisfies("npm", "2.0.0", "^1.2.3")
    assert satisfies("composer", "2.6.10", ">=2.6.0 <2.6.11")


@pytest.mark.parametrize(
    "family, member, release, package",
    [
        ("redhat", "pschou+oval/redhat/com.redhat.rhsa-RHEL9.xml", "9", "openssl"),
        # this file is named -8 but its definitions say "Rocky Linux 9" (and el9 versions): the platform wins
        ("rocky", "pschou+oval/rocky/org.rockylinux.rlsa-8.xml", "9", "nodejs"),
    ],
)
def test_rpm_oval_errata(tmp_path: Path, family: str, member: str, release: str, package: str) -> None:
    """The oracle is each definition's criterion text, '<rpm> is earlier than <EVR>', read here by regex."""
    from stockade.match.matcher import match_package
    from stockade.model import OSInfo, Package

    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        xml = tf.extractfile(member).read().decode()  # type: ignore[union-attr]
    one = tmp_path / "feed" / member.split("/", 1)[1]
    one.parent.mkdir(parents=True)
    one.write_text(xml)
    build([tmp_path / "feed"], tmp_path / "v.db")
    vulndb = VulnDB(tmp_path / "v.db")
    expected: dict[str, str] = {}
    for block in (b.split("</definition>")[0] for b in xml.split("<definition ")[1:]):
        erratum = re.search(r'<reference ref_id="((?:RHSA|RHBA|RLSA)-[^"]+)"', block)
        fix = re.search(rf'comment="{re.escape(package)} is earlier than ([^"]+)"', block)
        if erratum and fix:
            expected[erratum.group(1)] = fix.group(1)
    assert expected
    oldest = Package(name=package, version="0.1-1", ecosystem="rpm")
    found = {f.vuln_id: f.fixed_version for f in match_package(vulndb, oldest, OSInfo(family, f"{release}.2"), [])}
    assert found == expected
    newest = max(expected.values(), key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v)))
    current = Package(name=package, version=newest.removeprefix("0:"), ecosystem="rpm")
    assert not {vid for vid in match_package(vulndb, current, OSInfo(family, release), []) if vid in expected}


def test_rocky9_file_without_comments_is_imported_whole(vulndb: VulnDB) -> None:
    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        xml = tf.extractfile("pschou+oval/rocky/org.rockylinux.rlsa-9.xml").read().decode()  # type: ignore[union-attr]
    definitions = xml.count("<definition ")
    rocky9 = next(s for s in vulndb.sources() if s["name"] == "pschou+oval/rocky-9")
    assert (rocky9["records"], rocky9["bad"]) == (definitions, 0)


def test_almalinux_osv(vulndb: VulnDB) -> None:
    """Every ALSA/ALBA record naming grub2-common for AlmaLinux 9 applies to an old enough grub2-common."""
    from stockade.match.matcher import match_package
    from stockade.model import OSInfo, Package

    expected = set()
    with tarfile.open(VULN / "AlmaLinux+osv-database.tar.gz") as tf:
        for m in tf:
            if "/almalinux9/" in m.name and m.name.endswith(".json"):
                doc = json.load(tf.extractfile(m))  # type: ignore[arg-type]
                if any(a["package"]["name"] == "grub2-common" for a in doc["affected"]):
                    expected.add(doc["id"])
    assert len(expected) >= 3
    pkg = Package(name="grub2-common", version="1:2.00-1.el9", ecosystem="rpm")
    found = {f.vuln_id for f in match_package(vulndb, pkg, OSInfo("alma", "9.3"), [])}
    assert found == expected


# AlmaLinux 9 binary packages and the source packages they are built from (as in AlmaLinux's repositories)
ALMA_PACKAGES = {
    "openssl-libs": "openssl", "libcurl": "curl", "glibc": "glibc", "sudo": "sudo", "systemd": "systemd",
    "expat": "expat", "libxml2": "libxml2", "vim-minimal": "vim", "python3": "python3.9", "gnutls": "gnutls",
    "tar": "tar", "bash": "bash",
}  # fmt: skip
SPEC = """Name: {src}
Version: {version}
Release: {release}
{epoch}Summary: stockade test package
License: MIT
BuildArch: noarch
%description
A package with no files, for an rpm database fixture.
"""
SUBPACKAGE = "%package -n {name}\nSummary: {name}\n%description -n {name}\nBuilt from {src}.\n%files -n {name}\n"


def _alma_records(docs: dict[str, Any]) -> dict[str, list[tuple[str, str | None]]]:
    """(ALSA id, fixed version or None) of every AlmaLinux 9 record naming each package of ALMA_PACKAGES; the
    records themselves go into ``docs``."""
    out: dict[str, list[tuple[str, str | None]]] = {n: [] for n in ALMA_PACKAGES}
    with tarfile.open(VULN / "AlmaLinux+osv-database.tar.gz") as tf:
        for m in tf:
            if "/almalinux9/" not in m.name or not m.name.endswith(".json"):
                continue
            doc = json.load(tf.extractfile(m))  # type: ignore[arg-type]
            if doc.get("withdrawn"):
                continue
            docs[doc["id"]] = doc
            for a in doc["affected"]:
                if a["package"]["ecosystem"] == "AlmaLinux:9" and a["package"]["name"] in out:
                    fixed = [e["fixed"] for r in a.get("ranges", []) for e in r["events"] if "fixed" in e]
                    out[a["package"]["name"]].append((doc["id"], fixed[0] if fixed else None))
    return out


def test_almalinux_rpm_database(vulndb: VulnDB, tmp_path: Path) -> None:
    """An AlmaLinux 9 root whose rpm database (SQLite) is written by rpm itself, each package installed at
    the fix of one of its own advisories: the scan reports exactly the advisories whose fixed version is
    newer by rpm's own comparison (rpm.vercmp). Binary names differ from source names (openssl-libs from
    openssl), as AlmaLinux's OSV records name binary packages."""
    if subprocess.run(["rpmbuild", "--version"], capture_output=True).returncode != 0:
        pytest.fail("Debian's rpm (rpmbuild) builds the fixture")
    docs: dict[str, Any] = {}
    records = _alma_records(docs)
    root, top = tmp_path / "root", tmp_path / "rpmbuild"
    installed: dict[str, str] = {}
    for name, src in ALMA_PACKAGES.items():
        fixes = sorted({f for _id, f in records[name] if f})
        assert len(fixes) >= 1, name
        evr = fixes[len(fixes) // 2]  # one of its own fixes: advisories on both sides of it
        epoch, _, vr = evr.rpartition(":")
        version, _, release = vr.rpartition("-")
        spec = tmp_path / f"{name}.spec"
        text = SPEC + (SUBPACKAGE if name != src else "%files\n")
        spec.write_text(text.format(src=src, name=name, version=version, release=release,
                                    epoch=f"Epoch: {epoch}\n" if epoch else ""))  # fmt: skip
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(spec)], check=True,
                       capture_output=True)  # fmt: skip
        installed[name] = evr if epoch else f"0:{evr}"
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    subprocess.run([*rpm, "--initdb"], check=True, capture_output=True)
    subprocess.run([*rpm, "-i", "--justdb", "--nodeps", "--noscripts", "--nosignature", "--nodigest",
                    *map(str, sorted(top.rglob("*.rpm")))], check=True, capture_output=True)  # fmt: skip
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="AlmaLinux"\nID="almalinux"\nVERSION_ID="9.4"\n'
                                         'ID_LIKE="rhel centos fedora"\nPRETTY_NAME="AlmaLinux 9.4"\n')  # fmt: skip
    qa = subprocess.run([*rpm, "-qa", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{SOURCERPM}\n"],
                        check=True, capture_output=True, text=True).stdout.split("\n")  # fmt: skip
    assert {x.split()[0]: x.split()[1] for x in qa if x} == installed  # rpm's own reading of what it wrote
    assert any(x.startswith("openssl-libs ") and " openssl-" in x for x in qa)

    pairs = [(installed[n], f if ":" in f else f"0:{f}") for n in ALMA_PACKAGES for _id, f in records[n] if f]
    newer = iter(c < 0 for c in rpm_vercmp_batch(pairs))
    expected = {(vid, n) for n in ALMA_PACKAGES for vid, f in records[n] if f is None or next(newer)}
    assert len(expected) >= 20 and len(expected) < sum(len(r) for r in records.values())

    out = subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", "scan", "--db", str(vulndb.path), "-q", "-f", "json",
         "--severity", "CRITICAL,HIGH,MEDIUM,LOW,UNKNOWN", str(root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["os"]["family"] == "alma"
    found = {(f["id"], f["package"]) for f in doc["findings"]}
    assert found == expected
    ratings = {"Critical": "CRITICAL", "Important": "HIGH", "Moderate": "MEDIUM", "Low": "LOW"}
    for f in doc["findings"]:
        assert f["installed_version"].removeprefix("0:") == installed[f["package"]].removeprefix("0:")
        alsa = docs[f["id"]]  # the erratum's own rating ("Important: ...") and the CVEs it fixes
        assert f["severity"] == ratings[alsa["summary"].split(":")[0]], (f["id"], alsa["summary"])
        assert set(f["aliases"]) == set(alsa.get("related", [])), f["id"]


def _alpine_scan(fixtures_dir: Path, vulndb: VulnDB, *extra: str) -> subprocess.CompletedProcess[str]:
    image = str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz")
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", "scan", "--db", str(vulndb.path), *extra, image],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_openvex_and_cyclonedx_vex_silence_findings(fixtures_dir: Path, vulndb: VulnDB, tmp_path: Path) -> None:
    base = json.loads(_alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json").stdout)["findings"]
    musl = [f for f in base if f["package"] == "musl"]
    busybox = [f for f in base if f["package"] == "busybox"]
    assert musl and busybox
    openvex = tmp_path / "musl.openvex.json"
    openvex.write_text(
        json.dumps(
            {
                "@context": "https://openvex.dev/ns/v0.2.0",
                "@id": "https://example.com/vex/1",
                "author": "sec team",
                "timestamp": "2026-11-01T00:00:00Z",
                "version": 1,
                "statements": [
                    {
                        "vulnerability": {"name": f["id"]},
                        "products": [{"@id": f["purl"]}],
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path",
                    }
                    for f in musl
                ],
            }
        )
    )
    cdx_vex = tmp_path / "busybox.cdx.json"
    cdx_vex.write_text(
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.6",
                "version": 1,
                "components": [{"bom-ref": "bb", "type": "library", "name": "busybox", "purl": busybox[0]["purl"]}],
                "vulnerabilities": [
                    {
                        "id": f["id"],
                        "analysis": {"state": "not_affected", "justification": "code_not_reachable"},
                        "affects": [{"ref": "bb"}],
                    }
                    for f in busybox
                ],
            }
        )
    )
    out = _alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json", "--vex", str(openvex), "--vex", str(cdx_vex))
    left = json.loads(out.stdout)["findings"]
    assert {f["package"] for f in left} == {f["package"] for f in base} - {"musl", "busybox"}
    shown = _alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json", "--vex", str(openvex), "--show-suppressed")
    reasons = {f["id"]: f.get("suppressed", "") for f in json.loads(shown.stdout)["findings"] if f["package"] == "musl"}
    assert reasons and all("vulnerable_code_not_in_execute_path" in r for r in reasons.values())


def test_cyclonedx_with_vulnerabilities_validates(fixtures_dir: Path, vulndb: VulnDB) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    out = _alpine_scan(fixtures_dir, vulndb, "-q", "-f", "cyclonedx")
    assert out.returncode == 0, out.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(out.stdout) is None
    doc = json.loads(out.stdout)
    refs = {c["bom-ref"] for c in doc["components"]}
    assert doc["vulnerabilities"] and all(a["ref"] in refs for v in doc["vulnerabilities"] for a in v["affects"])


def test_severity_filter_unfixed_and_stale_db_warning(fixtures_dir: Path, vulndb: VulnDB) -> None:
    everything = json.loads(_alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json").stdout)["findings"]
    sev = {f["severity"] for f in everything}
    one = sorted(sev)[0]
    only = json.loads(_alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json", "--severity", one).stdout)["findings"]
    assert only and {f["severity"] for f in only} == {one}
    fixed = json.loads(_alpine_scan(fixtures_dir, vulndb, "-q", "-f", "json", "--ignore-unfixed").stdout)["findings"]
    assert all(f["fixed_version"] for f in fixed)
    bad = _alpine_scan(fixtures_dir, vulndb, "--severity", "SEVERE")
    assert bad.returncode == 2 and "--severity takes" in bad.stderr
    stale = _alpine_scan(fixtures_dir, vulndb, "-f", "json", "--max-db-age", "-1")
    assert "the vulnerability database is" in stale.stderr and "stockade db update" in stale.stderr


def test_missing_database_is_a_clear_error(fixtures_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockade.cli.main",
            "scan",
            "--db",
            str(tmp_path / "none.db"),
            str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "stockade db build" in out.stderr and "Traceback" not in out.stderr


def test_ubuntu_usn_oval(vulndb: VulnDB) -> None:
    """The join (definition -> test -> object -> constant variable of binaries; state -> fixed EVR) done
    again here on the raw text with regular expressions, for 40 USNs of jammy."""
    from stockade.match.matcher import match_package
    from stockade.model import OSInfo, Package

    with tarfile.open(VULN / "pschou+oval.tar.gz") as tf:
        xml = tf.extractfile("pschou+oval/ubuntu/com.ubuntu.jammy.usn.oval.xml").read().decode()  # type: ignore[union-attr]
    tests = dict(
        (m[0], (m[1], m[2]))
        for m in re.findall(
            r'<linux:dpkginfo_test id="([^"]+)".*?object_ref="([^"]+)".*?state_ref="([^"]+)"', xml, re.DOTALL
        )
    )
    objects = dict(re.findall(r'<linux:dpkginfo_object id="([^"]+)"[^>]*>\s*<linux:name var_ref="([^"]+)"', xml))
    variables = {
        vid: re.findall(r"<value>([^<]+)</value>", body)
        for vid, body in re.findall(r'<constant_variable id="([^"]+)"[^>]*>(.*?)</constant_variable>', xml, re.DOTALL)
    }
    states = dict(
        re.findall(r'<linux:dpkginfo_state id="([^"]+)"[^>]*>\s*<linux:evr[^>]*operation="less than">([^<]+)<', xml)
    )
    checked = 0
    for block in re.findall(r'<definition id="[^"]+" version="1" class="patch">(.*?)</definition>', xml, re.DOTALL)[
        :40
    ]:
        usn = re.search(r'source="USN" ref_id="([^"]+)"', block)
        assert usn
        for ref in re.findall(r'test_ref="([^"]+)"', block):
            if ref not in tests or tests[ref][1] not in states:
                continue
            fixed = states[tests[ref][1]].removeprefix("0:")
            for binary in variables.get(objects.get(tests[ref][0], ""), [])[:3]:
                ours = {vid: aff.ranges for vid, aff in vulndb.affected("deb", "ubuntu:22.04", binary)}
                vid = usn.group(1) if usn.group(1).startswith(("USN-", "LSN-")) else f"USN-{usn.group(1)}"
                assert ours.get(vid) == [("0", fixed, None)], (binary, vid)
                old = Package(
                    name=binary,
                    version="0.0.1",
                    ecosystem="deb",
                    source_name=f"src-of-{binary}",
                    source_version="0.0.1",
                )
                found = {f.vuln_id for f in match_package(vulndb, old, OSInfo("ubuntu", "22.04"), [])}
                assert vid in found
                checked += 1
    assert checked >= 40


def test_the_engine_function_scan_calls(fixtures_dir: Path, vulndb: VulnDB, tmp_path: Path) -> None:
    """match/scan.py scan_image, called without the CLI: the findings secdb lists for alpine 3.11 (the oracle
    above), an ignore file silencing one id, and each recorder handed the result: the admission gate's scan store
    then counts what is not silenced."""
    from stockade.admission.scans import ScanStore, recorder
    from stockade.match.scan import scan_image
    from stockade.model import ScanResult

    image = str(fixtures_dir / "images" / "trivy-alpine-311.tar.gz")
    expected = _secdb_expected(catalog_image(image), "3.11")
    silenced = sorted(expected)[0][0]
    ignore = tmp_path / ".stockadeignore"
    ignore.write_text(f"{silenced}  # accepted in this test\n")
    seen: list[ScanResult] = []
    store = tmp_path / "scans.db"
    recorders = [recorder(store, ["alpine:3.11"]), seen.append]
    result = scan_image(image, vulndb.path, ignorefile=ignore, recorders=recorders)
    assert seen == [result] and result.db_built_at
    assert {(f.vuln_id, f.package.source_name) for f in result.findings} == expected
    assert {f.vuln_id for f in result.findings if f.suppressed} == {silenced}
    summary = ScanStore(store).lookup("docker.io/library/alpine:3.11")
    assert summary is not None
    # a finding per binary package: the silenced id's findings are out of the store's counts, the others in
    assert sum(summary.counts.values()) == sum(1 for f in result.findings if f.vuln_id != silenced) > 0


def _pep440_affected(doc: dict[str, Any], version: str) -> tuple[bool, str]:
    """Whether an OSV record affects ``version`` of its PyPI package, and the smallest fixed version above it,
    read with `packaging` (PEP 440), not with stockade's matcher."""
    from packaging.version import Version

    v = Version(version)
    hit, fixes = False, []
    for a in doc.get("affected", []):
        if version in (a.get("versions") or []):
            hit = True
        for r in a.get("ranges", []):
            if r["type"] != "ECOSYSTEM":
                continue
            start = None
            for e in r["events"]:
                if "introduced" in e:
                    start = Version(e["introduced"]) if e["introduced"] != "0" else Version("0")
                elif "fixed" in e:
                    fixed = Version(e["fixed"])
                    if v < fixed:
                        fixes.append(fixed)
                    if start is not None and start <= v < fixed:
                        hit = True
                    start = None
    return hit, str(min(fixes)) if fixes else ""


def test_fixed_version_is_the_smallest_fix_above_the_installed_one(vulndb: VulnDB) -> None:
    """Django 2.2 against the PyPA advisories: records listing the affected versions explicitly beside several
    ranges reported no fix at all (so --ignore-unfixed dropped them); each must name the smallest fix above 2.2,
    computed here from the record with PEP 440 ordering."""
    from stockade.model import Inventory, Package

    expected: dict[str, str] = {}
    with tarfile.open(VULN / "westonsteimel+advisory-database-pypa.tar.gz") as tf:
        for m in tf:
            if m.isfile() and "/vulns/django/" in m.name and m.name.endswith(".yaml"):
                doc = yaml.safe_load(tf.extractfile(m))  # type: ignore[arg-type]
                if doc.get("withdrawn"):  # withdrawn records (duplicates, mistakes) are not findings
                    continue
                hit, fix = _pep440_affected(doc, "2.2")
                if hit:
                    expected[doc["id"]] = fix
    assert len(expected) >= 30 and sum(bool(f) for f in expected.values()) >= 30
    inv = Inventory(source="t", packages=[Package("Django", "2.2", "pypi", location="site-packages/Django")])
    got = {f.vuln_id: f.fixed_version for f in match(inv, vulndb) if f.vuln_id.startswith("PYSEC-")}
    assert got == expected


def test_a_finding_names_the_feed_that_matched(vulndb: VulnDB) -> None:
    """Ruby gems are only in RubySec here; findings for rexml, time and uri were labelled with the OVAL feed that
    first stored the same CVE id."""
    from stockade.model import Inventory, Package

    inv = Inventory(source="t", packages=[Package(n, v, "gem") for n, v in
                                          (("rexml", "3.2.5"), ("time", "0.2.0"), ("uri", "0.12.0"))])  # fmt: skip
    findings = match(inv, vulndb)
    assert {f.package.name for f in findings} == {"rexml", "time", "uri"}
    assert any(f.vuln_id.startswith("CVE-") for f in findings)
    assert {f.source.split("/")[0] for f in findings} == {"rubysec+ruby-advisory-db"}


def test_github_advisory_database_layout_and_empty_feeds_warn(tmp_path: Path) -> None:
    """GitHub's own repository layout (advisories/github-reviewed/YYYY/MM/GHSA-*/GHSA-*.json) is read: as many
    records as the archive holds GHSA files; an input in no known layout imports nothing and says so."""
    src = VULN / "github+advisory-database-maven-subset.tar.gz"
    with tarfile.open(src) as tf:
        ghsa = [m.name for m in tf if m.isfile() and re.search(r"/GHSA-[^/]+/GHSA-[^/]+\.json$", m.name)]
    odd = tmp_path / "odd"
    (odd / "notes").mkdir(parents=True)
    (odd / "notes" / "readme.txt").write_text("not a feed")
    rep = build([src, odd], tmp_path / "v.db")
    assert sum(st.records for st in rep.sources.values()) == len(ghsa) == 21
    assert rep.warnings == [f"{odd}: 0 records imported: none of its 1 files is in a feed layout stockade reads"]
    out = subprocess.run([sys.executable, "-m", "stockade.cli.main", "db", "build", str(odd), "--db",
                          str(tmp_path / "w.db"), "-q"], capture_output=True, text=True)  # fmt: skip
    assert "0 records imported" in out.stderr


def _maven_expected(records: list[dict[str, Any]], group_artifact: str, version: str) -> set[str]:
    """GHSA ids whose Maven ranges hold ``version``, with Maven's ordering from univers (not stockade's)."""
    from univers.versions import MavenVersion

    v = MavenVersion(version)
    out = set()
    for doc in records:
        for a in doc.get("affected", []):
            if a["package"]["ecosystem"] != "Maven" or a["package"]["name"] != group_artifact:
                continue
            if version in (a.get("versions") or []):
                out.add(doc["id"])
            for r in a.get("ranges", []):
                start = None
                for e in r["events"]:
                    if "introduced" in e:
                        start = MavenVersion(e["introduced"]) if e["introduced"] != "0" else None
                        if e["introduced"] == "0":
                            start = MavenVersion("0")
                    elif start is not None and "fixed" in e:
                        if start <= v < MavenVersion(e["fixed"]):
                            out.add(doc["id"])
                        start = None
                    elif start is not None and "last_affected" in e:
                        if start <= v <= MavenVersion(e["last_affected"]):
                            out.add(doc["id"])
                        start = None
                if start is not None and start <= v:
                    out.add(doc["id"])
    return out


def test_maven_jars_report_what_the_github_advisories_say(fixtures_dir: Path, tmp_path: Path) -> None:
    """The jar fixtures (log4j 1.2 nested in a jar, jackson-databind 2.9.10.6 in a war, guava 31.1) against the
    21 real GHSA records: the ids expected are computed from the records' ranges with univers' MavenVersion."""
    src = VULN / "github+advisory-database-maven-subset.tar.gz"
    with tarfile.open(src) as tf:
        records = [json.load(tf.extractfile(m)) for m in tf if m.isfile() and m.name.endswith(".json")]  # type: ignore[arg-type]
    build([src], tmp_path / "ghsa.db")
    db = VulnDB(tmp_path / "ghsa.db")
    root = tmp_path / "root" / "opt" / "app"
    root.mkdir(parents=True)
    for jar in (fixtures_dir / "jars").iterdir():
        (root / jar.name).write_bytes(jar.read_bytes())
    inv = catalog_image(str(tmp_path / "root"))
    findings = match(inv, db)
    checked = 0
    for p in inv.packages:
        if p.ecosystem != "maven":
            continue
        want = _maven_expected(records, p.name, p.version)
        got = {f.vuln_id for f in findings if f.package is p}
        assert got == want, (p.name, p.version, p.location)
        checked += bool(want)
    names = {(p.name, p.version) for p in inv.packages}
    assert {("log4j:log4j", "1.2.17"), ("com.fasterxml.jackson.core:jackson-databind", "2.9.10.6"),
            ("com.google.guava:guava", "31.1-jre")} <= names  # fmt: skip
    assert checked >= 3  # log4j 1.2, jackson-databind and guava each have advisories here

"""A second real Debian image, built by tools/build_owned_image.py (mmdebstrap, pip, whiteouts, a docker-archive
written by hand): language packages Debian owns beside upstream ones, a Debian jar without pom.properties, and
deletions. Ownership is checked against dpkg-query -S on the image's own dpkg database, Maven coordinates
against Debian's maven-repo link and POM read here with tarfile and ElementTree."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from stockade.inventory import catalog_image
from stockade.inventory.formats import to_cyclonedx, to_spdx
from stockade.match.matcher import match
from stockade.model import OS_ECOSYSTEMS, Inventory
from stockade.vulndb.store import VulnDB

sys.path.insert(0, str(ROOT / "tools"))
from build_owned_image import DELETED, build

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "stockade.cli.main"]


@pytest.fixture(scope="module")
def image() -> Path:
    return build(ROOT / ".cache" / "images")


@pytest.fixture(scope="module")
def inv(image: Path) -> Inventory:
    return catalog_image(str(image), cache_dir=False)


@pytest.fixture(scope="module")
def debian_layer(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian layer's dpkg database and maven-repo, extracted with tarfile."""
    out = tmp_path_factory.mktemp("owned-root")
    with tarfile.open(image) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = outer.extractfile(manifest[0]["Layers"][0])
        assert layer is not None
        with tarfile.open(fileobj=layer, mode="r|") as tf:
            for m in tf:
                name = m.name.removeprefix("./")
                if name.startswith(("var/lib/dpkg/", "usr/share/maven-repo/")) and (m.isfile() or m.issym()):
                    tf.extract(m, out, filter="data")
    return out


def _dpkg_owners(root: Path, paths: list[str]) -> dict[str, str]:
    """dpkg-query -S on the image's database: path -> owning package (absent when no package owns it)."""
    proc = subprocess.run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-S", *("/" + p for p in paths)],
                          capture_output=True, text=True)  # fmt: skip
    owners = {}
    for line in proc.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        owners[path.lstrip("/")] = pkgs.split(",")[0].split(":")[0].strip()
    return owners


def test_language_packages_know_the_os_package_that_owns_them(inv: Inventory, debian_layer: Path) -> None:
    lang = [p for p in inv.packages if p.ecosystem not in OS_ECOSYSTEMS]
    files = [p.location.split("!")[0] for p in lang]
    owners = _dpkg_owners(debian_layer, sorted(set(files)))
    dirs = _dpkg_owners(debian_layer, sorted({f.rsplit("/", 1)[0] for f in files} - set(owners)))
    for p, f in zip(lang, files, strict=True):
        want = owners.get(f) or (dirs.get(f.rsplit("/", 1)[0]) if f.endswith("/PKG-INFO") else None) or ""
        assert p.owner == want, (p.name, p.location)
    owned = {(p.ecosystem, p.name): p.owner for p in lang if p.owner}
    assert owned[("pypi", "urllib3")] == "python3-urllib3" and owned[("pypi", "idna")] == "python3-idna"
    assert owned[("gem", "rack")] == "ruby-rack" and owned[("npm", "minimist")] == "node-minimist"
    assert {p.owner for p in lang if p.name in ("rexml", "time", "uri")} == {"libruby3.1"}
    upstream = {(p.name, p.version) for p in lang if not p.owner}
    assert upstream == {("Django", "2.2"), ("urllib3", "1.26.5")}  # what pip put in /usr/local


def test_os_owned_packages_match_through_their_owner_only(inv: Inventory, vulndb: VulnDB, image: Path) -> None:
    """By default, Debian's urllib3, rack, rexml... get no upstream findings (Debian backports fixes without
    changing the upstream version; its own advisories cover the owner); pip's urllib3 1.26.5 and Django 2.2 do.
    --match-os-owned adds the upstream matches of the owned ones."""
    default = match(inv, vulndb)
    assert not [f for f in default if f.package.owner]
    assert {f.package.name for f in default if f.package.ecosystem == "pypi"} == {"Django", "urllib3"}
    assert all(f.package.version == "1.26.5" for f in default if f.package.name == "urllib3")
    everything = match(inv, vulndb, os_owned=True)
    owned = {(f.package.name, f.package.version) for f in everything if f.package.owner}
    assert ("urllib3", "1.26.12") in owned and any(n in ("rexml", "uri", "time", "rack") for n, _ in owned)
    assert {(f.vuln_id, f.package.location) for f in default} <= {(f.vuln_id, f.package.location)
                                                                  for f in everything}  # fmt: skip
    out = subprocess.run([*CLI, "scan", str(image), "--db", str(vulndb.path), "-f", "json", "-q",
                          "--match-os-owned"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    scanned = json.loads(out.stdout)
    assert any(f["package"] == "urllib3" and f["installed_version"] == "1.26.12" for f in scanned["findings"])


def test_django_findings_name_their_fix_in_the_image(inv: Inventory, vulndb: VulnDB) -> None:
    django = [f for f in match(inv, vulndb) if f.package.name == "Django"]
    assert len([f for f in django if f.vuln_id.startswith("PYSEC-")]) >= 30
    assert all(f.fixed_version for f in django if f.vuln_id.startswith("PYSEC-"))


def test_debian_jar_gets_the_maven_coordinates_debian_declares(inv: Inventory, debian_layer: Path) -> None:
    repo = debian_layer / "usr/share/maven-repo"
    links = {p: p.readlink() for p in repo.rglob("*.jar") if p.is_symlink()}
    real = [p for p, target in links.items() if target.name == "log4j-1.2-1.2.17.jar" and p.parent.name[0].isdigit()
            and not p.parent.name.endswith(".x")]  # fmt: skip
    assert len(real) == 1
    pom = ET.parse(real[0].with_suffix(".pom")).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    group = pom.findtext("m:groupId", namespaces=ns)
    artifact = pom.findtext("m:artifactId", namespaces=ns)
    version = pom.findtext("m:version", namespaces=ns)
    jar = next(p for p in inv.packages if p.location == "usr/share/java/log4j-1.2-1.2.17.jar")
    assert (jar.name, jar.version) == (f"{group}:{artifact}", version) == ("log4j:log4j", "1.2.17")
    assert jar.purl == "pkg:maven/log4j/log4j@1.2.17" and jar.owner == "liblog4j1.2-java"


def test_a_jar_without_a_known_group_claims_none(tmp_path: Path, fixtures_dir: Path) -> None:
    """A jar with neither pom.properties nor a group in its manifest: listed, its group said to be unknown, and
    no purl (the purl spec requires a Maven namespace)."""
    import zipfile

    root = tmp_path / "root" / "opt"
    root.mkdir(parents=True)
    with zipfile.ZipFile(root / "tool-2.4.1.jar", "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nImplementation-Version: 2.4.1\n")
        zf.writestr("com/example/Tool.class", b"\xca\xfe\xba\xbe")
    with zipfile.ZipFile(root / "lib-1.0.jar", "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nImplementation-Vendor-Id: org.example\n"
                                            "Implementation-Version: 1.0\n")  # fmt: skip
    inv = catalog_image(str(tmp_path / "root"), cache_dir=False)
    pkgs = {p.location: p for p in inv.packages}
    tool, lib = pkgs["opt/tool-2.4.1.jar"], pkgs["opt/lib-1.0.jar"]
    assert (tool.name, tool.version, tool.purl) == ("tool", "2.4.1", "")
    assert tool.properties == {"stockade:maven:groupId": "unknown"}
    assert lib.purl == "pkg:maven/org.example/lib@1.0" and not lib.properties
    doc = json.loads(to_cyclonedx(inv))
    comp = next(c for c in doc["components"] if c["name"] == "tool")
    assert "purl" not in comp
    assert {"name": "stockade:maven:groupId", "value": "unknown"} in comp["properties"]


def test_deletions_are_honoured(inv: Inventory) -> None:
    """Debian's lodash directory was whited out: no package from it; Django lost only its RECORD file."""
    assert not [p for p in inv.packages if any(p.location.startswith(d + "/") for d in DELETED)]
    assert any(p.name == "Django" for p in inv.packages)


def test_sboms_say_who_owns_what(inv: Inventory) -> None:
    """CycloneDX: the owned component carries stockade:package:owner, and the owner's dependencies list it; SPDX:
    the owning package CONTAINS it."""
    doc = json.loads(to_cyclonedx(inv))
    comps = {c["bom-ref"]: c for c in doc["components"]}

    def prop(c: dict[str, Any], name: str) -> str | None:
        return next((p["value"] for p in c.get("properties", []) if p["name"] == name), None)

    urllib3 = next(r for r, c in comps.items() if c["name"] == "urllib3" and c["version"] == "1.26.12")
    owner = next(r for r, c in comps.items() if c["name"] == "python3-urllib3")
    assert prop(comps[urllib3], "stockade:package:owner") == "python3-urllib3"
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert urllib3 in deps[owner]
    pip_urllib3 = next(r for r, c in comps.items() if c["name"] == "urllib3" and c["version"] == "1.26.5")
    assert prop(comps[pip_urllib3], "stockade:package:owner") is None
    spdx = json.loads(to_spdx(inv))
    names = {p["SPDXID"]: (p["name"], p.get("versionInfo")) for p in spdx["packages"]}
    contains = {(names[r["spdxElementId"]][0], names[r["relatedSpdxElement"]])
                for r in spdx["relationships"] if r["relationshipType"] == "CONTAINS"
                and r["spdxElementId"] != "SPDXRef-Image"}  # fmt: skip
    assert ("python3-urllib3", ("urllib3", "1.26.12")) in contains
    assert ("ruby-rack", ("rack", "2.2.22")) in contains or any(o == "ruby-rack" for o, _ in contains)

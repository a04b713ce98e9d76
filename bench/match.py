"""Benchmark: vulnerability database build and matching, in one run.

Prints: the time to build the database from every archive in ../shared/data/vuln and its size; the
scan time of each fixture with the database warm; and the time to match a 1,000-package inventory
(737 Debian 12 packages from the real dpkg status fixture plus language packages named in the feeds).

Trivy is not run here: its vulnerability database must be downloaded from a registry this machine
cannot reach, so there is no offline anchor for matching. The goals are the issue's: full build under
60 s, 1,000 packages matched under 0.2 s.

Usage: python bench/match.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "src"))

from stockade.inventory import catalog_image  # noqa: E402
from stockade.match.matcher import match  # noqa: E402
from stockade.model import Inventory, OSInfo, Package  # noqa: E402
from stockade.vulndb.build import build  # noqa: E402
from stockade.vulndb.store import VulnDB  # noqa: E402

LANG = [
    ("pypi", "django", "3.2.1"),
    ("pypi", "requests", "2.19.0"),
    ("pypi", "urllib3", "1.24.1"),
    ("pypi", "pyyaml", "5.3.1"),
    ("pypi", "jinja2", "2.10"),
    ("golang", "golang.org/x/net", "v0.0.0-20211006190231-62292e806868"),
    ("golang", "stdlib", "v1.17.0"),
    ("cargo", "smallvec", "1.6.0"),
    ("gem", "rails", "5.2.0"),
    ("gem", "nokogiri", "1.10.0"),
    ("composer", "symfony/http-kernel", "v4.4.0"),
    ("npm", "lodash", "4.17.15"),
]


def thousand_packages(fixtures: Path) -> Inventory:
    from stockade.inventory.dpkg import DpkgCataloger

    pkgs = DpkgCataloger().parse("var/lib/dpkg/status", (fixtures / "local-debian12-dpkg-status").read_bytes()).packages
    i = 0
    while len(pkgs) < 1000:
        eco, name, version = LANG[i % len(LANG)]
        pkgs.append(Package(name=name, version=version, ecosystem=eco, location=f"app{i}/lock"))
        i += 1
    return Inventory(source="1000 packages", os=OSInfo("debian", "12.1"), packages=pkgs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-match-"))
    archives = sorted((SHARED / "data" / "vuln").glob("*.tar.gz"))
    t0 = time.perf_counter()
    report = build(archives, work / "vuln.db")
    build_s = time.perf_counter() - t0
    records = sum(s.records for s in report.sources.values())
    bad = sum(s.bad for s in report.sources.values())
    size = (work / "vuln.db").stat().st_size
    print(
        f"build: {build_s:.1f} s for {len(archives)} archives, {records} records ({bad} bad), "
        f"{size / 1e6:.1f} MB  [goal < 60 s]"
    )
    db = VulnDB(work / "vuln.db")
    with tarfile.open(SHARED / "data" / "fixtures" / "package-fixtures.tar.gz") as tf:
        tf.extractall(work, filter="data")
    fixtures = work / "fixtures"
    targets = [
        fixtures / "images" / n
        for n in (
            "trivy-alpine-39.tar.gz",
            "trivy-alpine-310.tar.gz",
            "trivy-alpine-311.tar.gz",
            "trivy-image3_gz_layers.tar",
        )
    ]
    bins = work / "bins"
    bins.mkdir()
    for f in (fixtures / "binaries").iterdir():
        (bins / f.name).write_bytes(f.read_bytes())
        os.chmod(bins / f.name, 0o755)
    targets.append(bins)
    print(f"{'target':40} {'packages':>8} {'findings':>8} {'inventory s':>11} {'match s':>8}")
    for t in targets:
        inv = catalog_image(str(t), cache_dir=False)
        match(inv, db)  # warm the page cache and version caches once
        inv_t, match_t, n = [], [], 0
        for _ in range(args.repeat):
            a = time.perf_counter()
            inv = catalog_image(str(t), cache_dir=False)
            b = time.perf_counter()
            n = len(match(inv, db))
            match_t.append(time.perf_counter() - b)
            inv_t.append(b - a)
        print(
            f"{t.name:40} {len(inv.packages):8} {n:8} {statistics.median(inv_t):11.3f} "
            f"{statistics.median(match_t):8.3f}"
        )
    big = thousand_packages(fixtures)
    times = []
    findings = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        findings = len(match(big, db))
        times.append(time.perf_counter() - t)
    print(
        f"1,000-package inventory: {findings} findings, match {statistics.median(times):.3f} s "
        f"(median of {args.repeat}; first run {times[0]:.3f} s)  [goal < 0.2 s]"
    )


if __name__ == "__main__":
    main()

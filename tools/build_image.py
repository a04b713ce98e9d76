"""Build a real multi-layer Debian image for tests, benchmarks and the README's main command.

Layers (each with its history entry):
  1. Debian bookworm minbase + python3 + openssl, from Debian's archive with mmdebstrap
  2. Python packages installed with pip from PyPI into /usr/local/lib/python3.11/dist-packages
  3. A Node.js application installed with npm from the npm registry into /srv/app
  4. Deletions: a whiteout for six's files and an opaque directory that empties idna's metadata

The layers are wrapped as an OCI layout with umoci (gzip) and converted with skopeo to a
docker-archive and to an OCI layout with zstd layers. Outputs are cached in the work dir.

Usage: python tools/build_image.py WORKDIR
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

PIP_PACKAGES = [
    "requests==2.31.0",
    "urllib3==1.26.5",
    "idna==3.4",
    "certifi==2023.7.22",
    "charset-normalizer==3.3.0",
    "six==1.16.0",
    "PyYAML==5.3.1",
]
NPM_PACKAGES = ["express@4.17.1", "lodash@4.17.20", "minimist@1.2.5"]
SITE = "usr/local/lib/python3.11/dist-packages"
TAG = "stockade-test"


def run(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _tar_dir(src: Path, dest: Path) -> None:
    """A layer tar of ``src``'s content with root ownership, paths relative to /."""
    with tarfile.open(dest, "w") as tf:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            info = tf.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with path.open("rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)


def _whiteout_layer(dest: Path) -> None:
    with tarfile.open(dest, "w") as tf:
        for name in (
            f"{SITE}/.wh.six-1.16.0.dist-info",
            f"{SITE}/.wh.six.py",
            f"{SITE}/idna-3.4.dist-info/.wh..wh..opq",
        ):
            info = tarfile.TarInfo(name)
            info.size = 0
            tf.addfile(info, io.BytesIO(b""))


def build(work: Path) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    oci = work / "oci-gzip"
    out = {"oci": oci, "docker": work / "debian-docker.tar", "zstd": work / "oci-zstd"}
    if all(p.exists() for p in out.values()):
        return out
    for tool in ("mmdebstrap", "umoci", "skopeo", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required to build the test image (see .ci/run)")
    layers = work / "layers"
    shutil.rmtree(layers, ignore_errors=True)
    layers.mkdir()
    base = work / "rootfs.tar"
    if base.is_dir():  # left by an interrupted or older build
        shutil.rmtree(base)
    if not base.exists():
        run(
            "mmdebstrap",
            "--quiet",
            "--format=tar",
            "--variant=minbase",
            "--include=python3,openssl",
            "bookworm",
            str(base) + ".part",
        )
        os.replace(str(base) + ".part", base)
    pip_root = layers / "pip"
    run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
        str(pip_root / SITE),
        *PIP_PACKAGES,
    )
    shutil.rmtree(pip_root / SITE / "bin", ignore_errors=True)
    _tar_dir(pip_root, layers / "pip.tar")
    npm_root = layers / "npm"
    (npm_root / "srv" / "app").mkdir(parents=True)
    run(
        "npm",
        "install",
        "--silent",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(npm_root / "srv" / "app"),
        *NPM_PACKAGES,
    )
    _tar_dir(npm_root, layers / "npm.tar")
    _whiteout_layer(layers / "wh.tar")

    shutil.rmtree(oci, ignore_errors=True)
    run("umoci", "init", "--layout", str(oci))
    run("umoci", "new", "--image", f"{oci}:{TAG}")
    for tar, created_by in (
        (base, "mmdebstrap --variant=minbase --include=python3,openssl bookworm"),
        (layers / "pip.tar", "pip install " + " ".join(PIP_PACKAGES)),
        (layers / "npm.tar", "npm install " + " ".join(NPM_PACKAGES)),
        (layers / "wh.tar", "rm -rf six idna metadata"),
    ):
        run("umoci", "raw", "add-layer", "--image", f"{oci}:{TAG}", "--history.created_by", created_by, str(tar))
    run(
        "umoci",
        "config",
        "--image",
        f"{oci}:{TAG}",
        "--config.cmd",
        "python3",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    )
    for p in (out["docker"], out["zstd"]):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    run("skopeo", "copy", "--quiet", f"oci:{oci}:{TAG}", f"docker-archive:{out['docker']}:{TAG}:latest")
    run("skopeo", "copy", "--quiet", "--dest-compress-format", "zstd", f"oci:{oci}:{TAG}", f"oci:{out['zstd']}:{TAG}")
    shutil.rmtree(layers, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for kind, path in build(Path(sys.argv[1])).items():
        print(f"{kind}\t{path}")

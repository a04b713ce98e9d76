"""Build a second real Debian image, by another recipe than tools/build_image.py: language packages that Debian
packages own beside ones pip installed, a Debian jar without pom.properties, and deletions. Written as a
docker-archive by hand (manifest.json, config, layer tars), without umoci or skopeo.

Layers (each with its history entry):
  1. Debian bookworm minbase with python3-urllib3, python3-idna, ruby-rack (and Ruby's default gems), node-minimist,
     node-lodash and liblog4j1.2-java, from Debian's archive with mmdebstrap (no recommends)
  2. pip install --prefix /usr/local of urllib3 1.26.5 and Django 2.2 (upstream, owned by no Debian package)
  3. Deletions: a whiteout for Debian's node-lodash directory and for pip's Django metadata's RECORD file

Usage: python tools/build_owned_image.py WORKDIR   (prints the docker-archive's path; cached in WORKDIR)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

from build_image import _tar_dir, run  # same tools/ directory (on sys.path as the script's own)

DEBIAN = ["python3", "python3-urllib3", "python3-idna", "ruby-rack", "node-minimist", "node-lodash",
          "liblog4j1.2-java"]  # fmt: skip
PIP = ["urllib3==1.26.5", "Django==2.2"]
SITE = "usr/local/lib/python3.11/dist-packages"
DELETED = ["usr/share/nodejs/lodash"]


def _deletions(dest: Path, django_dist: str) -> None:
    with tarfile.open(dest, "w") as tf:
        for path in [*DELETED, f"{SITE}/{django_dist}/RECORD"]:
            parent, _, base = path.rpartition("/")
            info = tarfile.TarInfo(f"{parent}/.wh.{base}")
            tf.addfile(info, io.BytesIO(b""))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(work: Path) -> Path:
    out = work / "owned-docker.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("mmdebstrap is required to build the test image (see .ci/setup)")
    layers = work / "owned-layers"
    shutil.rmtree(layers, ignore_errors=True)
    layers.mkdir(parents=True)
    base = layers / "debian.tar"
    run("mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", "--aptopt=APT::Install-Recommends \"false\"",
        f"--include={','.join(DEBIAN)}", "bookworm", str(base))  # fmt: skip
    pip_root = layers / "pip"
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--disable-pip-version-check",
        "--target", str(pip_root / SITE), *PIP)  # fmt: skip
    shutil.rmtree(pip_root / SITE / "bin", ignore_errors=True)
    _tar_dir(pip_root, layers / "pip.tar")
    django = next(p.name for p in (pip_root / SITE).iterdir() if p.name.lower().startswith("django-"))
    _deletions(layers / "deletions.tar", django)
    history = [
        ("mmdebstrap --variant=minbase --include=" + ",".join(DEBIAN) + " bookworm", base),
        ("pip install " + " ".join(PIP), layers / "pip.tar"),
        ("rm -rf /" + " /".join(DELETED) + " Django's RECORD", layers / "deletions.tar"),
    ]
    diff_ids = [f"sha256:{_sha256(tar)}" for _, tar in history]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-12-06T00:00:00Z", "created_by": c} for c, _ in history],
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
    part = out.with_suffix(".part")
    with tarfile.open(part, "w") as tf:
        names = []
        for (_, tar), diff in zip(history, diff_ids, strict=True):
            name = f"{diff.split(':')[1]}/layer.tar"
            tf.add(str(tar), arcname=name)
            names.append(name)
        for name, data in ((cfg_name, cfg),
                           ("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["stockade-owned:latest"],
                                                          "Layers": names}]).encode())):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    os.replace(part, out)
    shutil.rmtree(layers, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(build(Path(sys.argv[1])))

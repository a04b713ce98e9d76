"""Benchmark: stockade posture against checkov on the same manifests, in one run.

Corpora: the real manifests in ../shared (badPods and Online Boutique), and a generated cluster snapshot
of 10,000 objects (`kubectl get -o json` List) made from the Online Boutique objects spread over 50
namespaces. Prints wall time and findings per tool and the speed ratio (checkov / stockade).

Usage: python bench/posture.py
checkov pins old versions of packages stockade uses (packaging, cyclonedx-python-lib, packageurl-python),
so it runs from its own virtualenv, .cache/checkov-venv, created here on first use (pip, from PyPI).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def snapshot(release: Path, dest: Path, n: int = 10_000) -> Path:
    base = [d for d in yaml.safe_load_all(release.read_text()) if isinstance(d, dict)]
    items = []
    i = 0
    while len(items) < n:
        for obj in base:
            o = copy.deepcopy(obj)
            o.setdefault("metadata", {})["name"] = f"{o['metadata'].get('name', 'x')}-{i}"
            o["metadata"]["namespace"] = f"team-{i % 50}"
            items.append(o)
            if len(items) >= n:
                break
        i += 1
    out = dest / "snapshot" / "cluster.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return out.parent


def run(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t, proc.stdout


def count_checkov(out: str) -> int:
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        return -1
    docs = doc if isinstance(doc, list) else [doc]
    return sum(len((d.get("results") or {}).get("failed_checks") or []) for d in docs if isinstance(d, dict))


def checkov_venv() -> str:
    venv = ROOT / ".cache" / "checkov-venv"
    exe = venv / "bin" / "checkov"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "checkov"], check=True)
    return str(exe)


def main() -> None:
    checkov = checkov_venv()
    script = Path(sysconfig.get_path("scripts")) / "stockade"
    stockade = str(script) if script.exists() else shutil.which("stockade")
    if not checkov or not stockade:
        raise SystemExit("needs checkov (pip install checkov) and stockade on PATH")
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-posture-"))
    with tarfile.open(SHARED / "data" / "manifests" / "real-manifests.tar.gz") as tf:
        tf.extractall(work, filter="data")
    corpora = [
        ("badPods (144 objects)", work / "badPods"),
        ("Online Boutique (35 objects)", work / "release"),
        ("snapshot (10,000 objects)", snapshot(work / "release" / "kubernetes-manifests.yaml", work)),
    ]
    print(f"{'corpus':30} {'checkov s':>10} {'findings':>9} {'stockade s':>11} {'findings':>9} {'speed-up':>9}")
    for label, path in corpora:
        ct, cout = run(
            [
                checkov,
                "-d",
                str(path),
                "--framework",
                "kubernetes",
                "--quiet",
                "--compact",
                "-o",
                "json",
                "--skip-download",
            ]
        )
        st, sout = run([stockade, "posture", "-q", "-f", "json", str(path)])
        sfind = len(json.loads(sout)["findings"]) if sout else -1
        print(f"{label:30} {ct:10.2f} {count_checkov(cout):9} {st:11.2f} {sfind:9} {ct / st:8.1f}x")
    shutil.rmtree(work, ignore_errors=True)
    print("goal: at least 10x faster than checkov; 10,000 objects under 2 s")


if __name__ == "__main__":
    sys.exit(main())

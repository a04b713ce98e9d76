"""Benchmark: the admission webhook under a steady load on loopback, in one run.

Starts `stockade admission serve` over TLS (a CA from `stockade admission certs`), with a realistic policy
(Pod Security baseline denied, restricted warned, everything else audited into a violations log), and sends
AdmissionReview v1 bodies built from the real badPods manifests in ../shared at a fixed rate (open loop: a
request is sent on schedule whether or not the previous ones have answered, as the API server does). Prints
p50/p90/p99/max latency as the client sees it, errors and the achieved rate. The load generator is a small
Node script (admission_load.mjs, no packages): a Python client would take more CPU than the server it
measures on this 2-core machine.

The anchor: Kyverno's published load test (about 40 ms average at 100 concurrent users) cannot run here (no
cluster on these machines), so its figure is printed for reference, not measured. Goal: p99 under 10 ms at
200 requests/s for 60 s, zero errors.

Usage: python bench/admission.py [--rate 200] [--duration 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLI = [sys.executable, "-m", "stockade.cli.main"]
PLURAL = {"ReplicationController": "replicationcontrollers", "DaemonSet": "daemonsets", "CronJob": "cronjobs"}


def bodies(work: Path) -> list[bytes]:
    with tarfile.open(SHARED / "data" / "manifests" / "real-manifests.tar.gz") as tf:
        tf.extractall(work, filter="data")
    out = []
    for path in sorted((work / "badPods").rglob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not isinstance(obj, dict) or obj.get("kind") in (None, "Service"):
                continue
            group, _, version = obj["apiVersion"].rpartition("/")
            gvk = {"group": group, "version": version, "kind": obj["kind"]}
            for ns in ("prod", "dev"):
                req = {
                    "uid": str(uuid.uuid4()),
                    "kind": gvk,
                    "resource": {"group": group, "version": version,
                                 "resource": PLURAL.get(obj["kind"], obj["kind"].lower() + "s")},
                    "namespace": ns,
                    "operation": "CREATE",
                    "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
                    "object": obj,
                    "dryRun": False,
                }  # fmt: skip
                out.append(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                       "request": req}).encode())  # fmt: skip
    return out


def load(base: str, ca: Path, payloads: list[bytes], rate: float, duration: float, work: Path) -> dict[str, Any]:
    """Runs admission_load.mjs (Node): it sends on schedule and reports every latency."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("needs node (Debian's nodejs) for the load generator")
    bodies_file = work / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(payloads) + b"\n")
    out = subprocess.run(
        [node, str(Path(__file__).with_name("admission_load.mjs")), base, str(ca), str(bodies_file), str(rate),
         str(duration)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(out.stdout)
    return {"sent": doc["sent"], "elapsed": doc["elapsed"], "latencies": [x / 1e3 for x in doc["latencies_ms"]],
            "errors": doc["errors"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=60.0)
    args = ap.parse_args()
    if args.rate * args.duration > 100_000:
        raise SystemExit("bounded: at most 100,000 requests per run")
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-admission-"))
    payloads = bodies(work)
    subprocess.run([*CLI, "admission", "certs", str(work / "certs"), "--san", "127.0.0.1"], check=True,
                   capture_output=True)  # fmt: skip
    policy = work / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "rules": {"STK-PSS-B-*": "deny", "STK-PSS-R-*": "warn"},
                "defaultMode": "audit",
                "namespaces": {"dev": "audit"},
                "violationsLog": str(work / "violations.jsonl"),
            },
            sort_keys=False,
        )
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    certs = work / "certs"
    server = subprocess.Popen(
        [
            *CLI,
            "admission",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--policy",
            str(policy),
            "--cert",
            str(certs / "tls.crt"),
            "--key",
            str(certs / "tls.key"),
        ]
    )
    base = f"https://127.0.0.1:{port}"
    try:
        ctx = ssl.create_default_context(cafile=certs / "ca.crt")
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz", verify=ctx).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        res = load(base, certs / "ca.crt", payloads, args.rate, args.duration, work)
        metrics = httpx.get(base + "/metrics", verify=ctx).text
    finally:
        server.terminate()
        server.wait(timeout=10)
    lat = sorted(res["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive")
    denied = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith('stockade_admission_requests_total{decision="denied"}'))  # fmt: skip
    print(f"admission webhook, {len(payloads)} distinct AdmissionReview bodies from badPods, TLS on loopback")
    print(f"requests {res['sent']} at {args.rate:.0f}/s target, achieved {res['sent'] / res['elapsed']:.1f}/s, "
          f"denied {denied:.0f}, errors {len(res['errors'])}")  # fmt: skip
    print(f"latency ms: p50 {q[49] * 1e3:.2f}  p90 {q[89] * 1e3:.2f}  p99 {q[98] * 1e3:.2f}  max {lat[-1] * 1e3:.2f}")
    print("anchor (published, not measured here): Kyverno ~40 ms average at 100 users; goal p99 < 10 ms")


if __name__ == "__main__":
    main()

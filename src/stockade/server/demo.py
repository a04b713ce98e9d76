"""`stockade server --demo`: fill a server by running the real engines on small inputs and sending what they find
through the real ingestion API, as a cluster would: posture and running containers from the shipped manifests
(server/demo/manifests.yaml), two images that it builds from this machine's own package lists (dpkg status and
the installed Python distributions) and scans with the vulnerability database, audit alerts from a shipped trace,
sensor alerts from shipped node events, and admission violations from reviewing the manifests."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from stockade.server.client import Client, scan_document
from stockade.server.store import Conflict, Store

log = logging.getLogger("stockade.demo")

DEMO = Path(__file__).parent / "demo"
CLUSTER = "demo"
DEBIAN_IMAGE = "demo.local/shop/checkout:2.3"
PYTHON_IMAGE = "demo.local/shop/storefront:1.0"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def build_image(dest: Path, tag: str, files: dict[str, bytes], created_by: str) -> Path:
    """A one-layer docker-archive (what `docker save` writes) holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as layer:
        for name, data in sorted(files.items()):
            _add(layer, name, data)
    layer_bytes = buf.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = orjson.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": created_by}],
        }
    )
    cfg_id = hashlib.sha256(config).hexdigest()
    manifest = orjson.dumps([{"Config": f"{cfg_id}.json", "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}])
    with tarfile.open(dest, "w") as tf:
        _add(tf, f"{diff_id}/layer.tar", layer_bytes)
        _add(tf, f"{cfg_id}.json", config)
        _add(tf, "manifest.json", manifest)
    return dest


def host_debian_files() -> dict[str, bytes] | None:
    status, osr = Path("/var/lib/dpkg/status"), Path("/etc/os-release")
    if not status.is_file() or not osr.is_file():
        return None
    return {"etc/os-release": osr.read_bytes(), "var/lib/dpkg/status": status.read_bytes()}


def host_python_files() -> dict[str, bytes]:
    files = {"etc/os-release": b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'}
    for dist in metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        meta = dist.read_text("METADATA")
        if name and version and meta:
            files[f"usr/local/lib/python3.11/site-packages/{name.replace('-', '_')}-{version}.dist-info/METADATA"] = (
                meta.encode()
            )
    return files


def _spread(times: int, i: int, now: float, days: int = 6) -> str:
    """Event i of ``times`` placed over the last ``days`` days (so the trend chart has a shape)."""
    t = now - days * 86400 * (1 - i / max(times, 1)) - 60
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(t))


def audit_alerts(now: float) -> list[dict[str, Any]]:
    from stockade.audit import events as aev
    from stockade.audit.detect import Detector
    from stockade.audit.rules import load

    lines = (DEMO / "audit.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines if line.strip()]
    for i, d in enumerate(docs):
        d["requestReceivedTimestamp"] = d["stageTimestamp"] = _spread(len(docs), min(i, 8), now)
    detector = Detector(load())
    stats = aev.Stats()
    data = b"".join(orjson.dumps(d) + b"\n" for d in docs)
    for _off, ev in aev.parse_stream(io.BytesIO(data), stats):
        detector.process(ev)
    return [a.to_dict() for a in detector.alerts]


def sensor_alerts() -> list[dict[str, Any]]:
    from stockade.sensor.detect import Detector
    from stockade.sensor.rules import load

    detector = Detector(load())
    for line in (DEMO / "sensor-events.jsonl").read_bytes().splitlines():
        if line.strip():
            detector.process(orjson.loads(line))
    return [a.to_dict() for a in detector.alerts]


def admission_violations(resources: list[Any]) -> list[dict[str, Any]]:
    """Review each shipped object as an AdmissionReview in audit mode; the violations log is what gets sent."""
    from stockade.admission.policy import AdmissionPolicy
    from stockade.admission.review import Reviewer

    with tempfile.TemporaryDirectory() as tmp:
        logp = Path(tmp) / "violations.jsonl"
        policy = AdmissionPolicy.from_dict(
            {"defaultMode": "audit", "exemptNamespaces": [], "violationsLog": str(logp)}, base=Path(tmp)
        )
        reviewer = Reviewer(policy)
        try:
            for i, r in enumerate(resources):
                if r.kind in ("Namespace", "Service", "ServiceAccount"):
                    continue
                reviewer.review(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "request": {
                            "uid": f"demo-{i}",
                            "kind": {"group": "", "version": "v1", "kind": r.kind},
                            "operation": "CREATE",
                            "namespace": r.namespace,
                            "name": r.name,
                            "userInfo": {"username": "ci-deployer", "groups": ["system:authenticated"]},
                            "object": r.raw,
                        },
                    }
                )
        finally:
            reviewer.close()
        return [orjson.loads(line) for line in logp.read_bytes().splitlines() if line.strip()]


def fill(store: Store, url: str, vulndb: Path | None, ca: Path | None = None) -> dict[str, Any]:
    """Create the demo cluster and send it everything the engines find; returns what was sent."""
    from stockade.posture import load_manifests as load
    from stockade.server.agent import snapshot

    try:
        _cid, token = store.create_cluster(CLUSTER, "demo")
    except Conflict:
        token = store.new_cluster_token(CLUSTER, "demo")
    client = Client(url, token, CLUSTER, ca=ca)
    sent: dict[str, Any] = {}
    now = time.time()
    try:
        resources, _warn = load([DEMO / "manifests.yaml"])
        snap = snapshot(resources, "v1.30.4")
        client.send("snapshot", [snap])
        sent["containers"], sent["recommendations"] = len(snap["containers"]), len(snap["recommendations"])
        if vulndb is not None:
            sent["scans"] = _scan_images(client, vulndb)
        else:
            log.warning("demo: no vulnerability database (--vulndb): images are listed as not scanned")
        audit = audit_alerts(now)
        client.send("alerts", audit, "audit")
        sensor = sensor_alerts()
        client.send("alerts", sensor, "sensor")
        sent["alerts"] = len(audit) + len(sensor)
        violations = admission_violations(resources)
        client.send("violations", violations, "admission")
        sent["violations"] = len(violations)
    finally:
        client.close()
    return sent


def _scan_images(client: Client, vulndb: Path) -> int:
    from stockade.inventory import catalog_image
    from stockade.match.matcher import match
    from stockade.vulndb.store import VulnDB

    vdb = VulnDB(vulndb)
    docs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = []
            deb = host_debian_files()
            if deb is not None:
                images.append((DEBIAN_IMAGE, deb, "stockade demo: this machine's Debian package list"))
            images.append((PYTHON_IMAGE, host_python_files(), "stockade demo: this machine's Python distributions"))
            for tag, files, how in images:
                path = build_image(Path(tmp) / f"{len(docs)}.tar", tag, files, how)
                inv = catalog_image(str(path))
                docs.append(scan_document(tag, inv, match(inv, vdb), vdb.meta("built_at") or ""))
    finally:
        vdb.close()
    client.send_scans(docs)
    return len(docs)

"""Pulling from a real OCI registry (Distribution 2.8, Debian's docker-registry) on loopback.

Two registries: one with htpasswd basic auth over TLS, one with bearer-token auth whose token
service is a small server in this file that signs RS256 JWTs with a certificate the registry trusts.
Images are pushed with skopeo.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from server_util import free_port

from stockade.image.registry import RegistryError, docker_credentials, parse_reference
from stockade.inventory import catalog_image

USER, PASSWORD = "scanner", "s3cret-pass"


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.fail(f"{t} is required (installed by .ci/run)")


def _cert(d: Path) -> tuple[Path, Path]:
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def _start_registry(d: Path, port: int, auth: str) -> subprocess.Popen[bytes]:
    key, cert = d / "key.pem", d / "cert.pem"
    (d / "config.yml").write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {d / "data"}
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {cert}
    key: {key}
auth:
{auth}
"""
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(d / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "registry.log", "wb"),  # noqa: SIM115 - handed to the child process
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError((d / "registry.log").read_text())


def _push(src: str, dest: str, creds: str) -> None:
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds, src, f"docker://{dest}"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def alpine_archive(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("alpine") / "alpine.tar"
    out.write_bytes(gzip.decompress((fixtures_dir / "images" / "trivy-alpine-311.tar.gz").read_bytes()))
    return out


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, alpine_archive: Path) -> Iterator[tuple[str, Path]]:
    _need("docker-registry", "htpasswd", "skopeo", "openssl")
    d = tmp_path_factory.mktemp("registry-basic")
    _cert(d)
    subprocess.run(["htpasswd", "-Bbc", str(d / "htpasswd"), USER, PASSWORD], check=True, capture_output=True)
    port = free_port()
    proc = _start_registry(d, port, f"  htpasswd:\n    realm: stockade-test\n    path: {d / 'htpasswd'}")
    host = f"127.0.0.1:{port}"
    try:
        _push(f"docker-archive:{alpine_archive}", f"{host}/library/alpine:3.11", f"{USER}:{PASSWORD}")
        yield host, d / "cert.pem"
    finally:
        proc.kill()
        proc.wait()


def _docker_config(d: Path, host: str, user: str, password: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return d


def _expected(alpine_archive: Path) -> set[tuple[str, str]]:
    return {(p.purl, p.layer_digest) for p in catalog_image(str(alpine_archive), cache_dir=False).packages}


def test_basic_auth_with_docker_config(
    basic_registry: tuple[str, Path], alpine_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, cert = basic_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, PASSWORD)))
    monkeypatch.setenv("STOCKADE_CA_BUNDLE", str(cert))
    inv = catalog_image(f"{host}/library/alpine:3.11", cache_dir=False)
    assert {(p.purl, p.layer_digest) for p in inv.packages} == _expected(alpine_archive)
    assert inv.repo_digests and inv.repo_digests[0].startswith(f"{host}/library/alpine@sha256:")
    by_digest = catalog_image(inv.repo_digests[0], cache_dir=False)
    assert {(p.purl, p.layer_digest) for p in by_digest.packages} == _expected(alpine_archive)


def test_wrong_password_is_a_clear_error(
    basic_registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, cert = basic_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, "wrong")))
    monkeypatch.setenv("STOCKADE_CA_BUNDLE", str(cert))
    with pytest.raises(RegistryError, match=rf"{host}/library/alpine:3.11: access denied \(HTTP 401\)"):
        catalog_image(f"{host}/library/alpine:3.11", cache_dir=False)


def test_no_credentials_and_unknown_tag(
    basic_registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, cert = basic_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.setenv("STOCKADE_CA_BUNDLE", str(cert))
    with pytest.raises(RegistryError, match="requires credentials"):
        catalog_image(f"{host}/library/alpine:3.11", cache_dir=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, PASSWORD)))
    with pytest.raises(RegistryError, match="not found"):
        catalog_image(f"{host}/library/alpine:nope", cache_dir=False)


def test_untrusted_certificate_is_refused(
    basic_registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, _ = basic_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, PASSWORD)))
    monkeypatch.delenv("STOCKADE_CA_BUNDLE", raising=False)
    with pytest.raises(RegistryError, match="cannot reach"):
        catalog_image(f"{host}/library/alpine:3.11", cache_dir=False)


def test_anonymous_plain_http_registry(
    tmp_path_factory: pytest.TempPathFactory, alpine_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No auth, no TLS: the registry is named in STOCKADE_INSECURE_REGISTRIES."""
    _need("docker-registry", "skopeo")
    d = tmp_path_factory.mktemp("registry-anon")
    port = free_port()
    (d / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(d / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"docker-archive:{alpine_archive}",
                f"docker://{host}/pub/alpine:3.11",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        monkeypatch.setenv("DOCKER_CONFIG", str(d / "none"))
        monkeypatch.setenv("STOCKADE_INSECURE_REGISTRIES", host)
        inv = catalog_image(f"{host}/pub/alpine:3.11", cache_dir=False)
        assert {(p.purl, p.layer_digest) for p in inv.packages} == _expected(alpine_archive)
        monkeypatch.delenv("STOCKADE_INSECURE_REGISTRIES")
        with pytest.raises(RegistryError, match="cannot reach"):  # https to a plain-http server
            catalog_image(f"{host}/pub/alpine:3.11", cache_dir=False)
    finally:
        proc.kill()
        proc.wait()


# --- bearer tokens -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer(ThreadingHTTPServer):
    key_pem: bytes
    cert_der: bytes
    service: str
    issued: list[str]


class _TokenHandler(BaseHTTPRequestHandler):
    server: _TokenServer

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        q = parse_qs(urlparse(self.path).query)
        access = []
        for scope in q.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.server.cert_der).decode()]}
        claims = {
            "iss": "stockade-test-issuer",
            "sub": USER,
            "aud": self.server.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(now) + self.path,
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        key = serialization.load_pem_private_key(self.server.key_pem, password=None)
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
        token = f"{signing_input}.{_b64(sig)}"
        self.server.issued.append(q.get("scope", [""])[0])
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, alpine_archive: Path
) -> Iterator[tuple[str, Path, _TokenServer]]:
    _need("docker-registry", "skopeo", "openssl")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("registry-token")
    key, cert = _cert(d)
    server = _TokenServer(("127.0.0.1", 0), _TokenHandler)
    server.key_pem = key.read_bytes()
    server.cert_der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    server.service = "stockade-test-registry"
    server.issued = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    port = free_port()
    proc = _start_registry(
        d,
        port,
        f"""  token:
    realm: {realm}
    service: {server.service}
    issuer: stockade-test-issuer
    rootcertbundle: {cert}""",
    )
    host = f"127.0.0.1:{port}"
    try:
        _push(f"docker-archive:{alpine_archive}", f"{host}/team/alpine:3.11", f"{USER}:{PASSWORD}")
        yield host, cert, server
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()


def test_bearer_token_flow(
    token_registry: tuple[str, Path, _TokenServer],
    alpine_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, cert, server = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, PASSWORD)))
    monkeypatch.setenv("STOCKADE_CA_BUNDLE", str(cert))
    server.issued.clear()
    inv = catalog_image(f"{host}/team/alpine:3.11", cache_dir=False)
    assert {(p.purl, p.layer_digest) for p in inv.packages} == _expected(alpine_archive)
    assert server.issued == ["repository:team/alpine:pull"]  # one token, read-only scope, reused


def test_bearer_token_refused(
    token_registry: tuple[str, Path, _TokenServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, cert, _ = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", host, USER, "bad")))
    monkeypatch.setenv("STOCKADE_CA_BUNDLE", str(cert))
    with pytest.raises(RegistryError, match=r"token service refused the credentials \(HTTP 401\)"):
        catalog_image(f"{host}/team/alpine:3.11", cache_dir=False)


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("alpine", ("registry-1.docker.io", "library/alpine", "latest", None)),
        ("docker.io/bitnami/redis:7.2", ("registry-1.docker.io", "bitnami/redis", "7.2", None)),
        ("localhost:5000/a/b@sha256:" + "a" * 64, ("localhost:5000", "a/b", None, "sha256:" + "a" * 64)),
        ("ghcr.io/org/img:v1", ("ghcr.io", "org/img", "v1", None)),
    ],
)
def test_parse_reference(ref: str, expected: tuple[str, str, str | None, str | None]) -> None:
    r = parse_reference(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == expected


def test_docker_config_variants(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:with:colons").decode()}}})
    )
    assert docker_credentials("registry-1.docker.io", tmp_path / "config.json") == ("u", "p:with:colons")
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(RegistryError, match="unreadable docker config"):
        docker_credentials("x", tmp_path / "config.json")

"""Pull an image over the OCI Distribution API: anonymous, basic and bearer-token auth."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson

from stockade.image.layer import Limits
from stockade.image.manifest import INDEX_TYPES, Image, layers_from, select_manifest
from stockade.model import StockadeError

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DOCKER_HUB = "registry-1.docker.io"


class RegistryError(StockadeError):
    """A registry could not be reached, refused the credentials, or served a bad object."""


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def ref(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        sep = "@" if self.digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.ref}"


_REF = re.compile(
    r"^(?P<name>[a-z0-9._/:-]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[a-f0-9]{32,}))?$"
)


def parse_reference(ref: str) -> Reference:
    m = _REF.match(ref.strip())
    if not m:
        raise RegistryError(f"{ref}: not a valid image reference")
    name = m.group("name")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repo = first, rest
    else:
        registry, repo = DOCKER_HUB, name
        if "/" not in repo:
            repo = f"library/{repo}"
    if registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
    tag = m.group("tag")
    digest = m.group("digest")
    if not tag and not digest:
        tag = "latest"
    return Reference(registry, repo, tag, digest)


def docker_credentials(registry: str, config_path: Path | None = None) -> tuple[str, str] | None:
    """Username and password for ``registry`` from ~/.docker/config.json ("auths" entries)."""
    if config_path is None:
        base = os.environ.get("DOCKER_CONFIG")
        config_path = Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"
    if not config_path.is_file():
        return None
    try:
        cfg = orjson.loads(config_path.read_bytes())
    except (orjson.JSONDecodeError, OSError) as exc:
        raise RegistryError(f"{config_path}: unreadable docker config ({exc})") from None
    auths = cfg.get("auths") or {}
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "docker.io", "index.docker.io"]
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{config_path}: bad auth entry for {key}") from None
            return user, pw
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    """A small client for the parts of the Distribution API a scanner needs."""

    def __init__(
        self,
        ref: Reference,
        credentials: tuple[str, str] | None = None,
        insecure: bool = False,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 30.0,
    ) -> None:
        self.ref = ref
        self.credentials = credentials
        scheme = "http" if insecure else "https"
        self.base = f"{scheme}://{ref.registry}/v2/{ref.repository}"
        self.http = httpx.Client(timeout=timeout, verify=verify, follow_redirects=True)
        self._auth_header: str | None = None

    def close(self) -> None:
        self.http.close()

    def _authenticate(self, challenge: str) -> None:
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                raise RegistryError(f"{self.ref}: registry requires credentials")
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            self._auth_header = f"Basic {token}"
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"{self.ref}: unsupported auth challenge {challenge!r}")
        query = {"service": params.get("service", ""), "scope": f"repository:{self.ref.repository}:pull"}
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            resp = self.http.get(params["realm"], params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{self.ref}: token service {params['realm']} unreachable ({exc})") from None
        if resp.status_code in (401, 403):
            raise RegistryError(f"{self.ref}: token service refused the credentials (HTTP {resp.status_code})")
        if resp.status_code != 200:
            raise RegistryError(f"{self.ref}: token service answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise RegistryError(f"{self.ref}: token service sent malformed JSON") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"{self.ref}: token service sent no token")
        self._auth_header = f"Bearer {token}"

    def _request(self, path: str, accept: str | None = None, stream: bool = False) -> httpx.Response:
        url = f"{self.base}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self._auth_header:
                headers["Authorization"] = self._auth_header
            try:
                req = self.http.build_request("GET", url, headers=headers)
                resp = self.http.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise RegistryError(f"{self.ref}: cannot reach {self.ref.registry} ({exc})") from None
            if resp.status_code == 401 and attempt == 0:
                challenge = resp.headers.get("www-authenticate", "")
                resp.close()
                self._authenticate(challenge)
                continue
            if resp.status_code in (401, 403):
                resp.close()
                raise RegistryError(f"{self.ref}: access denied (HTTP {resp.status_code}); check credentials")
            if resp.status_code == 404:
                resp.close()
                raise RegistryError(f"{self.ref}: not found ({path})")
            if resp.status_code >= 400:
                resp.close()
                raise RegistryError(f"{self.ref}: registry answered HTTP {resp.status_code} for {path}")
            return resp
        raise RegistryError(f"{self.ref}: authentication failed")

    def manifest(self, ref: str) -> tuple[dict[str, Any], str, bytes]:
        resp = self._request(f"manifests/{ref}", accept=MANIFEST_ACCEPT)
        body = resp.content
        if len(body) > 4 * 1024**2:
            raise RegistryError(f"{self.ref}: manifest too large")
        if ref.startswith("sha256:") and "sha256:" + hashlib.sha256(body).hexdigest() != ref:
            raise RegistryError(f"{self.ref}: manifest digest mismatch")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RegistryError(f"{self.ref}: malformed manifest") from None
        media = doc.get("mediaType") or resp.headers.get("content-type", "").split(";")[0]
        return doc, media, body

    def blob_to(self, digest: str, dest: Path, max_bytes: int) -> None:
        """Download a blob to ``dest``, verifying its digest as it streams."""
        algo, _, expected = digest.partition(":")
        if algo != "sha256":
            raise RegistryError(f"{self.ref}: unsupported digest algorithm {algo}")
        h = hashlib.sha256()
        resp = self._request(f"blobs/{digest}", stream=True)
        total = 0
        try:
            with dest.open("wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise RegistryError(f"{self.ref}: blob {digest} larger than {max_bytes} bytes")
                    h.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise RegistryError(f"{self.ref}: download of {digest} failed ({exc})") from None
        finally:
            resp.close()
        if h.hexdigest() != expected:
            dest.unlink(missing_ok=True)
            raise RegistryError(f"{self.ref}: blob {digest} failed digest verification")


def pull(ref_text: str, img: Image, platform: str | None, workdir: Path, limits: Limits) -> None:
    """Fill ``img`` from a registry; blobs land in ``workdir`` (private, removed with the image)."""

    ref = parse_reference(ref_text)
    insecure = os.environ.get("STOCKADE_INSECURE_REGISTRIES", "")
    plain_http = ref.registry in [r.strip() for r in insecure.split(",") if r.strip()]
    ca_bundle = os.environ.get("STOCKADE_CA_BUNDLE")
    verify: bool | ssl.SSLContext = True
    if ca_bundle:
        try:
            verify = ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"STOCKADE_CA_BUNDLE={ca_bundle}: unusable CA bundle ({exc})") from None
    user, pw = os.environ.get("STOCKADE_REGISTRY_USERNAME"), os.environ.get("STOCKADE_REGISTRY_PASSWORD")
    creds = (user, pw or "") if user else docker_credentials(ref.registry)
    client = RegistryClient(ref, creds, insecure=plain_http, verify=verify)
    img._cleanup.append(client.close)
    doc, media, body = client.manifest(ref.ref)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if media in INDEX_TYPES or "manifests" in doc:
        desc = select_manifest(doc, platform, str(ref))
        doc, media, body = client.manifest(desc["digest"])
        digest = desc["digest"]
    img.repo_digests = [f"{ref.registry}/{ref.repository}@{digest}"]
    if ref.tag:
        img.repo_tags = [f"{ref.registry}/{ref.repository}:{ref.tag}"]
    cfg_digest = (doc.get("config") or {}).get("digest")
    if not cfg_digest:
        raise RegistryError(f"{ref}: manifest has no config (schema 1 manifests are not supported)")
    cfg_path = workdir / "config.json"
    client.blob_to(cfg_digest, cfg_path, 16 * 1024**2)
    try:
        img.config = orjson.loads(cfg_path.read_bytes())
    except orjson.JSONDecodeError:
        raise RegistryError(f"{ref}: malformed image config") from None
    img.image_id = cfg_digest
    descs = [(d["digest"], d.get("mediaType", ""), int(d.get("size", -1))) for d in doc.get("layers") or []]

    def opener(layer_digest: str) -> BinaryIO:
        dest = workdir / layer_digest.replace(":", "_")
        if not dest.exists():
            client.blob_to(layer_digest, dest, limits.max_layer_bytes)
        return dest.open("rb")

    img.layers = layers_from(img.config, descs, opener, str(ref))

"""An opened image (config, layers, work dir) and the OCI manifest logic every source shares: index entries by
platform, layers from a config and a manifest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from stockade.model import LayerInfo, StockadeError

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


class ImageError(StockadeError):
    """The image could not be opened or is malformed."""


@dataclass(slots=True)
class Layer:
    """A layer and a way to open its (possibly compressed) blob."""

    info: LayerInfo
    open: Callable[[], BinaryIO]


@dataclass(slots=True)
class Image:
    """An opened image: config, layers in order, and a private work dir removed on close."""

    source: str
    config: dict[str, Any]
    layers: list[Layer]
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    image_id: str = ""
    rootfs: Path | None = None  # set for a plain directory: no layers, walked instead
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            with contextlib.suppress(OSError):
                fn()
        self._cleanup.clear()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_platform() -> str:
    import platform as _platform

    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return f"linux/{arch}"


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ImageError(f"{what}: malformed JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what}: expected a JSON object")
    return value


def select_manifest(index: dict[str, Any], platform: str | None, what: str) -> dict[str, Any]:
    """Pick the manifest descriptor of an index that matches ``platform`` (os/arch[/variant])."""
    manifests = index.get("manifests") or []
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{what}: index lists no manifests")
    want = (platform or default_platform()).split("/")
    candidates = []
    for desc in manifests:
        plat = desc.get("platform") or {}
        if plat.get("os") == "unknown":  # attestation manifests
            continue
        got = [plat.get("os", ""), plat.get("architecture", ""), plat.get("variant", "")]
        if got[0] == want[0] and got[1] == want[1] and (len(want) < 3 or got[2] == want[2]):
            candidates.append(desc)
    if not candidates:
        if platform is None and len(manifests) == 1:
            return dict(manifests[0])
        have = sorted(
            "/".join(
                x
                for x in (
                    d.get("platform", {}).get("os"),
                    d.get("platform", {}).get("architecture"),
                    d.get("platform", {}).get("variant"),
                )
                if x
            )
            for d in manifests
        )
        raise ImageError(f"{what}: no manifest for platform {'/'.join(want)} (has: {', '.join(have)})")
    return dict(candidates[0])


def history_for_layers(config: dict[str, Any], n: int) -> list[str]:
    """The created_by of each non-empty history entry, aligned with the layers."""
    out = [str(h.get("created_by", "")) for h in config.get("history") or [] if not h.get("empty_layer")]
    return (out + [""] * n)[:n]


def _bind(opener: Callable[[str], BinaryIO], digest: str) -> Callable[[], BinaryIO]:
    return lambda: opener(digest)


def layers_from(
    config: dict[str, Any], descs: list[tuple[str, str, int]], opener: Callable[[str], BinaryIO], what: str
) -> list[Layer]:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(descs):
        raise ImageError(f"{what}: config lists {len(diff_ids)} diff_ids but manifest has {len(descs)} layers")
    created = history_for_layers(config, len(descs))
    layers = []
    for i, ((digest, media_type, size), diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        info = LayerInfo(i, digest or diff_id, diff_id, media_type, size, created[i])
        layers.append(Layer(info, _bind(opener, digest)))
    return layers

"""Catalog an image: read every layer once, run the catalogers that asked for each path, merge layers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stockade.image import Entry, Image, LayerError, Limits, decompressed, is_whiteout, iter_rootfs, iter_tar_entries
from stockade.image import open_image as _open_image
from stockade.inventory.apk import ApkCataloger
from stockade.inventory.base import Cataloger, ParseError
from stockade.inventory.dotnet import DotnetCataloger
from stockade.inventory.dpkg import (
    COPYRIGHT_CATALOGER,
    FILES_CATALOGER,
    DpkgCataloger,
    DpkgCopyrightCataloger,
    DpkgFilesCataloger,
    package_of_copyright,
    package_of_list,
)
from stockade.inventory.golang import GoBinaryCataloger, GoModCataloger
from stockade.inventory.java import JavaArchiveCataloger
from stockade.inventory.node import NodeLockCataloger, NodePackageCataloger
from stockade.inventory.osrelease import OSReleaseCataloger, detect_os
from stockade.inventory.owners import assign_owners, file_owners, maven_coordinates, resolve_maven
from stockade.inventory.php import ComposerCataloger
from stockade.inventory.purl import assign_purls
from stockade.inventory.python import PythonInstalledCataloger, PythonLockCataloger
from stockade.inventory.rpm import RpmCataloger
from stockade.inventory.ruby import GemfileLockCataloger, GemspecCataloger
from stockade.inventory.rust import CargoLockCataloger, RustBinaryCataloger
from stockade.model import Inventory, LayerInfo, Package

# Bump when a cataloger's output changes, so that cached layer results are recomputed.
CATALOG_VERSION = 3
# symbolic links kept from the layers (the rest are not read): Debian's Maven coordinates of its jars
LINK_PREFIX = "usr/share/maven-repo/"

ALL_CATALOGERS: tuple[Cataloger, ...] = (
    OSReleaseCataloger(),
    DpkgCataloger(),
    DpkgCopyrightCataloger(),
    DpkgFilesCataloger(),
    ApkCataloger(),
    RpmCataloger(),
    PythonInstalledCataloger(),
    PythonLockCataloger(),
    NodePackageCataloger(),
    NodeLockCataloger(),
    JavaArchiveCataloger(),
    GoBinaryCataloger(),
    GoModCataloger(),
    DotnetCataloger(),
    CargoLockCataloger(),
    RustBinaryCataloger(),
    GemspecCataloger(),
    GemfileLockCataloger(),
    ComposerCataloger(),
)

_MIN_BINARY = 1024

# Source-tree lock files: in an image they are often build leftovers that do not match what is
# installed, so like Trivy stockade reads them only when asked (--lockfiles) or for source dirs.
LOCKFILE_NAMES = frozenset(
    {
        "requirements.txt",
        "poetry.lock",
        "Pipfile.lock",
        "uv.lock",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "go.mod",
        "Gemfile.lock",
        "gems.locked",
        "composer.lock",
    }
)


class Dispatcher:
    """Index of catalogers by exact path, basename, suffix and prefix: one lookup per entry."""

    def __init__(self, catalogers: Iterable[Cataloger], lockfiles: bool = False) -> None:
        catalogers = tuple(catalogers)
        self.by_path: dict[str, list[Cataloger]] = {}
        self.by_base: dict[str, list[Cataloger]] = {}
        self.by_suffix: list[tuple[str, Cataloger]] = []
        self.by_prefix: list[tuple[str, Cataloger]] = []
        self.binary: list[Cataloger] = []
        for c in catalogers:
            for p in c.paths:
                self.by_path.setdefault(p, []).append(c)
            for b in c.basenames:
                if lockfiles or b not in LOCKFILE_NAMES:
                    self.by_base.setdefault(b, []).append(c)
            self.by_suffix += [(s, c) for s in c.suffixes]
            self.by_prefix += [(p, c) for p in c.prefixes]
            if c.executables:
                self.binary.append(c)
        self.suffixes = tuple(s for s, _ in self.by_suffix)
        self.prefixes = tuple(p for p, _ in self.by_prefix)
        self.signature = hashlib.sha256(
            repr((CATALOG_VERSION, sorted(c.name for c in catalogers), lockfiles)).encode()
        ).hexdigest()[:16]

    def select(self, path: str) -> list[Cataloger]:
        found: list[Cataloger] = []
        if path in self.by_path:
            found += self.by_path[path]
        b = posixpath.basename(path)
        if b in self.by_base:
            found += self.by_base[b]
        if self.suffixes and b.lower().endswith(self.suffixes):
            found += [c for s, c in self.by_suffix if b.lower().endswith(s)]
        if self.prefixes and path.startswith(self.prefixes):
            found += [c for p, c in self.by_prefix if path.startswith(p)]
        return [c for c in dict.fromkeys(found) if c.wants(path)]


@dataclass(slots=True)
class FileResult:
    cataloger: str
    packages: list[Package] = field(default_factory=list)
    text: str | None = None


@dataclass(slots=True)
class LayerResult:
    """What one layer holds, independent of the layers below it: the unit cached by diff_id."""

    files: dict[str, list[FileResult]] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaques: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # link path -> target path, under LINK_PREFIX

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "files": {
                    p: [{"c": r.cataloger, "p": [x.to_dict() for x in r.packages], "t": r.text} for r in rs]
                    for p, rs in self.files.items()
                },
                "whiteouts": self.whiteouts,
                "opaques": self.opaques,
                "warnings": self.warnings,
                "links": self.links,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> LayerResult:
        doc = orjson.loads(data)
        files = {
            p: [FileResult(r["c"], [Package(**x) for x in r["p"]], r["t"]) for r in rs]
            for p, rs in doc["files"].items()
        }
        return cls(files, doc["whiteouts"], doc["opaques"], doc["warnings"], doc.get("links", {}))


def analyze_entries(entries: Iterator[Entry], dispatcher: Dispatcher, limits: Limits, where: str) -> LayerResult:
    """Run the catalogers over one layer's entries, reading only the files they asked for."""
    result = LayerResult()
    for entry in entries:
        wo = is_whiteout(entry.path)
        if wo is not None:
            (result.opaques if wo[0] == "opaque" else result.whiteouts).append(wo[1])
            continue
        if entry.kind == "symlink" and entry.path.startswith(LINK_PREFIX) and entry.path.endswith(".jar"):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.linkname))
            result.links[entry.path] = target.lstrip("/") if entry.linkname.startswith("/") else target
            continue
        if entry.kind != "file":
            continue
        wanted = dispatcher.select(entry.path)
        data: bytes | None = None
        if not wanted and dispatcher.binary and entry.executable and entry.size >= _MIN_BINARY:
            head = entry.head(4)
            wanted = [c for c in dispatcher.binary if head.startswith(c.magic)]
            if wanted:
                data = head + entry.read(limits.max_file_bytes)
        if not wanted:
            continue
        if data is None:
            try:
                data = entry.read(limits.max_file_bytes)
            except LayerError as exc:
                raise LayerError(f"layer {where}: {exc}") from None
        for c in wanted:
            try:
                parsed = c.run(entry.path, data)
            except ParseError as exc:
                result.warnings.append(f"layer {where}: {exc}")
                continue
            result.warnings += [f"layer {where}: {w}" for w in parsed.warnings]
            if parsed.packages or parsed.text is not None:
                result.files.setdefault(entry.path, []).append(FileResult(c.name, parsed.packages, parsed.text))
    return result


class LayerCache:
    """Content-addressed store of layer results: rescanning a known layer reads nothing from it."""

    def __init__(self, root: Path | None, signature: str) -> None:
        self.root = root
        self.signature = signature

    @staticmethod
    def default_root() -> Path:
        env = os.environ.get("STOCKADE_CACHE_DIR")
        if env:
            return Path(env)
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "stockade"

    def _path(self, diff_id: str) -> Path | None:
        if self.root is None or not re.fullmatch(r"sha256:[0-9a-f]{64}", diff_id):
            return None
        return self.root / "layers" / self.signature / diff_id[7:]

    def get(self, diff_id: str) -> LayerResult | None:
        p = self._path(diff_id)
        if p is None or not p.is_file():
            return None
        try:
            return LayerResult.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
            return None  # a damaged cache entry is recomputed

    def put(self, diff_id: str, result: LayerResult) -> None:
        p = self._path(diff_id)
        if p is None:
            return
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(result.dumps())
            os.replace(tmp, p)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@dataclass(slots=True)
class Merged:
    """The image's file system after every layer: its packages, release files, dpkg file lists and links."""

    packages: list[Package]
    os_files: dict[str, str]
    dpkg_lists: dict[str, str]  # package name -> its .list text
    links: dict[str, str]
    warnings: list[str]


def merge_layers(results: list[tuple[LayerInfo, LayerResult]]) -> Merged:
    """Apply layers in order (whiteouts, opaque dirs, overrides); attribute each package to its layer."""
    state: dict[str, tuple[int, list[FileResult]]] = {}
    first_seen: dict[str, dict[tuple[str, str, str], int]] = {}
    links: dict[str, str] = {}
    warnings: list[str] = []

    def remove(prefix: str, exact: bool) -> None:
        for p in [p for p in state if p.startswith(prefix + "/") or (exact and p == prefix)]:
            del state[p]
            first_seen.pop(p, None)
        for p in [p for p in links if p.startswith(prefix + "/") or (exact and p == prefix)]:
            del links[p]

    for i, (_, lr) in enumerate(results):
        warnings += lr.warnings
        for d in lr.opaques:
            remove(d, exact=False)
        for w in lr.whiteouts:
            remove(w, exact=True)
        for path in lr.files:  # a file replaces a link of the same path, and the other way round
            links.pop(path, None)
        for path in lr.links:
            state.pop(path, None)
        links.update(lr.links)
        for path, frs in lr.files.items():
            old = first_seen.get(path, {})
            keys = {(p.ecosystem, p.name, p.version) for fr in frs for p in fr.packages}
            first_seen[path] = {k: old.get(k, i) for k in keys}
            state[path] = (i, frs)

    packages: list[Package] = []
    os_files: dict[str, str] = {}
    dpkg_lists: dict[str, str] = {}
    deb_licenses: dict[str, list[str]] = {}
    for path, (_, frs) in sorted(state.items()):
        for fr in frs:
            if fr.cataloger == COPYRIGHT_CATALOGER and fr.text:
                deb_licenses[package_of_copyright(path)] = fr.text.split("\n")
            elif fr.cataloger == FILES_CATALOGER and fr.text is not None:
                dpkg_lists[package_of_list(path)] = fr.text
            elif fr.text is not None:
                os_files[path] = fr.text
            for p in fr.packages:
                idx = first_seen[path].get((p.ecosystem, p.name, p.version), 0)
                info = results[idx][0]
                p.layer_digest = info.diff_id
                p.layer_created_by = info.created_by
                packages.append(p)
    for p in packages:
        if p.ecosystem == "deb" and not p.licenses:
            p.licenses = deb_licenses.get(p.name, [])
    return Merged(packages, os_files, dpkg_lists, links, warnings)


def catalog(
    img: Image,
    catalogers: Iterable[Cataloger] = ALL_CATALOGERS,
    limits: Limits | None = None,
    cache: LayerCache | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    lockfiles: bool = False,
) -> Inventory:
    """Inventory of an opened image."""
    limits = limits or Limits()
    dispatcher = Dispatcher(catalogers, lockfiles)
    inv = Inventory(
        source=img.source,
        image_id=img.image_id,
        repo_tags=img.repo_tags,
        repo_digests=img.repo_digests,
        architecture=str(img.config.get("architecture", "")),
    )
    results: list[tuple[LayerInfo, LayerResult]] = []
    if img.rootfs is not None:
        info = LayerInfo(0, "", "", "directory", -1, str(img.rootfs))
        lr = analyze_entries(iter_rootfs(img.rootfs, inv.warnings), dispatcher, limits, str(img.rootfs))
        results.append((info, lr))
    for n, layer in enumerate(img.layers):
        info = layer.info
        inv.layers.append(info)
        if progress:
            progress(n, len(img.layers), info.diff_id)
        cached = cache.get(info.diff_id) if cache else None
        if cached is not None:
            results.append((info, cached))
            continue
        name = info.diff_id or info.digest
        tar_warnings: list[str] = []
        with contextlib.closing(layer.open()) as blob:
            stream = decompressed(blob, name, limits)
            lr = analyze_entries(iter_tar_entries(stream, name, limits, tar_warnings), dispatcher, limits, name)
        lr.warnings = tar_warnings + lr.warnings
        if cache:
            cache.put(info.diff_id, lr)
        results.append((info, lr))
    if progress:
        progress(len(img.layers), len(img.layers), "")
    merged = merge_layers(results)
    packages = merged.packages
    inv.warnings += merged.warnings
    distroless = any(p.location.startswith("var/lib/dpkg/status.d/") for p in packages)
    inv.os = detect_os(merged.os_files, distroless=distroless)
    installed = {p.name for p in packages if p.ecosystem == "deb"}
    assign_owners(packages, file_owners({k: v for k, v in merged.dpkg_lists.items() if k in installed}))
    resolve_maven(packages, maven_coordinates(merged.links))
    assign_purls(packages, inv.os)
    packages.sort(key=lambda p: (p.ecosystem, p.name.lower(), p.version, p.location))
    inv.packages = packages
    return inv


def catalog_image(
    ref: str,
    platform: str | None = None,
    limits: Limits | None = None,
    cache_dir: Path | bool | None = True,
    progress: Callable[[int, int, str], None] | None = None,
    lockfiles: bool = False,
) -> Inventory:
    """Open ``ref`` and return its inventory; ``cache_dir=False`` disables the layer cache."""
    root = LayerCache.default_root() if cache_dir is True else (cache_dir or None)
    cache = LayerCache(root, Dispatcher(ALL_CATALOGERS, lockfiles).signature) if root else None
    with _open_image(ref, platform=platform, limits=limits) as img:
        return catalog(img, limits=limits, cache=cache, progress=progress, lockfiles=lockfiles)


__all__ = ["ALL_CATALOGERS", "LayerCache", "catalog", "catalog_image"]

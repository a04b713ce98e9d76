"""Java archives: jar, war, ear (and Jenkins plugins) with pom.properties, MANIFEST.MF and nested jars."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile

from stockade.inventory.base import Cataloger, ParseError, ParseResult
from stockade.model import Package

ARCHIVE_SUFFIXES = (".jar", ".war", ".ear", ".par", ".sar", ".jpi", ".hpi")
MAX_NESTING = 4
MAX_NESTED_BYTES = 256 * 1024**2
MAX_TEXT_BYTES = 1024**2  # pom.properties and MANIFEST.MF: real ones are a few KiB


def _read(zf: zipfile.ZipFile, name: str, limit: int, location: str, warnings: list[str]) -> bytes | None:
    """An entry of the archive, read through a stream that stops at ``limit`` bytes (never trusting the size the
    entry declares: a 1 MB jar may inflate to 1 GiB); None, with a warning, when it is larger."""
    with zf.open(name) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        warnings.append(f"{location}!{name}: over {limit} bytes once inflated, skipped")
        return None
    return data
_FILENAME = re.compile(r"^(?P<name>[\w.-]+?)-(?P<version>\d[\w.+-]*)$")


def _properties(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _manifest(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    last = ""
    for line in data.decode("utf-8", errors="replace").splitlines():
        if line.startswith(" ") and last:
            out[last] += line[1:]
        elif ":" in line:
            k, _, v = line.partition(":")
            last = k.strip()
            out[last] = v.strip()
    return out


class JavaArchiveCataloger(Cataloger):
    name = "java-archive"
    ecosystem = "maven"
    suffixes = ARCHIVE_SUFFIXES

    def parse(self, path: str, data: bytes) -> ParseResult:
        pkgs: list[Package] = []
        warnings: list[str] = []
        self._walk(path, data, 0, pkgs, warnings)
        return ParseResult(pkgs, warnings=warnings)

    def _walk(self, location: str, data: bytes, depth: int, out: list[Package], warnings: list[str]) -> None:
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            if depth == 0:
                raise ParseError(f"{location}: not a readable Java archive ({exc})") from None
            return
        found = False
        try:
            for name in names:
                if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
                    raw = _read(zf, name, MAX_TEXT_BYTES, location, warnings)
                    if raw is None:
                        continue
                    props = _properties(raw)
                    g, a, v = props.get("groupId"), props.get("artifactId"), props.get("version")
                    if g and a and v:
                        out.append(Package(name=f"{g}:{a}", version=v, ecosystem="maven", location=location))
                        found = True
            if not found:
                pkg = self._from_manifest_or_name(zf, names, location, warnings)
                if pkg is not None:
                    out.append(pkg)
            if depth < MAX_NESTING:
                for name in names:
                    if name.lower().endswith(ARCHIVE_SUFFIXES):
                        nested = _read(zf, name, MAX_NESTED_BYTES, location, warnings)
                        if nested is not None:
                            self._walk(f"{location}!{name}", nested, depth + 1, out, warnings)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise ParseError(f"{location}: corrupt Java archive ({exc})") from None

    def _from_manifest_or_name(self, zf: zipfile.ZipFile, names: list[str], location: str,
                               warnings: list[str]) -> Package | None:  # fmt: skip
        """Without pom.properties: MANIFEST.MF, else the file name (name-1.2.3.jar)."""
        stem = posixpath.basename(location.split("!")[-1]).rsplit(".", 1)[0]
        m = _FILENAME.match(stem)
        raw = _read(zf, "META-INF/MANIFEST.MF", MAX_TEXT_BYTES, location, warnings) if "META-INF/MANIFEST.MF" in names \
            else None
        if raw is not None:
            mf = _manifest(raw)
            version = mf.get("Implementation-Version") or mf.get("Bundle-Version") or mf.get("Specification-Version")
            group = mf.get("Implementation-Vendor-Id") or ""
            artifact = m.group("name") if m else (mf.get("Bundle-SymbolicName", "").split(";")[0] or stem)
            if version and artifact:
                name = f"{group}:{artifact}" if group else artifact
                return Package(name=name, version=version, ecosystem="maven", location=location)
        if m:
            return Package(name=m.group("name"), version=m.group("version"), ecosystem="maven", location=location)
        return None

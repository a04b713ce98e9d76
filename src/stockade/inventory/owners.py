"""After the layers are merged: which OS package owns each language package's files (dpkg's file lists), and the
Maven coordinates Debian declares for the jars it ships (/usr/share/maven-repo links)."""

from __future__ import annotations

import posixpath
import re

from stockade.model import OS_ECOSYSTEMS, Package

# usr/share/maven-repo/GROUP/PATH/ARTIFACT/VERSION/ARTIFACT-VERSION.jar, a link to the jar in /usr/share/java
_MAVEN_REPO = re.compile(r"^usr/share/maven-repo/(?P<group>.+)/(?P<artifact>[^/]+)/(?P<version>[^/]+)/"
                         r"(?P=artifact)-(?P=version)\.jar$")  # fmt: skip


def file_owners(lists: dict[str, str]) -> dict[str, str]:
    """Path (without the leading slash) -> the Debian package that installed it, from dpkg's .list texts keyed by
    package name."""
    owners: dict[str, str] = {}
    for pkg, listing in lists.items():
        for line in listing.splitlines():
            if line.startswith("/") and len(line) > 1:
                owners[line[1:]] = pkg
    return owners


def assign_owners(packages: list[Package], owners: dict[str, str]) -> int:
    """Set ``owner`` on each language package whose file an OS package installed; returns how many."""
    n = 0
    for p in packages:
        if p.ecosystem in OS_ECOSYSTEMS or not p.location:
            continue
        path = p.location.split("!", 1)[0]  # a jar nested in an owned jar is owned too
        owner = owners.get(path) or owners.get(posixpath.dirname(path))  # egg-info dirs are listed, not PKG-INFO
        if owner:
            p.owner = owner
            n += 1
    return n


def maven_coordinates(links: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """Jar path -> (groupId, artifactId, version) from Debian's maven-repo links to it; a link with the real
    version wins over Debian's "debian" and "1.2.x"-style aliases."""
    out: dict[str, tuple[str, str, str]] = {}
    for link, target in sorted(links.items()):
        m = _MAVEN_REPO.match(link)
        if not m:
            continue
        version = m.group("version")
        alias = version == "debian" or version.endswith(".x")
        if target in out and alias:
            continue
        if target not in out or not out[target][2] or not alias:
            out[target] = (m.group("group").replace("/", "."), m.group("artifact"), "" if alias else version)
    return out


def resolve_maven(packages: list[Package], coords: dict[str, tuple[str, str, str]]) -> None:
    """Give a group to Maven packages that have none (a jar without pom.properties): Debian's maven-repo link to
    the jar; otherwise say the group is unknown (and no purl will claim one)."""
    for p in packages:
        if p.ecosystem != "maven" or ":" in p.name:
            continue
        found = coords.get(p.location) if "!" not in p.location else None
        if found:
            group, artifact, version = found
            p.name = f"{group}:{artifact}"
            p.version = version or p.version
            p.properties["stockade:maven:coordinates-from"] = "debian maven-repo"
        else:
            p.properties["stockade:maven:groupId"] = "unknown"

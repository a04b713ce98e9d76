"""SBOM documents from an inventory: CycloneDX 1.6 JSON, SPDX 2.3 JSON and stockade's own JSON."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from stockade import __version__
from stockade.model import OS_ECOSYSTEMS, Inventory, Package


def to_json(inv: Inventory) -> bytes:
    return orjson.dumps(inv.to_dict(), option=orjson.OPT_INDENT_2)


def _props(p: Package) -> list[Any]:
    from cyclonedx.model import Property

    props = [Property(name="stockade:package:ecosystem", value=p.ecosystem)]
    for key, value in (
        ("stockade:package:location", p.location),
        ("stockade:package:source_name", p.source_name),
        ("stockade:package:source_version", p.source_version),
        ("stockade:layer:diff_id", p.layer_digest),
        ("stockade:layer:created_by", p.layer_created_by),
        ("stockade:package:owner", p.owner),
    ):
        if value:
            props.append(Property(name=key, value=value))
    props += [Property(name=k, value=v) for k, v in sorted(p.properties.items())]
    return props


def _cdx_licenses(p: Package) -> list[Any]:
    """SPDX ids where known, else names; an expression only alone (CycloneDX allows no mix)."""
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.spdx import fixup_id

    if len(p.licenses) == 1 and any(op in p.licenses[0] for op in (" OR ", " AND ", " WITH ")):
        return [LicenseExpression(p.licenses[0])]
    out: list[Any] = []
    for lic in p.licenses:
        spdx_id = fixup_id(lic)
        out.append(DisjunctiveLicense(id=spdx_id) if spdx_id else DisjunctiveLicense(name=lic))
    return out


def to_cyclonedx(inv: Inventory) -> bytes:
    """CycloneDX 1.6 JSON: the image as metadata component, the OS and every package as components."""
    # SBOM libraries are imported only when asked for: together they take a quarter second to load.
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    bom = Bom()
    image = Component(
        name=(inv.repo_tags[0] if inv.repo_tags else inv.source),
        type=ComponentType.CONTAINER,
        bom_ref=inv.image_id or inv.source,
        properties=[Property(name="stockade:image:id", value=inv.image_id)] if inv.image_id else [],
    )
    bom.metadata.component = image
    os_comp = None
    if inv.os:
        os_comp = Component(
            name=inv.os.family,
            version=inv.os.name,
            type=ComponentType.OPERATING_SYSTEM,
            bom_ref=f"os:{inv.os.family}:{inv.os.name}",
        )
        bom.components.add(os_comp)
        bom.register_dependency(image, [os_comp])
    seen: set[str] = set()
    comps = []
    os_refs: dict[str, Any] = {}
    owned: list[tuple[str, Any]] = []
    for p in inv.packages:
        ref = f"{p.purl or p.ecosystem + ':' + p.name + '@' + p.version}#{p.location}"
        if ref in seen:
            continue
        seen.add(ref)
        comp = Component(
            name=p.name,
            version=p.version or None,
            type=ComponentType.LIBRARY,
            purl=PackageURL.from_string(p.purl) if p.purl else None,
            bom_ref=ref,
            licenses=_cdx_licenses(p),
            properties=_props(p),
        )
        bom.components.add(comp)
        comps.append(comp)
        if p.ecosystem in OS_ECOSYSTEMS:
            os_refs.setdefault(p.name, comp)
        elif p.owner:
            owned.append((p.owner, comp))
    bom.register_dependency(image, comps)
    # an OS package that owns a language package's files: the owner depends on it (it ships it), and the owned
    # component says which package it is through the stockade:package:owner property
    by_owner: dict[str, list[Any]] = {}
    for owner, comp in owned:
        if owner in os_refs:
            by_owner.setdefault(owner, []).append(comp)
    for owner, deps in by_owner.items():
        bom.register_dependency(os_refs[owner], deps)
    return JsonV1Dot6(bom).output_as_string(indent=2).encode()


def _spdx_id(n: int, p: Package) -> str:
    return "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{p.ecosystem}-{p.name}")[:80] + f"-{n}"


def to_spdx(inv: Inventory) -> bytes:
    """SPDX 2.3 JSON: the image package DESCRIBED by the document, CONTAINS every package."""
    from spdx_tools.spdx.model.actor import Actor, ActorType
    from spdx_tools.spdx.model.document import CreationInfo, Document
    from spdx_tools.spdx.model.package import ExternalPackageRef, ExternalPackageRefCategory
    from spdx_tools.spdx.model.package import Package as SpdxPackage
    from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
    from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    name = inv.repo_tags[0] if inv.repo_tags else inv.source
    doc = Document(
        CreationInfo(
            spdx_version="SPDX-2.3",
            spdx_id="SPDXRef-DOCUMENT",
            name=name,
            document_namespace=f"https://stockade.dev/spdx/{uuid.uuid4()}",
            creators=[Actor(ActorType.TOOL, f"stockade-{__version__}")],
            created=datetime.now(UTC).replace(microsecond=0, tzinfo=None),
        )
    )
    root = SpdxPackage(
        spdx_id="SPDXRef-Image",
        name=name,
        download_location=SpdxNoAssertion(),
        files_analyzed=False,
        version=inv.image_id or None,
    )
    doc.packages.append(root)
    doc.relationships.append(Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image"))
    os_ids: dict[str, str] = {}
    owned: list[tuple[str, str]] = []
    for n, p in enumerate(inv.packages):
        sid = _spdx_id(n, p)
        if p.ecosystem in OS_ECOSYSTEMS:
            os_ids.setdefault(p.name, sid)
        elif p.owner:
            owned.append((p.owner, sid))
        refs = [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", p.purl)] if p.purl else []
        doc.packages.append(
            SpdxPackage(
                spdx_id=sid,
                name=p.name,
                download_location=SpdxNoAssertion(),
                version=p.version or None,
                files_analyzed=False,
                external_references=refs,
                source_info=f"{p.source_name} {p.source_version}".strip() if p.ecosystem in OS_ECOSYSTEMS else None,
                comment=f"location: {p.location}; layer: {p.layer_digest}" if p.location else None,
            )
        )
        doc.relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, sid))
    for owner, sid in owned:  # Debian's python3-urllib3 CONTAINS the urllib3 files it installed
        if owner in os_ids:
            doc.relationships.append(Relationship(os_ids[owner], RelationshipType.CONTAINS, sid))
    buf = io.StringIO()
    write_document_to_stream(doc, buf, validate=False)
    return buf.getvalue().encode()

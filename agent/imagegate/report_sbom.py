"""`--format cyclonedx|spdx`: the image's software bill of materials.

CycloneDX 1.6 JSON through `cyclonedx-python-lib` (components with package URLs, and the
vulnerabilities found, each affecting its component); SPDX 2.3 JSON through `spdx-tools` (one
package for the image that CONTAINS every installed package, each with its purl). Both list every
package and every vulnerability: the log record's cap does not apply to reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from decimal import Decimal

from agent.events import Decided, Verdict
from agent.imagegate.model import ImageReport
from agent.imagegate.report_common import (
    TOOL,
    cves,
    cvss_score,
    cvss_vectors,
    fixed,
    purl,
    tool_version,
    unique_packages,
)

_CDX_SEV = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "info": "info"}


def cyclonedx(v: Verdict, report: ImageReport | None, shown: list[Decided]) -> str:
    from cyclonedx.model import Property, XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.impact_analysis import ImpactAnalysisAffectedStatus
    from cyclonedx.model.vulnerability import (
        BomTarget,
        BomTargetVersionRange,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilityReference,
        VulnerabilityScoreSource,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    bom = Bom()
    image = Component(name=v.image or "image", version=v.digest or None, type=ComponentType.CONTAINER,
                      bom_ref=f"image:{v.digest or v.image or 'image'}")
    bom.metadata.component = image
    bom.metadata.tools.components.add(Component(name=TOOL, version=tool_version(), type=ComponentType.APPLICATION))
    by_name: dict[tuple[str, str], Component] = {}
    for i, p in enumerate(unique_packages(report)):
        ref = f"pkg:{i}:{purl(p)}"
        c = Component(name=p.name, version=p.version, type=ComponentType.LIBRARY, bom_ref=ref,
                      purl=PackageURL.from_string(purl(p)),
                      properties=[Property(name="nodewarden:path", value=p.path),
                                  Property(name="nodewarden:ecosystem", value=p.ecosystem)]
                      + ([Property(name="nodewarden:source", value=p.source)] if p.source else []))
        bom.components.add(c)
        bom.register_dependency(image, [c])
        by_name.setdefault((p.name, p.version), c)
    for n, d in enumerate(shown):
        f = d.finding
        if not f.advisory:
            continue
        comp = by_name.get((f.package, f.installed))
        score = cvss_score(f)
        ratings = []
        vecs = cvss_vectors(f)
        for vec in vecs or [""]:
            method = (VulnerabilityScoreSource.CVSS_V4 if vec.startswith("CVSS:4")
                      else VulnerabilityScoreSource.CVSS_V3_1 if vec.startswith("CVSS:3.1")
                      else VulnerabilityScoreSource.CVSS_V3 if vec.startswith("CVSS:3")
                      else VulnerabilityScoreSource.CVSS_V2 if vec else None)
            ratings.append(VulnerabilityRating(severity=VulnerabilitySeverity(_CDX_SEV[f.severity.label]),
                                               score=_score(vec, score),
                                               method=method, vector=vec or None))
        targets = []
        if comp is not None:
            targets = [BomTarget(ref=comp.bom_ref.value, versions=[
                BomTargetVersionRange(version=f.installed, status=ImpactAnalysisAffectedStatus.AFFECTED)]
                + ([BomTargetVersionRange(version=fixed(f), status=ImpactAnalysisAffectedStatus.UNAFFECTED)]
                   if fixed(f) else []))]
        bom.vulnerabilities.add(Vulnerability(
            bom_ref=f"vuln:{n}:{f.advisory}",
            id=f.advisory,
            source=VulnerabilitySource(name="OSV", url=XsUri(f"https://osv.dev/vulnerability/{f.advisory}")),
            references=[VulnerabilityReference(id=c, source=VulnerabilitySource(
                name="NVD", url=XsUri(f"https://nvd.nist.gov/vuln/detail/{c}"))) for c in cves(f) if c != f.advisory],
            ratings=ratings,
            description=f.detail,
            recommendation=f"upgrade {f.package} to {fixed(f)}" if fixed(f) else None,
            affects=targets,
            properties=[Property(name="nodewarden:action", value=d.action)],
        ))
    return JsonV1Dot6(bom).output_as_string(indent=2)


def _score(vec: str, fallback: float | None):
    """Each rating's own base score (each CVSS version scores differently); no vector: the finding's."""
    from agent.imagegate.osv import cvss_score as score_of

    s = score_of(vec) if vec else fallback
    return Decimal(str(s)) if s is not None else None


def _spdx_id(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", s)[:200]


def spdx(v: Verdict, report: ImageReport | None, shown: list[Decided]) -> str:
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    name = v.image or "image"
    ns_hash = hashlib.sha256(f"{name}@{v.digest}".encode()).hexdigest()[:32]
    info = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=name,
        document_namespace=f"https://spdx.org/spdxdocs/nodewarden-{_spdx_id(name)}-{ns_hash}",
        creators=[Actor(ActorType.TOOL, f"{TOOL}-{tool_version()}")],
        created=dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None),
    )
    noa = SpdxNoAssertion()
    image = Package(spdx_id="SPDXRef-Image", name=name, download_location=noa, version=v.digest or None,
                    files_analyzed=False, license_concluded=noa, license_declared=noa, copyright_text=noa)
    pkgs = [image]
    rels = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    vulns: dict[tuple[str, str], list[str]] = {}
    for d in shown:
        if d.finding.advisory:
            vulns.setdefault((d.finding.package, d.finding.installed), []).append(d.finding.advisory)
    for i, p in enumerate(unique_packages(report)):
        sid = f"SPDXRef-Package-{i}-{_spdx_id(p.name)}"
        refs = [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl(p))]
        refs += [ExternalPackageRef(ExternalPackageRefCategory.SECURITY, "advisory", f"https://osv.dev/vulnerability/{a}")
                 for a in vulns.get((p.name, p.version), ())]
        pkgs.append(Package(spdx_id=sid, name=p.name, download_location=noa, version=p.version or None,
                            files_analyzed=False, license_concluded=noa, license_declared=noa, copyright_text=noa,
                            source_info=f"read from {p.path} ({p.ecosystem})", external_references=refs))
        rels.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, sid))
    doc = Document(creation_info=info, packages=pkgs, relationships=rels)
    buf = io.StringIO()
    write_document_to_stream(doc, buf, validate=True)
    return buf.getvalue()

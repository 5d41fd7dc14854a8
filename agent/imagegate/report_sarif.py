"""`--format sarif`: SARIF 2.1.0 (OASIS), built from `sarif-om`'s object model, for code-scanning
dashboards (GitHub, GitLab, Azure DevOps). One rule per advisory or detection rule, one result per
finding; `security-severity` (the CVSS score, else one per severity level) is what GitHub sorts by.
"""

from __future__ import annotations

from urllib.parse import quote

import attr
import sarif_om as so

from agent.events import Decided, Verdict
from agent.imagegate.report_common import TOOL, cves, cvss_score, cvss_vectors, fixed, tool_version

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub's bands: > 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, 0.1-3.9 low.
_SCORE = {"critical": 9.5, "high": 8.0, "medium": 5.5, "low": 2.0, "info": 0.0}


def to_json(obj):
    """sarif-om objects -> JSON values under the schema's property names, unset ones left out."""
    if attr.has(type(obj)):
        out = {}
        for a in attr.fields(type(obj)):
            val = getattr(obj, a.name)
            if val is None or (a.default is not attr.NOTHING and val == a.default and a.name != "version"):
                continue
            out[a.metadata.get("schema_property_name", a.name)] = to_json(val)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(x) for k, x in obj.items()}
    return obj


def _uri(path: str, image: str) -> str:
    # A relative reference: the file inside the image (an image-wide finding points at the image).
    return quote(path.lstrip("/"), safe="/@:+~-._") if path else quote(image or "image", safe="/@:+~-._")


def build(v: Verdict, shown: list[Decided]) -> so.SarifLog:
    rules: dict[str, so.ReportingDescriptor] = {}
    results = []
    for d in shown:
        f = d.finding
        rid = f.advisory or f.rule
        sev = f.severity.label
        score = cvss_score(f)
        ids = cves(f)
        if rid not in rules:
            props = {"tags": ["security", f.category, *ids][:10], "precision": "very-high",
                     "security-severity": f"{score if score is not None else _SCORE[sev]:.1f}"}
            vecs = cvss_vectors(f)
            if vecs:
                props["cvss"] = vecs
            help_uri = f"https://osv.dev/vulnerability/{f.advisory}" if f.advisory else None
            rules[rid] = so.ReportingDescriptor(
                id=rid,
                name=f.category,
                short_description=so.MultiformatMessageString(text=(f.detail.split(": ", 1)[-1] or rid)[:200]),
                full_description=so.MultiformatMessageString(text=f.detail or rid),
                help=so.MultiformatMessageString(text=f"{f.detail}" + (f" Fixed in {fixed(f)}." if fixed(f) else "")),
                help_uri=help_uri,
                default_configuration=so.ReportingConfiguration(level=_LEVEL[sev]),
                properties=props,
            )
        msg = f"{f.package} {f.installed}: {rid}" if f.package else f"{rid}: {f.detail}"
        if ids and ids[0] != rid:
            msg += f" ({', '.join(ids)})"
        if f.advisory:
            msg += f", fixed in {fixed(f)}" if fixed(f) else ", no fixed version"
        msg += f"; severity {sev}; policy action {d.action}"
        results.append(so.Result(
            rule_id=rid,
            rule_index=list(rules).index(rid),
            level=_LEVEL[sev],
            message=so.Message(text=msg),
            locations=[so.Location(physical_location=so.PhysicalLocation(
                artifact_location=so.ArtifactLocation(uri=_uri(f.path, v.image))))],
            properties={"severity": sev, "action": d.action, "category": f.category,
                        **({"package": f.package, "installed": f.installed, "fixed": fixed(f)} if f.package else {}),
                        **({"layer": f.layer} if f.layer else {})},
        ))
    run = so.Run(
        tool=so.Tool(driver=so.ToolComponent(name=TOOL, version=tool_version(), rules=list(rules.values()))),
        results=results,
        properties={"image": v.image, "digest": v.digest, "verdict": v.verdict, "reason": v.reason},
    )
    return so.SarifLog(version="2.1.0", schema_uri=SCHEMA, runs=[run])


def render(v: Verdict, shown: list[Decided]) -> dict:
    return to_json(build(v, shown))

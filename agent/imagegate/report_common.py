"""What every `nodewarden scan` report format shares: the findings to list (all of them, never the
log record's cap), their CVE aliases and CVSS data, package URLs for the SBOMs.

Reports are built from the Verdict (decided findings) and the ImageReport (packages); neither is
changed, so the log record and the cache keep their keys.
"""

from __future__ import annotations

import re

from agent.events import Decided, Finding, Verdict
from agent.imagegate.model import ImageReport, Package
from agent.imagegate.osv import aliases_in, vectors_in

_SCORE = re.compile(r"severity from cvss ([0-9.]+)")

TOOL = "nodewarden"


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("nodewarden")
    except Exception:  # not installed as a distribution (a checkout): a fixed placeholder
        return "0.0.0"


def cves(f: Finding) -> list[str]:
    """The CVE ids of a finding: its advisory id when that is one, then the OSV aliases."""
    ids = [f.advisory] if f.advisory.startswith("CVE-") else []
    return list(dict.fromkeys(ids + [a for a in aliases_in(f) if a.startswith("CVE-")]))


def all_ids(f: Finding) -> list[str]:
    return list(dict.fromkeys([x for x in (f.advisory, f.rule) if x] + aliases_in(f)))


def cvss_score(f: Finding) -> float | None:
    m = _SCORE.search(f.detail)
    return float(m.group(1)) if m else None


def cvss_vectors(f: Finding) -> list[str]:
    return vectors_in(f)


def fixed(f: Finding) -> str:
    """The fixed version, "" when there is none ("none" is how the finding record says so)."""
    return "" if f.fixed in ("", "none") else f.fixed


_PURL_TYPE = {"debian": ("deb", "debian"), "ubuntu": ("deb", "ubuntu"), "alpine": ("apk", "alpine"),
              "wolfi": ("apk", "wolfi"), "pypi": ("pypi", ""), "npm": ("npm", ""), "dpkg": ("deb", ""),
              "apk": ("apk", ""), "rpm": ("rpm", ""), "red hat": ("rpm", "redhat"), "rocky linux": ("rpm", "rocky"),
              "almalinux": ("rpm", "almalinux"), "suse": ("rpm", "suse"), "opensuse": ("rpm", "opensuse"),
              "go": ("golang", ""), "crates.io": ("cargo", ""), "rubygems": ("gem", ""),
              "packagist": ("composer", ""), "maven": ("maven", "")}


def purl(p: Package) -> str:
    """Package URL (https://github.com/package-url/purl-spec) of an installed package."""
    from packageurl import PackageURL

    base, _, release = p.ecosystem.partition(":")
    kind, ns = _PURL_TYPE.get(base.strip().lower(), ("generic", ""))
    name, namespace = p.name, ns or None
    if kind == "npm" and name.startswith("@") and "/" in name:
        namespace, name = name.split("/", 1)
    elif kind in ("composer", "golang") and "/" in name:  # vendor/name, host/path/module
        namespace, name = name.rsplit("/", 1)
    elif kind == "maven" and ":" in name:  # OSV spells Maven packages group:artifact
        namespace, name = name.split(":", 1)
    qualifiers = {}
    if release and kind in ("deb", "apk", "rpm"):
        qualifiers["distro"] = f"{ns}-{release}" if ns else release
    if kind == "pypi":
        name = re.sub(r"[-_.]+", "-", name).lower()
    return PackageURL(type=kind, namespace=namespace, name=name, version=p.version or None,
                      qualifiers=qualifiers or None).to_string()


def unique_packages(report: ImageReport | None) -> list[Package]:
    if report is None:
        return []
    seen: dict[tuple[str, str, str, str], Package] = {}
    for p in report.packages:
        seen.setdefault((p.ecosystem, p.name, p.version, p.path), p)
    return list(seen.values())


def rows(v: Verdict) -> list[Decided]:
    """Every finding, in the order the verdict lists them (acted-on first, as the record does)."""
    acted = [d for d in v.findings if d.action != "none"]
    return acted + [d for d in v.findings if d.action == "none"]

"""Records of the image gate: severities, findings, packages, per-layer and per-image results.

Findings and packages are plain frozen dataclasses with a dict form (to_dict/from_dict) that is
what the cache persists and what the `image.verdict` record carries, so the three never drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from agent.events import Decided, Finding, Verdict
from agent.vocab import CATEGORIES, Severity

__all__ = ["CATEGORIES", "Decided", "Finding", "ImageError", "ImageReport", "LayerResult", "Package",
           "Severity", "SourceError", "Verdict"]

class ImageError(Exception):
    """The image cannot be read at all (one line, for the user)."""


class SourceError(Exception):
    """Reading the image's source failed (containerd gone, I/O error), not the data in it:
    retry later, never cache."""


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package. `ecosystem` is OSV's name ("Debian", "Alpine", "PyPI", "npm", ...)
    plus ":<release>" when the OS release is known ("Debian:12"); `source` the source package
    (Debian advisories name source packages); `path` the database file it was read from."""

    ecosystem: str
    name: str
    version: str
    path: str
    source: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v}

    @classmethod
    def from_dict(cls, d: dict) -> Package:
        return cls(**d)


@dataclass
class LayerResult:
    """What scanning one layer found, independent of every other layer (so it is cached by the
    layer's blob digest). The merge applies whiteouts and shadowing across layers later."""

    digest: str  # blob digest (compressed), as in the manifest
    diff_id: str = ""  # sha256 of the uncompressed tar, as computed
    size: int = 0  # compressed bytes read
    uncompressed: int = 0
    files: int = 0
    findings: list[Finding] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    # OS release files seen here (path -> text), for the ecosystem of OS packages.
    os_release: dict[str, str] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)  # paths a `.wh.` entry deletes
    opaque: list[str] = field(default_factory=list)  # directories whose lower content is hidden
    paths: set[str] = field(default_factory=set)  # every non-directory entry (shadows lower files)
    complete: bool = True  # False: the stream broke off (not cached: next time it is read again)
    # Symlinks pointing out of the image root (absolute, or climbing above it) still in place at
    # the end of the layer: path -> target. An upper layer's entry under one is written through it.
    links: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # directory entries (a directory replaces a lower link)

    def to_dict(self) -> dict:
        return {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "size": self.size,
            "uncompressed": self.uncompressed,
            "files": self.files,
            "findings": [f.to_dict() for f in self.findings],
            "packages": [p.to_dict() for p in self.packages],
            "os_release": self.os_release,
            "whiteouts": self.whiteouts,
            "opaque": self.opaque,
            "complete": self.complete,
            "links": self.links,
        }

    @classmethod
    def from_dict(cls, d: dict, paths: set[str] | None = None, dirs: set[str] | None = None) -> LayerResult:
        return cls(
            digest=d["digest"],
            diff_id=d.get("diff_id", ""),
            size=d.get("size", 0),
            uncompressed=d.get("uncompressed", 0),
            files=d.get("files", 0),
            findings=[Finding.from_dict(f) for f in d.get("findings", ())],
            packages=[Package.from_dict(p) for p in d.get("packages", ())],
            os_release=dict(d.get("os_release", {})),
            whiteouts=list(d.get("whiteouts", ())),
            opaque=list(d.get("opaque", ())),
            paths=paths or set(),
            complete=d.get("complete", True),
            links=dict(d.get("links", {})),
            dirs=dirs or set(),
        )


@dataclass
class ImageReport:
    """Everything the gate knows about one image (+ spec): the input of the policy decision."""

    image: str  # the reference asked for ("" when unknown)
    digest: str  # manifest digest (the index digest when the image is multi-platform)
    manifest_digest: str = ""
    findings: list[Finding] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    bytes_scanned: int = 0  # uncompressed layer bytes read in this scan (0 when all cached)
    duration_ms: float = 0.0
    cache_hit: str = "none"  # "verdict": the whole result came from cache; "layers": some layers did
    error: str = ""  # the image could not be read at all (the verdict then follows on_error)
    labels: dict[str, str] = field(default_factory=dict)  # image config labels

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "digest": self.digest,
            "manifest_digest": self.manifest_digest,
            "findings": [f.to_dict() for f in self.findings],
            "packages": [p.to_dict() for p in self.packages],
            "layers": self.layers,
            "bytes_scanned": self.bytes_scanned,
            "error": self.error,
            "labels": self.labels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ImageReport:
        return cls(
            image=d.get("image", ""),
            digest=d.get("digest", ""),
            manifest_digest=d.get("manifest_digest", ""),
            findings=[Finding.from_dict(f) for f in d.get("findings", ())],
            packages=[Package.from_dict(p) for p in d.get("packages", ())],
            layers=list(d.get("layers", ())),
            bytes_scanned=d.get("bytes_scanned", 0),
            error=d.get("error", ""),
            labels=dict(d.get("labels", {})),
        )

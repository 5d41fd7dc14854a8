"""Where image bytes come from: containerd's content store, an OCI layout directory, an OCI layout
tarball. Each source gives the root descriptor and streams blobs; `resolve()` walks
index -> manifest (this node's platform) -> config and verifies every blob it reads whole.

Blob names are digests checked against a strict pattern before they touch a path, blob files of a
layout directory must stay inside it (links are not followed out), and whole reads are capped
(`_MAX_JSON`): a manifest or config is a few KB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from agent.imagegate import shapes
from agent.imagegate.model import Finding, ImageError, Severity, SourceError

_MAX_JSON = 4 << 20
_CHUNK = 1 << 20
_MAX_LINKS = 16  # links followed in a row inside a layout (the kernel stops at 40)
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
REF_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def host_platform() -> tuple[str, str, str]:
    m = platform.machine()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(m, (m, ""))
    return "linux", arch, variant


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ImageError(f"invalid digest {str(digest)[:80]!r}")
    return digest


@dataclass
class Resolved:
    """An image resolved to one platform: what the scan needs."""

    name: str
    digest: str  # the root's digest (index or manifest): what the image is known by
    manifest_digest: str
    config: dict
    layers: list[dict]  # OCI descriptors, bottom layer first
    findings: list[Finding] = field(default_factory=list)


class Source:
    """Base: subclasses give root() and chunks(); read_json() and resolve() are shared."""

    name = ""

    def root(self) -> dict:
        raise NotImplementedError

    def chunks(self, digest: str) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read_json(self, desc: dict, what: str, findings: list[Finding]) -> dict:
        digest = check_digest(desc.get("digest", ""))
        h = hashlib.new(digest.split(":", 1)[0])
        parts, n = [], 0
        for chunk in self.chunks(digest):
            n += len(chunk)
            if n > _MAX_JSON:
                raise ImageError(f"{what} {digest} is larger than {_MAX_JSON} bytes")
            h.update(chunk)
            parts.append(chunk)
        data = b"".join(parts)
        got = f"{digest.split(':', 1)[0]}:{h.hexdigest()}"
        if got != digest:
            findings.append(
                Finding(
                    "integrity",
                    Severity.CRITICAL,
                    f"{what}-digest-mismatch",
                    detail=f"{what} blob hashes to {got}, its descriptor says {digest}",
                )
            )
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ImageError(f"{what} {digest} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ImageError(f"{what} {digest} is not a JSON object")
        return doc

    def resolve(self) -> Resolved:
        """Every document is shape-checked (agent/imagegate/shapes.py) as soon as it is parsed: a
        field of the wrong type is an ImageError here, never an exception later in the scan."""
        findings: list[Finding] = []
        root = shapes.descriptor(self.root(), "root descriptor")
        desc = root
        doc = self.read_json(desc, "index" if desc.get("mediaType") in INDEX_TYPES else "manifest", findings)
        for _ in range(4):  # nested indexes are legal; deeper than that is not an image
            if doc.get("mediaType") not in INDEX_TYPES and "manifests" not in doc:
                break
            desc = pick_platform(shapes.index(doc, f"index {desc['digest']}"), self.name,
                                 getattr(self, "platform", None))
            doc = self.read_json(desc, "manifest", findings)
        else:
            raise ImageError("index nesting too deep")
        shapes.manifest(doc, f"manifest {desc['digest']}")
        config = self.read_json(doc["config"], "config", findings)
        shapes.config(config, f"config {doc['config']['digest']}")
        return Resolved(self.name, root["digest"], desc["digest"], config, doc["layers"], findings)


def pick_platform(manifests: list, name: str = "", platform: tuple[str, str, str] | None = None) -> dict:
    """The descriptor for `platform` (os, architecture, variant; default this node's): os and architecture, then the
    variant if several match; an index whose one entry names no platform is that entry."""
    want_os, want_arch, want_var = platform or host_platform()

    def plat(m: dict) -> dict:
        p = m.get("platform")
        return p if isinstance(p, dict) else {}

    cands = [m for m in manifests if isinstance(m, dict) and _DIGEST.match(str(m.get("digest", "")))]
    exact = [m for m in cands if plat(m).get("os") == want_os and plat(m).get("architecture") == want_arch]
    if want_var and len(exact) > 1:
        exact = [m for m in exact if plat(m).get("variant") in (want_var, None)] or exact
    if exact:
        return exact[0]
    plain = [m for m in cands if not m.get("platform")]
    if len(plain) == 1:
        return plain[0]
    raise ImageError(f"{name or 'image'}: no manifest for {want_os}/{want_arch}{'/' + want_var if want_var else ''}")


class ContainerdSource(Source):
    """An image in containerd's content store, through its gRPC API (Images.Get, Content.Read)."""

    def __init__(self, client, namespace: str, name: str, blob_timeout: float = 120.0):
        self.client, self.namespace, self.name = client, namespace, name
        self.blob_timeout = blob_timeout

    def root(self) -> dict:
        try:
            img = self.client.image(self.namespace, self.name)
        except Exception as e:  # grpc.RpcError: containerd down or refusing
            raise SourceError(f"containerd: images.Get {self.name}: {_rpc_msg(e)}") from e
        if img is None:
            raise ImageError(f"image {self.name!r} not found in containerd namespace {self.namespace!r}")
        t = img.target
        return {"mediaType": t.media_type, "digest": check_digest(t.digest), "size": t.size}

    def chunks(self, digest: str) -> Iterator[bytes]:
        try:
            yield from self.client.read_content(self.namespace, check_digest(digest), timeout=self.blob_timeout)
        except Exception as e:
            if "NOT_FOUND" in str(getattr(e, "code", lambda: "")()):
                raise ImageError(f"blob {digest} is not in containerd's content store (image not fully pulled?)") from e
            raise SourceError(f"containerd: content.Read {digest}: {_rpc_msg(e)}") from e


def _rpc_msg(e: Exception) -> str:
    details = getattr(e, "details", None)
    return (details() if callable(details) else None) or str(e).splitlines()[0]


def _select(index: dict, ref: str, where: str) -> dict:
    manifests = shapes.index(index, f"{where}: index.json")
    if ref:
        for m in manifests:
            ann = m.get("annotations") or {}
            if ref in (ann.get(a) for a in REF_ANNOTATIONS) or m.get("digest") == ref:
                return m
        raise ImageError(f"{where}: no image named {ref!r}")
    named = {(m.get("annotations") or {}).get(REF_ANNOTATIONS[0]) or m.get("digest") for m in manifests}
    if len(named) == 1:
        return manifests[0]
    if not manifests:
        raise ImageError(f"{where}: index.json lists no image")
    return {"mediaType": INDEX_TYPES[0], "digest": "", "manifests": manifests, "_multi": True}


def _layout_name(desc: dict, ref: str, where: str) -> str:
    ann = desc.get("annotations") or {}
    return ref or ann.get(REF_ANNOTATIONS[0]) or ann.get(REF_ANNOTATIONS[1]) or where


class OciDirSource(Source):
    """An OCI image layout directory (oci-layout, index.json, blobs/<alg>/<hex>)."""

    def __init__(self, path: str, ref: str = ""):
        self.path = os.path.realpath(path)
        self.ref = ref
        try:
            with open(os.path.join(self.path, "index.json"), "rb") as f:
                index = orjson.loads(f.read(_MAX_JSON))
        except (OSError, orjson.JSONDecodeError) as e:
            raise ImageError(f"{path}: not an OCI image layout (index.json: {e})") from None
        if not isinstance(index, dict):
            raise ImageError(f"{path}: index.json is not an object")
        self._root = _select(index, ref, path)
        if self._root.get("_multi"):
            raise ImageError(f"{path}: the layout holds several images; name one with --ref")
        self.name = _layout_name(self._root, ref, path)

    def root(self) -> dict:
        return self._root

    def chunks(self, digest: str) -> Iterator[bytes]:
        alg, hexd = check_digest(digest).split(":", 1)
        p = os.path.join(self.path, "blobs", alg, hexd)
        real = os.path.realpath(p)
        if not real.startswith(self.path + os.sep):
            raise ImageError(f"blob {digest} links outside the layout ({real})")
        try:
            f = open(real, "rb")
        except FileNotFoundError:
            raise ImageError(f"blob {digest} missing from {self.path}") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # links in a loop: the layout is broken, not the disk
                raise ImageError(f"blob {digest}: symbolic links in a loop in {self.path}") from None
            raise SourceError(f"{p}: {e.strerror}") from e
        with f:
            while chunk := f.read(_CHUNK):
                yield chunk


class OciTarSource(Source):
    """An OCI image layout in a tar file (what `ctr images export` and buildx write)."""

    def __init__(self, path: str, ref: str = ""):
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:*")
            self._members = {}
            for ti in self._tar:
                if ti.isfile() or ti.islnk() or ti.issym():
                    self._members[_member_name(ti.name)] = ti
        except (OSError, tarfile.TarError, EOFError) as e:
            raise ImageError(f"{path}: not a readable tar archive ({e})") from None
        if "index.json" not in self._members:
            hint = " (a docker-save archive? export it as OCI)" if "manifest.json" in self._members else ""
            raise ImageError(f"{path}: no index.json: not an OCI image layout{hint}")
        try:
            index = orjson.loads(self._read("index.json"))
        except orjson.JSONDecodeError as e:
            raise ImageError(f"{path}: index.json is not valid JSON: {e}") from None
        if not isinstance(index, dict):
            raise ImageError(f"{path}: index.json is not an object")
        self._root = _select(index, ref, path)
        if self._root.get("_multi"):
            raise ImageError(f"{path}: the archive holds several images; name one with --ref")
        self.name = _layout_name(self._root, ref, path)

    def _file(self, name: str) -> tarfile.TarInfo | None:
        """The regular member that `name` ends at, links followed inside the archive. tarfile's own
        link resolution recurses without a bound (two blobs linking to each other: RecursionError)."""
        ti = self._members.get(name)
        for _ in range(_MAX_LINKS):
            if ti is None or not (ti.issym() or ti.islnk()):
                return ti
            if ti.issym():  # relative to the link's directory; absolute: from the archive's root
                name = _member_name(posixpath.normpath(posixpath.join(posixpath.dirname(name), ti.linkname)))
            else:
                name = _member_name(ti.linkname)
            ti = self._members.get(name)
        raise ImageError(f"{self.path}: more than {_MAX_LINKS} links in a row at {name[:200]!r} (a loop?)")

    def _read(self, name: str) -> bytes:
        ti = self._file(name)
        f = self._tar.extractfile(ti) if ti is not None else None
        data = f.read(_MAX_JSON + 1) if f else b""
        if len(data) > _MAX_JSON:
            raise ImageError(f"{self.path}: {name} too large")
        return data

    def root(self) -> dict:
        return self._root

    def chunks(self, digest: str) -> Iterator[bytes]:
        alg, hexd = check_digest(digest).split(":", 1)
        ti = self._file(f"blobs/{alg}/{hexd}")
        if ti is None:
            raise ImageError(f"blob {digest} missing from {self.path}")
        try:
            f = self._tar.extractfile(ti)  # links resolve inside the archive, never on disk
        except (tarfile.TarError, KeyError) as e:
            raise ImageError(f"blob {digest} unreadable in {self.path}: {e}") from None
        if f is None:
            raise ImageError(f"blob {digest} is not a file in {self.path}")
        while chunk := f.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self._tar.close()


def _member_name(name: str) -> str:
    """An archive member's name as index.json's blobs/<alg>/<hex> would spell it."""
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    return name


def open_path(path: str, ref: str = "") -> Source:
    """An OCI layout directory or tarball at path."""
    if os.path.isdir(path):
        return OciDirSource(path, ref)
    if os.path.isfile(path):
        return OciTarSource(path, ref)
    raise ImageError(f"{path}: no such file or directory")

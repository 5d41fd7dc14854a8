"""`docker save` archives (the legacy layout, without index.json: manifest.json naming a config
file and `<id>/layer.tar` members) as a Source. Docker 25+ writes an OCI layout inside the same
tar (index.json), which OciTarSource reads as it is; this covers what older Docker, Podman
(`--format docker-archive`) and many CI caches still write.

The archive has no manifest blob, so one is synthesized from manifest.json: the config's digest is
the sha256 of its bytes, each layer's digest the config's diff_id for it (legacy layers are
uncompressed tars, so blob digest and diff_id coincide), hashed from the member when the counts
disagree. The scan still hashes every layer it reads, so a tampered layer stays an integrity
finding; links inside the archive resolve inside it (OciTarSource._file).
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator

import orjson

from agent.imagegate.model import ImageError
from agent.imagegate.source import _CHUNK, _MAX_JSON, OciTarSource, _member_name, check_digest

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def is_docker_archive(path: str) -> bool:
    """A tar with manifest.json and no index.json (cheap: member names only)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            names = {_member_name(n) for n in tar.getnames()}
    except (OSError, tarfile.TarError, EOFError):
        return False
    return "manifest.json" in names and "index.json" not in names


class DockerArchiveSource(OciTarSource):
    def __init__(self, path: str, ref: str = ""):  # not super().__init__: that one insists on index.json
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:*")
            self._members = {}
            for ti in self._tar:
                if ti.isfile() or ti.islnk() or ti.issym():
                    self._members[_member_name(ti.name)] = ti
        except (OSError, tarfile.TarError, EOFError) as e:
            raise ImageError(f"{path}: not a readable tar archive ({e})") from None
        try:
            entries = orjson.loads(self._read("manifest.json"))
        except orjson.JSONDecodeError as e:
            raise ImageError(f"{path}: manifest.json is not valid JSON: {e}") from None
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ImageError(f"{path}: manifest.json is not a list of images")
        entry = self._pick(entries, ref)
        config_name, layers = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layers, list) or not all(
                isinstance(x, str) for x in layers):
            raise ImageError(f"{path}: manifest.json entry has no Config file or Layers list")
        self._blobs: dict[str, str | bytes] = {}  # digest -> member name, or synthesized bytes
        config_b = self._read(_member_name(config_name))
        if not config_b:
            raise ImageError(f"{path}: config {config_name[:200]!r} missing from the archive")
        cdigest = "sha256:" + hashlib.sha256(config_b).hexdigest()
        self._blobs[cdigest] = config_b
        try:
            config = orjson.loads(config_b)
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        except (orjson.JSONDecodeError, AttributeError):
            diff_ids = []  # the scan's own shape check reports the config
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            diff_ids = [None] * len(layers)
        descs = []
        for name, did in zip(layers, diff_ids, strict=True):
            member = _member_name(name)
            ti = self._file(member)
            if ti is None:
                raise ImageError(f"{path}: layer {name[:200]!r} missing from the archive")
            try:
                digest = check_digest(did) if isinstance(did, str) else self._hash(ti)
            except ImageError:
                digest = self._hash(ti)
            self._blobs[digest] = member
            descs.append({"mediaType": MEDIA_LAYER, "digest": digest, "size": ti.size})
        manifest = orjson.dumps({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                                 "config": {"mediaType": MEDIA_CONFIG, "digest": cdigest, "size": len(config_b)},
                                 "layers": descs})
        mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self._blobs[mdigest] = manifest
        self._root = {"mediaType": MEDIA_MANIFEST, "digest": mdigest, "size": len(manifest)}
        tags = entry.get("RepoTags") if isinstance(entry.get("RepoTags"), list) else []
        self.name = ref or next((t for t in tags if isinstance(t, str)), "") or path

    def _pick(self, entries: list[dict], ref: str) -> dict:
        if ref:
            for e in entries:
                if ref in (e.get("RepoTags") or ()):
                    return e
            raise ImageError(f"{self.path}: no image tagged {ref!r} in the archive")
        if len(entries) > 1:
            raise ImageError(f"{self.path}: the archive holds several images; name one with --ref")
        return entries[0]

    def _hash(self, ti: tarfile.TarInfo) -> str:
        h = hashlib.sha256()
        f = self._tar.extractfile(ti)
        while f is not None and (chunk := f.read(_CHUNK)):
            h.update(chunk)
        return "sha256:" + h.hexdigest()

    def chunks(self, digest: str) -> Iterator[bytes]:
        blob = self._blobs.get(check_digest(digest))
        if blob is None:
            raise ImageError(f"blob {digest} missing from {self.path}")
        if isinstance(blob, bytes):
            yield blob[: _MAX_JSON + 1]
            return
        ti = self._file(blob)
        f = self._tar.extractfile(ti) if ti is not None else None
        if f is None:
            raise ImageError(f"blob {digest} is not a file in {self.path}")
        while chunk := f.read(_CHUNK):
            yield chunk

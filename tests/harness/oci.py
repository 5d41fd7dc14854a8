"""Build small OCI images in a test, from Debian's busybox-static, with no registry and no Docker.

`build_image()` writes an OCI image layout tarball (oci-layout, index.json, blobs/sha256/: manifest,
config with its diff_ids, one gzip'd layer) that `ctr images import` accepts. The layer is busybox
with a link per applet, a minimal /etc, plus any extra files the test asks for, so the image-gate
tests can build EICAR or miner images with the same call:

    img = build_image(tmp / "eicar.tar", "nodewarden.test/eicar:1", {"/opt/eicar.com": EICAR})
    img = build_image(tmp / "x.tar", "nodewarden.test/x:1", {"/usr/bin/run": (script, 0o755)})

Everything is deterministic (mtime 0, uid 0, sorted entries, gzip mtime 0): the same inputs give the
same digests, so importing an image twice is a no-op.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ExtraFiles = dict[str, "bytes | tuple[bytes, int]"]


@dataclass(frozen=True)
class OciImage:
    name: str  # full reference, as containerd names it after import ("nodewarden.test/busybox:1")
    path: Path  # the OCI layout tarball
    manifest_digest: str  # what containerd's image record targets: the image's manifest digest
    config_digest: str
    layer_digests: tuple[str, ...]  # compressed blobs, as in the manifest
    diff_ids: tuple[str, ...]  # uncompressed layer digests, as in the config
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every regular file added


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}.get(m, m)


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True, timeout=10).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name.lstrip("/"))
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, link
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
    return ti


def layer_tar(files: ExtraFiles, busybox: str = BUSYBOX) -> tuple[bytes, dict[str, str]]:
    """The uncompressed layer: busybox, its applet links, /etc basics and `files` (which win)."""
    with open(busybox, "rb") as f:
        bb = f.read()
    regular: dict[str, tuple[bytes, int]] = {
        "/bin/busybox": (bb, 0o755),
        "/etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644),
        "/etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644),
        "/etc/hosts": (b"127.0.0.1 localhost\n", 0o644),
    }
    for path, spec in files.items():
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"image file path must be absolute, without '..': {path!r}")
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        regular[os.path.normpath(path)] = (bytes(data), mode)
    links = {f"/bin/{a}": "busybox" for a in busybox_applets(busybox) if f"/bin/{a}" not in regular}
    dirs = {"/bin", "/etc", "/tmp", "/root", "/proc", "/sys", "/dev", "/run", "/var", "/usr", "/usr/bin"}
    for p in [*regular, *links]:
        parent = os.path.dirname(p)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o1777 if d == "/tmp" else 0o755))
        for p in sorted(regular):
            data, mode = regular[p]
            tar.addfile(_info(p, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        for p in sorted(links):
            tar.addfile(_info(p, tarfile.SYMTYPE, 0o777, link=links[p]))
    return buf.getvalue(), {p: hashlib.sha256(d).hexdigest() for p, (d, _) in regular.items()}


def build_image(
    dest: str | os.PathLike,
    name: str,
    extra_files: ExtraFiles | None = None,
    cmd: list[str] | tuple[str, ...] = ("/bin/sh",),
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    busybox: str = BUSYBOX,
) -> OciImage:
    """Write an OCI layout tarball for busybox + extra_files ({path: bytes | (bytes, mode)}) at dest."""
    layer, file_digests = layer_tar(extra_files or {}, busybox)
    diff_id = _sha(layer)
    gz = gzip.compress(layer, compresslevel=1, mtime=0)
    environ = {"PATH": DEFAULT_PATH, **(env or {})}
    config = {
        "architecture": _arch(),
        "os": "linux",
        "config": {
            "Cmd": list(cmd),
            "Env": [f"{k}={v}" for k, v in environ.items()],
            "WorkingDir": "/",
            "Labels": dict(labels or {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "nodewarden tests/harness/oci.py"}],
    }
    config_b = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _sha(config_b), "size": len(config_b)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": _sha(gz), "size": len(gz)}],
    }
    manifest_b = json.dumps(manifest, sort_keys=True).encode()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": _sha(manifest_b),
                "size": len(manifest_b),
                "platform": {"architecture": _arch(), "os": "linux"},
                # ctr import names the image from this annotation (containerd's archive importer).
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    blobs = {_sha(b): b for b in (gz, config_b, manifest_b)}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as tar:
        entries = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index, sort_keys=True).encode(),
        }
        tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
        tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
        for digest, data in sorted(blobs.items()):
            entries[f"blobs/sha256/{digest.split(':', 1)[1]}"] = data
        for path, data in entries.items():
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return OciImage(
        name=name,
        path=dest,
        manifest_digest=_sha(manifest_b),
        config_digest=_sha(config_b),
        layer_digests=(_sha(gz),),
        diff_ids=(diff_id,),
        files=file_digests,
    )


def unpack_layout(img: OciImage | str | os.PathLike, dest: str | os.PathLike) -> Path:
    """The layout tarball of build_image() unpacked as an OCI layout directory at dest (what
    `nodewarden scan DIR` and OciDirSource read), for tests that rewrite its documents."""
    src = img.path if isinstance(img, OciImage) else Path(img)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src) as tar:  # our own archive: plain files only (no extraction filter in 3.11.7)
        for ti in tar:
            f = tar.extractfile(ti) if ti.isfile() else None
            if f is not None:
                (dest / ti.name).parent.mkdir(parents=True, exist_ok=True)
                (dest / ti.name).write_bytes(f.read())
    return dest


def write_blob(layout: str | os.PathLike, data: bytes) -> dict:
    """Add one blob to a layout directory; returns its descriptor's digest and size."""
    digest = _sha(data)
    p = Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def pack_layout(layout: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A layout directory (after a test rewrote it) as a tarball `ctr images import` reads."""
    layout, dest = Path(layout), Path(dest)
    with tarfile.open(dest, "w") as tar:
        for p in sorted(layout.rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                tar.addfile(_info(str(p.relative_to(layout)), tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return dest


def rewrite_config(layout: str | os.PathLike, img: OciImage, **fields) -> str:
    """Give the layout's image a config with `fields` replaced (any JSON, malformed on purpose);
    the manifest and index.json are rewritten to point at it. Returns the new manifest digest."""
    layout = Path(layout)
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / img.manifest_digest.split(":")[1]).read_bytes())
    config = {**json.loads((blobs / img.config_digest.split(":")[1]).read_bytes()), **fields}
    manifest["config"] = {**manifest["config"], **write_blob(layout, json.dumps(config).encode())}
    mdesc = write_blob(layout, json.dumps(manifest).encode())
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(mdesc)
    (layout / "index.json").write_text(json.dumps(index))
    return mdesc["digest"]

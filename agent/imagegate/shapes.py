"""Shape checks of an image's JSON documents (index, manifest, config) at the edge.

The scan reads a few fields of each document; an attacker (or a broken builder) controls their
types. Every field the scan uses is checked here, once, right after the document is parsed, so a
`"rootfs": 5` or a `"config": 1.5` ends in one ImageError line (and the policy's on_error verdict)
instead of an AttributeError deep in the scan that skips the decision. Fields the scan never reads
are not checked: an image may carry whatever else it likes.

JSON types, not Python ones: a boolean is not an integer here, though Python says it is.
"""

from __future__ import annotations

import re

from agent.imagegate.model import ImageError

_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
          bool: "a boolean", type(None): "null"}
_PLATFORM_KEYS = ("os", "architecture", "variant")


def _kind(v) -> str:
    return _NAMES.get(type(v), type(v).__name__)


def _bad(what: str, key: str, v, want: str) -> ImageError:
    return ImageError(f"{what}: {key} is {_kind(v)}, expected {want}")


def _opt(doc: dict, key: str, typ: type, what: str, want: str):
    """doc[key] when it has type `typ` (exactly), None when absent or null; else ImageError."""
    v = doc.get(key)
    if v is not None and type(v) is not typ:
        raise _bad(what, key, v, want)
    return v


def _str_map(doc: dict, key: str, what: str) -> None:
    m = _opt(doc, key, dict, what, "an object")
    for k, v in (m or {}).items():
        if type(v) is not str:
            raise _bad(what, f"{key}[{k[:60]!r}]", v, "a string")


def descriptor(d, what: str) -> dict:
    """An OCI content descriptor: digest (required), size, mediaType, platform, annotations."""
    if type(d) is not dict:
        raise ImageError(f"{what} is {_kind(d)}, expected an object")
    digest = d.get("digest")
    if type(digest) is not str or not _DIGEST.match(digest):
        raise ImageError(f"{what}: invalid digest {str(digest)[:80]!r}")
    size = _opt(d, "size", int, what, "an integer")
    if size is not None and size < 0:
        raise ImageError(f"{what}: size {size} is negative")
    _opt(d, "mediaType", str, what, "a string")
    _str_map(d, "annotations", what)
    plat = _opt(d, "platform", dict, what, "an object")
    for k in _PLATFORM_KEYS:
        _opt(plat or {}, k, str, f"{what} platform", "a string")
    return d


def index(doc: dict, what: str) -> list[dict]:
    """An image index (or a layout's index.json): its manifest descriptors."""
    _opt(doc, "mediaType", str, what, "a string")
    manifests = doc.get("manifests")
    if type(manifests) is not list:
        raise _bad(what, "manifests", manifests, "an array")
    return [descriptor(m, f"{what} manifests[{i}]") for i, m in enumerate(manifests)]


def manifest(doc: dict, what: str) -> None:
    """An image manifest: the config descriptor and the layer descriptors."""
    _opt(doc, "mediaType", str, what, "a string")
    if type(doc.get("config")) is not dict or type(doc.get("layers")) is not list:
        raise ImageError(f"{what} has no config or layers (media type {str(doc.get('mediaType'))[:80]})")
    descriptor(doc["config"], f"{what} config")
    for i, d in enumerate(doc["layers"]):
        descriptor(d, f"{what} layers[{i}]")


def config(doc: dict, what: str) -> None:
    """An image config: config.User, config.Labels and rootfs.diff_ids are what the scan reads."""
    cfg = _opt(doc, "config", dict, what, "an object")
    if cfg is not None:
        _opt(cfg, "User", str, f"{what} config", "a string")
        _str_map(cfg, "Labels", f"{what} config")
    rootfs = _opt(doc, "rootfs", dict, what, "an object")
    if rootfs is not None:
        ids = _opt(rootfs, "diff_ids", list, f"{what} rootfs", "an array")
        for i, v in enumerate(ids or ()):
            if type(v) is not str:
                raise _bad(f"{what} rootfs", f"diff_ids[{i}]", v, "a string")

"""Package inventory from the package databases found in a layer.

Each parser takes (path, bytes) of one file and returns Packages; nothing is executed or extracted.
OS packages are recorded with a provisional ecosystem ("dpkg", "apk", "rpm") that the merge turns
into OSV's ("Debian:12", "Alpine:v3.19", "Rocky Linux:9", ...) once the image's os-release is
known (`os_ecosystem`), because the release lives in another file, maybe another layer.

Covered: dpkg status (+ distroless status.d), apk installed, rpm's sqlite database (rpm >= 4.16;
the older BerkeleyDB and ndb formats are not read), Python *.dist-info/METADATA and *.egg-info,
npm node_modules/*/package.json, PHP composer.lock / vendor/composer/installed.json and Rust
Cargo.lock, Ruby specifications/*.gemspec, Java JAR/WAR/EAR (pom.properties, MANIFEST.MF) and Go
binaries' build information (by content, any path; agent/imagegate/packages_lang.py).
"""

from __future__ import annotations

import re
import sqlite3
import struct

import orjson

from agent.imagegate import packages_lang
from agent.imagegate.model import Package

_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_PY_META = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)$")
_NPM = re.compile(r"(?:^|/)node_modules/(?:@[^/]+/)?[^/@][^/]*/package\.json$")
_MAX_RPM_ROWS = 100_000


def wanted(path: str) -> str | None:
    """The kind of package database `path` (relative, no leading slash) is, or None."""
    if path == "var/lib/dpkg/status" or path.startswith("var/lib/dpkg/status.d/"):
        return "dpkg"
    if path == "lib/apk/db/installed":
        return "apk"
    if path in ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        return "rpm"
    if path in _OS_RELEASE:
        return "os-release"
    if path.endswith(("METADATA", "PKG-INFO", ".egg-info")) and _PY_META.search(path):
        return "python"
    if path.endswith("package.json") and _NPM.search(path):
        return "npm"
    if path.endswith((".lock", "installed.json")):
        if packages_lang.is_composer(path):
            return "composer"
        if packages_lang.is_cargo(path):
            return "cargo"
    if path.endswith(".gemspec") and packages_lang.is_gemspec(path):
        return "gem"
    if packages_lang.is_java(path):
        return "java"
    return None


def sniff(head) -> str | None:
    """The kind of package data a file holds by its content, where its path cannot say: an ELF
    executable with Go build information (any name, anywhere)."""
    if bytes(head[:4]) != b"\x7fELF":
        return None
    return "go" if bytes(head).find(packages_lang.GO_MAGIC) >= 0 else None


def parse(kind: str, path: str, data: bytes) -> list[Package]:
    """Packages in one database file; a malformed file gives what could be read, never raises."""
    fn = {"dpkg": _dpkg, "apk": _apk, "rpm": _rpm, "python": _python, "npm": _npm,
          "composer": packages_lang.composer, "cargo": packages_lang.cargo, "gem": packages_lang.gemspec,
          "go": packages_lang.go_binary, "java": packages_lang.java_archive}.get(kind)
    if fn is None:
        return []
    try:
        return fn("/" + path, data)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error, sqlite3.Error, UnicodeError):
        return []


def _paragraphs(text: str):
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            continue  # continuation of a multi-line field (descriptions): not needed
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last.strip()] = value.strip()
    if fields:
        yield fields


def _dpkg(path: str, data: bytes) -> list[Package]:
    out = []
    for p in _paragraphs(data.decode("utf-8", "replace")):
        status = p.get("Status", "install ok installed")  # status.d files of distroless have none
        if not status.endswith(" installed") or "Package" not in p or "Version" not in p:
            continue
        src = p.get("Source", "")
        src_name = src.split(" ", 1)[0] if src else ""
        out.append(Package("dpkg", p["Package"], p["Version"], path, src_name))
    return out


def _apk(path: str, data: bytes) -> list[Package]:
    out = []
    for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
        fields = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                fields.setdefault(line[0], line[2:].strip())
        if "P" in fields and "V" in fields:
            out.append(Package("apk", fields["P"], fields["V"], path, fields.get("o", "")))
    return out


def _rpm_header(blob: bytes) -> dict[int, object]:
    """Tags NAME, VERSION, RELEASE, EPOCH, SOURCERPM of one header blob (rpm's on-disk format:
    index count, data length, 16-byte index entries (tag, type, offset, count), then the data)."""
    il, dl = struct.unpack_from(">ii", blob, 0)
    if not (0 < il < 100_000 and 0 <= dl <= len(blob)):
        raise ValueError("bad rpm header")
    data_start = 8 + 16 * il
    out: dict[int, object] = {}
    for k in range(il):
        tag, typ, off, _count = struct.unpack_from(">iiii", blob, 8 + 16 * k)
        if tag not in (1000, 1001, 1002, 1003, 1044) or not 0 <= off < dl:
            continue
        pos = data_start + off
        if typ == 6:  # STRING: NUL-terminated
            end = blob.index(b"\0", pos)
            out[tag] = blob[pos:end].decode("utf-8", "replace")
        elif typ == 4:  # INT32
            out[tag] = struct.unpack_from(">i", blob, pos)[0]
    return out


def _rpm(path: str, data: bytes) -> list[Package]:
    if len(data) < 100 or not data.startswith(b"SQLite format 3\0"):
        return []
    # An in-memory copy cannot be in WAL mode: mark the header as a rollback-journal database.
    buf = bytearray(data)
    buf[18:20] = b"\x01\x01"
    con = sqlite3.connect(":memory:")
    try:
        con.execute("PRAGMA trusted_schema = OFF")
        con.deserialize(bytes(buf))
        con.execute("PRAGMA query_only = ON")
        rows = con.execute("SELECT blob FROM Packages LIMIT ?", (_MAX_RPM_ROWS,)).fetchall()
    finally:
        con.close()
    out = []
    for (blob,) in rows:
        try:
            h = _rpm_header(bytes(blob))
        except (ValueError, struct.error):
            continue
        if 1000 not in h or 1001 not in h:
            continue
        version = f"{h[1001]}-{h[1002]}" if h.get(1002) else str(h[1001])
        if h.get(1003):
            version = f"{h[1003]}:{version}"
        src = str(h.get(1044, ""))
        src_name = re.sub(r"-[^-]+-[^-]+\.src\.rpm$", "", src) if src else ""
        out.append(Package("rpm", str(h[1000]), version, path, src_name))
    return out


def _headers(data: bytes) -> dict[str, str]:
    fields = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break
        if ":" in line and line[0] not in " \t":
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), v.strip())
    return fields


def _python(path: str, data: bytes) -> list[Package]:
    h = _headers(data)
    if h.get("name") and h.get("version"):
        return [Package("PyPI", h["name"], h["version"], path)]
    return []


def _npm(path: str, data: bytes) -> list[Package]:
    doc = orjson.loads(data)
    if isinstance(doc, dict) and isinstance(doc.get("name"), str) and isinstance(doc.get("version"), str):
        return [Package("npm", doc["name"], doc["version"], path)]
    return []


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip().isidentifier():
            out[k.strip()] = v.strip().strip("\"'")
    return out


_RPM_DISTROS = {
    "rhel": "Red Hat",
    "rocky": "Rocky Linux",
    "almalinux": "AlmaLinux",
    "opensuse-leap": "openSUSE",
    "opensuse-tumbleweed": "openSUSE",
    "sles": "SUSE",
    "mageia": "Mageia",
    "photon": "Photon OS",
    "azurelinux": "Azure Linux",
    "mariner": "Azure Linux",
}


def os_ecosystem(kind: str, os_release: dict[str, str]) -> str:
    """OSV's ecosystem for OS packages of `kind` under this os-release ("" fields when unknown)."""
    os_id = os_release.get("ID", "").lower()
    ver = os_release.get("VERSION_ID", "")
    if kind == "dpkg":
        base = "Ubuntu" if os_id == "ubuntu" else "Debian"
        if base == "Debian" and ver:
            ver = ver.split(".", 1)[0]
        return f"{base}:{ver}" if ver else base
    if kind == "apk":
        mm = ".".join(ver.split(".")[:2])
        if os_id == "wolfi":
            return "Wolfi"
        return f"Alpine:v{mm}" if mm else "Alpine"
    if kind == "rpm":
        base = _RPM_DISTROS.get(os_id, "Red Hat")
        major = ver.split(".", 1)[0]
        return f"{base}:{major}" if major and base != "Red Hat" else base
    return kind

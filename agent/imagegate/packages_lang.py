"""Language package manifests that packages.py dispatches to: PHP Composer (composer.lock, and
vendor/composer/installed.json, which is what is actually installed), Rust (Cargo.lock), Ruby
gems (specifications/*.gemspec, what `gem install` and bundler write) and Go binaries (the build
information the Go linker embeds, Go >= 1.18).

Each parser takes (path, bytes) and returns Packages under OSV's ecosystem names ("Packagist",
"crates.io"); malformed input gives what could be read (packages.parse catches the rest).
"""

from __future__ import annotations

import re
import tomllib

import orjson

from agent.imagegate.model import Package

_MAX_PACKAGES = 50_000  # one lock file; a real one has hundreds
_V = re.compile(r"^[vV](?=\d)")


def is_composer(path: str) -> bool:
    return path.endswith("composer.lock") and (path == "composer.lock" or path.endswith("/composer.lock")) or \
        path.endswith("vendor/composer/installed.json")


def is_cargo(path: str) -> bool:
    return path == "Cargo.lock" or path.endswith("/Cargo.lock")


def composer(path: str, data: bytes) -> list[Package]:
    doc = orjson.loads(data)
    # composer.lock and Composer 2's installed.json: {"packages": [...]} (+ "packages-dev" in the
    # lock); Composer 1's installed.json: the list itself.
    if isinstance(doc, dict):
        items = [*(doc.get("packages") or ()), *(doc.get("packages-dev") or ())]
    elif isinstance(doc, list):
        items = doc
    else:
        return []
    out = []
    for p in items[:_MAX_PACKAGES]:
        if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("version"), str):
            # Packagist advisories spell versions without the tag's "v" (symfony's "v5.4.0" is 5.4.0).
            out.append(Package("Packagist", p["name"].lower(), _V.sub("", p["version"]), path))
    return out


def cargo(path: str, data: bytes) -> list[Package]:
    doc = tomllib.loads(data.decode("utf-8"))
    out = []
    for p in (doc.get("package") or ())[:_MAX_PACKAGES]:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("version"), str):
            continue
        # Only crates from a registry: a workspace or path crate of the same name as a crates.io one
        # is not that crate (its advisories would be false positives).
        src = p.get("source")
        if isinstance(src, str) and src.startswith(("registry+", "sparse+")):
            out.append(Package("crates.io", p["name"], p["version"], path))
    return out


_GEMSPEC = re.compile(r"(?:^|/)specifications/(?:default/)?[^/]+\.gemspec$")
_GEM_NAME = re.compile(rb"""\.name\s*=\s*["']([^"']{1,200})["']""")
_GEM_VERSION = re.compile(rb"""\.version\s*=\s*["']([^"']{1,100})["']""")


def is_gemspec(path: str) -> bool:
    return path.endswith(".gemspec") and _GEMSPEC.search(path) is not None


def gemspec(path: str, data: bytes) -> list[Package]:
    # Installed specs are generated Ruby ("s.name = "rake".freeze"): read, never run.
    name, version = _GEM_NAME.search(data), _GEM_VERSION.search(data)
    if not name or not version:
        return []
    return [Package("RubyGems", name.group(1).decode(), version.group(1).decode(), path)]


# --- Go build information (runtime/debug.BuildInfo as the linker writes it) -----------------------

GO_MAGIC = b"\xff Go buildinf:"


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    x = shift = 0
    while i < len(b) and shift < 64:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, i
        shift += 7
    raise ValueError("bad varint")


def go_binary(path: str, data: bytes) -> list[Package]:
    """The modules a Go binary was built from and its Go version (as the "stdlib" package, as OSV
    names the standard library). Only Go >= 1.18 inline strings (flags bit 2); older binaries store
    pointers into the data segment, which needs an ELF loader (not read)."""
    i = data.find(GO_MAGIC)
    while i >= 0 and i % 16:  # the header is 16-byte aligned
        i = data.find(GO_MAGIC, i + 1)
    if i < 0 or i + 32 > len(data) or not data[i + 15] & 2:
        return []
    n, j = _uvarint(data, i + 32)
    gover = data[j:j + n].decode("utf-8", "replace")
    n, j = _uvarint(data, j + n)
    mod = data[j:j + n]
    if len(mod) >= 33 and mod[-17] == 0x0A:
        mod = mod[16:-16]  # sentinels around the module info
    out = []
    if gover.startswith("go"):
        out.append(Package("Go", "stdlib", gover[2:].split(" ", 1)[0].split("-", 1)[0], path))
    last = None
    for line in mod.decode("utf-8", "replace").splitlines()[:_MAX_PACKAGES]:
        f = line.split("\t")
        if f[0] in ("mod", "dep") and len(f) >= 3:
            last = Package("Go", f[1], _V.sub("", f[2]), path)
            if f[2] != "(devel)":
                out.append(last)
        elif f[0] == "=>" and len(f) >= 3 and last is not None:
            # A replace directive: the module built in is the replacement, not the one required.
            if last in out:
                out.remove(last)
            if f[2] != "(devel)" and not f[1].startswith((".", "/")):
                out.append(Package("Go", f[1], _V.sub("", f[2]), path))
    return out


# --- Java archives ---------------------------------------------------------------------------------

_JAVA_EXT = (".jar", ".war", ".ear", ".jpi", ".hpi")
_MAX_NESTED = 2_000  # jars inside a fat jar / WAR
_MAX_NESTED_BYTES = 64 << 20


def is_java(path: str) -> bool:
    return path.lower().endswith(_JAVA_EXT)


def _properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _manifest(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith(" "):
            k, _, v = line.partition(":")
            out.setdefault(k.strip(), v.strip())
    return out


def java_archive(path: str, data: bytes, depth: int = 0) -> list[Package]:
    """Maven coordinates of a JAR/WAR/EAR: every META-INF/maven/<group>/<artifact>/pom.properties
    (a shaded jar holds one per bundled library), else the manifest's Implementation-/Bundle-
    fields; jars nested in the archive (WEB-INF/lib, BOOT-INF/lib, an EAR's modules) one level
    down, bounded. Ecosystem "Maven", name "group:artifact" as OSV spells it."""
    import io
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return []  # a truncated head (an archive larger than the scanned bytes) ends here
    out, nested = [], 0
    with zf:
        for zi in infos:
            n = zi.filename
            if n.startswith("META-INF/maven/") and n.endswith("/pom.properties") and zi.file_size < 1 << 16:
                p = _properties(zf.read(zi).decode("utf-8", "replace"))
                if p.get("groupId") and p.get("artifactId") and p.get("version"):
                    out.append(Package("Maven", f"{p['groupId']}:{p['artifactId']}", p["version"], path))
            elif (depth == 0 and n.lower().endswith(_JAVA_EXT) and nested < _MAX_NESTED
                  and zi.file_size <= _MAX_NESTED_BYTES):
                nested += 1
                out += java_archive(f"{path}!/{n}", zf.read(zi), depth + 1)
        if not any(p.path == path for p in out):
            try:
                m = _manifest(zf.read("META-INF/MANIFEST.MF").decode("utf-8", "replace"))
            except KeyError:
                m = {}
            # Only when the manifest names a Maven group: a bare title is no coordinate to match.
            group, art, ver = (m.get("Implementation-Vendor-Id"), m.get("Implementation-Title"),
                               m.get("Implementation-Version"))
            if group and art and ver:
                out.append(Package("Maven", f"{group}:{art}", ver, path))
    return out[:_MAX_PACKAGES]

"""Language package manifests that packages.py dispatches to: PHP Composer (composer.lock, and
vendor/composer/installed.json, which is what is actually installed) and Rust (Cargo.lock).

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

"""The offline advisory database, in OSV's JSON format (https://ossf.github.io/osv-schema/).

On disk: a directory of `*.json` advisories (any depth) and/or `*.zip` files of them, as OSV
publishes per ecosystem (`<Ecosystem>/all.zip`). `nodewarden db import` writes advisories under
`<db>/<ecosystem>/<id>.json` and a name index `<db>/index.json`, so loading reads one small file;
without an index the whole tree is read once to build it. Advisories themselves are parsed only when
a package name matches (and kept in a bounded LRU), so memory stays small for a large database.

The fingerprint (changes when the database does) invalidates cached image results.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator

import orjson

from agent.durable import write_atomic
from agent.imagegate import versions
from agent.imagegate.model import Finding, Package, Severity

log = logging.getLogger("nodewarden.imagegate.osv")

INDEX = "index.json"
_MAX_ADVISORY_BYTES = 16 << 20  # one OSV record is a few KB; refuse absurd ones (zip bombs included)
_MAX_FILES = 2_000_000
_LRU = 4096


class OsvError(Exception):
    """The database or an import source is unusable (one line, for the user)."""


def normalize_name(ecosystem: str, name: str) -> str:
    base = versions.base_ecosystem(ecosystem)
    if base == "pypi":  # PEP 503: case and runs of -_. do not matter
        return re.sub(r"[-_.]+", "-", name).lower()
    if base in ("debian", "ubuntu", "alpine", "wolfi"):
        return name.lower()
    return name


# --- CVSS base scores, through the `cvss` library (FIRST's v2, v3.0/3.1 and v4.0 specifications) ---


def cvss_score(vector: str) -> float | None:
    """Base score of a CVSS vector of any version (v2 has no prefix; "CVSS:3.x/" and "CVSS:4.0/"
    name theirs); None for a vector the library refuses (a bad advisory never fails a scan)."""
    import cvss

    vector = vector.strip()
    try:
        if vector.startswith("CVSS:4"):
            return float(cvss.CVSS4(vector).base_score)
        if vector.startswith("CVSS:3"):
            return float(cvss.CVSS3(vector).base_score)
        return float(cvss.CVSS2(vector).base_score)
    except (cvss.CVSSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def cvss3_score(vector: str) -> float | None:
    """CVSS v3 base score (kept for callers of the v3-only name)."""
    return cvss_score(vector) if vector.strip().startswith("CVSS:3") else None


def _rating(score: float) -> Severity:
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    return Severity.LOW if score > 0 else Severity.INFO


def advisory_severity(adv: dict, affected: dict) -> tuple[Severity, str]:
    """(severity, where it came from): the word an ecosystem or database gives, else CVSS v3."""
    for src in (affected.get("ecosystem_specific"), affected.get("database_specific"), adv.get("database_specific")):
        if isinstance(src, dict):
            for key in ("severity", "urgency"):
                try:
                    return Severity.parse(src.get(key, "")), key
                except ValueError:
                    pass
    # The newest CVSS version given wins (v4 rates what v3 did, better); a vector the library
    # refuses is skipped for the next one.
    given = [*(affected.get("severity") or ()), *(adv.get("severity") or ())]
    scores = [sev for sev in given if isinstance(sev, dict)]
    for kind in ("CVSS_V4", "CVSS_V3", "CVSS_V2"):
        for sev in scores:
            if str(sev.get("type", "")) == kind:
                score = cvss_score(str(sev.get("score", "")))
                if score is not None:
                    return _rating(score), f"cvss {score}"
    return Severity.MEDIUM, "unknown (default medium)"


def cvss_vectors(adv: dict, affected: dict) -> list[str]:
    """Every CVSS vector an advisory gives (the reports carry them)."""
    out = []
    for sev in [*(affected.get("severity") or ()), *(adv.get("severity") or ())]:
        if isinstance(sev, dict) and str(sev.get("type", "")).startswith("CVSS_V"):
            if isinstance(sev.get("score"), str):
                out.append(sev["score"])
    return list(dict.fromkeys(out))


def aliases(adv: dict) -> list[str]:
    """The advisory's other ids (OSV `aliases`, e.g. the CVE of a GHSA), CVE ids first; bounded."""
    raw = adv.get("aliases") or ()
    ids = [a for a in raw if isinstance(a, str) and a and len(a) < 64][:16] if isinstance(raw, list) else []
    return sorted(dict.fromkeys(ids), key=lambda a: (not a.startswith("CVE-"), a))


# --- matching -------------------------------------------------------------------------------------


def _eco_matches(adv_eco: str, pkg_eco: str) -> bool:
    a_base, _, a_rel = adv_eco.partition(":")
    p_base, _, p_rel = pkg_eco.partition(":")
    if a_base.strip().lower() != p_base.strip().lower():
        return False
    # A release on only one side matches (better a finding from a sibling release than none).
    return not a_rel or not p_rel or a_rel == p_rel or a_rel.startswith(p_rel + ":")


def _range_affects(rng: dict, version: str, cmp) -> tuple[bool, str]:
    """(affected, fixed version) for one OSV range; events walked in version order."""
    events = []
    for ev in rng.get("events") or ():
        if isinstance(ev, dict) and len(ev) == 1:
            ((kind, ver),) = ev.items()
            if kind in ("introduced", "fixed", "last_affected", "limit") and isinstance(ver, str):
                events.append((kind, ver))

    zero = [e for e in events if e == ("introduced", "0")]  # "0": before every version, whatever the ordering
    order = functools.cmp_to_key(cmp)
    rest = sorted((e for e in events if e not in zero), key=lambda e: order(e[1]))
    affected, fixed = False, ""
    for kind, ver in [*zero, *rest]:
        if kind == "introduced":
            if ver == "0" or cmp(version, ver) >= 0:
                affected = True
        elif kind == "fixed":
            if cmp(version, ver) >= 0:
                affected = False
            elif affected and not fixed:
                fixed = ver
        elif kind == "last_affected" and cmp(version, ver) > 0:
            affected = False
        elif kind == "limit" and cmp(version, ver) >= 0:
            affected = False
    return affected, fixed if affected else ""


def affected_by(adv: dict, pkg: Package) -> tuple[dict, str] | None:
    """The `affected` entry of adv that covers pkg's installed version, and the fixed version."""
    if adv.get("withdrawn"):
        return None
    want = {normalize_name(pkg.ecosystem, pkg.name)}
    if pkg.source:
        want.add(normalize_name(pkg.ecosystem, pkg.source))
    for aff in adv.get("affected") or ():
        p = aff.get("package") or {} if isinstance(aff, dict) else {}
        eco, name = str(p.get("ecosystem", "")), str(p.get("name", ""))
        if not _eco_matches(eco, pkg.ecosystem) or normalize_name(eco, name) not in want:
            continue
        cmp = versions.comparator(eco)
        listed = pkg.version in (aff.get("versions") or ())
        fixed_after: list[str] = []  # every range's fixed versions above the installed one
        unfixed = False
        for rng in aff.get("ranges") or ():
            if not isinstance(rng, dict) or rng.get("type") not in ("ECOSYSTEM", "SEMVER"):
                continue
            rcmp = versions.semver_compare if rng["type"] == "SEMVER" else cmp
            ok, fixed = _range_affects(rng, pkg.version, rcmp)
            if ok and fixed:
                return aff, fixed
            unfixed = unfixed or ok  # affected with no fix in this range (last_affected, open-ended)
            fixed_after += [v for v in _fixed_events(rng) if _safe_cmp(rcmp, v, pkg.version) > 0]
        if unfixed:
            return aff, ""
        if listed:
            # Matched through the explicit `versions` list: the ranges still name the fix (the
            # lowest fixed version above the installed one; the list and ranges describe the same set).
            if fixed_after:
                return aff, min(fixed_after, key=functools.cmp_to_key(functools.partial(_safe_cmp, cmp)))
            return aff, ""
    return None


def _fixed_events(rng: dict) -> list[str]:
    return [ev["fixed"] for ev in rng.get("events") or () if isinstance(ev, dict) and isinstance(ev.get("fixed"), str)]


def _safe_cmp(cmp, a: str, b: str) -> int:
    try:
        return cmp(a, b)
    except (ValueError, TypeError):
        return 0


# --- the database ---------------------------------------------------------------------------------


class AdvisoryDB:
    """Read-only view of one database path (directory or zip); thread-safe."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], list[str]] | None = None
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self.fingerprint = fingerprint(path)
        self.count = 0

    def _load_index(self) -> dict[tuple[str, str], list[str]]:
        with self._lock:
            if self._index is None:
                self._index = _read_index(self.path) or _build_index(self.path)
                self.count = len({loc for locs in self._index.values() for loc in locs})
            return self._index

    def summary(self) -> dict[str, int]:
        """Package entries per ecosystem (loads the index)."""
        per: dict[str, int] = {}
        for (eco, _name), locs in self._load_index().items():
            per[eco] = per.get(eco, 0) + len(locs)
        return per

    def _advisory(self, loc: str) -> dict | None:
        with self._lock:
            adv = self._cache.get(loc)
            if adv is not None:
                self._cache.move_to_end(loc)
                return adv
        adv = _read_locator(self.path, loc)
        if adv is not None:
            with self._lock:
                self._cache[loc] = adv
                while len(self._cache) > _LRU:
                    self._cache.popitem(last=False)
        return adv

    def match(self, packages: list[Package]) -> list[Finding]:
        index = self._load_index()
        out: list[Finding] = []
        for pkg in packages:
            base = versions.base_ecosystem(pkg.ecosystem)
            locs: list[str] = []
            for n in {pkg.name, pkg.source} - {""}:
                locs += index.get((base, normalize_name(pkg.ecosystem, n)), ())
            seen: set[str] = set()
            for loc in dict.fromkeys(locs):
                adv = self._advisory(loc)
                if adv is None or adv.get("id") in seen:
                    continue
                hit = affected_by(adv, pkg)
                if hit is None:
                    continue
                seen.add(adv.get("id"))
                aff, fixed = hit
                sev, how = advisory_severity(adv, aff)
                summary = str(adv.get("summary") or adv.get("details") or "")[:200].splitlines()
                # The CVE ids travel in the detail sentence (the finding record has no aliases key, and
                # records keep their keys): "aliases: CVE-..." is what the reports read back (aliases_in).
                also = [a for a in aliases(adv) if a != adv.get("id")]
                vecs = cvss_vectors(adv, aff)
                out.append(
                    Finding(
                        category="vulnerability",
                        severity=sev,
                        rule=f"osv:{adv.get('id')}",
                        path=pkg.path,
                        detail=f"{pkg.name} {pkg.version}: {summary[0] if summary else 'known vulnerability'}"
                        f" (severity from {how}"
                        + (f"; aliases: {' '.join(also)}" if also else "")
                        + (f"; cvss: {' '.join(vecs[:4])}" if vecs else "")
                        + ")",
                        advisory=str(adv.get("id")),
                        package=pkg.name,
                        installed=pkg.version,
                        fixed=fixed or "none",
                    )
                )
        return out


_ALIASES = re.compile(r"aliases: ([^;)]+)")
_VECTORS = re.compile(r"cvss: ([^;)]+)")


def aliases_in(f: Finding) -> list[str]:
    """The aliases a vulnerability finding's detail names (see AdvisoryDB.match)."""
    m = _ALIASES.search(f.detail)
    return m.group(1).split() if m else []


def vectors_in(f: Finding) -> list[str]:
    """The CVSS vectors a vulnerability finding's detail names."""
    m = _VECTORS.search(f.detail)
    return m.group(1).split() if m else []


def fingerprint(path: str) -> str:
    """Changes whenever the database does: the index file when there is one, else every file's
    name, size and mtime. "" for a missing path (no database: vulnerability checks are off)."""
    if not path or not os.path.exists(path):
        return ""
    h = hashlib.sha256()
    idx = os.path.join(path, INDEX)
    if os.path.isdir(path) and os.path.isfile(idx):
        st = os.stat(idx)
        h.update(f"{INDEX}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]
    for rel in _walk(path):
        st = os.stat(os.path.join(path, rel)) if os.path.isdir(path) else os.stat(path)
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _walk(path: str) -> Iterator[str]:
    if os.path.isfile(path):
        yield ""
        return
    n = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            if f.endswith((".json", ".zip")) and f != INDEX:
                n += 1
                if n > _MAX_FILES:
                    return
                yield os.path.relpath(os.path.join(root, f), path)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    for zi in zf.infolist():
        if zi.filename.endswith(".json") and not zi.is_dir() and zi.file_size <= _MAX_ADVISORY_BYTES:
            yield zi


def _iter_advisories(path: str) -> Iterator[tuple[str, bytes]]:
    """(locator, raw JSON) of every advisory; locator = relpath, or relpath + '!' + zip member."""
    for rel in _walk(path):
        full = os.path.join(path, rel) if rel else path
        try:
            if full.endswith(".zip"):
                with zipfile.ZipFile(full) as zf:
                    for zi in _zip_members(zf):
                        yield f"{rel}!{zi.filename}", zf.read(zi)
            elif os.path.getsize(full) <= _MAX_ADVISORY_BYTES:
                with open(full, "rb") as f:
                    yield rel, f.read()
        except (OSError, zipfile.BadZipFile) as e:
            log.warning("advisory db: skipping %s: %s", full, e)


def _read_locator(path: str, loc: str) -> dict | None:
    rel, _, member = loc.partition("!")
    full = os.path.join(path, rel) if rel else path
    try:
        if member:
            with zipfile.ZipFile(full) as zf:
                data = zf.read(member)
        else:
            with open(full, "rb") as f:
                data = f.read(_MAX_ADVISORY_BYTES + 1)
        adv = orjson.loads(data)
        return adv if isinstance(adv, dict) else None
    except (OSError, KeyError, zipfile.BadZipFile, orjson.JSONDecodeError):
        return None


def _names(adv: dict) -> Iterator[tuple[str, str]]:
    for aff in adv.get("affected") or ():
        p = aff.get("package") if isinstance(aff, dict) else None
        if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("ecosystem"), str):
            yield versions.base_ecosystem(p["ecosystem"]), normalize_name(p["ecosystem"], p["name"])


def _build_index(path: str) -> dict[tuple[str, str], list[str]]:
    index: dict[tuple[str, str], list[str]] = {}
    for loc, data in _iter_advisories(path):
        try:
            adv = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(adv, dict):
            for key in set(_names(adv)):
                index.setdefault(key, []).append(loc)
    return index


def _read_index(path: str) -> dict[tuple[str, str], list[str]] | None:
    idx = os.path.join(path, INDEX)
    if not os.path.isdir(path) or not os.path.isfile(idx):
        return None
    try:
        with open(idx, "rb") as f:
            raw = orjson.loads(f.read())
        return {(eco, name): locs for eco, names in raw["entries"].items() for name, locs in names.items()}
    except (OSError, KeyError, TypeError, AttributeError, ValueError, orjson.JSONDecodeError):
        log.warning("advisory db: %s unreadable, rebuilding the index in memory", idx)
        return None


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)[:120].lstrip(".") or "_"


def _validate(adv, where: str) -> str | None:
    if not isinstance(adv, dict):
        return f"{where}: not a JSON object"
    if not isinstance(adv.get("id"), str) or not adv["id"]:
        return f"{where}: no 'id'"
    aff = adv.get("affected")
    if not isinstance(aff, list) or not any(True for _ in _names(adv)):
        return f"{where}: no 'affected' entry with a package ecosystem and name"
    return None


def import_db(src: str, db: str) -> tuple[int, list[str]]:
    """Copy the advisories of src (directory, zip or one .json) into db and rewrite its index.
    Returns (imported, errors); each advisory is written atomically, then the index."""
    if not os.path.exists(src):
        raise OsvError(f"{src}: no such file or directory")
    os.makedirs(db, exist_ok=True)
    imported, errors = 0, []
    for loc, data in _iter_advisories(src):
        where = f"{src}:{loc}" if loc else src
        try:
            adv = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            errors.append(f"{where}: invalid JSON ({e})")
            continue
        problem = _validate(adv, where)
        if problem:
            errors.append(problem)
            continue
        eco = next(_names(adv))[0]
        d = os.path.join(db, _safe(eco))
        os.makedirs(d, exist_ok=True)
        write_atomic(os.path.join(d, _safe(adv["id"]) + ".json"), orjson.dumps(adv))
        imported += 1
    write_index(db)
    return imported, errors


def write_index(db: str) -> int:
    """Rebuild `<db>/index.json` from every advisory under db; returns the advisory count."""
    entries: dict[str, dict[str, list[str]]] = {}
    count = 0
    for loc, locs in _build_index(db).items():
        entries.setdefault(loc[0], {})[loc[1]] = sorted(locs)
        count += len(locs)
    write_atomic(os.path.join(db, INDEX), orjson.dumps({"version": 1, "entries": entries}))
    return count


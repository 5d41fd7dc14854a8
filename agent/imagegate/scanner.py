"""ImageScanner: one image (+ runtime spec) -> ImageReport, through the caches.

    root digest + spec ----------------------------> image cache hit: done (no blob read)
    resolve (index -> manifest -> config) -> per layer: layer cache or stream-scan (each layer once)
    -> diff_id checks -> merge the layers into the file view (whiteouts, shadowing)
    -> OS ecosystems from os-release -> advisories -> baseline (spec, config) -> report, cached

Thread-safe: several workers may scan at once; a layer being scanned by one worker is waited for
by another instead of being read twice. `refresh()` swaps in recompiled rules or a changed
advisory database atomically (checked at most every `refresh_interval`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import orjson

from agent.imagegate import baseline, osv, packages
from agent.imagegate.cache import Cache
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.layer import LayerScanner, ScanLimits, through_link, write_through
from agent.imagegate.malware import RuleSet
from agent.imagegate.model import Finding, ImageReport, LayerResult, Package, Severity
from agent.imagegate.source import Source

log = logging.getLogger("nodewarden.imagegate")

# Findings about a file (hidden when a later layer deletes or replaces it); the others are about
# the layer itself and stay whatever later layers do.
# What a cached LayerResult holds; bumped when a layer scan learns something new, so that results
# cached without it are dropped (2: links out of the root and directory entries, for writes
# through a lower layer's symlink; 3: Composer and Cargo.lock packages, and vulnerability findings
# that name their aliases and the fix of advisories matched through `versions`, issue 15).
_LAYER_SCHEMA = 3
_FILE_RULES = {"setuid-file", "setgid-file", "device-file", "symlink-escape", "hardlink-outside-layer", "yara-timeout"}


def spec_digest(spec: dict | None) -> str:
    """A key for the runtime spec in the image cache. Never raises: a spec orjson cannot write
    (an integer past 64 bits from a stdlib json.loads, nesting past orjson's 254 levels) is keyed
    by the stdlib's text of it, and one neither can write gets a key of its own (never cached)."""
    if not spec:
        return "-"
    try:
        data = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        try:
            data = json.dumps(spec, sort_keys=True, default=repr).encode()
        except (TypeError, ValueError, RecursionError):
            return "u" + os.urandom(16).hex()
    return hashlib.sha256(data).hexdigest()[:32]


def limits_of(cfg: ImageGateConfig) -> ScanLimits:
    return ScanLimits(
        max_file_scan=cfg.max_file_scan,
        max_hash_bytes=cfg.max_hash_bytes,
        max_layer_bytes=cfg.max_layer_bytes,
        bomb_ratio=cfg.bomb_ratio,
        bomb_min_bytes=cfg.bomb_min_bytes,
        max_entries=cfg.max_entries,
        yara_timeout=cfg.yara_timeout,
    )


@dataclass(frozen=True)
class _Engine:
    """Everything a scan depends on, swapped as one by refresh()."""

    rules: RuleSet
    layers: LayerScanner
    db: osv.AdvisoryDB | None
    layer_prefix: str
    image_prefix: str
    sources_fp: str  # stat fingerprint of rule files, hash lists and the database


class ImageScanner:
    def __init__(self, cfg: ImageGateConfig | None = None, cache: Cache | None = None,
                 proc_root: str | None = None, host_ns_dir: str = ""):
        self.cfg = cfg or ImageGateConfig()
        # The host's /proc (the agent's containers.proc_root) and namespace files: baseline.host_namespace.
        self.proc_root = proc_root or "/proc"
        self.host_ns_dir = host_ns_dir or self.cfg.host_ns_dir
        self.cache = cache or Cache(self.cfg.cache_path or None)
        self._lock = threading.Lock()
        self._scanning: dict[str, threading.Event] = {}
        self._next_refresh = 0.0
        self.engine = self._build()
        self.cache.purge_stale(self.engine.layer_prefix, self.engine.image_prefix)

    # --- engine -------------------------------------------------------------------------------

    def _stat_fp(self) -> str:
        h = hashlib.sha256()
        paths = [*self.cfg.hash_lists, self.cfg.advisory_db, self.cfg.hash_db]
        for d in self.cfg.rule_dirs:
            for root, _dirs, files in os.walk(d):
                paths += [os.path.join(root, f) for f in files if f.endswith((".yar", ".yara"))]
        for p in sorted(paths):
            try:
                st = os.stat(p)
                h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}:-\n".encode())
        h.update(osv.fingerprint(self.cfg.advisory_db).encode())
        return h.hexdigest()

    def _build(self) -> _Engine:
        rules = RuleSet(tuple(self.cfg.rule_dirs), tuple(self.cfg.hash_lists), self.cfg.bundled_rules,
                        hash_db=self.cfg.hash_db)
        limits = limits_of(self.cfg)
        db = osv.AdvisoryDB(self.cfg.advisory_db) if osv.fingerprint(self.cfg.advisory_db) else None
        lim_fp = hashlib.sha256(f"{_LAYER_SCHEMA}:{limits!r}".encode()).hexdigest()[:8]
        return _Engine(
            rules=rules,
            layers=LayerScanner(rules, limits),
            db=db,
            layer_prefix=f"{rules.fingerprint}:{lim_fp}:",
            image_prefix=f"{rules.fingerprint}:{lim_fp}:{db.fingerprint if db else '-'}:",
            sources_fp=self._stat_fp(),
        )

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the engine if rule files, hash lists or the advisory database changed.
        Returns True when it did. Cheap when nothing changed (stat calls only)."""
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return False
        self._next_refresh = now + self.cfg.refresh_interval
        if not force and self._stat_fp() == self.engine.sources_fp:
            return False
        engine = self._build()
        changed = (engine.layer_prefix, engine.image_prefix) != (self.engine.layer_prefix, self.engine.image_prefix)
        self.engine = engine
        if changed:
            n = self.cache.purge_stale(engine.layer_prefix, engine.image_prefix)
            log.info("image gate: rules or advisory database changed; %d cached results dropped", n)
        return changed

    @property
    def rule_errors(self) -> list[str]:
        return self.engine.rules.errors

    # --- scanning -----------------------------------------------------------------------------

    def cached(self, root_digest: str, spec: dict | None) -> ImageReport | None:
        eng = self.engine
        return self.cache.get_image(f"{eng.image_prefix}{root_digest}:{spec_digest(spec)}")

    def scan(self, source: Source, spec: dict | None = None) -> ImageReport:
        """Scan (or fetch from cache) one image; raises ImageError/SourceError when unreadable."""
        t0 = time.perf_counter()
        eng = self.engine
        root = source.root()
        key = f"{eng.image_prefix}{root['digest']}:{spec_digest(spec)}"
        rep = self.cache.get_image(key)
        if rep is not None:
            out = ImageReport(**{**rep.__dict__, "image": source.name or rep.image})
            out.cache_hit, out.bytes_scanned = "verdict", 0
            out.duration_ms = (time.perf_counter() - t0) * 1000
            return out
        res = source.resolve()
        findings: list[Finding] = list(res.findings)
        layers: list[LayerResult] = []
        hits, scanned = 0, 0
        for desc in res.layers:
            lr, hit = self._layer(eng, source, desc)
            hits += hit
            scanned += 0 if hit else lr.uncompressed
            layers.append(lr)
        findings += _diff_id_findings(res.config, layers)
        view_findings, pkgs, os_release = merge(layers)
        findings += view_findings
        pkgs = _with_ecosystems(pkgs, os_release)
        if eng.db is not None:
            findings += eng.db.match(pkgs)
        findings += baseline.check_config(res.config, spec is not None)
        if spec is not None:
            findings += baseline.check_spec(spec, self.proc_root, self.host_ns_dir)
        labels = (res.config.get("config") or {}).get("Labels") or {}
        rep = ImageReport(
            image=source.name,
            digest=root["digest"],
            manifest_digest=res.manifest_digest,
            findings=findings,
            packages=pkgs,
            layers=[d["digest"] for d in res.layers],
            bytes_scanned=scanned,
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        )
        if all(lr.complete for lr in layers):
            self.cache.put_image(key, rep)
        rep.cache_hit = "layers" if hits and hits == len(layers) else ("partial" if hits else "none")
        rep.duration_ms = (time.perf_counter() - t0) * 1000
        return rep

    def _layer(self, eng: _Engine, source: Source, desc: dict) -> tuple[LayerResult, bool]:
        digest = desc["digest"]
        key = eng.layer_prefix + digest
        while True:
            cached = self.cache.get_layer(key)
            if cached is not None:
                return cached, True
            with self._lock:
                ev = self._scanning.get(key)
                if ev is None:
                    self._scanning[key] = threading.Event()
                    break
            ev.wait(600)  # another worker is reading this layer: take its result from the cache
        try:
            size = desc.get("size")
            lr = eng.layers.scan(digest, source.chunks(digest), size if isinstance(size, int) else -1)
            self.cache.put_layer(key, lr)
            return lr, False
        finally:
            with self._lock:
                self._scanning.pop(key).set()


def _diff_id_findings(config: dict, layers: list[LayerResult]) -> list[Finding]:
    diff_ids = ((config.get("rootfs") or {}).get("diff_ids")) or []
    out = []
    if len(diff_ids) != len(layers):
        out.append(
            Finding(
                "integrity",
                Severity.HIGH,
                "diff-id-count",
                detail=f"config lists {len(diff_ids)} diff_ids for {len(layers)} layers",
            )
        )
    for lr, want in zip(layers, diff_ids, strict=False):
        if lr.diff_id and lr.complete and lr.diff_id != want and not _unreadable(lr):
            out.append(
                Finding(
                    "integrity",
                    Severity.CRITICAL,
                    "diff-id-mismatch",
                    layer=lr.digest,
                    detail=f"uncompressed layer hashes to {lr.diff_id}, config says {want}",
                )
            )
    return out


def _unreadable(lr: LayerResult) -> bool:
    return any(f.rule in ("layer-unreadable", "decompression-bomb") for f in lr.findings)


def _hidden_by(layer: LayerResult, path: str) -> bool:
    """Is /path (of a lower layer) deleted or replaced by `layer`?"""
    p = path.lstrip("/")
    if not p:
        return False
    if p in layer.paths or p in layer.dirs:
        return True
    parts = p.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in layer.paths:  # a file where a lower layer had a directory
            return True
    for w in layer.whiteouts:
        if p == w or p.startswith(w + "/"):
            return True
    return any(o == "" or p.startswith(o + "/") for o in layer.opaque)


def merge(layers: list[LayerResult]) -> tuple[list[Finding], list[Package], dict[str, str]]:
    """The layers as one file view: findings and packages of files a later layer deleted or
    replaced are dropped; findings about a layer itself are kept. Returns the os-release too."""
    findings: list[Finding] = []
    pkgs: list[Package] = []
    osrel: dict[str, str] = {}
    links: dict[str, str] = {}  # lower layers' symlinks out of the root, still in place
    for lr in layers:
        if findings or pkgs or osrel:
            findings = [f for f in findings if not _file_finding(f) or not _hidden_by(lr, f.path)]
            pkgs = [p for p in pkgs if not _hidden_by(lr, p.path)]
            osrel = {k: v for k, v in osrel.items() if not _hidden_by(lr, k)}
        if links:
            links = {p: t for p, t in links.items() if not _hidden_by(lr, p)}
            findings += _written_through(lr, links)
        findings += lr.findings
        pkgs += lr.packages
        osrel.update(lr.os_release)
        links.update(lr.links)
    text = osrel.get("etc/os-release") or osrel.get("usr/lib/os-release") or ""
    return findings, pkgs, packages.parse_os_release(text)


def _written_through(lr: LayerResult, links: dict[str, str]) -> list[Finding]:
    """Entries of `lr` under a lower layer's symlink out of the root (one that `lr` does not
    replace: replaced ones are gone from `links` already). The sets carry no order: an upper layer
    that lists evil/x before the directory evil that replaces the link is taken as replacing it
    first, which is what every image builder writes."""
    out = []
    for p in (*lr.paths, *lr.dirs, *lr.whiteouts):  # a whiteout through it deletes out there
        link = through_link(p, links)
        if link is not None:
            out.append(write_through(p, link, links[link], lr.digest))
    return out


def _file_finding(f: Finding) -> bool:
    return bool(f.path) and (f.category in ("malware", "secret") or f.rule in _FILE_RULES)


def _with_ecosystems(pkgs: list[Package], os_release: dict[str, str]) -> list[Package]:
    out = []
    for p in pkgs:
        if p.ecosystem in ("dpkg", "apk", "rpm"):
            p = Package(packages.os_ecosystem(p.ecosystem, os_release), p.name, p.version, p.path, p.source)
        out.append(p)
    return out

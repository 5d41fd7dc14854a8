"""Image gate benchmarks (no root, no containerd: OCI layouts generated in a temp dir).

1. Cold scan: one image of ~300 MB of layer data (real ELF libraries, Python sources, random
   "assets"; gzip), scanned with hashing, YARA, secrets, packages: MB/s of uncompressed layer data
   per CPU second of the scanning process, and wall MB/s.
2. Cached verdict: scan + decide of an image already scanned, from the in-memory LRU and from the
   SQLite cache of a restarted agent: p50/p99.
3. 1,000 images sharing 4 base layers (each image: 2 bases + its own small layer), in a child
   process with a fresh cache: total wall time, CPU time and peak RSS (getrusage of the child).
Targets (issue 5) are printed beside each measured value; they are not asserted.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COLD_MB = int(os.environ.get("NW_BENCH_IMAGE_MB", "300"))
N_IMAGES = int(os.environ.get("NW_BENCH_IMAGES", "1000"))


class _HashWriter:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def _corpus() -> list[tuple[str, bytes]]:
    libs = [
        p for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*") + glob.glob("/usr/lib/*/*.so*") if os.path.isfile(p)
    ]
    texts = glob.glob("/usr/lib/python3*/**/*.py", recursive=True)
    out = []
    for p in libs[:400]:
        with open(p, "rb") as f:
            out.append(("bin", f.read(8 << 20)))
    for p in texts[:1500]:
        with open(p, "rb") as f:
            out.append(("text", f.read(1 << 20)))
    return out


def write_layer(blobs_dir: str, files, compress: bool = True) -> dict:
    """files: iterable of (path, bytes). Returns the OCI descriptor, with diff_id."""
    tmp = os.path.join(blobs_dir, f".tmp-{os.getpid()}-{random.random()}")
    with open(tmp, "wb") as raw:
        outer = _HashWriter(raw)
        gz = gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) if compress else None
        inner = _HashWriter(gz if gz else outer)
        with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, data in files:
                ti = tarfile.TarInfo(path)
                ti.size, ti.mode = len(data), 0o755
                tar.addfile(ti, io.BytesIO(data))
        if gz:
            gz.close()
    digest = "sha256:" + outer.h.hexdigest()
    os.replace(tmp, os.path.join(blobs_dir, digest.split(":")[1]))
    media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    return {"mediaType": media, "digest": digest, "size": outer.n, "diff_id": "sha256:" + inner.h.hexdigest(),
            "uncompressed": inner.n}  # fmt: skip


def write_image(layout: str, blobs_src: str, layers: list[dict], name: str) -> None:
    """An OCI layout dir for these layers; blobs hard-linked from blobs_src (no copies)."""
    from tests.harness.oci import _arch

    bdir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(bdir, exist_ok=True)
    config = {"architecture": _arch(), "os": "linux", "config": {"User": "1000"},
              "rootfs": {"type": "layers", "diff_ids": [ly["diff_id"] for ly in layers]}}  # fmt: skip
    cb = json.dumps(config).encode()
    cd = "sha256:" + hashlib.sha256(cb).hexdigest()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cb)},
                "layers": [{k: ly[k] for k in ("mediaType", "digest", "size")} for ly in layers]}  # fmt: skip
    mb = json.dumps(manifest).encode()
    md = "sha256:" + hashlib.sha256(mb).hexdigest()
    for d, b in ((cd, cb), (md, mb)):
        with open(os.path.join(bdir, d.split(":")[1]), "wb") as f:
            f.write(b)
    for ly in layers:
        dst = os.path.join(bdir, ly["digest"].split(":")[1])
        if not os.path.exists(dst):
            os.link(os.path.join(blobs_src, ly["digest"].split(":")[1]), dst)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest["mediaType"], "digest": md, "size": len(mb),
                                                "annotations": {"io.containerd.image.name": name}}]}  # fmt: skip
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')


def _files(corpus, total: int, seed: int, prefix: str):
    rnd = random.Random(seed)
    n = 0
    k = 0
    while n < total:
        roll = rnd.random()
        if roll < 0.25:
            data = rnd.randbytes(rnd.randint(4 << 10, 2 << 20))  # compressed assets
            path = f"{prefix}/assets/a{k}.bin"
        else:
            kind, data = corpus[rnd.randrange(len(corpus))]
            path = f"{prefix}/{kind}/f{k}"
        yield path, data
        n += len(data)
        k += 1


def bench_cold(tmp: str, corpus) -> tuple[float, float, int]:
    from agent.imagegate.config import ImageGateConfig
    from agent.imagegate.scanner import ImageScanner
    from agent.imagegate.source import open_path

    blobs = os.path.join(tmp, "cold-blobs")
    os.makedirs(blobs)
    per = COLD_MB // 3
    layers = [write_layer(blobs, _files(corpus, per << 20, i, f"l{i}")) for i in range(3)]
    write_image(os.path.join(tmp, "cold"), blobs, layers, "bench/cold:1")
    shutil.rmtree(blobs)
    total = sum(ly["uncompressed"] for ly in layers)
    scanner = ImageScanner(ImageGateConfig(cache_path="", advisory_db=""))
    c0, t0 = time.process_time(), time.perf_counter()
    rep = scanner.scan(open_path(os.path.join(tmp, "cold")))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert rep.bytes_scanned == total, (rep.bytes_scanned, total)
    return total / 1e6 / cpu, total / 1e6 / wall, total


def bench_cached(tmp: str) -> tuple[float, float, float, float]:
    from agent.imagegate.config import ImageGateConfig
    from agent.imagegate.decide import decide
    from agent.imagegate.scanner import ImageScanner
    from agent.imagegate.source import open_path
    from agent.policy.model import ImagePolicy

    cfg = ImageGateConfig(cache_path=os.path.join(tmp, "cached.db"), advisory_db="")
    scanner = ImageScanner(cfg)
    src = open_path(os.path.join(tmp, "cold"))
    scanner.scan(src)
    policy = ImagePolicy()

    def run(n: int, clear: bool) -> list[float]:
        lat = []
        for _ in range(n):
            if clear:
                scanner.cache._mem_images.clear()  # force the SQLite path (a restarted agent)
            t0 = time.perf_counter()
            v = decide(scanner.scan(src), policy)
            lat.append((time.perf_counter() - t0) * 1000)
            assert v.cache_hit == "verdict"
        return sorted(lat)

    mem, disk = run(3000, False), run(1000, True)
    q = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))]  # noqa: E731
    return statistics.median(mem), q(mem, 0.99), statistics.median(disk), q(disk, 0.99)


_CORPUS_SCAN = """
import os, sys, time
sys.path.insert(0, {root!r})
from agent.imagegate.config import ImageGateConfig
from agent.imagegate.scanner import ImageScanner
from agent.imagegate.source import open_path
from agent.imagegate.decide import decide
from agent.policy.model import ImagePolicy
base = {base!r}
s = ImageScanner(ImageGateConfig(cache_path=os.path.join(base, "corpus.db"), advisory_db=""))
p = ImagePolicy()
t0 = time.perf_counter()
verdicts = {{}}
for name in sorted(os.listdir(os.path.join(base, "imgs"))):
    v = decide(s.scan(open_path(os.path.join(base, "imgs", name))), p)
    verdicts[v.verdict] = verdicts.get(v.verdict, 0) + 1
# VmHWM: the peak of this address space. getrusage's maxrss survives exec and would report the
# parent's size at fork time (the parent holds the generated corpus).
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(hwm, time.perf_counter() - t0, verdicts, s.cache.stats)
"""


def bench_corpus(tmp: str, corpus) -> tuple[float, float, float, str]:
    base = os.path.join(tmp, "corpus")
    blobs = os.path.join(base, "blobs")
    os.makedirs(blobs)
    bases = [write_layer(blobs, _files(corpus, 24 << 20, 100 + i, f"base{i}")) for i in range(4)]
    rnd = random.Random(7)
    for i in range(N_IMAGES):
        files = [(f"app/{i}/f{k}", rnd.randbytes(rnd.randint(1000, 20000))) for k in range(5)]
        files.append((f"app/{i}/run.sh", b"#!/bin/sh\nexec /app/server --port 8080\n"))
        own = write_layer(blobs, files)
        pick = [bases[i % 4], bases[(i // 4) % 4]] if i % 4 != (i // 4) % 4 else [bases[i % 4]]
        write_image(os.path.join(base, "imgs", f"img{i:04d}"), blobs, [*pick, own], f"bench/img:{i}")
    code = _CORPUS_SCAN.format(root=ROOT, base=base)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Peak RSS from the child's own VmHWM: RUSAGE_CHILDREN's maxrss includes the moment between
    # fork and exec, when the child is a copy of this (corpus-holding) process.
    hwm, _, rest = out.strip().partition(" ")
    return wall, cpu, int(hwm) / 1024, rest


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="nw-bench-imagegate-")
    try:
        t0 = time.perf_counter()
        corpus = _corpus()
        print(f"generating images in {tmp} ...", flush=True)
        per_cpu, per_wall, total = bench_cold(tmp, corpus)
        print(f"cold scan, {total / 1e6:.0f} MB uncompressed (gzip; sha256 x3, YARA, packages):")
        print(f"  {per_cpu:7.0f} MB/s per CPU second   target >= 200 MB/s per core")
        print(f"  {per_wall:7.0f} MB/s wall")
        p50, p99, d50, d99 = bench_cached(tmp)
        print("cached verdict (scan + decide of a scanned image):")
        print(f"  in-memory LRU: p50 {p50:.3f} ms  p99 {p99:.3f} ms   target p99 <= 5 ms")
        print(f"  SQLite (restarted agent): p50 {d50:.3f} ms  p99 {d99:.3f} ms   target p99 <= 5 ms")
        shutil.rmtree(os.path.join(tmp, "cold"), ignore_errors=True)
        wall, cpu, rss, detail = bench_corpus(tmp, corpus)
        print(f"{N_IMAGES} images sharing 4 base layers (24 MB each), fresh cache, one process:")
        print(f"  total {wall:.1f} s   target <= 60 s")
        print(f"  CPU {cpu:.1f} s ({100 * cpu / wall / (os.cpu_count() or 1):.0f}% of {os.cpu_count()} cores)")
        print(f"  peak RSS {rss:.0f} MB   target <= 150 MB")
        print(f"  child: {detail}")
        print(f"(bench took {time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

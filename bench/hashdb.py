"""Known-bad hash store benchmark (no root): 1 M random sha256 digests in a MalwareBazaar-style CSV.

1. Import: `import_hashes` of the CSV into a fresh store (wall time, peak RSS of the importing child).
2. Store: file size; resident memory of a child that opens the store and touches every page
   (RSS delta, split into file-backed and anonymous pages).
3. Lookup: per lookup in CPython, hex strings as the layer scanner passes them and raw digests,
   hits and misses (the loop's own overhead included).
Targets (issue 11) are printed beside each measured value; they are not asserted.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

N = int(os.environ.get("NW_BENCH_HASHES", "1000000"))
N_LOOKUPS = 200_000
FAMILIES = 1500  # distinct malware families named in MalwareBazaar's dump: some thousands
# NW_BENCH_HASH_NAMES=1: rows without a family carry a file name of their own (not the hash), so a
# third of the digests have a label each: the worst case for the label table.
UNIQUE_NAMES = os.environ.get("NW_BENCH_HASH_NAMES", "") == "1"

_HEADER = (
    '# "first_seen_utc","sha256_hash","md5_hash","sha1_hash","reporter","file_name","file_type_guess",'
    '"mime_type","signature","clamav","vtpercent","imphash","ssdeep","tlsh"\n'
)


def write_csv(path: str, n: int, seed: int = 11) -> list[str]:
    """A MalwareBazaar-style dump of n random digests; 70 % name a family, the rest are "n/a" with
    the hash as file name (as many submissions are; see UNIQUE_NAMES). Returns the digests."""
    rnd = random.Random(seed)
    fams = [f"Family{i:04d}" for i in range(FAMILIES)]
    out = []
    with open(path, "w") as f:
        f.write("#" * 64 + "\n# MalwareBazaar-style benchmark dump (random digests)\n#\n" + _HEADER)
        for _ in range(n):
            h = rnd.randbytes(32).hex()
            out.append(h)
            sig = rnd.choice(fams) if rnd.random() < 0.7 else "n/a"
            name = "invoice.exe" if sig != "n/a" else (f"sample_{h[:12]}.exe" if UNIQUE_NAMES else f"{h}.exe")
            f.write(f'"2024-01-01 00:00:00", "{h}", "{h[:32]}", "{h[:40]}", "bench", "{name}", "exe", '
                    f'"application/x-dosexec", "{sig}", "n/a", "n/a", "n/a", "n/a", "n/a"\n')
    return out


_CHILD_IMPORT = """
import sys, time
sys.path.insert(0, {root!r})
from agent.imagegate.hashdb import import_hashes
t0 = time.perf_counter()
r = import_hashes({src!r}, {store!r}, source="MalwareBazaar")
dt = time.perf_counter() - t0
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(dt, hwm, r.total, r.bad, r.size)
"""

_CHILD_OPEN = """
import random, sys, time
sys.path.insert(0, {root!r})
def rss():
    st = dict(ln.split(":", 1) for ln in open("/proc/self/status"))
    return [int(st[k].split()[0]) for k in ("VmRSS", "RssFile", "RssAnon")]
from agent.imagegate.hashdb import HashDB, WatchedHashDB
hits = [ln.split()[0] for ln in open({hits!r})]
rnd = random.Random(5)
miss = [rnd.randbytes(32).hex() for _ in hits]  # each a different bucket, as a layer's files are
hits_b = [bytes.fromhex(h) for h in hits]
before = rss()
t0 = time.perf_counter()
db = HashDB.open({store!r})
t_open = time.perf_counter() - t0
db.verify()  # reads every page of the file: all of it resident
after = rss()
def per(f, keys):
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for k in keys:
            f(k)
        best = min(best, (time.perf_counter() - t) / len(keys))
    return best * 1e9
lk = db.lookup
found = sum(1 for h in hits if lk(h)) + sum(1 for h in miss if lk(h))
print(t_open * 1e3, *(a - b for a, b in zip(after, before)), per(lk, hits), per(lk, miss), per(lk, hits_b),
      per(lambda k: None, hits), found, len(db), db.label_count, per(WatchedHashDB({store!r}).lookup, miss))
"""


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="nw-bench-hashdb-")
    try:
        src, store, hits = (os.path.join(tmp, n) for n in ("full.csv", "known-bad.hashdb", "hits.txt"))
        t0 = time.perf_counter()
        digests = write_csv(src, N)
        with open(hits, "w") as f:
            f.write("\n".join(random.Random(3).sample(digests, min(N_LOOKUPS, len(digests)))) + "\n")
        del digests
        print(f"generated {N} digests ({os.path.getsize(src) / 1e6:.0f} MB CSV) in {time.perf_counter() - t0:.1f} s")
        run = [sys.executable, "-c"]
        out = subprocess.run([*run, _CHILD_IMPORT.format(root=ROOT, src=src, store=store)],
                             capture_output=True, text=True, check=True).stdout.split()
        dt, hwm, total, bad, size = float(out[0]), int(out[1]), int(out[2]), int(out[3]), int(out[4])
        print(f"import (MalwareBazaar CSV, {total} digests, {bad} rejected):")
        print(f"  {dt:.1f} s ({total / dt / 1e3:.0f} k digests/s), peak RSS {hwm * 1.024e-3:.0f} MB")
        out = subprocess.run([*run, _CHILD_OPEN.format(root=ROOT, store=store, hits=hits)],
                             capture_output=True, text=True, check=True).stdout.split()
        t_open, d_rss, d_file, d_anon = float(out[0]), int(out[1]), int(out[2]), int(out[3])
        hit_ns, miss_ns, raw_ns, loop_ns = (float(x) for x in out[4:8])
        found, count, labels, watched_ns = int(out[8]), int(out[9]), int(out[10]), float(out[11])
        print(f"store ({count} digests, {labels} labels):")
        print(f"  file {size / 1e6:.1f} MB   target <= 40 MB for 1 M")
        print(f"  resident after open + every page touched: +{d_rss * 1.024e-3:.1f} MB "
              f"({d_file * 1.024e-3:.1f} MB file-backed, shared; {d_anon * 1.024e-3:.1f} MB anonymous)"
              "   target <= 40 MB")
        print(f"  open {t_open:.2f} ms")
        print(f"lookup ({N_LOOKUPS} of each; {found} found, expected {N_LOOKUPS}):")
        print(f"  hit, hex  {hit_ns:6.0f} ns   target < 1000 ns")
        print(f"  miss, hex {miss_ns:6.0f} ns   target < 1000 ns")
        print(f"  hit, raw  {raw_ns:6.0f} ns")
        print(f"  miss through WatchedHashDB (the runtime check's path) {watched_ns:.0f} ns")
        print(f"  (the loop alone {loop_ns:.0f} ns)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

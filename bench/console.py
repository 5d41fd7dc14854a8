"""Console query latency on a big store: `python -m bench.console [--events N] [--db PATH]`.

Fills a SQLite store with N events (default 10 million) the way a cluster would: mostly kernel events
(process.exec, file.open, network.connect) with 3% protection events (alerts, image verdicts, blocks) over
100 nodes, 50 namespaces, 200 images and 30 rules, across the last 7 days. The file is kept (--db) and
reused by the next run when it already holds N events. Then a real collector with its console serves it,
and each question the page asks is timed through the HTTP API (median and worst of 7): the first page,
the first page under each filter, the next page, an event's detail, the charts, an export of 1,000.
Target (issue 14): the first page under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
import urllib.request

import orjson

from collector.server import CollectorConfig, serve
from collector.store import Store
from nwwire.codec import rfc3339, to_event
from nwwire.genproto import load

pb = load("nodewarden.v1.event_pb2")
_SEVS = ["low", "medium", "high", "critical"]
_DAY = 86400 * 10**9


def _templates(n: int = 4000) -> list:
    """Distinct events to copy from: 97% kernel events, 2% alerts, 0.5% verdicts, 0.5% blocks."""
    out = []
    rnd = random.Random(14)  # fixed: every run builds the same store
    for i in range(n):
        app = rnd.randrange(200)
        ns, img = f"ns-{rnd.randrange(50)}", f"registry.local/team{app % 20}/app{app}:{rnd.randrange(7)}"
        c = {"container.id": f"{i:064x}", "container.name": f"app{i % 200}", "container.image.name": img,
             "k8s.pod.name": f"app{i % 200}-{i % 13}", "k8s.namespace.name": ns}
        p = {"process.pid": 1000 + i, "process.parent_pid": 1, "process.executable.path": "/usr/bin/python3",
             "process.command_line": f"python3 worker.py --id {i}", "process.name": "python3",
             "process.ancestors.name": ["sh", "containerd-shim"],
             "process.ancestors.executable.path": ["/bin/sh", "/usr/bin/containerd-shim-runc-v2"]}
        r = rnd.randrange(200)
        ts = rfc3339(0)
        if r < 4:
            rule = f"rule_{rnd.randrange(30)}"
            rec = {"event.name": "alert", "timestamp": ts, "event.severity": _SEVS[i % 4], **p, **c,
                   "trigger.name": "process.exec", "rule.id": rule, "rule.name": rule.replace("_", " "),
                   "alert.action": "alert", "alert.findings": []}
        elif r == 4:
            rec = {"event.name": "image.verdict", "timestamp": ts, "event.severity": _SEVS[i % 4], **c,
                   "image.verdict": ["allow", "alert", "block"][i % 3], "image.reason": "checked",
                   "image.findings": [{"category": "vulnerability", "severity": "high", "rule": "osv",
                                       "advisory": f"CVE-2026-{i}", "action": "alert"}]}
        elif r == 5:
            rec = {"event.name": "enforcement.block", "timestamp": ts, "event.severity": "critical", **p, **c,
                   "enforcement.point": "kernel.exec", "enforcement.action": "kill",
                   "enforcement.reason": "deny_exec: xmrig", "rule.name": f"deny_exec[{i % 5}]"}
        elif r % 3 == 0:
            rec = {"event.name": "process.exec", "timestamp": ts, **p, **c, "process.args": ["python3", "worker.py"]}
        elif r % 3 == 1:
            rec = {"event.name": "file.open", "timestamp": ts, **p, **c, "file.path": f"/srv/data/{i}.json",
                   "syscall.return": 3}
        else:
            rec = {"event.name": "network.connect", "timestamp": ts, **p, **c,
                   "network.peer.address": f"10.0.{i % 250}.7",
                   "network.peer.port": 443, "network.type": "ipv4", "network.transport": "tcp", "syscall.return": 0}
        out.append(to_event(rec))
    return out


def fill(path: str, total: int, batch: int = 10000, real: int = 2_000_000) -> None:
    """`real` events through Store.write (the collector's own ingest path), then copies of them made in
    SQL, each copy a span further back in time, up to `total`: on this 2-core machine the Python path
    writes ~15,000 events/s, so 10 million that way would take over ten minutes; the copies have the
    same rows, indexes and tags, only their bodies repeat the originals' times."""
    store = Store(path, retention_age_s=0, retention_bytes=0)
    store.start()
    try:
        have = store.max_id()
        if have >= total:
            print(f"store: {path} holds {have} events already (reused)")
            return
        if have < min(total, real):
            # the real events are the newest; the copies reach back to 7 days in all
            _fill_real(store, min(total, real), batch, 7 * _DAY * min(total, real) // total)
    finally:
        store.stop()
    _copy_until(path, total)


def _copy_until(path: str, total: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA cache_size=-262144")
        while True:
            n, lo, hi, seq = conn.execute("SELECT count(*), min(ts), max(ts), max(seq) FROM events").fetchone()
            if n >= total:
                return
            take = min(n, total - n)
            off = conn.execute("SELECT max(id) FROM events").fetchone()[0]
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO events (id, stream, seq, ts, received, name, severity, container, pod, "
                         "namespace, text, body) SELECT id + ?, stream, seq + ?, ts - ?, received, name, severity, "
                         "container, pod, namespace, text, body FROM events WHERE id <= ? ORDER BY id",
                         (off, seq, hi - lo + 1, take))
            conn.execute("INSERT INTO tags (id, rule, verdict) SELECT id + ?, rule, verdict FROM tags WHERE id <= ?",
                         (off, take))
            conn.execute("UPDATE streams SET last_seq = last_seq + ?", (seq,))
            conn.execute("COMMIT")
            print(f"store: copied {take:,} events in SQL ({time.perf_counter() - t0:.0f} s); {n + take:,} in all",
                  flush=True)
    finally:
        conn.close()


def _fill_real(store: Store, total: int, batch: int, window_ns: int) -> None:
    """`total` events through Store.write, their times spread evenly over the `window_ns` before now."""
    have = store.max_id()
    tmpl = _templates()
    now = time.time_ns()
    t0 = time.perf_counter()
    seq = have
    while seq < total:
        n = min(batch, total - seq)
        evs, bodies = [], []
        node = (seq // batch) % 100  # each batch from one agent, as agents send them
        for k in range(n):
            s = seq + k
            ev = pb.Event()
            ev.CopyFrom(tmpl[(s * 7919) % len(tmpl)])
            ev.node, ev.agent_id, ev.boot_id, ev.seq = f"node-{node}", f"agent-{node}", "bench", s + 1
            ev.time_unix_nano = now - window_ns + (window_ns * s) // total
            evs.append(ev)
            bodies.append(ev.SerializeToString())
        store.write(evs, bodies=bodies, timeout=120)
        seq += n
        if seq % 1_000_000 < batch:
            print(f"store: {seq:,} events ({(seq - have) / (time.perf_counter() - t0):,.0f}/s)", flush=True)


def _time(url: str, runs: int = 7) -> tuple[float, float, dict | bytes]:
    took = []
    body = b""
    for _ in range(runs):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as r:
            body = r.read()
        took.append((time.perf_counter() - t0) * 1000)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = body
    return statistics.median(took), max(took), doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--db", default="/var/tmp/nodewarden-bench-console/events.db")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.db), exist_ok=True)
    fill(args.db, args.events)
    size = os.path.getsize(args.db) + (os.path.getsize(args.db + "-wal") if os.path.exists(args.db + "-wal") else 0)
    h = serve(CollectorConfig(listen=["127.0.0.1:0"], db=args.db, http_listen="127.0.0.1:0", retention_age_s=0,
                              retention_bytes=0))
    try:
        base = h.console.url.rstrip("/")
        print(f"console: {h.console.url} over {h.store.max_id():,} stored events ({size / 2**30:.1f} GiB)")
        print(f"plan of one name's walk: {h.console.reader.explain(_flt())}")
        med, worst, first = _time(base + "/api/events?limit=50")
        rows = [("first page (50, protection events, newest first)", med, worst, len(first["events"]))]
        mid = first["events"][-1]
        for label, q in [("severity critical", "severity=critical"), ("kind block", "kind=block"),
                         ("kind verdict", "kind=verdict"), ("rule", "rule=rule_7"), ("node", "node=node-7"),
                         ("namespace", "namespace=ns-17"),
                         ("image (post-filter)", "image=" + first["events"][3]["image"].split("/")[-1]),
                         ("image, none matches (post-filter, scan bound)", "image=no-such-image"),
                         ("text", "text=" + first["events"][5]["command_line"].split()[-1]),
                         ("text, none matches", "text=no-such-text"), ("since 1h", "since=1h"),
                         ("a day 3 days ago", f"since={rfc3339(time.time_ns() - 4 * _DAY)}&until="
                                              f"{rfc3339(time.time_ns() - 3 * _DAY)}"),
                         ("status handled (post-filter)", "status=handled")]:
            med, worst, got = _time(f"{base}/api/events?limit=50&{q}")
            rows.append((f"first page, {label}", med, worst, len(got["events"])))
        med, worst, got = _time(f"{base}/api/events?limit=50&before={first['next']}")
        rows.append(("next page", med, worst, len(got["events"])))
        med, worst, got = _time(f"{base}/api/events/{mid['id']}")
        rows.append(("an event's detail", med, worst, 1))
        med, worst, got = _time(f"{base}/api/counts?since=24h", runs=3)
        rows.append((f"charts, last 24 h ({got['scanned']:,} events counted)", med, worst, got["scanned"]))
        med, worst, got = _time(f"{base}/api/counts", runs=3)
        rows.append((f"charts, no range ({got['scanned']:,} counted, truncated={got['truncated']})", med, worst,
                     got["scanned"]))
        med, worst, got = _time(f"{base}/api/export?format=csv&limit=1000", runs=3)
        rows.append(("export CSV, 1,000 events", med, worst, got.count(b"\n") - 1 if isinstance(got, bytes) else 0))
        print(f"{'question':<62} {'median ms':>10} {'worst ms':>9} {'rows':>8}")
        for label, med, worst, n in rows:
            print(f"{label:<62} {med:>10.1f} {worst:>9.1f} {n:>8}")
        ok = rows[0][1] < 300
        print(f"target: first page under 300 ms: {'met' if ok else 'NOT met'} ({rows[0][1]:.1f} ms median)")
    finally:
        h.stop()


def _flt():
    from collector.console.query import parse_query

    return parse_query({}).flt


if __name__ == "__main__":
    main()

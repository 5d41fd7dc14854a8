"""Transport bench: collector ingest rate on one core, and end-to-end latency at a fixed rate.

    .venv/bin/python -m bench.transport [--events 200000] [--runs 5] [--rate 10000] [--seconds 10] [--ingest-only]

The collector runs as `nodewarden collector` in its own process pinned to one CPU; the load
(pre-encoded batches for the ingest rate; a real Exporter fed records at a fixed rate for the
latency) runs pinned to another. Latency is an event's timestamp to the commit of its row
(the `received` column the collector stamps). Prints measured values beside the targets.
The ingest rate is the median of `--runs` fresh collectors (the spread beside it: a shared
machine is noisy), with the collector's CPU time per event (user + system, all its threads).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _records(n: int, t0: int) -> list[dict]:
    """A realistic mix (exec, file open, connect, exit; a third in containers), from record.py."""
    from agent.events import ContainerInfo, Enriched, ExecEvent, ExitEvent, FileEvent, NetEvent, Op, ProcInfo
    from agent.outputs.record import from_enriched

    conts = [None, ContainerInfo(id="a1" * 32, image="nginx:1.25", pod_name="web-0", pod_namespace="shop"), None]
    out = []
    for i in range(n):
        c = dict(ts_ns=t0 + i, pid=1000 + i % 5000, tid=1000 + i % 5000, ppid=1, uid=0, gid=0, cgroup_id=7,
                 mntns=4026531840, comm="curl", truncated=False)
        k = i % 4
        if k == 0:
            ev = ExecEvent(op=Op.EXEC, filename="/usr/bin/curl", argv=("curl", "-s", f"http://svc/{i}"), **c)
        elif k == 1:
            ev = FileEvent(op=Op.FILE_OPEN, path=f"/etc/conf/{i}.yaml", path2="", ret=3, flags=0, mode=0o644,
                           dirfd=-100, fd=3, owner_uid=0, owner_gid=0, **c)
        elif k == 2:
            ev = NetEvent(op=Op.NET_CONNECT, ret=0, fd=4, family="ipv4", transport="tcp", address="10.0.0.7",
                          port=5432, backlog=0, **c)
        else:
            ev = ExitEvent(op=Op.EXIT, exit_code=0, signal=0, **c)
        proc = ProcInfo(pid=c["pid"], ppid=1, exe="/usr/bin/curl", argv=("curl", "-s", f"http://svc/{i}"),
                        uid=0, start_ns=t0)
        out.append(from_enriched(Enriched(ev, proc, None, conts[i % 3])))
    return out


def _pin(cpu: int):
    if hasattr(os, "sched_setaffinity") and cpu < os.cpu_count():
        os.sched_setaffinity(0, {cpu})


def _start_collector(tmp: Path, cpu: int) -> tuple[subprocess.Popen, str]:
    sock = f"unix:{tmp}/bench.sock"
    p = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "collector", "--listen", sock, "--db", str(tmp / "bench.db"),
         "--log-level", "warning", "--retention-age", "0", "--retention-size", "0"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: _pin(cpu))
    if "listening" not in p.stdout.readline():
        raise RuntimeError("collector did not start")
    return p, sock


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@functools.cache
def _ingest_requests(n: int, batch: int) -> list[bytes]:
    """Serialized IngestRequests of `batch` events each, as an agent's exporter frames them."""
    from nwwire.codec import to_event
    from nwwire.genproto import load
    from nwwire.protowire import field_bytes, field_varint, number

    cpb = load("nodewarden.v1.collector_pb2")
    events, batch_id, req_batch = (number(cpb.Batch, "events"), number(cpb.Batch, "batch_id"),
                                   number(cpb.IngestRequest, "batch"))

    recs = _records(n, time.time_ns())
    reqs = []
    for b in range(0, n, batch):
        parts = []
        for seq, rec in enumerate(recs[b:b + batch], start=b + 1):
            ev = to_event(rec)
            ev.seq, ev.agent_id, ev.boot_id, ev.node = seq, "bench", "boot", "node-1"
            parts.append(field_bytes(events, ev.SerializeToString()))
        reqs.append(field_bytes(req_batch, field_varint(batch_id, b // batch + 1) + b"".join(parts)))
    return reqs


def bench_ingest(n: int, batch: int = 1000) -> tuple[float, float]:
    """(events/s the collector stores, its CPU us per event), from pre-encoded batches (the
    client costs ~nothing)."""
    import grpc

    from nwwire.genproto import load

    cpb = load("nodewarden.v1.collector_pb2")
    reqs = _ingest_requests(n, batch)
    with tempfile.TemporaryDirectory() as tmp:
        proc, sock = _start_collector(Path(tmp), 0)
        try:
            ch = grpc.insecure_channel(sock)
            call = ch.stream_stream("/nodewarden.v1.Collector/Ingest",
                                    response_deserializer=cpb.IngestResponse.FromString)
            # Warm-up batch, then the timed run.
            list(call(iter(reqs[:1])))
            cpu0 = _cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            stored = sum(r.ack.stored for r in call(iter(reqs[1:])))
            dt = time.perf_counter() - t0
            cpu = _cpu_seconds(proc.pid) - cpu0
            ch.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return stored / dt, cpu / stored * 1e6


def bench_latency(rate: int, seconds: float) -> tuple[float, float, float, int, int]:
    """p50, p99, max (s) from event timestamp to stored row, at `rate` events/s through an Exporter."""
    from agent.outputs.grpc_exporter import Exporter, ExporterConfig
    from agent.outputs.record import rfc3339

    n = int(rate * seconds)
    recs = _records(min(n, 50000), 0)
    with tempfile.TemporaryDirectory() as tmp:
        proc, sock = _start_collector(Path(tmp), 0)
        try:
            exp = Exporter(ExporterConfig(address=sock, spool_dir=f"{tmp}/spool", node="node-1"))
            exp.start()
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            start = time.monotonic()
            sent = 0
            while sent < n:
                now_ns = time.time_ns()
                ts = rfc3339(now_ns)
                for _ in range(min(per_tick, n - sent)):
                    rec = dict(recs[sent % len(recs)])
                    rec["timestamp"] = ts
                    exp.submit(rec)
                    sent += 1
                delay = start + (sent / rate) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            exp.stop(30)
            drops = exp.metrics()["dropped"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        db = sqlite3.connect(f"{tmp}/bench.db")
        lat = sorted(r[0] / 1e9 for r in db.execute("SELECT received - ts FROM events"))
        db.close()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return pick(0.50), pick(0.99), lat[-1], len(lat), drops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.transport", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events for the ingest rate")
    ap.add_argument("--runs", type=int, default=5, help="ingest runs; the median is reported")
    ap.add_argument("--ingest-only", action="store_true", help="skip the latency run")
    ap.add_argument("--rate", type=int, default=10_000, help="events/s for the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    args = ap.parse_args(argv)
    _pin(1)
    runs = sorted(bench_ingest(args.events) for _ in range(max(1, args.runs)))
    rate, cpu_us = runs[len(runs) // 2]
    rows = [
        ("collector ingest, 1 core, 1000-event batches", f"{rate:,.0f} events/s", ">= 100,000 events/s",
         rate >= 100_000),
        (f"  median of {len(runs)} runs; min .. max", f"{runs[0][0]:,.0f} .. {runs[-1][0]:,.0f}", "", None),
        ("  collector CPU per event (median run)", f"{cpu_us:,.2f} us", "", None),
    ]
    if not args.ingest_only:
        rows += _latency_rows(args)
    w = max(len(r[0]) for r in rows)
    print(f"{'transport':<{w}}  {'measured':>20}  {'target':>22}")
    for name, got, target, ok in rows:
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"{name:<{w}}  {got:>20}  {target:>22}{mark}")
    return 0


def _latency_rows(args) -> list[tuple]:
    p50, p99, worst, stored, drops = bench_latency(args.rate, args.seconds)
    return [
        (f"end-to-end latency p50 at {args.rate:,}/s", f"{p50 * 1000:,.1f} ms", "", None),
        (f"end-to-end latency p99 at {args.rate:,}/s", f"{p99 * 1000:,.1f} ms", "<= 1,000 ms", p99 <= 1.0),
        (f"end-to-end latency max at {args.rate:,}/s", f"{worst * 1000:,.1f} ms", "", None),
        ("events stored / dropped in the latency run", f"{stored:,} / {drops:,}",
         f"{int(args.rate * args.seconds):,} / 0", drops == 0 and stored == int(args.rate * args.seconds)),
    ]


if __name__ == "__main__":
    sys.exit(main())

"""Collector scale-out bench: ingest events/s on SQLite, on PostgreSQL with one collector replica,
and on PostgreSQL with two, in one run, over real gRPC from several agent streams.

    .venv/bin/python -m bench.collector_scale [--events 200000] [--agents 8] [--batch 1000] [--fast]

Each collector is `nodewarden collector` in its own process (--db for SQLite, --store for PostgreSQL);
PostgreSQL is a private server (tests/harness/pg.py) on loopback, with its default durability
(fsync and synchronous_commit on: each commit is on disk before the agent's ack) unless --fast. The
agents are threads of this process, each its own (agent_id, boot_id) stream on its own channel,
sending pre-encoded batches (their cost is a few us per event) and counting acks; with two replicas
half the agents go to each, as a Service would spread them. Prints events/s (stored and acked, over
the wall time of the whole load) and the collectors' CPU us per event (all their processes).
Numbers depend on the cores there are: collectors, PostgreSQL and the agents share them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requests(n_per_agent: int, agents: int, batch: int) -> list[list[bytes]]:
    """Per agent: serialized IngestRequests of `batch` events, as an agent's exporter frames them."""
    from bench.transport import _records
    from nwwire.codec import to_event
    from nwwire.genproto import load
    from nwwire.protowire import field_bytes, field_varint, number

    cpb = load("nodewarden.v1.collector_pb2")
    events, batch_id, req_batch = (number(cpb.Batch, "events"), number(cpb.Batch, "batch_id"),
                                   number(cpb.IngestRequest, "batch"))
    base = [to_event(r) for r in _records(n_per_agent, time.time_ns())]
    out = []
    for a in range(agents):
        reqs = []
        for b in range(0, n_per_agent, batch):
            parts = []
            for seq, ev in enumerate(base[b:b + batch], start=b + 1):
                ev.seq, ev.agent_id, ev.boot_id, ev.node = seq, f"bench-{a}", "boot", f"node-{a}"
                parts.append(field_bytes(events, ev.SerializeToString()))
            reqs.append(field_bytes(req_batch, field_varint(batch_id, b // batch + 1) + b"".join(parts)))
        out.append(reqs)
    return out


def _start(tmp: Path, name: str, store_args: list[str]) -> tuple[subprocess.Popen, str]:
    d = tmp / name
    d.mkdir()
    sock = f"unix:{d}/collector.sock"
    p = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "collector", "--listen", sock, "--db", str(d / "events.db"),
         "--log-level", "warning", "--retention-age", "0", "--retention-size", "0", *store_args],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    if "listening" not in p.stdout.readline():
        p.kill()
        raise RuntimeError(f"collector {name} did not start")
    return p, sock


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _load(addresses: list[str], reqs: list[list[bytes]]) -> tuple[int, float]:
    """Every agent's batches on its own Ingest stream, all at once; (events acked as stored, seconds)."""
    import grpc

    from nwwire.genproto import load

    cpb = load("nodewarden.v1.collector_pb2")
    stored = [0] * len(reqs)
    errors: list = []
    chans = [grpc.insecure_channel(addresses[i % len(addresses)]) for i in range(len(reqs))]
    calls = [ch.stream_stream("/nodewarden.v1.Collector/Ingest", response_deserializer=cpb.IngestResponse.FromString)
             for ch in chans]
    for call, r in zip(calls, reqs, strict=True):
        list(call(iter(r[:1])))  # warm-up: connection, stream row, first partition pages

    def agent(i: int) -> None:
        try:
            stored[i] = sum(resp.ack.stored for resp in calls[i](iter(reqs[i][1:])))
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(len(reqs))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    for ch in chans:
        ch.close()
    if errors:
        raise RuntimeError(f"ingest failed: {errors[0]}")
    return sum(stored), dt


def _run(name: str, replicas: int, store_args, reqs, tmp: Path) -> tuple:
    procs = []
    try:
        for r in range(replicas):
            procs.append(_start(tmp, f"{name}-{replicas}-{r}", store_args()))
        cpu0 = _cpu_seconds([p.pid for p, _ in procs])
        stored, dt = _load([a for _, a in procs], reqs)
        cpu = _cpu_seconds([p.pid for p, _ in procs]) - cpu0
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            p.wait(30)
    return name, replicas, stored, stored / dt, cpu / max(stored, 1) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.collector_scale")
    ap.add_argument("--events", type=int, default=200_000, help="events in all, per configuration")
    ap.add_argument("--agents", type=int, default=8, help="agent streams")
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--fast", action="store_true", help="PostgreSQL without fsync / synchronous_commit")
    args = ap.parse_args(argv)
    from tests.harness.pg import PrivatePostgres, missing_requirements

    reqs = _requests(args.events // args.agents, args.agents, args.batch)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nw-bench-scale-") as tmp:
        tmp = Path(tmp)
        rows.append(_run("sqlite", 1, lambda: [], reqs, tmp))
        why = missing_requirements()
        if why:
            print(f"PostgreSQL runs skipped: {why}")
        else:
            pg = PrivatePostgres(durable=not args.fast).start()
            try:
                for replicas in (1, 2):
                    url = pg.create_database(f"bench_{replicas}")
                    rows.append(_run("postgresql", replicas, lambda url=url: ["--store", url], reqs, tmp))
            finally:
                pg.destroy()
    print(f"collector ingest over gRPC: {args.agents} agent streams, batches of {args.batch}, "
          f"{os.cpu_count()} CPUs shared by collectors, store and agents"
          + ("; PostgreSQL without fsync" if args.fast else "; PostgreSQL fsync + synchronous_commit on"))
    print(f"{'store':<12}{'replicas':>9}{'events':>10}{'events/s':>12}{'collector CPU us/event':>25}")
    for name, replicas, stored, rate, cpu in rows:
        print(f"{name:<12}{replicas:>9}{stored:>10}{rate:>12,.0f}{cpu:>25.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

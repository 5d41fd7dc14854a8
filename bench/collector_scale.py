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
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a backend that ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _server_pids(pg) -> list[int]:
    """The postmaster and its children (backends, WAL writer, checkpointer ...)."""
    top = pg.pid() if pg is not None else None
    if top is None:
        return []
    out = [top]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == top:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


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


def _run(name: str, replicas: int, store_args, reqs, tmp: Path, pg=None) -> tuple:
    """(events stored, events/s, collectors' CPU us/event, PostgreSQL's CPU us/event)"""
    procs = []
    try:
        for r in range(replicas):
            procs.append(_start(tmp, f"{name}-{replicas}-{r}-{time.monotonic_ns()}", store_args()))
        mine = [p.pid for p, _ in procs]
        server = _server_pids(pg)  # the collectors' backends are up by now
        cpu0, srv0 = _cpu_seconds(mine), _cpu_seconds(server)
        stored, dt = _load([a for _, a in procs], reqs)
        cpu, srv = _cpu_seconds(mine) - cpu0, _cpu_seconds(server) - srv0
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            p.wait(30)
    n = max(stored, 1)
    return stored, stored / dt, cpu / n * 1e6, srv / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.collector_scale")
    ap.add_argument("--events", type=int, default=200_000, help="events in all, per configuration")
    ap.add_argument("--agents", type=int, default=8, help="agent streams")
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--runs", type=int, default=3, help="runs of each configuration, interleaved; medians")
    ap.add_argument("--fast", action="store_true", help="PostgreSQL without fsync (synchronous_commit stays on)")
    args = ap.parse_args(argv)
    from tests.harness.pg import PrivatePostgres, missing_requirements

    reqs = _requests(args.events // args.agents, args.agents, args.batch)
    results: dict[tuple[str, int], list] = {}
    why = missing_requirements()
    with tempfile.TemporaryDirectory(prefix="nw-bench-scale-") as tmp:
        tmp = Path(tmp)
        pg = None if why else PrivatePostgres(durable=not args.fast).start()
        try:
            for run in range(args.runs):
                results.setdefault(("sqlite", 1), []).append(_run("sqlite", 1, lambda: [], reqs, tmp))
                if pg is None:
                    continue
                for replicas in (1, 2):
                    url = pg.create_database(f"bench_{replicas}_{run}")
                    results.setdefault(("postgresql", replicas), []).append(
                        _run("postgresql", replicas, lambda url=url: ["--store", url], reqs, tmp, pg))
                    pg.drop_database(f"bench_{replicas}_{run}")
        finally:
            if pg is not None:
                pg.destroy()
    if why:
        print(f"PostgreSQL runs skipped: {why}")
    print(f"collector ingest over gRPC: {args.agents} agent streams, batches of {args.batch}, median of {args.runs} "
          f"runs, {os.cpu_count()} CPUs shared by collectors, PostgreSQL and agents; PostgreSQL "
          + ("without fsync" if args.fast else "with fsync and synchronous_commit on"))
    print(f"{'store':<12}{'replicas':>9}{'events':>10}{'events/s':>12}{'(min-max)':>20}"
          f"{'collector us/event':>20}{'PostgreSQL us/event':>21}")
    for (name, replicas), rs in results.items():
        rates = sorted(r[1] for r in rs)
        med = sorted(rs, key=lambda r: r[1])[len(rs) // 2]
        srv = f"{med[3]:.1f}" if name != "sqlite" else "-"
        print(f"{name:<12}{replicas:>9}{med[0]:>10}{med[1]:>12,.0f}{f'{rates[0]:,.0f}-{rates[-1]:,.0f}':>20}"
              f"{med[2]:>20.1f}{srv:>21}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

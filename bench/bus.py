"""Bus bench: collector ingest with and without the NATS JetStream fan-out, on a three-node cluster.

    .venv/bin/python -m bench.bus [--events 200000] [--agents 8] [--batch 1000] [--runs 3]

One SQLite collector (`nodewarden collector` in its own process) per configuration: no bus,
`--nats` (confirm: an agent's batch is acked once stored and acked by JetStream) and `--nats --nats-async`
(published after the commit; agents' acks do not wait). The cluster is Debian's nats-server, three
nodes on loopback (tests/harness/nats.py), a fresh R3 stream per run. The load is bench.collector_scale's:
pre-encoded batches on one Ingest stream per agent. Prints the ingest rate (events acked over the wall
time of the load), the rate until the last event is on the stream (the stream's message count), and
the CPU us per event of the collector and of the three NATS servers. All share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.collector_scale import _cpu_seconds, _load, _requests, _start


def _stream_messages(urls: list[str], stream: str) -> int:
    import nats
    from nats.js.errors import NotFoundError

    async def run():
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            return (await nc.jetstream(timeout=5).stream_info(stream)).state.messages
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    return asyncio.run(run())


def _delete_stream(urls: list[str], stream: str) -> None:
    import nats

    async def run():
        nc = await nats.connect(urls, connect_timeout=2)
        try:
            await nc.jetstream(timeout=5).delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(run())


def _run(name: str, args_: list[str], reqs, tmp: Path, cluster, stream: str) -> tuple:
    """(stored, ingest events/s, on-stream events/s, collector us/event, NATS us/event)"""
    p, addr = _start(tmp, f"{name}-{time.monotonic_ns()}", args_)
    try:
        nats_pids = [q.pid for q in cluster.procs if q is not None]
        cpu0, srv0 = _cpu_seconds([p.pid]), _cpu_seconds(nats_pids)
        t0 = time.perf_counter()
        stored, dt = _load([addr], reqs)
        on_stream = None
        if args_:
            want = _expected(reqs)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and _stream_messages(cluster.urls, stream) < want:
                time.sleep(0.05)
            on_stream = want / (time.perf_counter() - t0)
        cpu, srv = _cpu_seconds([p.pid]) - cpu0, _cpu_seconds(nats_pids) - srv0
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        if args_:
            _delete_stream(cluster.urls, stream)  # the next run's stream takes the same subjects
    n = max(stored, 1)
    return stored, stored / dt, on_stream, cpu / n * 1e6, srv / n * 1e6


def _expected(reqs) -> int:
    """Every event the agents send, the warm-up batches included (they are on the stream too)."""
    from nwwire.genproto import load

    cpb = load("nodewarden.v1.collector_pb2")
    return sum(len(cpb.IngestRequest.FromString(r).batch.events) for agent in reqs for r in agent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.bus")
    ap.add_argument("--events", type=int, default=200_000, help="events in all, per configuration")
    ap.add_argument("--agents", type=int, default=8, help="agent streams")
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--runs", type=int, default=3, help="runs of each configuration, interleaved; medians")
    args = ap.parse_args(argv)
    from tests.harness.nats import NatsCluster, missing_requirements

    why = missing_requirements()
    if why:
        print(f"bench.bus: {why}")
        return 1
    reqs = _requests(args.events // args.agents, args.agents, args.batch)
    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="nw-bench-bus-") as tmp:
        tmp = Path(tmp)
        cluster = NatsCluster(tmp / "nats")
        cluster.start()
        try:
            for run in range(args.runs):
                for name, extra in (("no bus", None), ("nats confirm", []), ("nats async", ["--nats-async"])):
                    stream = f"BENCH_{run}_{name.replace(' ', '_')}"
                    flags = [] if extra is None else ["--nats", cluster.url, "--nats-stream", stream, *extra]
                    results.setdefault(name, []).append(_run(name, flags, reqs, tmp, cluster, stream))
        finally:
            cluster.stop()
    print(f"collector ingest (SQLite) with the NATS bus: {args.agents} agent streams, batches of {args.batch}, "
          f"median of {args.runs} runs; a 3-node JetStream cluster (R3 stream) on loopback; {os.cpu_count()} CPUs "
          "shared by the collector, NATS and the agents")
    print(f"{'configuration':<15}{'events':>10}{'ingest ev/s':>14}{'on stream ev/s':>16}"
          f"{'collector us/ev':>17}{'NATS us/ev':>12}")
    for name, rs in results.items():
        med = sorted(rs, key=lambda r: r[1])[len(rs) // 2]
        on = f"{med[2]:,.0f}" if med[2] else "-"
        print(f"{name:<15}{med[0]:>10}{med[1]:>14,.0f}{on:>16}{med[3]:>17.1f}{med[4]:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

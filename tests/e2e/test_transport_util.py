"""Shared pieces of the transport tests: realistic records, a collector, an exporter, readers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from agent.events import ContainerInfo, Enriched, ExecEvent, ExitEvent, FileEvent, NetEvent, Op, ProcInfo
from agent.outputs.grpc_exporter import Exporter, ExporterConfig
from agent.outputs.record import from_enriched
from nwwire.codec import to_record
from nwwire.genproto import load

cpb = load("nodewarden.v1.collector_pb2")
gpb = load("nodewarden.v1.collector_pb2_grpc")
ROOT = Path(__file__).resolve().parents[2]

CONTAINERS = [
    None,
    ContainerInfo(id="a1" * 32, name="web", image="nginx:1.25", pod_name="web-0", pod_namespace="shop"),
    ContainerInfo(id="b2" * 32, name="db", image="postgres:16", pod_name="db-0", pod_namespace="data"),
]


def make_record(i: int, ts_ns: int | None = None) -> dict:
    """Event i of a realistic mix: exec, file open, connect, exit; in or out of containers."""
    ts = ts_ns if ts_ns is not None else time.time_ns()
    pid = 1000 + i
    common = dict(ts_ns=ts, pid=pid, tid=pid, ppid=1, uid=0, gid=0, cgroup_id=7, mntns=4026531840,
                  comm="curl", truncated=False)
    kind = i % 4
    if kind == 0:
        ev = ExecEvent(op=Op.EXEC, filename="/usr/bin/curl", argv=("curl", "-s", f"http://svc/{i}"), **common)
    elif kind == 1:
        ev = FileEvent(op=Op.FILE_OPEN, path=f"/etc/conf/{i}.yaml", path2="", ret=3, flags=0, mode=0o644,
                       dirfd=-100, fd=3, owner_uid=0, owner_gid=0, **common)
    elif kind == 2:
        ev = NetEvent(op=Op.NET_CONNECT, ret=0, fd=4, family="ipv4", transport="tcp", address="10.0.0.7",
                      port=5432, backlog=0, **common)
    else:
        ev = ExitEvent(op=Op.EXIT, exit_code=0, signal=0, **common)
    proc = ProcInfo(pid=pid, ppid=1, exe="/usr/bin/curl", argv=("curl", "-s", f"http://svc/{i}"), uid=0,
                    start_ns=ts - 1000)
    parent = ProcInfo(pid=1, ppid=0, exe="/sbin/init", argv=("/sbin/init",), uid=0, start_ns=0)
    rec = from_enriched(Enriched(ev, proc, parent, CONTAINERS[i % 3]))
    if i % 5 == 0:
        rec["event.severity"] = "high"
    return rec


def exporter(address: str, spool: Path, **kw) -> Exporter:
    cfg = ExporterConfig(address=address, spool_dir=str(spool), node=kw.pop("node", "node-a"),
                         batch_interval=kw.pop("batch_interval", 0.02), backoff_initial=0.05,
                         backoff_max=kw.pop("backoff_max", 0.5), **kw)
    exp = Exporter(cfg)
    exp.start()
    return exp


def stub(address: str, **kw):
    return gpb.CollectorStub(grpc.insecure_channel(address, **kw))


def query_all(address: str, flt=None, metadata=()) -> list[dict]:
    """Every stored event matching flt, through Query's paging."""
    s = stub(address)
    out, token = [], ""
    while True:
        nxt = ""
        for resp in s.Query(cpb.QueryRequest(filter=flt or cpb.Filter(), limit=10000, page_token=token),
                            metadata=metadata):
            out.extend(to_record(ev) for ev in resp.events)
            nxt = resp.next_page_token or nxt
        if not nxt:
            return out
        token = nxt


def wait_for(pred, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {pred}")


def start_collector_process(listen: str, db: Path, *extra: str) -> subprocess.Popen:
    """`nodewarden collector` in its own process, so a test can SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "agent.cli", "collector", "--listen", listen, "--db", str(db),
                          "--log-level", "warning", *extra],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(db.parent / "collector.log", "a"),
                         text=True)
    line = p.stdout.readline()  # "collector: listening on ..." once it serves
    if "listening" not in line:
        p.kill()
        raise AssertionError(f"collector did not start: {line} {(db.parent / 'collector.log').read_text()}")
    return p

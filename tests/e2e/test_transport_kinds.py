"""Every record kind over real gRPC: exporter -> collector -> Query / `nodewarden events`, each kind as
its own protobuf message and filterable; and one agent's bad batch never costs other agents theirs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import orjson
import pytest
from test_transport_util import ROOT, cpb, exporter, query_all, wait_for

from agent.events import (
    AgentReady,
    AlertEvent,
    ContainerInfo,
    Decided,
    DropReport,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    Finding,
    Op,
    PolicyEvent,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.record import flatten
from agent.vocab import Severity
from collector.server import CollectorConfig, serve
from nwwire.codec import to_event
from nwwire.protowire import field_bytes, field_varint, number

pytestmark = pytest.mark.e2e

_IDS = ("host.name", "nodewarden.agent_id", "nodewarden.boot_id", "seq")
_POD = ContainerInfo(id="ab" * 32, name="web", image="evil:1", pod_name="web-0", pod_namespace="shop",
                     namespace="k8s.io")


def _typed(ts: int) -> list:
    shell = ExecEvent(op=Op.EXEC, filename="/bin/sh", argv=("sh", "-c", "id"), ts_ns=ts, pid=77, tid=77, ppid=1,
                      uid=0, gid=0, cgroup_id=9, mntns=1, comm="sh", truncated=False)
    subject = Enriched(shell, ProcInfo(77, 1, "/bin/sh", ("sh", "-c", "id"), 0, ts), None, _POD)
    finding = Decided(Finding("malware", Severity.CRITICAL, "eicar", path="/eicar.com"), "block",
                      "categories.malware.block >= high")
    return [
        AgentReady(ts, "node-a", 4242, ("process", "file", "net")),
        PolicyEvent(ts + 1, "/etc/nodewarden/policy.yaml", "0123abcd"),
        VerdictEvent(ts + 2, Verdict("block", "malware: eicar in /eicar.com", [finding], image="evil:1",
                                     digest="sha256:ee", duration_ms=3.5, policy="0123abcd"), _POD),
        EnforcementEvent(ts + 3, "nri.create_container", "deny", "image verdict block", verdict="block",
                         container=_POD, outcome="denied"),
        EnforcementEvent(ts + 4, "kernel.exec", "kill", "deny_exec /bin/sh", outcome="killed", subject=subject),
        AlertEvent(ts + 5, "NW-100", "shell in a container", "a shell ran", Severity.HIGH, ("Execution",),
                   ("T1059.004",), subject=subject, output="sh -c id in web-0"),
        AlertEvent(ts + 6, "NW-200", "other", "d", Severity.LOW),
        DropReport(ts + 7, {"kernel.file": 2}, {"kernel.file": 9}),
    ]


def test_every_kind_is_stored_typed_and_filterable(tmp_path):
    handle = serve(CollectorConfig(listen=[f"unix:{tmp_path}/c.sock"], db=str(tmp_path / "events.db")))
    try:
        recs = [flatten(t) for t in _typed(time.time_ns())]
        exp = exporter(handle.address, tmp_path / "spool")
        for rec in recs:
            exp.submit(rec)
        assert exp.stop(10)
        got = query_all(handle.address)
        assert len(got) == len(recs)
        for back, rec in zip(got, recs, strict=True):
            assert {k: v for k, v in back.items() if k not in _IDS or k in rec} == rec
        # Each kind is its own message in the stored bytes, with nothing left over in extra_json
        # (but agent.drops' "warning", record.py's word for medium).
        stored = sqlite3.connect(tmp_path / "events.db").execute("SELECT body FROM events ORDER BY id").fetchall()
        events = [cpb.QueryResponse.FromString(field_bytes(1, b)).events[0] for (b,) in stored]
        assert [e.WhichOneof("kind") for e in events] == ["ready", "policy", "verdict", "enforcement",
                                                          "enforcement", "alert", "alert", "drops"]
        assert [e.extra_json for e in events[:-1]] == [b""] * 7
        assert events[5].alert.exec.args == ["sh", "-c", "id"] and events[5].process.executable == "/bin/sh"

        def names(**kw) -> list[str]:
            return [r.get("rule.id") or r["event.name"] for r in query_all(handle.address, cpb.Filter(**kw))]

        assert names(kinds=["alert"]) == ["NW-100", "NW-200"]
        assert names(rules=["NW-100"]) == ["NW-100"]
        assert names(kinds=["alert"], min_severity=5) == ["NW-100"]
        assert names(kinds=["verdict"]) == ["image.verdict"]
        assert names(kinds=["enforcement"], text="/bin/sh") == ["enforcement.block"]
        assert names(verdicts=["block"]) == ["image.verdict", "enforcement.block"]
        assert names(kinds=["agent"]) == ["agent.ready", "agent.policy", "agent.drops"]
        assert names(kinds=["ready", "policy"]) == ["agent.ready", "agent.policy"]
        assert names(namespace="shop", kinds=["alert", "enforcement"]) == ["enforcement.block",
                                                                          "enforcement.block", "NW-100"]
        _events_cli(handle.address)
    finally:
        handle.stop(0.5)


def _events_cli(address: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "agent.cli", "events", "--collector", address]
    out = subprocess.run(base + ["--json", "--kind", "alert", "--rule", "NW-100"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    recs = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(r["rule.id"], r["threat.technique.id"], r["process.args"]) for r in recs] == [
        ("NW-100", ["T1059.004"], ["sh", "-c", "id"])]
    out = subprocess.run(base + ["--verdict", "block", "--severity", "high"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "BLOCK evil:1: malware: eicar in /eicar.com (1 finding)" in lines[0]
    assert "deny at nri.create_container verdict=block: image verdict block -> denied" in lines[1]
    assert "pod=shop/web-0" in lines[1]
    out = subprocess.run(base + ["--verdict", "maybe"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


def _batch(agent: str, seqs, batch_id: int = 1) -> bytes:
    """An IngestRequest framed as the exporter frames it (field numbers from the descriptors)."""
    events = []
    for seq in seqs:
        ev = to_event(flatten(AlertEvent(time.time_ns(), "NW-1", "r", "d", Severity.LOW)))
        ev.seq, ev.agent_id, ev.boot_id, ev.node = seq, agent, "boot", agent
        events.append(field_bytes(number(cpb.Batch, "events"), ev.SerializeToString()))
    batch = field_varint(number(cpb.Batch, "batch_id"), batch_id) + b"".join(events)
    return field_bytes(number(cpb.IngestRequest, "batch"), batch)


def test_seq_beyond_int64_is_refused_and_other_agents_in_the_same_commit_are_stored(tmp_path):
    """Two real gRPC clients whose batches meet in one group commit: the one with seq >= 2^63 gets
    INVALID_ARGUMENT, the honest one its ack, and its events are stored."""
    db = tmp_path / "events.db"
    handle = serve(CollectorConfig(listen=[f"unix:{tmp_path}/c.sock"], db=str(db)))
    lock = sqlite3.connect(db, isolation_level=None)
    results: dict = {}

    def send(name: str, request: bytes) -> None:
        ch = grpc.insecure_channel(handle.address)
        try:
            results[name] = list(ch.stream_stream("/nodewarden.v1.Collector/Ingest",
                                                  response_deserializer=cpb.IngestResponse.FromString)(
                iter([request]), timeout=30))
        except grpc.RpcError as e:
            results[name] = e
        finally:
            ch.close()

    try:
        lock.execute("BEGIN IMMEDIATE")  # the writer waits on its first group until we let go
        first = threading.Thread(target=send, args=("first", _batch("first", [1])))
        first.start()
        q = handle.store._q  # unfinished_tasks counts every put (the writer never calls task_done)
        wait_for(lambda: q.unfinished_tasks == 1 and q.qsize() == 0, timeout=10)  # taken: the writer waits
        clients = [threading.Thread(target=send, args=("evil", _batch("evil", [1, 2**63 + 1]))),
                   threading.Thread(target=send, args=("honest", _batch("honest", [1, 2, 3])))]
        for t in clients:
            t.start()
        wait_for(lambda: q.qsize() == 2, timeout=10)  # both queued: they commit as one group
        lock.execute("ROLLBACK")
        for t in [first, *clients]:
            t.join(30)
        evil = results["evil"]
        assert isinstance(evil, grpc.RpcError) and evil.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "below 2^63" in evil.details()
        assert [r.ack.stored for r in results["honest"]] == [3] and [r.ack.last_seq for r in results["honest"]] == [3]
        stored = query_all(handle.address)
        assert sorted((r["nodewarden.agent_id"], r["seq"]) for r in stored) == [
            ("first", 1), ("honest", 1), ("honest", 2), ("honest", 3)]
        assert handle.metrics()["write_errors"] == 0
        assert handle.store.stats["commits"] == 2  # the first group, then evil + honest together
    finally:
        lock.close()
        handle.stop(0.5)

"""record <-> protobuf Event: lossless for every kind, and never raising on bad input."""

from __future__ import annotations

import time

import pytest

from agent.events import (
    AgentReady,
    ContainerInfo,
    DropReport,
    Enriched,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    Op,
    PolicyEvent,
    ProcInfo,
)
from agent.outputs.pbcodec import kind_of, parse_timestamp, to_event, to_record
from agent.outputs.record import flatten, from_enriched, rfc3339

_IDS = ("host.name", "agent.id", "agent.boot_id", "seq")
_C = dict(ts_ns=1_795_000_000_123_456_789, pid=42, tid=43, ppid=0, uid=0, gid=0, cgroup_id=2**63 + 5,
          mntns=4026531840, comm="sh", truncated=False)


def _file(op, **kw):
    base = dict(path="/etc/passwd", path2="", ret=0, flags=0, mode=0, dirfd=-100, fd=-1, owner_uid=0, owner_gid=0)
    base.update(kw)
    return FileEvent(op=op, **base, **_C)


def _net(op, **kw):
    base = dict(ret=0, fd=3, family="ipv6", transport="tcp", address="::1", port=0, backlog=0)
    base.update(kw)
    return NetEvent(op=op, **base, **_C)


EVENTS = [
    ExecEvent(op=Op.EXEC, filename="/bin/sh", argv=(), **_C),
    ExecEvent(op=Op.EXEC, filename="/bin/sh", argv=("sh", "-c", "échō ü"), **{**_C, "truncated": True}),
    ForkEvent(op=Op.FORK, child_pid=0, **_C),
    ExitEvent(op=Op.EXIT, exit_code=0, signal=9, **_C),
    _file(Op.FILE_OPEN, flags=0o2000101, mode=0o600, fd=0),
    _file(Op.FILE_RENAME, path2="/etc/shadow"),
    _file(Op.FILE_CHMOD, mode=0),
    _file(Op.FILE_CHOWN, owner_uid=0, owner_gid=65534, ret=-1),
    _file(Op.FILE_UNLINK),
    _net(Op.NET_CONNECT, port=443),
    _net(Op.NET_ACCEPT, ret=-11),
    _net(Op.NET_BIND, family="unix", transport="unix", address="/run/x.sock"),
    _net(Op.NET_LISTEN, backlog=0),
]


@pytest.mark.parametrize("ev", EVENTS, ids=lambda e: e.name)
@pytest.mark.parametrize("container", [None, ContainerInfo(id="c" * 64), ContainerInfo(
    id="d" * 64, name="x", image="i:1", image_digest="sha256:00", pod_name="p", pod_namespace="n")])
def test_enriched_round_trip(ev, container):
    proc = ProcInfo(pid=42, ppid=0, exe="/bin/sh", argv=("sh",), uid=0, start_ns=1)
    rec = from_enriched(Enriched(ev, proc, proc, container))
    back = to_record(to_event(rec))
    assert {k: v for k, v in back.items() if k not in _IDS} == rec
    assert not to_event(rec).extra_json  # every key record.py makes has a field


@pytest.mark.parametrize("agent_ev", [
    AgentReady(5, "node-a", 7, ("process", "file")),
    DropReport(5, {"kernel.file": 3}, {"kernel.file": 7, "queue": 0}),
    DropReport(5, {"kernel.file": -1}, {}),
    PolicyEvent(5, "/etc/p.yaml", "abc"),
])
def test_agent_round_trip(agent_ev):
    rec = flatten(agent_ev)
    assert {k: v for k, v in to_record(to_event(rec)).items() if k not in _IDS} == rec


def test_kind_of():
    assert kind_of("process.exec") == "exec" and kind_of("file.chown") == "file"
    assert kind_of("network.listen") == "network" and kind_of("agent.drops") == "drops"
    assert kind_of("agent.ready") == "agent" and kind_of("device.state") is None
    assert kind_of("process.other") is None


@pytest.mark.parametrize("rec", [
    {},
    {"event.name": 5},
    {"event.name": "file.open", "file.path": "/tmp/\udcff", "process.pid": 2**70, "timestamp": "yesterday",
     "event.severity": 3, "process.args": [1, 2], "user.id": True, 7: "int key", "x": b"bytes", "f": float("nan")},
    {"event.name": "process.exec", "process.args": ["a", None], "container.id": None, "event.truncated": "yes"},
])
def test_bad_input_never_raises_and_keeps_what_it_can(rec):
    ev = to_event(rec)
    back = to_record(ev)
    assert isinstance(ev.SerializeToString(), bytes)
    for k in rec:
        if isinstance(k, str) and k not in ("event.name",):
            assert k in back


def test_surrogates_become_searchable_text():
    ev = to_event({"event.name": "file.open", "file.path": "/tmp/\udcff"})
    assert ev.file.path == "/tmp/\\xff"


def test_timestamps():
    ns = time.time_ns()
    assert parse_timestamp(rfc3339(ns)) == ns
    assert parse_timestamp("2026-01-02T03:04:05+00:00") == 1767323045 * 10**9
    assert parse_timestamp("2026-01-02T03:04:05.5Z") == 1767323045 * 10**9 + 500_000_000
    rec = {"event.name": "agent.ready", "timestamp": "2026-01-02T03:04:05Z"}
    assert to_record(to_event(rec))["timestamp"] == rec["timestamp"]  # its own form, kept
    with pytest.raises(ValueError):
        parse_timestamp("2026-01-02T03:04:05")


def test_severity_names():
    for given, stored in (("info", 2), ("warning", 4), ("HIGH", 5), ("critical", 6)):
        ev = to_event({"event.name": "x.y", "event.severity": given})
        assert ev.severity == stored and to_record(ev)["event.severity"] == given

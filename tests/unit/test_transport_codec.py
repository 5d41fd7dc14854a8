"""record <-> protobuf Event: lossless for every kind, and never raising on bad input."""

from __future__ import annotations

import time

import orjson
import pytest

from agent.events import (
    AgentReady,
    AlertEvent,
    ContainerCreated,
    ContainerDeleted,
    ContainerExec,
    ContainerExited,
    ContainerInfo,
    ContainerOOM,
    ContainerResourcesEvent,
    ContainerStarted,
    ContainerUsage,
    Decided,
    DropReport,
    EnforcementEvent,
    Enriched,
    ExecEvent,
    ExitEvent,
    FileEvent,
    Finding,
    ForkEvent,
    HostFilesystem,
    HostResourcesEvent,
    ImageDeleted,
    ImagePulled,
    NetEvent,
    Op,
    PolicyEvent,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.pbcodec import kind_of, parse_timestamp, pb, to_event, to_record
from agent.outputs.record import flatten, from_enriched, rfc3339
from agent.vocab import Severity

_IDS = ("host.name", "nodewarden.agent_id", "nodewarden.boot_id", "seq")
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


def _sans_ids(back: dict, rec: dict) -> dict:
    """The decoded record without the identity keys the exporter stamps, unless the record had
    one of its own (agent.ready's host.name)."""
    return {k: v for k, v in back.items() if k not in _IDS or k in rec}


_PROC = ProcInfo(pid=42, ppid=1, exe="/usr/bin/curl", argv=("curl", "-s", "x"), uid=0, start_ns=1)
_POD = ContainerInfo(id="e" * 64, name="web", image="nginx:1", image_digest="sha256:ab", pod_name="web-0",
                     pod_namespace="shop", namespace="k8s.io")


def _subject(ev, container=_POD):
    return Enriched(ev, _PROC, _PROC, container)


def _verdict(n_findings=2, **kw):
    kinds = [("malware", Severity.CRITICAL, "block"), ("vulnerability", Severity.MEDIUM, "none"),
             ("secret", Severity.HIGH, "alert")]
    findings = []
    for i in range(n_findings):
        cat, sev, action = kinds[i % 3]
        f = Finding(category=cat, severity=sev, rule=f"r{i}", path=f"/bin/{i}", detail="d", layer="sha256:1",
                    advisory="GHSA-x" if cat == "vulnerability" else "", package="p" if i % 3 == 1 else "",
                    installed="1.0" if i % 3 == 1 else "", fixed="1.1" if i % 3 == 1 else "")
        findings.append(Decided(f, action, f"categories.{cat}.{action} >= high"))
    return Verdict(verdict="block", reason="malware: EICAR in /bin/0", findings=findings, image="evil:1",
                   digest="sha256:cd", duration_ms=12.3456, cache_hit="layer", policy="abc123", **kw)


# Every kind of typed record, each in the shapes that exercise its keys, and the member it fills.
KINDS = [
    (AgentReady(5, "node-a", 7, ("process", "file")), "ready"),
    (AgentReady(5, "node-a", 7, (), ("syscalls/sys_enter_openat2",)), "ready"),
    (DropReport(5, {"kernel.file": 3}, {"kernel.file": 7, "queue": 0}), "drops"),
    (DropReport(5, {"kernel.file": -1}, {}), "drops"),
    (PolicyEvent(5, "/etc/p.yaml", "abc"), "policy"),
    (PolicyEvent(5, "/etc/p.yaml", "abc", error="p.yaml:3: bad"), "policy"),
    (VerdictEvent(5, _verdict(), _POD), "verdict"),
    (VerdictEvent(5, _verdict(0, timed_out=True, error="scan: timeout"), None, "k8s.io"), "verdict"),
    (VerdictEvent(5, _verdict(250), ContainerInfo(id="f" * 64)), "verdict"),  # more than MAX_FINDINGS
    (EnforcementEvent(5, "kernel.exec", "kill", "runtime rule deny_exec[0]", outcome="killed",
                      subject=_subject(EVENTS[1]), duration_ms=0.25, rule_name="deny_exec[0] name=sh",
                      rule_category="deny_exec"), "enforcement"),
    (EnforcementEvent(5, "nri.create_container", "deny", "image verdict block", verdict="block",
                      container=ContainerInfo(id="", name="web", image="evil:1", pod_name="p", pod_namespace="n",
                                              namespace="k8s.io")), "enforcement"),
    (EnforcementEvent(5, "user.kill", "kill", "nodewarden kill", subject=_subject(_file(Op.FILE_OPEN, fd=3))),
     "enforcement"),
    (AlertEvent(5, "NW-001", "shell in container", "a shell ran", Severity.HIGH, ("Execution",),
                ("T1059.004",), subject=_subject(EVENTS[1]), output="sh ran in web", count=3), "alert"),
    (AlertEvent(5, "NW-002", "write below /etc", "d", Severity.MEDIUM, (), (),
                subject=_subject(_file(Op.FILE_RENAME, path2="/etc/shadow", ret=-1), None)), "alert"),
    (AlertEvent(5, "NW-003", "outbound to a miner pool", "d", Severity.CRITICAL, ("Impact",),
                ("T1496",), subject=_subject(_net(Op.NET_CONNECT, port=3333)), action="kill"), "alert"),
    (AlertEvent(5, "NW-004", "fork bomb", "d", Severity.LOW, subject=_subject(EVENTS[2])), "alert"),
    (AlertEvent(5, "NW-005", "no subject", "d", Severity.INFO), "alert"),
    # resources (agent/resources): every counter, then a v1 container with no limits and the host's netns
    (ContainerResourcesEvent(5, _POD, ContainerUsage(2, *range(10, 35)), 3.25, 97.5, "/k8s.io/e"),
     "container_resources"),
    (ContainerResourcesEvent(5, _POD, ContainerUsage(1, cpu_usage_ns=7, memory_usage=1 << 40)), "container_resources"),
    (HostResourcesEvent(5, 4, 12.5, 1.5, 2.5, 3.5, 0.0, 0.5, 0.25, 0.125, 1 << 34, 1 << 33, 1 << 32, 50.0, 0, 0,
                        1, 2, 3, 4, 5, 6, 7, 8, (HostFilesystem("/", 100, 40, 60, 40.0),), ("swap: x",)),
     "host_resources"),
    (HostResourcesEvent(5, 1), "host_resources"),
    (AlertEvent(5, "nw.container_memory_at_limit", "at limit", "d", Severity.MEDIUM, output="x", container=_POD),
     "alert"),
    # container lifecycle (agent/enrich/lifecycle.py): each step; an exit with and without a signal, an exec
    # with and without its command, a container the table never knew, a tag moved and an image deleted
    *((cls(5, _POD, pid=42), "container_lifecycle") for cls in (ContainerCreated, ContainerStarted, ContainerOOM,
                                                                 ContainerDeleted)),
    (ContainerExited(5, _POD, pid=42, exit_code=137, signal=9, oom_killed=True), "container_lifecycle"),
    (ContainerExited(5, ContainerInfo(id="g" * 64, namespace="default"), exit_code=0), "container_lifecycle"),
    (ContainerExec(5, _POD, pid=43, exec_id="a" * 64, argv=("sh", "-c", "id"), via="cri"), "container_lifecycle"),
    (ContainerExec(5, _POD, pid=44, exec_id="dbg", via="direct"), "container_lifecycle"),
    (ImagePulled(5, "nginx:1", "k8s.io", "sha256:cd", "sha256:ab"), "image_pulled"),
    (ImageDeleted(5, "nginx:1", "k8s.io", "sha256:cd"), "image_deleted"),
    (AlertEvent(5, "nw.container_restart_loop", "Container restart loop", "d", Severity.MEDIUM, output="x",
                container=_POD), "alert"),
]


@pytest.mark.parametrize("typed,member", KINDS, ids=lambda x: x.name if hasattr(x, "name") else str(x))
def test_every_kind_round_trip(typed, member):
    rec = flatten(typed)
    ev = to_event(rec)
    assert ev.WhichOneof("kind") == member
    wire = pb.Event.FromString(ev.SerializeToString())  # what the collector gets
    assert _sans_ids(to_record(wire), rec) == rec
    extra = orjson.loads(ev.extra_json) if ev.extra_json else {}
    if extra.pop("event.severity", None) is not None:  # "warning": record.py's word for medium, kept
        assert rec["event.severity"] == "warning" and ev.severity == pb.SEVERITY_MEDIUM
    if isinstance(typed, DropReport) and min(typed.new.values()) < 0:
        assert extra == {"nodewarden.drops.new": {"kernel.file": -1}}  # a count the field cannot hold, kept
    else:
        assert not extra  # every key record.py makes has a field


def test_kinds_are_typed_fields_not_extra_json():
    ev = to_event(flatten(KINDS[6][0]))  # a verdict with findings, in a pod
    assert ev.verdict.verdict == "block" and ev.verdict.findings_count == 2
    assert ev.verdict.findings[0].severity == pb.SEVERITY_CRITICAL and ev.verdict.findings[0].action == "block"
    assert ev.verdict.findings[1].installed == "1.0" and ev.verdict.duration_ms == 12.346
    assert ev.container.containerd_namespace == "k8s.io" and ev.container.image == "nginx:1"
    ev = to_event(flatten(KINDS[9][0]))  # an exec killed in the kernel
    assert (ev.enforcement.point, ev.enforcement.outcome) == ("kernel.exec", "killed")
    assert list(ev.enforcement.exec.args) == ["sh", "-c", "échō ü"] and ev.process.pid == 42
    assert (ev.enforcement.rule_name, ev.enforcement.rule_category) == ("deny_exec[0] name=sh", "deny_exec")
    ev = to_event(flatten(KINDS[13][0]))  # an alert on a rename
    assert ev.alert.rule_id == "NW-002" and ev.alert.trigger == "file.rename"
    assert ev.alert.WhichOneof("subject") == "file" and ev.alert.file.target_path == "/etc/shadow"
    assert ev.alert.file.ret == -1 and ev.severity == pb.SEVERITY_MEDIUM
    ev = to_event(flatten(KINDS[14][0]))
    assert ev.alert.network.peer_port == 3333 and list(ev.alert.techniques) == ["T1496"]
    ev = to_event(flatten(KINDS[0][0]))
    assert list(ev.ready.probes) == ["process", "file"] and ev.ready.host == "node-a" and ev.process.pid == 7
    ev = to_event(flatten(KINDS[5][0]))
    assert (ev.policy.source, ev.policy.fingerprint, ev.policy.error) == ("/etc/p.yaml", "abc", "p.yaml:3: bad")


def test_exec_inode_and_device_are_fields():
    rec = from_enriched(Enriched(EVENTS[1], None, None, None))
    rec["process.executable.inode"] = 2**40 + 3
    rec["process.executable.device"] = 0xFD01
    ev = to_event(rec)
    assert (ev.exec.exe_inode, ev.exec.exe_device) == (2**40 + 3, 0xFD01) and not ev.extra_json
    assert to_record(ev)["process.executable.inode"] == 2**40 + 3


def test_a_finding_that_does_not_fit_keeps_the_whole_list():
    rec = flatten(KINDS[6][0])
    rec["image.findings"][1]["severity"] = "severe"  # not a severity the schema knows
    rec["image.findings"][0]["new_key"] = 1
    ev = to_event(rec)
    assert not ev.verdict.findings and orjson.loads(ev.extra_json)["image.findings"] == rec["image.findings"]
    assert to_record(ev) | {} == to_record(ev) and _sans_ids(to_record(ev), rec) == rec


def test_kind_of():
    assert kind_of("process.exec") == "exec" and kind_of("file.chown") == "file"
    assert kind_of("network.listen") == "network" and kind_of("agent.drops") == "drops"
    assert kind_of("agent.ready") == "ready" and kind_of("agent.policy") == "policy"
    assert kind_of("agent.other") == "agent" and kind_of("device.state") is None
    assert kind_of("image.verdict") == "verdict" and kind_of("enforcement.block") == "enforcement"
    assert kind_of("alert") == "alert" and kind_of("alerts") is None
    assert kind_of("process.other") is None


@pytest.mark.parametrize("rec,typed", [
    ({}, {}),
    ({"event.name": 5}, {}),
    ({"event.name": "file.open", "file.path": "/tmp/\udcff", "process.pid": 2**70, "timestamp": "yesterday",
      "event.severity": 3, "process.args": [1, 2], "user.id": True, 7: "int key", "x": b"bytes", "f": 1.5},
     {"file.path": "/tmp/\\xff"}),
    ({"event.name": "process.exec", "process.args": ["a", None], "container.id": None, "event.truncated": "yes",
      "process.pid": 3}, {"process.pid": 3}),
    ({"event.name": "agent.drops", "nodewarden.drops.new": {"q": True}, "nodewarden.drops.total": {"q": -5}}, {}),
    ({"event.name": "image.verdict", "image.scan.cache_hit": 1, "image.scan.duration_ms": 3,
      "image.findings": "none", "image.verdict": "allow"}, {"image.verdict": "allow"}),
])
def test_bad_input_never_raises_and_keeps_what_it_can(rec, typed):
    ev = to_event(rec)
    back = to_record(pb.Event.FromString(ev.SerializeToString()))
    extra = orjson.loads(ev.extra_json) if ev.extra_json else {}
    for k, v in rec.items():
        if k == "event.name":
            continue
        key = k if isinstance(k, str) else str(k)
        if key in typed:  # went into its field (as text, for a name that is not UTF-8)
            assert back[key] == typed[key] and key not in extra
        else:  # kept, with its type, in extra_json
            assert key in extra and back[key] == extra[key]
            if isinstance(v, bool | int | list | dict) and abs(v if isinstance(v, int) else 0) < 2**63:
                assert back[key] == v


@pytest.mark.parametrize("rec,field,want", [
    ({"event.name": "\udcff"}, "name", "\\xff"),
    ({"event.name": "file.open", "file.path": "\ud800"}, "file.path", "\\ud800"),
    ({"event.name": "file.open", "file.path": "/tmp/\udcff"}, "file.path", "/tmp/\\xff"),
    ({"event.name": "x.y", "a\udcffb": "v\udfffw"}, "extra", {"a\\xffb": "v\\udfffw"}),
    ({"event.name": "x.y", "k": {"\ud800": ["\udcc3"]}}, "extra", {"k": {"\\ud800": ["\\xc3"]}}),
    ({"event.name": "image.verdict", "image.findings": [{"rule": "\udcff", "category": "malware"}]},
     "extra", {"image.findings": [{"rule": "\\xff", "category": "malware"}]}),
])
def test_lone_surrogates_never_raise(rec, field, want):
    """Lone surrogates (from os.fsdecode of non-UTF-8 bytes, U+DC80..U+DCFF, or any other) in a
    name, a value or a key become backslash escapes, readable and searchable; nothing raises."""
    ev = to_event(rec)
    wire = pb.Event.FromString(ev.SerializeToString())
    if field == "name":
        assert wire.name == want
    elif field == "extra":
        assert orjson.loads(wire.extra_json) == want
    else:
        assert to_record(wire)[field] == want


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


def test_every_field_names_its_record_key_and_every_kind_its_events():
    """The .proto options are the whole mapping: a field added without its (key), or a kind
    without its (event), would silently fall out of it."""
    from nwwire.schema import SUBJECT, event_of, key_of

    seen = set()

    def walk(desc):
        if desc.full_name in seen or desc.GetOptions().map_entry:
            return
        seen.add(desc.full_name)
        for fd in desc.fields:
            in_kind = fd.containing_oneof is not None and fd.containing_oneof.name in ("kind", SUBJECT)
            if in_kind:
                assert event_of(fd) and not key_of(fd), f"{desc.name}.{fd.name} needs an (event) option"
            elif fd.name not in ("extra_json", "process", "container"):
                assert key_of(fd), f"{desc.name}.{fd.name} needs a (key) option"
            if fd.message_type is not None:
                walk(fd.message_type)

    walk(pb.Event.DESCRIPTOR)
    assert {"nodewarden.v1.Alert", "nodewarden.v1.ImageVerdict", "nodewarden.v1.Finding"} <= seen


def test_wire_helpers_take_field_numbers_from_the_descriptors():
    from collector.wire import RawIngestRequest
    from nwwire.genproto import load
    from nwwire.protowire import field_bytes, field_varint, number

    cpb = load("nodewarden.v1.collector_pb2")
    ev = to_event(flatten(KINDS[12][0]))
    ev.seq, ev.agent_id, ev.boot_id = 1, "a", "b"
    body = ev.SerializeToString()
    raw = field_bytes(number(cpb.IngestRequest, "batch"),
                      field_varint(number(cpb.Batch, "batch_id"), 9) + field_bytes(number(cpb.Batch, "events"), body))
    assert raw == cpb.IngestRequest(batch=cpb.Batch(batch_id=9, events=[ev])).SerializeToString()
    assert [bytes(b) for b in RawIngestRequest.FromString(raw).batch.events] == [body]


def test_fuzz_every_key_with_every_type_never_raises_and_loses_nothing():
    """Each key of every table (and some unknown ones) with values of every shape: to_event never
    raises, the wire form parses, and whatever JSON can hold comes back as it went."""
    import random

    from nwwire.schema import CONTAINER, KINDS, PROCESS, TOP

    keys = set(PROCESS.keys) | set(CONTAINER.keys) | set(TOP.keys) | {"timestamp", "event.severity",
                                                                       "event.truncated", "x.unknown"}
    for t in KINDS.tables.values():
        keys |= set(t.keys)
        if t.subject is not None:
            keys |= set(t.subject.keys)
    keys = sorted(keys)
    values = [0, -1, 2**63, 2**64, -(2**63) - 1, 1.5, True, False, None, "", "x", "\udcff", "\ud800z", [],
              ["a", "b"], [1, True], {}, {"a": 1}, {"a": -1}, {"a": "b"}, [{"category": "malware"}],
              [{"severity": "high", "rule": "r"}], [{"nope": 1}], b"raw", ("t",)]
    rng = random.Random(9)
    names = [*KINDS.exact, "file.open", "network.connect", "enforcement.block", "agent.other", "x.y", ""]
    for _ in range(3000):
        rec = {"event.name": rng.choice(names)}
        for k in rng.sample(keys, rng.randint(1, 8)):
            rec[k] = rng.choice(values)
        ev = to_event(rec)
        back = to_record(pb.Event.FromString(ev.SerializeToString()))
        for k, v in rec.items():
            if k in _IDS or k == "event.name" or k == "timestamp":
                continue
            assert k in back, (rec, k)
            plain = not isinstance(v, bytes | tuple | float) and "\\u" not in repr(v)
            if plain and not (isinstance(v, int) and not -(2**63) <= v < 2**64):
                assert back[k] == v, (rec, k, back.get(k))

"""agent/outputs/record.flatten, the one flattener, for each kind: the keys README.md documents, on records
decoded from packed bytes (tests/unit/replay_records.py) and enriched by the real enrich stage.
(Enforcement records in detail: tests/unit/test_enforce_records.py.)"""

from __future__ import annotations

import socket
import struct
import typing

import pytest

from agent import events
from agent.events import (
    AgentReady,
    AlertEvent,
    ContainerInfo,
    Decided,
    DropReport,
    EnforcementEvent,
    Enriched,
    Finding,
    PolicyEvent,
    ProcInfo,
    Verdict,
    VerdictEvent,
)
from agent.outputs.record import flatten
from agent.sensors import REGISTRY
from agent.sensors.abi import NET_EVENT, Op
from agent.sensors.common import BootClock
from agent.vocab import Severity
from tests.unit.replay_records import PID, _pack, exec_rec, exit_rec, fork_rec, header, open_rec

_DECODERS = {op: dec for s in REGISTRY.values() for op, dec in s.decoders.items()}
_CLOCK = BootClock()
BASE = {"event.name", "timestamp", "event.severity", "process.pid", "process.thread.id", "process.parent_pid",
        "process.name", "user.id", "group.id", "cgroup.id", "process.mount_ns"}
PROC = ProcInfo(PID, PID - 1, "/bin/bash", ("bash", "-c", "x"), 1000, 1_700_000_000_000_000_000, "bash")
PARENT = ProcInfo(PID - 1, 1, "/usr/sbin/sshd", ("sshd",), 0, 0, "sshd")
POD = ContainerInfo(id="f" * 64, name="app", image="shop/web:1", image_digest="sha256:" + "1" * 64,
                    namespace="k8s.io", pod_name="web-0", pod_namespace="shop")


def _en(raw: bytes, container: ContainerInfo | None = None) -> Enriched:
    return Enriched(_DECODERS[raw[0]](raw, _CLOCK), PROC, PARENT, container)


def _net(op: Op, port: int) -> bytes:
    sa = struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton("10.0.0.7")
    return _pack(NET_EVENT, header(op), ret=0, fd=3, sock_type=1, addr_len=len(sa), backlog=128, addr=sa)


@pytest.mark.parametrize("raw, name, keys", [
    (exec_rec("/usr/bin/curl", ["curl", "-s", "x"]), "process.exec",
     {"process.args", "process.args_count", "process.executable.path", "process.command_line"}),
    (exit_rec(2), "process.exit", {"process.exit.code"}),
    (fork_rec(PID + 1), "process.fork", {"process.child.pid"}),
    (open_rec("/etc/shadow"), "file.open", {"file.path", "syscall.return", "file.open.flags", "file.mode"}),
    (_net(Op.NET_CONNECT, 443), "network.connect",
     {"network.type", "network.transport", "syscall.return", "network.peer.address", "network.peer.port"}),
    (_net(Op.NET_LISTEN, 8080), "network.listen",
     {"network.type", "network.transport", "syscall.return", "network.local.address", "network.local.port",
      "network.listen.backlog"}),
])
def test_kernel_events_carry_the_documented_keys(raw, name, keys):
    rec = flatten(_en(raw))
    assert rec["event.name"] == name and rec["event.severity"] == "info"
    process = {"process.executable.path", "process.command_line", "process.start_time",
               "process.parent.executable.path", "process.parent.command_line"}
    assert set(rec) - {"process.executable.inode", "process.executable.device"} == BASE | process | keys
    assert rec["timestamp"].endswith("Z") and rec["process.parent.executable.path"] == "/usr/sbin/sshd"
    assert not any(k.startswith(("container.", "k8s.")) for k in rec)  # a host process


def test_values_of_a_connect_and_an_exec():
    rec = flatten(_en(_net(Op.NET_CONNECT, 443)))
    assert (rec["network.peer.address"], rec["network.peer.port"], rec["network.type"],
            rec["network.transport"]) == ("10.0.0.7", 443, "ipv4", "tcp")
    ex = flatten(_en(exec_rec("/usr/bin/curl", ["curl", "-s", "x"])))
    # the exec's own filename and argv win over the process table's (the table still had the old image)
    assert (ex["process.executable.path"], ex["process.command_line"], ex["process.args_count"]) == (
        "/usr/bin/curl", "curl -s x", 3)


def test_container_keys_only_when_in_a_container():
    rec = flatten(_en(open_rec("/data/x"), POD))
    assert {k: rec[k] for k in rec if k.startswith(("container.", "k8s."))} == {
        "container.id": "f" * 64, "container.name": "app", "container.image.name": "shop/web:1",
        "container.image.digest": "sha256:" + "1" * 64, "container.runtime": "containerd",
        "k8s.pod.name": "web-0", "k8s.namespace.name": "shop"}
    unknown = flatten(_en(open_rec("/data/y"), ContainerInfo(id="unknown", runtime="")))
    assert unknown["container.id"] == "unknown" and "container.runtime" not in unknown


def test_verdict():
    f = Finding("malware", Severity.HIGH, "eicar", path="/opt/eicar.com", detail="EICAR test file")
    v = Verdict("block", "malware eicar in /opt/eicar.com", [Decided(f, "block", "categories.malware.block >= high")],
                image="shop/web:1", digest="sha256:" + "1" * 64, duration_ms=12.3456, cache_hit="layers",
                policy="abc123")
    rec = flatten(VerdictEvent(1_700_000_000_000_000_000, v, POD))
    assert rec["event.name"] == "image.verdict" and rec["event.severity"] == "high"
    assert (rec["image.verdict"], rec["image.findings_count"], rec["image.scan.duration_ms"]) == ("block", 1, 12.346)
    assert rec["image.findings"] == [{"category": "malware", "severity": "high", "rule": "eicar",
                                      "path": "/opt/eicar.com", "detail": "EICAR test file", "action": "block",
                                      "decided_by": "categories.malware.block >= high"}]
    assert (rec["image.scan.cache_hit"], rec["image.scan.cache"], rec["image.policy"]) == (False, "layers", "abc123")
    assert rec["container.id"] == "f" * 64 and rec["containerd.namespace"] == "k8s.io"
    by_ref = flatten(VerdictEvent(1, Verdict("allow", "no findings", image="x:1"), None, namespace="k8s.io"))
    assert (by_ref["event.severity"], by_ref["container.image.name"], by_ref["containerd.namespace"]) == (
        "info", "x:1", "k8s.io")
    assert "container.id" not in by_ref


def test_alert_keeps_its_trigger():
    subject = _en(exec_rec("/bin/nc", ["nc", "-e", "/bin/sh"]), POD)
    rec = flatten(AlertEvent(5, "R100", "reverse shell", "nc -e in a container", Severity.CRITICAL,
                             tactics=("execution",), techniques=("T1059.004",), subject=subject, count=3))
    assert (rec["event.name"], rec["trigger.name"], rec["event.severity"]) == ("alert", "process.exec", "critical")
    assert (rec["rule.id"], rec["threat.technique.id"], rec["alert.count"]) == ("R100", ["T1059.004"], 3)
    assert rec["process.args"] == ["nc", "-e", "/bin/sh"] and rec["container.id"] == "f" * 64


def test_agent_reports():
    ready = flatten(AgentReady(5, "node-1", 42, ("process", "file"), ("syscalls:accept",)))
    assert {k: ready[k] for k in ("event.name", "host.name", "process.pid", "nodewarden.probes",
                                  "nodewarden.tracepoints_missing")} == {
        "event.name": "agent.ready", "host.name": "node-1", "process.pid": 42, "nodewarden.probes": ["process", "file"],
        "nodewarden.tracepoints_missing": ["syscalls:accept"]}
    drops = flatten(DropReport(5, {"crash": 3}, {"crash": 3, "queue": 1}))
    assert (drops["event.severity"], drops["nodewarden.drops.new"], drops["nodewarden.drops.total"]) == (
        "warning", {"crash": 3}, {"crash": 3, "queue": 1})
    bad = flatten(PolicyEvent(5, "/etc/nw/policy.yaml", "abc", error="policy.yaml:3: bad severity"))
    assert (bad["event.severity"], bad["policy.error"]) == ("warning", "policy.yaml:3: bad severity")


GPU = events.DeviceRef("nvidia", 0, "GPU-0", "NVIDIA H200", minor=0)


def test_every_record_kind_has_a_flat_form_and_nothing_else_does():
    samples = {
        Enriched: _en(open_rec("/x")),
        VerdictEvent: VerdictEvent(5, Verdict("allow", "clean")),
        EnforcementEvent: EnforcementEvent(5, "containerd.kill", "kill", "image verdict block: x"),
        AlertEvent: AlertEvent(5, "R1", "r", "d", Severity.LOW),
        AgentReady: AgentReady(5, "n", 1, ()),
        DropReport: DropReport(5, {}, {}),
        PolicyEvent: PolicyEvent(5, "p", "f"),
        events.DeviceInfoEvent: events.DeviceInfoEvent(5, GPU),
        events.DeviceSampleEvent: events.DeviceSampleEvent(5, GPU, {"gpu_util": 3.0}),
        events.DeviceHealthEvent: events.DeviceHealthEvent(5, GPU, "xid", Severity.HIGH, xid=79),
        events.DeviceProcessEvent: events.DeviceProcessEvent(5, GPU, "start", events.DeviceUser(7)),
        events.ProfileChange: events.ProfileChange(5, "ns/-/-/c@img", "monitoring", "learning", "learned 3600 s"),
        events.ContainerResourcesEvent: events.ContainerResourcesEvent(5, events.ContainerInfo("c1"),
                                                                       events.ContainerUsage(2)),
        events.HostResourcesEvent: events.HostResourcesEvent(5, 4),
        events.PostureReport: events.PostureReport(5, (), 0, 0),
        # container lifecycle (agent/enrich/lifecycle.py): one record type per event.name
        **{k: k(5, events.ContainerInfo("c1")) for k in (events.ContainerCreated, events.ContainerStarted,
                                                        events.ContainerExited, events.ContainerOOM,
                                                        events.ContainerDeleted, events.ContainerExec)},
        events.ImagePulled: events.ImagePulled(5, "busybox:1", "default"),
        events.ImageDeleted: events.ImageDeleted(5, "busybox:1", "default"),
    }
    kinds = typing.get_args(events.Record)
    assert set(kinds) == set(samples), "a new record kind: give it a sample here and a flattener"
    for kind, ev in samples.items():
        rec = flatten(ev)
        assert rec["event.name"] == (ev.event.name if kind is Enriched else kind.name)
        assert rec["timestamp"].endswith("Z") and rec["event.severity"]
    with pytest.raises(TypeError, match="no flat form for ProcInfo"):
        flatten(PROC)

"""The flat record: one dict of dotted keys per event, the form every output starts from.

Keys follow OpenTelemetry semantic conventions where one exists (process.pid, file.path,
network.peer.address, ...). The JSON log prints it as is; the gRPC exporter maps it onto the
protobuf Event. Keys are only ever added, never renamed.
"""

from __future__ import annotations

import time

from agent.events import (
    AgentEvent,
    BenchEvent,
    Enriched,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    Op,
)

_sec_cache: dict[int, str] = {}


def rfc3339(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. 2026-11-24T11:25:20.123456789Z."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    head = _sec_cache.get(sec)
    if head is None:  # events come in bursts within a few seconds (and their processes' start times)
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        head = _sec_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{ns:09d}Z"


def command_line(argv: tuple[str, ...]) -> str:
    return " ".join(argv)


def from_agent(ev: AgentEvent) -> dict:
    rec = {"event.name": ev.name, "timestamp": rfc3339(ev.ts_ns), "event.severity": ev.severity}
    rec.update(ev.attrs)
    return rec


def from_enriched(en: Enriched) -> dict:
    ev = en.event
    rec = {
        "event.name": ev.name,
        "timestamp": rfc3339(ev.ts_ns),
        "event.severity": "info",
        "process.pid": ev.pid,
        "process.thread.id": ev.tid,
        "process.parent_pid": ev.ppid,
        "process.name": ev.comm,
        "user.id": ev.uid,
        "group.id": ev.gid,
        "cgroup.id": ev.cgroup_id,
        "process.mount_ns": ev.mntns,
    }
    p = en.process
    if p is not None:
        rec["process.executable.path"] = p.exe
        rec["process.command_line"] = command_line(p.argv)
        if p.start_ns:
            rec["process.start_time"] = rfc3339(p.start_ns)
    if en.parent is not None:
        rec["process.parent.executable.path"] = en.parent.exe
        rec["process.parent.command_line"] = command_line(en.parent.argv)
    if ev.truncated:
        rec["event.truncated"] = True
    _add_kind(rec, ev)
    c = en.container
    if c is not None:
        rec["container.id"] = c.id
        for key, val in (
            ("container.name", c.name),
            ("container.image.name", c.image),
            ("container.image.digest", c.image_digest),
            ("container.runtime", c.runtime),
            ("k8s.pod.name", c.pod_name),
            ("k8s.namespace.name", c.pod_namespace),
        ):
            if val:
                rec[key] = val
    return rec


def _add_kind(rec: dict, ev) -> None:
    if isinstance(ev, ExecEvent):
        rec["process.executable.path"] = ev.filename
        rec["process.command_line"] = command_line(ev.argv)
        rec["process.args"] = list(ev.argv)
        rec["process.args_count"] = len(ev.argv)
    elif isinstance(ev, ExitEvent):
        rec["process.exit.code"] = ev.exit_code
        if ev.signal:
            rec["process.exit.signal"] = ev.signal
    elif isinstance(ev, ForkEvent):
        rec["process.child.pid"] = ev.child_pid
    elif isinstance(ev, FileEvent):
        rec["file.path"] = ev.path
        rec["syscall.return"] = ev.ret
        if ev.op is Op.FILE_OPEN:
            rec["file.open.flags"] = ev.flags
            rec["file.mode"] = ev.mode
        elif ev.op is Op.FILE_RENAME:
            rec["file.target.path"] = ev.path2
        elif ev.op is Op.FILE_CHMOD:
            rec["file.mode"] = ev.mode
        elif ev.op is Op.FILE_CHOWN:
            rec["file.owner.id"] = ev.owner_uid
            rec["file.group.id"] = ev.owner_gid
        if ev.fd >= 0:
            rec["file.descriptor"] = ev.fd
    elif isinstance(ev, NetEvent):
        rec["network.type"] = ev.family
        rec["network.transport"] = ev.transport
        rec["syscall.return"] = ev.ret
        if ev.op in (Op.NET_CONNECT, Op.NET_ACCEPT):
            rec["network.peer.address"] = ev.address
            rec["network.peer.port"] = ev.port
        else:
            rec["network.local.address"] = ev.address
            rec["network.local.port"] = ev.port
        if ev.op is Op.NET_LISTEN:
            rec["network.listen.backlog"] = ev.backlog
    elif isinstance(ev, BenchEvent):
        rec["bench.counter"] = ev.counter

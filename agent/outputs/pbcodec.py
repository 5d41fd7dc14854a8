"""The flat record (agent/outputs/record.py) <-> the protobuf Event (proto/nodewarden/v1/event.proto).

`to_event` maps every record key the schema knows onto its field; a key it does not know,
or a value of the wrong type, goes into `extra_json` instead of being lost. `to_record`
is the exact inverse: to_record(to_event(r)) == r, plus the stamped identity keys
(host.name, agent.id, agent.boot_id, seq). The collector, `nodewarden events --json` and
the tests all read events back through `to_record`, so one table below is the whole
mapping. Keep it in step with record.py when keys are added there.
"""

from __future__ import annotations

import calendar
import time
from datetime import datetime

import orjson

from agent.genproto import load
from agent.outputs.record import rfc3339

pb = load("nodewarden.v1.event_pb2")

SEVERITY = {
    "debug": 1,
    "info": 2,
    "low": 3,
    "medium": 4,
    "warning": 4,
    "warn": 4,
    "high": 5,
    "error": 5,
    "critical": 6,
}
SEVERITY_NAMES = {1: "debug", 2: "info", 3: "low", 4: "medium", 5: "high", 6: "critical"}

# record key -> field, per sub-message.
_PROCESS = {
    "process.pid": "pid",
    "process.thread.id": "tid",
    "process.parent_pid": "ppid",
    "user.id": "uid",
    "group.id": "gid",
    "process.name": "name",
    "process.executable.path": "executable",
    "process.command_line": "command_line",
    "process.start_time": "start_time",
    "process.parent.executable.path": "parent_executable",
    "process.parent.command_line": "parent_command_line",
    "cgroup.id": "cgroup_id",
    "process.mount_ns": "mount_ns",
}
_CONTAINER = {
    "container.id": "id",
    "container.name": "name",
    "container.image.name": "image",
    "container.image.digest": "image_digest",
    "container.runtime": "runtime",
    "k8s.pod.name": "pod_name",
    "k8s.namespace.name": "pod_namespace",
}
# The oneof `kind`: its member name -> its keys.
_KINDS = {
    "exec": {"process.args": "args", "process.args_count": "args_count"},
    "fork": {"process.child.pid": "child_pid"},
    "exit": {"process.exit.code": "code", "process.exit.signal": "signal"},
    "file": {
        "file.path": "path",
        "file.target.path": "target_path",
        "syscall.return": "ret",
        "file.open.flags": "flags",
        "file.mode": "mode",
        "file.descriptor": "fd",
        "file.owner.id": "owner_id",
        "file.group.id": "group_id",
    },
    "network": {
        "network.type": "type",
        "network.transport": "transport",
        "network.peer.address": "peer_address",
        "network.peer.port": "peer_port",
        "network.local.address": "local_address",
        "network.local.port": "local_port",
        "syscall.return": "ret",
        "network.listen.backlog": "backlog",
    },
    "agent": {"agent.message": "message"},
    "drops": {"agent.drops.new": "recent", "agent.drops.total": "total"},
}
_TOP = {"host.name": "node", "agent.id": "agent_id", "agent.boot_id": "boot_id", "seq": "seq"}
# Keys handled by hand in to_event.
_SPECIAL = {"event.name", "timestamp", "event.severity", "event.truncated"}

_REV_PROCESS = {v: k for k, v in _PROCESS.items()}
_REV_CONTAINER = {v: k for k, v in _CONTAINER.items()}
_REV_KINDS = {kind: {v: k for k, v in m.items()} for kind, m in _KINDS.items()}


def kind_of(name: str) -> str | None:
    """The oneof member an event.name fills, or None (its keys then go to extra_json)."""
    if name.startswith("process."):
        return {"process.exec": "exec", "process.fork": "fork", "process.exit": "exit"}.get(name)
    if name.startswith("file."):
        return "file"
    if name.startswith("network."):
        return "network"
    if name == "agent.drops":
        return "drops"
    if name.startswith("agent."):
        return "agent"
    return None


_sec_cache: dict[str, int] = {}


def parse_timestamp(s: str) -> int:
    """RFC 3339 -> ns since the epoch. Fast for record.py's own form, which repeats its
    seconds prefix across a burst; any other ISO 8601 form goes through datetime."""
    if len(s) == 30 and s[19] == "." and s[29] == "Z":
        head = s[:19]
        sec = _sec_cache.get(head)
        if sec is None:
            if len(_sec_cache) > 4096:  # bounded: a burst spans few distinct seconds
                _sec_cache.clear()
            sec = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            _sec_cache[head] = sec
        return sec * 1_000_000_000 + int(s[20:29])
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {s!r}")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _set(msg, field: str, value) -> None:
    if isinstance(value, dict):  # a map field
        m = getattr(msg, field)
        try:
            m.update(value)
        except (TypeError, ValueError):
            m.clear()
            raise
    elif isinstance(value, list | tuple):
        rep = getattr(msg, field)
        try:
            rep.extend(value)
        except (TypeError, ValueError):
            del rep[:]
            raise
    elif isinstance(value, bool) and field not in ("truncated",):
        raise TypeError("bool in a numeric or string field")  # would come back as 0/1
    else:
        setattr(msg, field, value)


def to_event(rec: dict):
    """One flat record -> one Event. Never raises on a record's content."""
    ev = pb.Event()
    name = rec.get("event.name")
    if not isinstance(name, str):
        name = ""
    ev.name = name
    kind = kind_of(name)
    kmap = _KINDS.get(kind) if kind else None
    kmsg = getattr(ev, kind) if kind else None
    proc = ev.process
    cont = ev.container
    extra: dict = {}
    for key, val in rec.items():
        msg = proc
        f = _PROCESS.get(key)
        if f is None:
            msg, f = cont, _CONTAINER.get(key)
            if f is None and kmap is not None:
                msg, f = kmsg, kmap.get(key)
            if f is None:
                if key in _SPECIAL:
                    try:
                        _special(ev, key, val, extra)
                    except (TypeError, ValueError, OverflowError, AttributeError):
                        extra[key] = val
                    continue
                msg, f = ev, _TOP.get(key)
                if f is None:
                    extra[key] = val
                    continue
        try:
            _set(msg, f, val)
        except (TypeError, ValueError, OverflowError, AttributeError):
            if isinstance(val, str) and isinstance(getattr(msg, f), str):
                setattr(msg, f, _clean(val))  # lone surrogates: an undecodable file name stays searchable
            else:
                extra[key] = val
    if kind is not None and not ev.HasField(kind):
        kmsg.SetInParent()  # the kind shows even when the record had none of its keys
    if extra:
        try:
            ev.extra_json = orjson.dumps(extra, default=repr, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # lone surrogates (undecodable file names), huge ints
            ev.extra_json = orjson.dumps(_clean(extra), default=repr)
    return ev


def _clean(v):
    """A JSON-safe copy: strings with lone surrogates (os.fsdecode of non-UTF-8 bytes) become
    their backslash-escaped bytes, so the value stays readable and searchable."""
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, int) and not -(2**63) <= v < 2**64:
        return str(v)
    return v


def _special(ev, key: str, val, extra: dict) -> None:
    if key == "event.name":
        if not isinstance(val, str):
            extra[key] = val
    elif key == "timestamp":
        ts = parse_timestamp(val)
        ev.time_unix_nano = ts
        if rfc3339(ts) != val:  # another form: keep the text as written
            extra[key] = val
    elif key == "event.severity":
        sev = SEVERITY.get(val.lower()) if isinstance(val, str) else None
        if sev is None:
            extra[key] = val
            return
        ev.severity = sev
        if SEVERITY_NAMES[sev] != val:
            extra[key] = val
    elif key == "event.truncated":
        if val is True:
            ev.truncated = True
        else:
            extra[key] = val


def to_record(ev) -> dict:
    """One Event -> the flat record it was made from (with the identity keys)."""
    rec = {"event.name": ev.name, "timestamp": rfc3339(ev.time_unix_nano)}
    if ev.severity:
        rec["event.severity"] = SEVERITY_NAMES.get(ev.severity, str(ev.severity))
    rec["host.name"] = ev.node
    rec["agent.id"] = ev.agent_id
    rec["agent.boot_id"] = ev.boot_id
    rec["seq"] = ev.seq
    if ev.truncated:
        rec["event.truncated"] = True
    for fd, v in ev.process.ListFields():
        rec[_REV_PROCESS[fd.name]] = v
    for fd, v in ev.container.ListFields():
        rec[_REV_CONTAINER[fd.name]] = v
    kind = ev.WhichOneof("kind")
    if kind:
        rev = _REV_KINDS.get(kind, {})
        for fd, v in getattr(ev, kind).ListFields():
            key = rev.get(fd.name, f"{kind}.{fd.name}")
            if fd.is_repeated:
                v = dict(v) if hasattr(v, "keys") else list(v)  # a map, or a list
            rec[key] = v
        if kind == "exec" and "process.args" not in rec:
            rec["process.args"] = []  # proto cannot tell [] from absent; record.py always sets it
    if ev.extra_json:
        try:
            rec.update(orjson.loads(ev.extra_json))
        except orjson.JSONDecodeError:
            rec["event.extra_json_invalid"] = ev.extra_json.decode("utf-8", "replace")
    return rec


# -- protobuf wire format by hand, where bytes already encoded go out again without a re-parse --------
# (spooled batches on the agent, stored event bodies on the collector). Facts: protobuf's encoding
# guide (base-128 varints; a field key is (number << 3) | wire type; 2 = length-delimited, 0 = varint).


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(num: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes or a string) already encoded."""
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


"""Every record maps in Elasticsearch and OpenSearch as it is (issue 15).

Those stores expand a dotted key into objects (`file.path.resolved` is `file` > `path` > `resolved`), and one
index holds every event kind, so across the union of all kinds no path may be both a value and a parent
(`file.path` a string and `file.path.resolved` under it is refused: "can't merge a non object mapping"), each
path keeps one JSON type (the first one seen fixes the mapping; a later string in a number field is refused),
and nothing may sit under `agent.*`, the log shipper's own namespace (Beats, Elastic Agent, Fluent Bit's ECS
output write `agent.id`, `agent.type` there).

Checked on a fully populated record of every event kind (every op of agent.events.EVENT_NAMES and every typed
record record.py flattens, each with all its optional fields set), as the JSON log prints it, as the protobuf
schema declares it (proto/nodewarden/v1/event.proto's `(key)` options, nested messages included), and as the
collector stores and reads it back (the gRPC codec, a real SQLite store).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from agent import events as E
from agent.detect import fields as F
from agent.detect.condition import ConditionError
from agent.detect.condition import compile as compile_condition
from agent.devices.fields import FIELDS as DEVICE_FIELDS
from agent.events import EVENT_NAMES, Op
from agent.imagegate.posture import CHECKS
from agent.outputs import record
from agent.outputs.record import MAX_FINDINGS, flatten
from agent.vocab import Severity
from collector.filters import EventFilter
from collector.store import Store
from nwwire.codec import to_event, to_record
from nwwire.schema import KINDS, key_of, pb

ROOT = Path(__file__).resolve().parents[2]
TS = 1_764_000_000_123_456_789

# -- samples: one per kind, every optional field set -----------------------------------------------------

PROC = E.ProcInfo(4242, 4241, "/usr/bin/python3", ("python3", "-c", "x"), 1000, TS - 10**9, "python3", "/srv")
PARENT = E.ProcInfo(4241, 1, "/bin/bash", ("bash", "-l"), 1000, TS - 2 * 10**9, "bash", "/srv")
INIT = E.ProcInfo(1, 0, "/sbin/init", ("/sbin/init",), 0, TS - 10**12, "systemd", "/")
CONT = E.ContainerInfo("c0ffee" * 10 + "abcd", "web", "docker.io/library/nginx:1.27", "sha256:" + "ab" * 32,
                       "containerd", "k8s.io", "web-7d4b9c-x2x", "shop", (("app", "web"),), 4242, 77, "/kubepods/x",
                       4026531840, TS - 10**10, TS - 10**10, "running")


def _head(op: Op) -> dict:
    return {"op": op, "ts_ns": TS, "pid": 4242, "tid": 4243, "ppid": 4241, "uid": 1000, "gid": 1000,
            "cgroup_id": 77, "mntns": 4026531840, "comm": "python3", "truncated": True}


def _kernel(op: Op) -> E.KernelEvent:
    h = _head(op)
    if op is Op.EXEC:
        return E.ExecEvent(**h, filename="/usr/bin/python3", argv=("python3", "-c", "x"), action=1, rule=3,
                           exe_ino=123, exe_dev=2049, kernel_path="/memfd:x (deleted)", memfd=True, deleted=True,
                           upper_layer=True, exe_mnt_id=31, cwd="/srv")
    if op is Op.FORK:
        return E.ForkEvent(**h, child_pid=4250)
    if op is Op.EXIT:
        return E.ExitEvent(**h, exit_code=1, signal=9)
    if op.name.startswith("FILE_"):
        return E.FileEvent(**h, path="data/x", path2="/srv/y", ret=3, flags=0o1101, mode=0o644, dirfd=-100, fd=3,
                           owner_uid=1000, owner_gid=1000, cwd="/srv")
    if op.name.startswith("NET_"):
        return E.NetEvent(**h, ret=5, fd=4, family="ipv4", transport="tcp", address="10.0.0.9", port=443,
                          backlog=128, fd2=1, protocol=6)
    if op is Op.CGROUP_MKDIR:
        return E.CgroupEvent(**h, new_cgroup_id=78, level=3, path="/kubepods/y")
    if op is Op.BENCH:
        return E.BenchEvent(**h, counter=9)
    return E.SysEvent(**h, ret=0, call="syscall", arg=16, target_pid=4300, ids=(0, 0, 0), caps=(1, 2, 4),
                      arg_text="/mnt/x", source="/dev/sda1", fstype="ext4")


def _enriched(op: Op) -> E.Enriched:
    return E.Enriched(_kernel(op), PROC, PARENT, CONT, (PARENT, INIT), "/srv/data/x" if op.name.startswith("FILE_")
                      else "")


def _finding(i: int) -> E.Decided:
    f = E.Finding("vulnerability" if i % 2 else "malware", Severity.HIGH, f"rule{i}", f"/app/f{i}", "detail",
                  "sha256:" + "cd" * 32, "4.1.1", f"CVE-2026-{i:04d}", "openssl", "3.0.1", "3.0.2", "$_GET", "eval",
                  "eval($_GET[x])", 0.75, "china-chopper")
    return E.Decided(f, "block" if i == 0 else "none", "categories.malware.block >= high")


DEV = E.DeviceRef("nvidia", 0, "GPU-1234", "NVIDIA H200", "00000000:19:00.0", 0, "MIG-5678")
USER = E.DeviceUser(4242, 1 << 30, "MIG-5678", "python3", CONT)


def _sample_values() -> dict:
    return {name: (50.0 if f.unit in ("%", "C", "W") else 7) for name, f in DEVICE_FIELDS.items()}


# Every drop stage the agent reports (agent/pipeline.py, agent/node.py _stage_drops, and the stages'
# drops()): a stage named `x` beside one named `x.y` is a value and a parent under nodewarden.drops.*.
# Kernel families come from the sensor registry; test_drop_stages_listed checks the sources for others.
_STAGES = ["queue", "decode", "output", "crash", "detect.folded", "detect.rate_limited", "profile.overflow",
           "profile.refused", "profile.store_errors", "profile.sync", "profile.deviations_full", "profile.kernel",
           "profile.containers_full", "profile.changes_full", "profile.sync_queue", "profile.sync_refused",
           "profile.sync_unsent", "imagegate.queue", "imagegate.emit", "containerd.events_dropped",
           "containerd.events_bad", "exporter.queue_full", "exporter.spool_full", "exporter.encode_error",
           "exporter.spool_corrupt_segments", "webshell.scan", "webshell.unreadable", "devguard.queue",
           "devguard.unjudged", "devguard.folded", "devices.queue", "devices.skipped", "enforce.cover_unresolved",
           "enforce.pending_full", "kernel.net_sendto_folded", "kernel.net_connect_folded",
           "kernel.file_open_folded", "lifecycle.emit", "lifecycle.queue", "resources.cut",
           "resources.emit", "resources.late"]


def _stages() -> dict[str, int]:
    from agent.enforce.profilekill import _DROPS
    from agent.sensors import REGISTRY

    names = [*_STAGES, *(f"kernel.{s}" for s in REGISTRY), *(f"profile_kill.{k}" for k in _DROPS)]
    return {n: i + 1 for i, n in enumerate(names)}


def typed_samples() -> list:
    """Every typed record that is not a kernel event, fully populated (and in its other shapes where a
    shape adds keys: a verdict without a container record, a device alert without a kernel event)."""
    findings = [_finding(i) for i in range(MAX_FINDINGS + 5)]
    verdict = E.Verdict("block", "malware in /app/f0", findings, CONT.image, CONT.image_digest, 12.5, "verdict",
                        True, "scan error", "fp1", "allow", "advisories")
    subject = _enriched(Op.EXEC)
    return [
        E.AgentReady(TS, "node-1", 4242, ("process", "file", "net"), ("sys_enter_openat2",)),
        E.DropReport(TS, _stages(), _stages()),
        E.PolicyEvent(TS, "/etc/nodewarden/policy.yaml", "fp1", "line 3: unknown key"),
        E.VerdictEvent(TS, verdict, CONT, "k8s.io"),
        E.VerdictEvent(TS, dataclasses.replace(verdict, findings=findings[:3]), None, "k8s.io"),
        E.EnforcementEvent(TS, "kernel.exec", "kill", "deny_exec[0] name=xmrig", Severity.CRITICAL, "killed", "block",
                           CONT, subject, 0.4, "deny_exec[0] name=xmrig", "deny_exec", "/var/lib/nodewarden/q/1"),
        E.EnforcementEvent(TS, "nri.create_container", "deny", "image blocked", Severity.HIGH, "denied", "block",
                           CONT, None, 3.5, "", "", ""),
        *(E.EnforcementEvent(TS, "user.kill", "kill", "x", subject=_enriched(op), outcome="killed")
          for op in (Op.FILE_OPEN, Op.NET_CONNECT, Op.PTRACE, Op.FORK, Op.EXIT)),
        E.AlertEvent(TS, "nw.shell", "shell in container", "a shell ran", Severity.HIGH, ("Execution",),
                     ("T1059.004",), subject, "shell bash in web", 3, "kill", (findings[1].finding,), DEV, None),
        *(E.AlertEvent(TS, "nw.x", "x", "x", Severity.LOW, subject=_enriched(op))
          for op in (Op.FILE_OPEN, Op.NET_CONNECT, Op.MOUNT, Op.FORK, Op.EXIT)),
        E.AlertEvent(TS, "nw.gpu", "gpu use", "gpu use outside its allocation", Severity.MEDIUM, (), (), None,
                     "x", 1, "alert", (), DEV, USER),
        E.ProfileChange(TS, "shop/Deployment/web/web", "protecting", "monitoring", "learned 3600 s",
                        tuple((k, 3) for k in ("exec", "edge", "user", "peer", "listen", "write")), "shop",
                        "Deployment", "web", "web", CONT.image, CONT.image_digest, Severity.MEDIUM),
        E.ProfileChange(TS, "default/-/x/x", "learning", "", "new", (("exec", 1),), "default", "", "", "x", "x"),
        E.DeviceInfoEvent(TS, DEV, "1324", "550.54", "12.4", 141 << 30, 700.0, "enabled", "enabled",
                          (E.DeviceRef("nvidia", 1, "MIG-1", "1g.18gb", minor=5),)),
        E.DeviceSampleEvent(TS, DEV, _sample_values(), ("sw_power_cap",), (USER, E.DeviceUser(1, 5)),
                            ("ecc: not supported",)),
        E.DeviceHealthEvent(TS, DEV, "xid", Severity.CRITICAL, "Xid 79", 79, "GPU_HAS_FALLEN_OFF_THE_BUS",
                            "reboot"),
        E.DeviceProcessEvent(TS, DEV, "start", USER),
        E.PostureReport(TS, tuple(E.PostureFinding(check, "detail", (CONT, E.ContainerInfo("c2", pod_name="p")))
                                  for check in CHECKS), 3, 1, Severity.LOW),
        # resources (agent/resources): every counter set; the memory-limit alert about a container, no subject
        E.ContainerResourcesEvent(TS, CONT, E.ContainerUsage(1, *range(1, 26)), 12.5, 97.25, "/k8s.io/x"),
        E.HostResourcesEvent(TS, 8, 12.5, 1.5, 2.5, 3.5, 4.5, 0.5, 0.25, 0.125, 1 << 34, 1 << 33, 1 << 32, 50.0,
                             1 << 30, 1 << 20, 1, 2, 3, 4, 5, 6, 7, 8, (E.HostFilesystem("/", 100, 40, 60, 40.0),),
                             ("disk_io: no such file",)),
        E.AlertEvent(TS, "nw.container_memory_at_limit", "memory at limit", "x", Severity.MEDIUM, output="x",
                     container=CONT),
        # container lifecycle (agent/enrich/lifecycle.py): every step, each with what it carries
        *(cls(TS, CONT, pid=4242) for cls in (E.ContainerCreated, E.ContainerStarted, E.ContainerOOM,
                                              E.ContainerDeleted)),
        E.ContainerExited(TS, CONT, pid=4242, exit_code=137, signal=9, oom_killed=True),
        E.ContainerExec(TS, CONT, pid=4243, exec_id="debug-1", argv=("sh", "-c", "id"), via="direct"),
        E.ImagePulled(TS, CONT.image, "k8s.io", CONT.image_digest, "sha256:" + "cd" * 32),
        E.ImageDeleted(TS, CONT.image, "k8s.io", CONT.image_digest),
    ]


def kernel_samples() -> list[E.Enriched]:
    return [_enriched(op) for op in EVENT_NAMES]


def all_records() -> list[dict]:
    return [flatten(s) for s in kernel_samples() + typed_samples()]


# -- how Elasticsearch sees a record ---------------------------------------------------------------------


def _type(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "long"  # dynamic mapping: an integer maps as long, a float as float; a float into a long is cut
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "object"
    raise TypeError(f"{type(v).__name__} in a record")


def expand(rec: dict, prefix: tuple = ()) -> dict[tuple, set[str]]:
    """Path (tuple of names) -> the JSON types seen there, with dotted keys split as Elasticsearch splits
    them, inside nested objects and objects in arrays too (an array is its elements' type)."""
    out: dict[tuple, set[str]] = defaultdict(set)
    for key, val in rec.items():
        path = prefix + tuple(key.split("."))
        for v in (val if isinstance(val, list) else [val]):
            if isinstance(v, list):
                raise AssertionError(f"{'.'.join(path)}: an array of arrays")
            out[path].add(_type(v))
            if isinstance(v, dict):
                for p, t in expand(v, path).items():
                    out[p] |= t
    return out


def problems(paths: dict[tuple, set[str]], where: dict[tuple, str]) -> list[str]:
    """What Elasticsearch would refuse (or silently coerce) in the union of these paths."""
    bad = []
    for p, types in sorted(paths.items()):
        name = ".".join(p)
        for i in range(1, len(p)):
            parent = p[:i]
            if parent in paths and paths[parent] != {"object"}:
                bad.append(f"{'.'.join(parent)} ({where.get(parent)}) is a value and the parent of {name} "
                           f"({where.get(p)})")
        if len(types) > 1:
            bad.append(f"{name} has types {sorted(types)} ({where.get(p)})")
        if p[0] == "agent":
            bad.append(f"{name} is under agent.*, the log shipper's namespace ({where.get(p)})")
    return bad


def union(records: list[dict]) -> tuple[dict, dict]:
    paths: dict[tuple, set[str]] = defaultdict(set)
    where: dict[tuple, str] = {}
    for rec in records:
        for p, t in expand(rec).items():
            paths[p] |= t
            where.setdefault(p, str(rec.get("event.name")))
    return paths, where


# -- the tests ---------------------------------------------------------------------------------------------


def test_every_kind_has_a_sample():
    """A new op, typed record or protobuf kind without a sample here fails: its keys would go unchecked."""
    kinds = {type(s) for s in typed_samples()}
    assert set(record._FLATTENERS) <= kinds, set(record._FLATTENERS) - kinds
    names = {r["event.name"] for r in all_records()}
    assert set(EVENT_NAMES.values()) <= names
    assert {cls.name for cls in record._FLATTENERS} <= names
    members = {KINDS.member(n) for n in names}
    # agent.* (AgentStatus) is the catch-all for agent status events with no kind of their own; none is made
    # today. Its keys are checked from the schema (test_schema_keys_map).
    no_producer = {"agent"}
    missing = {fd.name for fd in pb.Event.DESCRIPTOR.oneofs_by_name["kind"].fields} - members - no_producer
    assert not missing, f"kinds of the Event oneof without a sample here: {sorted(missing)}"


def test_samples_are_fully_populated():
    """Each optional key appears: an exec carries its flags, a file event its resolved path, a verdict its
    omitted count, a device record its MIG instance ..."""
    keys = set().union(*all_records())
    for k in ("process.executable.memfd", "process.executable.kernel_path", "file.resolved_path", "file.descriptor",
              "file.link.target", "file.target.path", "network.dup.new_fd", "image.findings_omitted",
              "image.scan.error", "device.xid_mnemonic", "device.mig.uuid", "device.path", "alert.count",
              "enforcement.duration_ms", "file.quarantine.path", "policy.error", "nodewarden.tracepoints_missing",
              "profile.workload.kind", "containerd.namespace", "event.truncated", "process.ancestors.name",
              "image.previous_verdict", "image.rejudge_trigger", "posture.findings", "posture.unreadable"):
        assert k in keys, k
    assert {f"device.{n}" for n in DEVICE_FIELDS} <= keys


def test_log_records_map_in_elasticsearch():
    """The JSON log's records (what a shipper sends on as they are), through orjson as the log writes them."""
    recs = [orjson.loads(orjson.dumps(r)) for r in all_records()]
    paths, where = union(recs)
    assert not problems(paths, where), "\n".join(problems(paths, where))


def test_collision_check_finds_the_old_keys():
    """The check itself: the keys issue 15 renamed are each refused."""
    for old in ({"file.path": "a", "file.path.resolved": "b"}, {"image.verdict": "block"},
                {"device.xid": 79, "device.xid.mnemonic": "X"}, {"agent.probes": ["exec"]},
                {"nodewarden.drops.new": {"kernel.net": 1, "kernel.net.sendto_folded": 2}}):
        paths, where = union([old, {"image.verdict.reason": "x"}])
        assert problems(paths, where), old
    paths, where = union([{"a.b": 1}, {"a.b": "x"}, {"c": [{"d": 1}, {"d": 1.5}]}])
    assert len(problems(paths, where)) == 2


def _schema_paths(desc, prefix: tuple, paths: dict, where: dict, seen: tuple = ()) -> None:
    """Each (key) of a message as a path, nested messages (Event.process, Finding in image.findings, the
    kinds and their subjects) under their own key or in place; map fields are objects."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    for fd in desc.fields:
        key = key_of(fd)
        msg = fd.message_type
        if msg is not None and msg.GetOptions().map_entry:
            p = prefix + tuple(key.split("."))
            paths[p].add("object")
            where.setdefault(p, desc.name)
            continue
        if msg is not None:
            if msg.full_name in seen:
                continue
            sub = prefix + tuple(key.split(".")) if key else prefix
            if key:
                paths[sub].add("object")
                where.setdefault(sub, desc.name)
            _schema_paths(msg, sub, paths, where, (*seen, msg.full_name))
            continue
        if not key:
            continue  # extra_json
        p = prefix + tuple(key.split("."))
        t = {FD.TYPE_STRING: "string", FD.TYPE_BOOL: "boolean", FD.TYPE_DOUBLE: "float", FD.TYPE_FLOAT: "float",
             FD.TYPE_ENUM: "string", FD.TYPE_BYTES: "string"}.get(fd.type, "long")
        if key in ("timestamp",):
            t = "string"  # RFC 3339 text in the record (the field is ns since the epoch)
        if key == "event.truncated":
            t = "boolean"
        paths[p].add(t)
        where.setdefault(p, f"{desc.name}.{fd.name}")


def test_schema_keys_map():
    """Every key the protobuf schema declares, over all messages (kinds without a producer too)."""
    paths: dict[tuple, set[str]] = defaultdict(set)
    where: dict[tuple, str] = {}
    _schema_paths(pb.Event.DESCRIPTOR, (), paths, where)
    assert ("nodewarden", "message") in paths and ("image", "findings", "severity") in paths
    assert not problems(paths, where), "\n".join(problems(paths, where))
    # and the schema agrees with the records on every path both have
    rec_paths, rec_where = union(all_records())
    both = {p: paths[p] | rec_paths[p] for p in paths.keys() & rec_paths.keys()}
    assert not problems(both, where), "\n".join(problems(both, where))


# Keys that travel in extra_json by design: bench.counter (bench.tick, the bench's own load, has no kind of
# its own) and event.severity when the record's word is not the enum's own ("warning" for medium).
_NO_FIELD = {"bench.counter", "event.severity"}


def _stamped(rec: dict, seq: int):
    ev = to_event(rec)
    ev.node, ev.agent_id, ev.boot_id, ev.seq = "node-1", "agent-1", "boot-1", seq  # as the exporter stamps
    return ev


def test_codec_round_trip_maps():
    """Through the gRPC codec: each record comes back as it went (plus the identity keys), with every key
    in a field of its own (none left to extra_json), and what comes back maps too."""
    back = []
    for i, rec in enumerate(all_records(), 1):
        ev = _stamped(rec, i)
        extra = set(orjson.loads(ev.extra_json)) if ev.extra_json else set()
        if rec["event.name"] == "alert":  # proto Alert has no device fields: a device alert's go in extra_json
            extra = {k for k in extra if not k.startswith("device.")}
        assert extra <= _NO_FIELD, (rec["event.name"], extra)
        got = to_record(pb.Event.FromString(ev.SerializeToString()))
        ident = {"host.name": got["host.name"], "nodewarden.agent_id": "agent-1", "nodewarden.boot_id": "boot-1",
                 "seq": i}
        assert got == {**rec, **ident}, rec["event.name"]
        back.append(got)
    paths, where = union(back)
    assert not problems(paths, where), "\n".join(problems(paths, where))


def test_collector_store_maps(tmp_path):
    """What the collector stores (a real SQLite store) and its readers decode (nwwire's to_record)."""
    recs = all_records()
    store = Store(str(tmp_path / "ev.db"), retention_age_s=0, retention_bytes=0, retention_interval=3600)
    store.start()
    try:
        assert store.write([_stamped(r, i) for i, r in enumerate(recs, 1)]) == (len(recs), 0)
        stored = [to_record(pb.Event.FromString(body)) for _, _, body in store.query(EventFilter(), 10_000)]
    finally:
        store.stop()
    assert len(stored) == len(recs)
    assert {r["event.name"] for r in stored} == {r["event.name"] for r in recs}
    paths, where = union(stored)
    assert not problems(paths, where), "\n".join(problems(paths, where))
    assert not any(p[0] == "agent" for p in paths)
    assert ("nodewarden", "agent_id") in paths and ("nodewarden", "drops", "new", "kernel", "net") in paths


def test_verdict_record_caps_and_says_how_many_it_left_out():
    recs = [flatten(s) for s in typed_samples() if isinstance(s, E.VerdictEvent)]
    full, small = recs
    assert len(full["image.findings"]) == MAX_FINDINGS and full["image.findings_count"] == MAX_FINDINGS + 5
    assert full["image.findings_omitted"] == 5 and full["image.findings"][0]["action"] == "block"  # acted-on first
    assert "image.findings_omitted" not in small and small["image.findings_count"] == 3
    from agent.outputs.log import decision_line

    assert "(205 findings, 5 not in the record)" in decision_line(full)


def test_event_names_are_values_not_keys():
    """agent.ready, agent.drops and agent.policy stay event names: values of event.name, never keys."""
    names = {r["event.name"] for r in all_records()}
    assert {"agent.ready", "agent.drops", "agent.policy"} <= names
    assert not any(k.startswith("agent.") or k == "agent" for r in all_records() for k in r)


def test_old_rule_field_names_are_refused_with_the_new_name():
    """A custom rule written against a renamed key: one line naming the new field."""
    for old, new in F.RENAMED.items():
        with pytest.raises(F.FieldError, match=re.escape(f"field {old!r} is now {new!r}")):
            F.resolve(old)
        with pytest.raises(ConditionError, match=re.escape(f"is now {new!r}")):
            compile_condition(f"{old} startswith /etc/", {}, {})
        assert F.resolve(new).name == new
    assert F.resolve("fd.name").name == "file.resolved_path"  # Falco's name follows


def _stage_names_in(tree: ast.AST) -> set[str]:
    """String constants that name a stage: in a drops()/_stage_drops()/drop_totals() body, in what is
    assigned to a `_drops`/`drops` attribute, or as the subscript of one (`self._drops["x.y"] += 1`)."""
    out: set[str] = set()

    def strings(node):
        return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in ("drops", "_stage_drops", "drop_totals"):
            out |= strings(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr in ("_drops", "drops") for t in targets):
                out |= strings(node.value) if node.value is not None else set()
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("_drops", "drops"):
            out |= strings(node.slice)
    return {s for s in out if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", s)}


def test_drop_stages_listed():
    """Every drop stage named in the agent's sources is in the DropReport sample above, so its name is
    checked for collisions (kernel.<family> and profile_kill.<what> are made from lists the sample reads)."""
    named: set[str] = set()
    for p in (ROOT / "agent").rglob("*.py"):
        named |= _stage_names_in(ast.parse(p.read_text(), str(p)))
    # dotted names only: bare strings there are a stage's inner counters (reported under a dotted name) or
    # the pipeline's own stages (queue, decode, output, crash: in the sample)
    missing = {n for n in named if "." in n} - set(_stages())
    assert not missing, f"drop stages not in this test's sample: {sorted(missing)}"

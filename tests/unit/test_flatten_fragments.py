"""The flattener with cached fragments (agent/outputs/record.py from_enriched) and the batch enricher
(Enricher.enrich_in_batch) against their plain references: the same keys, in the same order, with
the same values, on bench/pipeline.py's replay mix and across the changes that must not reuse a
fragment (an exec replacing a process's ProcInfo, a new ancestry tuple, a container's info changing)."""

from __future__ import annotations

import dataclasses
import os

from agent.enrich.enricher import Enricher
from agent.enrich.proctable import ProcessTable
from agent.events import ContainerInfo, Enriched, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent, ProcInfo
from agent.outputs import record
from agent.sensors import REGISTRY
from agent.sensors.common import BootClock
from tests.unit.detect_events import file_rec

_DECODERS = {op: d for s in REGISTRY.values() for op, d in s.decoders.items()}


def plain(en: Enriched) -> dict:
    """The flattener as it was before fragments (issue 17): every key made per event. The reference."""
    ev = en.event
    rec = {"event.name": ev.name, "timestamp": record.rfc3339(ev.ts_ns), "event.severity": "info",
           "process.pid": ev.pid, "process.thread.id": ev.tid, "process.parent_pid": ev.ppid,
           "process.name": ev.comm, "user.id": ev.uid, "group.id": ev.gid, "cgroup.id": ev.cgroup_id,
           "process.mount_ns": ev.mntns}
    p = en.process
    if p is not None:
        rec["process.executable.path"] = p.exe
        rec["process.command_line"] = " ".join(p.argv)
        if p.start_ns:
            rec["process.start_time"] = record.rfc3339(p.start_ns)
    if en.parent is not None:
        rec["process.parent.executable.path"] = en.parent.exe
        rec["process.parent.command_line"] = " ".join(en.parent.argv)
    if en.ancestors:
        rec["process.ancestors.name"] = [a.comm for a in en.ancestors]
        rec["process.ancestors.executable.path"] = [a.exe for a in en.ancestors]
    if en.path_resolved:
        rec["file.resolved_path"] = en.path_resolved
    if ev.truncated:
        rec["event.truncated"] = True
    record._add_kind(rec, ev)  # the kind's keys (the same functions, reached by isinstance)
    c = en.container
    if c is not None:
        rec["container.id"] = c.id
        for key, val in (("container.name", c.name), ("container.image.name", c.image),
                         ("container.image.digest", c.image_digest), ("container.runtime", c.runtime),
                         ("k8s.pod.name", c.pod_name), ("k8s.namespace.name", c.pod_namespace)):
            if val:
                rec[key] = val
    return rec


def _mix_events(containers):
    from bench.pipeline import _prologue, _round
    from tests.unit.replay_records import PID

    clock = BootClock()
    table = ProcessTable(ancestry_max=8)
    enricher = Enricher(table, containers)
    recs = _prologue(PID + 1000) + _round(PID + 1000) * 3
    return enricher, [_DECODERS[r[0]](r, clock) for r in recs]


def _same(a: dict, b: dict) -> None:
    assert list(a.items()) == list(b.items())


def test_mix_flattens_as_the_plain_flattener():
    from bench.pipeline import _containers

    enricher, evs = _mix_events(_containers())
    kinds = set()
    for ev in evs:
        en = enricher.enrich(ev)
        kinds.add(type(ev))
        _same(record.from_enriched(en), plain(en))
    assert {ExecEvent, ForkEvent, ExitEvent, FileEvent, NetEvent} <= kinds


def test_batch_enricher_gives_what_enrich_gives():
    from bench.pipeline import _containers

    resolver = _containers()
    a, evs = _mix_events(resolver)
    b, _ = _mix_events(resolver)
    from agent.sensors import native

    from_memo = native.MODULE.from_memo if native.MODULE is not None else None
    memo: dict = {}
    hits = 0
    for i, ev in enumerate(evs):
        if i % 50 == 0:
            memo = {}  # a new batch
        want = a.enrich(ev)
        got = from_memo(memo, ev) if from_memo is not None else None  # the compiled hit, as the pipeline asks
        hits += got is not None
        if got is None:
            got = b.enrich_in_batch(ev, memo)
        assert got == want
    assert from_memo is None or hits > len(evs) // 2


def test_a_fragment_is_not_reused_across_changes():
    ev = _DECODERS[10](file_rec(10, "/tmp/x", flags=os.O_WRONLY, ret=3), BootClock())
    p1 = ProcInfo(5, 1, "/bin/sh", ("sh",), 0, 10**18, "sh")
    p2 = ProcInfo(5, 1, "/usr/bin/python3", ("python3", "-c", "x"), 0, 10**18, "python3")
    parent = ProcInfo(1, 0, "/sbin/init", ("init",), 0, 0, "init")
    c1 = ContainerInfo("c" * 64, image="a:1", pod_name="web-0", pod_namespace="shop")
    c2 = ContainerInfo("c" * 64, image="a:2", name="web", pod_name="web-0", pod_namespace="shop")
    for en in (Enriched(ev, p1, parent, c1, (parent,)), Enriched(ev, p2, parent, c1, (parent,)),
               Enriched(ev, p2, parent, c2, (parent, p1)), Enriched(ev, p2, None, None, ()),
               Enriched(ev, None, parent, c2, ()), Enriched(ev, None, None, None, (), "/abs")):
        _same(record.from_enriched(en), plain(en))
        _same(record.from_enriched(en), plain(en))  # the second time from the cache


def test_an_oversized_fragment_is_written_the_same_and_not_kept():
    """Hostile records (kilobytes of escaped argv) make the same record, but their fragment is not cached:
    4,096 cached fragments of that size would hold ~25 MB."""
    ev = _DECODERS[10](file_rec(10, "/tmp/x", flags=os.O_WRONLY, ret=3), BootClock())
    big = ProcInfo(7, 1, "/bin/sh", ("sh", "-c", "\\x9f" * 2000), 0, 10**18, "sh")
    en = Enriched(ev, big, None, None, ())
    record._proc_parts.clear()
    _same(record.from_enriched(en), plain(en))
    assert not record._proc_parts
    small = Enriched(ev, ProcInfo(8, 1, "/bin/sh", ("sh",), 0, 10**18, "sh"), None, None, ())
    _same(record.from_enriched(small), plain(small))
    assert len(record._proc_parts) == 1


def test_records_do_not_share_their_lists():
    ev = _DECODERS[10](file_rec(10, "/tmp/x"), BootClock())
    parent = ProcInfo(1, 0, "/sbin/init", ("init",), 0, 0, "init")
    en = Enriched(ev, parent, parent, None, (parent,))
    a, b = record.from_enriched(en), record.from_enriched(en)
    a["process.ancestors.name"].append("x")
    assert b["process.ancestors.name"] == ["init"]


def test_compiled_flattener_gives_the_plain_records():
    """The compiled flattener (agent/sensors/_native.c) on the mix and on edge values: the plain records,
    key for key; what it leaves to Python (exec, system events) is None from flatten_compiled."""
    import pytest

    from agent.sensors import native

    if native.MODULE is None:
        pytest.skip(f"native module not loaded: {native.STATUS}")
    from bench.pipeline import _containers

    mod = native.MODULE
    mod.clear_parts()
    enricher, evs = _mix_events(_containers())
    compiled = 0
    for ev in evs:
        en = enricher.enrich(ev)
        rec = mod.flatten_compiled(en)
        if rec is None:
            assert isinstance(ev, ExecEvent)
        else:
            compiled += 1
            _same(rec, plain(en))
        _same(mod.flatten(en), plain(en))
    assert compiled > len(evs) * 0.9
    big = Enriched(_DECODERS[10](file_rec(10, "/x"), BootClock()), None, None, None)
    odd = Enriched(dataclasses.replace(big.event, ts_ns=2**70), None, None, None)
    assert mod.flatten_compiled(odd) is None  # a timestamp past int64: the Python flattener's
    _same(mod.flatten(odd), plain(odd))


def test_batch_enricher_follows_process_changes_within_a_batch():
    """Within one batch: a parent execs, a grandparent exits, a pid is reused, all between a process's
    events; each event is enriched as enrich() would (what the memo held of them is forgotten)."""
    from tests.unit.replay_records import PID, exec_rec, exit_rec, fork_rec, open_rec

    g, s, c = PID + 7000, PID + 7001, PID + 7002
    recs = [exec_rec("/bin/init-ish", ["gp"], pid=g, ppid=1), fork_rec(s, pid=g, ppid=1),
            exec_rec("/bin/bash", ["bash"], pid=s, ppid=g), fork_rec(c, pid=s, ppid=g),
            exec_rec("/usr/bin/worker", ["worker"], pid=c, ppid=s),
            open_rec("/tmp/a", pid=c, ppid=s), open_rec("/tmp/b", pid=c, ppid=s),
            exec_rec("/usr/bin/zsh", ["zsh"], pid=s, ppid=g),  # the parent's image changes
            open_rec("/tmp/c", pid=c, ppid=s), open_rec("/tmp/d", pid=s, ppid=g),
            exit_rec(0, pid=g, ppid=1),  # the grandparent goes
            open_rec("/tmp/e", pid=c, ppid=s), open_rec("/tmp/f", pid=s, ppid=g),
            exit_rec(0, pid=c, ppid=s), fork_rec(c, pid=s, ppid=g),  # the pid comes back as a new child
            open_rec("/tmp/g", pid=c, ppid=s)]
    clock = BootClock()
    evs = [_DECODERS[r[0]](r, clock) for r in recs]
    a, b = Enricher(ProcessTable(ancestry_max=8)), Enricher(ProcessTable(ancestry_max=8))
    memo: dict = {}
    for ev in evs:
        want = a.enrich(ev)
        got = b.enrich_in_batch(ev, memo)
        assert got == want, ev
        _same(record.from_enriched(got), plain(want))


def test_compiled_join_norm_is_posixpath():
    """The compiled resolution of a cwd-relative path (from_memo) against posixpath, on random paths made of
    the parts normpath treats specially ('', '.', '..', leading slashes) and UTF-8."""
    import posixpath
    import random

    import pytest

    from agent.sensors import native

    if native.MODULE is None:
        pytest.skip(f"native module not loaded: {native.STATUS}")
    join_norm = native.MODULE.join_norm
    rnd = random.Random(17)
    parts = ["", ".", "..", "a", "bb", "caf\u00e9", "...", ".x", "x.", "\U0001f600"]
    cases = [("/", "x"), ("//", "x"), ("///", "x"), ("/a/", "../.."), ("a", "../../b"), ("..", ".."), (".", "."),
             ("/a/b", "./c//d/../e/"), ("rel", "")]
    for _ in range(3000):
        cwd = rnd.choice(["", "/", "//", "///"]) + "/".join(rnd.choice(parts) for _ in range(rnd.randrange(0, 5)))
        path = "/".join(rnd.choice(parts) for _ in range(rnd.randrange(1, 5)))
        if cwd and not path.startswith("/"):
            cases.append((cwd, path))
    for cwd, path in cases:
        assert join_norm(cwd, path) == posixpath.normpath(posixpath.join(cwd, path)), (cwd, path)
    assert join_norm("/a", "\udcff") is None  # not UTF-8: Python resolves it

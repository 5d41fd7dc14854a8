"""The compiled hot path (agent/sensors/_native.c) on what a hostile replay file, a fuzzer or an odd
caller hands it: each test here is one defect found in review (native-review, issue 17) that crashed,
read out of bounds or raised where the Python reference does not, plus a fuzz of the whole worker path
and a short leak check. test_native_sanitize.py runs this file again under AddressSanitizer + UBSan."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys

import pytest

from agent.events import ContainerInfo, Enriched, Op, ProcInfo
from agent.outputs import record
from agent.sensors import native
from agent.sensors.common import BootClock
from tests.unit.detect_events import file_rec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def mod():
    if native.MODULE is None:
        pytest.skip(f"the compiled path is not in use: {native.STATUS}")
    return native.MODULE


def _file_event(mod, path: str = "/etc/passwd"):
    return mod.decode_file(file_rec(Op.FILE_OPEN, path, pid=4242, ppid=1), BootClock())


def _run_args(mod, batch, start, enrich=None, watch=None, watch_spec=None, mode=1):
    """run()'s arguments for `batch` from `start`: the file and process kinds compiled, rules off, a fresh
    process table's enrich unless one is given, the watch (tests/unit/test_pipeline_watchers.py) and what the
    records are encoded as (1 JSON lines, 2 Events, 3 both)."""
    from agent.enrich.enricher import Enricher
    from agent.enrich.proctable import ProcessTable

    mask = bytearray(256)
    mask[Op.FILE_OPEN] = mask[Op.FILE_CLOSE] = mask[Op.FILE_RENAME] = 1
    mask[Op.FORK], mask[Op.EXIT], mask[Op.EXEC] = 3, 4, 5
    enrich = enrich or Enricher(ProcessTable(), None).enrich_in_batch
    return (batch, start, BootClock(), {}, None, bytes(mask), 0, [], [], [], enrich, False, watch, watch_spec, mode)


def test_run_refuses_a_mode_it_has_no_encoder_for(mod):
    """run()'s last argument says what the records are encoded as: 1, 2 or 3, nothing else."""
    batch = [file_rec(Op.FILE_OPEN, "/x")]
    for mode in (0, 4, -1):
        with pytest.raises(ValueError, match="mode 1"):
            mod.run(*_run_args(mod, batch, 0, mode=mode))
    assert mod.run(*_run_args(mod, batch, 0, mode=3))[0] == 1


def test_run_refuses_a_negative_start(mod):
    """run() took its start index unchecked: -1 read the list's item before its first (out of bounds)."""
    batch = [file_rec(Op.FILE_OPEN, "/x")]
    with pytest.raises(IndexError):
        mod.run(*_run_args(mod, batch, -1))
    with pytest.raises(IndexError):
        mod.run(*_run_args(mod, batch, -(2**40)))
    assert mod.run(*_run_args(mod, batch, 5)) == (5, None, None)  # past the end: nothing to do


def test_run_survives_what_its_enrich_callback_does(mod):
    """run() calls back into Python (Enricher.enrich_in_batch) for process events and a context's first
    event: a callback that empties the batch, returns something else than an Enriched, or raises, is met
    with the batch's size read again, the object handed back to Python, the exception passed on."""
    from agent.enrich.enricher import Enricher
    from agent.enrich.proctable import ProcessTable
    from tests.unit.replay_records import exec_rec, exit_rec, fork_rec

    batch = [fork_rec(9), exec_rec("/bin/x", ["x"]), file_rec(Op.FILE_OPEN, "/x"), exit_rec(0)]

    def shrink(ev, memo):
        batch.clear()
        return Enricher(ProcessTable(), None).enrich(ev)

    args = _run_args(mod, batch, 0, shrink)
    assert mod.run(*args)[0] == 1 and batch == []  # the fork (no record), then nothing left to read
    batch[:] = [exec_rec("/bin/x", ["x"])]
    i, ev, en = mod.run(*_run_args(mod, batch, 0, lambda ev, memo: "not an Enriched"))
    assert (i, en) == (0, "not an Enriched") and ev.filename == "/bin/x"

    def fails(ev, memo):
        raise LookupError("the table is gone")

    with pytest.raises(LookupError):
        mod.run(*_run_args(mod, batch, 0, fails))


def test_a_list_that_holds_itself_is_not_a_stack_overflow(mod):
    """json_line wrote a list's items recursively: a record value that is a list holding itself (a
    ContainerInfo made in Python takes any value) ran down the C stack until the agent died. A list in a
    list is now orjson's to judge (json_line says None), and that one raises as with the Python path."""
    loop: list = []
    loop.append(loop)
    c = ContainerInfo("c" * 64, name=loop)
    en = Enriched(_file_event(mod), None, None, c, ())
    assert mod.json_line(en) is None
    nested = Enriched(_file_event(mod), None, None, ContainerInfo("d" * 64, name=[["a"], "b"]), ())
    assert mod.json_line(nested) is None
    assert mod.flatten(nested)["container.name"] == [["a"], "b"]


def test_a_big_fd_flattens_as_python_does(mod):
    """`ev.fd >= 0` was PyLong_AsLong in C: an fd past a C long (an event made in Python) raised
    OverflowError from flatten and json_line where record.py writes the key."""
    ev = dataclasses.replace(_file_event(mod), fd=2**70)
    en = Enriched(ev, None, None, None, ())
    want = record._from_enriched(en)
    assert want["file.descriptor"] == 2**70
    assert mod.flatten(en) == want
    assert mod.json_line(en) is None  # past 64 bits: orjson's to refuse, as on the dict path
    neg = Enriched(dataclasses.replace(ev, fd=-(2**70)), None, None, None, ())
    assert mod.flatten(neg) == record._from_enriched(neg)
    assert "file.descriptor" not in mod.flatten(neg)


def test_from_memo_with_a_relative_path_and_odd_contexts(mod):
    """from_memo joins a relative path to the process's cwd while it holds the memo's entry's fields
    (borrowed before: join_norm allocates); every branch still gives what the Python enricher would."""
    proc = ProcInfo(4242, 1, "/bin/sh", ("sh",), 0, 0, "sh", "/srv/app")
    rel = mod.decode_file(file_rec(Op.FILE_OPEN, "../x/./y", pid=4242, ppid=1), BootClock())
    key = (rel.pid, rel.ppid, rel.cgroup_id, rel.mntns)
    hit = Enriched(rel, proc, None, None, ())
    en = mod.from_memo({key: hit}, rel)
    assert en.path_resolved == "/srv/x/y" and en.process is proc
    no_cwd = Enriched(rel, ProcInfo(4242, 1, "/bin/sh", ("sh",), 0, 0, "sh", ""), None, None, ())
    assert mod.from_memo({key: no_cwd}, rel).path_resolved == ""
    odd = Enriched(rel, "not a ProcInfo", None, None, ())
    assert mod.from_memo({key: odd}, rel) is None  # Python decides
    surrogate = Enriched(rel, ProcInfo(4242, 1, "/bin/sh", ("sh",), 0, 0, "sh", "/a\udcff"), None, None, ())
    assert mod.from_memo({key: surrogate}, rel) is None
    for _ in range(2000):  # every path of the refcounts, many times: a leaked or lost reference shows below
        mod.from_memo({key: hit}, rel)
        mod.from_memo({key: odd}, rel)
    assert sys.getrefcount(proc) < 10


def _fuzz_records(seed: int, n: int) -> list[bytes]:
    from tests.unit.native_leakcheck import malformed

    return malformed(random.Random(seed), n)


def test_fuzzed_records_decode_as_python_does(mod):
    """Random records under every op with wild length fields (past PATH_MAX, ARGS_MAX, ADDR_MAX, 2**32-1):
    each compiled decoder gives the Python decoder's event or its error class, never a crash."""
    from agent.sensors import file, net, process

    pairs = ((mod.decode_file, file.decode_file), (mod.decode_net, net.decode_net),
             (mod.decode_exec, process.decode_exec), (mod.decode_fork, process.decode_fork),
             (mod.decode_exit, process.decode_exit))
    clock = BootClock()
    for raw in _fuzz_records(3, 4000):
        for fast, ref in pairs:
            try:
                want = ref(raw, clock)
            except Exception as e:  # noqa: BLE001 (the class is compared)
                with pytest.raises(type(e)):
                    fast(raw, clock)
                continue
            assert fast(raw, clock) == want


def test_fuzzed_batches_through_the_worker_are_counted(mod):
    """The worker's compiled loop (run, from_memo, json_line) on fuzzed batches mixed with good records:
    every record is delivered or a counted drop (what bench/pipeline.py's accounting checks)."""
    from bench.pipeline import _pipeline, _prologue, _round, accounting

    # (no empty records, forks, bench marks or cgroup records: bench's accounting counts forks by op, an empty
    # record has none, and the other two make no event record by design, in Python as compiled)
    fuzz = [r for r in _fuzz_records(5, 3000) if r and r[0] not in (Op.FORK, Op.BENCH, Op.CGROUP_MKDIR)]
    good = _round(20_000)
    rnd = random.Random(7)
    fed = list(_prologue(20_000))
    with open(os.devnull, "wb") as devnull:
        p = _pipeline(True, devnull)
        p._process(fed)
        for i in range(0, len(fuzz), 200):
            batch = fuzz[i:i + 200] + good
            rnd.shuffle(batch)
            p._process(batch)
            fed += batch
        p._release(force=True)
        p._flush_alerts(force=True)
    ok, line = accounting(p, fed)
    assert ok, line


def test_leak_check_short():
    """tests/unit/native_leakcheck.py, short: the replay mix's RSS flat after its first step (a reference
    leaked per record is ~1 KB: 200,000 records would add 200 MB)."""
    done = subprocess.run([sys.executable, "-m", "tests.unit.native_leakcheck", "--records", "300000", "--step",
                           "100000", "--mode", "mix", "--max-growth", "12"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_what_the_module_makes_is_not_walked_by_the_collector(mod):
    """Events, Enricheds and ProcInfos made here are untracked (they cannot be in a cycle): tracked, a
    4,096-record batch's objects were what each young collection walked and promoted, ~7 % more
    instructions a record than 256-record batches (issue 17). The Python-made ones stay tracked; a
    collection still frees a cycle through a container an event is referred to by."""
    import gc

    ev = _file_event(mod)
    proc = mod.procinfo(4242, 1, "/bin/sh", ("sh",), 0, 0, "sh", "/")
    en = mod.enriched(ev, proc, None, None, (), "")
    assert not gc.is_tracked(ev) and not gc.is_tracked(proc) and not gc.is_tracked(en)
    assert gc.is_tracked(ProcInfo(1, 0, "/sbin/init", ("init",), 0, 0, "init"))
    cycle: list = [en]
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_a_long_command_line_is_written_the_same_uncached(mod):
    """A process fragment past 4,096 characters is made again per event rather than kept (the caches'
    bound): the same line and record each time, equal to the Python flattener's."""
    import orjson

    argv = ("java",) + tuple(f"-Dx{i}=" + "\\xff" * 40 for i in range(40))
    proc = ProcInfo(4242, 1, "/usr/bin/java", argv, 0, 10**18, "java", "/")
    for en in (Enriched(_file_event(mod), proc, proc, None, (proc,)), Enriched(_file_event(mod), proc, None, None, ())):
        want = record._from_enriched(en)
        for _ in range(3):
            assert mod.flatten(en) == want
            assert mod.json_line(en) == orjson.dumps(want, option=orjson.OPT_APPEND_NEWLINE)


def test_run_asks_the_memo_again_after_its_enrich_callback(mod):
    """run() takes a record's context from the last memo hit when the record's header objects are that hit's;
    an enrich callback (which may change the memo) in between makes it ask the memo again: here the callback
    forgets the context, so the next record of it is enriched by the callback too, not by the stale hit."""
    from agent.enrich.enricher import Enricher
    from agent.enrich.proctable import ProcessTable
    from tests.unit.replay_records import exit_rec

    enricher = Enricher(ProcessTable(), None)
    calls = []

    def enrich(ev, memo):
        calls.append(type(ev).__name__)
        if type(ev).__name__ == "ExitEvent":
            memo.clear()
        return enricher.enrich_in_batch(ev, memo)

    batch = [file_rec(Op.FILE_OPEN, "/a", pid=1, ppid=0), file_rec(Op.FILE_OPEN, "/b", pid=1, ppid=0),
             exit_rec(0, pid=2, ppid=0), file_rec(Op.FILE_OPEN, "/c", pid=1, ppid=0)]
    args = list(_run_args(mod, batch, 0, enrich))
    assert mod.run(*args)[0] == 4
    assert calls == ["FileEvent", "ExitEvent", "FileEvent"]  # /b was the memo's hit, /c not (forgotten)
    assert len(args[7]) == 4

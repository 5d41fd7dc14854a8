"""The compiled JSON line (agent/sensors/_native.c json_line) against what the JSON log writes for the
record's dict (orjson.dumps(record.from_enriched(en)) + newline): byte for byte on bench/pipeline.py's
replay mix, on strings orjson escapes (quotes, backslashes, control bytes, UTF-8), on random strings,
and None (the dict path decides) where orjson would write otherwise or refuse (a surrogate, an int past
64 bits)."""

from __future__ import annotations

import dataclasses
import random

import orjson
import pytest

from agent.events import ContainerInfo, Enriched, ExecEvent, ProcInfo
from agent.outputs import record
from agent.sensors import abi, native
from agent.sensors.common import BootClock
from tests.unit.detect_events import file_rec, net_rec
from tests.unit.test_flatten_fragments import _DECODERS, _mix_events

pytestmark = pytest.mark.skipif(native.MODULE is None, reason=f"native module not loaded: {native.STATUS}")


def _line(en: Enriched) -> bytes:
    return orjson.dumps(record.from_enriched(en), option=orjson.OPT_APPEND_NEWLINE)


def test_mix_lines_are_orjson_lines():
    from bench.pipeline import _containers

    mod = native.MODULE
    mod.clear_parts()
    enricher, evs = _mix_events(_containers())
    done = 0
    for ev in evs:
        en = enricher.enrich(ev)
        got = mod.json_line(en)
        if got is None:
            assert isinstance(ev, ExecEvent)
            continue
        done += 1
        assert got == _line(en)
    assert done > len(evs) * 0.9


STRANGE = ["", "plain", 'q"uote', "back\\slash", "nl\nline", "\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f", "caf\u00e9",
           "\u2028\u2029", "\U0001f600", "/", "</script>", "\\xff"]


def strange_events():
    """Enriched file opens with each STRANGE string in every text field (path, comm, the processes', the
    container's, the resolved path), and bare: what the compiled encoders must write as their references do
    (test_native_pb.py too)."""
    ev0 = _DECODERS[10](file_rec(10, "/x", flags=1, ret=3), BootClock())
    for s in STRANGE:
        ev = dataclasses.replace(ev0, path=s, comm=s)
        p = ProcInfo(9, 1, s, (s, s), 0, 10**18, s, s)
        c = ContainerInfo("c1", name=s, image=s, pod_name=s, pod_namespace="ns")
        yield Enriched(ev, p, p, c, (p, p), s)
        yield Enriched(ev, None, None, None)


def random_events(seed: int, n: int):
    """Enriched connects with random strings (any code point but surrogates) as address, comm and exe."""
    rnd = random.Random(seed)
    ev0 = _DECODERS[20](net_rec(20, "10.0.0.1", 443), BootClock())
    for _ in range(n):
        s = "".join(chr(rnd.choice([rnd.randrange(0, 0x80), rnd.randrange(0x80, 0xD800),
                                    rnd.randrange(0xE000, 0x110000)])) for _ in range(rnd.randrange(0, 12)))
        yield Enriched(dataclasses.replace(ev0, address=s, comm=s), ProcInfo(1, 0, s, (s,), 0, 0, s), None, None)


def test_escaping_is_orjson_escaping():
    for en in strange_events():
        assert native.MODULE.json_line(en) == _line(en), repr(en.event.path)


def test_random_strings():
    for en in random_events(17, 500):
        assert native.MODULE.json_line(en) == _line(en)


def test_what_orjson_refuses_or_writes_otherwise_goes_to_the_dict_path():
    mod = native.MODULE
    ev0 = _DECODERS[10](file_rec(10, "/x"), BootClock())
    surrogate = Enriched(dataclasses.replace(ev0, path="\udcff"), None, None, None)
    assert mod.json_line(surrogate) is None
    with pytest.raises(orjson.JSONEncodeError):
        _line(surrogate)
    huge = Enriched(dataclasses.replace(ev0, cgroup_id=2**64), None, None, None)
    assert mod.json_line(huge) is None
    assert mod.json_line(Enriched(dataclasses.replace(ev0, pid=2**64 - 1), None, None, None)) == _line(
        Enriched(dataclasses.replace(ev0, pid=2**64 - 1), None, None, None))
    assert mod.json_line(Enriched(dataclasses.replace(ev0, ret=-(2**63)), None, None, None)) == _line(
        Enriched(dataclasses.replace(ev0, ret=-(2**63)), None, None, None))
    assert mod.json_line(Enriched(dataclasses.replace(ev0, ret=1.5), None, None, None)) is None  # not an int
    bad_proc = ProcInfo(1, 0, "\ud800", ("x",), 0, 0)
    assert mod.json_line(Enriched(ev0, bad_proc, None, None)) is None
    assert mod.json_line(Enriched(ev0, ProcInfo(1, 0, "/x", (1, 2), 0, 0), None, None)) is None  # argv of ints
    assert mod.json_line("not an event") is None


def test_an_event_made_without_its_init_is_left_to_python():
    """Slots never set (object.__new__): the compiled paths leave it to the Python flattener, which
    raises AttributeError, never a crash."""
    from agent.events import FileEvent

    mod = native.MODULE
    en = Enriched(object.__new__(FileEvent), None, None, None)
    assert mod.json_line(en) is None
    assert mod.flatten_compiled(en) is None
    with pytest.raises(AttributeError):
        mod.flatten(en)


def _exec_enriched(ev: ExecEvent) -> Enriched:
    """An exec enriched as the pipeline does: the table's entry is made from the event itself."""
    from agent.enrich.enricher import Enricher
    from agent.enrich.proctable import ProcessTable

    table = ProcessTable(ancestry_max=8)
    table._put(ProcInfo(ev.ppid, 1, "/bin/bash", ("bash", "-l"), 0, 10**18, "bash", "/root"))
    return Enricher(table, None).enrich(ev)


def exec_variants():
    """(what, Enriched) of execs with every optional key alone and all together, escaped arguments, no
    arguments, each also with a container and without ancestry; decoded here, checked against the Python
    decoder (test_native_pb.py takes them too)."""
    from agent.sensors.process import decode_exec
    from tests.unit.replay_records import EXEC_EVENT, Op, _pack, header

    clock = BootClock()
    fn, args = b"/usr/bin/t\xffol", b'a\0"quoted"\0back\\slash\0caf\xc3\xa9\0'
    base = dict(filename_len=len(fn), args_len=len(args), filename=fn, args=args)
    extras = [{}, {"exe_ino": 1234, "exe_dev": 2049}, {"exe_path_len": 9, "exe_path": b"/memfd:x\0", "exe_mnt_id": 27},
              {"cwd_len": 5, "cwd": b"/srv\0"}, {"exe_flags": 0xFF}, {"exe_flags": abi.EXE_UPPER},
              {"args_len": 0, "args": b""}]
    extras.append({k: v for e in extras[:5] for k, v in e.items()})  # with every flag
    container = ContainerInfo("c1", name="web", image="shop/web:1", pod_name="web-0", pod_namespace="shop")
    for extra in extras:
        raw = _pack(EXEC_EVENT, header(Op.EXEC), **{**base, **extra})
        ev = native.MODULE.decode_exec(raw, clock)
        assert ev == decode_exec(raw, clock)  # the reference
        en = _exec_enriched(ev)
        for one in (en, dataclasses.replace(en, container=container), dataclasses.replace(en, ancestors=())):
            yield extra, one


def test_exec_lines_are_orjson_lines():
    """An exec's line (issue 17: the pipeline's compiled loop writes it), the container part after the exec
    keys."""
    for extra, en in exec_variants():
        got = native.MODULE.json_line(en)
        assert got is not None, extra
        assert got == _line(en), extra


def test_an_exec_whose_process_is_not_its_own_goes_to_the_dict_path():
    """The exec keys overwrite process.executable.path and process.command_line where the process part put
    them; written here only when the part says the same (the table's entry made from this exec)."""
    from tests.unit.replay_records import exec_rec

    mod = native.MODULE
    ev = native.MODULE.decode_exec(exec_rec("/bin/ls", ["ls", "-l"]), BootClock())
    en = _exec_enriched(ev)
    assert mod.json_line(en) == _line(en)
    other = ProcInfo(ev.pid, ev.ppid, "/bin/sh", ("sh",), 0, 10**18, "sh", "/")
    for odd in (dataclasses.replace(en, process=None), dataclasses.replace(en, process=other),
                dataclasses.replace(en, process=dataclasses.replace(en.process, argv=("ls",))),
                Enriched(dataclasses.replace(ev, argv=["ls", "-l"]), en.process, en.parent, None, en.ancestors)):
        assert mod.json_line(odd) is None
        _line(odd)  # the dict path writes it


def test_the_header_encoding_follows_each_event():
    """The eight header keys are encoded once per run of records with the same header objects (the decoder
    hands the last record's out again): each line is still its own event's, a changed value (pid, comm,
    cgroup) is a new encoding, and a list in a header field (an event made in Python) is never taken from
    the cache after it changed."""
    mod = native.MODULE
    clock = BootClock()
    recs = [file_rec(10, "/a", pid=5, comm=b"a"), file_rec(10, "/b", pid=5, comm=b"a"), file_rec(10, "/c", pid=6),
            file_rec(10, "/d", pid=6, comm=b"b"), file_rec(10, "/e", pid=6, comm=b"b", cgroup_id=77),
            file_rec(10, "/f", pid=5, comm=b"a")]
    evs = [mod.decode_file(r, clock) for r in recs]
    assert evs[0].pid is evs[1].pid and evs[0].comm is evs[1].comm  # shared while the header repeats
    for ev in evs:
        en = Enriched(ev, None, None, None)
        assert mod.json_line(en) == _line(en)
    names = ["x"]
    odd = dataclasses.replace(evs[0], comm=names)
    assert mod.json_line(Enriched(odd, None, None, None)) is not None
    names.append("y")
    assert mod.json_line(Enriched(odd, None, None, None)) == _line(Enriched(odd, None, None, None))
    same_values = dataclasses.replace(evs[0], pid=int("5"), comm="".join(["a"]))  # equal, not the same objects
    assert mod.json_line(Enriched(same_values, None, None, None)) == _line(Enriched(same_values, None, None, None))

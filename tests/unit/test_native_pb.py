"""The compiled Event encoder (agent/sensors/_native.c encoded(en, 2)) against what the exporter sends for
the record's dict (nwwire.codec.to_event(record.from_enriched(en))): equal as messages (the same fields,
values and presence; the order of fields on the wire may differ) on bench/pipeline.py's replay mix, every
exec variant, edge and random strings, and None (the dict path: to_event decides) where to_event would put
a value elsewhere (extra_json) or clean it: a surrogate, an int out of its field's range, another type.
Also: the exporter's stamping of such bytes, and configure_pb refusing malformed tables."""

from __future__ import annotations

import dataclasses

import pytest

from agent.events import ContainerInfo, Enriched, ProcInfo
from agent.outputs import record
from agent.sensors import native
from agent.sensors.common import BootClock
from nwwire.codec import to_event, to_record
from nwwire.schema import pb
from tests.unit.detect_events import file_rec, net_rec
from tests.unit.test_flatten_fragments import _DECODERS, _mix_events
from tests.unit.test_native_json import _exec_enriched, exec_variants, random_events, strange_events

pytestmark = pytest.mark.skipif(native.MODULE is None, reason=f"native module not loaded: {native.STATUS}")


def _want(en: Enriched):
    return to_event(record.from_enriched(en))


def _got(en: Enriched):
    raw = native.MODULE.encoded(en, 2)
    return None if raw is None else pb.Event.FromString(raw)


def _same(en: Enriched) -> None:
    got, want = _got(en), _want(en)
    assert got is not None, en
    assert got == want, (got, want)
    assert not want.extra_json  # nothing the encoder wrote went to extra_json on the dict path
    both = native.MODULE.encoded(en, 3)
    assert both == (native.MODULE.json_line(en), native.MODULE.encoded(en, 2))


def test_mix_events_are_to_event_events():
    mod = native.MODULE
    mod.clear_parts()
    from bench.pipeline import _containers

    enricher, evs = _mix_events(_containers())
    kinds = set()
    for ev in evs:
        en = enricher.enrich(ev)
        _same(en)
        kinds.add(_want(en).WhichOneof("kind"))
        _same(en)  # again: from the caches (process part, header, container)
    assert kinds == {"exec", "fork", "exit", "file", "network"}


def test_strange_strings():
    for en in strange_events():
        _same(en)


def test_random_strings():
    for en in random_events(23, 300):
        _same(en)


def test_exec_events():
    """Every optional exec key alone and together, no arguments, with a container and without ancestry."""
    for _, en in exec_variants():
        _same(en)


def test_what_to_event_puts_elsewhere_goes_to_the_dict_path():
    mod = native.MODULE
    ev0 = _DECODERS[10](file_rec(10, "/x"), BootClock())
    odd = [dataclasses.replace(ev0, path="\udcff"),  # to_event cleans it
           dataclasses.replace(ev0, cgroup_id=2**64),  # past uint64: extra_json
           dataclasses.replace(ev0, cgroup_id=-1),  # a negative uint64
           dataclasses.replace(ev0, pid=2**63),  # past int64
           dataclasses.replace(ev0, ret=1.5),  # not an int
           dataclasses.replace(ev0, ret=True),  # a bool in an int field
           dataclasses.replace(ev0, comm=["x"])]  # a list in a string field
    for ev in odd:
        en = Enriched(ev, None, None, None)
        assert mod.encoded(en, 2) is None, ev
        assert mod.encoded(en, 3) is None
        assert _want(en).extra_json or ev.path == "\udcff"  # where the dict path puts it
    ok = [dataclasses.replace(ev0, pid=2**63 - 1), dataclasses.replace(ev0, ret=-(2**63)),
          dataclasses.replace(ev0, cgroup_id=2**64 - 1)]
    for ev in ok:
        _same(Enriched(ev, None, None, None))
    assert mod.encoded(Enriched(ev0, ProcInfo(1, 0, "\ud800", ("x",), 0, 0), None, None), 2) is None
    assert mod.encoded(Enriched(ev0, ProcInfo(1, 0, "/x", (1, 2), 0, 0), None, None), 2) is None  # argv of ints
    net = _DECODERS[20](net_rec(20, "10.0.0.1", 443), BootClock())
    assert mod.encoded(Enriched(net, None, None, None, (), "/resolved"), 2) is None  # no such key in NetOp
    assert mod.encoded("not an event", 2) is None
    with pytest.raises(ValueError):
        mod.encoded(Enriched(ev0, None, None, None), 4)


def test_a_container_to_event_cleans_or_refuses():
    """The container's message is to_event's own (once per container): a name with a lone surrogate is
    cleaned there as on the dict path (equal messages); a value of another type goes to extra_json there, so
    the record goes the dict way."""
    ev = _DECODERS[10](file_rec(10, "/x"), BootClock())
    cleaned = Enriched(ev, None, None, ContainerInfo("c1", name="w\udcffeb"))
    got = _got(cleaned)
    assert got == _want(cleaned) and got.container.name == "w\\xffeb"
    odd = Enriched(ev, None, None, ContainerInfo("c2", name=7))
    assert native.MODULE.encoded(odd, 2) is None and _want(odd).extra_json


def test_an_exec_whose_process_is_not_its_own_goes_to_the_dict_path():
    from tests.unit.replay_records import exec_rec

    ev = native.MODULE.decode_exec(exec_rec("/bin/ls", ["ls", "-l"]), BootClock())
    en = _exec_enriched(ev)
    _same(en)
    assert native.MODULE.encoded(dataclasses.replace(en, process=None), 2) is None


def test_the_exporter_stamps_encoded_events(tmp_path):
    """An Event's bytes go out with the exporter's identity and seq in front: read back, the same record as
    the dict's, in submission order with the dicts around it."""
    from agent.outputs.grpc_exporter import Exporter, ExporterConfig, cpb

    exp = Exporter(ExporterConfig(address="unix:/nonexistent", node="node-1", agent_id="ag", boot_id="bt",
                                  spool_dir=str(tmp_path)))
    exp.spool.open()
    ev = _DECODERS[10](file_rec(10, "/etc/passwd", flags=0, ret=3), BootClock())
    en = Enriched(ev, ProcInfo(1, 0, "/bin/cat", ("cat", "/etc/passwd"), 0, 10**18, "cat"), None,
                  ContainerInfo("c1", name="web"))
    rec = record.from_enriched(en)
    exp.submit_batch([{"event.name": "agent.status"}, native.MODULE.encoded(en, 2), rec])
    exp._spool_batch(list(exp._q))
    _, n, payload = exp.spool.read_next(None)
    events = cpb.Batch.FromString(payload).events
    assert n == 3 and [e.seq for e in events] == [1, 2, 3]
    got, want = to_record(events[1]), to_record(events[2])
    assert got.pop("seq") == 2 and want.pop("seq") == 3
    assert got == want and got["host.name"] == "node-1" and got["nodewarden.boot_id"] == "bt"
    exp.spool.close()


def test_the_exporter_counts_what_a_full_queue_refuses(tmp_path):
    from agent.outputs.grpc_exporter import Exporter, ExporterConfig

    exp = Exporter(ExporterConfig(address="unix:/nonexistent", spool_dir=str(tmp_path), queue_size=5))
    exp.submit_batch([b"x"] * 3)
    exp.submit_batch([{"event.name": "a"}] * 4)
    assert len(exp._q) == 5 and exp.drops["queue_full"] == 2 and exp.submitted == 7


def test_configure_pb_refuses_malformed_tables():
    """A malformed table is refused whole, with one line; the tables in force stay (encoding still works)."""
    mod = native.MODULE
    ev = Enriched(_DECODERS[10](file_rec(10, "/x"), BootClock()), None, None, None)
    before = mod.encoded(ev, 2)
    event = {"time": 5, "name": 6, "severity": 7, "process": 10, "container": 11, "info": 2}
    proc = {"process.pid": (1, "int64")}
    for args, err in [
        ((dict(event, time=0), {}, proc, {}, bytes), ValueError),
        (({k: v for k, v in event.items() if k != "name"}, {}, proc, {}, bytes), ValueError),
        ((event, {}, {"process.pid": (1, "float")}, {}, bytes), ValueError),
        ((event, {}, {"process.pid": "1"}, {}, bytes), TypeError),
        ((event, {}, proc, {}, bytes), ValueError),  # the header keys must all be Process fields
        ((event, {}, proc, {}, "not callable"), TypeError),
        ((event, {}, record._pb_table(pb.Process.DESCRIPTOR), {300: (23, {})}, bytes), ValueError),
        ((event, {}, record._pb_table(pb.Process.DESCRIPTOR), {10: "x"}, bytes), ValueError),
    ]:
        with pytest.raises(err):
            mod.configure_pb(*args)
    assert mod.encoded(ev, 2) == before
    record._configure_event_encoder()  # as it was (the caches were kept: the same numbers)
    _same(ev)


def test_with_an_exec_rule_the_records_stay_in_order(tmp_path):
    """The agent's default with a collector (the JSON log and the exporter): a batch mixing records the
    compiled loop encodes and ones Python makes (a kernel rule's exec) reaches both outputs in one order."""
    import io

    import orjson

    from agent.config import Config
    from agent.outputs.grpc_exporter import Exporter, ExporterConfig, cpb
    from agent.outputs.log import JsonLog
    from agent.pipeline import Pipeline
    from agent.sensors.replay import ReplayProbes
    from tests.unit.replay_records import EXEC_EVENT, Op, _pack, header, open_rec

    out = io.BytesIO()
    exp = Exporter(ExporterConfig(address="unix:/nonexistent", spool_dir=str(tmp_path)))
    exp.spool.open()
    p = Pipeline(Config(), [JsonLog(out).emit, exp.submit_batch], probes=ReplayProbes([]),
                 describe_rule=lambda rule, cgroup: ("execution", "rule"))
    assert p._encodings()[0] == 3
    fn = b"/tmp/x"
    batch = [open_rec("/tmp/a"), _pack(EXEC_EVENT, header(Op.EXEC), filename_len=len(fn), args_len=2, filename=fn,
                                       args=b"x\0", action=1, rule=1), open_rec("/tmp/b")]
    p._process(batch)
    exp._spool_batch(list(exp._q))
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    events = [to_record(e) for e in cpb.Batch.FromString(exp.spool.read_next(None)[2]).events]
    assert [r["event.name"] for r in lines] == ["file.open", "process.exec", "file.open"]
    assert [r["event.name"] for r in events] == [r["event.name"] for r in lines]
    assert events[1]["rule.name"] == "rule" and events[2]["file.path"] == "/tmp/b"
    exp.spool.close()



def test_the_compiled_framing_is_the_python_framing(monkeypatch, tmp_path):
    """Exporter._frame: frame_events (compiled) against its Python loop, with seq varints of one and two
    bytes and events of lengths whose own varints differ; what frame_events refuses."""
    from agent.outputs import grpc_exporter as ge

    events = [b"", pb.Event(name="a").SerializeToString(), pb.Event(name="x" * 300).SerializeToString(),
              pb.Event(name="y" * 120).SerializeToString()]
    exp = ge.Exporter(ge.ExporterConfig(address="unix:/nonexistent", node="n" * 200, spool_dir=str(tmp_path)))
    exp._seq = 125
    compiled = exp._frame(events)
    assert exp._seq == 129
    exp._seq = 125
    monkeypatch.setattr(ge, "_native", None)
    assert exp._frame(events) == compiled
    batch = ge.cpb.Batch.FromString(compiled)
    assert [e.seq for e in batch.events] == [126, 127, 128, 129] and batch.events[3].node == "n" * 200
    mod = native.MODULE
    with pytest.raises(TypeError):
        mod.frame_events([b"ok", "not bytes"], b"", 1, 2, 4)
    with pytest.raises(TypeError):
        mod.frame_events((b"a tuple",), b"", 1, 2, 4)
    with pytest.raises(ValueError):
        mod.frame_events([b"x"], b"", 1, 0, 4)
    with pytest.raises(OverflowError):
        mod.frame_events([b"x"], b"", -1, 2, 4)

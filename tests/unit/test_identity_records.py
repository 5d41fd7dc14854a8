"""The keys of issue 10's sensors (exe identity, cwd, ancestry, resolved paths) travel the wire typed:
record -> protobuf Event -> record comes back unchanged, nothing in extra_json."""

import orjson

from agent.events import Enriched, ExecEvent, FileEvent, Op, ProcInfo
from agent.outputs.record import flatten
from nwwire.codec import to_event, to_record

_IDS = {"host.name", "nodewarden.agent_id", "nodewarden.boot_id", "seq"}


def _round_trip(rec: dict) -> None:
    ev = to_event(rec)
    assert not ev.extra_json, orjson.loads(ev.extra_json)
    back = {k: v for k, v in to_record(ev).items() if k not in _IDS}
    assert back == rec


def test_exec_identity_and_ancestry_round_trip():
    sh = ProcInfo(10, 1, "/bin/sh", ("sh",), 0, 0, "sh")
    init = ProcInfo(1, 0, "/sbin/init", ("init",), 0, 0, "systemd")
    ev = ExecEvent(Op.EXEC, 1_700_000_000_123, 11, 11, 10, 0, 0, 5, 6, "x", False, "/proc/self/fd/3", ("x",),
                   exe_ino=7, exe_dev=8, kernel_path="/memfd:x (deleted)", memfd=True, deleted=True,
                   upper_layer=True, exe_mnt_id=21, cwd="/srv")
    me = ProcInfo(11, 10, "/proc/self/fd/3", ("x",), 0, 0, "x", "/srv")
    rec = flatten(Enriched(ev, me, sh, None, (sh, init)))
    assert rec["process.ancestors.name"] == ["sh", "systemd"]
    assert rec["process.ancestors.executable.path"] == ["/bin/sh", "/sbin/init"]
    assert rec["process.executable.kernel_path"] == "/memfd:x (deleted)" and rec["process.working_directory"] == "/srv"
    assert rec["process.executable.memfd"] is rec["process.executable.deleted"] is True
    _round_trip(rec)
    plain = flatten(Enriched(ExecEvent(Op.EXEC, 1, 2, 2, 1, 0, 0, 0, 0, "y", False, "/bin/y", ("y",)), None, None))
    assert not any(k.startswith(("process.ancestors", "process.working")) for k in plain)
    assert "process.executable.kernel_path" not in plain  # an older probe's record: no key, not ""
    _round_trip(plain)


def test_resolved_path_round_trips():
    ev = FileEvent(Op.FILE_OPEN, 1, 2, 2, 1, 0, 0, 0, 0, "c", False, "a.txt", "", 3, 0o101, 0o600, -100, -1, -1, -1,
                   cwd="/w")
    rec = flatten(Enriched(ev, None, None, None, (), "/w/a.txt"))
    assert rec["file.resolved_path"] == "/w/a.txt"
    _round_trip(rec)

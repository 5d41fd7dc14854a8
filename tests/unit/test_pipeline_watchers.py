"""The web-shell watch and the device guard on the compiled loop (agent/sensors/_native.c run, Pipeline._watch).

Both are on in the agent's default configuration; before, either one sent every event down the Python path.
run() now hands a watcher only the events its interest() can act on (an op, a path test in C), and the
records, the watchers' state and the order of both are those of the Python path (NODEWARDEN_NATIVE=0's).
"""

from __future__ import annotations

import io
import os

import pytest

from agent.config import Config, DeviceGuardConfig, WebshellConfig
from agent.detect.webshell_watch import WebshellWatch
from agent.devices.guard import DeviceGuard
from agent.enrich.container_table import ContainerTable
from agent.enrich.enricher import ContainerResolver
from agent.events import Op
from agent.outputs.log import JsonLog
from agent.outputs.metrics import Metrics
from agent.pipeline import Pipeline
from agent.sensors import native
from agent.sensors.replay import ReplayProbes
from tests.unit.detect_events import file_rec
from tests.unit.replay_records import exec_rec, exit_rec
from tests.unit.test_native_hostile import _run_args as hostile_run_args
from tests.unit.test_pipeline import CG, CID, _container

W = os.O_WRONLY | os.O_CREAT
GONE = 3_999_999  # a pid no process has here: the process table learns nothing of it from /proc (no cwd)

pytestmark = pytest.mark.skipif(native.MODULE is None, reason="the compiled hot path is not built (make setup)")


def _batch() -> list[bytes]:
    box = {"cgroup_id": CG}
    return [
        exec_rec("/bin/sh", ["sh"], pid=500, ppid=1),
        file_rec(Op.FILE_OPEN, "/var/www/html/a.php", flags=W, ret=3, pid=500, ppid=1),  # a web root
        file_rec(Op.FILE_OPEN, "/tmp/build/x.o", flags=W, ret=3, pid=500, ppid=1),  # nobody's
        file_rec(Op.FILE_OPEN, "/opt/app/webapps/ROOT/s.jsp", flags=W, ret=4, pid=500, ppid=1),  # a glob's
        file_rec(Op.FILE_OPEN, "/var//www/b.php", flags=W, ret=5, pid=500, ppid=1),  # normpath'd into a root
        file_rec(Op.FILE_CLOSE, "/var/www/html/a.php", flags=W, pid=500, ppid=1),
        file_rec(Op.FILE_RENAME, "/tmp/up.tmp", "/var/www/html/c.php", pid=500, ppid=1),
        file_rec(Op.FILE_RENAME, "/var/www/html/old", "/tmp/old", pid=500, ppid=1),
        exec_rec("/bin/cat", ["cat"], pid=600, ppid=1, **box),
        file_rec(Op.FILE_OPEN, "/dev/nvidia3", flags=os.O_RDWR, ret=6, pid=600, ppid=1, **box),
        file_rec(Op.FILE_OPEN, "/etc/motd", flags=W, ret=6, pid=600, ppid=1, **box),
        exit_rec(0, pid=500, ppid=1),
        exit_rec(0, pid=600, ppid=1, **box),
    ]


def _run(monkeypatch, compiled: bool):
    """One batch through a pipeline like the agent's default (JSON log, both watchers, rules off); (the JSON
    lines, the web-shell watch's jobs, the guard's queue, the watchers' calls in order)."""
    if not compiled:
        monkeypatch.setattr(native, "MODULE", None)
    table = ContainerTable()
    _container(table)
    ws = WebshellWatch(WebshellConfig(), lambda ev: None)
    guard = DeviceGuard(DeviceGuardConfig(pod_resources_socket=""), lambda ev: None)
    calls: list[tuple[str, str]] = []
    for name, w in (("webshell", ws), ("guard", guard)):  # spies: each call goes through to the real one
        real = w.observe
        monkeypatch.setattr(w, "observe", lambda en, real=real, name=name: (calls.append((name, en.event.name)),
                                                                             real(en))[1])
    out = io.BytesIO()
    p = Pipeline(Config(), [JsonLog(out).emit], metrics=Metrics(), containers=ContainerResolver(table),
                 probes=ReplayProbes([]), webshell=ws, device_guard=guard)
    assert (p._runner(p.probes.decoders, p._encodings()[0]) is not None) == compiled
    p._process(_batch())
    jobs = []
    while not ws._q.empty():
        job = ws._q.get_nowait()
        jobs.append((job.path, job.why))
    opens = []
    while not guard._q.empty():
        what, en, path = guard._q.get_nowait()
        opens.append((what, path, en.container.id))
    return out.getvalue(), jobs, sorted(ws._pending), opens, calls


def _untimed(lines: bytes) -> list[dict]:
    import orjson

    return [{k: v for k, v in orjson.loads(line).items() if k not in ("timestamp", "process.start_time")}
            for line in lines.splitlines()]


def test_the_compiled_loop_with_both_watchers_matches_the_python_path(monkeypatch):
    lines, jobs, pending, opens, calls = _run(monkeypatch, compiled=True)
    with monkeypatch.context() as m:
        ref = _run(m, compiled=False)
    assert _untimed(lines) == _untimed(ref[0])  # the same records (each pipeline's boot clock has its own offset)
    assert (sorted(jobs), pending, opens) == (sorted(ref[1]), *ref[2:4])  # a writer's files at its exit: a set
    assert jobs[:2] == [("/var/www/html/a.php", "close"), ("/var/www/html/c.php", "rename")]
    assert sorted(jobs[2:]) == [("/opt/app/webapps/ROOT/s.jsp", "exit"), ("/var/www/b.php", "exit")]
    assert opens == [("open", "/dev/nvidia3", CID)]
    # the Python path shows every event to both; the compiled loop only what their interest lets through: not
    # the execs, the write to /tmp/build, the rename out of the web root, the write to /etc/motd
    names = [n for _, n in calls]
    assert len(ref[4]) == 22 and len(calls) == 14
    assert "process.exec" not in names and names.count("file.open") == 8 and names.count("file.rename") == 2


def _spec(ops: dict[int, int], prefixes=("/var/www/",), literals=("/webapps/",)) -> tuple:
    m = bytearray(256)
    for op, how in ops.items():
        m[op] = how
    return bytes(m), tuple(prefixes), literals


def _run_args(batch, watch, spec):
    return hostile_run_args(native.MODULE, batch, 0, watch=watch, watch_spec=spec)


def _with_cwd(rec: bytes) -> bytes:
    """The record with the header's NW_F_CWD flag (byte 1): its path2 is the cwd of its relative path."""
    out = bytearray(rec)
    out[1] |= 0x04
    return bytes(out)


def test_run_calls_watch_for_what_its_spec_lets_through():
    mod = native.MODULE
    batch = [file_rec(Op.FILE_OPEN, p, flags=W, ret=3, pid=GONE, ppid=1) for p in
             ("/var/www/a.php", "/tmp/x", "rel/x", "/tmp//x", "/tmp/./x", "/srv/webapps/x.jsp", "/var/wwwx")]
    # relative, with the cwd the kernel sent (NW_F_CWD: path2 holds it): tested as resolved against it
    batch += [_with_cwd(file_rec(Op.FILE_OPEN, "html/b.php", "/var/www", flags=W, ret=3, pid=GONE, ppid=1)),
              _with_cwd(file_rec(Op.FILE_OPEN, "b.txt", "/tmp", flags=W, ret=3, pid=GONE, ppid=1))]
    batch += [file_rec(Op.FILE_RENAME, "/tmp/a", "/var/www/b", pid=GONE, ppid=1),
              file_rec(Op.FILE_RENAME, "/var/www/a", "/tmp/b", pid=GONE, ppid=1), exit_rec(0, pid=GONE, ppid=1)]
    seen: list = []
    spec = _spec({Op.FILE_OPEN: 2, Op.FILE_RENAME: 3, Op.EXIT: 1})
    def watch(en):
        seen.append((en.event.op, getattr(en.event, "path", "")))

    assert mod.run(*_run_args(batch, watch, spec))[0] == len(batch)
    # not "rel/x": no cwd came with it and the process is unknown, so it resolves to "" (nobody acts on it)
    assert seen == [(Op.FILE_OPEN, "/var/www/a.php"), (Op.FILE_OPEN, "/tmp//x"), (Op.FILE_OPEN, "/tmp/./x"),
                    (Op.FILE_OPEN, "/srv/webapps/x.jsp"), (Op.FILE_OPEN, "html/b.php"), (Op.FILE_RENAME, "/tmp/a"),
                    (Op.EXIT, "")]
    seen.clear()
    mod.run(*_run_args(batch, lambda en: seen.append(en.event.path), _spec({Op.FILE_OPEN: 2}, literals=None)))
    # no literals to test by: every path may match a glob, but for the relative one nothing could resolve
    assert seen == ["/var/www/a.php", "/tmp/x", "/tmp//x", "/tmp/./x", "/srv/webapps/x.jsp", "/var/wwwx", "html/b.php",
                    "b.txt"]
    seen.clear()
    mod.run(*_run_args(batch, None, None))  # no watch: nothing called, nothing checked
    assert seen == []


@pytest.mark.parametrize("spec", [None, (b"\0" * 255, (), ()), (b"\0" * 256, ("/x", 3), ()),
                                  (b"\0" * 256, (), ("a", b"b")), (b"\0" * 256, [], ()), "spec"])
def test_run_refuses_a_malformed_watch_spec(spec):
    batch = [file_rec(Op.FILE_OPEN, "/var/www/a", flags=W, ret=3, pid=7, ppid=1)]
    with pytest.raises(TypeError, match="watch_spec"):
        native.MODULE.run(*_run_args(batch, print, spec))


def test_a_watch_that_raises_stops_run_with_its_error():
    def boom(en):
        raise ValueError("watcher failed")

    batch = [file_rec(Op.FILE_OPEN, "/var/www/a", flags=W, ret=3, pid=7, ppid=1)]
    with pytest.raises(ValueError, match="watcher failed"):
        native.MODULE.run(*_run_args(batch, boom, _spec({Op.FILE_OPEN: 1})))

"""In-kernel filters changed at run time, and exact drop accounting with a tiny ring buffer."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from agent.events import Op
from agent.sensors.common import BootClock
from agent.sensors.loader import ProbeConfig, ProbeSet


@pytest.fixture
def probes_factory(tmp_path):
    made = []

    def make(**kw):
        ps = ProbeSet(ProbeConfig(**kw))
        ps.start()
        made.append(ps)
        return ps

    yield make
    for ps in made:
        ps.stop()


def _run_targeted(ps: ProbeSet, code: str) -> int:
    """Run `code` in a child that waits until the probes target its pid; return the pid."""
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(1)\n" + textwrap.dedent(code)],
                         stdin=subprocess.PIPE)
    ps.set_target_tgid(p.pid)
    p.stdin.write(b"x")
    p.stdin.close()
    assert p.wait(timeout=120) == 0
    return p.pid


def _drain(ps: ProbeSet):
    reader, clock = ps.reader(), BootClock()
    out = []
    while batch := reader.read(100000):
        out += [ps.decoders[raw[0]](raw, clock) for raw in batch]
    reader.close()
    return out


@pytest.mark.parametrize("family,code,produced", [
    ("bench", "import os\nfor _ in range(20000): os.getppid()", 20000),
    ("file", "import os\nfor i in range(3000):\n    os.close(os.open('{d}/f', os.O_WRONLY | os.O_CREAT))", 3000),
])
def test_tiny_ring_buffer_delivered_plus_dropped_is_produced(probes_factory, tmp_path, family, code, produced):
    # fold_window 0: the file burst reopens one path, which folding would send once (tests/kernel/test_fold.py)
    ps = probes_factory(families=(family,), ringbuf_pages=1, ignore_prefixes=(), fold_window=0)
    pid = _run_targeted(ps, code.format(d=tmp_path))
    delivered = [e for e in _drain(ps) if e.pid == pid]
    dropped = ps.kernel_drops()[family]
    assert dropped > 0, "the burst should overflow a one-page ring buffer"
    assert len(delivered) + dropped == produced


def test_ignored_prefixes_change_at_run_time_without_reload(probes_factory, tmp_path):
    watched, ignored = tmp_path / "watched", tmp_path / "noisy"
    watched.mkdir()
    ignored.mkdir()
    code = f"""
        import os
        for d in ("{watched}", "{ignored}"):
            os.close(os.open(d + "/f", os.O_WRONLY | os.O_CREAT))
    """
    ps = probes_factory(families=("file",), ignore_prefixes=())
    reader, clock = ps.reader(), BootClock()

    def paths(pid):
        time.sleep(0.05)
        return sorted(ev.path for raw in reader.read() if (ev := ps.decoders[raw[0]](raw, clock)).pid == pid
                      and ev.op == Op.FILE_OPEN)

    pid = _run_targeted(ps, code)
    assert paths(pid) == [f"{ignored}/f", f"{watched}/f"]
    ps.set_ignored_prefixes([f"{ignored}/"])
    pid = _run_targeted(ps, code)
    assert paths(pid) == [f"{watched}/f"]
    ps.set_ignored_prefixes([])
    pid = _run_targeted(ps, code)
    assert paths(pid) == [f"{ignored}/f", f"{watched}/f"]
    reader.close()


def test_agent_ignores_itself(probes_factory, tmp_path):
    ps = probes_factory(families=("file",), ignore_prefixes=())
    reader = ps.reader()
    reader.read()
    os.close(os.open(tmp_path / "self", os.O_WRONLY | os.O_CREAT))
    time.sleep(0.05)
    clock = BootClock()
    assert [raw for raw in reader.read() if ps.decoders[raw[0]](raw, clock).pid == os.getpid()] == []
    reader.close()


def test_bad_prefix_is_refused_with_a_clear_error():
    from agent.sensors.loader import LoadError

    with pytest.raises(LoadError, match="ignored path prefix must be 1..128 bytes"):
        ProbeSet(ProbeConfig(ignore_prefixes=("/" * 200,)))

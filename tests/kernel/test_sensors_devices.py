"""probes.watch_devices (issue 12): every open of a GPU/XPU device node reaches user space although /dev/ is
an ignored prefix, read-only or writing; another node under /dev/ stays dropped in the kernel. The nodes are
character devices this test makes (1:3, the null device: opening them touches nothing) under names the
prefixes match, and removes."""

import os
import subprocess
import sys
import uuid

import pytest


@pytest.fixture
def nodes():
    tag = uuid.uuid4().hex[:8]
    paths = [f"/dev/nvidia-nwtest{tag}", f"/dev/xpu-nwtest{tag}", f"/dev/nwtest-other{tag}"]
    for p in paths:
        os.mknod(p, 0o666 | 0o020000, os.makedev(1, 3))
    yield paths
    for p in paths:
        os.unlink(p)


def _opens(ps, reader, clock, paths) -> list[tuple[str, int]]:
    from agent.events import Op

    plan = [(p, how) for p in paths for how in (os.O_RDONLY, os.O_RDWR)]
    code = "import os, sys; sys.stdin.read(1)\n" f"for f, how in {plan!r}: os.close(os.open(f, how))"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    ps.set_target_tgid(p.pid)
    p.communicate(b"x")
    assert p.returncode == 0
    evs = [ps.decoders[raw[0]](raw, clock) for raw in reader.read(100000)]
    return [(e.path, e.flags & 3) for e in evs if e.pid == p.pid and e.op == Op.FILE_OPEN]


def test_device_node_opens_pass_the_ignored_dev_prefix(nodes):
    from agent.config import ProbeConfig
    from agent.sensors.common import BootClock
    from agent.sensors.loader import ProbeSet

    nvidia, xpu, other = nodes
    ps = ProbeSet(ProbeConfig(families=("file",)))
    assert "/dev/" in ps.cfg.ignore_prefixes and ps.cfg.watch_devices == ("/dev/nvidia", "/dev/xpu")
    ps.start()
    reader, clock = ps.reader(), BootClock()
    try:
        assert _opens(ps, reader, clock, nodes) == [(nvidia, os.O_RDONLY), (nvidia, os.O_RDWR),
                                                    (xpu, os.O_RDONLY), (xpu, os.O_RDWR)]
        # the site's own watch lists replaced: the device nodes stay watched
        ps.set_watched_reads(["/etc/shadow"], writes=())
        assert [p for p, _ in _opens(ps, reader, clock, nodes)] == [nvidia, nvidia, xpu, xpu]
    finally:
        reader.close()
        ps.stop()


def test_no_device_watch_leaves_dev_ignored(nodes):
    from agent.config import ProbeConfig
    from agent.sensors.common import BootClock
    from agent.sensors.loader import ProbeSet

    ps = ProbeSet(ProbeConfig(families=("file",), watch_devices=()))
    ps.start()
    reader, clock = ps.reader(), BootClock()
    try:
        assert _opens(ps, reader, clock, nodes) == []
    finally:
        reader.close()
        ps.stop()

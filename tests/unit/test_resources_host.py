"""The host sample (agent/resources/host.py, psutil) against what this machine's /proc and statvfs say at the same
moment: memory, CPUs, CPU time, the network without loopback, a filesystem's space; a path that is not
there named in errors while the rest still goes out; the busy share of two CPU readings."""

from __future__ import annotations

import os
from collections import namedtuple

from agent.resources import cgroupfs
from agent.resources.host import HostSampler, _cpu_percent


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


def _cpu_jiffies_s() -> tuple[float, float]:
    with open("/proc/stat") as f:
        cols = f.readline().split()[1:]
    hz = os.sysconf("SC_CLK_TCK")
    return int(cols[0]) / hz, int(cols[3]) / hz  # user, idle


def test_host_sample_matches_proc():
    h = HostSampler("/proc", ("/", "/nonexistent-nw-path"))
    user0, idle0 = _cpu_jiffies_s()
    with open("/proc/self/net/dev") as f:
        net0 = cgroupfs.parse_net_dev(f.read())
    ev = h.sample()
    with open("/proc/self/net/dev") as f:
        net1 = cgroupfs.parse_net_dev(f.read())
    user1, idle1 = _cpu_jiffies_s()
    mem = _meminfo()
    assert ev.memory_total == mem["MemTotal"]
    assert abs(ev.memory_available - mem["MemAvailable"]) < 64 << 20  # the same moment, within what moved
    assert ev.swap_total == mem["SwapTotal"]
    assert ev.cpu_count == os.cpu_count()
    assert user0 - 0.02 <= ev.cpu_user_s <= user1 + 0.02 and idle0 - 0.02 <= ev.cpu_idle_s <= idle1 + 0.02
    assert net0.rx_bytes <= ev.net_rx_bytes <= net1.rx_bytes and net0.tx_bytes <= ev.net_tx_bytes <= net1.tx_bytes
    assert (ev.load1, ev.load5, ev.load15) != (0.0, 0.0, 0.0) or os.getloadavg() == (0.0, 0.0, 0.0)
    st = os.statvfs("/")
    (fs,) = ev.filesystems
    assert fs.path == "/" and fs.total == st.f_blocks * st.f_frsize
    assert abs(fs.free - st.f_bavail * st.f_frsize) < 256 << 20
    assert [e.split(":")[0] for e in ev.errors] == ["filesystem /nonexistent-nw-path"]
    assert ev.cpu_percent is None  # the first sample has nothing to compare with
    assert h.sample().cpu_percent is not None


Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_cpu_percent_from_two_readings():
    a = Times(100, 0, 50, 800, 50, 0, 0, 0, 10, 0)  # guest time is inside user time: not counted twice
    b = Times(160, 0, 70, 900, 70, 0, 0, 0, 40, 0)
    assert _cpu_percent(None, a) is None
    # all: 200 (the guest's 30 left out), idle + iowait: 120 -> 40 % busy
    assert _cpu_percent(a, b) == 40.0
    assert _cpu_percent(b, b) == 0.0

"""The cgroup readers (agent/resources/cgroupfs.py) on trees of files written the way the kernel writes them
(Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/*.rst, the layouts seen on kernel 6.x), the mount
discovery on mountinfo texts of a v2, a v1 and a hybrid host, and the v1 reader on this machine's own cgroup
against the files read directly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.resources import cgroupfs as C
from agent.resources.cgroupfs import CgroupGone, Layout

V2_FILES = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
    "cpu.stat": "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\ncore_sched.force_idle_usec 0\n"
                "nr_periods 40\nnr_throttled 3\nthrottled_usec 5100\nnr_bursts 0\nburst_usec 0\n",
    "memory.current": "16515072\n",
    "memory.max": "16777216\n",
    "memory.stat": "anon 12582912\nfile 3145728\nkernel 786432\nkernel_stack 32768\nshmem 0\n"
                   "inactive_anon 12451840\nactive_anon 131072\ninactive_file 2097152\nactive_file 1048576\n"
                   "unevictable 0\nworkingset_refault_file 12\n",
    "memory.events": "low 0\nhigh 0\nmax 27\noom 1\noom_kill 1\noom_group_kill 0\n",
    "pids.current": "3\n",
    "pids.max": "64\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
               "259:0 rbytes=1048576 wbytes=0 rios=16 wios=0 dbytes=0 dios=0\n",
}


def _write(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)


def test_v2_reader_every_counter(tmp_path):
    _write(tmp_path / "k8s.io" / "abc", V2_FILES)
    u = C.read_v2(str(tmp_path), "/k8s.io/abc")
    assert u.cgroup_version == 2
    assert (u.cpu_usage_ns, u.cpu_user_ns, u.cpu_system_ns) == (1234567000, 1000000000, 234567000)
    assert (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns) == (40, 3, 5100000)
    assert (u.memory_usage, u.memory_limit) == (16515072, 16777216)
    assert u.memory_working_set == 16515072 - 2097152
    assert (u.memory_rss, u.memory_cache) == (12582912, 3145728)
    assert (u.memory_limit_hits, u.oom_kills) == (27, 1)
    assert (u.pids, u.pids_limit) == (3, 64)
    assert (u.io_read_bytes, u.io_write_bytes, u.io_read_ops, u.io_write_ops) == (4096 + 1048576, 8192, 17, 2)
    assert u.net_rx_bytes is None  # the network is the sampler's, through the init pid


def test_v2_no_limits_and_missing_controllers(tmp_path):
    files = {k: v for k, v in V2_FILES.items() if not k.startswith(("pids.", "io."))}
    files["memory.max"] = "max\n"
    _write(tmp_path / "c", files)
    u = C.read_v2(str(tmp_path), "/c")
    assert u.memory_limit is None and u.memory_usage == 16515072
    assert (u.pids, u.pids_limit, u.io_read_bytes, u.io_write_ops) == (None, None, None, None)
    _write(tmp_path / "d", {"pids.max": "max\n", "pids.current": "1\n"})
    u = C.read_v2(str(tmp_path), "/d")
    assert (u.pids, u.pids_limit, u.cpu_usage_ns, u.memory_usage, u.memory_working_set) == (1, None, None, None, None)


def test_v2_gone_and_escape(tmp_path):
    with pytest.raises(CgroupGone):
        C.read_v2(str(tmp_path), "/not/there")
    (tmp_path / "mnt").mkdir()
    with pytest.raises(CgroupGone):  # a spec's ".." never reads outside the mount
        C.read_v2(str(tmp_path / "mnt"), "/../")


V1_BLKIO = ("8:0 Read 40960\n8:0 Write 8192\n8:0 Sync 49152\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 49152\n"
            "253:1 Read 4096\n253:1 Write 0\n253:1 Sync 4096\n253:1 Async 0\n253:1 Discard 0\n253:1 Total 4096\n"
            "Total 53248\n")
V1_SERVICED = ("8:0 Read 10\n8:0 Write 2\n8:0 Sync 12\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 12\n"
               "253:1 Read 1\n253:1 Write 0\n253:1 Sync 1\n253:1 Async 0\n253:1 Discard 0\n253:1 Total 1\nTotal 13\n")


def _v1_tree(root: Path, path: str, limit: str = "16777216\n") -> Layout:
    rel = path.lstrip("/")
    _write(root / "cpuacct" / rel, {"cpuacct.usage": "987654321\n", "cpuacct.usage_user": "600000000\n",
                                    "cpuacct.usage_sys": "387654321\n", "cpuacct.stat": "user 60\nsystem 38\n"})
    _write(root / "cpu" / rel, {"cpu.stat": "nr_periods 7\nnr_throttled 1\nthrottled_time 2500000\nnr_bursts 0\n"
                                            "burst_time 0\n"})
    _write(root / "memory" / rel, {
        "memory.usage_in_bytes": "16384000\n", "memory.limit_in_bytes": limit, "memory.failcnt": "44\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "memory.stat": "cache 2000000\nrss 14000000\nrss_huge 0\ninactive_file 1000000\n"
                       "hierarchical_memory_limit 16777216\ntotal_cache 2097152\ntotal_rss 14155776\n"
                       "total_inactive_file 1048576\ntotal_active_file 1048576\n"})
    _write(root / "pids" / rel, {"pids.current": "5\n", "pids.max": "max\n"})
    _write(root / "blkio" / rel, {"blkio.throttle.io_service_bytes_recursive": V1_BLKIO,
                                  "blkio.throttle.io_serviced_recursive": V1_SERVICED,
                                  "blkio.throttle.io_service_bytes": "Total 0\n"})
    return Layout(1, None, tuple(sorted((c, str(root / c)) for c in ("blkio", "cpu", "cpuacct", "memory", "pids"))))


def test_v1_reader_every_counter(tmp_path):
    layout = _v1_tree(tmp_path, "/nwtest/abc")
    u = C.read_v1(layout, {c: "/nwtest/abc" for c, _ in layout.v1})
    assert u.cgroup_version == 1
    assert (u.cpu_usage_ns, u.cpu_user_ns, u.cpu_system_ns) == (987654321, 600000000, 387654321)
    assert (u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns) == (7, 1, 2500000)
    assert (u.memory_usage, u.memory_limit, u.memory_working_set) == (16384000, 16777216, 16384000 - 1048576)
    assert (u.memory_rss, u.memory_cache, u.memory_limit_hits, u.oom_kills) == (14155776, 2097152, 44, 2)
    assert (u.pids, u.pids_limit) == (5, None)
    assert (u.io_read_bytes, u.io_write_bytes, u.io_read_ops, u.io_write_ops) == (40960 + 4096, 8192, 11, 2)


def test_v1_block_io_from_bfq_when_throttle_has_none(tmp_path):
    """No throttle rule: blk-throttle's files say 0 (or only Total 0); bfq counted the disk it schedules."""
    layout = _v1_tree(tmp_path, "/b")
    d = tmp_path / "blkio" / "b"
    (d / "blkio.throttle.io_service_bytes_recursive").write_text("Total 0\n")
    (d / "blkio.throttle.io_serviced_recursive").write_text("8:0 Read 0\n8:0 Write 0\nTotal 0\n")
    bfq = "8:0 Read 512\n8:0 Write 1024\n8:0 Total 1536\nTotal 1536\n"
    (d / "blkio.bfq.io_service_bytes_recursive").write_text(bfq)
    u = C.read_v1(layout, {c: "/b" for c, _ in layout.v1})
    assert (u.io_read_bytes, u.io_write_bytes, u.io_read_ops, u.io_write_ops) == (512, 1024, 0, 0)
    (d / "blkio.bfq.io_service_bytes_recursive").write_text(V1_BLKIO)  # both counted the same bios: not summed
    (d / "blkio.throttle.io_service_bytes_recursive").write_text(V1_BLKIO)
    assert C.read_v1(layout, {c: "/b" for c, _ in layout.v1}).io_read_bytes == 40960 + 4096


def test_v1_unlimited_and_old_kernel_ticks(tmp_path):
    layout = _v1_tree(tmp_path, "/x", limit="9223372036854771712\n")
    for name in ("cpuacct.usage_user", "cpuacct.usage_sys"):  # before 4.6: only the USER_HZ ticks
        os.unlink(tmp_path / "cpuacct" / "x" / name)
    u = C.read_v1(layout, {c: "/x" for c, _ in layout.v1}, hz=100)
    assert u.memory_limit is None
    assert (u.cpu_user_ns, u.cpu_system_ns) == (600_000_000, 380_000_000)


def test_v1_per_controller_paths_and_gone(tmp_path):
    layout = _v1_tree(tmp_path, "/a")
    # /proc/<pid>/cgroup may name a different path per controller; only the memory one exists here
    (tmp_path / "memory" / "b").mkdir()
    (tmp_path / "memory" / "b" / "memory.usage_in_bytes").write_text("4096\n")
    u = C.read_v1(layout, {"memory": "/b", "cpuacct": "/a"})
    assert u.memory_usage == 4096 and u.cpu_usage_ns == 987654321 and u.pids is None
    with pytest.raises(CgroupGone):
        C.read_v1(layout, {c: "/gone" for c, _ in layout.v1})


def test_parse_proc_cgroup_v1():
    text = ("12:pids:/k8s.io/abc\n11:cpu,cpuacct:/k8s.io/abc\n9:memory:/k8s.io/abc (deleted)\n"
            "8:blkio:/k8s.io/abc\n1:name=systemd:/k8s.io/abc\n0::/k8s.io/abc\nbad line\n")
    assert C.parse_proc_cgroup_v1(text) == {"pids": "/k8s.io/abc", "cpu": "/k8s.io/abc", "cpuacct": "/k8s.io/abc",
                                            "memory": "/k8s.io/abc", "blkio": "/k8s.io/abc"}


HYBRID = """\
24 30 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
25 24 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
26 24 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
29 24 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
30 24 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
31 24 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
32 24 0:29 / /sys/fs/cgroup/blkio rw,nosuid shared:17 - cgroup cgroup rw,blkio
40 30 0:27 /kubepods /host/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
"""
UNIFIED = "25 24 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_mountinfo_hybrid_and_unified():
    v2, v1 = C.parse_mountinfo_cgroups(HYBRID)
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                  "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids", "blkio": "/sys/fs/cgroup/blkio"}
    assert C.parse_mountinfo_cgroups(UNIFIED) == ("/sys/fs/cgroup", {})


def test_layout_follows_the_controllers(tmp_path):
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("")  # systemd's hybrid mount: no controller
    assert C.layout_of(str(unified), {"memory": "/m"}).version == 1
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert C.layout_of(str(unified), {}).version == 2
    assert C.layout_of(None, {}).version == 0


def test_net_dev_without_loopback():
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
            "carrier compressed\n"
            "    lo:  123456    100    0    0    0     0          0         0   123456     100    0    0    0     0 "
            "      0          0\n"
            "  eth0:    5000     40    0    3    0     0          0         0     7000      50    0    1    0     0 "
            "      0          0\n"
            "  net1:    1000     10    0    0    0     0          0         0      500       5    0    0    0     0 "
            "      0          0\n")
    n = C.parse_net_dev(text)
    assert (n.rx_bytes, n.tx_bytes, n.rx_packets, n.tx_packets) == (6000, 7500, 50, 55)
    assert (n.rx_dropped, n.tx_dropped) == (3, 1)


def test_parsers_on_junk():
    assert C.parse_flat_keyed("a 1\nb x\n\nc") == {"a": 1}
    assert C.parse_single("") is None and C.parse_limit("max") is None and C.parse_limit("junk") is None
    assert C.parse_io_stat("8:0 rbytes=x wbytes=5\n") == (0, 5, 0, 0)
    assert C.parse_blkio("garbage\n8:0 Read nope\n") == (0, 0)
    assert C.parse_net_dev("") == C.NetCounters(0, 0, 0, 0, 0, 0)


@pytest.mark.skipif(C.discover().version != 1, reason="this host's controllers are not v1")
def test_v1_reader_on_this_machine():
    """The reader on our own cgroups, against the same files read here directly (CPU time only grows)."""
    layout = C.discover()
    with open("/proc/self/cgroup") as f:
        paths = C.parse_proc_cgroup_v1(f.read())
    mem = os.path.join(layout.v1_mount("memory"), paths["memory"].lstrip("/"))
    acct = os.path.join(layout.v1_mount("cpuacct"), paths["cpuacct"].lstrip("/"))
    before = int(Path(acct, "cpuacct.usage").read_text())
    u = C.read_v1(layout, paths)
    after = int(Path(acct, "cpuacct.usage").read_text())
    assert before <= u.cpu_usage_ns <= after
    assert u.memory_limit_hits == int(Path(mem, "memory.failcnt").read_text())
    limit = int(Path(mem, "memory.limit_in_bytes").read_text())
    assert u.memory_limit == (None if limit >= 1 << 62 else limit)


def test_v2_reader_on_this_kernels_unified_hierarchy():
    """The v2 reader on the real cgroup2 files this kernel offers (a hybrid host's unified mount holds no controller,
    but cpu.stat's core counters are always there): CPU time between two direct reads, no made-up memory."""
    layout = C.discover()
    if layout.v2 is None:
        pytest.skip("no cgroup2 mount here")
    stat = Path(layout.v2, "cpu.stat")
    if not stat.exists():
        pytest.skip("no cpu.stat at the cgroup2 root")

    def usage() -> int:
        return int(next(ln for ln in stat.read_text().splitlines() if ln.startswith("usage_usec ")).split()[1])

    before = usage()
    u = C.read_v2(layout.v2, "/")
    after = usage()
    assert u.cgroup_version == 2 and before * 1000 <= u.cpu_usage_ns <= after * 1000
    if not Path(layout.v2, "memory.current").exists():  # the root has none, nor has a hybrid host's unified mount
        assert u.memory_usage is None and u.memory_working_set is None and u.memory_limit is None

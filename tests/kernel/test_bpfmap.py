"""agent/sensors/bpfmap.py against real maps (made here with bpf(2)), and the probe loader child: the agent
process never maps libbcc or LLVM, yet its probes send events and its maps take filters (issue 17)."""

import ctypes
import errno
import json
import os
import platform
import struct
import subprocess
import sys
import textwrap

import pytest

from agent.sensors import bpfmap
from agent.sensors.bpfmap import BpfMap, LayoutError, ctype_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
LPM_TRIE = 11
PATH_KEY = ["path_key", [["prefixlen", "unsigned int"], ["path", "char", [16]]], "struct_packed"]


def _create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0) -> int:
    attr = (ctypes.c_uint8 * 72)()
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    fd = _libc.syscall(ctypes.c_long(bpfmap._NR_BPF[platform.machine()]), ctypes.c_long(0), attr, ctypes.c_long(72))
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return fd


@pytest.fixture
def maps():
    made = []

    def make(map_type, key, leaf, max_entries, flags=0):
        k, v = ctypes.sizeof(ctype_of(key)), ctypes.sizeof(ctype_of(leaf))
        m = BpfMap(_create(map_type, k, v, max_entries, flags), "t", map_type, k, v, max_entries, key, leaf)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def test_hash_set_get_delete_iterate_and_full(maps):
    t = maps(bpfmap.HASH, "unsigned int", "unsigned long long", 4)
    for i in range(4):
        t[ctypes.c_uint32(i)] = ctypes.c_uint64(i * 10)
    assert t[ctypes.c_uint32(2)].value == 20 and ctypes.c_uint32(3) in t and 7 not in t
    assert sorted((k.value, v.value) for k, v in t.items()) == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert len(t) == 4
    with pytest.raises(OSError) as full:  # what callers count as a full map (`except Exception`)
        t[ctypes.c_uint32(9)] = ctypes.c_uint64(1)
    assert full.value.errno == errno.E2BIG
    t[ctypes.c_uint32(3)] = ctypes.c_uint64(33)  # an existing key still updates in a full map
    assert t[3].value == 33
    del t[ctypes.c_uint32(1)]
    with pytest.raises(KeyError):
        del t[ctypes.c_uint32(1)]
    with pytest.raises(KeyError):
        t[ctypes.c_uint32(1)]
    t.clear()
    assert len(t) == 0 and list(t.keys()) == []
    with pytest.raises(ValueError, match="a key of 8 bytes, not 4"):
        t[ctypes.c_uint64(1)] = ctypes.c_uint64(1)


def test_lpm_trie_with_a_packed_struct_key(maps):
    t = maps(LPM_TRIE, PATH_KEY, "unsigned char", 8, flags=1)  # BPF_F_NO_PREALLOC, required for a trie

    def key(raw):
        k = t.Key()
        k.prefixlen, k.path = len(raw) * 8, raw
        return k

    assert ctypes.sizeof(t.Key) == 20
    t[key(b"/proc/")] = ctypes.c_uint8(1)
    t[key(b"/etc/ssh/")] = ctypes.c_uint8(3)
    probe = t.Key()
    probe.prefixlen, probe.path = 16 * 8, b"/etc/ssh/sshd_co"  # a longest-prefix lookup, as the probe's
    assert t[probe].value == 3
    assert sorted(bytes(k.path[:k.prefixlen // 8]) for k in t.keys()) == [b"/etc/ssh/", b"/proc/"]
    del t[key(b"/proc/")]
    assert [bytes(k.path[:k.prefixlen // 8]) for k in t.keys()] == [b"/etc/ssh/"]


def test_arrays_and_per_cpu_sums(maps):
    a = maps(bpfmap.ARRAY, "int", "unsigned long long", 3)
    a[ctypes.c_int(1)] = ctypes.c_uint64(7)
    assert [v.value for _, v in a.items()] == [0, 7, 0] and len(a) == 3
    del a[ctypes.c_int(1)]  # an array entry is zeroed, as bcc's
    assert a[1].value == 0
    p = maps(bpfmap.PERCPU_ARRAY, "int", "unsigned int", 2)  # a 4-byte value: each CPU's slot is 8 bytes
    p[ctypes.c_int(0)] = ctypes.c_uint32(5)  # the same value on every CPU
    ncpu = bpfmap.possible_cpus()
    assert [v.value for v in p[0]] == [5] * ncpu
    assert p.sum(ctypes.c_int(0)).value == 5 * ncpu and p.sum(ctypes.c_int(1)).value == 0


def test_layouts_nested_unions_and_mismatches():
    event = ["ev", [["h", ["hdr", [["op", "unsigned char"], ["pid", "unsigned int"]], "struct_packed"]],
                    ["", [["a", "int"], ["b", "long long"]], "union"], ["ids", "long long", [3]],
                    ["grid", "char", [2, 3]], ["bits", "unsigned int", 4]], "struct"]
    t = ctype_of(event)
    assert t.h.offset == 0 and ctypes.sizeof(t._fields_[0][1]) == 5
    assert ctypes.sizeof(t._fields_[2][1]) == 24 and t.grid.size == 6
    v = t()
    v.b = 1 << 40  # the anonymous union's members are the struct's own
    assert v.b == 1 << 40
    with pytest.raises(LayoutError, match="unknown C type"):
        ctype_of("struct thing")
    with pytest.raises(LayoutError, match="its key is 8 bytes, the described type 4"):
        BpfMap(-1, "m", bpfmap.HASH, 8, 1, 1, "unsigned int", "unsigned char")


AGENT = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from agent.config import ProbeConfig
    from agent.sensors.common import BootClock
    from agent.sensors.loader import ProbeSet
    ps = ProbeSet(ProbeConfig(families=("process", "file"), ignore_prefixes=("/proc/", "/sys/", "/dev/")))
    ps.start()
    reader, clock = ps.reader(), BootClock()
    marker = "/tmp/nw-bpfmap-%d" % os.getpid()
    child = subprocess.run(["/bin/sh", "-c", "echo x > " + marker + "; rm -f " + marker])
    paths, deadline = [], time.time() + 10
    while time.time() < deadline and marker not in paths:
        reader.wait(0.2)
        for raw in reader.read():
            e = ps.decoders[raw[0]](raw, clock)
            paths.append(getattr(e, "filename", getattr(e, "path", "")))
    with open("/proc/self/maps") as f:
        mapped = sorted({l.split()[-1] for l in f if "libbcc" in l or "LLVM" in l})
    ignored = sorted(k.value for k in ps.table(b"ignore_tgid").keys())
    def bpf_fds():
        kinds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                kinds.append(os.readlink("/proc/self/fd/" + fd))
            except OSError:
                pass
        return sum(1 for k in kinds if k.startswith("anon_inode:") and ("bpf" in k or "perf_event" in k))
    fds = bpf_fds()
    ps.stop(); reader.close()
    print(json.dumps({"mapped": mapped, "bcc": "bcc" in sys.modules, "seen": marker in paths, "pid": os.getpid(),
                      "ignored": ignored, "fds_open": fds, "fds_after": bpf_fds(),
                      "drops": ps.kernel_drops()}))
""")


def test_agent_process_maps_no_libbcc_and_events_flow():
    out = subprocess.run([sys.executable, "-c", AGENT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["mapped"] == [] and not got["bcc"], got
    assert got["seen"], "the probes loaded by the child should report the shell's write"
    assert got["ignored"] == [got["pid"]], "the loader child's pid must leave ignore_tgid once it is gone"
    assert got["fds_open"] > 40 and got["fds_after"] == 0, f"stop() closes every map, program and perf event fd: {got}"


def test_a_compile_error_is_one_load_error_line_and_leaves_no_fd(tmp_path):
    from agent.config import ProbeConfig
    from agent.sensors.loader import LoadError, ProbeSet

    probes = tmp_path / "probes"
    probes.mkdir()
    src = os.path.join(ROOT, "probes")
    for name in os.listdir(src):
        (probes / name).write_bytes(open(os.path.join(src, name), "rb").read())
    (probes / "bench.bpf.c").write_text("this is not C;\n")
    before = len(os.listdir("/proc/self/fd"))
    ps = ProbeSet(ProbeConfig(families=("bench",), probes_dir=str(probes)))
    with pytest.raises(LoadError) as e:
        ps.start()
    assert "\n" not in str(e.value) and str(e.value).startswith("loading probes failed")
    assert len(os.listdir("/proc/self/fd")) == before and not ps.loaded


def test_a_loader_past_its_time_is_killed_one_line_and_leaves_nothing():
    from agent.sensors import childload

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(childload.ChildError, match=r"^the probe loader took more than 0.3 s and was killed$"):
        childload.run({"mode": "probes", "families": ["process"], "probes_dir": os.path.join(ROOT, "probes"),
                       "ringbuf_pages": 1, "cache_dir": "/var/cache/nodewarden", "agent_tgid": os.getpid()},
                      timeout=0.3)
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(childload.ChildError, match=r"^unknown request mode 'nope'$"):
        childload.run({"mode": "nope"})

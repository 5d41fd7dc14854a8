"""One container's resource counters from its cgroup files, cgroup v2 (unified) or v1 (a directory per controller).

What is read, per version (kernel Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/*.rst):

    counter            v2                                  v1
    CPU time           cpu.stat usage_usec/user_usec/      cpuacct.usage, cpuacct.usage_user/_sys
                       system_usec                         (ns; cpuacct.stat's USER_HZ ticks as a fallback)
    CPU throttling     cpu.stat nr_periods/nr_throttled/   cpu.stat nr_periods/nr_throttled/throttled_time
                       throttled_usec
    memory             memory.current, memory.max          memory.usage_in_bytes, memory.limit_in_bytes
    memory parts       memory.stat anon, file,             memory.stat total_rss, total_cache,
                       inactive_file                       total_inactive_file
    limit reached      memory.events max, oom_kill         memory.failcnt, memory.oom_control oom_kill
    pids               pids.current, pids.max              pids.current, pids.max
    block I/O          io.stat rbytes/wbytes/rios/wios     blkio.throttle.io_service_bytes_recursive and
                                                           io_serviced_recursive (Read/Write per device)

The working set is usage minus inactive file pages, as the kubelet and cAdvisor compute it: the part of a
container's memory its limit's reclaim cannot take back cheaply, so the number to watch against the limit.
A limit of "max" (v2) or the page counter's maximum (v1: PAGE_COUNTER_MAX pages, 0x7FFFFFFFFFFFF000 on 4 KiB
pages) is no limit: None.

Parsers are pure and take text, so tests run them on files in the kernel's format; the readers take the
mount points, so tests point them at a tree of their own. A file that is absent or unreadable leaves its
counter None (a controller not enabled for the cgroup, a cgroup removed under us); a cgroup directory that is
gone altogether is CgroupGone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from agent.events import ContainerUsage

# v1's "no limit": PAGE_COUNTER_MAX (LONG_MAX / PAGE_SIZE) pages in bytes, rounded down to a page. Any value
# this large is no limit in practice; 2^62 leaves room for every page size.
_V1_UNLIMITED = 1 << 62
# mountinfo escapes space, tab, newline and backslash as \ooo (as agent/enrich/cgroups.py undoes them).
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


class CgroupGone(Exception):
    """The container's cgroup directory does not exist (any more): the task exited."""


# -- pure parsers ---------------------------------------------------------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """"key value" lines (cpu.stat, memory.stat, memory.events, memory.oom_control) as ints; junk lines skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, val = line.partition(" ")
        try:
            out[key] = int(val.strip())
        except ValueError:
            continue
    return out


def parse_single(text: str) -> int | None:
    """A file holding one integer (memory.current, cpuacct.usage, pids.current); None when it holds none."""
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_limit(text: str) -> int | None:
    """A limit file: "max" (v2) or a value past 2^62 (v1's unlimited) -> None, else the bytes or count."""
    t = text.strip()
    if t == "max":
        return None
    n = parse_single(t)
    return None if n is None or n >= _V1_UNLIMITED else n


def parse_io_stat(text: str) -> tuple[int, int, int, int]:
    """v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device): summed
    (read bytes, write bytes, read ops, write ops)."""
    rb = wb = ri = wi = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, val = item.partition("=")
            try:
                n = int(val)
            except ValueError:
                continue
            if key == "rbytes":
                rb += n
            elif key == "wbytes":
                wb += n
            elif key == "rios":
                ri += n
            elif key == "wios":
                wi += n
    return rb, wb, ri, wi


def parse_blkio(text: str) -> tuple[int, int]:
    """v1 blkio.*io_service_bytes / io_serviced ("8:0 Read 4096" per device and op, then "Total N"):
    summed (read, write) over the devices."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # the closing "Total N" line, or junk
        try:
            n = int(parts[2])
        except ValueError:
            continue
        if parts[1] == "Read":
            read += n
        elif parts[1] == "Write":
            write += n
    return read, write


def parse_v1_cpuacct_stat(text: str, hz: int) -> tuple[int | None, int | None]:
    """cpuacct.stat's "user N" and "system N" in USER_HZ ticks, as ns."""
    d = parse_flat_keyed(text)
    scale = 1_000_000_000 // max(1, hz)

    def ns(key: str) -> int | None:
        return d[key] * scale if key in d else None

    return ns("user"), ns("system")


def parse_mountinfo_cgroups(mountinfo: str) -> tuple[str | None, dict[str, str]]:
    """(cgroup2 mount point, {v1 controller: its mount point}) from a /proc/<pid>/mountinfo text.

    A v1 hierarchy's controllers are its superblock options ("rw,cpu,cpuacct" for a co-mounted one); named
    hierarchies (name=systemd) carry no controller. A mount of a hierarchy's root ("/" in field 4) wins over
    a bind mount of a sub-cgroup, as in agent/enrich/cgroups.py."""
    v2: str | None = None
    v2_root = False
    v1: dict[str, str] = {}
    v1_root: set[str] = set()
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        point, is_root = _unescape(fields[4]), fields[3] == "/"
        if rfields[0] == "cgroup2":
            if v2 is None or (is_root and not v2_root):
                v2, v2_root = point, is_root
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                if opt in _V1_CONTROLLERS and (opt not in v1 or (is_root and opt not in v1_root)):
                    v1[opt] = point
                    if is_root:
                        v1_root.add(opt)
    return v2, v1


_V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "memory", "pids", "blkio"})


def parse_proc_cgroup_v1(text: str) -> dict[str, str]:
    """{v1 controller: path} from a /proc/<pid>/cgroup text ("4:memory:/k8s.io/abc", "2:cpu,cpuacct:/x")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[0] == "0" or not parts[2].startswith("/"):
            continue
        for ctl in parts[1].split(","):
            if ctl in _V1_CONTROLLERS:
                out[ctl] = parts[2].removesuffix(" (deleted)")
    return out


# -- the readers ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the cgroup hierarchies are mounted, and which one holds the controllers.

    version 2: every controller in the unified hierarchy at v2 (memory is listed in its cgroup.controllers).
    version 1: a mount per controller (v1), also on a hybrid host whose cgroup2 mount (systemd's "unified")
    holds no controller. version 0: neither (no cgroup filesystem we can read)."""

    version: int
    v2: str | None = None
    v1: tuple[tuple[str, str], ...] = ()  # (controller, mount point), sorted

    def v1_mount(self, controller: str) -> str | None:
        return next((m for c, m in self.v1 if c == controller), None)


def discover(proc_root: str = "/proc", mountinfo: str | None = None) -> Layout:
    """The Layout of this mount namespace (its /proc/self/mountinfo), or of the given mountinfo text."""
    if mountinfo is None:
        try:
            with open(os.path.join(proc_root, "self", "mountinfo")) as f:
                mountinfo = f.read()
        except OSError:
            return Layout(0)
    v2, v1 = parse_mountinfo_cgroups(mountinfo)
    return layout_of(v2, v1)


def layout_of(v2: str | None, v1: dict[str, str]) -> Layout:
    v1t = tuple(sorted(v1.items()))
    if v2 is not None:
        controllers = _read(os.path.join(v2, "cgroup.controllers"))
        if controllers is not None and "memory" in controllers.split():
            return Layout(2, v2, v1t)
    if "memory" in v1 or "cpuacct" in v1:
        return Layout(1, v2, v1t)
    return Layout(2 if v2 is not None else 0, v2, v1t)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _join(mount: str, path: str) -> str | None:
    """<mount>/<path>, refusing a path that climbs out of the mount (".." in a spec's cgroupsPath)."""
    full = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    base = mount.rstrip("/")
    return full if full == base or full.startswith(base + "/") else None


def read_v2(mount: str, path: str) -> ContainerUsage:
    """A cgroup's counters from the unified hierarchy; CgroupGone when its directory is not there."""
    d = _join(mount, path)
    if d is None or not os.path.isdir(d):
        raise CgroupGone(path)

    def f(name: str) -> str | None:
        return _read(os.path.join(d, name))

    cpu = parse_flat_keyed(f("cpu.stat") or "")
    mem = parse_flat_keyed(f("memory.stat") or "")
    events = parse_flat_keyed(f("memory.events") or "")
    current = parse_single(f("memory.current") or "")
    limit_text = f("memory.max")
    pids_text = f("pids.max")
    io_text = f("io.stat")
    io = parse_io_stat(io_text) if io_text is not None else (None, None, None, None)

    def us(key: str) -> int | None:
        return cpu[key] * 1000 if key in cpu else None

    return ContainerUsage(
        cgroup_version=2,
        cpu_usage_ns=us("usage_usec"), cpu_user_ns=us("user_usec"), cpu_system_ns=us("system_usec"),
        cpu_periods=cpu.get("nr_periods"), cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_ns=us("throttled_usec"),
        memory_usage=current,
        memory_limit=parse_limit(limit_text) if limit_text is not None else None,
        memory_working_set=_working_set(current, mem.get("inactive_file")),
        memory_rss=mem.get("anon"), memory_cache=mem.get("file"),
        memory_limit_hits=events.get("max"), oom_kills=events.get("oom_kill"),
        pids=parse_single(f("pids.current") or ""),
        pids_limit=parse_limit(pids_text) if pids_text is not None else None,
        io_read_bytes=io[0], io_write_bytes=io[1], io_read_ops=io[2], io_write_ops=io[3],
    )


def read_v1(layout: Layout, paths: dict[str, str], hz: int | None = None) -> ContainerUsage:
    """A cgroup's counters from the v1 hierarchies: `paths` is {controller: path} (the container's
    /proc/<pid>/cgroup lines, or its one path for every controller). CgroupGone when no controller's
    directory is there."""
    dirs: dict[str, str] = {}
    for ctl, mount in layout.v1:
        path = paths.get(ctl)
        d = _join(mount, path) if path else None
        if d is not None and os.path.isdir(d):
            dirs[ctl] = d
    if not dirs:
        raise CgroupGone(",".join(sorted(set(paths.values()))))

    def f(ctl: str, name: str) -> str | None:
        d = dirs.get(ctl)
        return _read(os.path.join(d, name)) if d else None

    usage = parse_single(f("cpuacct", "cpuacct.usage") or "")
    user = parse_single(f("cpuacct", "cpuacct.usage_user") or "")
    system = parse_single(f("cpuacct", "cpuacct.usage_sys") or "")
    if user is None or system is None:  # kernels before 4.6 have only the tick counts
        user, system = parse_v1_cpuacct_stat(f("cpuacct", "cpuacct.stat") or "", hz or os.sysconf("SC_CLK_TCK"))
    cpu = parse_flat_keyed(f("cpu", "cpu.stat") or "")
    mem = parse_flat_keyed(f("memory", "memory.stat") or "")
    oom = parse_flat_keyed(f("memory", "memory.oom_control") or "")
    current = parse_single(f("memory", "memory.usage_in_bytes") or "")
    limit_text = f("memory", "memory.limit_in_bytes")
    pids_text = f("pids", "pids.max")
    ib, io = _blkio(f, "io_service_bytes"), _blkio(f, "io_serviced")
    return ContainerUsage(
        cgroup_version=1,
        cpu_usage_ns=usage, cpu_user_ns=user, cpu_system_ns=system,
        cpu_periods=cpu.get("nr_periods"), cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_ns=cpu.get("throttled_time"),
        memory_usage=current,
        memory_limit=parse_limit(limit_text) if limit_text is not None else None,
        memory_working_set=_working_set(current, mem.get("total_inactive_file")),
        memory_rss=mem.get("total_rss"), memory_cache=mem.get("total_cache"),
        memory_limit_hits=parse_single(f("memory", "memory.failcnt") or ""), oom_kills=oom.get("oom_kill"),
        pids=parse_single(f("pids", "pids.current") or ""),
        pids_limit=parse_limit(pids_text) if pids_text is not None else None,
        io_read_bytes=ib[0], io_write_bytes=ib[1], io_read_ops=io[0], io_write_ops=io[1],
    )


def _blkio(f, name: str) -> tuple[int | None, int | None]:
    """(read, write) of a v1 blkio counter. blk-throttle keeps blkio.throttle.* only for the disks that have a
    throttle rule in the cgroup (it skips the others early: on a node without rules they stay 0); bfq keeps
    blkio.bfq.* for the disks it schedules. Both count the same bios where both apply, so the larger of the
    two is taken, never their sum; _recursive takes in the child cgroups."""
    best: tuple[int | None, int | None] = (None, None)
    for layer in ("throttle", "bfq"):
        text = f("blkio", f"blkio.{layer}.{name}_recursive") or f("blkio", f"blkio.{layer}.{name}")
        if text is not None:
            r, w = parse_blkio(text)
            best = (max(r, best[0] or 0), max(w, best[1] or 0))
    return best


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(0, usage - (inactive_file or 0))


# -- network: the container's network namespace, through its init process --------------------------------


@dataclass(frozen=True, slots=True)
class NetCounters:
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int


def parse_net_dev(text: str) -> NetCounters:
    """/proc/<pid>/net/dev summed over the namespace's interfaces but loopback (a container's traffic with
    itself is not its network use). Columns: rx bytes packets errs drop fifo frame compressed multicast,
    then tx bytes packets errs drop ..."""
    rb = tb = rp = tp = rd = td = 0
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep or name.strip() == "lo":
            continue
        cols = rest.split()
        if len(cols) < 16:
            continue
        try:
            vals = [int(c) for c in cols[:12]]
        except ValueError:
            continue
        rb, rp, rd = rb + vals[0], rp + vals[1], rd + vals[3]
        tb, tp, td = tb + vals[8], tp + vals[9], td + vals[11]
    return NetCounters(rb, tb, rp, tp, rd, td)


def netns_inode(proc_root: str, pid: int | str) -> int:
    """The inode of pid's network namespace ("self": ours); 0 when it is gone or not ours to see."""
    try:
        return os.stat(os.path.join(proc_root, str(pid), "ns", "net")).st_ino
    except OSError:
        return 0


def read_net(proc_root: str, pid: int) -> NetCounters | None:
    """The counters of pid's network namespace; None when the pid is gone."""
    text = _read(os.path.join(proc_root, str(pid), "net", "dev"))
    return parse_net_dev(text) if text is not None else None

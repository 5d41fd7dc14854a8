"""The user-side mirror of probes/events.h: every enum, flag, size and record layout.

Keep in sync with probes/events.h. tests/unit/test_abi.py parses events.h (its enums, #defines
and structs), compiles it with the system C compiler to print sizeof/offsetof of every member,
and checks each value here against both: an enum member, a #define or a struct field added on
the C side without its mirror here fails that test.

Layouts are explicit little-endian `struct` formats with their padding spelled out (the C side
pads by hand too), so Python's native alignment never silently differs from the compiler's.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from agent.events import Op

__all__ = ["Op", "Probe", "Cfg", "Action", "Reason", "Scope", "Layout", "LAYOUTS"]

# #defines (keep in sync with probes/events.h)
PATH_MAX = 256  # NW_PATH_MAX
ARGS_MAX = 1024  # NW_ARGS_MAX
ADDR_MAX = 128  # NW_ADDR_MAX
COMM_LEN = 16  # NW_COMM_LEN
PREFIX_MAX = 128  # NW_PREFIX_MAX
F_TRUNCATED = 0x01  # NW_F_TRUNCATED, in event_header.flags
F_WATCHED = 0x02  # NW_F_WATCHED: a read-only open sent because its path is on the watch list
F_CWD = 0x04  # NW_F_CWD: file_event.path is relative to the cwd and path2 holds the cwd
WATCH_READ = 0x1  # NW_WATCH_READ: a watch_prefix value, read-only opens of it are sent
WATCH_WRITE = 0x2  # NW_WATCH_WRITE: writing opens of it are sent even below an ignored prefix
PATH_DEPTH = 32  # NW_PATH_DEPTH: components (and mount crossings) a kernel dentry walk follows
SYS_NAME_MAX = 256  # NW_SYS_NAME_MAX: bytes of sys_event.name and .source
FSTYPE_MAX = 32  # NW_FSTYPE_MAX: bytes of sys_event.fstype

# exec_event.exe_flags (NW_EXE_*, keep in sync with probes/events.h)
EXE_UNHASHED = 0x01
EXE_NLINK0 = 0x02
EXE_IS_ROOT = 0x04
EXE_INTERNAL = 0x08
EXE_SHMEM = 0x10
EXE_OVERLAY = 0x20
EXE_UPPER = 0x40
EXE_PATH_CUT = 0x100
EXE_CWD_CUT = 0x200


class Probe(IntEnum):
    """enum nw_probe: a probe family's slot in the per-CPU drop counters (keep in sync with probes/events.h)."""

    PROCESS = 0
    FILE = 1
    NET = 2
    BENCH = 3
    CGROUP = 4
    SYSTEM = 5


PROBE_MAX = 6  # PROBE_MAX: the number of slots, not a family


class Cfg(IntEnum):
    """enum nw_cfg: slots of the nw_config array map (keep in sync with probes/events.h)."""

    TARGET_TGID = 0
    FILE_READONLY = 1
    DRIFT = 2
    EXEC_MODE = 3
    HOST_RULES = 4
    WATCH_ENVIRON = 5
    WATCH_HOME_SSH = 6
    WATCH_SHORT = 7
    FOLD_NS = 8


CFG_MAX = 16  # CFG_MAX: the map's size, room for slots to come


class Fold(IntEnum):
    """enum nw_fold: slots of the per-CPU fold counters (keep in sync with probes/events.h)."""

    FILE_OPEN = 0
    NET_CONNECT = 1


FOLD_MAX = 2  # FOLD_MAX: the number of slots


class Action(IntEnum):
    """enum nw_action: what the in-kernel exec rules did (keep in sync with probes/events.h)."""

    NONE = 0
    ALERT = 1
    KILL = 2


class Reason(IntEnum):
    """enum nw_reason: why an exec rule matched, the top 16 bits of exec_event.rule (keep in sync)."""

    NAME = 1
    PATH = 2
    DRIFT = 3
    PROFILE = 4  # not in the container's protecting profile's allow-list; the low 16 bits are its slot


class Scope(IntEnum):
    """enum nw_scope: where a deny_exec rule applies, a bit mask (keep in sync with probes/events.h)."""

    CONTAINERS = 1
    HOST = 2


HOST_CGROUP = 0xFFFFFFFFFFFFFFFF  # NW_HOST_CGROUP: deny_key.cgroup_id of the host's rules


class Layout:
    """One C struct of events.h: its members in order, each with a `struct` format code.

    A nested struct is one `Ns` member (its own Layout checks its inside). `offsets` and
    `sizes` are computed from the codes, which is what the ABI test compares with gcc's.
    """

    __slots__ = ("name", "fields", "struct", "size", "offsets", "sizes")

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...]):
        self.name = name
        self.fields = fields
        self.struct = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self.struct.size
        self.offsets: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        at = 0
        for fname, code in fields:
            self.offsets[fname] = at
            self.sizes[fname] = struct.calcsize("<" + code)
            at += self.sizes[fname]

    def span(self, first: str, last: str) -> struct.Struct:
        """A Struct of the members first..last (inclusive), to unpack at offsets[first]."""
        names = [f for f, _ in self.fields]
        i, j = names.index(first), names.index(last)
        return struct.Struct("<" + "".join(code for _, code in self.fields[i : j + 1]))


_HEADER_FIELDS = (
    ("op", "B"), ("flags", "B"), ("_pad0", "H"), ("pid", "I"), ("tid", "I"), ("ppid", "I"), ("uid", "I"),
    ("gid", "I"), ("ts_ns", "Q"), ("cgroup_id", "Q"), ("mntns", "I"), ("_pad1", "I"), ("comm", f"{COMM_LEN}s"),
)
EVENT_HEADER = Layout("event_header", _HEADER_FIELDS)
_H = ("h", f"{EVENT_HEADER.size}s")

EXEC_EVENT = Layout("exec_event", (
    _H, ("filename_len", "I"), ("args_len", "I"), ("filename", f"{PATH_MAX}s"), ("args", f"{ARGS_MAX}s"),
    ("action", "I"), ("rule", "I"), ("exe_ino", "Q"), ("exe_dev", "I"), ("_pad", "I"),
    ("exe_flags", "I"), ("exe_path_len", "I"), ("exe_mnt_id", "I"), ("cwd_len", "I"),
    ("exe_path", f"{PATH_MAX}s"), ("cwd", f"{PATH_MAX}s"),
))
FORK_EVENT = Layout("fork_event", (_H, ("child_pid", "I"), ("_pad", "I")))
EXIT_EVENT = Layout("exit_event", (_H, ("exit_code", "i"), ("_pad", "I")))
FILE_EVENT = Layout("file_event", (
    _H, ("ret", "q"), ("dirfd", "i"), ("flags", "I"), ("mode", "I"), ("owner_uid", "I"), ("owner_gid", "I"),
    ("fd", "i"), ("path_len", "I"), ("path2_len", "I"), ("path", f"{PATH_MAX}s"), ("path2", f"{PATH_MAX}s"),
))
NET_EVENT = Layout("net_event", (
    _H, ("ret", "q"), ("fd", "i"), ("sock_type", "H"), ("addr_len", "H"), ("backlog", "I"), ("_pad", "I"),
    ("addr", f"{ADDR_MAX}s"), ("fd2", "i"), ("protocol", "I"),
))
CGROUP_EVENT = Layout("cgroup_event", (
    _H, ("id", "Q"), ("level", "I"), ("path_len", "I"), ("path", f"{PATH_MAX}s"),
))
SYS_EVENT = Layout("sys_event", (
    _H, ("ret", "q"), ("call", "I"), ("_pad", "I"), ("arg", "q"), ("target_pid", "q"), ("ids", "3q"),
    ("caps", "3Q"), ("name_len", "I"), ("source_len", "I"), ("fstype_len", "I"), ("_pad2", "I"),
    ("name", f"{SYS_NAME_MAX}s"), ("source", f"{SYS_NAME_MAX}s"), ("fstype", f"{FSTYPE_MAX}s"),
))
BENCH_EVENT = Layout("bench_event", (_H, ("counter", "Q")))
# Map keys (bcc builds their ctypes from the C text; mirrored so the sizes are checked too).
PATH_KEY = Layout("path_key", (("prefixlen", "I"), ("path", f"{PREFIX_MAX}s")))
DENY_KEY = Layout("deny_key", (("prefixlen", "I"), ("cgroup_id", "8s"), ("path", f"{PREFIX_MAX}s")))
INO_KEY = Layout("ino_key", (("ino", "Q"), ("dev", "I"), ("_pad", "I")))
CGROUP_PATH = Layout("cgroup_path", (("path", f"{PATH_MAX}s"),))

# Every struct of events.h by its C name.
LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (EVENT_HEADER, EXEC_EVENT, FORK_EVENT, EXIT_EVENT, FILE_EVENT, NET_EVENT, CGROUP_EVENT,
                SYS_EVENT, BENCH_EVENT, PATH_KEY, DENY_KEY, INO_KEY, CGROUP_PATH)
}


# Device numbers. The kernel keeps dev_t as MKDEV(major, minor) = major << 20 | minor (what
# super_block.s_dev holds, so what exec_event.exe_dev and ino_key.dev carry); stat(2) returns
# new_encode_dev() of it (include/linux/kdev_t.h), the encoding os.major()/os.minor() read.
_MINORBITS = 20
_MINORMASK = (1 << _MINORBITS) - 1


def dev_to_user(kdev: int) -> int:
    """The kernel's internal dev_t -> the st_dev that stat(2) reports (new_encode_dev)."""
    major, minor = kdev >> _MINORBITS, kdev & _MINORMASK
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def dev_to_kernel(st_dev: int) -> int:
    """stat(2)'s st_dev -> the kernel's internal dev_t (new_decode_dev), e.g. for ino_key.dev."""
    major = (st_dev & 0xFFF00) >> 8
    minor = (st_dev & 0xFF) | ((st_dev >> 12) & 0xFFF00)
    return (major << _MINORBITS) | minor

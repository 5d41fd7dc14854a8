r"""What every sensor shares: the record header (struct event_header) and the clock.

Struct layouts mirror probes/events.h in agent/sensors/abi.py; keep in sync with probes/events.h.
tests/unit/test_abi.py compiles events.h with gcc and checks every size and offset there.

Strings from the kernel (paths, argv, comm, unix socket paths) are bytes, not always UTF-8.
They become text by one rule, `escape`: a byte that is not part of valid UTF-8 is written
`\xNN` (two lowercase hex digits) and a backslash itself is written `\\`; everything else is
as the kernel sent it. So a name holding the byte 0xff prints as `\xff` and a name holding the
four characters backslash, x, f, f prints as `\\xff`: never the same text, and `unescape`
gives back the exact bytes. (Escaping the backslash only in names that needed escaping would not
do: the reader could not tell which names those were.) Cost: a name with a real backslash, like
systemd's `dev-disk-by\x2duuid-....swap` units, shows it doubled, as strace(1) and `ls -b` do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.events import KernelEvent, Op
from agent.sensors.abi import ADDR_MAX, ARGS_MAX, EVENT_HEADER, F_TRUNCATED, PATH_MAX, PREFIX_MAX, Cfg, Probe

__all__ = ["ADDR_MAX", "ARGS_MAX", "HEADER", "PATH_MAX", "PREFIX_MAX", "BootClock", "DecodeError", "Sensor",
           "check_size", "escape", "header_args", "text", "unescape"]

# struct event_header; the layouts and constants live in agent/sensors/abi.py (keep in sync with
# probes/events.h), re-exported here under the names the sensors have always used.
HEADER = EVENT_HEADER.struct
HEADER_FIELDS = tuple(name for name, _ in EVENT_HEADER.fields)
CFG_TARGET_TGID = Cfg.TARGET_TGID
CFG_FILE_READONLY = Cfg.FILE_READONLY


class DecodeError(ValueError):
    """A record too short or with an op no sensor knows."""


class BootClock:
    """Turns CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns) into wall-clock nanoseconds.

    BOOTTIME keeps counting through suspend, so one offset holds; `resync` follows wall-clock
    steps (NTP) and is called from the pipeline's periodic tick.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0
        self.resync()

    def resync(self) -> None:
        self.offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def escape(raw: bytes) -> str:
    """Kernel-copied bytes as text that says exactly which bytes they were (see the module docstring)."""
    if b"\\" in raw:
        raw = raw.replace(b"\\", b"\\\\")  # 0x5c never occurs inside a UTF-8 multibyte sequence
    return raw.decode("utf-8", "backslashreplace")


def text(buf: bytes, off: int, length: int) -> str:
    """The string at buf[off:off+length], escaped: invalid UTF-8 stays visible and unambiguous."""
    return escape(buf[off : off + length])


_ESCAPES = re.compile(r"\\(\\|x[89a-f][0-9a-f])")  # what escape writes: \\ and \x80..\xff


def unescape(s: str) -> bytes:
    """The exact bytes the kernel sent, from the text `escape` made of them."""
    out = _ESCAPES.sub(lambda m: "\\" if m[1] == "\\" else chr(0xDC00 + int(m[1][1:], 16)), s)
    return out.encode("utf-8", "surrogateescape")


def header_args(buf: bytes, clock: BootClock) -> tuple:
    """The KernelEvent fields of a record, in dataclass order."""
    if len(buf) < HEADER.size:
        raise DecodeError(f"record of {len(buf)} bytes is shorter than its header")
    op, flags, _, pid, tid, ppid, uid, gid, ts, cgroup_id, mntns, _, comm = HEADER.unpack_from(buf)
    name = escape(comm.split(b"\0", 1)[0])
    return (Op(op), ts + clock.offset, pid, tid, ppid, uid, gid, cgroup_id, mntns, name, bool(flags & F_TRUNCATED))


Decoder = Callable[[bytes, BootClock], KernelEvent]


@dataclass(frozen=True)
class Sensor:
    """A probe family as data: its C file, drop-counter slot, decoders, and the syscalls it may lack."""

    name: str
    source: str  # file name under probes/
    probe: Probe  # enum nw_probe slot of its drop counter
    decoders: dict[int, Decoder]
    optional_tracepoints: tuple[tuple[str, str], ...] = field(default=())
    # (category, tracepoint, function) attached by name, when the tracepoint exists: a program on a tracepoint
    # that another family's TRACEPOINT_PROBE already names (bcc allows one function name per tracepoint)
    attach: tuple[tuple[str, str, str], ...] = field(default=())


def check_size(buf: bytes, need: int, what: str) -> None:
    if len(buf) < need:
        raise DecodeError(f"{what} record of {len(buf)} bytes, expected {need}")

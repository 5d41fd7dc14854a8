"""File sensor: writing opens, unlink, rename, chmod, chown (probes/file.bpf.c)."""

from __future__ import annotations

import struct

from agent.events import FileEvent, Op
from agent.sensors.common import HEADER, PATH_MAX, BootClock, Sensor, check_size, header_args, text

# struct file_event after the header
FILE_BODY = struct.Struct(f"<qiIIIIiII{PATH_MAX}s{PATH_MAX}s")
FILE_SIZE = HEADER.size + FILE_BODY.size
_FIXED = struct.Struct("<qiIIIIiII")


def decode_file(buf: bytes, clock: BootClock) -> FileEvent:
    check_size(buf, FILE_SIZE, "file")
    ret, dirfd, flags, mode, ouid, ogid, fd, plen, p2len = _FIXED.unpack_from(buf, HEADER.size)
    base = HEADER.size + _FIXED.size
    path = text(buf, base, min(plen, PATH_MAX))
    path2 = text(buf, base + PATH_MAX, min(p2len, PATH_MAX))
    return FileEvent(*header_args(buf, clock), path, path2, ret, flags, mode, dirfd, fd, ouid, ogid)


# Syscalls some kernels lack (legacy x86-only calls, newer additions): compiled in only when
# tracefs has both their enter and exit tracepoints.
OPTIONAL = ("open", "openat2", "creat", "unlink", "rename", "renameat", "chmod", "fchmodat2", "chown", "lchown")

SENSOR = Sensor(
    name="file",
    source="file.bpf.c",
    probe=1,
    decoders={op: decode_file for op in (Op.FILE_OPEN, Op.FILE_UNLINK, Op.FILE_RENAME, Op.FILE_CHMOD,
                                         Op.FILE_CHOWN)},
    optional_tracepoints=tuple(("syscalls", name) for name in OPTIONAL),
)

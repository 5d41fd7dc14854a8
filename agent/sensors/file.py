"""File sensor: writing opens, unlink, rename, chmod, chown, symlink, link, and the close of files written
under a close prefix (a web root: issue 11) (probes/file.bpf.c)."""

from __future__ import annotations

from agent.events import FileEvent, Op
from agent.sensors import native
from agent.sensors.abi import F_CWD, FILE_EVENT, Probe
from agent.sensors.common import PATH_MAX, BootClock, Sensor, check_size, header_args, text

FILE_SIZE = FILE_EVENT.size
_FIXED = FILE_EVENT.span("ret", "path2_len")
_FIXED_AT = FILE_EVENT.offsets["ret"]
_PATH_AT = FILE_EVENT.offsets["path"]
_PATH2_AT = FILE_EVENT.offsets["path2"]


def decode_file(buf: bytes, clock: BootClock) -> FileEvent:
    check_size(buf, FILE_SIZE, "file")
    ret, dirfd, flags, mode, ouid, ogid, fd, plen, p2len = _FIXED.unpack_from(buf, _FIXED_AT)
    path = text(buf, _PATH_AT, min(plen, PATH_MAX))
    path2 = text(buf, _PATH2_AT, min(p2len, PATH_MAX))
    if buf[1] & F_CWD:  # event_header.flags: path2 carries the cwd of a relative path, not a second path
        return FileEvent(*header_args(buf, clock), path, "", ret, flags, mode, dirfd, fd, ouid, ogid, path2)
    return FileEvent(*header_args(buf, clock), path, path2, ret, flags, mode, dirfd, fd, ouid, ogid)


# Syscalls some kernels lack (legacy x86-only calls, newer additions): compiled in only when
# tracefs has both their enter and exit tracepoints.
OPTIONAL = ("open", "openat2", "creat", "unlink", "rename", "renameat", "chmod", "fchmodat2", "chown", "lchown",
            "symlink", "link")

SENSOR = Sensor(
    name="file",
    source="file.bpf.c",
    probe=Probe.FILE,
    # the compiled decoder when built (agent/sensors/native.py), decode_file being its reference
    decoders=dict.fromkeys((Op.FILE_OPEN, Op.FILE_UNLINK, Op.FILE_RENAME, Op.FILE_CHMOD, Op.FILE_CHOWN,
                             Op.FILE_SYMLINK, Op.FILE_LINK, Op.FILE_CLOSE), native.decoder("file", decode_file)),
    optional_tracepoints=tuple(("syscalls", name) for name in OPTIONAL),
    # a close mark follows dup2/dup3 (a shell's redirection); net.bpf.c holds those tracepoints' own names
    attach=(("syscalls", "sys_enter_dup2", "nw_file_dup2"), ("syscalls", "sys_enter_dup3", "nw_file_dup3")),
)

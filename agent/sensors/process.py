"""Process sensor: exec, fork, exit (probes/process.bpf.c)."""

from __future__ import annotations

from agent.events import ExecEvent, ExitEvent, ForkEvent, Op
from agent.sensors import abi, native
from agent.sensors.abi import EXEC_EVENT, EXIT_EVENT, FORK_EVENT, Probe, dev_to_user
from agent.sensors.common import ARGS_MAX, PATH_MAX, BootClock, Sensor, check_size, escape, header_args, text

EXEC_SIZE = EXEC_EVENT.size
FORK_SIZE = FORK_EVENT.size
EXIT_SIZE = EXIT_EVENT.size
_LENS = EXEC_EVENT.span("filename_len", "args_len")
_LENS_AT = EXEC_EVENT.offsets["filename_len"]
_FILENAME_AT = EXEC_EVENT.offsets["filename"]
_ARGS_AT = EXEC_EVENT.offsets["args"]
_TAIL = EXEC_EVENT.span("action", "exe_dev")
_TAIL_AT = EXEC_EVENT.offsets["action"]
_IDENT = EXEC_EVENT.span("exe_flags", "cwd_len")
_IDENT_AT = EXEC_EVENT.offsets["exe_flags"]
_EXE_PATH_AT = EXEC_EVENT.offsets["exe_path"]
_CWD_AT = EXEC_EVENT.offsets["cwd"]
_CHILD = FORK_EVENT.span("child_pid", "child_pid")
_CODE = EXIT_EVENT.span("exit_code", "exit_code")
_BODY_AT = FORK_EVENT.offsets["child_pid"]


def split_args(block: bytes) -> tuple[str, ...]:
    """The NUL-separated argv block of mm->arg_start..arg_end, each argument escaped (common.escape)."""
    if not block:
        return ()
    if block.endswith(b"\0"):
        block = block[:-1]
    return tuple(escape(a) for a in block.split(b"\0"))


def decode_exec(buf: bytes, clock: BootClock) -> ExecEvent:
    # A record of an older probe (before exe_flags..cwd) still decodes, without them: recordings
    # (agent.record_file, agent/sensors/replay.py) outlive the probe that made them.
    check_size(buf, _IDENT_AT, "exec")
    fn_len, args_len = _LENS.unpack_from(buf, _LENS_AT)
    fn_len = min(fn_len, PATH_MAX)
    args_len = min(args_len, ARGS_MAX)
    argv = split_args(buf[_ARGS_AT : _ARGS_AT + args_len])
    action, rule, exe_ino, exe_dev = _TAIL.unpack_from(buf, _TAIL_AT)
    # exe_dev is super_block.s_dev, the kernel's MKDEV encoding; the event carries what stat(2)
    # says of the file (st_dev), so it compares with os.stat() and os.major()/os.minor() read it.
    if len(buf) < EXEC_SIZE:
        return ExecEvent(*header_args(buf, clock), text(buf, _FILENAME_AT, fn_len), argv, action, rule,
                         exe_ino, dev_to_user(exe_dev))
    flags, exe_len, mnt_id, cwd_len = _IDENT.unpack_from(buf, _IDENT_AT)
    path = text(buf, _EXE_PATH_AT, min(exe_len, PATH_MAX))
    memfd, deleted = exe_kind(flags, path)
    if deleted and path:
        path += " (deleted)"  # as d_path (and so /proc/<pid>/exe) writes it
    return ExecEvent(*header_args(buf, clock), text(buf, _FILENAME_AT, fn_len), argv, action, rule,
                     exe_ino, dev_to_user(exe_dev), path, memfd, deleted, bool(flags & abi.EXE_UPPER),
                     mnt_id, text(buf, _CWD_AT, min(cwd_len, PATH_MAX)))


def exe_kind(flags: int, path: str) -> tuple[bool, bool]:
    """(memfd, deleted) from exec_event.exe_flags and the walked path.

    deleted: what d_path calls unlinked (an unhashed dentry that is not its own root), or an inode
    with no links left. memfd: a top-level file of a kernel-internal tmpfs/hugetlbfs mount named
    "memfd:..." (mm/memfd.c names them so); a tmpfs a user mounted is never internal."""
    deleted = bool(flags & abi.EXE_NLINK0) or (flags & (abi.EXE_UNHASHED | abi.EXE_IS_ROOT)) == abi.EXE_UNHASHED
    internal_shm = abi.EXE_INTERNAL | abi.EXE_SHMEM
    memfd = (flags & internal_shm) == internal_shm and path.startswith("/memfd:")
    return memfd, deleted


def decode_fork(buf: bytes, clock: BootClock) -> ForkEvent:
    check_size(buf, FORK_SIZE, "fork")
    (child,) = _CHILD.unpack_from(buf, _BODY_AT)
    return ForkEvent(*header_args(buf, clock), child)


def decode_exit(buf: bytes, clock: BootClock) -> ExitEvent:
    check_size(buf, EXIT_SIZE, "exit")
    (code,) = _CODE.unpack_from(buf, _BODY_AT)
    # task->exit_code is a wait status: (exit status << 8) | terminating signal.
    return ExitEvent(*header_args(buf, clock), (code >> 8) & 0xFF, code & 0x7F)


SENSOR = Sensor(
    name="process",
    source="process.bpf.c",
    probe=Probe.PROCESS,
    # the compiled decoders when built (agent/sensors/native.py), these being their reference
    decoders={Op.EXEC: native.decoder("exec", decode_exec), Op.FORK: native.decoder("fork", decode_fork),
              Op.EXIT: native.decoder("exit", decode_exit)},
)

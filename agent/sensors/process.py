"""Process sensor: exec, fork, exit (probes/process.bpf.c)."""

from __future__ import annotations

import struct

from agent.events import ExecEvent, ExitEvent, ForkEvent, Op
from agent.sensors.common import ARGS_MAX, HEADER, PATH_MAX, BootClock, Sensor, check_size, header_args, text

# struct exec_event after the header: filename_len, args_len, filename[256], args[1024],
# action, rule, exe_ino, exe_dev, _pad
EXEC_BODY = struct.Struct(f"<II{PATH_MAX}s{ARGS_MAX}sIIQII")
_EXEC_TAIL = struct.Struct("<II")
EXEC_SIZE = HEADER.size + EXEC_BODY.size
# struct fork_event / exit_event after the header
FORK_BODY = struct.Struct("<II")
EXIT_BODY = struct.Struct("<iI")
FORK_SIZE = EXIT_SIZE = HEADER.size + FORK_BODY.size


def split_args(block: bytes) -> tuple[str, ...]:
    """The NUL-separated argv block of mm->arg_start..arg_end."""
    if not block:
        return ()
    if block.endswith(b"\0"):
        block = block[:-1]
    return tuple(a.decode("utf-8", "backslashreplace") for a in block.split(b"\0"))


def decode_exec(buf: bytes, clock: BootClock) -> ExecEvent:
    check_size(buf, EXEC_SIZE, "exec")
    fn_len, args_len = struct.unpack_from("<II", buf, HEADER.size)
    base = HEADER.size + 8
    fn_len = min(fn_len, PATH_MAX)
    args_len = min(args_len, ARGS_MAX)
    argv = split_args(buf[base + PATH_MAX : base + PATH_MAX + args_len])
    action, rule = _EXEC_TAIL.unpack_from(buf, base + PATH_MAX + ARGS_MAX)
    return ExecEvent(*header_args(buf, clock), text(buf, base, fn_len), argv, action, rule)


def decode_fork(buf: bytes, clock: BootClock) -> ForkEvent:
    check_size(buf, FORK_SIZE, "fork")
    (child,) = struct.unpack_from("<I", buf, HEADER.size)
    return ForkEvent(*header_args(buf, clock), child)


def decode_exit(buf: bytes, clock: BootClock) -> ExitEvent:
    check_size(buf, EXIT_SIZE, "exit")
    (code,) = struct.unpack_from("<i", buf, HEADER.size)
    # task->exit_code is a wait status: (exit status << 8) | terminating signal.
    return ExitEvent(*header_args(buf, clock), (code >> 8) & 0xFF, code & 0x7F)


SENSOR = Sensor(
    name="process",
    source="process.bpf.c",
    probe=0,
    decoders={Op.EXEC: decode_exec, Op.FORK: decode_fork, Op.EXIT: decode_exit},
)

"""System sensor: privilege, namespace and kernel-surface calls (probes/system.bpf.c).

ptrace, the setuid and setgid families, capset, init_module/finit_module, mount, umount2, unshare,
setns, bpf(BPF_PROG_LOAD) and memfd_create: what the detection rules need to see privilege
changes, container escapes, kernel tampering and fileless payloads. All share struct sys_event;
which members mean what depends on the op (probes/events.h). Every record is sent at the call's exit
with its result (`ret`, a negative errno on failure: failed calls are reported too); the header's
uid/gid are the caller's real ids before the call.

set*id: `ids` = (real, effective, saved) as the call's arguments ask for them, -1 where the call does
not ask (or the caller passed -1, "unchanged"):
    setuid(x) -> (-1, x, -1)    setreuid(r, e) -> (r, e, -1)    setresuid(r, e, s) -> (r, e, s)
    setfsuid(f) -> (-1, f, -1)  and the same for setgid, setregid, setresgid, setfsgid.
So `setid.effective = 0` is every call asking for root. The kernel drops a call that cannot change any
of the caller's ids (all of them already what it asks; setfsuid(-1), which only reads), in the initial
user namespace only.

ptrace: only the requests that start tracing (TRACEME, ATTACH, SEIZE) or write the tracee (POKETEXT,
POKEDATA, POKEUSER, SETREGS, SETFPREGS, SETFPXREGS, SETREGSET, SETSIGINFO) are sent; the reads,
continues and the detach a debugger or strace makes per traced syscall are not.
capset: `caps` = (effective, permitted, inheritable) as 64-bit masks (one 32-bit word for version 1
headers), `target_pid` the header's pid (0 = self).
finit_module: `name` = the path of the file behind the fd (its dentry, across mounts), "" when the fd
is not open; init_module has no file: `name` "", `arg` 0.
mount: `name` = target, `source`, `fstype` as given ("" for a NULL pointer), `arg` = MS_* flags.
move_mount (how the new mount API, and mount(8) from util-linux 2.39 on, attaches a mount) is an
OP_MOUNT too, `call` "move_mount": `name` = the target (to_path, or to_dfd's path when to_path is ""),
`source` and `fstype` those of the detached mount behind from_dfd (fsmount, open_tree), or from_path as
given when there is one; `arg` = its MOVE_MOUNT_* flags, not MS_* flags.
umount2: `name`, `arg` = MNT_* flags. unshare: `arg` = CLONE_* flags; setns: `arg` = nstype,
`ids[0]` = the fd. bpf: only BPF_PROG_LOAD, `arg` = program type, `name` = its prog_name.
memfd_create: `name`, `arg` = MFD_* flags, `ret` = the fd. Strings longer than the record keeps are cut
and flag the event truncated. The agent's own calls are not sent (ignore_tgid).
"""

from __future__ import annotations

from agent.events import Op, SysEvent
from agent.sensors.abi import FSTYPE_MAX, SYS_EVENT, SYS_NAME_MAX, Probe
from agent.sensors.common import BootClock, Sensor, check_size, header_args, text

SYS_SIZE = SYS_EVENT.size
_FIXED = SYS_EVENT.span("ret", "_pad2")
_FIXED_AT = SYS_EVENT.offsets["ret"]
_NAME_AT = SYS_EVENT.offsets["name"]
_SOURCE_AT = SYS_EVENT.offsets["source"]
_FSTYPE_AT = SYS_EVENT.offsets["fstype"]

# x86-64 syscall numbers of the calls this family traces (arch/x86/entry/syscalls/syscall_64.tbl):
# sys_event.call carries the number, so one op (OP_SETUID) tells setuid from setresuid.
SYSCALL_NAMES = {
    101: "ptrace", 105: "setuid", 106: "setgid", 113: "setreuid", 114: "setregid", 117: "setresuid",
    119: "setresgid", 122: "setfsuid", 123: "setfsgid", 126: "capset", 165: "mount", 166: "umount2",
    175: "init_module", 272: "unshare", 308: "setns", 313: "finit_module", 319: "memfd_create", 321: "bpf",
    429: "move_mount",
}


def decode_sys(buf: bytes, clock: BootClock) -> SysEvent:
    check_size(buf, SYS_SIZE, "system")
    (ret, call, _, arg, target, id0, id1, id2, cap0, cap1, cap2, nlen, slen, flen, _) = _FIXED.unpack_from(
        buf, _FIXED_AT)
    return SysEvent(
        *header_args(buf, clock), ret, SYSCALL_NAMES.get(call, f"syscall{call}"), arg, target, (id0, id1, id2),
        (cap0, cap1, cap2), text(buf, _NAME_AT, min(nlen, SYS_NAME_MAX)),
        text(buf, _SOURCE_AT, min(slen, SYS_NAME_MAX)), text(buf, _FSTYPE_AT, min(flen, FSTYPE_MAX)))


SYSTEM_OPS = (Op.PTRACE, Op.SETUID, Op.SETGID, Op.CAPSET, Op.MODULE_LOAD, Op.MOUNT, Op.UMOUNT, Op.UNSHARE,
              Op.SETNS, Op.BPF_LOAD, Op.MEMFD_CREATE)

SENSOR = Sensor(
    name="system",
    source="system.bpf.c",
    probe=Probe.SYSTEM,
    decoders={op: decode_sys for op in SYSTEM_OPS},
    # Calls some kernels or builds lack; compiled in only when tracefs has both tracepoints.
    optional_tracepoints=tuple(("syscalls", n) for n in ("setfsuid", "setfsgid", "init_module", "finit_module",
                                                         "memfd_create", "bpf", "move_mount")),
)

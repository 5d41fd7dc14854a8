"""What a condition can read from an event: our record's field names, typed, with a fast getter each.

A `Field` reads its value straight from the typed event inside an `Enriched` (no flat record is
built per event): `get(en)` returns the value, or None when the event does not carry it (a file
path on an exec event, the parent of a process the table never saw). `kinds` names the events a
field can be present on, so the compiler knows which event kinds a condition can match; None
means every kernel event.

The names are those agent/outputs/record.py's `from_enriched` prints (process.name, file.path,
network.peer.port, ...), plus a few derived ones a rule needs and the record does not carry
(file.directory, file.name, server.address, user.name, process.ancestors[N].name, ...). The system
family's members are read only on the ops that carry them (ptrace.request on system.ptrace, mount.*
on system.mount/umount ...), with names derived from their numbers where a rule wants words:
ptrace.request_name (PTRACE_ATTACH), capabilities.effective_names (CAP_SYS_ADMIN, ...),
namespace.types (mnt, net, user, ...).
`ALIASES` maps Falco's field names onto ours (from Falco's documented field list), so a Falco
condition reads here unchanged where we have the data.

Ancestry: `process.ancestors[0]` is the parent. Deeper ancestors come from the `ancestors`
attribute of the Enriched record when enrich provides one (a tuple of ProcInfo, parent first),
else from the `ancestors` callable passed to `resolve` (Enriched -> sequence of ProcInfo), else
only the parent is known.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.detect.falco_names import ALIASES, EVENT_TYPES
from agent.events import EVENT_NAMES, Enriched, ExecEvent, FileEvent, NetEvent, Op, ProcInfo, SysEvent

__all__ = ["ALIASES", "EVENT_TYPES", "FIELDS", "RENAMED", "Ancestors", "Field", "FieldError", "resolve"]

Ancestors = Callable[[Enriched], Sequence[ProcInfo]]


class FieldError(ValueError):
    """A condition names a field we do not have (one line, naming it)."""


# Fields whose record key was renamed so that every record maps in Elasticsearch/OpenSearch as it is (a
# key that is both a value and a parent, file.path and file.path.resolved, cannot be mapped): old -> new.
# The old name is refused with the new one in the error, so a custom rule is fixed in one edit.
RENAMED: dict[str, str] = {"file.path.resolved": "file.resolved_path"}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str  # "str", "int", "bool", "list[str]" or "net" (an address, compared with networks)
    kinds: frozenset[str] | None  # event names it can be present on; None = every kernel event
    get: Callable[[Enriched], object]
    # The same value read without type checks, valid only on an event whose name is in
    # `fast_kinds` (default: `kinds`): agent/detect/index.py uses it where it knows the kind.
    fast: Callable[[Enriched], object] | None = None
    fast_kinds: frozenset[str] | None = None

    def fast_on(self, kind: str) -> Callable[[Enriched], object] | None:
        kinds = self.fast_kinds if self.fast_kinds is not None else self.kinds
        return self.fast if kinds is not None and kind in kinds else None


def _names(*prefixes: str, ops: tuple[Op, ...] = ()) -> frozenset[str]:
    """Event names by prefix (so an op added later under file.* is covered) or by op."""
    kernel = {n for op, n in EVENT_NAMES.items() if op not in (Op.CGROUP_MKDIR, Op.BENCH)}
    return frozenset({n for n in kernel if n.startswith(prefixes)} | {EVENT_NAMES[o] for o in ops})


KERNEL_EVENTS = _names("process.", "file.", "network.", "system.")
FILE = _names("file.")
NET = _names("network.")
SYS = _names("system.")
EXEC = _names(ops=(Op.EXEC,))
OPEN = _names(ops=(Op.FILE_OPEN,))
LINK = _names(ops=(Op.FILE_SYMLINK, Op.FILE_LINK))
# Ops whose address is the other end's (agent/outputs/record.py's _PEER_OPS): a dup'ed socket's and
# an unconnected send's destination are peers too.
_PEER_OPS = (Op.NET_CONNECT, Op.NET_ACCEPT, Op.NET_SENDTO, Op.NET_DUP)
# Falco's server end: a connect's or a send's destination, a bind's or listen's local end (a dup'ed
# socket may be either end: no server or client on it).
_SERVER_OPS = (Op.NET_CONNECT, Op.NET_SENDTO, Op.NET_BIND, Op.NET_LISTEN)
_LOCAL_OPS = (Op.NET_BIND, Op.NET_LISTEN)

# Per-event memo of the values that cost a join or a split: rules evaluate one event after
# another, so the last event's value is the one asked for again by the next rule.
_memo: dict[str, tuple[object, object]] = {}


def _memoized(key: str, fn: Callable[[Enriched], object]) -> Callable[[Enriched], object]:
    miss = (None, None)

    def get(en: Enriched) -> object:
        last, val = _memo.get(key, miss)
        if last is en:
            return val
        val = fn(en)
        _memo[key] = (en, val)
        return val

    return get


# -- process ------------------------------------------------------------------------------------


def _exe(en: Enriched) -> str | None:
    ev = en.event
    if isinstance(ev, ExecEvent):
        return ev.filename
    return en.process.exe if en.process is not None else None


def _argv(en: Enriched) -> tuple[str, ...] | None:
    ev = en.event
    if isinstance(ev, ExecEvent):
        return ev.argv
    return en.process.argv if en.process is not None else None


def _cmdline(en: Enriched) -> str | None:
    argv = _argv(en)
    return " ".join(argv) if argv is not None else None


def _args_line(en: Enriched) -> str | None:
    """Falco's proc.args: the arguments after argv[0], as one string."""
    argv = _argv(en)
    return " ".join(argv[1:]) if argv is not None else None


def _args(en: Enriched) -> list[str] | None:
    argv = _argv(en)
    return list(argv) if argv is not None else None


def _proc_name(p: ProcInfo | None) -> str | None:
    if p is None:
        return None
    return p.comm or os.path.basename(p.exe)[:15] or None  # comm is at most 15 bytes (TASK_COMM_LEN)


def _exec_flag(attr: str) -> Callable[[Enriched], object]:
    """A flag of the exec record (memfd, deleted, upper_layer); None on a kernel without it."""

    def get(en: Enriched) -> object:
        ev = en.event
        return getattr(ev, attr, None) if isinstance(ev, ExecEvent) else None

    return get


def _exec_flag_fast(attr: str) -> Callable[[Enriched], object] | None:
    """On an exec event, the flag itself; no fast form on an ExecEvent that lacks it."""
    if attr not in ExecEvent.__dataclass_fields__:
        return None
    return _inline(f"en.event.{attr}")  # a text: inlined by the nodes, read in C by the pre-condition


def _cwd(en: Enriched) -> str | None:
    ev = en.event
    cwd = getattr(ev, "cwd", "") if isinstance(ev, ExecEvent) else ""
    if not cwd and en.process is not None:
        cwd = getattr(en.process, "cwd", "")
    return cwd or None


def _parent_pid(en: Enriched) -> int:
    return en.event.ppid


_user_names: dict[int, str | None] = {}


def _user_name(en: Enriched) -> str | None:
    uid = en.event.uid
    try:
        return _user_names[uid]
    except KeyError:
        pass
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (common in containers): no name, not an error
        name = None
    if len(_user_names) > 4096:
        _user_names.clear()
    _user_names[uid] = name
    return name


# -- files --------------------------------------------------------------------------------------


def _file_path(en: Enriched) -> str | None:
    ev = en.event
    return ev.path if isinstance(ev, FileEvent) else None


def _file_target(en: Enriched) -> str | None:
    """Where a rename puts the file (a link's second path is file.link.target)."""
    ev = en.event
    return (ev.path2 or None) if isinstance(ev, FileEvent) and ev.op is Op.FILE_RENAME else None


def _file_resolved(en: Enriched) -> str | None:
    """The path joined to the process's cwd when it was relative (enrich's path_resolved), as
    Falco's fd.name reads; else the path as the syscall gave it."""
    ev = en.event
    if not isinstance(ev, FileEvent):
        return None
    return getattr(en, "path_resolved", "") or ev.path


def _file_dir(en: Enriched) -> str | None:
    path = _file_resolved(en)
    return (os.path.dirname(path) or None) if path is not None else None


def _file_name(en: Enriched) -> str | None:
    path = _file_resolved(en)
    return os.path.basename(path) if path is not None else None


def _open_flags(en: Enriched) -> int | None:
    ev = en.event
    return ev.flags if isinstance(ev, FileEvent) and ev.op is Op.FILE_OPEN else None


def _open_write(en: Enriched) -> bool | None:
    flags = _open_flags(en)
    return flags & 3 != 0 if flags is not None else None  # O_WRONLY or O_RDWR


def _open_read(en: Enriched) -> bool | None:
    flags = _open_flags(en)
    return flags & 3 != 1 if flags is not None else None  # O_RDONLY or O_RDWR


# Flag and mode bits by the names Falco renders them with (`evt.arg.flags contains O_TRUNC`);
# a test on the names is how a condition reads one bit (the language has no bit operators).
_O_FLAGS = tuple((name, getattr(os, name)) for name in (
    "O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC",
    "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_SYNC", "O_PATH",
    "O_TMPFILE") if getattr(os, name, 0))  # 0 = the platform folds it in (O_LARGEFILE on x86_64): no name
_MODE_BITS = tuple((name, getattr(stat, name)) for name in (
    "S_ISUID", "S_ISGID", "S_ISVTX", "S_IRUSR", "S_IWUSR", "S_IXUSR", "S_IRGRP", "S_IWGRP", "S_IXGRP",
    "S_IROTH", "S_IWOTH", "S_IXOTH"))
_names_of: dict[tuple[int, int], tuple[str, ...]] = {}


def _bit_names(table: tuple[tuple[str, int], ...], value: int, which: int) -> tuple[str, ...]:
    names = _names_of.get((which, value))
    if names is None:
        # O_TMPFILE and O_SYNC include other bits (O_DIRECTORY, O_DSYNC): a name holds when all its bits do
        names = tuple(n for n, bit in table if value & bit == bit)
        if which == 0 and value & 3 == 0:
            names = ("O_RDONLY", *names)
        if len(_names_of) > 4096:
            _names_of.clear()
        _names_of[(which, value)] = names
    return names


def _flag_names(en: Enriched) -> tuple[str, ...] | None:
    flags = _open_flags(en)
    return _bit_names(_O_FLAGS, flags, 0) if flags is not None else None


def _mode_names(en: Enriched) -> tuple[str, ...] | None:
    mode = _file_mode(en)
    return _bit_names(_MODE_BITS, mode, 1) if mode is not None else None


def _file_mode(en: Enriched) -> int | None:
    ev = en.event
    return ev.mode if isinstance(ev, FileEvent) and ev.op in (Op.FILE_OPEN, Op.FILE_CHMOD) else None


def _syscall_result(en: Enriched) -> str | None:
    """Falco's evt.res: SUCCESS, or the error's name (ENOENT) when the syscall failed."""
    ret = _syscall_return(en)
    if ret is None:
        return None
    return "SUCCESS" if ret >= 0 else errno.errorcode.get(-ret, str(ret))


def _syscall_return(en: Enriched) -> int | None:
    ev = en.event
    return ev.ret if isinstance(ev, FileEvent | NetEvent | SysEvent) else None


def _link_target(en: Enriched) -> str | None:
    """symlink: what the link points to; link: the existing file (the new name is file.path)."""
    ev = en.event
    return ev.path2 if isinstance(ev, FileEvent) and ev.op in (Op.FILE_SYMLINK, Op.FILE_LINK) else None


# -- network ------------------------------------------------------------------------------------


def _net(ops: tuple[Op, ...], attr: str) -> Callable[[Enriched], object]:
    def get(en: Enriched) -> object:
        ev = en.event
        return getattr(ev, attr) if isinstance(ev, NetEvent) and ev.op in ops else None

    return get


def _net_attr(attr: str) -> Callable[[Enriched], object]:
    def get(en: Enriched) -> object:
        ev = en.event
        return (getattr(ev, attr) or None) if isinstance(ev, NetEvent) else None

    return get


_TYPECHAR = {"ipv4": "4", "ipv6": "6", "unix": "u"}
_SOCKFAMILY = {"ipv4": "ip", "ipv6": "ip", "unix": "unix"}  # Falco's fd.sockfamily
_DOMAINS = {"ipv4": "AF_INET", "ipv6": "AF_INET6", "unix": "AF_UNIX", "packet": "AF_PACKET", "netlink": "AF_NETLINK"}
_RENAME_OR_LINK = _names(ops=(Op.FILE_RENAME, Op.FILE_LINK))


def _old_new(en: Enriched, which: int) -> str | None:
    """(old, new) path of a rename (path -> path2) or a hard link (path2 exists, path is the new name)."""
    ev = en.event
    if not isinstance(ev, FileEvent):
        return None
    if ev.op is Op.FILE_RENAME:
        return (ev.path, ev.path2)[which] or None
    if ev.op is Op.FILE_LINK:
        return (ev.path2, ev.path)[which] or None
    return None


def _fd_type(en: Enriched) -> str | None:
    """Falco's fd.type: file, ipv4, ipv6, unix (only the kinds our events carry)."""
    ev = en.event
    if isinstance(ev, FileEvent):
        return "file"
    if isinstance(ev, NetEvent):
        return ev.family or None
    return None


def _fd_typechar(en: Enriched) -> str | None:
    ev = en.event
    if isinstance(ev, FileEvent):
        return "f"
    if isinstance(ev, NetEvent):
        return _TYPECHAR.get(ev.family)
    return None


def _fd_num(en: Enriched) -> int | None:
    """The descriptor the syscall made or used: an open's or accept's return, else the fd argument."""
    ev = en.event
    if isinstance(ev, FileEvent):
        return ev.ret if ev.op is Op.FILE_OPEN else ev.fd
    if isinstance(ev, NetEvent):
        return ev.ret if ev.op in (Op.NET_ACCEPT, Op.NET_SOCKET) else ev.fd
    return None


def _net_fd(en: Enriched) -> int | None:
    """The socket of a socket() (its return) or a dup (the descriptor dup'ed), as the record's network.fd."""
    ev = en.event
    if not isinstance(ev, NetEvent):
        return None
    if ev.op is Op.NET_SOCKET:
        return ev.ret
    return ev.fd if ev.op is Op.NET_DUP else None


# -- the system family --------------------------------------------------------------------------
# One record type (SysEvent) whose members mean what the op says (probes/events.h); each field
# reads its member only on the ops that carry it, so `ptrace.request` is absent on a mount.

def _sys_text(ev: SysEvent) -> str:
    """SysEvent's string argument: mount target, module file, bpf program or memfd name."""
    return ev.arg_text


def _sys(ops: tuple[Op, ...], pick: Callable[[SysEvent], object]) -> tuple[frozenset[str],
                                                                           Callable[[Enriched], object],
                                                                           Callable[[Enriched], object]]:
    """(kinds, checked getter, fast getter) of one SysEvent member on `ops`."""
    opset = frozenset(ops)

    def get(en: Enriched) -> object:
        ev = en.event
        return pick(ev) if isinstance(ev, SysEvent) and ev.op in opset else None

    return _names(ops=ops), get, lambda en: pick(en.event)


# include/uapi/linux/ptrace.h and arch/x86/include/uapi/asm/ptrace-abi.h: request -> name
PTRACE_REQUESTS: dict[int, str] = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSR", 4: "PTRACE_POKETEXT",
    5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSR", 7: "PTRACE_CONT", 8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP",
    12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS", 14: "PTRACE_GETFPREGS", 15: "PTRACE_SETFPREGS",
    16: "PTRACE_ATTACH", 17: "PTRACE_DETACH", 18: "PTRACE_GETFPXREGS", 19: "PTRACE_SETFPXREGS",
    24: "PTRACE_SYSCALL", 25: "PTRACE_GET_THREAD_AREA", 26: "PTRACE_SET_THREAD_AREA", 30: "PTRACE_ARCH_PRCTL",
    31: "PTRACE_SYSEMU", 32: "PTRACE_SYSEMU_SINGLESTEP", 33: "PTRACE_SINGLEBLOCK",
    0x4200: "PTRACE_SETOPTIONS", 0x4201: "PTRACE_GETEVENTMSG", 0x4202: "PTRACE_GETSIGINFO",
    0x4203: "PTRACE_SETSIGINFO", 0x4204: "PTRACE_GETREGSET", 0x4205: "PTRACE_SETREGSET", 0x4206: "PTRACE_SEIZE",
    0x4207: "PTRACE_INTERRUPT", 0x4208: "PTRACE_LISTEN", 0x4209: "PTRACE_PEEKSIGINFO",
    0x420A: "PTRACE_GETSIGMASK", 0x420B: "PTRACE_SETSIGMASK", 0x420C: "PTRACE_SECCOMP_GET_FILTER",
    0x420D: "PTRACE_SECCOMP_GET_METADATA", 0x420E: "PTRACE_GET_SYSCALL_INFO",
    0x420F: "PTRACE_GET_RSEQ_CONFIGURATION", 0x4210: "PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG",
    0x4211: "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
}


def _ptrace_name(ev: SysEvent) -> str:
    return PTRACE_REQUESTS.get(ev.arg) or f"PTRACE_{ev.arg}"  # an unknown request keeps its number


# include/uapi/linux/capability.h: bit -> name
CAPABILITIES: tuple[str, ...] = tuple("CAP_" + n for n in (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
    "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
    "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
    "PERFMON BPF CHECKPOINT_RESTORE").split())
_cap_names: dict[int, tuple[str, ...]] = {}


def cap_names(mask: int) -> tuple[str, ...]:
    """The CAP_* names of a capability mask (a bit past the table reads CAP_<bit>); memoized, since
    a process sets the same few masks over and over."""
    names = _cap_names.get(mask)
    if names is None:
        names = tuple(CAPABILITIES[b] if b < len(CAPABILITIES) else f"CAP_{b}"
                      for b in range(mask.bit_length()) if mask >> b & 1)
        if len(_cap_names) > 4096:
            _cap_names.clear()
        _cap_names[mask] = names
    return names


# include/uapi/linux/sched.h: the CLONE_NEW* bits of unshare(2)'s flags and setns(2)'s nstype
NAMESPACE_BITS: tuple[tuple[str, int], ...] = (
    ("mnt", 0x00020000), ("uts", 0x04000000), ("ipc", 0x08000000), ("user", 0x10000000),
    ("pid", 0x20000000), ("net", 0x40000000), ("cgroup", 0x02000000), ("time", 0x00000080))
_ns_names: dict[int, tuple[str, ...]] = {}


def namespace_types(flags: int) -> tuple[str, ...]:
    """The namespaces a CLONE_NEW* mask names (setns's nstype 0, "any", names none)."""
    names = _ns_names.get(flags)
    if names is None:
        names = tuple(n for n, bit in NAMESPACE_BITS if flags & bit)
        if len(_ns_names) > 4096:
            _ns_names.clear()
        _ns_names[flags] = names
    return names


# -- containers ---------------------------------------------------------------------------------


def _container(attr: str) -> Callable[[Enriched], object]:
    def get(en: Enriched) -> object:
        c = en.container
        return (getattr(c, attr) or None) if c is not None else None

    return get


def _split_image(image: str) -> tuple[str, str]:
    """registry/repo:tag@digest -> (registry/repo, tag); the tag is "" when there is none."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


def _image_part(i: int) -> Callable[[Enriched], object]:
    def get(en: Enriched) -> object:
        c = en.container
        if c is None or not c.image:
            return None
        return _split_image(c.image)[i] or None

    return get


# -- ancestry -----------------------------------------------------------------------------------


def _chain(en: Enriched, ancestors: Ancestors | None) -> Sequence[ProcInfo]:
    chain = getattr(en, "ancestors", None)  # enrich's own chain, where it carries one
    if chain:
        return chain
    if ancestors is not None:
        return ancestors(en)
    return (en.parent,) if en.parent is not None else ()


_PICK: dict[str, Callable[[ProcInfo], object]] = {
    "name": _proc_name,
    "exe": lambda p: p.exe or None,
    "argv0": lambda p: p.argv[0] if p.argv else None,  # Falco's proc.exe of an ancestor
}


def _ancestor(index: int, part: str, ancestors: Ancestors | None) -> Callable[[Enriched], object]:
    pick = _PICK[part]

    def get(en: Enriched) -> object:
        if index == 0 and en.parent is not None:
            return pick(en.parent)
        chain = _chain(en, ancestors)
        return pick(chain[index]) if index < len(chain) else None

    return get


def _all_ancestors(part: str, ancestors: Ancestors | None) -> Callable[[Enriched], object]:
    pick = _PICK[part]

    def get(en: Enriched) -> object:
        vals = [v for p in _chain(en, ancestors) if (v := pick(p)) is not None]
        return vals or None

    return get


def _f(name: str, type_: str, kinds: frozenset[str] | None, get: Callable[[Enriched], object],
       fast: Callable[[Enriched], object] | None = None, fast_kinds: frozenset[str] | None = None) -> Field:
    return Field(name, type_, kinds, get, fast, fast_kinds)


_BOTH_DIRECTIONS = ("<", ">")
_RESOLVED = "path_resolved" in getattr(Enriched, "__slots__", ())


def _inline(expr: str) -> Callable[[Enriched], object]:
    """A fast getter written as one expression over `en`: the function, and the same text as its `inline`
    attribute, which agent/detect/index.py's generated code reads in place of a call (one text, so the two
    cannot disagree). Measured with valgrind on bench.pipeline's mix: detection went from ~18,900 to
    ~14,600 instructions per event once the hot getters below were inlined."""
    fn = eval(f"lambda en: {expr}", {"__builtins__": {}})  # noqa: S307 (our own constant text, never input)
    fn.inline = expr
    return fn


def _fast_attr(attr: str) -> Callable[[Enriched], object]:
    return _inline(f"en.event.{attr}")


def _fast_attr_or_none(attr: str) -> Callable[[Enriched], object]:
    return _inline(f"en.event.{attr} or None")


PEER = _names(ops=_PEER_OPS)
LOCAL = _names(ops=_LOCAL_OPS)
SERVER = _names(ops=_SERVER_OPS)
CLIENT = _names(ops=(Op.NET_ACCEPT,))
MODE = _names(ops=(Op.FILE_OPEN, Op.FILE_CHMOD))
# Where a rename puts the file. A link's or symlink's second path is what it points to, another
# meaning: file.link.target.
TARGET = _names(ops=(Op.FILE_RENAME,))
RESULT = FILE | NET | SYS
_SOCK_FD = _names(ops=(Op.NET_SOCKET, Op.NET_DUP))
_DUP = _names(ops=(Op.NET_DUP,))
_SOCKET = _names(ops=(Op.NET_SOCKET,))


def _sys_fields() -> list[Field]:
    """The system family's fields: the record's keys (agent/outputs/record.py _sys_keys), each read
    only on the ops that carry it, with a fast getter; plus names derived from the numbers."""
    rows = []

    def add(name: str, type_: str, ops: tuple[Op, ...], pick: Callable[[SysEvent], object]) -> None:
        kinds, get, fast = _sys(ops, pick)
        rows.append(_f(name, type_, kinds, get, fast))

    add("ptrace.request", "int", (Op.PTRACE,), lambda ev: ev.arg)
    add("ptrace.request_name", "str", (Op.PTRACE,), _ptrace_name)
    add("target.pid", "int", (Op.PTRACE, Op.CAPSET), lambda ev: ev.target_pid)
    for i, part in enumerate(("real", "effective", "saved")):
        add(f"setid.{part}", "int", (Op.SETUID, Op.SETGID), lambda ev, i=i: ev.ids[i])
    for i, part in enumerate(("effective", "permitted", "inheritable")):
        add(f"capabilities.{part}", "int", (Op.CAPSET,), lambda ev, i=i: ev.caps[i])
        add(f"capabilities.{part}_names", "list[str]", (Op.CAPSET,), lambda ev, i=i: cap_names(ev.caps[i]))
    add("module.path", "str", (Op.MODULE_LOAD,), _sys_text)
    add("module.flags", "int", (Op.MODULE_LOAD,), lambda ev: ev.arg)
    add("mount.target", "str", (Op.MOUNT, Op.UMOUNT), _sys_text)
    add("mount.source", "str", (Op.MOUNT,), lambda ev: ev.source)
    add("mount.fstype", "str", (Op.MOUNT,), lambda ev: ev.fstype)
    add("mount.flags", "int", (Op.MOUNT, Op.UMOUNT), lambda ev: ev.arg)
    add("namespace.flags", "int", (Op.UNSHARE, Op.SETNS), lambda ev: ev.arg)
    add("namespace.types", "list[str]", (Op.UNSHARE, Op.SETNS), lambda ev: namespace_types(ev.arg))
    add("namespace.fd", "int", (Op.SETNS,), lambda ev: ev.ids[0])
    add("bpf.program.type", "int", (Op.BPF_LOAD,), lambda ev: ev.arg)
    add("bpf.program.name", "str", (Op.BPF_LOAD,), _sys_text)
    add("memfd.name", "str", (Op.MEMFD_CREATE,), _sys_text)
    add("memfd.flags", "int", (Op.MEMFD_CREATE,), lambda ev: ev.arg)
    rows.append(_f("syscall.name", "str", SYS, lambda en: en.event.call if isinstance(en.event, SysEvent)
                   else None, lambda en: en.event.call))
    return rows


def _table() -> dict[str, Field]:
    rows = [
        _f("event.name", "str", None, lambda en: en.event.name),
        _f("process.pid", "int", None, lambda en: en.event.pid),
        _f("process.thread.id", "int", None, lambda en: en.event.tid),
        _f("process.parent_pid", "int", None, _parent_pid),
        _f("process.name", "str", None, _inline("en.event.comm")),
        _f("process.executable.path", "str", None, _exe, _inline("en.event.filename"), EXEC),
        _f("process.executable.name", "str", None, _memoized("exe.name", lambda en: (
            os.path.basename(e) if (e := _exe(en)) is not None else None))),
        _f("process.command_line", "str", None, _memoized("cmdline", _cmdline),
           _memoized("exec.cmdline", lambda en: " ".join(en.event.argv)), EXEC),
        _f("process.args", "list[str]", None, _memoized("args", _args)),
        _f("process.args_line", "str", None, _memoized("args_line", _args_line)),
        _f("process.argv0", "str", None, lambda en: a[0] if (a := _argv(en)) else None),
        _f("process.args_count", "int", None, lambda en: len(a) if (a := _argv(en)) is not None else None),
        _f("process.executable.inode", "int", EXEC, lambda en: (en.event.exe_ino or None)
           if isinstance(en.event, ExecEvent) else None),
        _f("process.executable.memfd", "bool", EXEC, _exec_flag("memfd"), _exec_flag_fast("memfd")),
        _f("process.executable.deleted", "bool", EXEC, _exec_flag("deleted")),
        # what /proc/<pid>/exe reads ("/memfd:runc_cloned:/proc/self/exe (deleted)"): names a memfd
        _f("process.executable.kernel_path", "str", EXEC, lambda en: (getattr(en.event, "kernel_path", "") or None)
           if isinstance(en.event, ExecEvent) else None),
        _f("process.executable.upper_layer", "bool", EXEC, _exec_flag("upper_layer"),
           _exec_flag_fast("upper_layer")),
        _f("process.working_directory", "str", None, _cwd),
        _f("process.parent.name", "str", None, lambda en: _proc_name(en.parent)),
        _f("process.parent.executable.path", "str", None, lambda en: (en.parent.exe or None)
           if en.parent is not None else None),
        _f("process.parent.command_line", "str", None, lambda en: " ".join(en.parent.argv)
           if en.parent is not None else None),
        _f("process.ancestors.name", "list[str]", None, _all_ancestors("name", None)),
        _f("process.ancestors.executable.path", "list[str]", None, _all_ancestors("exe", None)),
        _f("process.ancestors.argv0", "list[str]", None, _all_ancestors("argv0", None)),
        _f("user.id", "int", None, lambda en: en.event.uid),
        _f("user.name", "str", None, _user_name),
        _f("group.id", "int", None, lambda en: en.event.gid),
        _f("file.path", "str", FILE, _file_path, _inline("en.event.path")),
        _f("file.target.path", "str", TARGET, _file_target, _fast_attr_or_none("path2")),
        _f("file.link.target", "str", LINK, _link_target, _fast_attr("path2")),
        _f("file.resolved_path", "str", FILE, _file_resolved,
           _inline("en.path_resolved or en.event.path" if _RESOLVED else "en.event.path")),
        _f("file.directory", "str", FILE, _memoized("file.dir", _file_dir)),
        # fast: the resolved path's last component (what os.path.basename gives, without its calls)
        _f("file.name", "str", FILE, _memoized("file.name", _file_name),
           _inline('(en.path_resolved or en.event.path).rpartition("/")[2]' if _RESOLVED
                   else 'en.event.path.rpartition("/")[2]')),
        _f("file.open.flags", "int", OPEN, _open_flags, _inline("en.event.flags")),
        _f("file.open.write", "bool", OPEN, _open_write, _inline("en.event.flags & 3 != 0")),
        _f("file.open.read", "bool", OPEN, _open_read, _inline("en.event.flags & 3 != 1")),
        _f("file.open.flag_names", "list[str]", OPEN, _flag_names),
        _f("file.mode_names", "list[str]", MODE, _mode_names),
        _f("file.mode", "int", MODE, _file_mode, lambda en: en.event.mode),
        _f("file.descriptor", "int", FILE, lambda en: en.event.fd if isinstance(en.event, FileEvent)
           and en.event.fd >= 0 else None),
        _f("syscall.return", "int", RESULT, _syscall_return, _fast_attr("ret")),
        _f("syscall.result", "str", RESULT, _syscall_result),
        _f("descriptor.type", "str", FILE | NET, _fd_type),
        _f("descriptor.typechar", "str", FILE | NET, _fd_typechar),
        _f("descriptor.number", "int", FILE | NET, _fd_num),
        _f("network.peer.address", "str", PEER, _net(_PEER_OPS, "address"), _fast_attr("address")),
        _f("network.peer.port", "int", PEER, _net(_PEER_OPS, "port"), _fast_attr("port")),
        _f("network.local.address", "str", LOCAL, _net(_LOCAL_OPS, "address"), _fast_attr("address")),
        _f("network.local.port", "int", LOCAL, _net(_LOCAL_OPS, "port"), _fast_attr("port")),
        # Server and client, as Falco's fd.sip/fd.cip read them: the server is the peer of a
        # connect and the local end of a bind/listen; an accept's local end is not in the record.
        _f("server.address", "str", SERVER, _net(_SERVER_OPS, "address"), _fast_attr("address")),
        _f("server.port", "int", SERVER, _net(_SERVER_OPS, "port"), _fast_attr("port")),
        _f("client.address", "str", CLIENT, _net((Op.NET_ACCEPT,), "address"), _fast_attr("address")),
        _f("client.port", "int", CLIENT, _net((Op.NET_ACCEPT,), "port"), _fast_attr("port")),
        _f("network.transport", "str", NET, _net_attr("transport"), _fast_attr_or_none("transport")),
        _f("network.family", "str", NET, lambda en: _SOCKFAMILY.get(en.event.family)
           if isinstance(en.event, NetEvent) else None),
        # Networks (CIDR) an address is in: `fd.snet in (rfc_1918)`; values are ip networks.
        _f("server.network", "net", SERVER, _net(_SERVER_OPS, "address"), _fast_attr("address")),
        _f("client.network", "net", CLIENT, _net((Op.NET_ACCEPT,), "address"), _fast_attr("address")),
        _f("network.peer.network", "net", PEER, _net(_PEER_OPS, "address"), _fast_attr("address")),
        _f("network.local.network", "net", LOCAL, _net(_LOCAL_OPS, "address"), _fast_attr("address")),
        # The event's one address and port, whichever end it is (Falco's filter-only fd.ip, fd.port, fd.net)
        _f("network.address", "net", NET, _net_attr("address"), _fast_attr_or_none("address")),
        _f("network.port", "int", NET, _net_attr("port"), _fast_attr_or_none("port")),
        _f("network.type", "str", NET, _net_attr("family"), _fast_attr_or_none("family")),
        # socket(): the new socket (its return); dup: the socket dup'ed onto a standard stream
        _f("network.fd", "int", _SOCK_FD, _net_fd),
        _f("network.dup.new_fd", "int", _DUP, _net((Op.NET_DUP,), "fd2"), _fast_attr("fd2")),
        _f("network.protocol", "int", _SOCKET, _net((Op.NET_SOCKET,), "protocol"), _fast_attr("protocol")),
        # socket(): the address family by its C name, as Falco renders evt.arg.domain ("AF_PACKET")
        _f("network.socket.domain", "str", _SOCKET, lambda en: _DOMAINS.get(en.event.family)
           if isinstance(en.event, NetEvent) and en.event.op is Op.NET_SOCKET else None),
        # Falco's evt.arg.oldpath / newpath name a rename's two paths and a link's existing file and new name
        _f("file.old_path", "str", _RENAME_OR_LINK, lambda en: _old_new(en, 0)),
        _f("file.new_path", "str", _RENAME_OR_LINK, lambda en: _old_new(en, 1)),
        *_sys_fields(),
        _f("container.id", "str", None, _container("id")),
        # Falco's container.id reads "host" outside a container (its rules say container.id != host).
        _f("falco.container.id", "str", None, lambda en: en.container.id if en.container is not None
           and en.container.id else "host"),
        # Falco's evt.num: we number events when they are exported (seq), not before detection, so
        # the field is absent and every comparison with it is false: Falco's never_true macro
        # (evt.num = 0) reads as meant, and a rule that needs a real number never matches.
        _f("event.number", "int", None, lambda en: None),
        # Falco's evt.dir: Falco sees a call twice, entering (">": its arguments) and returning ("<": its
        # result); our one event, sent at the return, carries both, so it is either: `evt.dir = <` (Falco's
        # spawned_process) and `evt.dir = >` (its ptrace and setuid rules, which read the request) both hold.
        _f("syscall.direction", "list[str]", None, lambda en: _BOTH_DIRECTIONS),
        _f("container.name", "str", None, _container("name")),
        _f("container.image.name", "str", None, _container("image")),
        _f("container.image.digest", "str", None, _container("image_digest")),
        _f("container.image.repository", "str", None, _image_part(0)),
        _f("container.image.tag", "str", None, _image_part(1)),
        _f("container.runtime", "str", None, _container("runtime")),
        _f("k8s.pod.name", "str", None, _container("pod_name")),
        _f("k8s.namespace.name", "str", None, _container("pod_namespace")),
    ]
    return {f.name: f for f in rows}


FIELDS: dict[str, Field] = _table()

# proc.aname[N]: Falco counts the process itself as 0 and its parent as 1; ours start at the parent.
_INDEXED = re.compile(r"^(?P<base>[a-z0-9_.]+)\[(?P<index>\d+)\](?P<rest>(?:\.[a-z0-9_.]+)?)$")
_ANCESTOR_PARTS = {".name": "name", ".executable.path": "exe", ".argv0": "argv0"}
_FALCO_INDEXED = {"proc.aname": "name", "proc.aexepath": "exe", "proc.aexe": "argv0"}
_SELF = {"name": "process.name", "exe": "process.executable.path", "argv0": "process.argv0"}
_SUFFIX = {v: k for k, v in _ANCESTOR_PARTS.items()}
MAX_ANCESTORS = 64


def resolve(name: str, ancestors: Ancestors | None = None) -> Field:
    """The Field a condition names: ours, a Falco alias, or an indexed ancestor
    (process.ancestors[N].name / .executable.path, proc.aname[N], proc.aexepath[N]).
    `ancestors` supplies the chain past the parent when the Enriched record has none."""
    if "[" in name:
        return _indexed(name, ancestors)
    field = FIELDS.get(name) or FIELDS.get(ALIASES.get(name, ""))  # our own names first
    if field is None:
        if name in RENAMED:  # a user's rule written before the rename: say what it is called now
            raise FieldError(f"field {name!r} is now {RENAMED[name]!r} (renamed in issue 15, README \"Record keys\")")
        raise FieldError(f"unknown field {name!r}")
    if ancestors is not None and field.name.startswith("process.ancestors."):
        part = _ANCESTOR_PARTS[field.name[len("process.ancestors"):]]
        return Field(field.name, field.type, None, _all_ancestors(part, ancestors))
    return field


def _indexed(name: str, ancestors: Ancestors | None) -> Field:
    m = _INDEXED.match(name)
    if m is None:
        raise FieldError(f"unknown field {name!r}")
    base, index, rest = m["base"], int(m["index"]), m["rest"]
    if base in _FALCO_INDEXED and not rest:
        part = _FALCO_INDEXED[base]
        if index == 0:  # the process itself
            return FIELDS[_SELF[part]]
        index -= 1
    elif base == "process.ancestors" and rest in _ANCESTOR_PARTS:
        part = _ANCESTOR_PARTS[rest]
    else:
        raise FieldError(f"unknown field {name!r} (indexed fields: process.ancestors[N].name, "
                         f".executable.path, .argv0; proc.aname[N], proc.aexepath[N], proc.aexe[N])")
    if index >= MAX_ANCESTORS:
        raise FieldError(f"{name!r}: ancestor index {index} is past the bound of {MAX_ANCESTORS}")
    return Field(f"process.ancestors[{index}]{_SUFFIX[part]}", "str", None, _ancestor(index, part, ancestors))

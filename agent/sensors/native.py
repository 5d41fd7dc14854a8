"""The compiled decoders (agent/sensors/_native.c): built by `make setup` (scripts/setup.sh runs
`python -m agent.sensors.native`), used when present and checked, else the Python decoders.

The Python decoders in file.py, net.py and process.py are the reference: the compiled ones make the
same events (tests/unit/test_native_decode.py). The same module flattens those kinds' records and writes
their JSON lines (agent/outputs/record.py, agent/pipeline.py; tests/unit/test_flatten_fragments.py and
test_native_json.py hold the Python references). Before this module hands it out it compares every
offset and size the C file was compiled with against agent/sensors/abi.py (the mirror of
probes/events.h that tests/unit/test_abi.py checks against gcc), so a layout changed on one side
only falls back to the Python code instead of decoding garbage. `STATUS` says which is in use and
why (the pipeline logs it at start); `python -m agent.sensors.native_build` builds the object.
`NODEWARDEN_NATIVE=0` turns it all off (to compare, or to rule it out); `NODEWARDEN_NATIVE=lines-off`
keeps it but has the pipeline make every record's dict.

The shared object goes under build/native/ (gitignored, like every build output), named with
this interpreter's extension suffix, so a venv of another Python version never loads it.
"""

from __future__ import annotations

import dataclasses
import os

from agent import cext
from agent.events import EVENT_NAMES, Enriched, ExecEvent, ExitEvent, FileEvent, ForkEvent, NetEvent, Op, ProcInfo
from agent.sensors import abi
from agent.sensors.common import DecodeError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native.c")
NAME = "_nwnative"
OUT_DIR = cext.OUT_DIR
SANITIZE_DIR = cext.SANITIZE_DIR  # native_build --sanitize writes here (tests load it with NODEWARDEN_NATIVE_SO)


def path(out_dir: str = OUT_DIR) -> str:
    return cext.ext_path(NAME, out_dir)


def build(cc: str = "gcc", sanitize: bool = False) -> str:
    """Compile _native.c for this interpreter; returns the shared object's path. Raises
    RuntimeError (one line: the compiler's first error) when it does not compile. `sanitize`: with
    AddressSanitizer and UBSan into SANITIZE_DIR (tests load it with NODEWARDEN_NATIVE_SO)."""
    return cext.build(SOURCE, NAME, SANITIZE_DIR if sanitize else OUT_DIR, cc=cc, sanitize=sanitize)


def _expected() -> dict:
    """What _native.c must have been compiled with, from abi.py."""
    h, f, n, x = abi.EVENT_HEADER, abi.FILE_EVENT, abi.NET_EVENT, abi.EXEC_EVENT
    return {
        "header": h.size,
        "event_header": {k: h.offsets[k] for k in ("pid", "tid", "ppid", "uid", "gid", "ts_ns", "cgroup_id",
                                                     "mntns", "comm")},
        "file_event": {"size": f.size, **{k: f.offsets[k] for k in (
            "ret", "dirfd", "flags", "mode", "owner_uid", "owner_gid", "fd", "path_len", "path2_len", "path",
            "path2")}},
        "net_event": {"size": n.size, **{k: n.offsets[k] for k in (
            "ret", "fd", "sock_type", "addr_len", "backlog", "addr", "fd2", "protocol")}},
        "fork_event": {"size": abi.FORK_EVENT.size, "child_pid": abi.FORK_EVENT.offsets["child_pid"]},
        "exit_event": {"size": abi.EXIT_EVENT.size, "exit_code": abi.EXIT_EVENT.offsets["exit_code"]},
        "comm_len": abi.COMM_LEN, "path_max": abi.PATH_MAX, "addr_max": abi.ADDR_MAX,
        "f_truncated": abi.F_TRUNCATED, "f_cwd": abi.F_CWD, "op_net_socket": int(Op.NET_SOCKET),
        "exec_event": {"size": x.size, **{k: x.offsets[k] for k in (
            "filename_len", "args_len", "filename", "args", "action", "rule", "exe_ino", "exe_dev", "exe_flags",
            "exe_path_len", "exe_mnt_id", "cwd_len", "exe_path", "cwd")}},
        "args_max": abi.ARGS_MAX,
        "exe_bits": [abi.EXE_UNHASHED, abi.EXE_NLINK0, abi.EXE_IS_ROOT, abi.EXE_INTERNAL, abi.EXE_SHMEM,
                     abi.EXE_UPPER],
    }


# What decode_exec fills for a record of an older probe (no exe_flags..cwd): ExecEvent's own defaults.
_EXEC_OLD_DEFAULTS = {"kernel_path": "", "memfd": False, "deleted": False, "upper_layer": False, "exe_mnt_id": 0,
                      "cwd": ""}


def _load():
    global STATUS
    if os.environ.get("NODEWARDEN_NATIVE", "1") == "0":
        STATUS = "python (NODEWARDEN_NATIVE=0)"
        return None
    # NODEWARDEN_NATIVE_SO: another object of the same source (the sanitizer build, for its checks)
    so = os.environ.get("NODEWARDEN_NATIVE_SO") or path()
    why = cext.unusable(so, SOURCE)
    if why:
        STATUS = f"python ({why})"
        return None
    try:
        mod = cext.load(NAME, so)
    except ImportError as e:
        STATUS = f"python (cannot load {so}: {e})"
        return None
    if mod.layout() != _expected():
        STATUS = f"python ({so} was built for other record layouts than agent/sensors/abi.py: make setup)"
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(ExecEvent)}
    if any(defaults.get(k, dataclasses.MISSING) != v for k, v in _EXEC_OLD_DEFAULTS.items()):
        STATUS = "python (ExecEvent's defaults are not the ones _native.c fills for an older probe's record)"
        return None
    classes = {kind: (cls, tuple(f.name for f in dataclasses.fields(cls)))
               for kind, cls in (("file", FileEvent), ("net", NetEvent), ("fork", ForkEvent), ("exit", ExitEvent),
                                 ("enriched", Enriched), ("exec", ExecEvent), ("procinfo", ProcInfo))}
    mod.configure({int(op): op for op in EVENT_NAMES}, classes, DecodeError)
    STATUS = "compiled (exec, file, net, fork, exit)"
    return mod


STATUS = ""
MODULE = _load()
LINES_OFF = os.environ.get("NODEWARDEN_NATIVE") == "lines-off"


def decoder(kind: str, reference):
    """The compiled decoder of a kind ("exec", "file", "net", "fork", "exit") when loaded, else `reference`."""
    return getattr(MODULE, f"decode_{kind}") if MODULE is not None else reference


def procinfo_maker():
    """A callable of ProcInfo's eight fields (positional, all of them) that makes it: the compiled one
    when loaded (the process table makes one per exec and fork), else the dataclass itself."""
    return MODULE.procinfo if MODULE is not None else ProcInfo


def enriched_maker():
    """A callable of Enriched's six fields that makes it: the compiled one when loaded (agent/enrich uses
    it per event), else the dataclass itself."""
    return MODULE.enriched if MODULE is not None else Enriched

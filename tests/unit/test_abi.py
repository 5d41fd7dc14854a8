"""The kernel ABI mirror (agent/sensors/abi.py, Op in agent/events.py) against probes/events.h.

The C text is parsed here for the names (every enum member, numeric #define and struct member),
then compiled with the system C compiler, which prints each value, sizeof and offsetof: the
compiler is the truth, the parse only makes sure nothing in the header goes unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest

from agent.events import EVENT_NAMES, Op
from agent.sensors import REGISTRY, abi, bench, cgroup, file, net, process, system
from agent.sensors.common import BootClock

EVENTS_H = os.path.join(os.path.dirname(__file__), "..", "..", "probes", "events.h")

# enum nw_X in C -> (its IntEnum, the prefix its C members carry)
ENUMS = {
    "nw_op": (Op, "OP_"),
    "nw_probe": (abi.Probe, "PROBE_"),
    "nw_cfg": (abi.Cfg, "CFG_"),
    "nw_fold": (abi.Fold, "FOLD_"),
    "nw_action": (abi.Action, "ACT_"),
    "nw_reason": (abi.Reason, "WHY_"),
    "nw_scope": (abi.Scope, "SCOPE_"),
}
# C member type -> the struct format code of its mirror (arrays of char/__u8 are "Ns")
_CODES = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q", "__s16": "h", "__s32": "i", "__s64": "q"}


def _strip_comments(src: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", src, flags=re.S))


def parse_header(src: str) -> tuple[dict, dict, dict]:
    """(enums {name: [member]}, defines {name: text}, structs {name: [(type, member, dim)]}) of the C text."""
    src = _strip_comments(src)
    enums = {m[1]: [x.split("=")[0].strip() for x in m[2].split(",") if x.strip()]
             for m in re.finditer(r"enum\s+(\w+)\s*\{([^}]*)\}", src)}
    defines = {m[1]: m[2].strip() for m in re.finditer(r"^#define\s+(\w+)[ \t]+([^\n]+)$", src, re.M)}
    structs = {}
    for m in re.finditer(r"struct\s+(\w+)\s*\{([^}]*)\}\s*;", src):
        members = []
        for decl in filter(None, (d.strip() for d in m[2].split(";"))):
            dm = re.fullmatch(r"((?:struct\s+)?\w+)\s+(\w+)(?:\s*\[\s*(\w+)\s*\])?", decl)
            assert dm, f"struct {m[1]}: cannot read member {decl!r}"
            members.append((dm[1], dm[2], dm[3]))
        structs[m[1]] = members
    return enums, defines, structs


def _program(enums: dict, defines: dict, structs: dict) -> str:
    lines = [
        "#include <stdio.h>", "#include <stddef.h>",
        "typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;",
        "typedef short __s16; typedef int __s32; typedef unsigned long long __u64; typedef long long __s64;",
        '#include "events.h"', "int main(void) {",
    ]
    for members in enums.values():
        lines += [f'printf("enum {n} %lld\\n", (long long){n});' for n in members]
    lines += [f'printf("define {n} %llu\\n", (unsigned long long)({n}));' for n in defines]
    for s, members in structs.items():
        lines.append(f'printf("sizeof {s} %zu\\n", sizeof(struct {s}));')
        for _, f, _ in members:
            lines.append(f'printf("offsetof {s}.{f} %zu\\n", offsetof(struct {s}, {f}));')
            lines.append(f'printf("sizeof {s}.{f} %zu\\n", sizeof(((struct {s} *)0)->{f}));')
    return "\n".join(lines + ["return 0; }"])


@pytest.fixture(scope="module")
def header():
    with open(EVENTS_H) as f:
        return parse_header(f.read())


@pytest.fixture(scope="module")
def compiled(header, tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("abi")
    (d / "abi.c").write_text(_program(*header))
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", os.path.dirname(EVENTS_H), "-o", str(d / "abi"),
                    str(d / "abi.c")], check=True)
    out = subprocess.run([str(d / "abi")], check=True, capture_output=True, text=True).stdout
    return {(kind, name): int(v) for kind, name, v in (line.split() for line in out.splitlines())}


def test_header_parse_found_everything(header):
    enums, defines, structs = header
    assert set(enums) == set(ENUMS), "an enum of events.h has no IntEnum mirror (add it to ENUMS and abi.py)"
    assert len(enums["nw_op"]) == 31 and "OP_BENCH" in enums["nw_op"]
    assert {"NW_PATH_MAX", "NW_F_TRUNCATED", "NW_HOST_CGROUP"} <= set(defines)
    assert {"event_header", "exec_event", "deny_key"} <= set(structs)


def test_every_enum_member_matches(header, compiled):
    enums, _, _ = header
    for cname, (py, prefix) in ENUMS.items():
        seen = set()
        for member in enums[cname]:
            assert member.startswith(prefix), f"enum {cname}: {member} lacks the prefix {prefix}"
            short = member[len(prefix):]
            if short == "MAX":  # a count, not a member: a module constant beside the enum
                assert getattr(abi, member) == compiled[("enum", member)], member
                continue
            assert short in py.__members__, f"{member} (enum {cname}) has no mirror {py.__name__}.{short}"
            assert py[short] == compiled[("enum", member)], f"{py.__name__}.{short} != {member}"
            seen.add(short)
        assert set(py.__members__) == seen, f"{py.__name__} has members events.h lacks: {set(py.__members__) - seen}"


def test_every_define_matches(header, compiled):
    _, defines, _ = header
    for name in defines:
        py = name.removeprefix("NW_")
        assert hasattr(abi, py), f"#define {name} has no mirror abi.{py}"
        assert getattr(abi, py) == compiled[("define", name)], name


def _code_for(ctype: str, dim: str | None, layouts_size: int | None) -> str:
    if ctype.startswith("struct "):
        return f"{layouts_size}s"
    if dim is not None and ctype in ("char", "__u8"):
        return "s"  # the count is checked through the member's size
    if dim is not None:
        assert ctype in _CODES, f"array of {ctype}: teach the mirror its code"
        return _CODES[ctype]  # an array of numbers: its count is checked through the member's size
    return _CODES[ctype]


def test_every_struct_size_and_member_offset_matches(header, compiled):
    _, _, structs = header
    assert set(abi.LAYOUTS) == set(structs), "a struct of events.h and abi.LAYOUTS differ"
    for sname, members in structs.items():
        lay = abi.LAYOUTS[sname]
        assert lay.size == compiled[("sizeof", sname)], f"sizeof(struct {sname})"
        assert [f for f, _ in lay.fields] == [m for _, m, _ in members], f"struct {sname}: members or order"
        for (ctype, member, dim), (_, code) in zip(members, lay.fields, strict=True):
            where = f"{sname}.{member}"
            assert lay.offsets[member] == compiled[("offsetof", where)], f"offsetof {where}"
            assert lay.sizes[member] == compiled[("sizeof", where)], f"sizeof {where}"
            nested = abi.LAYOUTS[ctype.split()[1]].size if ctype.startswith("struct ") else None
            want = _code_for(ctype, dim, nested)
            assert code.lstrip("0123456789") == want.lstrip("0123456789"), f"{where}: {ctype} mirrored as {code}"


def test_every_op_has_a_decoder_name_and_sensor_slot():
    decoders = {op: s for s in REGISTRY.values() for op in s.decoders}
    assert set(decoders) == set(Op) == set(EVENT_NAMES)
    for s in REGISTRY.values():
        assert s.probe == abi.Probe[s.name.upper()]


def test_dev_encodings_round_trip():
    st = os.stat("/")
    kdev = abi.dev_to_kernel(st.st_dev)
    assert (kdev >> 20, kdev & 0xFFFFF) == (os.major(st.st_dev), os.minor(st.st_dev))
    assert abi.dev_to_user(kdev) == st.st_dev
    big = os.makedev(259, 70000)  # a minor above 255 uses the split encoding
    assert abi.dev_to_user(abi.dev_to_kernel(big)) == big


# -- every record decoded from bytes packed by its layout, with a distinct value in each field --


def _header(op: Op, flags: int = 0) -> bytes:
    return abi.EVENT_HEADER.struct.pack(op, flags, 0, 11, 12, 13, 14, 15, 16, 17, 18, 0, b"comm\xff\\x")


def _check_header(ev, op: Op, clock: BootClock) -> None:
    assert (ev.op, ev.pid, ev.tid, ev.ppid, ev.uid, ev.gid) == (op, 11, 12, 13, 14, 15)
    assert (ev.ts_ns, ev.cgroup_id, ev.mntns, ev.comm) == (16 + clock.offset, 17, 18, "comm\\xff\\\\x")


def test_exec_record_every_field():
    clock = BootClock()
    args = b"/bin/x\0a\0"
    raw = abi.EXEC_EVENT.struct.pack(_header(Op.EXEC, abi.F_TRUNCATED), 6, len(args), b"/bin/x", args,
                                     abi.Action.KILL, (abi.Reason.PATH << 16) | 4, 987654321, (8 << 20) | 3, 0,
                                     abi.EXE_UPPER | abi.EXE_OVERLAY, 6, 41, 5, b"/bin/x", b"/srv\xff")
    ev = process.decode_exec(raw, clock)
    _check_header(ev, Op.EXEC, clock)
    assert ev.truncated and (ev.filename, ev.argv) == ("/bin/x", ("/bin/x", "a"))
    assert (ev.action, ev.rule, ev.exe_ino) == (2, (2 << 16) | 4, 987654321)
    assert ev.exe_dev == os.makedev(8, 3)  # the kernel's MKDEV(8, 3) as stat(2) encodes it
    assert (ev.kernel_path, ev.upper_layer, ev.memfd, ev.deleted) == ("/bin/x", True, False, False)
    assert (ev.exe_mnt_id, ev.cwd) == (41, "/srv\\xff")


def test_exec_memfd_and_deleted_from_flags():
    f = abi.EXE_UNHASHED | abi.EXE_IS_ROOT | abi.EXE_NLINK0 | abi.EXE_INTERNAL | abi.EXE_SHMEM
    assert process.exe_kind(f, "/memfd:x") == (True, True)
    assert process.exe_kind(abi.EXE_SHMEM, "/memfd:x") == (False, False)  # a tmpfs someone mounted at /
    assert process.exe_kind(abi.EXE_UNHASHED, "/tmp/a") == (False, True)  # unlinked: d_path's "(deleted)"
    assert process.exe_kind(abi.EXE_UNHASHED | abi.EXE_IS_ROOT, "/") == (False, False)


def test_fork_exit_file_net_cgroup_bench_records_every_field():
    clock = BootClock()
    ev = process.decode_fork(abi.FORK_EVENT.struct.pack(_header(Op.FORK), 4242, 0), clock)
    _check_header(ev, Op.FORK, clock)
    assert ev.child_pid == 4242
    ev = process.decode_exit(abi.EXIT_EVENT.struct.pack(_header(Op.EXIT), (5 << 8) | 0, 0), clock)
    assert (ev.exit_code, ev.signal) == (5, 0)
    ev = file.decode_file(abi.FILE_EVENT.struct.pack(_header(Op.FILE_CHOWN), -13, -100, 0o1, 0o2, 1001, 1002, 7,
                                                     2, 3, b"/a", b"/bb"), clock)
    _check_header(ev, Op.FILE_CHOWN, clock)
    assert (ev.ret, ev.dirfd, ev.flags, ev.mode, ev.owner_uid, ev.owner_gid, ev.fd) == (-13, -100, 1, 2, 1001, 1002, 7)
    assert (ev.path, ev.path2) == ("/a", "/bb")
    sa = struct.pack("<H", 2) + struct.pack("!H", 80) + bytes([10, 0, 0, 9])
    ev = net.decode_net(abi.NET_EVENT.struct.pack(_header(Op.NET_CONNECT), -115, 9, 1, len(sa), 3, 0, sa, 2, 768),
                        clock)
    _check_header(ev, Op.NET_CONNECT, clock)
    assert (ev.ret, ev.fd, ev.transport, ev.family, ev.address, ev.port, ev.backlog) == (
        -115, 9, "tcp", "ipv4", "10.0.0.9", 80, 3)
    assert (ev.fd2, ev.protocol) == (2, 768)
    ev = net.decode_net(abi.NET_EVENT.struct.pack(_header(Op.NET_SOCKET), 4, -1, 3, 2, 0, 0, struct.pack("<H", 17),
                                                  -1, 0x0300), clock)
    assert (ev.family, ev.transport, ev.address, ev.protocol) == ("packet", "raw", "", 0x0300)
    ev = cgroup.decode_cgroup(abi.CGROUP_EVENT.struct.pack(_header(Op.CGROUP_MKDIR), 555, 2, 4, b"/a/b"), clock)
    assert (ev.new_cgroup_id, ev.level, ev.path) == (555, 2, "/a/b")
    ev = bench.decode_bench(abi.BENCH_EVENT.struct.pack(_header(Op.BENCH), 99), clock)
    assert ev.counter == 99
    ev = system.decode_sys(abi.SYS_EVENT.struct.pack(_header(Op.MOUNT), -1, 165, 0, 0x1000, -1, 1, 2, 3, 4, 5, 6,
                                                     4, 7, 5, 0, b"/mnt", b"overlay", b"tmpfs"), clock)
    _check_header(ev, Op.MOUNT, clock)
    assert (ev.ret, ev.call, ev.arg, ev.target_pid, ev.ids, ev.caps) == (-1, "mount", 0x1000, -1, (1, 2, 3), (4, 5, 6))
    assert (ev.arg_text, ev.source, ev.fstype) == ("/mnt", "overlay", "tmpfs")
    assert ev.name == "system.mount"  # the string member must not shadow the record's event.name


def test_file_record_with_the_cwd_of_a_relative_path():
    raw = abi.FILE_EVENT.struct.pack(_header(Op.FILE_OPEN, abi.F_CWD), 3, -100, 0o101, 0o600, -1 & 0xFFFFFFFF,
                                     -1 & 0xFFFFFFFF, -1, 5, 4, b"a/b.c", b"/srv")
    ev = file.decode_file(raw, BootClock())
    assert (ev.path, ev.path2, ev.cwd) == ("a/b.c", "", "/srv")  # path2 carried the cwd, not a second path

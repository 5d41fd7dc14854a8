"""BTF parsing on a blob built here (format from the kernel's btf.rst), on BTF the compiler writes
for a stand-in of the kernel's structs (checked against the compiler's own offsetof), and on the
running kernel (checked against layout facts the kernel's source fixes)."""

import os
import shutil
import struct
import subprocess

import pytest

from agent.kernel.btf import BTF, BTFError
from agent.kernel.offsets import FIELDS, kernel_offsets


def _blob():
    strs = b"\0int\0outer\0a\0b\0inner\0c\0"
    off = {s: strs.index(s.encode() + b"\0") for s in ("int", "outer", "a", "b", "inner", "c")}
    types = b""
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)  # 1: int
    # 2: struct inner { int c; } size 4
    types += struct.pack("<III", off["inner"], (4 << 24) | 1, 4) + struct.pack("<III", off["c"], 1, 0)
    # 3: struct outer { int a; union { struct inner b; }; } -- b inside an anonymous union at byte 8
    types += struct.pack("<III", off["outer"], (4 << 24) | 2, 12)
    types += struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", 0, 4, 64)
    types += struct.pack("<III", 0, (5 << 24) | 1, 4) + struct.pack("<III", off["b"], 2, 0)  # 4: anon union
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    return hdr + types + strs


def test_offsets_through_anonymous_members():
    b = BTF(_blob())
    assert b.field("outer.a").offset == 0
    assert b.field("outer.b").offset == 8
    assert b.field("outer.b.c").offset == 8
    assert b.field("outer.b.c").size == 4


def test_missing_field_and_bad_blob_are_clear_errors():
    b = BTF(_blob())
    with pytest.raises(BTFError, match="no member 'zz'"):
        b.field("outer.zz")
    with pytest.raises(BTFError, match="struct nope not in kernel BTF"):
        b.field("nope.a")
    with pytest.raises(BTFError, match="bad BTF magic"):
        BTF(b"\0" * 64)
    with pytest.raises(BTFError, match="run past the end"):
        BTF(_blob()[:40])


MINI = os.path.join(os.path.dirname(__file__), "data", "mini_kernel.h")


def _gcc(tmp, name: str, src: str, *flags: str) -> str:
    (tmp / f"{name}.c").write_text(src)
    out = str(tmp / name)
    subprocess.run(["gcc", *flags, "-I", os.path.dirname(MINI), "-o", out, str(tmp / f"{name}.c")], check=True)
    return out


@pytest.fixture(scope="module")
def compiled_btf(tmp_path_factory):
    """(BTF of mini_kernel.h written by gcc -gbtf, {FIELDS name: (offsetof, sizeof)} from gcc itself)."""
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        pytest.skip("gcc and objcopy (binutils) write the reference BTF")
    tmp = tmp_path_factory.mktemp("btf")
    structs = sorted({path.split(".")[0] for path, _ in FIELDS.values()})
    decls = "".join(f"struct {s} v_{s};\n" for s in structs) + "struct inode_bits { int a; int b: 3; } v_bits;\n"
    obj = _gcc(tmp, "types.o", f'#include "mini_kernel.h"\n{decls}', "-gbtf", "-c")
    subprocess.run(["objcopy", f"--dump-section=.BTF={tmp}/types.btf", obj], check=True)
    prints = "".join(
        f'printf("{name} %zu %zu\\n", offsetof(struct {path.split(".", 1)[0]}, {path.split(".", 1)[1]}), '
        f'sizeof(((struct {path.split(".", 1)[0]} *)0)->{path.split(".", 1)[1]}));\n'
        for name, (path, _) in FIELDS.items()
    )
    exe = _gcc(tmp, "offs", f'#include <stdio.h>\n#include <stddef.h>\n#include "mini_kernel.h"\n'
                            f"int main(void) {{\n{prints}return 0; }}\n")
    out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    want = {n: (int(o), int(z)) for n, o, z in (line.split() for line in out.splitlines())}
    return BTF((tmp / "types.btf").read_bytes()), want


def test_every_probe_field_matches_the_compilers_offsetof(compiled_btf):
    btf, want = compiled_btf
    assert set(want) == set(FIELDS)
    assert kernel_offsets(btf) == {name: off for name, (off, _) in want.items()}
    for name, (path, size) in FIELDS.items():
        assert btf.field(path).size == want[name][1] == (size or want[name][1]), path  # 0: any size


def test_a_bitfield_on_a_byte_boundary_is_refused(compiled_btf):
    btf, _ = compiled_btf
    assert btf.field("inode_bits.a").offset == 0
    # b starts at bit 32, a whole byte: only its width (3 bits) tells it is not a whole int
    with pytest.raises(BTFError, match="bitfield"):
        btf.field("inode_bits.b")
    with pytest.raises(BTFError, match="bitfield"):
        btf.field("inode.i_flags")


def test_a_bitfield_in_the_int_encoding_is_refused():
    # kind_flag 0: the width lives in the member's int type (BTF_INT_BITS 3 in a 4-byte int)
    strs = b"\0int3\0s\0f\0"
    types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", 3)  # 1: int, 3 bits
    types += struct.pack("<III", 6, (4 << 24) | 1, 4) + struct.pack("<III", 8, 1, 0)  # 2: struct s { f:3 }
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    with pytest.raises(BTFError, match="bitfield"):
        BTF(hdr + types + strs).field("s.f")


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="kernel has no BTF")
def test_this_kernels_offsets_agree_with_what_its_source_fixes():
    """Values, not just names: facts of include/linux/sched.h, mm_types.h and net/sock.h that hold
    in every kernel the probes support. The kernel tests (tests/kernel/test_sensors.py) check the
    rest end to end: ppid (real_parent, tgid), mount_ns (nsproxy, mnt_ns, ns.inum), the exe's inode
    and device (mm, exe_file, f_inode, i_ino, i_sb, s_dev), argv (arg_start, arg_end), exit codes."""
    btf = BTF.load()
    offs = kernel_offsets(btf)
    assert set(offs) == set(FIELDS)
    assert offs["OFF_TASK_TGID"] == offs["OFF_TASK_PID"] + 4  # pid_t pid; pid_t tgid;
    assert offs["OFF_MM_ARG_END"] == offs["OFF_MM_ARG_START"] + 8  # unsigned long arg_start, arg_end;
    assert offs["OFF_SKC_RCV_SADDR"] == offs["OFF_SKC_DADDR"] + 4  # skc_daddr, skc_rcv_saddr: skc_addrpair
    assert offs["OFF_SKC_NUM"] == offs["OFF_SKC_DPORT"] + 2  # skc_dport, skc_num: skc_portpair
    assert offs["OFF_SKC_DADDR"] == btf.field("sock_common.skc_addrpair").offset
    assert offs["OFF_SKC_DPORT"] == btf.field("sock_common.skc_portpair").offset
    assert offs["OFF_SKC_DADDR"] == 0  # __sk_common is sock's first member and skc_addrpair its first
    assert offs["OFF_MNTNS_INUM"] == btf.field("mnt_namespace.ns").offset + btf.field("ns_common.inum").offset
    # every field lies inside its struct
    for name, (path, size) in FIELDS.items():
        outer = btf.struct_size(path.split(".")[0])
        assert 0 <= offs[name] and offs[name] + size <= outer, path


def test_enums_built_here_and_the_running_kernels():
    strs = b"\0colour\0RED\0BLUE\0"
    off = {s: strs.index(s.encode() + b"\0") for s in ("colour", "RED", "BLUE")}
    # an enum of two (kind 6, vlen 2, size 4): RED = 0, BLUE = -3
    types = struct.pack("<III", off["colour"], (6 << 24) | 2, 4) + struct.pack("<ii", off["RED"], 0)
    types += struct.pack("<ii", off["BLUE"], -3)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    b = BTF(hdr + types + strs)
    assert b.enum_values("colour") == {"RED": 0, "BLUE": -3}
    assert b.enum_values("shade") == {}
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF here")
    k = BTF.load()
    # uapi values (include/uapi/linux/bpf.h): fixed for ever once released
    assert k.enum_values("bpf_map_type")["BPF_MAP_TYPE_HASH"] == 1
    assert k.enum_values("bpf_func_id")["BPF_FUNC_map_lookup_elem"] == 1

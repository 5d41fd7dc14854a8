"""BTF parsing on a blob built here (format from the kernel's btf.rst), and on the running kernel."""

import os
import struct

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


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="kernel has no BTF")
def test_every_probe_field_is_in_this_kernel():
    offs = kernel_offsets(BTF.load())
    assert set(offs) == set(FIELDS)

"""Struct field offsets from the kernel's BTF (/sys/kernel/btf/vmlinux).

Why: bcc compiles against whatever headers the node has, and those often do not match the
running kernel (DESIGN.md: reading task->real_parent->tgid through Debian's 6.1 headers on a
6.18 kernel gave 0). So no probe dereferences a kernel struct through header types: every field
it reads is an offset found here at start-up and passed to the compiler as a -D constant.

Format facts from the kernel's Documentation/bpf/btf.rst: a header (magic 0xeB9F), then a
type section of variable-length records and a string section. Type ids start at 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

BTF_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF = range(1, 9)
KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = range(9, 16)
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = range(16, 20)

_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class BTFError(Exception):
    """BTF is missing, malformed, or lacks a field a probe needs."""


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    size_or_type: int
    # struct/union: (name, type_id, bit_offset, bitfield_bits); array: (elem, nelems);
    # int: (nr_bits,); () otherwise
    members: tuple


@dataclass(frozen=True, slots=True)
class Field:
    offset: int  # bytes from the start of the outermost struct
    size: int  # bytes; 0 when the type has no size (e.g. a flexible array)


class BTF:
    def __init__(self, data: bytes):
        if len(data) < _HDR.size:
            raise BTFError("BTF blob too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BTFError(f"bad BTF magic {magic:#x}")
        base = hdr_len
        if base + max(type_off + type_len, str_off + str_len) > len(data):
            raise BTFError("BTF sections run past the end of the blob")
        self._strs = data[base + str_off : base + str_off + str_len]
        self._types: list[_Type | None] = [None]  # id 0 is void
        self._by_name: dict[tuple[int, str], int] = {}
        self._parse(data, base + type_off, base + type_off + type_len)

    @classmethod
    def load(cls, path: str = "/sys/kernel/btf/vmlinux") -> BTF:
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise BTFError(f"cannot read kernel BTF at {path}: {e.strerror}") from None

    def _str(self, off: int) -> str:
        end = self._strs.find(b"\0", off)
        return self._strs[off:end].decode("ascii", "replace")

    def _parse(self, data: bytes, pos: int, end: int) -> None:
        while pos < end:
            name_off, info, size_or_type = _TYPE.unpack_from(data, pos)
            pos += _TYPE.size
            vlen = info & 0xFFFF
            kind = (info >> 24) & 0x1F
            kflag = info >> 31
            members: tuple = ()
            if kind == KIND_INT:
                (encoding,) = struct.unpack_from("<I", data, pos)
                members = (encoding & 0xFF,)  # BTF_INT_BITS: fewer than size * 8 in a bitfield's own int type
                pos += 4
            elif kind in (KIND_VAR, KIND_DECL_TAG):
                pos += 4
            elif kind == KIND_ARRAY:
                elem, _idx, nelems = struct.unpack_from("<III", data, pos)
                members = (elem, nelems)
                pos += 12
            elif kind in (KIND_STRUCT, KIND_UNION):
                ms = []
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    # kind_flag set: the top 8 bits are the bitfield's width (0: not a bitfield)
                    bit_off, bits = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                    ms.append((self._str(m_name) if m_name else "", m_type, bit_off, bits))
                members = tuple(ms)
            elif kind == KIND_ENUM:
                # (name offset, value) pairs, names decoded when asked (enum_values): vmlinux has thousands
                members = tuple(struct.unpack_from(f"<{2 * vlen}i", data, pos)) if vlen else ()
                pos += 8 * vlen
            elif kind == KIND_FUNC_PROTO:
                pos += 8 * vlen
            elif kind in (KIND_DATASEC, KIND_ENUM64):
                pos += 12 * vlen
            elif kind not in _MODIFIERS | {KIND_PTR, KIND_FWD, KIND_FUNC, KIND_FLOAT}:
                raise BTFError(f"unknown BTF kind {kind} at type {len(self._types)}")
            name = self._str(name_off) if name_off else ""
            t = _Type(kind, name, size_or_type, members)
            tid = len(self._types)
            self._types.append(t)
            if name and kind == KIND_ENUM:
                self._by_name.setdefault((kind, name), tid)
            if name and kind in (KIND_STRUCT, KIND_UNION):
                # A forward-declared twin has size 0; keep the first complete definition.
                key = (kind, name)
                if key not in self._by_name or self._types[self._by_name[key]].size_or_type == 0:
                    self._by_name[key] = tid

    def _resolve(self, tid: int) -> tuple[int, _Type | None]:
        t = self._types[tid]
        while t is not None and t.kind in _MODIFIERS:
            tid = t.size_or_type
            t = self._types[tid]
        return tid, t

    def _size(self, tid: int) -> int:
        tid, t = self._resolve(tid)
        if t is None:
            return 0
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return t.size_or_type
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            elem, n = t.members
            return self._size(elem) * n
        return 0

    def _find_member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id, bitfield bits) of `name` in struct/union `tid`, looking into anonymous members."""
        _, t = self._resolve(tid)
        if t is None or t.kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for m_name, m_type, bit_off, bits in t.members:
            if m_name == name:
                return bit_off, m_type, bits
        for m_name, m_type, bit_off, _bits in t.members:
            if not m_name:
                found = self._find_member(m_type, name)
                if found is not None:
                    return bit_off + found[0], found[1], found[2]
        return None

    def field(self, path: str) -> Field:
        """Offset of a dotted field path, e.g. "task_struct.real_parent" or "sock.__sk_common.skc_daddr".

        The first element names a struct (or union); the rest are members, anonymous ones looked into.
        """
        parts = path.split(".")
        if len(parts) < 2:
            raise BTFError(f"field path {path!r} needs a struct and a member")
        tid = self._by_name.get((KIND_STRUCT, parts[0])) or self._by_name.get((KIND_UNION, parts[0]))
        if tid is None:
            raise BTFError(f"struct {parts[0]} not in kernel BTF")
        bits = width = 0
        for member in parts[1:]:
            found = self._find_member(tid, member)
            if found is None:
                raise BTFError(f"{path}: no member {member!r} in kernel BTF")
            bits += found[0]
            tid, width = found[1], found[2]
        # A bitfield may start on a byte boundary and still not own its whole int: its width says so
        # (kind_flag structs), or, in the older encoding, its int type's BTF_INT_BITS.
        if bits % 8 or width or self._int_bits(tid) not in (None, self._size(tid) * 8):
            raise BTFError(f"{path} is a bitfield; probes read whole bytes")
        return Field(bits // 8, self._size(tid))

    def _int_bits(self, tid: int) -> int | None:
        _, t = self._resolve(tid)
        return t.members[0] if t is not None and t.kind == KIND_INT else None

    def enum_values(self, name: str) -> dict[str, int]:
        """The enumerators of `enum name` ({} when this BTF has no such enum). Why: what a kernel offers BPF
        (map types, helpers: enum bpf_map_type, enum bpf_func_id) is read here, not guessed from its version,
        which backports make unreliable."""
        tid = self._by_name.get((KIND_ENUM, name))
        if tid is None:
            return {}
        raw = self._types[tid].members
        return {self._str(raw[i] & 0xFFFFFFFF): raw[i + 1] for i in range(0, len(raw), 2)}

    def has_struct(self, name: str) -> bool:
        return (KIND_STRUCT, name) in self._by_name

    def struct_size(self, name: str) -> int:
        """sizeof(struct name) in this BTF."""
        tid = self._by_name.get((KIND_STRUCT, name)) or self._by_name.get((KIND_UNION, name))
        if tid is None:
            raise BTFError(f"struct {name} not in kernel BTF")
        return self._size(tid)

"""BPF maps by file descriptor, through the bpf(2) syscall: the subset of bcc's table API the agent uses.

Why not bcc's tables: importing bcc maps libbcc and LLVM into the process (61 MB before a compile, 150 MB
after one, issue 17). The probes are compiled in a short-lived child (agent/sensors/childload.py) that hands
the map fds over; the long-running agent reads and writes them with four syscall commands and ctypes types
built here from the key/leaf descriptions the compiler gave the child (bcc's JSON form, parsed by our own
code below: a C type name, or [name, [[field, type], [field, type, [n]], ...], "struct"|"struct_packed"|
"union"]).

Semantics kept from bcc's tables, since the enforcement modules were written against them: a missing key
is KeyError (lookup, delete); a refused update (a full map) is an OSError, which callers catch as
Exception; `del` on an array zeroes the entry; len() of an array is its size, of a hash its key count.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterator

# bpf(2) commands (include/uapi/linux/bpf.h enum bpf_cmd)
_LOOKUP_ELEM, _UPDATE_ELEM, _DELETE_ELEM, _GET_NEXT_KEY = 1, 2, 3, 4
BPF_ANY = 0
# Map types (enum bpf_map_type) that change how values or keys are handled.
HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH = 1, 2, 5, 6, 10
_PERCPU = {PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH}
_ARRAYS = {ARRAY, PERCPU_ARRAY}

# __NR_bpf per machine (arch/*/entry/syscalls tables); the agent ships for these two.
_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _ElemAttr(ctypes.Structure):
    """union bpf_attr, the anonymous struct of the *_ELEM and GET_NEXT_KEY commands."""

    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


_NR = _NR_BPF.get(platform.machine())


def _bpf(cmd: int, attr: _ElemAttr) -> int:
    """0, or the errno of the failed command."""
    if _NR is None:
        raise OSError(errno.ENOSYS, f"no bpf(2) syscall number known for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(_NR), ctypes.c_long(cmd), ctypes.byref(attr), ctypes.c_long(ctypes.sizeof(attr)))
    return 0 if ret >= 0 else ctypes.get_errno()


# C type names as clang spells them in the descriptions, to ctypes.
_SCALARS = {
    "_Bool": ctypes.c_bool, "char": ctypes.c_char, "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short, "unsigned short": ctypes.c_ushort, "int": ctypes.c_int, "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long, "unsigned long": ctypes.c_ulong, "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong, "float": ctypes.c_float, "double": ctypes.c_double,
    "void *": ctypes.c_void_p, "__int128": ctypes.c_ubyte * 16, "unsigned __int128": ctypes.c_ubyte * 16,
}


class LayoutError(ValueError):
    """A key or leaf description this module cannot turn into a ctypes type."""


def ctype_of(desc) -> type:
    """The ctypes type of one description (a str, or a [name, fields, kind] list)."""
    if isinstance(desc, str):
        if desc in _SCALARS:
            return _SCALARS[desc]
        if desc.startswith("enum ") or desc.endswith("enum"):
            return ctypes.c_int  # clang describes an enum field by its name; its storage is an int
        raise LayoutError(f"unknown C type {desc!r}")
    if not isinstance(desc, list) or len(desc) < 2 or not isinstance(desc[1], list):
        raise LayoutError(f"not a type description: {str(desc)[:80]}")
    kind = desc[2] if len(desc) > 2 else "struct"
    fields, anonymous = [], []
    for f in desc[1]:
        if not isinstance(f, list) or not f or not isinstance(f[0], str):
            raise LayoutError(f"not a field: {str(f)[:80]}")
        if len(f) == 3 and f[2] in ("struct", "struct_packed", "union"):  # a nested aggregate, maybe unnamed
            name = f[0] or f"__anon{len(anonymous)}"
            if not f[0]:
                anonymous.append(name)
            fields.append((name, ctype_of(f)))
        elif len(f) == 2:
            fields.append((f[0], ctype_of(f[1])))
        elif len(f) == 3 and isinstance(f[2], list) and f[2]:
            t = ctype_of(f[1])
            for n in reversed(f[2]):  # [n] or [n, m] for a two-dimensional array
                t = t * int(n)
            fields.append((f[0], t))
        elif len(f) == 3 and isinstance(f[2], int):
            fields.append((f[0], ctype_of(f[1]), f[2]))  # a bit field
        else:
            raise LayoutError(f"cannot decode field {str(f)[:80]}")
    attrs = {"_fields_": fields, "_anonymous_": anonymous}
    if kind == "struct_packed":
        attrs["_pack_"] = 1
    base = ctypes.Union if kind == "union" else ctypes.Structure
    return type(str(desc[0]) or "anon", (base,), attrs)


def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (the kernel's num_possible_cpus())."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class BpfMap:
    """One map of the loaded probes, owned by this object: close() closes its fd."""

    def __init__(self, fd: int, name: str, map_type: int, key_size: int, value_size: int, max_entries: int,
                 key_desc, leaf_desc):
        self.name = name
        self.map_fd = fd
        self.map_type = map_type
        self.max_entries = max_entries
        self.Key = ctype_of(key_desc)
        self.Leaf = ctype_of(leaf_desc)
        for what, t, size in (("key", self.Key, key_size), ("value", self.Leaf, value_size)):
            if size and ctypes.sizeof(t) != size:  # 0: a map without elements (the ring buffer)
                raise LayoutError(f"map {name}: its {what} is {size} bytes, the described type {ctypes.sizeof(t)}")
        self._key_size = key_size
        self._percpu = map_type in _PERCPU
        self._ncpu = possible_cpus() if self._percpu else 1
        # Per-CPU values are copied out as one slot per possible CPU, each rounded up to 8 bytes.
        self._slot = (value_size + 7) & ~7 if map_type in _PERCPU else value_size

    def __repr__(self) -> str:
        return f"BpfMap({self.name!r}, fd={self.map_fd}, type={self.map_type})"

    # -- conversions -----------------------------------------------------------------------------

    def _key(self, key):
        if isinstance(key, int):
            return self.Key(key)
        if ctypes.sizeof(key) != self._key_size:
            raise ValueError(f"map {self.name}: a key of {ctypes.sizeof(key)} bytes, not {self._key_size}")
        return key

    def _value_buf(self, leaf):
        if self._percpu:
            buf = (ctypes.c_ubyte * (self._slot * self._ncpu))()
            if leaf is not None:  # the same value on every CPU, as bcc's per-CPU update of one leaf
                raw = bytes(self._leaf(leaf))
                for i in range(self._ncpu):
                    ctypes.memmove(ctypes.byref(buf, i * self._slot), raw, len(raw))
            return buf
        return self._leaf(leaf) if leaf is not None else self.Leaf()

    def _leaf(self, leaf):
        if isinstance(leaf, int):
            return self.Leaf(leaf)
        if ctypes.sizeof(leaf) != ctypes.sizeof(self.Leaf):
            raise ValueError(f"map {self.name}: a value of {ctypes.sizeof(leaf)} bytes, not {ctypes.sizeof(self.Leaf)}")
        return leaf

    def _attr(self, key, value=None, flags: int = 0) -> _ElemAttr:
        return _ElemAttr(self.map_fd, 0, ctypes.addressof(key) if key is not None else 0,
                         ctypes.addressof(value) if value is not None else 0, flags)

    # -- the table API -----------------------------------------------------------------------------

    def _lookup(self, key):
        k = self._key(key)
        buf = self._value_buf(None)
        err = _bpf(_LOOKUP_ELEM, self._attr(k, buf))
        if err == errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"map {self.name}: lookup: {os.strerror(err)}")
        return buf

    def __getitem__(self, key):
        """The value; for a per-CPU map a list of one Leaf per possible CPU."""
        buf = self._lookup(key)
        if self._percpu:
            return [self.Leaf.from_buffer_copy(bytes(buf)[i * self._slot:i * self._slot + ctypes.sizeof(self.Leaf)])
                    for i in range(self._ncpu)]
        return buf

    def __setitem__(self, key, leaf) -> None:
        k, v = self._key(key), self._value_buf(leaf)
        err = _bpf(_UPDATE_ELEM, self._attr(k, v, BPF_ANY))
        if err:  # E2BIG or ENOMEM when full
            raise OSError(err, f"map {self.name}: update: {os.strerror(err)}")

    def __delitem__(self, key) -> None:
        if self.map_type in _ARRAYS:  # array entries always exist: deleting one zeroes it
            self[key] = self.Leaf()
            return
        err = _bpf(_DELETE_ELEM, self._attr(self._key(key)))
        if err == errno.ENOENT:
            raise KeyError(key)
        if err:
            raise OSError(err, f"map {self.name}: delete: {os.strerror(err)}")

    def __contains__(self, key) -> bool:
        try:
            self._lookup(key)
        except KeyError:
            return False
        return True

    def keys(self) -> Iterator:
        if self.map_type in _ARRAYS:
            yield from (self.Key(i) for i in range(self.max_entries))
            return
        prev = None
        # A key deleted under the walk (by the kernel: LRU maps) makes GET_NEXT_KEY start over from the
        # first key; bounded by the map's size so that a map under churn still ends.
        for _ in range(self.max_entries):
            nxt = self.Key()
            err = _bpf(_GET_NEXT_KEY, self._attr(prev, nxt))
            if err == errno.ENOENT:  # past the last key
                return
            if err:
                raise OSError(err, f"map {self.name}: next key: {os.strerror(err)}")
            yield nxt
            prev = nxt

    __iter__ = keys

    def items(self) -> list:
        """(key, value) pairs; a key deleted meanwhile (by the kernel or another thread) is left out."""
        out = []
        for k in list(self.keys()):
            try:
                out.append((k, self[k]))
            except KeyError:
                pass
        return out

    def values(self) -> list:
        return [v for _, v in self.items()]

    def __len__(self) -> int:
        if self.map_type in _ARRAYS:
            return self.max_entries
        return sum(1 for _ in self.keys())

    def clear(self) -> None:
        for k in list(self.keys()):
            try:
                del self[k]
            except KeyError:
                pass

    def sum(self, key):
        """A per-CPU integer value summed over CPUs, as a Leaf (bcc's PerCpuArray.sum)."""
        vals = self[key]
        if not isinstance(vals, list):
            vals = [vals]
        return self.Leaf(sum(v.value for v in vals))

    def close(self) -> None:
        if self.map_fd >= 0:
            os.close(self.map_fd)
            self.map_fd = -1

"""The kernel struct offsets every probe needs, read from BTF and turned into -D flags."""

from __future__ import annotations

from agent.kernel.btf import BTF, BTFError

# -D name -> (BTF field path, expected size in bytes). Every kernel field a probe reads is here;
# a probe that reads a new field adds it here and nowhere else.
FIELDS: dict[str, tuple[str, int]] = {
    "OFF_TASK_REAL_PARENT": ("task_struct.real_parent", 8),
    "OFF_TASK_TGID": ("task_struct.tgid", 4),
    "OFF_TASK_PID": ("task_struct.pid", 4),
    "OFF_TASK_EXIT_CODE": ("task_struct.exit_code", 4),
    "OFF_TASK_NSPROXY": ("task_struct.nsproxy", 8),
    "OFF_NSPROXY_MNT_NS": ("nsproxy.mnt_ns", 8),
    "OFF_MNTNS_INUM": ("mnt_namespace.ns.inum", 4),
    "OFF_TASK_MM": ("task_struct.mm", 8),
    "OFF_MM_ARG_START": ("mm_struct.arg_start", 8),
    "OFF_MM_ARG_END": ("mm_struct.arg_end", 8),
    "OFF_MM_EXE_FILE": ("mm_struct.exe_file", 8),
    "OFF_FILE_F_INODE": ("file.f_inode", 8),
    "OFF_INODE_I_INO": ("inode.i_ino", 8),
    "OFF_INODE_I_SB": ("inode.i_sb", 8),
    "OFF_SB_S_DEV": ("super_block.s_dev", 4),
    "OFF_TASK_FILES": ("task_struct.files", 8),
    "OFF_FILES_FDT": ("files_struct.fdt", 8),
    "OFF_FDTABLE_FD": ("fdtable.fd", 8),
    "OFF_FILE_PRIVATE_DATA": ("file.private_data", 8),
    "OFF_SOCKET_TYPE": ("socket.type", 2),
    "OFF_SOCKET_SK": ("socket.sk", 8),
    "OFF_SKC_FAMILY": ("sock.__sk_common.skc_family", 2),
    "OFF_SKC_DADDR": ("sock.__sk_common.skc_daddr", 4),
    "OFF_SKC_RCV_SADDR": ("sock.__sk_common.skc_rcv_saddr", 4),
    "OFF_SKC_DPORT": ("sock.__sk_common.skc_dport", 2),
    "OFF_SKC_NUM": ("sock.__sk_common.skc_num", 2),
    "OFF_SKC_V6_DADDR": ("sock.__sk_common.skc_v6_daddr", 16),
    "OFF_SKC_V6_RCV_SADDR": ("sock.__sk_common.skc_v6_rcv_saddr", 16),
}


def kernel_offsets(btf: BTF) -> dict[str, int]:
    """Offsets of FIELDS in this kernel; raises BTFError naming the first field missing or odd."""
    out = {}
    for name, (path, size) in FIELDS.items():
        f = btf.field(path)
        if f.size != size:
            raise BTFError(f"{path} is {f.size} bytes in this kernel's BTF, the probes expect {size}")
        out[name] = f.offset
    return out


def cflags(offsets: dict[str, int]) -> list[str]:
    return [f"-D{name}={off}" for name, off in sorted(offsets.items())]

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
    "OFF_INODE_I_MODE": ("inode.i_mode", 2),  # is a fd a socket (S_IFSOCK): probes/net.bpf.c net_fd_socket
    # dentry walks (probes/common.h nw_dentry_path) and the facts of mm->exe_file (issue 10)
    "OFF_FILE_F_PATH_MNT": ("file.f_path.mnt", 8),
    "OFF_FILE_F_PATH_DENTRY": ("file.f_path.dentry", 8),
    "OFF_DENTRY_D_PARENT": ("dentry.d_parent", 8),
    "OFF_DENTRY_D_NAME_NAME": ("dentry.d_name.name", 8),
    "OFF_DENTRY_D_HASH_PPREV": ("dentry.d_hash.pprev", 8),
    "OFF_MOUNT_MNT": ("mount.mnt", 0),  # struct vfsmount embedded in struct mount: its size varies
    "OFF_MOUNT_MNT_PARENT": ("mount.mnt_parent", 8),
    "OFF_MOUNT_MNT_MOUNTPOINT": ("mount.mnt_mountpoint", 8),
    "OFF_MOUNT_MNT_NS": ("mount.mnt_ns", 8),
    "OFF_MOUNT_MNT_ID": ("mount.mnt_id", 4),
    "OFF_VFSMOUNT_MNT_ROOT": ("vfsmount.mnt_root", 8),
    "OFF_INODE_I_NLINK": ("inode.i_nlink", 4),
    "OFF_SB_S_MAGIC": ("super_block.s_magic", 8),
    "OFF_TASK_FS": ("task_struct.fs", 8),
    "OFF_FS_PWD_MNT": ("fs_struct.pwd.mnt", 8),
    "OFF_FS_PWD_DENTRY": ("fs_struct.pwd.dentry", 8),
    # the system family (probes/system.bpf.c): the caller's ids, for dropping set*id calls that change
    # nothing, and the bound of a fd looked up at a syscall's entry (finit_module)
    "OFF_TASK_REAL_CRED": ("task_struct.real_cred", 8),
    "OFF_CRED_UID": ("cred.uid", 4),
    "OFF_CRED_EUID": ("cred.euid", 4),
    "OFF_CRED_SUID": ("cred.suid", 4),
    "OFF_CRED_FSUID": ("cred.fsuid", 4),
    "OFF_CRED_GID": ("cred.gid", 4),
    "OFF_CRED_EGID": ("cred.egid", 4),
    "OFF_CRED_SGID": ("cred.sgid", 4),
    "OFF_CRED_FSGID": ("cred.fsgid", 4),
    "OFF_CRED_USER_NS": ("cred.user_ns", 8),
    "OFF_USER_NS_LEVEL": ("user_namespace.level", 4),
    "OFF_FDTABLE_MAX_FDS": ("fdtable.max_fds", 4),
    # move_mount of a mount made by fsmount/open_tree (the new mount API): its source and filesystem type
    "OFF_MOUNT_MNT_DEVNAME": ("mount.mnt_devname", 8),
    "OFF_VFSMOUNT_MNT_SB": ("vfsmount.mnt_sb", 8),
    "OFF_SB_S_TYPE": ("super_block.s_type", 8),
    "OFF_FSTYPE_NAME": ("file_system_type.name", 8),
}

# Fields a probe can do without: where overlayfs is a module its types are not in vmlinux's BTF; the
# probe then leaves the flag that needs them unset (an #ifdef on the -D name).
OPTIONAL: dict[str, tuple[str, int]] = {
    "OFF_OVL_INODE_UPPERDENTRY": ("ovl_inode.__upperdentry", 8),
    "OFF_OVL_INODE_VFS_INODE": ("ovl_inode.vfs_inode", 0),  # struct inode: its size varies
}


def kernel_offsets(btf: BTF) -> dict[str, int]:
    """Offsets of FIELDS in this kernel; raises BTFError naming the first field missing or odd."""
    return {name: _offset(btf, path, size) for name, (path, size) in FIELDS.items()}


def optional_offsets(btf: BTF) -> dict[str, int]:
    """Offsets of OPTIONAL, all or none (the probe uses them together): {} where this BTF lacks one."""
    try:
        return {name: _offset(btf, path, size) for name, (path, size) in OPTIONAL.items()}
    except BTFError:
        return {}


def _offset(btf: BTF, path: str, size: int) -> int:
    """The byte offset of `path`; `size` 0 accepts any size (an embedded struct)."""
    f = btf.field(path)
    if size and f.size != size:
        raise BTFError(f"{path} is {f.size} bytes in this kernel's BTF, the probes expect {size}")
    return f.offset


def task_storage_available(btf: BTF) -> bool:
    """Whether tracing programs can stage in BPF task storage (probes/file.bpf.c NW_HAVE_TASK_STORAGE): the map
    type and bpf_get_current_task_btf, which task storage needs as its task argument (plain
    bpf_get_current_task is refused there), both in this kernel's own enums (Linux 5.11 brought both)."""
    return ("BPF_MAP_TYPE_TASK_STORAGE" in btf.enum_values("bpf_map_type")
            and "BPF_FUNC_get_current_task_btf" in btf.enum_values("bpf_func_id"))


def cflags(offsets: dict[str, int]) -> list[str]:
    return [f"-D{name}={off}" for name, off in sorted(offsets.items())]

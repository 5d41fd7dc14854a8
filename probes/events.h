/* NodeWarden: the one definition of every record the probes send to user space.
 *
 * Every record starts with struct event_header, whose first byte is the op code, so
 * the reader can dispatch before it knows the record's size. Records are fixed-size
 * (bpf_ringbuf_reserve needs a constant size); strings carry their own length.
 * The user-side mirror is agent/sensors/abi.py (and enum nw_op is Op in agent/events.py): keep in
 * sync with it; tests/unit/test_abi.py compiles this file and compares every enum member, #define,
 * struct size and member offset with the mirror.
 *
 * The schema only grows: add fields at the end of a record, never reorder.
 */
#ifndef NODEWARDEN_EVENTS_H
#define NODEWARDEN_EVENTS_H

#define NW_PATH_MAX   256   /* bytes of a path we keep; longer paths are cut and flagged */
#define NW_ARGS_MAX   1024  /* bytes of the NUL-separated argv block we keep */
#define NW_ADDR_MAX   128   /* bytes of a sockaddr we keep: sizeof(struct sockaddr_storage) */
#define NW_COMM_LEN   16

enum nw_op {
    OP_EXEC        = 1,
    OP_FORK        = 2,
    OP_EXIT        = 3,
    OP_FILE_OPEN   = 10,
    OP_FILE_UNLINK = 11,
    OP_FILE_RENAME = 12,
    OP_FILE_CHMOD  = 13,
    OP_FILE_CHOWN  = 14,
    OP_FILE_SYMLINK = 15,  /* symlink/symlinkat: path = the new link, path2 = what it points to */
    OP_FILE_LINK   = 16,   /* link/linkat: path = the new name, path2 = the existing file */
    OP_FILE_CLOSE  = 17,   /* close of a fd opened for writing under a close_prefix: the open's path, flags; fd */
    OP_NET_CONNECT = 20,
    OP_NET_ACCEPT  = 21,
    OP_NET_BIND    = 22,
    OP_NET_LISTEN  = 23,
    OP_NET_SOCKET  = 24,   /* socket(): only AF_PACKET or SOCK_RAW ones (filtered in the kernel) */
    OP_NET_DUP     = 25,   /* dup2/dup3 of a socket onto fd 0, 1 or 2 (a shell's stdio on a socket) */
    OP_NET_SENDTO  = 26,   /* sendto/sendmsg with a destination on a UDP socket (unconnected UDP) */
    OP_CGROUP_MKDIR = 30,
    /* The system family (probes/system.bpf.c): privilege, namespace and kernel-surface calls. */
    OP_PTRACE      = 40,   /* ptrace: arg = request, target_pid */
    OP_SETUID      = 41,   /* setuid/setreuid/setresuid/setfsuid: ids[] = real, effective, saved */
    OP_SETGID      = 42,   /* setgid/setregid/setresgid/setfsgid: likewise for groups */
    OP_CAPSET      = 43,   /* capset: caps[] = effective, permitted, inheritable; target_pid */
    OP_MODULE_LOAD = 44,   /* init_module/finit_module: arg = flags, name = the module file (finit) */
    OP_MOUNT       = 45,   /* mount: arg = flags, name = target, source, fstype */
    OP_UMOUNT      = 46,   /* umount2: arg = flags, name = target */
    OP_UNSHARE     = 47,   /* unshare: arg = CLONE_* flags */
    OP_SETNS       = 48,   /* setns: arg = nstype, target_pid = -1, ids[0] = the fd */
    OP_BPF_LOAD    = 49,   /* bpf(BPF_PROG_LOAD): arg = program type, name = the program's name */
    OP_MEMFD_CREATE = 50,  /* memfd_create: arg = flags, name = the memfd's name; ret = the fd */
    OP_BENCH       = 99,   /* only compiled with -DNW_BENCH: a fixed offered load for bench/ */
};

/* Index into the per-CPU drop counters: one slot per probe family. */
enum nw_probe {
    PROBE_PROCESS = 0,
    PROBE_FILE    = 1,
    PROBE_NET     = 2,
    PROBE_BENCH   = 3,
    PROBE_CGROUP  = 4,
    PROBE_SYSTEM  = 5,
    PROBE_MAX     = 6,
};

/* Flags in event_header.flags. */
#define NW_F_TRUNCATED  0x01   /* a path or argv did not fit */
#define NW_F_WATCHED    0x02   /* file_event: a read-only open sent because its path is on the watch list */
#define NW_F_CWD        0x04   /* file_event: path is relative to the cwd, and path2 holds that cwd (not a rename) */

/* Slots of the nw_config array map, set by the agent at run time (no reload). */
enum nw_cfg {
    CFG_TARGET_TGID   = 0,   /* nonzero: emit only events of this tgid (tests, bench) */
    CFG_FILE_READONLY = 1,   /* nonzero: also emit opens that only read */
    CFG_DRIFT         = 2,   /* 0 off, 1 alert, 2 block: execs of files a container wrote after start */
    CFG_EXEC_MODE     = 3,   /* 1 alert, 2 block: what deny_exec rules do (0 = rules off) */
    CFG_HOST_RULES    = 4,   /* nonzero: some deny_exec rule has scope host or both (checked outside containers) */
    CFG_WATCH_ENVIRON = 5,   /* nonzero: read-only opens of /proc/<anything>/environ are watched */
    CFG_WATCH_HOME_SSH = 6,  /* nonzero: read-only opens under /home/<anyone>/.ssh/ are watched */
    CFG_WATCH_SHORT   = 7,   /* nonzero: some watch prefix is shorter than 8 bytes (watch_head cannot pre-filter) */
    CFG_FOLD_NS       = 8,   /* nonzero: repeats of an open or connect within this many ns fold (fold_window) */
    CFG_MAX           = 16,
};

/* Slots of the per-CPU fold counters (common.h fold_counts, nw_fold_hit): records the kernel did not send
 * because the same one was sent less than CFG_FOLD_NS ago. Folded is not lost: the first was reported. */
enum nw_fold {
    FOLD_FILE_OPEN   = 0,
    FOLD_NET_CONNECT = 1,
    FOLD_MAX         = 2,
};

/* Values of the watch_prefix trie (probes/file.bpf.c): which opens of a watched prefix are sent, even
 * below an ignored prefix. */
#define NW_WATCH_READ   0x1    /* probes.watch_reads: read-only opens too (writes are sent anyway, unless ignored) */
#define NW_WATCH_WRITE  0x2    /* probes.watch_writes: writing opens, winning over the ignored prefixes */

/* Key of the ignored-path-prefix LPM trie: prefixlen in bits, then the path bytes. */
#define NW_PREFIX_MAX 128
struct path_key {
    __u32 prefixlen;
    char  path[NW_PREFIX_MAX];
};

struct event_header {
    __u8  op;
    __u8  flags;
    __u16 _pad0;
    __u32 pid;        /* tgid */
    __u32 tid;
    __u32 ppid;       /* real_parent->tgid, offsets from BTF */
    __u32 uid;
    __u32 gid;
    __u64 ts_ns;      /* CLOCK_BOOTTIME */
    __u64 cgroup_id;  /* cgroup v2 id of the task */
    __u32 mntns;      /* mount namespace inode */
    __u32 _pad1;
    char  comm[NW_COMM_LEN];
};

struct exec_event {
    struct event_header h;
    __u32 filename_len;
    __u32 args_len;    /* bytes of args[] used: NUL-separated argv, split in user space */
    char  filename[NW_PATH_MAX];
    char  args[NW_ARGS_MAX];
    __u32 action;      /* enum nw_action: what the in-kernel exec rules did */
    __u32 rule;        /* (enum nw_reason << 16) | rule index, when action != ACT_NONE */
    __u64 exe_ino;     /* inode of the new executable (mm->exe_file) */
    __u32 exe_dev;     /* its superblock's s_dev */
    __u32 _pad;
    /* Added for issue 10: what the kernel says runs, and where. */
    __u32 exe_flags;     /* NW_EXE_* of mm->exe_file */
    __u32 exe_path_len;  /* bytes of exe_path used */
    __u32 exe_mnt_id;    /* mount id of mm->exe_file's mount (as /proc/<pid>/mountinfo numbers it) */
    __u32 cwd_len;       /* bytes of cwd used */
    char  exe_path[NW_PATH_MAX];   /* mm->exe_file's path from its dentry chain, across mounts */
    char  cwd[NW_PATH_MAX];        /* task->fs->pwd, the same walk */
};

/* exec_event.exe_flags: facts about mm->exe_file, from BTF offsets. */
#define NW_EXE_UNHASHED   0x01   /* its dentry is unhashed (d_hash.pprev == NULL): unlinked, or a pseudo dentry */
#define NW_EXE_NLINK0     0x02   /* its inode has no links left (deleted, or memfd) */
#define NW_EXE_IS_ROOT    0x04   /* its dentry is its own parent (a pseudo dentry: memfd, anonymous files) */
#define NW_EXE_INTERNAL   0x08   /* its mount belongs to no namespace (a kernel-internal mount: shm, pipes) */
#define NW_EXE_SHMEM      0x10   /* its superblock is tmpfs or hugetlbfs (s_magic) */
#define NW_EXE_OVERLAY    0x20   /* its superblock is overlayfs */
#define NW_EXE_UPPER      0x40   /* overlayfs, and the inode has an upper dentry (written or copied up in the upper layer) */
#define NW_EXE_PATH_CUT   0x100  /* exe_path stopped at NW_PATH_DEPTH components or NW_PATH_MAX bytes */
#define NW_EXE_CWD_CUT    0x200  /* cwd likewise */
#define NW_PATH_DEPTH     32     /* components (and mount crossings) a dentry walk follows */

/* In-kernel exec rules (probes/process.bpf.c): what matched, and what was done. */
enum nw_action {
    ACT_NONE  = 0,
    ACT_ALERT = 1,   /* a rule matched in alert mode: reported, not killed */
    ACT_KILL  = 2,   /* SIGKILL sent before the new program's first instruction */
};
enum nw_reason {
    WHY_NAME  = 1,   /* deny_exec by name (the new comm) */
    WHY_PATH  = 2,   /* deny_exec by path (exact or prefix), global or for this container */
    WHY_DRIFT = 3,   /* the file was written by this container after it started */
    WHY_PROFILE = 4, /* not in the allow-list of the container's protecting profile; the index is its slot */
};

/* Where a deny_exec rule applies (a bit mask; `both` is both bits). A task is in a container when its
 * cgroup is in enforce_scope; every other task is the host's. */
enum nw_scope {
    SCOPE_CONTAINERS = 1,
    SCOPE_HOST       = 2,
};
/* deny_path's cgroup_id for rules of host processes; 0 is every covered container's. No cgroup has this id
 * (ids are kernfs inode numbers). */
#define NW_HOST_CGROUP 0xFFFFFFFFFFFFFFFFULL

/* Key of the exec deny-path LPM trie: prefixlen counts bits of cgroup_id + path;
 * cgroup_id 0 holds the rules for every container in scope, NW_HOST_CGROUP those for the host.
 * Also the key of allow_exec (protecting profiles), where cgroup_id holds the profile's slot. */
struct deny_key {
    __u32 prefixlen;
    __u8  cgroup_id[8];   /* little-endian bytes, not a __u64: the trie's data must follow prefixlen unpadded */
    char  path[NW_PREFIX_MAX];
};

/* Key of enforce_pending: a cgroup v2 path (relative to the root, leading '/', NUL-padded) that the
 * agent put under the runtime rules before the directory existed (a container at create: NRI or the
 * OCI gate). The cgroup_mkdir probe adds the new directory's id to enforce_scope in the kernel, before
 * any task can join it. */
struct cgroup_path {
    char path[NW_PATH_MAX];
};

/* An inode, for the drift set. */
struct ino_key {
    __u64 ino;
    __u32 dev;
    __u32 _pad;
};

struct fork_event {
    struct event_header h;
    __u32 child_pid;
    __u32 _pad;
};

struct exit_event {
    struct event_header h;
    __s32 exit_code;   /* task->exit_code: (status << 8) | signal */
    __u32 _pad;
};

struct file_event {
    struct event_header h;
    __s64 ret;
    __s32 dirfd;       /* AT_FDCWD (-100) or a directory fd; -1 when the call takes a fd */
    __u32 flags;       /* open flags, or AT_* / RENAME_* flags */
    __u32 mode;
    __u32 owner_uid;   /* chown: new owner, (u32)-1 = unchanged */
    __u32 owner_gid;
    __s32 fd;          /* fchmod/fchown: the fd; linkat: olddfd when it is not AT_FDCWD; else -1 */
    __u32 path_len;
    __u32 path2_len;
    char  path[NW_PATH_MAX];
    char  path2[NW_PATH_MAX];   /* rename: the new path */
};

struct net_event {
    struct event_header h;
    __s64 ret;
    __s32 fd;
    __u16 sock_type;   /* SOCK_STREAM, SOCK_DGRAM... from struct socket, 0 if unknown */
    __u16 addr_len;    /* bytes of addr[] that hold a sockaddr */
    __u32 backlog;     /* listen */
    __u32 _pad;
    char  addr[NW_ADDR_MAX];        /* peer for connect/accept/sendto/dup, local for bind/listen: raw sockaddr;
                                     * socket: just the 2-byte address family */
    /* Added for issue 10. */
    __s32 fd2;         /* dup: the new fd (0, 1 or 2); else -1 */
    __u32 protocol;    /* socket: the protocol argument (ETH_P_ALL in network order for AF_PACKET ...) */
};

struct cgroup_event {
    struct event_header h;
    __u64 id;          /* the new cgroup's id (kernfs inode), what bpf_get_current_cgroup_id() returns */
    __u32 level;       /* depth below the root */
    __u32 path_len;
    char  path[NW_PATH_MAX];   /* relative to the cgroup2 root, with a leading '/' */
};

/* The system family: one record for every call it reports; which members mean what depends on op
 * (see enum nw_op). ret is the syscall's return value; the header's uid/gid are the caller's before the
 * call (for setuid/setgid: the ids it had when it asked). */
#define NW_SYS_NAME_MAX 256
#define NW_FSTYPE_MAX   32
struct sys_event {
    struct event_header h;
    __s64 ret;
    __u32 call;          /* the syscall number (x86-64) that made it, e.g. setresuid vs setuid */
    __u32 _pad;
    __s64 arg;           /* op-dependent: ptrace request, flags, nstype, program type */
    __s64 target_pid;    /* ptrace, capset: the target pid (0 = self); else -1 */
    __s64 ids[3];        /* setuid/setgid family: real, effective, saved (-1 = unchanged); setns: ids[0] = fd */
    __u64 caps[3];       /* capset: effective, permitted, inheritable (both 32-bit words joined) */
    __u32 name_len;
    __u32 source_len;
    __u32 fstype_len;
    __u32 _pad2;
    char  name[NW_SYS_NAME_MAX];     /* op-dependent string (path, memfd name, program name) */
    char  source[NW_SYS_NAME_MAX];   /* mount: the source (device, directory, "overlay") */
    char  fstype[NW_FSTYPE_MAX];     /* mount: the filesystem type */
};

struct bench_event {
    struct event_header h;
    __u64 counter;
};

#endif

/* NodeWarden: maps and helpers shared by every probe family.
 *
 * All families are compiled as one bcc program (agent/sensors/loader.py joins the enabled ones) so
 * they share one ring buffer: user space then sees fork, exec and file events of a process
 * in the order the kernel produced them, which the process table relies on.
 *
 * Every kernel struct field is read at an offset taken from BTF at start-up and passed in as
 * -DOFF_* (agent/kernel/offsets.py). Never dereference kernel structs through header types:
 * the node's headers often do not match its kernel (DESIGN.md).
 */
#include "events.h"

#ifndef NW_RINGBUF_PAGES
#define NW_RINGBUF_PAGES 256   /* 1 MiB; a power of two */
#endif

BPF_RINGBUF_OUTPUT(events, NW_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(drops, u64, PROBE_MAX);            /* failed ring-buffer reservations, per family */
BPF_ARRAY(nw_config, u64, CFG_MAX);                 /* enum nw_cfg */
BPF_HASH(ignore_tgid, u32, u8, 256);                /* the agent's own pids, and any the agent adds */
BPF_LPM_TRIE(ignore_prefix, struct path_key, u8, 1024);
BPF_PERCPU_ARRAY(prefix_scratch, struct path_key, 1);
BPF_PERCPU_ARRAY(submit_count, u64, 1);              /* records since start, per CPU, for wakeups */

#ifndef NW_WAKEUP_EVERY
#define NW_WAKEUP_EVERY 64   /* wake the reader once per this many records per CPU */
#endif

/* In-kernel exec rules (process.bpf.c) and the drift set (written by file.bpf.c). */
struct comm_key {
    char  comm[NW_COMM_LEN];
    __u32 scope;   /* enum nw_scope: SCOPE_CONTAINERS or SCOPE_HOST (a `both` rule has one entry of each) */
};
BPF_HASH(enforce_scope, u64, u8, 16384);             /* cgroup ids of containers the runtime rules cover */
BPF_HASH(enforce_pending, struct cgroup_path, u8, 4096);  /* container cgroups to cover once created */
BPF_PERCPU_ARRAY(pending_scratch, struct cgroup_path, 1);
BPF_HASH(deny_name, struct comm_key, u32, 1024);     /* (new comm, scope) -> rule index */
BPF_LPM_TRIE(deny_path, struct deny_key, u32, 4096); /* (cgroup, 0 or NW_HOST_CGROUP; path) -> rule index */
BPF_TABLE("lru_hash", struct ino_key, u64, drift_inodes, 65536);  /* written in a container -> its cgroup */
BPF_PERCPU_ARRAY(deny_scratch, struct deny_key, 1);   /* the exec's path as a key: deny_path, then allow_exec */

/* Protecting profiles (issue 13, agent/enforce/profilekill.py): a container's cgroup has the slot of its
 * workload's learned allow-list; an exec there whose path (as given to execve) is not in the slot's list is
 * killed (process.bpf.c). One slot serves every replica of a workload. allow_exec's keys are deny_keys whose
 * cgroup_id bytes hold the slot (a u64), with exact paths and their NUL; a trie with BPF_F_NO_PREALLOC
 * takes memory per entry loaded only, not for its 65536 at load. */
BPF_HASH(profile_of, u64, u32, 16384);                     /* cgroup id -> slot */
BPF_HASH(profile_pending, struct cgroup_path, u32, 4096);  /* container cgroups to give a slot once created */
BPF_LPM_TRIE(allow_exec, struct deny_key, u8, 65536);      /* (slot; path + NUL) -> 1 */

#define NW_F_NOEMIT 0x80   /* staged only to record drift: not sent */

#define NW_READ(dst, base, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((u64)(base) + (off)))

static __always_inline u64 nw_cfg(u32 slot)
{
    u64 *v = nw_config.lookup(&slot);
    return v ? *v : 0;
}

/* Events of the agent itself (or outside the target tgid, when one is set) are never sent. */
static __always_inline int nw_skip(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 target = nw_cfg(CFG_TARGET_TGID);
    if (target && target != tgid)
        return 1;
    return ignore_tgid.lookup(&tgid) != 0;
}

/* Folding (issue 17): an open for the same file or a connect to the same peer, by the same process with the
 * same flags or result, within CFG_FOLD_NS of the one reported, is not sent again; it is counted here,
 * per CPU and per kind (enum nw_fold), and the agent reports the sums beside the drops as
 * kernel.file_open_folded and kernel.net_connect_folded. Nothing is lost: the first was reported, and every
 * one after it that could have said something new (another path, flags, peer or result) is sent. */
BPF_PERCPU_ARRAY(fold_counts, u64, FOLD_MAX);

/* 1 when the repeat is within the fold window of `last` (a CLOCK_BOOTTIME stamp, 0 = never), and counted. */
static __always_inline int nw_fold_hit(u64 last, u64 now, u32 kind)
{
    u64 window = nw_cfg(CFG_FOLD_NS);
    if (!window || !last || now - last >= window)
        return 0;
    u64 *c = fold_counts.lookup(&kind);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 1;
}

/* The fold window is on (a repeat's key is worth making). */
static __always_inline int nw_fold_on(void) { return nw_cfg(CFG_FOLD_NS) != 0; }

static __always_inline void nw_count_drop(u32 probe)
{
    u64 *c = drops.lookup(&probe);
    if (c)
        __sync_fetch_and_add(c, 1);
}

static __always_inline void nw_fill_header(struct event_header *h, u8 op)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 uid_gid = bpf_get_current_uid_gid();
    void *task = (void *)bpf_get_current_task();
    void *parent = 0, *nsproxy = 0, *mnt_ns = 0;

    h->op = op;
    h->flags = 0;
    h->_pad0 = 0;
    h->_pad1 = 0;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->ts_ns = bpf_ktime_get_boot_ns();
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->ppid = 0;
    h->mntns = 0;
    NW_READ(parent, task, OFF_TASK_REAL_PARENT);
    if (parent)
        NW_READ(h->ppid, parent, OFF_TASK_TGID);
    NW_READ(nsproxy, task, OFF_TASK_NSPROXY);
    if (nsproxy) {
        NW_READ(mnt_ns, nsproxy, OFF_NSPROXY_MNT_NS);
        if (mnt_ns)
            NW_READ(h->mntns, mnt_ns, OFF_MNTNS_INUM);
    }
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* Reserve `size` bytes in the ring buffer; count a drop for `probe` when it is full.
 * Always inlined, so `size` is a constant at each call site as the verifier requires. */
static __always_inline void *nw_reserve(u64 size, u32 probe)
{
    void *e = events.ringbuf_reserve(size);
    if (!e)
        nw_count_drop(probe);
    return e;
}
#define NW_RESERVE(type, probe) ((type *)nw_reserve(sizeof(type), (probe)))

/* Submit without waking the reader, except every NW_WAKEUP_EVERY records per CPU.
 * Why: the default wakes the reader whenever it has caught up, which under a steady load is on
 * nearly every record; each wakeup is an irq_work plus a context switch, paid in the traced
 * syscall (measured here: the exec loop went from 1.04x to 1.32x with a reader draining).
 * The reader also polls on a short timer (agent.poll_interval), which bounds the latency of a
 * quiet node's few events. */
static __always_inline void nw_submit(void *e)
{
    u32 zero = 0;
    u64 *n = submit_count.lookup(&zero);
    u64 flags = BPF_RB_NO_WAKEUP;
    if (n && (++*n % NW_WAKEUP_EVERY) == 0)
        flags = BPF_RB_FORCE_WAKEUP;
    events.ringbuf_submit(e, flags);
}

/* Reads a user string path into `dst` (NW_PATH_MAX bytes); returns its length without the NUL
 * and sets NW_F_TRUNCATED when it did not fit. */
static __always_inline u32 nw_read_path(char *dst, const char *upath, u8 *flags)
{
    long n = bpf_probe_read_user_str(dst, NW_PATH_MAX, upath);
    if (n <= 0) {
        dst[0] = 0;
        return 0;
    }
    if (n == NW_PATH_MAX)
        *flags |= NW_F_TRUNCATED;
    return n - 1;
}

/* 1 when the path lies under an ignored prefix (longest-prefix match in the LPM trie). */
static __always_inline int nw_path_ignored(const char *path, u32 len)
{
    u32 zero = 0;
    struct path_key *k = prefix_scratch.lookup(&zero);
    if (!k || len == 0)
        return 0;
    if (len > NW_PREFIX_MAX)
        len = NW_PREFIX_MAX;
    bpf_probe_read_kernel(k->path, sizeof(k->path), path);
    k->prefixlen = len * 8;
    return ignore_prefix.lookup(k) != 0;
}

/* (i_ino, s_dev) of a struct file, from BTF offsets. */
/* The caller's open file `fd` (current->files->fdt->fd[fd]), or 0: not open, negative, or past the table
 * (a fd the caller passes is any number: what lies past fd[max_fds] is not a struct file pointer). */
static __always_inline void *nw_fd_file(int fd)
{
    void *task = (void *)bpf_get_current_task();
    void *files = 0, *fdt = 0, *fdarr = 0, *file = 0;
    u32 max_fds = 0;
    if (fd < 0)
        return 0;
    NW_READ(files, task, OFF_TASK_FILES);
    if (!files)
        return 0;
    NW_READ(fdt, files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    NW_READ(max_fds, fdt, OFF_FDTABLE_MAX_FDS);
    if ((u32)fd >= max_fds)
        return 0;
    NW_READ(fdarr, fdt, OFF_FDTABLE_FD);
    if (fdarr)
        bpf_probe_read_kernel(&file, sizeof(file), (void *)((u64)fdarr + (u64)fd * sizeof(void *)));
    return file;
}

static __always_inline void nw_file_inode(void *file, struct ino_key *k)
{
    void *inode = 0, *sb = 0;
    k->ino = 0;
    k->dev = 0;
    k->_pad = 0;
    if (!file)
        return;
    NW_READ(inode, file, OFF_FILE_F_INODE);
    if (!inode)
        return;
    NW_READ(k->ino, inode, OFF_INODE_I_INO);
    NW_READ(sb, inode, OFF_INODE_I_SB);
    if (sb)
        NW_READ(k->dev, sb, OFF_SB_S_DEV);
}

/* The drift rule is on and this task's container is covered by the runtime rules. */
static __always_inline int nw_drift_watched(void)
{
    if (!nw_cfg(CFG_DRIFT))
        return 0;
    u64 cg = bpf_get_current_cgroup_id();
    return enforce_scope.lookup(&cg) != 0;
}

/* cgroup_mkdir: a directory the agent is waiting for (enforce_pending, by path) goes into
 * enforce_scope here, in the kernel, before any task can be moved into it. So a container the agent
 * heard of at create (NRI, OCI gate) is covered from its entrypoint on, whatever user space's lag.
 * Likewise a directory waiting for a protecting profile (profile_pending) gets its slot in profile_of. */
static __always_inline void nw_cover_pending(u64 id, const void *path)
{
    u32 zero = 0;
    struct cgroup_path *k = pending_scratch.lookup(&zero);
    if (!k)
        return;
    __builtin_memset(k->path, 0, sizeof(k->path));   /* the hash key is the whole NUL-padded array */
    if (bpf_probe_read_kernel_str(k->path, sizeof(k->path), path) <= 0)
        return;
    if (enforce_pending.lookup(k)) {
        u8 on = 1;
        enforce_scope.update(&id, &on);
    }
    u32 *slot = profile_pending.lookup(k);
    if (slot) {
        u32 s = *slot;
        profile_of.update(&id, &s);
    }
}

/* -- dentry walks (issue 10): a path as the kernel sees it, built from the dentry chain ------------------
 *
 * No d_path from a tracepoint (bpf_d_path is allowed only in some fentry/LSM hooks, refused here), so we
 * walk d_parent up to the mount's root, cross to the parent mount at each mount root (struct mount:
 * mnt_parent, mnt_mountpoint; the vfsmount is embedded at OFF_MOUNT_MNT), and stop at the root of the
 * tree (a mount that is its own parent: the namespace's root, or a kernel-internal mount) or at a dentry
 * that is its own parent (a pseudo dentry: memfd, whose name is kept, as d_path does). The walk collects
 * at most NW_PATH_DEPTH dentries (and mount crossings), then writes their names root first. Like d_path
 * it is racy against a concurrent rename; a path that did not fit is cut and flagged. */
/* Keeps a masked index masked: clang drops an `& mask` it can prove redundant, and the verifier, which
 * cannot, then sees an unbounded offset. */
#define NW_BOUND(x, mask) ({ u32 _v = (x); asm volatile("" : "+r"(_v)); _v & (mask); })

struct nw_walk {
    void *comp[NW_PATH_DEPTH];
    char  buf[NW_PATH_MAX * 2];   /* names are read at (pos & (NW_PATH_MAX-1)), up to NW_PATH_MAX bytes */
    /* The counters live in the map value, not in registers, on purpose: the verifier does not track
     * values in map memory, so each loop iteration reaches the loop head in the same state and is
     * pruned; kept in registers, every branch doubled the states (E2BIG at load). */
    u32   n;
    u32   pos;
};
BPF_PERCPU_ARRAY(walk_scratch, struct nw_walk, 1);

/* The dentries from `dentry` up to the root, leaf first, into w->comp (w->n of them); returns 1 when
 * the walk did not reach the root. */
static __always_inline int nw_walk_up(struct nw_walk *w, void *dentry, void *vfsmnt)
{
    void *mnt = (void *)((u64)vfsmnt - OFF_MOUNT_MNT);
    w->n = 0;
    for (int i = 0; i < NW_PATH_DEPTH; i++) {
        void *mnt_root = 0, *up = 0;
        NW_READ(mnt_root, vfsmnt, OFF_VFSMOUNT_MNT_ROOT);
        if (dentry == mnt_root) {
            void *parent = 0;
            NW_READ(parent, mnt, OFF_MOUNT_MNT_PARENT);
            if (!parent || parent == mnt)
                return 0;
            NW_READ(dentry, mnt, OFF_MOUNT_MNT_MOUNTPOINT);
            mnt = parent;
            vfsmnt = (void *)((u64)mnt + OFF_MOUNT_MNT);
            continue;
        }
        w->comp[NW_BOUND(w->n, NW_PATH_DEPTH - 1)] = dentry;
        w->n++;
        NW_READ(up, dentry, OFF_DENTRY_D_PARENT);
        if (!up || up == dentry)
            return 0;
        dentry = up;
    }
    return 1;
}

/* The path of (vfsmnt, dentry) into out (NW_PATH_MAX bytes, NUL-terminated); returns its length and
 * sets *cut when it did not fit. */
static __always_inline u32 nw_dentry_path(void *dentry, void *vfsmnt, char *out, int *cut)
{
    u32 zero = 0;
    struct nw_walk *w = walk_scratch.lookup(&zero);
    out[0] = 0;
    if (!w || !dentry || !vfsmnt)
        return 0;
    *cut = nw_walk_up(w, dentry, vfsmnt);
    w->pos = 0;
    for (int j = 0; j < NW_PATH_DEPTH; j++) {
        u32 n = w->n;
        if (j >= n)
            break;
        if (w->pos >= NW_PATH_MAX - 1) {
            *cut = 1;
            break;
        }
        void *d = w->comp[NW_BOUND(n - 1 - j, NW_PATH_DEPTH - 1)];
        const char *name = 0;
        NW_READ(name, d, OFF_DENTRY_D_NAME_NAME);
        w->buf[NW_BOUND(w->pos, NW_PATH_MAX - 1)] = '/';
        w->pos++;
        long r = bpf_probe_read_kernel_str(&w->buf[NW_BOUND(w->pos, NW_PATH_MAX - 1)], NW_PATH_MAX, name);
        if (r > 1)
            w->pos += r - 1;
    }
    if (w->n == 0) {
        w->buf[0] = '/';
        w->pos = 1;
    }
    if (w->pos >= NW_PATH_MAX) {
        w->pos = NW_PATH_MAX - 1;
        *cut = 1;
    }
    u32 len = NW_BOUND(w->pos, NW_PATH_MAX - 1);
    w->buf[len] = 0;
    bpf_probe_read_kernel(out, NW_PATH_MAX, w->buf);
    out[NW_PATH_MAX - 1] = 0;
    return len;
}

#define NW_TMPFS_MAGIC     0x01021994   /* include/uapi/linux/magic.h: stable ABI */
#define NW_HUGETLBFS_MAGIC 0x958458f6
#define NW_OVERLAYFS_MAGIC 0x794c7630

/* NW_EXE_* facts of a struct file (mm->exe_file). */
static __always_inline u32 nw_file_facts(void *file)
{
    void *dentry = 0, *vfsmnt = 0, *inode = 0, *sb = 0, *ns = 0, *pprev = 0, *up = 0;
    u32 flags = 0, nlink = 1;
    u64 magic = 0;
    NW_READ(dentry, file, OFF_FILE_F_PATH_DENTRY);
    NW_READ(vfsmnt, file, OFF_FILE_F_PATH_MNT);
    NW_READ(inode, file, OFF_FILE_F_INODE);
    if (dentry) {
        NW_READ(pprev, dentry, OFF_DENTRY_D_HASH_PPREV);
        NW_READ(up, dentry, OFF_DENTRY_D_PARENT);
        if (!pprev)
            flags |= NW_EXE_UNHASHED;
        if (up == dentry)
            flags |= NW_EXE_IS_ROOT;
    }
    if (vfsmnt) {
        NW_READ(ns, vfsmnt, (u64)OFF_MOUNT_MNT_NS - OFF_MOUNT_MNT);
        if (!ns || (u64)ns >= (u64)-4095)   /* NULL, or MNT_NS_INTERNAL = ERR_PTR(-EINVAL) (fs/mount.h) */
            flags |= NW_EXE_INTERNAL;
    }
    if (!inode)
        return flags;
    NW_READ(nlink, inode, OFF_INODE_I_NLINK);
    if (nlink == 0)
        flags |= NW_EXE_NLINK0;
    NW_READ(sb, inode, OFF_INODE_I_SB);
    if (sb)
        NW_READ(magic, sb, OFF_SB_S_MAGIC);
    if (magic == NW_TMPFS_MAGIC || magic == NW_HUGETLBFS_MAGIC)
        flags |= NW_EXE_SHMEM;
    if (magic == NW_OVERLAYFS_MAGIC) {
        /* The overlay inode is the vfs_inode inside struct ovl_inode; __upperdentry is set once the
         * file exists in the upper (writable) layer: created there, or copied up. */
        flags |= NW_EXE_OVERLAY;
#ifdef OFF_OVL_INODE_UPPERDENTRY   /* absent where overlayfs is a module (agent/kernel/offsets.py OPTIONAL) */
        void *upper = 0;
        NW_READ(upper, inode, (u64)OFF_OVL_INODE_UPPERDENTRY - OFF_OVL_INODE_VFS_INODE);
        if (upper)
            flags |= NW_EXE_UPPER;
#endif
    }
    return flags;
}

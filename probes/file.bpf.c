/* NodeWarden file probe: opens that write, create or truncate; unlink, rename, chmod, chown, symlink, link.
 *
 * Hooks: syscalls:sys_enter_* / sys_exit_* pairs. The path is read at entry (the kernel copies
 * it then too, so a thread rewriting the buffer during the call does not fool us), staged in a
 * per-thread LRU map, and sent at exit with the syscall's result. The LRU bounds what threads
 * that never return (killed mid-call) leave behind.
 *
 * Filters, all in maps the agent changes at run time: read-only opens are dropped unless
 * CFG_FILE_READONLY is set or their path is on the watch list (sensitive reads: an LPM trie of
 * prefixes, plus /proc/<any>/environ and /home/<any>/.ssh/ when their slots are on); paths under an
 * ignored prefix (LPM trie) are dropped, except opens of watched paths: the watch list wins, so
 * /proc/<pid>/environ is reported although /proc/ is ignored. A read-only open costs an 8-byte read
 * and one hash lookup more than before (file_maybe_watched; bench.sensors measures it).
 * GPU/XPU device nodes (issue 12): the agent puts probes.watch_devices ("/dev/nvidia", "/dev/xpu") in the
 * watch trie as both read- and write-watched, so every open of /dev/nvidia3, /dev/nvidiactl, /dev/xpu0 ...
 * reaches user space although /dev/ is ignored (the device guard judges it against the container's
 * allocation); their 8-byte heads ("/dev/nvi", "/dev/xpu") pass the read-only pre-filter. Known gap: a node
 * made under another name (mknod /tmp/g c 195 3) or opened by a relative path is matched by name only.
 * Relative paths are sent as given, with the cwd in path2 (NW_F_CWD) when they are relative to it
 * (not for rename, whose path2 is the new name, nor symlink and link, whose path2 is the target or the
 * existing file: their relative new name is resolved in user space from the process table's cwd).
 * symlink/link: path = the new name (relative to newdfd), path2 = the target as given (a symlink's
 * target is text the kernel does not resolve) or the existing file; linkat's olddfd goes in fd when it
 * is not AT_FDCWD (linkat(fd, "", ..., AT_EMPTY_PATH) names an open file, an O_TMPFILE one say).
 * Ops with two names are dropped by the ignored prefixes only when both are under one; a symlink's
 * relative target counts as under its link's prefix (udev's /dev/disk/by-* -> ../../sda1 stay quiet).
 * Known gaps: prefixes match absolute paths only; fchmod/fchown carry the fd, not a path; a relative
 * symlink target that climbs out of an ignored tree (../../etc/shadow) is dropped with its link;
 * linkat's old path relative to a directory fd is sent as given. Syscalls this kernel lacks (open, creat, ... on arm64,
 * fchmodat2 before 6.6) are compiled out: the agent defines NW_HAVE_<name> for each that exists.
 *
 * Close of files written under a web root (OP_FILE_CLOSE, issue 11): a successful writing open whose path
 * (or, when relative, whose cwd) lies under a close_prefix is remembered as (tgid, fd) -> its open record
 * in close_marks; sys_enter_close of that fd sends the record again with op OP_FILE_CLOSE and the closing
 * thread's header, and forgets it; dup2/dup3 copy a mark to the new fd and close a marked fd they replace
 * (a shell's `> file` writes through the dup'ed stdout after closing the fd it opened). The open's path is
 * the one sent (as the process gave it: the agent reads the file through /proc/<pid>/root). Why sys_enter_close: fentry/kprobe on __fput may be refused (they are
 * here); a tracepoint always loads. Each close on the node costs one hash lookup more. Known gaps, all left
 * to user space (agent/detect/webshell_watch.py scans again at the writer's exit and after a short linger):
 * a fd closed by exit, exec (O_CLOEXEC) or close_range sends nothing, and its mark stays until the LRU
 * evicts it (a later close of a reused fd number then names the old path: a rescan, no more); a copy made by
 * dup(), fcntl(F_DUPFD) or inherited at fork may still write after the close that was reported.
 */

#define NW_O_ACCMODE 00000003
#define NW_O_CREAT   00000100
#define NW_O_TRUNC   00001000
#define NW_AT_FDCWD  -100

BPF_LPM_TRIE(watch_prefix, struct path_key, u8, 1024);   /* watched paths: NW_WATCH_READ | NW_WATCH_WRITE */
BPF_HASH(watch_head, u64, u8, 1024);   /* the first 8 bytes of each watch prefix: the pre-filter */
BPF_PERCPU_ARRAY(file_scratch, struct file_event, 1);

/* Staging (issue 17): in task storage where the kernel has it for tracing programs (Linux 5.11; the loader
 * defines NW_HAVE_TASK_STORAGE when the kernel's BTF has the map type and bpf_get_current_task_btf).
 * Why: every open's exit looks its thread's record up, which for a read-only open finds nothing; that miss
 * cost ~100 ns per open in the LRU hash here, a task storage lookup ~40 ns (kernel.bpf_stats_enabled), and
 * what a task staged goes with the task. Older kernels: an LRU hash by tid, which bounds what threads
 * killed mid-call leave.
 * Tried and measured slower here (commit 259f217): the opens and close through one raw_tracepoint on
 * sys_enter dispatching on the syscall number, and one on sys_exit. The other families' syscall
 * tracepoints stay attached, so the kernel's per-syscall dispatch still runs on every call, and the raw
 * programs ran on every syscall of the node, reading struct pt_regs with bpf_probe_read_kernel: ~105 ns
 * per open at sys_enter against the openat tracepoint program's ~46. */
#if defined(NW_HAVE_TASK_STORAGE)
#define NW_TASK_STAGE 1
#endif

#ifdef NW_TASK_STAGE
/* A task's slot is made at its first staged op and kept until the task exits (op 0: nothing staged), so a
 * reported op pays no allocation and free; one file_event per task that ever staged one. */
BPF_TASK_STORAGE(file_inflight, struct file_event);
static __always_inline void file_stage_put(struct file_event *e)
{
    struct file_event *s =
        file_inflight.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (s)
        bpf_probe_read_kernel(s, sizeof(*s), e);
}
static __always_inline struct file_event *file_stage_get(void)
{
    struct file_event *s = file_inflight.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    return s && s->h.op ? s : 0;
}
static __always_inline void file_stage_del(struct file_event *staged) { staged->h.op = 0; }
#else
BPF_TABLE("lru_hash", u32, struct file_event, file_inflight, 8192);
static __always_inline void file_stage_put(struct file_event *e)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();   /* the header is not filled yet (file_finish does it) */
    file_inflight.update(&tid, e);
}
static __always_inline struct file_event *file_stage_get(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    return file_inflight.lookup(&tid);
}
static __always_inline void file_stage_del(struct file_event *staged)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    file_inflight.delete(&tid);
}
#endif
/* Web roots: writing opens below them are remembered until their close (see the top of this file). */
BPF_LPM_TRIE(close_prefix, struct path_key, u8, 256);
struct close_key {
    u32 tgid;
    s32 fd;
};
BPF_TABLE("lru_hash", struct close_key, struct file_event, close_marks, 4096);

/* Folding of opens (issue 17, common.h nw_fold_hit): the same process opening the same path with the same
 * flags again within the fold window is counted, not sent. The key is the process, the flags and the path
 * as given, by its length and a hash; the value keeps the path, so only an exact repeat folds (a hash
 * collision is sent, as any new path is). Only absolute paths that fit fold: a relative one means what
 * its cwd says, a cut one may hide a different tail. Failed opens are always sent. */
struct file_fold_key {
    u32 tgid;
    u32 flags;
    u32 path_len;
    u32 _pad;
    u64 hash;
};
struct file_fold {
    u64 last;   /* CLOCK_BOOTTIME of the open reported */
    char path[NW_PATH_MAX];
};
BPF_TABLE("lru_hash", struct file_fold_key, struct file_fold, file_folds, 4096);
BPF_PERCPU_ARRAY(file_fold_scratch, struct file_fold, 1);

/* Word i of a path of `len` bytes, the bytes past its end zeroed: a staging buffer keeps an older, longer
 * path's tail after the NUL. */
static __always_inline u64 file_path_word(const char *path, u32 len, u32 i)
{
    /* a direct load from map memory (paths are 8-aligned in file_event and file_fold), no helper call */
    u64 w = *(const u64 *)(path + NW_BOUND(i, NW_PATH_MAX / 8 - 1) * 8);
    u32 left = len - i * 8;
    if (left < 8)
        w &= (1ULL << (left * 8)) - 1;
    return w;
}

/* 1 when this successful open is a repeat within the fold window (counted: not sent); else it is
 * remembered as the one reported. */
static __always_inline int file_folded(struct file_event *staged)
{
    u32 len = staged->path_len;
    if (!nw_fold_on() || staged->path[0] != '/' || (staged->h.flags & NW_F_TRUNCATED) || len == 0 ||
        len >= NW_PATH_MAX)
        return 0;
    u32 words = (len + 7) / 8;
    u64 h = 0xcbf29ce484222325ULL;   /* FNV-1a's offset and prime, a word at a time */
    for (u32 i = 0; i < NW_PATH_MAX / 8; i++) {
        if (i >= words)
            break;
        h = (h ^ file_path_word(staged->path, len, i)) * 0x100000001b3ULL;
    }
    u64 now = bpf_ktime_get_boot_ns();
    struct file_fold_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .flags = staged->flags, .path_len = len,
                              .hash = h};
    struct file_fold *f = file_folds.lookup(&k);
    if (f) {
        int same = 1;
        for (u32 i = 0; i < NW_PATH_MAX / 8; i++) {
            if (i >= words)
                break;
            if (file_path_word(f->path, len, i) != file_path_word(staged->path, len, i)) {
                same = 0;
                break;
            }
        }
        if (same && nw_fold_hit(f->last, now, FOLD_FILE_OPEN))
            return 1;
    }
    u32 zero = 0;
    struct file_fold *v = file_fold_scratch.lookup(&zero);
    if (v) {
        v->last = now;
        bpf_probe_read_kernel(v->path, sizeof(v->path), staged->path);
        file_folds.update(&k, v);
    }
    return 0;
}

/* The header is filled at the exit, in file_finish, and only for a record that is sent: an ignored path
 * costs no more than reading it, and a folded repeat or a record staged only for drift no more than its
 * staging. Its timestamp is thus the call's end, which is also when the record enters the ring. */
static __always_inline struct file_event *file_begin(u8 op)
{
    u32 zero = 0;
    struct file_event *e = file_scratch.lookup(&zero);
    if (!e)
        return 0;
    e->h.op = op;
    e->h.flags = 0;
    e->ret = 0;
    e->dirfd = NW_AT_FDCWD;
    e->flags = 0;
    e->mode = 0;
    e->owner_uid = (u32)-1;
    e->owner_gid = (u32)-1;
    e->fd = -1;
    e->path_len = 0;
    e->path2_len = 0;
    e->path[0] = 0;
    e->path2[0] = 0;
    return e;
}

#define NW_LE_PROC_    0x2f636f72702fULL       /* "/proc/" as little-endian bytes */
#define NW_LE_HOME_    0x2f656d6f682fULL       /* "/home/" */
#define NW_LE_SSH_     0x2f6873732e2fULL       /* "/.ssh/" */
#define NW_LE_ENVIRON  0x6e6f7269766e652fULL   /* "/environ" */
#define NW_LOW48       0xffffffffffffULL

/* /home/<one component>/.ssh/... (a component of at most 64 bytes). */
static __always_inline int file_home_ssh(const char *path, u32 len)
{
    u64 head = 0;
    bpf_probe_read_kernel(&head, 8, path);
    if ((head & NW_LOW48) != NW_LE_HOME_)
        return 0;
    for (int i = 7; i < 7 + 64; i++) {
        if (path[i] == 0)
            return 0;
        if (path[i] == '/') {
            u64 tail = 0;
            bpf_probe_read_kernel(&tail, 8, path + i);
            return (tail & NW_LOW48) == NW_LE_SSH_;
        }
    }
    return 0;
}

/* How a path's opens are watched (NW_WATCH_* bits, 0 = not): its longest prefix in watch_prefix, or
 * one of the two read patterns. */
static __always_inline int file_watched(const char *path, u32 len)
{
    u32 zero = 0;
    struct path_key *k = prefix_scratch.lookup(&zero);
    if (!k || len == 0)
        return 0;
    bpf_probe_read_kernel(k->path, sizeof(k->path), path);
    k->prefixlen = (len > NW_PREFIX_MAX ? NW_PREFIX_MAX : len) * 8;
    u8 *how = watch_prefix.lookup(k);
    if (how)
        return *how;
    if (len >= 14 && nw_cfg(CFG_WATCH_ENVIRON)) {
        u64 head = 0, tail = 0;
        bpf_probe_read_kernel(&head, 8, path);
        bpf_probe_read_kernel(&tail, 8, path + ((len - 8) & (NW_PATH_MAX - 1)));
        if ((head & NW_LOW48) == NW_LE_PROC_ && tail == NW_LE_ENVIRON)
            return 1;
    }
    return len >= 13 && nw_cfg(CFG_WATCH_HOME_SSH) && file_home_ssh(path, len);
}

/* The pre-filter of read-only opens, on the user's path before anything is copied: 0 when the path
 * cannot be watched. Its first 8 bytes are one read and one hash lookup; only a path whose head is a
 * watch prefix's (or "/proc/", "/home/" with their pattern on) goes on to the full read and the trie.
 * Why: a read-only open is the commonest syscall on a node; the full path read plus the trie lookup
 * on each made the read-only open/close loop ~110 ns slower (bench.sensors). */
static __always_inline int file_maybe_watched(const char *upath)
{
    u64 head = 0;
    if (bpf_probe_read_user(&head, 8, upath) != 0)
        return 1;   /* a short path at the end of a mapping: let the full check decide */
    if (watch_head.lookup(&head))
        return 1;
    u64 h6 = head & NW_LOW48;
    if (h6 == NW_LE_PROC_ && nw_cfg(CFG_WATCH_ENVIRON))
        return 1;
    if (h6 == NW_LE_HOME_ && nw_cfg(CFG_WATCH_HOME_SSH))
        return 1;
    return nw_cfg(CFG_WATCH_SHORT) != 0;
}

/* A path relative to the cwd (dirfd AT_FDCWD): the cwd into path2, from task->fs->pwd at the call,
 * so user space resolves it even after a chdir the agent never saw. Only relative paths pay the walk. */
static __always_inline void file_cwd(struct file_event *e)
{
    if (e->path_len == 0 || e->path[0] == '/' || e->dirfd != NW_AT_FDCWD)
        return;
    void *task = (void *)bpf_get_current_task();
    void *fs = 0, *vfsmnt = 0, *dentry = 0;
    int cut = 0;
    NW_READ(fs, task, OFF_TASK_FS);
    if (!fs)
        return;
    NW_READ(vfsmnt, fs, OFF_FS_PWD_MNT);
    NW_READ(dentry, fs, OFF_FS_PWD_DENTRY);
    e->path2_len = nw_dentry_path(dentry, vfsmnt, e->path2, &cut);
    if (e->path2_len == 0)
        return;
    e->h.flags |= NW_F_CWD;
    if (cut)
        e->h.flags |= NW_F_TRUNCATED;
}

/* For the ignored-prefix filter: 1 when the op's second name (if it has one) is ignored too. */
static __always_inline int file_path2_ignored(struct file_event *e)
{
    u8 op = e->h.op;
    if (op == OP_FILE_SYMLINK && e->path2[0] != '/')
        return 1;   /* a relative target lives under the link's own directory */
    if (op == OP_FILE_RENAME || op == OP_FILE_LINK || op == OP_FILE_SYMLINK)
        return nw_path_ignored(e->path2, e->path2_len);
    return 1;
}

static __always_inline int file_stage(struct file_event *e)
{
    int drop = !(e->h.flags & NW_F_WATCHED) && nw_path_ignored(e->path, e->path_len) && file_path2_ignored(e);
    if (drop && e->h.op == OP_FILE_OPEN && file_watched(e->path, e->path_len)) {
        /* the watch lists win over the ignored prefixes: /proc/<pid>/environ, /proc/sys/kernel/core_pattern
         * under /proc/ (a read-only open got here only when it is read-watched) */
        drop = 0;
        e->h.flags |= NW_F_WATCHED;
    }
    if (drop) {
        /* Not sent, but a write in a watched container still feeds the drift set (/dev/shm...). */
        if (e->h.op != OP_FILE_OPEN || !nw_drift_watched())
            return 0;
        e->h.flags |= NW_F_NOEMIT;
    }
    file_stage_put(e);   /* the header is filled at the exit (file_finish), for a record that is sent */
    return 0;
}

/* 1 when a writing open's path lies under a close_prefix: the path itself when absolute, else its cwd
 * (path2, NW_F_CWD) with a '/' after it, so cwd /var/www matches the prefix /var/www/. */
static __always_inline int file_close_watched(struct file_event *e)
{
    u32 zero = 0;
    struct path_key *k = prefix_scratch.lookup(&zero);
    if (!k)
        return 0;
    u32 len = 0;
    if (e->path_len && e->path[0] == '/') {
        bpf_probe_read_kernel(k->path, sizeof(k->path), e->path);
        len = e->path_len;
    } else if ((e->h.flags & NW_F_CWD) && e->path2_len) {
        bpf_probe_read_kernel(k->path, sizeof(k->path), e->path2);
        len = e->path2_len;
        if (len < NW_PREFIX_MAX)
            k->path[len & (NW_PREFIX_MAX - 1)] = '/';
        len++;
    }
    if (len == 0)
        return 0;
    k->prefixlen = (len > NW_PREFIX_MAX ? NW_PREFIX_MAX : len) * 8;
    return close_prefix.lookup(k) != 0;
}

static __always_inline int file_finish(long ret)
{
    struct file_event *staged = file_stage_get();
    if (!staged)
        return 0;
    if (staged->h.op == OP_FILE_OPEN && ret >= 0 && nw_drift_watched()) {
        /* Drift: remember the inode this container opened for writing; exec of it is checked. */
        struct ino_key k = {};
        void *task = (void *)bpf_get_current_task();
        void *files = 0, *fdt = 0, *fdarr = 0, *file = 0;
        NW_READ(files, task, OFF_TASK_FILES);
        if (files)
            NW_READ(fdt, files, OFF_FILES_FDT);
        if (fdt)
            NW_READ(fdarr, fdt, OFF_FDTABLE_FD);
        if (fdarr)
            bpf_probe_read_kernel(&file, sizeof(file), (void *)((u64)fdarr + (u64)ret * sizeof(void *)));
        nw_file_inode(file, &k);
        u64 cg = bpf_get_current_cgroup_id();
        if (k.ino)
            drift_inodes.update(&k, &cg);
    }
    if (staged->h.op == OP_FILE_OPEN && ret >= 0 &&
        ((staged->flags & NW_O_ACCMODE) || (staged->flags & (NW_O_CREAT | NW_O_TRUNC))) &&
        file_close_watched(staged)) {
        struct close_key ck = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (s32)ret};
        close_marks.update(&ck, staged);
    }
    if ((staged->h.flags & NW_F_NOEMIT) || (staged->h.op == OP_FILE_OPEN && ret >= 0 && file_folded(staged))) {
        file_stage_del(staged);   /* drift and the close mark above are kept for a folded open too */
        return 0;
    }
    struct file_event *e = NW_RESERVE(struct file_event, PROBE_FILE);
    if (e) {
        bpf_probe_read_kernel(e, sizeof(*e), staged);
        u8 flags = e->h.flags;   /* NW_F_TRUNCATED, NW_F_CWD, NW_F_WATCHED from the entry */
        nw_fill_header(&e->h, e->h.op);
        e->h.flags |= flags;
        e->ret = ret;
        nw_submit(e);
    }
    file_stage_del(staged);
    return 0;
}

static __always_inline int file_open(int dfd, const char *name, u64 flags, u32 mode)
{
    /* Most opens on a node only read: those go no further than the path and the watch list. */
    int unwatched_ro = (flags & NW_O_ACCMODE) == 0 && !(flags & (NW_O_CREAT | NW_O_TRUNC)) &&
                       !nw_cfg(CFG_FILE_READONLY);
    if (unwatched_ro && !file_maybe_watched(name))
        return 0;
    struct file_event *e = file_begin(OP_FILE_OPEN);
    if (!e)
        return 0;
    e->path_len = nw_read_path(e->path, name, &e->h.flags);
    if (unwatched_ro) {
        if (!(file_watched(e->path, e->path_len) & NW_WATCH_READ))   /* a write-only watch skips reads */
            return 0;
        e->h.flags |= NW_F_WATCHED;
    }
    if (nw_skip())
        return 0;
    e->dirfd = dfd;
    e->flags = flags;
    e->mode = mode;
    file_cwd(e);
    return file_stage(e);
}

static __always_inline int file_path_op(u8 op, int dfd, const char *name, u32 flags, u32 mode, u32 uid, u32 gid)
{
    if (nw_skip())
        return 0;
    struct file_event *e = file_begin(op);
    if (!e)
        return 0;
    e->dirfd = dfd;
    e->flags = flags;
    e->mode = mode;
    e->owner_uid = uid;
    e->owner_gid = gid;
    e->path_len = nw_read_path(e->path, name, &e->h.flags);
    file_cwd(e);
    return file_stage(e);
}

static __always_inline int file_fd_op(u8 op, int fd, u32 mode, u32 uid, u32 gid)
{
    if (nw_skip())
        return 0;
    struct file_event *e = file_begin(op);
    if (!e)
        return 0;
    e->dirfd = -1;
    e->fd = fd;
    e->mode = mode;
    e->owner_uid = uid;
    e->owner_gid = gid;
    file_stage_put(e);
    return 0;
}

static __always_inline int file_rename(int olddfd, const char *oldname, const char *newname, u32 flags)
{
    if (nw_skip())
        return 0;
    struct file_event *e = file_begin(OP_FILE_RENAME);
    if (!e)
        return 0;
    e->dirfd = olddfd;
    e->flags = flags;
    e->path_len = nw_read_path(e->path, oldname, &e->h.flags);
    long n = bpf_probe_read_user_str(e->path2, NW_PATH_MAX, newname);
    e->path2_len = n > 0 ? n - 1 : 0;
    if (n == NW_PATH_MAX)
        e->h.flags |= NW_F_TRUNCATED;
    return file_stage(e);
}

/* symlink/symlinkat, link/linkat: the new name and what it points to, both read at entry. No cwd walk:
 * path2 holds the second name (see the top of this file). */
static __always_inline int file_link(u8 op, int newdfd, const char *newname, const char *oldname, u32 flags,
                                     int olddfd)
{
    if (nw_skip())
        return 0;
    struct file_event *e = file_begin(op);
    if (!e)
        return 0;
    e->dirfd = newdfd;
    e->flags = flags;
    if (olddfd != NW_AT_FDCWD)
        e->fd = olddfd;
    e->path_len = nw_read_path(e->path, newname, &e->h.flags);
    e->path2_len = nw_read_path(e->path2, oldname, &e->h.flags);
    return file_stage(e);
}

/* A remembered writing open's record again, as OP_FILE_CLOSE of `ck`'s fd, with this thread's header; the
 * mark is forgotten. ret 0: sent at the call's entry (a close cannot fail in a way that keeps writing). */
static __always_inline void file_close_send(struct close_key *ck, struct file_event *m)
{
    struct file_event *e = NW_RESERVE(struct file_event, PROBE_FILE);
    if (e) {
        bpf_probe_read_kernel(e, sizeof(*e), m);
        u8 kept = e->h.flags & (NW_F_TRUNCATED | NW_F_CWD);
        nw_fill_header(&e->h, OP_FILE_CLOSE);
        e->h.flags |= kept;
        e->fd = ck->fd;
        e->ret = 0;
        nw_submit(e);
    }
    close_marks.delete(ck);
}

static __always_inline int file_close(int fd)
{
    struct close_key ck = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
    struct file_event *m = close_marks.lookup(&ck);
    if (m)
        file_close_send(&ck, m);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) { return file_close((s32)args->fd); }

/* dup2/dup3. A shell's redirection (`echo x > f`: open f as 3, dup2(3, 1), close(3), write to 1, then dup2 of
 * the saved stdout back onto 1) writes after the close of the fd it opened: the mark follows the fd to its
 * new number, and a marked fd that a dup replaces is closed by it, so the last close comes after the write. */
static __always_inline int file_dup(int oldfd, int newfd)
{
    if (oldfd == newfd)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct close_key nk = {.tgid = tgid, .fd = newfd};
    struct file_event *m = close_marks.lookup(&nk);
    if (m)
        file_close_send(&nk, m);
    struct close_key ok = {.tgid = tgid, .fd = oldfd};
    m = close_marks.lookup(&ok);
    if (m)
        close_marks.update(&nk, m);
    return 0;
}

/* Not TRACEPOINT_PROBE: net.bpf.c has its own programs on dup2/dup3, and bcc names a TRACEPOINT_PROBE's
 * function (and its argument struct) after the tracepoint, so a second one would not compile. These are
 * attached by name (file.py's Sensor.attach); the record is a syscall tracepoint's, whose layout is fixed:
 * the common header, __syscall_nr, then every argument in 8 bytes (tracefs's format file says so). */
struct nw_dup_args {
    u64 common;
    s32 nr;
    u32 _pad;
    u64 oldfd;
    u64 newfd;
};
int nw_file_dup2(struct nw_dup_args *args) { return file_dup((int)args->oldfd, (int)args->newfd); }
int nw_file_dup3(struct nw_dup_args *args) { return file_dup((int)args->oldfd, (int)args->newfd); }

#define FILE_EXIT(name) \
    TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return file_finish(args->ret); }

#ifdef NW_HAVE_open
TRACEPOINT_PROBE(syscalls, sys_enter_open) { return file_open(NW_AT_FDCWD, args->filename, args->flags, args->mode); }
FILE_EXIT(open)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return file_open(args->dfd, args->filename, args->flags, args->mode); }
FILE_EXIT(openat)
#ifdef NW_HAVE_openat2
TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    u64 how[2] = {};   /* struct open_how: u64 flags, u64 mode (uapi, stable) */
    bpf_probe_read_user(how, sizeof(how), args->how);
    return file_open(args->dfd, args->filename, how[0], (u32)how[1]);
}
FILE_EXIT(openat2)
#endif
#ifdef NW_HAVE_creat
TRACEPOINT_PROBE(syscalls, sys_enter_creat)
{
    return file_open(NW_AT_FDCWD, args->pathname, 01 | NW_O_CREAT | NW_O_TRUNC, args->mode);
}
FILE_EXIT(creat)
#endif
#ifdef NW_HAVE_unlink
TRACEPOINT_PROBE(syscalls, sys_enter_unlink) { return file_path_op(OP_FILE_UNLINK, NW_AT_FDCWD, args->pathname, 0, 0, -1, -1); }
FILE_EXIT(unlink)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat) { return file_path_op(OP_FILE_UNLINK, args->dfd, args->pathname, args->flag, 0, -1, -1); }
FILE_EXIT(unlinkat)
#ifdef NW_HAVE_rename
TRACEPOINT_PROBE(syscalls, sys_enter_rename) { return file_rename(NW_AT_FDCWD, args->oldname, args->newname, 0); }
FILE_EXIT(rename)
#endif
#ifdef NW_HAVE_renameat
TRACEPOINT_PROBE(syscalls, sys_enter_renameat) { return file_rename(args->olddfd, args->oldname, args->newname, 0); }
FILE_EXIT(renameat)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2) { return file_rename(args->olddfd, args->oldname, args->newname, args->flags); }
FILE_EXIT(renameat2)
#ifdef NW_HAVE_chmod
TRACEPOINT_PROBE(syscalls, sys_enter_chmod) { return file_path_op(OP_FILE_CHMOD, NW_AT_FDCWD, args->filename, 0, args->mode, -1, -1); }
FILE_EXIT(chmod)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat) { return file_path_op(OP_FILE_CHMOD, args->dfd, args->filename, 0, args->mode, -1, -1); }
FILE_EXIT(fchmodat)
#ifdef NW_HAVE_fchmodat2
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2) { return file_path_op(OP_FILE_CHMOD, args->dfd, args->filename, args->flags, args->mode, -1, -1); }
FILE_EXIT(fchmodat2)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_fchmod) { return file_fd_op(OP_FILE_CHMOD, args->fd, args->mode, -1, -1); }
FILE_EXIT(fchmod)
#ifdef NW_HAVE_chown
TRACEPOINT_PROBE(syscalls, sys_enter_chown) { return file_path_op(OP_FILE_CHOWN, NW_AT_FDCWD, args->filename, 0, 0, args->user, args->group); }
FILE_EXIT(chown)
#endif
#ifdef NW_HAVE_lchown
TRACEPOINT_PROBE(syscalls, sys_enter_lchown) { return file_path_op(OP_FILE_CHOWN, NW_AT_FDCWD, args->filename, 0x100, 0, args->user, args->group); }
FILE_EXIT(lchown)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_fchownat) { return file_path_op(OP_FILE_CHOWN, args->dfd, args->filename, args->flag, 0, args->user, args->group); }
FILE_EXIT(fchownat)
TRACEPOINT_PROBE(syscalls, sys_enter_fchown) { return file_fd_op(OP_FILE_CHOWN, args->fd, 0, args->user, args->group); }
FILE_EXIT(fchown)
#ifdef NW_HAVE_symlink
TRACEPOINT_PROBE(syscalls, sys_enter_symlink) { return file_link(OP_FILE_SYMLINK, NW_AT_FDCWD, args->newname, args->oldname, 0, NW_AT_FDCWD); }
FILE_EXIT(symlink)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat) { return file_link(OP_FILE_SYMLINK, args->newdfd, args->newname, args->oldname, 0, NW_AT_FDCWD); }
FILE_EXIT(symlinkat)
#ifdef NW_HAVE_link
TRACEPOINT_PROBE(syscalls, sys_enter_link) { return file_link(OP_FILE_LINK, NW_AT_FDCWD, args->newname, args->oldname, 0, NW_AT_FDCWD); }
FILE_EXIT(link)
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_linkat) { return file_link(OP_FILE_LINK, args->newdfd, args->newname, args->oldname, args->flags, args->olddfd); }
FILE_EXIT(linkat)

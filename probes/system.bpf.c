/* NodeWarden system probe: privilege, namespace and kernel-surface calls.
 *
 * ptrace, setuid/setreuid/setresuid/setfsuid and their gid twins, capset, init_module/finit_module,
 * mount and move_mount (the new mount API's attach), umount2, unshare, setns, bpf(BPF_PROG_LOAD) and
 * memfd_create, one struct sys_event each.
 *
 * Hooks: syscalls:sys_enter_* / sys_exit_* pairs, staged per thread like the file probe: everything
 * is read at entry (the user's strings and structs, which the kernel also copies then; the header,
 * so uid/gid are the caller's before the call) and sent at exit with the result. Each record carries
 * the x86-64 number of the syscall that made it (a constant per hook, not the tracepoint's
 * __syscall_nr, so user space names the call right on every architecture); the exit hook sends only
 * the record its own syscall staged, so a stale entry (a thread killed mid-call) is never sent with
 * another call's result, and only when the target/ignore filters still let the caller through.
 *
 * Filters in the kernel, because these calls come in bursts from ordinary programs:
 *  - set*id: a call whose every requested id is already the caller's (glibc, sudo, cron, sshd do
 *    this all the time) changes nothing and is not sent. Only checked in the initial user namespace:
 *    inside another one the arguments are that namespace's ids and the cred's are the kernel's, so
 *    such calls are always sent.
 *  - ptrace: only the requests that start tracing (TRACEME, ATTACH, SEIZE) or write the tracee
 *    (POKE*, SET*REGS, SETREGSET, SETSIGINFO); a debugger or strace makes the others (PEEK*, CONT,
 *    SYSCALL, GETREGS, DETACH...) once or more per traced syscall, after an attach that was reported.
 *  - bpf: only BPF_PROG_LOAD; the map operations other agents make by the thousand are one compare.
 * The agent's own calls (its bcc loads, its map updates) are dropped by nw_skip like every family's.
 * Syscalls this kernel lacks (init_module/finit_module without CONFIG_MODULES, ...) are compiled out:
 * the agent defines NW_HAVE_<name> for each that exists (agent/sensors/system.py lists them).
 */

#include <linux/capability.h>   /* uapi: cap_user_header_t and cap_user_data_t name capset's tracepoint fields */

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl); agent/sensors/system.py names them. */
#define NW_NR_PTRACE       101
#define NW_NR_SETUID       105
#define NW_NR_SETGID       106
#define NW_NR_SETREUID     113
#define NW_NR_SETREGID     114
#define NW_NR_SETRESUID    117
#define NW_NR_SETRESGID    119
#define NW_NR_SETFSUID     122
#define NW_NR_SETFSGID     123
#define NW_NR_CAPSET       126
#define NW_NR_MOUNT        165
#define NW_NR_UMOUNT2      166
#define NW_NR_INIT_MODULE  175
#define NW_NR_UNSHARE      272
#define NW_NR_SETNS        308
#define NW_NR_FINIT_MODULE 313
#define NW_NR_MEMFD_CREATE 319
#define NW_NR_BPF          321
#define NW_NR_MOVE_MOUNT   429

#define NW_BPF_PROG_LOAD        5    /* enum bpf_cmd (uapi) */
#define NW_BPF_ATTR_PROG_NAME   48   /* offsetof(union bpf_attr, prog_name) (uapi, stable) */
#define NW_BPF_OBJ_NAME_LEN     16
#define NW_CAP_V1               0x19980330   /* _LINUX_CAPABILITY_VERSION_1: one cap_user_data struct; later: two */
#define NW_ID_KEEP              0xffffffffu  /* (uid_t)-1: "leave this id alone" */

_Static_assert(NW_SYS_NAME_MAX >= NW_PATH_MAX, "sys_event.name takes a dentry path");

BPF_TABLE("lru_hash", u32, struct sys_event, sys_inflight, 4096);
BPF_PERCPU_ARRAY(sys_scratch, struct sys_event, 1);

/* A cleared record for this call with the caller's header, or 0 when the caller is filtered out. */
static __always_inline struct sys_event *sys_begin(u8 op, u32 call)
{
    if (nw_skip())
        return 0;
    u32 zero = 0;
    struct sys_event *e = sys_scratch.lookup(&zero);
    if (!e)
        return 0;
    nw_fill_header(&e->h, op);
    e->ret = 0;
    e->call = call;
    e->_pad = 0;
    e->arg = 0;
    e->target_pid = -1;
    e->ids[0] = -1;
    e->ids[1] = -1;
    e->ids[2] = -1;
    e->caps[0] = 0;
    e->caps[1] = 0;
    e->caps[2] = 0;
    e->name_len = 0;
    e->source_len = 0;
    e->fstype_len = 0;
    e->_pad2 = 0;
    e->name[0] = 0;
    e->source[0] = 0;
    e->fstype[0] = 0;
    return e;
}

static __always_inline int sys_stage(struct sys_event *e)
{
    u32 tid = e->h.tid;
    sys_inflight.update(&tid, e);
    return 0;
}

static __always_inline int sys_finish(u32 call, long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sys_event *staged = sys_inflight.lookup(&tid);
    if (!staged)
        return 0;
    /* nw_skip again: a call staged while the filters let it through (every process, say) and ending after
     * they changed is not sent either; and only the record this syscall staged. */
    if (staged->call == call && !nw_skip()) {
        struct sys_event *e = NW_RESERVE(struct sys_event, PROBE_SYSTEM);
        if (e) {
            bpf_probe_read_kernel(e, sizeof(*e), staged);
            e->ret = ret;
            nw_submit(e);
        }
    }
    sys_inflight.delete(&tid);
    return 0;
}

/* A user string into dst (`size` bytes, a constant at each call site); its length without the NUL.
 * NULL or unreadable is "" (mount's source and type may be NULL). */
static __always_inline u32 sys_read_str(char *dst, u32 size, const char *u, u8 *flags)
{
    dst[0] = 0;
    if (!u)
        return 0;
    long n = bpf_probe_read_user_str(dst, size, u);
    if (n <= 0) {
        dst[0] = 0;
        return 0;
    }
    if (n == size)
        *flags |= NW_F_TRUNCATED;
    return n - 1;
}

/* A set*id argument as the record keeps it: -1 for "unchanged". */
static __always_inline s64 sys_id(u32 v)
{
    return v == NW_ID_KEEP ? -1 : (s64)v;
}

/* -- set*id ------------------------------------------------------------------------------------------ */

enum sys_setid_kind { SETID_ONE, SETID_RE, SETID_RES, SETID_FS };

struct sys_ids {
    u32 r, e, s, fs;
};

/* The caller's real, effective, saved and fs ids (uids, or gids when `group`) from task->real_cred;
 * 1 when they were read and the task is in the initial user namespace (where the syscall's arguments
 * and the cred's ids are the same numbers). */
static __always_inline int sys_cred_ids(struct sys_ids *c, int group)
{
    void *task = (void *)bpf_get_current_task();
    void *cred = 0, *ns = 0;
    u32 level = 1;
    NW_READ(cred, task, OFF_TASK_REAL_CRED);
    if (!cred)
        return 0;
    NW_READ(ns, cred, OFF_CRED_USER_NS);
    if (ns)
        NW_READ(level, ns, OFF_USER_NS_LEVEL);
    if (level != 0)
        return 0;
    if (group) {
        NW_READ(c->r, cred, OFF_CRED_GID);
        NW_READ(c->e, cred, OFF_CRED_EGID);
        NW_READ(c->s, cred, OFF_CRED_SGID);
        NW_READ(c->fs, cred, OFF_CRED_FSGID);
    } else {
        NW_READ(c->r, cred, OFF_CRED_UID);
        NW_READ(c->e, cred, OFF_CRED_EUID);
        NW_READ(c->s, cred, OFF_CRED_SUID);
        NW_READ(c->fs, cred, OFF_CRED_FSUID);
    }
    return 1;
}

/* 1 when the call cannot change any of the caller's ids (kernel/sys.c, whatever the caller's
 * privilege): each requested id is already the one it would set, and so are the ids the call sets
 * as a side effect (the saved and fs ids). When unsure, 0: the call is sent. */
static __always_inline int sys_setid_noop(u32 kind, u32 a, u32 b, u32 c, int group)
{
    struct sys_ids cur = {};
    if (!sys_cred_ids(&cur, group))
        return 0;
    if (kind == SETID_ONE)   /* privileged: all four become a; otherwise effective and fs */
        return cur.r == a && cur.e == a && cur.s == a && cur.fs == a;
    if (kind == SETID_RE) {  /* (a, b) = (real, effective); the saved id follows a changed real or an
                              * effective other than the old real; fs follows the effective */
        u32 ne = b == NW_ID_KEEP ? cur.e : b;
        int sets_saved = a != NW_ID_KEEP || (b != NW_ID_KEEP && b != cur.r);
        return (a == NW_ID_KEEP || a == cur.r) && ne == cur.e && cur.fs == ne && (!sets_saved || cur.s == ne);
    }
    if (kind == SETID_RES)   /* the kernel's own no-op test: an effective id must also be the fs id */
        return (a == NW_ID_KEEP || a == cur.r) && (b == NW_ID_KEEP || (b == cur.e && b == cur.fs)) &&
               (c == NW_ID_KEEP || c == cur.s);
    return a == NW_ID_KEEP || a == cur.fs;   /* SETID_FS: -1 only asks for the current fs id */
}

/* ids[] = (real, effective, saved) as the arguments ask: set*id(x) -> (-1, x, -1),
 * setre*id(r, e) -> (r, e, -1), setres*id(r, e, s) -> (r, e, s), setfs*id(f) -> (-1, f, -1). */
static __always_inline int sys_setid(u32 call, u32 kind, u64 a64, u64 b64, u64 c64)
{
    int group = call == NW_NR_SETGID || call == NW_NR_SETREGID || call == NW_NR_SETRESGID || call == NW_NR_SETFSGID;
    u32 a = a64, b = b64, c = c64;   /* uid_t/gid_t in 8-byte tracepoint fields */
    if (sys_setid_noop(kind, a, b, c, group))   /* most calls end here */
        return 0;
    struct sys_event *e = sys_begin(group ? OP_SETGID : OP_SETUID, call);
    if (!e)
        return 0;
    if (kind == SETID_RE || kind == SETID_RES) {
        e->ids[0] = sys_id(a);
        e->ids[1] = sys_id(b);
        if (kind == SETID_RES)
            e->ids[2] = sys_id(c);
    } else {
        e->ids[1] = sys_id(a);
    }
    return sys_stage(e);
}

/* -- the rest ---------------------------------------------------------------------------------------- */

/* ptrace requests that are sent (uapi/linux/ptrace.h, asm/ptrace-abi.h for x86's register ones). */
static __always_inline int sys_ptrace_wanted(s64 req)
{
    switch (req) {
    case 0:        /* PTRACE_TRACEME */
    case 4:        /* PTRACE_POKETEXT */
    case 5:        /* PTRACE_POKEDATA */
    case 6:        /* PTRACE_POKEUSR */
    case 13:       /* PTRACE_SETREGS */
    case 15:       /* PTRACE_SETFPREGS */
    case 16:       /* PTRACE_ATTACH */
    case 19:       /* PTRACE_SETFPXREGS */
    case 0x4203:   /* PTRACE_SETSIGINFO */
    case 0x4205:   /* PTRACE_SETREGSET */
    case 0x4206:   /* PTRACE_SEIZE */
        return 1;
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ptrace)
{
    if (!sys_ptrace_wanted((s64)args->request))
        return 0;
    struct sys_event *e = sys_begin(OP_PTRACE, NW_NR_PTRACE);
    if (!e)
        return 0;
    e->arg = (s64)args->request;
    e->target_pid = (s32)args->pid;   /* pid_t in a long field */
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_ptrace) { return sys_finish(NW_NR_PTRACE, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_setuid) { return sys_setid(NW_NR_SETUID, SETID_ONE, args->uid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setuid) { return sys_finish(NW_NR_SETUID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setreuid) { return sys_setid(NW_NR_SETREUID, SETID_RE, args->ruid, args->euid, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setreuid) { return sys_finish(NW_NR_SETREUID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setresuid)
{
    return sys_setid(NW_NR_SETRESUID, SETID_RES, args->ruid, args->euid, args->suid);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresuid) { return sys_finish(NW_NR_SETRESUID, args->ret); }
#ifdef NW_HAVE_setfsuid
TRACEPOINT_PROBE(syscalls, sys_enter_setfsuid) { return sys_setid(NW_NR_SETFSUID, SETID_FS, args->uid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setfsuid) { return sys_finish(NW_NR_SETFSUID, args->ret); }
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_setgid) { return sys_setid(NW_NR_SETGID, SETID_ONE, args->gid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setgid) { return sys_finish(NW_NR_SETGID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setregid) { return sys_setid(NW_NR_SETREGID, SETID_RE, args->rgid, args->egid, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setregid) { return sys_finish(NW_NR_SETREGID, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_setresgid)
{
    return sys_setid(NW_NR_SETRESGID, SETID_RES, args->rgid, args->egid, args->sgid);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresgid) { return sys_finish(NW_NR_SETRESGID, args->ret); }
#ifdef NW_HAVE_setfsgid
TRACEPOINT_PROBE(syscalls, sys_enter_setfsgid) { return sys_setid(NW_NR_SETFSGID, SETID_FS, args->gid, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setfsgid) { return sys_finish(NW_NR_SETFSGID, args->ret); }
#endif

/* capset(header, data): struct __user_cap_header_struct {u32 version; int pid;} and one (version 1)
 * or two (versions 2, 3: the low then the high 32 bits) struct __user_cap_data_struct
 * {u32 effective, permitted, inheritable;} (uapi/linux/capability.h). */
TRACEPOINT_PROBE(syscalls, sys_enter_capset)
{
    struct sys_event *e = sys_begin(OP_CAPSET, NW_NR_CAPSET);
    if (!e)
        return 0;
    u32 hdr[2] = {};
    u32 d[6] = {};
    if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)args->header) == 0)
        e->target_pid = (s32)hdr[1];
    if (hdr[0] == NW_CAP_V1)
        bpf_probe_read_user(d, 12, (void *)args->data);
    else
        bpf_probe_read_user(d, 24, (void *)args->data);
    e->caps[0] = d[0] | (u64)d[3] << 32;
    e->caps[1] = d[1] | (u64)d[4] << 32;
    e->caps[2] = d[2] | (u64)d[5] << 32;
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_capset) { return sys_finish(NW_NR_CAPSET, args->ret); }

/* The path of the caller's open file `fd` (its f_path, by the dentry walk of common.h) into out
 * (NW_PATH_MAX bytes); "" for a fd that is not open. */
static __always_inline u32 sys_fd_path(int fd, char *out, u8 *flags)
{
    void *file = nw_fd_file(fd), *vfsmnt = 0, *dentry = 0;
    int cut = 0;
    out[0] = 0;
    if (!file)
        return 0;
    NW_READ(vfsmnt, file, OFF_FILE_F_PATH_MNT);
    NW_READ(dentry, file, OFF_FILE_F_PATH_DENTRY);
    u32 len = nw_dentry_path(dentry, vfsmnt, out, &cut);
    if (cut)
        *flags |= NW_F_TRUNCATED;
    return len;
}

#ifdef NW_HAVE_init_module
/* init_module(image, len, params): the module comes from memory; there is no file to name. */
TRACEPOINT_PROBE(syscalls, sys_enter_init_module)
{
    struct sys_event *e = sys_begin(OP_MODULE_LOAD, NW_NR_INIT_MODULE);
    return e ? sys_stage(e) : 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_init_module) { return sys_finish(NW_NR_INIT_MODULE, args->ret); }
#endif

#ifdef NW_HAVE_finit_module
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
    struct sys_event *e = sys_begin(OP_MODULE_LOAD, NW_NR_FINIT_MODULE);
    if (!e)
        return 0;
    e->arg = (s32)args->flags;
    e->name_len = sys_fd_path((int)args->fd, e->name, &e->h.flags);
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_finit_module) { return sys_finish(NW_NR_FINIT_MODULE, args->ret); }
#endif

/* mount(source, target, fstype, flags, data): the strings as the caller gave them (target may be
 * relative; source and fstype may be NULL: a remount or a bind). */
TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
    struct sys_event *e = sys_begin(OP_MOUNT, NW_NR_MOUNT);
    if (!e)
        return 0;
    e->arg = (s64)args->flags;
    e->name_len = sys_read_str(e->name, NW_SYS_NAME_MAX, args->dir_name, &e->h.flags);
    e->source_len = sys_read_str(e->source, NW_SYS_NAME_MAX, args->dev_name, &e->h.flags);
    e->fstype_len = sys_read_str(e->fstype, NW_FSTYPE_MAX, args->type, &e->h.flags);
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mount) { return sys_finish(NW_NR_MOUNT, args->ret); }

#ifdef NW_HAVE_move_mount
/* move_mount(from_dfd, from_path, to_dfd, to_path, flags): how the new mount API (fsopen, fsconfig,
 * fsmount; or open_tree for a bind) attaches a mount, and what mount(8) from util-linux 2.39 on calls
 * instead of mount(2). Sent as OP_MOUNT (syscall.name tells them apart; arg = its MOVE_MOUNT_* flags):
 * name = to_path, or the path of to_dfd when to_path is ""; for a detached mount (from_path "", the fd
 * of fsmount or open_tree) source and fstype are that mount's own, as mount(2) would have been given
 * them (struct mount.mnt_devname, mnt_sb->s_type->name); otherwise source = from_path as given. */
TRACEPOINT_PROBE(syscalls, sys_enter_move_mount)
{
    struct sys_event *e = sys_begin(OP_MOUNT, NW_NR_MOVE_MOUNT);
    if (!e)
        return 0;
    e->arg = (u32)args->flags;
    e->name_len = sys_read_str(e->name, NW_SYS_NAME_MAX, args->to_pathname, &e->h.flags);
    if (e->name_len == 0)
        e->name_len = sys_fd_path((int)args->to_dfd, e->name, &e->h.flags);
    e->source_len = sys_read_str(e->source, NW_SYS_NAME_MAX, args->from_pathname, &e->h.flags);
    if (e->source_len == 0) {
        void *file = nw_fd_file((int)args->from_dfd), *vfsmnt = 0, *sb = 0, *type = 0;
        const char *devname = 0, *fsname = 0;
        if (file)
            NW_READ(vfsmnt, file, OFF_FILE_F_PATH_MNT);
        if (vfsmnt) {
            NW_READ(devname, vfsmnt, (u64)OFF_MOUNT_MNT_DEVNAME - OFF_MOUNT_MNT);
            NW_READ(sb, vfsmnt, OFF_VFSMOUNT_MNT_SB);
        }
        if (sb)
            NW_READ(type, sb, OFF_SB_S_TYPE);
        if (type)
            NW_READ(fsname, type, OFF_FSTYPE_NAME);
        long n = devname ? bpf_probe_read_kernel_str(e->source, NW_SYS_NAME_MAX, devname) : 0;
        e->source_len = n > 0 ? n - 1 : 0;
        n = fsname ? bpf_probe_read_kernel_str(e->fstype, NW_FSTYPE_MAX, fsname) : 0;
        e->fstype_len = n > 0 ? n - 1 : 0;
        if (n <= 0)
            e->fstype[0] = 0;
    }
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_move_mount) { return sys_finish(NW_NR_MOVE_MOUNT, args->ret); }
#endif

/* umount2(target, flags): the tracepoint is named after the kernel's SYSCALL_DEFINE2(umount, ...). */
TRACEPOINT_PROBE(syscalls, sys_enter_umount)
{
    struct sys_event *e = sys_begin(OP_UMOUNT, NW_NR_UMOUNT2);
    if (!e)
        return 0;
    e->arg = (s32)args->flags;
    e->name_len = sys_read_str(e->name, NW_SYS_NAME_MAX, args->name, &e->h.flags);
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_umount) { return sys_finish(NW_NR_UMOUNT2, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
    struct sys_event *e = sys_begin(OP_UNSHARE, NW_NR_UNSHARE);
    if (!e)
        return 0;
    e->arg = (s64)args->unshare_flags;
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_unshare) { return sys_finish(NW_NR_UNSHARE, args->ret); }

/* setns(fd, nstype): fd is a namespace file (/proc/<pid>/ns/...) or a pidfd; nstype 0 accepts any namespace. */
TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
    struct sys_event *e = sys_begin(OP_SETNS, NW_NR_SETNS);
    if (!e)
        return 0;
    e->arg = (s32)args->flags;
    e->ids[0] = (s32)args->fd;
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setns) { return sys_finish(NW_NR_SETNS, args->ret); }

#ifdef NW_HAVE_bpf
/* bpf(BPF_PROG_LOAD, attr, size): union bpf_attr's prog_type (offset 0) and prog_name (offset 48,
 * NUL-terminated within 16 bytes, or the kernel refuses it), read from the caller's memory; a
 * caller's attr shorter than prog_name's end has none (the kernel zero-fills what is missing). */
TRACEPOINT_PROBE(syscalls, sys_enter_bpf)
{
    if ((int)args->cmd != NW_BPF_PROG_LOAD)
        return 0;
#ifdef NW_AGENT_TGID
    /* The agent's own loads while bcc loads and attaches this program, one function after another:
     * ignore_tgid is filled only once all are loaded. */
    if (bpf_get_current_pid_tgid() >> 32 == NW_AGENT_TGID)
        return 0;
#endif
    struct sys_event *e = sys_begin(OP_BPF_LOAD, NW_NR_BPF);
    if (!e)
        return 0;
    u32 type = 0;
    bpf_probe_read_user(&type, sizeof(type), (void *)args->uattr);
    e->arg = type;
    if ((u32)args->size >= NW_BPF_ATTR_PROG_NAME + NW_BPF_OBJ_NAME_LEN) {
        long n = bpf_probe_read_user_str(e->name, NW_BPF_OBJ_NAME_LEN,
                                         (void *)((u64)args->uattr + NW_BPF_ATTR_PROG_NAME));
        e->name_len = n > 0 ? n - 1 : 0;
        if (n <= 0)
            e->name[0] = 0;
    }
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_bpf) { return sys_finish(NW_NR_BPF, args->ret); }
#endif

#ifdef NW_HAVE_memfd_create
TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create)
{
    struct sys_event *e = sys_begin(OP_MEMFD_CREATE, NW_NR_MEMFD_CREATE);
    if (!e)
        return 0;
    e->arg = (u32)args->flags;
    e->name_len = sys_read_str(e->name, NW_SYS_NAME_MAX, args->uname, &e->h.flags);
    return sys_stage(e);
}
TRACEPOINT_PROBE(syscalls, sys_exit_memfd_create) { return sys_finish(NW_NR_MEMFD_CREATE, args->ret); }
#endif

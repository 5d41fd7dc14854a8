/* NodeWarden process probe: exec, fork, exit.
 *
 * Hooks:
 *  - sched:sched_process_exec: fires after the new image is loaded, so the argv block in the
 *    new mm (mm->arg_start..arg_end) is final; the __data_loc filename is the path given to
 *    execve (relative paths stay relative); beside it the record carries mm->exe_file's own path,
 *    built from its dentry chain across mounts (common.h nw_dentry_path), its facts (memfd,
 *    deleted, overlay upper layer) and the task's cwd.
 *    Here too the runtime rules of the policy run (deny by name or path, drift) for tasks in
 *    containers the agent put in enforce_scope, and host-scoped rules for every other task; a match
 *    in block mode gets SIGKILL before the new program's first instruction (DESIGN.md: measured on
 *    this kernel). A container the agent heard of at create is in enforce_scope from its cgroup's
 *    mkdir on (common.h, nw_cover_pending), so its entrypoint is checked too.
 *    Then, whatever those rules said, the allow-list of a protecting profile (issue 13): a task whose
 *    cgroup has a slot in profile_of is killed when its path is not in allow_exec for that slot.
 *  - raw_tracepoint sched_process_fork: gives both task_structs, so we can tell a new process
 *    (child->pid == child->tgid) from a new thread, which the classic tracepoint cannot.
 *  - sched:sched_process_exit: fires per thread; only the thread-group leader's exit is sent,
 *    with task->exit_code ((status << 8) | signal).
 */

/* The in-kernel exec rules: deny by name, by path (global or per container), and drift.
 * `covered`: the task's cgroup is in enforce_scope (a container); otherwise it is the host's, and only
 * rules with scope host or both apply (deny_name entries of SCOPE_HOST, deny_path under NW_HOST_CGROUP);
 * drift and the per-container paths are containers' only.
 * Returns (enum nw_action) and sets *rule; the caller kills on ACT_KILL. */
static __always_inline u32 exec_verdict(u64 cg, int covered, const char *fname, struct ino_key *exe, u32 *rule)
{
    u64 mode = nw_cfg(CFG_EXEC_MODE);
    if (mode) {
        struct comm_key ck = {};
        bpf_get_current_comm(&ck.comm, sizeof(ck.comm));   /* already the new program's name */
        ck.scope = covered ? SCOPE_CONTAINERS : SCOPE_HOST;
        u32 *idx = deny_name.lookup(&ck);
        if (idx) {
            *rule = (WHY_NAME << 16) | *idx;
            return mode;
        }
        u32 zero = 0;
        struct deny_key *k = deny_scratch.lookup(&zero);
        if (k) {
            long n = bpf_probe_read_kernel_str(k->path, sizeof(k->path), fname);
            if (n > 0) {
                /* the NUL is part of the key: an exact-path rule stored with its NUL matches only itself */
                k->prefixlen = 64 + (u32)n * 8;
                u64 first = covered ? cg : NW_HOST_CGROUP;
                __builtin_memcpy(k->cgroup_id, &first, 8);
                idx = deny_path.lookup(k);
                if (!idx && covered) {
                    __builtin_memset(k->cgroup_id, 0, 8);
                    idx = deny_path.lookup(k);
                }
                if (idx) {
                    *rule = (WHY_PATH << 16) | *idx;
                    return mode;
                }
            }
        }
    }
    u64 drift = nw_cfg(CFG_DRIFT);
    if (covered && drift && exe->ino && drift_inodes.lookup(exe)) {
        *rule = WHY_DRIFT << 16;
        return drift;
    }
    return ACT_NONE;
}

/* 1 when `fname` (the path given to execve) is in the allow-list of `slot` (allow_exec, exact path with its
 * NUL). A path that fills the key (possibly cut: bpf_probe_read_kernel_str cannot say) is never allowed:
 * its first NW_PREFIX_MAX - 1 bytes could equal a shorter allowed path. ProfileKill loads no path that
 * long, so such an exec is killed (agent/enforce/profilekill.py says so). Fails closed. */
static __always_inline int profile_allows(u32 slot, const char *fname)
{
    u32 zero = 0;
    struct deny_key *k = deny_scratch.lookup(&zero);   /* exec_verdict is done with it */
    if (!k)
        return 0;
    long n = bpf_probe_read_kernel_str(k->path, sizeof(k->path), fname);
    if (n <= 0 || n >= (long)sizeof(k->path))
        return 0;
    k->prefixlen = 64 + (u32)n * 8;
    u64 s = slot;
    __builtin_memcpy(k->cgroup_id, &s, 8);
    return allow_exec.lookup(k) != 0;
}

/* What the kernel says runs (mm->exe_file: its path across mounts, its NW_EXE_* facts, its mount's
 * id) and the task's cwd (task->fs->pwd), by the dentry walk of common.h. Why here and not from the
 * tracepoint's filename: that is what execve was given (a relative path, /proc/self/fd/3 for a memfd),
 * not what runs. */
static __always_inline void exec_identity(struct exec_event *e, void *task, void *exe_file)
{
    int cut = 0;
    void *vfsmnt = 0, *dentry = 0, *fs = 0;
    e->exe_flags = 0;
    e->exe_mnt_id = 0;
    e->exe_path_len = 0;
    e->exe_path[0] = 0;
    if (exe_file) {
        e->exe_flags = nw_file_facts(exe_file);
        NW_READ(vfsmnt, exe_file, OFF_FILE_F_PATH_MNT);
        NW_READ(dentry, exe_file, OFF_FILE_F_PATH_DENTRY);
        if (vfsmnt)
            NW_READ(e->exe_mnt_id, vfsmnt, (u64)OFF_MOUNT_MNT_ID - OFF_MOUNT_MNT);
        e->exe_path_len = nw_dentry_path(dentry, vfsmnt, e->exe_path, &cut);
        if (cut)   /* deeper than NW_PATH_DEPTH (the top is missing) or longer than NW_PATH_MAX (the tail) */
            e->exe_flags |= NW_EXE_PATH_CUT;
    }
    cut = 0;
    vfsmnt = 0;
    dentry = 0;
    NW_READ(fs, task, OFF_TASK_FS);
    if (fs) {
        NW_READ(vfsmnt, fs, OFF_FS_PWD_MNT);
        NW_READ(dentry, fs, OFF_FS_PWD_DENTRY);
    }
    e->cwd_len = nw_dentry_path(dentry, vfsmnt, e->cwd, &cut);
    if (cut)
        e->exe_flags |= NW_EXE_CWD_CUT;
    if (e->exe_flags & (NW_EXE_PATH_CUT | NW_EXE_CWD_CUT))
        e->h.flags |= NW_F_TRUNCATED;   /* event.truncated: a rule must not trust a cut path */
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 loc = args->data_loc_filename;
    const char *fname = (const char *)args + (loc & 0xFFFF);
    void *task = (void *)bpf_get_current_task();
    void *mm = 0, *exe_file = 0;
    struct ino_key exe = {};
    NW_READ(mm, task, OFF_TASK_MM);
    if (mm)
        NW_READ(exe_file, mm, OFF_MM_EXE_FILE);
    nw_file_inode(exe_file, &exe);

    /* Rules first, and whatever happens to the record: a full ring buffer must not let a
     * forbidden program run. SIGKILL here lands before its first user instruction. */
    u32 action = ACT_NONE, rule = 0;
    u64 cg = bpf_get_current_cgroup_id();
    int covered = enforce_scope.lookup(&cg) != 0;
    if (covered || nw_cfg(CFG_HOST_RULES))
        action = exec_verdict(cg, covered, fname, &exe, &rule);
    u32 *slot = profile_of.lookup(&cg);
    if (slot && action != ACT_KILL) {   /* a rule's kill keeps its own reason */
        u32 s = *slot;
        if (!profile_allows(s, fname)) {
            action = ACT_KILL;
            rule = (WHY_PROFILE << 16) | (s & 0xFFFF);
        }
    }
    if (action == ACT_KILL)
        bpf_send_signal(9);

    if (nw_skip())
        return 0;
    struct exec_event *e = NW_RESERVE(struct exec_event, PROBE_PROCESS);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_EXEC);
    e->action = action;
    e->rule = rule;
    e->exe_ino = exe.ino;
    e->exe_dev = exe.dev;
    e->_pad = 0;

    long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), fname);
    e->filename_len = n > 0 ? n - 1 : 0;
    if (n == NW_PATH_MAX)
        e->h.flags |= NW_F_TRUNCATED;

    u64 arg_start = 0, arg_end = 0;
    e->args_len = 0;
    if (mm) {
        NW_READ(arg_start, mm, OFF_MM_ARG_START);
        NW_READ(arg_end, mm, OFF_MM_ARG_END);
    }
    if (arg_end > arg_start) {
        u64 len = arg_end - arg_start;
        if (len > NW_ARGS_MAX) {
            len = NW_ARGS_MAX;
            e->h.flags |= NW_F_TRUNCATED;
        }
        len &= (NW_ARGS_MAX * 2 - 1);   /* bound for the verifier; len <= NW_ARGS_MAX already */
        if (len <= NW_ARGS_MAX && bpf_probe_read_user(e->args, len, (void *)arg_start) == 0)
            e->args_len = len;
    }
    exec_identity(e, task, exe_file);
    nw_submit(e);
    return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    void *child = (void *)ctx->args[1];
    u32 child_pid = 0, child_tgid = 0;
    NW_READ(child_pid, child, OFF_TASK_PID);
    NW_READ(child_tgid, child, OFF_TASK_TGID);
    if (child_pid != child_tgid)   /* a new thread, not a new process */
        return 0;
    if (nw_skip())
        return 0;
    struct fork_event *e = NW_RESERVE(struct fork_event, PROBE_PROCESS);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_FORK);
    e->child_pid = child_tgid;
    e->_pad = 0;
    nw_submit(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((u32)pid_tgid != pid_tgid >> 32)   /* a thread, not the group leader */
        return 0;
    if (nw_skip())
        return 0;
    struct exit_event *e = NW_RESERVE(struct exit_event, PROBE_PROCESS);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_EXIT);
    void *task = (void *)bpf_get_current_task();
    e->exit_code = 0;
    NW_READ(e->exit_code, task, OFF_TASK_EXIT_CODE);
    e->_pad = 0;
    nw_submit(e);
    return 0;
}

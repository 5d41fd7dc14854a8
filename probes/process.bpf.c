/* NodeWarden process probe: exec, fork, exit.
 *
 * Hooks:
 *  - sched:sched_process_exec: fires after the new image is loaded, so the argv block in the
 *    new mm (mm->arg_start..arg_end) is final; the __data_loc filename is the path given to
 *    execve (relative paths stay relative: a known gap, no d_path from a tracepoint).
 *  - raw_tracepoint sched_process_fork: gives both task_structs, so we can tell a new process
 *    (child->pid == child->tgid) from a new thread, which the classic tracepoint cannot.
 *  - sched:sched_process_exit: fires per thread; only the thread-group leader's exit is sent,
 *    with task->exit_code ((status << 8) | signal).
 */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    if (nw_skip())
        return 0;
    struct exec_event *e = NW_RESERVE(struct exec_event, PROBE_PROCESS);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_EXEC);

    u32 loc = args->data_loc_filename;
    long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)args + (loc & 0xFFFF));
    e->filename_len = n > 0 ? n - 1 : 0;
    if (n == NW_PATH_MAX)
        e->h.flags |= NW_F_TRUNCATED;

    void *task = (void *)bpf_get_current_task();
    void *mm = 0;
    u64 arg_start = 0, arg_end = 0;
    NW_READ(mm, task, OFF_TASK_MM);
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

/* NodeWarden cgroup probe: cgroup v2 directories as they are created.
 *
 * Hook: cgroup:cgroup_mkdir. Why: the container resolver maps an event's cgroup id (taken in the
 * kernel for every record) to a container through the cgroup's path. Learning that path by
 * stat() after containerd reports the task races with containers that live a few milliseconds;
 * this record reaches user space through the same ring buffer before any event of a process in
 * that cgroup, so the path is always known first.
 * Only the default (v2) hierarchy is sent (root == 0): bpf_get_current_cgroup_id() is a v2 id.
 */

TRACEPOINT_PROBE(cgroup, cgroup_mkdir)
{
    if (args->root != 0)
        return 0;
    u32 loc = args->data_loc_path;
    /* before the record: a full ring buffer must not leave a container outside the exec rules */
    nw_cover_pending(args->id, (void *)args + (loc & 0xFFFF));
    struct cgroup_event *e = NW_RESERVE(struct cgroup_event, PROBE_CGROUP);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_CGROUP_MKDIR);
    e->id = args->id;
    e->level = args->level;
    long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (void *)args + (loc & 0xFFFF));
    e->path_len = n > 0 ? n - 1 : 0;
    if (n == NW_PATH_MAX)
        e->h.flags |= NW_F_TRUNCATED;
    nw_submit(e);
    return 0;
}

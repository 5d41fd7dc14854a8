/* NodeWarden bench probe: one record per getppid() of the target tgid, a fixed offered load
 * for bench/ and the drop-accounting test. Compiled only when the agent is started with the
 * bench family; never in production. */

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    if (!nw_cfg(CFG_TARGET_TGID) || nw_skip())
        return 0;
    struct bench_event *e = NW_RESERVE(struct bench_event, PROBE_BENCH);
    if (!e)
        return 0;
    nw_fill_header(&e->h, OP_BENCH);
    e->counter = 0;
    nw_submit(e);
    return 0;
}

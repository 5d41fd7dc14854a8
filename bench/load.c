/* Workloads for bench/sensors.py, in C so that the loop measures the syscalls and the probes
 * on them, not Python. Prints the elapsed nanoseconds (or, for `rate`, the calls made).
 *   load exec N | open_ro N PATH | open_w N PATH | connect N | rate PER_SECOND SECONDS
 * `rate` waits for a byte on stdin first, so the caller can point the probes at its pid. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cpu_ns(void)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    long long us = 0;
    us += self.ru_utime.tv_sec * 1000000LL + self.ru_utime.tv_usec + self.ru_stime.tv_sec * 1000000LL +
          self.ru_stime.tv_usec;
    us += kids.ru_utime.tv_sec * 1000000LL + kids.ru_utime.tv_usec + kids.ru_stime.tv_sec * 1000000LL +
          kids.ru_stime.tv_usec;
    return us * 1000;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *mode = argv[1];
    long n = atol(argv[2]);
    long long t0 = now_ns(), c0 = cpu_ns();
    if (!strcmp(mode, "exec")) {
        char *const av[] = {"/bin/true", NULL};
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) {
                execv("/bin/true", av);
                _exit(127);
            }
            waitpid(p, NULL, 0);
        }
    } else if (!strcmp(mode, "open_ro") || !strcmp(mode, "open_w")) {
        int flags = !strcmp(mode, "open_ro") ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC);
        for (long i = 0; i < n; i++)
            close(open(argv[3], flags, 0600));
    } else if (!strcmp(mode, "connect")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int srv = socket(AF_INET, SOCK_STREAM, 0);
        bind(srv, (struct sockaddr *)&a, sizeof(a));
        listen(srv, 128);
        getsockname(srv, (struct sockaddr *)&a, &len);
        t0 = now_ns();
        c0 = cpu_ns();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
                return 1;
            int s = accept(srv, NULL, NULL);
            close(c);
            close(s);
        }
    } else if (!strcmp(mode, "rate")) {
        double seconds = atof(argv[3]);
        char go;
        if (read(0, &go, 1) != 1)
            return 1;
        long long start = now_ns(), end = start + (long long)(seconds * 1e9), calls = 0;
        while (now_ns() < end) {
            /* Pace in slices of 1 ms: make this slice's share of calls, then sleep to its end. */
            long long slice_end = now_ns() + 1000000;
            long long due = (long long)((double)(slice_end - start) * n / 1e9) - calls;
            for (long long i = 0; i < due; i++)
                syscall(SYS_getppid);
            calls += due > 0 ? due : 0;
            long long left = slice_end - now_ns();
            if (left > 0) {
                struct timespec ts = {0, left};
                nanosleep(&ts, NULL);
            }
        }
        printf("%lld %lld\n", calls, now_ns() - start);
        return 0;
    } else {
        return 2;
    }
    long long wall = now_ns() - t0;
    printf("%lld %lld\n", wall, cpu_ns() - c0);
    return 0;
}

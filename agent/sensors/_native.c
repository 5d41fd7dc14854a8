/* The compiled decoders of the hot record kinds (file, net, fork, exit): the same events as the
 * pure-Python decoders of agent/sensors/{file,net,process}.py, which stay the reference
 * (tests/unit/test_native_decode.py checks that both give equal events and byte-identical JSON
 * lines on the replay mix and on malformed records).
 *
 * Why C: a decoded event is a frozen slotted dataclass, whose generated __init__ sets each field
 * through object.__setattr__; for a 21-field FileEvent that alone was ~1.3 us of the ~4.6 us the
 * Python decoder took (bench/pipeline.py's mix, issue 17). Here the object is allocated by its type
 * and its slots are filled directly (what __init__ would store, nothing else: the dataclasses have
 * no __post_init__), and the struct is read in place.
 *
 * Layouts mirror probes/events.h (keep in sync with probes/events.h); agent/sensors/native.py
 * compares every offset and size below with agent/sensors/abi.py before it uses this module, and
 * falls back to the Python decoders when they differ. Strings follow agent/sensors/common.py's
 * one rule, `escape`: a backslash is doubled, bytes that are not valid UTF-8 become \xNN.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* struct event_header */
#define HDR_SIZE 64
#define OFF_PID 4
#define OFF_TID 8
#define OFF_PPID 12
#define OFF_UID 16
#define OFF_GID 20
#define OFF_TS 24
#define OFF_CGROUP 32
#define OFF_MNTNS 40
#define OFF_COMM 48
#define COMM_LEN 16
#define F_TRUNCATED 0x01
#define F_CWD 0x04
/* struct file_event */
#define FILE_SIZE 616
#define FOFF_RET 64
#define FOFF_DIRFD 72
#define FOFF_FLAGS 76
#define FOFF_MODE 80
#define FOFF_OUID 84
#define FOFF_OGID 88
#define FOFF_FD 92
#define FOFF_PLEN 96
#define FOFF_P2LEN 100
#define FOFF_PATH 104
#define FOFF_PATH2 360
#define PATH_MAX_ 256
/* struct net_event */
#define NET_SIZE 224
#define NOFF_RET 64
#define NOFF_FD 72
#define NOFF_TYPE 76
#define NOFF_ALEN 78
#define NOFF_BACKLOG 80
#define NOFF_ADDR 88
#define NOFF_FD2 216
#define NOFF_PROTO 220
#define ADDR_MAX_ 128
/* struct fork_event, exit_event */
#define FORK_SIZE 72
#define EXIT_SIZE 72
#define BODY_AT 64
#define OP_NET_SOCKET 24
/* struct exec_event */
#define EXEC_SIZE 1904
#define XOFF_FNLEN 64
#define XOFF_ARGSLEN 68
#define XOFF_FILENAME 72
#define XOFF_ARGS 328
#define XOFF_ACTION 1352
#define XOFF_RULE 1356
#define XOFF_INO 1360
#define XOFF_DEV 1368
#define XOFF_FLAGS 1376 /* a record of an older probe ends here (process.py decode_exec) */
#define XOFF_EXELEN 1380
#define XOFF_MNTID 1384
#define XOFF_CWDLEN 1388
#define XOFF_EXEPATH 1392
#define XOFF_CWD 1648
#define ARGS_MAX_ 1024
#define EXE_UNHASHED 0x01
#define EXE_NLINK0 0x02
#define EXE_IS_ROOT 0x04
#define EXE_INTERNAL 0x08
#define EXE_SHMEM 0x10
#define EXE_UPPER 0x40

#define MAX_FIELDS 24

typedef struct {
    PyTypeObject *type;
    Py_ssize_t n;
    Py_ssize_t offsets[MAX_FIELDS];
} Kind;

enum { K_FILE, K_NET, K_FORK, K_EXIT, K_ENRICHED, K_EXEC, K_PROCINFO, K_COUNT };
static const char *KIND_NAMES[K_COUNT] = {"file", "net", "fork", "exit", "enriched", "exec", "procinfo"};
static const Py_ssize_t KIND_FIELDS[K_COUNT] = {21, 20, 12, 13, 6, 23, 8};

static Kind kinds[K_COUNT];
static PyObject *ops[256];          /* op byte -> agent.events.Op member (new references) */
static PyObject *decode_error;      /* agent.sensors.common.DecodeError */
static PyObject *s_offset;          /* "offset" */
static PyObject *s_empty, *s_ipv4, *s_ipv6, *s_unix, *s_packet, *s_netlink;
static PyObject *s_tcp, *s_udp, *s_raw, *s_sctp, *s_memfd_prefix, *s_deleted_suffix;
static int configured;

static inline uint16_t rd16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* common.escape: a backslash doubled, then UTF-8 with invalid bytes as \xNN */
static PyObject *escape(const unsigned char *s, Py_ssize_t n) {
    if (n == 0) {
        Py_INCREF(s_empty);
        return s_empty;
    }
    if (memchr(s, '\\', (size_t)n) == NULL)
        return PyUnicode_DecodeUTF8((const char *)s, n, "backslashreplace");
    char *buf = PyMem_Malloc((size_t)(2 * n)); /* rare: systemd unit names, odd paths */
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        buf[j++] = (char)s[i];
        if (s[i] == '\\')
            buf[j++] = '\\';
    }
    PyObject *out = PyUnicode_DecodeUTF8(buf, j, "backslashreplace");
    PyMem_Free(buf);
    return out;
}

/* up to the first NUL, escaped (the comm, a unix socket path) */
static PyObject *escape_cstr(const unsigned char *s, Py_ssize_t n) {
    const unsigned char *z = memchr(s, 0, (size_t)n);
    return escape(s, z ? z - s : n);
}

static inline Py_ssize_t clamp(uint64_t len, Py_ssize_t max) { return len > (uint64_t)max ? max : (Py_ssize_t)len; }

/* An instance of a registered dataclass with its slots filled from `v` (references stolen; on
 * failure they are released). NULL entries mean an error was raised while making the values. */
static PyObject *make(Kind *k, PyObject **v) {
    for (Py_ssize_t i = 0; i < k->n; i++) {
        if (v[i] == NULL) {
            for (Py_ssize_t j = 0; j < k->n; j++)
                Py_XDECREF(v[j]);
            return NULL;
        }
    }
    PyObject *obj = k->type->tp_alloc(k->type, 0);
    if (obj == NULL) {
        for (Py_ssize_t j = 0; j < k->n; j++)
            Py_DECREF(v[j]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k->n; i++)
        *(PyObject **)((char *)obj + k->offsets[i]) = v[i];
    /* Out of the cycle collector: what this module makes (events, Enriched, ProcInfo) holds only ints,
     * strs, Op members, tuples of strs and the frozen records of agent.events, none of which can lead
     * back to it, so it can never be in a cycle (CPython untracks tuples and dicts of atoms alike).
     * Tracked, a batch's events and Enricheds alive at once were what each young collection walked
     * and promoted: with 4,096-record batches those collections took ~0.35 us a record (GC callbacks
     * on bench/pipeline.py's mix), 256-record ones ~0.03 (their objects die before one runs). */
    if (PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
    return obj;
}

/* common.check_size; every body is longer than the header, so this checks the header too */
static int check(Py_buffer *b, Py_ssize_t need, const char *what) {
    if (b->len < need) {
        PyErr_Format(decode_error, "%s record of %zd bytes, expected %zd", what, b->len, need);
        return -1;
    }
    return 0;
}

/* The header's values of the last record decoded, each with the object made for it: a process's records
 * come in runs, so its pid, tid, ppid, ids, cgroup, mount namespace and comm are taken again (a new
 * reference to the same immutable int or str, which nothing can tell from an equal new one) instead of
 * made and freed per record; the JSON line's encoding of them is cached by their identity (put_head).
 * Read and replaced with no Python code in between, under the GIL. */
enum { H_PID, H_TID, H_PPID, H_UID, H_GID, H_CGROUP, H_MNTNS, H_COUNT };
static struct { uint64_t raw; PyObject *obj; } last_head[H_COUNT];
static unsigned char last_comm_raw[COMM_LEN];
static PyObject *last_comm;

static PyObject *head_long(int h, uint64_t raw) {
    PyObject *o = last_head[h].obj;
    if (o != NULL && last_head[h].raw == raw) {
        Py_INCREF(o);
        return o;
    }
    o = PyLong_FromUnsignedLongLong(raw);
    if (o != NULL) {
        Py_INCREF(o);
        Py_XSETREF(last_head[h].obj, o); /* the old one is an int: freeing it runs no Python code */
        last_head[h].raw = raw;
    }
    return o;
}

static PyObject *head_comm(const unsigned char *raw) {
    if (last_comm != NULL && memcmp(raw, last_comm_raw, COMM_LEN) == 0) {
        Py_INCREF(last_comm);
        return last_comm;
    }
    PyObject *o = escape_cstr(raw, COMM_LEN);
    if (o != NULL) {
        Py_INCREF(o);
        Py_XSETREF(last_comm, o);
        memcpy(last_comm_raw, raw, COMM_LEN);
    }
    return o;
}

/* the 11 KernelEvent fields (common.header_args) into v[0..10] */
static int header(const unsigned char *p, PyObject *clock, PyObject **v) {
    PyObject *op = ops[p[0]];
    if (op == NULL) {
        PyErr_Format(PyExc_ValueError, "%d is not a valid Op", p[0]);
        return -1;
    }
    PyObject *offset = PyObject_GetAttr(clock, s_offset);
    if (offset == NULL)
        return -1;
    uint64_t boot = rd64(p + OFF_TS);
    PyObject *wall = NULL;
    int overflow = 0;
    long long off = PyLong_CheckExact(offset) ? PyLong_AsLongLongAndOverflow(offset, &overflow) : 0;
    long long sum;
    if (PyLong_CheckExact(offset) && !overflow && !(off == -1 && PyErr_Occurred()) && boot <= (uint64_t)LLONG_MAX &&
        !__builtin_add_overflow((long long)boot, off, &sum)) {
        wall = PyLong_FromLongLong(sum); /* the common case, without two ints made for the sum */
    } else {
        PyErr_Clear();
        PyObject *ts = PyLong_FromUnsignedLongLong(boot);
        wall = ts ? PyNumber_Add(ts, offset) : NULL;
        Py_XDECREF(ts);
    }
    Py_DECREF(offset);
    if (wall == NULL)
        return -1;
    Py_INCREF(op);
    v[0] = op;
    v[1] = wall;
    v[2] = head_long(H_PID, rd32(p + OFF_PID));
    v[3] = head_long(H_TID, rd32(p + OFF_TID));
    v[4] = head_long(H_PPID, rd32(p + OFF_PPID));
    v[5] = head_long(H_UID, rd32(p + OFF_UID));
    v[6] = head_long(H_GID, rd32(p + OFF_GID));
    v[7] = head_long(H_CGROUP, rd64(p + OFF_CGROUP));
    v[8] = head_long(H_MNTNS, rd32(p + OFF_MNTNS));
    v[9] = head_comm(p + OFF_COMM);
    v[10] = PyBool_FromLong(p[1] & F_TRUNCATED);
    return 0;
}

static PyObject *need_config(void) {
    PyErr_SetString(PyExc_RuntimeError, "agent.sensors._native is not configured");
    return NULL;
}

/* Every decoder's start: its two arguments, the record's buffer (held until the caller releases it),
 * its size checked against `need`, the 11 header fields in v[0..10]. 0, or -1 with an error set and
 * nothing held. */
static int begin(PyObject *const *args, Py_ssize_t nargs, const char *what, Py_ssize_t need, Py_buffer *b,
                 PyObject **v) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "decode_%s(buf, clock)", what);
        return -1;
    }
    if (!configured) {
        need_config();
        return -1;
    }
    if (PyObject_GetBuffer(args[0], b, PyBUF_SIMPLE) < 0)
        return -1;
    if (check(b, need, what) < 0 || header(b->buf, args[1], v) < 0) {
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static PyObject *decode_file(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    if (begin(args, nargs, "file", FILE_SIZE, &b, v) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    PyObject *path = escape(p + FOFF_PATH, clamp(rd32(p + FOFF_PLEN), PATH_MAX_));
    PyObject *path2 = escape(p + FOFF_PATH2, clamp(rd32(p + FOFF_P2LEN), PATH_MAX_));
    v[11] = path;
    if (p[1] & F_CWD) { /* path2 carries the cwd of a relative path, not a second path */
        Py_INCREF(s_empty);
        v[12] = s_empty;
        v[20] = path2;
    } else {
        v[12] = path2;
        Py_INCREF(s_empty);
        v[20] = s_empty;
    }
    int64_t ret;
    int32_t dirfd, fd;
    memcpy(&ret, p + FOFF_RET, 8);
    memcpy(&dirfd, p + FOFF_DIRFD, 4);
    memcpy(&fd, p + FOFF_FD, 4);
    v[13] = PyLong_FromLongLong(ret);
    v[14] = PyLong_FromUnsignedLong(rd32(p + FOFF_FLAGS));
    v[15] = PyLong_FromUnsignedLong(rd32(p + FOFF_MODE));
    v[16] = PyLong_FromLong(dirfd);
    v[17] = PyLong_FromLong(fd);
    v[18] = PyLong_FromUnsignedLong(rd32(p + FOFF_OUID));
    v[19] = PyLong_FromUnsignedLong(rd32(p + FOFF_OGID));
    out = make(&kinds[K_FILE], v);
    PyBuffer_Release(&b);
    return out;
}

/* process.decode_exec: argv from its NUL-separated block, the kernel's path with " (deleted)" as
 * d_path writes it, st_dev from the kernel's s_dev (abi.dev_to_user); an older probe's record (no
 * exe_flags..cwd) gets the dataclass defaults, which native.py checks are "", False, False, False, 0, "" */
static PyObject *decode_exec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    if (begin(args, nargs, "exec", XOFF_FLAGS, &b, v) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t fn_len = clamp(rd32(p + XOFF_FNLEN), PATH_MAX_), args_len = clamp(rd32(p + XOFF_ARGSLEN), ARGS_MAX_);
    v[11] = escape(p + XOFF_FILENAME, fn_len);
    /* split_args: no block, no argv; one trailing NUL dropped; each argument escaped */
    const unsigned char *blk = p + XOFF_ARGS;
    Py_ssize_t n = args_len;
    if (n == 0) {
        v[12] = PyTuple_New(0);
    } else {
        if (blk[n - 1] == 0)
            n--;
        Py_ssize_t count = 1;
        for (Py_ssize_t i = 0; i < n; i++)
            count += blk[i] == 0;
        PyObject *argv = PyTuple_New(count);
        Py_ssize_t start = 0, k = 0;
        for (Py_ssize_t i = 0; argv != NULL && i <= n; i++) {
            if (i == n || blk[i] == 0) {
                PyObject *a = escape(blk + start, i - start);
                if (a == NULL) {
                    Py_CLEAR(argv);
                    break;
                }
                PyTuple_SET_ITEM(argv, k++, a);
                start = i + 1;
            }
        }
        v[12] = argv;
    }
    v[13] = PyLong_FromUnsignedLong(rd32(p + XOFF_ACTION));
    v[14] = PyLong_FromUnsignedLong(rd32(p + XOFF_RULE));
    v[15] = PyLong_FromUnsignedLongLong(rd64(p + XOFF_INO));
    uint64_t kdev = rd32(p + XOFF_DEV), major = kdev >> 20, minor = kdev & 0xFFFFF;
    v[16] = PyLong_FromUnsignedLongLong((minor & 0xFF) | (major << 8) | ((minor & ~(uint64_t)0xFF) << 12));
    if (b.len < EXEC_SIZE) {
        Py_INCREF(s_empty); v[17] = s_empty;
        v[18] = PyBool_FromLong(0); v[19] = PyBool_FromLong(0); v[20] = PyBool_FromLong(0);
        v[21] = PyLong_FromLong(0);
        Py_INCREF(s_empty); v[22] = s_empty;
    } else {
        uint32_t flags = rd32(p + XOFF_FLAGS);
        PyObject *path = escape(p + XOFF_EXEPATH, clamp(rd32(p + XOFF_EXELEN), PATH_MAX_));
        int deleted = (flags & EXE_NLINK0) || (flags & (EXE_UNHASHED | EXE_IS_ROOT)) == EXE_UNHASHED;
        int memfd = 0;
        if (path != NULL && (flags & (EXE_INTERNAL | EXE_SHMEM)) == (EXE_INTERNAL | EXE_SHMEM)) {
            Py_ssize_t r = PyUnicode_Tailmatch(path, s_memfd_prefix, 0, PY_SSIZE_T_MAX, -1);
            if (r < 0)
                Py_CLEAR(path);
            memfd = r > 0;
        }
        if (path != NULL && deleted && PyUnicode_GET_LENGTH(path) > 0) { /* as d_path (/proc/<pid>/exe) writes it */
            PyObject *longer = PyUnicode_Concat(path, s_deleted_suffix);
            Py_DECREF(path);
            path = longer;
        }
        v[17] = path;
        v[18] = PyBool_FromLong(memfd);
        v[19] = PyBool_FromLong(deleted);
        v[20] = PyBool_FromLong(flags & EXE_UPPER);
        v[21] = PyLong_FromUnsignedLong(rd32(p + XOFF_MNTID));
        v[22] = escape(p + XOFF_CWD, clamp(rd32(p + XOFF_CWDLEN), PATH_MAX_));
    }
    out = make(&kinds[K_EXEC], v);
    PyBuffer_Release(&b);
    return out;
}

static PyObject *af_name(unsigned family) {
    switch (family) {
    case AF_INET: Py_INCREF(s_ipv4); return s_ipv4;
    case AF_INET6: Py_INCREF(s_ipv6); return s_ipv6;
    case AF_UNIX: Py_INCREF(s_unix); return s_unix;
    case AF_PACKET: Py_INCREF(s_packet); return s_packet;
    case AF_NETLINK: Py_INCREF(s_netlink); return s_netlink;
    }
    return PyUnicode_FromFormat("af%u", family);
}

/* net.parse_sockaddr: (family, address, port) into f, a, port */
static int sockaddr(const unsigned char *raw, Py_ssize_t n, PyObject **f, PyObject **a, long *port) {
    *port = 0;
    if (n < 2) {
        Py_INCREF(s_empty); *f = s_empty;
        Py_INCREF(s_empty); *a = s_empty;
        return 0;
    }
    unsigned family = rd16(raw);
    char text[INET6_ADDRSTRLEN];
    if ((family == AF_INET && n >= 8) || (family == AF_INET6 && n >= 24)) {
        *port = (raw[2] << 8) | raw[3];
        if (inet_ntop((int)family, raw + (family == AF_INET ? 4 : 8), text, sizeof text) == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        *f = af_name(family);
        *a = PyUnicode_FromString(text);
        return 0;
    }
    if (family == AF_UNIX) {
        *f = af_name(family);
        const unsigned char *path = raw + 2;
        Py_ssize_t len = n - 2;
        if (len > 0 && path[0] == 0) { /* abstract namespace: shown with a leading @ like ss(8) does */
            PyObject *name = escape_cstr(path + 1, len - 1);
            *a = name ? PyUnicode_FromFormat("@%U", name) : NULL;
            Py_XDECREF(name);
        } else {
            *a = escape_cstr(path, len);
        }
        return 0;
    }
    if (family == AF_PACKET || family == AF_NETLINK) {
        *f = af_name(family);
    } else {
        *f = PyUnicode_FromFormat("af%u", family);
    }
    Py_INCREF(s_empty);
    *a = s_empty;
    return 0;
}

static PyObject *transport(PyObject *family, unsigned sock_type) {
    PyObject *t = s_empty;
    if (family == s_unix) {
        t = s_unix;
    } else if (family == s_ipv4 || family == s_ipv6 || family == s_empty) {
        switch (sock_type) {
        case 1: t = s_tcp; break;
        case 2: t = s_udp; break;
        case 3: t = s_raw; break;
        case 5: t = s_sctp; break;
        }
    } else if (sock_type == 3) { /* packet, netlink...: a SOCK_DGRAM there is not UDP */
        t = s_raw;
    }
    Py_INCREF(t);
    return t;
}

static PyObject *decode_net(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    if (begin(args, nargs, "net", NET_SIZE, &b, v) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    const unsigned char *raw = p + NOFF_ADDR;
    Py_ssize_t n = clamp(rd16(p + NOFF_ALEN), ADDR_MAX_);
    PyObject *family = NULL, *address = NULL;
    long port = 0;
    if (p[0] == OP_NET_SOCKET) { /* the 2-byte family alone (net._socket_family) */
        if (n < 2) {
            Py_INCREF(s_empty);
            family = s_empty;
        } else {
            family = af_name(rd16(raw));
        }
        Py_INCREF(s_empty);
        address = s_empty;
    } else if (sockaddr(raw, n, &family, &address, &port) < 0) {
        for (int i = 0; i < 11; i++)
            Py_XDECREF(v[i]);
        goto done;
    }
    int64_t ret;
    int32_t fd, fd2;
    memcpy(&ret, p + NOFF_RET, 8);
    memcpy(&fd, p + NOFF_FD, 4);
    memcpy(&fd2, p + NOFF_FD2, 4);
    v[11] = PyLong_FromLongLong(ret);
    v[12] = PyLong_FromLong(fd);
    v[13] = family;
    v[14] = family ? transport(family, rd16(p + NOFF_TYPE)) : NULL;
    v[15] = address;
    v[16] = PyLong_FromLong(port);
    v[17] = PyLong_FromUnsignedLong(rd32(p + NOFF_BACKLOG));
    v[18] = PyLong_FromLong(fd2);
    v[19] = PyLong_FromUnsignedLong(rd32(p + NOFF_PROTO));
    out = make(&kinds[K_NET], v);
done:
    PyBuffer_Release(&b);
    return out;
}

static PyObject *decode_fork(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    if (begin(args, nargs, "fork", FORK_SIZE, &b, v) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    v[11] = PyLong_FromUnsignedLong(rd32(p + BODY_AT));
    out = make(&kinds[K_FORK], v);
    PyBuffer_Release(&b);
    return out;
}

static PyObject *decode_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer b;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    if (begin(args, nargs, "exit", EXIT_SIZE, &b, v) < 0)
        return NULL;
    const unsigned char *p = b.buf;
    int32_t code;
    memcpy(&code, p + BODY_AT, 4);
    /* task->exit_code is a wait status: (exit status << 8) | terminating signal */
    v[11] = PyLong_FromLong((long)(((int64_t)code >> 8) & 0xFF));
    v[12] = PyLong_FromLong((long)(code & 0x7F));
    out = make(&kinds[K_EXIT], v);
    PyBuffer_Release(&b);
    return out;
}

/* enriched(event, process, parent, container, ancestors, path_resolved): agent.events.Enriched,
 * made as decode makes events (its dataclass __init__ costs ~0.45 us; this ~0.05 us) */
static PyObject *enriched(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!configured)
        return need_config();
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "enriched() takes the 6 fields of Enriched");
        return NULL;
    }
    PyObject *v[MAX_FIELDS];
    for (Py_ssize_t i = 0; i < 6; i++) {
        Py_INCREF(args[i]);
        v[i] = args[i];
    }
    return make(&kinds[K_ENRICHED], v);
}

/* ---- the flat record of a kernel event (agent/outputs/record.py from_enriched, which stays the
 * reference: tests/unit/test_native_decode.py and test_flatten_fragments.py compare every key, in
 * order). Only FileEvent, NetEvent, ForkEvent and ExitEvent (9 of 10 events); anything else, or a
 * value out of the ordinary (a timestamp past int64), returns None and the caller runs the Python
 * flattener. The process and container fragments are made by Python (_process_part,
 * _container_part) and cached here by the identity of what they were made from. */

enum {
    KEY_NAME, KEY_TS, KEY_SEV, KEY_PID, KEY_TID, KEY_PPID, KEY_COMM, KEY_UID, KEY_GID, KEY_CGROUP, KEY_MNTNS,
    KEY_ANC_NAME, KEY_ANC_EXE, KEY_RESOLVED, KEY_TRUNC,
    KEY_FPATH, KEY_RET, KEY_OFLAGS, KEY_FMODE, KEY_FTARGET, KEY_FOWNER, KEY_FGROUP, KEY_FLINK, KEY_FDESC,
    KEY_NTYPE, KEY_NTRANSPORT, KEY_PEER_ADDR, KEY_PEER_PORT, KEY_LOCAL_ADDR, KEY_LOCAL_PORT, KEY_BACKLOG,
    KEY_NFD, KEY_NPROTO, KEY_DUPFD, KEY_CHILD, KEY_EXIT_CODE, KEY_EXIT_SIG,
    KEY_EXE, KEY_CMD, KEY_START, KEY_PEXE, KEY_PCMD,
    KEY_ARGS, KEY_ARGC, KEY_INO, KEY_DEV, KEY_KPATH, KEY_MNTID, KEY_CWD, KEY_MEMFD, KEY_DELETED, KEY_UPPER,
    KEY_COUNT
};
static const char *KEY_TEXT[KEY_COUNT] = {
    "event.name", "timestamp", "event.severity", "process.pid", "process.thread.id", "process.parent_pid",
    "process.name", "user.id", "group.id", "cgroup.id", "process.mount_ns",
    "process.ancestors.name", "process.ancestors.executable.path", "file.resolved_path", "event.truncated",
    "file.path", "syscall.return", "file.open.flags", "file.mode", "file.target.path", "file.owner.id",
    "file.group.id", "file.link.target", "file.descriptor",
    "network.type", "network.transport", "network.peer.address", "network.peer.port", "network.local.address",
    "network.local.port", "network.listen.backlog", "network.fd", "network.protocol", "network.dup.new_fd",
    "process.child.pid", "process.exit.code", "process.exit.signal",
    "process.executable.path", "process.command_line", "process.start_time", "process.parent.executable.path",
    "process.parent.command_line",
    "process.args", "process.args_count", "process.executable.inode", "process.executable.device",
    "process.executable.kernel_path", "process.executable.mount_id", "process.working_directory",
    "process.executable.memfd", "process.executable.deleted", "process.executable.upper_layer",
};
static PyObject *keys[KEY_COUNT];
static PyObject *s_info;
static PyObject *names[256];         /* op -> event.name */
static PyObject *proc_part_fn, *container_part_fn, *ts_head_fn, *python_flatten;

/* event field positions (dataclass order), shared by every KernelEvent */
enum { F_OP, F_TS, F_PID, F_TID, F_PPID, F_UID, F_GID, F_CGROUP, F_MNTNS, F_COMM, F_TRUNC };
/* Enriched */
enum { E_EVENT, E_PROCESS, E_PARENT, E_CONTAINER, E_ANCESTORS, E_RESOLVED };

#define SLOT(obj, kind, i) (*(PyObject **)((char *)(obj) + kinds[kind].offsets[i]))

#define PART_SLOTS 4096
typedef struct { PyObject *p, *parent, *chain, *part; Py_ssize_t held; } ProcSlot;  /* part: _process_part's
 * tuple; held: what the slot keeps alive, in bytes (held_bytes) */
typedef struct { PyObject *c, *part; } ContSlot;                   /* part: _container_part's keys */
static ProcSlot proc_slots[PART_SLOTS];
static ContSlot cont_slots[PART_SLOTS];

/* every slot of an event (of kind k) and of its Enriched set: an object made without its __init__ is
 * left to the Python flattener, which says what is missing */
static int all_set(PyObject *en, PyObject *ev, int k) {
    for (Py_ssize_t i = 0; i < kinds[K_ENRICHED].n; i++)
        if (*(PyObject **)((char *)en + kinds[K_ENRICHED].offsets[i]) == NULL)
            return 0;
    for (Py_ssize_t i = 0; i < kinds[k].n; i++)
        if (*(PyObject **)((char *)ev + kinds[k].offsets[i]) == NULL)
            return 0;
    return 1;
}

static inline size_t mix_ptr(const void *a) { uintptr_t x = (uintptr_t)a; return (size_t)((x >> 4) ^ (x >> 16)); }

/* A fragment is cached only up to this size (characters of its strings; bytes of a JSON fragment): the
 * caches' 4,096 slots then hold at most ~16 MB each however long the command lines a node runs (a
 * replay file or a fuzzer's records of 1 KB escaped arguments had them grow the agent by ~130 MB).
 * Common ones fit: two 1,024-byte argument blocks (ARGS_MAX), a process's and its parent's, in ASCII. */
#define FRAGMENT_CACHE_MAX 4096

static Py_ssize_t text_size(PyObject *o) {
    if (PyUnicode_Check(o))
        return PyUnicode_GET_LENGTH(o);
    Py_ssize_t n = 0;
    if (PyList_Check(o))
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++)
            n += PyUnicode_Check(PyList_GET_ITEM(o, i)) ? PyUnicode_GET_LENGTH(PyList_GET_ITEM(o, i)) : 8;
    return n + 8;
}

/* The bytes a cached process fragment keeps alive are bounded too, not only its slots: a slot holds its
 * process, parent and ancestry (their ids must not be reused while it is cached), and with them their
 * argv, which the fragment's own size does not count (an ancestor's is not in it at all). Records that
 * exec a new process each time with 1 KB arguments of escaped bytes (tests/unit/native_leakcheck.py
 * --mode malformed) had the two caches keep ~54 MB of dead processes alive; past PART_BYTES_MAX a cache
 * forgets every entry, as record._process_part's cache does at its own bound (the same count). */
#define PART_BYTES_MAX (8 << 20)
#define OBJ_BYTES 56 /* a str's or a small object's header, about */

static Py_ssize_t str_bytes(PyObject *o) {
    return PyUnicode_Check(o) ? OBJ_BYTES + PyUnicode_GET_LENGTH(o) * PyUnicode_KIND(o) : OBJ_BYTES;
}

static Py_ssize_t procinfo_bytes(PyObject *pi) {
    if (Py_TYPE(pi) != kinds[K_PROCINFO].type)
        return OBJ_BYTES;
    Py_ssize_t n = 2 * OBJ_BYTES; /* the object and its argv tuple */
    for (int f = 2; f <= 7; f++) {
        PyObject *v = SLOT(pi, K_PROCINFO, f);
        if (v == NULL)
            continue;
        if (PyTuple_Check(v))
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++)
                n += str_bytes(PyTuple_GET_ITEM(v, i));
        else if (PyUnicode_Check(v))
            n += str_bytes(v);
    }
    return n;
}

/* what a slot holding (p, parent, chain) keeps alive besides its fragment (record._held_bytes) */
static Py_ssize_t held_bytes(PyObject *p, PyObject *parent, PyObject *chain) {
    Py_ssize_t n = procinfo_bytes(p) + procinfo_bytes(parent) + OBJ_BYTES;
    if (PyTuple_Check(chain))
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(chain); i++)
            n += procinfo_bytes(PyTuple_GET_ITEM(chain, i));
    return n;
}

static Py_ssize_t proc_slots_bytes;

static void clear_proc_slots(void) {
    for (int i = 0; i < PART_SLOTS; i++) {
        Py_CLEAR(proc_slots[i].p); Py_CLEAR(proc_slots[i].parent); Py_CLEAR(proc_slots[i].chain);
        Py_CLEAR(proc_slots[i].part);
        proc_slots[i].held = 0;
    }
    proc_slots_bytes = 0;
}

/* _process_part's (p, parent, chain, keys, names, exes) of a process context (a new reference), from its
 * cache slot when there */
static PyObject *proc_part(PyObject *p, PyObject *parent, PyObject *chain) {
    size_t h = (mix_ptr(p) * 31 + mix_ptr(parent) * 7 + mix_ptr(chain)) & (PART_SLOTS - 1);
    ProcSlot *s = &proc_slots[h];
    if (s->part != NULL && s->p == p && s->parent == parent && s->chain == chain) {
        Py_INCREF(s->part);
        return s->part;
    }
    PyObject *part = PyObject_CallFunctionObjArgs(proc_part_fn, p, parent, chain, NULL);
    if (part == NULL)
        return NULL;
    if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 6 || !PyDict_Check(PyTuple_GET_ITEM(part, 3)) ||
        !PyList_Check(PyTuple_GET_ITEM(part, 4)) || !PyList_Check(PyTuple_GET_ITEM(part, 5))) {
        Py_DECREF(part);
        PyErr_SetString(PyExc_TypeError, "_process_part must return (p, parent, chain, keys, names, exes)");
        return NULL;
    }
    Py_ssize_t size = text_size(PyTuple_GET_ITEM(part, 4)) + text_size(PyTuple_GET_ITEM(part, 5));
    PyObject *k, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(PyTuple_GET_ITEM(part, 3), &pos, &k, &val))
        size += text_size(val);
    if (size > FRAGMENT_CACHE_MAX)
        return part; /* too big to keep: made again for each event of this context */
    /* the fragment's strings (size is in characters: a byte each when ASCII) and the dict and lists */
    Py_ssize_t held = size + 8 * OBJ_BYTES + held_bytes(p, parent, chain);
    if (proc_slots_bytes - s->held + held > PART_BYTES_MAX)
        clear_proc_slots(); /* PART_BYTES_MAX says why; the caller holds p, parent, chain and part */
    /* the slot holds its objects: their ids are not reused while cached */
    Py_INCREF(p); Py_INCREF(parent); Py_INCREF(chain); Py_INCREF(part);
    PyObject *op = s->p, *opar = s->parent, *och = s->chain, *opart = s->part;
    s->p = p; s->parent = parent; s->chain = chain; s->part = part;
    proc_slots_bytes += held - s->held;
    s->held = held;
    Py_XDECREF(op); Py_XDECREF(opar); Py_XDECREF(och); Py_XDECREF(opart);
    return part;
}

static PyObject *container_part(PyObject *c) {
    size_t h = mix_ptr(c) & (PART_SLOTS - 1);
    ContSlot *s = &cont_slots[h];
    if (s->part != NULL && s->c == c)
        return s->part;
    PyObject *part = PyObject_CallOneArg(container_part_fn, c);
    if (part == NULL)
        return NULL;
    if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 2 || !PyDict_Check(PyTuple_GET_ITEM(part, 1))) {
        Py_DECREF(part);
        PyErr_SetString(PyExc_TypeError, "_container_part must return (c, keys)");
        return NULL;
    }
    Py_INCREF(c);
    PyObject *oc = s->c, *opart = s->part;
    s->c = c; s->part = part;
    Py_XDECREF(oc); Py_XDECREF(opart);
    return part;
}

/* record.rfc3339: the second's text from Python (time.strftime, cached there too), the rest here */
/* a small cache of seconds' texts: an event's second and its process's start second alternate */
#define HEADS 64
static int64_t head_sec[HEADS];
static char head_text[HEADS][48];
static Py_ssize_t head_len[HEADS];

static void clear_heads(void) {
    for (int i = 0; i < HEADS; i++)
        head_sec[i] = -1;
}

/* record.rfc3339's text of ts into out (at least 64 bytes), its length in *n: 0, 1 when the value is not
 * one this writes (the Python flattener says what it makes of it), -1 with an error */
static int ts_text(PyObject *ts, char *out, Py_ssize_t *n) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(ts, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0)
        return 1;
    int64_t sec = v / 1000000000, ns = v % 1000000000;
    int h = (int)(sec & (HEADS - 1));
    if (sec != head_sec[h]) {
        PyObject *secobj = PyLong_FromLongLong(sec);
        PyObject *head = secobj ? PyObject_CallOneArg(ts_head_fn, secobj) : NULL;
        Py_XDECREF(secobj);
        if (head == NULL)
            return -1;
        Py_ssize_t len;
        const char *t = PyUnicode_Check(head) ? PyUnicode_AsUTF8AndSize(head, &len) : NULL;
        if (t == NULL || len >= (Py_ssize_t)sizeof head_text[h] - 16) {
            Py_DECREF(head);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "the second's text must be a short str");
            return -1;
        }
        memcpy(head_text[h], t, (size_t)len);
        head_len[h] = len;
        head_sec[h] = sec;
        Py_DECREF(head);
    }
    memcpy(out, head_text[h], (size_t)head_len[h]);
    char *d = out + head_len[h];
    d[0] = '.';
    for (int i = 9; i >= 1; i--, ns /= 10) /* ".%09dZ", without snprintf's cost */
        d[i] = (char)('0' + ns % 10);
    d[10] = 'Z';
    *n = head_len[h] + 11;
    return 0;
}

static PyObject *rfc3339(PyObject *ts) {
    char buf[96];
    Py_ssize_t n;
    int r = ts_text(ts, buf, &n);
    if (r)
        return r < 0 ? NULL : Py_None; /* Py_None borrowed: compared, never released (as before) */
    return PyUnicode_DecodeASCII(buf, n, NULL);
}

static int put(PyObject *rec, int key, PyObject *val) {
    if (val == NULL) { /* an event made without its __init__: a slot never set */
        PyErr_Format(PyExc_AttributeError, "no value for %s", KEY_TEXT[key]);
        return -1;
    }
    return PyDict_SetItem(rec, keys[key], val);
}

static inline int put_new(PyObject *rec, int key, PyObject *val) {
    if (val == NULL)
        return -1;
    int r = PyDict_SetItem(rec, keys[key], val);
    Py_DECREF(val);
    return r;
}

static int merge(PyObject *rec, PyObject *part) {
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(part, &pos, &k, &v))
        if (PyDict_SetItem(rec, k, v) < 0)
            return -1;
    return 0;
}

/* record.py's `ev.fd >= 0` of an int of any size (a PyLong_AsLong would raise on a big one made in
 * Python); not an int: 0, the key left out as for a negative one. -1 with an error set. */
static int fd_nonneg(PyObject *fd) {
    if (!PyLong_Check(fd))
        return 0;
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(fd, &overflow);
    if (v == -1 && !overflow && PyErr_Occurred())
        return -1;
    return overflow > 0 || (!overflow && v >= 0);
}

static int file_keys(PyObject *rec, PyObject *ev, int op) {
    if (put(rec, KEY_FPATH, SLOT(ev, K_FILE, 11)) < 0 || put(rec, KEY_RET, SLOT(ev, K_FILE, 13)) < 0)
        return -1;
    switch (op) {
    case 10: /* FILE_OPEN */
        if (put(rec, KEY_OFLAGS, SLOT(ev, K_FILE, 14)) < 0 || put(rec, KEY_FMODE, SLOT(ev, K_FILE, 15)) < 0)
            return -1;
        break;
    case 12: /* FILE_RENAME */
        if (put(rec, KEY_FTARGET, SLOT(ev, K_FILE, 12)) < 0)
            return -1;
        break;
    case 13: /* FILE_CHMOD */
        if (put(rec, KEY_FMODE, SLOT(ev, K_FILE, 15)) < 0)
            return -1;
        break;
    case 14: /* FILE_CHOWN */
        if (put(rec, KEY_FOWNER, SLOT(ev, K_FILE, 18)) < 0 || put(rec, KEY_FGROUP, SLOT(ev, K_FILE, 19)) < 0)
            return -1;
        break;
    case 15: case 16: /* FILE_SYMLINK, FILE_LINK */
        if (put(rec, KEY_FLINK, SLOT(ev, K_FILE, 12)) < 0)
            return -1;
        break;
    }
    int nonneg = fd_nonneg(SLOT(ev, K_FILE, 17));
    if (nonneg < 0 || (nonneg && put(rec, KEY_FDESC, SLOT(ev, K_FILE, 17)) < 0))
        return -1;
    return 0;
}

static int net_keys(PyObject *rec, PyObject *ev, int op) {
    if (put(rec, KEY_NTYPE, SLOT(ev, K_NET, 13)) < 0 || put(rec, KEY_NTRANSPORT, SLOT(ev, K_NET, 14)) < 0 ||
        put(rec, KEY_RET, SLOT(ev, K_NET, 11)) < 0)
        return -1;
    if (op == 20 || op == 21 || op == 26 || op == 25) { /* connect, accept, sendto, dup: the peer's */
        if (put(rec, KEY_PEER_ADDR, SLOT(ev, K_NET, 15)) < 0 || put(rec, KEY_PEER_PORT, SLOT(ev, K_NET, 16)) < 0)
            return -1;
    } else if (op != OP_NET_SOCKET) { /* a new socket has no address yet */
        if (put(rec, KEY_LOCAL_ADDR, SLOT(ev, K_NET, 15)) < 0 || put(rec, KEY_LOCAL_PORT, SLOT(ev, K_NET, 16)) < 0)
            return -1;
    }
    if (op == 23) { /* listen */
        if (put(rec, KEY_BACKLOG, SLOT(ev, K_NET, 17)) < 0)
            return -1;
    } else if (op == OP_NET_SOCKET) {
        if (put(rec, KEY_NFD, SLOT(ev, K_NET, 11)) < 0 || put(rec, KEY_NPROTO, SLOT(ev, K_NET, 19)) < 0)
            return -1;
    } else if (op == 25) { /* dup */
        if (put(rec, KEY_NFD, SLOT(ev, K_NET, 12)) < 0 || put(rec, KEY_DUPFD, SLOT(ev, K_NET, 18)) < 0)
            return -1;
    }
    return 0;
}

static PyObject *flat_or_none(PyObject *en) {
    if (Py_TYPE(en) != kinds[K_ENRICHED].type)
        Py_RETURN_NONE;
    PyObject *ev = SLOT(en, K_ENRICHED, E_EVENT);
    if (ev == NULL)
        Py_RETURN_NONE;
    PyTypeObject *t = Py_TYPE(ev);
    int kind = t == kinds[K_FILE].type ? K_FILE : t == kinds[K_NET].type ? K_NET
             : t == kinds[K_FORK].type ? K_FORK : t == kinds[K_EXIT].type ? K_EXIT : -1;
    if (kind < 0 || !all_set(en, ev, kind))
        Py_RETURN_NONE;
    long op = PyLong_AsLong(SLOT(ev, kind, F_OP));
    if (op == -1 && PyErr_Occurred())
        return NULL;
    if (op < 0 || op > 255 || names[op] == NULL)
        Py_RETURN_NONE;
    PyObject *ts = rfc3339(SLOT(ev, kind, F_TS));
    if (ts == NULL)
        return NULL;
    if (ts == Py_None)
        Py_RETURN_NONE;
    PyObject *rec = _PyDict_NewPresized(32);
    if (rec == NULL) {
        Py_DECREF(ts);
        return NULL;
    }
    if (put(rec, KEY_NAME, names[op]) < 0 || put_new(rec, KEY_TS, ts) < 0 || put(rec, KEY_SEV, s_info) < 0 ||
        put(rec, KEY_PID, SLOT(ev, kind, F_PID)) < 0 || put(rec, KEY_TID, SLOT(ev, kind, F_TID)) < 0 ||
        put(rec, KEY_PPID, SLOT(ev, kind, F_PPID)) < 0 || put(rec, KEY_COMM, SLOT(ev, kind, F_COMM)) < 0 ||
        put(rec, KEY_UID, SLOT(ev, kind, F_UID)) < 0 || put(rec, KEY_GID, SLOT(ev, kind, F_GID)) < 0 ||
        put(rec, KEY_CGROUP, SLOT(ev, kind, F_CGROUP)) < 0 || put(rec, KEY_MNTNS, SLOT(ev, kind, F_MNTNS)) < 0)
        goto fail;
    PyObject *p = SLOT(en, K_ENRICHED, E_PROCESS), *parent = SLOT(en, K_ENRICHED, E_PARENT);
    PyObject *chain = SLOT(en, K_ENRICHED, E_ANCESTORS);
    int has_chain = PyObject_IsTrue(chain);
    if (has_chain < 0)
        goto fail;
    if (p != Py_None || parent != Py_None || has_chain) {
        /* a new reference, held while used: an allocation below may run a collection, and so another
         * thread that replaces the cache slot (record.flatten is called from other stages' threads too) */
        PyObject *part = proc_part(p, parent, chain);
        if (part == NULL)
            goto fail;
        int bad = merge(rec, PyTuple_GET_ITEM(part, 3)) < 0;
        if (!bad && has_chain) {
            PyObject *n = PyTuple_GET_ITEM(part, 4), *x = PyTuple_GET_ITEM(part, 5);
            bad = put_new(rec, KEY_ANC_NAME, PyList_GetSlice(n, 0, PyList_GET_SIZE(n))) < 0 ||
                  put_new(rec, KEY_ANC_EXE, PyList_GetSlice(x, 0, PyList_GET_SIZE(x))) < 0;
        }
        Py_DECREF(part);
        if (bad)
            goto fail;
    }
    PyObject *resolved = SLOT(en, K_ENRICHED, E_RESOLVED);
    int r = PyObject_IsTrue(resolved);
    if (r < 0 || (r && put(rec, KEY_RESOLVED, resolved) < 0))
        goto fail;
    r = PyObject_IsTrue(SLOT(ev, kind, F_TRUNC));
    if (r < 0 || (r && put(rec, KEY_TRUNC, Py_True) < 0))
        goto fail;
    switch (kind) {
    case K_FILE:
        if (file_keys(rec, ev, (int)op) < 0)
            goto fail;
        break;
    case K_NET:
        if (net_keys(rec, ev, (int)op) < 0)
            goto fail;
        break;
    case K_FORK:
        if (put(rec, KEY_CHILD, SLOT(ev, K_FORK, 11)) < 0)
            goto fail;
        break;
    case K_EXIT: {
        PyObject *sig = SLOT(ev, K_EXIT, 12);
        if (put(rec, KEY_EXIT_CODE, SLOT(ev, K_EXIT, 11)) < 0)
            goto fail;
        r = PyObject_IsTrue(sig);
        if (r < 0 || (r && put(rec, KEY_EXIT_SIG, sig) < 0))
            goto fail;
        break;
    }
    }
    PyObject *c = SLOT(en, K_ENRICHED, E_CONTAINER);
    if (c != Py_None) {
        PyObject *part = container_part(c);
        if (part == NULL)
            goto fail;
        Py_INCREF(part); /* held while used, as the process part */
        int bad = merge(rec, PyTuple_GET_ITEM(part, 1)) < 0;
        Py_DECREF(part);
        if (bad)
            goto fail;
    }
    return rec;
fail:
    Py_DECREF(rec);
    return NULL;
}

/* record.from_enriched: this flattener, else (another kind, an odd value) the Python one */
static PyObject *flatten(PyObject *self, PyObject *en) {
    if (!configured || python_flatten == NULL)
        return need_config();
    PyObject *rec = flat_or_none(en);
    if (rec != Py_None)
        return rec;
    Py_DECREF(rec);
    return PyObject_CallOneArg(python_flatten, en);
}

/* the compiled part alone: None where flatten() hands over to Python (tests) */
static PyObject *flatten_compiled(PyObject *self, PyObject *en) {
    if (!configured || python_flatten == NULL)
        return need_config();
    return flat_or_none(en);
}

/* ---- the JSON line of a kernel event, without its dict: what JsonLog would write for
 * record.from_enriched(en) (orjson.dumps(rec) + "\n"), byte for byte. Used by the pipeline when every
 * output is the JSON log (nothing else needs the dict); tests/unit/test_native_json.py compares it with
 * orjson on the replay mix, on edge strings and on random ones. The process and container fragments
 * are encoded once per cached fragment. None where the dict path must run (another kind, a value this
 * encoder does not write exactly as orjson: a surrogate, an int past 64 bits, another type). */

typedef struct { char *p; Py_ssize_t n, cap; char small[2048]; } Buf;

static void buf_init(Buf *b) { b->p = b->small; b->n = 0; b->cap = sizeof b->small; }
static void buf_free(Buf *b) { if (b->p != b->small) PyMem_Free(b->p); }

static int buf_grow(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->n + more)
        cap *= 2;
    char *np = PyMem_Malloc((size_t)cap);
    if (np == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(np, b->p, (size_t)b->n);
    if (b->p != b->small)
        PyMem_Free(b->p);
    b->p = np;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

#define NOT_EXACT 1 /* a value orjson would write otherwise, or refuse: the dict path decides */

/* orjson's escaping: " and \ escaped, \b \t \n \f \r, other bytes below 0x20 as \u00XX; UTF-8 as is */
/* bytes JSON escapes: below 0x20, '"' and '\\' */
static unsigned char needs_escape[256];

static void init_escapes(void) {
    for (int c = 0; c < 0x20; c++)
        needs_escape[c] = 1;
    needs_escape['"'] = needs_escape['\\'] = 1;
}

static int put_str(Buf *b, PyObject *o) {
    if (!PyUnicode_CheckExact(o))
        return NOT_EXACT;
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_IS_ASCII(o)) { /* compact ASCII: its bytes are its UTF-8 */
        s = (const char *)PyUnicode_DATA(o);
        n = PyUnicode_GET_LENGTH(o);
    } else if ((s = PyUnicode_AsUTF8AndSize(o, &n)) == NULL) { /* surrogates: orjson refuses them */
        PyErr_Clear();
        return NOT_EXACT;
    }
    if (buf_grow(b, 6 * n + 2) < 0)
        return -1;
    char *d = b->p + b->n;
    *d++ = '"';
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        if (!needs_escape[c]) {
            *d++ = (char)c;
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '\b': *d++ = 'b'; break;
        case '\t': *d++ = 't'; break;
        case '\n': *d++ = 'n'; break;
        case '\f': *d++ = 'f'; break;
        case '\r': *d++ = 'r'; break;
        default:
            *d++ = 'u'; *d++ = '0'; *d++ = '0'; *d++ = hex[c >> 4]; *d++ = hex[c & 15];
        }
    }
    *d++ = '"';
    b->n = d - b->p;
    return 0;
}

/* the decimal digits of u, ending at e; two per division */
static char *digits(unsigned long long u, char *e) {
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char *d = e;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        *--d = pairs[2 * r + 1];
        *--d = pairs[2 * r];
    }
    if (u >= 10) {
        *--d = pairs[2 * u + 1];
        *--d = pairs[2 * u];
    } else {
        *--d = (char)('0' + u);
    }
    return d;
}

static int put_int(Buf *b, PyObject *o) {
    if (o == Py_True)
        return buf_put(b, "true", 4);
    if (o == Py_False)
        return buf_put(b, "false", 5);
    if (!PyLong_CheckExact(o))
        return NOT_EXACT;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    char tmp[24], *e = tmp + sizeof tmp, *d = e;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) { /* past 64 bits: orjson refuses it */
            PyErr_Clear();
            return NOT_EXACT;
        }
        d = digits(u, e);
    } else if (overflow < 0) {
        return NOT_EXACT;
    } else {
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        d = digits(u, e);
        if (v < 0)
            *--d = '-';
    }
    return buf_put(b, d, e - d);
}

static inline int put_scalar(Buf *b, PyObject *o) {
    return PyUnicode_CheckExact(o) ? put_str(b, o) : put_int(b, o);
}

/* a value of a record: str, int, bool or a list of those (the kernel kinds' records hold no others).
 * A list in a list is left to orjson (NOT_EXACT): no recursion here, so a list that holds itself
 * cannot run this down the C stack. */
static int put_value(Buf *b, PyObject *o) {
    if (!PyList_CheckExact(o))
        return put_scalar(b, o);
    if (buf_put(b, "[", 1) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); i++) {
        PyObject *item = PyList_GET_ITEM(o, i);
        if (PyList_Check(item))
            return NOT_EXACT;
        if (i && buf_put(b, ",", 1) < 0)
            return -1;
        int r = put_scalar(b, item);
        if (r)
            return r;
    }
    return buf_put(b, "]", 1);
}

/* ,"key":value */
static int put_item(Buf *b, PyObject *key, PyObject *val) {
    if (val == NULL) {
        PyErr_SetString(PyExc_AttributeError, "an event field was never set");
        return -1;
    }
    if (buf_put(b, ",", 1) < 0)
        return -1;
    int r = put_str(b, key);
    if (r)
        return r;
    if (buf_put(b, ":", 1) < 0)
        return -1;
    return put_value(b, val);
}

static char *key_json[KEY_COUNT];
static Py_ssize_t key_json_len[KEY_COUNT];

static int put_key_val(Buf *b, int key, PyObject *val) {
    if (val == NULL) {
        PyErr_Format(PyExc_AttributeError, "no value for %s", KEY_TEXT[key]);
        return -1;
    }
    Py_ssize_t kn = key_json_len[key];
    if (buf_grow(b, kn) < 0)
        return -1;
    const char *k = key_json[key];
    char *d = b->p + b->n;
    for (Py_ssize_t i = 0; i < kn; i++) /* short: a loop beats a call to memcpy */
        d[i] = k[i];
    b->n += kn;
    return put_value(b, val);
}

/* the encoded fragments, cached beside the dict fragments (same slots, same identities) */
/* a container's encoded keys, cached by the part tuple they were made from (container_part's): its JSON
 * fragment (,"k":v,...) and its Event.Container message */
static PyObject *cont_json[PART_SLOTS], *cont_json_of[PART_SLOTS];
static PyObject *cont_pb[PART_SLOTS], *cont_pb_of[PART_SLOTS];

static int encode_dict_items(Buf *b, PyObject *d) {
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &k, &v)) {
        int r = put_item(b, k, v);
        if (r)
            return r;
    }
    return 0;
}

/* bytes of a fragment, NULL with an error, Py_None (borrowed) when not exactly encodable */
static PyObject *fragment_json(PyObject *part, int proc, int with_lists) {
    Buf b;
    buf_init(&b);
    int r = encode_dict_items(&b, PyTuple_GET_ITEM(part, proc ? 3 : 1));
    if (!r && proc && with_lists) {
        r = put_key_val(&b, KEY_ANC_NAME, PyTuple_GET_ITEM(part, 4));
        if (!r)
            r = put_key_val(&b, KEY_ANC_EXE, PyTuple_GET_ITEM(part, 5));
    }
    PyObject *out = r < 0 ? NULL : r ? Py_None : PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    return out;
}

/* ---- the protobuf Event of a kernel event, without its dict: what the exporter would send for
 * record.from_enriched(en) (nwwire.codec.to_event), less the identity fields it stamps on every event
 * (host, agent, boot, seq). Equal to to_event's as a message, its fields in another order:
 * tests/unit/test_native_pb.py parses it and compares, on the replay mix, edge strings and random ones.
 * Used by the pipeline when an exporter is among the outputs (agent/pipeline.py _encodings). The field
 * numbers and types are the descriptors' (configure_pb, from agent/outputs/record.py): none is written
 * here. NOT_EXACT where to_event would do otherwise (a key of no field of the event's kind, a value of
 * another type or out of range, text with no UTF-8): the dict is made and to_event decides. */
enum { PB_NONE, PB_INT64, PB_UINT64, PB_UINT32, PB_BOOL, PB_STRING, PB_STRINGS };
typedef struct { int num, type; } PbField;
static PbField pb_proc[KEY_COUNT];  /* Process's fields by record key */
static PbField pb_top[KEY_COUNT];   /* Event's own (event.truncated) */
static PbField pb_none[KEY_COUNT];  /* no field: what the JSON emitter and a process part look up */
static PbField *pb_kind[256];       /* per op: its kind member's fields by record key, or NULL */
static int pb_member[256];          /* per op: the Event field of its kind member */
static int pb_time, pb_name, pb_severity, pb_process, pb_container; /* Event's fields */
static uint64_t pb_info;            /* Severity's number of "info" */
static PyObject *container_pb_fn;   /* a container's record keys -> its Container message (bytes) or None */

static int pb_varint(Buf *b, uint64_t v) {
    if (buf_grow(b, 10) < 0)
        return -1;
    char *d = b->p + b->n;
    while (v > 0x7f) {
        *d++ = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    *d++ = (char)v;
    b->n = d - b->p;
    return 0;
}

static inline int pb_tag(Buf *b, int num, unsigned wire) { return pb_varint(b, ((uint64_t)num << 3) | wire); }

static int pb_len(Buf *b, int num, const char *s, Py_ssize_t n) {
    if (pb_tag(b, num, 2) < 0 || pb_varint(b, (uint64_t)n) < 0)
        return -1;
    return buf_put(b, s, n);
}

/* a string field: the str's UTF-8; one with none (a lone surrogate) is to_event's to clean */
static int pb_text(Buf *b, int num, PyObject *o) {
    if (!PyUnicode_CheckExact(o))
        return NOT_EXACT;
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_IS_ASCII(o)) {
        s = (const char *)PyUnicode_DATA(o);
        n = PyUnicode_GET_LENGTH(o);
    } else if ((s = PyUnicode_AsUTF8AndSize(o, &n)) == NULL) {
        PyErr_Clear();
        return NOT_EXACT;
    }
    return pb_len(b, num, s, n);
}

/* one field of a record value as codec._put takes it: an int (not a bool) in the field's range, a bool, a
 * str, a list or tuple of str. No Python code runs here. */
static int pb_field(Buf *b, PbField f, PyObject *v) {
    switch (f.type) {
    case PB_STRING:
        return pb_text(b, f.num, v);
    case PB_BOOL:
        if (v != Py_True && v != Py_False)
            return NOT_EXACT;
        return pb_tag(b, f.num, 0) < 0 || pb_varint(b, v == Py_True) < 0 ? -1 : 0;
    case PB_INT64: case PB_UINT64: case PB_UINT32: {
        if (!PyLong_Check(v) || PyBool_Check(v))
            return NOT_EXACT;
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && !overflow && PyErr_Occurred())
            return -1;
        uint64_t u = (uint64_t)x; /* a negative int64 in ten bytes, as protobuf writes it */
        if (f.type != PB_INT64) {
            if (overflow < 0 || (!overflow && x < 0))
                return NOT_EXACT;
            if (overflow) {
                unsigned long long big = PyLong_AsUnsignedLongLong(v);
                if (big == (unsigned long long)-1 && PyErr_Occurred()) { /* past 64 bits */
                    PyErr_Clear();
                    return NOT_EXACT;
                }
                u = big;
            }
            if (f.type == PB_UINT32 && u > 0xffffffffULL)
                return NOT_EXACT;
        } else if (overflow) {
            return NOT_EXACT;
        }
        return pb_tag(b, f.num, 0) < 0 || pb_varint(b, u) < 0 ? -1 : 0;
    }
    case PB_STRINGS: {
        if (!PyList_Check(v) && !PyTuple_Check(v))
            return NOT_EXACT;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            int r = pb_text(b, f.num, items[i]);
            if (r)
                return r;
        }
        return 0;
    }
    }
    return NOT_EXACT;
}

/* ---- what both encoders share: which keys a kernel event's record has, in record.py's order. An Emit
 * says where a key goes: the JSON line (one buffer) or one of an Event's messages (Process, the kind
 * member, Event itself), so the two cannot come to disagree on what a record holds. */
typedef struct Emit Emit;
struct Emit {
    int (*put)(Emit *e, int key, PyObject *val);
    Buf *b;               /* JSON: the line; protobuf: the kind member's fields */
    Buf *proc;            /* protobuf: Process's fields (JSON: the line) */
    Buf *top;             /* protobuf: Event's own (JSON: the line) */
    const PbField *kind;  /* protobuf: the op's kind member's fields */
    int pb;
};

/* ,"process.args":[...] of an exec's argv tuple, which put_value leaves alone */
static int put_args_json(Buf *b, PyObject *argv) {
    if (!PyTuple_Check(argv))
        return NOT_EXACT;
    if (buf_put(b, key_json[KEY_ARGS], key_json_len[KEY_ARGS]) < 0 || buf_put(b, "[", 1) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(argv); i++) {
        if (i && buf_put(b, ",", 1) < 0)
            return -1;
        PyObject *a = PyTuple_GET_ITEM(argv, i);
        if (!PyUnicode_CheckExact(a))
            return NOT_EXACT;
        int r = put_str(b, a);
        if (r)
            return r;
    }
    return buf_put(b, "]", 1);
}

static int json_put(Emit *e, int key, PyObject *val) {
    return key == KEY_ARGS ? put_args_json(e->b, val) : put_key_val(e->b, key, val);
}

/* a key to the message to_event puts it in: Process first, then the kind member, then Event's own; none
 * (to_event's extra_json) is NOT_EXACT, as is an empty list of Process's (which travels there as []) */
static int pb_put(Emit *e, int key, PyObject *val) {
    if (val == NULL) {
        PyErr_Format(PyExc_AttributeError, "no value for %s", KEY_TEXT[key]);
        return -1;
    }
    if (pb_proc[key].num) {
        if (pb_proc[key].type == PB_STRINGS && PyList_Check(val) && PyList_GET_SIZE(val) == 0)
            return NOT_EXACT;
        return pb_field(e->proc, pb_proc[key], val);
    }
    if (e->kind[key].num)
        return pb_field(e->b, e->kind[key], val);
    if (pb_top[key].num)
        return pb_field(e->top, pb_top[key], val);
    return NOT_EXACT;
}

static void emit_init(Emit *e, int pb, Buf *b, Buf *proc, Buf *top, const PbField *kind) {
    e->put = pb ? pb_put : json_put;
    e->b = b;
    e->proc = proc;
    e->top = top;
    e->kind = kind;
    e->pb = pb;
}

/* The process part of a record made here (what record._process_part makes, then encoded), cached by the
 * identity of (process, parent, ancestry) as the dict fragments are: one cache per encoding. */
typedef struct { PyObject *p, *parent, *chain, *enc; Py_ssize_t held; } PartEnc; /* held: as ProcSlot's */
typedef struct { PartEnc e[PART_SLOTS]; Py_ssize_t bytes; } PartCache;
static PartCache pj, ppb; /* the JSON one, the protobuf one */

static void clear_part_cache(PartCache *c) {
    for (int i = 0; i < PART_SLOTS; i++) {
        Py_CLEAR(c->e[i].p); Py_CLEAR(c->e[i].parent); Py_CLEAR(c->e[i].chain); Py_CLEAR(c->e[i].enc);
        c->e[i].held = 0;
    }
    c->bytes = 0;
}
static PyObject *s_space;

/* the exe and " ".join(argv) of one ProcInfo under exe_key and cmd_key */
static int put_proc(Emit *e, PyObject *pi, int exe_key, int cmd_key) {
    if (Py_TYPE(pi) != kinds[K_PROCINFO].type)
        return NOT_EXACT;
    PyObject *exe = SLOT(pi, K_PROCINFO, 2), *argv = SLOT(pi, K_PROCINFO, 3);
    if (exe == NULL || argv == NULL)
        return NOT_EXACT;
    int r = e->put(e, exe_key, exe);
    if (r)
        return r;
    PyObject *cmd = PyUnicode_Join(s_space, argv); /* record.command_line */
    if (cmd == NULL) {
        PyErr_Clear();
        return NOT_EXACT;
    }
    r = e->put(e, cmd_key, cmd);
    Py_DECREF(cmd);
    return r;
}

/* process.ancestors.<what> of a chain's comm (field 6) or exe (field 2): a JSON list, or the repeated field */
static int put_chain(Emit *e, PyObject *chain, int key, int field) {
    if (!PyTuple_Check(chain) || (e->pb && pb_proc[key].type != PB_STRINGS))
        return NOT_EXACT;
    Buf *b = e->proc;
    if (!e->pb && (buf_put(b, key_json[key], key_json_len[key]) < 0 || buf_put(b, "[", 1) < 0))
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(chain); i++) {
        PyObject *a = PyTuple_GET_ITEM(chain, i);
        if (Py_TYPE(a) != kinds[K_PROCINFO].type || SLOT(a, K_PROCINFO, field) == NULL)
            return NOT_EXACT;
        int r;
        if (e->pb) {
            r = pb_text(b, pb_proc[key].num, SLOT(a, K_PROCINFO, field));
        } else {
            if (i && buf_put(b, ",", 1) < 0)
                return -1;
            r = put_str(b, SLOT(a, K_PROCINFO, field));
        }
        if (r)
            return r;
    }
    return e->pb ? 0 : buf_put(b, "]", 1);
}

/* the process part's bytes (a new reference), or Py_None (borrowed): not exactly encodable here */
static PyObject *proc_part_direct(int pb, PyObject *p, PyObject *parent, PyObject *chain, int has_chain) {
    Buf b;
    buf_init(&b);
    Emit e;
    emit_init(&e, pb, &b, &b, &b, pb_none);
    int r = 0;
    if (p != Py_None) {
        r = put_proc(&e, p, KEY_EXE, KEY_CMD);
        PyObject *start = r ? NULL : SLOT(p, K_PROCINFO, 5);
        if (!r && start == NULL)
            r = NOT_EXACT;
        if (!r) {
            int t = PyObject_IsTrue(start);
            if (t < 0) {
                r = -1;
            } else if (t) {
                PyObject *ts = rfc3339(start);
                if (ts == NULL)
                    r = -1;
                else if (ts == Py_None)
                    r = NOT_EXACT;
                else {
                    r = e.put(&e, KEY_START, ts);
                    Py_DECREF(ts);
                }
            }
        }
    }
    if (!r && parent != Py_None)
        r = put_proc(&e, parent, KEY_PEXE, KEY_PCMD);
    if (!r && has_chain) {
        r = put_chain(&e, chain, KEY_ANC_NAME, 6);
        if (!r)
            r = put_chain(&e, chain, KEY_ANC_EXE, 2);
    }
    PyObject *out = r < 0 ? NULL : r ? Py_None : PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    return out;
}

/* an Enriched's process part onto dest, from the encoding's cache (made and kept when it is not there):
 * 0, NOT_EXACT or -1 */
static int put_proc_part(int pb, PartCache *cache, Buf *dest, PyObject *en) {
    PyObject *p = SLOT(en, K_ENRICHED, E_PROCESS), *parent = SLOT(en, K_ENRICHED, E_PARENT);
    PyObject *chain = SLOT(en, K_ENRICHED, E_ANCESTORS);
    int has_chain = PyObject_IsTrue(chain);
    if (has_chain < 0)
        return -1;
    if (p == Py_None && parent == Py_None && !has_chain)
        return 0;
    size_t h = (mix_ptr(p) * 31 + mix_ptr(parent) * 7 + mix_ptr(chain)) & (PART_SLOTS - 1);
    PartEnc *e = &cache->e[h];
    if (e->enc == NULL || e->p != p || e->parent != parent || e->chain != chain) {
        PyObject *j = proc_part_direct(pb, p, parent, chain, has_chain);
        if (j == NULL || j == Py_None)
            return j == NULL ? -1 : NOT_EXACT;
        if (PyBytes_GET_SIZE(j) > FRAGMENT_CACHE_MAX) { /* not kept: FRAGMENT_CACHE_MAX says why */
            int r = buf_put(dest, PyBytes_AS_STRING(j), PyBytes_GET_SIZE(j));
            Py_DECREF(j);
            return r;
        }
        Py_ssize_t held = OBJ_BYTES + PyBytes_GET_SIZE(j) + held_bytes(p, parent, chain);
        if (cache->bytes - e->held + held > PART_BYTES_MAX)
            clear_part_cache(cache); /* PART_BYTES_MAX says why; en holds p, parent and chain */
        Py_INCREF(p); Py_INCREF(parent); Py_INCREF(chain); /* held: their ids are not reused meanwhile */
        Py_XSETREF(e->p, p); Py_XSETREF(e->parent, parent); Py_XSETREF(e->chain, chain);
        Py_XSETREF(e->enc, j);
        cache->bytes += held - e->held;
        e->held = held;
    }
    return buf_put(dest, PyBytes_AS_STRING(e->enc), PyBytes_GET_SIZE(e->enc));
}

/* An exec's record is made here only when its process part says what the exec keys would overwrite: the
 * table's entry made from this exec (exe and argv equal to the event's), as record._exec_keys sets
 * process.executable.path and process.command_line again in the place the part gave them. 1 yes, 0 no
 * (Python's flattener makes it), -1 error. */
static int exec_part_agrees(PyObject *en, PyObject *ev) {
    PyObject *p = SLOT(en, K_ENRICHED, E_PROCESS);
    if (Py_TYPE(p) != kinds[K_PROCINFO].type || SLOT(p, K_PROCINFO, 2) == NULL || SLOT(p, K_PROCINFO, 3) == NULL)
        return 0;
    PyObject *argv = SLOT(ev, K_EXEC, 12);
    if (!PyTuple_CheckExact(argv))
        return 0;
    int r = PyObject_RichCompareBool(SLOT(p, K_PROCINFO, 2), SLOT(ev, K_EXEC, 11), Py_EQ);
    if (r == 1)
        r = PyObject_RichCompareBool(SLOT(p, K_PROCINFO, 3), argv, Py_EQ);
    return r;
}

/* record._exec_keys after the process part: what an exec adds (the flags only when true) */
static int exec_keys(Emit *e, PyObject *ev) {
    PyObject *argv = SLOT(ev, K_EXEC, 12);
    int r = e->put(e, KEY_ARGS, argv);
    if (r)
        return r;
    PyObject *count = PyLong_FromSsize_t(PyTuple_GET_SIZE(argv));
    if (count == NULL)
        return -1;
    r = e->put(e, KEY_ARGC, count);
    Py_DECREF(count);
    if (r)
        return r;
    static const struct { int slot, key, key2, slot2; } opt[] = {
        {15, KEY_INO, KEY_DEV, 16}, {17, KEY_KPATH, KEY_MNTID, 21}, {22, KEY_CWD, -1, 0},
        {18, KEY_MEMFD, -1, 0}, {19, KEY_DELETED, -1, 0}, {20, KEY_UPPER, -1, 0},
    };
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        PyObject *v = SLOT(ev, K_EXEC, opt[i].slot);
        int t = PyObject_IsTrue(v);
        if (t < 0)
            return -1;
        if (!t)
            continue;
        if (opt[i].key >= KEY_MEMFD) /* a flag: written as true, whatever true value it holds */
            v = Py_True;
        if ((r = e->put(e, opt[i].key, v)) != 0)
            return r;
        if (opt[i].key2 >= 0 && (r = e->put(e, opt[i].key2, SLOT(ev, K_EXEC, opt[i].slot2))) != 0)
            return r;
    }
    return 0;
}

/* the eight header keys of an event (process.pid .. process.mount_ns) onto dest, encoded once per run of
 * records with the same header objects (the decoders hand the same ones out again: last_head); one cache
 * per encoding */
typedef struct { PyObject *of[8], *enc; } HeadCache;
static HeadCache head_jc, head_pc;

static void clear_head_cache(HeadCache *c) {
    for (int i = 0; i < 8; i++)
        Py_CLEAR(c->of[i]);
    Py_CLEAR(c->enc);
}

static int put_head(Emit *e, Buf *dest, HeadCache *hc, PyObject *ev, int kind) {
    static const int F[8] = {F_PID, F_TID, F_PPID, F_COMM, F_UID, F_GID, F_CGROUP, F_MNTNS};
    static const int K[8] = {KEY_PID, KEY_TID, KEY_PPID, KEY_COMM, KEY_UID, KEY_GID, KEY_CGROUP, KEY_MNTNS};
    int same = hc->enc != NULL;
    for (int i = 0; same && i < 8; i++)
        same = SLOT(ev, kind, F[i]) == hc->of[i];
    if (same) /* no Python code runs between the check and the copy */
        return buf_put(dest, PyBytes_AS_STRING(hc->enc), PyBytes_GET_SIZE(hc->enc));
    Py_ssize_t at = dest->n;
    for (int i = 0; i < 8; i++) {
        int r = e->put(e, K[i], SLOT(ev, kind, F[i]));
        if (r)
            return r;
    }
    for (int i = 0; i < 8; i++) /* a list (an event made in Python) can change: not cached */
        if (PyList_Check(SLOT(ev, kind, F[i])))
            return 0;
    PyObject *j = PyBytes_FromStringAndSize(dest->p + at, dest->n - at);
    if (j == NULL)
        return -1;
    /* the objects are held, so their ids are not reused while the encoding is cached; exact strs, ints
     * and bools only (put wrote them, no list), whose deallocation runs no Python code */
    for (int i = 0; i < 8; i++) {
        PyObject *o = SLOT(ev, kind, F[i]);
        Py_INCREF(o);
        Py_XSETREF(hc->of[i], o);
    }
    Py_XSETREF(hc->enc, j);
    return 0;
}

/* the keys of the event's own kind (record.py's file_keys, net_keys, ...): 0, NOT_EXACT or -1 */
static int kind_keys(Emit *e, PyObject *ev, int kind, long op) {
    int r = 0;
    switch (kind) {
    case K_FILE:
        r = e->put(e, KEY_FPATH, SLOT(ev, K_FILE, 11));
        if (!r) r = e->put(e, KEY_RET, SLOT(ev, K_FILE, 13));
        if (r) break;
        switch (op) {
        case 10:
            r = e->put(e, KEY_OFLAGS, SLOT(ev, K_FILE, 14));
            if (!r) r = e->put(e, KEY_FMODE, SLOT(ev, K_FILE, 15));
            break;
        case 12: r = e->put(e, KEY_FTARGET, SLOT(ev, K_FILE, 12)); break;
        case 13: r = e->put(e, KEY_FMODE, SLOT(ev, K_FILE, 15)); break;
        case 14:
            r = e->put(e, KEY_FOWNER, SLOT(ev, K_FILE, 18));
            if (!r) r = e->put(e, KEY_FGROUP, SLOT(ev, K_FILE, 19));
            break;
        case 15: case 16: r = e->put(e, KEY_FLINK, SLOT(ev, K_FILE, 12)); break;
        }
        if (!r) {
            int nonneg = fd_nonneg(SLOT(ev, K_FILE, 17));
            if (nonneg < 0)
                r = -1;
            else if (nonneg)
                r = e->put(e, KEY_FDESC, SLOT(ev, K_FILE, 17));
        }
        break;
    case K_NET:
        r = e->put(e, KEY_NTYPE, SLOT(ev, K_NET, 13));
        if (!r) r = e->put(e, KEY_NTRANSPORT, SLOT(ev, K_NET, 14));
        if (!r) r = e->put(e, KEY_RET, SLOT(ev, K_NET, 11));
        if (r) break;
        if (op == 20 || op == 21 || op == 26 || op == 25) {
            r = e->put(e, KEY_PEER_ADDR, SLOT(ev, K_NET, 15));
            if (!r) r = e->put(e, KEY_PEER_PORT, SLOT(ev, K_NET, 16));
        } else if (op != OP_NET_SOCKET) {
            r = e->put(e, KEY_LOCAL_ADDR, SLOT(ev, K_NET, 15));
            if (!r) r = e->put(e, KEY_LOCAL_PORT, SLOT(ev, K_NET, 16));
        }
        if (r) break;
        if (op == 23) {
            r = e->put(e, KEY_BACKLOG, SLOT(ev, K_NET, 17));
        } else if (op == OP_NET_SOCKET) {
            r = e->put(e, KEY_NFD, SLOT(ev, K_NET, 11));
            if (!r) r = e->put(e, KEY_NPROTO, SLOT(ev, K_NET, 19));
        } else if (op == 25) {
            r = e->put(e, KEY_NFD, SLOT(ev, K_NET, 12));
            if (!r) r = e->put(e, KEY_DUPFD, SLOT(ev, K_NET, 18));
        }
        break;
    case K_FORK:
        r = e->put(e, KEY_CHILD, SLOT(ev, K_FORK, 11));
        break;
    case K_EXEC:
        r = exec_keys(e, ev);
        break;
    case K_EXIT: {
        PyObject *sig = SLOT(ev, K_EXIT, 12);
        r = e->put(e, KEY_EXIT_CODE, SLOT(ev, K_EXIT, 11));
        if (!r) {
            int t = PyObject_IsTrue(sig);
            if (t < 0) r = -1;
            else if (t) r = e->put(e, KEY_EXIT_SIG, sig);
        }
        break;
    }
    }
    return r;
}

/* the file.resolved_path and event.truncated keys, each when set, as record.py adds them after the
 * process part */
static int resolved_trunc_keys(Emit *e, PyObject *en, PyObject *ev, int kind) {
    PyObject *resolved = SLOT(en, K_ENRICHED, E_RESOLVED);
    int t = PyObject_IsTrue(resolved);
    int r = t < 0 ? -1 : t ? e->put(e, KEY_RESOLVED, resolved) : 0;
    if (r)
        return r;
    t = PyObject_IsTrue(SLOT(ev, kind, F_TRUNC));
    return t < 0 ? -1 : t ? e->put(e, KEY_TRUNC, Py_True) : 0;
}

/* The kernel event an encoder may write: its kind (K_FILE .. K_EXEC) and op, -1 when it is not one (another
 * type, a slot never set, an exec whose record Python's flattener makes, an op without a name), -2 with an
 * error set. */
static int encodable(PyObject *en, PyObject **evp, long *opp) {
    if (Py_TYPE(en) != kinds[K_ENRICHED].type)
        return -1;
    PyObject *ev = SLOT(en, K_ENRICHED, E_EVENT);
    if (ev == NULL)
        return -1;
    PyTypeObject *t = Py_TYPE(ev);
    int kind = t == kinds[K_FILE].type ? K_FILE : t == kinds[K_NET].type ? K_NET
             : t == kinds[K_FORK].type ? K_FORK : t == kinds[K_EXIT].type ? K_EXIT
             : t == kinds[K_EXEC].type ? K_EXEC : -1;
    if (kind < 0 || !all_set(en, ev, kind))
        return -1;
    if (kind == K_EXEC) {
        int agrees = exec_part_agrees(en, ev);
        if (agrees <= 0)
            return agrees < 0 ? -2 : -1;
    }
    long op = PyLong_AsLong(SLOT(ev, kind, F_OP));
    if (op == -1 && PyErr_Occurred())
        return -2;
    if (op < 0 || op > 255 || names[op] == NULL)
        return -1;
    *evp = ev;
    *opp = op;
    return kind;
}

/* {"event.name":"<name of op>","timestamp":" per op, made once (names are set by configure_flatten) */
static PyObject *prefix_json[256];

static PyObject *line_prefix(long op) {
    if (prefix_json[op] != NULL)
        return prefix_json[op];
    Buf b;
    buf_init(&b);
    int r = buf_put(&b, "{", 1);
    if (!r) r = put_str(&b, keys[KEY_NAME]);
    if (!r) r = buf_put(&b, ":", 1);
    if (!r) r = put_str(&b, names[op]);
    if (!r) r = buf_put(&b, ",", 1);
    if (!r) r = put_str(&b, keys[KEY_TS]);
    if (!r) r = buf_put(&b, ":\"", 2);
    if (r > 0)
        PyErr_SetString(PyExc_ValueError, "an event name that JSON does not write as is");
    PyObject *out = r ? NULL : PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    prefix_json[op] = out;
    return out;
}

/* a container's encoded keys onto dest, made once per part tuple into enc/enc_of (cont_json, cont_pb):
 * by fragment_json, or by container_pb_fn (to_event's own Container message of those keys) */
static int put_container(int pb, Buf *dest, PyObject *c, PyObject **enc, PyObject **enc_of) {
    PyObject *part = container_part(c);
    if (part == NULL)
        return -1;
    size_t h = mix_ptr(c) & (PART_SLOTS - 1);
    if (enc_of[h] != part) {
        Py_INCREF(part); /* held while encoded, as in flat_or_none: it is only borrowed from its slot */
        PyObject *j = pb ? PyObject_CallOneArg(container_pb_fn, PyTuple_GET_ITEM(part, 1)) : fragment_json(part, 0, 0);
        if (j != NULL && j != Py_None && !PyBytes_CheckExact(j)) {
            Py_DECREF(j);
            PyErr_SetString(PyExc_TypeError, "the container's message must be bytes or None");
            j = NULL;
        }
        if (j == NULL || j == Py_None) {
            if (pb)
                Py_XDECREF(j); /* the callback's None is a new reference, fragment_json's borrowed */
            Py_DECREF(part);
            return j == NULL ? -1 : NOT_EXACT;
        }
        Py_XSETREF(enc[h], j);
        Py_XSETREF(enc_of[h], part); /* takes the reference held above */
    }
    if (!pb)
        return buf_put(dest, PyBytes_AS_STRING(enc[h]), PyBytes_GET_SIZE(enc[h]));
    if (PyBytes_GET_SIZE(enc[h]) == 0) /* no key: to_event leaves Event.container out */
        return 0;
    return pb_len(dest, pb_container, PyBytes_AS_STRING(enc[h]), PyBytes_GET_SIZE(enc[h]));
}

/* encodable, and the timestamp's text as the record writes it (ts_text, into ts of 96 bytes): the kind,
 * -1 when not encodable here, -2 with an error */
static int encodable_at(PyObject *en, PyObject **evp, long *opp, char *ts, Py_ssize_t *ts_n) {
    int kind = encodable(en, evp, opp);
    if (kind < 0)
        return kind;
    int tsr = ts_text(SLOT(*evp, kind, F_TS), ts, ts_n);
    return tsr < 0 ? -2 : tsr ? -1 : kind;
}

static PyObject *json_or_none(PyObject *en) {
    PyObject *ev;
    long op;
    char ts[96];
    Py_ssize_t ts_n;
    int kind = encodable_at(en, &ev, &op, ts, &ts_n);
    if (kind < 0) {
        if (kind == -2)
            return NULL;
        Py_RETURN_NONE;
    }
    for (Py_ssize_t k = 0; k < ts_n; k++) /* the second's text comes from Python: written as is if plain */
        if (needs_escape[(unsigned char)ts[k]] || (unsigned char)ts[k] >= 0x80)
            Py_RETURN_NONE;
    PyObject *prefix = line_prefix(op);
    if (prefix == NULL)
        return NULL;
    Buf b;
    buf_init(&b);
    Emit e;
    emit_init(&e, 0, &b, &b, &b, pb_none);
    /* {"event.name":"<name>","timestamp":"<ts>","event.severity":"info" */
    int r = buf_put(&b, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix));
    if (!r) r = buf_put(&b, ts, ts_n);
    if (!r) r = buf_put(&b, "\",\"event.severity\":\"info\"", 25);
    if (!r) r = put_head(&e, &b, &head_jc, ev, kind);
    if (!r) r = put_proc_part(0, &pj, &b, en);
    if (!r) r = resolved_trunc_keys(&e, en, ev, kind);
    if (!r) r = kind_keys(&e, ev, kind, op);
    PyObject *c = SLOT(en, K_ENRICHED, E_CONTAINER);
    if (!r && c != Py_None)
        r = put_container(0, &b, c, cont_json, cont_json_of);
    if (!r)
        r = buf_put(&b, "}\n", 2);
    PyObject *res = r < 0 ? NULL : r ? (Py_INCREF(Py_None), Py_None) : PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    return res;
}

static PyObject *pb_or_none(PyObject *en) {
    PyObject *ev;
    long op;
    char ts[96]; /* the timestamp as the record writes it (ts_text): to_event reads back the same number */
    Py_ssize_t ts_n;
    int kind = encodable_at(en, &ev, &op, ts, &ts_n);
    if (kind < 0) {
        if (kind == -2)
            return NULL;
        Py_RETURN_NONE;
    }
    if (pb_kind[op] == NULL || pb_process == 0)
        Py_RETURN_NONE;
    long long ts_ns = PyLong_AsLongLong(SLOT(ev, kind, F_TS));
    if (ts_ns == -1 && PyErr_Occurred())
        return NULL;
    Buf kb, proc, top, out;
    buf_init(&kb); buf_init(&proc); buf_init(&top); buf_init(&out);
    Emit e;
    emit_init(&e, 1, &kb, &proc, &top, pb_kind[op]);
    int r = put_head(&e, &proc, &head_pc, ev, kind);
    if (!r) r = put_proc_part(1, &ppb, &proc, en);
    if (!r) r = resolved_trunc_keys(&e, en, ev, kind);
    if (!r) r = kind_keys(&e, ev, kind, op);
    /* Event: time, name, severity (info), its own (truncated), Process, the kind member, Container */
    if (!r) r = pb_tag(&out, pb_time, 0) < 0 || pb_varint(&out, (uint64_t)ts_ns) < 0 ? -1 : 0;
    if (!r) r = pb_text(&out, pb_name, names[op]);
    if (!r) r = pb_tag(&out, pb_severity, 0) < 0 || pb_varint(&out, pb_info) < 0 ? -1 : 0;
    if (!r) r = buf_put(&out, top.p, top.n);
    if (!r) r = pb_len(&out, pb_process, proc.p, proc.n);
    if (!r) r = pb_len(&out, pb_member[op], kb.p, kb.n);
    PyObject *c = SLOT(en, K_ENRICHED, E_CONTAINER);
    if (!r && c != Py_None)
        r = put_container(1, &out, c, cont_pb, cont_pb_of);
    PyObject *res = r < 0 ? NULL : r ? (Py_INCREF(Py_None), Py_None) : PyBytes_FromStringAndSize(out.p, out.n);
    buf_free(&kb); buf_free(&proc); buf_free(&top); buf_free(&out);
    return res;
}

/* what run and encoded make of a record: 1 its JSON line, 2 its Event, 3 both as a (line, event) tuple */
#define ENC_JSON 1
#define ENC_PB 2

/* a new reference: the record's encoding(s) per `mode`, Py_None (borrowed) when either is not made here,
 * NULL with an error */
static PyObject *encode_record(PyObject *en, long mode) {
    PyObject *line = NULL, *evb = NULL;
    if (mode & ENC_JSON) {
        line = json_or_none(en);
        if (line == NULL || line == Py_None)
            return line == NULL ? NULL : (Py_DECREF(line), Py_None);
        if (mode == ENC_JSON)
            return line;
    }
    evb = pb_or_none(en);
    if (evb == NULL || evb == Py_None) {
        Py_XDECREF(line);
        return evb == NULL ? NULL : (Py_DECREF(evb), Py_None);
    }
    if (line == NULL)
        return evb;
    PyObject *both = PyTuple_Pack(2, line, evb);
    Py_DECREF(line);
    Py_DECREF(evb);
    return both;
}

/* frame_events(events, identity, seq, events_field, seq_field): the exporter's framing of Events made by
 * encoded(en, 2), as bytes: per event, the field `events_field` (Batch.events) holding `identity` (the
 * exporter's node, agent and boot fields, already encoded), the field `seq_field` = seq, seq + 1, ... and the
 * event's own bytes (agent/outputs/grpc_exporter.py _spool_batch; its Python framing is the reference:
 * tests/unit/test_native_pb.py). */
static PyObject *frame_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]))
        return PyErr_Format(PyExc_TypeError, "frame_events(events: list of bytes, identity: bytes, seq, "
                                             "events_field, seq_field)");
    unsigned long long seq = PyLong_AsUnsignedLongLong(args[2]);
    long ef = PyLong_AsLong(args[3]), sf = PyLong_AsLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (ef < 1 || ef > 536870911 || sf < 1 || sf > 536870911)
        return PyErr_Format(PyExc_ValueError, "frame_events: field numbers are 1 .. 2^29 - 1");
    PyObject *events = args[0];
    const char *id = PyBytes_AS_STRING(args[1]);
    Py_ssize_t idn = PyBytes_GET_SIZE(args[1]);
    Buf b, seqb;
    buf_init(&b);
    int r = 0;
    for (Py_ssize_t i = 0; !r && i < PyList_GET_SIZE(events); i++, seq++) {
        PyObject *ev = PyList_GET_ITEM(events, i);
        if (!PyBytes_CheckExact(ev)) {
            PyErr_SetString(PyExc_TypeError, "frame_events: an event that is not bytes");
            r = -1;
            break;
        }
        buf_init(&seqb);
        r = pb_tag(&seqb, (int)sf, 0) < 0 || pb_varint(&seqb, seq) < 0 ? -1 : 0;
        Py_ssize_t n = idn + seqb.n + PyBytes_GET_SIZE(ev);
        if (!r) r = pb_tag(&b, (int)ef, 2) < 0 || pb_varint(&b, (uint64_t)n) < 0 ? -1 : 0;
        if (!r) r = buf_put(&b, id, idn);
        if (!r) r = buf_put(&b, seqb.p, seqb.n);
        if (!r) r = buf_put(&b, PyBytes_AS_STRING(ev), PyBytes_GET_SIZE(ev));
        buf_free(&seqb);
    }
    PyObject *out = r ? NULL : PyBytes_FromStringAndSize(b.p, b.n);
    buf_free(&b);
    return out;
}

/* json_line(en): the JSON log's line of a kernel event (bytes), or None: flatten and orjson it */
static PyObject *json_line(PyObject *self, PyObject *en) {
    if (!configured || python_flatten == NULL)
        return need_config();
    return json_or_none(en);
}

/* encoded(en, mode): the record as run makes it for `mode` (1 the JSON line, 2 the Event's bytes, 3 both as
 * a tuple), or None: make its dict */
static PyObject *encoded(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!configured || python_flatten == NULL)
        return need_config();
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "encoded(en, mode)");
    long mode = PyLong_AsLong(args[1]);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    if (mode < 1 || mode > 3)
        return PyErr_Format(PyExc_ValueError, "encoded: mode 1 (JSON), 2 (protobuf) or 3 (both), not %ld", mode);
    if ((mode & ENC_PB) && pb_process == 0)
        return PyErr_Format(PyExc_RuntimeError, "encoded: configure_pb first");
    PyObject *out = encode_record(args[0], mode);
    if (out == Py_None)
        Py_INCREF(out);
    return out;
}

static int init_key_json(void) {
    for (int i = 0; i < KEY_COUNT; i++) {
        if (key_json[i] != NULL)
            continue;
        size_t n = strlen(KEY_TEXT[i]);
        key_json[i] = PyMem_Malloc(n + 4);
        if (key_json[i] == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        key_json[i][0] = ',';
        key_json[i][1] = '"';
        memcpy(key_json[i] + 2, KEY_TEXT[i], n); /* the keys are plain ASCII: nothing to escape */
        key_json[i][n + 2] = '"';
        key_json[i][n + 3] = ':';
        key_json_len[i] = (Py_ssize_t)n + 4;
    }
    return 0;
}

/* posixpath.normpath(posixpath.join(cwd, path)) for a non-empty cwd and a relative path (enricher._resolve),
 * on their UTF-8 (a '/' or '.' byte is never inside a multibyte sequence); None where Python must do it
 * (a string that is not valid UTF-8, e.g. one with a surrogate). tests/unit/test_flatten_fragments.py
 * compares it with posixpath on random paths. */
static PyObject *join_norm(PyObject *cwd, PyObject *path) {
    Py_ssize_t nc, np;
    const char *c = PyUnicode_AsUTF8AndSize(cwd, &nc), *q = c ? PyUnicode_AsUTF8AndSize(path, &np) : NULL;
    if (q == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t n = nc + 1 + np;
    char *j = PyMem_Malloc((size_t)(2 * n + 2));
    Py_ssize_t *comp = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n + 1) * 2);
    if (j == NULL || comp == NULL) {
        PyMem_Free(j);
        PyMem_Free(comp);
        return PyErr_NoMemory();
    }
    memcpy(j, c, (size_t)nc);
    Py_ssize_t m = nc;
    if (c[nc - 1] != '/')
        j[m++] = '/';
    memcpy(j + m, q, (size_t)np);
    m += np;
    int initial = j[0] == '/';
    if (initial && m >= 2 && j[1] == '/' && !(m >= 3 && j[2] == '/'))
        initial = 2;
    Py_ssize_t top = 0; /* comp[2k], comp[2k+1]: start and length of the k-th kept component */
    for (Py_ssize_t i = 0; i <= m;) {
        Py_ssize_t e = i;
        while (e < m && j[e] != '/')
            e++;
        Py_ssize_t len = e - i;
        int dot = len == 1 && j[i] == '.', dotdot = len == 2 && j[i] == '.' && j[i + 1] == '.';
        if (len == 0 || dot) {
            /* skipped */
        } else if (!dotdot || (!initial && top == 0) ||
                   (top > 0 && comp[2 * top - 1] == 2 && j[comp[2 * top - 2]] == '.' && j[comp[2 * top - 2] + 1] == '.')) {
            comp[2 * top] = i;
            comp[2 * top + 1] = len;
            top++;
        } else if (top > 0) {
            top--;
        }
        i = e + 1;
    }
    char *out = j + m + 1; /* the second half of the buffer: the result is never longer than the input */
    Py_ssize_t o = 0;
    for (int k = 0; k < initial; k++)
        out[o++] = '/';
    for (Py_ssize_t k = 0; k < top; k++) {
        if (k)
            out[o++] = '/';
        memcpy(out + o, j + comp[2 * k], (size_t)comp[2 * k + 1]);
        o += comp[2 * k + 1];
    }
    PyObject *res = o ? PyUnicode_DecodeUTF8(out, o, NULL) : PyUnicode_FromString(".");
    PyMem_Free(j);
    PyMem_Free(comp);
    return res;
}

static PyObject *join_norm_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) || PyUnicode_GET_LENGTH(args[0]) == 0) {
        PyErr_SetString(PyExc_TypeError, "join_norm(cwd: non-empty str, path: str)");
        return NULL;
    }
    return join_norm(args[0], args[1]);
}

/* from_memo(memo, ev): Enricher.enrich_in_batch's memo hit, made here: the Enriched of a file or net
 * event whose (pid, ppid, cgroup id, mount ns) the batch's memo holds, with that entry's process,
 * parent, container and ancestry. None when Python must do it: another kind, not in the memo, or a
 * path relative to the cwd (its resolution is Python's: enricher._resolve). */
/* The Enriched of a file or net event (kind) from the memo entry `hit` of its context (borrowed), or None
 * where Python must make it (a path relative to the cwd that Python resolves, an entry not made here). */
static PyObject *enriched_from_hit(PyObject *ev, int kind, PyObject *hit) {
    if (Py_TYPE(hit) != kinds[K_ENRICHED].type)
        Py_RETURN_NONE;
    int relative = 0;
    if (kind == K_FILE) {
        PyObject *path = SLOT(ev, K_FILE, 11), *dirfd = SLOT(ev, K_FILE, 16);
        if (path == NULL || dirfd == NULL || !PyUnicode_Check(path))
            Py_RETURN_NONE;
        if (PyUnicode_GET_LENGTH(path) > 0 && PyUnicode_READ_CHAR(path, 0) != '/') {
            long fd = PyLong_Check(dirfd) ? PyLong_AsLong(dirfd) : 0;
            if (fd == -1 && PyErr_Occurred())
                return NULL;
            relative = fd == -100; /* AT_FDCWD: joined to the cwd */
        }
    }
    PyObject *v[MAX_FIELDS];
    v[E_EVENT] = ev;
    v[E_PROCESS] = SLOT(hit, K_ENRICHED, E_PROCESS);
    v[E_PARENT] = SLOT(hit, K_ENRICHED, E_PARENT);
    v[E_CONTAINER] = SLOT(hit, K_ENRICHED, E_CONTAINER);
    v[E_ANCESTORS] = SLOT(hit, K_ENRICHED, E_ANCESTORS);
    v[E_RESOLVED] = s_empty;
    for (int i = 0; i < 6; i++)
        if (v[i] == NULL)
            Py_RETURN_NONE;
    /* ours from here: `hit` is only borrowed, and join_norm below allocates */
    for (int i = 0; i < 6; i++)
        Py_INCREF(v[i]);
    if (relative) { /* enricher._resolve: the kernel's cwd at the call, else the table's */
        PyObject *cwd = SLOT(ev, K_FILE, 20), *proc = v[E_PROCESS];
        if (cwd != NULL && PyUnicode_Check(cwd) && PyUnicode_GET_LENGTH(cwd) == 0 && proc != Py_None)
            cwd = Py_TYPE(proc) == kinds[K_PROCINFO].type ? SLOT(proc, K_PROCINFO, 7) : NULL;
        int python = cwd == NULL || !PyUnicode_Check(cwd); /* an odd cwd: Python decides */
        if (!python && PyUnicode_GET_LENGTH(cwd) > 0) { /* no cwd at all: resolved stays "" */
            PyObject *resolved = join_norm(cwd, SLOT(ev, K_FILE, 11));
            if (resolved == NULL || resolved == Py_None) {
                for (int i = 0; i < 6; i++)
                    Py_DECREF(v[i]);
                return resolved;
            }
            Py_SETREF(v[E_RESOLVED], resolved);
        }
        if (python) {
            for (int i = 0; i < 6; i++)
                Py_DECREF(v[i]);
            Py_RETURN_NONE;
        }
    }
    return make(&kinds[K_ENRICHED], v);
}

/* The memo entry of an event's context (a new reference), Py_None (borrowed, not increfed: compare only)
 * when it has none, NULL with an error. */
static PyObject *memo_entry(PyObject *memo, PyObject *ev, int kind) {
    PyObject *a = SLOT(ev, kind, F_PID), *b = SLOT(ev, kind, F_PPID), *c = SLOT(ev, kind, F_CGROUP);
    PyObject *d = SLOT(ev, kind, F_MNTNS);
    if (!a || !b || !c || !d)
        return Py_None;
    PyObject *key = PyTuple_Pack(4, a, b, c, d);
    if (key == NULL)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(memo, key);
    Py_DECREF(key);
    if (hit == NULL)
        return PyErr_Occurred() ? NULL : Py_None;
    Py_INCREF(hit);
    return hit;
}

static PyObject *from_memo(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!configured)
        return need_config();
    if (nargs != 2 || !PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "from_memo(memo: dict, event)");
        return NULL;
    }
    PyObject *memo = args[0], *ev = args[1];
    PyTypeObject *t = Py_TYPE(ev);
    int kind = t == kinds[K_FILE].type ? K_FILE : t == kinds[K_NET].type ? K_NET : -1;
    if (kind < 0)
        Py_RETURN_NONE;
    PyObject *hit = memo_entry(memo, ev, kind);
    if (hit == NULL)
        return NULL;
    if (hit == Py_None)
        Py_RETURN_NONE;
    PyObject *en = enriched_from_hit(ev, kind, hit);
    Py_DECREF(hit);
    return en;
}

/* run(batch, i, clock, memo, young, mask, judge_mode, records, line_ops, judge, enrich, show_fork, watch,
 *     watch_spec, mode) -> (i, event or None, Enriched or None):
 * Pipeline._process for records batch[i:], in order, without a Python frame per record. A record
 * whose op's decoder is this module's (mask[op]: 1 file, 2 net, 3 fork, 4 exit, 5 exec) is decoded
 * here; a file or net event whose context the batch's memo holds is enriched here (from_memo), every
 * other one by `enrich` (Enricher.enrich_in_batch: the process table, the memo's forgetting, the
 * container resolver stay Python); a fork is then left out unless `show_fork`; an event without a
 * container whose cgroup is in `young` (the resolver's young cgroups: the hold may want it) goes back
 * to Python, as does an exec the kernel's rules acted on (its record names the rule) and an event whose
 * record this module does not encode exactly; the rest get their encoding on `records` (encoded(en, mode):
 * the JSON line, the Event's bytes, or both as a (line, event) tuple), the op on `line_ops`, and the
 * Enriched then its position on `judge` (flat) when judge_mode is 2 (every event) or 1 and it
 * has a container; then, where `watch` is a callable and watch_spec lets the event through (its op, and
 * watch_wants of its path for the ops that say so), watch(Enriched). It stops at the first record it
 * does not finish and returns its index with its event and Enriched as far as it got (None, None: another
 * kind, or undecodable here: Python decodes it again, which counts an error as the pipeline does). The caller does that record the Python way,
 * without enriching it again, and calls again from the next. */
/* run's last memo hit: the context objects (pid, ppid, cgroup id, mount ns) it was found for and the entry,
 * all held. The decoders hand a run of records from one process the same header objects (last_head), so
 * the next record's context is that hit when its four objects are these, without a key or a dict lookup;
 * forgotten before `enrich` runs (it changes the memo) and when run returns. */
typedef struct { PyObject *key[4], *hit; } LastHit;

static void last_hit_clear(LastHit *l) {
    for (int k = 0; k < 4; k++)
        Py_CLEAR(l->key[k]);
    Py_CLEAR(l->hit);
}

/* the memo entry of a file or net event's context: a new reference, Py_None (borrowed) or NULL */
static PyObject *memo_entry_last(PyObject *memo, PyObject *ev, int kind, LastHit *l) {
    PyObject *cur[4] = {SLOT(ev, kind, F_PID), SLOT(ev, kind, F_PPID), SLOT(ev, kind, F_CGROUP),
                        SLOT(ev, kind, F_MNTNS)};
    if (l->hit != NULL && cur[0] == l->key[0] && cur[1] == l->key[1] && cur[2] == l->key[2] &&
        cur[3] == l->key[3]) {
        Py_INCREF(l->hit);
        return l->hit;
    }
    PyObject *hit = memo_entry(memo, ev, kind);
    if (hit == NULL || hit == Py_None)
        return hit;
    last_hit_clear(l); /* strs, ints and an Enriched the memo still holds: freeing them runs no Python */
    for (int k = 0; k < 4; k++) {
        Py_INCREF(cur[k]);
        l->key[k] = cur[k];
    }
    Py_INCREF(hit);
    l->hit = hit;
    return hit;
}

/* The watch's path test (Pipeline._watch): 1 when the watchers may want an event with this path: one
 * that normpath would change ("/." or "//" in it), one under a prefix, or one holding a literal (literals
 * None: every path). A relative path is tested as `resolved` (the Enriched's path_resolved, what the watchers
 * read for it: "" when it could not be resolved, which neither acts on); with resolved NULL (a rename's
 * target, which the web-shell watch joins to the process's cwd itself) a relative path passes. 0 when none
 * can want it; -1 on an error. */
static PyObject *s_slash_dot, *s_slash_slash;

static int watch_wants(PyObject *path, PyObject *resolved, PyObject *prefixes, PyObject *literals) {
    if (!PyUnicode_Check(path))
        return 1;
    if (PyUnicode_GET_LENGTH(path) == 0 || PyUnicode_READ_CHAR(path, 0) != '/') {
        if (resolved == NULL || !PyUnicode_Check(resolved))
            return 1;
        if (PyUnicode_GET_LENGTH(resolved) == 0)
            return 0;
        path = resolved;
    }
    if (s_slash_dot == NULL && ((s_slash_dot = PyUnicode_InternFromString("/.")) == NULL ||
                                (s_slash_slash = PyUnicode_InternFromString("//")) == NULL))
        return -1;
    int r = PyUnicode_Contains(path, s_slash_dot);
    if (r != 0)
        return r;
    if ((r = PyUnicode_Contains(path, s_slash_slash)) != 0)
        return r;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(prefixes); k++) {
        Py_ssize_t t = PyUnicode_Tailmatch(path, PyTuple_GET_ITEM(prefixes, k), 0, PY_SSIZE_T_MAX, -1);
        if (t != 0)
            return t < 0 ? -1 : 1;
    }
    if (literals == Py_None)
        return 1;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(literals); k++)
        if ((r = PyUnicode_Contains(path, PyTuple_GET_ITEM(literals, k))) != 0)
            return r;
    return 0;
}

static PyObject *run_batch(PyObject *const *args, Py_ssize_t nargs, LastHit *last);

static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    LastHit last = {{NULL, NULL, NULL, NULL}, NULL};
    PyObject *out = run_batch(args, nargs, &last);
    last_hit_clear(&last);
    return out;
}

static PyObject *run_batch(PyObject *const *args, Py_ssize_t nargs, LastHit *last) {
    if (!configured || python_flatten == NULL)
        return need_config();
    if (nargs != 15 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[3]) ||
        !PyBytes_CheckExact(args[5]) || PyBytes_GET_SIZE(args[5]) != 256 || !PyList_CheckExact(args[7]) ||
        !PyList_CheckExact(args[8]) || !PyList_CheckExact(args[9]) || !PyCallable_Check(args[10]) ||
        (args[12] != Py_None && !PyCallable_Check(args[12]))) {
        PyErr_SetString(PyExc_TypeError, "run(batch, i, clock, memo, young, mask, judge_mode, records, line_ops, "
                                         "judge, enrich, show_fork, watch, watch_spec, mode)");
        return NULL;
    }
    long enc_mode = PyLong_AsLong(args[14]);
    if (enc_mode == -1 && PyErr_Occurred())
        return NULL;
    if (enc_mode < 1 || enc_mode > 3 || ((enc_mode & ENC_PB) && pb_process == 0)) {
        PyErr_SetString(PyExc_ValueError, "run: mode 1 (JSON), 2 (protobuf: configure_pb first) or 3 (both)");
        return NULL;
    }
    /* watch: None, or a callable given each Enriched its spec (ops, prefixes, literals) lets through: ops
     * (256 bytes) says per op 0 never, 1 always, 2 when watch_wants(path), 3 when watch_wants(path2) */
    PyObject *watch = args[12], *wprefixes = NULL, *wliterals = NULL;
    const unsigned char *wops = NULL;
    if (watch != Py_None) {
        PyObject *spec = args[13];
        if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3 || !PyBytes_CheckExact(PyTuple_GET_ITEM(spec, 0)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(spec, 0)) != 256 || !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, 1)) ||
            (PyTuple_GET_ITEM(spec, 2) != Py_None && !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, 2)))) {
            PyErr_SetString(PyExc_TypeError, "watch_spec: (256 bytes of ops, a tuple of prefixes, a tuple of "
                                             "literals or None)");
            return NULL;
        }
        wops = (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(spec, 0));
        wprefixes = PyTuple_GET_ITEM(spec, 1);
        wliterals = PyTuple_GET_ITEM(spec, 2);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(wprefixes); k++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(wprefixes, k)))
                return PyErr_Format(PyExc_TypeError, "watch_spec: prefixes must be str");
        for (Py_ssize_t k = 0; wliterals != Py_None && k < PyTuple_GET_SIZE(wliterals); k++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(wliterals, k)))
                return PyErr_Format(PyExc_TypeError, "watch_spec: literals must be str");
    }
    PyObject *batch = args[0], *clock = args[2], *memo = args[3], *young = args[4], *enrich = args[10];
    const char *mask = PyBytes_AS_STRING(args[5]);
    long judge_mode = PyLong_AsLong(args[6]);
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if ((judge_mode == -1 || i == -1) && PyErr_Occurred())
        return NULL;
    int show_fork = PyObject_IsTrue(args[11]);
    if (show_fork < 0)
        return NULL;
    if (young != Py_None && !PyDict_Check(young)) {
        PyErr_SetString(PyExc_TypeError, "young: a dict or None");
        return NULL;
    }
    PyObject *records = args[7], *line_ops = args[8], *judge = args[9];
    if (i < 0) {
        PyErr_SetString(PyExc_IndexError, "run: a negative start");
        return NULL;
    }
    static const int KIND_OF[6] = {-1, K_FILE, K_NET, K_FORK, K_EXIT, K_EXEC};
    typedef PyObject *(*Decoder)(PyObject *, PyObject *const *, Py_ssize_t);
    static const Decoder DECODER[6] = {NULL, decode_file, decode_net, decode_fork, decode_exit, decode_exec};
    PyObject *fargs[2] = {NULL, clock};
    /* the size read again per record: the clock's offset, the fragment makers and `enrich` are Python,
     * which could let another thread shorten the list (a record is only read before any of them runs) */
    for (; i < PyList_GET_SIZE(batch); i++) {
        PyObject *raw = PyList_GET_ITEM(batch, i);
        if (!PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) < 1)
            break;
        unsigned m = (unsigned char)mask[(unsigned char)PyBytes_AS_STRING(raw)[0]];
        if (m == 0 || m > 5)
            break;
        int kind = KIND_OF[m];
        fargs[0] = raw;
        PyObject *ev = DECODER[m](NULL, fargs, 2);
        if (ev == NULL) { /* undecodable: Python decodes it again and counts it */
            PyErr_Clear();
            break;
        }
        PyObject *en = Py_None;
        Py_INCREF(en);
        if (kind == K_FILE || kind == K_NET) {
            PyObject *hit = memo_entry_last(memo, ev, kind, last);
            if (hit == NULL) {
                Py_DECREF(en);
                Py_DECREF(ev);
                return NULL;
            }
            if (hit != Py_None) {
                Py_SETREF(en, enriched_from_hit(ev, kind, hit));
                Py_DECREF(hit);
            }
        }
        if (en == Py_None) { /* a process event, a first event of its context, a cwd Python resolves */
            last_hit_clear(last); /* enrich changes the memo */
            PyObject *eargs[2] = {ev, memo};
            Py_SETREF(en, PyObject_Vectorcall(enrich, eargs, 2, NULL));
        }
        if (en == NULL) {
            Py_DECREF(ev);
            return NULL;
        }
        if (Py_TYPE(en) != kinds[K_ENRICHED].type) /* not ours to read: Python carries on with it */
            return Py_BuildValue("(nNN)", i, ev, en);
        if (kind == K_FORK && !show_fork) { /* it fed the process table; no record */
            Py_DECREF(en);
            Py_DECREF(ev);
            continue;
        }
        PyObject *container = SLOT(en, K_ENRICHED, E_CONTAINER);
        if (container == Py_None && young != Py_None) {
            int in = PyDict_Contains(young, SLOT(ev, kind, F_CGROUP));
            if (in != 0) { /* young, or an error: the hold decides in Python */
                if (in < 0)
                    PyErr_Clear();
                return Py_BuildValue("(nNN)", i, ev, en);
            }
        }
        if (kind == K_EXEC) {
            int acted = PyObject_IsTrue(SLOT(ev, K_EXEC, 13));
            if (acted != 0) { /* a kernel rule's exec: Pipeline._records names the rule */
                if (acted < 0)
                    PyErr_Clear();
                return Py_BuildValue("(nNN)", i, ev, en);
            }
        }
        PyObject *line = encode_record(en, enc_mode);
        if (line == NULL || line == Py_None) { /* (None: borrowed) */
            PyErr_Clear();
            return Py_BuildValue("(nNN)", i, ev, en);
        }
        int bad = PyList_Append(records, line) < 0;
        Py_DECREF(line);
        bad = bad || PyList_Append(line_ops, SLOT(ev, kind, F_OP)) < 0;
        if (!bad && (judge_mode == 2 || (judge_mode == 1 && container != Py_None))) {
            PyObject *pos = PyLong_FromSsize_t(PyList_GET_SIZE(records));
            bad = pos == NULL || PyList_Append(judge, en) < 0 || PyList_Append(judge, pos) < 0;
            Py_XDECREF(pos);
        }
        unsigned w = wops != NULL ? wops[(unsigned char)PyBytes_AS_STRING(raw)[0]] : 0;
        if (!bad && w) { /* after the record, as Pipeline._process calls its watchers */
            int call = 1;
            if (w == 2 && kind == K_FILE)
                call = watch_wants(SLOT(ev, K_FILE, 11), SLOT(en, K_ENRICHED, E_RESOLVED), wprefixes, wliterals);
            else if (w == 3 && kind == K_FILE)
                call = watch_wants(SLOT(ev, K_FILE, 12), NULL, wprefixes, wliterals);
            if (call < 0) {
                bad = 1;
            } else if (call) {
                PyObject *r = PyObject_CallOneArg(watch, en);
                bad = r == NULL;
                Py_XDECREF(r);
            }
        }
        Py_DECREF(en);
        Py_DECREF(ev);
        if (bad)
            return NULL;
    }
    return Py_BuildValue("(nOO)", i, Py_None, Py_None);
}

/* configure_flatten(names, process_part, container_part, second_text, python_flatten): names maps
 * op -> event.name */
static PyObject *configure_flatten(PyObject *self, PyObject *args) {
    PyObject *name_map, *pp, *cp, *th, *pf;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyDict_Type, &name_map, &pp, &cp, &th, &pf))
        return NULL;
    if (!configured)
        return need_config();
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(name_map, &pos, &key, &val)) {
        long op = PyLong_AsLong(key);
        if (op < 0 || op > 255 || !PyUnicode_Check(val)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "names: op (0..255) -> str");
            return NULL;
        }
        Py_INCREF(val);
        Py_XSETREF(names[op], val);
        Py_CLEAR(prefix_json[op]);
    }
    for (int i = 0; i < KEY_COUNT; i++)
        if (keys[i] == NULL && (keys[i] = PyUnicode_InternFromString(KEY_TEXT[i])) == NULL)
            return NULL;
    if (s_info == NULL && (s_info = PyUnicode_InternFromString("info")) == NULL)
        return NULL;
    if (init_key_json() < 0)
        return NULL;
    init_escapes();
    Py_INCREF(pp); Py_XSETREF(proc_part_fn, pp);
    Py_INCREF(cp); Py_XSETREF(container_part_fn, cp);
    Py_INCREF(th); Py_XSETREF(ts_head_fn, th);
    Py_INCREF(pf); Py_XSETREF(python_flatten, pf);
    clear_heads();
    Py_RETURN_NONE;
}

/* a {record key: (field number, type name)} table into by_key (indexed by this module's keys); keys this
 * module never writes are left out */
static int pb_table(PyObject *d, PbField *by_key) {
    static const char *TYPES[] = {NULL, "int64", "uint64", "uint32", "bool", "string", "strings"};
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "configure_pb: a table is a dict of record key -> (number, type)");
        return -1;
    }
    for (int k = 0; k < KEY_COUNT; k++) {
        PyObject *ent = PyDict_GetItemString(d, KEY_TEXT[k]); /* borrowed */
        by_key[k].num = by_key[k].type = 0;
        if (ent == NULL)
            continue;
        int num;
        const char *type;
        if (!PyTuple_Check(ent) || !PyArg_ParseTuple(ent, "is", &num, &type)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "configure_pb: %s: not a (number, type) tuple", KEY_TEXT[k]);
            return -1;
        }
        int t = 0;
        for (int i = 1; i < (int)(sizeof TYPES / sizeof TYPES[0]); i++)
            if (strcmp(type, TYPES[i]) == 0)
                t = i;
        if (t == 0 || num < 1 || num > 536870911) {
            PyErr_Format(PyExc_ValueError, "configure_pb: %s: (%d, %s) is no field", KEY_TEXT[k], num, type);
            return -1;
        }
        by_key[k].num = num;
        by_key[k].type = t;
    }
    return 0;
}

/* configure_pb(event, top, process, members, container_fn): Event's fields (a dict of "time", "name",
 * "severity", "process", "container" -> number, and "info" -> Severity's number for it); the record keys
 * of Event's own fields and of Process's (record key -> (number, type): int64, uint64, uint32, bool, string,
 * strings); per op, (the number of its kind member, that member's table); container_fn, a container's
 * record keys -> its Container message (bytes) or None. agent/outputs/record.py makes them from the
 * descriptors. */
static PyObject *configure_pb(PyObject *self, PyObject *args) {
    PyObject *event, *top, *proc, *members, *cfn;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O", &PyDict_Type, &event, &PyDict_Type, &top, &PyDict_Type, &proc,
                          &PyDict_Type, &members, &cfn))
        return NULL;
    if (!configured || python_flatten == NULL)
        return need_config();
    if (!PyCallable_Check(cfn))
        return PyErr_Format(PyExc_TypeError, "configure_pb: container_fn must be callable");
    static const char *EV[] = {"time", "name", "severity", "process", "container", "info"};
    long v[6];
    for (int i = 0; i < 6; i++) {
        PyObject *n = PyDict_GetItemString(event, EV[i]);
        if (n == NULL || (v[i] = PyLong_AsLong(n)) < (i == 5 ? 0 : 1))
            return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "configure_pb: event[%s]", EV[i]);
    }
    static PbField t_top[KEY_COUNT], t_proc[KEY_COUNT];
    if (pb_table(top, t_top) < 0 || pb_table(proc, t_proc) < 0)
        return NULL;
    static const int HEAD[8] = {KEY_PID, KEY_TID, KEY_PPID, KEY_COMM, KEY_UID, KEY_GID, KEY_CGROUP, KEY_MNTNS};
    for (int i = 0; i < 8; i++) /* put_head caches them as one run of Process's bytes */
        if (t_proc[HEAD[i]].num == 0)
            return PyErr_Format(PyExc_ValueError, "configure_pb: %s is no field of Process", KEY_TEXT[HEAD[i]]);
    PbField *t_kind[256] = {NULL};
    int t_member[256] = {0};
    PyObject *k, *val;
    Py_ssize_t pos = 0;
    int bad = 0;
    while (!bad && PyDict_Next(members, &pos, &k, &val)) {
        long op = PyLong_AsLong(k);
        PyObject *table;
        int num;
        if (op < 0 || op > 255 || !PyTuple_Check(val) || !PyArg_ParseTuple(val, "iO", &num, &table) || num < 1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "configure_pb: members: op (0..255) -> (number, table)");
            bad = 1;
            break;
        }
        if (t_kind[op] == NULL && (t_kind[op] = PyMem_Calloc(KEY_COUNT, sizeof(PbField))) == NULL) {
            PyErr_NoMemory();
            bad = 1;
            break;
        }
        t_member[op] = num;
        bad = pb_table(table, t_kind[op]) < 0;
    }
    if (bad) {
        for (int op = 0; op < 256; op++)
            PyMem_Free(t_kind[op]);
        return NULL;
    }
    /* all checked: in force at once (the protobuf caches hold encodings made with the old numbers) */
    clear_part_cache(&ppb);
    clear_head_cache(&head_pc);
    for (int i = 0; i < PART_SLOTS; i++) {
        Py_CLEAR(cont_pb[i]);
        Py_CLEAR(cont_pb_of[i]);
    }
    memcpy(pb_top, t_top, sizeof pb_top);
    memcpy(pb_proc, t_proc, sizeof pb_proc);
    for (int op = 0; op < 256; op++) {
        PyMem_Free(pb_kind[op]);
        pb_kind[op] = t_kind[op];
        pb_member[op] = t_member[op];
    }
    pb_time = (int)v[0]; pb_name = (int)v[1]; pb_severity = (int)v[2]; pb_process = (int)v[3];
    pb_container = (int)v[4]; pb_info = (uint64_t)v[5];
    Py_INCREF(cfn);
    Py_XSETREF(container_pb_fn, cfn);
    Py_RETURN_NONE;
}

/* forget every cached fragment (tests; a reload never needs it: fragments follow identities) */
static PyObject *clear_parts(PyObject *self, PyObject *unused) {
    clear_proc_slots();
    clear_part_cache(&pj);
    clear_part_cache(&ppb);
    for (int i = 0; i < PART_SLOTS; i++) {
        Py_CLEAR(cont_slots[i].c); Py_CLEAR(cont_slots[i].part);
        Py_CLEAR(cont_json[i]); Py_CLEAR(cont_json_of[i]); Py_CLEAR(cont_pb[i]); Py_CLEAR(cont_pb_of[i]);
    }
    clear_head_cache(&head_jc);
    clear_head_cache(&head_pc);
    for (int i = 0; i < H_COUNT; i++)
        Py_CLEAR(last_head[i].obj);
    Py_CLEAR(last_comm);
    clear_heads();
    Py_RETURN_NONE;
}

/* (bytes the dict fragments' cache keeps alive, the JSON fragments' cache's, their bound, the protobuf
 * fragments' cache's): tests check the caches stay under PART_BYTES_MAX however many process contexts come */
static PyObject *parts_bytes(PyObject *self, PyObject *unused) {
    return Py_BuildValue("nnnn", proc_slots_bytes, pj.bytes, (Py_ssize_t)PART_BYTES_MAX, ppb.bytes);
}

/* procinfo(pid, ppid, exe, argv, uid, start_ns, comm, cwd): agent.events.ProcInfo (the process table
 * makes one per exec and fork) */
static PyObject *procinfo(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!configured)
        return need_config();
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "procinfo() takes the 8 fields of ProcInfo");
        return NULL;
    }
    PyObject *v[MAX_FIELDS];
    for (Py_ssize_t i = 0; i < 8; i++) {
        Py_INCREF(args[i]);
        v[i] = args[i];
    }
    return make(&kinds[K_PROCINFO], v);
}

/* configure(ops, classes, decode_error): ops maps every op byte to its Op member; classes maps
 * "file"/"net"/"fork"/"exit"/"enriched"/"exec"/"procinfo" to (dataclass, field names in __init__ order). */
static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *op_map, *classes, *err;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyDict_Type, &op_map, &PyDict_Type, &classes, &err))
        return NULL;
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(op_map, &pos, &key, &val)) {
        long op = PyLong_AsLong(key);
        if (op < 0 || op > 255) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "op %ld out of range", op);
            return NULL;
        }
        Py_INCREF(val);
        Py_XSETREF(ops[op], val);
    }
    for (int k = 0; k < K_COUNT; k++) {
        PyObject *entry = PyDict_GetItemString(classes, KIND_NAMES[k]);
        PyObject *cls, *names;
        if (entry == NULL || !PyArg_ParseTuple(entry, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_KeyError, "no class for %s", KIND_NAMES[k]);
            return NULL;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(names);
        if (n != KIND_FIELDS[k]) {
            PyErr_Format(PyExc_ValueError, "%s: %zd fields, the decoder fills %zd", KIND_NAMES[k], n, KIND_FIELDS[k]);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *d = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
            if (d == NULL)
                return NULL;
            int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                     ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
            Py_ssize_t off = ok ? ((PyMemberDescrObject *)d)->d_member->offset : 0;
            Py_DECREF(d);
            if (!ok) {
                PyErr_Format(PyExc_TypeError, "%s.%U is not a slot", KIND_NAMES[k], PyTuple_GET_ITEM(names, i));
                return NULL;
            }
            kinds[k].offsets[i] = off;
        }
        Py_INCREF(cls);
        Py_XSETREF(kinds[k].type, (PyTypeObject *)cls);
        kinds[k].n = n;
    }
    Py_INCREF(err);
    Py_XSETREF(decode_error, err);
    configured = 1;
    Py_RETURN_NONE;
}

static PyObject *layout(PyObject *self, PyObject *unused) {
    return Py_BuildValue(
        "{s:n,s:{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n},"
        "s:{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n},"
        "s:{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n},s:{s:n,s:n},s:{s:n,s:n},s:n,s:n,s:n,s:n,s:n,s:n,"
        "s:{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n},s:n,s:[nnnnnn]}",
        "header", (Py_ssize_t)HDR_SIZE,
        "event_header", "pid", (Py_ssize_t)OFF_PID, "tid", (Py_ssize_t)OFF_TID, "ppid", (Py_ssize_t)OFF_PPID,
        "uid", (Py_ssize_t)OFF_UID, "gid", (Py_ssize_t)OFF_GID, "ts_ns", (Py_ssize_t)OFF_TS,
        "cgroup_id", (Py_ssize_t)OFF_CGROUP, "mntns", (Py_ssize_t)OFF_MNTNS, "comm", (Py_ssize_t)OFF_COMM,
        "file_event", "size", (Py_ssize_t)FILE_SIZE, "ret", (Py_ssize_t)FOFF_RET, "dirfd", (Py_ssize_t)FOFF_DIRFD,
        "flags", (Py_ssize_t)FOFF_FLAGS, "mode", (Py_ssize_t)FOFF_MODE, "owner_uid", (Py_ssize_t)FOFF_OUID,
        "owner_gid", (Py_ssize_t)FOFF_OGID, "fd", (Py_ssize_t)FOFF_FD, "path_len", (Py_ssize_t)FOFF_PLEN,
        "path2_len", (Py_ssize_t)FOFF_P2LEN, "path", (Py_ssize_t)FOFF_PATH, "path2", (Py_ssize_t)FOFF_PATH2,
        "net_event", "size", (Py_ssize_t)NET_SIZE, "ret", (Py_ssize_t)NOFF_RET, "fd", (Py_ssize_t)NOFF_FD,
        "sock_type", (Py_ssize_t)NOFF_TYPE, "addr_len", (Py_ssize_t)NOFF_ALEN, "backlog", (Py_ssize_t)NOFF_BACKLOG,
        "addr", (Py_ssize_t)NOFF_ADDR, "fd2", (Py_ssize_t)NOFF_FD2, "protocol", (Py_ssize_t)NOFF_PROTO,
        "fork_event", "size", (Py_ssize_t)FORK_SIZE, "child_pid", (Py_ssize_t)BODY_AT,
        "exit_event", "size", (Py_ssize_t)EXIT_SIZE, "exit_code", (Py_ssize_t)BODY_AT,
        "comm_len", (Py_ssize_t)COMM_LEN, "path_max", (Py_ssize_t)PATH_MAX_, "addr_max", (Py_ssize_t)ADDR_MAX_,
        "f_truncated", (Py_ssize_t)F_TRUNCATED, "f_cwd", (Py_ssize_t)F_CWD, "op_net_socket", (Py_ssize_t)OP_NET_SOCKET,
        "exec_event", "size", (Py_ssize_t)EXEC_SIZE, "filename_len", (Py_ssize_t)XOFF_FNLEN,
        "args_len", (Py_ssize_t)XOFF_ARGSLEN, "filename", (Py_ssize_t)XOFF_FILENAME, "args", (Py_ssize_t)XOFF_ARGS,
        "action", (Py_ssize_t)XOFF_ACTION, "rule", (Py_ssize_t)XOFF_RULE, "exe_ino", (Py_ssize_t)XOFF_INO,
        "exe_dev", (Py_ssize_t)XOFF_DEV, "exe_flags", (Py_ssize_t)XOFF_FLAGS, "exe_path_len", (Py_ssize_t)XOFF_EXELEN,
        "exe_mnt_id", (Py_ssize_t)XOFF_MNTID, "cwd_len", (Py_ssize_t)XOFF_CWDLEN, "exe_path", (Py_ssize_t)XOFF_EXEPATH,
        "cwd", (Py_ssize_t)XOFF_CWD, "args_max", (Py_ssize_t)ARGS_MAX_,
        "exe_bits", (Py_ssize_t)EXE_UNHASHED, (Py_ssize_t)EXE_NLINK0, (Py_ssize_t)EXE_IS_ROOT,
        (Py_ssize_t)EXE_INTERNAL, (Py_ssize_t)EXE_SHMEM, (Py_ssize_t)EXE_UPPER);
}

static PyMethodDef methods[] = {
    {"decode_file", (PyCFunction)(void (*)(void))decode_file, METH_FASTCALL, "file_event -> FileEvent"},
    {"decode_net", (PyCFunction)(void (*)(void))decode_net, METH_FASTCALL, "net_event -> NetEvent"},
    {"decode_exec", (PyCFunction)(void (*)(void))decode_exec, METH_FASTCALL, "exec_event -> ExecEvent"},
    {"decode_fork", (PyCFunction)(void (*)(void))decode_fork, METH_FASTCALL, "fork_event -> ForkEvent"},
    {"decode_exit", (PyCFunction)(void (*)(void))decode_exit, METH_FASTCALL, "exit_event -> ExitEvent"},
    {"enriched", (PyCFunction)(void (*)(void))enriched, METH_FASTCALL, "the 6 fields -> Enriched"},
    {"flatten", flatten, METH_O, "Enriched -> its flat record (record.from_enriched)"},
    {"flatten_compiled", flatten_compiled, METH_O, "Enriched -> its flat record, or None where Python makes it"},
    {"configure_flatten", configure_flatten, METH_VARARGS, "configure_flatten(names, process_part, "
     "container_part, second_text, python_flatten)"},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL, "Pipeline._process's common records, compiled"},
    {"join_norm", (PyCFunction)(void (*)(void))join_norm_py, METH_FASTCALL, "normpath(join(cwd, path)), or None"},
    {"procinfo", (PyCFunction)(void (*)(void))procinfo, METH_FASTCALL, "the 8 fields -> ProcInfo"},
    {"from_memo", (PyCFunction)(void (*)(void))from_memo, METH_FASTCALL, "the batch memo's Enriched, or None"},
    {"json_line", json_line, METH_O, "Enriched -> the JSON log's line of it (bytes), or None"},
    {"encoded", (PyCFunction)(void (*)(void))encoded, METH_FASTCALL,
     "encoded(en, mode): 1 the JSON line, 2 the Event's bytes (no identity), 3 both as a tuple; or None"},
    {"frame_events", (PyCFunction)(void (*)(void))frame_events, METH_FASTCALL,
     "frame_events(events, identity, seq, events_field, seq_field): Batch.events fields of encoded Events"},
    {"configure_pb", configure_pb, METH_VARARGS,
     "configure_pb(event, top, process, members, container_fn): the Event's field numbers (record.py)"},
    {"clear_parts", clear_parts, METH_NOARGS, "forget the cached fragments"},
    {"parts_bytes", parts_bytes, METH_NOARGS, "(bytes the process fragments' caches keep alive, their bound)"},
    {"configure", configure, METH_VARARGS, "configure(ops, classes, DecodeError)"},
    {"layout", layout, METH_NOARGS, "the offsets and sizes this module was compiled with"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nwnative", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nwnative(void) {
#define STR(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    STR(s_offset, "offset");
    STR(s_empty, "");
    STR(s_ipv4, "ipv4");
    STR(s_ipv6, "ipv6");
    STR(s_unix, "unix");
    STR(s_packet, "packet");
    STR(s_netlink, "netlink");
    STR(s_tcp, "tcp");
    STR(s_udp, "udp");
    STR(s_raw, "raw");
    STR(s_sctp, "sctp");
    STR(s_memfd_prefix, "/memfd:");
    STR(s_space, " ");
    STR(s_deleted_suffix, " (deleted)");
#undef STR
    return PyModule_Create(&module);
}

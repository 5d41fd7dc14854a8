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

#define MAX_FIELDS 24

typedef struct {
    PyTypeObject *type;
    Py_ssize_t n;
    Py_ssize_t offsets[MAX_FIELDS];
} Kind;

enum { K_FILE, K_NET, K_FORK, K_EXIT, K_ENRICHED, K_COUNT };
static const char *KIND_NAMES[K_COUNT] = {"file", "net", "fork", "exit", "enriched"};
static const Py_ssize_t KIND_FIELDS[K_COUNT] = {21, 20, 12, 13, 6};

static Kind kinds[K_COUNT];
static PyObject *ops[256];          /* op byte -> agent.events.Op member (new references) */
static PyObject *decode_error;      /* agent.sensors.common.DecodeError */
static PyObject *s_offset;          /* "offset" */
static PyObject *s_empty, *s_ipv4, *s_ipv6, *s_unix, *s_packet, *s_netlink;
static PyObject *s_tcp, *s_udp, *s_raw, *s_sctp;
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
    PyObject *ts = PyLong_FromUnsignedLongLong(rd64(p + OFF_TS));
    PyObject *wall = ts ? PyNumber_Add(ts, offset) : NULL;
    Py_XDECREF(ts);
    Py_DECREF(offset);
    if (wall == NULL)
        return -1;
    Py_INCREF(op);
    v[0] = op;
    v[1] = wall;
    v[2] = PyLong_FromUnsignedLong(rd32(p + OFF_PID));
    v[3] = PyLong_FromUnsignedLong(rd32(p + OFF_TID));
    v[4] = PyLong_FromUnsignedLong(rd32(p + OFF_PPID));
    v[5] = PyLong_FromUnsignedLong(rd32(p + OFF_UID));
    v[6] = PyLong_FromUnsignedLong(rd32(p + OFF_GID));
    v[7] = PyLong_FromUnsignedLongLong(rd64(p + OFF_CGROUP));
    v[8] = PyLong_FromUnsignedLong(rd32(p + OFF_MNTNS));
    v[9] = escape_cstr(p + OFF_COMM, COMM_LEN);
    v[10] = PyBool_FromLong(p[1] & F_TRUNCATED);
    return 0;
}

static PyObject *need_config(void) {
    PyErr_SetString(PyExc_RuntimeError, "agent.sensors._native is not configured");
    return NULL;
}

static PyObject *decode_file(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_file(buf, clock)");
        return NULL;
    }
    if (!configured)
        return need_config();
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    const unsigned char *p = b.buf;
    if (check(&b, FILE_SIZE, "file") < 0 || header(p, args[1], v) < 0)
        goto done;
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
done:
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
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_net(buf, clock)");
        return NULL;
    }
    if (!configured)
        return need_config();
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    const unsigned char *p = b.buf;
    if (check(&b, NET_SIZE, "net") < 0 || header(p, args[1], v) < 0)
        goto done;
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
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_fork(buf, clock)");
        return NULL;
    }
    if (!configured)
        return need_config();
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    const unsigned char *p = b.buf;
    if (check(&b, FORK_SIZE, "fork") < 0 || header(p, args[1], v) < 0)
        goto done;
    v[11] = PyLong_FromUnsignedLong(rd32(p + BODY_AT));
    out = make(&kinds[K_FORK], v);
done:
    PyBuffer_Release(&b);
    return out;
}

static PyObject *decode_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_exit(buf, clock)");
        return NULL;
    }
    if (!configured)
        return need_config();
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *v[MAX_FIELDS] = {0}, *out = NULL;
    const unsigned char *p = b.buf;
    if (check(&b, EXIT_SIZE, "exit") < 0 || header(p, args[1], v) < 0)
        goto done;
    int32_t code;
    memcpy(&code, p + BODY_AT, 4);
    /* task->exit_code is a wait status: (exit status << 8) | terminating signal */
    v[11] = PyLong_FromLong((long)(((int64_t)code >> 8) & 0xFF));
    v[12] = PyLong_FromLong((long)(code & 0x7F));
    out = make(&kinds[K_EXIT], v);
done:
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

/* configure(ops, classes, decode_error): ops maps every op byte to its Op member; classes maps
 * "file"/"net"/"fork"/"exit"/"enriched" to (dataclass, field names in __init__ order). */
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
        "s:{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n},s:{s:n,s:n},s:{s:n,s:n},s:n,s:n,s:n,s:n,s:n,s:n}",
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
        "f_truncated", (Py_ssize_t)F_TRUNCATED, "f_cwd", (Py_ssize_t)F_CWD, "op_net_socket", (Py_ssize_t)OP_NET_SOCKET);
}

static PyMethodDef methods[] = {
    {"decode_file", (PyCFunction)(void (*)(void))decode_file, METH_FASTCALL, "file_event -> FileEvent"},
    {"decode_net", (PyCFunction)(void (*)(void))decode_net, METH_FASTCALL, "net_event -> NetEvent"},
    {"decode_fork", (PyCFunction)(void (*)(void))decode_fork, METH_FASTCALL, "fork_event -> ForkEvent"},
    {"decode_exit", (PyCFunction)(void (*)(void))decode_exit, METH_FASTCALL, "exit_event -> ExitEvent"},
    {"enriched", (PyCFunction)(void (*)(void))enriched, METH_FASTCALL, "the 6 fields -> Enriched"},
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
#undef STR
    return PyModule_Create(&module);
}

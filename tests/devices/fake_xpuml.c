/*
 * A stand-in for Kunlunxin's libxpuml.so (the XPU management library of the XRE driver), so the
 * agent's real ctypes code (agent/devices/kunlun.py) can be tested on a machine without an XPU.
 *
 * It exports the calls agent/devices/kunlun.py makes, with the ABI of xpuml API version 1 as the public
 * header describes it (github.com/kunlunxin/go-xpuml, pkg/xpuml/xpuml.h): xpumlReturn_t codes, the
 * xpumlDevice_t handle (a struct holding one pointer, passed by value), and the 128-byte info structs.
 * The struct definitions below are written from those field lists, not copied.
 *
 * Configuration: a text file named by $XPUML_FAKE_CONFIG, re-read whenever its mtime or size changes,
 * so a test changes a value, a state or a process list by rewriting it. One directive a line:
 *
 *   driver 5.0.21.10                  xpumlSystemGetDriverVersion
 *   version 1.1.0                     xpumlSystemGetXPUMLVersion
 *   init_fail 9                       xpumlInit returns 9 (DRIVER_NOT_LOADED)
 *   device 0 key=value ...            one device; keys: name uuid serial bus (dddddddd:bb:dd.f) minor
 *                                     model board mem_total mem_used util mem_util temp power_mw clock
 *                                     state (201 running, 205 in reset, 207 error, 208 in exception)
 *   process 0 pid=123 root_pid=456 mem=1048576 l3=0     a compute process on device 0
 *   unsupported GetPowerUsage [dev]   that call returns NOT_SUPPORTED (3), for every device or one
 *   fail GetState 15 [dev]            that call returns the code (15: XPU_IS_LOST)
 *   hang GetMemoryInfo [dev]          that call blocks until the directive is removed from the file
 *
 * A device that leaves the file answers XPU_IS_LOST on its old handle (it fell off the bus).
 * Built with -DFAKE_NO_NAME_UUID it lacks xpumlDeviceGetName, GetUUID and GetMinorNumber, like the
 * library of that public header (they are commented out there), so the agent's fallbacks are tested.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int xpumlReturn_t;
enum {
    OK = 0, UNINITIALIZED = 1, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, INSUFFICIENT_SIZE = 7,
    XPU_IS_LOST = 15, UNKNOWN = 999,
};

typedef struct { void *handle; } xpumlDevice_t;

typedef struct {
    unsigned int domain, bus, device, function, pciDeviceId, pciSubSystemId;
    char busId[32];
    unsigned long long reserved[9];
} xpumlPciInfo_t;

typedef struct {
    unsigned int xpu, memory;
    unsigned long long reserved[15];
} xpumlUtilization_t;

typedef struct {
    unsigned long long pageSizeGlobalMemory, totalGlobalMemory, freeGlobalMemory, usedGlobalMemory;
    unsigned long long pageSizeL3Memory, totalL3Memory, freeL3Memory, usedL3Memory;
    unsigned long long reserved[8];
} xpumlMemory_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGlobalMemory, usedL3Memory;
    unsigned int root_ns_pid, reserved_u32;
    unsigned long long reserved[12];
} xpumlProcessInfo_t;

typedef struct {
    int archId, boardId, modelId;
    unsigned int clusterCount, sdnnCount, dmaEngineCount, decoderCount, encoderCount, imgProcCount, maxVFCount;
    unsigned long long globalMemorySizeMB, l3MemorySizeMB;
    unsigned long long sn[2];
    unsigned long long reserved[7];
} xpumlDeviceAttributes_t;

_Static_assert(sizeof(xpumlPciInfo_t) == 128, "xpumlPciInfo_t is 128 bytes");
_Static_assert(sizeof(xpumlUtilization_t) == 128, "xpumlUtilization_t is 128 bytes");
_Static_assert(sizeof(xpumlMemory_t) == 128, "xpumlMemory_t is 128 bytes");
_Static_assert(sizeof(xpumlProcessInfo_t) == 128, "xpumlProcessInfo_t is 128 bytes");
_Static_assert(sizeof(xpumlDeviceAttributes_t) == 128, "xpumlDeviceAttributes_t is 128 bytes");

#define MAX_DEV 64
#define MAX_PROC 256
#define MAX_RULES 64

struct dev {
    int present;
    char name[96], uuid[96], serial[32], bus[32];
    unsigned int domain, busn, devn, fn, minor, util, mem_util, temp, power_mw, clock, state;
    int model, board;
    unsigned long long mem_total, mem_used;
};
struct proc { int dev; unsigned int pid, root_pid; unsigned long long mem, l3; };
struct rule { char kind[32], fn[64]; int code, dev; };  /* dev -1: every device */

static struct {
    char driver[80], version[80];
    int init_fail, ndev, nproc, nrule;
    struct dev devs[MAX_DEV];
    struct proc procs[MAX_PROC];
    struct rule rules[MAX_RULES];
} cfg;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct timespec seen_mtime;
static off_t seen_size = -1;
static int initialized;
static char slots[MAX_DEV];  /* a handle is &slots[index]: stable across reloads */

static void parse_device(char *rest)
{
    char *save = NULL, *tok = strtok_r(rest, " \t\n", &save);
    if (!tok) return;
    int i = atoi(tok);
    if (i < 0 || i >= MAX_DEV) return;
    struct dev *d = &cfg.devs[i];
    memset(d, 0, sizeof(*d));
    d->present = 1;
    d->state = 201;
    d->minor = (unsigned)i;
    d->model = 2;  /* XPUML_DEVICE_MODEL_KL2_R200 */
    d->board = 100;
    while ((tok = strtok_r(NULL, " \t\n", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "name")) snprintf(d->name, sizeof d->name, "%s", v);
        else if (!strcmp(k, "uuid")) snprintf(d->uuid, sizeof d->uuid, "%s", v);
        else if (!strcmp(k, "serial")) snprintf(d->serial, sizeof d->serial, "%s", v);
        else if (!strcmp(k, "bus")) {
            snprintf(d->bus, sizeof d->bus, "%s", v);
            sscanf(v, "%x:%x:%x.%x", &d->domain, &d->busn, &d->devn, &d->fn);
        }
        else if (!strcmp(k, "minor")) d->minor = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "model")) d->model = atoi(v);
        else if (!strcmp(k, "board")) d->board = atoi(v);
        else if (!strcmp(k, "mem_total")) d->mem_total = strtoull(v, NULL, 10);
        else if (!strcmp(k, "mem_used")) d->mem_used = strtoull(v, NULL, 10);
        else if (!strcmp(k, "util")) d->util = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "mem_util")) d->mem_util = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "temp")) d->temp = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "power_mw")) d->power_mw = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "clock")) d->clock = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "state")) d->state = (unsigned)strtoul(v, NULL, 10);
    }
    if (i + 1 > cfg.ndev) cfg.ndev = i + 1;
}

static void parse_process(char *rest)
{
    if (cfg.nproc >= MAX_PROC) return;
    char *save = NULL, *tok = strtok_r(rest, " \t\n", &save);
    if (!tok) return;
    struct proc *p = &cfg.procs[cfg.nproc++];
    memset(p, 0, sizeof(*p));
    p->dev = atoi(tok);
    while ((tok = strtok_r(NULL, " \t\n", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        if (!strcmp(tok, "pid")) p->pid = (unsigned)strtoul(eq + 1, NULL, 10);
        else if (!strcmp(tok, "root_pid")) p->root_pid = (unsigned)strtoul(eq + 1, NULL, 10);
        else if (!strcmp(tok, "mem")) p->mem = strtoull(eq + 1, NULL, 10);
        else if (!strcmp(tok, "l3")) p->l3 = strtoull(eq + 1, NULL, 10);
    }
}

static void parse_rule(const char *kind, char *rest)
{
    if (cfg.nrule >= MAX_RULES) return;
    struct rule *r = &cfg.rules[cfg.nrule];
    char fn[64] = "", a[32] = "", b[32] = "";
    int n = sscanf(rest, "%63s %31s %31s", fn, a, b);
    if (n < 1) return;
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    snprintf(r->fn, sizeof r->fn, "%s", fn);
    r->dev = -1;
    if (!strcmp(kind, "fail")) {
        if (n < 2) return;
        r->code = atoi(a);
        if (n >= 3) r->dev = atoi(b);
    } else if (n >= 2) {
        r->dev = atoi(a);
    }
    cfg.nrule++;
}

/* Re-read the file when it changed; caller holds mu. */
static void reload(void)
{
    const char *path = getenv("XPUML_FAKE_CONFIG");
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    if (st.st_size == seen_size && st.st_mtim.tv_sec == seen_mtime.tv_sec &&
        st.st_mtim.tv_nsec == seen_mtime.tv_nsec)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    memset(&cfg, 0, sizeof cfg);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char kind[32] = "";
        int off = 0;
        if (sscanf(line, "%31s %n", kind, &off) < 1 || kind[0] == '#') continue;
        char *rest = line + off;
        if (!strcmp(kind, "driver")) sscanf(rest, "%79s", cfg.driver);
        else if (!strcmp(kind, "version")) sscanf(rest, "%79s", cfg.version);
        else if (!strcmp(kind, "init_fail")) cfg.init_fail = atoi(rest);
        else if (!strcmp(kind, "device")) parse_device(rest);
        else if (!strcmp(kind, "process")) parse_process(rest);
        else if (!strcmp(kind, "unsupported") || !strcmp(kind, "fail") || !strcmp(kind, "hang"))
            parse_rule(kind, rest);
    }
    fclose(f);
    seen_size = st.st_size;
    seen_mtime = st.st_mtim;
}

static const struct rule *find_rule(const char *kind, const char *fn, int dev)
{
    for (int i = 0; i < cfg.nrule; i++) {
        const struct rule *r = &cfg.rules[i];
        if (!strcmp(r->kind, kind) && !strcmp(r->fn, fn) && (r->dev < 0 || r->dev == dev)) return r;
    }
    return NULL;
}

/*
 * Every exported call starts here: reload, block while a "hang" directive names it (without holding
 * the lock, so other threads and the test's rewrite go on), then apply "fail"/"unsupported".
 * Returns with mu held when *rc == OK.
 */
static int enter(const char *fn, int dev, xpumlReturn_t *rc)
{
    pthread_mutex_lock(&mu);
    reload();
    while (find_rule("hang", fn, dev)) {
        pthread_mutex_unlock(&mu);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&mu);
        reload();
    }
    const struct rule *r = find_rule("fail", fn, dev);
    *rc = r ? r->code : find_rule("unsupported", fn, dev) ? NOT_SUPPORTED : OK;
    if (*rc == OK && !initialized && strcmp(fn, "Init") != 0) *rc = UNINITIALIZED;
    if (*rc != OK) {
        pthread_mutex_unlock(&mu);
        return 0;
    }
    return 1;
}

static xpumlReturn_t leave(xpumlReturn_t rc)
{
    pthread_mutex_unlock(&mu);
    return rc;
}

static int dev_index(xpumlDevice_t d)
{
    char *p = (char *)d.handle;
    if (p < slots || p >= slots + MAX_DEV) return -1;
    return (int)(p - slots);
}

/* Device calls: look up the handle, then the rules for that device. */
#define DEV_ENTER(fnname)                                                         \
    int i = dev_index(device);                                                    \
    xpumlReturn_t rc;                                                             \
    if (i < 0) return INVALID_ARGUMENT;                                           \
    if (!enter(fnname, i, &rc)) return rc;                                        \
    if (!cfg.devs[i].present) return leave(XPU_IS_LOST);                          \
    struct dev *d = &cfg.devs[i];                                                 \
    (void)d

xpumlReturn_t xpumlInit(void)
{
    xpumlReturn_t rc;
    if (!enter("Init", -1, &rc)) return rc;
    if (cfg.init_fail) return leave(cfg.init_fail);
    initialized = 1;
    return leave(OK);
}

xpumlReturn_t xpumlShutdown(void)
{
    pthread_mutex_lock(&mu);
    initialized = 0;
    return leave(OK);
}

const char *xpumlErrorString(xpumlReturn_t r)
{
    switch (r) {
    case OK: return "Success";
    case UNINITIALIZED: return "Uninitialized";
    case INVALID_ARGUMENT: return "Invalid Argument";
    case NOT_SUPPORTED: return "Not Supported";
    case 9: return "Driver Not Loaded";
    case XPU_IS_LOST: return "XPU is lost";
    case 16: return "Reset Required";
    default: return "Unknown Error";
    }
}

static xpumlReturn_t copy_str(char *out, unsigned int len, const char *s)
{
    if (!out) return INVALID_ARGUMENT;
    if (strlen(s) + 1 > len) return INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return OK;
}

xpumlReturn_t xpumlSystemGetDriverVersion(char *version, unsigned int length)
{
    xpumlReturn_t rc;
    if (!enter("SystemGetDriverVersion", -1, &rc)) return rc;
    return leave(cfg.driver[0] ? copy_str(version, length, cfg.driver) : NOT_SUPPORTED);
}

xpumlReturn_t xpumlSystemGetXPUMLVersion(char *version, unsigned int length)
{
    xpumlReturn_t rc;
    if (!enter("SystemGetXPUMLVersion", -1, &rc)) return rc;
    return leave(cfg.version[0] ? copy_str(version, length, cfg.version) : NOT_SUPPORTED);
}

xpumlReturn_t xpumlDeviceGetCount(unsigned int *count)
{
    xpumlReturn_t rc;
    if (!enter("DeviceGetCount", -1, &rc)) return rc;
    if (!count) return leave(INVALID_ARGUMENT);
    unsigned int n = 0;
    for (int i = 0; i < cfg.ndev; i++) n += cfg.devs[i].present;
    *count = n;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetHandleByIndex(unsigned int index, xpumlDevice_t *device)
{
    xpumlReturn_t rc;
    if (!enter("DeviceGetHandleByIndex", (int)index, &rc)) return rc;
    /* The n-th present device, as a driver numbers what it finds. */
    unsigned int n = 0;
    for (int i = 0; i < cfg.ndev; i++) {
        if (!cfg.devs[i].present) continue;
        if (n++ == index) {
            device->handle = &slots[i];
            return leave(OK);
        }
    }
    return leave(INVALID_ARGUMENT);
}

#ifndef FAKE_NO_NAME_UUID
xpumlReturn_t xpumlDeviceGetName(xpumlDevice_t device, char *name, unsigned int length)
{
    DEV_ENTER("GetName");
    return leave(d->name[0] ? copy_str(name, length, d->name) : NOT_SUPPORTED);
}

xpumlReturn_t xpumlDeviceGetUUID(xpumlDevice_t device, char *uuid, unsigned int length)
{
    DEV_ENTER("GetUUID");
    return leave(d->uuid[0] ? copy_str(uuid, length, d->uuid) : NOT_SUPPORTED);
}

xpumlReturn_t xpumlDeviceGetMinorNumber(xpumlDevice_t device, unsigned int *minor)
{
    DEV_ENTER("GetMinorNumber");
    *minor = d->minor;
    return leave(OK);
}
#endif

xpumlReturn_t xpumlDeviceGetSerial(xpumlDevice_t device, char *serial, unsigned int length)
{
    DEV_ENTER("GetSerial");
    return leave(d->serial[0] ? copy_str(serial, length, d->serial) : NOT_SUPPORTED);
}

xpumlReturn_t xpumlDeviceGetAttributes(xpumlDevice_t device, xpumlDeviceAttributes_t *a)
{
    DEV_ENTER("GetAttributes");
    memset(a, 0, sizeof(*a));
    a->archId = 2;
    a->boardId = d->board;
    a->modelId = d->model;
    a->globalMemorySizeMB = d->mem_total >> 20;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetPciInfo(xpumlDevice_t device, xpumlPciInfo_t *pci)
{
    DEV_ENTER("GetPciInfo");
    memset(pci, 0, sizeof(*pci));
    pci->domain = d->domain;
    pci->bus = d->busn;
    pci->device = d->devn;
    pci->function = d->fn;
    pci->pciDeviceId = 0x36841d22;  /* device 0x3684 (Kunlun2), vendor 0x1d22 (Baidu) */
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%01X", d->domain, d->busn, d->devn, d->fn);
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetMemoryInfo(xpumlDevice_t device, xpumlMemory_t *m)
{
    DEV_ENTER("GetMemoryInfo");
    memset(m, 0, sizeof(*m));
    m->pageSizeGlobalMemory = 4096;
    m->totalGlobalMemory = d->mem_total;
    m->usedGlobalMemory = d->mem_used;
    m->freeGlobalMemory = d->mem_total - d->mem_used;
    m->totalL3Memory = 64ull << 20;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetUtilizationRates(xpumlDevice_t device, xpumlUtilization_t *u)
{
    DEV_ENTER("GetUtilizationRates");
    memset(u, 0, sizeof(*u));
    u->xpu = d->util;
    u->memory = d->mem_util;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetTemperature(xpumlDevice_t device, int sensor, unsigned int *temp)
{
    DEV_ENTER("GetTemperature");
    if (sensor != 0) return leave(INVALID_ARGUMENT);
    *temp = d->temp;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetPowerUsage(xpumlDevice_t device, unsigned int *power)
{
    DEV_ENTER("GetPowerUsage");
    *power = d->power_mw;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetClockInfo(xpumlDevice_t device, int type, unsigned int *clock)
{
    DEV_ENTER("GetClockInfo");
    if (type != 0) return leave(INVALID_ARGUMENT);
    *clock = d->clock;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetState(xpumlDevice_t device, int *state)
{
    DEV_ENTER("GetState");
    *state = (int)d->state;
    return leave(OK);
}

xpumlReturn_t xpumlDeviceGetComputeRunningProcesses(xpumlDevice_t device, unsigned int *count,
                                                    xpumlProcessInfo_t *infos)
{
    DEV_ENTER("GetComputeRunningProcesses");
    if (!count) return leave(INVALID_ARGUMENT);
    unsigned int n = 0;
    for (int k = 0; k < cfg.nproc; k++) n += cfg.procs[k].dev == i;
    if (n > *count) {
        *count = n;
        return leave(INSUFFICIENT_SIZE);
    }
    unsigned int j = 0;
    for (int k = 0; k < cfg.nproc; k++) {
        const struct proc *p = &cfg.procs[k];
        if (p->dev != i) continue;
        memset(&infos[j], 0, sizeof(infos[j]));
        infos[j].pid = p->pid;
        infos[j].root_ns_pid = p->root_pid;
        infos[j].usedGlobalMemory = p->mem;
        infos[j].usedL3Memory = p->l3;
        j++;
    }
    *count = n;
    return leave(OK);
}

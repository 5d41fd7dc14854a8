/* A stand-in for NVIDIA's libnvidia-ml.so.1, for tests on machines without a GPU.
 *
 * The real pynvml loads it (LD_LIBRARY_PATH, or agent/devices/nvidia.py's explicit library path) and
 * calls it exactly as it calls NVML: same symbol names, same argument lists, same struct layouts and
 * return codes as NVML's public API (nvml.h, mirrored by pynvml's ctypes definitions). Only what
 * agent/devices/nvidia.py calls is here; any other symbol is absent, so pynvml reports
 * NVML_ERROR_FUNCTION_NOT_FOUND for it, as with an old driver.
 *
 * Configuration: a text file named by $FAKE_NVML_CONFIG, read at nvmlInit and again whenever its
 * mtime or size changes (so a test changes values, processes or hangs while the agent runs). One
 * directive a line, '#' starts a comment:
 *
 *   init_error <code>            nvmlInit returns <code> (9: driver not loaded)
 *   driver_version <text>        cuda_version <int, 12040 = 12.4>
 *   events <path>                event lines appended by the test, delivered by nvmlEventSetWait_v2:
 *                                "<device index> xid <n> [gi ci]" | "<index> sbe" | "<index> dbe" |
 *                                "<index> unavailable" | "<index> recovery <action>"
 *   hang_max_ms <ms>             a hung call returns after this long at most (default 60000)
 *   device                       starts the next device (index 0, 1, ...); the lines below are its:
 *     uuid|name|serial|pci_bus_id <text>     minor|mem_total|temperature|... <int> (int_fields)
 *     event_types <mask>         the nvmlEventType bits this GPU supports (default: all the fake has)
 *     process compute|graphics <pid> <used bytes|na> [gi ci]
 *     mig <gpu instance id> <compute instance id> <uuid> <memory total> [profile, e.g. 1g.10gb]
 *     unsupported <function>     the call returns NVML_ERROR_NOT_SUPPORTED for this device
 *     error <function> <code>    the call returns <code>
 *     hang <function>            the call blocks while this line is in the file (re-read every 10 ms)
 *                                (<function> written "mig:<name>": the rule is for this GPU's MIG handles)
 *
 * The driver must never kill the agent: a malformed line is reported on stderr and makes nvmlInit
 * fail with NVML_ERROR_UNKNOWN, so a broken test config is seen at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* nvmlReturn_t values used here (NVML's numbering) */
enum {
    OK = 0, E_UNINIT = 1, E_INVALID = 2, E_NOT_SUPPORTED = 3, E_NOT_FOUND = 6, E_INSUFFICIENT = 7,
    E_DRIVER_NOT_LOADED = 9, E_TIMEOUT = 10, E_GPU_LOST = 15, E_VERSION = 25, E_UNKNOWN = 999,
};

#define MAX_DEV 16
#define MAX_MIG 7
#define MAX_PROC 64
#define MAX_RULES 32
#define TXT 96

typedef struct {  /* nvmlPciInfo_t */
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_info_t;

typedef struct { unsigned long long total, free, used; } memory_t;  /* nvmlMemory_t */
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } memory_v2_t;
#define MEMORY_V2_VERSION (unsigned int)(sizeof(memory_v2_t) | (2u << 24))
typedef struct { unsigned int gpu, memory; } utilization_t;  /* nvmlUtilization_t */
typedef struct {  /* nvmlProcessInfo_v2_t == _v3 */
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} process_info_t;

struct fake_dev;
typedef struct {  /* nvmlEventData_t */
    struct fake_dev *device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} event_data_t;

typedef struct { char fn[64]; int code; int hang; } rule_t;
typedef struct { int graphics; unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;

/* A handle (nvmlDevice_t) points at one of these; `parent` is set on MIG device handles. Handles stay
 * valid across reloads: the arrays are static and refilled in place. */
typedef struct fake_dev {
    struct fake_dev *parent;
    int index, present;
    char uuid[TXT], name[TXT], serial[TXT], pci_bus_id[32];
    unsigned int gi, ci;
    long long v_minor, pci_device_id, pci_subsystem_id, mem_total, mem_used, mem_reserved, power_limit_mw,
        enforced_limit_mw, ecc_mode, ecc_pending, mig_mode, gpu_util, mem_util, temperature, power_mw, energy_mj,
        sm_clock, mem_clock, throttle, pcie_replay, ecc_sbe_volatile, ecc_dbe_volatile, ecc_sbe_aggregate,
        ecc_dbe_aggregate, retired_sbe, retired_dbe, retired_pending, remap_corr, remap_unc, remap_pending,
        remap_failure, event_types;
    int nproc, nmig, nrules;
    proc_t procs[MAX_PROC];
    struct fake_dev *migs[MAX_MIG];
    rule_t rules[MAX_RULES];
} fake_dev_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fake_dev_t devs[MAX_DEV], migdevs[MAX_DEV][MAX_MIG];
static int ndev, init_error, initialized, cuda_version = 12040;
static long hang_max_ms = 60000;
static char driver_version[TXT] = "550.54.15", events_path[512];
static struct timespec cfg_mtime;
static off_t cfg_size = -1;
static long events_offset;  /* how far the event file has been delivered */

static void set_text(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src);
}

#define FIELD(n) {#n, offsetof(fake_dev_t, n)}
static const struct { const char *key; size_t off; } int_fields[] = {
    {"minor", offsetof(fake_dev_t, v_minor)}, FIELD(pci_device_id), FIELD(pci_subsystem_id), FIELD(mem_total),
    FIELD(mem_used), FIELD(mem_reserved), FIELD(power_limit_mw), FIELD(enforced_limit_mw), FIELD(ecc_mode),
    FIELD(ecc_pending), FIELD(mig_mode), FIELD(gpu_util), FIELD(mem_util), FIELD(temperature), FIELD(power_mw),
    FIELD(energy_mj), FIELD(sm_clock), FIELD(mem_clock), FIELD(throttle), FIELD(pcie_replay),
    FIELD(ecc_sbe_volatile), FIELD(ecc_dbe_volatile), FIELD(ecc_sbe_aggregate), FIELD(ecc_dbe_aggregate),
    FIELD(retired_sbe), FIELD(retired_dbe), FIELD(retired_pending), FIELD(remap_corr), FIELD(remap_unc),
    FIELD(remap_pending), FIELD(remap_failure), FIELD(event_types),
};

static int bad(int lineno, const char *line) {
    fprintf(stderr, "fake_nvml: config line %d not understood: %s\n", lineno, line);
    return -1;
}

static int parse_line(char *line, int lineno, fake_dev_t **cur) {
    char key[64], rest[512] = "";
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    if (sscanf(line, " %63s %511[^\n]", key, rest) < 1) return 0;
    size_t n = strlen(rest);
    while (n && (rest[n - 1] == ' ' || rest[n - 1] == '\t' || rest[n - 1] == '\r')) rest[--n] = 0;
    fake_dev_t *d = *cur;
    if (!strcmp(key, "init_error")) { init_error = atoi(rest); return 0; }
    if (!strcmp(key, "driver_version")) { set_text(driver_version, sizeof driver_version, rest); return 0; }
    if (!strcmp(key, "cuda_version")) { cuda_version = atoi(rest); return 0; }
    if (!strcmp(key, "hang_max_ms")) { hang_max_ms = atol(rest); return 0; }
    if (!strcmp(key, "events")) { set_text(events_path, sizeof events_path, rest); return 0; }
    if (!strcmp(key, "device")) {
        if (ndev >= MAX_DEV) return bad(lineno, line);
        fake_dev_t *nd = &devs[ndev];
        memset(nd, 0, sizeof *nd);
        nd->index = ndev++;
        nd->present = 1;
        nd->v_minor = nd->index;
        nd->ecc_mode = -1;  /* unset: the call answers NOT_SUPPORTED, like a GPU without ECC */
        nd->mig_mode = -1;
        *cur = nd;
        return 0;
    }
    if (!d) return bad(lineno, line);
    if (!strcmp(key, "uuid")) { set_text(d->uuid, sizeof d->uuid, rest); return 0; }
    if (!strcmp(key, "name")) { set_text(d->name, sizeof d->name, rest); return 0; }
    if (!strcmp(key, "serial")) { set_text(d->serial, sizeof d->serial, rest); return 0; }
    if (!strcmp(key, "pci_bus_id")) { set_text(d->pci_bus_id, sizeof d->pci_bus_id, rest); return 0; }
    for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++) {
        if (!strcmp(key, int_fields[i].key)) {
            char *end;
            errno = 0;
            long long v = strtoll(rest, &end, 0);
            if (errno || end == rest || *end) return bad(lineno, line);
            *(long long *)((char *)d + int_fields[i].off) = v;
            return 0;
        }
    }
    if (!strcmp(key, "process")) {
        char kind[16], used[32];
        unsigned int pid, gi = 0xFFFFFFFFu, ci = 0xFFFFFFFFu;
        int got = sscanf(rest, "%15s %u %31s %u %u", kind, &pid, used, &gi, &ci);
        if ((got != 3 && got != 5) || d->nproc >= MAX_PROC) return bad(lineno, line);
        proc_t *p = &d->procs[d->nproc++];
        p->graphics = !strcmp(kind, "graphics");
        p->pid = pid;
        p->used = !strcmp(used, "na") ? 0xFFFFFFFFFFFFFFFFull : strtoull(used, NULL, 0);
        p->gi = gi;
        p->ci = ci;
        return 0;
    }
    if (!strcmp(key, "mig")) {
        unsigned int gi, ci;
        char uuid[TXT], profile[16] = "";
        long long total;
        int got = sscanf(rest, "%u %u %95s %lld %15s", &gi, &ci, uuid, &total, profile);
        if (got < 4 || d->nmig >= MAX_MIG) return bad(lineno, line);
        fake_dev_t *m = &migdevs[d->index][d->nmig];
        memset(m, 0, sizeof *m);
        m->parent = d;
        m->index = d->nmig;
        m->present = 1;
        m->gi = gi;
        m->ci = ci;
        m->mem_total = total;
        set_text(m->uuid, sizeof m->uuid, uuid);
        snprintf(m->name, sizeof m->name, "%.60s MIG %s", d->name, profile);  /* "... MIG 1g.10gb", as NVML names them */
        d->migs[d->nmig++] = m;
        return 0;
    }
    if (!strcmp(key, "unsupported") || !strcmp(key, "error") || !strcmp(key, "hang")) {
        if (d->nrules >= MAX_RULES) return bad(lineno, line);
        rule_t *r = &d->rules[d->nrules];
        int code = E_NOT_SUPPORTED;
        if (!strcmp(key, "error")) {
            if (sscanf(rest, "%63s %d", r->fn, &code) != 2) return bad(lineno, line);
        } else if (sscanf(rest, "%63s", r->fn) != 1) {
            return bad(lineno, line);
        }
        r->code = code;
        r->hang = !strcmp(key, "hang");
        d->nrules++;
        return 0;
    }
    return bad(lineno, line);
}

/* Re-reads the config when it changed since the last read. Called with `mu` held. Returns 0 or -1. */
static int reload(int force) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    struct stat st;
    if (!path || stat(path, &st) != 0) return -1;
    if (!force && st.st_size == cfg_size && st.st_mtim.tv_sec == cfg_mtime.tv_sec &&
        st.st_mtim.tv_nsec == cfg_mtime.tv_nsec)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    for (int i = 0; i < MAX_DEV; i++) {  /* gone devices keep their memory, marked absent */
        devs[i].present = 0;
        for (int j = 0; j < MAX_MIG; j++) migdevs[i][j].present = 0;
    }
    ndev = 0;
    init_error = 0;
    events_path[0] = 0;
    fake_dev_t *cur = NULL;
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        if (parse_line(line, ++lineno, &cur) != 0) rc = -1;
    }
    fclose(f);
    cfg_size = st.st_size;
    cfg_mtime = st.st_mtim;
    return rc;
}

/* The config's rule for `fn` on this device. A MIG device handle follows its GPU's rules written
 * "mig:<fn>", and answers NOT_SUPPORTED for what NVML does not answer per MIG instance. */
static const char *mig_calls[] = {
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceIsMigDeviceHandle", "nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
};

static int rule_for(const fake_dev_t *d, const char *fn, int *hang) {
    const fake_dev_t *owner = d->parent ? d->parent : d;
    char name[80];
    snprintf(name, sizeof name, "%s%s", d->parent ? "mig:" : "", fn);
    *hang = 0;
    for (int i = 0; i < owner->nrules; i++) {
        if (!strcmp(owner->rules[i].fn, name)) {
            *hang = owner->rules[i].hang;
            return owner->rules[i].code;
        }
    }
    if (d->parent) {
        for (size_t i = 0; i < sizeof mig_calls / sizeof mig_calls[0]; i++)
            if (!strcmp(mig_calls[i], fn)) return OK;
        return E_NOT_SUPPORTED;
    }
    return OK;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Every device call starts here: takes `mu`, checks the handle, applies the config's rules for `fn`.
 * A hung call waits with `mu` released, so other calls (other devices, other threads) go on, as they
 * do when one device's driver call is stuck in the kernel. */
static int enter(fake_dev_t *d, const char *fn) {
    pthread_mutex_lock(&mu);
    if (!initialized) return E_UNINIT;
    reload(0);
    if (!d || !d->present) return E_INVALID;
    int hang, code = rule_for(d, fn, &hang);
    if (hang) {
        long start = now_ms();
        while (hang && now_ms() - start < hang_max_ms) {
            pthread_mutex_unlock(&mu);
            sleep_ms(10);
            pthread_mutex_lock(&mu);
            reload(0);
            code = rule_for(d, fn, &hang);
        }
        if (hang) code = E_TIMEOUT;
        else code = OK;
    }
    return code;
}

#define ENTER(d, fn)                                \
    do {                                            \
        int rc_ = enter((fake_dev_t *)(d), fn);     \
        if (rc_ != OK) {                            \
            pthread_mutex_unlock(&mu);              \
            return rc_;                             \
        }                                           \
    } while (0)
#define LEAVE(rc) do { pthread_mutex_unlock(&mu); return (rc); } while (0)

static int copy_text(char *dst, unsigned int len, const char *src) {
    if (!dst) return E_INVALID;
    if (strlen(src) + 1 > len) return E_INSUFFICIENT;
    memcpy(dst, src, strlen(src) + 1);
    return OK;
}

/* ---- library ---- */

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&mu);
    int rc = reload(1);
    if (rc != 0) LEAVE(getenv("FAKE_NVML_CONFIG") ? E_UNKNOWN : E_DRIVER_NOT_LOADED);
    if (init_error) LEAVE(init_error);
    initialized++;
    events_offset = 0;
    LEAVE(OK);
}

int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

int nvmlShutdown(void) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    initialized--;
    LEAVE(OK);
}

const char *nvmlErrorString(int rc) {
    switch (rc) {
    case OK: return "Success";
    case E_UNINIT: return "Uninitialized";
    case E_INVALID: return "Invalid Argument";
    case E_NOT_SUPPORTED: return "Not Supported";
    case E_NOT_FOUND: return "Not Found";
    case E_INSUFFICIENT: return "Insufficient Size";
    case E_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case E_TIMEOUT: return "Timeout";
    case E_GPU_LOST: return "GPU is lost";
    case E_VERSION: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

int nvmlSystemGetDriverVersion(char *version, unsigned int len) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    LEAVE(copy_text(version, len, driver_version));
}

int nvmlSystemGetCudaDriverVersion(int *v) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    if (!v) LEAVE(E_INVALID);
    *v = cuda_version;
    LEAVE(OK);
}

int nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }

int nvmlDeviceGetCount_v2(unsigned int *count) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    reload(0);
    if (!count) LEAVE(E_INVALID);
    *count = (unsigned int)ndev;
    LEAVE(OK);
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, fake_dev_t **h) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    reload(0);
    if (!h || index >= (unsigned int)ndev) LEAVE(E_INVALID);
    *h = &devs[index];
    LEAVE(OK);
}

int nvmlDeviceGetHandleByUUID(const char *uuid, fake_dev_t **h) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    reload(0);
    if (!uuid || !h) LEAVE(E_INVALID);
    for (int i = 0; i < ndev; i++) {
        if (!strcmp(devs[i].uuid, uuid)) {
            *h = &devs[i];
            LEAVE(OK);
        }
        for (int j = 0; j < devs[i].nmig; j++) {  /* NVML takes a MIG device's UUID here too */
            if (!strcmp(devs[i].migs[j]->uuid, uuid)) {
                *h = devs[i].migs[j];
                LEAVE(OK);
            }
        }
    }
    LEAVE(E_NOT_FOUND);
}

/* ---- identity ---- */

int nvmlDeviceGetName(fake_dev_t *d, char *name, unsigned int len) {
    ENTER(d, "nvmlDeviceGetName");
    LEAVE(copy_text(name, len, d->name));
}

int nvmlDeviceGetUUID(fake_dev_t *d, char *uuid, unsigned int len) {
    ENTER(d, "nvmlDeviceGetUUID");
    LEAVE(copy_text(uuid, len, d->uuid));
}

int nvmlDeviceGetSerial(fake_dev_t *d, char *serial, unsigned int len) {
    ENTER(d, "nvmlDeviceGetSerial");
    LEAVE(copy_text(serial, len, d->serial));
}

int nvmlDeviceGetMinorNumber(fake_dev_t *d, unsigned int *minor) {
    ENTER(d, "nvmlDeviceGetMinorNumber");
    *minor = (unsigned int)d->v_minor;
    LEAVE(OK);
}

int nvmlDeviceGetPciInfo_v3(fake_dev_t *d, pci_info_t *pci) {
    ENTER(d, "nvmlDeviceGetPciInfo_v3");
    memset(pci, 0, sizeof *pci);
    unsigned int dom = 0, bus = 0, dv = 0, fn = 0;
    sscanf(d->pci_bus_id, "%x:%x:%x.%x", &dom, &bus, &dv, &fn);
    pci->domain = dom;
    pci->bus = bus;
    pci->device = dv;
    pci->pciDeviceId = (unsigned int)d->pci_device_id;
    pci->pciSubSystemId = (unsigned int)d->pci_subsystem_id;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.%x", dom, bus, dv, fn);
    set_text(pci->busId, sizeof pci->busId, d->pci_bus_id);
    LEAVE(OK);
}

int nvmlDeviceGetMemoryInfo(fake_dev_t *d, memory_t *m) {
    ENTER(d, "nvmlDeviceGetMemoryInfo");
    m->total = (unsigned long long)d->mem_total;
    m->used = (unsigned long long)(d->mem_used + d->mem_reserved);  /* v1 counts reserved memory as used */
    m->free = m->total - m->used;
    LEAVE(OK);
}

int nvmlDeviceGetMemoryInfo_v2(fake_dev_t *d, memory_v2_t *m) {
    ENTER(d, "nvmlDeviceGetMemoryInfo_v2");
    if (m->version != MEMORY_V2_VERSION) LEAVE(E_VERSION);
    m->total = (unsigned long long)d->mem_total;
    m->reserved = (unsigned long long)d->mem_reserved;
    m->used = (unsigned long long)d->mem_used;
    m->free = m->total - m->reserved - m->used;
    LEAVE(OK);
}

int nvmlDeviceGetPowerManagementLimit(fake_dev_t *d, unsigned int *mw) {
    ENTER(d, "nvmlDeviceGetPowerManagementLimit");
    *mw = (unsigned int)d->power_limit_mw;
    LEAVE(OK);
}

int nvmlDeviceGetEnforcedPowerLimit(fake_dev_t *d, unsigned int *mw) {
    ENTER(d, "nvmlDeviceGetEnforcedPowerLimit");
    *mw = (unsigned int)(d->enforced_limit_mw ? d->enforced_limit_mw : d->power_limit_mw);
    LEAVE(OK);
}

int nvmlDeviceGetEccMode(fake_dev_t *d, int *current, int *pending) {
    ENTER(d, "nvmlDeviceGetEccMode");
    if (d->ecc_mode < 0) LEAVE(E_NOT_SUPPORTED);
    *current = (int)d->ecc_mode;
    *pending = (int)(d->ecc_pending ? d->ecc_pending : d->ecc_mode);
    LEAVE(OK);
}

/* ---- MIG ---- */

int nvmlDeviceGetMigMode(fake_dev_t *d, unsigned int *current, unsigned int *pending) {
    ENTER(d, "nvmlDeviceGetMigMode");
    if (d->mig_mode < 0) LEAVE(E_NOT_SUPPORTED);
    *current = *pending = (unsigned int)d->mig_mode;
    LEAVE(OK);
}

int nvmlDeviceGetMaxMigDeviceCount(fake_dev_t *d, unsigned int *count) {
    ENTER(d, "nvmlDeviceGetMaxMigDeviceCount");
    if (d->mig_mode < 0) LEAVE(E_NOT_SUPPORTED);
    *count = MAX_MIG;
    LEAVE(OK);
}

int nvmlDeviceGetMigDeviceHandleByIndex(fake_dev_t *d, unsigned int index, fake_dev_t **mig) {
    ENTER(d, "nvmlDeviceGetMigDeviceHandleByIndex");
    if (d->mig_mode != 1) LEAVE(E_INVALID);
    if (index >= (unsigned int)d->nmig) LEAVE(E_NOT_FOUND);
    *mig = d->migs[index];
    LEAVE(OK);
}

int nvmlDeviceIsMigDeviceHandle(fake_dev_t *d, unsigned int *is_mig) {
    ENTER(d, "nvmlDeviceIsMigDeviceHandle");
    *is_mig = d->parent != NULL;
    LEAVE(OK);
}

int nvmlDeviceGetGpuInstanceId(fake_dev_t *d, unsigned int *id) {
    ENTER(d, "nvmlDeviceGetGpuInstanceId");
    if (!d->parent) LEAVE(E_NOT_SUPPORTED);
    *id = d->gi;
    LEAVE(OK);
}

int nvmlDeviceGetComputeInstanceId(fake_dev_t *d, unsigned int *id) {
    ENTER(d, "nvmlDeviceGetComputeInstanceId");
    if (!d->parent) LEAVE(E_NOT_SUPPORTED);
    *id = d->ci;
    LEAVE(OK);
}

/* ---- samples ---- */

int nvmlDeviceGetUtilizationRates(fake_dev_t *d, utilization_t *u) {
    ENTER(d, "nvmlDeviceGetUtilizationRates");
    u->gpu = (unsigned int)d->gpu_util;
    u->memory = (unsigned int)d->mem_util;
    LEAVE(OK);
}

int nvmlDeviceGetTemperature(fake_dev_t *d, int sensor, unsigned int *t) {
    ENTER(d, "nvmlDeviceGetTemperature");
    if (sensor != 0) LEAVE(E_INVALID);  /* NVML_TEMPERATURE_GPU */
    *t = (unsigned int)d->temperature;
    LEAVE(OK);
}

int nvmlDeviceGetPowerUsage(fake_dev_t *d, unsigned int *mw) {
    ENTER(d, "nvmlDeviceGetPowerUsage");
    *mw = (unsigned int)d->power_mw;
    LEAVE(OK);
}

int nvmlDeviceGetTotalEnergyConsumption(fake_dev_t *d, unsigned long long *mj) {
    ENTER(d, "nvmlDeviceGetTotalEnergyConsumption");
    *mj = (unsigned long long)d->energy_mj;
    LEAVE(OK);
}

int nvmlDeviceGetClockInfo(fake_dev_t *d, int type, unsigned int *mhz) {
    ENTER(d, "nvmlDeviceGetClockInfo");
    if (type == 1) *mhz = (unsigned int)d->sm_clock;        /* NVML_CLOCK_SM */
    else if (type == 2) *mhz = (unsigned int)d->mem_clock;  /* NVML_CLOCK_MEM */
    else LEAVE(E_INVALID);
    LEAVE(OK);
}

int nvmlDeviceGetCurrentClocksEventReasons(fake_dev_t *d, unsigned long long *mask) {
    ENTER(d, "nvmlDeviceGetCurrentClocksEventReasons");
    *mask = (unsigned long long)d->throttle;
    LEAVE(OK);
}

int nvmlDeviceGetCurrentClocksThrottleReasons(fake_dev_t *d, unsigned long long *mask) {
    ENTER(d, "nvmlDeviceGetCurrentClocksThrottleReasons");
    *mask = (unsigned long long)d->throttle;
    LEAVE(OK);
}

int nvmlDeviceGetPcieReplayCounter(fake_dev_t *d, unsigned int *n) {
    ENTER(d, "nvmlDeviceGetPcieReplayCounter");
    *n = (unsigned int)d->pcie_replay;
    LEAVE(OK);
}

int nvmlDeviceGetTotalEccErrors(fake_dev_t *d, int error_type, int counter_type, unsigned long long *n) {
    ENTER(d, "nvmlDeviceGetTotalEccErrors");
    if (d->ecc_mode < 0) LEAVE(E_NOT_SUPPORTED);
    /* error_type: 0 corrected (single-bit), 1 uncorrected (double-bit); counter_type: 0 volatile, 1 aggregate */
    if (error_type == 0 && counter_type == 0) *n = (unsigned long long)d->ecc_sbe_volatile;
    else if (error_type == 1 && counter_type == 0) *n = (unsigned long long)d->ecc_dbe_volatile;
    else if (error_type == 0 && counter_type == 1) *n = (unsigned long long)d->ecc_sbe_aggregate;
    else if (error_type == 1 && counter_type == 1) *n = (unsigned long long)d->ecc_dbe_aggregate;
    else LEAVE(E_INVALID);
    LEAVE(OK);
}

int nvmlDeviceGetRetiredPages(fake_dev_t *d, int cause, unsigned int *count, unsigned long long *addresses) {
    ENTER(d, "nvmlDeviceGetRetiredPages");
    long long have = cause == 0 ? d->retired_sbe : cause == 1 ? d->retired_dbe : -1;
    if (have < 0) LEAVE(E_INVALID);
    if (!addresses || *count < (unsigned int)have) {
        *count = (unsigned int)have;
        LEAVE(have ? E_INSUFFICIENT : OK);
    }
    for (long long i = 0; i < have; i++) addresses[i] = 0x100000ull * (unsigned long long)(i + 1) + (unsigned)cause;
    *count = (unsigned int)have;
    LEAVE(OK);
}

int nvmlDeviceGetRetiredPagesPendingStatus(fake_dev_t *d, int *pending) {
    ENTER(d, "nvmlDeviceGetRetiredPagesPendingStatus");
    *pending = (int)d->retired_pending;
    LEAVE(OK);
}

int nvmlDeviceGetRemappedRows(fake_dev_t *d, unsigned int *corr, unsigned int *unc, unsigned int *pending,
                              unsigned int *failure) {
    ENTER(d, "nvmlDeviceGetRemappedRows");
    *corr = (unsigned int)d->remap_corr;
    *unc = (unsigned int)d->remap_unc;
    *pending = (unsigned int)d->remap_pending;
    *failure = (unsigned int)d->remap_failure;
    LEAVE(OK);
}

/* A GPU's handle lists every process (in MIG mode with each one's instance ids: NVML's aggregate answer
 * to a privileged caller); a MIG device's handle lists the processes in its own instance. */
static int in_instance(const fake_dev_t *d, const proc_t *p) {
    return !d->parent || (p->gi == d->gi && (p->ci == 0xFFFFFFFFu || p->ci == d->ci));
}

static int running(fake_dev_t *d, int graphics, unsigned int *count, process_info_t *infos) {
    const fake_dev_t *owner = d->parent ? d->parent : d;
    unsigned int have = 0;
    for (int i = 0; i < owner->nproc; i++)
        have += owner->procs[i].graphics == graphics && in_instance(d, &owner->procs[i]);
    if (!infos || *count < have) {
        *count = have;
        LEAVE(have ? E_INSUFFICIENT : OK);
    }
    unsigned int k = 0;
    for (int i = 0; i < owner->nproc; i++) {
        const proc_t *p = &owner->procs[i];
        if (p->graphics != graphics || !in_instance(d, p)) continue;
        infos[k].pid = p->pid;
        infos[k].usedGpuMemory = p->used;
        infos[k].gpuInstanceId = p->gi;
        infos[k].computeInstanceId = p->ci;
        k++;
    }
    *count = k;
    LEAVE(OK);
}

int nvmlDeviceGetComputeRunningProcesses_v3(fake_dev_t *d, unsigned int *count, process_info_t *infos) {
    ENTER(d, "nvmlDeviceGetComputeRunningProcesses_v3");
    return running(d, 0, count, infos);
}

int nvmlDeviceGetGraphicsRunningProcesses_v3(fake_dev_t *d, unsigned int *count, process_info_t *infos) {
    ENTER(d, "nvmlDeviceGetGraphicsRunningProcesses_v3");
    return running(d, 1, count, infos);
}

/* R450-R470 drivers: the same records (nvmlProcessInfo_v2_t has the layout of _v3's) */
int nvmlDeviceGetComputeRunningProcesses_v2(fake_dev_t *d, unsigned int *count, process_info_t *infos) {
    ENTER(d, "nvmlDeviceGetComputeRunningProcesses_v2");
    return running(d, 0, count, infos);
}

int nvmlDeviceGetGraphicsRunningProcesses_v2(fake_dev_t *d, unsigned int *count, process_info_t *infos) {
    ENTER(d, "nvmlDeviceGetGraphicsRunningProcesses_v2");
    return running(d, 1, count, infos);
}

/* ---- events ---- */

#define EV_SBE 0x1ull
#define EV_DBE 0x2ull
#define EV_XID 0x8ull
#define EV_UNAVAILABLE 0x4000ull
#define EV_RECOVERY 0x8000ull
#define EV_SUPPORTED (EV_SBE | EV_DBE | EV_XID | EV_UNAVAILABLE | EV_RECOVERY)

typedef struct { unsigned long long mask[MAX_DEV]; } event_set_t;

int nvmlEventSetCreate(event_set_t **set) {
    pthread_mutex_lock(&mu);
    if (!initialized) LEAVE(E_UNINIT);
    if (!set) LEAVE(E_INVALID);
    *set = calloc(1, sizeof(event_set_t));
    LEAVE(*set ? OK : E_UNKNOWN);
}

int nvmlEventSetFree(event_set_t *set) {
    free(set);
    return OK;
}

int nvmlDeviceGetSupportedEventTypes(fake_dev_t *d, unsigned long long *types) {
    ENTER(d, "nvmlDeviceGetSupportedEventTypes");
    *types = d->event_types ? (unsigned long long)d->event_types & EV_SUPPORTED : EV_SUPPORTED;
    LEAVE(OK);
}

int nvmlDeviceRegisterEvents(fake_dev_t *d, unsigned long long types, event_set_t *set) {
    ENTER(d, "nvmlDeviceRegisterEvents");
    if (!set || d->parent) LEAVE(E_INVALID);
    unsigned long long supported = d->event_types ? (unsigned long long)d->event_types & EV_SUPPORTED : EV_SUPPORTED;
    if (types & ~supported) LEAVE(E_NOT_SUPPORTED);
    set->mask[d->index] |= types;
    LEAVE(OK);
}

/* One complete line of the events file past `events_offset`, parsed into `out`; 1 if one was delivered. */
static int next_event(event_set_t *set, event_data_t *out) {
    if (!events_path[0]) return 0;
    FILE *f = fopen(events_path, "r");
    if (!f) return 0;
    int delivered = 0;
    char line[256];
    while (!delivered && fseek(f, events_offset, SEEK_SET) == 0 && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (!n || line[n - 1] != '\n') break;  /* a line still being written: next time */
        events_offset += (long)n;
        int index;
        char kind[32];
        unsigned long long data = 0;
        unsigned int gi = 0xFFFFFFFFu, ci = 0xFFFFFFFFu;
        int got = sscanf(line, "%d %31s %llu %u %u", &index, kind, &data, &gi, &ci);
        if (got < 2 || index < 0 || index >= ndev) continue;
        unsigned long long type = !strcmp(kind, "xid") ? EV_XID : !strcmp(kind, "sbe") ? EV_SBE
                                 : !strcmp(kind, "dbe") ? EV_DBE : !strcmp(kind, "unavailable") ? EV_UNAVAILABLE
                                 : !strcmp(kind, "recovery") ? EV_RECOVERY : 0;
        if (!(set->mask[index] & type)) continue;  /* not registered: NVML would not report it */
        out->device = &devs[index];
        out->eventType = type;
        out->eventData = data;
        out->gpuInstanceId = gi;
        out->computeInstanceId = ci;
        delivered = 1;
    }
    fclose(f);
    return delivered;
}

int nvmlEventSetWait_v2(event_set_t *set, event_data_t *data, unsigned int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&mu);
    for (;;) {
        if (!initialized) LEAVE(E_UNINIT);
        if (!set || !data) LEAVE(E_INVALID);
        reload(0);
        if (next_event(set, data)) LEAVE(OK);
        if (now_ms() >= deadline) LEAVE(E_TIMEOUT);
        pthread_mutex_unlock(&mu);
        sleep_ms(5);
        pthread_mutex_lock(&mu);
    }
}

/* ---- not NVML: the sizes of the fake's mirrors of NVML's structs, which a test compares with pynvml's
 * ctypes declarations, so a layout drift shows as a failed test, not as garbage values ---- */

int fakeNvmlStructSizes(unsigned int *sizes, unsigned int n) {
    const unsigned int all[] = {sizeof(pci_info_t), sizeof(memory_t), sizeof(memory_v2_t), sizeof(utilization_t),
                                sizeof(process_info_t), sizeof(event_data_t)};
    unsigned int k = n < sizeof all / sizeof all[0] ? n : sizeof all / sizeof all[0];
    memcpy(sizes, all, k * sizeof all[0]);
    return (int)(sizeof all / sizeof all[0]);
}

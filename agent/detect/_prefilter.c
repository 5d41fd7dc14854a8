/* The rules' per-kind pre-condition over a batch, compiled (agent/detect/native.py loads it).
 *
 * select(events, tables[, memo]) groups a batch by (in a container?, op) and runs each kind's pre-condition
 * (agent/detect/index.py, "the per-kind pre-condition") on it: the tests RuleIndex.prefilter_spec
 * derived from the rules' conditions at build time. The Python code generated from the same spec
 * is the reference (tests/unit/test_detect_prefilter.py checks that both keep the same events).
 * Python costs some 2,000 instructions for one prefix test of one path (a slice, its hash, a dict
 * lookup); here an event the rules cannot match costs a few attribute reads and memcmps.
 *
 * tables: (host table, container table), each a dict op (int) -> spec: None keeps every event of
 * the kind (no pre-condition), a spec (reads, tests) keeps those that pass one test. A test is
 *   (read, base, exact, heads, short, suffixes, words, anyin, guard read, guard values)
 * read: the position in `reads` of how the value is read (tests of one kind share the reads: each
 * value is read once per event); base: True to test the part after its last '/' (file.name's
 * `.rpartition("/")[2]`). A read is a callable (called with the event) or (chains, flags): chains a
 * tuple of attribute-name tuples; the value is the first chain's that is true, else the last one's
 * (Python's `a or b`); flags bit 1: a false value reads as None (`x or None`); bit 2: (chains, 4,
 * mask, n) reads `(value & mask) != n` (file.open.write). guard values: None, or a frozenset the
 * guard read's value must be in for the test to hold at all (file.open.write = true).
 * exact: a frozenset the value may be in; heads: ((head, (prefix, ...)), ...) the prefixes grouped
 * by their first component; short: prefixes tried on every value; suffixes; words (substrings);
 * anyin: a frozenset one of the value's elements may be in. None for any of them: no such test.
 * A value that is None passes no test. An event whose test raised is kept (the node judges it).
 * Returns [[boxed, op, events of the group, [kept positions], tests], ...] in the order the groups first
 * appear (tests: False for a kind neither table has; such a group counts 0 events).
 * memo (memo(tables), made once per rules load): each kind's results kept by the values its tests read
 * (see "The memo" below); the same answers, for a hash and a compare of the values on a repeat.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define MAX_READS 16 /* values an event's tests share; a kind with more reads the others once per test */
#define MAX_OP 256 /* ops are small numbers (agent/events.py Op); a larger one: ValueError */

static PyObject *s_event, *s_op, *s_container;

/* Attribute reads. The events are frozen slots dataclasses: an attribute is a member descriptor, a
 * pointer at a fixed offset in the object. PyObject_GetAttr finds it through the type's method cache
 * and the descriptor's getter (~120 instructions); this cache of (type, name) -> offset, filled on first
 * use, reads it in a few. Anything else (a property, a type with its own __getattribute__, an unset
 * slot) goes through PyObject_GetAttr. The cache holds references to its types and names, so an entry
 * never outlives them. */
#define ATTR_CACHE 256
static struct {
    PyTypeObject *type;
    PyObject *name;
    Py_ssize_t offset; /* 0: not a plain slot */
} attr_cache[ATTR_CACHE];

static Py_ssize_t slot_offset(PyTypeObject *tp, PyObject *name) /* 0: not a plain slot */
{
    if (tp->tp_getattro != PyObject_GenericGetAttr)
        return 0;
    PyObject *descr = _PyType_Lookup(tp, name); /* borrowed */
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
        if (m->type == T_OBJECT_EX && m->offset > 0)
            return m->offset;
    }
    return 0;
}

static PyObject *get_attr(PyObject *obj, PyObject *name) /* new reference, NULL with an error set */
{
    PyTypeObject *tp = Py_TYPE(obj);
    size_t h = (((uintptr_t)tp >> 4) * 31u ^ ((uintptr_t)name >> 4)) & (ATTR_CACHE - 1);
    if (attr_cache[h].type != tp || attr_cache[h].name != name) {
        Py_ssize_t offset = slot_offset(tp, name);
        Py_XDECREF(attr_cache[h].type);
        Py_XDECREF(attr_cache[h].name);
        Py_INCREF(tp);
        Py_INCREF(name);
        attr_cache[h].type = tp;
        attr_cache[h].name = name;
        attr_cache[h].offset = offset;
    }
    if (attr_cache[h].offset > 0) {
        PyObject *v = *(PyObject **)((char *)obj + attr_cache[h].offset);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, name);
}

/* One attribute read at one place in a plan (a memoized kind's read, select's own): the type it last saw
 * and that type's slot offset (0: not a plain slot), the type held. Cheaper than get_attr's shared
 * cache where one place always reads one type (the Enriched, its event of the kind). */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset;
} Site;

static PyObject *site_get(PyObject *obj, PyObject *name, Site *site) /* new reference, NULL with an error */
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (tp != site->type) {
        Py_INCREF(tp);
        Py_XDECREF(site->type);
        site->type = tp;
        site->offset = slot_offset(tp, name);
    }
    if (site->offset > 0) {
        PyObject *v = *(PyObject **)((char *)obj + site->offset);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, name);
}

/* A read's last steps, on the chain's value v (stolen): flags bit 2 `(v & mask) != n`, bit 1 `v or None`. */
static PyObject *finish_read(PyObject *v, long flags, PyObject *mask, PyObject *n)
{
    if (flags & 4) { /* (x & mask) != n: file.open.write's flags & 3 != 0 */
        if (PyLong_CheckExact(v) && PyLong_CheckExact(mask) && PyLong_CheckExact(n)) { /* the flags: a C long */
            long x = PyLong_AsLong(v), m = PyLong_AsLong(mask), want = PyLong_AsLong(n);
            if (!PyErr_Occurred()) {
                Py_DECREF(v);
                return Py_NewRef((x & m) != want ? Py_True : Py_False);
            }
            PyErr_Clear(); /* a number past a C long: Python's operators below */
        }
        PyObject *bits = PyNumber_And(v, mask);
        Py_DECREF(v);
        if (bits == NULL)
            return NULL;
        v = PyObject_RichCompare(bits, n, Py_NE);
        Py_DECREF(bits);
        if (v == NULL)
            return NULL;
    }
    if (flags & 2) { /* x or None */
        int t = PyObject_IsTrue(v);
        if (t < 0) {
            Py_DECREF(v);
            return NULL;
        }
        if (!t) {
            Py_DECREF(v);
            return Py_NewRef(Py_None);
        }
    }
    return v;
}

/* The value a test reads; NULL with an error set when reading raised. New reference. */
static PyObject *read_value(PyObject *en, PyObject *access)
{
    if (!PyTuple_Check(access))
        return PyObject_CallOneArg(access, en);
    if (PyTuple_GET_SIZE(access) < 2 || !PyTuple_Check(PyTuple_GET_ITEM(access, 0))) {
        PyErr_SetString(PyExc_TypeError, "a read is a callable or (chains, flags, ...)");
        return NULL;
    }
    PyObject *chains = PyTuple_GET_ITEM(access, 0);
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(access, 1));
    if ((flags & 4) && PyTuple_GET_SIZE(access) != 4) {
        PyErr_SetString(PyExc_TypeError, "a masked read is (chains, flags, mask, n)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(chains);
    PyObject *v = NULL;
    for (Py_ssize_t c = 0; c < n; c++) {
        PyObject *chain = PyTuple_GET_ITEM(chains, c);
        Py_XDECREF(v);
        v = Py_NewRef(en);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(chain); k++) {
            PyObject *next = get_attr(v, PyTuple_GET_ITEM(chain, k));
            Py_DECREF(v);
            if (next == NULL)
                return NULL;
            v = next;
        }
        if (c + 1 < n) {
            int t = PyObject_IsTrue(v);
            if (t < 0) {
                Py_DECREF(v);
                return NULL;
            }
            if (t)
                break;
        }
    }
    if (v == NULL)
        return Py_NewRef(Py_None);
    return finish_read(v, flags, flags & 4 ? PyTuple_GET_ITEM(access, 2) : NULL,
                       flags & 4 ? PyTuple_GET_ITEM(access, 3) : NULL);
}

/* Prefix, suffix and substring tests. Strings of one kind (both ASCII/Latin-1, the paths and names
 * of nearly every event) compare their bytes directly; strings of different kinds go through the
 * str methods' C functions (a Latin-1 prefix can still begin a value with a wider character later). */
/* n bytes equal: a loop, not memcmp: the lengths are a few bytes, and most tests fail at the first */
static inline int same(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static int starts(PyObject *v, PyObject *p) /* 1, 0, -1 on error */
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(p);
    if (PyUnicode_KIND(v) == PyUnicode_KIND(p)) {
        if (PyUnicode_GET_LENGTH(v) < n)
            return 0;
        return same(PyUnicode_DATA(v), PyUnicode_DATA(p), n * PyUnicode_KIND(p));
    }
    Py_ssize_t r = PyUnicode_Tailmatch(v, p, 0, PY_SSIZE_T_MAX, -1);
    return r < 0 ? -1 : (int)r;
}

static int ends(PyObject *v, PyObject *p)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(p), len = PyUnicode_GET_LENGTH(v);
    int kind = PyUnicode_KIND(p);
    if (PyUnicode_KIND(v) == kind) {
        if (len < n)
            return 0;
        return same((char *)PyUnicode_DATA(v) + (len - n) * kind, PyUnicode_DATA(p), n * kind);
    }
    Py_ssize_t r = PyUnicode_Tailmatch(v, p, 0, PY_SSIZE_T_MAX, 1);
    return r < 0 ? -1 : (int)r;
}

static int holds(PyObject *v, PyObject *w)
{
    if (PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND && PyUnicode_KIND(w) == PyUnicode_1BYTE_KIND) {
        /* a plain scan: paths are short, and glibc's memmem (or memchr and memcmp per candidate)
         * spends more setting up its search than this spends finding */
        Py_ssize_t n = PyUnicode_GET_LENGTH(w), len = PyUnicode_GET_LENGTH(v);
        const char *hay = PyUnicode_DATA(v), *needle = PyUnicode_DATA(w);
        if (n == 0)
            return 1;
        for (Py_ssize_t i = 0; i + n <= len; i++)
            if (hay[i] == needle[0] && same(hay + i + 1, needle + 1, n - 1))
                return 1;
        return 0;
    }
    return PyUnicode_Contains(v, w);
}

/* v.rpartition("/")[2]; steals v. New reference, NULL with an error set. */
static PyObject *last_component(PyObject *v)
{
    if (!PyUnicode_Check(v)) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "basename of a non-string");
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    Py_ssize_t at = PyUnicode_FindChar(v, '/', 0, len, -1);
    if (at == -2) {
        Py_DECREF(v);
        return NULL;
    }
    if (at >= 0) {
        PyObject *tail = PyUnicode_Substring(v, at + 1, len);
        Py_DECREF(v);
        return tail;
    }
    return v;
}

/* The value of reads[at], read once per event (vals holds what was read). New reference. */
static PyObject *shared_read(PyObject *en, PyObject *reads, PyObject **vals, Py_ssize_t at)
{
    if (at < MAX_READS && vals[at] != NULL)
        return Py_NewRef(vals[at]);
    PyObject *v = read_value(en, PyTuple_GET_ITEM(reads, at));
    if (v != NULL && at < MAX_READS)
        vals[at] = Py_NewRef(v);
    return v;
}

/* 1: the test holds, 0: it does not, -1: reading or testing raised (error cleared by the caller). */
static int run_test(PyObject *en, PyObject *test, PyObject *reads, PyObject **vals)
{
    if (!PyTuple_Check(test) || PyTuple_GET_SIZE(test) != 10) {
        PyErr_SetString(PyExc_TypeError, "a test is a tuple of 10");
        return -2;
    }
    Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(test, 0));
    if (at < 0 || at >= PyTuple_GET_SIZE(reads)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "a test's read is not in the kind's reads");
        return -2; /* a malformed spec: not the event's fault */
    }
    PyObject *v;
    PyObject *guard = PyTuple_GET_ITEM(test, 9);
    if (guard != Py_None) { /* a second necessary test of the anchors' rules: when it fails, nothing to test */
        Py_ssize_t g = PyLong_AsSsize_t(PyTuple_GET_ITEM(test, 8));
        if (g < 0 || g >= PyTuple_GET_SIZE(reads)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_IndexError, "a guard's read is not in the kind's reads");
            return -2;
        }
        if ((v = shared_read(en, reads, vals, g)) == NULL)
            return -1;
        int ok = PySet_Contains(guard, v);
        Py_DECREF(v);
        if (ok <= 0)
            return ok;
    }
    if ((v = shared_read(en, reads, vals, at)) == NULL)
        return -1;
    int hit = 0;
    if (v == Py_None)
        goto done;
    if (PyTuple_GET_ITEM(test, 1) == Py_True) { /* the last component, kept beside the value for the next test */
        PyObject **last = at < MAX_READS ? &vals[MAX_READS + at] : NULL;
        if (last != NULL && *last != NULL) {
            Py_DECREF(v);
            v = Py_NewRef(*last);
        } else {
            if ((v = last_component(v)) == NULL)
                return -1;
            if (last != NULL)
                *last = Py_NewRef(v);
        }
    }
    PyObject *exact = PyTuple_GET_ITEM(test, 2), *heads = PyTuple_GET_ITEM(test, 3);
    PyObject *shorts = PyTuple_GET_ITEM(test, 4), *suffixes = PyTuple_GET_ITEM(test, 5);
    PyObject *words = PyTuple_GET_ITEM(test, 6), *anyin = PyTuple_GET_ITEM(test, 7);
    if (exact != Py_None && (hit = PySet_Contains(exact, v)) != 0)
        goto done;
    if (heads != Py_None || shorts != Py_None || suffixes != Py_None || words != Py_None) {
        if (!PyUnicode_Check(v)) { /* Python's str methods would raise on it: the node judges */
            PyErr_SetString(PyExc_TypeError, "a string test on a value that is not a string");
            hit = -1;
            goto done;
        }
        if (heads != Py_None) {
            /* the value's first component ("/etc/" of "/etc/cron.d/job"): only a head of its length can hold */
            Py_ssize_t j = PyUnicode_FindChar(v, '/', 1, PyUnicode_GET_LENGTH(v), 1);
            if (j == -2) {
                hit = -1;
                goto done;
            }
            for (Py_ssize_t h = 0; j >= 0 && h < PyTuple_GET_SIZE(heads); h++) {
                PyObject *pair = PyTuple_GET_ITEM(heads, h);
                if (PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(pair, 0)) != j + 1)
                    continue;
                if ((hit = starts(v, PyTuple_GET_ITEM(pair, 0))) == 0)
                    continue;
                if (hit < 0)
                    goto done;
                PyObject *ps = PyTuple_GET_ITEM(pair, 1); /* one head at most holds: its first component */
                for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(ps); k++)
                    if ((hit = starts(v, PyTuple_GET_ITEM(ps, k))) != 0)
                        goto done;
                break;
            }
        }
        if (shorts != Py_None)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(shorts); k++)
                if ((hit = starts(v, PyTuple_GET_ITEM(shorts, k))) != 0)
                    goto done;
        if (suffixes != Py_None)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(suffixes); k++)
                if ((hit = ends(v, PyTuple_GET_ITEM(suffixes, k))) != 0)
                    goto done;
        if (words != Py_None)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(words); k++)
                if ((hit = holds(v, PyTuple_GET_ITEM(words, k))) != 0)
                    goto done;
    }
    if (anyin != Py_None) {
        PyObject *it = PyObject_GetIter(v);
        if (it == NULL) {
            hit = -1;
            goto done;
        }
        PyObject *item;
        while ((item = PyIter_Next(it)) != NULL) {
            hit = PySet_Contains(anyin, item);
            Py_DECREF(item);
            if (hit != 0)
                break;
        }
        Py_DECREF(it);
        if (hit == 0 && PyErr_Occurred())
            hit = -1;
    }
done:
    Py_DECREF(v);
    return hit;
}

/* 1: keep the event (a test passed, or one raised), 0: drop it, -1: a Python error to raise.
 * *swallowed is set when a test raised (the result then says nothing of the values: not memoized). */
static int keep_event(PyObject *en, PyObject *spec, PyObject *const *seed, int *swallowed)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(spec, 0))
        || !PyTuple_Check(PyTuple_GET_ITEM(spec, 1))) {
        PyErr_SetString(PyExc_TypeError, "a kind's pre-condition is (reads, tests)");
        return -1;
    }
    PyObject *reads = PyTuple_GET_ITEM(spec, 0), *tests = PyTuple_GET_ITEM(spec, 1);
    /* each value read once per event, by the first test that needs it; then its last components */
    PyObject *vals[2 * MAX_READS];
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(reads) && k < MAX_READS; k++) { /* only the slots a read can fill */
        vals[k] = seed != NULL ? Py_NewRef(seed[k]) : NULL; /* seed: every read's value, read already (the memo's key) */
        vals[MAX_READS + k] = NULL;
    }
    int keep = 0;
    for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(tests); t++) {
        int r = run_test(en, PyTuple_GET_ITEM(tests, t), reads, vals);
        if (r == -1 && PyErr_ExceptionMatches(PyExc_Exception)) { /* as the Python one: the node judges it */
            PyErr_Clear();
            r = 1;
            *swallowed = 1;
        }
        if (r < 0) {
            keep = -1; /* KeyboardInterrupt, MemoryError, a malformed spec ...: not ours to swallow */
            break;
        }
        if (r) {
            keep = 1;
            break;
        }
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(reads) && k < MAX_READS; k++) {
        Py_XDECREF(vals[k]);
        Py_XDECREF(vals[MAX_READS + k]);
    }
    return keep;
}


/* The memo: each kind's results by the values its tests read. The pre-condition is a pure function of
 * the values its reads give (sets, prefixes and substrings of them; a kind whose reads are all attribute
 * chains calls no getter), and a busy node repeats them: the same logs appended, the same peers
 * connected. A kind's memo is a two-way table of MEMO_SLOTS entries, each the values of every
 * read of the kind (str, int, bool or None, exactly those types: equal values give equal results; a key
 * of another type, or of more than MEMO_STR_MAX characters in all, is tested and not kept) and what the
 * tests said; the older of a slot pair's two entries is replaced by a new key. A result reached through a test
 * that raised is not kept (the node judges such an event, and it says nothing of the values). Bounded:
 * MEMO_SLOTS entries per (boxed, op) a batch has met, each holding at most MEMO_STR_MAX characters.
 * The memo holds its tables: it answers only for them (select refuses another). */
#define MEMO_BITS 9
#define MEMO_SLOTS (1 << MEMO_BITS)
#define MEMO_KEY_MAX 4
#define MEMO_STR_MAX 256

typedef struct {
    Py_hash_t hash;
    int n; /* values in the key; 0: an empty slot */
    int keep;
    PyObject *vals[MEMO_KEY_MAX];
} MemoEntry;

/* A memoized kind's read, taken apart once: its chains' names (borrowed from the spec, which the memo
 * holds), an inline cache per attribute read, its flags (see read_value). */
#define FAST_CHAINS 2
#define FAST_STEPS 3
typedef struct {
    int nchains;
    int len[FAST_CHAINS];
    PyObject *name[FAST_CHAINS][FAST_STEPS];
    Site site[FAST_CHAINS][FAST_STEPS];
    long flags;
    PyObject *mask, *n; /* borrowed; NULL unless flags bit 2 */
} FastRead;

typedef struct {
    PyObject *tables;
    MemoEntry *kinds[2 * MAX_OP]; /* allocated when a memoizable kind is first met */
    FastRead *fast[2 * MAX_OP]; /* its reads (MEMO_KEY_MAX), with the entries */
    signed char usable[2 * MAX_OP]; /* 0: not looked at yet, 1: its reads are all chains, -1: not memoized */
    PyObject *spec[2 * MAX_OP]; /* the spec each kind's entries answer for (held): another one empties them */
    Py_ssize_t entries, hits, misses;
} Memo;

static const char MEMO_NAME[] = "nodewarden.rules_memo";

static void memo_forget(Memo *m, int k) /* a kind's entries, and what it knew of its spec */
{
    if (m->kinds[k] != NULL) {
        for (int e = 0; e < MEMO_SLOTS; e++) {
            m->entries -= m->kinds[k][e].n > 0;
            for (int v = 0; v < m->kinds[k][e].n; v++)
                Py_DECREF(m->kinds[k][e].vals[v]);
        }
        PyMem_Free(m->kinds[k]);
        m->kinds[k] = NULL;
    }
    if (m->fast[k] != NULL) {
        for (int r = 0; r < MEMO_KEY_MAX; r++)
            for (int c = 0; c < FAST_CHAINS; c++)
                for (int j = 0; j < FAST_STEPS; j++)
                    Py_XDECREF(m->fast[k][r].site[c][j].type);
        PyMem_Free(m->fast[k]);
        m->fast[k] = NULL;
    }
    Py_CLEAR(m->spec[k]);
    m->usable[k] = 0;
}

static void memo_free(PyObject *capsule)
{
    Memo *m = PyCapsule_GetPointer(capsule, MEMO_NAME);
    if (m == NULL)
        return;
    for (int k = 0; k < 2 * MAX_OP; k++)
        memo_forget(m, k);
    Py_DECREF(m->tables);
    PyMem_Free(m);
}

static PyObject *memo_new(PyObject *self, PyObject *tables)
{
    Memo *m = PyMem_Calloc(1, sizeof(Memo));
    if (m == NULL)
        return PyErr_NoMemory();
    m->tables = Py_NewRef(tables);
    PyObject *capsule = PyCapsule_New(m, MEMO_NAME, memo_free);
    if (capsule == NULL) {
        Py_DECREF(m->tables);
        PyMem_Free(m);
    }
    return capsule;
}

static PyObject *memo_info(PyObject *self, PyObject *capsule)
{
    Memo *m = PyCapsule_GetPointer(capsule, MEMO_NAME);
    if (m == NULL)
        return NULL;
    int kinds = 0;
    for (int k = 0; k < 2 * MAX_OP; k++)
        kinds += m->kinds[k] != NULL;
    return Py_BuildValue("{sn,sn,sn,si,si,si}", "entries", m->entries, "hits", m->hits, "misses", m->misses,
                         "kinds", kinds, "slots", MEMO_SLOTS, "max_chars", MEMO_STR_MAX);
}

/* One read taken apart into fr: 1, or -1 when it is not a chain read that fits (then not memoized). */
static int fast_read_of(PyObject *access, FastRead *fr)
{
    if (!PyTuple_Check(access) || PyTuple_GET_SIZE(access) < 2 || !PyTuple_Check(PyTuple_GET_ITEM(access, 0)))
        return -1; /* a getter called: it may do anything */
    PyObject *chains = PyTuple_GET_ITEM(access, 0);
    Py_ssize_t nc = PyTuple_GET_SIZE(chains);
    if (nc < 1 || nc > FAST_CHAINS)
        return -1;
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(access, 1));
    if (flags == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* the unmemoized read reports it */
        return -1;
    }
    if ((flags & 4) && PyTuple_GET_SIZE(access) != 4)
        return -1;
    fr->nchains = (int)nc;
    fr->flags = flags;
    fr->mask = flags & 4 ? PyTuple_GET_ITEM(access, 2) : NULL;
    fr->n = flags & 4 ? PyTuple_GET_ITEM(access, 3) : NULL;
    for (Py_ssize_t c = 0; c < nc; c++) {
        PyObject *chain = PyTuple_GET_ITEM(chains, c);
        if (!PyTuple_Check(chain) || PyTuple_GET_SIZE(chain) < 1 || PyTuple_GET_SIZE(chain) > FAST_STEPS)
            return -1;
        fr->len[c] = (int)PyTuple_GET_SIZE(chain);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(chain); k++) {
            if (!PyUnicode_Check(PyTuple_GET_ITEM(chain, k)))
                return -1;
            fr->name[c][k] = PyTuple_GET_ITEM(chain, k);
        }
    }
    return 1;
}

/* read_value of a read taken apart (fast_read_of): the same value. */
static PyObject *fast_read(PyObject *en, FastRead *fr)
{
    PyObject *v = NULL;
    for (int c = 0; c < fr->nchains; c++) {
        Py_XDECREF(v);
        v = Py_NewRef(en);
        for (int k = 0; k < fr->len[c]; k++) {
            PyObject *next = site_get(v, fr->name[c][k], &fr->site[c][k]);
            Py_DECREF(v);
            if (next == NULL)
                return NULL;
            v = next;
        }
        if (c + 1 < fr->nchains) {
            int t = v == Py_None ? 0 : PyObject_IsTrue(v);
            if (t < 0) {
                Py_DECREF(v);
                return NULL;
            }
            if (t)
                break;
        }
    }
    return finish_read(v, fr->flags, fr->mask, fr->n);
}

/* May a kind's results be memoized: every read an attribute chain that fits, and few enough of them
 * (taken apart into m->fast[slot]). 1 or -1; 0 with an error set (no memory). */
static int memo_usable(Memo *m, int slot, PyObject *spec)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(spec, 0)))
        return -1;
    PyObject *reads = PyTuple_GET_ITEM(spec, 0);
    Py_ssize_t n = PyTuple_GET_SIZE(reads);
    if (n == 0 || n > MEMO_KEY_MAX || n > MAX_READS)
        return -1;
    FastRead fr[MEMO_KEY_MAX];
    memset(fr, 0, sizeof(fr));
    for (Py_ssize_t k = 0; k < n; k++)
        if (fast_read_of(PyTuple_GET_ITEM(reads, k), &fr[k]) < 0)
            return -1;
    if ((m->fast[slot] = PyMem_Calloc(MEMO_KEY_MAX, sizeof(FastRead))) == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    memcpy(m->fast[slot], fr, sizeof(fr));
    return 1;
}

/* Every read's value (new references in vals): 1, or 0 when the event's key cannot be memoized (an
 * error that an Exception cleared, a value of another type, too long), -1 on an error to raise. */
static int memo_key(PyObject *en, Py_ssize_t n, FastRead *fast, PyObject **vals, Py_hash_t *hash)
{
    Py_ssize_t chars = 0;
    Py_uhash_t h = 0x345678UL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = fast_read(en, &fast[k]);
        if (v == NULL || !(v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyUnicode_CheckExact(v))
            || (PyUnicode_CheckExact(v) && (chars += PyUnicode_GET_LENGTH(v)) > MEMO_STR_MAX)) {
            Py_XDECREF(v);
            for (Py_ssize_t j = 0; j < k; j++)
                Py_DECREF(vals[j]);
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    return -1;
                PyErr_Clear(); /* the tests read it again, and judge it as they always did */
            }
            return 0;
        }
        Py_hash_t vh = PyObject_Hash(v); /* a str keeps its hash: the node's set lookups reuse it */
        if (vh == -1) {
            Py_DECREF(v);
            for (Py_ssize_t j = 0; j < k; j++)
                Py_DECREF(vals[j]);
            return -1;
        }
        vals[k] = v;
        h = (h ^ (Py_uhash_t)vh) * 1000003UL;
    }
    *hash = (Py_hash_t)h;
    return 1;
}

static int same_value(PyObject *a, PyObject *b) /* a and b of the key's types */
{
    if (a == b)
        return 1;
    if (Py_TYPE(a) != Py_TYPE(b))
        return 0;
    if (PyUnicode_CheckExact(a)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        int kind = PyUnicode_KIND(a);
        return n == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b)
               && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * kind) == 0;
    }
    if (PyLong_CheckExact(a))
        return PyObject_RichCompareBool(a, b, Py_EQ) == 1;
    return 0; /* None, True, False: the same object or not equal */
}

/* keep_event through the kind's memo: the same answer. */
static int memo_keep(Memo *m, int slot, PyObject *en, PyObject *spec)
{
    if (m->spec[slot] != spec) { /* the tables' dicts were changed: the old answers may not hold */
        memo_forget(m, slot);
        m->spec[slot] = Py_NewRef(spec);
    }
    if (m->usable[slot] == 0 && (m->usable[slot] = (signed char)memo_usable(m, slot, spec)) == 0)
        return -1;
    int swallowed = 0;
    if (m->usable[slot] < 0)
        return keep_event(en, spec, NULL, &swallowed);
    PyObject *reads = PyTuple_GET_ITEM(spec, 0);
    PyObject *vals[MEMO_KEY_MAX];
    Py_hash_t hash;
    int made = memo_key(en, PyTuple_GET_SIZE(reads), m->fast[slot], vals, &hash);
    if (made < 0)
        return -1;
    if (made == 0)
        return keep_event(en, spec, NULL, &swallowed);
    int n = (int)PyTuple_GET_SIZE(reads);
    if (m->kinds[slot] == NULL && (m->kinds[slot] = PyMem_Calloc(MEMO_SLOTS, sizeof(MemoEntry))) == NULL) {
        for (int k = 0; k < n; k++)
            Py_DECREF(vals[k]);
        PyErr_NoMemory();
        return -1;
    }
    /* the slot from the hash's high bits after a multiply: every bit of the values' hashes counts. Two
     * ways: a key is looked for in its slot and the one beside it; a new key goes first, the older of
     * the two moves second, and the second's goes */
    uint64_t mixed = (uint64_t)(Py_uhash_t)hash * 0x9E3779B97F4A7C15ULL;
    MemoEntry *pair = &m->kinds[slot][(mixed >> (64 - MEMO_BITS)) & ~(uint64_t)1];
    for (int w = 0; w < 2; w++) {
        MemoEntry *e = &pair[w];
        int hit = e->n == n && e->hash == hash;
        for (int k = 0; hit && k < n; k++)
            hit = same_value(e->vals[k], vals[k]);
        if (hit) {
            m->hits++;
            for (int k = 0; k < n; k++)
                Py_DECREF(vals[k]);
            return e->keep;
        }
    }
    m->misses++;
    int keep = keep_event(en, spec, vals, &swallowed);
    if (keep < 0 || swallowed) {
        for (int k = 0; k < n; k++)
            Py_DECREF(vals[k]);
        return keep;
    }
    /* the evicted key's values are str, int, bool or None: freeing them runs no Python code */
    MemoEntry gone = pair[1];
    pair[1] = pair[0];
    for (int k = 0; k < n; k++)
        pair[0].vals[k] = vals[k];
    pair[0].n = n;
    pair[0].hash = hash;
    pair[0].keep = keep;
    if (gone.n == 0)
        m->entries++;
    for (int k = 0; k < gone.n; k++)
        Py_DECREF(gone.vals[k]);
    return keep;
}

static Site site_container, site_event; /* select's reads of every Enriched (their types held for good) */

static PyObject *select_batch(PyObject *self, PyObject *args)
{
    PyObject *events, *table_pair, *memo_obj = Py_None, *tables[2];
    if (!PyArg_ParseTuple(args, "O!O!|O", &PyList_Type, &events, &PyTuple_Type, &table_pair, &memo_obj))
        return NULL;
    if (PyTuple_GET_SIZE(table_pair) != 2 || !PyDict_Check(PyTuple_GET_ITEM(table_pair, 0))
        || !PyDict_Check(PyTuple_GET_ITEM(table_pair, 1))) {
        PyErr_SetString(PyExc_TypeError, "tables are (host dict, container dict)");
        return NULL;
    }
    tables[0] = PyTuple_GET_ITEM(table_pair, 0);
    tables[1] = PyTuple_GET_ITEM(table_pair, 1);
    Memo *memo = NULL;
    if (memo_obj != Py_None) {
        if ((memo = PyCapsule_GetPointer(memo_obj, MEMO_NAME)) == NULL)
            return NULL;
        if (memo->tables != table_pair) {
            PyErr_SetString(PyExc_ValueError, "a memo answers only for the tables it was made with");
            return NULL;
        }
    }
    PyObject *groups[2 * MAX_OP] = {NULL}; /* (boxed, op) -> [boxed, op, n, kept, tests] (borrowed) */
    Py_ssize_t counts[2 * MAX_OP] = {0};
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *en = PyList_GET_ITEM(events, i);
        PyObject *c = site_get(en, s_container, &site_container);
        if (c == NULL)
            goto fail;
        int boxed = c != Py_None;
        Py_DECREF(c);
        PyObject *ev = site_get(en, s_event, &site_event);
        if (ev == NULL)
            goto fail;
        PyObject *op = get_attr(ev, s_op); /* events of several types: the shared cache */
        Py_DECREF(ev);
        if (op == NULL)
            goto fail;
        long code = PyLong_AsLong(op);
        if (code == -1 && PyErr_Occurred()) {
            Py_DECREF(op);
            goto fail;
        }
        if (code < 0 || code >= MAX_OP) {
            Py_DECREF(op);
            PyErr_Format(PyExc_ValueError, "event op %ld out of range", code);
            goto fail;
        }
        PyObject *g = groups[2 * code + boxed];
        if (g == NULL) {
            PyObject *tests = PyDict_GetItemWithError(tables[boxed], op); /* borrowed */
            if (tests == NULL && PyErr_Occurred()) {
                Py_DECREF(op);
                goto fail;
            }
            /* a kind no rule can meet: an empty group, counted nowhere (as Detector.evaluate_batch) */
            g = Py_BuildValue("[OOn[]O]", boxed ? Py_True : Py_False, op, (Py_ssize_t)0,
                              tests == NULL ? Py_False : tests);
            if (g == NULL || PyList_Append(out, g) < 0) {
                Py_XDECREF(g);
                Py_DECREF(op);
                goto fail;
            }
            Py_DECREF(g); /* out holds it */
            groups[2 * code + boxed] = g;
        }
        Py_DECREF(op);
        PyObject *tests = PyList_GET_ITEM(g, 4);
        if (tests == Py_False)
            continue; /* no rules for the kind */
        counts[2 * code + boxed]++;
        int swallowed = 0;
        int keep = tests == Py_None ? 1
                   : memo != NULL ? memo_keep(memo, 2 * (int)code + boxed, en, tests)
                                  : keep_event(en, tests, NULL, &swallowed);
        if (keep < 0)
            goto fail;
        if (keep) {
            PyObject *pos = PyLong_FromSsize_t(i);
            if (pos == NULL || PyList_Append(PyList_GET_ITEM(g, 3), pos) < 0) {
                Py_XDECREF(pos);
                goto fail;
            }
            Py_DECREF(pos);
        }
    }
    for (int k = 0; k < 2 * MAX_OP; k++) {
        if (groups[k] == NULL || counts[k] == 0)
            continue;
        PyObject *cnt = PyLong_FromSsize_t(counts[k]);
        if (cnt == NULL)
            goto fail;
        PyList_SetItem(groups[k], 2, cnt); /* steals cnt, drops the 0 */
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *keep_events(PyObject *self, PyObject *args)
{
    /* keep(events, where, tests) -> the positions of `where` kept: one kind's pre-condition alone */
    PyObject *events, *where, *tests;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &events, &PyList_Type, &where, &tests))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(where); k++) {
        PyObject *pos = PyList_GET_ITEM(where, k);
        Py_ssize_t i = PyLong_AsSsize_t(pos);
        if (i == -1 && PyErr_Occurred())
            goto fail;
        if (i < 0 || i >= PyList_GET_SIZE(events)) {
            PyErr_SetString(PyExc_IndexError, "position out of the batch");
            goto fail;
        }
        int swallowed = 0;
        int keep = keep_event(PyList_GET_ITEM(events, i), tests, NULL, &swallowed);
        if (keep < 0 || (keep && PyList_Append(out, pos) < 0))
            goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"select", select_batch, METH_VARARGS, "group a batch by (boxed, op) and run each kind's pre-condition"},
    {"keep", keep_events, METH_VARARGS, "one kind's pre-condition over positions of a batch"},
    {"memo", memo_new, METH_O, "memo(tables): a memo of each kind's results by the values read, for select"},
    {"memo_info", memo_info, METH_O, "a memo's entries, hits, misses, kinds met and bounds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nwrules", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nwrules(void)
{
    s_event = PyUnicode_InternFromString("event");
    s_op = PyUnicode_InternFromString("op");
    s_container = PyUnicode_InternFromString("container");
    if (s_event == NULL || s_op == NULL || s_container == NULL)
        return NULL;
    return PyModule_Create(&module);
}

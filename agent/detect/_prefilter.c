/* The rules' per-kind pre-condition over a batch, compiled (agent/detect/native.py loads it).
 *
 * select(events, tables) groups a batch by (in a container?, op) and runs each kind's pre-condition
 * (agent/detect/index.py, "the per-kind pre-condition") on it: the tests RuleIndex.prefilter_spec
 * derived from the rules' conditions at build time. The Python code generated from the same spec
 * is the reference (tests/unit/test_detect_prefilter.py checks that both keep the same events).
 * Python costs some 2,000 instructions for one prefix test of one path (a slice, its hash, a dict
 * lookup); here an event the rules cannot match costs a few attribute reads and memcmps.
 *
 * tables: (host table, container table), each a dict op (int) -> tests: None keeps every event of
 * the kind (no pre-condition), a tuple of tests keeps those that pass one. A test is
 *   (access, exact, heads, short, suffixes, words, anyin)
 * access: a callable (called with the event) or (chains, flags): chains a tuple of attribute-name
 * tuples; the value is the first chain's that is true, else the last one's (Python's `a or b`);
 * flags bit 0: then the part after the last '/', bit 1: a false value reads as None (`x or None`).
 * exact: a frozenset the value may be in; heads: ((head, (prefix, ...)), ...) the prefixes grouped
 * by their first component; short: prefixes tried on every value; suffixes; words (substrings);
 * anyin: a frozenset one of the value's elements may be in. None for any of them: no such test.
 * A value that is None passes no test. An event whose test raised is kept (the node judges it).
 * Returns [[boxed, op, events of the group, [kept positions], tests], ...] in the order the groups first
 * appear (tests: False for a kind neither table has; such a group counts 0 events).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_OP 256 /* ops are small numbers (agent/events.py Op); a larger one: ValueError */

static PyObject *s_event, *s_op, *s_container;

/* The value a test reads; NULL with an error set when reading raised. New reference. */
static PyObject *read_value(PyObject *en, PyObject *access)
{
    if (!PyTuple_Check(access))
        return PyObject_CallOneArg(access, en);
    PyObject *chains = PyTuple_GET_ITEM(access, 0);
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(access, 1));
    Py_ssize_t n = PyTuple_GET_SIZE(chains);
    PyObject *v = NULL;
    for (Py_ssize_t c = 0; c < n; c++) {
        PyObject *chain = PyTuple_GET_ITEM(chains, c);
        Py_XDECREF(v);
        v = Py_NewRef(en);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(chain); k++) {
            PyObject *next = PyObject_GetAttr(v, PyTuple_GET_ITEM(chain, k));
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
    if (flags & 1) { /* .rpartition("/")[2] */
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
            v = tail;
            if (v == NULL)
                return NULL;
        }
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

static int starts(PyObject *v, PyObject *prefix) /* 1, 0, -1 on error */
{
    Py_ssize_t r = PyUnicode_Tailmatch(v, prefix, 0, PY_SSIZE_T_MAX, -1);
    return r < 0 ? -1 : (int)r;
}

/* 1: the test holds, 0: it does not, -1: reading or testing raised (error cleared by the caller). */
static int run_test(PyObject *en, PyObject *test)
{
    PyObject *v = read_value(en, PyTuple_GET_ITEM(test, 0));
    if (v == NULL)
        return -1;
    int hit = 0;
    if (v == Py_None)
        goto done;
    PyObject *exact = PyTuple_GET_ITEM(test, 1), *heads = PyTuple_GET_ITEM(test, 2);
    PyObject *shorts = PyTuple_GET_ITEM(test, 3), *suffixes = PyTuple_GET_ITEM(test, 4);
    PyObject *words = PyTuple_GET_ITEM(test, 5), *anyin = PyTuple_GET_ITEM(test, 6);
    if (exact != Py_None && (hit = PySet_Contains(exact, v)) != 0)
        goto done;
    if (heads != Py_None || shorts != Py_None || suffixes != Py_None || words != Py_None) {
        if (!PyUnicode_Check(v)) { /* Python's str methods would raise on it: the node judges */
            PyErr_SetString(PyExc_TypeError, "a string test on a value that is not a string");
            hit = -1;
            goto done;
        }
        if (heads != Py_None) {
            for (Py_ssize_t h = 0; h < PyTuple_GET_SIZE(heads); h++) {
                PyObject *pair = PyTuple_GET_ITEM(heads, h);
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
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(suffixes); k++) {
                Py_ssize_t r = PyUnicode_Tailmatch(v, PyTuple_GET_ITEM(suffixes, k), 0, PY_SSIZE_T_MAX, 1);
                if ((hit = r < 0 ? -1 : (int)r) != 0)
                    goto done;
            }
        if (words != Py_None)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(words); k++)
                if ((hit = PyUnicode_Contains(v, PyTuple_GET_ITEM(words, k))) != 0)
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

/* 1: keep the event (a test passed, or one raised), 0: drop it, -1: a Python error to raise. */
static int keep_event(PyObject *en, PyObject *tests)
{
    for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(tests); t++) {
        int r = run_test(en, PyTuple_GET_ITEM(tests, t));
        if (r < 0) {
            if (PyErr_ExceptionMatches(PyExc_Exception)) { /* as the Python one: the node judges it */
                PyErr_Clear();
                return 1;
            }
            return -1; /* KeyboardInterrupt, MemoryError ...: not ours to swallow */
        }
        if (r)
            return 1;
    }
    return 0;
}

static PyObject *select_batch(PyObject *self, PyObject *args)
{
    PyObject *events, *tables[2];
    if (!PyArg_ParseTuple(args, "O!(O!O!)", &PyList_Type, &events, &PyDict_Type, &tables[0], &PyDict_Type,
                          &tables[1]))
        return NULL;
    PyObject *groups[2 * MAX_OP] = {NULL}; /* (boxed, op) -> [boxed, op, n, kept, tests] (borrowed) */
    Py_ssize_t counts[2 * MAX_OP] = {0};
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(events);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *en = PyList_GET_ITEM(events, i);
        PyObject *c = PyObject_GetAttr(en, s_container);
        if (c == NULL)
            goto fail;
        int boxed = c != Py_None;
        Py_DECREF(c);
        PyObject *ev = PyObject_GetAttr(en, s_event);
        if (ev == NULL)
            goto fail;
        PyObject *op = PyObject_GetAttr(ev, s_op);
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
        int keep = tests == Py_None ? 1 : keep_event(en, tests);
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
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &events, &PyList_Type, &where, &PyTuple_Type, &tests))
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
        int keep = keep_event(PyList_GET_ITEM(events, i), tests);
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

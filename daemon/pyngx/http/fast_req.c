/* ngx.req.get_uri_args and ngx.req.get_headers: the common call in C; see fast.h.
 *
 * Called with no argument in a phase that may read the request, each answers from what the
 * Python side keeps (the parsed arguments of a query string seen before; the request's own
 * header table, built here the first time when every name and value is ASCII and no name
 * repeats). Any other call, or a miss, goes to the Python function, which answers every case
 * and fills what this file reads.
 */
#include "fast.h"

PyObject *
setup_req(PyObject *module, PyObject *args)
{
    PyObject *readable, *kept_args, *py_args, *py_headers;
    if (!PyArg_ParseTuple(args, "O!O!OO:setup_req", &PyFrozenSet_Type, &readable, &PyDict_Type, &kept_args,
                          &py_args, &py_headers))
        return NULL;
    if (!PyCallable_Check(py_args) || !PyCallable_Check(py_headers)) {
        PyErr_SetString(PyExc_TypeError, "setup_req: the Python functions must be callable");
        return NULL;
    }
    Py_XSETREF(S.readable, Py_NewRef(readable));
    Py_XSETREF(S.kept_args, Py_NewRef(kept_args));
    Py_XSETREF(S.py_get_uri_args, Py_NewRef(py_args));
    Py_XSETREF(S.py_get_headers, Py_NewRef(py_headers));
    Py_RETURN_NONE;
}

/* The current exchange (a new reference) when the running phase may read it and it is not done;
   NULL without an error when not (the Python function then says why), NULL with one on failure. */
static PyObject *
readable_exchange(void)
{
    if (!S.ready || S.phase_var == NULL || S.readable == NULL)
        return NULL;
    PyObject *ex, *here;
    if (current_request(&ex, &here) < 0)
        return NULL;
    int ok = ex != NULL && Py_IS_TYPE(ex, S.ex_type) && here != NULL && SLOT(ex, S.ex[E_DONE]) == Py_False;
    if (ok) {
        ok = PySet_Contains(S.readable, here);
        if (ok < 0)
            PyErr_Clear();  /* an unhashable phase: the Python function's check */
    }
    Py_XDECREF(here);
    if (ok != 1) {
        Py_XDECREF(ex);
        return NULL;
    }
    return ex;
}

static PyObject *
to_python(PyObject *fallback, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyErr_Occurred())
        return NULL;
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ngx.req: setup_req was not called");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargsf, kwnames);
}

/* get_uri_args(): a copy of the arguments kept for this query string (at most 100: the default). */
PyObject *
get_uri_args(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) == 0 && kwnames == NULL) {
        PyObject *ex = readable_exchange();
        if (ex != NULL) {
            PyObject *query = SLOT(ex, S.ex[E_ARGS]);
            PyObject *hit = PyUnicode_CheckExact(query) ? PyDict_GetItemWithError(S.kept_args, query) : NULL;
            PyObject *out = hit != NULL && PyDict_CheckExact(hit) && PyDict_GET_SIZE(hit) <= 100
                            ? PyDict_Copy(hit) : NULL;
            Py_DECREF(ex);
            if (out != NULL || PyErr_Occurred())
                return out;
        }
    }
    return to_python(S.py_get_uri_args, args, nargsf, kwnames);
}

/* KEY's bytes as a str, lower-cased when LOWER (bytes A-Z only: Python's lower() of latin-1 text when all
   are ASCII); NULL without an error when a byte is not ASCII. */
static PyObject *
ascii_text(PyObject *key, int lower)
{
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(key);
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        any |= p[i];
    if (any & 0x80)
        return NULL;
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    if (lower)
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = p[i] >= 'A' && p[i] <= 'Z' ? p[i] + ('a' - 'A') : p[i];
    else
        memcpy(out, p, n);
    return text;
}

/* Request header names repeat from one request to the next: the lower-cased str of each name seen
   lately (its hash computed once) is kept in a small table, by the name's bytes as received. */
#define NAMES 64
#define NAME_LEN 40
static struct {
    Py_ssize_t len;
    char raw[NAME_LEN];
    PyObject *name;
} names[NAMES];

/* KEY's lower-cased name, a new reference; NULL without an error when KEY is not ASCII. */
static PyObject *
lower_name(PyObject *key)
{
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    const char *p = PyBytes_AS_STRING(key);
    if (n > NAME_LEN)
        return ascii_text(key, 1);
    uint32_t h = 2166136261u;  /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    uint32_t slot = h % NAMES;
    if (names[slot].name != NULL && names[slot].len == n && memcmp(names[slot].raw, p, n) == 0)
        return Py_NewRef(names[slot].name);
    PyObject *name = ascii_text(key, 1);
    if (name == NULL)
        return NULL;
    if (PyObject_Hash(name) == -1) {
        Py_DECREF(name);
        return NULL;
    }
    Py_XSETREF(names[slot].name, Py_NewRef(name));
    names[slot].len = n;
    memcpy(names[slot].raw, p, n);
    return name;
}

/* The request's header table (lower-case name -> str), made from EX's headers when every name and
   value is ASCII and no name repeats; else NULL (with an error on failure). */
static PyObject *
build_headers(PyObject *ex)
{
    PyObject *headers = SLOT(ex, S.ex[E_HEADERS]);
    if (!PyList_CheckExact(headers) || PyList_GET_SIZE(headers) > 100)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(headers);
    PyObject *table = PyDict_New();
    if (table == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            goto drop;
        PyObject *key = PyTuple_GET_ITEM(item, 0), *raw = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(raw))
            goto drop;
        PyObject *name = lower_name(key);
        if (name == NULL)
            goto drop;
        PyObject *value = ascii_text(raw, 0);
        if (value == NULL) {
            Py_DECREF(name);
            goto drop;
        }
        int rc = PyDict_SetItem(table, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (rc < 0 || PyDict_GET_SIZE(table) != i + 1)  /* (a name repeated: a list, made by Python) */
            goto drop;
    }
    return table;
drop:  /* not this case, or an error (set): the caller tells which */
    Py_DECREF(table);
    return NULL;
}

/* get_headers(): a copy of the request's header table, made here on the request's first call. */
PyObject *
get_headers(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) == 0 && kwnames == NULL) {
        PyObject *ex = readable_exchange();
        if (ex != NULL) {
            PyObject *table = SLOT(ex, S.ex[E_HEADERS_CACHE]);
            if (PyDict_CheckExact(table))
                Py_INCREF(table);
            else if (table == Py_None && (table = build_headers(ex)) != NULL)
                set_slot(ex, S.ex[E_HEADERS_CACHE], table);
            else
                table = NULL;
            Py_DECREF(ex);
            if (table != NULL) {
                PyObject *out = PyDict_Copy(table);
                Py_DECREF(table);
                return out;
            }
        }
    }
    return to_python(S.py_get_headers, args, nargsf, kwnames);
}

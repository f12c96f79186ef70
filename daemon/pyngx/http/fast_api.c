/* ngx.header's setters, ngx.say/print and ngx.shared.NAME: the common case in C; see fast.h. */
#include "fast.h"

/* -- ngx.header: setting a response header -- */

PyObject *
setup_header(PyObject *module, PyObject *args)
{
    PyObject *names, *settable;
    if (!PyArg_ParseTuple(args, "O!O!:setup_header", &PyDict_Type, &names, &PyFrozenSet_Type, &settable))
        return NULL;
    Py_XSETREF(S.header_names, Py_NewRef(names));
    Py_XSETREF(S.settable, Py_NewRef(settable));
    Py_RETURN_NONE;
}

/* Whether TEXT holds a CR or an LF (one pass over a one-byte text, the common kind). */
static int
has_line_break(PyObject *text)
{
    if (PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *p = PyUnicode_1BYTE_DATA(text);
        for (Py_ssize_t i = 0, n = PyUnicode_GET_LENGTH(text); i < n; i++)
            if (p[i] == '\r' || p[i] == '\n')
                return 1;
        return 0;
    }
    return PyUnicode_FindChar(text, '\n', 0, PY_SSIZE_T_MAX, 1) != -1
           || PyUnicode_FindChar(text, '\r', 0, PY_SSIZE_T_MAX, 1) != -1;
}

/* ngx.header[NAME] = VALUE (VALUE NULL: del): a name seen before and a str without CR or LF,
   while the head may still be set, go straight into the exchange; the rest to ``_set``. */
static int
header_set(PyObject *self, PyObject *name, PyObject *value)
{
    if (S.ready && S.header_names != NULL && S.phase_var != NULL && value != NULL && PyUnicode_CheckExact(name)
            && PyUnicode_CheckExact(value) && !has_line_break(value)) {
        PyObject *ex, *here;
        if (current_request(&ex, &here) < 0)
            return -1;
        PyObject *hit = PyDict_GetItemWithError(S.header_names, name);
        int done = 0;
        if (ex != NULL && Py_IS_TYPE(ex, S.ex_type) && here != NULL && hit != NULL && PyTuple_CheckExact(hit)
                && PyTuple_GET_SIZE(hit) == 2 && SLOT(ex, S.ex[E_SENT]) == Py_False
                && SLOT(ex, S.ex[E_DONE]) == Py_False && PySet_Contains(S.settable, here) == 1) {
            PyObject *hdrs = SLOT(ex, S.ex[E_OUT_HEADERS]);
            if (hdrs == Py_None) {
                hdrs = PyDict_New();
                if (hdrs != NULL) {
                    set_slot(ex, S.ex[E_OUT_HEADERS], hdrs);
                    Py_DECREF(hdrs);
                }
            }
            if (hdrs != NULL && PyDict_CheckExact(hdrs)) {
                PyObject *item = PyTuple_Pack(2, PyTuple_GET_ITEM(hit, 0), value);
                done = item == NULL ? -1 : PyDict_SetItem(hdrs, PyTuple_GET_ITEM(hit, 1), item) < 0 ? -1 : 1;
                Py_XDECREF(item);
            }
            else if (hdrs == NULL)
                done = -1;
        }
        Py_XDECREF(ex);
        Py_XDECREF(here);
        if (done < 0 || (done == 0 && PyErr_Occurred()))
            return -1;
        if (done)
            return 0;
    }
    PyObject *r = PyObject_CallMethodObjArgs(self, S.s_set, name, value == NULL ? Py_None : value, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
header_setattr(PyObject *self, PyObject *name, PyObject *value)
{
    return header_set(self, name, value);
}

static PyMappingMethods header_mapping = {
    .mp_ass_subscript = header_set,
};

PyTypeObject HeaderBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.http._fast.HeaderBase",
    .tp_basicsize = sizeof(Base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ngx.header's setting of a response header: the common case in C, the rest to ``_set``.",
    .tp_as_mapping = &header_mapping,
    .tp_setattro = header_setattr,
    .tp_new = PyType_GenericNew,
};

/* -- ngx.say / ngx.print: one str in the content phase, appended here -- */

PyObject *
setup_output(PyObject *module, PyObject *args)
{
    PyObject *say, *print;
    if (!PyArg_ParseTuple(args, "OO:setup_output", &say, &print))
        return NULL;
    Py_XSETREF(S.py_say, Py_NewRef(say));
    Py_XSETREF(S.py_print, Py_NewRef(print));
    Py_RETURN_NONE;
}

/* Append ARG (+ NEWLINE) to the current exchange's output: 1 done, 0 not this case, -1 error. */
static int
output_str(PyObject *arg, int newline)
{
    if (!S.ready || S.phase_var == NULL || !PyUnicode_CheckExact(arg))
        return 0;
    PyObject *ex, *here;
    if (current_request(&ex, &here) < 0)
        return -1;
    int done = 0;
    PyObject *out;
    if (ex != NULL && Py_IS_TYPE(ex, S.ex_type) && here == S.phase_names[2]
            && SLOT(ex, S.ex[E_DONE]) == Py_False && (out = SLOT(ex, S.ex[E_OUT])) != NULL && PyList_CheckExact(out)) {
        Py_ssize_t n;
        const char *text = PyUnicode_AsUTF8AndSize(arg, &n);
        if (text == NULL)
            PyErr_Clear();  /* lone surrogates (request bytes that were not UTF-8): the Python path */
        else {
            PyObject *piece = PyBytes_FromStringAndSize(NULL, n + newline);
            if (piece == NULL)
                done = -1;
            else {
                memcpy(PyBytes_AS_STRING(piece), text, n);
                if (newline)
                    PyBytes_AS_STRING(piece)[n] = '\n';
                done = PyList_Append(out, piece) < 0 ? -1 : 1;
                Py_DECREF(piece);
            }
        }
    }
    Py_XDECREF(ex);
    Py_XDECREF(here);
    return done;
}

static PyObject *
output(PyObject *const *args, Py_ssize_t nargs, int newline)
{
    PyObject *fallback = newline ? S.py_say : S.py_print;
    if (nargs == 1) {
        int done = output_str(args[0], newline);
        if (done < 0)
            return NULL;
        if (done)
            Py_RETURN_NONE;
    }
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ngx.say/print: setup_output was not called");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargs, NULL);
}

PyObject *
say(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return output(args, nargs, 1);
}

PyObject *
print_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return output(args, nargs, 0);
}

/* -- ngx.shared.NAME: the wrapped zone, when it is still the runtime's -- */

PyObject *
setup_shared(PyObject *module, PyObject *args)
{
    PyObject *wrapped, *core;
    if (!PyArg_ParseTuple(args, "O!O!:setup_shared", &PyDict_Type, &wrapped, &PyModule_Type, &core))
        return NULL;
    Py_XSETREF(S.wrapped, Py_NewRef(wrapped));
    Py_XSETREF(S.core_module, Py_NewRef(core));
    Py_RETURN_NONE;
}

static PyObject *
shared_getattr(PyObject *self, PyObject *name)
{
    if (S.wrapped != NULL && PyUnicode_CheckExact(name) && PyUnicode_GET_LENGTH(name) > 0
            && PyUnicode_READ_CHAR(name, 0) != '_') {
        PyObject *hit = PyDict_GetItemWithError(S.wrapped, name);
        if (hit != NULL && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2) {
            /* (the module's own dict: RT is rebound by each runtime installed) */
            PyObject *rt = PyDict_GetItemWithError(PyModule_GetDict(S.core_module), S.s_rt);
            PyObject *zones = rt == NULL ? NULL : PyObject_GetAttr(rt, S.s_shdicts);
            if (zones == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError, "ngx.shared: no runtime");
                return NULL;
            }
            PyObject *zone = PyDict_CheckExact(zones) ? PyDict_GetItemWithError(zones, name) : NULL;
            int same = zone != NULL && zone == PyTuple_GET_ITEM(hit, 0);
            Py_DECREF(zones);
            if (same)
                return Py_NewRef(PyTuple_GET_ITEM(hit, 1));
        }
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallMethodOneArg(self, S.s_attr, name);  /* a new generation's zone, or none */
    }
    return PyObject_GenericGetAttr(self, name);
}

PyTypeObject SharedBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.http._fast.SharedBase",
    .tp_basicsize = sizeof(Base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ngx.shared's NAME lookup: a zone wrapped before, in C; the rest to ``_attr``.",
    .tp_getattro = shared_getattr,
    .tp_new = PyType_GenericNew,
};

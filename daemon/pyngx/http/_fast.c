/* pyngx.http._fast: the plain requests' path of an HTTP connection, in C (the parts: fast.h). */
#include "fast.h"

State S;

static const char *CONN_NAMES[C_N] = {"site", "transport", "state", "since", "due", "requests", "closed", "eof",
                                      "busy", "queue", "tail", "listed", "line_open", "url", "headers", "vhosts",
                                      "server", "host_ok"};
static const char *VHOSTS_NAMES[V_N] = {"only", "default", "exact", "wild"};
static const char *EX_NAMES[E_N] = {"conn", "method", "url", "uri", "args", "version", "headers", "body", "route",
                                    "match", "vars", "ctx", "status", "out_headers", "out", "sent", "chunked",
                                    "keep_alive", "done", "start", "body_bytes", "head_only", "_headers_cache",
                                    "more"};
static const char *SITE_NAMES[S_N] = {"clock", "keepalive", "date_server", "content_ctx", "draining", "access",
                                      "n_requests", "fresh"};
static const char *ROUTE_NAMES[R_N] = {"plain", "quick", "handler", "ctype", "rewrite", "access", "log",
                                       "max_body"};

static int
find_offsets(PyTypeObject *type, const char **names, int n, Py_ssize_t *out)
{
    for (int i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, names[i]);
        if (descr == NULL)
            return -1;
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
                || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            Py_DECREF(descr);
            return -1;
        }
        out[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
    }
    return 0;
}

/* The slots of EX_TYPE must be exactly those this file sets on a new exchange. */
static int
check_exchange_slots(PyTypeObject *type)
{
    PyObject *slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (slots == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(slots, "__slots__");
    Py_DECREF(slots);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int ok = n == E_N;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (name == NULL) {
            Py_DECREF(seq);
            return -1;
        }
        ok = 0;
        for (int j = 0; j < E_N; j++)
            if (strcmp(name, EX_NAMES[j]) == 0)
                ok = 1;
    }
    Py_DECREF(seq);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "Exchange's slots are not those the C path sets");
        return -1;
    }
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyTypeObject *conn, *ex, *site, *route, *server, *vhosts;
    PyObject *current, *exit_exc, *ok_line, *managed;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOSO!:setup", &PyType_Type, &conn, &PyType_Type, &ex, &PyType_Type,
                          &site, &PyType_Type, &route, &PyType_Type, &server, &PyType_Type, &vhosts, &current,
                          &exit_exc, &ok_line, &PyFrozenSet_Type, &managed))
        return NULL;
    Py_ssize_t one;
    if (find_offsets(conn, CONN_NAMES, C_N, S.conn) < 0 || find_offsets(ex, EX_NAMES, E_N, S.ex) < 0
            || check_exchange_slots(ex) < 0 || find_offsets(site, SITE_NAMES, S_N, S.site) < 0
            || find_offsets(route, ROUTE_NAMES, R_N, S.route) < 0)
        return NULL;
    const char *targets = "targets";
    if (find_offsets(server, &targets, 1, &one) < 0 || find_offsets(vhosts, VHOSTS_NAMES, V_N, S.vhosts) < 0)
        return NULL;
    S.server_targets = one;
    if (!PyContextVar_CheckExact(current)) {
        PyErr_SetString(PyExc_TypeError, "setup: CURRENT must be a context variable");
        return NULL;
    }
    Py_INCREF(conn); Py_INCREF(ex); Py_INCREF(site); Py_INCREF(route); Py_INCREF(server); Py_INCREF(vhosts);
    Py_INCREF(current); Py_INCREF(exit_exc); Py_INCREF(ok_line); Py_INCREF(managed);
    S.managed = managed;
    S.conn_type = conn; S.ex_type = ex; S.site_type = site; S.route_type = route; S.server_type = server;
    S.vhosts_type = vhosts; S.current = current; S.exit_exc = exit_exc; S.ok_line = ok_line;
    S.ready = 1;
    Py_RETURN_NONE;
}

static PyObject *
setup_phases(PyObject *module, PyObject *args)
{
    PyObject *var, *rewrite, *access, *content, *log, *raised;
    if (!PyArg_ParseTuple(args, "OUUUUO:setup_phases", &var, &rewrite, &access, &content, &log, &raised))
        return NULL;
    if (!PyContextVar_CheckExact(var) || !PyCallable_Check(raised)) {
        PyErr_SetString(PyExc_TypeError, "setup_phases: a context variable and a callable are needed");
        return NULL;
    }
    Py_INCREF(var); Py_INCREF(rewrite); Py_INCREF(access); Py_INCREF(content); Py_INCREF(log); Py_INCREF(raised);
    S.phase_var = var;
    S.phase_names[0] = rewrite;
    S.phase_names[1] = access;
    S.phase_names[2] = content;
    S.phase_names[3] = log;
    S.step_raised = raised;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"say", (PyCFunction)(void (*)(void))say, METH_FASTCALL,
     "say($module, /, *args)\n--\n\nBuffer ARGS (concatenated, str() for non-bytes) and a newline for the response body."},
    {"print", (PyCFunction)(void (*)(void))print_, METH_FASTCALL,
     "print($module, /, *args)\n--\n\nBuffer ARGS (concatenated) for the response body."},
    {"get_uri_args", (PyCFunction)(void (*)(void))get_uri_args, METH_FASTCALL | METH_KEYWORDS,
     "get_uri_args($module, /, max_args=100)\n--\n\n"
     "The query string's arguments: a repeated key gives a list, a bare key True (at most MAX_ARGS; 0: all)."},
    {"get_headers", (PyCFunction)(void (*)(void))get_headers, METH_FASTCALL | METH_KEYWORDS,
     "get_headers($module, /, max_headers=100, raw=False)\n--\n\n"
     "Request headers with lower-case names (a repeated one gives a list); RAW keeps names as sent, first value only."},
    {"setup_req", setup_req, METH_VARARGS,
     "setup_req(READ, ARGS, get_uri_args, get_headers): ngx.req's kept arguments and its Python functions."},
    {"setup_output", setup_output, METH_VARARGS,
     "setup_output(say, print): the Python functions for every case but one str in the content phase."},
    {"setup_shared", setup_shared, METH_VARARGS,
     "setup_shared(WRAPPED, runtime_core): ngx.shared's wrapped zones and where the current ones are."},
    {"setup_header", setup_header, METH_VARARGS,
     "setup_header(NAMES, SETTABLE): ngx.header's cleaned names and the phases that may set one."},
    {"setup_phases", setup_phases, METH_VARARGS,
     "setup_phases(phase_var, REWRITE, ACCESS, CONTENT, LOG, step_raised): run the common phased location too."},
    {"setup", setup, METH_VARARGS,
     "setup(Connection, Exchange, Site, Route, Server, Vhosts, CURRENT, Exit, ok_line, MANAGED): find the slots."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pyngx.http._fast", "The plain requests' path of an HTTP connection, in C.", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__fast(void)
{
    init_tables();
#define CONST(field, expr) if ((S.field = (expr)) == NULL) return NULL
    for (int i = 0; i < N_METHODS; i++)
        CONST(methods[i], PyBytes_FromString(METHODS[i]));
    CONST(v10, PyUnicode_InternFromString("1.0"));
    CONST(v11, PyUnicode_InternFromString("1.1"));
    CONST(one, PyLong_FromLong(1));
    CONST(zero, PyLong_FromLong(0));
    CONST(status_ok, PyLong_FromLong(200));
    CONST(s_parse, PyUnicode_InternFromString("parse"));
    CONST(s_run, PyUnicode_InternFromString("run"));
    CONST(s_finish, PyUnicode_InternFromString("finish"));
    CONST(s_raised, PyUnicode_InternFromString("raised"));
    CONST(s_failed, PyUnicode_InternFromString("failed"));
    CONST(s_next, PyUnicode_InternFromString("next"));
    CONST(s_log_request, PyUnicode_InternFromString("log_request"));
    CONST(s_set, PyUnicode_InternFromString("_set"));
    CONST(s_rt, PyUnicode_InternFromString("RT"));
    CONST(s_shdicts, PyUnicode_InternFromString("shdicts"));
    CONST(s_attr, PyUnicode_InternFromString("_attr"));
    CONST(s_write, PyUnicode_InternFromString("write"));
    CONST(s_arm, PyUnicode_InternFromString("arm"));
    CONST(s_content_type, PyUnicode_InternFromString("content-type"));
#undef CONST
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &HeaderBaseType) < 0 || PyModule_AddType(m, &SharedBaseType) < 0
            || PyModule_AddType(m, &BaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

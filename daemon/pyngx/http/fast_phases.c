/* The common phased location (route.quick) run in C, as phases._quick; see fast.h. */
#include "fast.h"

/* After a phase's handler raised (the exception set): what phases.step_raised says, 0 go on,
   1 answer what EX holds, 2 the request was handed over; -1 error. */
static int
step_raised(PyObject *self, PyObject *ex, PyObject *name)
{
    PyObject *value = take_exception();
    PyObject *r = PyObject_CallFunctionObjArgs(S.step_raised, self, ex, name, value, NULL);
    Py_DECREF(value);
    if (r == NULL)
        return -1;
    long what = PyLong_AsLong(r);
    Py_DECREF(r);
    if (what == -1 && PyErr_Occurred())
        return -1;
    return (int)what;
}

static int
has_output(PyObject *ex)
{
    PyObject *out = SLOT(ex, S.ex[E_OUT]);
    int sent = SLOT(ex, S.ex[E_SENT]) == Py_True;
    return sent || (out != NULL && PyList_CheckExact(out) ? PyList_GET_SIZE(out) > 0 : PyObject_IsTrue(out) == 1);
}

/* After the steps: the answer, the log phase (phases.run_log: its errors only logged), then the
   connection is free for the next request (phases._after); 0, or -1 error. */
static int
quick_after(PyObject *self, PyObject *site, PyObject *ex, PyObject *route)
{
    PyObject *r;
    if (finish(self, site, ex) < 0)
        return -1;
    PyObject *log = SLOT(route, S.route[R_LOG]);
    if (log != NULL && log != Py_None) {
        if (!PyTuple_CheckExact(log) || PyTuple_GET_SIZE(log) < 1) {
            PyErr_SetString(PyExc_TypeError, "a phase step is not a tuple");
            return -1;
        }
        PyObject *token = PyContextVar_Set(S.phase_var, S.phase_names[3]);
        if (token == NULL)
            return -1;
        Py_DECREF(token);
        r = PyObject_CallNoArgs(PyTuple_GET_ITEM(log, 0));
        if (r != NULL)
            Py_DECREF(r);
        else if (step_raised(self, ex, S.phase_names[3]) < 0)
            return -1;
    }
    set_slot(self, S.conn[C_BUSY], Py_False);
    PyObject *queue = SLOT(self, S.conn[C_QUEUE]);
    if (SLOT(self, S.conn[C_CLOSED]) == Py_False && queue != NULL && queue != Py_None && PyObject_IsTrue(queue) == 1) {
        r = PyObject_CallMethodNoArgs(self, S.s_next);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* The steps of a phased location's common case (route.quick: rewrite and/or access, then a
   content handler, nothing else), as phases._quick, inside CTX (entered): 0 done, -1 error. */
static int
quick_steps(PyObject *self, PyObject *site, PyObject *ex, PyObject *route)
{
    PyObject *token = PyContextVar_Set(S.current, ex), *r;
    if (token == NULL)
        return -1;
    Py_DECREF(token);
    int ends = 0;
    for (int i = 0; i < 3 && !ends; i++) {
        PyObject *fn;
        if (i < 2) {
            PyObject *step = SLOT(route, S.route[i == 0 ? R_REWRITE : R_ACCESS]);
            if (step == NULL || step == Py_None)
                continue;
            if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) < 1) {
                PyErr_SetString(PyExc_TypeError, "a phase step is not a tuple");
                return -1;
            }
            fn = PyTuple_GET_ITEM(step, 0);
        }
        else
            fn = SLOT(route, S.route[R_HANDLER]);
        token = PyContextVar_Set(S.phase_var, S.phase_names[i]);
        if (token == NULL)
            return -1;
        Py_DECREF(token);
        r = PyObject_CallNoArgs(fn);
        if (r != NULL) {
            Py_DECREF(r);
            ends = i == 2 || has_output(ex);
            continue;
        }
        int what = step_raised(self, ex, S.phase_names[i]);
        if (what < 0)
            return -1;
        if (what == 2)
            return 0;  /* handed over (ngx.exec): the general path goes on */
        ends = what == 1;
    }
    return quick_after(self, site, ex, route);
}

int
serve_quick(PyObject *self, PyObject *site, PyObject *ex, PyObject *route)
{
    set_slot(self, S.conn[C_BUSY], Py_True);
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL)
        return -1;
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return -1;
    }
    int result = quick_steps(self, site, ex, route);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContext_Exit(ctx) < 0)
        result = -1;
    else
        PyErr_Restore(type, value, tb);
    Py_DECREF(ctx);
    return result;
}

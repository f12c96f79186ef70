/* The common 200 answer (plain text headers, a small body), written in one piece; see fast.h. */
#include "fast.h"

/* The response headers HDRS ({key: (name, value)}, as Exchange.head reads them) rendered:
   their size, or -1 when one is not plain ASCII text (a list, a number, non-ASCII...). */
static Py_ssize_t
headers_size(PyObject *hdrs)
{
    if (!PyDict_CheckExact(hdrs))
        return -1;
    Py_ssize_t pos = 0, size = 0;
    PyObject *key, *item;
    while (PyDict_Next(hdrs, &pos, &key, &item)) {
        if (!PyUnicode_CheckExact(key) || !PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            return -1;
        int managed = PySet_Contains(S.managed, key);
        if (managed < 0) {
            PyErr_Clear();
            return -1;
        }
        if (managed)
            continue;
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(name)
                || !PyUnicode_IS_ASCII(value))
            return -1;
        size += PyUnicode_GET_LENGTH(name) + 2 + PyUnicode_GET_LENGTH(value) + 2;
    }
    return size;
}

/* Write what headers_size measured at W; past its end. */
static char *
headers_write(PyObject *hdrs, char *w)
{
    Py_ssize_t pos = 0;
    PyObject *key, *item;
    while (PyDict_Next(hdrs, &pos, &key, &item)) {
        if (PySet_Contains(S.managed, key) == 1)
            continue;
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t n = PyUnicode_GET_LENGTH(name), v = PyUnicode_GET_LENGTH(value);
        memcpy(w, PyUnicode_1BYTE_DATA(name), n);
        w += n;
        *w++ = ':';
        *w++ = ' ';
        memcpy(w, PyUnicode_1BYTE_DATA(value), v);
        w += v;
        *w++ = '\r';
        *w++ = '\n';
    }
    return w;
}

/* "Content-Length: N\r\n\r\n" at W (48 bytes are enough); its length. */
static int
content_length(char *w, Py_ssize_t n)
{
    static const char name[] = "Content-Length: ";
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    memcpy(w, name, sizeof name - 1);
    int len = sizeof name - 1;
    while (k > 0)
        w[len++] = digits[--k];
    memcpy(w + len, "\r\n\r\n", 4);
    return len + 4;
}

/* Whether EX's answer is the common one: 200, keep-alive, HTTP/1.1, nothing sent, the connection
   between requests and the server not draining. */
static int
common_answer(PyObject *self, PyObject *site, PyObject *ex)
{
    const Py_ssize_t *e = S.ex, *c = S.conn;
    PyObject *route = SLOT(ex, e[E_ROUTE]), *out = SLOT(ex, e[E_OUT]);
    return SLOT(ex, e[E_SENT]) == Py_False && is_int(SLOT(ex, e[E_STATUS]), 200)
        && SLOT(ex, e[E_KEEP_ALIVE]) == Py_True && SLOT(ex, e[E_VERSION]) == S.v11
        && SLOT(ex, e[E_HEAD_ONLY]) == Py_False && route != NULL && Py_IS_TYPE(route, S.route_type)
        && out != NULL && PyList_CheckExact(out) && SLOT(self, c[C_CLOSED]) == Py_False
        && SLOT(self, c[C_QUEUE]) == Py_None && SLOT(self, c[C_EOF]) == Py_False
        && is_int(SLOT(self, c[C_STATE]), 0) && SLOT(site, S.site[S_DRAINING]) == Py_False
        && SLOT(self, c[C_TRANSPORT]) != NULL;
}

/* EX's answer in one bytes object, its body's size in *BODY; NULL without an exception when the
   headers or the body are not for this path (not plain text, not bytes, LARGE or more). */
static PyObject *
render(PyObject *site, PyObject *ex, Py_ssize_t *body)
{
    PyObject *out = SLOT(ex, S.ex[E_OUT]), *hdrs = SLOT(ex, S.ex[E_OUT_HEADERS]);
    PyObject *date = SLOT(site, S.site[S_DATE_SERVER]), *ctype = SLOT(SLOT(ex, S.ex[E_ROUTE]), S.route[R_CTYPE]);
    if (date == NULL || !PyBytes_CheckExact(date) || ctype == NULL || !PyBytes_CheckExact(ctype))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(out), size = 0, hlen = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *piece = PyList_GET_ITEM(out, i);
        if (!PyBytes_CheckExact(piece))
            return NULL;
        size += PyBytes_GET_SIZE(piece);
    }
    if (size >= LARGE)
        return NULL;
    if (hdrs != Py_None) {
        hlen = headers_size(hdrs);
        if (hlen < 0)
            return NULL;  /* not plain text: Exchange.head renders them */
        if (PyDict_GetItemWithError(hdrs, S.s_content_type) != NULL)
            ctype = NULL;  /* the handler's own Content-Type */
        else if (PyErr_Occurred())
            return NULL;
    }
    char length[48];
    int length_len = content_length(length, size);
    Py_ssize_t line = PyBytes_GET_SIZE(S.ok_line), dlen = PyBytes_GET_SIZE(date);
    Py_ssize_t clen = ctype == NULL ? 0 : PyBytes_GET_SIZE(ctype);
    PyObject *answer = PyBytes_FromStringAndSize(NULL, line + dlen + clen + hlen + length_len + size);
    if (answer == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(answer);
    memcpy(w, PyBytes_AS_STRING(S.ok_line), line);
    memcpy(w += line, PyBytes_AS_STRING(date), dlen);
    w += dlen;
    if (ctype != NULL) {
        memcpy(w, PyBytes_AS_STRING(ctype), clen);
        w += clen;
    }
    if (hlen > 0)
        w = headers_write(hdrs, w);
    memcpy(w, length, length_len);
    w += length_len;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *piece = PyList_GET_ITEM(out, i);
        memcpy(w, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece));
        w += PyBytes_GET_SIZE(piece);
    }
    *body = size;
    return answer;
}

/* Keep-alive after an answer: its timeout runs from now (HttpProtocol.finish); 0, or -1 error. */
static int
keep_alive(PyObject *self, PyObject *site)
{
    const Py_ssize_t *c = S.conn;
    PyObject *clock = SLOT(site, S.site[S_CLOCK]), *keepalive = SLOT(site, S.site[S_KEEPALIVE]);
    PyObject *due = SLOT(self, c[C_DUE]);
    if (clock == NULL || keepalive == NULL || due == NULL) {
        PyErr_SetString(PyExc_TypeError, "a connection's clock or deadline is not set");
        return -1;
    }
    set_slot(self, c[C_SINCE], clock);
    double when = PyFloat_AsDouble(clock) + PyFloat_AsDouble(keepalive);
    double due_at = PyFloat_AsDouble(due);
    if (PyErr_Occurred())
        return -1;
    if (when < due_at) {
        PyObject *at = PyFloat_FromDouble(when);
        PyObject *r = at == NULL ? NULL : PyObject_CallMethodObjArgs(site, S.s_arm, self, at, NULL);
        Py_XDECREF(at);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (SLOT(self, c[C_LISTED]) != Py_True) {
        set_slot(self, c[C_LISTED], Py_True);
        PyObject *fresh = SLOT(site, S.site[S_FRESH]);
        if (fresh == NULL || !PyList_CheckExact(fresh)) {
            PyErr_SetString(PyExc_TypeError, "the site's list of fresh connections is not a list");
            return -1;
        }
        if (PyList_Append(fresh, self) < 0)
            return -1;
    }
    return 0;
}

/* Write EX's answer if it is the common one (200, plain text headers, keep-alive, HTTP/1.1, a
   small body), then count it, log it and keep the connection alive as HttpProtocol.finish does;
   1 written, 0 not that answer, -1 error. */
static int
finish_plain(PyObject *self, PyObject *site, PyObject *ex)
{
    if (!common_answer(self, site, ex))
        return 0;
    Py_ssize_t body = 0;
    PyObject *answer = render(site, ex, &body);
    if (answer == NULL)
        return PyErr_Occurred() ? -1 : 0;
    set_slot(ex, S.ex[E_DONE], Py_True);
    PyObject *size = PyLong_FromSsize_t(body);
    if (size == NULL) {
        Py_DECREF(answer);
        return -1;
    }
    set_slot(ex, S.ex[E_BODY_BYTES], size);
    Py_DECREF(size);
    PyObject *r = PyObject_CallMethodOneArg(SLOT(self, S.conn[C_TRANSPORT]), S.s_write, answer);
    Py_DECREF(answer);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if (add_one(site, S.site[S_N_REQUESTS]) == NULL)
        return -1;
    PyObject *access = SLOT(site, S.site[S_ACCESS]);
    if (access != NULL && access != Py_None) {  /* the access log's line */
        r = PyObject_CallMethodOneArg(site, S.s_log_request, ex);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return keep_alive(self, site) < 0 ? -1 : 1;
}

/* EX's answer: the common one here, any other by HttpProtocol.finish; 0, or -1 error. */
int
finish(PyObject *self, PyObject *site, PyObject *ex)
{
    int done = finish_plain(self, site, ex);
    if (done != 0)
        return done < 0 ? -1 : 0;
    PyObject *r = PyObject_CallMethodOneArg(self, S.s_finish, ex);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

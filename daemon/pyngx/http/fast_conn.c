/* The common request's path in C: a read of whole, plain request heads answered without Python.
 *
 * `Base.data_received` is the read callback of every HTTP connection
 * (`pyngx.http.connection.Connection` derives from `Base`). A read that holds
 * whole requests of the plain kind (a common method, no body or a Content-Length
 * one all in the read, ASCII, CRLF lines, every header well formed, none of
 * those that change how the message is framed, a Host nginx accepts, a target
 * the server has already resolved)
 * is answered here, one request after the other: the `Exchange` is made
 * here, a plain content handler is called here (in the server's content
 * context, with the request current), and a 200 answer whose response
 * headers are plain text is written here. Anything else, at any point, goes to the
 * connection's Python methods, which own every other case: the rest of the
 * read to ``parse`` (httptools), a request of any other location to ``run``,
 * any other answer to ``finish``, an exception of the handler to ``raised``,
 * an error of this path's own to ``failed``.
 * The parser of the Python path is only ever handed whole requests' worth
 * of state: this path starts only between requests and consumes whole ones.
 *
 * The Python objects' attributes are slots; `setup` finds their offsets
 * once, from the classes' own slot descriptors, so reading one is a load.
 */
#include "fast.h"

/* The exception set (there is one), taken: normalized, with its traceback, for Python code. */
PyObject *
take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Between requests, nothing pending, nothing running: the state this path starts from. */
int
between_requests(PyObject *self, PyObject *site)
{
    const Py_ssize_t *c = S.conn;
    PyObject *url = SLOT(self, c[C_URL]), *headers = SLOT(self, c[C_HEADERS]);
    return is_int(SLOT(self, c[C_STATE]), 0) && SLOT(self, c[C_CLOSED]) == Py_False
        && SLOT(self, c[C_BUSY]) == Py_False && SLOT(self, c[C_QUEUE]) == Py_None
        && SLOT(self, c[C_EOF]) == Py_False && SLOT(self, c[C_TAIL]) == Py_False
        && SLOT(self, c[C_LINE_OPEN]) == Py_False && url != NULL && PyBytes_CheckExact(url)
        && PyBytes_GET_SIZE(url) == 0 && headers != NULL && PyList_CheckExact(headers)
        && PyList_GET_SIZE(headers) == 0 && SLOT(site, S.site[S_DRAINING]) == Py_False;
}

PyObject *
add_one(PyObject *obj, Py_ssize_t off)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL || !PyLong_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "a counter is not an int");
        return NULL;
    }
    PyObject *n = PyNumber_Add(v, S.one);
    if (n == NULL)
        return NULL;
    set_slot(obj, off, n);
    Py_DECREF(n);
    return n;
}

/* The new exchange for H (its target resolved to HIT), or NULL with an exception set. */
static PyObject *
new_exchange(PyObject *self, PyObject *site, const Head *h, PyObject *url, PyObject *hit)
{
    PyObject *headers = PyList_New(h->n);
    if (headers == NULL)
        return NULL;
    for (int i = 0; i < h->n; i++) {
        const Field *f = &h->fields[i];
        PyObject *pair = PyTuple_New(2);
        PyObject *name = PyBytes_FromStringAndSize(f->name, f->name_len);
        PyObject *value = PyBytes_FromStringAndSize(f->value, f->value_len);
        if (pair == NULL || name == NULL || value == NULL) {
            Py_XDECREF(pair); Py_XDECREF(name); Py_XDECREF(value); Py_DECREF(headers);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(headers, i, pair);
    }
    PyObject *out = PyList_New(0);
    PyObject *ex = out == NULL ? NULL : S.ex_type->tp_alloc(S.ex_type, 0);
    if (ex == NULL) {
        Py_XDECREF(out);
        Py_DECREF(headers);
        return NULL;
    }
    const Py_ssize_t *e = S.ex;
    set_slot(ex, e[E_CONN], self);
    set_slot(ex, e[E_METHOD], S.methods[h->method]);
    set_slot(ex, e[E_URL], url);
    set_slot(ex, e[E_URI], PyTuple_GET_ITEM(hit, 0));
    set_slot(ex, e[E_ARGS], PyTuple_GET_ITEM(hit, 1));
    set_slot(ex, e[E_ROUTE], PyTuple_GET_ITEM(hit, 2));
    set_slot(ex, e[E_MATCH], PyTuple_GET_ITEM(hit, 3));
    set_slot(ex, e[E_VERSION], h->minor ? S.v11 : S.v10);
    SLOT(ex, e[E_HEADERS]) = headers;  /* (the reference made above) */
    set_slot(ex, e[E_KEEP_ALIVE], h->keep_alive ? Py_True : Py_False);
    set_slot(ex, e[E_START], SLOT(site, S.site[S_CLOCK]));
    if (h->body_len > 0) {
        PyObject *body = PyBytes_FromStringAndSize(h->body, h->body_len);
        if (body == NULL) {
            Py_DECREF(ex);
            return NULL;
        }
        SLOT(ex, e[E_BODY]) = body;
    }
    else
        set_slot(ex, e[E_BODY], Py_None);
    set_slot(ex, e[E_VARS], Py_None);
    set_slot(ex, e[E_CTX], Py_None);
    set_slot(ex, e[E_STATUS], S.status_ok);
    set_slot(ex, e[E_OUT_HEADERS], Py_None);
    SLOT(ex, e[E_OUT]) = out;
    set_slot(ex, e[E_SENT], Py_False);
    set_slot(ex, e[E_CHUNKED], Py_False);
    set_slot(ex, e[E_DONE], Py_False);
    set_slot(ex, e[E_BODY_BYTES], S.zero);
    set_slot(ex, e[E_HEAD_ONLY], h->method == M_HEAD ? Py_True : Py_False);
    set_slot(ex, e[E_HEADERS_CACHE], Py_None);
    set_slot(ex, e[E_MORE], Py_None);
    return ex;
}

/* Call the plain handler in the site's content context with EX current: 1 done (or ngx.exit),
   0 it raised something else (the exception is set), -1 an error of this path. */
static int
call_handler(PyObject *site, PyObject *handler, PyObject *ex)
{
    PyObject *ctx = SLOT(site, S.site[S_CONTENT_CTX]);
    if (ctx == NULL || !PyContext_CheckExact(ctx)) {
        PyErr_SetString(PyExc_TypeError, "the site has no content context");
        return -1;
    }
    if (PyContext_Enter(ctx) < 0)
        return -1;
    PyObject *token = PyContextVar_Set(S.current, ex);
    PyObject *result = NULL;
    if (token != NULL) {
        Py_DECREF(token);
        result = PyObject_CallNoArgs(handler);
    }
    /* leave the context whatever happened, keeping the handler's exception */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int left = PyContext_Exit(ctx);
    if (left < 0) {
        Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
        Py_XDECREF(result);
        return -1;
    }
    PyErr_Restore(type, value, tb);
    if (token == NULL)
        return -1;
    if (result != NULL) {
        Py_DECREF(result);
        return 1;
    }
    if (PyErr_ExceptionMatches(S.exit_exc)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* Answer EX, whose head this path parsed: 0 done, -1 error. */
static int
serve(PyObject *self, PyObject *site, PyObject *ex)
{
    PyObject *route = SLOT(ex, S.ex[E_ROUTE]), *r;
    if (add_one(self, S.conn[C_REQUESTS]) == NULL)
        return -1;
    PyObject *handler = NULL;
    if (route != NULL && Py_IS_TYPE(route, S.route_type)) {
        if (SLOT(route, S.route[R_QUICK]) == Py_True && S.step_raised != NULL)
            return serve_quick(self, site, ex, route);  /* (run() counts the request: so did this) */
        if (SLOT(route, S.route[R_PLAIN]) == Py_True)
            handler = SLOT(route, S.route[R_HANDLER]);
    }
    if (handler == NULL || handler == Py_None) {
        /* any other location: the Python path runs it (it counts the request itself) */
        PyObject *requests = SLOT(self, S.conn[C_REQUESTS]);
        PyObject *back = PyNumber_Subtract(requests, S.one);
        if (back == NULL)
            return -1;
        set_slot(self, S.conn[C_REQUESTS], back);
        Py_DECREF(back);
        r = PyObject_CallMethodOneArg(self, S.s_run, ex);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    int called = call_handler(site, handler, ex);
    if (called < 0)
        return -1;
    if (called == 0) {
        /* the handler raised: ngx.exec, or an error (HttpProtocol.raised) */
        PyObject *value = take_exception();
        r = PyObject_CallMethodObjArgs(self, S.s_raised, ex, value, NULL);
        Py_DECREF(value);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    return finish(self, site, ex);
}

/* The server for H's Host among VHOSTS, as Vhosts.find (the connection's ``server`` set to it when
   the address has several); borrowed. NULL: let the Python path pick (wildcard names), or an error. */
static PyObject *
pick_server(PyObject *self, PyObject *vhosts, const Head *h)
{
    const Py_ssize_t *v = S.vhosts;
    PyObject *server = SLOT(vhosts, v[V_ONLY]);
    if (server != NULL && server != Py_None)
        return Py_IS_TYPE(server, S.server_type) ? server : NULL;
    server = SLOT(vhosts, v[V_DEFAULT]);
    if (h->host != NULL) {
        char name[256];
        Py_ssize_t n = h->host_len;
        if (n >= (Py_ssize_t)sizeof name)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            char c = h->host[i];
            name[i] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        }
        if (name[0] != '[') {  /* name.rsplit(":", 1)[0] */
            for (Py_ssize_t i = n - 1; i >= 0; i--)
                if (name[i] == ':') {
                    n = i;
                    break;
                }
        }
        while (n > 0 && name[n - 1] == '.')
            n--;
        PyObject *exact = SLOT(vhosts, v[V_EXACT]), *wild = SLOT(vhosts, v[V_WILD]);
        if (exact == NULL || !PyDict_CheckExact(exact) || wild == NULL || !PyList_CheckExact(wild))
            return NULL;
        PyObject *key = PyUnicode_FromStringAndSize(name, n);
        if (key == NULL)
            return NULL;
        PyObject *found = PyDict_GetItemWithError(exact, key);
        Py_DECREF(key);
        if (found != NULL)
            server = found;
        else if (PyErr_Occurred() || PyList_GET_SIZE(wild) > 0)
            return NULL;
    }
    if (server == NULL || !Py_IS_TYPE(server, S.server_type))
        return NULL;
    set_slot(self, S.conn[C_SERVER], server);
    return server;
}

/* Whether this path takes a body of LENGTH bytes for ROUTE: a location it runs itself (others may
   stream the body, or answer without it) and within client_max_body_size (over it: a 413). */
static int
body_fits(PyObject *route, Py_ssize_t length)
{
    if (!Py_IS_TYPE(route, S.route_type)
            || (SLOT(route, S.route[R_PLAIN]) != Py_True && SLOT(route, S.route[R_QUICK]) != Py_True))
        return 0;
    PyObject *limit = SLOT(route, S.route[R_MAX_BODY]);
    if (limit == NULL || !PyLong_CheckExact(limit))
        return 0;
    int overflow = 0;
    long long max = PyLong_AsLongLongAndOverflow(limit, &overflow);
    if (max == -1 && PyErr_Occurred())
        return 0;
    return overflow > 0 || length <= max;
}

/* The resolved target of H on this connection's server (borrowed), with the server picked and the
   Host remembered; NULL without an exception when the Python path is to take the request. */
static PyObject *
target(PyObject *self, PyObject *vhosts, const Head *h, PyObject *url)
{
    PyObject *server = pick_server(self, vhosts, h);
    if (server == NULL)
        return NULL;  /* (or an error) a wildcard name to match: the Python path picks the server */
    PyObject *targets = SLOT(server, S.server_targets);
    if (targets == NULL || !PyDict_CheckExact(targets))
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(targets, url);
    if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 4)
        return NULL;  /* a target not resolved yet: the Python path resolves and remembers it */
    if (h->body_len > 0 && !body_fits(PyTuple_GET_ITEM(hit, 2), h->body_len))
        return NULL;  /* the Python path reads it (or answers 413) */
    if (h->host != NULL) {
        PyObject *known = SLOT(self, S.conn[C_HOST_OK]);
        if (known == NULL || !PyBytes_CheckExact(known) || PyBytes_GET_SIZE(known) != h->host_len
                || memcmp(PyBytes_AS_STRING(known), h->host, h->host_len) != 0) {
            PyObject *host = PyBytes_FromStringAndSize(h->host, h->host_len);
            if (host == NULL)
                return NULL;
            set_slot(self, S.conn[C_HOST_OK], host);
            Py_DECREF(host);
        }
    }
    return hit;
}

/* Answer the request at BUF[*POS:LEN] if it is a plain one (*POS then past it): 1 answered, 0 the
   Python path is to take the rest of the read, -1 error. */
static int
next_request(PyObject *self, const char *buf, Py_ssize_t *pos, Py_ssize_t len)
{
    Head h;
    PyObject *site = SLOT(self, S.conn[C_SITE]), *vhosts = SLOT(self, S.conn[C_VHOSTS]);
    if (site == NULL || !Py_IS_TYPE(site, S.site_type) || vhosts == NULL || !Py_IS_TYPE(vhosts, S.vhosts_type)
            || !between_requests(self, site) || !parse_head(buf, *pos, len, &h))
        return 0;
    PyObject *url = PyBytes_FromStringAndSize(h.url, h.url_len);
    if (url == NULL)
        return -1;
    PyObject *hit = target(self, vhosts, &h, url);
    if (hit == NULL) {
        Py_DECREF(url);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(hit);  /* (the handler may change the server's table) */
    set_slot(self, S.conn[C_SINCE], SLOT(site, S.site[S_CLOCK]));
    PyObject *ex = new_exchange(self, site, &h, url, hit);
    Py_DECREF(hit);
    Py_DECREF(url);
    if (ex == NULL)
        return -1;
    *pos = h.end;
    int failed = serve(self, site, ex);
    Py_DECREF(ex);
    return failed ? -1 : 1;
}

static PyObject *
data_received(PyObject *self, PyObject *data)
{
    if (!S.ready || !PyBytes_CheckExact(data) || !PyObject_TypeCheck(self, S.conn_type))
        return PyObject_CallMethodOneArg(self, S.s_parse, data);
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t len = PyBytes_GET_SIZE(data), pos = 0;
    PyObject *r;
    int answered = 1;
    Py_INCREF(self);  /* the handler may drop the last other reference (a closed connection) */
    while (pos < len && answered > 0)
        answered = next_request(self, buf, &pos, len);
    if (answered < 0) {
        /* not the handler's exception (`raised` has those): as an error inside the parser's callbacks */
        PyObject *value = take_exception();
        r = PyObject_CallMethodOneArg(self, S.s_failed, value);
        Py_DECREF(value);
    }
    else if (pos == 0)
        r = PyObject_CallMethodOneArg(self, S.s_parse, data);
    else if (pos < len) {
        PyObject *rest = PyBytes_FromStringAndSize(buf + pos, len - pos);
        r = rest == NULL ? NULL : PyObject_CallMethodOneArg(self, S.s_parse, rest);
        Py_XDECREF(rest);
    }
    else
        r = Py_NewRef(Py_None);
    Py_DECREF(self);
    return r;
}

static PyMethodDef base_methods[] = {
    {"data_received", (PyCFunction)data_received, METH_O,
     "A read: whole plain requests answered here, the rest given to ``parse``."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject BaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.http._fast.Base",
    .tp_basicsize = sizeof(Base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The read callback of an HTTP connection, with the plain requests' path in C.",
    .tp_methods = base_methods,
    .tp_new = PyType_GenericNew,
};

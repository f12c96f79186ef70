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
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define MAX_HEAD 8192   /* limits.MAX_URI: a longer head goes to the checks of the Python path */
#define MAX_FIELDS 64   /* headers of one request on this path */
#define LARGE (64 * 1024) /* protocol.LARGE: a bigger body is written on its own */

/* the methods this path takes, as httptools names them */
#define N_METHODS 7
static const char *METHODS[N_METHODS] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
static const Py_ssize_t METHOD_LEN[N_METHODS] = {3, 4, 4, 3, 6, 5, 7};
#define M_HEAD 1

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static inline void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject **p = (PyObject **)((char *)obj + off);
    PyObject *old = *p;
    Py_INCREF(value);
    *p = value;
    Py_XDECREF(old);
}

/* -- what setup() finds -- */

enum { C_SITE, C_TRANSPORT, C_STATE, C_SINCE, C_DUE, C_REQUESTS, C_CLOSED, C_EOF, C_BUSY, C_QUEUE, C_TAIL,
       C_LISTED, C_LINE_OPEN, C_URL, C_HEADERS, C_VHOSTS, C_SERVER, C_HOST_OK, C_N };
static const char *CONN_NAMES[C_N] = {"site", "transport", "state", "since", "due", "requests", "closed", "eof",
                                      "busy", "queue", "tail", "listed", "line_open", "url", "headers", "vhosts",
                                      "server", "host_ok"};

enum { V_ONLY, V_DEFAULT, V_EXACT, V_WILD, V_N };
static const char *VHOSTS_NAMES[V_N] = {"only", "default", "exact", "wild"};

/* every slot of Exchange: a new exchange has each one set */
enum { E_CONN, E_METHOD, E_URL, E_URI, E_ARGS, E_VERSION, E_HEADERS, E_BODY, E_ROUTE, E_MATCH, E_VARS, E_CTX,
       E_STATUS, E_OUT_HEADERS, E_OUT, E_SENT, E_CHUNKED, E_KEEP_ALIVE, E_DONE, E_START, E_BODY_BYTES,
       E_HEAD_ONLY, E_HEADERS_CACHE, E_MORE, E_N };
static const char *EX_NAMES[E_N] = {"conn", "method", "url", "uri", "args", "version", "headers", "body", "route",
                                    "match", "vars", "ctx", "status", "out_headers", "out", "sent", "chunked",
                                    "keep_alive", "done", "start", "body_bytes", "head_only", "_headers_cache",
                                    "more"};

enum { S_CLOCK, S_KEEPALIVE, S_DATE_SERVER, S_CONTENT_CTX, S_DRAINING, S_ACCESS, S_N_REQUESTS, S_FRESH, S_N };
static const char *SITE_NAMES[S_N] = {"clock", "keepalive", "date_server", "content_ctx", "draining", "access",
                                      "n_requests", "fresh"};

enum { R_PLAIN, R_QUICK, R_HANDLER, R_CTYPE, R_REWRITE, R_ACCESS, R_LOG, R_MAX_BODY, R_N };
static const char *ROUTE_NAMES[R_N] = {"plain", "quick", "handler", "ctype", "rewrite", "access", "log",
                                       "max_body"};

typedef struct {
    int ready;
    PyTypeObject *conn_type, *ex_type, *site_type, *route_type, *server_type, *vhosts_type;
    Py_ssize_t conn[C_N], ex[E_N], site[S_N], route[R_N], vhosts[V_N], server_targets;
    PyObject *current;   /* the CURRENT context variable */
    PyObject *exit_exc;  /* pyngx.runtime.phase.Exit: the handler ended early, the answer stands */
    PyObject *ok_line;   /* b"HTTP/1.1 200 OK\r\n" */
    /* constants */
    PyObject *methods[N_METHODS], *v10, *v11, *zero, *one, *status_ok;
    PyObject *managed;   /* exchange.MANAGED: response headers the connection writes itself */
    /* the phases (setup_phases): the phase variable, the names of rewrite, access and content, and
       what to do when a phase's handler raises (phases.step_raised) */
    PyObject *phase_var, *phase_names[4], *step_raised;
    /* ngx.header (setup_header): exchange._NAMES, the phases where headers may be set */
    PyObject *header_names, *settable;
    /* ngx.say/print (setup_output): the Python functions for every other case */
    PyObject *py_say, *py_print;
    /* ngx.shared.NAME (setup_shared): the wrapped zones by name, the runtime's module */
    PyObject *wrapped, *core_module, *s_rt, *s_shdicts, *s_attr;
    PyObject *s_parse, *s_run, *s_finish, *s_raised, *s_failed, *s_write, *s_arm, *s_content_type, *s_next, *s_log_request, *s_set;
} State;

static State S;

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

/* -- the request head -- */

/* RFC 3986 characters of a target that httptools takes as they are (no '#', no '\\', no controls) */
static unsigned char URL_OK[256];
/* RFC 9110 token characters (a header name) */
static unsigned char TCHAR[256];
/* a header value's characters on this path: visible ASCII, space, tab */
static unsigned char VCHAR[256];

static void
init_tables(void)
{
    const char *url = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%";
    const char *tok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
    for (const char *p = url; *p; p++)
        URL_OK[(unsigned char)*p] = 1;
    for (const char *p = tok; *p; p++)
        TCHAR[(unsigned char)*p] = 1;
    for (int c = 0x20; c < 0x7f; c++)
        VCHAR[c] = 1;
    VCHAR['\t'] = 1;
}

typedef struct {
    const char *name, *value;
    Py_ssize_t name_len, value_len;
} Field;


typedef struct {
    int method;          /* an index in METHODS */
    const char *body;    /* a Content-Length body, whole in the read */
    Py_ssize_t body_len;
    int minor;           /* HTTP/1.MINOR */
    int keep_alive;
    const char *url;
    Py_ssize_t url_len;
    const char *host;
    Py_ssize_t host_len;
    int n;
    Field fields[MAX_FIELDS];
    Py_ssize_t end;      /* offset just past the head */
} Head;

static int
lower_is(const char *p, Py_ssize_t n, const char *lower)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != lower[i])
            return 0;
    }
    return lower[n] == '\0';
}

/* ngx_http_validate_host as limits.check_host: no '/', '\\', "..", leading '.' */
static int
host_ok(const char *p, Py_ssize_t n)
{
    if (n > 0 && p[0] == '.')
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] == '/' || p[i] == '\\')
            return 0;
        if (p[i] == '.' && i + 1 < n && p[i + 1] == '.')
            return 0;
    }
    return 1;
}

/* Parse one whole plain request head at BUF[POS:LEN] into H; 0 when it is not one (or not whole). */
static int
parse_head(const char *buf, Py_ssize_t pos, Py_ssize_t len, Head *h)
{
    const char *start = buf + pos, *p = start, *end = buf + len;
    if (end - start > MAX_HEAD)
        end = start + MAX_HEAD;
    const char *whole = buf + len;  /* (END may stop short of it: a body can go further) */
    h->method = -1;
    for (int i = 0; i < N_METHODS; i++) {
        Py_ssize_t n = METHOD_LEN[i];
        if (end - p > n && memcmp(p, METHODS[i], n) == 0 && p[n] == ' ') {
            h->method = i;
            p += n + 1;
            break;
        }
    }
    if (h->method < 0)
        return 0;
    h->url = p;
    if (p >= end || *p != '/')
        return 0;
    while (p < end && URL_OK[(unsigned char)*p])
        p++;
    h->url_len = p - h->url;
    if (end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 || (p[8] != '0' && p[8] != '1') || p[9] != '\r'
            || p[10] != '\n')
        return 0;
    h->minor = p[8] - '0';
    p += 11;
    int close = 0, keep = 0, sized = 0;
    Py_ssize_t length = 0;
    h->host = NULL;
    h->host_len = 0;
    h->n = 0;
    for (;;) {
        if (end - p < 2)
            return 0;
        if (p[0] == '\r') {
            if (p[1] != '\n')
                return 0;
            p += 2;
            break;
        }
        if (h->n == MAX_FIELDS)
            return 0;
        Field *f = &h->fields[h->n++];
        f->name = p;
        while (p < end && TCHAR[(unsigned char)*p])
            p++;
        f->name_len = p - f->name;
        if (p >= end || *p != ':' || f->name_len == 0)
            return 0;
        p++;
        if (p < end && *p == ' ')
            p++;
        f->value = p;
        while (p < end && VCHAR[(unsigned char)*p])
            p++;
        f->value_len = p - f->value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || f->value_len == 0)
            return 0;
        char first = f->value[0], last = f->value[f->value_len - 1];
        if (first == ' ' || first == '\t' || last == ' ' || last == '\t')
            return 0;  /* httptools' own trimming decides */
        p += 2;
        const char *name = f->name;
        switch (f->name_len) {
        case 4:
            if (lower_is(name, 4, "host")) {
                if (h->host != NULL || !host_ok(f->value, f->value_len))
                    return 0;  /* the Python path answers 400 */
                h->host = f->value;
                h->host_len = f->value_len;
            }
            break;
        case 6:
            if (lower_is(name, 6, "expect"))
                return 0;
            break;
        case 7:
            if (lower_is(name, 7, "upgrade"))
                return 0;
            break;
        case 10:
            if (lower_is(name, 10, "connection")) {
                if (lower_is(f->value, f->value_len, "close"))
                    close = 1;
                else if (lower_is(f->value, f->value_len, "keep-alive"))
                    keep = 1;
                else
                    return 0;
            }
            break;
        case 14:
            if (lower_is(name, 14, "content-length")) {
                /* digits only, no leading zero, once: anything else is for llhttp to judge */
                if (sized || f->value_len > 12 || (f->value_len > 1 && f->value[0] == '0'))
                    return 0;
                for (Py_ssize_t i = 0; i < f->value_len; i++) {
                    if (f->value[i] < '0' || f->value[i] > '9')
                        return 0;
                    length = length * 10 + (f->value[i] - '0');
                }
                sized = 1;
            }
            break;
        case 17:
            if (lower_is(name, 17, "transfer-encoding"))
                return 0;
            break;
        }
    }
    if (h->minor == 1 && h->host == NULL)
        return 0;  /* the Python path answers 400 */
    /* llhttp_should_keep_alive */
    h->keep_alive = h->minor == 1 ? !close : keep;
    h->body = p;
    h->body_len = length;
    if (whole - p < length)
        return 0;  /* the body is not all here: the Python path waits for it */
    h->end = p + length - buf;
    return 1;
}

/* -- the connection -- */

static inline int
is_int(PyObject *v, long want)
{
    return v != NULL && PyLong_CheckExact(v) && PyLong_AsLong(v) == want;
}

/* Between requests, nothing pending, nothing running: the state this path starts from. */
static int
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

static PyObject *
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

/* Write EX's answer if it is the common one (200, no response headers, keep-alive, HTTP/1.1, a
   small body); 1 written, 0 not that answer, -1 error. */
static int
finish_plain(PyObject *self, PyObject *site, PyObject *ex)
{
    const Py_ssize_t *e = S.ex, *c = S.conn;
    PyObject *route = SLOT(ex, e[E_ROUTE]), *out = SLOT(ex, e[E_OUT]);
    if (SLOT(ex, e[E_SENT]) != Py_False || !is_int(SLOT(ex, e[E_STATUS]), 200)
            || SLOT(ex, e[E_KEEP_ALIVE]) != Py_True
            || SLOT(ex, e[E_VERSION]) != S.v11 || SLOT(ex, e[E_HEAD_ONLY]) != Py_False
            || route == NULL || !Py_IS_TYPE(route, S.route_type) || out == NULL || !PyList_CheckExact(out)
            || SLOT(self, c[C_CLOSED]) != Py_False || SLOT(self, c[C_QUEUE]) != Py_None
            || SLOT(self, c[C_EOF]) != Py_False || !is_int(SLOT(self, c[C_STATE]), 0)
            || SLOT(site, S.site[S_DRAINING]) != Py_False)
        return 0;
    PyObject *date = SLOT(site, S.site[S_DATE_SERVER]), *ctype = SLOT(route, S.route[R_CTYPE]);
    PyObject *transport = SLOT(self, c[C_TRANSPORT]);
    if (date == NULL || !PyBytes_CheckExact(date) || ctype == NULL || !PyBytes_CheckExact(ctype)
            || transport == NULL)
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(out), body = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *piece = PyList_GET_ITEM(out, i);
        if (!PyBytes_CheckExact(piece))
            return 0;
        body += PyBytes_GET_SIZE(piece);
    }
    if (body >= LARGE)
        return 0;
    PyObject *hdrs = SLOT(ex, e[E_OUT_HEADERS]);
    Py_ssize_t hlen = 0;
    if (hdrs != Py_None) {
        hlen = headers_size(hdrs);
        if (hlen < 0)
            return 0;  /* not plain text: Exchange.head renders them */
        if (PyDict_GetItemWithError(hdrs, S.s_content_type) != NULL)
            ctype = NULL;  /* the handler's own Content-Type */
        else if (PyErr_Occurred())
            return -1;
    }
    char length[48];
    int length_len = content_length(length, body);
    Py_ssize_t line = PyBytes_GET_SIZE(S.ok_line), dlen = PyBytes_GET_SIZE(date);
    Py_ssize_t clen = ctype == NULL ? 0 : PyBytes_GET_SIZE(ctype);
    PyObject *answer = PyBytes_FromStringAndSize(NULL, line + dlen + clen + hlen + length_len + body);
    if (answer == NULL)
        return -1;
    char *w = PyBytes_AS_STRING(answer);
    memcpy(w, PyBytes_AS_STRING(S.ok_line), line);
    w += line;
    memcpy(w, PyBytes_AS_STRING(date), dlen);
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
    set_slot(ex, e[E_DONE], Py_True);
    PyObject *size = PyLong_FromSsize_t(body);
    if (size == NULL) {
        Py_DECREF(answer);
        return -1;
    }
    set_slot(ex, e[E_BODY_BYTES], size);
    Py_DECREF(size);
    PyObject *r = PyObject_CallMethodOneArg(transport, S.s_write, answer);
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
    /* keep-alive: the timeout runs from now (HttpProtocol.finish) */
    PyObject *clock = SLOT(site, S.site[S_CLOCK]), *keepalive = SLOT(site, S.site[S_KEEPALIVE]);
    PyObject *due = SLOT(self, c[C_DUE]);
    if (clock == NULL || keepalive == NULL || due == NULL)
        return -1;
    set_slot(self, c[C_SINCE], clock);
    double when = PyFloat_AsDouble(clock) + PyFloat_AsDouble(keepalive);
    double due_at = PyFloat_AsDouble(due);
    if (PyErr_Occurred())
        return -1;
    if (when < due_at) {
        PyObject *at = PyFloat_FromDouble(when);
        if (at == NULL)
            return -1;
        r = PyObject_CallMethodObjArgs(site, S.s_arm, self, at, NULL);
        Py_DECREF(at);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (SLOT(self, c[C_LISTED]) != Py_True) {
        set_slot(self, c[C_LISTED], Py_True);
        PyObject *fresh = SLOT(site, S.site[S_FRESH]);
        if (fresh == NULL || PyList_Append(fresh, self) < 0)
            return -1;
    }
    return 1;
}

/* After a phase's handler raised (the exception set): what phases.step_raised says, 0 go on,
   1 answer what EX holds, 2 the request was handed over; -1 error. */
static int
step_raised(PyObject *self, PyObject *ex, PyObject *name)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(S.step_raised, self, ex, name, value, NULL);
    Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
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
    int done = finish_plain(self, site, ex);
    if (done < 0)
        return -1;
    if (done == 0) {
        r = PyObject_CallMethodOneArg(self, S.s_finish, ex);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    PyObject *log = SLOT(route, S.route[R_LOG]);
    if (log != NULL && log != Py_None) {  /* the log phase, after the answer was sent (phases.run_log) */
        if (!PyTuple_CheckExact(log) || PyTuple_GET_SIZE(log) < 1) {
            PyErr_SetString(PyExc_TypeError, "a phase step is not a tuple");
            return -1;
        }
        token = PyContextVar_Set(S.phase_var, S.phase_names[3]);
        if (token == NULL)
            return -1;
        Py_DECREF(token);
        r = PyObject_CallNoArgs(PyTuple_GET_ITEM(log, 0));
        if (r != NULL)
            Py_DECREF(r);
        else if (step_raised(self, ex, S.phase_names[3]) < 0)  /* only logged */
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

static int
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
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        r = PyObject_CallMethodObjArgs(self, S.s_raised, ex, value, NULL);
        Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    int done = finish_plain(self, site, ex);
    if (done < 0)
        return -1;
    if (done == 0) {
        r = PyObject_CallMethodOneArg(self, S.s_finish, ex);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
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

typedef struct {
    PyObject_HEAD
} Base;

static PyObject *
data_received(PyObject *self, PyObject *data)
{
    if (!S.ready || !PyBytes_CheckExact(data) || !PyObject_TypeCheck(self, S.conn_type))
        return PyObject_CallMethodOneArg(self, S.s_parse, data);
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t len = PyBytes_GET_SIZE(data), pos = 0;
    Head h;
    PyObject *r;
    Py_INCREF(self);  /* the handler may drop the last other reference (a closed connection) */
    while (pos < len) {
        PyObject *site = SLOT(self, S.conn[C_SITE]), *vhosts = SLOT(self, S.conn[C_VHOSTS]);
        if (site == NULL || !Py_IS_TYPE(site, S.site_type) || vhosts == NULL || !Py_IS_TYPE(vhosts, S.vhosts_type)
                || !between_requests(self, site) || !parse_head(buf, pos, len, &h))
            break;
        PyObject *server = pick_server(self, vhosts, &h);
        if (server == NULL) {
            if (PyErr_Occurred())
                goto error;
            break;  /* a wildcard name to match: the Python path picks the server */
        }
        PyObject *targets = SLOT(server, S.server_targets);
        if (targets == NULL || !PyDict_CheckExact(targets))
            break;
        PyObject *url = PyBytes_FromStringAndSize(h.url, h.url_len);
        if (url == NULL)
            goto error;
        PyObject *hit = PyDict_GetItemWithError(targets, url);
        if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 4) {
            Py_DECREF(url);
            if (PyErr_Occurred())
                goto error;
            break;  /* a target not resolved yet: the Python path resolves and remembers it */
        }
        if (h.body_len > 0 && !body_fits(PyTuple_GET_ITEM(hit, 2), h.body_len)) {
            Py_DECREF(url);
            if (PyErr_Occurred())
                goto error;
            break;  /* the Python path reads it (or answers 413) */
        }
        Py_INCREF(hit);
        if (h.host != NULL) {
            PyObject *known = SLOT(self, S.conn[C_HOST_OK]);
            if (known == NULL || !PyBytes_CheckExact(known) || PyBytes_GET_SIZE(known) != h.host_len
                    || memcmp(PyBytes_AS_STRING(known), h.host, h.host_len) != 0) {
                PyObject *host = PyBytes_FromStringAndSize(h.host, h.host_len);
                if (host == NULL) {
                    Py_DECREF(hit); Py_DECREF(url);
                    goto error;
                }
                set_slot(self, S.conn[C_HOST_OK], host);
                Py_DECREF(host);
            }
        }
        set_slot(self, S.conn[C_SINCE], SLOT(site, S.site[S_CLOCK]));
        PyObject *ex = new_exchange(self, site, &h, url, hit);
        Py_DECREF(hit);
        Py_DECREF(url);
        if (ex == NULL)
            goto error;
        pos = h.end;
        int failed = serve(self, site, ex);
        Py_DECREF(ex);
        if (failed)
            goto error;
    }
    if (pos == 0)
        r = PyObject_CallMethodOneArg(self, S.s_parse, data);
    else if (pos < len) {
        PyObject *rest = PyBytes_FromStringAndSize(buf + pos, len - pos);
        if (rest == NULL)
            goto error;
        r = PyObject_CallMethodOneArg(self, S.s_parse, rest);
        Py_DECREF(rest);
    }
    else
        r = Py_NewRef(Py_None);
    Py_DECREF(self);
    return r;
error:
    {
        /* not the handler's exception (`raised` has those): as an error inside the parser's callbacks */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        r = PyObject_CallMethodOneArg(self, S.s_failed, value);
        Py_XDECREF(type); Py_XDECREF(value); Py_XDECREF(tb);
    }
    Py_DECREF(self);
    return r;
}

static PyMethodDef base_methods[] = {
    {"data_received", (PyCFunction)data_received, METH_O,
     "A read: whole plain requests answered here, the rest given to ``parse``."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.http._fast.Base",
    .tp_basicsize = sizeof(Base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The read callback of an HTTP connection, with the plain requests' path in C.",
    .tp_methods = base_methods,
    .tp_new = PyType_GenericNew,
};

/* -- ngx.header: setting a response header -- */

static PyObject *
setup_header(PyObject *module, PyObject *args)
{
    PyObject *names, *settable;
    if (!PyArg_ParseTuple(args, "O!O!:setup_header", &PyDict_Type, &names, &PyFrozenSet_Type, &settable))
        return NULL;
    Py_INCREF(names);
    Py_INCREF(settable);
    Py_XSETREF(S.header_names, names);
    Py_XSETREF(S.settable, settable);
    Py_RETURN_NONE;
}

/* ngx.header[NAME] = VALUE (VALUE NULL: del): a name seen before and a str without CR or LF,
   while the head may still be set, go straight into the exchange; the rest to ``_set``. */
static int
header_set(PyObject *self, PyObject *name, PyObject *value)
{
    if (S.ready && S.header_names != NULL && S.phase_var != NULL && value != NULL && PyUnicode_CheckExact(name)
            && PyUnicode_CheckExact(value) && PyUnicode_FindChar(value, '\n', 0, PY_SSIZE_T_MAX, 1) == -1
            && PyUnicode_FindChar(value, '\r', 0, PY_SSIZE_T_MAX, 1) == -1) {
        PyObject *ex = NULL, *here = NULL;
        if (PyContextVar_Get(S.current, NULL, &ex) < 0 || PyContextVar_Get(S.phase_var, NULL, &here) < 0) {
            Py_XDECREF(ex);
            return -1;
        }
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

static PyTypeObject HeaderBaseType = {
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

static PyObject *
setup_output(PyObject *module, PyObject *args)
{
    PyObject *say, *print;
    if (!PyArg_ParseTuple(args, "OO:setup_output", &say, &print))
        return NULL;
    Py_INCREF(say);
    Py_INCREF(print);
    Py_XSETREF(S.py_say, say);
    Py_XSETREF(S.py_print, print);
    Py_RETURN_NONE;
}

/* Append ARG (+ NEWLINE) to the current exchange's output: 1 done, 0 not this case, -1 error. */
static int
output_str(PyObject *arg, int newline)
{
    if (!S.ready || S.phase_var == NULL || !PyUnicode_CheckExact(arg))
        return 0;
    PyObject *ex = NULL, *here = NULL;
    if (PyContextVar_Get(S.current, NULL, &ex) < 0)
        return -1;
    if (PyContextVar_Get(S.phase_var, NULL, &here) < 0) {
        Py_XDECREF(ex);
        return -1;
    }
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

static PyObject *
say(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return output(args, nargs, 1);
}

static PyObject *
print_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return output(args, nargs, 0);
}

/* -- ngx.shared.NAME: the wrapped zone, when it is still the runtime's -- */

static PyObject *
setup_shared(PyObject *module, PyObject *args)
{
    PyObject *wrapped, *core;
    if (!PyArg_ParseTuple(args, "O!O:setup_shared", &PyDict_Type, &wrapped, &core))
        return NULL;
    Py_INCREF(wrapped);
    Py_INCREF(core);
    Py_XSETREF(S.wrapped, wrapped);
    Py_XSETREF(S.core_module, core);
    Py_RETURN_NONE;
}

static PyObject *
shared_getattr(PyObject *self, PyObject *name)
{
    if (S.wrapped != NULL && PyUnicode_CheckExact(name) && PyUnicode_GET_LENGTH(name) > 0
            && PyUnicode_READ_CHAR(name, 0) != '_') {
        PyObject *hit = PyDict_GetItemWithError(S.wrapped, name);
        if (hit != NULL && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2) {
            PyObject *rt = PyObject_GetAttr(S.core_module, S.s_rt);
            PyObject *zones = rt == NULL ? NULL : PyObject_GetAttr(rt, S.s_shdicts);
            Py_XDECREF(rt);
            if (zones == NULL)
                return NULL;
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

static PyTypeObject SharedBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.http._fast.SharedBase",
    .tp_basicsize = sizeof(Base),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "ngx.shared's NAME lookup: a zone wrapped before, in C; the rest to ``_attr``.",
    .tp_getattro = shared_getattr,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"say", (PyCFunction)(void (*)(void))say, METH_FASTCALL,
     "say($module, /, *args)\n--\n\nBuffer ARGS (concatenated, str() for non-bytes) and a newline for the response body."},
    {"print", (PyCFunction)(void (*)(void))print_, METH_FASTCALL,
     "print($module, /, *args)\n--\n\nBuffer ARGS (concatenated) for the response body."},
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
    if (PyType_Ready(&BaseType) < 0)
        return NULL;
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
    if (PyType_Ready(&HeaderBaseType) < 0 || PyType_Ready(&SharedBaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&HeaderBaseType);
    if (PyModule_AddObject(m, "HeaderBase", (PyObject *)&HeaderBaseType) < 0) {
        Py_DECREF(&HeaderBaseType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SharedBaseType);
    if (PyModule_AddObject(m, "SharedBase", (PyObject *)&SharedBaseType) < 0) {
        Py_DECREF(&SharedBaseType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BaseType);
    if (PyModule_AddObject(m, "Base", (PyObject *)&BaseType) < 0) {
        Py_DECREF(&BaseType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

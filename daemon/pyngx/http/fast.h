/* What the parts of pyngx.http._fast share: the state `setup` fills, slot access, the request head.
 *
 * _fast.c       the module: setup (the classes' slots, found once) and the module's table
 * fast_head.c   a plain request head, parsed (or not: then the Python path takes the read)
 * fast_conn.c   the read callback: whole plain requests made into exchanges and run
 * fast_phases.c the common phased location's steps
 * fast_answer.c the common 200 answer, written
 * fast_api.c    ngx.header's setters, ngx.say/print, ngx.shared.NAME
 * fast_req.c    ngx.req.get_uri_args, ngx.req.get_headers
 */
#ifndef PYNGX_FAST_H
#define PYNGX_FAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define MAX_HEAD 8192   /* limits.MAX_URI: a longer head goes to the checks of the Python path */
#define MAX_FIELDS 64   /* headers of one request on this path */
#define LARGE (64 * 1024) /* protocol.LARGE: a bigger body is written on its own */

/* the methods this path takes, as httptools names them */
#define N_METHODS 7
#define M_HEAD 1
extern const char *METHODS[N_METHODS];
extern const Py_ssize_t METHOD_LEN[N_METHODS];

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

static inline int
is_int(PyObject *v, long want)
{
    return v != NULL && PyLong_CheckExact(v) && PyLong_AsLong(v) == want;
}

/* -- what setup() finds -- */

enum { C_SITE, C_TRANSPORT, C_STATE, C_SINCE, C_DUE, C_REQUESTS, C_CLOSED, C_EOF, C_BUSY, C_QUEUE, C_TAIL,
       C_LISTED, C_LINE_OPEN, C_URL, C_HEADERS, C_VHOSTS, C_SERVER, C_HOST_OK, C_N };

enum { V_ONLY, V_DEFAULT, V_EXACT, V_WILD, V_N };

/* every slot of Exchange: a new exchange has each one set */
enum { E_CONN, E_METHOD, E_URL, E_URI, E_ARGS, E_VERSION, E_HEADERS, E_BODY, E_ROUTE, E_MATCH, E_VARS, E_CTX,
       E_STATUS, E_OUT_HEADERS, E_OUT, E_SENT, E_CHUNKED, E_KEEP_ALIVE, E_DONE, E_START, E_BODY_BYTES,
       E_HEAD_ONLY, E_HEADERS_CACHE, E_MORE, E_N };

enum { S_CLOCK, S_KEEPALIVE, S_DATE_SERVER, S_CONTENT_CTX, S_DRAINING, S_ACCESS, S_N_REQUESTS, S_FRESH, S_N };

enum { R_PLAIN, R_QUICK, R_HANDLER, R_CTYPE, R_REWRITE, R_ACCESS, R_LOG, R_MAX_BODY, R_N };

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
    /* ngx.req (setup_req): the phases that may read the request, variables._ARGS, and the Python
       get_uri_args and get_headers for every other case */
    PyObject *readable, *kept_args, *py_get_uri_args, *py_get_headers;
    /* ngx.shared.NAME (setup_shared): the wrapped zones by name, the runtime's module */
    PyObject *wrapped, *core_module, *s_rt, *s_shdicts, *s_attr;
    PyObject *s_parse, *s_run, *s_finish, *s_raised, *s_failed, *s_write, *s_arm, *s_content_type, *s_next, *s_log_request, *s_set;
} State;

extern State S;

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

typedef struct {
    PyObject_HEAD
} Base;

/* The current exchange and phase (new references, or NULL where none is set): 0, or -1 on an error
   with both NULL. */
static inline int
current_request(PyObject **ex, PyObject **here)
{
    *ex = *here = NULL;
    if (PyContextVar_Get(S.current, NULL, ex) < 0)
        return -1;
    if (PyContextVar_Get(S.phase_var, NULL, here) < 0) {
        Py_CLEAR(*ex);
        return -1;
    }
    return 0;
}

/* fast_head.c */
void init_tables(void);
int parse_head(const char *buf, Py_ssize_t pos, Py_ssize_t len, Head *h);
/* fast_conn.c */
extern PyTypeObject BaseType;
int between_requests(PyObject *self, PyObject *site);
PyObject *take_exception(void);
PyObject *add_one(PyObject *obj, Py_ssize_t off);
/* fast_phases.c */
int serve_quick(PyObject *self, PyObject *site, PyObject *ex, PyObject *route);
/* fast_answer.c */
int finish(PyObject *self, PyObject *site, PyObject *ex);
/* fast_api.c */
extern PyTypeObject HeaderBaseType, SharedBaseType;
PyObject *setup_header(PyObject *module, PyObject *args);
PyObject *setup_output(PyObject *module, PyObject *args);
PyObject *setup_shared(PyObject *module, PyObject *args);
PyObject *say(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *print_(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* fast_req.c */
PyObject *setup_req(PyObject *module, PyObject *args);
PyObject *get_uri_args(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames);
PyObject *get_headers(PyObject *module, PyObject *const *args, size_t nargsf, PyObject *kwnames);

#endif

/* A plain request head, parsed; anything unusual is left to httptools (see fast.h). */
#include "fast.h"

const char *METHODS[N_METHODS] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
const Py_ssize_t METHOD_LEN[N_METHODS] = {3, 4, 4, 3, 6, 5, 7};

/* -- the request head -- */

/* RFC 3986 characters of a target that httptools takes as they are (no '#', no '\\', no controls) */
static unsigned char URL_OK[256];
/* RFC 9110 token characters (a header name) */
static unsigned char TCHAR[256];
/* a header value's characters on this path: visible ASCII, space, tab */
static unsigned char VCHAR[256];

void
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

/* What the headers of a head say of the message (a request's own state while it is parsed). */
typedef struct {
    int close, keep, sized;
    Py_ssize_t length;
} Framing;

/* The request line at P (before END) into H: past it, or NULL when it is not a plain one. */
static const char *
request_line(const char *p, const char *end, Head *h)
{
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
        return NULL;
    h->url = p;
    if (p >= end || *p != '/')
        return NULL;
    while (p < end && URL_OK[(unsigned char)*p])
        p++;
    h->url_len = p - h->url;
    if (end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 || (p[8] != '0' && p[8] != '1') || p[9] != '\r'
            || p[10] != '\n')
        return NULL;
    h->minor = p[8] - '0';
    return p + 11;
}

/* One header line at P into F: past it, or NULL when it is not a plain one. */
static const char *
field(const char *p, const char *end, Field *f)
{
    f->name = p;
    while (p < end && TCHAR[(unsigned char)*p])
        p++;
    f->name_len = p - f->name;
    if (p >= end || *p != ':' || f->name_len == 0)
        return NULL;
    p++;
    if (p < end && *p == ' ')
        p++;
    f->value = p;
    while (p < end && VCHAR[(unsigned char)*p])
        p++;
    f->value_len = p - f->value;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || f->value_len == 0)
        return NULL;
    char first = f->value[0], last = f->value[f->value_len - 1];
    if (first == ' ' || first == '\t' || last == ' ' || last == '\t')
        return NULL;  /* httptools' own trimming decides */
    return p + 2;
}

/* What header F means for this path: 1 taken (into H and FR), 0 the Python path decides. */
static int
known(const Field *f, Head *h, Framing *fr)
{
    const char *name = f->name;
    switch (f->name_len) {
    case 4:
        if (lower_is(name, 4, "host")) {
            if (h->host != NULL || !host_ok(f->value, f->value_len))
                return 0;  /* the Python path answers 400 */
            h->host = f->value;
            h->host_len = f->value_len;
        }
        return 1;
    case 6:
        return !lower_is(name, 6, "expect");
    case 7:
        return !lower_is(name, 7, "upgrade");
    case 10:
        if (lower_is(name, 10, "connection")) {
            if (lower_is(f->value, f->value_len, "close"))
                fr->close = 1;
            else if (lower_is(f->value, f->value_len, "keep-alive"))
                fr->keep = 1;
            else
                return 0;
        }
        return 1;
    case 14:
        if (lower_is(name, 14, "content-length")) {
            /* digits only, no leading zero, once: anything else is for llhttp to judge */
            if (fr->sized || f->value_len > 12 || (f->value_len > 1 && f->value[0] == '0'))
                return 0;
            for (Py_ssize_t i = 0; i < f->value_len; i++) {
                if (f->value[i] < '0' || f->value[i] > '9')
                    return 0;
                fr->length = fr->length * 10 + (f->value[i] - '0');
            }
            fr->sized = 1;
        }
        return 1;
    case 17:
        return !lower_is(name, 17, "transfer-encoding");
    }
    return 1;
}

/* Parse one whole plain request (head and Content-Length body) at BUF[POS:LEN] into H; 0 when it
   is not one, or not whole. */
int
parse_head(const char *buf, Py_ssize_t pos, Py_ssize_t len, Head *h)
{
    const char *whole = buf + len, *end = buf + len;  /* END: the head's limit; a body may go further */
    if (len - pos > MAX_HEAD)
        end = buf + pos + MAX_HEAD;
    const char *p = request_line(buf + pos, end, h);
    if (p == NULL)
        return 0;
    Framing fr = {0, 0, 0, 0};
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
        p = field(p, end, f);
        if (p == NULL || !known(f, h, &fr))
            return 0;
    }
    if (h->minor == 1 && h->host == NULL)
        return 0;  /* the Python path answers 400 */
    /* llhttp_should_keep_alive */
    h->keep_alive = h->minor == 1 ? !fr.close : fr.keep;
    h->body = p;
    h->body_len = fr.length;
    if (whole - p < fr.length)
        return 0;  /* the body is not all here: the Python path waits for it */
    h->end = p + fr.length - buf;
    return 1;
}

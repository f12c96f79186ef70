/*
 * The shared dict hot path in C: the pid-stamped zone lock, the undo journal,
 * and get / set / safe_set / add / safe_add / replace / incr / delete.
 *
 * It works on exactly the layout that zone.py, slab.py and items.py describe
 * (those files are the reference; this one must agree with them byte for
 * byte), so the Python engine runs every other operation on the same zone
 * under this lock. Without a compiler the Python engine does everything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* zone.py */
#define HEADER 4096u
#define JOURNAL_CAP 512u
#define H_OWNER 16u
#define H_JCOUNT 20u
#define H_NCHUNKS 24u
#define H_NBUCKETS 28u
#define H_FREE 32u
#define H_NFREE 36u
#define H_LRU_HEAD 40u
#define H_LRU_TAIL 44u
#define H_ITEMS 48u
#define H_EVICTIONS 56u
#define H_BUCKETS 64u
#define H_CBASE 68u
/* slab.py */
#define CHUNK 64u
#define HEAD_DATA 24u
#define MORE_DATA 60u
#define HEAD_OFF 40u
#define MORE_OFF 4u
/* items.py */
#define F_HNEXT 4u
#define F_PREV 8u
#define F_LNEXT 12u
#define F_EXP 16u
#define F_HASH 24u
#define F_VLEN 28u
#define F_FLAGS 32u
#define F_KLEN 36u
#define F_TYPE 38u
enum { T_STR = 1, T_BYTES, T_INT, T_FLOAT, T_BOOL, T_PACK, T_LIST };
#define MAX_EVICT 30
enum { OP_SET = 0, OP_ADD = 1, OP_REPLACE = 2 };

static uint32_t my_pid;

static void after_fork_child(void) { my_pid = (uint32_t)getpid(); }

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *b;
    uint32_t cbase, buckets, mask;
    unsigned long holder; /* the thread of this process holding the lock, 0 if none */
    /* NoMemory, KeyExists, KeyNotFound, NotANumber, IsAList, packb, unpack, key(), encode(),
       NotAList */
    PyObject *sup[10];
} Engine;

#define W32(e, off) (*(volatile uint32_t *)((e)->b + (off)))
#define AT(e, i) ((e)->cbase + CHUNK * (uint32_t)(i))
#define BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* ---- journal ---- */

static inline __attribute__((always_inline)) int journal(Engine *e, uint32_t off, uint32_t width) {
    uint32_t n = W32(e, H_JCOUNT);
    if (__builtin_expect(n >= JOURNAL_CAP, 0)) {
        PyErr_SetString(PyExc_RuntimeError, "shared dict journal overflow");
        return -1;
    }
    char *ent = e->b + HEADER + 16u * n;
    uint64_t head = (uint64_t)off | (uint64_t)width << 32, old = 0;
    if (width == 4) {
        uint32_t w;
        memcpy(&w, e->b + off, 4);
        old = w;
    } else {
        memcpy(&old, e->b + off, width);
    }
    memcpy(ent, &head, 8);
    memcpy(ent + 8, &old, 8);
    BARRIER(); /* the entry is complete before the count covers it */
    W32(e, H_JCOUNT) = n + 1;
    BARRIER();
    return 0;
}

static inline int jw32(Engine *e, uint32_t off, uint32_t v) {
    if (journal(e, off, 4) < 0) return -1;
    W32(e, off) = v;
    return 0;
}

static inline int jwbytes(Engine *e, uint32_t off, const char *src, uint32_t len) {
    for (uint32_t i = 0; i < len; i += 8) {
        uint32_t w = len - i < 8 ? len - i : 8;
        if (journal(e, off + i, w) < 0) return -1;
        memcpy(e->b + off + i, src + i, w);
    }
    return 0;
}

static void rollback(Engine *e) {
    uint32_t n = W32(e, H_JCOUNT);
    while (n-- > 0) {
        char *ent = e->b + HEADER + 16u * n;
        uint32_t off, width;
        memcpy(&off, ent, 4);
        memcpy(&width, ent + 4, 4);
        memcpy(e->b + off, ent + 8, width);
    }
    BARRIER();
    W32(e, H_JCOUNT) = 0;
}

static void commit(Engine *e) { BARRIER(); W32(e, H_JCOUNT) = 0; }

/* ---- the lock: the owner word holds the holder's pid ---- */

static int try_take(Engine *e, uint32_t from) {
    uint32_t expect = from;
    return __atomic_compare_exchange_n((uint32_t *)(e->b + H_OWNER), &expect, my_pid, 0,
                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* 0, or -1 with an exception when this very thread already holds the zone (a finalizer or
   signal handler re-entering a shared dict call would otherwise spin for ever) */
static int lock_zone(Engine *e) {
    if (try_take(e, 0)) goto taken;
    uint32_t holder = __atomic_load_n((uint32_t *)(e->b + H_OWNER), __ATOMIC_RELAXED);
    if (holder == my_pid && e->holder == PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "shared dict zone lock re-entered by its holder");
        return -1;
    }
    /* Another process holds the zone for a step of a few hundred nanoseconds: spin a while
       keeping the GIL (as ngx_shmtx_lock does, pausing longer each round); giving the GIL
       away and taking it back costs more than the wait. */
    if (holder != my_pid) {
        for (unsigned n = 1; n <= 256; n <<= 1) {
            for (unsigned i = 0; i < n; i++) cpu_relax();
            if (__atomic_load_n((uint32_t *)(e->b + H_OWNER), __ATOMIC_RELAXED) == 0 && try_take(e, 0))
                goto taken;
        }
    }
    /* Wait without the GIL: the holder may be another thread of this process running the
       Python engine's part of an operation, and must not have to fight us for the GIL. */
    Py_BEGIN_ALLOW_THREADS
    for (unsigned spins = 1;; spins++) {
        holder = __atomic_load_n((uint32_t *)(e->b + H_OWNER), __ATOMIC_RELAXED);
        if (holder == 0) {
            if (try_take(e, 0)) break;
            continue;
        }
        if (spins < 200) {
            for (unsigned i = 0; i < 16; i++) cpu_relax();
            continue;
        }
        /* A holder that no longer exists (reaped without force_unlock, e.g. no master):
           take the lock over and undo its step, as the master would. */
        if ((spins & 255) == 0 && holder != my_pid && kill((pid_t)holder, 0) == -1 && errno == ESRCH &&
            try_take(e, holder)) {
            rollback(e);
            break;
        }
        if (spins < 4096) {
            sched_yield();
        } else {
            /* a long hold (a whole-zone walk, a descheduled holder): stop burning the CPU */
            struct timespec ts = {0, spins < 65536 ? 50000 : 500000};
            nanosleep(&ts, NULL);
        }
    }
    Py_END_ALLOW_THREADS
taken:
    e->holder = PyThread_get_thread_ident();
    return 0;
}

static void unlock_zone(Engine *e) {
    e->holder = 0;
    __atomic_store_n((uint32_t *)(e->b + H_OWNER), 0, __ATOMIC_RELEASE);
}

/* ---- chunks ---- */

static uint32_t chunks_for(uint32_t n) {
    return n <= HEAD_DATA ? 1 : 1 + (n - HEAD_DATA + MORE_DATA - 1) / MORE_DATA;
}

static uint32_t alloc_chain(Engine *e, uint32_t count) {
    uint32_t nfree = W32(e, H_NFREE);
    if (nfree < count) return 0;
    uint32_t first = W32(e, H_FREE), last = first;
    for (uint32_t i = 1; i < count; i++) last = W32(e, AT(e, last));
    uint32_t rest = W32(e, AT(e, last));
    if (jw32(e, AT(e, last), 0) < 0 || jw32(e, H_FREE, rest) < 0 || jw32(e, H_NFREE, nfree - count) < 0)
        return UINT32_MAX;
    return first;
}

static int free_chain(Engine *e, uint32_t first) {
    uint32_t last = first, count = 1, nxt;
    while ((nxt = W32(e, AT(e, last))) != 0) { last = nxt; count++; }
    if (jw32(e, AT(e, last), W32(e, H_FREE)) < 0 || jw32(e, H_FREE, first) < 0) return -1;
    return jw32(e, H_NFREE, W32(e, H_NFREE) + count);
}

/* copy LEN bytes at data position START of item IDX into DST (or from SRC when writing) */
static int data_io(Engine *e, uint32_t idx, uint32_t start, uint32_t len, char *dst,
                   const char *src, int journaled) {
    uint32_t base = 0, room = HEAD_DATA, off = HEAD_OFF, end = start + len;
    while (len > 0 && idx) {
        uint32_t lo = start > base ? start : base, hi = end < base + room ? end : base + room;
        if (lo < hi) {
            uint32_t at = AT(e, idx) + off + lo - base;
            if (dst) memcpy(dst + (lo - start), e->b + at, hi - lo);
            else if (journaled) { if (jwbytes(e, at, src + (lo - start), hi - lo) < 0) return -1; }
            else memcpy(e->b + at, src + (lo - start), hi - lo);
        }
        if (base + room >= end) break;
        base += room;
        room = MORE_DATA;
        off = MORE_OFF;
        idx = W32(e, AT(e, idx));
    }
    return 0;
}

/* ---- items ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double expires_of(Engine *e, uint32_t idx) {
    double d;
    memcpy(&d, e->b + AT(e, idx) + F_EXP, 8);
    return d;
}

/* the clock is read once per step, and only when an expiry needs it (*NOW == 0: not yet) */
static inline double clock_of(double *now) {
    if (*now == 0.0) *now = now_s();
    return *now;
}

static int is_expired(Engine *e, uint32_t idx, double *now) {
    double x = expires_of(e, idx);
    return x != 0.0 && x <= clock_of(now);
}

static uint16_t klen_of(Engine *e, uint32_t idx) {
    uint16_t k;
    memcpy(&k, e->b + AT(e, idx) + F_KLEN, 2);
    return k;
}

static uint32_t find(Engine *e, const char *kb, uint32_t klen, uint32_t h, uint32_t *prevp) {
    uint32_t prev = 0, idx = W32(e, e->buckets + 4u * (h & e->mask));
    char stackbuf[256];
    while (idx) {
        uint32_t off = AT(e, idx);
        if (W32(e, off + F_HASH) == h && klen_of(e, idx) == klen) {
            if (klen <= HEAD_DATA) {
                if (memcmp(e->b + off + HEAD_OFF, kb, klen) == 0) break;
            } else {
                char *buf = klen <= sizeof stackbuf ? stackbuf : PyMem_Malloc(klen);
                if (!buf) { PyErr_NoMemory(); *prevp = UINT32_MAX; return 0; }
                data_io(e, idx, 0, klen, buf, NULL, 0);
                int same = memcmp(buf, kb, klen) == 0;
                if (buf != stackbuf) PyMem_Free(buf);
                if (same) break;
            }
        }
        prev = idx;
        idx = W32(e, off + F_HNEXT);
    }
    *prevp = prev;
    return idx;
}

static int lru_unlink(Engine *e, uint32_t idx) {
    uint32_t prev = W32(e, AT(e, idx) + F_PREV), next = W32(e, AT(e, idx) + F_LNEXT);
    if (jw32(e, prev ? AT(e, prev) + F_LNEXT : H_LRU_HEAD, next) < 0) return -1;
    return jw32(e, next ? AT(e, next) + F_PREV : H_LRU_TAIL, prev);
}

static int lru_push_head(Engine *e, uint32_t idx, int fresh) {
    uint32_t old = W32(e, H_LRU_HEAD);
    if (fresh) {
        W32(e, AT(e, idx) + F_PREV) = 0;
        W32(e, AT(e, idx) + F_LNEXT) = old;
    } else {
        uint32_t links[2] = {0, old}; /* prev and lnext are adjacent: one journal entry */
        if (jwbytes(e, AT(e, idx) + F_PREV, (const char *)links, 8) < 0) return -1;
    }
    if (jw32(e, old ? AT(e, old) + F_PREV : H_LRU_TAIL, idx) < 0) return -1;
    return jw32(e, H_LRU_HEAD, idx);
}

static int touch(Engine *e, uint32_t idx) {
    if (W32(e, H_LRU_HEAD) == idx) return 0;
    if (lru_unlink(e, idx) < 0) return -1;
    return lru_push_head(e, idx, 0);
}

static int remove_item(Engine *e, uint32_t idx, uint32_t prev) {
    uint32_t off = AT(e, idx), hnext = W32(e, off + F_HNEXT);
    uint32_t slot = prev ? AT(e, prev) + F_HNEXT : e->buckets + 4u * (W32(e, off + F_HASH) & e->mask);
    if (jw32(e, slot, hnext) < 0 || lru_unlink(e, idx) < 0 || free_chain(e, idx) < 0) return -1;
    return jw32(e, H_ITEMS, W32(e, H_ITEMS) - 1);
}

static int remove_any(Engine *e, uint32_t idx) {
    uint32_t h = W32(e, AT(e, idx) + F_HASH), prev = 0, cur = W32(e, e->buckets + 4u * (h & e->mask));
    while (cur && cur != idx) { prev = cur; cur = W32(e, AT(e, cur) + F_HNEXT); }
    return remove_item(e, idx, prev);
}

/* lua-nginx-module's shdict_expire(ctx, 1): free up to two expired items at the LRU tail;
   committed on its own so that no later allocation in the step reuses their chunks */
static int expire_tail(Engine *e, double *now) {
    int removed = 0;
    for (int n = 1; n < 3; n++) {
        uint32_t tail = W32(e, H_LRU_TAIL);
        if (!tail || !is_expired(e, tail, now)) break;
        if (remove_any(e, tail) < 0) return -1;
        removed = 1;
    }
    if (removed) commit(e);
    return 0;
}

static uint32_t chain_len(Engine *e, uint32_t idx) {
    return chunks_for(klen_of(e, idx) + W32(e, AT(e, idx) + F_VLEN));
}

static int link_new(Engine *e, const char *kb, uint32_t klen, uint32_t h, int vt, const char *val,
                    uint32_t vlen, double expires, uint32_t flags, uint32_t need) {
    uint32_t first = alloc_chain(e, need);
    if (first == UINT32_MAX) return -1;
    uint32_t off = AT(e, first), bucket = e->buckets + 4u * (h & e->mask);
    uint16_t k16 = (uint16_t)klen;
    uint8_t t8 = (uint8_t)vt;
    W32(e, off + F_HNEXT) = W32(e, bucket);
    memcpy(e->b + off + F_EXP, &expires, 8);
    W32(e, off + F_HASH) = h;
    W32(e, off + F_VLEN) = vlen;
    W32(e, off + F_FLAGS) = flags;
    memcpy(e->b + off + F_KLEN, &k16, 2);
    memcpy(e->b + off + F_TYPE, &t8, 1);
    data_io(e, first, 0, klen, NULL, kb, 0);
    data_io(e, first, klen, vlen, NULL, val, 0);
    if (jw32(e, bucket, first) < 0 || lru_push_head(e, first, 1) < 0) return -1;
    return jw32(e, H_ITEMS, W32(e, H_ITEMS) + 1);
}

/* a new value in the chunks of item IDX, which has as many as it needs (as lua-nginx-module
   reuses a node whose value keeps its size): no allocation, only the changed words journaled.
   Only for short values: every 8 bytes rewritten take a journal entry. */
#define REWRITE_MAX 256u
static int rewrite(Engine *e, uint32_t idx, uint32_t klen, int vt, const char *val, uint32_t vlen,
                   double expires, uint32_t flags) {
    uint32_t off = AT(e, idx);
    uint8_t t8 = (uint8_t)vt;
    if (expires_of(e, idx) != expires && jwbytes(e, off + F_EXP, (const char *)&expires, 8) < 0) return -1;
    if (W32(e, off + F_VLEN) != vlen && jw32(e, off + F_VLEN, vlen) < 0) return -1;
    if (W32(e, off + F_FLAGS) != flags && jw32(e, off + F_FLAGS, flags) < 0) return -1;
    if (*(uint8_t *)(e->b + off + F_TYPE) != t8 && jwbytes(e, off + F_TYPE, (const char *)&t8, 1) < 0)
        return -1;
    if (data_io(e, idx, klen, vlen, NULL, val, 1) < 0) return -1;
    return touch(e, idx);
}

/* items.py Items.put: store a new item replacing OLD (0 if none); never fills chunks freed
   in the same step. 0 stored, 1 no memory (nothing changed), -1 error. */
static int put(Engine *e, const char *kb, uint32_t klen, uint32_t h, uint32_t old, int vt,
               const char *val, uint32_t vlen, double expires, uint32_t flags, int evict,
               double *now, int *forcible) {
    uint32_t need = chunks_for(klen + vlen), nfree = W32(e, H_NFREE);
    if (old && vlen <= REWRITE_MAX && chain_len(e, old) == need)
        return rewrite(e, old, klen, vt, val, vlen, expires, flags);
    if (nfree >= need) {
        if (link_new(e, kb, klen, h, vt, val, vlen, expires, flags, need) < 0) return -1;
        return old && remove_any(e, old) < 0 ? -1 : 0;
    }
    uint32_t room = nfree + (old ? chain_len(e, old) : 0), victims[MAX_EVICT];
    int nv = 0;
    if (evict) {
        uint32_t idx = W32(e, H_LRU_TAIL);
        while (idx && room < need && nv < MAX_EVICT) {
            if (idx != old) {
                victims[nv++] = idx;
                room += chain_len(e, idx);
            }
            idx = W32(e, AT(e, idx) + F_PREV);
        }
    }
    if (room < need) return 1;
    if (old && remove_any(e, old) < 0) return -1;
    for (int i = 0; i < nv; i++) {
        if (!is_expired(e, victims[i], now)) {
            uint64_t ev;
            *forcible = 1;
            memcpy(&ev, e->b + H_EVICTIONS, 8);
            ev++;
            if (jwbytes(e, H_EVICTIONS, (const char *)&ev, 8) < 0) return -1;
        }
        if (remove_any(e, victims[i]) < 0) return -1;
    }
    commit(e);
    return link_new(e, kb, klen, h, vt, val, vlen, expires, flags, need) < 0 ? -1 : 0;
}

/* ---- arguments ---- */

typedef struct { const char *p; Py_ssize_t n; PyObject *own; } Buf;

static int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *const *names, int nreq, int nmax, PyObject **out, const char *fn) {
    for (int i = 0; i < nmax; i++) out[i] = NULL;
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, nmax, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < nmax; i++)
            if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0) { found = i; break; }
        if (found < 0 || out[found]) {
            PyErr_Format(PyExc_TypeError, found < 0 ? "%s() got an unexpected keyword argument '%U'"
                                                    : "%s() got multiple values for argument '%U'", fn, name);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < nreq; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    return 0;
}

static int get_key(Engine *e, PyObject *key, Buf *k) {
    k->own = NULL;
    if (PyUnicode_CheckExact(key)) {
        k->p = PyUnicode_AsUTF8AndSize(key, &k->n);
        if (!k->p) return -1;
    } else if (PyBytes_CheckExact(key)) {
        k->p = PyBytes_AS_STRING(key);
        k->n = PyBytes_GET_SIZE(key);
    } else {
        k->own = PyObject_CallOneArg(e->sup[7], key); /* shdict._key: checks and raises */
        if (!k->own) return -1;
        k->p = PyBytes_AS_STRING(k->own);
        k->n = PyBytes_GET_SIZE(k->own);
        return 0;
    }
    if (k->n == 0) { PyErr_SetString(PyExc_ValueError, "empty key"); return -1; }
    if (k->n > 65535) { PyErr_SetString(PyExc_ValueError, "key too long"); return -1; }
    return 0;
}

static int get_value(Engine *e, PyObject *v, int *vt, Buf *out, char *num) {
    out->own = NULL;
    if (PyUnicode_CheckExact(v)) {
        *vt = T_STR;
        out->p = PyUnicode_AsUTF8AndSize(v, &out->n);
        return out->p ? 0 : -1;
    }
    if (PyBytes_CheckExact(v)) {
        *vt = T_BYTES;
        out->p = PyBytes_AS_STRING(v);
        out->n = PyBytes_GET_SIZE(v);
        return 0;
    }
    if (v == Py_True || v == Py_False) {
        *vt = T_BOOL;
        num[0] = v == Py_True;
        out->p = num;
        out->n = 1;
        return 0;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) { PyErr_SetString(PyExc_ValueError, "integer out of the 64-bit range"); return -1; }
        if (x == -1 && PyErr_Occurred()) return -1;
        *vt = T_INT;
        memcpy(num, &x, 8);
        out->p = num;
        out->n = 8;
        return 0;
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        *vt = T_FLOAT;
        memcpy(num, &d, 8);
        out->p = num;
        out->n = 8;
        return 0;
    }
    /* everything else (lists, dicts, subclasses, bad types) through items.encode */
    PyObject *r = PyObject_CallOneArg(e->sup[8], v);
    if (!r) return -1;
    *vt = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 0));
    out->own = r;
    out->p = PyBytes_AS_STRING(PyTuple_GET_ITEM(r, 1));
    out->n = PyBytes_GET_SIZE(PyTuple_GET_ITEM(r, 1));
    return 0;
}

static int get_seconds(PyObject *o, const char *what, double *d) {
    if (!o) { *d = 0; return 0; }
    if (PyFloat_CheckExact(o)) *d = PyFloat_AS_DOUBLE(o);
    else if (PyLong_CheckExact(o)) { *d = PyLong_AsDouble(o); if (*d == -1.0 && PyErr_Occurred()) return -1; }
    else { PyErr_Format(PyExc_TypeError, "bad \"%s\" argument", what); return -1; }
    if (!(*d >= 0)) { PyErr_Format(PyExc_ValueError, "bad \"%s\" argument", what); return -1; }
    return 0;
}

static int get_flags(PyObject *o, uint32_t *f) {
    if (!o) { *f = 0; return 0; }
    if (!PyLong_CheckExact(o)) { PyErr_SetString(PyExc_TypeError, "bad \"flags\" argument"); return -1; }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || x < 0 || x > 0xFFFFFFFFLL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad \"flags\" argument");
        return -1;
    }
    *f = (uint32_t)x;
    return 0;
}

/* ---- operations ---- */

static int closed(Engine *e) {
    if (e->b) return 0;
    PyErr_SetString(PyExc_ValueError, "shared dict zone is closed");
    return 1;
}

static PyObject *raise_(Engine *e, int which) {
    PyErr_SetNone(e->sup[which]);
    return NULL;
}

static PyObject *decode_raw(int vt, const char *raw, uint32_t n) {
    switch (vt) {
    case T_STR: return PyUnicode_DecodeUTF8(raw, n, NULL);
    case T_INT: { long long x; memcpy(&x, raw, 8); return PyLong_FromLongLong(x); }
    case T_FLOAT: { double d; memcpy(&d, raw, 8); return PyFloat_FromDouble(d); }
    case T_BOOL: return PyBool_FromLong(raw[0] == 1);
    default: return PyBytes_FromStringAndSize(raw, n); /* T_BYTES, and T_PACK before unpacking */
    }
}

/* get: the value is copied out under the lock (onto the stack when small) and turned into
   a Python object after unlocking, so the step holds the zone for a few memory reads only */
#define GET_STACK 256u
static PyObject *E_get(Engine *e, PyObject *key) {
    Buf k;
    if (closed(e)) return NULL;
    if (get_key(e, key, &k) < 0) return NULL;
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n), prev, vlen = 0;
    PyObject *big = NULL;
    char small[GET_STACK];
    int vt = 0, err = 0, found = 0;
    double now = 0.0;
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); return NULL; }
    uint32_t idx = find(e, k.p, (uint32_t)k.n, h, &prev);
    if (prev == UINT32_MAX) err = 1;
    else if (!idx || is_expired(e, idx, &now)) found = 0;
    else if ((vt = *(uint8_t *)(e->b + AT(e, idx) + F_TYPE)) == T_LIST) err = 2;
    else if (touch(e, idx) < 0) err = 1;
    else {
        uint32_t start = klen_of(e, idx);
        vlen = W32(e, AT(e, idx) + F_VLEN);
        found = 1;
        if (start + vlen <= HEAD_DATA) {
            memcpy(small, e->b + AT(e, idx) + HEAD_OFF + start, vlen);
        } else if (vlen <= GET_STACK) {
            data_io(e, idx, start, vlen, small, NULL, 0);
        } else if ((big = PyBytes_FromStringAndSize(NULL, vlen)) != NULL) {
            data_io(e, idx, start, vlen, PyBytes_AS_STRING(big), NULL, 0);
        } else {
            err = 1;
        }
    }
    if (err) rollback(e); else commit(e);
    unlock_zone(e);
    Py_XDECREF(k.own);
    if (err == 2) return raise_(e, 4);
    if (err) return NULL;
    if (!found) Py_RETURN_NONE;
    PyObject *res;
    if (big) {
        if (vt == T_BYTES || vt == T_PACK) res = big;
        else {
            res = decode_raw(vt, PyBytes_AS_STRING(big), vlen);
            Py_DECREF(big);
        }
    } else {
        res = decode_raw(vt, small, vlen); /* T_PACK: its bytes, unpacked below */
    }
    if (res && vt == T_PACK) { /* unpack outside the lock: it runs Python code */
        PyObject *raw = res;
        res = PyObject_CallOneArg(e->sup[6], raw);
        Py_DECREF(raw);
    }
    return res;
}

/* set / safe_set / add / safe_add / replace / delete */
static PyObject *store(Engine *e, int op, int safe, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, const char *fn) {
    static const char *const names[] = {"key", "value", "exptime", "flags"};
    PyObject *a[4];
    Buf k, v = {NULL, 0, NULL};
    double exptime;
    uint32_t flags;
    int vt = 0, forcible = 0, rc = 0;
    char num[8];
    if (closed(e) || parse_args(args, nargs, kwnames, names, 2, 4, a, fn) < 0) return NULL;
    if (get_key(e, a[0], &k) < 0) return NULL;
    if (get_seconds(a[2], "exptime", &exptime) < 0 || get_flags(a[3], &flags) < 0 ||
        (a[1] != Py_None && get_value(e, a[1], &vt, &v, num) < 0)) {
        Py_XDECREF(k.own);
        return NULL;
    }
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n), prev;
    double now = 0.0;
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); Py_XDECREF(v.own); return NULL; }
    if (expire_tail(e, &now) < 0) rc = -1;
    uint32_t idx = rc ? 0 : find(e, k.p, (uint32_t)k.n, h, &prev);
    if (!rc && prev == UINT32_MAX) rc = -1;
    if (!rc) {
        int live = idx && !is_expired(e, idx, &now);
        if (op == OP_ADD && live) rc = 2;
        else if (op == OP_REPLACE && !live) rc = 3;
        else if (!vt) rc = idx && remove_item(e, idx, prev) < 0 ? -1 : 0;
        else
            rc = put(e, k.p, (uint32_t)k.n, h, idx, vt, v.p, (uint32_t)v.n, exptime ? clock_of(&now) + exptime : 0.0,
                     flags, !safe, &now, &forcible);
    }
    if (rc) rollback(e); else commit(e);
    unlock_zone(e);
    Py_XDECREF(k.own);
    Py_XDECREF(v.own);
    switch (rc) {
    case 0: return PyBool_FromLong(forcible);
    case 1: return raise_(e, 0);
    case 2: return raise_(e, 1);
    case 3: return raise_(e, 2);
    default: return NULL;
    }
}

#define STORE_FN(name, op, safe)                                                              \
    static PyObject *E_##name(Engine *e, PyObject *const *args, Py_ssize_t n, PyObject *kw) { \
        return store(e, op, safe, args, n, kw, #name);                                         \
    }
STORE_FN(set, OP_SET, 0)
STORE_FN(safe_set, OP_SET, 1)
STORE_FN(add, OP_ADD, 0)
STORE_FN(safe_add, OP_ADD, 1)
STORE_FN(replace, OP_REPLACE, 0)

static PyObject *E_delete(Engine *e, PyObject *key) {
    PyObject *args[2] = {key, Py_None};
    PyObject *r = store(e, OP_SET, 0, args, 2, NULL, "delete");
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

typedef struct { int is_int; long long i; double d; } Num;

static int get_num(PyObject *o, const char *what, Num *n) {
    if (PyLong_CheckExact(o)) {
        int overflow;
        n->i = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (n->i == -1 && PyErr_Occurred()) return -1;
        n->is_int = !overflow;
        if (overflow) { n->d = PyLong_AsDouble(o); if (n->d == -1.0 && PyErr_Occurred()) return -1; }
        return 0;
    }
    if (PyFloat_CheckExact(o)) { n->is_int = 0; n->d = PyFloat_AS_DOUBLE(o); return 0; }
    PyErr_Format(PyExc_TypeError, "cannot convert '%s' to a number", what);
    return -1;
}

static Num add_num(Num a, Num b) {
    Num r;
    if (a.is_int && b.is_int && !__builtin_add_overflow(a.i, b.i, &r.i)) { r.is_int = 1; return r; }
    r.is_int = 0;
    r.d = (a.is_int ? (double)a.i : a.d) + (b.is_int ? (double)b.i : b.d);
    return r;
}

static PyObject *E_incr(Engine *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"key", "value", "init", "init_ttl"};
    PyObject *a[4];
    Buf k;
    Num val, init, res = {0, 0, 0};
    double ttl;
    int rc = 0, has_init;
    if (closed(e)) return NULL;
    if (parse_args(args, nargs, kwnames, names, 2, 4, a, "incr") < 0) return NULL;
    if (get_key(e, a[0], &k) < 0) return NULL;
    has_init = a[2] && a[2] != Py_None;
    if (get_num(a[1], "value", &val) < 0 || (has_init && get_num(a[2], "init", &init) < 0) ||
        get_seconds(a[3], "init_ttl", &ttl) < 0) {
        Py_XDECREF(k.own);
        return NULL;
    }
    if (ttl && !has_init) {
        Py_XDECREF(k.own);
        PyErr_SetString(PyExc_ValueError, "must provide \"init\" when providing \"init_ttl\"");
        return NULL;
    }
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n), prev;
    int forcible = 0;
    double now = 0.0;
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); return NULL; }
    if (expire_tail(e, &now) < 0) rc = -1;
    uint32_t idx = rc ? 0 : find(e, k.p, (uint32_t)k.n, h, &prev);
    if (!rc && prev == UINT32_MAX) rc = -1;
    if (!rc && idx && !is_expired(e, idx, &now)) {
        uint8_t vt = *(uint8_t *)(e->b + AT(e, idx) + F_TYPE), nt;
        char raw[8];
        if (vt != T_INT && vt != T_FLOAT) rc = 4;
        else {
            Num cur;
            uint32_t klen = klen_of(e, idx), at = AT(e, idx) + HEAD_OFF + klen;
            int head = klen + 8 <= HEAD_DATA; /* the number sits in the first chunk */
            if (head) memcpy(raw, e->b + at, 8);
            else data_io(e, idx, klen, 8, raw, NULL, 0);
            cur.is_int = vt == T_INT;
            memcpy(cur.is_int ? (void *)&cur.i : (void *)&cur.d, raw, 8);
            res = add_num(cur, val);
            nt = res.is_int ? T_INT : T_FLOAT;
            memcpy(raw, res.is_int ? (void *)&res.i : (void *)&res.d, 8);
            if ((nt != vt && jwbytes(e, AT(e, idx) + F_TYPE, (const char *)&nt, 1) < 0) ||
                (head ? jwbytes(e, at, raw, 8) : data_io(e, idx, klen, 8, NULL, raw, 1)) < 0 ||
                touch(e, idx) < 0)
                rc = -1;
        }
    } else if (!rc && !has_init) {
        rc = 3;
    } else if (!rc) {
        char raw[8];
        res = add_num(init, val);
        memcpy(raw, res.is_int ? (void *)&res.i : (void *)&res.d, 8);
        rc = put(e, k.p, (uint32_t)k.n, h, idx, res.is_int ? T_INT : T_FLOAT, raw, 8,
                 ttl ? clock_of(&now) + ttl : 0.0, 0, 1, &now, &forcible);
    }
    if (rc) rollback(e); else commit(e);
    unlock_zone(e);
    Py_XDECREF(k.own);
    switch (rc) {
    case 0: return res.is_int ? PyLong_FromLongLong(res.i) : PyFloat_FromDouble(res.d);
    case 1: return raise_(e, 0);
    case 3: return raise_(e, 2);
    case 4: return raise_(e, 3);
    default: return NULL;
    }
}


/* ---- lists: one item whose value is count:u32 then elements type:u8 len:u32 bytes len:u32
   (shdict.py _push/_pop describe the same layout) ---- */

static char *read_value(Engine *e, uint32_t idx, uint32_t *vlen) {
    *vlen = W32(e, AT(e, idx) + F_VLEN);
    char *raw = PyMem_Malloc(*vlen ? *vlen : 1);
    if (!raw) { PyErr_NoMemory(); return NULL; }
    data_io(e, idx, klen_of(e, idx), *vlen, raw, NULL, 0);
    return raw;
}

static PyObject *push(Engine *e, PyObject *key, PyObject *value, int left) {
    Buf k, v = {NULL, 0, NULL};
    int vt = 0, rc = 0, forcible = 0;
    char num[8];
    uint32_t count = 0, oldlen = 0, prev;
    char *old = NULL, *blob = NULL;
    if (closed(e)) return NULL;
    if (value == Py_None) { PyErr_SetString(PyExc_TypeError, "bad value type"); return NULL; }
    if (get_key(e, key, &k) < 0) return NULL;
    if (get_value(e, value, &vt, &v, num) < 0) { Py_XDECREF(k.own); return NULL; }
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n), n = (uint32_t)v.n;
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); Py_XDECREF(v.own); return NULL; }
    double now = 0.0, exp = 0.0;
    uint32_t flags = 0;
    if (expire_tail(e, &now) < 0) rc = -1;
    uint32_t idx = rc ? 0 : find(e, k.p, (uint32_t)k.n, h, &prev);
    if (!rc && prev == UINT32_MAX) rc = -1;
    if (!rc && idx && !is_expired(e, idx, &now)) {
        if (*(uint8_t *)(e->b + AT(e, idx) + F_TYPE) != T_LIST) rc = 9;
        else if (!(old = read_value(e, idx, &oldlen))) rc = -1;
        else {
            memcpy(&count, old, 4);
            exp = expires_of(e, idx);
            flags = W32(e, AT(e, idx) + F_FLAGS);
        }
    }
    if (!rc) {
        uint32_t body = old ? oldlen - 4 : 0, total = 4 + body + 9 + n;
        blob = PyMem_Malloc(total);
        if (!blob) { PyErr_NoMemory(); rc = -1; }
        else {
            uint32_t c1 = count + 1;
            uint8_t t8 = (uint8_t)vt;
            char *el = blob + 4 + (left ? 0 : body);
            memcpy(blob, &c1, 4);
            if (body) memcpy(blob + 4 + (left ? 9 + n : 0), old + 4, body);
            memcpy(el, &t8, 1);
            memcpy(el + 1, &n, 4);
            memcpy(el + 5, v.p, n);
            memcpy(el + 5 + n, &n, 4);
            rc = put(e, k.p, (uint32_t)k.n, h, idx, T_LIST, blob, total, exp, flags, 1, &now, &forcible);
        }
    }
    if (rc) rollback(e); else commit(e);
    unlock_zone(e);
    PyMem_Free(old);
    PyMem_Free(blob);
    Py_XDECREF(k.own);
    Py_XDECREF(v.own);
    switch (rc) {
    case 0: return PyLong_FromUnsignedLong(count + 1);
    case 1: return raise_(e, 0);
    case 9: return raise_(e, 9);
    default: return NULL;
    }
}

static PyObject *pop(Engine *e, PyObject *key, int left) {
    Buf k;
    int rc = 0, forcible = 0, et = 0;
    uint32_t prev, vlen = 0, count = 0;
    char *raw = NULL;
    PyObject *res = NULL;
    if (closed(e) || get_key(e, key, &k) < 0) return NULL;
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n);
    double now = 0.0;
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); return NULL; }
    uint32_t idx = find(e, k.p, (uint32_t)k.n, h, &prev);
    if (prev == UINT32_MAX) rc = -1;
    else if (!idx || is_expired(e, idx, &now)) res = Py_NewRef(Py_None);
    else if (*(uint8_t *)(e->b + AT(e, idx) + F_TYPE) != T_LIST) rc = 9;
    else if (!(raw = read_value(e, idx, &vlen))) rc = -1;
    else {
        uint32_t n, end = vlen - 4;
        const char *val, *body;
        uint32_t bodylen;
        memcpy(&count, raw, 4);
        if (left) {
            et = (uint8_t)raw[4];
            memcpy(&n, raw + 5, 4);
            val = raw + 9;
            body = raw + 13 + n;
            bodylen = vlen - 13 - n;
        } else {
            memcpy(&n, raw + end, 4);
            et = (uint8_t)raw[end - n - 5];
            val = raw + end - n;
            body = raw + 4;
            bodylen = end - n - 5 - 4;
        }
        res = PyBytes_FromStringAndSize(val, n);
        if (!res) rc = -1;
        else if (count > 1) {
            /* the shorter list goes back in the same place: 4 + bodylen bytes */
            uint32_t c1 = count - 1;
            memmove(raw + 4, body, bodylen);
            memcpy(raw, &c1, 4);
            rc = put(e, k.p, (uint32_t)k.n, h, idx, T_LIST, raw, 4 + bodylen, expires_of(e, idx),
                     W32(e, AT(e, idx) + F_FLAGS), 0, &now, &forcible);
        } else if (remove_item(e, idx, prev) < 0) rc = -1;
    }
    if (rc) rollback(e); else commit(e);
    unlock_zone(e);
    PyMem_Free(raw);
    Py_XDECREF(k.own);
    if (rc) {
        Py_XDECREF(res);
        return rc == 9 ? raise_(e, 9) : rc == 1 ? raise_(e, 0) : NULL;
    }
    if (res == Py_None || et == T_BYTES) return res;
    PyObject *raw_obj = res;
    if (et == T_PACK) res = PyObject_CallOneArg(e->sup[6], raw_obj);
    else res = decode_raw(et, PyBytes_AS_STRING(raw_obj), (uint32_t)PyBytes_GET_SIZE(raw_obj));
    Py_DECREF(raw_obj);
    return res;
}

static PyObject *E_lpush(Engine *e, PyObject *const *args, Py_ssize_t n) {
    if (n != 2) { PyErr_SetString(PyExc_TypeError, "lpush(key, value)"); return NULL; }
    return push(e, args[0], args[1], 1);
}

static PyObject *E_rpush(Engine *e, PyObject *const *args, Py_ssize_t n) {
    if (n != 2) { PyErr_SetString(PyExc_TypeError, "rpush(key, value)"); return NULL; }
    return push(e, args[0], args[1], 0);
}

static PyObject *E_lpop(Engine *e, PyObject *key) { return pop(e, key, 1); }
static PyObject *E_rpop(Engine *e, PyObject *key) { return pop(e, key, 0); }

static PyObject *E_llen(Engine *e, PyObject *key) {
    Buf k;
    int rc = 0;
    uint32_t prev, count = 0;
    double now = 0.0;
    if (closed(e) || get_key(e, key, &k) < 0) return NULL;
    uint32_t h = (uint32_t)crc32(0, (const Bytef *)k.p, (uInt)k.n);
    if (lock_zone(e) < 0) { Py_XDECREF(k.own); return NULL; }
    uint32_t idx = find(e, k.p, (uint32_t)k.n, h, &prev);
    if (prev == UINT32_MAX) rc = -1;
    else if (idx && !is_expired(e, idx, &now)) {
        if (*(uint8_t *)(e->b + AT(e, idx) + F_TYPE) != T_LIST) rc = 9;
        else data_io(e, idx, klen_of(e, idx), 4, (char *)&count, NULL, 0);
    }
    unlock_zone(e);
    Py_XDECREF(k.own);
    if (rc) return rc == 9 ? raise_(e, 9) : NULL;
    return PyLong_FromUnsignedLong(count);
}

static PyObject *E_lock(Engine *e, PyObject *unused) {
    if (closed(e) || lock_zone(e) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *E_unlock(Engine *e, PyObject *unused) {
    if (closed(e)) return NULL;
    unlock_zone(e);
    Py_RETURN_NONE;
}

/* the master saw PID die: if it held the lock, undo its step and free the lock */
static PyObject *E_force_unlock(Engine *e, PyObject *arg) {
    long pid = PyLong_AsLong(arg);
    if ((pid == -1 && PyErr_Occurred()) || closed(e)) return NULL;
    if (pid <= 0 || !try_take(e, (uint32_t)pid)) Py_RETURN_FALSE;
    rollback(e);
    unlock_zone(e);
    Py_RETURN_TRUE;
}

/* drop the mapping (zone.close): later calls raise instead of touching unmapped memory */
static PyObject *E_release(Engine *e, PyObject *unused) {
    if (e->b) {
        e->b = NULL;
        PyBuffer_Release(&e->view);
    }
    Py_RETURN_NONE;
}

static PyMethodDef E_methods[] = {
    {"release", (PyCFunction)E_release, METH_NOARGS, NULL},
    {"get", (PyCFunction)E_get, METH_O, "get(key) -> value | None"},
    {"set", (PyCFunction)(void (*)(void))E_set, METH_FASTCALL | METH_KEYWORDS, "set(key, value, exptime=0, flags=0)"},
    {"safe_set", (PyCFunction)(void (*)(void))E_safe_set, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"add", (PyCFunction)(void (*)(void))E_add, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"safe_add", (PyCFunction)(void (*)(void))E_safe_add, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"replace", (PyCFunction)(void (*)(void))E_replace, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"incr", (PyCFunction)(void (*)(void))E_incr, METH_FASTCALL | METH_KEYWORDS, "incr(key, value, init=None, init_ttl=0)"},
    {"delete", (PyCFunction)E_delete, METH_O, NULL},
    {"lpush", (PyCFunction)(void (*)(void))E_lpush, METH_FASTCALL, "lpush(key, value) -> length"},
    {"rpush", (PyCFunction)(void (*)(void))E_rpush, METH_FASTCALL, "rpush(key, value) -> length"},
    {"lpop", (PyCFunction)E_lpop, METH_O, NULL},
    {"rpop", (PyCFunction)E_rpop, METH_O, NULL},
    {"llen", (PyCFunction)E_llen, METH_O, NULL},
    {"lock", (PyCFunction)E_lock, METH_NOARGS, NULL},
    {"unlock", (PyCFunction)E_unlock, METH_NOARGS, NULL},
    {"force_unlock", (PyCFunction)E_force_unlock, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static int E_init(Engine *e, PyObject *args, PyObject *kw) {
    PyObject *buf, *sup;
    if (!PyArg_ParseTuple(args, "OO!", &buf, &PyTuple_Type, &sup)) return -1;
    if (PyTuple_GET_SIZE(sup) != 10) { PyErr_SetString(PyExc_ValueError, "support tuple of 10"); return -1; }
    if (e->b) { PyErr_SetString(PyExc_RuntimeError, "already initialised"); return -1; }
    if (PyObject_GetBuffer(buf, &e->view, PyBUF_WRITABLE) < 0) return -1;
    e->b = e->view.buf;
    for (int i = 0; i < 10; i++) e->sup[i] = Py_NewRef(PyTuple_GET_ITEM(sup, i));
    e->cbase = W32(e, H_CBASE);
    e->buckets = W32(e, H_BUCKETS);
    e->mask = W32(e, H_NBUCKETS) - 1;
    return 0;
}

static void E_dealloc(Engine *e) {
    if (e->b) PyBuffer_Release(&e->view);
    for (int i = 0; i < 10; i++) Py_XDECREF(e->sup[i]);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyngx.shm._shdict.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(buffer, support): the hot operations over one zone's mapping",
    .tp_methods = E_methods,
    .tp_init = (initproc)E_init,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)E_dealloc,
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_shdict", "Shared dict hot path.", -1, NULL};

PyMODINIT_FUNC PyInit__shdict(void) {
    my_pid = (uint32_t)getpid();
    pthread_atfork(NULL, NULL, after_fork_child);
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}

/* share(): the deep copy of a value into an arena.
 *
 * The walk is iterative (an explicit stack), so nesting depth is bounded by memory, not
 * by the C stack. Two memos:
 *   - by identity, for this call: every source object is copied once, so repeated objects
 *     and shared structure stay shared (and a cycle through a dict is detected);
 *   - by value, per arena (arena.c): equal strings are stored once per arena.
 * Objects that are already shared are used as they are: the runtime's static objects,
 * and objects of any arena (another arena then gets a dependency: see arena.c).
 *
 * Everything a reader of any interpreter could fill lazily is filled here, before the
 * object is published: str hash and UTF-8 form, bytes hash, tuple hash (3.14). Strings are
 * pre-marked interned (pyversion.h), and a string equal to one of the runtime's static
 * strings *is* that static string.
 *
 * On any error the arena is rolled back to where this call started (ss_filler_abort), and
 * the error message is built after the arena lock is released.
 */
#include "subsandbox.h"
#include "pyversion.h"
#include "pyinternal.h"

#include <stddef.h>
#include <string.h>

#define IN_PROGRESS ((PyObject *)1)
/* Sizes as the arena hands them out (its grain: SS_GRAIN in arena.c). */
#define ROUND16(n) (((n) + 15) & ~(size_t)15)

enum { F_TUPLE, F_MAP, F_SET };

typedef struct {
    PyObject *src;          /* strong */
    int kind;
    Py_ssize_t n;           /* children: tuple items, or 2 * entries (key, value, ...), */
    Py_ssize_t i;           /* or set items; the next child to visit */
    PyObject **kids;        /* strong snapshot of the children (maps, sets); NULL for tuples */
    PyObject **out;         /* shared children; for tuples the new tuple's ob_item */
    PyObject *dst;          /* the new tuple */
    int memo;               /* src is in the identity memo (IN_PROGRESS until finished) */
} frame;

typedef struct {
    PyObject *key;          /* strong */
    PyObject *val;
} memo_entry;

enum { E_NONE, E_PYERR, E_TYPE, E_CYCLE };

#define INLINE_FRAMES 8

typedef struct {
    ss_state *st;
    ss_filler *f;
    frame *stack;           /* inline_stack until deeper than INLINE_FRAMES */
    Py_ssize_t depth, cap;
    frame inline_stack[INLINE_FRAMES];
    /* The first object the memo records (nearly always the root: the caller holds it)
     * is kept here, and the table is made only for a second one: most values have no
     * other, and a table per call cost a calloc, a free and a walk over it. */
    PyObject *memo_first_key;   /* strong */
    PyObject *memo_first_val;
    memo_entry *memo;
    size_t memo_mask, memo_used;
    int err;
    PyObject *bad;          /* strong: the object that cannot be shared */
} ctx;

/* ---- memo by identity ----------------------------------------------------------------- */

static inline size_t
ptr_hash(const void *p)
{
    uintptr_t x = (uintptr_t)p >> 4;
    x ^= x >> 29;
    x *= (uintptr_t)0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return (size_t)x;
}

static PyObject *
memo_get(ctx *c, PyObject *key)
{
    if (key == c->memo_first_key) {
        return c->memo_first_val;
    }
    if (c->memo == NULL) {
        return NULL;
    }
    size_t i = ptr_hash(key) & c->memo_mask;
    memo_entry *e;
    while ((e = &c->memo[i])->key != NULL) {
        if (e->key == key) {
            return e->val;
        }
        i = (i + 1) & c->memo_mask;
    }
    return NULL;
}

/* Insert or update. -1 + MemoryError. */
static int
memo_set(ctx *c, PyObject *key, PyObject *val)
{
    if (key == c->memo_first_key) {
        c->memo_first_val = val;
        return 0;
    }
    if (c->memo_first_key == NULL) {
        /* The memo keeps its key alive: an address must not be reused during the walk. */
        c->memo_first_key = Py_NewRef(key);
        c->memo_first_val = val;
        return 0;
    }
    if (c->memo != NULL) {
        size_t i = ptr_hash(key) & c->memo_mask;
        memo_entry *e;
        while ((e = &c->memo[i])->key != NULL) {
            if (e->key == key) {
                e->val = val;
                return 0;
            }
            i = (i + 1) & c->memo_mask;
        }
    }
    size_t cap = c->memo ? c->memo_mask + 1 : 0;
    if ((c->memo_used + 1) * 2 > cap) {
        size_t ncap = cap ? cap * 2 : 16;   /* small: ctx_clear walks all of it */
        memo_entry *t = PyMem_RawCalloc(ncap, sizeof(memo_entry));
        if (t == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t k = 0; k < cap; k++) {
            if (c->memo[k].key != NULL) {
                size_t i = ptr_hash(c->memo[k].key) & (ncap - 1);
                while (t[i].key != NULL) {
                    i = (i + 1) & (ncap - 1);
                }
                t[i] = c->memo[k];
            }
        }
        PyMem_RawFree(c->memo);
        c->memo = t;
        c->memo_mask = ncap - 1;
    }
    size_t i = ptr_hash(key) & c->memo_mask;
    while (c->memo[i].key != NULL) {
        i = (i + 1) & c->memo_mask;
    }
    /* The memo keeps its key alive: an address must not be reused during the walk. */
    c->memo[i].key = Py_NewRef(key);
    c->memo[i].val = val;
    c->memo_used++;
    return 0;
}

/* ---- leaves --------------------------------------------------------------------------- */

/* UTF-8 length of `len` code points, or -1 when there is a surrogate (no UTF-8 form).
 * One loop per kind, without branches, so that the compiler vectorizes it (the generic
 * PyUnicode_READ loop was most of share()'s time on non-ASCII text). */
static Py_ssize_t
utf8_size(int kind, const void *data, Py_ssize_t len)
{
    Py_ssize_t n = len;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *p = data;
        for (Py_ssize_t i = 0; i < len; i++) {
            n += p[i] >> 7;
        }
        return n;
    }
    int surrogate = 0;
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *p = data;
        for (Py_ssize_t i = 0; i < len; i++) {
            Py_UCS2 ch = p[i];
            n += (ch >= 0x80) + (ch >= 0x800);
            surrogate |= (ch & 0xF800) == 0xD800;
        }
    }
    else {
        const Py_UCS4 *p = data;
        for (Py_ssize_t i = 0; i < len; i++) {
            Py_UCS4 ch = p[i];
            n += (ch >= 0x80) + (ch >= 0x800) + (ch >= 0x10000);
            surrogate |= (ch & 0xFFFFF800) == 0xD800;
        }
    }
    return surrogate ? -1 : n;
}

#define ASCII_MASK8 UINT64_C(0x8080808080808080)

static inline unsigned char *
utf8_put(unsigned char *p, Py_UCS4 ch)
{
    if (ch < 0x80) {
        *p++ = (unsigned char)ch;
    }
    else if (ch < 0x800) {
        *p++ = (unsigned char)(0xC0 | (ch >> 6));
        *p++ = (unsigned char)(0x80 | (ch & 0x3F));
    }
    else if (ch < 0x10000) {
        *p++ = (unsigned char)(0xE0 | (ch >> 12));
        *p++ = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (ch & 0x3F));
    }
    else {
        *p++ = (unsigned char)(0xF0 | (ch >> 18));
        *p++ = (unsigned char)(0x80 | ((ch >> 12) & 0x3F));
        *p++ = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
        *p++ = (unsigned char)(0x80 | (ch & 0x3F));
    }
    return p;
}

/* Encode into `out`, which has room for the worst case (UTF8_MAX_PER_CHAR bytes per
 * code point, and the NUL), and add the NUL. Returns the UTF-8 length, or -1 when there
 * is a lone surrogate: the string has no UTF-8 form, and what was written is garbage
 * the caller must zero again. */
static Py_ssize_t
utf8_encode(int kind, const void *data, Py_ssize_t len, char *out)
{
    unsigned char *p = (unsigned char *)out;
    int surrogate = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = data;
        Py_ssize_t i = 0;
        while (i < len) {
            uint64_t w;
            /* Runs of ASCII go 8 bytes at a time. */
            if (i + 8 <= len && (memcpy(&w, s + i, 8), (w & ASCII_MASK8) == 0)) {
                memcpy(p, &w, 8);
                p += 8;
                i += 8;
                continue;
            }
            p = utf8_put(p, s[i++]);
        }
    }
    else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *s = data;
        Py_ssize_t i = 0;
        while (i < len) {
            uint64_t w;
            /* Runs of ASCII go 4 code units at a time. */
            if (i + 4 <= len
                && (memcpy(&w, s + i, 8), (w & UINT64_C(0xFF80FF80FF80FF80)) == 0))
            {
                p[0] = (unsigned char)s[i];
                p[1] = (unsigned char)s[i + 1];
                p[2] = (unsigned char)s[i + 2];
                p[3] = (unsigned char)s[i + 3];
                p += 4;
                i += 4;
                continue;
            }
            surrogate |= (s[i] & 0xF800) == 0xD800;
            p = utf8_put(p, s[i++]);
        }
    }
    else {
        const Py_UCS4 *s = data;
        for (Py_ssize_t i = 0; i < len; i++) {
            surrogate |= (s[i] & 0xFFFFF800) == 0xD800;
            p = utf8_put(p, s[i]);
        }
    }
    *p = '\0';
    return surrogate ? -1 : (Py_ssize_t)(p - (unsigned char *)out);
}

/* The most UTF-8 bytes one code point of each kind can take (1: Latin-1, 2: the BMP). */
#define UTF8_MAX_PER_CHAR(kind) ((kind) == PyUnicode_1BYTE_KIND ? 2 : (kind) + 1)

/* Strings up to this many code points are encoded in one pass, into room for their worst
 * case, which is then given back (ss_filler_shrink_last); longer ones are measured first
 * (utf8_size), so that a big string never asks for up to 4x its UTF-8 form. */
#define UTF8_ONE_PASS_MAX 4096

static PyObject *
copy_str(ctx *c, PyObject *s)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (len == 0 && ss_rt_empty_str() != NULL) {
        return ss_rt_empty_str();
    }
    if (len == 1) {
        PyObject *r = ss_rt_one_char(PyUnicode_READ(kind, data, 0));
        if (r != NULL) {
            return r;
        }
    }
    Py_hash_t h = PyObject_Hash(s);     /* the caller's own string: its cache, its GIL */
    if (h == -1) {
        return NULL;
    }
    PyObject *r = ss_rt_static_str(data, kind, len, h);
    if (r == NULL) {
        r = ss_filler_str_find(c->f, data, kind, len, h);
    }
    if (r != NULL) {
        return r;
    }
    int ascii = PyUnicode_IS_ASCII(s);
    size_t hdr = ascii ? sizeof(PyASCIIObject) : sizeof(PyCompactUnicodeObject);
    size_t size = hdr + (size_t)(len + 1) * (size_t)kind;
    /* The UTF-8 form of a non-ASCII string goes right after its characters, in the same
     * allocation: PyUnicode_AsUTF8AndSize() of any interpreter then returns it instead of
     * filling the cache with its own allocator. The source's own UTF-8 cache is copied
     * when it has one (pickle.dumps() fills it, for instance). A string with a lone
     * surrogate has no UTF-8 form (n8 < 0). */
    const char *src8 = NULL;
    Py_ssize_t n8 = -1;
    size_t at8 = (size + 7) & ~(size_t)7;
    int one_pass = 0;           /* n8 is the worst case, to be measured by encoding */
    if (!ascii) {
        if (PyUnicode_IS_COMPACT(s) && ((PyCompactUnicodeObject *)s)->utf8 != NULL) {
            src8 = ((PyCompactUnicodeObject *)s)->utf8;
            n8 = ((PyCompactUnicodeObject *)s)->utf8_length;
        }
        else if (len <= UTF8_ONE_PASS_MAX
                 && ss_filler_room(c->f)
                    >= ROUND16(at8 + (size_t)len * UTF8_MAX_PER_CHAR(kind) + 1))
        {
            /* Measuring the UTF-8 form first was a third of the encoding's time (perf,
             * the 1 KB corpus). Only when the worst case fits where the string goes: a
             * new block for room given back at once would cost far more. */
            one_pass = 1;
            n8 = len * UTF8_MAX_PER_CHAR(kind);
        }
        else {
            n8 = utf8_size(kind, data, len);
        }
    }
    size_t asked = n8 >= 0 ? at8 + (size_t)n8 + 1 : size;
    PyObject *d = ss_filler_alloc_object(c->f, &PyUnicode_Type, asked);
    if (d == NULL) {
        return NULL;
    }
    PyASCIIObject *a = _PyASCIIObject_CAST(d);
    a->length = len;
    a->hash = h;
    a->state.kind = (unsigned int)kind;
    a->state.compact = 1;
    a->state.ascii = (unsigned int)ascii;
    ss_str_mark_shared(d);
    memcpy((char *)d + hdr, data, (size_t)len * (size_t)kind);   /* NUL: already zero */
    if (n8 >= 0) {
        char *buf = (char *)d + at8;
        if (src8 != NULL) {
            memcpy(buf, src8, (size_t)n8 + 1);
        }
        else if (one_pass) {
            Py_ssize_t worst = n8;
            n8 = utf8_encode(kind, data, len, buf);
            if (n8 < 0) {
                /* A lone surrogate: no UTF-8 form. Memory past the bump pointer must be
                 * zero (arena.c), and the string keeps only its characters. */
                memset(buf, 0, (size_t)worst + 1);
            }
            ss_filler_shrink_last(c->f, d, asked, n8 >= 0 ? at8 + (size_t)n8 + 1 : size);
        }
        else {
            (void)utf8_encode(kind, data, len, buf);
        }
        if (n8 >= 0) {
            PyCompactUnicodeObject *cu = (PyCompactUnicodeObject *)d;
            cu->utf8 = buf;
            cu->utf8_length = n8;
        }
    }
    if (ss_filler_str_add(c->f, d) < 0) {
        return NULL;
    }
    return d;
}

static PyObject *
copy_long(ctx *c, PyObject *o)
{
    PyLongObject *src = (PyLongObject *)o;
    if (_PyLong_IsCompact(src)) {
        PyObject *r = ss_rt_small_int((long)_PyLong_CompactValue(src));
        if (r != NULL) {
            return r;
        }
    }
    uintptr_t tag = src->long_value.lv_tag;
    size_t nd = (size_t)(tag >> _PyLong_NON_SIZE_BITS);
    size_t size = (size_t)PyLong_Type.tp_basicsize
                  + (nd ? nd : 1) * (size_t)PyLong_Type.tp_itemsize;
    PyLongObject *d = (PyLongObject *)ss_filler_alloc_object(c->f, &PyLong_Type, size);
    if (d == NULL) {
        return NULL;
    }
    memcpy(d->long_value.ob_digit, src->long_value.ob_digit, nd * sizeof(digit));
    d->long_value.lv_tag = tag & ~SS_LONG_TAG_CLEAR_BITS;
    return (PyObject *)d;
}

static PyObject *
copy_float(ctx *c, PyObject *o)
{
    PyObject *d = ss_filler_alloc_object(c->f, &PyFloat_Type, sizeof(PyFloatObject));
    if (d != NULL) {
        ((PyFloatObject *)d)->ob_fval = PyFloat_AS_DOUBLE(o);
    }
    return d;
}

static PyObject *
copy_complex(ctx *c, PyObject *o)
{
    PyObject *d = ss_filler_alloc_object(c->f, &PyComplex_Type, sizeof(PyComplexObject));
    if (d != NULL) {
        ((PyComplexObject *)d)->cval = ((PyComplexObject *)o)->cval;
    }
    return d;
}

static PyObject *
copy_bytes(ctx *c, PyObject *o)
{
    Py_ssize_t n = PyBytes_GET_SIZE(o);
    if (n == 0) {
        return ss_rt_empty_bytes();
    }
    if (n == 1) {
        return ss_rt_byte_char((unsigned char)PyBytes_AS_STRING(o)[0]);
    }
    size_t size = offsetof(PyBytesObject, ob_sval) + (size_t)n + 1;
    PyObject *d = ss_filler_alloc_object(c->f, &PyBytes_Type, size);
    if (d == NULL) {
        return NULL;
    }
    Py_SET_SIZE(d, n);
    memcpy(PyBytes_AS_STRING(d), PyBytes_AS_STRING(o), (size_t)n);
    ss_bytes_reset_hash(d);
    if (PyObject_Hash(d) == -1) {   /* fills ob_shash before anyone else can see it */
        return NULL;
    }
    return d;
}

/* ---- containers ----------------------------------------------------------------------- */

static frame *
push(ctx *c)
{
    if (c->depth == c->cap) {
        Py_ssize_t cap = c->cap * 2;
        frame *s;
        if (c->stack == c->inline_stack) {
            s = PyMem_RawMalloc((size_t)cap * sizeof(frame));
            if (s != NULL) {
                memcpy(s, c->stack, (size_t)c->depth * sizeof(frame));
            }
        }
        else {
            s = PyMem_RawRealloc(c->stack, (size_t)cap * sizeof(frame));
        }
        if (s == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        c->stack = s;
        c->cap = cap;
    }
    frame *fr = &c->stack[c->depth++];
    memset(fr, 0, sizeof(*fr));
    return fr;
}

static void
frame_clear(frame *fr)
{
    if (fr->kids != NULL) {
        for (Py_ssize_t k = 0; k < fr->n; k++) {
            Py_XDECREF(fr->kids[k]);
        }
        PyMem_RawFree(fr->kids);
        fr->kids = NULL;
    }
    if (fr->kind != F_TUPLE) {
        PyMem_RawFree(fr->out);
    }
    fr->out = NULL;
    Py_CLEAR(fr->src);
}

/* Where the result for child i goes: maps keep keys in out[0:n/2], values in out[n/2:]. */
static inline Py_ssize_t
out_index(frame *fr, Py_ssize_t i)
{
    if (fr->kind == F_MAP) {
        return (i & 1) ? fr->n / 2 + i / 2 : i / 2;
    }
    return i;
}

static inline PyObject *
frame_child(frame *fr, Py_ssize_t i)
{
    if (fr->kind == F_TUPLE) {
        return PyTuple_GET_ITEM(fr->src, i);
    }
    return fr->kids[i];
}

/* Allocate the raw arrays of a map/set frame that has fr->n children. */
static int
frame_alloc(frame *fr)
{
    size_t n = (size_t)(fr->n ? fr->n : 1);
    fr->kids = PyMem_RawCalloc(n, sizeof(PyObject *));
    fr->out = PyMem_RawCalloc(n, sizeof(PyObject *));
    if (fr->kids == NULL || fr->out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Snapshot the entries of a mapping (a dict, or a frozendict of this interpreter). */
static int
snapshot_map(frame *fr, PyObject *o)
{
    if (PyDict_CheckExact(o)) {
        fr->n = 2 * PyDict_GET_SIZE(o);
        if (frame_alloc(fr) < 0) {
            return -1;
        }
        Py_ssize_t pos = 0, k = 0;
        PyObject *key, *value;
        while (k < fr->n && PyDict_Next(o, &pos, &key, &value)) {
            fr->kids[k++] = Py_NewRef(key);
            fr->kids[k++] = Py_NewRef(value);
        }
        fr->n = k;
        return 0;
    }
    PyObject *items = PyMapping_Items(o);
    if (items == NULL) {
        return -1;
    }
    fr->n = 2 * PyList_GET_SIZE(items);
    if (frame_alloc(fr) < 0) {
        Py_DECREF(items);
        return -1;
    }
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(items); j++) {
        PyObject *item = PyList_GET_ITEM(items, j);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            Py_DECREF(items);
            PyErr_SetString(PyExc_TypeError, "items() did not give pairs");
            return -1;
        }
        fr->kids[2 * j] = Py_NewRef(PyTuple_GET_ITEM(item, 0));
        fr->kids[2 * j + 1] = Py_NewRef(PyTuple_GET_ITEM(item, 1));
    }
    Py_DECREF(items);
    return 0;
}

static int
snapshot_set(frame *fr, PyObject *o)
{
    PyObject *list = PySequence_List(o);
    if (list == NULL) {
        return -1;
    }
    fr->n = PyList_GET_SIZE(list);
    if (frame_alloc(fr) < 0) {
        Py_DECREF(list);
        return -1;
    }
    for (Py_ssize_t j = 0; j < fr->n; j++) {
        fr->kids[j] = Py_NewRef(PyList_GET_ITEM(list, j));
    }
    Py_DECREF(list);
    return 0;
}

/* Types whose objects visit() copies (or finds) without pushing a frame. */
static inline int
is_leaf_type(PyTypeObject *t)
{
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type
        || t == &PyBytes_Type || t == &PyComplex_Type || t == &PyBool_Type
        || t == Py_TYPE(Py_None);
}

/* A small tuple of leaves (a row): its items, which the parent's look-ahead has
 * prefetched, are visited right here instead of through a frame of the walk. The
 * look-ahead looks into the items of tuples up to the same size. */
#define ROW_MAX 8

static inline int
is_row_of_leaves(PyObject *o, Py_ssize_t n)
{
    if (n > ROW_MAX) {
        return 0;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!is_leaf_type(Py_TYPE(PyTuple_GET_ITEM(o, k)))) {
            return 0;
        }
    }
    return 1;
}

/* A tuple of ours whose items are all set: fill its hash cache (3.14), which visit()
 * set to "not computed" when it allocated the tuple. */
static void
tuple_done(PyObject *d)
{
    if (SS_TUPLE_CACHES_HASH) {
        if (PyObject_Hash(d) == -1) {
            PyErr_Clear();          /* left at -1: computing it again writes nothing */
        }
    }
}

static int visit(ctx *c, PyObject *o, Py_ssize_t known, PyObject **res);

/* Copy a row of leaves (is_row_of_leaves) into `d`, a new tuple: 0, or -1 with c->err
 * set. Only the errors of copying a leaf can happen (a leaf is never unshareable and
 * never in a cycle), so no frame is needed to name a path. */
static int
copy_row(ctx *c, PyObject *o, Py_ssize_t n, PyObject *d)
{
    PyObject **out = ((PyTupleObject *)d)->ob_item;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (visit(c, PyTuple_GET_ITEM(o, k), 1, &out[k]) < 0) {
            return -1;
        }
    }
    tuple_done(d);
    return 0;
}

/* Visit one value: 0 with *res set (done), 1 when a frame was pushed, -1 on error
 * (c->err says which). `known` is how many references to `o` the walk accounts for:
 * 1 for the root and tuple items (the tuple's), 2 for the entries of maps and sets (the
 * container's and the frame's snapshot). */
static int
visit(ctx *c, PyObject *o, Py_ssize_t known, PyObject **res)
{
    /* An object referenced only by the container being walked cannot be met again: it
     * needs no memo entry (most rows, fields, keys and values are such). The walk's own
     * references to `o` are taken after this test. Nor can it be a static or shared
     * object: those are immortal, their reference count is far above `known`. A static
     * string that interning may still write goes to copy_str like any other
     * (ss_rt_is_shareable_static). */
    int once = Py_REFCNT(o) <= known;
    if (!once) {
        if (ss_rt_is_shareable_static(o)) {
            *res = o;
            return 0;
        }
        PyObject *m = memo_get(c, o);
        if (m != NULL) {
            if (m == IN_PROGRESS) {
                c->err = E_CYCLE;
                c->bad = Py_NewRef(o);
                return -1;
            }
            *res = m;
            return 0;
        }
        ss_arena *other = ss_arena_of(o);
        if (other != NULL) {
            if (ss_filler_depend(c->f, other) < 0) {
                c->err = E_PYERR;
                return -1;
            }
            *res = o;
            return 0;
        }
    }
    PyTypeObject *t = Py_TYPE(o);
    PyObject *r = NULL;
    if (t == &PyUnicode_Type) {
        r = copy_str(c, o);
    }
    else if (t == &PyLong_Type) {
        r = copy_long(c, o);
    }
    else if (t == &PyFloat_Type) {
        r = copy_float(c, o);
    }
    else if (t == &PyBytes_Type) {
        r = copy_bytes(c, o);
    }
    else if (t == &PyComplex_Type) {
        r = copy_complex(c, o);
    }
    else if (t == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        if (n == 0) {
            *res = ss_rt_empty_tuple();
            return 0;
        }
        size_t size = (size_t)PyTuple_Type.tp_basicsize
                      + (size_t)n * (size_t)PyTuple_Type.tp_itemsize;
        PyObject *d = ss_filler_alloc_object(c->f, &PyTuple_Type, size);
        if (d == NULL) {
            c->err = E_PYERR;
            return -1;
        }
        Py_SET_SIZE(d, n);
        ss_tuple_reset_hash(d);
        if (is_row_of_leaves(o, n)) {
            if (copy_row(c, o, n, d) < 0 || (!once && memo_set(c, o, d) < 0)) {
                c->err = E_PYERR;
                return -1;
            }
            *res = d;
            return 0;
        }
        if (!once && memo_set(c, o, IN_PROGRESS) < 0) {
            c->err = E_PYERR;
            return -1;
        }
        frame *fr = push(c);
        if (fr == NULL) {
            c->err = E_PYERR;
            return -1;
        }
        fr->kind = F_TUPLE;
        fr->memo = !once;
        fr->src = Py_NewRef(o);
        fr->n = n;
        fr->dst = d;
        fr->out = ((PyTupleObject *)d)->ob_item;
        return 1;
    }
    else if (t == &PyDict_Type || t == &SS_FrozenDict_Type
             || t == &PySet_Type || t == &PyFrozenSet_Type || t == &SS_ImmutableSet_Type)
    {
        if (!once && memo_set(c, o, IN_PROGRESS) < 0) {
            c->err = E_PYERR;
            return -1;
        }
        frame *fr = push(c);
        if (fr == NULL) {
            c->err = E_PYERR;
            return -1;
        }
        fr->src = Py_NewRef(o);
        fr->memo = !once;
        int rc;
        if (t == &PyDict_Type || t == &SS_FrozenDict_Type) {
            fr->kind = F_MAP;
            rc = snapshot_map(fr, o);
        }
        else {
            fr->kind = F_SET;
            rc = snapshot_set(fr, o);
        }
        if (rc < 0) {
            c->err = E_PYERR;
            return -1;
        }
        return 1;
    }
    else {
        c->err = E_TYPE;
        c->bad = Py_NewRef(o);
        return -1;
    }
    if (r == NULL || (!once && memo_set(c, o, r) < 0)) {
        c->err = E_PYERR;
        return -1;
    }
    *res = r;
    return 0;
}

/* Look ahead in the children of a frame. The string memo's probe of a new string misses
 * the cache (the table is as big as the arena's strings are many: ~150 ns per probe on
 * this VM, most of a row's time in the default arena), so its slot is prefetched a few
 * children before the string is visited: a three-stage pipeline over the children
 *   i + LOOKAHEAD_OBJECT  the child object is prefetched;
 *   i + LOOKAHEAD_ITEMS   a small tuple child (a row) has its items prefetched;
 *   i + LOOKAHEAD_SLOT    the strings among the child or its items are hashed (the
 *                         visit would hash them anyway: the caller's own strings, whose
 *                         cache this interpreter owns) and their memo slots prefetched.
 * Only exact str/tuple are looked into (no Python code runs: str's hash is C). */
#define LOOKAHEAD_SLOT 6
#define LOOKAHEAD_ITEMS 12
#define LOOKAHEAD_OBJECT 18

static inline void
prefetch_str_slot(ctx *c, PyObject *o)
{
    if (Py_IS_TYPE(o, &PyUnicode_Type) && PyUnicode_GET_LENGTH(o) > 1) {
        Py_hash_t h = _PyASCIIObject_CAST(o)->hash;
        if (h == -1) {
            h = PyObject_Hash(o);       /* exact str: cannot fail */
        }
        ss_filler_str_prefetch(c->f, h);
    }
}

static inline void
prefetch_child_slots(ctx *c, PyObject *o)
{
    if (Py_IS_TYPE(o, &PyTuple_Type) && PyTuple_GET_SIZE(o) <= ROW_MAX) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(o); k++) {
            prefetch_str_slot(c, PyTuple_GET_ITEM(o, k));
        }
    }
    else {
        prefetch_str_slot(c, o);
    }
}

/* A frame's first LOOKAHEAD_SLOT children are never LOOKAHEAD_SLOT ahead of anything:
 * before the first of them is visited, their slots are prefetched all at once. */
static inline void
look_ahead_first(ctx *c, frame *fr)
{
    Py_ssize_t n = fr->n < LOOKAHEAD_SLOT ? fr->n : LOOKAHEAD_SLOT;
    for (Py_ssize_t i = 0; i < n; i++) {
        prefetch_child_slots(c, frame_child(fr, i));
    }
}

static inline void
look_ahead(ctx *c, frame *fr)
{
    Py_ssize_t i = fr->i;
    if (i + LOOKAHEAD_OBJECT < fr->n) {
        __builtin_prefetch(frame_child(fr, i + LOOKAHEAD_OBJECT));
    }
    if (i + LOOKAHEAD_ITEMS < fr->n) {
        PyObject *o = frame_child(fr, i + LOOKAHEAD_ITEMS);
        if (Py_IS_TYPE(o, &PyTuple_Type) && PyTuple_GET_SIZE(o) <= ROW_MAX) {
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(o); k++) {
                __builtin_prefetch(PyTuple_GET_ITEM(o, k));
            }
        }
    }
    if (i + LOOKAHEAD_SLOT < fr->n) {
        prefetch_child_slots(c, frame_child(fr, i + LOOKAHEAD_SLOT));
    }
}

/* All children of the top frame are shared: build its object. */
static PyObject *
finish(ctx *c, frame *fr)
{
    if (fr->kind == F_TUPLE) {
        tuple_done(fr->dst);
        return fr->dst;
    }
    if (fr->kind == F_MAP) {
        Py_ssize_t n = fr->n / 2;
        return ss_frozendict_build(c->f, n, fr->out, fr->out + n);
    }
    return ss_immutableset_build(c->f, fr->n, fr->out);
}

/* ---- error messages ------------------------------------------------------------------- */

static const char *
article(const char *name)
{
    return strchr("aeiouAEIOU", name[0]) ? "an" : "a";
}

/* Append the path of stack[0:upto] (each frame's current child) to `w` (a list of str). */
static int
append(PyObject *parts, PyObject *s)
{
    if (s == NULL) {
        return -1;
    }
    int rc = PyList_Append(parts, s);
    Py_DECREF(s);
    return rc;
}

/* The path "value['users'][3]" of the child being visited at stack[upto-1], as a str.
 * Keys and set items restart the path: "in a key of value['x']: key[1]". */
static PyObject *
build_path(ctx *c, Py_ssize_t upto)
{
    PyObject *prefix = PyUnicode_FromString("");
    PyObject *parts = PyList_New(0);
    if (prefix == NULL || parts == NULL || append(parts, PyUnicode_FromString("value")) < 0) {
        goto error;
    }
    for (Py_ssize_t d = 0; d < upto; d++) {
        frame *fr = &c->stack[d];
        if (fr->kind == F_TUPLE) {
            if (append(parts, PyUnicode_FromFormat("[%zd]", fr->i)) < 0) {
                goto error;
            }
        }
        else if (fr->kind == F_MAP && (fr->i & 1)) {
            PyObject *r = PyObject_Repr(fr->kids[fr->i - 1]);
            if (r == NULL) {
                goto error;
            }
            if (PyUnicode_GET_LENGTH(r) > 60) {
                PyObject *cut = PyUnicode_Substring(r, 0, 57);
                Py_DECREF(r);
                r = cut ? PyUnicode_FromFormat("%U...", cut) : NULL;
                Py_XDECREF(cut);
                if (r == NULL) {
                    goto error;
                }
            }
            PyObject *seg = PyUnicode_FromFormat("[%U]", r);
            Py_DECREF(r);
            if (append(parts, seg) < 0) {
                goto error;
            }
        }
        else {
            const char *what = fr->kind == F_MAP ? "key" : "item";
            PyObject *sep = PyUnicode_FromString("");
            if (sep == NULL) {
                goto error;
            }
            PyObject *path = PyUnicode_Join(sep, parts);
            Py_DECREF(sep);
            if (path == NULL) {
                goto error;
            }
            PyObject *np = PyUnicode_FromFormat("%Uin %s %s of %U: ", prefix,
                                                article(what), what, path);
            Py_DECREF(path);
            if (np == NULL) {
                goto error;
            }
            Py_SETREF(prefix, np);
            Py_SETREF(parts, PyList_New(0));
            if (parts == NULL || append(parts, PyUnicode_FromString(what)) < 0) {
                goto error;
            }
        }
    }
    PyObject *sep = PyUnicode_FromString("");
    if (sep == NULL) {
        goto error;
    }
    PyObject *path = PyUnicode_Join(sep, parts);
    Py_DECREF(sep);
    Py_DECREF(parts);
    if (path == NULL) {
        Py_DECREF(prefix);
        return NULL;
    }
    PyObject *full = PyUnicode_Concat(prefix, path);
    Py_DECREF(prefix);
    Py_DECREF(path);
    return full;
error:
    Py_XDECREF(prefix);
    Py_XDECREF(parts);
    return NULL;
}

static void
raise_not_shareable(ctx *c, const char *fname)
{
    PyObject *path = build_path(c, c->depth);
    if (path == NULL) {
        return;
    }
    if (c->err == E_CYCLE) {
        Py_ssize_t j = 0;
        while (j < c->depth && c->stack[j].src != c->bad) {
            j++;
        }
        PyObject *target = build_path(c, j);
        if (target != NULL) {
            PyErr_Format(c->st->not_shareable_error,
                         "%s(): %U refers back to %U (a cycle); cyclic data cannot be "
                         "shared", fname, path, target);
            Py_DECREF(target);
        }
        Py_DECREF(path);
        return;
    }
    PyTypeObject *t = Py_TYPE(c->bad);
    const char *name = t->tp_name;
    const char *dot = strrchr(name, '.');
    const char *shortname = dot ? dot + 1 : name;
    const char *base = NULL;
    if (PyUnicode_Check(c->bad)) {
        base = "str";
    }
    else if (PyBool_Check(c->bad) || PyLong_Check(c->bad)) {
        base = "int";
    }
    else if (PyFloat_Check(c->bad)) {
        base = "float";
    }
    else if (PyComplex_Check(c->bad)) {
        base = "complex";
    }
    else if (PyBytes_Check(c->bad)) {
        base = "bytes";
    }
    else if (PyTuple_Check(c->bad)) {
        base = "tuple";
    }
    else if (PyDict_Check(c->bad)) {
        base = "dict";
    }
    else if (PyFrozenSet_Check(c->bad)) {
        base = "frozenset";
    }
    else if (PyAnySet_Check(c->bad)) {
        base = "set";
    }
    if (t == &PyList_Type) {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is a list, which is mutable; use a tuple", fname, path);
    }
    else if (t == &PyByteArray_Type) {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is a bytearray, which is mutable; use bytes", fname, path);
    }
    else if (t == &PyMemoryView_Type) {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is a memoryview, which may be mutable; use bytes", fname, path);
    }
    else if (base != NULL) {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is %s %s instance, a subclass of %s: its class belongs to one "
                     "interpreter; convert it with %s(...)",
                     fname, path, article(shortname), shortname, base, base);
    }
    else if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is %s %s, which cannot be shared; shareable are None, bool, "
                     "int, float, complex, str, bytes, tuple, dict, set, frozenset, "
                     "frozendict and immutableset", fname, path, article(shortname), shortname);
    }
    else {
        PyErr_Format(c->st->not_shareable_error,
                     "%s(): %U is %s %s instance, which cannot be shared; shareable are None, "
                     "bool, int, float, complex, str, bytes, tuple, dict, set, frozenset, "
                     "frozendict and immutableset", fname, path, article(shortname), shortname);
    }
    Py_DECREF(path);
}

/* ---- the size a share() expects ------------------------------------------------------- */

#define ESTIMATE_DEPTH 4

/* About how many arena bytes the copy of `o` takes: from types and sizes and, for tuples
 * and dicts, a sample of three children (first, middle, last; a dict's first entry)
 * scaled to all of them, ESTIMATE_DEPTH levels deep: a few dozen reads whatever the
 * size. Only a hint, that sizes the arena's first block (arena.c: fresh memory costs its
 * zeroing, so a 1 KB value should not get 64 KiB, nor a 1 MB value grow through many
 * blocks). Repeats, static objects and strings the arena already holds are counted as
 * new, so it errs on the big side for such values. */
typedef struct {
    size_t bytes;           /* arena bytes */
    size_t strings;         /* strings copied (each a probe and an entry in the memo) */
} estimate_t;

static estimate_t
estimate(PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) {
        size_t len = (size_t)PyUnicode_GET_LENGTH(o);
        if (PyUnicode_IS_ASCII(o)) {
            return (estimate_t){ROUND16(sizeof(PyASCIIObject) + len + 1), 1};
        }
        /* characters, and a UTF-8 form of about twice the length */
        size_t kind = (size_t)PyUnicode_KIND(o);
        return (estimate_t){
            ROUND16(sizeof(PyCompactUnicodeObject) + (len + 1) * kind + 2 * len + 1), 1};
    }
    if (t == &PyBytes_Type) {
        return (estimate_t){
            ROUND16(offsetof(PyBytesObject, ob_sval) + (size_t)PyBytes_GET_SIZE(o) + 1), 0};
    }
    size_t n, own;
    PyObject *sample[3];
    int k = 0;
    if (t == &PyTuple_Type) {
        n = (size_t)PyTuple_GET_SIZE(o);
        own = ROUND16(SS_GC_HEAD_SIZE + sizeof(PyTupleObject) + 8 * n);
        if (n > 0 && depth > 0) {
            sample[k++] = PyTuple_GET_ITEM(o, 0);
            if (n > 2) {
                sample[k++] = PyTuple_GET_ITEM(o, (Py_ssize_t)n / 2);
            }
            if (n > 1) {
                sample[k++] = PyTuple_GET_ITEM(o, (Py_ssize_t)n - 1);
            }
        }
    }
    else if (t == &PyDict_Type) {
        n = (size_t)PyDict_GET_SIZE(o);
        own = 64 + 40 * n;                  /* ss_table: entries and index */
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        if (n > 0 && depth > 0 && PyDict_Next(o, &pos, &key, &value)) {
            estimate_t ek = estimate(key, depth - 1), ev = estimate(value, depth - 1);
            return (estimate_t){own + n * (ek.bytes + ev.bytes),
                                n * (ek.strings + ev.strings)};
        }
    }
    else if (PyAnySet_CheckExact(o)) {
        n = (size_t)PySet_GET_SIZE(o);
        own = 64 + 24 * n;
    }
    else {
        return (estimate_t){32, 0};  /* int, float, complex; containers of ours likewise */
    }
    if (k == 0) {
        return (estimate_t){own + 32 * n, 0};
    }
    estimate_t sum = {0, 0};
    for (int i = 0; i < k; i++) {
        estimate_t e = estimate(sample[i], depth - 1);
        sum.bytes += e.bytes;
        sum.strings += e.strings;
    }
    return (estimate_t){own + n * sum.bytes / (size_t)k, n * sum.strings / (size_t)k};
}

/* ---- entry points --------------------------------------------------------------------- */

static void
ctx_clear(ctx *c)
{
    for (Py_ssize_t d = c->depth - 1; d >= 0; d--) {
        frame_clear(&c->stack[d]);
    }
    c->depth = 0;
    if (c->stack != c->inline_stack) {
        PyMem_RawFree(c->stack);
    }
    c->stack = NULL;
    if (c->memo != NULL) {
        for (size_t k = 0; k <= c->memo_mask; k++) {
            Py_XDECREF(c->memo[k].key);
        }
        PyMem_RawFree(c->memo);
        c->memo = NULL;
    }
    Py_CLEAR(c->memo_first_key);
    Py_CLEAR(c->bad);
}

/* The copy of ss_share_into / ss_share_detached; `what` names the caller in errors.
 * With `become_holder`, the calling interpreter becomes a holder of the arena once the
 * copy is complete and before it is published: a call that fails (a closed arena, a value
 * that cannot be shared) leaves the caller no holder of an arena it never reached. */
static PyObject *
share_walk(ss_state *st, ss_arena *a, PyObject *obj, const char *what, int become_holder)
{
    ctx c = {.st = st, .cap = INLINE_FRAMES};
    c.stack = c.inline_stack;
    c.f = ss_filler_begin(a);
    if (c.f == NULL) {
        return NULL;
    }
    estimate_t e = estimate(obj, ESTIMATE_DEPTH);
    if (ss_filler_expect(c.f, e.bytes, e.strings) < 0) {
        ss_filler_abort(c.f);
        return NULL;
    }
    PyObject *result = NULL;
    int r = visit(&c, obj, 1, &result);
    while (r >= 0 && c.depth > 0) {
        frame *fr = &c.stack[c.depth - 1];
        if (fr->i < fr->n) {
            /* A frame this small is a tuple whose items its parent's look-ahead
             * looked into already (rows of leaves get no frame at all), or a map or set
             * of at most ROW_MAX / 2 entries, too few to be worth it. */
            if (fr->i == 0 && fr->n > ROW_MAX) {
                look_ahead_first(&c, fr);
            }
            look_ahead(&c, fr);
            PyObject *res;
            r = visit(&c, frame_child(fr, fr->i), fr->kind == F_TUPLE ? 1 : 2, &res);
            if (r == 0) {
                fr->out[out_index(fr, fr->i)] = res;
                fr->i++;
            }
            continue;
        }
        PyObject *res = finish(&c, fr);
        if (res == NULL || (fr->memo && memo_set(&c, fr->src, res) < 0)) {
            c.err = E_PYERR;
            r = -1;
            break;
        }
        frame_clear(fr);
        c.depth--;
        if (c.depth == 0) {
            result = res;
        }
        else {
            frame *parent = &c.stack[c.depth - 1];
            parent->out[out_index(parent, parent->i)] = res;
            parent->i++;
        }
    }
    if (r < 0) {
        /* Nothing of this call was published: take it all back, then explain. */
        PyObject *exc = PyErr_GetRaisedException();
        ss_filler_abort(c.f);
        PyErr_SetRaisedException(exc);
        if (c.err == E_TYPE || c.err == E_CYCLE) {
            raise_not_shareable(&c, what);
        }
        else if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError, "share() failed without an error");
        }
        ctx_clear(&c);
        return NULL;
    }
    if (become_holder && ss_arena_add_holder(a, st->interp_id) < 0) {
        PyObject *exc = PyErr_GetRaisedException();     /* MemoryError */
        ss_filler_abort(c.f);
        PyErr_SetRaisedException(exc);
        ctx_clear(&c);
        return NULL;
    }
    ss_filler_commit(c.f);
    ctx_clear(&c);
    return Py_NewRef(result);
}

PyObject *
ss_share_into(ss_state *st, ss_arena *a, PyObject *obj)
{
    if (ss_is_shared(obj)) {
        /* Already shared: the caller can reach it, so it holds its arena already. */
        return Py_NewRef(obj);
    }
    return share_walk(st, a, obj, a == ss_default_arena() ? "share" : "Arena.share", 1);
}

/* ---- share_detached (Arena.share_detached, docs/shared-memory.md) ---------------------
 * The same copy, but the calling interpreter does not become a holder: the caller must
 * not let the result reach Python code of this interpreter. Its only user,
 * Arena.share_detached, wraps it at once in a SharedRef (xvalue.c), which holds an arena
 * reference and gives the object only to a receiving interpreter. The share's memo and
 * the arena's string memo live in raw memory no Python code reaches; the shared strings
 * are pre-marked interned, so no intern table of this interpreter records them. */
PyObject *
ss_share_detached(ss_state *st, ss_arena *a, PyObject *obj)
{
    if (ss_is_shared(obj)) {
        /* The caller can already reach it (it holds its arena, or it is immortal runtime
         * or default-arena memory): the handle names it as it is. */
        return Py_NewRef(obj);
    }
    return share_walk(st, a, obj, "Arena.share_detached", 0);
}

/* ---- module functions ----------------------------------------------------------------- */

static PyObject *
share(PyObject *module, PyObject *obj)
{
    ss_state *st = ss_get_state(module);
    ss_arena *a = ss_default_arena();
    if (a == NULL) {
        return NULL;
    }
    return ss_share_into(st, a, obj);
}

static PyObject *
is_shared(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(ss_is_shared(obj));
}

static PyMethodDef share_functions[] = {
    {"share", share, METH_O,
     "share(obj) -> a deeply immutable copy of obj whose objects are immortal and live in\n"
     "process-wide memory, readable by pointer from every interpreter.\n\n"
     "dict becomes frozendict, set/frozenset become immutableset; anything that is not\n"
     "None, bool, int, float, complex, str, bytes, tuple or one of those raises\n"
     "NotShareableError naming where it is. Already shared objects are returned as is."},
    {"is_shared", is_shared, METH_O,
     "is_shared(obj) -> True when obj may be read by pointer from any interpreter."},
    {NULL, NULL, 0, NULL},
};

int
ss_shared_exec(PyObject *module, ss_state *st)
{
    /* st->not_shareable_error is made by module.c, shared with the channel code. */
    if (ss_arena_exec(module, st) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, share_functions);
}

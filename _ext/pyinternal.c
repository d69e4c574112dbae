/* The only file of _ext/ built with CPython's internal headers (Py_BUILD_CORE_MODULE).
 *
 * It answers three questions about the runtime's own static, immortal objects, which
 * every interpreter of the process already reads by pointer:
 *   - is this object one of them?  (address inside _PyRuntime.static_objects, or one of
 *     None/True/False/Ellipsis/NotImplemented)
 *   - the runtime's singleton for a small int, a 1-character latin-1 str, a 1-byte bytes,
 *     the empty str/bytes/tuple;
 *   - the runtime's static string equal to a given str (the _Py_ID() identifiers and
 *     _Py_STR() literals), so that share("__add__") *is* _Py_ID(__add__): update_slot()
 *     and other identity checks of the interpreter keep working with shared names.
 *
 * The static strings live in _PyRuntime.static_objects.singletons.strings, a struct of
 * `struct { PyASCIIObject _ascii; uint8_t _data[sizeof(LITERAL)]; }` members (generated
 * by Tools/build/generate_global_objects.py; same layout in 3.12, 3.13 and 3.14), followed
 * by the ascii[128] and latin1[128] arrays. We walk the literals and identifiers once,
 * validating every entry, into a process-wide hash table that is never written after it
 * is published, so lookups need no lock. We never read CPython's own hash table
 * (_PyRuntime.cached_objects.interned_strings), which 3.12 may still write to.
 */
#define Py_BUILD_CORE_MODULE 1
#include "subsandbox.h"
#include "pyversion.h"
#include "pyinternal.h"

#include "internal/pycore_runtime.h"
#include "internal/pycore_global_objects.h"
#include "internal/pycore_gc.h"

#include <stdalign.h>
#include <string.h>

_Static_assert(sizeof(PyGC_Head) == SS_GC_HEAD_SIZE, "SS_GC_HEAD_SIZE is wrong");

#define STATICS (&_PyRuntime.static_objects)

int
ss_rt_is_static(PyObject *op)
{
    const char *p = (const char *)op;
    const char *lo = (const char *)STATICS;
    if (p >= lo && p < lo + sizeof(*STATICS)) {
        return 1;
    }
    return op == Py_None || op == Py_True || op == Py_False || op == Py_Ellipsis
        || op == Py_NotImplemented;
}

PyObject *
ss_rt_small_int(long v)
{
    if (v >= -_PY_NSMALLNEGINTS && v < _PY_NSMALLPOSINTS) {
        return (PyObject *)&_Py_SINGLETON(small_ints)[_PY_NSMALLNEGINTS + v];
    }
    return NULL;
}

PyObject *
ss_rt_latin1_char(Py_UCS4 ch)
{
    if (ch < 128) {
        return (PyObject *)&_Py_SINGLETON(strings).ascii[ch];
    }
    if (ch < 256) {
        return (PyObject *)&_Py_SINGLETON(strings).latin1[ch - 128];
    }
    return NULL;
}

PyObject *
ss_rt_byte_char(unsigned char ch)
{
    return (PyObject *)&_Py_SINGLETON(bytes_characters)[ch];
}

PyObject *
ss_rt_empty_bytes(void)
{
    return (PyObject *)&_Py_SINGLETON(bytes_empty);
}

PyObject *
ss_rt_empty_tuple(void)
{
    return (PyObject *)&_Py_SINGLETON(tuple_empty);
}

/* ---- the static string table --------------------------------------------------------- */

static PyObject **st_table;     /* open addressing, NULL = empty; immutable once published */
static size_t st_mask;
static Py_ssize_t st_count;
static int st_ready;            /* 0 not built, 1 built, -1 failed (layout not recognised) */
static PyObject *st_empty;      /* _Py_STR(empty) */

static inline size_t
st_slot(Py_hash_t h)
{
    return (size_t)h & st_mask;
}

/* Called once, with the GIL of the importing interpreter held, under the caller's lock. */
int
ss_rt_init(void)
{
    if (st_ready != 0) {
        return 0;
    }
    const char *start = (const char *)&_Py_SINGLETON(strings).literals;
    const char *end = (const char *)&_Py_SINGLETON(strings).ascii;
    const size_t align = alignof(PyASCIIObject);
    /* First pass: count and validate. */
    Py_ssize_t n = 0;
    for (const char *p = start; p < end; ) {
        PyASCIIObject *a = (PyASCIIObject *)p;
        if (Py_TYPE(a) != &PyUnicode_Type || !a->state.ascii || !a->state.compact
            || !a->state.statically_allocated || a->length < 0 || a->length > 256
            || ((const char *)(a + 1))[a->length] != '\0')
        {
            st_ready = -1;
            return 0;
        }
        size_t sz = sizeof(PyASCIIObject) + (size_t)a->length + 1;
        sz = (sz + align - 1) & ~(align - 1);
        p += sz;
        n++;
    }
    size_t cap = 16;
    while (cap < (size_t)n * 3) {
        cap <<= 1;
    }
    PyObject **table = PyMem_RawCalloc(cap, sizeof(PyObject *));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st_mask = cap - 1;
    Py_ssize_t count = 0;
    for (const char *p = start; p < end; ) {
        PyASCIIObject *a = (PyASCIIObject *)p;
        size_t sz = sizeof(PyASCIIObject) + (size_t)a->length + 1;
        sz = (sz + align - 1) & ~(align - 1);
        p += sz;
        if (a->length == 0) {
            if (st_empty == NULL) {
                st_empty = (PyObject *)a;   /* _Py_STR(empty), the runtime's "" */
            }
            continue;
        }
        /* Only strings the runtime interned as static: they are what every
         * interpreter's interning returns for an equal string. */
        if (a->state.interned != SSTATE_INTERNED_IMMORTAL_STATIC) {
            continue;
        }
        /* Interning hashed it at runtime start; its cached hash never changes. */
        Py_hash_t h = a->hash;
        if (h == -1) {
            continue;
        }
        size_t i = (size_t)h & st_mask;
        int dup = 0;
        while (table[i] != NULL) {
            PyASCIIObject *b = (PyASCIIObject *)table[i];
            if (b->length == a->length && memcmp(b + 1, a + 1, (size_t)a->length) == 0) {
                dup = 1;   /* the same literal twice: keep the first */
                break;
            }
            i = (i + 1) & st_mask;
        }
        if (!dup) {
            table[i] = (PyObject *)a;
            count++;
        }
    }
    st_table = table;
    st_count = count;
    st_ready = 1;
    return 0;
}

Py_ssize_t
ss_rt_static_str_count(void)
{
    return st_ready == 1 ? st_count : -1;
}

PyObject *
ss_rt_empty_str(void)
{
    return st_empty;
}

PyObject *
ss_rt_static_str(const void *data, int kind, Py_ssize_t len, Py_hash_t hash)
{
    if (st_ready != 1 || kind != PyUnicode_1BYTE_KIND || len > 256) {
        return NULL;
    }
    /* `hash` is str's hash of the same characters, as cached in the static strings. */
    size_t i = st_slot(hash);
    PyObject *s;
    while ((s = st_table[i]) != NULL) {
        PyASCIIObject *b = (PyASCIIObject *)s;
        if (b->length == len && memcmp(b + 1, data, (size_t)len) == 0) {
            return s;
        }
        i = (i + 1) & st_mask;
    }
    return NULL;
}

/* For the tests: the static strings as a tuple (a new reference). */
PyObject *
ss_rt_static_strings(void)
{
    if (st_ready != 1) {
        return PyTuple_New(0);
    }
    PyObject *t = PyTuple_New(st_count);
    if (t == NULL) {
        return NULL;
    }
    Py_ssize_t k = 0;
    for (size_t i = 0; i <= st_mask; i++) {
        if (st_table[i] != NULL && k < st_count) {
            PyTuple_SET_ITEM(t, k++, Py_NewRef(st_table[i]));
        }
    }
    return t;
}

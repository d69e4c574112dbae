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

#if SS_LATIN1_SINGLETONS_INTERNED
static PyObject *
latin1_char(Py_UCS4 ch)
{
    if (ch < 128) {
        return (PyObject *)&_Py_SINGLETON(strings).ascii[ch];
    }
    if (ch < 256) {
        return (PyObject *)&_Py_SINGLETON(strings).latin1[ch - 128];
    }
    return NULL;
}
#endif

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
static Py_ssize_t st_maxlen;    /* the longest static string's length */
static int st_ready;            /* 0 not built, 1 built, -1 failed (layout not recognised) */
static PyObject *st_empty;      /* _Py_STR(empty) */
static PyObject *st_one[256];   /* the interned static strings of one character */

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
        if (a->length == 1 && st_one[((unsigned char *)(a + 1))[0]] == NULL) {
            st_one[((unsigned char *)(a + 1))[0]] = (PyObject *)a;
        }
        if (!dup) {
            table[i] = (PyObject *)a;
            count++;
            if (a->length > st_maxlen) {
                st_maxlen = a->length;
            }
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
    /* Most strings are longer than every static one: no probe for them. */
    if (st_ready != 1 || kind != PyUnicode_1BYTE_KIND || len > st_maxlen) {
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

PyObject *
ss_rt_one_char(Py_UCS4 ch)
{
#if SS_LATIN1_SINGLETONS_INTERNED
    return latin1_char(ch);
#else
    return ch < 256 && st_ready == 1 ? st_one[ch] : NULL;
#endif
}

int
ss_rt_is_shareable_static(PyObject *op)
{
    if (!ss_rt_is_static(op)) {
        return 0;
    }
    if (!PyUnicode_CheckExact(op)) {
        return 1;
    }
    /* A static string is shared as it is only when it is the one share() would pick for
     * its characters: a string interning leaves alone in every interpreter. */
    Py_ssize_t len = PyUnicode_GET_LENGTH(op);
    if (len == 0) {
        return op == ss_rt_empty_str();
    }
    if (len == 1) {
        return op == ss_rt_one_char(PyUnicode_READ_CHAR(op, 0));
    }
    Py_hash_t h = _PyASCIIObject_CAST(op)->hash;   /* set by interning at runtime start */
    return h != -1
           && ss_rt_static_str(PyUnicode_DATA(op), PyUnicode_KIND(op), len, h) == op;
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

/* ---- fork: keeping sandbox interpreters out of the child's after-fork cleanup ----------
 *
 * PyOS_AfterFork_Child() calls _PyInterpreterState_DeleteExceptMain(), which clears and
 * frees every interpreter but the main one from the forking thread, with no thread state
 * of theirs and while their GILs are held by threads that do not exist in the child:
 * 3.12.1 hangs or crashes there, 3.13.0 aborts ("PyThreadState_Get: the function must be
 * called with the GIL held"). Both walk _PyRuntime.interpreters.head (a list linked by
 * interp->next, newest first, guarded by HEAD_LOCK). Sandboxes take their interpreters out
 * of that list just before fork() and put them back in the parent after it: the child
 * never sees them, and their copies in the child are never touched or freed. Same field
 * names in 3.12, 3.13 and 3.14 (Include/internal/pycore_runtime.h, pycore_interp.h);
 * the list's lock differs per version (SS_HEAD_LOCK, pyversion.h). */
static int
id_listed(int64_t id, const int64_t *ids, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ids[i] == id) {
            return 1;
        }
    }
    return 0;
}

Py_ssize_t
ss_rt_detach_interpreters(const int64_t *ids, Py_ssize_t n, PyInterpreterState **out)
{
    _PyRuntimeState *rt = &_PyRuntime;
    Py_ssize_t found = 0;
#if !SS_FORK_HOLDS_HEAD_LOCK
    SS_HEAD_LOCK(rt);
#endif
    PyInterpreterState **link = &rt->interpreters.head;
    while (*link != NULL) {
        PyInterpreterState *interp = *link;
        if (interp != rt->interpreters.main && found < n
            && id_listed(PyInterpreterState_GetID(interp), ids, n))
        {
            *link = interp->next;
            interp->next = NULL;
            out[found++] = interp;
        }
        else {
            link = &interp->next;
        }
    }
#if !SS_FORK_HOLDS_HEAD_LOCK
    SS_HEAD_UNLOCK(rt);
#endif
    return found;
}

void
ss_rt_reattach_interpreters(PyInterpreterState *const *saved, Py_ssize_t n)
{
    _PyRuntimeState *rt = &_PyRuntime;
#if !SS_FORK_HOLDS_HEAD_LOCK
    SS_HEAD_LOCK(rt);
#endif
    /* saved[] is in list order (newest first): prepend the oldest first to keep it. */
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        saved[i]->next = rt->interpreters.head;
        rt->interpreters.head = saved[i];
    }
#if !SS_FORK_HOLDS_HEAD_LOCK
    SS_HEAD_UNLOCK(rt);
#endif
}

/* The child of a fork never finalizes the interpreters it left out (their copies are never
 * touched, above), but each of them is still counted in the runtime's
 * managed_static.types[i].interp_count of every static type whose per-interpreter state it
 * holds: all static builtin types, and our frozendict/immutableset (frozen_guard.c). When
 * the child's main interpreter is finalized, managed_static_type_state_clear() asserts
 * that the count of each builtin type reaches 0 (`!...interp_count`, typeobject.c): a
 * pydebug CPython aborted at the exit of every such child (found by
 * tests/test_keyword_tuples.py's fork test under tools/sanitizers.sh, whose Pythons are
 * pydebug builds). Release builds do not assert, but _PyTypes_FiniExtTypes() takes
 * "count == 1" as "the last interpreter": with the stale counts the child's finalization
 * never finalized our two types (READY flag, version tag and runtime slot left set). So
 * take the left-out interpreters out of the counts too: one decrement per type slot each
 * one had filled (state->type != NULL, as managed_static_type_state_init/clear keep it),
 * never below 1, the main interpreter's own share (a slot seen filled in a copy made
 * while its owner was between the increment and the store is the only imprecision, and
 * it can only leave a count one too high, as before). Only in the child, inside fork(),
 * where the forking thread is the only one: nothing else reads the counts meanwhile. */
#if defined(SS_RUNTIME_COUNTS_STATIC_TYPES)
#include "internal/pycore_typeobject.h"

static void
uncount_slot(size_t full_index)
{
    int64_t *count = &_PyRuntime.types.managed_static.types[full_index].interp_count;
    if (*count > 1) {
        (void)_Py_atomic_add_int64(count, -1);
    }
}
#endif

void
ss_rt_uncount_detached_interpreters(PyInterpreterState *const *gone, Py_ssize_t n)
{
#if defined(SS_RUNTIME_COUNTS_STATIC_TYPES)
    for (Py_ssize_t k = 0; k < n; k++) {
        struct types_state *types = &gone[k]->types;
        for (size_t i = 0; i < _Py_MAX_MANAGED_STATIC_BUILTIN_TYPES; i++) {
            if (types->builtins.initialized[i].type != NULL) {
                uncount_slot(i);
            }
        }
        for (size_t i = 0; i < _Py_MAX_MANAGED_STATIC_EXT_TYPES; i++) {
            if (types->for_extensions.initialized[i].type != NULL) {
                uncount_slot(_Py_MAX_MANAGED_STATIC_BUILTIN_TYPES + i);
            }
        }
    }
#else
    (void)gone;
    (void)n;
#endif
}

/* ---- churn: giving back the empty pools of a destroyed interpreter ---------------------
 *
 * An isolated interpreter has its own obmalloc. When it is destroyed, CPython 3.12 never
 * frees that allocator's arenas, and 3.13 frees them only when no block is left allocated
 * (_PyInterpreterState_FinalizeAllocatedBlocks → free_obmalloc_arenas, "leaked == 0"),
 * which does not happen in practice: ~1.7 MiB of RSS stays per create/destroy (gh-110411).
 * Nobody allocates from those arenas again (the allocator's state is gone with the
 * interpreter), so every pool of them that holds no block (pool_header.ref.count == 0) is
 * dead memory: its pages can be handed back to the kernel (MADV_DONTNEED) without touching
 * a byte that anything may still read. Pools that still hold a leaked block are kept
 * whole, except their pages that hold no allocated block. Layout (Include/internal/pycore_obmalloc.h, same in 3.12, 3.13 and 3.14): pools
 * are POOL_SIZE bytes, POOL_SIZE-aligned inside the arena, each starting with a
 * struct pool_header. */
#include "internal/pycore_obmalloc.h"
#include <sys/mman.h>

#define SS_PAGE 4096
#define SS_MAX_BLOCKS (POOL_SIZE / ALIGNMENT)

/* Which blocks of a pool still in use are free: on the pool's free list (linked through
 * their first word) or at or past nextoffset (never handed out). Fills is_free[0..n) and
 * returns n, or 0 when the header or the free list is not consistent (a list that leaves
 * the pool or loops): callers then leave the pool alone. */
static size_t
pool_free_map(const struct pool_header *pool, unsigned char is_free[SS_MAX_BLOCKS],
              size_t *block_size)
{
    const uintptr_t base = (uintptr_t)pool;
    const size_t size = INDEX2SIZE(pool->szidx);
    if (pool->szidx >= NB_SMALL_SIZE_CLASSES || size == 0 || size > POOL_SIZE
        || pool->nextoffset > POOL_SIZE)
    {
        return 0;
    }
    memset(is_free, 0, SS_MAX_BLOCKS);
    size_t nblocks = (POOL_SIZE - POOL_OVERHEAD) / size;
    size_t steps = 0;
    for (pymem_block *b = pool->freeblock; b != NULL; b = *(pymem_block **)b) {
        uintptr_t off = (uintptr_t)b - base;
        if ((uintptr_t)b < base || off < POOL_OVERHEAD || off >= POOL_SIZE
            || (off - POOL_OVERHEAD) % size != 0 || ++steps > nblocks)
        {
            return 0;
        }
        is_free[(off - POOL_OVERHEAD) / size] = 1;
    }
    for (size_t i = 0; i < nblocks; i++) {
        if (POOL_OVERHEAD + i * size >= pool->nextoffset) {
            is_free[i] = 1;
        }
    }
    *block_size = size;
    return nblocks;
}

/* The pages of a pool still in use that hold no allocated block. */
static size_t
release_free_pages(const struct pool_header *pool)
{
    const uintptr_t base = (uintptr_t)pool;
    unsigned char is_free[SS_MAX_BLOCKS];
    size_t size;
    size_t nblocks = pool_free_map(pool, is_free, &size);
    if (nblocks == 0) {
        return 0;
    }
    size_t released = 0;
    /* The first page holds the header: keep it (it is what says the pool is in use). */
    for (size_t page = SS_PAGE; page < POOL_SIZE; page += SS_PAGE) {
        size_t first = page < POOL_OVERHEAD ? 0 : (page - POOL_OVERHEAD) / size;
        int busy = 0;
        for (size_t i = first; i < nblocks && POOL_OVERHEAD + i * size < page + SS_PAGE; i++) {
            if (!is_free[i]) {
                busy = 1;
                break;
            }
        }
        if (!busy && madvise((void *)(base + page), SS_PAGE, MADV_DONTNEED) == 0) {
            released += SS_PAGE;
        }
    }
    return released;
}

/* A sandbox that first calls an extension function with keywords (math.isclose(a, b,
 * rel_tol=0.1), zlib.compress(data, level=1), hashlib's usedforsecurity=False) leaves the
 * parser's keyword tuple in its own arena on 3.12.0-3.12.3; the arena outlives the
 * interpreter (its interned strings keep it), so the tuple stays readable, but at exit
 * _PyArg_Fini() would Py_CLEAR it with the main interpreter's allocator: "free(): invalid
 * pointer" and an abort (measured on 3.12.1, one sandbox and one such call). initialized
 * = -1 is what a parser with a statically allocated tuple has: CPython never frees it.
 * parser_init() reads `initialized` without the lock only to see it non-zero, which it
 * stays. */
size_t
ss_rt_disown_kwtuples_in(const void *addr, size_t size)
{
#if SS_KWTUPLE_MADE_BY_CALLER
    size_t changed = 0;
    PyThread_acquire_lock(_PyRuntime.getargs.mutex, WAIT_LOCK);
    for (struct _PyArg_Parser *p = _PyRuntime.getargs.static_parsers; p != NULL;
         p = p->next)
    {
        if (p->initialized != 1 || p->kwtuple == NULL) {
            continue;
        }
        if ((uintptr_t)p->kwtuple - (uintptr_t)addr < size) {
            p->initialized = -1;
            changed++;
        }
    }
    PyThread_release_lock(_PyRuntime.getargs.mutex);
    return changed;
#else
    (void)addr;
    (void)size;
    return 0;
#endif
}

size_t
ss_rt_release_empty_pools(void *arena, size_t size)
{
    uintptr_t start = ((uintptr_t)arena + POOL_SIZE_MASK) & ~(uintptr_t)POOL_SIZE_MASK;
    uintptr_t end = (uintptr_t)arena + size;
    size_t released = 0;
    for (uintptr_t p = start; p + POOL_SIZE <= end; p += POOL_SIZE) {
        const struct pool_header *pool = (const struct pool_header *)p;
        if (pool->ref.count == 0) {
            if (madvise((void *)p, POOL_SIZE, MADV_DONTNEED) == 0) {
                released += POOL_SIZE;
            }
        }
        else {
            released += release_free_pages(pool);
        }
    }
    return released;
}

/* ---- the leak census: the blocks a destroyed interpreter left allocated ------------------
 *
 * For pyinternal_census.c (the private _core._leak_census()): the same walk as above,
 * reading only. Safe for the same reason: nobody allocates from or frees these arenas
 * again once their interpreter is destroyed, and every address read is inside the pool. */
int
ss_rt_visit_allocated_blocks(void *arena, size_t size, ss_block_visit visit, void *ctx)
{
    uintptr_t start = ((uintptr_t)arena + POOL_SIZE_MASK) & ~(uintptr_t)POOL_SIZE_MASK;
    uintptr_t end = (uintptr_t)arena + size;
    unsigned char is_free[SS_MAX_BLOCKS];
    for (uintptr_t p = start; p + POOL_SIZE <= end; p += POOL_SIZE) {
        const struct pool_header *pool = (const struct pool_header *)p;
        size_t block_size;
        size_t nblocks;
        if (pool->ref.count == 0
            || (nblocks = pool_free_map(pool, is_free, &block_size)) == 0)
        {
            continue;
        }
        for (size_t i = 0; i < nblocks; i++) {
            if (!is_free[i]
                && visit(ctx, (const char *)p + POOL_OVERHEAD + i * block_size, block_size,
                         (const char *)p) < 0)
            {
                return -1;
            }
        }
    }
    return 0;
}

size_t
ss_rt_pool_size(void)
{
    return POOL_SIZE;
}

/* Whether an interpreter with this id is still in the runtime's list (HEAD_LOCK held for
 * the walk). Ids are never reused (_PyRuntime.interpreters.next_id only grows). */
int
ss_rt_interpreter_alive(int64_t id)
{
    _PyRuntimeState *rt = &_PyRuntime;
    int alive = 0;
    SS_HEAD_LOCK(rt);
    for (PyInterpreterState *i = rt->interpreters.head; i != NULL; i = i->next) {
        if (PyInterpreterState_GetID(i) == id) {
            alive = 1;
            break;
        }
    }
    SS_HEAD_UNLOCK(rt);
    return alive;
}

/* ---- asynchronous exceptions (queue.c: a channel wait interrupted) ---- */

PyObject *
ss_rt_take_async_exc(PyThreadState *ts)
{
#if SS_ASYNC_EXC_INTERP_FLAG
    PyObject *exc = ts->async_exc;
    if (exc != NULL) {
        ts->async_exc = NULL;
        /* As UNSIGNAL_ASYNC_EXC: drop the request; eval_breaker, if still set, is
         * recomputed without it at its next check. */
        ts->interp->ceval.pending.async_exc = 0;
    }
    return exc;
#else
    return (PyObject *)_Py_atomic_exchange_ptr(&ts->async_exc, NULL);
#endif
}

/* ---- the "died of Ctrl-C" exit flag (pyversion.h: SS_RUN_RESETS_CTRL_C_EXIT) ---- */

int
ss_rt_keep_ctrl_c_exit(void)
{
#if SS_RUN_RESETS_CTRL_C_EXIT
    _PyRuntime.signals.unhandled_keyboard_interrupt = 1;
    return 0;
#else
    return -1;
#endif
}

int
ss_rt_async_exc_requested(PyThreadState *ts)
{
#if SS_ASYNC_EXC_INTERP_FLAG
    if (ts->interp->ceval.pending.async_exc) {
        return 1;
    }
#endif
    return ts->async_exc != NULL;
}

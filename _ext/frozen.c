/* frozendict and immutableset: immutable containers whose objects may be read by pointer
 * from many own-GIL interpreters at once.
 *
 * Both types are *static* types (process-wide, like dict and frozenset), so an object built
 * into an arena can be used from every interpreter. frozen_guard.c gives the two type objects
 * per-interpreter type state (tp_dict, tp_subclasses, tp_weaklist) exactly like CPython's
 * static builtin types; the types have no Py_TPFLAGS_BASETYPE (no subclass can ever be added
 * to them) and are Py_TPFLAGS_IMMUTABLETYPE (no attribute can be set); their instances have
 * no __dict__ and no weakref list. See docs/type-guard.md.
 *
 * One object layout serves both types: a compact, insertion-ordered hash table with the
 * hashes stored, built once and never modified:
 *
 *     [ss_table header][index table: 2**log2size signed ints of ixwidth bytes][entries]
 *
 * An index slot holds -1 (empty) or the position of an entry. There are no deletions, so
 * a lookup is one probe sequence that stops at the first empty slot.
 *
 * Two kinds of instances:
 *   - local: made by the constructor (or by |, fromkeys, set algebra...) in one interpreter,
 *     with the ordinary GC allocator, GC-tracked (values can be anything), hash computed
 *     lazily and cached in the object (only that interpreter can see it);
 *   - shared: made by ss_frozendict_build / ss_immutableset_build inside an arena filler;
 *     immortal, untracked, hash computed at build time; `shared` is set and nothing ever
 *     writes to the object again (hash() of an unhashable shared object recomputes and
 *     raises every time instead of caching anything).
 *
 * Views (keys/values/items) and iterators are per-interpreter heap types: their objects
 * never cross interpreters, so they need no guard. frozen.c finds them in the current
 * interpreter's "frozen state" (see istate below).
 */
#include "subsandbox.h"
#include "pyversion.h"
#include "frozen.h"

#include <stdint.h>
#include <string.h>

/* ---- the table object ------------------------------------------------------------- */

typedef struct {
    Py_hash_t hash;
    PyObject *key;
    PyObject *value;            /* NULL in an immutableset */
} ss_entry;

typedef struct {
    PyObject_HEAD
    Py_ssize_t used;            /* number of entries */
    Py_hash_t hash;             /* -1: not known (yet) */
    uint8_t log2size;           /* the index table has 1 << log2size slots */
    uint8_t ixwidth;            /* bytes per index slot: 1, 2, 4 or 8 */
    uint8_t shared;             /* built in an arena: never written after the build */
    void *indices;              /* into this same allocation */
    ss_entry *entries;          /* into this same allocation */
} ss_table;

#define IX_EMPTY (-1)
#define MIN_LOG2SIZE 3

#define FD_Check(op) Py_IS_TYPE((op), &SS_FrozenDict_Type)
#define IS_Check(op) Py_IS_TYPE((op), &SS_ImmutableSet_Type)

static inline Py_ssize_t
get_ix(const ss_table *t, size_t i)
{
    switch (t->ixwidth) {
    case 1: return ((const int8_t *)t->indices)[i];
    case 2: return ((const int16_t *)t->indices)[i];
    case 4: return ((const int32_t *)t->indices)[i];
    default: return (Py_ssize_t)((const int64_t *)t->indices)[i];
    }
}

static inline void
set_ix(ss_table *t, size_t i, Py_ssize_t ix)
{
    switch (t->ixwidth) {
    case 1: ((int8_t *)t->indices)[i] = (int8_t)ix; break;
    case 2: ((int16_t *)t->indices)[i] = (int16_t)ix; break;
    case 4: ((int32_t *)t->indices)[i] = (int32_t)ix; break;
    default: ((int64_t *)t->indices)[i] = (int64_t)ix; break;
    }
}

/* Table geometry for n entries: load factor at most 2/3, like dict. */
static int
table_geometry(Py_ssize_t n, uint8_t *log2size, uint8_t *ixwidth, size_t *extra)
{
    size_t need = (size_t)n + ((size_t)n >> 1) + 1;
    uint8_t l = MIN_LOG2SIZE;
    while (((size_t)1 << l) < need) {
        if (l >= 8 * sizeof(size_t) - 8) {
            PyErr_NoMemory();
            return -1;
        }
        l++;
    }
    size_t size = (size_t)1 << l;
    uint8_t w = size <= 0x80 ? 1 : size <= 0x8000 ? 2 : size <= 0x80000000u ? 4 : 8;
    if ((size_t)n > (SIZE_MAX / 2) / sizeof(ss_entry)) {
        PyErr_NoMemory();
        return -1;
    }
    *log2size = l;
    *ixwidth = w;
    *extra = size * w + (size_t)n * sizeof(ss_entry);   /* size*w is a multiple of 8 */
    return 0;
}

static void
table_init_layout(ss_table *t, Py_ssize_t n, uint8_t log2size, uint8_t ixwidth)
{
    t->used = 0;
    t->hash = -1;
    t->log2size = log2size;
    t->ixwidth = ixwidth;
    t->indices = (char *)t + sizeof(ss_table);
    t->entries = (ss_entry *)((char *)t->indices + ((size_t)1 << log2size) * ixwidth);
    memset(t->indices, 0xff, ((size_t)1 << log2size) * ixwidth);   /* all IX_EMPTY */
    (void)n;
}

/* A new, empty, untracked local table with room for n entries. */
static ss_table *
table_new_local(PyTypeObject *type, Py_ssize_t n)
{
    uint8_t l, w;
    size_t extra;
    if (table_geometry(n, &l, &w, &extra) < 0) {
        return NULL;
    }
    ss_table *t = (ss_table *)PyUnstable_Object_GC_NewWithExtraData(type, extra);
    if (t == NULL) {
        return NULL;
    }
    table_init_layout(t, n, l, w);
    return t;
}

static inline Py_hash_t
key_hash(PyObject *key)
{
    if (PyUnicode_CheckExact(key)) {
        Py_hash_t h = SS_FROZEN_STR_CACHED_HASH(key);
        if (h != -1) {
            return h;
        }
    }
    return PyObject_Hash(key);
}

/* After a failed hash of `item`, with its exception set: "cannot use '<type>' as
 * <what> (<the hash's error>)" when the exception is exactly a TypeError, as CPython
 * words it (Objects/dictobject.c dict_unhashable_type, Objects/setobject.c
 * set_unhashable_type); any other exception stays as it is. */
static void
reword_unhashable(PyObject *item, const char *what)
{
    PyObject *exc = PyErr_GetRaisedException();
    if (!Py_IS_TYPE(exc, (PyTypeObject *)PyExc_TypeError)) {
        PyErr_SetRaisedException(exc);
        return;
    }
    PyObject *name = ss_type_fully_qualified_name(Py_TYPE(item));
    if (name != NULL) {
        PyErr_Format(PyExc_TypeError, "cannot use '%U' as %s (%S)", name, what, exc);
        Py_DECREF(name);
    }
    Py_DECREF(exc);
}

/* CPython 3.15's message for an unhashable frozendict key ("cannot use 'list' as a
 * frozendict key (unhashable type: 'list')"), on every version. */
static void
fd_unhashable_key(PyObject *key)
{
    reword_unhashable(key, "a frozendict key");
}

/* key_hash() for a key looked up in a frozendict: 3.15's message when it is unhashable. */
static inline Py_hash_t
fd_key_hash(PyObject *key)
{
    Py_hash_t h = key_hash(key);
    if (h == -1) {
        fd_unhashable_key(key);
    }
    return h;
}

/* An unhashable set element, worded as the running CPython's frozenset words it
 * (SS_SET_REWORDS_UNHASHABLE: 3.14+). */
static void
is_unhashable_item(PyObject *item)
{
#if SS_SET_REWORDS_UNHASHABLE
    reword_unhashable(item, "a set element");
#else
    (void)item;
#endif
}

/* key_hash() for an item looked up in or added to an immutableset where frozenset's
 * code words an unhashable item as a set element: its constructor, `in`, isdisjoint()
 * and issuperset() (issubset() and intersection() do not, in frozenset either). */
static inline Py_hash_t
is_item_hash(PyObject *item)
{
    Py_hash_t h = key_hash(item);
    if (h == -1) {
        is_unhashable_item(item);
    }
    return h;
}

/* Put entry `ix`, whose key is not indexed yet, into the index under `hash`. */
static void
table_index(ss_table *t, Py_ssize_t ix, Py_hash_t hash)
{
    size_t mask = ((size_t)1 << t->log2size) - 1;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    while (get_ix(t, i) != IX_EMPTY) {
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
    set_ix(t, i, ix);
}

/* Append an entry whose key is not in the table yet (steals nothing: increfs). */
static void
table_append(ss_table *t, PyObject *key, PyObject *value, Py_hash_t hash)
{
    Py_ssize_t ix = t->used;
    ss_entry *e = &t->entries[ix];
    e->hash = hash;
    e->key = Py_NewRef(key);
    e->value = Py_XNewRef(value);
    table_index(t, ix, hash);
    t->used = ix + 1;
}

/* Hash and index the entries of a local table that were stored without either
 * (table_from_private_dict, immutableset_from_private_set). The keys' __hash__ may run
 * any code, so the table already holds a reference to every key and value: nothing that
 * code does to the container they came from can free one under us or add one twice.
 * -1 with an exception if a key turned unhashable; the table is still consistent. */
static int
table_index_all(ss_table *t)
{
    for (Py_ssize_t ix = 0; ix < t->used; ix++) {
        Py_hash_t h = key_hash(t->entries[ix].key);
        if (h == -1) {
            return -1;
        }
        t->entries[ix].hash = h;
        table_index(t, ix, h);
    }
    return 0;
}

static inline int
str_eq(PyObject *a, PyObject *b)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(a);
    if (len != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b)) {
        return 0;
    }
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * PyUnicode_KIND(a)) == 0;
}

/* The entry position of `key`, -1 when absent, -2 with an exception set. One probe
 * sequence; the table never changes, so a comparison that runs Python code cannot
 * invalidate it. */
static Py_ssize_t
table_lookup(ss_table *t, PyObject *key, Py_hash_t hash)
{
    size_t mask = ((size_t)1 << t->log2size) - 1;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    ss_entry *ep0 = t->entries;
    int key_is_str = PyUnicode_CheckExact(key);
    for (;;) {
        Py_ssize_t ix = get_ix(t, i);
        if (ix == IX_EMPTY) {
            return -1;
        }
        ss_entry *ep = &ep0[ix];
        if (ep->key == key) {
            return ix;
        }
        if (ep->hash == hash) {
            PyObject *startkey = ep->key;
            if (key_is_str && PyUnicode_CheckExact(startkey)) {
                if (str_eq(startkey, key)) {
                    return ix;
                }
            }
            else {
                Py_INCREF(startkey);
                int cmp = PyObject_RichCompareBool(startkey, key, Py_EQ);
                Py_DECREF(startkey);
                if (cmp < 0) {
                    return -2;
                }
                if (cmp > 0) {
                    return ix;
                }
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & mask;
    }
}

/* ---- hashes: the same values as hash(frozenset(...)) ------------------------------ */
/* Verified against Objects/setobject.c (frozenset_hash_impl, _shuffle_bits) and
 * Objects/tupleobject.c (tuplehash) of 3.13.5; unchanged since 3.8. The tests compare
 * with the running interpreter's frozenset and tuple hashes. */

static inline Py_uhash_t
shuffle_bits(Py_uhash_t h)
{
    return ((h ^ 89869747UL) ^ (h << 16)) * 3644798167UL;
}

static Py_hash_t
frozenset_hash_finish(Py_uhash_t hash, Py_ssize_t n)
{
    hash ^= ((Py_uhash_t)n + 1) * 1927868237UL;
    hash ^= (hash >> 11) ^ (hash >> 25);
    hash = hash * 69069U + 907133923UL;
    if (hash == (Py_uhash_t)-1) {
        hash = 590923713UL;
    }
    return (Py_hash_t)hash;
}

#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

/* tuplehash(): one item's hash into the accumulator (which starts at XXPRIME_5), and the
 * final mixing with the length. */
static inline Py_uhash_t
tuple_hash_step(Py_uhash_t acc, Py_uhash_t lane)
{
    acc += lane * XXPRIME_2;
    acc = XXROTATE(acc);
    return acc * XXPRIME_1;
}

static inline Py_uhash_t
tuple_hash_finish(Py_uhash_t acc, Py_ssize_t len)
{
    acc += (Py_uhash_t)len ^ (XXPRIME_5 ^ 3527539UL);   /* keeps hash(()) as it was */
    return acc == (Py_uhash_t)-1 ? 1546275796 : acc;
}

/* hash((key, value)) given both hashes. */
static Py_uhash_t
pair_hash(Py_uhash_t kh, Py_uhash_t vh)
{
    return tuple_hash_finish(tuple_hash_step(tuple_hash_step(XXPRIME_5, kh), vh), 2);
}

/* ---- hash() of a value of a shared graph, without C recursion ------------------------
 * A shared frozendict's hash is computed when it is built, so the hashes of its values
 * are needed even if no one ever asks for one. (Keys and set items need nothing of the
 * kind: they were hashed by the dict or set they came from, on this same thread.) Where tuples cache no hash (3.12, 3.13),
 * PyObject_Hash() of a tuple recurses through CPython's tuplehash() once per level of
 * nesting, and a value nested 100,000 tuples deep (which share() accepts: its walk is
 * iterative) would overflow the C stack. So tuples holding tuples are hashed here, on a
 * heap stack, with tuplehash()'s own formula (Objects/tupleobject.c, 3.8-3.15); each such
 * tuple is hashed once per call (a memo), since a graph that reuses a tuple at every
 * level would otherwise cost 2^depth. Everything else in a shared graph hashes in O(1)
 * (str, bytes, frozendict and immutableset: hash cached when built; 3.14+ tuples: cache
 * filled before publication) or without recursing (int, float, complex). */

#if !SS_TUPLE_CACHES_HASH
static int
tuple_has_tuple_item(PyObject *t)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        if (PyTuple_CheckExact(PyTuple_GET_ITEM(t, i))) {
            return 1;
        }
    }
    return 0;
}

typedef struct {
    PyObject *t;
    Py_ssize_t next;            /* the item to hash next */
    Py_uhash_t acc;
} deep_frame;

typedef struct {
    PyObject *t;                /* NULL: empty slot */
    Py_hash_t hash;
} deep_memo_slot;

typedef struct {
    deep_frame *stack;
    Py_ssize_t depth, cap;
    deep_memo_slot *memo;
    size_t memo_mask, memo_used;
} deep_hasher;

static inline size_t
deep_memo_index(const deep_hasher *h, PyObject *t)
{
    uintptr_t p = (uintptr_t)t;
    return (size_t)((p >> 4) ^ (p >> 17)) & h->memo_mask;
}

static Py_hash_t
deep_memo_get(const deep_hasher *h, PyObject *t)
{
    for (size_t i = deep_memo_index(h, t); h->memo[i].t != NULL; i = (i + 1) & h->memo_mask) {
        if (h->memo[i].t == t) {
            return h->memo[i].hash;
        }
    }
    return -1;
}

static int
deep_memo_put(deep_hasher *h, PyObject *t, Py_hash_t hash)
{
    if (2 * (h->memo_used + 1) > h->memo_mask + 1) {
        size_t cap = 2 * (h->memo_mask + 1);
        deep_memo_slot *old = h->memo, *table = PyMem_RawCalloc(cap, sizeof(*table));
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        size_t old_cap = h->memo_mask + 1;
        h->memo = table;
        h->memo_mask = cap - 1;
        for (size_t j = 0; j < old_cap; j++) {
            if (old[j].t != NULL) {
                size_t i = deep_memo_index(h, old[j].t);
                while (table[i].t != NULL) {
                    i = (i + 1) & h->memo_mask;
                }
                table[i] = old[j];
            }
        }
        PyMem_RawFree(old);
    }
    size_t i = deep_memo_index(h, t);
    while (h->memo[i].t != NULL) {
        i = (i + 1) & h->memo_mask;
    }
    h->memo[i].t = t;
    h->memo[i].hash = hash;
    h->memo_used++;
    return 0;
}

static int
deep_push(deep_hasher *h, PyObject *t)
{
    if (h->depth == h->cap) {
        Py_ssize_t cap = 2 * h->cap;
        deep_frame *stack = PyMem_RawRealloc(h->stack, (size_t)cap * sizeof(*stack));
        if (stack == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->stack = stack;
        h->cap = cap;
    }
    h->stack[h->depth++] = (deep_frame){.t = t, .next = 0, .acc = XXPRIME_5};
    return 0;
}

/* hash(root), root an exact tuple with a tuple item. -1 with an exception. */
static Py_hash_t
deep_tuple_hash(PyObject *root)
{
    deep_hasher h = {.cap = 64, .memo_mask = 63};
    h.stack = PyMem_RawMalloc((size_t)h.cap * sizeof(*h.stack));
    h.memo = PyMem_RawCalloc(h.memo_mask + 1, sizeof(*h.memo));
    Py_hash_t result = -1;
    if (h.stack == NULL || h.memo == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (deep_push(&h, root) < 0) {
        goto done;
    }
    for (;;) {
        deep_frame *f = &h.stack[h.depth - 1];
        Py_ssize_t len = PyTuple_GET_SIZE(f->t);
        if (f->next == len) {
            Py_hash_t th = (Py_hash_t)tuple_hash_finish(f->acc, len);
            PyObject *t = f->t;
            h.depth--;
            if (h.depth == 0) {
                result = th;
                break;
            }
            if (deep_memo_put(&h, t, th) < 0) {
                goto done;
            }
            f = &h.stack[h.depth - 1];
            f->acc = tuple_hash_step(f->acc, (Py_uhash_t)th);
            f->next++;
            continue;
        }
        PyObject *item = PyTuple_GET_ITEM(f->t, f->next);
        Py_hash_t lane;
        if (PyTuple_CheckExact(item) && tuple_has_tuple_item(item)) {
            lane = deep_memo_get(&h, item);
            if (lane == -1) {
                if (deep_push(&h, item) < 0) {
                    goto done;
                }
                continue;
            }
        }
        else {
            lane = PyObject_Hash(item);     /* no tuple inside: one level at most */
            if (lane == -1) {
                goto done;
            }
        }
        f->acc = tuple_hash_step(f->acc, (Py_uhash_t)lane);
        f->next++;
    }
done:
    PyMem_RawFree(h.stack);
    PyMem_RawFree(h.memo);
    return result;
}
#endif

/* hash(o) for an object of a shared graph (see above). -1 with an exception. */
static Py_hash_t
shared_value_hash(PyObject *o)
{
#if !SS_TUPLE_CACHES_HASH
    if (PyTuple_CheckExact(o) && tuple_has_tuple_item(o)) {
        return deep_tuple_hash(o);
    }
#endif
    return PyObject_Hash(o);
}

/* hash(frozenset(self.items())) for a frozendict (PEP 814), hash(frozenset(self)) for an
 * immutableset. -1 with an exception if a value is unhashable. Caches nothing. */
static Py_hash_t
table_compute_hash(ss_table *t)
{
    Py_uhash_t acc = 0;
    int is_dict = FD_Check(t);
    for (Py_ssize_t i = 0; i < t->used; i++) {
        ss_entry *e = &t->entries[i];
        if (is_dict) {
            Py_hash_t vh = t->shared ? shared_value_hash(e->value) : PyObject_Hash(e->value);
            if (vh == -1) {
                return -1;
            }
            acc ^= shuffle_bits(pair_hash((Py_uhash_t)e->hash, (Py_uhash_t)vh));
        }
        else {
            acc ^= shuffle_bits((Py_uhash_t)e->hash);
        }
    }
    return frozenset_hash_finish(acc, t->used);
}

static Py_hash_t
table_hash(PyObject *op)
{
    ss_table *t = (ss_table *)op;
    if (t->hash != -1) {
        return t->hash;
    }
    if (t->shared) {
        return table_compute_hash(t);   /* unhashable: recomputed, never cached */
    }
    /* A local table can nest tables and tuples to any depth: RecursionError, not a
     * crash of the C stack. */
    if (Py_EnterRecursiveCall(" while hashing a frozendict or immutableset")) {
        return -1;
    }
    Py_hash_t h = table_compute_hash(t);
    Py_LeaveRecursiveCall();
    if (h != -1) {
        t->hash = h;        /* local object: only this interpreter can see it */
    }
    return h;
}

/* ---- common slots ------------------------------------------------------------------ */

static void
table_dealloc(PyObject *op)
{
    ss_table *t = (ss_table *)op;
    if (t->shared) {
        /* Immortal: never reached. Never free arena memory with this allocator. */
        return;
    }
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, table_dealloc)
    for (Py_ssize_t i = 0; i < t->used; i++) {
        Py_DECREF(t->entries[i].key);
        Py_XDECREF(t->entries[i].value);
    }
    Py_TYPE(op)->tp_free(op);
    Py_TRASHCAN_END
}

static int
table_traverse(PyObject *op, visitproc visit, void *arg)
{
    ss_table *t = (ss_table *)op;
    for (Py_ssize_t i = 0; i < t->used; i++) {
        Py_VISIT(t->entries[i].key);
        Py_VISIT(t->entries[i].value);
    }
    return 0;
}

static Py_ssize_t
table_length(PyObject *op)
{
    return ((ss_table *)op)->used;
}

static PyObject *
table_sizeof(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ss_table *t = (ss_table *)op;
    size_t size = sizeof(ss_table) + ((size_t)1 << t->log2size) * t->ixwidth
                  + (size_t)t->used * sizeof(ss_entry);
    return PyLong_FromSize_t(size);
}

static PyObject *
table_copy(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(op);       /* immutable: a copy is the object itself */
}

/* Finish a local table: GC-track it. */
static PyObject *
table_finish_local(ss_table *t)
{
    PyObject_GC_Track((PyObject *)t);
    return (PyObject *)t;
}

/* A local table of `type` from the items of a private exact dict (insertion order).
 * For an immutableset the dict's values are ignored. */
static PyObject *
table_from_private_dict(PyTypeObject *type, PyObject *dict)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    ss_table *t = table_new_local(type, n);
    if (t == NULL) {
        return NULL;
    }
    int is_set = (type == &SS_ImmutableSet_Type);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    /* First every item, with references: PyDict_Next runs no Python code. Only then the
     * hashes, whose code could reach the dict (gc.get_referrers) and change it. */
    while (t->used < n && PyDict_Next(dict, &pos, &k, &v)) {
        ss_entry *e = &t->entries[t->used++];
        e->hash = -1;
        e->key = Py_NewRef(k);
        e->value = is_set ? NULL : Py_NewRef(v);
    }
    if (table_index_all(t) < 0) {
        Py_DECREF(t);           /* untracked; it owns the references it holds */
        return NULL;
    }
    return table_finish_local(t);
}

/* An immutableset from a private builtin set/frozenset (items unique). */
static PyObject *
immutableset_from_private_set(PyObject *set)
{
    Py_ssize_t n = PySet_GET_SIZE(set);
    ss_table *t = table_new_local(&SS_ImmutableSet_Type, n);
    if (t == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(set);
    if (it == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    PyObject *item;
    /* Items first, hashes after (as in table_from_private_dict): a set iterator runs no
     * Python code, a key's __hash__ may. */
    while (t->used < n && (item = PyIter_Next(it)) != NULL) {
        ss_entry *e = &t->entries[t->used++];
        e->hash = -1;
        e->key = item;          /* PyIter_Next's reference */
        e->value = NULL;
    }
    Py_DECREF(it);
    if (PyErr_Occurred() || table_index_all(t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return table_finish_local(t);
}

/* A new plain dict with the items of a frozendict. */
static PyObject *
fd_to_dict(ss_table *t)
{
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < t->used; i++) {
        if (PyDict_SetItem(d, t->entries[i].key, t->entries[i].value) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* A new list of the keys of a table. */
static PyObject *
table_keys_list(ss_table *t)
{
    PyObject *list = PyList_New(t->used);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < t->used; i++) {
        PyList_SET_ITEM(list, i, Py_NewRef(t->entries[i].key));
    }
    return list;
}

/* ---- per-interpreter state: the view and iterator heap types ------------------------ */

typedef struct {
    int64_t interp_id;
    PyTypeObject *keys_type;
    PyTypeObject *values_type;
    PyTypeObject *items_type;
    PyTypeObject *iter_type;
} ss_frozen_istate;

#define ISTATE_KEY "subsandbox._core.frozen_istate"

/* One-entry cache per thread. The interpreter id is checked as well as the pointer, since
 * a new interpreter can reuse the address of a destroyed one; the state lives until the
 * interpreter dict is cleared, after which the interpreter runs no more code. */
static _Thread_local PyInterpreterState *tls_interp;
static _Thread_local int64_t tls_interp_id = -1;
static _Thread_local ss_frozen_istate *tls_istate;

static ss_frozen_istate *
istate_lookup_slow(PyInterpreterState *interp)
{
    PyObject *idict = PyInterpreterState_GetDict(interp);
    if (idict == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "no per-interpreter dict");
        }
        return NULL;
    }
    PyObject *cap = PyDict_GetItemString(idict, ISTATE_KEY);   /* borrowed */
    if (cap == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "subsandbox._core is not imported in this interpreter");
        return NULL;
    }
    return (ss_frozen_istate *)PyCapsule_GetPointer(cap, ISTATE_KEY);
}

static inline ss_frozen_istate *
istate_get(void)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    int64_t id = PyInterpreterState_GetID(interp);
    if (tls_interp == interp && tls_interp_id == id && tls_istate != NULL) {
        return tls_istate;
    }
    ss_frozen_istate *st = istate_lookup_slow(interp);
    if (st != NULL) {
        tls_interp = interp;
        tls_interp_id = id;
        tls_istate = st;
    }
    return st;
}

/* ---- iterators ---------------------------------------------------------------------- */

enum { KIND_KEYS = 0, KIND_VALUES = 1, KIND_ITEMS = 2 };

typedef struct {
    PyObject_HEAD
    ss_table *t;                /* NULL when exhausted */
    Py_ssize_t pos;             /* next entry (forward) or current entry (reverse) */
    int kind;
    int reverse;
} ss_iter;

static PyObject *
iter_new(ss_table *t, int kind, int reverse)
{
    ss_frozen_istate *st = istate_get();
    if (st == NULL) {
        return NULL;
    }
    ss_iter *it = PyObject_GC_New(ss_iter, st->iter_type);
    if (it == NULL) {
        return NULL;
    }
    it->t = (ss_table *)Py_NewRef(t);
    it->kind = kind;
    it->reverse = reverse;
    it->pos = reverse ? t->used - 1 : 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static void
iter_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_XDECREF(((ss_iter *)op)->t);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int
iter_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ss_iter *)op)->t);
    return 0;
}

/* What an iterator of `kind` yields for entry `e`: a new reference. */
static PyObject *
iter_item(int kind, ss_entry *e)
{
    switch (kind) {
    case KIND_KEYS:
        return Py_NewRef(e->key);
    case KIND_VALUES:
        return Py_NewRef(e->value);
    default:
        return PyTuple_Pack(2, e->key, e->value);
    }
}

static PyObject *
iter_next(PyObject *op)
{
    ss_iter *it = (ss_iter *)op;
    ss_table *t = it->t;
    if (t == NULL) {
        return NULL;
    }
    if (it->pos < 0 || it->pos >= t->used) {
        it->t = NULL;
        Py_DECREF(t);
        return NULL;
    }
    ss_entry *e = &t->entries[it->pos];
    it->pos += it->reverse ? -1 : 1;
    return iter_item(it->kind, e);
}

/* The number of items still to come. */
static Py_ssize_t
iter_remaining(ss_iter *it)
{
    Py_ssize_t n = 0;
    if (it->t != NULL) {
        n = it->reverse ? it->pos + 1 : it->t->used - it->pos;
        if (n < 0) {
            n = 0;
        }
    }
    return n;
}

static PyObject *
iter_length_hint(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(iter_remaining((ss_iter *)op));
}

/* Like dict iterators: (iter, (a list of the items still to come,)); this iterator does
 * not move. */
static PyObject *
iter_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ss_iter *it = (ss_iter *)op;
    Py_ssize_t n = iter_remaining(it);
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t pos = it->reverse ? it->pos - i : it->pos + i;
        PyObject *item = iter_item(it->kind, &it->t->entries[pos]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    PyObject *builtins = PyImport_ImportModule("builtins");
    if (builtins == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    PyObject *iter = PyObject_GetAttrString(builtins, "iter");
    Py_DECREF(builtins);
    if (iter == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    return Py_BuildValue("N(N)", iter, list);
}

static PyMethodDef iter_methods[] = {
    {"__length_hint__", iter_length_hint, METH_NOARGS,
     "__length_hint__($self, /)\n--\n\nPrivate method returning an estimate of len(list(it))."},
    {"__reduce__", iter_reduce, METH_NOARGS,
     "__reduce__($self, /)\n--\n\nReturn state information for pickling."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot iter_slots[] = {
    {Py_tp_dealloc, iter_dealloc},
    {Py_tp_traverse, iter_traverse},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, iter_next},
    {Py_tp_methods, iter_methods},
    {0, NULL},
};

static PyType_Spec iter_spec = {
    .name = "subsandbox._core.frozen_iterator",
    .basicsize = sizeof(ss_iter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = iter_slots,
};

/* ---- views ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ss_table *fd;
} ss_view;

static PyObject *
view_new(PyObject *fd, int kind)
{
    ss_frozen_istate *st = istate_get();
    if (st == NULL) {
        return NULL;
    }
    PyTypeObject *tp = kind == KIND_KEYS ? st->keys_type
                       : kind == KIND_VALUES ? st->values_type : st->items_type;
    ss_view *v = PyObject_GC_New(ss_view, tp);
    if (v == NULL) {
        return NULL;
    }
    v->fd = (ss_table *)Py_NewRef(fd);
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

/* The kind of a view, from its type's slots: views of this interpreter and of the thread's
 * last-used interpreter are told apart without the per-thread cache. */
static PyObject *keys_iter(PyObject *op);
static PyObject *values_iter(PyObject *op);

static int
view_kind(PyObject *op)
{
    getiterfunc f = Py_TYPE(op)->tp_iter;
    return f == keys_iter ? KIND_KEYS : f == values_iter ? KIND_VALUES : KIND_ITEMS;
}

static void
view_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_XDECREF(((ss_view *)op)->fd);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int
view_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ss_view *)op)->fd);
    return 0;
}

static Py_ssize_t
view_len(PyObject *op)
{
    return ((ss_view *)op)->fd->used;
}

static PyObject *keys_iter(PyObject *op) { return iter_new(((ss_view *)op)->fd, KIND_KEYS, 0); }
static PyObject *values_iter(PyObject *op) { return iter_new(((ss_view *)op)->fd, KIND_VALUES, 0); }
static PyObject *items_iter(PyObject *op) { return iter_new(((ss_view *)op)->fd, KIND_ITEMS, 0); }

static PyObject *
keys_reversed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return iter_new(((ss_view *)op)->fd, KIND_KEYS, 1);
}

static PyObject *
values_reversed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return iter_new(((ss_view *)op)->fd, KIND_VALUES, 1);
}

static PyObject *
items_reversed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return iter_new(((ss_view *)op)->fd, KIND_ITEMS, 1);
}

static int
keys_contains(PyObject *op, PyObject *key)
{
    ss_table *t = ((ss_view *)op)->fd;
    Py_hash_t h = fd_key_hash(key);
    if (h == -1) {
        return -1;
    }
    Py_ssize_t ix = table_lookup(t, key, h);
    return ix == -2 ? -1 : ix >= 0;
}

static int
items_contains(PyObject *op, PyObject *item)
{
    ss_table *t = ((ss_view *)op)->fd;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        return 0;
    }
    PyObject *key = PyTuple_GET_ITEM(item, 0);
    Py_hash_t h = fd_key_hash(key);
    if (h == -1) {
        return -1;
    }
    Py_ssize_t ix = table_lookup(t, key, h);
    if (ix < 0) {
        return ix == -2 ? -1 : 0;
    }
    PyObject *found = Py_NewRef(t->entries[ix].value);
    int r = PyObject_RichCompareBool(found, PyTuple_GET_ITEM(item, 1), Py_EQ);
    Py_DECREF(found);
    return r;
}

static PyObject *
view_repr(PyObject *op)
{
    int r = Py_ReprEnter(op);
    if (r != 0) {
        return r > 0 ? PyUnicode_FromString("...") : NULL;
    }
    PyObject *list = PySequence_List(op);
    PyObject *res = NULL;
    if (list != NULL) {
        const char *name = view_kind(op) == KIND_KEYS ? "frozendict_keys"
                           : view_kind(op) == KIND_VALUES ? "frozendict_values"
                           : "frozendict_items";
        res = PyUnicode_FromFormat("%s(%R)", name, list);
        Py_DECREF(list);
    }
    Py_ReprLeave(op);
    return res;
}

/* Is `other` something a keys/items view compares with as a set? */
static int
view_setlike(PyObject *other)
{
    if (PyAnySet_Check(other) || IS_Check(other)
        || PyObject_TypeCheck(other, &PyDictKeys_Type)
        || PyObject_TypeCheck(other, &PyDictItems_Type))
    {
        return 1;
    }
    /* one of our keys/items views (of this interpreter: objects never cross) */
    return Py_TYPE(other)->tp_dealloc == view_dealloc && view_kind(other) != KIND_VALUES;
}

/* 1 if `is_in(item, b)` holds for every item of the iterator `it` (stolen), 0 at the
 * first that does not, -1 on error. */
static int
all_items_in(PyObject *it, PyObject *b, int (*is_in)(PyObject *item, PyObject *b))
{
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    int ok = 1;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = is_in(item, b);
        Py_DECREF(item);
        if (r <= 0) {
            ok = r;
            break;
        }
    }
    Py_DECREF(it);
    if (ok >= 0 && PyErr_Occurred()) {
        return -1;
    }
    return ok;
}

static int
contained_in(PyObject *item, PyObject *b)
{
    return PySequence_Contains(b, item);
}

/* 1 if every item of `a` is in `b`, 0 if not, -1 on error. */
static int
all_contained_in(PyObject *a, PyObject *b)
{
    return all_items_in(PyObject_GetIter(a), b, contained_in);
}

/* Is `key`, of hash `hash`, an item of `set`: an immutableset, or a set or frozenset (of
 * any subclass) read at the C level as frozenset reads one (set_contains_entry), without
 * calling a __contains__? 1, 0, or -1 with an exception. */
static int
set_has_item(PyObject *set, PyObject *key, Py_hash_t hash)
{
    if (IS_Check(set)) {
        Py_ssize_t ix = table_lookup((ss_table *)set, key, hash);
        return ix == -2 ? -1 : ix >= 0;
    }
    return PySet_Contains(set, key);
}

static int
hashed_item_in(PyObject *key, PyObject *set)
{
    Py_hash_t h = key_hash(key);
    return h == -1 ? -1 : set_has_item(set, key, h);
}

/* all_contained_in() for two immutablesets, sets or frozensets, as frozenset's
 * set_issubset reads them: a set subclass's __iter__ and __contains__ are not called. */
static int
set_all_in(PyObject *a, PyObject *b)
{
    if (IS_Check(a)) {
        ss_table *t = (ss_table *)a;
        for (Py_ssize_t i = 0; i < t->used; i++) {
            int r = set_has_item(b, t->entries[i].key, t->entries[i].hash);
            if (r <= 0) {
                return r;
            }
        }
        return 1;
    }
    /* set's own iterator (frozenset's as well) */
    return all_items_in(PySet_Type.tp_iter(a), b, hashed_item_in);
}

/* The set comparisons of `self` (length n1) with `other` (length n2); all_in(a, b) tells
 * whether every item of a is in b. */
static PyObject *
setlike_compare(PyObject *self, Py_ssize_t n1, PyObject *other, Py_ssize_t n2, int op,
                int (*all_in)(PyObject *, PyObject *))
{
    int r;
    switch (op) {
    case Py_EQ:
    case Py_NE:
        r = n1 == n2 ? all_in(self, other) : 0;
        break;
    case Py_LE:
        r = n1 <= n2 ? all_in(self, other) : 0;
        break;
    case Py_LT:
        r = n1 < n2 ? all_in(self, other) : 0;
        break;
    case Py_GE:
        r = n1 >= n2 ? all_in(other, self) : 0;
        break;
    case Py_GT:
        r = n1 > n2 ? all_in(other, self) : 0;
        break;
    default:
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (r < 0) {
        return NULL;
    }
    if (op == Py_NE) {
        r = !r;
    }
    return PyBool_FromLong(r);
}

static PyObject *
view_richcompare(PyObject *self, PyObject *other, int op)
{
    if (!view_setlike(other)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t n2 = PyObject_Size(other);
    if (n2 < 0) {
        return NULL;
    }
    return setlike_compare(self, ((ss_view *)self)->fd->used, other, n2, op, all_contained_in);
}

/* Like dict views: set(left) updated by `method`(right); a builtin set. */
static PyObject *
view_setop(PyObject *left, PyObject *right, const char *method)
{
    PyObject *res = PySet_New(left);
    if (res == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(res, method, "(O)", right);
    if (r == NULL) {
        Py_DECREF(res);
        return NULL;
    }
    Py_DECREF(r);
    return res;
}

static PyObject *view_and(PyObject *a, PyObject *b) { return view_setop(a, b, "intersection_update"); }
static PyObject *view_or(PyObject *a, PyObject *b) { return view_setop(a, b, "update"); }
static PyObject *view_sub(PyObject *a, PyObject *b) { return view_setop(a, b, "difference_update"); }
static PyObject *view_xor(PyObject *a, PyObject *b) { return view_setop(a, b, "symmetric_difference_update"); }

static PyObject *
view_isdisjoint(PyObject *self, PyObject *other)
{
    PyObject *it = PyObject_GetIter(other);
    if (it == NULL) {
        return NULL;
    }
    PyObject *item;
    int disjoint = 1;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = PySequence_Contains(self, item);
        Py_DECREF(item);
        if (r != 0) {
            disjoint = r < 0 ? -1 : 0;
            break;
        }
    }
    Py_DECREF(it);
    if (disjoint < 0 || PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(disjoint);
}

static PyObject *
view_mapping(PyObject *self, void *Py_UNUSED(closure))
{
    /* Like dict views (3.15's frozendict's included): a read-only proxy of the mapping. */
    return PyDictProxy_New((PyObject *)((ss_view *)self)->fd);
}

/* Views cannot be copied or pickled, as dict views cannot: the same TypeError at every
 * protocol (copyreg's protocols 0 and 1 would otherwise fail to find the heap type by name
 * in the module, with a PicklingError). */
static PyObject *
view_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyErr_Format(PyExc_TypeError, "cannot pickle '%.200s' object", Py_TYPE(self)->tp_name);
    return NULL;
}

static PyGetSetDef view_getset[] = {
    {"mapping", view_mapping, NULL, "frozendict that this view refers to", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef keys_methods[] = {
    {"isdisjoint", view_isdisjoint, METH_O, "isdisjoint($self, object, /)\n--\n\n"
     "Return True if the view and the given iterable have a null intersection."},
    {"__reversed__", keys_reversed, METH_NOARGS, "__reversed__($self, /)\n--\n\n"},
    {"__reduce__", view_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef items_methods[] = {
    {"isdisjoint", view_isdisjoint, METH_O, "isdisjoint($self, object, /)\n--\n\n"
     "Return True if the view and the given iterable have a null intersection."},
    {"__reversed__", items_reversed, METH_NOARGS, "__reversed__($self, /)\n--\n\n"},
    {"__reduce__", view_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef values_methods[] = {
    {"__reversed__", values_reversed, METH_NOARGS, "__reversed__($self, /)\n--\n\n"},
    {"__reduce__", view_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

#define VIEW_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE \
                    | Py_TPFLAGS_DISALLOW_INSTANTIATION)

static PyType_Slot keys_slots[] = {
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_traverse, view_traverse},
    {Py_tp_iter, keys_iter},
    {Py_tp_repr, view_repr},
    {Py_tp_richcompare, view_richcompare},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_sq_length, view_len},
    {Py_sq_contains, keys_contains},
    {Py_nb_and, view_and},
    {Py_nb_or, view_or},
    {Py_nb_subtract, view_sub},
    {Py_nb_xor, view_xor},
    {Py_tp_methods, keys_methods},
    {Py_tp_getset, view_getset},
    {0, NULL},
};

static PyType_Slot items_slots[] = {
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_traverse, view_traverse},
    {Py_tp_iter, items_iter},
    {Py_tp_repr, view_repr},
    {Py_tp_richcompare, view_richcompare},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_sq_length, view_len},
    {Py_sq_contains, items_contains},
    {Py_nb_and, view_and},
    {Py_nb_or, view_or},
    {Py_nb_subtract, view_sub},
    {Py_nb_xor, view_xor},
    {Py_tp_methods, items_methods},
    {Py_tp_getset, view_getset},
    {0, NULL},
};

static PyType_Slot values_slots[] = {
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_traverse, view_traverse},
    {Py_tp_iter, values_iter},
    {Py_tp_repr, view_repr},
    {Py_sq_length, view_len},
    {Py_tp_methods, values_methods},
    {Py_tp_getset, view_getset},
    {0, NULL},
};

static PyType_Spec keys_spec = {
    "subsandbox._core.frozendict_keys", sizeof(ss_view), 0, VIEW_FLAGS, keys_slots,
};
static PyType_Spec values_spec = {
    "subsandbox._core.frozendict_values", sizeof(ss_view), 0, VIEW_FLAGS, values_slots,
};
static PyType_Spec items_spec = {
    "subsandbox._core.frozendict_items", sizeof(ss_view), 0, VIEW_FLAGS, items_slots,
};

/* ---- frozendict ----------------------------------------------------------------------- */

/* d[key] = value into a constructor's private dict, with 3.15's message for a key that
 * cannot be hashed. The dict hashes the key itself; only after a TypeError is it hashed
 * again, to tell a failed hash (the message is then about the key) from a TypeError of
 * an __eq__ (left as it is). */
static int
private_setitem(PyObject *d, PyObject *key, PyObject *value)
{
    if (PyDict_SetItem(d, key, value) == 0) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
        return -1;
    }
    PyObject *exc = PyErr_GetRaisedException();
    if (PyObject_Hash(key) != -1) {
        PyErr_SetRaisedException(exc);
        return -1;
    }
    Py_DECREF(exc);
    fd_unhashable_key(key);
    return -1;
}

/* The items of a mapping that is not a dict, as dict.update(mapping) takes them
 * (PyDict_Merge's generic path): for key in list(mapping.keys()): d[key] = mapping[key]. */
static int
merge_mapping(PyObject *d, PyObject *mapping)
{
    PyObject *keys = PyMapping_Keys(mapping);
    if (keys == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = Py_NewRef(PyList_GET_ITEM(keys, i));
        PyObject *value = PyObject_GetItem(mapping, key);
        rc = value == NULL ? -1 : private_setitem(d, key, value);
        Py_XDECREF(value);
        Py_DECREF(key);
    }
    Py_DECREF(keys);
    return rc;
}

/* The (key, value) pairs of an iterable, as CPython 3.15's frozendict takes them
 * (Objects/dictobject.c PyDict_MergeFromSeq2, whose messages these are). */
static int
merge_pairs(PyObject *d, PyObject *pairs)
{
    PyObject *it = PyObject_GetIter(pairs);
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    Py_ssize_t i = 0;
    int rc = 0;
    while (rc == 0 && (item = PyIter_Next(it)) != NULL) {
        PyObject *fast = PySequence_Fast(item, "object is not iterable");
        Py_DECREF(item);
        if (fast == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyObject *exc = PyErr_GetRaisedException();
                PyObject *r = PyObject_CallMethod(
                    exc, "add_note", "N", PyUnicode_FromFormat(
                        "Cannot convert dictionary update sequence element #%zd to a sequence",
                        i));
                Py_XDECREF(r);
                if (r == NULL) {
                    Py_DECREF(exc);         /* the error of add_note instead */
                }
                else {
                    PyErr_SetRaisedException(exc);
                }
            }
            rc = -1;
            break;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
        if (n != 2) {
            PyErr_Format(PyExc_ValueError,
                         "dictionary update sequence element #%zd has length %zd; 2 is required",
                         i, n);
            rc = -1;
        }
        else {
            rc = private_setitem(d, PySequence_Fast_GET_ITEM(fast, 0),
                                 PySequence_Fast_GET_ITEM(fast, 1));
        }
        Py_DECREF(fast);
        i++;
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred()) {
        rc = -1;
    }
    return rc;
}

/* Merge `arg` into the private dict `d` the way dict(arg) / dict.update(arg) does. */
static int
merge_arg(PyObject *d, PyObject *arg)
{
    if (PyDict_CheckExact(arg)) {
        return PyDict_Merge(d, arg, 1);
    }
    if (FD_Check(arg)) {
        ss_table *t = (ss_table *)arg;
        for (Py_ssize_t i = 0; i < t->used; i++) {
            if (PyDict_SetItem(d, t->entries[i].key, t->entries[i].value) < 0) {
                return -1;
            }
        }
        return 0;
    }
    PyObject *keys = PyObject_GetAttrString(arg, "keys");
    if (keys != NULL) {
        Py_DECREF(keys);
        /* a dict subclass: its keys were hashed by the dict (and PyDict_Merge reads
         * them the way dict.update reads a dict subclass's) */
        return PyDict_Check(arg) ? PyDict_Merge(d, arg, 1) : merge_mapping(d, arg);
    }
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return -1;
    }
    PyErr_Clear();
    return merge_pairs(d, arg);
}

static PyObject *
fd_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *arg = NULL;
    if (!PyArg_UnpackTuple(args, "frozendict", 0, 1, &arg)) {
        return NULL;
    }
    int no_kwds = kwds == NULL || PyDict_GET_SIZE(kwds) == 0;
    if (arg != NULL && no_kwds && FD_Check(arg)) {
        return Py_NewRef(arg);  /* immutable: frozendict(fd) is fd, like frozenset(fs) */
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if ((arg != NULL && merge_arg(d, arg) < 0) || (!no_kwds && PyDict_Merge(d, kwds, 1) < 0)) {
        Py_DECREF(d);
        return NULL;
    }
    PyObject *res = table_from_private_dict(type, d);
    Py_DECREF(d);
    return res;
}

static PyObject *
fd_subscript(PyObject *op, PyObject *key)
{
    ss_table *t = (ss_table *)op;
    Py_hash_t h = fd_key_hash(key);
    if (h == -1) {
        return NULL;
    }
    Py_ssize_t ix = table_lookup(t, key, h);
    if (ix >= 0) {
        return Py_NewRef(t->entries[ix].value);
    }
    if (ix == -1) {
        /* Like dict: the key is the only argument, even when it is a tuple. */
        PyObject *tup = PyTuple_Pack(1, key);
        if (tup != NULL) {
            PyErr_SetObject(PyExc_KeyError, tup);
            Py_DECREF(tup);
        }
    }
    return NULL;
}

static int
fd_contains(PyObject *op, PyObject *key)
{
    Py_hash_t h = fd_key_hash(key);
    if (h == -1) {
        return -1;
    }
    Py_ssize_t ix = table_lookup((ss_table *)op, key, h);
    return ix == -2 ? -1 : ix >= 0;
}

/* 1 if min <= nargs <= max, else 0 with CPython's TypeError for `name` (the message of
 * _PyArg_CheckPositional, which Argument Clinic's methods give). */
static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min) {
        PyErr_Format(PyExc_TypeError, "%s expected %s%zd argument%s, got %zd", name,
                     min == max ? "" : "at least ", min, min == 1 ? "" : "s", nargs);
        return 0;
    }
    if (nargs > max) {
        PyErr_Format(PyExc_TypeError, "%s expected %s%zd argument%s, got %zd", name,
                     min == max ? "" : "at most ", max, max == 1 ? "" : "s", nargs);
        return 0;
    }
    return 1;
}

static PyObject *
fd_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("get", nargs, 1, 2)) {
        return NULL;
    }
    PyObject *key = args[0];
    Py_hash_t h = fd_key_hash(key);
    if (h == -1) {
        return NULL;
    }
    ss_table *t = (ss_table *)op;
    Py_ssize_t ix = table_lookup(t, key, h);
    if (ix >= 0) {
        return Py_NewRef(t->entries[ix].value);
    }
    if (ix == -2) {
        return NULL;
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
fd_dunder_getitem(PyObject *op, PyObject *key)
{
    return fd_subscript(op, key);
}

static PyObject *fd_keys(PyObject *op, PyObject *Py_UNUSED(i)) { return view_new(op, KIND_KEYS); }
static PyObject *fd_values(PyObject *op, PyObject *Py_UNUSED(i)) { return view_new(op, KIND_VALUES); }
static PyObject *fd_items(PyObject *op, PyObject *Py_UNUSED(i)) { return view_new(op, KIND_ITEMS); }
static PyObject *fd_iter(PyObject *op) { return iter_new((ss_table *)op, KIND_KEYS, 0); }

static PyObject *
fd_reversed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return iter_new((ss_table *)op, KIND_KEYS, 1);
}

static PyObject *
fd_repr(PyObject *op)
{
    ss_table *t = (ss_table *)op;
    if (t->used == 0) {
        return PyUnicode_FromString("frozendict()");
    }
    int r = Py_ReprEnter(op);
    if (r != 0) {
        /* CPython 3.15's frozendict: its dict repr's "{...}", in the type's parentheses */
        return r > 0 ? PyUnicode_FromString("frozendict({...})") : NULL;
    }
    PyObject *res = NULL;
    PyObject *d = fd_to_dict(t);
    if (d != NULL) {
        res = PyUnicode_FromFormat("frozendict(%R)", d);
        Py_DECREF(d);
    }
    Py_ReprLeave(op);
    return res;
}

/* == with another frozendict or a dict (any order); NotImplemented otherwise. */
static PyObject *
fd_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !(FD_Check(other) || PyDict_Check(other))) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    ss_table *t = (ss_table *)self;
    Py_ssize_t n2 = FD_Check(other) ? ((ss_table *)other)->used : PyDict_GET_SIZE(other);
    /* No shortcut on unequal cached hashes (PEP 814's frozendict has none): values whose
     * __eq__ disagrees with their __hash__ would make equal frozendicts compare unequal. */
    int equal = (t->used == n2);
    for (Py_ssize_t i = 0; equal && i < t->used; i++) {
        ss_entry *e = &t->entries[i];
        PyObject *ov;
        if (FD_Check(other)) {
            ss_table *o = (ss_table *)other;
            Py_ssize_t ix = table_lookup(o, e->key, e->hash);
            if (ix == -2) {
                return NULL;
            }
            ov = ix >= 0 ? Py_NewRef(o->entries[ix].value) : NULL;
        }
        else {
            ov = PyDict_GetItemWithError(other, e->key);
            if (ov == NULL && PyErr_Occurred()) {
                return NULL;
            }
            Py_XINCREF(ov);
        }
        if (ov == NULL) {
            equal = 0;
            break;
        }
        PyObject *mine = Py_NewRef(e->value);
        int r = PyObject_RichCompareBool(mine, ov, Py_EQ);
        Py_DECREF(mine);
        Py_DECREF(ov);
        if (r < 0) {
            return NULL;
        }
        equal = r;
    }
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

/* `left` | fd for an OrderedDict or a defaultdict (or a subclass of one) on the left, as
 * CPython 3.15's own __or__ of those two types does it with a frozendict: a new object of
 * left's type made the way their copy() makes one (without calling an overridden copy()),
 * then fd's items stored into it. NULL without an exception: `left` is neither. */
static PyObject *
fd_ror_own_type(PyObject *left, ss_table *fd)
{
    PyObject *res;
    if (PyODict_Check(left)) {
        /* odict_or: type(left)(left), then res[k] = v for each item */
        res = PyObject_CallOneArg((PyObject *)Py_TYPE(left), left);
        for (Py_ssize_t i = 0; res != NULL && i < fd->used; i++) {
            if (PyObject_SetItem(res, fd->entries[i].key, fd->entries[i].value) < 0) {
                Py_CLEAR(res);
            }
        }
        return res;
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return NULL;
    }
    PyObject *defaultdict = PyObject_GetAttrString(collections, "defaultdict");
    Py_DECREF(collections);
    if (defaultdict == NULL) {
        return NULL;
    }
    int is_dd = PyType_Check(defaultdict)
                && PyObject_TypeCheck(left, (PyTypeObject *)defaultdict);
    Py_DECREF(defaultdict);
    if (!is_dd) {
        return NULL;
    }
    /* defdict_or: type(left)(left.default_factory, left), then dict.update(res, fd) */
    PyObject *factory = PyObject_GetAttrString(left, "default_factory");
    if (factory == NULL) {
        return NULL;
    }
    res = PyObject_CallFunctionObjArgs((PyObject *)Py_TYPE(left), factory, left, NULL);
    Py_DECREF(factory);
    if (res != NULL && merge_arg(res, (PyObject *)fd) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* frozendict | frozendict-or-dict -> frozendict; dict | frozendict -> dict (PEP 584's
 * "type of the left operand", as CPython 3.15's dict does), but an OrderedDict or a
 * defaultdict on the left keeps its type (fd_ror_own_type). */
static PyObject *
fd_or(PyObject *a, PyObject *b)
{
    if (FD_Check(a)) {
        if (!FD_Check(b) && !PyDict_Check(b)) {
            Py_RETURN_NOTIMPLEMENTED;
        }
        Py_ssize_t nb = FD_Check(b) ? ((ss_table *)b)->used : PyDict_GET_SIZE(b);
        if (nb == 0) {
            return Py_NewRef(a);
        }
        if (((ss_table *)a)->used == 0 && FD_Check(b)) {
            return Py_NewRef(b);
        }
        PyObject *d = fd_to_dict((ss_table *)a);
        if (d == NULL) {
            return NULL;
        }
        if (merge_arg(d, b) < 0) {
            Py_DECREF(d);
            return NULL;
        }
        PyObject *res = table_from_private_dict(&SS_FrozenDict_Type, d);
        Py_DECREF(d);
        return res;
    }
    if (PyDict_Check(a) && FD_Check(b)) {
        if (!PyDict_CheckExact(a)) {
            PyObject *res = fd_ror_own_type(a, (ss_table *)b);
            if (res != NULL || PyErr_Occurred()) {
                return res;
            }
        }
        PyObject *d = PyDict_Copy(a);
        if (d == NULL) {
            return NULL;
        }
        if (merge_arg(d, b) < 0) {
            Py_DECREF(d);
            return NULL;
        }
        return d;
    }
    Py_RETURN_NOTIMPLEMENTED;
}

static PyObject *
fd_fromkeys(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_nargs("fromkeys", nargs, 1, 2)) {
        return NULL;
    }
    PyObject *iterable = args[0], *value = nargs == 2 ? args[1] : Py_None;
    PyObject *d;
    if (PyDict_CheckExact(iterable) || PyAnySet_CheckExact(iterable)) {
        /* keys hashed already: dict.fromkeys reuses their hashes */
        d = PyObject_CallMethod((PyObject *)&PyDict_Type, "fromkeys", "OO", iterable, value);
        if (d == NULL) {
            return NULL;
        }
    }
    else {
        d = PyDict_New();
        PyObject *it = d == NULL ? NULL : PyObject_GetIter(iterable);
        if (it == NULL) {
            Py_XDECREF(d);
            return NULL;
        }
        PyObject *key;
        while ((key = PyIter_Next(it)) != NULL) {
            int rc = private_setitem(d, key, value);
            Py_DECREF(key);
            if (rc < 0) {
                break;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_DECREF(d);
            return NULL;
        }
    }
    PyObject *res = table_from_private_dict((PyTypeObject *)cls, d);
    Py_DECREF(d);
    return res;
}

/* copy.deepcopy(self, memo), with copy._deepcopy_tuple's logic: deep-copy every key and
 * value with the memo; a copy of self made meanwhile (a cycle through a mutable value)
 * is the answer; with every copy identical to its original the answer is self; else a new
 * frozendict, recorded in the memo. copy.deepcopy is imported when first needed. */
static PyObject *
fd_deepcopy(PyObject *op, PyObject *memo)
{
    ss_table *t = (ss_table *)op;
    Py_ssize_t ncopies = 2 * t->used;
    PyObject **copies = NULL, *deepcopy = NULL, *id = NULL, *d = NULL, *res = NULL;
    int all_same = 1;
    PyObject *copy_module = PyImport_ImportModule("copy");
    if (copy_module == NULL) {
        return NULL;
    }
    deepcopy = PyObject_GetAttrString(copy_module, "deepcopy");
    Py_DECREF(copy_module);
    if (deepcopy == NULL) {
        return NULL;
    }
    memo = memo == Py_None ? PyDict_New() : Py_NewRef(memo);   /* as deepcopy(x, None) */
    if (memo == NULL) {
        goto done;
    }
    /* The copies of key i and value i at 2i and 2i + 1 (the table holds the originals),
     * in C memory: the copying runs Python code, which must not reach (gc.get_objects())
     * and change them. */
    copies = PyMem_Calloc((size_t)ncopies + 1, sizeof(PyObject *));
    if (copies == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < ncopies; i++) {
        ss_entry *e = &t->entries[i / 2];
        PyObject *orig = i % 2 == 0 ? e->key : e->value;
        copies[i] = PyObject_CallFunctionObjArgs(deepcopy, orig, memo, NULL);
        if (copies[i] == NULL) {
            goto done;
        }
        all_same &= copies[i] == orig;
    }
    id = PyLong_FromVoidPtr(op);
    if (id == NULL) {
        goto done;
    }
    res = PyObject_GetItem(memo, id);
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_KeyError)) {
        goto done;
    }
    PyErr_Clear();
    if (all_same) {
        res = Py_NewRef(op);
        goto done;
    }
    d = PyDict_New();
    if (d == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < t->used; i++) {
        if (PyDict_SetItem(d, copies[2 * i], copies[2 * i + 1]) < 0) {
            goto done;
        }
    }
    res = table_from_private_dict(&SS_FrozenDict_Type, d);
    if (res != NULL && PyObject_SetItem(memo, id, res) < 0) {
        Py_CLEAR(res);
    }
done:
    if (copies != NULL) {
        for (Py_ssize_t i = 0; i < ncopies; i++) {
            Py_XDECREF(copies[i]);
        }
        PyMem_Free(copies);
    }
    Py_DECREF(deepcopy);
    Py_XDECREF(memo);
    Py_XDECREF(id);
    Py_XDECREF(d);
    return res;
}

static PyObject *
fd_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = fd_to_dict((ss_table *)op);
    if (d == NULL) {
        return NULL;
    }
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(op), d);
}

static PyMethodDef fd_methods[] = {
    {"__getitem__", fd_dunder_getitem, METH_O | METH_COEXIST,
     "__getitem__($self, key, /)\n--\n\nReturn self[key]."},
    {"get", (PyCFunction)(void (*)(void))fd_get, METH_FASTCALL,
     "get($self, key, default=None, /)\n--\n\n"
     "Return the value for key if key is in the frozendict, else default."},
    {"keys", fd_keys, METH_NOARGS, "keys($self, /)\n--\n\nA set-like view of the keys."},
    {"values", fd_values, METH_NOARGS, "values($self, /)\n--\n\nA view of the values."},
    {"items", fd_items, METH_NOARGS,
     "items($self, /)\n--\n\nA set-like view of the (key, value) pairs."},
    {"copy", table_copy, METH_NOARGS,
     "copy($self, /)\n--\n\nReturn the frozendict itself (it is immutable)."},
    {"__copy__", table_copy, METH_NOARGS, "__copy__($self, /)\n--\n\n"},
    {"__deepcopy__", fd_deepcopy, METH_O, "__deepcopy__($self, memo, /)\n--\n\n"},
    {"__reversed__", fd_reversed, METH_NOARGS,
     "__reversed__($self, /)\n--\n\nIterate over the keys in reverse order."},
    {"fromkeys", (PyCFunction)(void (*)(void))fd_fromkeys, METH_FASTCALL | METH_CLASS,
     "fromkeys($type, iterable, value=None, /)\n--\n\n"
     "Create a frozendict with keys from iterable and values set to value."},
    {"__reduce__", fd_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {"__sizeof__", table_sizeof, METH_NOARGS, "__sizeof__($self, /)\n--\n\n"},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "__class_getitem__($type, object, /)\n--\n\nSee PEP 585"},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods fd_as_mapping = {
    .mp_length = table_length,
    .mp_subscript = fd_subscript,
};

static PySequenceMethods fd_as_sequence = {
    .sq_contains = fd_contains,
};

static PyNumberMethods fd_as_number = {
    .nb_or = fd_or,
};

PyDoc_STRVAR(fd_doc,
"frozendict() -> new empty frozendict\n"
"frozendict(mapping) -> new frozendict initialized from a mapping object's\n"
"    (key, value) pairs\n"
"frozendict(iterable) -> new frozendict initialized as if via:\n"
"    d = {}\n"
"    for k, v in iterable:\n"
"        d[k] = v\n"
"frozendict(**kwargs) -> new frozendict initialized with the name=value pairs\n"
"    in the keyword argument list.  For example:  frozendict(one=1, two=2)\n"
"\n"
"An immutable, insertion-ordered mapping (PEP 814), hashable when its values are.\n"
"Instances built into shared memory are readable from every interpreter.");

PyTypeObject SS_FrozenDict_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subsandbox._core.frozendict",
    .tp_basicsize = sizeof(ss_table),
    .tp_itemsize = 0,
    .tp_dealloc = table_dealloc,
    .tp_repr = fd_repr,
    .tp_as_number = &fd_as_number,
    .tp_as_sequence = &fd_as_sequence,
    .tp_as_mapping = &fd_as_mapping,
    .tp_hash = table_hash,
    .tp_getattro = PyObject_GenericGetAttr,
    /* No Py_TPFLAGS_BASETYPE: the type can never gain a subclass (whose weakref would be
     * recorded in the type). Py_TPFLAGS_IMMUTABLETYPE: type_setattro refuses every set. */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
                | Py_TPFLAGS_MAPPING,
    .tp_doc = fd_doc,
    .tp_traverse = table_traverse,
    .tp_richcompare = fd_richcompare,
    .tp_weaklistoffset = 0,         /* instances cannot be weakly referenced */
    .tp_iter = fd_iter,
    .tp_methods = fd_methods,
    .tp_dictoffset = 0,             /* no instance __dict__ */
    .tp_new = fd_new,
    .tp_free = PyObject_GC_Del,
};

/* ---- immutableset ---------------------------------------------------------------------- */

static PyObject *
is_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *iterable = NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "immutableset() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "immutableset", 0, 1, &iterable)) {
        return NULL;
    }
    if (iterable != NULL && IS_Check(iterable)) {
        return Py_NewRef(iterable);
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (iterable != NULL) {
        PyObject *it = PyObject_GetIter(iterable);
        if (it == NULL) {
            Py_DECREF(d);
            return NULL;
        }
        PyObject *item;
        while ((item = PyIter_Next(it)) != NULL) {
            PyObject *r = PyDict_SetDefault(d, item, Py_None);   /* first one wins */
            if (r == NULL && SS_SET_REWORDS_UNHASHABLE
                && PyErr_ExceptionMatches(PyExc_TypeError))
            {
                /* The dict worded it as a dict key, and dropped the hash's own error:
                 * hash again for that error (only on this path) to word it as
                 * frozenset() does. */
                PyObject *dict_error = PyErr_GetRaisedException();
                if (PyObject_Hash(item) == -1) {
                    is_unhashable_item(item);
                    Py_DECREF(dict_error);
                }
                else {
                    PyErr_SetRaisedException(dict_error);
                }
            }
            Py_DECREF(item);
            if (r == NULL) {
                break;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_DECREF(d);
            return NULL;
        }
    }
    PyObject *res = table_from_private_dict(type, d);
    Py_DECREF(d);
    return res;
}

/* Lookup with frozenset's rule: a set that is not hashable is looked up as a frozenset. */
static int
is_contains(PyObject *op, PyObject *key)
{
    Py_hash_t h = key_hash(key);
    if (h == -1) {
        if (!PySet_Check(key) || !PyErr_ExceptionMatches(PyExc_TypeError)) {
            is_unhashable_item(key);
            return -1;
        }
        PyErr_Clear();
        PyObject *tmp = PyFrozenSet_New(key);
        if (tmp == NULL) {
            return -1;
        }
        int r = is_contains(op, tmp);
        Py_DECREF(tmp);
        return r;
    }
    Py_ssize_t ix = table_lookup((ss_table *)op, key, h);
    return ix == -2 ? -1 : ix >= 0;
}

static PyObject *is_iter(PyObject *op) { return iter_new((ss_table *)op, KIND_KEYS, 0); }

static int
is_setlike(PyObject *op)
{
    return PyAnySet_Check(op) || IS_Check(op);
}

/* The operator a `op` b is b `swapped_op[op]` a (Py_LT... Py_GE are 0... 5). */
static const int swapped_op[] = {Py_GT, Py_GE, Py_EQ, Py_NE, Py_LT, Py_LE};

static PyObject *
is_richcompare(PyObject *self, PyObject *other, int op)
{
    ss_table *t = (ss_table *)self;
    if (PyDictKeys_Check(other) || PyDictItems_Check(other)) {
        /* frozenset leaves these to the view (NotImplemented), whose comparison takes a
         * set or frozenset; it takes no immutableset, so compare as it would: the view's
         * comparison, operands swapped (dictview_richcompare: the view's items are looked
         * up in the set for ==). Our own views do the same when reflected. */
        Py_ssize_t n2 = PyObject_Size(other);
        if (n2 < 0) {
            return NULL;
        }
        return setlike_compare(other, n2, self, t->used, swapped_op[op], all_contained_in);
    }
    if (!is_setlike(other)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t n2 = IS_Check(other) ? ((ss_table *)other)->used : PySet_GET_SIZE(other);
    if ((op == Py_EQ || op == Py_NE) && IS_Check(other) && t->hash != -1
        && ((ss_table *)other)->hash != -1 && t->hash != ((ss_table *)other)->hash)
    {
        return PyBool_FromLong(op == Py_NE);
    }
    return setlike_compare(self, t->used, other, n2, op, set_all_in);
}

/* A builtin frozenset with the items of an immutableset; other set-likes unchanged. */
static PyObject *
as_builtin_set(PyObject *op)
{
    if (IS_Check(op)) {
        return PyFrozenSet_New(op);
    }
    return Py_NewRef(op);
}

/* Set operators: with an immutableset on the left the result is an immutableset; with a
 * builtin set/frozenset on the left, it is what that type gives (set | frozenset -> set). */
static PyObject *
is_binop(PyObject *a, PyObject *b, binaryfunc op)
{
    if (!is_setlike(a) || !is_setlike(b)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *fa = as_builtin_set(a);
    if (fa == NULL) {
        return NULL;
    }
    PyObject *fb = as_builtin_set(b);
    if (fb == NULL) {
        Py_DECREF(fa);
        return NULL;
    }
    PyObject *res = op(fa, fb);
    Py_DECREF(fa);
    Py_DECREF(fb);
    if (res == NULL || !IS_Check(a) || !PyAnySet_Check(res)) {
        return res;
    }
    PyObject *out = immutableset_from_private_set(res);
    Py_DECREF(res);
    return out;
}

static PyObject *is_or(PyObject *a, PyObject *b) { return is_binop(a, b, PyNumber_Or); }
static PyObject *is_and(PyObject *a, PyObject *b) { return is_binop(a, b, PyNumber_And); }
static PyObject *is_sub(PyObject *a, PyObject *b) { return is_binop(a, b, PyNumber_Subtract); }
static PyObject *is_xor(PyObject *a, PyObject *b) { return is_binop(a, b, PyNumber_Xor); }

/* Call frozenset(self).<name>(*args); a set result is turned into an immutableset. */
static PyObject *
is_delegate(PyObject *self, const char *name, PyObject *args)
{
    PyObject *fs = PyFrozenSet_New(self);
    if (fs == NULL) {
        return NULL;
    }
    PyObject *meth = PyObject_GetAttrString(fs, name);
    Py_DECREF(fs);
    if (meth == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_Call(meth, args, NULL);
    Py_DECREF(meth);
    if (res == NULL || !PyAnySet_Check(res)) {
        return res;
    }
    PyObject *out = immutableset_from_private_set(res);
    Py_DECREF(res);
    return out;
}

static PyObject *is_union(PyObject *s, PyObject *a) { return is_delegate(s, "union", a); }
static PyObject *is_intersection(PyObject *s, PyObject *a) { return is_delegate(s, "intersection", a); }
static PyObject *is_difference(PyObject *s, PyObject *a) { return is_delegate(s, "difference", a); }

static PyObject *
is_symmetric_difference(PyObject *s, PyObject *o)
{
    PyObject *args = PyTuple_Pack(1, o);
    if (args == NULL) {
        return NULL;
    }
    PyObject *r = is_delegate(s, "symmetric_difference", args);
    Py_DECREF(args);
    return r;
}

/* issubset / issuperset / isdisjoint accept any iterable, like frozenset's, and read it as
 * frozenset's do (Objects/setobject.c, the same in 3.12-3.15): a set operand at the C
 * level, any other iterable item by item, each hashed as it is (no set retried as a
 * frozenset), stopping as soon as the answer is known. */
static PyObject *
is_issubset(PyObject *self, PyObject *other)
{
    ss_table *t = (ss_table *)self;
    if (is_setlike(other)) {
        Py_ssize_t n2 = IS_Check(other) ? ((ss_table *)other)->used : PySet_GET_SIZE(other);
        return setlike_compare(self, t->used, other, n2, Py_LE, set_all_in);
    }
    /* set_issubset: is the intersection with `other` as large as self? Counted with a
     * mark per entry; the iteration stops once every entry was seen. */
    char *seen = PyMem_Calloc((size_t)t->used + 1, 1);
    if (seen == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *it = PyObject_GetIter(other);
    if (it == NULL) {
        PyMem_Free(seen);
        return NULL;
    }
    Py_ssize_t found = 0;
    PyObject *key;
    int err = 0;
    while ((key = PyIter_Next(it)) != NULL) {
        Py_hash_t h = key_hash(key);
        Py_ssize_t ix = h == -1 ? -2 : table_lookup(t, key, h);
        Py_DECREF(key);
        if (ix == -2) {
            err = 1;
            break;
        }
        if (ix >= 0 && !seen[ix]) {
            seen[ix] = 1;
            if (++found >= t->used) {
                break;
            }
        }
    }
    Py_DECREF(it);
    PyMem_Free(seen);
    if (err || PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(found == t->used);
}

static PyObject *
is_issuperset(PyObject *self, PyObject *other)
{
    ss_table *t = (ss_table *)self;
    if (is_setlike(other)) {
        Py_ssize_t n2 = IS_Check(other) ? ((ss_table *)other)->used : PySet_GET_SIZE(other);
        return setlike_compare(self, t->used, other, n2, Py_GE, set_all_in);
    }
    /* set_issuperset: every item of `other` is in self; stops at the first one missing */
    PyObject *it = PyObject_GetIter(other);
    if (it == NULL) {
        return NULL;
    }
    PyObject *key;
    int r = 1;
    while (r == 1 && (key = PyIter_Next(it)) != NULL) {
        Py_hash_t h = is_item_hash(key);
        r = h == -1 ? -1 : set_has_item(self, key, h);
        Py_DECREF(key);
    }
    Py_DECREF(it);
    if (r < 0 || (r == 1 && PyErr_Occurred())) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

/* frozenset's isdisjoint (set_isdisjoint): an exact set, frozenset or an immutableset is
 * read at the C level, the smaller one iterated; anything else is iterated and each item
 * looked up as it is (a set item is not retried as a frozenset, as `in` does). */
static PyObject *
is_isdisjoint(PyObject *self, PyObject *other)
{
    ss_table *t = (ss_table *)self;
    if (other == self) {
        return PyBool_FromLong(t->used == 0);
    }
    int r = 0;
    if (IS_Check(other) || PyAnySet_CheckExact(other)) {
        Py_ssize_t n2 = IS_Check(other) ? ((ss_table *)other)->used : PySet_GET_SIZE(other);
        if (n2 > t->used) {
            for (Py_ssize_t i = 0; r == 0 && i < t->used; i++) {
                r = set_has_item(other, t->entries[i].key, t->entries[i].hash);
            }
            return r < 0 ? NULL : PyBool_FromLong(!r);
        }
    }
    PyObject *it = PyObject_GetIter(other);
    if (it == NULL) {
        return NULL;
    }
    PyObject *key;
    while (r == 0 && (key = PyIter_Next(it)) != NULL) {
        Py_hash_t h = is_item_hash(key);
        r = h == -1 ? -1 : set_has_item(self, key, h);
        Py_DECREF(key);
    }
    Py_DECREF(it);
    if (r < 0 || (r == 0 && PyErr_Occurred())) {
        return NULL;
    }
    return PyBool_FromLong(!r);
}

static PyObject *
is_repr(PyObject *op)
{
    ss_table *t = (ss_table *)op;
    if (t->used == 0) {
        return PyUnicode_FromString("immutableset()");
    }
    /* A repr that reaches this set again prints "immutableset(...)", as frozenset's does
     * (Objects/setobject.c set_repr): the list below is new at each level, so its own
     * guard would never stop the recursion. */
    int r = Py_ReprEnter(op);
    if (r != 0) {
        return r > 0 ? PyUnicode_FromString("immutableset(...)") : NULL;
    }
    PyObject *res = NULL;
    PyObject *list = table_keys_list(t);
    PyObject *lr = list == NULL ? NULL : PyObject_Repr(list);
    Py_XDECREF(list);
    if (lr != NULL) {
        /* "[a, b]" -> "immutableset({a, b})" */
        PyObject *inner = PyUnicode_Substring(lr, 1, PyUnicode_GET_LENGTH(lr) - 1);
        Py_DECREF(lr);
        if (inner != NULL) {
            res = PyUnicode_FromFormat("immutableset({%U})", inner);
            Py_DECREF(inner);
        }
    }
    Py_ReprLeave(op);
    return res;
}

static PyObject *
is_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = table_keys_list((ss_table *)op);
    if (list == NULL) {
        return NULL;
    }
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(op), list);
}

static PyMethodDef is_methods[] = {
    /* The signatures are frozenset's (3.13+). */
    {"union", is_union, METH_VARARGS,
     "union($self, /, *others)\n--\n\nReturn the union of the set and the iterables."},
    {"intersection", is_intersection, METH_VARARGS,
     "intersection($self, /, *others)\n--\n\nReturn the intersection."},
    {"difference", is_difference, METH_VARARGS,
     "difference($self, /, *others)\n--\n\nReturn the difference."},
    {"symmetric_difference", is_symmetric_difference, METH_O,
     "symmetric_difference($self, other, /)\n--\n\nReturn the symmetric difference."},
    {"issubset", is_issubset, METH_O,
     "issubset($self, other, /)\n--\n\nReport whether another set contains this set."},
    {"issuperset", is_issuperset, METH_O,
     "issuperset($self, other, /)\n--\n\nReport whether this set contains another set."},
    {"isdisjoint", is_isdisjoint, METH_O,
     "isdisjoint($self, other, /)\n--\n\nReturn True if two sets have a null intersection."},
    {"copy", table_copy, METH_NOARGS,
     "copy($self, /)\n--\n\nReturn the immutableset itself (it is immutable)."},
    {"__copy__", table_copy, METH_NOARGS, "__copy__($self, /)\n--\n\n"},
    {"__reduce__", is_reduce, METH_NOARGS, "__reduce__($self, /)\n--\n\n"},
    {"__sizeof__", table_sizeof, METH_NOARGS, "__sizeof__($self, /)\n--\n\n"},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "__class_getitem__($type, object, /)\n--\n\nSee PEP 585"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods is_as_sequence = {
    .sq_length = table_length,
    .sq_contains = is_contains,
};

static PyNumberMethods is_as_number = {
    .nb_subtract = is_sub,
    .nb_and = is_and,
    .nb_xor = is_xor,
    .nb_or = is_or,
};

PyDoc_STRVAR(is_doc,
"immutableset() -> empty immutableset\n"
"immutableset(iterable) -> immutableset of the distinct items of iterable\n"
"\n"
"Behaves as a frozenset (equal to equal sets, same hash), is not weak-referenceable,\n"
"and instances built into shared memory are readable from every interpreter.");

PyTypeObject SS_ImmutableSet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subsandbox._core.immutableset",
    .tp_basicsize = sizeof(ss_table),
    .tp_itemsize = 0,
    .tp_dealloc = table_dealloc,
    .tp_repr = is_repr,
    .tp_as_number = &is_as_number,
    .tp_as_sequence = &is_as_sequence,
    .tp_hash = table_hash,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .tp_doc = is_doc,
    .tp_traverse = table_traverse,
    .tp_richcompare = is_richcompare,
    .tp_weaklistoffset = 0,
    .tp_iter = is_iter,
    .tp_methods = is_methods,
    .tp_dictoffset = 0,
    .tp_new = is_new,
    .tp_free = PyObject_GC_Del,
};

/* ---- shared builders (subsandbox.h) ----------------------------------------------------- */

static ss_table *
table_new_shared(ss_filler *f, PyTypeObject *type, Py_ssize_t n)
{
    uint8_t l, w;
    size_t extra;
    if (n < 0) {
        PyErr_SetString(PyExc_SystemError, "negative size");
        return NULL;
    }
    if (table_geometry(n, &l, &w, &extra) < 0) {
        return NULL;
    }
    ss_table *t = (ss_table *)ss_filler_alloc_object(f, type, sizeof(ss_table) + extra);
    if (t == NULL) {
        return NULL;
    }
    table_init_layout(t, n, l, w);
    t->shared = 1;
    return t;
}

/* Fill the hash at build time; an unhashable content leaves -1 for good (hash() then
 * raises each time without writing). */
static void
table_seal_shared(ss_table *t)
{
    Py_hash_t h = table_compute_hash(t);
    if (h == -1) {
        PyErr_Clear();
    }
    t->hash = h;
}

PyObject *
ss_frozendict_build(ss_filler *f, Py_ssize_t n, PyObject *const *keys, PyObject *const *values)
{
    ss_table *t = table_new_shared(f, &SS_FrozenDict_Type, n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t h = key_hash(keys[i]);
        if (h == -1) {
            return NULL;        /* arena memory: reclaimed with the arena */
        }
        table_append(t, keys[i], values[i], h);
    }
    table_seal_shared(t);
    return (PyObject *)t;
}

PyObject *
ss_immutableset_build(ss_filler *f, Py_ssize_t n, PyObject *const *items)
{
    ss_table *t = table_new_shared(f, &SS_ImmutableSet_Type, n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t h = key_hash(items[i]);
        if (h == -1) {
            return NULL;
        }
        table_append(t, items[i], NULL, h);
    }
    table_seal_shared(t);
    return (PyObject *)t;
}

static PyObject *
test_guard_info(PyObject *module, PyObject *type)
{
    if (type != (PyObject *)&SS_FrozenDict_Type && type != (PyObject *)&SS_ImmutableSet_Type) {
        PyErr_SetString(PyExc_TypeError, "expected frozendict or immutableset");
        return NULL;
    }
    return ss_guard_describe((PyTypeObject *)type);
}

static PyMethodDef frozen_functions[] = {
    {"_guard_info", test_guard_info, METH_O,
     "Facts about the per-interpreter type state of frozendict / immutableset here."},
    {NULL, NULL, 0, NULL},
};

/* ---- per-interpreter setup ---------------------------------------------------------------- */

static void
istate_capsule_destructor(PyObject *cap)
{
    ss_frozen_istate *st = PyCapsule_GetPointer(cap, ISTATE_KEY);
    if (st == NULL) {
        PyErr_Clear();
        return;
    }
    Py_CLEAR(st->keys_type);
    Py_CLEAR(st->values_type);
    Py_CLEAR(st->items_type);
    Py_CLEAR(st->iter_type);
    if (tls_istate == st) {
        tls_istate = NULL;
        tls_interp = NULL;
        tls_interp_id = -1;
    }
    PyMem_RawFree(st);
}

/* The views and iterator types of this interpreter, created once per interpreter and kept
 * (in the interpreter dict) until the interpreter is cleared, so that objects outliving a
 * re-imported or freed module keep working. */
static ss_frozen_istate *
istate_ensure(void)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    PyObject *idict = PyInterpreterState_GetDict(interp);
    if (idict == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "no per-interpreter dict");
        }
        return NULL;
    }
    PyObject *cap = PyDict_GetItemString(idict, ISTATE_KEY);
    if (cap != NULL) {
        return PyCapsule_GetPointer(cap, ISTATE_KEY);
    }
    ss_frozen_istate *st = PyMem_RawCalloc(1, sizeof(*st));
    if (st == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    st->interp_id = PyInterpreterState_GetID(interp);
    cap = PyCapsule_New(st, ISTATE_KEY, istate_capsule_destructor);
    if (cap == NULL) {
        PyMem_RawFree(st);
        return NULL;
    }
    st->keys_type = (PyTypeObject *)PyType_FromSpec(&keys_spec);
    st->values_type = (PyTypeObject *)PyType_FromSpec(&values_spec);
    st->items_type = (PyTypeObject *)PyType_FromSpec(&items_spec);
    st->iter_type = (PyTypeObject *)PyType_FromSpec(&iter_spec);
    if (st->keys_type == NULL || st->values_type == NULL || st->items_type == NULL
        || st->iter_type == NULL || PyDict_SetItemString(idict, ISTATE_KEY, cap) < 0)
    {
        Py_DECREF(cap);
        return NULL;
    }
    Py_DECREF(cap);
    return st;
}

/* Register the types with this interpreter's collections.abc ABCs (the registries hold
 * weak references to the types: per-interpreter, see frozen_guard.c). */
static int
abc_register_all(ss_frozen_istate *st)
{
    PyObject *mod = PyImport_ImportModule("_collections_abc");
    if (mod == NULL) {
        return -1;
    }
    struct { const char *abc; PyTypeObject *type; } regs[] = {
        {"Mapping", &SS_FrozenDict_Type},
        {"Set", &SS_ImmutableSet_Type},
        {"KeysView", st->keys_type},
        {"ValuesView", st->values_type},
        {"ItemsView", st->items_type},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof(regs) / sizeof(regs[0]); i++) {
        PyObject *abc = PyObject_GetAttrString(mod, regs[i].abc);
        if (abc == NULL) {
            rc = -1;
            break;
        }
        PyObject *r = PyObject_CallMethod(abc, "register", "O", (PyObject *)regs[i].type);
        Py_DECREF(abc);
        if (r == NULL) {
            rc = -1;
            break;
        }
        Py_DECREF(r);
    }
    Py_DECREF(mod);
    return rc;
}

int
ss_frozen_exec(PyObject *module, ss_state *state)
{
    (void)state;
    static PyTypeObject *const types[] = {&SS_FrozenDict_Type, &SS_ImmutableSet_Type};
    if (ss_guard_ready_types(types, 2) < 0) {
        return -1;
    }
    ss_frozen_istate *st = istate_ensure();
    if (st == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "frozendict", (PyObject *)&SS_FrozenDict_Type) < 0
        || PyModule_AddObjectRef(module, "immutableset", (PyObject *)&SS_ImmutableSet_Type) < 0
        || PyModule_AddFunctions(module, frozen_functions) < 0)
    {
        return -1;
    }
    return abc_register_all(st);
}

/* The leak census: what a destroyed interpreter left allocated in its obmalloc arenas.
 * Built with CPython's internal headers, like pyinternal.c (dict keys, module objects).
 *
 * _core._leak_census(interp_id) (lifecycle.c) walks every allocated block of the arenas
 * recorded for an interpreter that no longer exists (pyinternal.c's walk: pools in use,
 * blocks neither on the free list nor past nextoffset) and says what each block was:
 *
 *   - an object, when a PyObject header is found at the block's start (no GC header), after
 *     a PyGC_Head, or after the pre-header of managed dicts/weakrefs plus a PyGC_Head
 *     (3.12/3.13's _PyType_PreHeaderSize), whose ob_type is a type we can name without
 *     reading anything that might be gone: a static type of CPython's (a fixed table, then
 *     any exported symbol the dynamic linker says is exactly a PyTypeObject) and whose
 *     GC-ness matches the offset it was found at;
 *   - a dict keys object (raw block, no PyObject header) when its fields are consistent;
 *   - "unknown (N bytes)" otherwise: buffers of PyMem_Malloc, instances of heap types
 *     (their type is not static: we never follow that pointer).
 *
 * Pointers between leaked blocks are followed only when they land exactly on a block this
 * census classified (a str, a dict keys object), so names can be shown: a code object's and
 * a function's qualname, a module's name, a dict's first keys. Nothing else is read.
 *
 * Reading is safe because the arenas of a destroyed interpreter are never allocated from,
 * written to or unmapped again (pyinternal.c), and lifecycle.c refuses a live interpreter.
 * A diagnostic: it is slow (a few ms per interpreter) and its classification is heuristic.
 */
#define _GNU_SOURCE 1
#define Py_BUILD_CORE_MODULE 1
#include "subsandbox.h"
#include "pyversion.h"
#include "pyinternal.h"

#include "internal/pycore_dict.h"
#include "internal/pycore_moduleobject.h"

#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

#define CENSUS_PAGE 4096
#define N_NAMES 8           /* dict keys shown per dict */

enum {
    K_OBJECT,               /* rec.type is the object's static type */
    K_DICT_KEYS,
    K_UNKNOWN,
};

typedef struct {
    uintptr_t obj;          /* the object (after its GC header), or the block */
    uintptr_t block;
    const PyTypeObject *type;
    uint32_t size;          /* the block's size class */
    uint8_t kind;
    uint8_t immortal;
} census_rec;

typedef struct {
    census_rec *recs;
    size_t n, cap;
} census;

/* ---- which pointers are static types ------------------------------------------------ */

typedef struct {
    const PyTypeObject *type;
    const char *name;
} named_type;

static const named_type *
fixed_types(size_t *n)
{
    static named_type table[96];
    static size_t count;
    if (count == 0) {
#define T(tp, nm) table[count++] = (named_type){&(tp), (nm)}
        T(PyUnicode_Type, "str"); T(PyTuple_Type, "tuple"); T(PyDict_Type, "dict");
        T(PyList_Type, "list"); T(PySet_Type, "set"); T(PyFrozenSet_Type, "frozenset");
        T(PyCode_Type, "code"); T(PyFunction_Type, "function"); T(PyBytes_Type, "bytes");
        T(PyByteArray_Type, "bytearray"); T(PyLong_Type, "int"); T(PyFloat_Type, "float");
        T(PyComplex_Type, "complex"); T(PyBool_Type, "bool"); T(PyCell_Type, "cell");
        T(PyModule_Type, "module"); T(PyModuleDef_Type, "moduledef");
        T(PyMethodDescr_Type, "method_descriptor");
        T(PyClassMethodDescr_Type, "classmethod_descriptor");
        T(PyGetSetDescr_Type, "getset_descriptor");
        T(PyMemberDescr_Type, "member_descriptor");
        T(PyWrapperDescr_Type, "wrapper_descriptor");
        T(PyCFunction_Type, "builtin_function_or_method"); T(PyCMethod_Type, "builtin_method");
        T(PyMethod_Type, "method"); T(PyInstanceMethod_Type, "instancemethod");
        T(PyProperty_Type, "property"); T(PyStaticMethod_Type, "staticmethod");
        T(PyClassMethod_Type, "classmethod"); T(_PyWeakref_RefType, "weakref");
        T(_PyWeakref_ProxyType, "weakproxy"); T(_PyWeakref_CallableProxyType, "weakcallableproxy");
        T(PyCapsule_Type, "PyCapsule");
        T(PyDictProxy_Type, "mappingproxy"); T(PySlice_Type, "slice");
        T(PyFrame_Type, "frame"); T(PyGen_Type, "generator"); T(PyCoro_Type, "coroutine");
        T(PyRange_Type, "range"); T(PyMemoryView_Type, "memoryview");
        T(PyType_Type, "type"); T(PyBaseObject_Type, "object");
        T(PyTraceBack_Type, "traceback"); T(PySeqIter_Type, "iterator");
        T(PyCallIter_Type, "callable_iterator"); T(PyListIter_Type, "list_iterator");
        T(PyTupleIter_Type, "tuple_iterator"); T(PyDictIterKey_Type, "dict_keyiterator");
        T(PyDictKeys_Type, "dict_keys"); T(PyDictValues_Type, "dict_values");
        T(PyDictItems_Type, "dict_items"); T(PyEnum_Type, "enumerate");
        T(PyFilter_Type, "filter"); T(PyMap_Type, "map"); T(PyZip_Type, "zip");
        T(PyReversed_Type, "reversed"); T(PySuper_Type, "super");
#undef T
#define E(exc) if (count < sizeof(table) / sizeof(table[0])) { \
            table[count++] = (named_type){(PyTypeObject *)(exc), #exc}; }
        E(PyExc_BaseException); E(PyExc_Exception); E(PyExc_ImportError);
        E(PyExc_ModuleNotFoundError); E(PyExc_AttributeError); E(PyExc_KeyError);
        E(PyExc_StopIteration); E(PyExc_TypeError); E(PyExc_ValueError);
        E(PyExc_OSError); E(PyExc_RuntimeError);
#undef E
    }
    *n = count;
    return table;
}

/* The static type `p` is, with its name, or NULL. Exact pointers only: the fixed table,
 * then the dynamic linker's symbol for exactly this address, if it has the size of a type
 * object (static types of libpython and of extension modules that export them). */
static const char *
static_type_name(const void *p)
{
    size_t n;
    const named_type *table = fixed_types(&n);
    for (size_t i = 0; i < n; i++) {
        if (table[i].type == p) {
            return table[i].name;
        }
    }
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    if (p != NULL && dladdr1(p, &info, (void **)&sym, RTLD_DL_SYMENT) != 0 && sym != NULL
        && info.dli_saddr == p && info.dli_sname != NULL
        && sym->st_size == sizeof(PyTypeObject))
    {
        return info.dli_sname;
    }
    return NULL;
}

/* Cache of static_type_name() verdicts (dladdr is slow): open addressing on the pointer. */
#define TCACHE_SIZE 4096
typedef struct {
    const void *key;
    const char *name;       /* NULL: not a static type */
} tcache_entry;

static const char *
cached_type_name(tcache_entry *cache, const void *p)
{
    size_t i = ((uintptr_t)p >> 4) & (TCACHE_SIZE - 1);
    for (size_t probes = 0; probes < TCACHE_SIZE; probes++, i = (i + 1) & (TCACHE_SIZE - 1)) {
        if (cache[i].key == p) {
            return cache[i].name;
        }
        if (cache[i].key == NULL) {
            cache[i].key = p;
            cache[i].name = static_type_name(p);
            return cache[i].name;
        }
    }
    return static_type_name(p);
}

/* ---- classifying one block --------------------------------------------------------- */

typedef struct {
    census *c;
    tcache_entry *tcache;
} walk_ctx;

static int
plausible_refcnt(const PyObject *op)
{
    Py_ssize_t r = op->ob_refcnt;
    return r >= 1 && r <= ((Py_ssize_t)1 << 33);
}

/* A dict keys object (Objects/dictobject.c new_keys_object): consistent sizes, and all of
 * it inside the block. */
static int
looks_like_dict_keys(const char *block, size_t size)
{
    const PyDictKeysObject *k = (const PyDictKeysObject *)block;
    if (size < sizeof(PyDictKeysObject) || k->dk_refcnt < 1 || k->dk_refcnt > (1 << 30)
        || k->dk_log2_size < 3 || k->dk_log2_size > 16 || k->dk_kind > DICT_KEYS_SPLIT
        || k->dk_log2_index_bytes < k->dk_log2_size
        || k->dk_log2_index_bytes > k->dk_log2_size + 3)
    {
        return 0;
    }
    Py_ssize_t cap = ((Py_ssize_t)2 << k->dk_log2_size) / 3;   /* USABLE_FRACTION */
    if (k->dk_nentries < 0 || k->dk_usable < 0 || k->dk_nentries + k->dk_usable > cap) {
        return 0;
    }
    size_t entry = k->dk_kind == DICT_KEYS_GENERAL ? sizeof(PyDictKeyEntry)
                                                   : sizeof(PyDictUnicodeEntry);
    size_t need = sizeof(PyDictKeysObject) + ((size_t)1 << k->dk_log2_index_bytes)
                  + (size_t)cap * entry;
    return need <= size;
}

static int
add_rec(census *c, census_rec r)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4096;
        census_rec *grown = PyMem_RawRealloc(c->recs, cap * sizeof(census_rec));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->recs = grown;
        c->cap = cap;
    }
    c->recs[c->n++] = r;
    return 0;
}

static int
classify_block(void *arg, const char *block, size_t size, const char *pool)
{
    walk_ctx *w = arg;
    census_rec r = {(uintptr_t)block, (uintptr_t)block, NULL, (uint32_t)size, K_UNKNOWN, 0};
    /* Header offsets: none (not GC), a PyGC_Head, pre-header + PyGC_Head. */
    static const size_t offsets[] = {0, SS_GC_HEAD_SIZE, SS_GC_HEAD_SIZE + 2 * sizeof(void *)};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        size_t off = offsets[i];
        if (off + sizeof(PyObject) > size) {
            break;
        }
        const PyObject *op = (const PyObject *)(block + off);
        const char *name = cached_type_name(w->tcache, op->ob_type);
        if (name == NULL || !plausible_refcnt(op)) {
            continue;
        }
        const PyTypeObject *tp = op->ob_type;   /* static: safe to read */
        int gc = (tp->tp_flags & Py_TPFLAGS_HAVE_GC) != 0;
        int pre = (tp->tp_flags & Py_TPFLAGS_PREHEADER) != 0;
        if ((off == 0 && gc) || (off != 0 && !gc) || (off == offsets[2] && !pre)
            || (off == offsets[1] && pre))
        {
            continue;
        }
        r.obj = (uintptr_t)op;
        r.type = tp;
        r.kind = K_OBJECT;
        r.immortal = (uint8_t)SS_FROZEN_IS_IMMORTAL(op);
        return add_rec(w->c, r);
    }
    if (looks_like_dict_keys(block, size)) {
        r.kind = K_DICT_KEYS;
    }
    return add_rec(w->c, r);
}

/* ---- reading what the classified blocks say ------------------------------------------ */

static int
cmp_rec(const void *a, const void *b)
{
    uintptr_t x = ((const census_rec *)a)->obj, y = ((const census_rec *)b)->obj;
    return x < y ? -1 : x > y;
}

/* The record whose object (or raw block) starts exactly at p, or NULL. */
static const census_rec *
find_rec(const census *c, const void *p)
{
    census_rec key = {.obj = (uintptr_t)p};
    return bsearch(&key, c->recs, c->n, sizeof(census_rec), cmp_rec);
}

/* A leaked str's text as a new str of the main interpreter, or NULL (no error) when the
 * block is not a compact str that fits in it. */
static PyObject *
str_text(const census_rec *r)
{
    const PyASCIIObject *a = (const PyASCIIObject *)r->obj;
    size_t room = r->size - (r->obj - r->block);
    if (!a->state.compact || a->length < 0) {
        return NULL;
    }
    int kind = a->state.kind;
    size_t header = a->state.ascii ? sizeof(PyASCIIObject) : sizeof(PyCompactUnicodeObject);
    if ((kind != 1 && kind != 2 && kind != 4)
        || header + ((size_t)a->length + 1) * (size_t)kind > room)
    {
        return NULL;
    }
    return PyUnicode_FromKindAndData(kind, (const char *)a + header, a->length);
}

/* The text of a str that p points to, if p is a leaked str of this census or one of the
 * runtime's static strings; else a placeholder. New reference. */
static PyObject *
name_at(const census *c, PyObject *p)
{
    if (p != NULL && ss_rt_is_static(p) && Py_IS_TYPE(p, &PyUnicode_Type)) {
        return PyUnicode_FromString(PyUnicode_AsUTF8(p));   /* immortal, runtime-wide */
    }
    const census_rec *r = find_rec(c, p);
    PyObject *text = NULL;
    if (r != NULL && r->kind == K_OBJECT && r->type == &PyUnicode_Type) {
        text = str_text(r);
        if (text == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    return text != NULL ? text : PyUnicode_FromString("?");
}

/* The first keys of a leaked dict keys object, as a tuple of str. */
static PyObject *
keys_names(const census *c, const census_rec *r)
{
    const PyDictKeysObject *k = (const PyDictKeysObject *)r->block;
    const char *entries = (const char *)k->dk_indices + ((size_t)1 << k->dk_log2_index_bytes);
    Py_ssize_t n = k->dk_nentries < N_NAMES ? k->dk_nentries : N_NAMES;
    PyObject *out = PyTuple_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *key = k->dk_kind == DICT_KEYS_GENERAL
            ? ((const PyDictKeyEntry *)entries)[i].me_key
            : ((const PyDictUnicodeEntry *)entries)[i].me_key;
        PyObject *s = key == NULL ? PyUnicode_FromString("<deleted>") : name_at(c, key);
        if (s == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, s);
    }
    return out;
}

/* What one object says about itself (a str's text, a code object's qualname...), or None. */
static PyObject *
detail(const census *c, const census_rec *r)
{
    size_t room = r->size - (r->obj - r->block);
    const PyTypeObject *tp = r->type;
    if (r->kind == K_DICT_KEYS) {
        return keys_names(c, r);
    }
    if (r->kind != K_OBJECT) {
        Py_RETURN_NONE;
    }
    if (tp == &PyUnicode_Type) {
        const PyASCIIObject *a = (const PyASCIIObject *)r->obj;
        PyObject *text = str_text(r);
        if (text == NULL) {
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        return Py_BuildValue("(Nii)", text, (int)a->state.interned, (int)r->immortal);
    }
    if (tp == &PyCode_Type && room >= offsetof(PyCodeObject, co_qualname) + sizeof(void *)) {
        const PyCodeObject *co = (const PyCodeObject *)r->obj;
        return Py_BuildValue("(NN)", name_at(c, co->co_qualname), name_at(c, co->co_filename));
    }
    if (tp == &PyFunction_Type && room >= sizeof(PyFunctionObject)) {
        const PyFunctionObject *f = (const PyFunctionObject *)r->obj;
        return name_at(c, f->func_qualname);
    }
    if (tp == &PyModule_Type && room >= sizeof(PyModuleObject)) {
        return name_at(c, ((const PyModuleObject *)r->obj)->md_name);
    }
    if (tp == &PyDict_Type && room >= sizeof(PyDictObject)) {
        const PyDictObject *d = (const PyDictObject *)r->obj;
        const census_rec *keys = find_rec(c, d->ma_keys);
        if (keys != NULL && keys->kind == K_DICT_KEYS) {
            return keys_names(c, keys);
        }
        Py_RETURN_NONE;
    }
    if (tp == &PyTuple_Type && room >= sizeof(PyTupleObject)) {
        return PyLong_FromSsize_t(Py_SIZE((const PyObject *)r->obj));
    }
    Py_RETURN_NONE;
}

static PyObject *
kind_name(const census_rec *r, tcache_entry *tcache)
{
    if (r->kind == K_OBJECT) {
        return PyUnicode_FromString(cached_type_name(tcache, r->type));
    }
    if (r->kind == K_DICT_KEYS) {
        return PyUnicode_FromString("dict keys (raw)");
    }
    return PyUnicode_FromFormat("unknown (%u bytes)", (unsigned)r->size);
}

static int
bump(PyObject *entry, Py_ssize_t field, long add)
{
    PyObject *v = PyLong_FromLong(PyLong_AsLong(PyList_GET_ITEM(entry, field)) + add);
    return v == NULL ? -1 : PyList_SetItem(entry, field, v);
}

/* Per kind: [blocks, bytes, immortal, pages held by this kind alone, details]. A page is
 * "held alone" when every allocated block that touches it is of that kind: freeing those
 * objects would let the reclaim hand the page back (unless it is a pool's first page,
 * which the reclaim keeps while the pool holds any block). */
static PyObject *
summarize(census *c, tcache_entry *tcache)
{
    qsort(c->recs, c->n, sizeof(census_rec), cmp_rec);
    PyObject *kinds = PyDict_New();
    PyObject *entries = PyList_New((Py_ssize_t)c->n);   /* each record's kind entry */
    if (kinds == NULL || entries == NULL) {
        goto error;
    }
    Py_ssize_t total_bytes = 0;
    for (size_t i = 0; i < c->n; i++) {
        const census_rec *r = &c->recs[i];
        PyObject *name = kind_name(r, tcache);
        if (name == NULL) {
            goto error;
        }
        PyObject *entry = PyDict_GetItemWithError(kinds, name);     /* borrowed */
        if (entry == NULL) {
            if (PyErr_Occurred()
                || (entry = Py_BuildValue("[iiiiN]", 0, 0, 0, 0, PyList_New(0))) == NULL
                || PyDict_SetItem(kinds, name, entry) < 0)
            {
                Py_XDECREF(entry);
                Py_DECREF(name);
                goto error;
            }
            Py_DECREF(entry);
        }
        Py_DECREF(name);
        PyList_SET_ITEM(entries, (Py_ssize_t)i, Py_NewRef(entry));
        total_bytes += r->size;
        if (bump(entry, 0, 1) < 0 || bump(entry, 1, (long)r->size) < 0
            || bump(entry, 2, r->immortal) < 0)
        {
            goto error;
        }
        PyObject *d = detail(c, r);
        if (d == NULL) {
            goto error;
        }
        int err = d == Py_None ? 0 : PyList_Append(PyList_GET_ITEM(entry, 4), d);
        Py_DECREF(d);
        if (err < 0) {
            goto error;
        }
    }
    /* Pages, in address order: blocks do not overlap and are sorted, so the pages each
     * touches (the one it starts in to the one it ends in) come in non-decreasing order. */
    Py_ssize_t pages = 0;
    uintptr_t page = 0;
    PyObject *sole = NULL;      /* the kind entry of every block on `page` so far, or NULL */
    int mixed = 0;
    for (size_t i = 0; i <= c->n; i++) {
        const census_rec *r = i < c->n ? &c->recs[i] : NULL;
        uintptr_t first = r ? r->block & ~(uintptr_t)(CENSUS_PAGE - 1) : UINTPTR_MAX;
        uintptr_t last = r ? (r->block + r->size - 1) & ~(uintptr_t)(CENSUS_PAGE - 1) : 0;
        for (uintptr_t p = first; r == NULL || p <= last; p += CENSUS_PAGE) {
            PyObject *entry = r ? PyList_GET_ITEM(entries, (Py_ssize_t)i) : NULL;
            if (r == NULL || p != page) {
                if (sole != NULL) {
                    pages++;
                    if (!mixed && bump(sole, 3, 1) < 0) {
                        goto error;
                    }
                }
                if (r == NULL) {
                    break;
                }
                page = p;
                sole = entry;
                mixed = 0;
            }
            else if (entry != sole) {
                mixed = 1;
            }
        }
    }
    Py_DECREF(entries);
    return Py_BuildValue("{s:n,s:n,s:n,s:N}", "blocks", (Py_ssize_t)c->n,
                         "bytes", total_bytes, "pages", pages, "kinds", kinds);
error:
    Py_XDECREF(kinds);
    Py_XDECREF(entries);
    return NULL;
}

PyObject *
ss_census_run(void *const *addrs, const size_t *sizes, size_t n)
{
    census c = {NULL, 0, 0};
    tcache_entry *tcache = PyMem_RawCalloc(TCACHE_SIZE, sizeof(tcache_entry));
    if (tcache == NULL) {
        return PyErr_NoMemory();
    }
    walk_ctx w = {&c, tcache};
    PyObject *result = NULL;
    for (size_t i = 0; i < n; i++) {
        if (ss_rt_visit_allocated_blocks(addrs[i], sizes[i], classify_block, &w) < 0) {
            goto done;
        }
    }
    result = summarize(&c, tcache);
    if (result != NULL) {
        PyObject *v = PyLong_FromSize_t(n);
        if (v == NULL || PyDict_SetItemString(result, "arenas", v) < 0) {
            Py_CLEAR(result);
        }
        Py_XDECREF(v);
    }
done:
    PyMem_RawFree(c.recs);
    PyMem_RawFree(tcache);
    return result;
}

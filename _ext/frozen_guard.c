/* The type guard of frozendict and immutableset: per-interpreter type state for two static
 * types that every interpreter shares.
 *
 * A static type lives once per process. CPython keeps three of its fields per interpreter
 * for its own static builtin types (flag _Py_TPFLAGS_STATIC_BUILTIN; the fields live in
 * interp->types and the type's tp_subclasses holds 1 + an index into them):
 *   tp_dict       (cls.__dict__: descriptors, written by PyType_Ready and type caches)
 *   tp_subclasses (weak references to subclasses: the 2005 objection)
 *   tp_weaklist   (weak references to the type: ABC caches, WeakKeyDictionary...)
 * A static type defined by an extension keeps them in the type object itself, so two
 * own-GIL interpreters would write them at the same time. This file puts ours per
 * interpreter too:
 *   - 3.13+: CPython's managed static extension types (the machinery _datetime uses):
 *     _PyStaticType_InitForExtension once in the main interpreter, with the slot index
 *     chosen by us (see pick_ext_index); every other interpreter's slot is filled by us
 *     (interp_ready_one), because that call would write the shared type object again;
 *   - 3.12:  that machinery does not exist; we do what _PyStaticType_InitBuiltin does, with
 *     public API and struct access: a free slot of interp->types.builtins[], the type
 *     readied once in the main interpreter, then each interpreter's slot filled with a
 *     tp_dict rebuilt from the main interpreter's (same C descriptors, new objects).
 * After the main interpreter's first import, nothing here writes the type object or any
 * other memory that another interpreter reads without a lock.
 * The main interpreter's import also closes the one Python-level path that writes *any*
 * static type object, ours or CPython's: the setter of type.__abstractmethods__ (below).
 * The rest of the guard is in the type definitions (frozen.c): no Py_TPFLAGS_BASETYPE,
 * Py_TPFLAGS_IMMUTABLETYPE, no instance weakref list or __dict__. docs/type-guard.md lists
 * every write we found and where it goes.
 *
 * The only file of _ext/ that includes CPython's internal headers; keep it small.
 */
#define Py_BUILD_CORE_MODULE 1
#include "subsandbox.h"
#include "sync.h"
#include "pyversion.h"
#include "frozen.h"

#include "internal/pycore_interp.h"
#include "internal/pycore_typeobject.h"
#if defined(SS_FROZEN_GUARD_MANAGED_EXT)
#  include "internal/pycore_runtime.h"
#endif

#include <string.h>

/* ---- the process-wide lock ------------------------------------------------------------ */

/* Serializes the guard's first readying (main interpreter) and every interpreter's slot
 * filling. Taken with ss_mutex_lock_with_gil: another thread of this interpreter may hold
 * it and need the GIL to finish. */
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;

static int
is_main_interpreter(PyInterpreterState *interp)
{
    return interp == PyInterpreterState_Main();
}

static int
refuse_first_in_subinterpreter(PyTypeObject *type)
{
    PyErr_Format(PyExc_ImportError,
                 "subsandbox._core must be imported in the main interpreter before any "
                 "other interpreter imports it (the static type %s is readied there once "
                 "for the whole process)", type->tp_name);
    return -1;
}

#define SS_GUARD_MAX_TYPES 4

/* ---- type.__abstractmethods__: the setter of `type` that skips the immutability check ----
 * Every setter of `type` refuses an immutable type (check_set_special_type_attr,
 * type_set_annotations), and type_setattro refuses them all before it looks for one,
 * except type_set_abstractmethods (3.12 to 3.15): called through its descriptor,
 *     type.__dict__['__abstractmethods__'].__set__(object, frozenset({'x'}))
 * it writes the static type itself, which every interpreter shares: Py_TPFLAGS_IS_ABSTRACT
 * in tp_flags (object() then fails in every interpreter) and PyType_Modified(), which
 * clears the version tag of the type and of each subclass the calling interpreter knows
 * (for object: int, str, dict... and frozendict), so that every interpreter assigns new
 * ones from the runtime-wide counter at once, without a lock. Pure Python, no privilege.
 * The descriptor of every interpreter points at the one PyGetSetDef of CPython's
 * type_getsets[] (static, not const), so we replace its setter there, once, in the main
 * interpreter: the replacement refuses an immutable type as its siblings do and calls
 * CPython's for the others (ABCMeta sets __abstractmethods__ on every abstract class). */
static setter cpython_set_abstractmethods;     /* written once, under guard_lock */

static int
guarded_set_abstractmethods(PyObject *type, PyObject *value, void *closure)
{
    /* getset_set() has checked that `type` is a type (an instance of `type`). */
    if (PyType_HasFeature((PyTypeObject *)type, Py_TPFLAGS_IMMUTABLETYPE)) {
        PyErr_Format(PyExc_TypeError,
                     value != NULL
                     ? "cannot set '__abstractmethods__' attribute of immutable type '%s'"
                     : "cannot delete '__abstractmethods__' attribute of immutable type '%s'",
                     ((PyTypeObject *)type)->tp_name);
        return -1;
    }
    return cpython_set_abstractmethods(type, value, closure);
}

static PyGetSetDef *
abstractmethods_def(void)
{
    for (PyGetSetDef *def = PyType_Type.tp_getset; def != NULL && def->name != NULL; def++) {
        if (strcmp(def->name, "__abstractmethods__") == 0) {
            return def;
        }
    }
    return NULL;
}

/* Under guard_lock. Idempotent. A CPython without the setter needs nothing. */
static void
guard_abstractmethods_setter(void)
{
    PyGetSetDef *def = abstractmethods_def();
    if (def == NULL || def->set == NULL || def->set == guarded_set_abstractmethods) {
        return;
    }
    cpython_set_abstractmethods = def->set;
    /* Interpreters made before this import may be calling the setter right now: one
     * aligned pointer store, published after cpython_set_abstractmethods. */
    __atomic_store_n(&def->set, guarded_set_abstractmethods, __ATOMIC_RELEASE);
}

/* Whether no setter of `type` can write an immutable (shared static) type. */
static int
abstractmethods_setter_guarded(void)
{
    PyGetSetDef *def = abstractmethods_def();
    return def == NULL || def->set == NULL
           || __atomic_load_n(&def->set, __ATOMIC_ACQUIRE) == guarded_set_abstractmethods;
}

/* ---- the type's tp_dict, rebuilt in each interpreter ---------------------------------
 * Each interpreter after the first gets its own tp_dict, made of new objects of its own
 * (the same C definitions), rebuilt from a record taken once from the first interpreter's.
 * No call to PyType_Ready / type_ready: those write the shared type object (tp_flags),
 * which other interpreters read without a lock. */

/* The entries of the main interpreter's tp_dict, as the C definitions they came from, so
 * that each interpreter can get a tp_dict of its own objects. */
typedef enum { T_METHOD, T_CLASSMETHOD, T_WRAPPER, T_GETSET, T_MEMBER, T_NEW, T_STR, T_NONE } tkind;

typedef struct {
    char *name;
    tkind kind;
    void *p;
    void *q;
} tentry;

typedef struct {
    size_t n;
    tentry *entries;
} ttemplate;

static ttemplate templates[SS_GUARD_MAX_TYPES];    /* written once, under the lock */

static char *
raw_strdup(const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = PyMem_RawMalloc(len);
    if (copy != NULL) {
        memcpy(copy, s, len);
    }
    return copy;
}

static int
capture_template(PyTypeObject *type, PyObject *dict, ttemplate *tpl)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict), pos = 0;
    tpl->entries = PyMem_RawCalloc((size_t)n + 1, sizeof(tentry));
    if (tpl->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *k, *v;
    size_t i = 0;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        tentry *e = &tpl->entries[i];
        const char *name = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
        if (name == NULL || (e->name = raw_strdup(name)) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (Py_IS_TYPE(v, &PyMethodDescr_Type) || Py_IS_TYPE(v, &PyClassMethodDescr_Type)) {
            PyMethodDescrObject *d = (PyMethodDescrObject *)v;
            e->kind = Py_IS_TYPE(v, &PyMethodDescr_Type) ? T_METHOD : T_CLASSMETHOD;
            e->p = d->d_method;
            if (d->d_common.d_type != type) {
                goto unknown;
            }
        }
        else if (Py_IS_TYPE(v, &PyWrapperDescr_Type)) {
            PyWrapperDescrObject *d = (PyWrapperDescrObject *)v;
            e->kind = T_WRAPPER;
            e->p = d->d_base;
            e->q = d->d_wrapped;
        }
        else if (Py_IS_TYPE(v, &PyGetSetDescr_Type)) {
            e->kind = T_GETSET;
            e->p = ((PyGetSetDescrObject *)v)->d_getset;
        }
        else if (Py_IS_TYPE(v, &PyMemberDescr_Type)) {
            e->kind = T_MEMBER;
            e->p = ((PyMemberDescrObject *)v)->d_member;
        }
        else if (PyCFunction_CheckExact(v) && PyCFunction_GET_SELF(v) == (PyObject *)type
                 && ((PyCFunctionObject *)v)->m_module == NULL)
        {
            e->kind = T_NEW;        /* __new__: tp_new_wrapper bound to the type */
            e->p = ((PyCFunctionObject *)v)->m_ml;
        }
        else if (PyUnicode_CheckExact(v)) {
            const char *s = PyUnicode_AsUTF8(v);
            if (s == NULL) {
                return -1;
            }
            e->kind = T_STR;
            if ((e->p = raw_strdup(s)) == NULL) {
                PyErr_NoMemory();
                return -1;
            }
        }
        else if (v == Py_None) {
            e->kind = T_NONE;
        }
        else {
            goto unknown;
        }
        i++;
        continue;
    unknown:
        PyErr_Format(PyExc_ImportError,
                     "subsandbox._core: cannot give %s.%U (%.100s) to other interpreters",
                     type->tp_name, k, Py_TYPE(v)->tp_name);
        return -1;
    }
    tpl->n = i;
    return 0;
}

static PyObject *
rebuild_dict(PyTypeObject *type, const ttemplate *tpl)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < tpl->n; i++) {
        const tentry *e = &tpl->entries[i];
        PyObject *v = NULL;
        switch (e->kind) {
        case T_METHOD: v = PyDescr_NewMethod(type, e->p); break;
        case T_CLASSMETHOD: v = PyDescr_NewClassMethod(type, e->p); break;
        case T_WRAPPER: v = PyDescr_NewWrapper(type, e->p, e->q); break;
        case T_GETSET: v = PyDescr_NewGetSet(type, e->p); break;
        case T_MEMBER: v = PyDescr_NewMember(type, e->p); break;
        case T_NEW: v = PyCFunction_NewEx(e->p, (PyObject *)type, NULL); break;
        case T_STR: v = PyUnicode_FromString(e->p); break;
        case T_NONE: v = Py_NewRef(Py_None); break;
        }
        PyObject *key = v ? PyUnicode_InternFromString(e->name) : NULL;
        int r = key ? PyDict_SetItem(dict, key, v) : -1;
        Py_XDECREF(key);
        Py_XDECREF(v);
        if (r < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

/* Record `type` in this interpreter's object.__subclasses__(), as type_ready's add_subclass
 * does (key: the type's address, value: a weak reference to it, which lives in this
 * interpreter's weakref list of the type). */
static PyObject **object_subclasses_ref(PyInterpreterState *interp);

static int
add_to_object_subclasses(PyInterpreterState *interp, PyTypeObject *type)
{
    PyObject **subclasses = object_subclasses_ref(interp);
    PyObject *key = PyLong_FromVoidPtr(type);
    PyObject *ref = key ? PyWeakref_NewRef((PyObject *)type, NULL) : NULL;
    if (ref != NULL && *subclasses == NULL) {
        *subclasses = PyDict_New();
    }
    int r = (ref && *subclasses) ? PyDict_SetItem(*subclasses, key, ref) : -1;
    Py_XDECREF(key);
    Py_XDECREF(ref);
    return r;
}

#if defined(SS_FROZEN_GUARD_EMULATED_BUILTIN)
/* ================================ 3.12 ================================================== */

/* Our types take the last slots of interp->types.builtins[]: CPython assigns its own from 0
 * upwards (num_builtins_initialized), all during runtime initialization. */
static size_t
slot_index(size_t k)
{
    return _Py_MAX_STATIC_BUILTIN_TYPES - 1 - k;
}

static static_builtin_state *
slot_of(PyInterpreterState *interp, size_t index)
{
    return &interp->types.builtins[index];
}

/* Check that the compiled-in layout of interp->types matches the running interpreter:
 * builtin types must be found at their index, with the same tp_dict PyType_GetDict() gives. */
static int
check_layout(PyInterpreterState *interp)
{
    PyTypeObject *probes[] = {&PyBaseObject_Type, &PyType_Type, &PyDict_Type, &PyLong_Type,
                              &PyUnicode_Type, &PyTuple_Type, &PyFrozenSet_Type};
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        PyTypeObject *t = probes[i];
        if (!(t->tp_flags & _Py_TPFLAGS_STATIC_BUILTIN) || t->tp_subclasses == NULL) {
            goto bad;
        }
        size_t index = (size_t)t->tp_subclasses - 1;
        if (index >= _Py_MAX_STATIC_BUILTIN_TYPES || slot_of(interp, index)->type != t) {
            goto bad;
        }
        PyObject *d = PyType_GetDict(t);
        int same = d != NULL && d == slot_of(interp, index)->tp_dict;
        Py_XDECREF(d);
        if (!same) {
            goto bad;
        }
    }
    if (interp->types.num_builtins_initialized > _Py_MAX_STATIC_BUILTIN_TYPES - SS_GUARD_MAX_TYPES) {
        goto bad;
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ImportError,
                    "subsandbox._core: this CPython's per-interpreter type state does not "
                    "have the layout it was compiled against (interp->types.builtins)");
    return -1;
}

/* Make a tuple of the type (tp_bases, tp_mro) safe to read from every interpreter:
 * immortal (refcounting never writes it) and untracked (no GC ever writes its header). */
static void
seal_shared_tuple(PyObject *tuple)
{
    if (tuple == NULL) {
        return;
    }
    PyObject_GC_UnTrack(tuple);
    Py_SET_REFCNT(tuple, _Py_IMMORTAL_REFCNT);
}

/* object's per-interpreter tp_subclasses (a static builtin type: its slot is in
 * interp->types, at the index its tp_subclasses holds). */
static PyObject **
object_subclasses_ref(PyInterpreterState *interp)
{
    return &slot_of(interp, (size_t)PyBaseObject_Type.tp_subclasses - 1)->tp_subclasses;
}

static int
first_ready(PyInterpreterState *interp, PyTypeObject *const *types, size_t n)
{
    if (check_layout(interp) < 0) {
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        if (slot_of(interp, slot_index(k))->type != NULL) {
            PyErr_SetString(PyExc_ImportError, "subsandbox._core: type slot already in use");
            return -1;
        }
    }
    for (size_t k = 0; k < n; k++) {
        PyTypeObject *t = types[k];
        size_t index = slot_index(k);
        SS_FROZEN_MAKE_STATIC_IMMORTAL(t);
        if (PyType_Ready(t) < 0) {
            return -1;
        }
        if (t->tp_subclasses != NULL || t->tp_dict == NULL || t->tp_cache != NULL) {
            PyErr_Format(PyExc_ImportError, "subsandbox._core: unexpected state of %s",
                         t->tp_name);
            return -1;
        }
        /* The version tag comes from a runtime-global counter: take it now, under our lock,
         * so that no later attribute lookup in any interpreter assigns one. */
        if (!PyUnstable_Type_AssignVersionTag(t)) {
            PyErr_Format(PyExc_ImportError, "subsandbox._core: no version tag for %s",
                         t->tp_name);
            return -1;
        }
        if (capture_template(t, t->tp_dict, &templates[k]) < 0) {
            return -1;
        }
        seal_shared_tuple(t->tp_bases);
        seal_shared_tuple(t->tp_mro);
        /* Move the three per-interpreter fields into this interpreter's slot, then switch
         * the type over. Nothing else can see the type yet: other interpreters wait on the
         * lock to import the module. */
        static_builtin_state *st = slot_of(interp, index);
        st->type = t;
        st->tp_dict = t->tp_dict;           /* its entry in object.__subclasses__() holds */
        st->tp_weaklist = t->tp_weaklist;   /* the weakref PyType_Ready made: moved along */
        st->tp_subclasses = NULL;
        t->tp_dict = NULL;
        t->tp_weaklist = NULL;
        t->tp_subclasses = (void *)(index + 1);
        t->tp_flags |= _Py_TPFLAGS_STATIC_BUILTIN;
    }
    return 0;
}

static int
interp_ready(PyInterpreterState *interp, PyTypeObject *const *types, size_t n)
{
    if (check_layout(interp) < 0) {
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        PyTypeObject *t = types[k];
        size_t index = (size_t)t->tp_subclasses - 1;
        static_builtin_state *st = slot_of(interp, index);
        if (st->type == t) {
            continue;       /* already done in this interpreter (module re-imported) */
        }
        if (index != slot_index(k) || st->type != NULL || st->tp_dict != NULL) {
            PyErr_SetString(PyExc_ImportError, "subsandbox._core: type slot already in use");
            return -1;
        }
        PyObject *dict = rebuild_dict(t, &templates[k]);
        if (dict == NULL) {
            return -1;
        }
        st->type = t;
        st->tp_dict = dict;
        if (add_to_object_subclasses(interp, t) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
ready_locked(PyInterpreterState *interp, PyTypeObject *const *types, size_t n)
{
    if (!(types[0]->tp_flags & Py_TPFLAGS_READY)) {
        if (!is_main_interpreter(interp)) {
            return refuse_first_in_subinterpreter(types[0]);
        }
        return first_ready(interp, types, n);
    }
    return interp_ready(interp, types, n);
}

static const char *
mechanism(void)
{
    return "3.12: emulated static builtin type (slot of interp->types.builtins)";
}

static Py_ssize_t
describe_index(PyTypeObject *type)
{
    return (Py_ssize_t)type->tp_subclasses - 1;
}

static int
describe_has_slot(PyTypeObject *type)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    return slot_of(interp, (size_t)type->tp_subclasses - 1)->type == type;
}

/* 3.12: a version tag is valid while Py_TPFLAGS_VALID_VERSION_TAG is set. */
static unsigned int
describe_version_tag(PyTypeObject *type)
{
    return (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? type->tp_version_tag : 0;
}

/* 3.12 keeps no count of the interpreters holding a static type's state. */
static long long
describe_interp_count(PyTypeObject *type, int builtin)
{
    (void)type;
    (void)builtin;
    return -1;
}

#elif defined(SS_FROZEN_GUARD_MANAGED_EXT)
/* ================================ 3.13+ ================================================= */

static managed_static_type_state *
ext_slot(PyInterpreterState *interp, size_t index)
{
    return &interp->types.for_extensions.initialized[index];
}

/* _PyStaticType_InitForExtension() takes the index of a new type from the *current
 * interpreter's* for_extensions.next_index, while the slots it indexes are the same in
 * every interpreter: _datetime readied first in a subinterpreter (indices 0..5 there) and
 * our types readied first in main (next_index 0 there) would share slots. So we choose a
 * slot free in the whole runtime, from the top (_datetime takes the lowest six), and put
 * next_index back afterwards. There is no bound check in release builds: we check. */
static Py_ssize_t
pick_ext_index(PyInterpreterState *interp)
{
    for (size_t i = _Py_MAX_MANAGED_STATIC_EXT_TYPES; i-- > 0;) {
        if (_PyRuntime.types.managed_static.types[_Py_MAX_MANAGED_STATIC_BUILTIN_TYPES + i].type == NULL
            && ext_slot(interp, i)->type == NULL)
        {
            return (Py_ssize_t)i;
        }
    }
    return -1;
}

static int
first_ready_one(PyInterpreterState *interp, PyTypeObject *t, ttemplate *tpl)
{
    Py_ssize_t index = pick_ext_index(interp);
    if (index < 0) {
        PyErr_Format(PyExc_ImportError,
                     "subsandbox._core: no free managed static type slot for %s "
                     "(CPython has %d for all extensions; _datetime takes 6)",
                     t->tp_name, _Py_MAX_MANAGED_STATIC_EXT_TYPES);
        return -1;
    }
    PyMutex_Lock(&interp->types.mutex);
    size_t saved = interp->types.for_extensions.next_index;
    interp->types.for_extensions.next_index = (size_t)index;
    PyMutex_Unlock(&interp->types.mutex);

    int r = _PyStaticType_InitForExtension(interp, t);

    PyMutex_Lock(&interp->types.mutex);
    interp->types.for_extensions.next_index = saved;
    PyMutex_Unlock(&interp->types.mutex);
    if (r < 0) {
        return -1;
    }
    if ((size_t)t->tp_subclasses - 1 != (size_t)index || ext_slot(interp, (size_t)index)->type != t) {
        PyErr_Format(PyExc_ImportError, "subsandbox._core: %s did not get slot %zd",
                     t->tp_name, index);
        return -1;
    }
    /* The record every other interpreter rebuilds its tp_dict from (interp_ready_one). */
    PyObject *dict = ext_slot(interp, (size_t)index)->tp_dict;
    if (dict == NULL) {
        PyErr_Format(PyExc_ImportError, "subsandbox._core: %s has no tp_dict", t->tp_name);
        return -1;
    }
    return capture_template(t, dict, tpl);
}

/* Give this interpreter its state of an already readied type, as
 * _PyStaticType_InitForExtension(initial=0) would, minus its writes into the type object.
 *
 * That call runs type_ready(type, initial=0), which ends with
 * `type->tp_flags |= Py_TPFLAGS_READY` (an unconditional store into the process-wide
 * type, of the value it already has) and may store tp_new/tp_hash/ob_type again: plain
 * writes while every other interpreter reads tp_flags on each attribute lookup, without a
 * lock. ThreadSanitizer reports it (docs/sanitizers.md). So we do its per-interpreter part
 * ourselves, writing only into this interpreter's memory and one atomic counter:
 *   - managed_static_type_state_init(initial=0): count this interpreter in the runtime's
 *     interp_count (atomically, as CPython does), fill this interpreter's slot, and
 *     for_extensions.num_initialized++ (under interp->types.mutex, as its clear does);
 *   - type_ready_set_dict + type_ready_fill_dict + type_ready_set_new: a tp_dict of this
 *     interpreter's own objects, rebuilt from the main interpreter's (same C definitions,
 *     same order, same keys);
 *   - type_ready_add_subclasses: the entry in this interpreter's object.__subclasses__().
 * type_ready's other steps have nothing to do for a ready static type (bases, mro and the
 * version tag are set once, by the main interpreter; tp_hash and tp_new are set in our
 * definitions). At interpreter finalization CPython's _PyTypes_FiniExtTypes undoes exactly
 * this (it finds the slot, interp_count > 1: not final), as for any managed static type. */
static int
interp_ready_one(PyInterpreterState *interp, PyTypeObject *t, const ttemplate *tpl)
{
    size_t index = (size_t)t->tp_subclasses - 1;
    if (!(t->tp_flags & _Py_TPFLAGS_STATIC_BUILTIN) || index >= _Py_MAX_MANAGED_STATIC_EXT_TYPES) {
        PyErr_Format(PyExc_ImportError, "subsandbox._core: unexpected state of %s", t->tp_name);
        return -1;
    }
    managed_static_type_state *st = ext_slot(interp, index);
    if (st->type == t) {
        return 0;           /* already done in this interpreter (module re-imported) */
    }
    if (st->type != NULL) {
        PyErr_Format(PyExc_ImportError,
                     "subsandbox._core: the managed static type slot %zu of %s is used by "
                     "%s in this interpreter", index, t->tp_name, st->type->tp_name);
        return -1;
    }
    if (tpl->entries == NULL) {
        PyErr_Format(PyExc_ImportError,
                     "subsandbox._core: no record of %s's tp_dict from the main interpreter",
                     t->tp_name);
        return -1;
    }
    PyObject *dict = rebuild_dict(t, tpl);
    if (dict == NULL) {
        return -1;
    }
    size_t full_index = _Py_MAX_MANAGED_STATIC_BUILTIN_TYPES + index;
    if (_PyRuntime.types.managed_static.types[full_index].type != t) {
        Py_DECREF(dict);
        PyErr_Format(PyExc_ImportError, "subsandbox._core: runtime slot %zu is not %s's",
                     index, t->tp_name);
        return -1;
    }
    (void)_Py_atomic_add_int64(&_PyRuntime.types.managed_static.types[full_index].interp_count, 1);
    st->isbuiltin = 0;
    st->readying = 0;
    st->ready = 0;
    st->tp_dict = dict;
    st->tp_subclasses = NULL;
    st->tp_weaklist = NULL;
    st->type = t;           /* from now on this interpreter's lookups find the slot */
    PyMutex_Lock(&interp->types.mutex);
    interp->types.for_extensions.num_initialized++;
    PyMutex_Unlock(&interp->types.mutex);
    /* On failure the slot stays filled: finalization clears it as it does any other. */
    return add_to_object_subclasses(interp, t);
}

static PyObject **
object_subclasses_ref(PyInterpreterState *interp)
{
    size_t index = (size_t)PyBaseObject_Type.tp_subclasses - 1;
    return &interp->types.builtins.initialized[index].tp_subclasses;
}

static int
ready_locked(PyInterpreterState *interp, PyTypeObject *const *types, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        PyTypeObject *t = types[k];
        if (!(t->tp_flags & Py_TPFLAGS_READY)) {
            if (!is_main_interpreter(interp)) {
                return refuse_first_in_subinterpreter(t);
            }
            if (first_ready_one(interp, t, &templates[k]) < 0) {
                return -1;
            }
        }
        else if (interp_ready_one(interp, t, &templates[k]) < 0) {
            return -1;
        }
    }
    return 0;
}

static const char *
mechanism(void)
{
    return "3.13+: managed static extension type (_PyStaticType_InitForExtension in main, "
           "per-interpreter state filled without writing the type)";
}

static Py_ssize_t
describe_index(PyTypeObject *type)
{
    return (Py_ssize_t)type->tp_subclasses - 1;
}

static int
describe_has_slot(PyTypeObject *type)
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    return ext_slot(interp, (size_t)type->tp_subclasses - 1)->type == type;
}

/* 3.13+: a version tag is valid when it is not 0 (the flag is no longer used). */
static unsigned int
describe_version_tag(PyTypeObject *type)
{
    return type->tp_version_tag;
}

/* 3.13+: the runtime's count of the interpreters holding state of this managed static
 * type: one of ours (an extension type) or, with `builtin`, one of CPython's. */
static long long
describe_interp_count(PyTypeObject *type, int builtin)
{
    size_t index = (size_t)type->tp_subclasses - 1;
    size_t full_index = builtin ? index : _Py_MAX_MANAGED_STATIC_BUILTIN_TYPES + index;
    return (long long)_PyRuntime.types.managed_static.types[full_index].interp_count;
}

#else
#  error "pyversion.h chooses no type guard for this CPython"
#endif

/* ---- entry points ----------------------------------------------------------------------- */

int
ss_guard_ready_types(PyTypeObject *const *types, size_t n)
{
    if (n > SS_GUARD_MAX_TYPES) {
        PyErr_SetString(PyExc_SystemError, "too many guarded types");
        return -1;
    }
    ss_mutex_lock_with_gil(&guard_lock);
    int r = ready_locked(PyInterpreterState_Get(), types, n);
    if (r == 0) {
        /* Done by the main interpreter's import, which comes first (ready_locked). */
        guard_abstractmethods_setter();
    }
    pthread_mutex_unlock(&guard_lock);
    return r;
}

PyObject *
ss_guard_describe(PyTypeObject *type)
{
    PyObject *d = PyType_GetDict(type);   /* this interpreter's tp_dict */
    if (d == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "no per-interpreter tp_dict");
        }
        return NULL;
    }
    PyObject *res = Py_BuildValue(
        "{s:s,s:n,s:O,s:O,s:O,s:K,s:O,s:I,s:O,s:O,s:L,s:L}",
        "mechanism", mechanism(),
        "index", describe_index(type),
        "static_builtin_flag", (type->tp_flags & _Py_TPFLAGS_STATIC_BUILTIN) ? Py_True : Py_False,
        "has_slot_here", describe_has_slot(type) ? Py_True : Py_False,
        "type_immortal", SS_FROZEN_IS_IMMORTAL(type) ? Py_True : Py_False,
        "dict_address", (unsigned long long)(uintptr_t)d,
        "mro_immortal", SS_FROZEN_IS_IMMORTAL(type->tp_mro) ? Py_True : Py_False,
        "version_tag", describe_version_tag(type),
        "basetype", (type->tp_flags & Py_TPFLAGS_BASETYPE) ? Py_True : Py_False,
        "abstractmethods_guarded", abstractmethods_setter_guarded() ? Py_True : Py_False,
        /* interpreters holding state of this type / of `object` (a static builtin type),
         * as the runtime counts them (3.13+; -1 on 3.12): tests/test_fork.py */
        "interp_count", describe_interp_count(type, 0),
        "object_interp_count", describe_interp_count(&PyBaseObject_Type, 1));
    Py_DECREF(d);
    return res;
}

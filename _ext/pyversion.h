/* Every place where the CPython versions we support (3.12, 3.13, 3.14+) differ.
 * No other file of _ext/ tests PY_VERSION_HEX. */
#ifndef SUBSANDBOX_PYVERSION_H
#define SUBSANDBOX_PYVERSION_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#  error "subsandbox needs CPython 3.12 or newer"
#endif


/* ---- frozen types ---- */
/* frozendict / immutableset (frozen.c, frozen_guard.c, filler_stub.c). See docs/type-guard.md. */

/* How frozen_guard.c gives the static types per-interpreter type state (tp_dict,
 * tp_subclasses, tp_weaklist), the way CPython does for its own static builtin types. */
#if PY_VERSION_HEX >= 0x030D0000
   /* 3.13+: the managed static extension types that _datetime uses
    * (_PyStaticType_InitForExtension, interp->types.for_extensions). */
#  define SS_FROZEN_GUARD_MANAGED_EXT 1
#else
   /* 3.12: a slot of interp->types.builtins[] (static_builtin_state) filled by us. */
#  define SS_FROZEN_GUARD_EMULATED_BUILTIN 1
#endif

/* Statically allocated objects of extensions are immortal from 3.13 on (PyObject_HEAD_INIT);
 * on 3.12 only the core's are, so the type objects are made immortal before first use. */
#if PY_VERSION_HEX < 0x030D0000
#  define SS_FROZEN_MAKE_STATIC_IMMORTAL(op) Py_SET_REFCNT((PyObject *)(op), _Py_IMMORTAL_REFCNT)
#else
#  define SS_FROZEN_MAKE_STATIC_IMMORTAL(op) ((void)(op))
#endif

/* Is `op` immortal (refcounting never writes to it)? */
#if PY_VERSION_HEX >= 0x030E0000
#  define SS_FROZEN_IS_IMMORTAL(op) PyUnstable_IsImmortal((PyObject *)(op))
#else
#  define SS_FROZEN_IS_IMMORTAL(op) _Py_IsImmortal((PyObject *)(op))
#endif

/* TEST-ONLY (filler_stub.c): make a fresh, zeroed object immortal. */
#if PY_VERSION_HEX >= 0x030E0000
   /* written blind: 3.14 splits the refcount into ob_refcnt + ob_flags */
#  define SS_FROZEN_STUB_SET_IMMORTAL(op) \
      do { (op)->ob_refcnt = _Py_IMMORTAL_INITIAL_REFCNT; (op)->ob_flags = _Py_IMMORTAL_FLAGS; } while (0)
#else
#  define SS_FROZEN_STUB_SET_IMMORTAL(op) Py_SET_REFCNT((op), _Py_IMMORTAL_REFCNT)
#endif

/* Size of the GC header in front of a GC object (PyGC_Head: _gc_next, _gc_prev) in the
 * default (GIL) build of 3.12-3.14. Free-threaded builds are not supported. */
#define SS_FROZEN_GC_HEAD_SIZE (2 * sizeof(uintptr_t))

/* The cached hash of a str (-1 when not computed yet). */
#define SS_FROZEN_STR_CACHED_HASH(op) (((PyASCIIObject *)(op))->hash)

#endif /* SUBSANDBOX_PYVERSION_H */

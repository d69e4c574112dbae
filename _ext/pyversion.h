/* Every place where the CPython versions we support (3.12, 3.13, 3.14+) differ.
 * No other file of _ext/ tests PY_VERSION_HEX.
 *
 * Checked against the installed headers of 3.12.1 and 3.13.0 (Include/object.h,
 * Include/cpython/unicodeobject.h, bytesobject.h, tupleobject.h, longintrepr.h) and, for
 * the 3.14 branch, against the headers of 3.14.7 (Include/object.h with the split
 * ob_refcnt/ob_overflow/ob_flags, Include/refcount.h, Include/cpython/tupleobject.h with
 * ob_hash), where every branch below is compiled and tested (tools/build-cpython.sh).
 */
#ifndef SUBSANDBOX_PYVERSION_H
#define SUBSANDBOX_PYVERSION_H

#include <Python.h>

/* ---- the CPython this module was built for (module.c refuses any other at import) ----
 * pyinternal.c, internal.c and frozen_guard.c read structures of Include/internal/, whose
 * layout CPython does not keep stable even between patch releases. Found when a build
 * for 3.13.0 was loaded by a 3.13.5 (its managed static type slots read wrong: "did not
 * get slot 9"). So the running CPython must be the very one whose headers compiled us,
 * release level included (a pre-release's internals may still change before the final
 * one); Py_Version is the running one's PY_VERSION_HEX. */
#ifndef SS_BUILT_FOR_VERSION_HEX  /* -D'd only by tests/test_packaging.py, to test the refusal */
#  define SS_BUILT_FOR_VERSION_HEX PY_VERSION_HEX
#endif
#define SS_RUNNING_VERSION_HEX ((unsigned long)Py_Version)

#if PY_VERSION_HEX < 0x030C0000
#  error "subsandbox needs CPython 3.12 or newer"
#endif

#ifdef Py_GIL_DISABLED
/* Free-threaded objects have a different header (ob_tid, ob_ref_local/shared...). */
#  error "subsandbox does not support free-threaded (Py_GIL_DISABLED) builds"
#endif
#ifdef Py_TRACE_REFS
#  error "subsandbox does not support Py_TRACE_REFS builds (objects are linked into a per-interpreter list)"
#endif
#if SIZEOF_VOID_P != 8
#  error "subsandbox needs a 64-bit build"
#endif

/* ---- immortality ----------------------------------------------------------------------
 * An object of an arena is immortal from birth: Py_INCREF/Py_DECREF/Py_SET_REFCNT never
 * write to it, it never reaches tp_dealloc and so never enters a free list.
 *   3.12/3.13: ob_refcnt is a Py_ssize_t; immortal value _Py_IMMORTAL_REFCNT (UINT_MAX on
 *              64-bit); _Py_IsImmortal tests the low 32 bits as negative.
 *   3.14+:     ob_refcnt (uint32) + ob_overflow (uint16) + ob_flags (uint16); immortal
 *              objects have ob_refcnt >= 2**31, statically allocated ones carry
 *              _Py_STATICALLY_ALLOCATED_FLAG | _Py_IMMORTAL_FLAGS in ob_flags, like the
 *              runtime's own static objects (PyObject_HEAD_INIT uses
 *              _Py_STATIC_IMMORTAL_INITIAL_REFCNT). Arena memory is not from any
 *              allocator, so "statically allocated" is the truth for it. */
#if PY_VERSION_HEX >= 0x030E0000
static inline void
ss_set_immortal(PyObject *op)
{
    op->ob_refcnt = (uint32_t)_Py_IMMORTAL_INITIAL_REFCNT;
    op->ob_overflow = 0;
    op->ob_flags = (uint16_t)(_Py_IMMORTAL_FLAGS | _Py_STATICALLY_ALLOCATED_FLAG);
}
#else
static inline void
ss_set_immortal(PyObject *op)
{
    op->ob_refcnt = _Py_IMMORTAL_REFCNT;
}
#endif

/* ---- str ------------------------------------------------------------------------------
 * A shared str is pre-marked as interned, so that no intern path of any interpreter
 * (sys.intern, setattr, keyword names, compile) ever writes to it or puts it into its
 * interned dict: every version returns at once for an already interned string
 * (3.12 _PyUnicode_InternInPlace, 3.13+ intern_common: "Is it already interned?").
 *   state.interned = SSTATE_INTERNED_IMMORTAL_STATIC (3 in 3.12-3.14): the state of the
 *                    runtime's static strings; _PyUnicode_ClearInterned of a dying
 *                    interpreter only walks its own dict, which never holds ours.
 *   state.statically_allocated = 1: a 3.13 --with-pydebug build asserts it for
 *                    IMMORTAL_STATIC strings (_PyUnicode_CheckConsistency); in every
 *                    version it also makes unicode_dealloc refuse to free the string.
 * The field exists since 3.12 (PEP 683). */
#define SS_STR_INTERNED_STATE SSTATE_INTERNED_IMMORTAL_STATIC
static inline void
ss_str_mark_shared(PyObject *op)
{
    _PyASCIIObject_CAST(op)->state.interned = SS_STR_INTERNED_STATE;
    _PyASCIIObject_CAST(op)->state.statically_allocated = 1;
}

/* ---- the runtime's one-character strings --------------------------------------------
 * 3.13+ intern the Latin-1 singletons at runtime start (state
 * SSTATE_INTERNED_IMMORTAL_STATIC, never written again), so interning in any interpreter
 * returns them as they are, and share() uses them. 3.12 does not: a code object made
 * from a tuple that holds one interns it in place (Objects/codeobject.c,
 * intern_string_constants, intern_strings), and for the eleven letters with an equal
 * static identifier (_Py_ID(a), _Py_ID(x)...) that stores the identifier into the tuple.
 * There a shared one-character string is that identifier, or a copy of ours, pre-marked
 * interned like every other. Found by a hunt with the tuple's pages read-only. */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_LATIN1_SINGLETONS_INTERNED 1
#else
#  define SS_LATIN1_SINGLETONS_INTERNED 0
#endif

/* ---- the process's "died of Ctrl-C" flag ----------------------------------------------
 * Py_RunMain() exits by SIGINT when _PyRuntime.signals.unhandled_keyboard_interrupt is set
 * after finalization. The main module's run sets it when it ends in KeyboardInterrupt.
 *   3.12/3.13: every run of a string or file (run_eval_code_obj: exec() of a str, and each
 *          interpreter's boot source) in *any* interpreter first resets it to 0, so a
 *          sandbox that starts or runs exec() while the main interpreter exits after an
 *          unhandled Ctrl-C turns the exit status into 1 (Python/pythonrun.c, 3.13.5).
 *   3.14:  only the printing of an unhandled KeyboardInterrupt sets it
 *          (_Py_HandleSystemExitAndKeyboardInterrupt), and no run resets it. */
#if PY_VERSION_HEX >= 0x030E0000
#  define SS_RUN_RESETS_CTRL_C_EXIT 0
#else
#  define SS_RUN_RESETS_CTRL_C_EXIT 1
#endif

/* ---- unhashable set elements -----------------------------------------------------------
 * 3.14 rewords the TypeError of an unhashable set element: "cannot use 'list' as a set
 * element (unhashable type: 'list')" (Objects/setobject.c set_unhashable_type), and a
 * dict's "... as a dict key (...)". 3.12/3.13 leave the hash's own TypeError. */
#if PY_VERSION_HEX >= 0x030E0000
#  define SS_SET_REWORDS_UNHASHABLE 1
#else
#  define SS_SET_REWORDS_UNHASHABLE 0
#endif

/* ---- tuple ----------------------------------------------------------------------------
 * 3.14 caches the hash of a tuple in PyTupleObject.ob_hash (-1: not computed yet), filled
 * lazily by tuple_hash(): a shared tuple must have it filled before it is published (and
 * must never be left at 0, which would read as "hash is 0"). 3.12/3.13 have no cache. */
#if PY_VERSION_HEX >= 0x030E0000
#  define SS_TUPLE_CACHES_HASH 1
static inline void
ss_tuple_reset_hash(PyObject *op)
{
    ((PyTupleObject *)op)->ob_hash = -1;
}
#else
#  define SS_TUPLE_CACHES_HASH 0
static inline void
ss_tuple_reset_hash(PyObject *op)
{
    (void)op;
}
#endif

/* ---- bytes ----------------------------------------------------------------------------
 * PyBytesObject.ob_shash (deprecated since 3.11, still present in 3.12-3.14) caches the
 * hash; -1 means "not computed". A fresh arena object is zeroed, so it is reset to -1 and
 * then filled by hashing the copy before publication. */
static inline void
ss_bytes_reset_hash(PyObject *op)
{
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)op)->ob_shash = -1;
    _Py_COMP_DIAG_POP
}

/* ---- int ------------------------------------------------------------------------------
 * 3.12+: lv_tag = ndigits << 3 | flags; the low 2 bits are the sign, bit 2 is reserved for
 * an immortality mark of the small ints (used from 3.14 on). A copy is never a small int. */
#define SS_LONG_TAG_CLEAR_BITS ((uintptr_t)4)

/* ---- GC header ------------------------------------------------------------------------
 * PyGC_Head is internal; in 3.12-3.14 default builds it is two words (_gc_next,
 * _gc_prev). pyinternal.c checks this against the internal header at compile time.
 * A zeroed header reads as "untracked, not collecting", so no collection of any
 * interpreter ever writes to it. */
#define SS_GC_HEAD_SIZE (2 * sizeof(uintptr_t))

/* Types whose instances carry a managed dict / weakref list in front of the object. */
#if defined(Py_TPFLAGS_PREHEADER)
#  define SS_TPFLAGS_PREHEADER Py_TPFLAGS_PREHEADER
#else
#  define SS_TPFLAGS_PREHEADER (Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF)
#endif

/* ---- locks ----------------------------------------------------------------------------
 * PyMutex is public from 3.13 only; PyThread locks exist everywhere and work without a
 * thread state, so the process-wide structures use them in every version. */

/* ---- frozen types ---- */
/* frozendict / immutableset (frozen.c, frozen_guard.c). See docs/type-guard.md. */

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

/* The cached hash of a str (-1 when not computed yet). */
#define SS_FROZEN_STR_CACHED_HASH(op) (((PyASCIIObject *)(op))->hash)

/* ---- the runtime's interpreter-list lock (HEAD_LOCK; pyinternal.c, fork support) -------
 *   3.12:  a PyThread lock: PyThread_acquire_lock() (pycore_pystate.h's HEAD_LOCK).
 *   3.13+: a PyMutex that HEAD_LOCK takes with _PyMutex_LockTimed(), which is not
 *          exported; the public PyMutex_Lock() takes the same lock but may release the
 *          GIL while it waits, so callers must not hold any lock that a GIL holder could
 *          wait for (lifecycle.c detaches before taking its own locks). */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_HEAD_LOCK(rt) PyMutex_Lock(&(rt)->interpreters.mutex)
#  define SS_HEAD_UNLOCK(rt) PyMutex_Unlock(&(rt)->interpreters.mutex)
#else
#  define SS_HEAD_LOCK(rt) PyThread_acquire_lock((rt)->interpreters.mutex, WAIT_LOCK)
#  define SS_HEAD_UNLOCK(rt) PyThread_release_lock((rt)->interpreters.mutex)
#endif

/* ---- taking a thread's pending asynchronous exception (pyinternal.c) -------------------
 * PyThreadState_SetAsyncExc() stores the exception in tstate->async_exc (public struct)
 * and asks the eval loop to look at it; the eval loop takes it at a bytecode boundary.
 *   3.12:  the request is a per-interpreter flag, interp->ceval.pending.async_exc, "guarded
 *          by the GIL", cleared by the eval loop when it takes the exception
 *          (UNSIGNAL_ASYNC_EXC in Python/ceval_gil.c); left set, every check of the eval
 *          breaker in that interpreter goes the slow way.
 *   3.13+: the request is a bit of the thread's eval breaker, which the eval loop clears
 *          before it exchanges async_exc with NULL: a bit left set is only looked at once. */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_ASYNC_EXC_INTERP_FLAG 0
#else
#  define SS_ASYNC_EXC_INTERP_FLAG 1
#endif

/* ---- who holds HEAD_LOCK while fork() runs (lifecycle.c's pthread_atfork handlers) -----
 *   3.13+: PyOS_BeforeFork() takes HEAD_LOCK just before fork() and PyOS_AfterFork_*()
 *          release it (Modules/posixmodule.c; read in 3.13.5 and 3.14, and checked on
 *          3.13.0: the lock is held when our prepare handler runs). The handlers run in
 *          that thread, inside fork(): they own the list without taking the lock.
 *   3.12:  PyOS_BeforeFork() does not take it: the handlers take it themselves. */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_FORK_HOLDS_HEAD_LOCK 1
#  define SS_HEAD_LOCK_HELD(rt) (((rt)->interpreters.mutex._bits & 1) != 0)
#else
#  define SS_FORK_HOLDS_HEAD_LOCK 0
#endif

/* ---- the runtime's count of interpreters per managed static type (lifecycle.c, fork) --
 *   3.13+: _PyRuntime.types.managed_static.types[i].interp_count counts the interpreters
 *          whose interp->types slot of static type i is initialized (builtins first, then
 *          the extension types); the main interpreter's finalization asserts (pydebug) that
 *          it reaches 0, and for extension types takes "count == 1" as "last one".
 *   3.12:  no such count. */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_RUNTIME_COUNTS_STATIC_TYPES 1
#endif

/* ---- the current thread state, or NULL, without a fatal error (lifecycle.c) ----------
 *   3.12: _PyThreadState_UncheckedGet(); 3.13+: PyThreadState_GetUnchecked(). */
#if PY_VERSION_HEX >= 0x030D0000
#  define SS_TSTATE_UNCHECKED() PyThreadState_GetUnchecked()
#else
#  define SS_TSTATE_UNCHECKED() _PyThreadState_UncheckedGet()
#endif

/* ---- "may this thread run signal handlers?" (queue.c: wait with signal checks) -------
 * _PyOS_IsMainThread(): true in the main thread of the main interpreter, the one thread
 * whose PyErr_CheckSignals() runs handlers. Not public API in any version, but exported
 * (PyAPI_FUNC) in every one we support:
 *   3.12:  declared in the public Include/intrcheck.h (non-limited API), which Python.h
 *          includes; exported from libpython3.12 (checked with nm on 3.12.1).
 *   3.13:  moved to Include/internal/pycore_signal.h by gh-106320 (PR #108605), still
 *          PyAPI_FUNC "Export for '_multiprocessing' shared extension"; exported from
 *          libpython3.13 (nm on 3.13.0; the 3.13.5 header has the same line).
 *   3.14:  the same internal declaration, PyAPI_FUNC, for the same reason (read in 3.14.7,
 *          and compiled and tested against it).
 * The internal header needs Py_BUILD_CORE, so 3.13+ gets the declaration here. There is no
 * public equivalent: PyErr_CheckSignals() is public but only says nothing was pending, and
 * calling it from every waiter would mean waking every waiter periodically. */
#if PY_VERSION_HEX >= 0x030D0000
PyAPI_FUNC(int) _PyOS_IsMainThread(void);
#endif
#define SS_THREAD_HANDLES_SIGNALS() _PyOS_IsMainThread()

/* ---- keyword tuples of Argument Clinic parsers made by a sandbox (pyinternal.c) -------
 *   3.12.0-3.12.3: _PyArg_Parser.kwtuple is made on the first call with keywords, by
 *          the interpreter that makes it and with its allocator (Python/getargs.c
 *          new_kwtuple); _PyArg_Fini() Py_CLEARs the tuples whose parser has
 *          `initialized == 1` at exit (CPython gh-119213, fixed in 3.12.4 by making the
 *          tuple in the main interpreter). Layout: `int initialized` first, and
 *          _PyRuntime.getargs = {PyThread_type_lock mutex, static_parsers} (3.12.1 headers).
 *   3.12.4+: the tuple is the main interpreter's: a sandbox's arena never holds one.
 *   3.13+: the fix, and another layout (_PyOnceFlag once, is_kwtuple_owned): nothing to do. */
#if PY_VERSION_HEX < 0x030D0000
#  define SS_KWTUPLE_MADE_BY_CALLER 1
#else
#  define SS_KWTUPLE_MADE_BY_CALLER 0
#endif

/* ---- a type's name as %T formats it (frozen.c's messages for unhashable keys) -----------
 *   3.13+: PyType_GetFullyQualifiedName: "module.qualname", without the module when it is
 *          "builtins" or "__main__"; tp_name for a static type.
 *   3.12:  neither it nor %T exists: the same, built as 3.13's Objects/typeobject.c
 *          _PyType_GetFullyQualifiedName builds it. */
#if PY_VERSION_HEX >= 0x030D0000
#  define ss_type_fully_qualified_name PyType_GetFullyQualifiedName
#else
static inline PyObject *
ss_type_fully_qualified_name(PyTypeObject *type)
{
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        return PyUnicode_FromString(type->tp_name);
    }
    PyObject *qualname = PyType_GetQualName(type);
    if (qualname == NULL) {
        return NULL;
    }
    PyObject *module = PyObject_GetAttrString((PyObject *)type, "__module__");
    if (module == NULL) {
        Py_DECREF(qualname);
        return NULL;
    }
    PyObject *res;
    if (PyUnicode_Check(module)
        && PyUnicode_CompareWithASCIIString(module, "builtins") != 0
        && PyUnicode_CompareWithASCIIString(module, "__main__") != 0)
    {
        res = PyUnicode_FromFormat("%U.%U", module, qualname);
    }
    else {
        res = Py_NewRef(qualname);
    }
    Py_DECREF(module);
    Py_DECREF(qualname);
    return res;
}
#endif

#endif /* SUBSANDBOX_PYVERSION_H */

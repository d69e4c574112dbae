/* Fork support: what subsandbox does around os.fork() (subsandbox/_lifecycle.py calls it
 * from os.register_at_fork() hooks, in the main interpreter; see "fork" below for why
 * part of it runs in pthread_atfork() handlers instead).
 *
 * _fork_prepare(ids)  before-hook: takes the worker registry's lock and records the ids
 *                     of the sandbox interpreters.
 *   inside fork():    (pthread_atfork, forking thread only) takes the C core's leaf locks
 *                     (so the child's copies are consistent and unlocked) and takes those
 *                     interpreters out of the runtime's interpreter list (pyinternal.c),
 *                     so that PyOS_AfterFork_Child() does not try to clear and free them
 *                     from a thread that is not theirs (which hangs, crashes or aborts on
 *                     3.12 and 3.13); parent: puts them back and unlocks; child: leaves
 *                     them out for good (their copies are never touched), unlocks, and
 *                     marks every channel of the parent unusable (queue.c).
 * _fork_parent()      after-hook in the parent: releases the registry.
 * _fork_child()       after-hook in the child: forgets the parent's workers, unlocks.
 *
 * Sandbox threads go on running in the parent the whole time: nothing waits for them.
 * The Python side guarantees that no sandbox interpreter is created or destroyed between
 * prepare and parent/child (it holds the lock that Sandbox takes for both).
 */
#include "subsandbox.h"
#include "pyinternal.h"
#include "pyversion.h"

#include <errno.h>
#include <pthread.h>

/* ---- churn: the obmalloc arenas of each sandbox interpreter -----------------------------
 *
 * An arena allocator installed once, in the main interpreter, before any sandbox exists
 * (PyObject_SetArenaAllocator, public API) forwards to the previous one and records which
 * interpreter each arena was allocated for, when that interpreter has its own obmalloc.
 * After Sandbox.close() destroyed an interpreter, _reclaim_interpreter(id) hands back the
 * empty pools of the arenas CPython left behind (pyinternal.c says why that is sound). */

typedef struct {
    void *addr;
    size_t size;
    int64_t interp_id;
} arena_rec;

static pthread_mutex_t arenas_lock = PTHREAD_MUTEX_INITIALIZER;    /* leaf */
static arena_rec *arenas;           /* guarded by arenas_lock */
static size_t narenas, caparenas;   /* guarded by arenas_lock */
static PyObjectArenaAllocator base_allocator;
static int allocator_installed;     /* written once, in the main interpreter */

/* The interpreter an arena is being allocated for: the one whose GIL the caller holds,
 * or -1 when it shares the main interpreter's obmalloc (nothing to reclaim then). */
static int64_t
arena_owner(void)
{
    PyThreadState *ts = SS_TSTATE_UNCHECKED();
    if (ts == NULL) {
        return -1;
    }
    PyInterpreterState *interp = PyThreadState_GetInterpreter(ts);
    if (interp == PyInterpreterState_Main()) {
        return -1;
    }
    ss_interp_facts facts;
    if (ss_interp_config(interp, &facts) < 0 || facts.use_main_obmalloc) {
        return -1;
    }
    return PyInterpreterState_GetID(interp);
}

static void *
tracking_alloc(void *ctx, size_t size)
{
    void *p = base_allocator.alloc(base_allocator.ctx, size);
    int64_t owner = p != NULL ? arena_owner() : -1;
    if (owner < 0) {
        return p;
    }
    pthread_mutex_lock(&arenas_lock);
    if (narenas == caparenas) {
        size_t cap = caparenas ? caparenas * 2 : 256;
        /* The raw system allocator: this runs inside obmalloc, under any GIL. */
        arena_rec *grown = realloc(arenas, cap * sizeof(arena_rec));
        if (grown != NULL) {
            arenas = grown;
            caparenas = cap;
        }
    }
    if (narenas < caparenas) {      /* else: untracked, so never reclaimed; still correct */
        arenas[narenas++] = (arena_rec){p, size, owner};
    }
    pthread_mutex_unlock(&arenas_lock);
    return p;
}

static void
tracking_free(void *ctx, void *p, size_t size)
{
    pthread_mutex_lock(&arenas_lock);
    for (size_t i = narenas; i-- > 0;) {
        if (arenas[i].addr == p) {
            arenas[i] = arenas[--narenas];
            break;
        }
    }
    pthread_mutex_unlock(&arenas_lock);
    base_allocator.free(base_allocator.ctx, p, size);
}

static void
install_arena_tracking(void)
{
    if (allocator_installed || PyInterpreterState_Get() != PyInterpreterState_Main()) {
        return;
    }
    PyObject_GetArenaAllocator(&base_allocator);
    PyObjectArenaAllocator mine = {NULL, tracking_alloc, tracking_free};
    PyObject_SetArenaAllocator(&mine);
    allocator_installed = 1;
}

/* _reclaim_interpreter(id) -> bytes: after the interpreter `id` was destroyed, release the
 * empty pools of the arenas it left behind and forget them. */
static PyObject *
reclaim_interpreter(PyObject *module, PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (id == PyInterpreterState_GetID(PyInterpreterState_Get())) {
        PyErr_SetString(PyExc_RuntimeError, "an interpreter cannot reclaim itself");
        return NULL;
    }
    ss_teardown_forget(id);     /* destroyed: no event of it to refuse any more */
    size_t released = 0;
    Py_BEGIN_ALLOW_THREADS
    arena_rec *mine = NULL;
    size_t nmine = 0;
    pthread_mutex_lock(&arenas_lock);
    for (size_t i = 0; i < narenas; i++) {
        nmine += arenas[i].interp_id == id;
    }
    if (nmine > 0 && (mine = malloc(nmine * sizeof(arena_rec))) != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < narenas;) {
            if (arenas[i].interp_id == id) {
                mine[k++] = arenas[i];
                arenas[i] = arenas[--narenas];
            }
            else {
                i++;
            }
        }
    }
    pthread_mutex_unlock(&arenas_lock);
    /* Forgotten: these arenas are never freed by anyone now, so nothing races with us.
     * A keyword tuple that the interpreter made for a parser stays in them (its block is
     * in use, so its pool is never released) and is left to them (pyinternal.h). */
    for (size_t i = 0; mine != NULL && i < nmine; i++) {
        (void)ss_rt_disown_kwtuples_in(mine[i].addr, mine[i].size);
        released += ss_rt_release_empty_pools(mine[i].addr, mine[i].size);
    }
    free(mine);
    Py_END_ALLOW_THREADS
    return PyLong_FromSize_t(released);
}

/* _leak_census(id) -> dict: what the destroyed interpreter `id` left allocated in its
 * arenas (pyinternal_census.c), before _reclaim_interpreter(id) forgets them. A
 * diagnostic for bench/leak_census.py and the tests; main interpreter only. */
static PyObject *
leak_census(PyObject *module, PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError, "_leak_census() runs in the main interpreter");
        return NULL;
    }
    if (ss_rt_interpreter_alive(id)) {
        PyErr_Format(PyExc_ValueError, "interpreter %lld is not destroyed yet: its arenas "
                     "are still in use; call _leak_census() after destroying it", id);
        return NULL;
    }
    /* A copy of its records: once the interpreter is gone its arenas are never freed
     * (pyinternal.c), so they stay readable after the lock is let go. */
    pthread_mutex_lock(&arenas_lock);
    size_t n = 0;
    for (size_t i = 0; i < narenas; i++) {
        n += arenas[i].interp_id == id;
    }
    void **addrs = PyMem_RawMalloc((n ? n : 1) * sizeof(void *));
    size_t *sizes = PyMem_RawMalloc((n ? n : 1) * sizeof(size_t));
    if (addrs != NULL && sizes != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < narenas; i++) {
            if (arenas[i].interp_id == id) {
                addrs[k] = arenas[i].addr;
                sizes[k++] = arenas[i].size;
            }
        }
    }
    pthread_mutex_unlock(&arenas_lock);
    PyObject *result = addrs != NULL && sizes != NULL ? ss_census_run(addrs, sizes, n)
                                                      : PyErr_NoMemory();
    PyMem_RawFree(addrs);
    PyMem_RawFree(sizes);
    return result;
}

/* ---- fork ---------------------------------------------------------------------------
 *
 * Two stages, because a lock of ours held across Python code deadlocks (found by
 * tests/test_fork.py with a SandboxPoolExecutor starting workers during a fork):
 *
 * - os.register_at_fork() hooks (Python, _lifecycle.py) run with the GIL released and
 *   re-taken between them; a thread that holds the main GIL while it waits for one of our
 *   leaf locks (an arena freed by a thread state going away, a Channel made) would stop
 *   the forking thread from ever running the hook that releases it. So the Python hooks
 *   hold only the worker registry (REGISTRY_LOCK waits with the GIL released) and record
 *   the ids of the sandbox interpreters.
 * - pthread_atfork() handlers run inside fork() itself, in the forking thread, which holds
 *   the main GIL (and, 3.13+, HEAD_LOCK): they take the leaf locks (whose holders never
 *   wait for a GIL) and take the interpreters out of the runtime's list only for the
 *   instant of the fork, so a sandbox that starts meanwhile still finds its interpreter.
 *   They act only for the thread that ran _fork_prepare(): a fork() made elsewhere (a C
 *   library, subprocess without preexec_fn) is left as it always was.
 */

static int prepared;                        /* _fork_prepare ran, parent/child not yet */
static pthread_t preparer;                  /* the thread that will call fork() */
static int64_t *fork_ids;                   /* raw memory, `nfork_ids` entries */
static Py_ssize_t nfork_ids;
static int in_fork;                         /* the atfork prepare handler took our locks */
static PyInterpreterState **detached;       /* raw memory, `ndetached` entries */
static Py_ssize_t ndetached;

static int
require_main(const char *what)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_Format(PyExc_RuntimeError, "%s: only the main interpreter can fork", what);
        return -1;
    }
    return 0;
}

static int
is_our_fork(void)
{
    return prepared && pthread_equal(pthread_self(), preparer);
}

static void
atfork_prepare(void)
{
    if (!is_our_fork()) {
        return;
    }
    /* Leaf locks, then the list: the list's lock (3.12) is taken after ours everywhere. */
    ss_arena_fork_prepare();
    ss_queue_fork_prepare();
    ss_parcel_fork_prepare();
    ss_teardown_fork_prepare();
    pthread_mutex_lock(&arenas_lock);
    ndetached = ss_rt_detach_interpreters(fork_ids, nfork_ids, detached);
    in_fork = 1;
}

static void
release_leaf_locks(int in_child)
{
    pthread_mutex_unlock(&arenas_lock);
    ss_teardown_fork_done(in_child);
    ss_parcel_fork_done(in_child);
    ss_queue_fork_done(in_child);
    ss_arena_fork_done(in_child);
}

static void
atfork_parent(void)
{
    if (!is_our_fork() || !in_fork) {
        return;
    }
    ss_rt_reattach_interpreters(detached, ndetached);
    release_leaf_locks(0);
    in_fork = 0;
}

static void
atfork_child(void)
{
    if (!is_our_fork() || !in_fork) {
        return;
    }
    /* The detached interpreters stay out of the list: the child has none of their
     * threads, and their GILs and memory are the parent's. Nor are they counted any more
     * as holders of static types' state (pyinternal.c says why). */
    ss_rt_uncount_detached_interpreters(detached, ndetached);
    release_leaf_locks(1);
    in_fork = 0;
}

static void
forget_prepared(void)
{
    PyMem_RawFree(fork_ids);
    PyMem_RawFree(detached);
    fork_ids = NULL;
    detached = NULL;
    nfork_ids = ndetached = 0;
    prepared = 0;
}

static PyObject *
fork_prepare(PyObject *module, PyObject *arg)
{
    if (require_main("_fork_prepare()") < 0) {
        return NULL;
    }
    if (prepared) {
        PyErr_SetString(PyExc_RuntimeError, "_fork_prepare() called twice without fork");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "_fork_prepare() needs a sequence of ids");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int64_t *ids = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    PyInterpreterState **out = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * sizeof(*out));
    if (ids == NULL || out == NULL) {
        PyMem_RawFree(ids);
        PyMem_RawFree(out);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ids[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (ids[i] == -1 && PyErr_Occurred()) {
            PyMem_RawFree(ids);
            PyMem_RawFree(out);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    ss_registry_fork_prepare();     /* waits with the GIL released */
    fork_ids = ids;
    nfork_ids = n;
    detached = out;
    ndetached = 0;
    preparer = pthread_self();
    prepared = 1;
    return PyLong_FromSsize_t(n);
}

static PyObject *
fork_parent(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    if (!prepared) {
        Py_RETURN_NONE;             /* prepare failed or was not run: nothing to undo */
    }
    if (in_fork) {                  /* fork() failed after our prepare handler: undo it */
        atfork_parent();
    }
    ss_registry_fork_done(0);
    forget_prepared();
    Py_RETURN_NONE;
}

static PyObject *
fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    if (!prepared) {
        Py_RETURN_NONE;
    }
    ss_registry_fork_done(1);
    forget_prepared();
    /* The parent's sandboxes are never destroyed here, so no reclaim disowns the keyword
     * tuples they made; this process's exit would free them (pyinternal.h). */
    pthread_mutex_lock(&arenas_lock);
    for (size_t i = 0; i < narenas; i++) {
        (void)ss_rt_disown_kwtuples_in(arenas[i].addr, arenas[i].size);
    }
    pthread_mutex_unlock(&arenas_lock);
    Py_RETURN_NONE;
}

/* ---- the fork generation ---------------------------------------------------------------
 * Bumped in the child of every fork(), whoever forks (C code too, unlike the hooks above,
 * which act only on the main thread's os.fork()). An object whose lock a fork may leave
 * held, or waited on, by a thread that does not exist in the child (futurecond.c,
 * queue.c) records the generation it was made in, and knows itself inherited when the
 * process's differs. Written only in the child, inside fork(), while it has one thread. */
static uint64_t fork_generation;
static pthread_once_t generation_once = PTHREAD_ONCE_INIT;
static int generation_rc;

static void
bump_fork_generation(void)
{
    fork_generation++;
}

static void
register_fork_generation(void)
{
    generation_rc = pthread_atfork(NULL, NULL, bump_fork_generation);
}

uint64_t
ss_fork_generation(void)
{
    return fork_generation;
}

static int
install_fork_handlers(void)
{
    /* Once per process, whichever interpreter imports _core first. */
    pthread_once(&generation_once, register_fork_generation);
    if (generation_rc != 0) {
        errno = generation_rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    static int installed;           /* written once, in the main interpreter */
    if (installed || PyInterpreterState_Get() != PyInterpreterState_Main()) {
        return 0;
    }
    int err = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    installed = 1;
    return 0;
}

/* _core._run_signal_handlers(): run the Python handlers of signals that arrived and were
 * not handled yet, raising what they raise (KeyboardInterrupt). The main thread calls it
 * between slices of a wait (executor.py): CPython notices a signal by interrupting the
 * blocked call in the main thread or through the main interpreter's eval breaker, and a
 * SIGINT whose C handler ran in another thread sets neither for a main thread already
 * asleep in a lock (measured on 3.12.1: tripped flag set, eval breaker clear, main
 * asleep for good). PyErr_CheckSignals() reads the tripped flag itself; it does nothing
 * outside the main thread of the main interpreter. */
static PyObject *
run_signal_handlers(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    if (PyErr_CheckSignals() < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _core._raw_allocator_hooked(): whether the process's PYMEM_DOMAIN_RAW allocator is not
 * CPython's default. The default has no context (obmalloc.c's PYRAW_ALLOC is {NULL,
 * _PyMem_RawMalloc, ...} in 3.12 and 3.13); the debug hooks (-X dev, PYTHONMALLOC=debug,
 * a debug build) and tracemalloc wrap the allocator they replace and pass it as their
 * context. _backend.py asks it before CPython 3.12 creates an interpreter: 3.12 swaps the
 * raw allocator to the default and back meanwhile, which is harmless only when the two
 * are the same (docs/lifecycle.md, "A CPython 3.12 bug under the debug allocator"). */
static PyObject *
raw_allocator_hooked(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    PyMemAllocatorEx current;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &current);
    return PyBool_FromLong(current.ctx != NULL);
}

/* _core._keep_ctrl_c_exit() -> bool: at exit, after the main module's run ended in an
 * unhandled KeyboardInterrupt, set again the flag that makes the process exit by SIGINT,
 * which a sandbox's run may have reset meanwhile on 3.12/3.13 (pyversion.h,
 * SS_RUN_RESETS_CTRL_C_EXIT). Whether anything was done (False on 3.14+). */
static PyObject *
keep_ctrl_c_exit(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    return PyBool_FromLong(ss_rt_keep_ctrl_c_exit() == 0);
}

static PyMethodDef lifecycle_methods[] = {
    {"_keep_ctrl_c_exit", keep_ctrl_c_exit, METH_NOARGS, NULL},
    {"_run_signal_handlers", run_signal_handlers, METH_NOARGS, NULL},
    {"_raw_allocator_hooked", raw_allocator_hooked, METH_NOARGS, NULL},
    {"_reclaim_interpreter", reclaim_interpreter, METH_O, NULL},
    {"_leak_census", leak_census, METH_O, NULL},
    {"_fork_prepare", fork_prepare, METH_O, NULL},
    {"_fork_parent", fork_parent, METH_NOARGS, NULL},
    {"_fork_child", fork_child, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int
ss_lifecycle_exec(PyObject *module, ss_state *st)
{
    install_arena_tracking();
    if (install_fork_handlers() < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, lifecycle_methods);
}

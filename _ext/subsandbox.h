/* The C core of subsandbox: declarations shared by the files of _ext/.
 *
 * One extension module, subsandbox._core, built from:
 *   module.c    module state, multi-phase init, the function table
 *   pyversion.h every place where CPython versions differ (nowhere else has PY_VERSION_HEX)
 *   sync.h      the helpers of the pthread locks (lock with the GIL held, deadlines,
 *               OSError for a failed init), one copy for every file
 *   arena.c     block allocator and arena lifetime (who holds an arena, when it is freed)
 *   share.c     the deep copy of a value into an arena, with its memo
 *   frozen.c    frozendict and immutableset: static types safe to share between interpreters
 *   queue.c     Channel: the blocking queue of cross-interpreter values
 *   xvalue.c    how a value is carried between interpreters inside a queue
 *   interp.c    the running interpreter's own facts (id, config), and interrupting a sandbox
 *   gate.c      a main-interpreter thread running a task inside a sandbox itself
 *   taskqueue.c SandboxPoolExecutor's pending tasks, waited on without the GIL
 *   futurecond.c the lock and condition of SandboxPoolExecutor's futures, in C
 *
 * Rules every file keeps:
 *   - No PyObject allocated by one interpreter is ever freed, or written, by another.
 *   - Process-wide state is in raw memory (PyMem_Raw*) and guarded by a lock.
 *   - Per-interpreter state (heap types, caches of PyObjects) lives in the module state.
 */
#ifndef SUBSANDBOX_H
#define SUBSANDBOX_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* ---- module state (one per interpreter that imported _core) ---------------------- */

typedef struct {
    PyTypeObject *channel_type;     /* subsandbox._core.Channel, a heap type of this interp */
    PyTypeObject *arena_type;       /* subsandbox._core.Arena */
    PyTypeObject *sharedref_type;   /* subsandbox._core.SharedRef (xvalue.c) */
    PyObject *channel_closed_error; /* subsandbox._core.ChannelClosed */
    PyObject *channel_empty_error;  /* subsandbox._core.ChannelEmpty */
    PyObject *channel_full_error;   /* subsandbox._core.ChannelFull */
    PyObject *not_shareable_error;  /* subsandbox._core.NotShareableError (a TypeError),
                                     * made by module.c before the components run */
    PyObject *interrupt_exc;        /* subsandbox._core._Interrupt, a KeyboardInterrupt
                                     * subclass that interrupt() injects (interp.c) */
    PyObject *gate_failed_error;    /* subsandbox._core._GateFailed (a RuntimeError): the
                                     * sandbox behind a gate could not run or answer a
                                     * task (gate.c); other errors are the task's */
    PyTypeObject *guarded_type;     /* subsandbox._core.guarded_function (seal.c) */
    PyObject *seal_error;           /* NULL until seal() ran; then what a guarded function
                                     * raises after a breach */
    PyObject *seal_breach;          /* NULL while the seal holds; then what broke it */
    PyObject *seal_labels;          /* {address of a sealed class's dict: "the class m.q"} */
    int seal_watcher;               /* this interpreter's dict watcher id, or -1 */
    int64_t interp_id;              /* id of the interpreter that owns this state */
} ss_state;

ss_state *ss_get_state(PyObject *module);
/* The state of the _core module of the *current* interpreter (NULL + error if not imported). */
ss_state *ss_current_state(void);
extern PyModuleDef ss_moduledef;

/* Each component adds its functions and types to the module in its own exec function,
 * and drops its per-interpreter references in its own traverse/clear. */
int ss_queue_exec(PyObject *module, ss_state *st);
int ss_shared_exec(PyObject *module, ss_state *st);
int ss_frozen_exec(PyObject *module, ss_state *st);
int ss_interp_exec(PyObject *module, ss_state *st);
int ss_xvalue_exec(PyObject *module, ss_state *st);
int ss_gate_exec(PyObject *module, ss_state *st);
/* Called by ss_gate_exec: the executor's C parts are registered together. */
int ss_taskqueue_exec(PyObject *module, ss_state *st);
int ss_futurecond_exec(PyObject *module, ss_state *st);

/* ---- interpreter facts (internal.c: the one file that reads CPython internals) ----- */

typedef struct {
    int own_gil;
    int use_main_obmalloc;
    int check_multi_interp_extensions;
    int allow_threads;
    int allow_daemon_threads;
    int allow_fork;
    int allow_exec;
} ss_interp_facts;
int ss_interp_config(PyInterpreterState *interp, ss_interp_facts *out);
/* Whether `interp` has begun its finalization (Py_EndInterpreter or Py_FinalizeEx: past
 * atexit, about to clear its modules). */
int ss_interp_finalizing(PyInterpreterState *interp);

/* ---- arenas and shared objects (arena.c, share.c) --------------------------------- */

typedef struct ss_arena ss_arena;

/* The arena that holds `op`, or NULL when `op` is not an arena object (never sets an error).
 * Borrowed: the caller must already hold a reference that keeps the arena alive, such as
 * being in an interpreter that holds it. */
ss_arena *ss_arena_of(PyObject *op);
/* True for every object any interpreter may read by pointer: arena objects, and the
 * runtime's own static immortal objects (None, True, small ints, static strings...). */
int ss_is_shared(PyObject *op);
/* Reference count of the arena *struct* (not of its objects): in-flight channel items and
 * Arena handles hold one each. Thread-safe, callable without any GIL. */
void ss_arena_incref(ss_arena *a);
void ss_arena_decref(ss_arena *a);
/* Record that interpreter `interp_id` can now reach objects of `a`. -1 with MemoryError. */
int ss_arena_add_holder(ss_arena *a, int64_t interp_id);
/* An interpreter created by subsandbox has been destroyed: it holds nothing any more. */
void ss_interpreter_destroyed(int64_t interp_id);
/* Arena handles crossing between interpreters: wrap a struct into a new handle object of
 * the current interpreter (incref), and get the struct of a handle (borrowed; NULL without
 * error when `op` is not an Arena). */
PyObject *ss_arena_wrap(ss_state *st, ss_arena *a);
ss_arena *ss_arena_unwrap(ss_state *st, PyObject *op);

/* Filling an arena (arena.c): share.c and frozen.c build shared objects through this. */
typedef struct ss_filler ss_filler;
/* A zeroed object of `size` bytes in the arena being filled, preceded by a zeroed,
 * untracked GC header when `type` has Py_TPFLAGS_HAVE_GC; its type is set and its
 * reference count immortal. NULL + MemoryError. */
PyObject *ss_filler_alloc_object(ss_filler *f, PyTypeObject *type, size_t size);
/* Out-of-line bytes (a UTF-8 buffer, a hash table) in the same arena. NULL + MemoryError. */
void *ss_filler_alloc_raw(ss_filler *f, size_t size);
/* Bytes the current block can still hand out: an allocation of at most this much needs
 * no new block. */
size_t ss_filler_room(ss_filler *f);
/* Give back the tail of `op`, the object ss_filler_alloc_object() made last, from `size`
 * bytes (as asked for) down to `new_size`. Every byte of the tail must be zero again.
 * Does nothing when `op` is not the current block's last allocation. */
void ss_filler_shrink_last(ss_filler *f, PyObject *op, size_t size, size_t new_size);

/* ---- additions of core-arena: filling an arena (arena.c), used by share.c ---------- */

/* Adds Arena, _arena_stats, _interpreter_destroyed, _testing_export/_testing_import to
 * the module; called by ss_shared_exec (share.c). */
int ss_arena_exec(PyObject *module, ss_state *st);
/* The process-lifetime arena of share(); never freed. Borrowed. NULL + error. */
ss_arena *ss_default_arena(void);
uint64_t ss_arena_id(ss_arena *a);
/* Start filling `a`: takes the arena's fill lock (waiting without the GIL), refuses a
 * closed arena (ValueError) and a re-entrant fill from the same thread (RuntimeError).
 * NULL + error. Exactly one of commit/abort must follow, in the same thread. */
ss_filler *ss_filler_begin(ss_arena *a);
/* A hint: this share() will allocate about `nbytes` and add about `nstrings` strings
 * (sizes the blocks it adds, and the string memo once instead of growing it step by
 * step). -1 + MemoryError. */
int ss_filler_expect(ss_filler *f, size_t nbytes, size_t nstrings);
/* Keep what was allocated; release the lock. */
void ss_filler_commit(ss_filler *f);
/* Forget everything allocated since begin (the objects were never published): blocks
 * added are unmapped, the bump pointer, object bitmap, string memo and dependencies are
 * rolled back; release the lock. Never sets an error. */
void ss_filler_abort(ss_filler *f);
ss_arena *ss_filler_arena(ss_filler *f);
/* The arena being filled now references objects of `other`: `other` is kept alive (one
 * struct reference) until this arena is freed. No-op for the same or the default arena.
 * -1 + MemoryError. */
int ss_filler_depend(ss_filler *f, ss_arena *other);
/* The arena's memo of strings by value: a str of this arena with these characters and
 * hash, or NULL. */
PyObject *ss_filler_str_find(ss_filler *f, const void *data, int kind, Py_ssize_t len,
                             Py_hash_t hash);
/* Remember a str built in this arena (its hash cached). -1 + MemoryError. */
int ss_filler_str_add(ss_filler *f, PyObject *str);
/* A hint: a str of this hash is looked up soon (share.c looks ahead in a container). */
void ss_filler_str_prefetch(ss_filler *f, Py_hash_t hash);
/* share.c: deep-copy `obj` into `a` (share() uses the default arena); the current
 * interpreter becomes a holder of `a`. New (immortal) reference, or NULL +
 * NotShareableError / MemoryError / ValueError (closed arena). */
PyObject *ss_share_into(ss_state *st, ss_arena *a, PyObject *obj);
/* share.c: the same copy without making the calling interpreter a holder of `a`; the
 * result must never reach this interpreter's Python code: wrap it with ss_sharedref_new. */
PyObject *ss_share_detached(ss_state *st, ss_arena *a, PyObject *obj);
/* xvalue.c: a SharedRef handle to the shared object `obj` (borrowed; arena_of(obj) gets
 * one reference): it crosses like `obj`, and only the receiver gets `obj`. */
PyObject *ss_sharedref_new(ss_state *st, PyObject *obj);

/* ---- frozendict and immutableset (frozen.c) --------------------------------------- */

extern PyTypeObject SS_FrozenDict_Type;
extern PyTypeObject SS_ImmutableSet_Type;
/* Build a shared frozendict / immutableset in the arena being filled. The keys, values
 * and items are already shared objects (immortal, hashes cached), in insertion order,
 * keys distinct. NULL + error. */
PyObject *ss_frozendict_build(ss_filler *f, Py_ssize_t n,
                              PyObject *const *keys, PyObject *const *values);
PyObject *ss_immutableset_build(ss_filler *f, Py_ssize_t n, PyObject *const *items);

/* ---- channels (queue.c) ------------------------------------------------------------ */

typedef struct ss_queue ss_queue;
void ss_queue_incref(ss_queue *q);
void ss_queue_decref(ss_queue *q);
/* interrupt() (interp.c) scheduled an asynchronous exception in the thread state with this
 * thread id of `interp`: wake that thread if it waits in a channel, so that its send() or
 * recv() raises the exception without queueing or taking an item. `interp`'s GIL held. */
void ss_queue_interrupt_waits(PyInterpreterState *interp, unsigned long thread_id);
PyObject *ss_channel_wrap(ss_state *st, ss_queue *q);
ss_queue *ss_channel_unwrap(ss_state *st, PyObject *op);

/* ---- values that cross between interpreters (xvalue.c) ---------------------------- */

typedef struct ss_xvalue ss_xvalue;
/* Encode `obj` into raw memory owned by no interpreter. NULL + NotShareableError (naming
 * the path, e.g. "item[1] is a dict: ...") when something in it may not cross. */
ss_xvalue *ss_xvalue_encode(ss_state *st, PyObject *obj, const char *what);
/* Rebuild the value in the current interpreter. Does not consume `xv`. */
PyObject *ss_xvalue_decode(ss_state *st, ss_xvalue *xv);
/* Free it; callable without any GIL. */
void ss_xvalue_free(ss_xvalue *xv);
/* ---- additions of channels (queue.c's cycle collector and stats); no GIL needed ---- */
/* Raw bytes the encoded value takes. */
size_t ss_xvalue_nbytes(const ss_xvalue *xv);
/* Whether the value holds channel references, and calling `visit` on each of them. */
int ss_xvalue_has_channels(const ss_xvalue *xv);
void ss_xvalue_visit_channels(const ss_xvalue *xv, void (*visit)(ss_queue *, void *),
                              void *arg);

/* ---- sandbox workers (interp.c), for gates (gate.c) ------------------------------ */

/* The interpreter of the sandbox whose worker registered as `interp_id`, or NULL. */
PyInterpreterState *ss_worker_interp(int64_t interp_id);
/* From now on the sandbox's tasks run on the thread state with this thread id: interrupts
 * target it. Returns the previous id (0: no such worker). Needs the caller's GIL. */
unsigned long ss_worker_set_thread(int64_t interp_id, unsigned long thread_id);
/* fn(*args, **kwargs) (kwargs may be NULL) as task `task` (>= 1) of the current
 * interpreter's worker: interruptible by interrupt(interp_id, task) while it runs, as
 * _core._run_task(). Needs the sandbox's GIL. */
PyObject *ss_run_task(uint64_t task, PyObject *fn, PyObject *args, PyObject *kwargs);

/* ---- fork support (lifecycle.c) ------------------------------------------------------
 * Each part with process-wide locks takes them before fork() and releases them after it,
 * in the parent and in the child (in_child = 1), where it also forgets what belongs to
 * the parent's sandboxes. Order: registry, arena, queue ids, parcels. */
void ss_registry_fork_prepare(void);
void ss_registry_fork_done(int in_child);
void ss_arena_fork_prepare(void);
void ss_arena_fork_done(int in_child);
void ss_queue_fork_prepare(void);
void ss_queue_fork_done(int in_child);
/* How many fork()s made this process from the first that imported _core: an object that
 * recorded another value was made before a fork, in the parent (lifecycle.c). */
uint64_t ss_fork_generation(void);
void ss_parcel_fork_prepare(void);
void ss_parcel_fork_done(int in_child);
int ss_lifecycle_exec(PyObject *module, ss_state *st);
/* compile_guard.c: the process-wide audit hook that keeps shared tuples out of compile(). */
int ss_compile_guard_exec(PyObject *module, ss_state *st);
/* seal.c: the policy's enforcement fails closed once its namespaces are rewritten. */
int ss_seal_exec(PyObject *module, ss_state *st);
/* teardown_guard.c: a policy sandbox acts on nothing while it is being finalized. */
int ss_teardown_guard_exec(PyObject *module, ss_state *st);
void ss_teardown_forget(int64_t interp_id);
void ss_teardown_fork_prepare(void);
void ss_teardown_fork_done(int in_child);
/* keyspread.c: counts keys that share a hash, for the caller's unpickler. */
int ss_keyspread_exec(PyObject *module, ss_state *st);

#endif /* SUBSANDBOX_H */

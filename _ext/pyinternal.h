/* Small functions over CPython internals, implemented in pyinternal.c and
 * pyinternal_census.c (with internal.c, the only files built with Py_BUILD_CORE_MODULE). All are safe to call from any interpreter without a lock:
 * they read runtime-global data that never changes after runtime start, except
 * ss_rt_init(), called once under the arena module's global lock. */
#ifndef SUBSANDBOX_PYINTERNAL_H
#define SUBSANDBOX_PYINTERNAL_H

#include <Python.h>

/* True for the runtime's static immortal objects (_PyRuntime.static_objects: small ints,
 * 1-byte bytes, static strings, the empty tuple...) and None/True/False/Ellipsis/
 * NotImplemented. */
int ss_rt_is_static(PyObject *op);
/* The runtime's singleton for a value, or NULL when it has none. Borrowed, immortal. */
PyObject *ss_rt_small_int(long v);
/* The runtime's one-character string that interning in every interpreter leaves as it
 * is (SS_LATIN1_SINGLETONS_INTERNED), or NULL: the caller copies the character. */
PyObject *ss_rt_one_char(Py_UCS4 ch);
/* True for a static object that share() returns as it is: not a static string that
 * interning in some interpreter still writes or replaces (ss_rt_one_char). */
int ss_rt_is_shareable_static(PyObject *op);
PyObject *ss_rt_byte_char(unsigned char ch);
PyObject *ss_rt_empty_bytes(void);
PyObject *ss_rt_empty_tuple(void);
PyObject *ss_rt_empty_str(void);
/* Build the table of static strings; -1 + MemoryError. When the layout is not recognised
 * (a future CPython) the table stays empty and ss_rt_static_str_count() returns -1. */
int ss_rt_init(void);
Py_ssize_t ss_rt_static_str_count(void);
/* The runtime's static interned string with these characters, or NULL. */
PyObject *ss_rt_static_str(const void *data, int kind, Py_ssize_t len, Py_hash_t hash);
/* For tests: all static strings of the table, as a new tuple. */
PyObject *ss_rt_static_strings(void);


/* Fork support (lifecycle.c): take the interpreters with these ids out of the runtime's
 * list of interpreters (at most n, stored in out[], in list order) and put them back.
 * Never the main interpreter. Only from lifecycle.c's pthread_atfork handlers, inside a
 * fork() made by os.fork(): they hold or take HEAD_LOCK as SS_FORK_HOLDS_HEAD_LOCK says. */
Py_ssize_t ss_rt_detach_interpreters(const int64_t *ids, Py_ssize_t n,
                                     PyInterpreterState **out);
void ss_rt_reattach_interpreters(PyInterpreterState *const *saved, Py_ssize_t n);
/* In the child of that fork, for the interpreters left out for good: stop counting them
 * in the runtime's per-type interpreter counts (3.13+; nothing on 3.12). */
void ss_rt_uncount_detached_interpreters(PyInterpreterState *const *gone, Py_ssize_t n);

/* Churn (lifecycle.c): hand back to the kernel the pages of every pool of this obmalloc
 * arena that holds no block. Only for arenas of an interpreter already destroyed. Returns
 * the bytes released. */
size_t ss_rt_release_empty_pools(void *arena, size_t size);

/* Exit safety (lifecycle.c): make every Argument Clinic parser whose keyword tuple lies in
 * this memory range (an obmalloc arena of a sandbox) stop owning it, so that
 * _PyArg_Fini() at exit leaves the tuple alone instead of freeing another interpreter's
 * block with the main interpreter's allocator (pyversion.h, SS_KWTUPLE_MADE_BY_CALLER).
 * Any thread, no GIL needed; returns how many parsers it changed (0 where the running
 * CPython makes no such tuple). */
size_t ss_rt_disown_kwtuples_in(const void *addr, size_t size);

/* Leak census (pyinternal_census.c): call visit(ctx, block, block_size, pool) for every
 * allocated block of every pool in use of this obmalloc arena, in address order; stops
 * and returns -1 when visit does. Only for arenas of an interpreter already destroyed. */
typedef int (*ss_block_visit)(void *ctx, const char *block, size_t size, const char *pool);
int ss_rt_visit_allocated_blocks(void *arena, size_t size, ss_block_visit visit, void *ctx);
size_t ss_rt_pool_size(void);
/* Whether an interpreter with this id exists (not yet destroyed). */
int ss_rt_interpreter_alive(int64_t id);
/* The census of these arenas of a destroyed interpreter, as a dict (pyinternal_census.c
 * says what it holds); NULL + error. Main interpreter, GIL held. */
PyObject *ss_census_run(void *const *addrs, const size_t *sizes, size_t n);

/* The asynchronous exception pending for `ts` (PyThreadState_SetAsyncExc), taken as the
 * eval loop takes it (new reference), or NULL when none is. `ts` is the current thread
 * state, its GIL held. */
PyObject *ss_rt_take_async_exc(PyThreadState *ts);
/* Whether an asynchronous exception is still requested for `ts` (tests): its exception,
 * or on 3.12 the per-interpreter flag that keeps the eval breaker set. */
int ss_rt_async_exc_requested(PyThreadState *ts);

/* Set the flag that makes Py_RunMain() exit by SIGINT, where another interpreter's run may
 * have reset it (SS_RUN_RESETS_CTRL_C_EXIT): 0; -1 where nothing resets it (untouched). */
int ss_rt_keep_ctrl_c_exit(void);

#endif

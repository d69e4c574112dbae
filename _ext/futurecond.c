/* _FutureCondition: the lock and condition of SandboxPoolExecutor's futures, in C.
 *
 * A concurrent.futures.Future guards its state with a threading.Condition over an RLock.
 * Its methods are Python: `with condition` is two Python calls, notify_all() a loop, and
 * wait() some fifteen lines that allocate a lock; a trivial task's round trip goes
 * through a Condition six times (created by the submitter, taken to mark the task
 * running, to settle it and notify, to wait, to read the result), and that was the
 * largest part of the round trip after the thread wake-ups themselves. This type does
 * what the Future needs of a Condition, in C, with the same meaning:
 *
 *   acquire(blocking=True, timeout=-1) / release() / with: a reentrant lock (RLock)
 *   wait(timeout=None) -> bool: releases the lock however deep, waits for a notify,
 *       takes the lock back as deep as it was (RuntimeError if not held)
 *   notify(n=1) / notify_all(): wake waiters, oldest first (RuntimeError if not held)
 *   _is_owned()
 *
 * concurrent.futures.wait()/as_completed() only acquire and release a future's
 * condition; nothing else in the standard library touches it.
 *
 * A waiter notified is woken only when the notifier lets the lock go (release() at
 * depth 0), not at notify(): Future.set_result() notifies while it holds the lock, and a
 * waiter woken earlier would find the lock taken and sleep a second time.
 *
 * Blocking: acquire() and wait() wait with the GIL released and are not interrupted by
 * signals. Nothing blocks under a future's lock (the executor's futures only ever hold
 * it for a few bytecodes), and the main thread waits for a result in slices that run
 * signal handlers (executor.py's _wait_handling_signals), so Ctrl-C still gets through.
 *
 * Locking: `mutex` guards every field; it is only held for a few instructions, and is
 * never held while waiting for the GIL (a thread that must block releases the GIL first,
 * and reacquires it after unlocking). Fork: the child of a fork may inherit the mutex
 * locked by a thread that no longer exists, or waiters that no longer exist: every call
 * first compares the process's fork generation (a pthread_atfork child handler bumps it)
 * with the object's, and starts the object afresh in a new process, keeping who held
 * the lock (a Python RLock held by a parent thread stays held in the child too).
 */
#include "subsandbox.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "pythread.h"

typedef struct waiter {
    struct waiter *next;
    int notified;       /* set by notify(): take it out of the queue, wake at release */
} waiter;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    pthread_cond_t changed;     /* the lock was let go, or a waiter was notified */
    unsigned long owner;        /* PyThread_get_thread_ident() of the holder, 0: free */
    unsigned long depth;        /* how many times the holder took it */
    int sleepers;               /* threads in pthread_cond_wait on `changed` */
    waiter *head;               /* wait()ers not notified yet, oldest first */
    waiter *tail;
    unsigned long generation;   /* fork generation the mutex was made in */
} FutureCondition;

/* Bumped in the child of every fork (pthread_atfork), read under the GIL. */
static unsigned long fork_generation = 0;

static void
after_fork_child(void)
{
    fork_generation++;
}

static void
init_sync(FutureCondition *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->changed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&c->mutex, NULL);
    c->sleepers = 0;
    c->head = c->tail = NULL;
    c->generation = fork_generation;
}

/* Under the GIL: lock `mutex`, made anew first if this is a new process (its waiters
 * were threads of the parent). */
static void
lock_mutex(FutureCondition *c)
{
    if (c->generation != fork_generation) {
        init_sync(c);
    }
    pthread_mutex_lock(&c->mutex);
}

/* A deadline `timeout` seconds from now on CLOCK_MONOTONIC. */
static struct timespec
deadline_after(double timeout)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double whole = (double)(time_t)timeout;
    ts.tv_sec += (time_t)timeout;
    ts.tv_nsec += (long)((timeout - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Under mutex, GIL released: sleep on `changed` until woken or the deadline (NULL: none).
 * 0, or ETIMEDOUT. */
static int
sleep_locked(FutureCondition *c, const struct timespec *deadline)
{
    int rc;
    c->sleepers++;
    if (deadline == NULL) {
        rc = pthread_cond_wait(&c->changed, &c->mutex);
    }
    else {
        rc = pthread_cond_timedwait(&c->changed, &c->mutex, deadline);
    }
    c->sleepers--;
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* Under mutex, GIL released: take the lock for `me` at `depth`, waiting until it is
 * free or the deadline passes. Whether it was taken. */
static int
take_locked(FutureCondition *c, unsigned long me, unsigned long depth,
            const struct timespec *deadline)
{
    while (c->owner != 0) {
        if (sleep_locked(c, deadline) == ETIMEDOUT && c->owner != 0) {
            return 0;
        }
    }
    c->owner = me;
    c->depth = depth;
    return 1;
}

/* Under mutex: let the lock go, and wake whoever waits for it or was notified. */
static void
let_go_locked(FutureCondition *c)
{
    c->owner = 0;
    c->depth = 0;
    if (c->sleepers > 0) {
        pthread_cond_broadcast(&c->changed);
    }
}

static PyObject *
fc_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "_FutureCondition() takes no arguments");
        return NULL;
    }
    FutureCondition *c = (FutureCondition *)type->tp_alloc(type, 0);
    if (c != NULL) {
        init_sync(c);
    }
    return (PyObject *)c;
}

static void
fc_dealloc(FutureCondition *c)
{
    PyTypeObject *type = Py_TYPE(c);
    /* No thread waits on it: each holds a reference while it does. */
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->mutex);
    type->tp_free((PyObject *)c);
    Py_DECREF(type);
}

/* acquire(blocking=True, timeout=-1) -> bool, as RLock.acquire(). */
static PyObject *
fc_acquire(FutureCondition *c, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (args != NULL
        && !PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", kwlist, &blocking,
                                        &timeout))
    {
        return NULL;
    }
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    unsigned long me = PyThread_get_thread_ident();
    lock_mutex(c);
    if (c->owner == me) {
        c->depth++;
        pthread_mutex_unlock(&c->mutex);
        Py_RETURN_TRUE;
    }
    if (c->owner == 0) {
        c->owner = me;
        c->depth = 1;
        pthread_mutex_unlock(&c->mutex);
        Py_RETURN_TRUE;
    }
    if (!blocking) {
        pthread_mutex_unlock(&c->mutex);
        Py_RETURN_FALSE;
    }
    struct timespec deadline;
    if (timeout >= 0) {
        deadline = deadline_after(timeout);
    }
    int taken;
    Py_BEGIN_ALLOW_THREADS
    taken = take_locked(c, me, 1, timeout >= 0 ? &deadline : NULL);
    pthread_mutex_unlock(&c->mutex);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(taken);
}

static PyObject *
fc_enter(FutureCondition *c, PyObject *Py_UNUSED(ignored))
{
    return fc_acquire(c, NULL, NULL);
}

static PyObject *
fc_release(FutureCondition *c, PyObject *Py_UNUSED(ignored))
{
    unsigned long me = PyThread_get_thread_ident();
    lock_mutex(c);
    if (c->owner != me) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    if (--c->depth == 0) {
        let_go_locked(c);
    }
    pthread_mutex_unlock(&c->mutex);
    Py_RETURN_NONE;
}

static PyObject *
fc_exit(FutureCondition *c, PyObject *const *args, Py_ssize_t nargs)
{
    return fc_release(c, NULL);
}

static PyObject *
fc_is_owned(FutureCondition *c, PyObject *Py_UNUSED(ignored))
{
    unsigned long me = PyThread_get_thread_ident();
    lock_mutex(c);
    int owned = c->owner == me;
    pthread_mutex_unlock(&c->mutex);
    return PyBool_FromLong(owned);
}

/* Under mutex: take `w` out of the queue of waiters, if it is still there. */
static void
unlink_locked(FutureCondition *c, waiter *w)
{
    waiter *previous = NULL;
    for (waiter *p = c->head; p != NULL; previous = p, p = p->next) {
        if (p == w) {
            if (previous == NULL) {
                c->head = w->next;
            }
            else {
                previous->next = w->next;
            }
            if (c->tail == w) {
                c->tail = previous;
            }
            return;
        }
    }
}

/* wait(timeout=None) -> bool, as Condition.wait(). */
static PyObject *
fc_wait(FutureCondition *c, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:wait", kwlist, &timeout_obj)) {
        return NULL;
    }
    double timeout = -1;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (timeout < 0) {
            timeout = 0;    /* Condition.wait: a negative timeout does not block */
        }
    }
    unsigned long me = PyThread_get_thread_ident();
    lock_mutex(c);
    if (c->owner != me) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
        return NULL;
    }
    waiter w = {NULL, 0};
    if (c->tail == NULL) {
        c->head = &w;
    }
    else {
        c->tail->next = &w;
    }
    c->tail = &w;
    unsigned long depth = c->depth;
    let_go_locked(c);

    struct timespec deadline;
    if (timeout >= 0) {
        deadline = deadline_after(timeout);
    }
    Py_BEGIN_ALLOW_THREADS
    /* Sleepers are woken when the lock is let go (let_go_locked), not at notify(): a
     * notified waiter wakes to a free lock. */
    while (!w.notified) {
        if (timeout == 0
            || (sleep_locked(c, timeout > 0 ? &deadline : NULL) == ETIMEDOUT
                && !w.notified))
        {
            unlink_locked(c, &w);
            break;
        }
    }
    take_locked(c, me, depth, NULL);
    pthread_mutex_unlock(&c->mutex);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(w.notified);
}

/* Under mutex, held by this thread: notify up to n waiters, oldest first. */
static void
notify_locked(FutureCondition *c, Py_ssize_t n)
{
    while (n-- > 0 && c->head != NULL) {
        waiter *w = c->head;
        c->head = w->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        w->notified = 1;
    }
}

static PyObject *
fc_notify(FutureCondition *c, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"n", NULL};
    Py_ssize_t n = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:notify", kwlist, &n)) {
        return NULL;
    }
    lock_mutex(c);
    if (c->owner != PyThread_get_thread_ident()) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot notify on un-acquired lock");
        return NULL;
    }
    notify_locked(c, n);
    pthread_mutex_unlock(&c->mutex);
    Py_RETURN_NONE;
}

static PyObject *
fc_notify_all(FutureCondition *c, PyObject *Py_UNUSED(ignored))
{
    lock_mutex(c);
    if (c->owner != PyThread_get_thread_ident()) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot notify on un-acquired lock");
        return NULL;
    }
    notify_locked(c, PY_SSIZE_T_MAX);
    pthread_mutex_unlock(&c->mutex);
    Py_RETURN_NONE;
}

static PyObject *
fc_repr(FutureCondition *c)
{
    lock_mutex(c);
    unsigned long owner = c->owner, depth = c->depth;
    Py_ssize_t waiting = 0;
    for (waiter *w = c->head; w != NULL; w = w->next) {
        waiting++;
    }
    pthread_mutex_unlock(&c->mutex);
    return PyUnicode_FromFormat("<subsandbox._core._FutureCondition %s owner=%lu "
                                "count=%lu waiters=%zd>",
                                owner ? "locked" : "unlocked", owner, depth, waiting);
}

static PyMethodDef fc_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))fc_acquire, METH_VARARGS | METH_KEYWORDS,
     NULL},
    {"release", (PyCFunction)fc_release, METH_NOARGS, NULL},
    {"__enter__", (PyCFunction)fc_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))fc_exit, METH_FASTCALL, NULL},
    {"wait", (PyCFunction)(void (*)(void))fc_wait, METH_VARARGS | METH_KEYWORDS, NULL},
    {"notify", (PyCFunction)(void (*)(void))fc_notify, METH_VARARGS | METH_KEYWORDS, NULL},
    {"notify_all", (PyCFunction)fc_notify_all, METH_NOARGS, NULL},
    {"_is_owned", (PyCFunction)fc_is_owned, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot fc_slots[] = {
    {Py_tp_new, fc_new},
    {Py_tp_dealloc, fc_dealloc},
    {Py_tp_repr, fc_repr},
    {Py_tp_methods, fc_methods},
    {Py_tp_doc, "_FutureCondition(): a threading.Condition over an RLock, in C, for "
                "SandboxPoolExecutor's futures (futurecond.c)."},
    {0, NULL},
};

static PyType_Spec fc_spec = {
    .name = "subsandbox._core._FutureCondition",
    .basicsize = sizeof(FutureCondition),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = fc_slots,
};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_rc = 0;

static void
register_atfork(void)
{
    atfork_rc = pthread_atfork(NULL, NULL, after_fork_child);
}

int
ss_futurecond_exec(PyObject *module, ss_state *st)
{
    /* Once per process: every interpreter that imports _core runs this. */
    pthread_once(&atfork_once, register_atfork);
    if (atfork_rc != 0) {
        errno = atfork_rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &fc_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_FutureCondition", type);
    Py_DECREF(type);
    return rc;
}

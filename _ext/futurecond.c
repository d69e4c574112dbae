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
 * How threads wait: each sleeps on a semaphore of its own (one futex wait, woken by
 * one futex wake; pthread condition variables cost more futex calls per hand-off). A
 * notified waiter joins the queue of threads waiting for the lock; whoever lets the
 * lock go hands it to the first of that queue (it is the owner before it wakes) and
 * then posts its semaphore. So a waiter notified by Future.set_result() wakes once, to
 * a lock that is already its own, instead of waking to a lock still held and sleeping
 * again.
 *
 * Blocking: acquire() and wait() wait with the GIL released and are not interrupted by
 * signals. Nothing blocks under a future's lock (the executor's futures only ever hold
 * it for a few bytecodes), and the main thread waits for a result in slices that run
 * signal handlers (executor.py's _wait_handling_signals), so Ctrl-C still gets through.
 *
 * Locking: `mutex` guards every field; it is only held for a few instructions, never
 * while sleeping or waiting for the GIL (a thread that must block releases the GIL and
 * unlocks the mutex first). Semaphores are posted after the mutex is unlocked. A
 * sleeper's record lives on its own stack: it returns only after it has consumed the
 * post it was promised (glibc's sem_post touches nothing of the semaphore after the
 * waiter can see the post but the futex word, which CPython's own locks rely on too).
 *
 * Fork: the child of a fork may inherit the mutex locked by a thread that no longer
 * exists, or sleepers that no longer exist: every call first compares the process's
 * fork generation (ss_fork_generation(), lifecycle.c) with the object's, and
 * starts the object afresh in a new process, keeping the lock only if the forking thread
 * held it (lock_mutex).
 */
#include "subsandbox.h"
#include "sync.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

#include "pythread.h"

/* A thread asleep in acquire() or wait(), on its own stack. */
typedef struct sleeper {
    struct sleeper *next;
    sem_t wake;             /* posted once: the lock was handed to this thread */
    unsigned long ident;    /* the sleeping thread */
    unsigned long depth;    /* how deep it holds the lock once handed */
    int notified;           /* a wait()er that notify() moved to the lock queue */
} sleeper;

typedef struct {
    sleeper *head;
    sleeper *tail;
} sleeper_queue;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    unsigned long owner;        /* PyThread_get_thread_ident() of the holder, 0: free */
    unsigned long depth;        /* how many times the holder took it */
    sleeper_queue lockers;      /* waiting for the lock, oldest first */
    sleeper_queue waiters;      /* in wait(), not notified yet, oldest first */
    uint64_t generation;        /* ss_fork_generation() when the mutex was made */
    int mutex_made;             /* pthread_mutex_init() succeeded: destroy it */
} FutureCondition;

/* The mutex, new, with no sleepers (in the child of a fork, the parent's mutex is made
 * anew without being destroyed: a thread that is gone may hold it). -1 with OSError; the
 * generation then stays old, so that the next call tries again. */
static int
init_sync(FutureCondition *c)
{
    c->mutex_made = 0;
    int rc = pthread_mutex_init(&c->mutex, NULL);
    if (rc != 0) {
        ss_set_os_error(rc, "cannot create the mutex of a _FutureCondition");
        return -1;
    }
    c->mutex_made = 1;
    c->lockers.head = c->lockers.tail = NULL;
    c->waiters.head = c->waiters.tail = NULL;
    c->generation = ss_fork_generation();
    return 0;
}

/* Under the GIL: lock `mutex`, made anew first if this is a new process (its sleepers
 * were threads of the parent). A lock owned by a thread other than this one is let go
 * there: in the child only the forking thread exists, and an owner may even be a sleeper
 * the lock was handed to but that had not woken yet (so a stdlib RLock would be free).
 * -1 with OSError (only in a new process, when the mutex cannot be made anew). */
static int
lock_mutex(FutureCondition *c)
{
    if (c->generation != ss_fork_generation()) {
        if (init_sync(c) < 0) {
            return -1;
        }
        if (c->owner != PyThread_get_thread_ident()) {
            c->owner = 0;
            c->depth = 0;
        }
    }
    pthread_mutex_lock(&c->mutex);
    return 0;
}

static void
enqueue(sleeper_queue *q, sleeper *s)
{
    s->next = NULL;
    if (q->tail == NULL) {
        q->head = s;
    }
    else {
        q->tail->next = s;
    }
    q->tail = s;
}

static sleeper *
dequeue(sleeper_queue *q)
{
    sleeper *s = q->head;
    if (s != NULL) {
        q->head = s->next;
        if (q->head == NULL) {
            q->tail = NULL;
        }
    }
    return s;
}

/* Take `s` out of `q`; whether it was there. */
static int
unlink_sleeper(sleeper_queue *q, sleeper *s)
{
    sleeper *previous = NULL;
    for (sleeper *p = q->head; p != NULL; previous = p, p = p->next) {
        if (p == s) {
            if (previous == NULL) {
                q->head = s->next;
            }
            else {
                previous->next = s->next;
            }
            if (q->tail == s) {
                q->tail = previous;
            }
            return 1;
        }
    }
    return 0;
}

/* Under mutex: let the lock go, to the first thread waiting for it if any (it owns the
 * lock from now on). Returns that thread, whose semaphore the caller posts once it has
 * unlocked the mutex, or NULL. */
static sleeper *
let_go_locked(FutureCondition *c)
{
    sleeper *next = dequeue(&c->lockers);
    if (next == NULL) {
        c->owner = 0;
        c->depth = 0;
    }
    else {
        c->owner = next->ident;
        c->depth = next->depth;
    }
    return next;
}

/* As threading's locks: NaN is no timeout, and one past threading.TIMEOUT_MAX (which
 * would overflow the deadline's time_t) is refused. 0, or -1 with an exception. */
static int
check_timeout(double timeout)
{
    if (timeout != timeout) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number, not NaN");
        return -1;
    }
    if (timeout > (double)(LLONG_MAX / 1000) / 1e6) {     /* threading.TIMEOUT_MAX */
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    return 0;
}

/* GIL released, mutex not held: sleep until `s` is posted, or until the deadline (NULL:
 * none). 0 when posted, else ETIMEDOUT. Signals do not end it. */
static int
sleep_on(sleeper *s, const struct timespec *deadline)
{
    for (;;) {
        int rc = deadline == NULL ? sem_wait(&s->wake)
                                  : sem_clockwait(&s->wake, CLOCK_MONOTONIC, deadline);
        if (rc == 0) {
            return 0;
        }
        if (errno != EINTR) {
            /* ETIMEDOUT; any other error (the deadline is range-checked by
             * check_timeout(), so none is expected) ends the sleep as a timeout would,
             * rather than spin. */
            return ETIMEDOUT;
        }
        /* EINTR: a signal's C handler ran; the Python handlers run between the waiting
         * slices of executor.py, not here. */
    }
}

/* sem_init() for a sleeper; -1 with OSError. */
static int
init_sleeper(sleeper *s, unsigned long ident, unsigned long depth)
{
    if (sem_init(&s->wake, 0, 0) != 0) {
        ss_set_os_error(errno, "cannot create the semaphore of a thread waiting on a "
                        "_FutureCondition");
        return -1;
    }
    s->next = NULL;
    s->ident = ident;
    s->depth = depth;
    s->notified = 0;
    return 0;
}

static PyObject *
fc_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "_FutureCondition() takes no arguments");
        return NULL;
    }
    FutureCondition *c = (FutureCondition *)type->tp_alloc(type, 0);
    if (c != NULL && init_sync(c) < 0) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

static void
fc_dealloc(FutureCondition *c)
{
    PyTypeObject *type = Py_TYPE(c);
    /* No thread sleeps on it: each holds a reference while it does. */
    if (c->mutex_made) {
        pthread_mutex_destroy(&c->mutex);
    }
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
    if (check_timeout(timeout) < 0) {
        return NULL;
    }
    unsigned long me = PyThread_get_thread_ident();
    if (lock_mutex(c) < 0) {
        return NULL;
    }
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
    if (!blocking || timeout == 0) {
        pthread_mutex_unlock(&c->mutex);
        Py_RETURN_FALSE;
    }
    struct timespec deadline;
    if (timeout > 0) {
        deadline = ss_deadline_after(timeout);
    }
    sleeper s;
    if (init_sleeper(&s, me, 1) < 0) {
        pthread_mutex_unlock(&c->mutex);
        return NULL;
    }
    enqueue(&c->lockers, &s);
    int taken = 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_unlock(&c->mutex);
    if (sleep_on(&s, timeout > 0 ? &deadline : NULL) != 0) {
        pthread_mutex_lock(&c->mutex);
        /* Still queued: given up. Otherwise the lock was handed over as the wait timed
         * out, and its post is on the way: take it before this stack's record goes. */
        taken = !unlink_sleeper(&c->lockers, &s);
        pthread_mutex_unlock(&c->mutex);
        if (taken) {
            sleep_on(&s, NULL);
        }
    }
    Py_END_ALLOW_THREADS
    sem_destroy(&s.wake);
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
    if (lock_mutex(c) < 0) {
        return NULL;
    }
    if (c->owner != me) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    sleeper *next = --c->depth == 0 ? let_go_locked(c) : NULL;
    pthread_mutex_unlock(&c->mutex);
    if (next != NULL) {
        sem_post(&next->wake);
    }
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
    if (lock_mutex(c) < 0) {
        return NULL;
    }
    int owned = c->owner == me;
    pthread_mutex_unlock(&c->mutex);
    return PyBool_FromLong(owned);
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
        if ((timeout == -1 && PyErr_Occurred()) || check_timeout(timeout) < 0) {
            return NULL;
        }
        if (timeout < 0) {
            timeout = 0;    /* Condition.wait: a negative timeout does not block */
        }
    }
    unsigned long me = PyThread_get_thread_ident();
    if (lock_mutex(c) < 0) {
        return NULL;
    }
    if (c->owner != me) {
        pthread_mutex_unlock(&c->mutex);
        PyErr_SetString(PyExc_RuntimeError, "cannot wait on un-acquired lock");
        return NULL;
    }
    if (timeout == 0) {
        /* Nothing can notify this thread while it holds the lock: not notified. */
        pthread_mutex_unlock(&c->mutex);
        Py_RETURN_FALSE;
    }
    struct timespec deadline;
    if (timeout > 0) {
        deadline = ss_deadline_after(timeout);
    }
    sleeper s;
    /* Held as deep again once the lock is handed back. */
    if (init_sleeper(&s, me, c->depth) < 0) {
        pthread_mutex_unlock(&c->mutex);
        return NULL;
    }
    enqueue(&c->waiters, &s);
    sleeper *next = let_go_locked(c);
    int notified;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_unlock(&c->mutex);
    if (next != NULL) {
        sem_post(&next->wake);
    }
    /* notify() moves us to the lock queue, and the lock is handed to us in turn. */
    if (sleep_on(&s, timeout > 0 ? &deadline : NULL) != 0) {
        pthread_mutex_lock(&c->mutex);
        int handed = 0;
        if (!s.notified) {
            /* Timed out, not notified: out of the waiters, and take the lock back. */
            unlink_sleeper(&c->waiters, &s);
            if (c->owner == 0) {
                c->owner = me;
                c->depth = s.depth;
                handed = 1;
            }
            else {
                enqueue(&c->lockers, &s);
            }
        }
        pthread_mutex_unlock(&c->mutex);
        if (!handed) {
            /* Queued for the lock, or handed it already (its post is on the way). */
            sleep_on(&s, NULL);
        }
    }
    /* Written under the mutex before the lock was handed to us. The hand-off (a
     * semaphore post) orders it too, but a timed wait ends in sem_clockwait, which
     * ThreadSanitizer does not see as a synchronization: the atomic pair says it. */
    notified = __atomic_load_n(&s.notified, __ATOMIC_ACQUIRE);
    Py_END_ALLOW_THREADS
    sem_destroy(&s.wake);
    return PyBool_FromLong(notified);
}

/* Under mutex, held by this thread: move up to n waiters, oldest first, to the queue of
 * threads waiting for the lock; each gets the lock in turn as it is let go. */
static void
notify_locked(FutureCondition *c, Py_ssize_t n)
{
    while (n-- > 0) {
        sleeper *s = dequeue(&c->waiters);
        if (s == NULL) {
            break;
        }
        __atomic_store_n(&s->notified, 1, __ATOMIC_RELEASE);
        enqueue(&c->lockers, s);
    }
}

/* notify(n) and notify_all(): only the thread that holds the lock may notify, as with
 * threading.Condition. */
static PyObject *
notify_if_owned(FutureCondition *c, Py_ssize_t n)
{
    if (lock_mutex(c) < 0) {
        return NULL;
    }
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
fc_notify(FutureCondition *c, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"n", NULL};
    Py_ssize_t n = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:notify", kwlist, &n)) {
        return NULL;
    }
    return notify_if_owned(c, n);
}

static PyObject *
fc_notify_all(FutureCondition *c, PyObject *Py_UNUSED(ignored))
{
    return notify_if_owned(c, PY_SSIZE_T_MAX);
}

static PyObject *
fc_repr(FutureCondition *c)
{
    if (lock_mutex(c) < 0) {
        return NULL;
    }
    unsigned long owner = c->owner, depth = c->depth;
    Py_ssize_t waiting = 0;
    for (sleeper *w = c->waiters.head; w != NULL; w = w->next) {
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

int
ss_futurecond_exec(PyObject *module, ss_state *st)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &fc_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_FutureCondition", type);
    Py_DECREF(type);
    return rc;
}

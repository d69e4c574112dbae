/* Channel: a blocking FIFO of cross-interpreter values, usable from any interpreter.
 *
 * The queue itself (ss_queue) is process-wide: raw memory, a pthread mutex and two
 * condition variables, a reference count. Each interpreter sees it through its own
 * Channel object (a heap type of that interpreter's module), and any number of them may
 * wrap the same queue. Values are held encoded (xvalue.c), so a value sent by a sandbox
 * that is then destroyed is still received intact: the queue owns it, not the sender.
 *
 * Waiting: an operation that can proceed at once does so without releasing the GIL. One
 * that must wait releases the GIL and sleeps on a condition variable, so a send wakes a
 * receiver at once. Only the main thread of the main interpreter runs signal handlers:
 * its waits wake every WAIT_SLICE to run them, so Ctrl-C interrupts a blocked recv().
 *
 * Interrupts: a thread that waits is on its queue's list of waiters (under mu) with its
 * interpreter and thread id. interrupt() (interp.c), once it has scheduled its exception
 * with PyThreadState_SetAsyncExc() under the sandbox's GIL, marks the waiters of that
 * thread and broadcasts their condition variable (ss_queue_interrupt_waits). A marked
 * waiter gives up under mu, before taking or queueing anything, and raises the pending
 * exception itself (the eval loop would only raise it after the operation). A wait about
 * to start looks for a pending exception first, under its GIL, so an interrupt() just
 * before it is not missed: interrupt() cannot come between that look and the waiter's
 * registration, both done holding the GIL. Nothing polls: an idle waiter sleeps until a
 * send, recv, close or interrupt.
 *
 * Lifetime: a queue's reference count counts Channel objects (`handles`), parcels and
 * values in flight, and items of queues that carry it (a channel sent through a channel).
 * The queue is freed when it reaches zero, iteratively (a chain of channels each inside
 * the next does not recurse). Queues that only carry each other (a channel sent into
 * itself, or A into B and B into A) never reach zero on their own. A queue can only be in
 * such a cycle if it has no Channel object left and holds items that carry channels: when
 * a reference of such a queue goes, it is a "suspect", and the collector runs CPython's
 * trial deletion on the queues reachable from it (not on every queue): those whose every
 * reference comes from items of that set, and that no externally held member reaches,
 * lose their items, which frees them. Cost: the size of the suspect's reachable set.
 *
 * Locks: registry_lock (the list of live queues; one collector at a time), then a queue's
 * mu. Only a collector holds several queue locks at once; every other thread holds at most
 * one and waits for no other lock meanwhile, so the collector cannot deadlock. Nobody
 * waits for a GIL while holding either lock, so both may be taken with the GIL held.
 */
#include "subsandbox.h"
#include "sync.h"
#include "pyversion.h"
#include "pyinternal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <time.h>

#define WAIT_SLICE_NS (50 * 1000 * 1000)  /* 50 ms */
/* Longer timeouts than this (about 31 years, or inf) wait without a deadline. */
#define MAX_TIMEOUT 1e9


/* A thread blocked in send() or recv(), on its queue's list: on its own stack. */
typedef struct qwaiter {
    struct qwaiter *next;
    PyInterpreterState *interp;     /* compared, never dereferenced */
    unsigned long thread_id;        /* its thread state's, as interrupt() names it */
    pthread_cond_t *cond;           /* what it waits on */
    int interrupted;                /* set by ss_queue_interrupt_waits */
} qwaiter;

typedef struct qnode {
    struct qnode *next;
    ss_xvalue *value;
    int carries_channels;   /* the value holds channel references: a graph edge */
} qnode;

struct ss_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    Py_ssize_t refcnt;      /* guarded by mu */
    Py_ssize_t handles;     /* Channel objects, counted in refcnt too; guarded by mu */
    Py_ssize_t maxsize;     /* 0: unbounded */
    Py_ssize_t size;        /* guarded by mu */
    Py_ssize_t linked;      /* items that carry channels; guarded by mu */
    int closed;             /* guarded by mu */
    int suspected;          /* on some thread's list of suspects; guarded by mu */
    qnode *head, *tail;     /* guarded by mu */
    qwaiter *waiters;       /* threads blocked on it; guarded by mu */
    uint64_t id;
    struct ss_queue *prev, *next;   /* live queues; guarded by registry_lock */
    struct ss_queue *next_pending;  /* on this thread's list of dead queues or suspects */
    Py_ssize_t gc_refs;             /* collector's scratch: registry_lock + mu */
    int gc_in;                      /* in the set being collected */
    int gc_reached;
    uint64_t generation;            /* ss_fork_generation() when it was made */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static ss_queue *registry = NULL;       /* guarded by registry_lock */
static Py_ssize_t live_queues = 0;      /* guarded by registry_lock */
static uint64_t next_queue_id = 1;      /* guarded by registry_lock */
static uint64_t cycles_freed = 0;       /* guarded by registry_lock */

/* ---- fork (lifecycle.c) ----------------------------------------------------------------
 * A queue made before a fork() is unusable in the child: its mutex may be held and its
 * condition variables waited on by threads that do not exist there (glibc's
 * pthread_cond_destroy() then waits forever), and the interpreters at its other end are
 * the parent's. A queue made in an older fork generation (ss_fork_generation(),
 * lifecycle.c: every fork() bumps it) raises ChannelClosed on every operation and is
 * never locked or freed there (a small leak of the child, by design). */
static inline int
queue_inherited(const ss_queue *q)
{
    return q->generation != ss_fork_generation();
}

void
ss_queue_fork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
}

void
ss_queue_fork_done(int in_child)
{
    if (in_child) {
        /* Queues live in the parent's interpreters: forget them here (never freed). */
        registry = NULL;
        live_queues = 0;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- the process-wide queue ---------------------------------------------------------- */

static ss_queue *
queue_new(Py_ssize_t maxsize)
{
    ss_queue *q = PyMem_RawCalloc(1, sizeof(ss_queue));
    if (q == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    /* Each step only if the one before succeeded; on failure, destroy what was made. */
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    int made_attr = rc == 0, made_mu = 0, made_ne = 0;
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    }
    if (rc == 0) {
        rc = pthread_mutex_init(&q->mu, NULL);
        made_mu = rc == 0;
    }
    if (rc == 0) {
        rc = pthread_cond_init(&q->not_empty, &attr);
        made_ne = rc == 0;
    }
    if (rc == 0) {
        rc = pthread_cond_init(&q->not_full, &attr);
    }
    if (made_attr) {
        pthread_condattr_destroy(&attr);
    }
    if (rc != 0) {
        if (made_ne) {
            pthread_cond_destroy(&q->not_empty);
        }
        if (made_mu) {
            pthread_mutex_destroy(&q->mu);
        }
        PyMem_RawFree(q);
        ss_set_os_error(rc, "cannot create the lock of a channel");
        return NULL;
    }
    q->refcnt = 1;
    q->handles = 1;
    q->maxsize = maxsize;
    q->generation = ss_fork_generation();
    pthread_mutex_lock(&registry_lock);
    q->id = next_queue_id++;
    q->next = registry;
    if (registry != NULL) {
        registry->prev = q;
    }
    registry = q;
    live_queues++;
    pthread_mutex_unlock(&registry_lock);
    return q;
}

static void
free_nodes(qnode *items)
{
    while (items != NULL) {
        qnode *next = items->next;
        ss_xvalue_free(items->value);
        PyMem_RawFree(items);
        items = next;
    }
}

/* Work this thread found while releasing references, done by the outermost run_pending():
 * freeing a queue's items releases references to other queues, and a long chain of
 * channels each inside the next must not become a deep C recursion. */
static _Thread_local ss_queue *tl_dead = NULL;      /* count reached zero: free them */
static _Thread_local ss_queue *tl_suspects = NULL;  /* each with one reference held */
static _Thread_local int tl_busy = 0;

static void collect_from(ss_queue *suspect);

static void
queue_destroy(ss_queue *q)
{
    pthread_mutex_lock(&registry_lock);
    if (q->prev != NULL) {
        q->prev->next = q->next;
    }
    else {
        registry = q->next;
    }
    if (q->next != NULL) {
        q->next->prev = q->prev;
    }
    live_queues--;
    pthread_mutex_unlock(&registry_lock);
    /* Unreachable now: no reference, no registry entry; nobody else can lock it. */
    qnode *items = q->head;
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->mu);
    PyMem_RawFree(q);
    free_nodes(items);
}

/* Drop one reference (`handle`: of a Channel object). May free, or suspect, the queue. */
static void
queue_release(ss_queue *q, int handle, int may_suspect)
{
    pthread_mutex_lock(&q->mu);
    if (handle) {
        q->handles--;
    }
    int suspect = (may_suspect && q->refcnt > 1 && q->handles == 0 && q->linked > 0
                   && !q->suspected);
    Py_ssize_t left = q->refcnt;
    if (suspect) {
        q->suspected = 1;   /* our reference goes after the collection */
    }
    else {
        left = --q->refcnt;
    }
    pthread_mutex_unlock(&q->mu);
    if (suspect) {
        q->next_pending = tl_suspects;
        tl_suspects = q;
    }
    else if (left == 0) {
        q->next_pending = tl_dead;
        tl_dead = q;
    }
    else {
        return;
    }
    if (tl_busy) {
        return;     /* an outer frame of this thread is running the pending work */
    }
    tl_busy = 1;
    for (;;) {
        if (tl_dead != NULL) {
            ss_queue *dead = tl_dead;
            tl_dead = dead->next_pending;
            queue_destroy(dead);
        }
        else if (tl_suspects != NULL) {
            ss_queue *sus = tl_suspects;
            tl_suspects = sus->next_pending;
            collect_from(sus);
            queue_release(sus, 0, 0);   /* pushes it on tl_dead if that was the last */
        }
        else {
            break;
        }
    }
    tl_busy = 0;
}

void
ss_queue_incref(ss_queue *q)
{
    if (queue_inherited(q)) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    q->refcnt++;
    pthread_mutex_unlock(&q->mu);
}

void
ss_queue_decref(ss_queue *q)
{
    if (queue_inherited(q)) {
        return;
    }
    queue_release(q, 0, 1);
}

/* ---- the cycle collector --------------------------------------------------------------- */

typedef struct {
    ss_queue **items;
    Py_ssize_t len, cap;
    int failed;
} qset;

static void
qset_add_locked(qset *set, ss_queue *q)
{
    if (set->failed || q->gc_in) {
        return;
    }
    if (set->len == set->cap) {
        Py_ssize_t cap = set->cap ? set->cap * 2 : 16;
        ss_queue **items = PyMem_RawRealloc(set->items, sizeof(ss_queue *) * (size_t)cap);
        if (items == NULL) {
            set->failed = 1;
            return;
        }
        set->items = items;
        set->cap = cap;
    }
    pthread_mutex_lock(&q->mu);
    q->gc_in = 1;
    q->gc_reached = 0;
    set->items[set->len++] = q;
}

static void
visit_add(ss_queue *target, void *arg)
{
    qset_add_locked((qset *)arg, target);
}

static void
visit_subtract(ss_queue *target, void *Py_UNUSED(arg))
{
    target->gc_refs--;
}

static void
visit_reach(ss_queue *target, void *arg)
{
    qset *stack = arg;
    if (!target->gc_reached) {
        target->gc_reached = 1;
        stack->items[stack->len++] = target;    /* each member is pushed once: fits */
    }
}

static void
visit_items(ss_queue *q, void (*visit)(ss_queue *, void *), void *arg)
{
    if (q->linked == 0) {
        return;
    }
    for (qnode *n = q->head; n != NULL; n = n->next) {
        if (n->carries_channels) {
            ss_xvalue_visit_channels(n->value, visit, arg);
        }
    }
}

/* Trial deletion over the queues reachable from `suspect` (the caller holds one
 * reference to it, not counted as a root). With all of them locked, no item of theirs
 * moves and no count of theirs changes. References from outside the set (Channel
 * objects, parcels, values in flight, items of other queues) are roots: conservative,
 * a queue outside the set that is garbage is collected from its own suspicion. */
static void
collect_from(ss_queue *suspect)
{
    pthread_mutex_lock(&registry_lock);
    qset set = {NULL, 0, 0, 0};
    qset_add_locked(&set, suspect);
    for (Py_ssize_t i = 0; i < set.len && !set.failed; i++) {
        visit_items(set.items[i], visit_add, &set);
    }
    if (set.len > 0) {
        set.items[0]->suspected = 0;    /* later releases may suspect it again */
    }
    qnode *garbage = NULL;
    uint64_t freed = 0;
    qset stack = {NULL, 0, 0, 0};
    if (!set.failed) {
        stack.items = PyMem_RawMalloc(sizeof(ss_queue *) * (size_t)set.len);
        stack.failed = stack.items == NULL;
    }
    if (!set.failed && !stack.failed) {
        for (Py_ssize_t i = 0; i < set.len; i++) {
            ss_queue *q = set.items[i];
            q->gc_refs = q->refcnt - (q == suspect ? 1 : 0);
        }
        for (Py_ssize_t i = 0; i < set.len; i++) {
            visit_items(set.items[i], visit_subtract, NULL);
        }
        for (Py_ssize_t i = 0; i < set.len; i++) {
            ss_queue *q = set.items[i];
            if (q->gc_refs > 0 && !q->gc_reached) {
                q->gc_reached = 1;
                stack.items[stack.len++] = q;
            }
        }
        while (stack.len > 0) {
            visit_items(stack.items[--stack.len], visit_reach, &stack);
        }
        for (Py_ssize_t i = 0; i < set.len; i++) {
            ss_queue *q = set.items[i];
            if (!q->gc_reached && q->head != NULL) {
                /* Dropping its items drops the references that kept the cycle alive:
                 * each queue of it then reaches zero and is freed as usual. */
                q->tail->next = garbage;
                garbage = q->head;
                q->head = q->tail = NULL;
                q->size = 0;
                q->linked = 0;
                freed++;
            }
        }
    }
    for (Py_ssize_t i = 0; i < set.len; i++) {
        set.items[i]->gc_in = 0;
        pthread_mutex_unlock(&set.items[i]->mu);
    }
    cycles_freed += freed;
    pthread_mutex_unlock(&registry_lock);
    PyMem_RawFree(set.items);
    PyMem_RawFree(stack.items);
    free_nodes(garbage);    /* releases land on this thread's pending lists */
}

static PyObject *
channel_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t queues, items = 0, handles = 0;
    size_t nbytes = 0;
    uint64_t cycles;
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&registry_lock);
    queues = live_queues;
    cycles = cycles_freed;
    for (ss_queue *q = registry; q != NULL; q = q->next) {
        pthread_mutex_lock(&q->mu);
        items += q->size;
        handles += q->handles;
        for (qnode *n = q->head; n != NULL; n = n->next) {
            nbytes += sizeof(qnode) + ss_xvalue_nbytes(n->value);
        }
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&registry_lock);
    PyEval_RestoreThread(ts);
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:K}", "queues", queues, "items", items,
                         "handles", handles, "item_bytes", (Py_ssize_t)nbytes,
                         "cycles_freed", (unsigned long long)cycles);
}

/* ---- waiting --------------------------------------------------------------------------- */

enum { WAIT_OK = 0, WAIT_TIMEOUT = 1, WAIT_INTERRUPTED = 2, WAIT_ERROR = -1 };

static int
before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Wait on `cond` (q->mu held, GIL released) until `ready(q)`, the deadline or an
 * interrupt of this waiter. The thread that handles signals wakes every slice to run the
 * handlers (and raise). */
static int
wait_for(ss_queue *q, pthread_cond_t *cond, int (*ready)(ss_queue *),
         const struct timespec *deadline, int handles_signals, qwaiter *self,
         PyThreadState **ts)
{
    for (;;) {
        if (self->interrupted) {
            if (ready(q)) {
                /* We may have taken the wakeup meant for the item or the room: pass it
                 * on to another waiter. */
                pthread_cond_signal(cond);
            }
            return WAIT_INTERRUPTED;
        }
        if (ready(q)) {
            return WAIT_OK;
        }
        struct timespec until;
        int sliced = 0;
        if (handles_signals) {
            until = ss_deadline_after(WAIT_SLICE_NS / 1e9);
            sliced = 1;
            if (deadline != NULL && before(deadline, &until)) {
                until = *deadline;
                sliced = 0;
            }
        }
        else if (deadline != NULL) {
            until = *deadline;
        }
        int rc = (handles_signals || deadline != NULL)
                 ? pthread_cond_timedwait(cond, &q->mu, &until)
                 : pthread_cond_wait(cond, &q->mu);
        if (rc == ETIMEDOUT) {
            if (self->interrupted || ready(q)) {
                continue;
            }
            if (!sliced) {
                return WAIT_TIMEOUT;
            }
            /* A slice ended: run the signal handlers with the GIL, then go on waiting. */
            pthread_mutex_unlock(&q->mu);
            PyEval_RestoreThread(*ts);
            int err = PyErr_CheckSignals();
            *ts = PyEval_SaveThread();
            pthread_mutex_lock(&q->mu);
            if (err < 0) {
                return WAIT_ERROR;
            }
        }
    }
}

/* Block until ready(q) (q->mu and the GIL held; returns with q->mu held, the GIL released
 * in *ts). WAIT_INTERRUPTED: an asynchronous exception is pending for this thread (or was
 * said to be); nothing was taken or queued. */
static int
wait_blocking(ss_queue *q, pthread_cond_t *cond, int (*ready)(ss_queue *),
              const struct timespec *deadline, PyThreadState **ts)
{
    int signals = SS_THREAD_HANDLES_SIGNALS();    /* reads the thread state */
    PyThreadState *me = PyThreadState_Get();
    if (me->async_exc != NULL) {
        /* Scheduled before this wait: the eval loop has not raised it yet. */
        *ts = PyEval_SaveThread();
        return WAIT_INTERRUPTED;
    }
    qwaiter self = {q->waiters, PyThreadState_GetInterpreter(me), me->thread_id, cond, 0};
    q->waiters = &self;
    *ts = PyEval_SaveThread();
    int rc = wait_for(q, cond, ready, deadline, signals, &self, ts);
    qwaiter **link = &q->waiters;
    while (*link != &self) {
        link = &(*link)->next;
    }
    *link = self.next;
    return rc;
}

/* After WAIT_INTERRUPTED, the GIL held again: raise the pending asynchronous exception
 * (-1), or 0 when there is none for this thread state after all (it went to another
 * thread state with the same thread id): the caller waits again. */
static int
raise_async_exc(void)
{
    PyObject *exc = ss_rt_take_async_exc(PyThreadState_Get());
    if (exc == NULL) {
        return 0;
    }
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else {
        PyErr_SetNone(exc);     /* a class, as the eval loop raises it */
    }
    Py_DECREF(exc);
    return -1;
}

void
ss_queue_interrupt_waits(PyInterpreterState *interp, unsigned long thread_id)
{
    /* Live queues cannot be freed meanwhile (queue_destroy unlinks under registry_lock);
     * a waiter leaves its queue's list under mu. Neither lock is held by anyone waiting
     * for a GIL, so taking them with the sandbox's GIL held cannot deadlock. */
    pthread_mutex_lock(&registry_lock);
    for (ss_queue *q = registry; q != NULL; q = q->next) {
        pthread_mutex_lock(&q->mu);
        for (qwaiter *w = q->waiters; w != NULL; w = w->next) {
            if (w->interp == interp && w->thread_id == thread_id) {
                w->interrupted = 1;
                pthread_cond_broadcast(w->cond);
            }
        }
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&registry_lock);
}

static int
can_take(ss_queue *q)
{
    return q->head != NULL || q->closed;
}

static int
can_put(ss_queue *q)
{
    return q->maxsize <= 0 || q->size < q->maxsize || q->closed;
}

/* ---- the per-interpreter Channel object ------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    ss_queue *queue;
} ChannelObject;

PyObject *
ss_channel_wrap(ss_state *st, ss_queue *q)
{
    ChannelObject *self = PyObject_New(ChannelObject, st->channel_type);
    if (self == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&q->mu);
    q->refcnt++;
    q->handles++;
    pthread_mutex_unlock(&q->mu);
    self->queue = q;
    return (PyObject *)self;
}

ss_queue *
ss_channel_unwrap(ss_state *st, PyObject *op)
{
    if (Py_TYPE(op) != st->channel_type) {
        return NULL;
    }
    return ((ChannelObject *)op)->queue;
}

static ss_state *
channel_state(PyObject *self)
{
    /* Channel cannot be subclassed: its type is the one made from the module. */
    return (ss_state *)PyType_GetModuleState(Py_TYPE(self));
}

static int
parse_timeout(PyObject *timeout, struct timespec *deadline, int *has_deadline)
{
    *has_deadline = 0;
    if (timeout == NULL || timeout == Py_None) {
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred() && PyLong_Check(timeout)
        && PyErr_ExceptionMatches(PyExc_OverflowError))
    {
        /* An int too large for a double: as huge floats and inf, no deadline (or, if
         * negative, the same refusal as any negative timeout). */
        PyErr_Clear();
        PyObject *zero = PyLong_FromLong(0);
        int negative = zero != NULL ? PyObject_RichCompareBool(timeout, zero, Py_LT) : -1;
        Py_XDECREF(zero);
        if (negative < 0) {
            return -1;
        }
        t = negative ? -1.0 : MAX_TIMEOUT * 2;
    }
    if (t == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, "
                         "not %.100s", Py_TYPE(timeout)->tp_name);
        }
        return -1;
    }
    if (!(t >= 0)) {    /* negative or NaN */
        PyErr_Format(PyExc_ValueError,
                     "timeout must be a non-negative number of seconds or None, not %R",
                     timeout);
        return -1;
    }
    if (t > MAX_TIMEOUT) {
        return 0;       /* beyond any clock's reach: wait without a deadline */
    }
    *deadline = ss_deadline_after(t);
    *has_deadline = 1;
    return 0;
}


static PyObject *
channel_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"maxsize", NULL};
    Py_ssize_t maxsize = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:Channel", kwlist, &maxsize)) {
        return NULL;
    }
    if (maxsize < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "maxsize must be 0 (unbounded) or a positive number of items");
        return NULL;
    }
    ss_queue *q = queue_new(maxsize);
    if (q == NULL) {
        return NULL;
    }
    ChannelObject *self = (ChannelObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        ss_queue_decref(q);
        return NULL;
    }
    self->queue = q;
    return (PyObject *)self;
}

static void
channel_dealloc(PyObject *op)
{
    ChannelObject *self = (ChannelObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    if (self->queue != NULL) {
        ss_queue *q = self->queue;
        self->queue = NULL;
        /* Freeing the queue may free many values, or collect cycles: do it without
         * holding the GIL. */
        if (!queue_inherited(q)) {
            Py_BEGIN_ALLOW_THREADS
            queue_release(q, 1, 1);
            Py_END_ALLOW_THREADS
        }
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
closed_error(ss_state *st, const char *what)
{
    PyErr_Format(st->channel_closed_error, "%s: the channel is closed", what);
    return NULL;
}

/* -1 + ChannelClosed when the channel was inherited through fork(). */
static int
check_not_inherited(PyObject *op, const char *what)
{
    if (!queue_inherited(((ChannelObject *)op)->queue)) {
        return 0;
    }
    ss_state *st = channel_state(op);
    if (st != NULL) {
        PyErr_Format(st->channel_closed_error,
                     "%s: this channel was made before this process was forked; channels "
                     "do not cross fork(): make a new Channel in this process", what);
    }
    return -1;
}

static PyObject *
do_send(PyObject *op, PyObject *obj, PyObject *timeout, int block, const char *what)
{
    if (check_not_inherited(op, what) < 0) {
        return NULL;
    }
    ChannelObject *self = (ChannelObject *)op;
    ss_state *st = channel_state(op);
    if (st == NULL) {
        return NULL;
    }
    struct timespec deadline;
    int has_deadline;
    if (parse_timeout(timeout, &deadline, &has_deadline) < 0) {
        return NULL;
    }
    ss_xvalue *xv = ss_xvalue_encode(st, obj, "item");
    if (xv == NULL) {
        return NULL;
    }
    qnode *node = PyMem_RawMalloc(sizeof(qnode));
    if (node == NULL) {
        ss_xvalue_free(xv);
        return PyErr_NoMemory();
    }
    node->next = NULL;
    node->value = xv;
    node->carries_channels = ss_xvalue_has_channels(xv);

    ss_queue *q = self->queue;
    int rc, closed = 0;
    PyThreadState *ts;
again:
    rc = WAIT_OK;
    ts = NULL;
    /* Fast path with the GIL held (nobody holds mu while waiting for a GIL). */
    pthread_mutex_lock(&q->mu);
    if (!can_put(q)) {
        if (!block) {
            rc = WAIT_TIMEOUT;
        }
        else {
            rc = wait_blocking(q, &q->not_full, can_put,
                               has_deadline ? &deadline : NULL, &ts);
        }
    }
    if (rc == WAIT_OK) {
        if (q->closed) {
            closed = 1;
        }
        else {
            if (q->tail != NULL) {
                q->tail->next = node;
            }
            else {
                q->head = node;
            }
            q->tail = node;
            q->size++;
            q->linked += node->carries_channels;
            node = NULL;
            pthread_cond_signal(&q->not_empty);
        }
    }
    pthread_mutex_unlock(&q->mu);
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
    }
    if (rc == WAIT_INTERRUPTED && raise_async_exc() == 0) {
        goto again;
    }
    if (node != NULL) {
        ss_xvalue_free(node->value);
        PyMem_RawFree(node);
    }
    if (rc == WAIT_ERROR || rc == WAIT_INTERRUPTED) {
        return NULL;
    }
    if (rc == WAIT_TIMEOUT) {
        if (!block) {
            PyErr_Format(st->channel_full_error, "%s: the channel is full", what);
        }
        else {
            PyErr_Format(PyExc_TimeoutError, "%s: timed out waiting for room", what);
        }
        return NULL;
    }
    if (closed) {
        return closed_error(st, what);
    }
    Py_RETURN_NONE;
}

/* An item whose decoding failed goes back to the head of the queue, where the next recv()
 * (this one retried, or another receiver's) finds it first; the error is raised with a
 * note that says so. The queue may hold maxsize + 1 items until it is taken again: a
 * sender may have filled the place it left. A closed queue takes it back too (closing
 * only refuses new items; what is queued is still delivered). */
static void
put_back(ss_queue *q, qnode *node, const char *what)
{
    pthread_mutex_lock(&q->mu);
    node->next = q->head;
    q->head = node;
    if (q->tail == NULL) {
        q->tail = node;
    }
    q->size++;
    q->linked += node->carries_channels;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);

    PyObject *exc = PyErr_GetRaisedException();
    PyObject *note = PyUnicode_FromFormat(
        "%s: the item could not be rebuilt in this interpreter; it was put back at the "
        "head of the channel", what);
    PyObject *r = note ? PyObject_CallMethod(exc, "add_note", "O", note) : NULL;
    Py_XDECREF(note);
    Py_XDECREF(r);
    PyErr_Clear();          /* the note is a courtesy: the original error is what counts */
    PyErr_SetRaisedException(exc);
}

static PyObject *
do_recv(PyObject *op, PyObject *timeout, int block, const char *what)
{
    if (check_not_inherited(op, what) < 0) {
        return NULL;
    }
    ChannelObject *self = (ChannelObject *)op;
    ss_state *st = channel_state(op);
    if (st == NULL) {
        return NULL;
    }
    struct timespec deadline;
    int has_deadline;
    if (parse_timeout(timeout, &deadline, &has_deadline) < 0) {
        return NULL;
    }
    ss_queue *q = self->queue;
    int rc;
    qnode *node = NULL;
    PyThreadState *ts;
again:
    rc = WAIT_OK;
    ts = NULL;
    pthread_mutex_lock(&q->mu);
    if (!can_take(q)) {
        if (!block) {
            rc = WAIT_TIMEOUT;
        }
        else {
            rc = wait_blocking(q, &q->not_empty, can_take,
                               has_deadline ? &deadline : NULL, &ts);
        }
    }
    if (rc == WAIT_OK && q->head != NULL) {
        node = q->head;
        q->head = node->next;
        if (q->head == NULL) {
            q->tail = NULL;
        }
        q->size--;
        q->linked -= node->carries_channels;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
    }
    if (rc == WAIT_INTERRUPTED && raise_async_exc() == 0) {
        goto again;
    }
    if (rc == WAIT_ERROR || rc == WAIT_INTERRUPTED) {
        return NULL;
    }
    if (rc == WAIT_TIMEOUT) {
        if (!block) {
            PyErr_Format(st->channel_empty_error, "%s: the channel is empty", what);
        }
        else {
            PyErr_Format(PyExc_TimeoutError, "%s: timed out waiting for an item", what);
        }
        return NULL;
    }
    if (node == NULL) {
        return closed_error(st, what);
    }
    PyObject *value = ss_xvalue_decode(st, node->value);
    if (value == NULL) {
        /* Rebuilding the value here failed (MemoryError, RecursionError on a thread with
         * less stack than the sender's): the item still belongs to the channel. */
        put_back(q, node, what);
        return NULL;
    }
    ss_xvalue_free(node->value);
    PyMem_RawFree(node);
    return value;
}

static PyObject *
channel_send(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "timeout", NULL};
    PyObject *obj, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:send", kwlist, &obj, &timeout)) {
        return NULL;
    }
    return do_send(self, obj, timeout, 1, "send()");
}

static PyObject *
channel_send_nowait(PyObject *self, PyObject *obj)
{
    return do_send(self, obj, NULL, 0, "send_nowait()");
}

static PyObject *
channel_recv(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:recv", kwlist, &timeout)) {
        return NULL;
    }
    return do_recv(self, timeout, 1, "recv()");
}

static PyObject *
channel_recv_nowait(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return do_recv(self, NULL, 0, "recv_nowait()");
}

static PyObject *
channel_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (check_not_inherited(op, "close()") < 0) {
        return NULL;
    }
    ss_queue *q = ((ChannelObject *)op)->queue;
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    Py_RETURN_NONE;
}

static PyObject *
channel_qsize(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (check_not_inherited(op, "qsize()") < 0) {
        return NULL;
    }
    ss_queue *q = ((ChannelObject *)op)->queue;
    pthread_mutex_lock(&q->mu);
    Py_ssize_t n = q->size;
    pthread_mutex_unlock(&q->mu);
    return PyLong_FromSsize_t(n);
}

static PyObject *
channel_get_closed(PyObject *op, void *Py_UNUSED(closure))
{
    ss_queue *q = ((ChannelObject *)op)->queue;
    if (queue_inherited(q)) {
        Py_RETURN_TRUE;     /* for this process, it is closed for good */
    }
    pthread_mutex_lock(&q->mu);
    int closed = q->closed;
    pthread_mutex_unlock(&q->mu);
    return PyBool_FromLong(closed);
}

static PyObject *
channel_get_maxsize(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((ChannelObject *)op)->queue->maxsize);
}

static PyObject *
channel_get_id(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(((ChannelObject *)op)->queue->id);
}

static PyObject *
channel_iternext(PyObject *self)
{
    PyObject *value = do_recv(self, NULL, 1, "recv()");
    if (value == NULL) {
        ss_state *st = channel_state(self);
        if (st != NULL && PyErr_ExceptionMatches(st->channel_closed_error)) {
            PyErr_Clear();  /* closed and drained: the iteration ends */
        }
    }
    return value;
}

static PyObject *
channel_richcompare(PyObject *a, PyObject *b, int op)
{
    if (Py_TYPE(a) != Py_TYPE(b) || (op != Py_EQ && op != Py_NE)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int same = ((ChannelObject *)a)->queue == ((ChannelObject *)b)->queue;
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t
channel_hash(PyObject *op)
{
    Py_hash_t h = (Py_hash_t)((ChannelObject *)op)->queue->id;
    return h == -1 ? -2 : h;
}

static PyObject *
channel_repr(PyObject *op)
{
    ss_queue *q = ((ChannelObject *)op)->queue;
    if (queue_inherited(q)) {
        return PyUnicode_FromFormat("<subsandbox.Channel id=%llu inherited through fork()>",
                                    (unsigned long long)q->id);
    }
    pthread_mutex_lock(&q->mu);
    Py_ssize_t size = q->size;
    int closed = q->closed;
    pthread_mutex_unlock(&q->mu);
    return PyUnicode_FromFormat("<subsandbox.Channel id=%llu size=%zd maxsize=%zd%s>",
                                (unsigned long long)q->id, size, q->maxsize,
                                closed ? " closed" : "");
}

static PyObject *
channel_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyErr_SetString(PyExc_TypeError,
                    "a Channel cannot be pickled: pass it to a sandbox as an argument of "
                    "Sandbox.call(), or send it through another channel");
    return NULL;
}

/* A Channel is a handle on a process-wide queue: a copy is the same handle (as SharedRef). */
static PyObject *
channel_copy(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(op);
}

static PyObject *
channel_deepcopy(PyObject *op, PyObject *Py_UNUSED(memo))
{
    return Py_NewRef(op);
}

static PyMethodDef channel_methods[] = {
    {"send", (PyCFunction)(void (*)(void))channel_send, METH_VARARGS | METH_KEYWORDS,
     "send($self, /, obj, timeout=None)\n--\n\nPut obj at the end of the channel, waiting for room "
     "when the channel is full. Only immutable values cross: None, bool, int, float, "
     "complex, str, bytes, tuples of them, shared objects, channels and arenas; a "
     "SharedRef arrives as the object it names. Anything else raises NotShareableError. "
     "Raises ChannelClosed once the channel is closed, TimeoutError when the timeout "
     "passes."},
    {"send_nowait", channel_send_nowait, METH_O,
     "send_nowait($self, obj, /)\n--\n\nLike send(), but raise ChannelFull instead of waiting."},
    {"recv", (PyCFunction)(void (*)(void))channel_recv, METH_VARARGS | METH_KEYWORDS,
     "recv($self, /, timeout=None)\n--\n\nTake the next item, waiting for one. Raises ChannelClosed "
     "once the channel is closed and drained, TimeoutError when the timeout passes."},
    {"recv_nowait", channel_recv_nowait, METH_NOARGS,
     "recv_nowait($self, /)\n--\n\nLike recv(), but raise ChannelEmpty instead of waiting."},
    {"close", channel_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose the channel for every holder: sends fail, receivers drain what "
     "is left, then get ChannelClosed; blocked waiters wake."},
    {"qsize", channel_qsize, METH_NOARGS, "qsize($self, /)\n--\n\nNumber of items waiting."},
    {"__reduce__", channel_reduce, METH_NOARGS, NULL},
    {"__copy__", channel_copy, METH_NOARGS, NULL},
    {"__deepcopy__", channel_deepcopy, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"closed", channel_get_closed, NULL, "Whether close() was called by any holder.", NULL},
    {"maxsize", channel_get_maxsize, NULL, "Capacity; 0 means unbounded.", NULL},
    {"id", channel_get_id, NULL, "Process-wide id: equal in every interpreter.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot channel_slots[] = {
    {Py_tp_doc, "Channel(maxsize=0)\n--\n\n"
                "A FIFO channel between interpreters that carries only immutable values."},
    {Py_tp_new, channel_new},
    {Py_tp_dealloc, channel_dealloc},
    {Py_tp_methods, channel_methods},
    {Py_tp_getset, channel_getset},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, channel_iternext},
    {Py_tp_richcompare, channel_richcompare},
    {Py_tp_hash, channel_hash},
    {Py_tp_repr, channel_repr},
    {0, NULL},
};

static PyType_Spec channel_spec = {
    .name = "subsandbox.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = channel_slots,
};

/* ---- parcels: handing a value to an interpreter that has no channel yet --------------- */

/* A sandbox starts from source code, which cannot carry objects. The creator leaves its
 * channels in a parcel (any crossable value, encoded) and passes the parcel's number in
 * the source; the sandbox takes it. Each parcel is taken once. */
typedef struct parcel {
    struct parcel *next;
    uint64_t number;
    ss_xvalue *value;
} parcel;

static pthread_mutex_t parcel_lock = PTHREAD_MUTEX_INITIALIZER;
static parcel *parcels = NULL;      /* guarded by parcel_lock */
static uint64_t next_parcel = 1;    /* guarded by parcel_lock */

static PyObject *
parcel_put(PyObject *module, PyObject *obj)
{
    ss_xvalue *xv = ss_xvalue_encode(ss_get_state(module), obj, "parcel");
    if (xv == NULL) {
        return NULL;
    }
    parcel *p = PyMem_RawMalloc(sizeof(parcel));
    if (p == NULL) {
        ss_xvalue_free(xv);
        return PyErr_NoMemory();
    }
    p->value = xv;
    pthread_mutex_lock(&parcel_lock);
    p->number = next_parcel++;
    p->next = parcels;
    parcels = p;
    pthread_mutex_unlock(&parcel_lock);
    return PyLong_FromUnsignedLongLong(p->number);
}

static PyObject *
parcel_take(PyObject *module, PyObject *arg)
{
    unsigned long long number = PyLong_AsUnsignedLongLong(arg);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    parcel *found = NULL;
    pthread_mutex_lock(&parcel_lock);
    for (parcel **p = &parcels; *p != NULL; p = &(*p)->next) {
        if ((*p)->number == number) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&parcel_lock);
    if (found == NULL) {
        PyErr_Format(PyExc_KeyError, "no parcel %llu (each parcel is taken once)", number);
        return NULL;
    }
    PyObject *value = ss_xvalue_decode(ss_get_state(module), found->value);
    ss_xvalue_free(found->value);
    PyMem_RawFree(found);
    return value;
}

void
ss_parcel_fork_prepare(void)
{
    pthread_mutex_lock(&parcel_lock);
}

void
ss_parcel_fork_done(int in_child)
{
    if (in_child) {
        parcels = NULL;     /* the parent's, holding its channels: left untouched */
    }
    pthread_mutex_unlock(&parcel_lock);
}

static PyMethodDef parcel_methods[] = {
    {"_parcel_put", parcel_put, METH_O, NULL},
    {"_parcel_take", parcel_take, METH_O, NULL},
    {"_channel_stats", channel_stats, METH_NOARGS,
     "_channel_stats() -> dict: live queues, their items, Channel objects, bytes queued, "
     "queues freed by the cycle collector (for tests)."},
    {NULL, NULL, 0, NULL},
};

int
ss_queue_exec(PyObject *module, ss_state *st)
{
    if (PyModule_AddFunctions(module, parcel_methods) < 0) {
        return -1;
    }
    st->channel_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &channel_spec, NULL);
    if (st->channel_type == NULL || PyModule_AddType(module, st->channel_type) < 0) {
        return -1;
    }
    st->channel_closed_error = PyErr_NewExceptionWithDoc(
        "subsandbox.ChannelClosed",
        "The channel is closed (and, for a receiver, drained).", NULL, NULL);
    if (st->channel_closed_error == NULL
        || PyModule_AddObjectRef(module, "ChannelClosed", st->channel_closed_error) < 0)
    {
        return -1;
    }
    st->channel_empty_error = PyErr_NewExceptionWithDoc(
        "subsandbox.ChannelEmpty", "recv_nowait() found no item.", NULL, NULL);
    if (st->channel_empty_error == NULL
        || PyModule_AddObjectRef(module, "ChannelEmpty", st->channel_empty_error) < 0)
    {
        return -1;
    }
    st->channel_full_error = PyErr_NewExceptionWithDoc(
        "subsandbox.ChannelFull", "send_nowait() found no room.", NULL, NULL);
    if (st->channel_full_error == NULL
        || PyModule_AddObjectRef(module, "ChannelFull", st->channel_full_error) < 0)
    {
        return -1;
    }
    return 0;
}

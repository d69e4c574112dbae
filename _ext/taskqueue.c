/* _TaskQueue: SandboxPoolExecutor's queue of pending tasks, waited on without the GIL.
 *
 * What ThreadPoolExecutor builds from a SimpleQueue, an idle semaphore and (for us) a
 * WeakSet of unsettled futures, in one C object, so that a driver thread asks for its
 * next task with one call and a submit() costs one call:
 *
 *   - put(item) queues a task and wakes a sleeping driver; it takes an idle token if
 *     there is one (a driver about to wait on an empty queue offers one) and says so,
 *     and the executor starts a new driver only when it found none (thread.py's idle
 *     semaphore, without its Python-level Condition on every task each way).
 *   - get(slot) lets go of the task the driver's slot held, waits with the GIL released,
 *     and holds the new task in the slot until the driver's next get(). So the child of
 *     a fork finds every task that was queued or taken by a driver (unsettled()), with no
 *     per-task bookkeeping (a WeakSet add cost a round trip ~0.6 us).
 *
 * Waiting by spinning (watching the queue, or a "settled" counter, with the GIL
 * released, before sleeping) was measured and dropped: on a 2-core machine with other
 * load, a spinning thread takes the core the thread it waits for needs, and a trivial
 * round trip went from ~21 us to 60-250 us.
 *
 * A sleeping driver waits on its slot's own semaphore, which put() posts: one futex wait
 * and one futex wake per hand-off (a pthread condition variable cost more).
 *
 * Locking: `mutex` guards the ring, the slots' writes and the counts. No thread waits
 * for the GIL while holding `mutex` (get() releases the GIL before it locks; put() takes
 * the mutex under the GIL and never waits for the GIL under it), so the two never
 * deadlock. Objects are only touched (reference counts included) under the main GIL: a
 * driver moves a task's pointer from the ring to its slot without the GIL, which changes
 * no reference count. Each slot has one driver: a busy flag per slot, set and cleared
 * atomically with the GIL held, refuses a second thread's get() on it (tq_get).
 */
#include "subsandbox.h"
#include "sync.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    PyObject **ring;            /* owned references: the pending tasks, oldest at head */
    Py_ssize_t capacity;
    Py_ssize_t head;
    Py_ssize_t count;           /* written under mutex; read atomically by len() */
    Py_ssize_t idle;            /* idle tokens (under mutex) */
    Py_ssize_t *sleepers;       /* slots whose driver sleeps, newest last (under mutex) */
    Py_ssize_t nsleepers;
    sem_t *wake;                /* per slot: posted to wake its sleeping driver */
    PyObject **slots;           /* owned references: the task each driver holds */
    int *busy;                  /* per slot: a thread is inside get(slot) (see tq_get) */
    Py_ssize_t nslots;
    int mutex_made;             /* pthread_mutex_init() succeeded: destroy it */
    Py_ssize_t wake_made;       /* how many of wake[] sem_init() made: destroy those */
} TaskQueue;

/* Under mutex: the oldest task, moved out of the ring (its reference goes to the caller). */
static PyObject *
pop_locked(TaskQueue *q)
{
    PyObject *item = q->ring[q->head];
    /* Release: a fork may cut a driver's get() anywhere (it pops without the GIL), and
     * the child reads the ring without the lock: the task must be in its slot before it
     * leaves the ring (tq_get), and ring entries outside the queue are NULL (snapshot). */
    __atomic_store_n(&q->ring[q->head], NULL, __ATOMIC_RELEASE);
    q->head = (q->head + 1) % q->capacity;
    __atomic_store_n(&q->count, q->count - 1, __ATOMIC_RELAXED);
    return item;
}

/* Under mutex (and the GIL: it may allocate). -1 with MemoryError. */
static int
grow_locked(TaskQueue *q)
{
    Py_ssize_t capacity = q->capacity * 2;
    PyObject **ring = PyMem_RawCalloc((size_t)capacity, sizeof(PyObject *));
    if (ring == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->count; i++) {
        ring[i] = q->ring[(q->head + i) % q->capacity];
    }
    PyMem_RawFree(q->ring);
    q->ring = ring;
    q->capacity = capacity;
    q->head = 0;
    return 0;
}

static void
free_arrays(TaskQueue *q)
{
    PyMem_RawFree(q->ring);
    PyMem_RawFree(q->slots);
    PyMem_RawFree(q->sleepers);
    PyMem_RawFree(q->wake);
    PyMem_RawFree(q->busy);
    q->ring = q->slots = NULL;
    q->sleepers = NULL;
    q->wake = NULL;
    q->busy = NULL;
}

/* The mutex and semaphores, new (also in the child of a fork, where the parent's
 * drivers do not exist, and the parent's objects are made anew without being destroyed:
 * one may be held by a thread that is gone). -1 with OSError; then mutex_made and
 * wake_made say what was made, for tq_dealloc to destroy. */
static int
init_sync(TaskQueue *q)
{
    q->mutex_made = 0;
    q->wake_made = 0;
    q->nsleepers = 0;
    for (Py_ssize_t i = 0; i < q->nslots; i++) {
        q->busy[i] = 0;
    }
    int rc = pthread_mutex_init(&q->mutex, NULL);
    if (rc != 0) {
        ss_set_os_error(rc, "cannot create the mutex of a _TaskQueue");
        return -1;
    }
    q->mutex_made = 1;
    for (Py_ssize_t i = 0; i < q->nslots; i++) {
        if (sem_init(&q->wake[i], 0, 0) != 0) {
            ss_set_os_error(errno, "cannot create a semaphore of a _TaskQueue");
            return -1;
        }
        q->wake_made = i + 1;
    }
    return 0;
}

static PyObject *
tq_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"slots", NULL};
    Py_ssize_t nslots;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:_TaskQueue", kwlist, &nslots)) {
        return NULL;
    }
    if (nslots < 1) {
        PyErr_SetString(PyExc_ValueError, "_TaskQueue needs at least one slot");
        return NULL;
    }
    TaskQueue *q = (TaskQueue *)type->tp_alloc(type, 0);
    if (q == NULL) {
        return NULL;
    }
    q->capacity = 64;
    q->ring = PyMem_RawCalloc((size_t)q->capacity, sizeof(PyObject *));
    q->slots = PyMem_RawCalloc((size_t)nslots, sizeof(PyObject *));
    q->sleepers = PyMem_RawCalloc((size_t)nslots, sizeof(Py_ssize_t));
    q->wake = PyMem_RawCalloc((size_t)nslots, sizeof(sem_t));
    q->busy = PyMem_RawCalloc((size_t)nslots, sizeof(int));
    if (q->ring == NULL || q->slots == NULL || q->sleepers == NULL || q->wake == NULL
        || q->busy == NULL)
    {
        free_arrays(q);
        Py_DECREF(q);
        return PyErr_NoMemory();
    }
    q->nslots = nslots;
    if (init_sync(q) < 0) {
        Py_DECREF(q);
        return NULL;
    }
    return (PyObject *)q;
}

static int
tq_traverse(TaskQueue *q, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(q));
    /* The ring and the slots are not visited: drivers change them without the GIL.
     * What they hold (work items, futures) makes no cycle through the queue. */
    return 0;
}

static void
tq_dealloc(TaskQueue *q)
{
    PyTypeObject *type = Py_TYPE(q);
    PyObject_GC_UnTrack(q);
    /* No driver is left: each holds the queue while it uses it. */
    if (q->ring != NULL) {
        for (Py_ssize_t i = 0; i < q->count; i++) {
            Py_XDECREF(q->ring[(q->head + i) % q->capacity]);
        }
        for (Py_ssize_t i = 0; i < q->nslots; i++) {
            Py_XDECREF(q->slots[i]);
        }
        for (Py_ssize_t i = 0; i < q->wake_made; i++) {
            sem_destroy(&q->wake[i]);
        }
        if (q->mutex_made) {
            pthread_mutex_destroy(&q->mutex);
        }
    }
    free_arrays(q);
    type->tp_free((PyObject *)q);
    Py_DECREF(type);
}

/* put(item) -> bool: queue `item`, wake a driver; whether an idle driver's token was
 * taken (False: the caller may start a new driver). */
static PyObject *
tq_put(TaskQueue *q, PyObject *item)
{
    ss_mutex_lock_with_gil(&q->mutex);
    if (q->count == q->capacity && grow_locked(q) < 0) {
        pthread_mutex_unlock(&q->mutex);
        return NULL;
    }
    q->ring[(q->head + q->count) % q->capacity] = Py_NewRef(item);
    __atomic_store_n(&q->count, q->count + 1, __ATOMIC_RELEASE);
    int took_idle = q->idle > 0;
    if (took_idle) {
        q->idle--;
    }
    /* The driver that went to sleep last: its caches are the warmest. */
    Py_ssize_t wake = q->nsleepers > 0 ? q->sleepers[--q->nsleepers] : -1;
    pthread_mutex_unlock(&q->mutex);
    if (wake >= 0) {
        /* After the unlock: the driver woken does not sleep again on the mutex. */
        sem_post(&q->wake[wake]);
    }
    return PyBool_FromLong(took_idle);
}

/* get(slot) -> item: let go of the task `slot` held, then wait for the next one (with
 * the GIL released) and hold it in `slot` until the next get(slot).
 *
 * Only one thread may use a slot: its driver. A second thread calling get() with a slot
 * already in a get() would append the slot to `sleepers` a second time (sized for one
 * entry per slot: an overflow), and could drop the slot's reference to a task the first
 * is about to return. So the slot is marked busy for the whole call, and the second call
 * raises RuntimeError. The flag is an atomic set and cleared with the GIL held, not a
 * field under `mutex`: it must cover the call until the returned reference is taken,
 * after `mutex` is let go and the GIL taken back, and one more lock round trip per task
 * to clear it there would cost every hand-off. */
static PyObject *
tq_get(TaskQueue *q, PyObject *arg)
{
    Py_ssize_t slot = PyLong_AsSsize_t(arg);
    if (slot == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (slot < 0 || slot >= q->nslots) {
        PyErr_Format(PyExc_IndexError, "slot %zd is not one of this queue's %zd",
                     slot, q->nslots);
        return NULL;
    }
    int free_slot = 0;
    if (!__atomic_compare_exchange_n(&q->busy[slot], &free_slot, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
    {
        PyErr_Format(PyExc_RuntimeError,
                     "slot %zd is already being waited on by another thread; each driver "
                     "thread needs its own slot", slot);
        return NULL;
    }
    PyObject *previous = __atomic_exchange_n(&q->slots[slot], NULL, __ATOMIC_ACQ_REL);
    Py_XDECREF(previous);

    PyObject *item = NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&q->mutex);
    if (q->count == 0) {
        q->idle++;
        do {
            /* put() takes us off the list as it posts: each post is for one sleep. */
            q->sleepers[q->nsleepers++] = slot;
            pthread_mutex_unlock(&q->mutex);
            while (sem_wait(&q->wake[slot]) != 0 && errno == EINTR) {
            }
            pthread_mutex_lock(&q->mutex);
        } while (q->count == 0);    /* another driver took it first: sleep again */
    }
    /* In the slot before it leaves the ring: a fork, which may come at any instruction
     * here (this thread does not hold the GIL), finds it in one place or both, never in
     * neither; unsettled() reads under the mutex. */
    item = q->ring[q->head];
    __atomic_store_n(&q->slots[slot], item, __ATOMIC_RELEASE);
    (void)pop_locked(q);
    pthread_mutex_unlock(&q->mutex);
    Py_END_ALLOW_THREADS
    Py_INCREF(item);            /* the slot keeps the queue's reference */
    __atomic_store_n(&q->busy[slot], 0, __ATOMIC_RELEASE);
    return item;
}

/* drain() -> list: every pending task, removed (for shutdown and broken pools).
 *
 * Nothing is taken from the ring before there is room for it: the list is made at the
 * size the queue had, without the mutex (making it may run the garbage collector, whose
 * finalizers may put(), which locks the mutex), and filled under the mutex. Drivers only
 * ever take tasks, so fewer may be left by then (the list is cut to those); only a put()
 * while the list was made, or while ss_mutex_lock_with_gil() let the GIL go, leaves more,
 * and then the list is made again. On MemoryError the queue is as it was. */
static PyObject *
tq_drain(TaskQueue *q, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        Py_ssize_t room = __atomic_load_n(&q->count, __ATOMIC_ACQUIRE);
        PyObject *items = PyList_New(room);
        if (items == NULL) {
            return NULL;
        }
        ss_mutex_lock_with_gil(&q->mutex);
        Py_ssize_t n = q->count;
        if (n <= room) {
            for (Py_ssize_t i = 0; i < n; i++) {
                PyList_SET_ITEM(items, i, pop_locked(q));   /* the queue's reference */
            }
            pthread_mutex_unlock(&q->mutex);
            /* The items past n are NULL and were never set: a shorter list is valid with
             * the room it was made with. */
            Py_SET_SIZE(items, n);
            return items;
        }
        pthread_mutex_unlock(&q->mutex);
        Py_DECREF(items);   /* its items are all NULL: nothing else is let go */
    }
}

/* Under the GIL, `mutex` taken or known free: the pending tasks and those drivers hold. */
static PyObject *
snapshot(TaskQueue *q)
{
    PyObject *items = PyList_New(0);
    if (items == NULL) {
        return NULL;
    }
    /* The whole ring, not head..head+count: in the child of a fork, a pop cut midway may
     * have left those inconsistent; entries outside the queue are NULL. A task seen both
     * here and in a slot is listed twice (the executor dedups by future). */
    for (Py_ssize_t i = 0; i < q->capacity; i++) {
        PyObject *queued = __atomic_load_n(&q->ring[(q->head + i) % q->capacity],
                                           __ATOMIC_ACQUIRE);
        if (queued != NULL && PyList_Append(items, queued) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < q->nslots; i++) {
        PyObject *held = __atomic_load_n(&q->slots[i], __ATOMIC_ACQUIRE);
        if (held != NULL && PyList_Append(items, held) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    return items;
}

/* unsettled() -> list: the pending tasks and those the drivers hold (some of them
 * settled already). */
static PyObject *
tq_unsettled(TaskQueue *q, PyObject *Py_UNUSED(ignored))
{
    ss_mutex_lock_with_gil(&q->mutex);
    PyObject *items = snapshot(q);
    pthread_mutex_unlock(&q->mutex);
    return items;
}

/* _after_fork_child() -> list: in the child of a fork, where no driver exists any more
 * and the mutex may have been held by one at the instant of the fork: unsettled(),
 * read without the lock, with the lock made anew. The queue must not be used after. */
static PyObject *
tq_after_fork_child(TaskQueue *q, PyObject *Py_UNUSED(ignored))
{
    if (init_sync(q) < 0) {
        return NULL;
    }
    return snapshot(q);
}

static Py_ssize_t
tq_len(TaskQueue *q)
{
    return __atomic_load_n(&q->count, __ATOMIC_ACQUIRE);
}

static PyMethodDef tq_methods[] = {
    {"put", (PyCFunction)tq_put, METH_O, NULL},
    {"get", (PyCFunction)tq_get, METH_O, NULL},
    {"drain", (PyCFunction)tq_drain, METH_NOARGS, NULL},
    {"unsettled", (PyCFunction)tq_unsettled, METH_NOARGS, NULL},
    {"_after_fork_child", (PyCFunction)tq_after_fork_child, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot tq_slots[] = {
    {Py_tp_new, tq_new},
    {Py_tp_dealloc, tq_dealloc},
    {Py_tp_traverse, tq_traverse},
    {Py_tp_methods, tq_methods},
    {Py_mp_length, tq_len},
    {Py_tp_doc, "_TaskQueue(slots): SandboxPoolExecutor's pending tasks (taskqueue.c)."},
    {0, NULL},
};

static PyType_Spec tq_spec = {
    .name = "subsandbox._core._TaskQueue",
    .basicsize = sizeof(TaskQueue),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = tq_slots,
};

int
ss_taskqueue_exec(PyObject *module, ss_state *st)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &tq_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_TaskQueue", type);
    Py_DECREF(type);
    return rc;
}

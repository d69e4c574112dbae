/* The running interpreter's own facts, and interrupting a task that runs in a sandbox.
 *
 * A sandbox runs tasks on one thread of its own (the worker). The worker registers itself
 * here (interpreter, thread) and runs each task through run_task(), which records the
 * task's id while it runs. interrupt() may then be called from any thread of any
 * interpreter: it checks that the worker still runs *that* task, enters the sandbox on a
 * temporary thread state (waiting for the sandbox's GIL), checks again, and schedules
 * KeyboardInterrupt in the worker thread with PyThreadState_SetAsyncExc(). The exception
 * is raised at the next bytecode boundary of the task's Python code: code blocked inside
 * C is interrupted only when it returns to Python, except a wait in a channel, which
 * interrupt() wakes to raise it at once (queue.c).
 *
 * Locks. The registry lock guards the list of workers and is never held while waiting
 * for a sandbox's GIL: a long C call (a huge pow(), a regex) holds its sandbox's GIL to
 * its end, and an interrupt that waited for that GIL under the registry lock stalled
 * every sandbox's task starts and ends with it. So interrupt() holds at most one of the
 * two at a time: it pins the worker under the registry lock, lets the lock go, and waits
 * for the GIL; worker_exit() waits, with its GIL released, until no interrupt pins it.
 * A worker may wait for its GIL while holding the registry lock (REGISTRY_LOCK's slow
 * path takes the GIL back holding it), which is why interrupt() must not take the
 * registry lock under the sandbox's GIL.
 *
 * What interrupt() reads under the sandbox's GIL alone (task, thread_id) is written only
 * with both the registry lock and that GIL held, so either one gives a stable value;
 * `interrupted` is only ever touched under the sandbox's GIL.
 */
#include "subsandbox.h"
#include "sync.h"
#include "pyinternal.h"

#include <pthread.h>

typedef struct worker {
    struct worker *next;
    int64_t interp_id;
    PyInterpreterState *interp;
    unsigned long thread_id;
    uint64_t task;          /* id of the running task, 0 when idle */
    uint64_t last_task;     /* id of the last task started (ids only grow) */
    uint64_t interrupt_next;    /* a task not started yet, to interrupt when it starts */
    int interrupted;        /* an interrupt was scheduled for the current/last task */
    int pins;               /* interrupt() calls inside the sandbox now (registry_lock) */
} worker;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t unpinned = PTHREAD_COND_INITIALIZER;     /* some worker's pins hit 0 */
static worker *workers = NULL;  /* guarded by registry_lock */

/* Take the registry lock holding the GIL, without deadlocking against another thread of
 * this interpreter that holds the lock and waits for the GIL (see ss_mutex_lock_with_gil). */
#define REGISTRY_LOCK() ss_mutex_lock_with_gil(&registry_lock)
#define REGISTRY_UNLOCK() pthread_mutex_unlock(&registry_lock)

static worker *
find_worker(int64_t interp_id)
{
    for (worker *w = workers; w != NULL; w = w->next) {
        if (w->interp_id == interp_id) {
            return w;
        }
    }
    return NULL;
}

static PyObject *
interpreter_id(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(PyInterpreterState_GetID(PyInterpreterState_Get()));
}

static PyObject *
interpreter_config(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    ss_interp_facts f;
    if (ss_interp_config(PyInterpreterState_Get(), &f) < 0) {
        return NULL;
    }
    return Py_BuildValue(
        "{s:s,s:O,s:O,s:O,s:O,s:O,s:O}",
        "gil", f.own_gil ? "own" : "shared",
        "use_main_obmalloc", f.use_main_obmalloc ? Py_True : Py_False,
        "check_multi_interp_extensions", f.check_multi_interp_extensions ? Py_True : Py_False,
        "allow_threads", f.allow_threads ? Py_True : Py_False,
        "allow_daemon_threads", f.allow_daemon_threads ? Py_True : Py_False,
        "allow_fork", f.allow_fork ? Py_True : Py_False,
        "allow_exec", f.allow_exec ? Py_True : Py_False);
}

static PyObject *
worker_enter(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (interp == PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError, "the main interpreter is not a sandbox worker");
        return NULL;
    }
    worker *w = PyMem_RawCalloc(1, sizeof(worker));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    w->interp_id = PyInterpreterState_GetID(interp);
    w->interp = interp;
    /* The id recorded in the thread state, which PyThreadState_SetAsyncExc() matches:
     * 3.12's _xxsubinterpreters runs every thread on the interpreter's first thread
     * state (gh-109860), whose id is that of the thread that created the interpreter. */
    w->thread_id = PyThreadState_Get()->thread_id;
    REGISTRY_LOCK();
    int taken = find_worker(w->interp_id) != NULL;
    if (!taken) {
        w->next = workers;
        workers = w;
    }
    REGISTRY_UNLOCK();
    if (taken) {
        PyMem_RawFree(w);
        PyErr_SetString(PyExc_RuntimeError, "this interpreter already has a worker");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
worker_exit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    worker *found = NULL;
    /* With the GIL released: an interrupt() that pinned this worker needs the GIL to
     * finish, and the interpreter must not be ended while its visitor thread state lives
     * (Py_EndInterpreter refuses one that has another thread state). Unlinked first, so
     * no new interrupt() can pin it. */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&registry_lock);
    for (worker **p = &workers; *p != NULL; p = &(*p)->next) {
        if ((*p)->interp_id == id) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    while (found != NULL && found->pins > 0) {
        pthread_cond_wait(&unpinned, &registry_lock);
    }
    pthread_mutex_unlock(&registry_lock);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(found);
    Py_RETURN_NONE;
}

/* fn(*args, **kwargs) as task `task` of this worker, interruptible by
 * interrupt(interp_id, task) while it runs. kwargs may be NULL. */
PyObject *
ss_run_task(uint64_t task, PyObject *fn, PyObject *args, PyObject *kwargs)
{
    if (task == 0) {
        PyErr_SetString(PyExc_ValueError, "task ids start at 1");
        return NULL;
    }
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    int interrupt_now = 0;
    REGISTRY_LOCK();
    worker *w = find_worker(id);
    if (w != NULL) {
        interrupt_now = w->interrupt_next == task;
        w->interrupt_next = 0;
        w->interrupted = interrupt_now;
        w->last_task = task;
        /* A task interrupted as it starts is never published as running: interrupt()
         * could otherwise schedule a second KeyboardInterrupt in it, which nothing would
         * take back, and which would fire in the worker's own loop. */
        w->task = interrupt_now ? 0 : task;
    }
    REGISTRY_UNLOCK();
    if (w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "run_task() outside a registered worker");
        return NULL;
    }
    if (interrupt_now) {
        /* Interrupted before it started (interrupt() below): it never runs. */
        ss_state *st = ss_current_state();
        PyErr_SetNone(st != NULL && st->interrupt_exc != NULL ? st->interrupt_exc
                                                               : PyExc_KeyboardInterrupt);
        return NULL;
    }

    PyObject *result = PyObject_Call(fn, args, kwargs);

    /* `w` stays valid: only this thread removes it (worker_exit). */
    REGISTRY_LOCK();
    w->task = 0;
    int interrupted = w->interrupted;
    REGISTRY_UNLOCK();
    if (interrupted) {
        /* An interrupt scheduled after the task's last bytecode must not fire in the
         * worker's own loop: drop it. No new one can come, the task id is gone. Taken
         * as the eval loop takes it, not with PyThreadState_SetAsyncExc(id, NULL): on
         * 3.12 that leaves the interpreter's request flag set, and every later check
         * of the eval breaker in this sandbox would go the slow way. */
        Py_XDECREF(ss_rt_take_async_exc(PyThreadState_Get()));
    }
    return result;
}

/* _testing_async_exc_requested() -> bool: whether an asynchronous exception is still
 * requested for the current thread (ss_rt_async_exc_requested; tests). */
static PyObject *
testing_async_exc_requested(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(ss_rt_async_exc_requested(PyThreadState_Get()));
}

/* run_task(task_id, fn, args, kwargs) -> fn(*args, **kwargs), interruptible by
 * interrupt(interp_id, task_id) while it runs. */
static PyObject *
run_task(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyTuple_Check(args[2])
        || (args[3] != Py_None && !PyDict_Check(args[3])))
    {
        PyErr_SetString(PyExc_TypeError, "run_task(task_id, fn, args: tuple, kwargs: dict)");
        return NULL;
    }
    unsigned long long task = PyLong_AsUnsignedLongLong(args[0]);
    if (task == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    return ss_run_task((uint64_t)task, args[1], args[2],
                       args[3] == Py_None ? NULL : args[3]);
}

/* Whether the last task run by this worker was interrupted (and forget it). */
static PyObject *
take_interrupted(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int64_t id = PyInterpreterState_GetID(PyInterpreterState_Get());
    int interrupted = 0;
    REGISTRY_LOCK();
    worker *w = find_worker(id);
    if (w != NULL) {
        interrupted = w->interrupted;
        w->interrupted = 0;
    }
    REGISTRY_UNLOCK();
    return PyBool_FromLong(interrupted);
}

/* Schedule the interrupt in `w`'s running task, from a visitor thread state of the
 * sandbox holding its GIL (interrupt() below). Returns whether it was scheduled. */
static int
deliver(worker *w)
{
    PyThreadState *visitor = PyThreadState_Get();
    /* PyThreadState_SetAsyncExc() picks the first thread state of the interpreter with
     * that thread id, newest first: on 3.12 the worker runs on a thread state carrying
     * the id of the thread that created the sandbox (see worker_enter), so when that same
     * thread interrupts (Ctrl-C in Sandbox.call, exit), our visitor would match first and
     * take the exception. Hide the visitor. */
    unsigned long visitor_id = visitor->thread_id;
    visitor->thread_id = 0;
    /* The sandbox's own subclass of KeyboardInterrupt (looked up here, in the sandbox,
     * under its GIL): code inside catches it as KeyboardInterrupt, but CPython's
     * run_eval_code_obj() (exec()/eval() of a string) only flags the *process* for exit
     * by SIGINT when the type is exactly KeyboardInterrupt, so interrupting a task does
     * not change the program's exit status. */
    ss_state *st = ss_current_state();
    PyObject *exc = st != NULL && st->interrupt_exc != NULL
                    ? st->interrupt_exc : PyExc_KeyboardInterrupt;
    PyErr_Clear();
    int n = PyThreadState_SetAsyncExc(w->thread_id, exc);
    visitor->thread_id = visitor_id;
    PyErr_Clear();  /* an audit hook refusal must not leak into the sandbox */
    if (n <= 0) {
        return 0;
    }
    w->interrupted = 1;
    /* A task blocked in a channel would see the exception only after its send() or
     * recv() completes: wake it to raise it there instead. */
    ss_queue_interrupt_waits(w->interp, w->thread_id);
    return 1;
}

/* interrupt(interp_id, task_id) -> bool: schedule KeyboardInterrupt in the task if it is
 * still running, or have it interrupted as it starts if it was sent but not started. */
static PyObject *
interrupt(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "interrupt(interp_id, task_id)");
        return NULL;
    }
    long long interp_id = PyLong_AsLongLong(args[0]);
    if (interp_id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    unsigned long long task = PyLong_AsUnsignedLongLong(args[1]);
    if (task == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (interp_id == PyInterpreterState_GetID(PyInterpreterState_Get())) {
        PyErr_SetString(PyExc_RuntimeError, "a sandbox cannot interrupt itself");
        return NULL;
    }
    int delivered = 0, failed = 0;
    PyThreadState *mine = PyEval_SaveThread();
    pthread_mutex_lock(&registry_lock);
    worker *w = find_worker((int64_t)interp_id);
    int running = 0;
    if (w != NULL && task != 0 && w->task != task && task > w->last_task) {
        /* Sent but not started yet (still in the channel): the worker interrupts it
         * when it starts, so an interrupt right after call() is never lost. */
        w->interrupt_next = task;
        delivered = 1;
    }
    else if (w != NULL && w->task == task && task != 0) {
        running = 1;
        w->pins++;      /* `w` and its interpreter live until we unpin it */
    }
    pthread_mutex_unlock(&registry_lock);
    if (running) {
        PyThreadState *visitor = PyThreadState_New(w->interp);
        if (visitor == NULL) {
            failed = 1;
        }
        else {
            PyEval_RestoreThread(visitor);  /* waits for the sandbox's GIL, lock-free */
            /* The task may have ended while we waited: then there is nothing to stop,
             * and an exception set now would fire in whatever runs next. */
            if (w->task == task) {
                delivered = deliver(w);
            }
            PyThreadState_Clear(visitor);
            PyThreadState_DeleteCurrent();
        }
        pthread_mutex_lock(&registry_lock);
        if (--w->pins == 0) {
            pthread_cond_broadcast(&unpinned);
        }
        pthread_mutex_unlock(&registry_lock);
    }
    PyEval_RestoreThread(mine);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "cannot enter the sandbox to interrupt it");
        return NULL;
    }
    return PyBool_FromLong(delivered);
}

/* ---- gates (gate.c) ---------------------------------------------------------------- */

PyInterpreterState *
ss_worker_interp(int64_t interp_id)
{
    REGISTRY_LOCK();
    worker *w = find_worker(interp_id);
    PyInterpreterState *interp = w != NULL ? w->interp : NULL;
    REGISTRY_UNLOCK();
    return interp;
}

unsigned long
ss_worker_set_thread(int64_t interp_id, unsigned long thread_id)
{
    unsigned long previous = 0;
    REGISTRY_LOCK();
    worker *w = find_worker(interp_id);
    if (w != NULL) {
        previous = w->thread_id;
        w->thread_id = thread_id;
    }
    REGISTRY_UNLOCK();
    return previous;
}

/* ---- fork (lifecycle.c) ----------------------------------------------------------------
 * The registry lock is held across fork() so that no worker is half-registered and no
 * pin is half-counted in the child's copy. It is not a leaf lock (a worker may wait for
 * its GIL while holding it), so it is taken from the Python before-fork hook,
 * with the GIL released, and not from a pthread_atfork() handler, which runs after the
 * runtime's HEAD_LOCK is taken. In the child the parent's workers do not exist: the list
 * is dropped (not freed: its entries name interpreters the child must never touch). */
void
ss_registry_fork_prepare(void)
{
    REGISTRY_LOCK();
}

void
ss_registry_fork_done(int in_child)
{
    if (in_child) {
        workers = NULL;
        /* No thread of the child waits on it; a parent's waiter may have left its
         * bookkeeping mid-change. */
        pthread_cond_init(&unpinned, NULL);
    }
    REGISTRY_UNLOCK();
}

static PyMethodDef interp_methods[] = {
    {"interpreter_id", interpreter_id, METH_NOARGS,
     "interpreter_id()\n--\n\nThe id of the current interpreter."},
    {"interpreter_config", interpreter_config, METH_NOARGS,
     "interpreter_config()\n--\n\nThe current interpreter's PEP 684 settings, as the "
     "runtime holds them (own GIL, own object allocator...)."},
    {"_worker_enter", worker_enter, METH_NOARGS, NULL},
    {"_worker_exit", worker_exit, METH_NOARGS, NULL},
    {"_run_task", (PyCFunction)(void (*)(void))run_task, METH_FASTCALL, NULL},
    {"_take_interrupted", take_interrupted, METH_NOARGS, NULL},
    {"_interrupt", (PyCFunction)(void (*)(void))interrupt, METH_FASTCALL, NULL},
    {"_testing_async_exc_requested", testing_async_exc_requested, METH_NOARGS,
     "_testing_async_exc_requested() -> bool: is an asynchronous exception still "
     "requested for this thread (tests)."},
    {NULL, NULL, 0, NULL},
};

int
ss_interp_exec(PyObject *module, ss_state *st)
{
    st->interrupt_exc = PyErr_NewExceptionWithDoc(
        "subsandbox._core._Interrupt",
        "What Sandbox.interrupt() raises inside the task: a KeyboardInterrupt.",
        PyExc_KeyboardInterrupt, NULL);
    if (st->interrupt_exc == NULL
        || PyModule_AddObjectRef(module, "_Interrupt", st->interrupt_exc) < 0)
    {
        return -1;
    }
    return PyModule_AddFunctions(module, interp_methods);
}

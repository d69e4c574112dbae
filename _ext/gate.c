/* Gates: a thread of the main interpreter runs a task inside a sandbox itself.
 *
 * SandboxPoolExecutor's driver threads used to hand each task to the sandbox's own worker
 * thread through a channel, and a collector thread completed the future: three thread
 * wake-ups per task. Through a gate the driver thread enters the sandbox on a thread state
 * of its own (PyThreadState_New: the sandbox's GIL, never the main one), runs the
 * sandbox's task handler, and comes back with the answer: the submitting thread wakes the
 * driver, the driver wakes whoever waits on the future, as in ThreadPoolExecutor.
 *
 * What crosses is encoded by xvalue.c, as for a channel: the task is encoded under the
 * main GIL and decoded under the sandbox's, the answer the other way round; no object of
 * one interpreter is ever touched under the other's GIL. The handlers, objects of the
 * sandbox, are held by the gate and released inside the sandbox when it closes.
 *
 * One gate belongs to the thread that opened it: only that thread may call through it or
 * close it, and it must close it before the sandbox is destroyed (Py_EndInterpreter()
 * refuses an interpreter that still has another thread state).
 *
 * Interrupts: while the gate is open, interp.c's interrupt() targets the gate's thread
 * state (ss_worker_set_thread), since that is where the sandbox's tasks run. The switch
 * is made inside the sandbox, under its GIL, where interrupt() reads it.
 */
#include "subsandbox.h"

#include "pythread.h"

#define GATE_CAPSULE "subsandbox._core.gate"

typedef struct {
    int64_t interp_id;
    PyThreadState *inner;           /* in the sandbox; attached only by `owner` */
    unsigned long owner;            /* PyThread_get_thread_ident() of the opener */
    unsigned long previous_thread;  /* what ss_worker_set_thread() returned */
    /* Objects of the sandbox, touched only under its GIL (from _pool_inside): */
    PyObject *handler;              /* handle(task) -> answer */
    PyObject *fallback;             /* pickled(task_id, result) -> answer */
    PyObject *functions;            /* {token: function}, shared with handle() */
    PyObject *failed;               /* failed(task_id, exc) -> answer */
    /* The sandbox's _core state: its module is held by the interpreter's own dict
     * (module.c) until the interpreter is destroyed, after every gate into it closed. */
    ss_state *inner_state;
} ss_gate;

/* Enter the sandbox from the main interpreter, and come back. */
static PyThreadState *
enter(ss_gate *g)
{
    PyThreadState *outer = PyEval_SaveThread();
    PyEval_RestoreThread(g->inner);
    return outer;
}

static void
leave(PyThreadState *outer)
{
    PyEval_SaveThread();
    PyEval_RestoreThread(outer);
}

/* The current exception of the sandbox as text in raw memory (it cannot cross as an
 * object), and the exception cleared. Never NULL unless out of memory. */
static char *
take_error_text(void)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *text = NULL;
    if (exc != NULL) {
        text = PyUnicode_FromFormat("%s: %S", Py_TYPE(exc)->tp_name, exc);
    }
    Py_XDECREF(exc);
    const char *utf8 = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    if (utf8 == NULL) {
        PyErr_Clear();
        utf8 = "an error that could not be described";
    }
    size_t n = strlen(utf8) + 1;
    char *copy = PyMem_RawMalloc(n);
    if (copy != NULL) {
        memcpy(copy, utf8, n);
    }
    Py_XDECREF(text);
    return copy;
}

/* The sandbox could not run or answer a task (frees `failure`). Every other exception
 * of _gate_call/_gate_run is raised in the calling interpreter, before the task entered
 * the sandbox (its arguments cannot cross) or after it answered (its answer cannot be
 * rebuilt): the task's error, while the sandbox goes on. */
static void
raise_gate_failed(ss_state *st, char *failure)
{
    PyErr_Format(st->gate_failed_error, "the sandbox failed to run the task: %s",
                 failure != NULL ? failure : "out of memory");
    PyMem_RawFree(failure);
}

static ss_gate *
get_gate(PyObject *capsule)
{
    ss_gate *g = PyCapsule_GetPointer(capsule, GATE_CAPSULE);
    if (g == NULL) {
        return NULL;
    }
    if (g->inner == NULL) {
        PyErr_SetString(PyExc_ValueError, "the gate is closed");
        return NULL;
    }
    if (g->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a gate is used only by the thread that opened it");
        return NULL;
    }
    return g;
}

/* Under the sandbox's GIL. */
static void
clear_handlers(ss_gate *g)
{
    Py_CLEAR(g->handler);
    Py_CLEAR(g->fallback);
    Py_CLEAR(g->functions);
    Py_CLEAR(g->failed);
    g->inner_state = NULL;
}

/* Take the handlers from subsandbox._inside.gate_handlers(), under the sandbox's GIL.
 * -1 with an exception of the sandbox set. */
static int
take_handlers(ss_gate *g)
{
    PyObject *inside = PyImport_ImportModule("subsandbox._inside");
    if (inside == NULL) {
        return -1;
    }
    PyObject *four = PyObject_CallMethod(inside, "gate_handlers", NULL);
    Py_DECREF(inside);
    if (four == NULL) {
        return -1;
    }
    if (!PyTuple_Check(four) || PyTuple_GET_SIZE(four) != 4
        || !PyDict_CheckExact(PyTuple_GET_ITEM(four, 2)))
    {
        Py_DECREF(four);
        PyErr_SetString(PyExc_TypeError, "gate_handlers() must return (handle, pickled, "
                        "functions: dict, failed)");
        return -1;
    }
    g->handler = Py_NewRef(PyTuple_GET_ITEM(four, 0));
    g->fallback = Py_NewRef(PyTuple_GET_ITEM(four, 1));
    g->functions = Py_NewRef(PyTuple_GET_ITEM(four, 2));
    g->failed = Py_NewRef(PyTuple_GET_ITEM(four, 3));
    Py_DECREF(four);
    g->inner_state = ss_current_state();   /* _inside imported _core */
    return g->inner_state == NULL ? -1 : 0;
}

/* Release what the gate holds in the sandbox and delete its thread state. Runs on the
 * owner thread, holding the main GIL. */
static void
close_gate(ss_gate *g)
{
    if (g->inner == NULL) {
        return;
    }
    PyThreadState *outer = PyEval_SaveThread();
    PyEval_RestoreThread(g->inner);
    ss_worker_set_thread(g->interp_id, g->previous_thread);
    clear_handlers(g);
    PyThreadState_Clear(g->inner);
    PyThreadState_DeleteCurrent();          /* releases the sandbox's GIL */
    g->inner = NULL;
    PyEval_RestoreThread(outer);
}

static void
gate_capsule_destructor(PyObject *capsule)
{
    ss_gate *g = PyCapsule_GetPointer(capsule, GATE_CAPSULE);
    if (g == NULL) {
        PyErr_Clear();
        return;
    }
    if (g->inner != NULL) {
        if (g->owner != PyThread_get_thread_ident()) {
            /* Only its owner can enter the sandbox on it. Leaked, with its handlers: the
             * executor always closes its gates, so this is a bug, and a leak is the safe
             * way out of it. */
            return;
        }
        close_gate(g);
    }
    PyMem_RawFree(g);
}

/* _gate_open(interp_id) -> gate: enter the sandbox's registered worker interpreter on a
 * new thread state of this thread, and take its handlers from
 * subsandbox._inside.gate_handlers(). */
static PyObject *
gate_open(PyObject *module, PyObject *arg)
{
    long long interp_id = PyLong_AsLongLong(arg);
    if (interp_id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyInterpreterState *interp = ss_worker_interp((int64_t)interp_id);
    if (interp == NULL) {
        PyErr_Format(PyExc_RuntimeError, "sandbox %lld has no running worker to open a "
                     "gate into", interp_id);
        return NULL;
    }
    if (interp == PyInterpreterState_Get()) {
        PyErr_SetString(PyExc_RuntimeError, "a sandbox cannot open a gate into itself");
        return NULL;
    }
    ss_gate *g = PyMem_RawCalloc(1, sizeof(ss_gate));
    if (g == NULL) {
        return PyErr_NoMemory();
    }
    g->interp_id = (int64_t)interp_id;
    g->owner = PyThread_get_thread_ident();
    g->inner = PyThreadState_New(interp);
    if (g->inner == NULL) {
        PyMem_RawFree(g);
        return PyErr_NoMemory();
    }

    char *failure = NULL;
    PyThreadState *outer = enter(g);
    if (take_handlers(g) < 0) {
        failure = take_error_text();
        clear_handlers(g);
    }
    else {
        g->previous_thread = ss_worker_set_thread(g->interp_id, g->inner->thread_id);
    }
    leave(outer);

    if (g->handler == NULL) {
        /* Not close_gate(): no interrupt was redirected to this gate yet. */
        outer = enter(g);
        PyThreadState_Clear(g->inner);
        PyThreadState_DeleteCurrent();
        PyEval_RestoreThread(outer);
        PyMem_RawFree(g);
        PyErr_Format(PyExc_RuntimeError, "cannot open a gate into sandbox %lld: %s",
                     interp_id, failure != NULL ? failure : "out of memory");
        PyMem_RawFree(failure);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(g, GATE_CAPSULE, gate_capsule_destructor);
    if (capsule == NULL) {
        close_gate(g);
        PyMem_RawFree(g);
    }
    return capsule;
}

/* Inside the sandbox: decode the task, run the handler, encode its answer (through the
 * fallback when the answer is not a channel value). NULL with *failure set on error. */
static ss_xvalue *
run_inside(ss_gate *g, ss_xvalue *task_value, char **failure)
{
    ss_state *st = g->inner_state;
    ss_xvalue *out = NULL;
    PyObject *task = ss_xvalue_decode(st, task_value);
    if (task == NULL) {
        *failure = take_error_text();
        return NULL;
    }
    PyObject *answer = PyObject_CallOneArg(g->handler, task);
    Py_DECREF(task);
    if (answer != NULL) {
        out = ss_xvalue_encode(st, answer, "the answer");
        if (out == NULL && PyTuple_Check(answer) && PyTuple_GET_SIZE(answer) == 4) {
            /* (task_id, "ok", True, result) whose result cannot cross as a channel
             * value: not one, or one nested too deep (RecursionError). The fallback
             * pickles it, or answers with the error that stops it: the task's error,
             * not the sandbox's. */
            PyErr_Clear();
            PyObject *pickled = PyObject_CallFunctionObjArgs(
                g->fallback, PyTuple_GET_ITEM(answer, 0), PyTuple_GET_ITEM(answer, 3), NULL);
            if (pickled != NULL) {
                out = ss_xvalue_encode(st, pickled, "the answer");
                Py_DECREF(pickled);
            }
        }
        Py_DECREF(answer);
    }
    if (out == NULL) {
        *failure = take_error_text();
    }
    return out;
}

/* _gate_call(gate, task) -> answer: run the sandbox's handler on `task` on this thread. */
static PyObject *
gate_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_gate_call(gate, task)");
        return NULL;
    }
    ss_gate *g = get_gate(args[0]);
    if (g == NULL) {
        return NULL;
    }
    ss_state *st = ss_get_state(module);
    ss_xvalue *in = ss_xvalue_encode(st, args[1], "the task");
    if (in == NULL) {
        return NULL;
    }
    char *failure = NULL;
    PyThreadState *outer = enter(g);
    ss_xvalue *out = run_inside(g, in, &failure);
    leave(outer);
    ss_xvalue_free(in);
    if (out == NULL) {
        raise_gate_failed(st, failure);
        return NULL;
    }
    PyObject *answer = ss_xvalue_decode(st, out);
    ss_xvalue_free(out);
    return answer;
}

/* ---- the fast path: a cached function on plain arguments --------------------------------
 * The common task, a function the worker already holds called with positional arguments
 * that are channel values, runs without the Python handler: the arguments cross as one
 * xvalue, the function is taken from the handler's own cache, called through
 * ss_run_task() (interruptible exactly as _core._run_task), and a result that is a
 * channel value crosses back bare. Only what the fast path cannot answer itself (an
 * exception, a result to pickle) goes through _pool_inside. */

typedef enum {
    FAST_RESULT,    /* out: the result, bare */
    FAST_ANSWER,    /* out: a whole answer tuple, as handle() makes them */
    FAST_MISSING,   /* the worker does not hold the function: out is NULL, no failure */
} fast_status;

static ss_xvalue *
run_fast_inside(ss_gate *g, uint64_t task, long long token, ss_xvalue *args_value,
                fast_status *status, char **failure)
{
    ss_state *st = g->inner_state;
    ss_xvalue *out = NULL;
    PyObject *key = PyLong_FromLongLong(token);
    if (key == NULL) {
        *failure = take_error_text();
        return NULL;
    }
    PyObject *fn = PyDict_GetItemWithError(g->functions, key);   /* borrowed */
    Py_DECREF(key);
    if (fn == NULL) {
        if (PyErr_Occurred()) {
            *failure = take_error_text();
        }
        else {
            *status = FAST_MISSING;
        }
        return NULL;
    }
    Py_INCREF(fn);      /* the task may drop it from the cache */
    PyObject *fn_args = ss_xvalue_decode(st, args_value);
    if (fn_args == NULL) {
        Py_DECREF(fn);
        *failure = take_error_text();
        return NULL;
    }
    PyObject *result = ss_run_task(task, fn, fn_args, NULL);
    Py_DECREF(fn_args);
    Py_DECREF(fn);
    PyObject *task_id = NULL;
    if (result != NULL) {
        out = ss_xvalue_encode(st, result, "the result");
        if (out != NULL) {
            *status = FAST_RESULT;
            Py_DECREF(result);
            return out;
        }
        PyErr_Clear();      /* to the fallback, as in run_inside */
    }
    /* The slow answers: a result to pickle, or the task's exception. */
    PyObject *exc = result == NULL ? PyErr_GetRaisedException() : NULL;
    task_id = PyLong_FromUnsignedLongLong(task);
    PyObject *answer = NULL;
    if (task_id != NULL) {
        answer = result != NULL
            ? PyObject_CallFunctionObjArgs(g->fallback, task_id, result, NULL)
            : PyObject_CallFunctionObjArgs(g->failed, task_id, exc, NULL);
        Py_DECREF(task_id);
    }
    Py_XDECREF(exc);
    Py_XDECREF(result);
    if (answer != NULL) {
        out = ss_xvalue_encode(st, answer, "the answer");
        Py_DECREF(answer);
    }
    if (out == NULL) {
        *failure = take_error_text();
        return NULL;
    }
    *status = FAST_ANSWER;
    return out;
}

/* _gate_run(gate, task_id, token, args) -> answer: call the function the worker holds as
 * `token` on `args` (a tuple of channel values), on this thread. Answers:
 *   (result,)   the task returned `result`, a channel value
 *   ()          the worker does not hold `token` (send the function again)
 *   otherwise   an answer tuple as _pool_inside.handle() makes them. */
static PyObject *
gate_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyTuple_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "_gate_run(gate, task_id: int, token: int, args: tuple)");
        return NULL;
    }
    ss_gate *g = get_gate(args[0]);
    if (g == NULL) {
        return NULL;
    }
    unsigned long long task = PyLong_AsUnsignedLongLong(args[1]);
    if (task == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    long long token = PyLong_AsLongLong(args[2]);
    if (token == -1 && PyErr_Occurred()) {
        return NULL;
    }
    ss_state *st = ss_get_state(module);
    ss_xvalue *in = ss_xvalue_encode(st, args[3], "the arguments");
    if (in == NULL) {
        return NULL;
    }
    char *failure = NULL;
    fast_status status = FAST_ANSWER;
    PyThreadState *outer = enter(g);
    ss_xvalue *out = run_fast_inside(g, (uint64_t)task, token, in, &status, &failure);
    leave(outer);
    ss_xvalue_free(in);
    if (out == NULL) {
        if (status == FAST_MISSING) {
            return PyTuple_New(0);
        }
        raise_gate_failed(st, failure);
        return NULL;
    }
    PyObject *value = ss_xvalue_decode(st, out);
    ss_xvalue_free(out);
    if (value == NULL || status != FAST_RESULT) {
        return value;
    }
    PyObject *answer = PyTuple_Pack(1, value);
    Py_DECREF(value);
    return answer;
}

/* _gate_close(gate): leave the sandbox for good. Idempotent. */
static PyObject *
gate_close(PyObject *module, PyObject *capsule)
{
    ss_gate *g = PyCapsule_GetPointer(capsule, GATE_CAPSULE);
    if (g == NULL) {
        return NULL;
    }
    if (g->inner != NULL) {
        if (g->owner != PyThread_get_thread_ident()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "a gate is closed only by the thread that opened it");
            return NULL;
        }
        close_gate(g);
    }
    Py_RETURN_NONE;
}

static PyMethodDef gate_methods[] = {
    {"_gate_open", gate_open, METH_O, NULL},
    {"_gate_call", (PyCFunction)(void (*)(void))gate_call, METH_FASTCALL, NULL},
    {"_gate_run", (PyCFunction)(void (*)(void))gate_run, METH_FASTCALL, NULL},
    {"_gate_close", gate_close, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int
ss_gate_exec(PyObject *module, ss_state *st)
{
    if (PyModule_AddFunctions(module, gate_methods) < 0) {
        return -1;
    }
    st->gate_failed_error = PyErr_NewExceptionWithDoc(
        "subsandbox._core._GateFailed",
        "A worker sandbox could not run or answer a task through its gate.",
        PyExc_RuntimeError, NULL);
    if (st->gate_failed_error == NULL
        || PyModule_AddObjectRef(module, "_GateFailed", st->gate_failed_error) < 0)
    {
        return -1;
    }
    if (ss_taskqueue_exec(module, st) < 0) {
        return -1;
    }
    return ss_futurecond_exec(module, st);
}

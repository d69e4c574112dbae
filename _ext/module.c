/* subsandbox._core: module state, multi-phase init and the pieces' registration.
 *
 * The module is imported once per interpreter (PEP 489 multi-phase init) and declares
 * per-interpreter-GIL support, so every sandbox imports its own copy of the module state.
 * Process-wide state (arenas, queues) lives in raw memory behind locks, in the other files.
 */
#include "subsandbox.h"
#include "pyversion.h"

#include <pthread.h>

#define STATE_KEY "subsandbox._core.module"

ss_state *
ss_get_state(PyObject *module)
{
    return (ss_state *)PyModule_GetState(module);
}

ss_state *
ss_current_state(void)
{
    /* PyState_FindModule() does not work for multi-phase modules: each interpreter's
     * module registers itself in that interpreter's dict instead. */
    PyObject *idict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    if (idict == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "no per-interpreter dict");
        }
        return NULL;
    }
    PyObject *module = PyDict_GetItemString(idict, STATE_KEY);  /* borrowed */
    if (module == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "subsandbox._core is not imported in this interpreter");
        return NULL;
    }
    return ss_get_state(module);
}

/* A PY_VERSION_HEX as CPython writes its version: "3.13.0", "3.15.0rc2". */
static void
format_version(unsigned long hex, char *buf, size_t size)
{
    unsigned long level = (hex >> 4) & 0xF;
    const char *tag = level == 0xA ? "a" : level == 0xB ? "b" : level == 0xC ? "rc" : NULL;
    if (tag != NULL) {
        PyOS_snprintf(buf, size, "%lu.%lu.%lu%s%lu", (hex >> 24) & 0xFF, (hex >> 16) & 0xFF,
                      (hex >> 8) & 0xFF, tag, hex & 0xF);
    }
    else {
        PyOS_snprintf(buf, size, "%lu.%lu.%lu", (hex >> 24) & 0xFF, (hex >> 16) & 0xFF,
                      (hex >> 8) & 0xFF);
    }
}

/* -1 with ImportError unless this is the CPython whose headers built us (pyversion.h). */
static int
check_runtime_version(void)
{
    unsigned long built = SS_BUILT_FOR_VERSION_HEX, running = SS_RUNNING_VERSION_HEX;
    if (built == running) {
        return 0;
    }
    char built_text[32], running_text[32];
    format_version(built, built_text, sizeof(built_text));
    format_version(running, running_text, sizeof(running_text));
    PyErr_Format(PyExc_ImportError,
                 "subsandbox._core was built for CPython %s but this is CPython %s: it "
                 "reads CPython internals whose layout may change between any two "
                 "releases, so it must be built by the CPython that runs it: reinstall "
                 "subsandbox from source with this Python (pip install --force-reinstall "
                 "--no-binary subsandbox --no-cache-dir subsandbox, or pip install "
                 "--force-reinstall . in a checkout; without --no-cache-dir, pip may "
                 "reinstall the wheel it built for the other CPython)",
                 built_text, running_text);
    return -1;
}

static int
ss_exec(PyObject *module)
{
    if (check_runtime_version() < 0) {
        return -1;
    }
    ss_state *st = ss_get_state(module);
    st->interp_id = PyInterpreterState_GetID(PyInterpreterState_Get());
    if (st->interp_id < 0) {
        return -1;
    }
    st->not_shareable_error = PyErr_NewExceptionWithDoc(
        "subsandbox.NotShareableError",
        "A value cannot be shared or sent between interpreters; the message names the "
        "part of the value at fault and what to use instead.",
        PyExc_TypeError, NULL);
    if (st->not_shareable_error == NULL
        || PyModule_AddObjectRef(module, "NotShareableError", st->not_shareable_error) < 0)
    {
        return -1;
    }
    if (ss_interp_exec(module, st) < 0
        || ss_frozen_exec(module, st) < 0
        || ss_shared_exec(module, st) < 0
        || ss_queue_exec(module, st) < 0
        || ss_xvalue_exec(module, st) < 0
        || ss_gate_exec(module, st) < 0
        || ss_lifecycle_exec(module, st) < 0
        || ss_compile_guard_exec(module, st) < 0
        || ss_seal_exec(module, st) < 0
        || ss_keyspread_exec(module, st) < 0
        || ss_teardown_guard_exec(module, st) < 0)
    {
        return -1;
    }
    PyObject *idict = PyInterpreterState_GetDict(PyInterpreterState_Get());
    if (idict == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "no per-interpreter dict");
        }
        return -1;
    }
    /* A borrowed-by-convention entry: the interpreter dict is cleared when the
     * interpreter is, after its modules. */
    return PyDict_SetItemString(idict, STATE_KEY, module);
}

static int
ss_traverse(PyObject *module, visitproc visit, void *arg)
{
    ss_state *st = ss_get_state(module);
    Py_VISIT(st->channel_type);
    Py_VISIT(st->arena_type);
    Py_VISIT(st->sharedref_type);
    Py_VISIT(st->channel_closed_error);
    Py_VISIT(st->channel_full_error);
    Py_VISIT(st->channel_empty_error);
    Py_VISIT(st->not_shareable_error);
    Py_VISIT(st->interrupt_exc);
    Py_VISIT(st->gate_failed_error);
    Py_VISIT(st->guarded_type);
    Py_VISIT(st->seal_error);
    Py_VISIT(st->seal_breach);
    Py_VISIT(st->seal_labels);
    return 0;
}

static int
ss_clear(PyObject *module)
{
    ss_state *st = ss_get_state(module);
    Py_CLEAR(st->channel_type);
    Py_CLEAR(st->arena_type);
    Py_CLEAR(st->sharedref_type);
    Py_CLEAR(st->channel_closed_error);
    Py_CLEAR(st->channel_full_error);
    Py_CLEAR(st->channel_empty_error);
    Py_CLEAR(st->not_shareable_error);
    Py_CLEAR(st->interrupt_exc);
    Py_CLEAR(st->gate_failed_error);
    Py_CLEAR(st->guarded_type);
    Py_CLEAR(st->seal_error);
    Py_CLEAR(st->seal_breach);
    Py_CLEAR(st->seal_labels);
    return 0;
}

static void
ss_free(void *module)
{
    (void)ss_clear((PyObject *)module);
}

static PyModuleDef_Slot ss_slots[] = {
    {Py_mod_exec, ss_exec},
    /* Safe under an own GIL: no PyObject is shared through C globals, and process-wide
     * structures are guarded by their own locks. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};

PyModuleDef ss_moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "subsandbox._core",
    .m_doc = "The C core of subsandbox: shared immortal objects, channels, interrupts.",
    .m_size = sizeof(ss_state),
    .m_slots = ss_slots,
    .m_traverse = ss_traverse,
    .m_clear = ss_clear,
    .m_free = ss_free,
};

/* Every interpreter that imports _core calls this, on its own thread and with its own
 * GIL. PyModuleDef_Init writes the shared static definition the first time (its type
 * and m_index), unlocked: two sandboxes importing _core at once raced on it
 * (ThreadSanitizer, executor workers starting together). One at a time. */
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

PyMODINIT_FUNC
PyInit__core(void)
{
    pthread_mutex_lock(&init_lock);
    PyObject *def = PyModuleDef_Init(&ss_moduledef);
    pthread_mutex_unlock(&init_lock);
    return def;
}

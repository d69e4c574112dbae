/* A policy sandbox acts on nothing while its interpreter is torn down.
 *
 * A policy's audit hook is a Python callable held by the interpreter (sys.addaudithook),
 * and Py_EndInterpreter drops it (interpreter_clear: Py_CLEAR(interp->audit_hooks)) before
 * the interpreter's last garbage collection. A cycle whose __del__ makes a new cycle each
 * time lived until that collection and ran there with no hook: it replaced a checked code
 * object's names (code.__new__), made a function of it (function.__new__) and opened files
 * with a FileIO class it had kept (a red-team run, round 17).
 *
 * So a runtime-wide audit hook (PySys_AddAuditHook: every interpreter of the process, added
 * once, never dropped before the runtime ends) refuses every event of an interpreter that
 * is being finalized and that installed a policy. The policy registers its interpreter by
 * id when it installs (_core._register_policy_interpreter); the id is forgotten when the
 * caller reclaims the destroyed interpreter (lifecycle.c). Ids are never reused in a
 * process, so a stale one refuses nothing.
 */
#include "subsandbox.h"
#include "pyversion.h"

#include <pthread.h>

static pthread_mutex_t policy_lock = PTHREAD_MUTEX_INITIALIZER;  /* leaf */
static int64_t *policy_ids;         /* guarded by policy_lock */
static size_t npolicy_ids, cappolicy_ids;   /* guarded by policy_lock */

/* Whether `id` is registered; the caller holds policy_lock. */
static int
registered_locked(int64_t id)
{
    for (size_t i = 0; i < npolicy_ids; i++) {
        if (policy_ids[i] == id) {
            return 1;
        }
    }
    return 0;
}

static int
is_policy_interpreter(int64_t id)
{
    pthread_mutex_lock(&policy_lock);
    int found = registered_locked(id);
    pthread_mutex_unlock(&policy_lock);
    return found;
}

void
ss_teardown_forget(int64_t id)
{
    pthread_mutex_lock(&policy_lock);
    for (size_t i = 0; i < npolicy_ids; i++) {
        if (policy_ids[i] == id) {
            policy_ids[i] = policy_ids[--npolicy_ids];
            break;
        }
    }
    if (npolicy_ids == 0) {
        PyMem_RawFree(policy_ids);
        policy_ids = NULL;
        cappolicy_ids = 0;
    }
    pthread_mutex_unlock(&policy_lock);
}

/* Fork (lifecycle.c): the registry's lock is a leaf, taken across our fork() so that the
 * child never inherits it held by a thread it does not have. */
void
ss_teardown_fork_prepare(void)
{
    pthread_mutex_lock(&policy_lock);
}

void
ss_teardown_fork_done(int Py_UNUSED(in_child))
{
    pthread_mutex_unlock(&policy_lock);
}

static int
teardown_hook(const char *event, PyObject *Py_UNUSED(args), void *Py_UNUSED(data))
{
    /* Called for every audit event of every interpreter, and with no thread state at
     * all early in the runtime's start: one field read decides most. */
    PyThreadState *tstate = SS_TSTATE_UNCHECKED();
    if (tstate == NULL) {
        return 0;
    }
    PyInterpreterState *interp = PyThreadState_GetInterpreter(tstate);
    if (!ss_interp_finalizing(interp)
        || !is_policy_interpreter(PyInterpreterState_GetID(interp)))
    {
        return 0;
    }
    PyErr_Format(PyExc_PermissionError,
                 "a sandbox under a policy does nothing while it is being closed "
                 "(audit event %s)", event);
    return -1;
}

/* _register_policy_interpreter(): the interpreter calling this runs under a policy. */
static PyObject *
register_policy_interpreter(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (interp == PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the main interpreter does not run under a policy");
        return NULL;
    }
    int64_t id = PyInterpreterState_GetID(interp);
    pthread_mutex_lock(&policy_lock);
    if (registered_locked(id)) {
        pthread_mutex_unlock(&policy_lock);
        Py_RETURN_NONE;
    }
    if (npolicy_ids == cappolicy_ids) {
        size_t cap = cappolicy_ids ? 2 * cappolicy_ids : 16;
        int64_t *grown = PyMem_RawRealloc(policy_ids, cap * sizeof(int64_t));
        if (grown == NULL) {
            pthread_mutex_unlock(&policy_lock);
            return PyErr_NoMemory();
        }
        policy_ids = grown;
        cappolicy_ids = cap;
    }
    policy_ids[npolicy_ids++] = id;
    pthread_mutex_unlock(&policy_lock);
    Py_RETURN_NONE;
}

static PyMethodDef teardown_functions[] = {
    {"_register_policy_interpreter", register_policy_interpreter, METH_NOARGS,
     "_register_policy_interpreter(): refuse every audit event of this interpreter once it "
     "is being finalized (teardown_guard.c)."},
    {NULL, NULL, 0, NULL},
};

static pthread_once_t hook_once = PTHREAD_ONCE_INIT;
static int hook_rc;

static void
add_hook(void)
{
    hook_rc = PySys_AddAuditHook(teardown_hook, NULL);
}

int
ss_teardown_guard_exec(PyObject *module, ss_state *Py_UNUSED(st))
{
    /* As compile_guard.c: the first interpreter to import the module adds the hook. */
    pthread_once(&hook_once, add_hook);
    if (hook_rc < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ImportError,
                            "subsandbox._core: an audit hook refused the audit hook that "
                            "keeps a policy sandbox from acting while it is closed "
                            "(sys.addaudithook), when this module was first imported");
        }
        return -1;
    }
    return PyModule_AddFunctions(module, teardown_functions);
}

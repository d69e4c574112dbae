/* compile() of an AST whose constants hold shared tuples.
 *
 * CPython's compiler merges the items of each tuple constant with equal constants met
 * earlier in the same compilation, and stores the merged item back into the tuple, in
 * place (Python/compile.c: merge_consts_recursive on 3.12 and 3.13, const_cache_insert on
 * 3.14):
 *
 *     if (v != item) { PyTuple_SET_ITEM(o, i, Py_NewRef(v)); Py_DECREF(item); }
 *
 * Source text never holds a shared tuple; an ast.Constant built by the caller can
 * (a code generator that puts shared data into the code it makes). The compiler then
 * writes objects of one interpreter, allocated by its allocator and counted under its
 * GIL, into process-wide memory that every other interpreter reads: a hunt with the
 * tuple's pages read-only saw a SIGSEGV under _PyAST_Compile on 3.12, 3.13 and 3.14, and
 * three sandboxes reading the planted item raced its reference count until one crashed.
 *
 * So a runtime-wide audit hook (PySys_AddAuditHook: every interpreter of the process, at
 * C speed, added once) watches the "compile" event, which PyAST_obj2mod raises with the
 * AST before converting it, and replaces every field of the AST whose value is, or holds,
 * a shared tuple by a local copy of its containers. Only tuples and frozensets are
 * rebuilt: the merge stores into tuples only, and the leaves (shared strings, numbers)
 * are left as they are. The code compiled is the same; the caller's AST holds the copy
 * afterwards. Nothing else raises "compile" with an AST.
 */
#include "subsandbox.h"

#include <pthread.h>
#include <string.h>

/* 1 when `o` is a shared tuple or a tuple or frozenset that holds one; -1 on error. */
static int
holds_shared_tuple(PyObject *o)
{
    if (PyTuple_Check(o)) {
        if (ss_arena_of(o) != NULL) {
            return 1;
        }
        if (Py_EnterRecursiveCall(" while looking for shared tuples in a constant")) {
            return -1;
        }
        int found = 0;
        for (Py_ssize_t i = 0; found == 0 && i < PyTuple_GET_SIZE(o); i++) {
            found = holds_shared_tuple(PyTuple_GET_ITEM(o, i));
        }
        Py_LeaveRecursiveCall();
        return found;
    }
    if (PyFrozenSet_Check(o)) {
        PyObject *it = PyObject_GetIter(o);
        if (it == NULL) {
            return -1;
        }
        if (Py_EnterRecursiveCall(" while looking for shared tuples in a constant")) {
            Py_DECREF(it);
            return -1;
        }
        int found = 0;
        PyObject *item;
        while (found == 0 && (item = PyIter_Next(it)) != NULL) {
            found = holds_shared_tuple(item);
            Py_DECREF(item);
        }
        Py_LeaveRecursiveCall();
        Py_DECREF(it);
        return found == 0 && PyErr_Occurred() ? -1 : found;
    }
    return 0;
}

/* `o` with each tuple and frozenset in it rebuilt in this interpreter; a new reference. */
static PyObject *
local_copy(PyObject *o)
{
    if (!PyTuple_Check(o) && !PyFrozenSet_Check(o)) {
        return Py_NewRef(o);
    }
    PyObject *items = PySequence_List(o);
    if (items == NULL) {
        return NULL;
    }
    if (Py_EnterRecursiveCall(" while copying a constant")) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *copy = local_copy(PyList_GET_ITEM(items, i));
        if (copy == NULL) {
            Py_LeaveRecursiveCall();
            Py_DECREF(items);
            return NULL;
        }
        Py_SETREF(PyList_GET_ITEM(items, i), copy);
    }
    Py_LeaveRecursiveCall();
    PyObject *r = PyTuple_Check(o) ? PyList_AsTuple(items) : PyFrozenSet_New(items);
    Py_DECREF(items);
    return r;
}

static int scan(PyObject *node);

/* One field value of an AST node: a node, a list of them, or a constant. */
static int
scan_value(PyObject *node, PyObject *name, PyObject *value)
{
    if (PyList_Check(value)) {
        /* A snapshot: nothing here runs Python code, but a list is the caller's. */
        PyObject *items = PySequence_Tuple(value);
        if (items == NULL) {
            return -1;
        }
        int rc = 0;
        for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(items); i++) {
            rc = scan(PyTuple_GET_ITEM(items, i));
        }
        Py_DECREF(items);
        return rc;
    }
    int found = holds_shared_tuple(value);
    if (found <= 0) {
        return found < 0 ? -1 : scan(value);
    }
    PyObject *copy = local_copy(value);
    if (copy == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttr(node, name, copy);
    Py_DECREF(copy);
    return rc;
}

/* Walk an AST node by its class's _fields; anything without _fields is a leaf. */
static int
scan(PyObject *node)
{
    if (node == Py_None || PyUnicode_CheckExact(node) || PyLong_CheckExact(node)) {
        return 0;
    }
    PyObject *fields = PyObject_GetAttrString((PyObject *)Py_TYPE(node), "_fields");
    if (fields == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyTuple_Check(fields)) {
        Py_DECREF(fields);
        return 0;
    }
    if (Py_EnterRecursiveCall(" while looking for shared tuples in an AST")) {
        Py_DECREF(fields);
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        if (!PyUnicode_Check(name)) {
            continue;
        }
        PyObject *value = PyObject_GetAttr(node, name);
        if (value == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();      /* an optional field left unset: compile() says so */
                continue;
            }
            rc = -1;
            break;
        }
        rc = scan_value(node, name, value);
        Py_DECREF(value);
    }
    Py_LeaveRecursiveCall();
    Py_DECREF(fields);
    return rc;
}

static int
compile_hook(const char *event, PyObject *args, void *Py_UNUSED(data))
{
    /* Called for every audit event of every interpreter: one byte decides most. */
    if (event[0] != 'c' || strcmp(event, "compile") != 0) {
        return 0;
    }
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) {
        return 0;
    }
    PyObject *source = PyTuple_GET_ITEM(args, 0);
    if (PyUnicode_Check(source) || PyBytes_Check(source) || PyByteArray_Check(source)
        || PyMemoryView_Check(source))
    {
        return 0;
    }
    return scan(source);
}

static pthread_once_t hook_once = PTHREAD_ONCE_INIT;
static int hook_rc;

static void
add_hook(void)
{
    hook_rc = PySys_AddAuditHook(compile_hook, NULL);
}

int
ss_compile_guard_exec(PyObject *Py_UNUSED(module), ss_state *Py_UNUSED(st))
{
    /* The first interpreter to import the module adds the hook, for all of them; it runs
     * with that interpreter's GIL held, so its audit hooks may refuse (then the error
     * stands and the import fails). */
    pthread_once(&hook_once, add_hook);
    if (hook_rc < 0 && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_ImportError,
                        "subsandbox._core: an audit hook refused the audit hook that keeps "
                        "compile() from writing into shared tuples (sys.addaudithook), when "
                        "this module was first imported in the process");
    }
    return hook_rc;
}

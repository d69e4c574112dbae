/* STUB, to be replaced by the arena implementation (issue #3). */
#include "subsandbox.h"

ss_arena *ss_arena_of(PyObject *op) { return NULL; }
int ss_is_shared(PyObject *op) { return 0; }
void ss_arena_incref(ss_arena *a) {}
void ss_arena_decref(ss_arena *a) {}
int ss_arena_add_holder(ss_arena *a, int64_t interp_id) { return 0; }
void ss_interpreter_destroyed(int64_t interp_id) {}
PyObject *ss_arena_wrap(ss_state *st, ss_arena *a)
{
    PyErr_SetString(PyExc_NotImplementedError, "arenas are not built yet");
    return NULL;
}
ss_arena *ss_arena_unwrap(ss_state *st, PyObject *op) { return NULL; }
static PyObject *stub_is_shared(PyObject *m, PyObject *o) { Py_RETURN_FALSE; }
static PyMethodDef stub_methods[] = {{"is_shared", stub_is_shared, METH_O, NULL}, {NULL}};
int ss_shared_exec(PyObject *module, ss_state *st) { return PyModule_AddFunctions(module, stub_methods); }

/* STUB, to be replaced by frozendict/immutableset (issue #3, another worktree).
 * The types exist only so that share.c can compare against them, and the builders raise
 * NotImplementedError, so share(dict) / share(set) compile and fail cleanly. */
#include "subsandbox.h"

PyTypeObject SS_FrozenDict_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subsandbox._core.frozendict",
};

PyTypeObject SS_ImmutableSet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subsandbox._core.immutableset",
};

PyObject *
ss_frozendict_build(ss_filler *f, Py_ssize_t n, PyObject *const *keys, PyObject *const *values)
{
    PyErr_SetString(PyExc_NotImplementedError, "frozendict is not built yet (stub frozen.c)");
    return NULL;
}

PyObject *
ss_immutableset_build(ss_filler *f, Py_ssize_t n, PyObject *const *items)
{
    PyErr_SetString(PyExc_NotImplementedError, "immutableset is not built yet (stub frozen.c)");
    return NULL;
}

int ss_frozen_exec(PyObject *module, ss_state *st) { return 0; }
PyTypeObject SS_FrozenDict_Type = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "subsandbox.frozendict"};
PyTypeObject SS_ImmutableSet_Type = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "subsandbox.immutableset"};

/* STUB, to be replaced by frozendict/immutableset (issue #3). */
#include "subsandbox.h"

int ss_frozen_exec(PyObject *module, ss_state *st) { return 0; }
PyTypeObject SS_FrozenDict_Type = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "subsandbox.frozendict"};
PyTypeObject SS_ImmutableSet_Type = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "subsandbox.immutableset"};

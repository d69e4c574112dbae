/* STUB, to be replaced by frozendict/immutableset (issue #3). */
#include "subsandbox.h"

int ss_frozen_exec(PyObject *module, ss_state *st) { return 0; }

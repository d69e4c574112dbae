/* STUB: replaced by interpreter facts and interrupts. */
#include "subsandbox.h"
int ss_interp_exec(PyObject *module, ss_state *st) { return 0; }

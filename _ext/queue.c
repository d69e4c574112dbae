/* STUB: replaced by the channel implementation. */
#include "subsandbox.h"
int ss_queue_exec(PyObject *module, ss_state *st) { return 0; }

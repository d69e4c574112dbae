/* Private interface between frozen.c and frozen_guard.c.
 * Not part of subsandbox.h: nothing outside these files needs it. */
#ifndef SUBSANDBOX_FROZEN_H
#define SUBSANDBOX_FROZEN_H

#include "subsandbox.h"

/* frozen_guard.c ------------------------------------------------------------------------
 * Give the static types `types[0..n)` their per-interpreter type state in the current
 * interpreter (per-interpreter tp_dict, tp_subclasses and tp_weaklist, as CPython does for
 * its static builtin types). The first call in the process readies the types; it must run
 * in the main interpreter. Thread-safe: several own-GIL interpreters may call it at once.
 * Idempotent per interpreter (module re-import). -1 with an exception set on failure. */
int ss_guard_ready_types(PyTypeObject *const *types, size_t n);

/* Facts about the guard of `type` in the current interpreter, for tests: a new dict. */
PyObject *ss_guard_describe(PyTypeObject *type);






#endif /* SUBSANDBOX_FROZEN_H */

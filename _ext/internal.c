/* The only file of _ext/ that reads CPython's internal structures (Py_BUILD_CORE_MODULE).
 * It exposes small functions so the rest of the C code stays on the public API. The
 * fields read here exist with these names in 3.12, 3.13 and 3.14; pyversion.h documents
 * where anything differs. */
#ifndef Py_BUILD_CORE_MODULE
#  define Py_BUILD_CORE_MODULE 1
#endif
#include "subsandbox.h"
#include "internal/pycore_interp.h"

/* The runtime feature flags of `interp` are fixed at its creation from the
 * PyInterpreterConfig it was given (Py_RTFLAGS_*), and `own_gil` says whether it has a
 * GIL of its own (PEP 684). */
int
ss_interp_config(PyInterpreterState *interp, ss_interp_facts *out)
{
    unsigned long flags = interp->feature_flags;
    out->own_gil = interp->ceval.own_gil;
    out->use_main_obmalloc = (flags & Py_RTFLAGS_USE_MAIN_OBMALLOC) != 0;
    out->check_multi_interp_extensions = (flags & Py_RTFLAGS_MULTI_INTERP_EXTENSIONS) != 0;
    out->allow_threads = (flags & Py_RTFLAGS_THREADS) != 0;
    out->allow_daemon_threads = (flags & Py_RTFLAGS_DAEMON_THREADS) != 0;
    out->allow_fork = (flags & Py_RTFLAGS_FORK) != 0;
    out->allow_exec = (flags & Py_RTFLAGS_EXEC) != 0;
    return 0;
}

/* Set by Py_EndInterpreter (and Py_FinalizeEx) after the atexit callbacks, before the
 * interpreter's modules are cleared; the same field and accessor in 3.12, 3.13, 3.14. */
int
ss_interp_finalizing(PyInterpreterState *interp)
{
    return _PyInterpreterState_GetFinalizing(interp) != NULL;
}

/* Helpers for the pthread primitives of _ext/: one copy of each, shared by every file that
 * needs them (static inline: each is a few instructions on a hot path).
 *
 *   ss_mutex_lock_with_gil  lock a pthread mutex while holding the GIL, without
 *                           deadlocking against a holder that waits for the GIL
 *   ss_deadline_after       an absolute CLOCK_MONOTONIC deadline, `seconds` from now
 *   ss_set_os_error         OSError carrying an error number, for a failed *_init()
 */
#ifndef SUBSANDBOX_SYNC_H
#define SUBSANDBOX_SYNC_H

#include "subsandbox.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

/* Lock `mutex`, the caller holding the GIL (of its interpreter). Uncontended (nearly
 * always), it is taken at once, without the cost of letting the GIL go and taking it
 * back (two GIL switches); otherwise the caller waits for it with the GIL released, since
 * the holder may be a thread that needs this GIL before it can unlock. The GIL is held
 * again on return. */
static inline void
ss_mutex_lock_with_gil(pthread_mutex_t *mutex)
{
    if (pthread_mutex_trylock(mutex) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(mutex);
        Py_END_ALLOW_THREADS
    }
}

/* The absolute time `seconds` (>= 0, small enough for time_t: callers range-check it)
 * from now on CLOCK_MONOTONIC, for sem_clockwait() or a condition variable made with
 * pthread_condattr_setclock(CLOCK_MONOTONIC). */
static inline struct timespec
ss_deadline_after(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    time_t whole = (time_t)seconds;
    ts.tv_sec += whole;
    ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Raise OSError(err, "<what>: <strerror(err)>"): the error number of a failed
 * pthread_*_init() (their return value) or sem_init() (errno), with a message that says
 * which object could not be made. As PyErr_SetFromErrno(), the class is OSError's
 * subclass for that number, if it has one. */
static inline void
ss_set_os_error(int err, const char *what)
{
    /* "N" takes the message's reference, and fails at once if it is NULL. */
    PyObject *args = Py_BuildValue("(iN)", err,
                                   PyUnicode_FromFormat("%s: %s", what, strerror(err)));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
}

#endif /* SUBSANDBOX_SYNC_H */

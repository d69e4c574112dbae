/* Every place where the CPython versions we support (3.12, 3.13, 3.14+) differ.
 * No other file of _ext/ tests PY_VERSION_HEX. */
#ifndef SUBSANDBOX_PYVERSION_H
#define SUBSANDBOX_PYVERSION_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#  error "subsandbox needs CPython 3.12 or newer"
#endif

#endif /* SUBSANDBOX_PYVERSION_H */

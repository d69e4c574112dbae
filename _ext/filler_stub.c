/* TEST-ONLY stand-in for the arena filler of arena.c (issue #3), so that frozen.c's shared
 * builders can be tested in this branch. The lead drops this file when arena.c implements
 * ss_filler_alloc_object() / ss_filler_alloc_raw() for real.
 *
 * Same contract as the real one (subsandbox.h): zeroed process-wide memory (raw calloc,
 * never freed: a test leak), a zeroed, untracked GC header in front of objects of GC types,
 * type set, reference count immortal. */
#include "subsandbox.h"
#include "pyversion.h"
#include "frozen.h"

struct ss_filler {
    int unused;
};

static ss_filler stub_filler;

ss_filler *
ss_test_filler(void)
{
    return &stub_filler;
}

PyObject *
ss_filler_alloc_object(ss_filler *f, PyTypeObject *type, size_t size)
{
    (void)f;
    size_t pre = PyType_IS_GC(type) ? SS_FROZEN_GC_HEAD_SIZE : 0;
    char *mem = PyMem_RawCalloc(1, pre + size);
    if (mem == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *op = (PyObject *)(mem + pre);
    Py_SET_TYPE(op, type);
    SS_FROZEN_STUB_SET_IMMORTAL(op);
    return op;
}

void *
ss_filler_alloc_raw(ss_filler *f, size_t size)
{
    (void)f;
    void *mem = PyMem_RawCalloc(1, size ? size : 1);
    if (mem == NULL) {
        PyErr_NoMemory();
    }
    return mem;
}

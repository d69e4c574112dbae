/* Hash spread: how many keys of one container share a hash, counted as a result loads.
 *
 * A dict or set compares a new key with every key of the same hash already in it, so keys
 * that all hash alike make building it quadratic, in C, with the GIL held. Hashes of int,
 * float, complex, tuple and Fraction are not randomized: a sandbox can choose 40,000 ints
 * that hash alike, and loading a set of them took the caller 10 s (3.13.0). The caller's
 * unpickler (subsandbox/_untrusted.py) counts the hashes of the keys it is about to put
 * into a dict or set with this function, and stops the load past a bound.
 *
 * The count lives in two objects the caller owns: a set of the hashes seen, and a dict of
 * how many keys each hash that came back has had. A set of ints is safe against the same
 * trick: distinct hashes that agree in their low bits part within a few probes (CPython's
 * set probes with the high bits too).
 *
 * Keys that no one can make collide are not counted, which keeps the usual result (str
 * keys, small int keys) from paying for a table of its hashes: an exact str or bytes (its
 * hash is SipHash with the process's secret key; a slow dict needs whole 64-bit hashes to
 * agree, not just low bits), and an exact int whose hash is its own value (any int of
 * less than 61 bits but -1). Among the skipped keys no two distinct ones share a hash
 * unless it is a str or bytes, so each hash gains at most one skipped int: the bound
 * stays.
 */
#include "subsandbox.h"

/* count_hashes(keys, seen, repeats, limit, step=1) -> int
 *
 * Adds the hash of keys[0], keys[step], ... to `seen`; a hash already there is another
 * key with that hash: its count in `repeats` grows (the first key counts as one). Keys
 * that cannot be hashed are skipped (the container refuses them itself), and so are those
 * no one can make collide (above). Returns the index
 * in `keys` of the first key whose hash is shared by more than `limit` keys, or -1.
 */
static PyObject *
keyspread_count_hashes(PyObject *Py_UNUSED(module), PyObject *const *args,
                       Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError,
                        "count_hashes(keys, seen, repeats, limit, step=1)");
        return NULL;
    }
    PyObject *keys = args[0], *seen = args[1], *repeats = args[2];
    if (!PyList_CheckExact(keys) && !PyTuple_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "count_hashes(): keys must be a list or a tuple");
        return NULL;
    }
    if (!PySet_CheckExact(seen) || !PyDict_CheckExact(repeats)) {
        PyErr_SetString(PyExc_TypeError,
                        "count_hashes(): seen must be a set and repeats a dict");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t step = 1;
    if (nargs == 5) {
        step = PyLong_AsSsize_t(args[4]);
        if (step == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (step < 1) {
            PyErr_SetString(PyExc_ValueError, "count_hashes(): step must be at least 1");
            return NULL;
        }
    }
    /* A list's items may change while a key's __hash__ runs (a caller's class, loaded):
     * read the size and each item afresh, holding a reference while it is used. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(keys); i += step) {
        PyObject *key = PySequence_Fast_GET_ITEM(keys, i);
        if (PyUnicode_CheckExact(key) || PyBytes_CheckExact(key)) {
            continue;
        }
        Py_INCREF(key);
        Py_hash_t hash = PyObject_Hash(key);
        int own_value = 0;
        if (hash != -1 && PyLong_CheckExact(key)) {
            int overflow;
            long long value = PyLong_AsLongLongAndOverflow(key, &overflow);
            own_value = !overflow && value == (long long)hash;
        }
        Py_DECREF(key);
        if (hash == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                return NULL;
            }
            PyErr_Clear();
            continue;
        }
        if (own_value) {
            continue;
        }
        PyObject *digest = PyLong_FromSsize_t(hash);
        if (digest == NULL) {
            return NULL;
        }
        Py_ssize_t before = PySet_GET_SIZE(seen);
        if (PySet_Add(seen, digest) < 0) {
            Py_DECREF(digest);
            return NULL;
        }
        if (PySet_GET_SIZE(seen) != before) {
            Py_DECREF(digest);
            continue;           /* a new hash: the usual case */
        }
        PyObject *count = PyDict_GetItemWithError(repeats, digest);   /* borrowed */
        Py_ssize_t n = 1;
        if (count != NULL) {
            n = PyLong_AsSsize_t(count);
        }
        else if (PyErr_Occurred()) {
            Py_DECREF(digest);
            return NULL;
        }
        if (n == -1 && PyErr_Occurred()) {
            Py_DECREF(digest);
            return NULL;
        }
        n++;
        if (n > limit) {
            Py_DECREF(digest);
            return PyLong_FromSsize_t(i);
        }
        PyObject *updated = PyLong_FromSsize_t(n);
        if (updated == NULL) {
            Py_DECREF(digest);
            return NULL;
        }
        int rc = PyDict_SetItem(repeats, digest, updated);
        Py_DECREF(updated);
        Py_DECREF(digest);
        if (rc < 0) {
            return NULL;
        }
    }
    return PyLong_FromLong(-1);
}

static PyMethodDef keyspread_functions[] = {
    {"count_hashes", (PyCFunction)(void (*)(void))keyspread_count_hashes, METH_FASTCALL,
     "count_hashes(keys, seen, repeats, limit, step=1): the index of the first key whose "
     "hash more than `limit` keys share, or -1 (keyspread.c)."},
    {NULL, NULL, 0, NULL},
};

int
ss_keyspread_exec(PyObject *module, ss_state *Py_UNUSED(st))
{
    return PyModule_AddFunctions(module, keyspread_functions);
}

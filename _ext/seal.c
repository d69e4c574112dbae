/* The seal: a sandbox's policy fails closed once the state that enforces it is rewritten.
 *
 * The policy is enforced by Python code (subsandbox/_enforce.py) that reads its decisions
 * from module globals: the event tables, the path check, the grants, the helpers it calls.
 * Red-team runs ended every escape they found by rewriting one of those (a library that
 * maps a class's __module__ to sys.modules[...].__dict__ wrote into _enforce's namespace;
 * a str.format field walk reached its globals). Each way in was closed, but the last step
 * stayed possible for the next way in. This file takes that last step away:
 *
 *   - _core.seal(namespaces, error) watches the enforcement's namespaces (module dicts,
 *     and the constant tables they hold) with a dict watcher (CPython's PyDict_Watch,
 *     3.12+). Any change to one of them, by anyone, from then on is a breach: it is
 *     recorded, once, in this interpreter's module state, which no Python code can reach.
 *     A dict watcher cannot veto the write; the gates below make it useless.
 *   - _core.guarded(callable, name) wraps every callable through which the interpreter or
 *     sandboxed code enters the enforcement (the audit hook, the sandbox's builtins, module
 *     views, the library functions the policy patches). Once a breach is recorded, each
 *     of them raises the policy's error instead of running: the audit hook refuses every
 *     event (imports, exec, open...), so the sandbox can do nothing but compute, and says
 *     why. A guarded object exposes nothing of what it wraps.
 *   - _core.frame_at(depth) reads the caller's stack with the C API, which raises no
 *     audit event: the enforcement no longer needs a global "this thread is looking at
 *     its own stack" set that the hook would have to trust.
 *
 * Interpreter teardown clears module dicts: a write made while this interpreter is
 * finalizing is not a breach (internal.c says when; nothing runs sandboxed code then).
 */
#include "subsandbox.h"

#include <stddef.h>

/* ---- the guarded callable -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *wrapped;      /* what runs when no breach is recorded */
    PyObject *name;         /* str: __name__ and __qualname__ */
    PyObject *doc;          /* str or None */
    vectorcallfunc vectorcall;
} Guarded;

static PyObject *
breach_error(ss_state *st)
{
    PyObject *error = st->seal_error != NULL ? st->seal_error : PyExc_RuntimeError;
    PyErr_Format(error,
                 "this sandbox's policy no longer runs: %S. Something in the sandbox "
                 "rewrote the state that enforces the policy, so every import, builtin "
                 "guard and audited action is refused from then on; close this sandbox",
                 st->seal_breach);
    return NULL;
}

static PyObject *
guarded_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Guarded *self = (Guarded *)op;
    ss_state *st = (ss_state *)PyType_GetModuleState(Py_TYPE(op));
    if (st == NULL) {
        return NULL;
    }
    if (st->seal_breach != NULL) {
        return breach_error(st);
    }
    return PyObject_Vectorcall(self->wrapped, args, nargsf, kwnames);
}

/* Bound as a function is, so that a guarded function can stand for a method of a class. */
static PyObject *
guarded_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int
guarded_traverse(PyObject *op, visitproc visit, void *arg)
{
    Guarded *self = (Guarded *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->wrapped);
    Py_VISIT(self->name);
    Py_VISIT(self->doc);
    return 0;
}

static int
guarded_clear(PyObject *op)
{
    Guarded *self = (Guarded *)op;
    Py_CLEAR(self->wrapped);
    Py_CLEAR(self->name);
    Py_CLEAR(self->doc);
    return 0;
}

static void
guarded_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)guarded_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
guarded_repr(PyObject *op)
{
    return PyUnicode_FromFormat("<guarded function %U>", ((Guarded *)op)->name);
}

static PyObject *
guarded_get_name(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((Guarded *)op)->name);
}

static PyObject *
guarded_get_doc(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(((Guarded *)op)->doc);
}

/* Never pickled: what it wraps belongs to this sandbox's policy, and a name would resolve
 * to something else wherever it was loaded. */
static PyObject *
guarded_reduce(PyObject *op, PyObject *Py_UNUSED(args))
{
    PyErr_Format(PyExc_TypeError,
                 "cannot pickle %U: it is a function of this sandbox's policy (a guarded "
                 "builtin or library function), which exists only in this sandbox",
                 ((Guarded *)op)->name);
    return NULL;
}

static PyGetSetDef guarded_getset[] = {
    {"__name__", guarded_get_name, NULL, NULL, NULL},
    {"__qualname__", guarded_get_name, NULL, NULL, NULL},
    {"__doc__", guarded_get_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef guarded_methods[] = {
    {"__reduce__", guarded_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef guarded_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(Guarded, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot guarded_slots[] = {
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, guarded_descr_get},
    {Py_tp_traverse, guarded_traverse},
    {Py_tp_clear, guarded_clear},
    {Py_tp_dealloc, guarded_dealloc},
    {Py_tp_repr, guarded_repr},
    {Py_tp_getset, guarded_getset},
    {Py_tp_methods, guarded_methods},
    {Py_tp_members, guarded_members},
    {0, NULL},
};

static PyType_Spec guarded_spec = {
    .name = "subsandbox._core.guarded_function",
    .basicsize = sizeof(Guarded),
    /* Not subclassable, not instantiable from Python, attributes fixed; called like a
     * function and bound like one (METHOD_DESCRIPTOR: obj.f(x) may call f(obj, x)). */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_VECTORCALL
             | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = guarded_slots,
};

/* guarded(callable, name, doc=None) */
static PyObject *
seal_guarded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "guarded() takes a callable, a name and a doc");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "guarded(): %T is not callable", args[0]);
        return NULL;
    }
    if (!PyUnicode_CheckExact(args[1])) {
        PyErr_Format(PyExc_TypeError, "guarded(): the name must be a str, not %T", args[1]);
        return NULL;
    }
    PyObject *doc = nargs == 3 ? args[2] : Py_None;
    if (doc != Py_None && !PyUnicode_CheckExact(doc)) {
        PyErr_Format(PyExc_TypeError, "guarded(): the doc must be a str or None, not %T", doc);
        return NULL;
    }
    ss_state *st = ss_get_state(module);
    Guarded *self = PyObject_GC_New(Guarded, st->guarded_type);
    if (self == NULL) {
        return NULL;
    }
    self->wrapped = Py_NewRef(args[0]);
    self->name = Py_NewRef(args[1]);
    self->doc = Py_NewRef(doc);
    self->vectorcall = guarded_vectorcall;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* ---- the watcher ----------------------------------------------------------------------- */

static const char *
event_verb(PyDict_WatchEvent event)
{
    switch (event) {
    case PyDict_EVENT_ADDED:
        return "added";
    case PyDict_EVENT_MODIFIED:
        return "rebound";
    case PyDict_EVENT_DELETED:
        return "deleted";
    case PyDict_EVENT_CLONED:
        return "replaced by a copy of another dict";
    case PyDict_EVENT_CLEARED:
        return "cleared";
    default:
        return "changed";
    }
}

/* What was written, for the error every gate raises from then on. */
static PyObject *
describe_breach(ss_state *st, PyDict_WatchEvent event, PyObject *dict, PyObject *key)
{
    /* A class's dict, by the label seal() recorded (its __qualname__ is not in it); a
     * module's namespace by its __name__ (borrowed). */
    PyObject *label = NULL;
    if (st->seal_labels != NULL) {
        PyObject *address = PyLong_FromVoidPtr(dict);
        if (address == NULL) {
            return NULL;
        }
        label = PyDict_GetItemWithError(st->seal_labels, address);
        Py_DECREF(address);
        if (label == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *name = PyDict_GetItemString(dict, "__name__");
    PyObject *where;
    if (label != NULL) {
        where = Py_NewRef(label);
    }
    else if (name != NULL && PyUnicode_Check(name)) {
        where = PyUnicode_FromFormat("the namespace of %U", name);
    }
    else {
        where = PyUnicode_FromString("a table of the enforcement");
    }
    if (where == NULL) {
        return NULL;
    }
    /* repr() only of an exact str: a subclass's __repr__ would run sandboxed code here. */
    PyObject *text = key != NULL && PyUnicode_CheckExact(key)
        ? PyUnicode_FromFormat("%R in %U was %s", key, where, event_verb(event))
        : PyUnicode_FromFormat("%U was %s", where, event_verb(event));
    Py_DECREF(where);
    return text;
}

/* copyreg._slotnames() caches a slotted class's slot names in the class as a list of str,
 * the first time an instance is pickled or copied (typing.ForwardRef returned as a
 * result broke the seal so): added once, nothing the enforcement reads. */
static int
slot_names_cached(PyDict_WatchEvent event, PyObject *key, PyObject *new_value)
{
    if (event != PyDict_EVENT_ADDED || key == NULL || !PyUnicode_CheckExact(key)
        || PyUnicode_CompareWithASCIIString(key, "__slotnames__") != 0
        || new_value == NULL || !PyList_CheckExact(new_value))
    {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(new_value); i++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(new_value, i))) {
            return 0;
        }
    }
    return 1;
}

static int
seal_watcher(PyDict_WatchEvent event, PyObject *dict, PyObject *key,
             PyObject *new_value)
{
    if (event == PyDict_EVENT_DEALLOCATED) {
        return 0;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    if (ss_interp_finalizing(interp)) {
        return 0;       /* teardown clears every module's namespace */
    }
    /* CPython fills these in itself on first read (Objects/typeobject.c and
     * moduleobject.c: a class's __annotations__ on 3.12 and 3.13; on 3.14 its
     * __annotate_func__ and __annotations_cache__, a module's __annotate__ and
     * __annotations__): reading one is no breach, and the enforcement reads no
     * annotations of the namespaces it seals. */
    /* An exact str only: a dict hands its watcher the key it was given, and a str
     * subclass that hashes and compares as "_under" but reads "__annotations__" rebound
     * _under unseen (a red-team run, round 13). */
    if (key != NULL && PyUnicode_CheckExact(key)
        && (PyUnicode_CompareWithASCIIString(key, "__annotations__") == 0
            || PyUnicode_CompareWithASCIIString(key, "__annotations_cache__") == 0
            || PyUnicode_CompareWithASCIIString(key, "__annotate_func__") == 0
            || PyUnicode_CompareWithASCIIString(key, "__annotate__") == 0))
    {
        return 0;
    }
    if (slot_names_cached(event, key, new_value)) {
        return 0;
    }
    /* A dict may change while an exception is being raised: keep it as it was. */
    PyObject *pending = PyErr_GetRaisedException();
    ss_state *st = ss_current_state();
    if (st != NULL && st->seal_error != NULL && st->seal_breach == NULL) {
        st->seal_breach = describe_breach(st, event, dict, key);
        if (st->seal_breach == NULL) {
            /* Still a breach: the gates need only know that there was one. */
            PyErr_Clear();
            st->seal_breach = PyUnicode_InternFromString("the enforcement's state changed");
            if (st->seal_breach == NULL) {
                PyErr_Clear();
                st->seal_breach = Py_NewRef(Py_Ellipsis);
            }
        }
    }
    PyErr_Clear();
    PyErr_SetRaisedException(pending);
    return 0;
}

/* Record "the class module.qualname" for a class's dict, by its address, for the breach's
 * message (the dict stays alive with the class, which its module keeps). */
static int
label_class(ss_state *st, PyObject *dict, PyTypeObject *cls)
{
    if (st->seal_labels == NULL && (st->seal_labels = PyDict_New()) == NULL) {
        return -1;
    }
    PyObject *module = PyObject_GetAttrString((PyObject *)cls, "__module__");
    PyObject *qualname = module != NULL ? PyType_GetQualName(cls) : NULL;
    PyObject *label = qualname != NULL
        ? PyUnicode_FromFormat("the class %S.%S", module, qualname) : NULL;
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    PyObject *address = label != NULL ? PyLong_FromVoidPtr(dict) : NULL;
    int rc = address != NULL ? PyDict_SetItem(st->seal_labels, address, label) : -1;
    Py_XDECREF(address);
    Py_XDECREF(label);
    return rc;
}

/* seal(namespaces, error): watch each item of `namespaces` (a tuple of dicts, and of
 * classes, whose own dicts are watched); from then on, any change to one is a breach, and
 * the guarded callables raise `error`. Later calls add namespaces (a library the policy
 * patches as it is first imported); watching more can only stop the sandbox sooner. */
static PyObject *
seal_seal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_CheckExact(args[0])
        || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], (PyTypeObject *)PyExc_Exception))
    {
        PyErr_SetString(PyExc_TypeError,
                        "seal() takes a tuple of dicts and classes, and an exception class");
        return NULL;
    }
    PyObject *namespaces = args[0];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(namespaces); i++) {
        PyObject *item = PyTuple_GET_ITEM(namespaces, i);
        if (!PyDict_CheckExact(item) && !PyType_Check(item)) {
            PyErr_Format(PyExc_TypeError, "seal(): item %zd is a %T, not a dict or a class",
                         i, item);
            return NULL;
        }
    }
    ss_state *st = ss_get_state(module);
    if (st->seal_watcher < 0) {
        st->seal_watcher = PyDict_AddWatcher(seal_watcher);
        if (st->seal_watcher < 0) {
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(namespaces); i++) {
        PyObject *item = PyTuple_GET_ITEM(namespaces, i);
        /* A class's attributes live in its own dict (PyType_GetDict: 3.12+); setting one
         * (type.__setattr__) writes there, and the watcher sees it. */
        PyObject *dict = PyType_Check(item) ? PyType_GetDict((PyTypeObject *)item)
                                            : Py_NewRef(item);
        if (dict == NULL) {
            return NULL;
        }
        int rc = PyDict_Watch(st->seal_watcher, dict);
        if (rc == 0 && PyType_Check(item)) {
            rc = label_class(st, dict, (PyTypeObject *)item);
        }
        Py_DECREF(dict);
        if (rc < 0) {
            return NULL;
        }
    }
    if (st->seal_error == NULL) {
        st->seal_error = Py_NewRef(args[1]);     /* sealed from now on */
    }
    Py_RETURN_NONE;
}

/* seal_breach(): what broke the seal (a str), or None while it holds. */
static PyObject *
seal_breach(PyObject *module, PyObject *Py_UNUSED(args))
{
    ss_state *st = ss_get_state(module);
    return Py_NewRef(st->seal_breach != NULL ? st->seal_breach : Py_None);
}

/* frame_at(depth): the frame `depth` calls above the Python code that calls this (0: that
 * code's own frame), or None past the bottom of the stack. sys._getframe() raises an audit
 * event, which the enforcement's own hook would then have to judge. */
static PyObject *
seal_frame_at(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (depth < 0) {
        PyErr_SetString(PyExc_ValueError, "frame_at(): depth must not be negative");
        return NULL;
    }
    PyFrameObject *frame = (PyFrameObject *)Py_XNewRef(PyEval_GetFrame());
    while (frame != NULL && depth-- > 0) {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    if (frame == NULL) {
        Py_RETURN_NONE;
    }
    return (PyObject *)frame;
}

static PyMethodDef seal_functions[] = {
    {"guarded", (PyCFunction)(void (*)(void))seal_guarded, METH_FASTCALL,
     "guarded(callable, name, doc=None): `callable` behind the seal (seal.c)."},
    {"seal", (PyCFunction)(void (*)(void))seal_seal, METH_FASTCALL,
     "seal(namespaces, error): a change to any of these dicts breaks the policy (seal.c)."},
    {"seal_breach", seal_breach, METH_NOARGS,
     "seal_breach(): what broke this interpreter's seal, or None."},
    {"frame_at", seal_frame_at, METH_O,
     "frame_at(depth): the caller's frame `depth` calls up, without an audit event."},
    {NULL, NULL, 0, NULL},
};

int
ss_seal_exec(PyObject *module, ss_state *st)
{
    st->seal_watcher = -1;
    st->guarded_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &guarded_spec, NULL);
    if (st->guarded_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, seal_functions);
}

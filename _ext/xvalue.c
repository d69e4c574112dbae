/* How a value is carried between interpreters inside a channel.
 *
 * A value is flattened into one buffer of raw memory that belongs to no interpreter:
 * immutable builtins are copied by value, shared objects travel as pointers (with a
 * reference on their arena, so the arena outlives the trip), and channels and arena
 * handles travel as references to their process-wide structs. Decoding rebuilds the
 * value with the receiving interpreter's allocator. Nothing is ever pickled here.
 *
 * Buffer format: one tag byte per node, then its payload:
 *   'N' None   'T' True   'F' False
 *   'i' int64                     'I' big int: size_t n, n bytes of lowercase hex (signed)
 *   'f' double                    'c' two doubles
 *   's' str: uint8 kind, size_t length, length*kind bytes (PyUnicode_KIND layout)
 *   'b' bytes: size_t n, n bytes
 *   't' tuple: size_t n, then n nodes
 *   'R' a reference: size_t index into refs[] (shared object, channel or arena handle; a
 *       SharedRef is sent as the shared object it names)
 */
#include "subsandbox.h"

#include <string.h>

typedef enum { REF_SHARED, REF_CHANNEL, REF_ARENA } ref_kind;

typedef struct {
    ref_kind kind;
    PyObject *obj;      /* REF_SHARED: the immortal object */
    ss_arena *arena;    /* REF_SHARED, REF_ARENA (one reference held) */
    ss_queue *queue;    /* REF_CHANNEL (one reference held) */
} xref;

struct ss_xvalue {
    char *buf;
    size_t len;
    size_t cap;
    xref *refs;
    size_t nrefs;
    size_t refcap;
};

/* ---- SharedRef: a handle to a shared object that its holder cannot dereference -------
 * Made by Arena.share_detached() (arena.c) in an interpreter that must not become a holder
 * of the arena (typically the main interpreter, which is never destroyed). It keeps one
 * reference on the arena (so the arena, and the object, outlive the handle's trip) and
 * gives the object to no one but a receiving interpreter: encode() sends the object, and
 * decode() makes the receiver a holder before returning it. Hence no attribute, method,
 * pickling, copy or gc.get_referents() gives the object: the type has no tp_traverse (not
 * a GC type), no __reduce__ that works, and its getters return fresh ints and strings. */
typedef struct {
    PyObject_HEAD
    PyObject *obj;          /* immortal shared object; never handed out in this interpreter */
    ss_arena *arena;        /* arena of obj (one reference), NULL for runtime static objects */
    const char *type_name;  /* tp_name of obj's (static) type, for repr */
    Py_ssize_t size;        /* len(obj) when it has one, else -1 */
} SharedRefObject;

PyObject *
ss_sharedref_new(ss_state *st, PyObject *obj)
{
    if (st->sharedref_type == NULL) {
        PyErr_SetString(PyExc_SystemError, "subsandbox._core.SharedRef is not ready");
        return NULL;
    }
    Py_ssize_t size = -1;
    if (PyUnicode_Check(obj) || PyBytes_Check(obj) || PyTuple_Check(obj)
        || PyObject_TypeCheck(obj, &SS_FrozenDict_Type)
        || PyObject_TypeCheck(obj, &SS_ImmutableSet_Type))
    {
        size = PyObject_Length(obj);    /* reads the object; never returns it */
        if (size < 0) {
            return NULL;
        }
    }
    SharedRefObject *self = PyObject_New(SharedRefObject, st->sharedref_type);
    if (self == NULL) {
        return NULL;
    }
    self->obj = obj;                    /* immortal: no reference to take */
    self->arena = ss_arena_of(obj);
    ss_arena_incref(self->arena);       /* no-op for NULL and the default arena */
    self->type_name = Py_TYPE(obj)->tp_name;
    self->size = size;
    return (PyObject *)self;
}

static void
SharedRef_dealloc(PyObject *op)
{
    SharedRefObject *self = (SharedRefObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    ss_arena *a = self->arena;
    self->arena = NULL;
    self->obj = NULL;
    ss_arena_decref(a);     /* may free the arena: nothing here reads obj afterwards */
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
SharedRef_repr(PyObject *op)
{
    SharedRefObject *self = (SharedRefObject *)op;
    const char *dot = strrchr(self->type_name, '.');
    const char *name = dot ? dot + 1 : self->type_name;
    const char *article = strchr("aeiouAEIOU", name[0]) != NULL ? "an" : "a";
    PyObject *where = self->arena
        ? PyUnicode_FromFormat("in arena %llu", (unsigned long long)ss_arena_id(self->arena))
        : PyUnicode_FromString("of the runtime (immortal, no arena)");
    if (where == NULL) {
        return NULL;
    }
    PyObject *res;
    if (self->size < 0) {
        res = PyUnicode_FromFormat("<subsandbox.SharedRef to %s %s %U>", article, name, where);
    }
    else {
        const char *unit = PyUnicode_Check(self->obj) ? "character"
                           : PyBytes_Check(self->obj) ? "byte" : "item";
        res = PyUnicode_FromFormat("<subsandbox.SharedRef to %s %s of %zd %s%s %U>",
                                   article, name, self->size, unit,
                                   self->size == 1 ? "" : "s", where);
    }
    Py_DECREF(where);
    return res;
}

static PyObject *
SharedRef_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyErr_SetString(PyExc_TypeError,
                    "a SharedRef cannot be pickled: pass it to Sandbox.call, "
                    "SandboxPoolExecutor or Channel.send, and the receiving interpreter "
                    "gets the shared object");
    return NULL;
}

static PyObject *
SharedRef_copy(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(op);   /* immutable: a copy is the same handle */
}

static PyObject *
SharedRef_deepcopy(PyObject *op, PyObject *Py_UNUSED(memo))
{
    return Py_NewRef(op);
}

static PyObject *
SharedRef_get_arena_id(PyObject *op, void *closure)
{
    SharedRefObject *self = (SharedRefObject *)op;
    if (self->arena == NULL) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(ss_arena_id(self->arena));
}

static PyMethodDef SharedRef_methods[] = {
    {"__reduce__", SharedRef_reduce, METH_NOARGS, NULL},
    {"__copy__", SharedRef_copy, METH_NOARGS, NULL},
    {"__deepcopy__", SharedRef_deepcopy, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SharedRef_getset[] = {
    {"arena_id", SharedRef_get_arena_id, NULL,
     "Id of the arena that holds the object (None for the runtime's static objects).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot SharedRef_slots[] = {
    {Py_tp_dealloc, SharedRef_dealloc},
    {Py_tp_repr, SharedRef_repr},
    {Py_tp_methods, SharedRef_methods},
    {Py_tp_getset, SharedRef_getset},
    {Py_tp_doc, "A handle to a shared object, made by Arena.share_detached().\n\n"
                "It cannot be dereferenced where it was made. Passed to Sandbox.call, "
                "SandboxPoolExecutor or Channel.send, it arrives as the shared object."},
    {0, NULL},
};

static PyType_Spec SharedRef_spec = {
    .name = "subsandbox._core.SharedRef",
    .basicsize = sizeof(SharedRefObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = SharedRef_slots,
};

/* ---- writing ------------------------------------------------------------------------ */

static int
reserve(ss_xvalue *xv, size_t extra)
{
    if (extra <= xv->cap - xv->len) {
        return 0;
    }
    if (extra > PY_SSIZE_T_MAX - xv->len) {
        PyErr_SetString(PyExc_OverflowError, "value too large to send through a channel");
        return -1;
    }
    size_t need = xv->len + extra;
    /* Double (amortized appends), but a large string or bytes gets exactly its size. */
    size_t cap = xv->cap == 0 ? 64 : (xv->cap <= (size_t)PY_SSIZE_T_MAX / 2 ? xv->cap * 2
                                                                           : need);
    if (cap < need) {
        cap = need;
    }
    char *buf = PyMem_RawRealloc(xv->buf, cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    xv->buf = buf;
    xv->cap = cap;
    return 0;
}

static int
put(ss_xvalue *xv, const void *data, size_t n)
{
    if (reserve(xv, n) < 0) {
        return -1;
    }
    memcpy(xv->buf + xv->len, data, n);
    xv->len += n;
    return 0;
}

static int
put_tag(ss_xvalue *xv, char tag)
{
    return put(xv, &tag, 1);
}

static int
put_size(ss_xvalue *xv, size_t n)
{
    return put(xv, &n, sizeof(n));
}

static int
put_ref(ss_xvalue *xv, xref ref)
{
    if (xv->nrefs == xv->refcap) {
        size_t cap = xv->refcap ? xv->refcap * 2 : 4;
        xref *refs = PyMem_RawRealloc(xv->refs, cap * sizeof(xref));
        if (refs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        xv->refs = refs;
        xv->refcap = cap;
    }
    /* The tag goes first so that a failure after taking the reference cannot leave a
     * reference that the buffer does not name: refs[] is what ss_xvalue_free releases. */
    if (put_tag(xv, 'R') < 0 || put_size(xv, xv->nrefs) < 0) {
        return -1;
    }
    xv->refs[xv->nrefs++] = ref;
    switch (ref.kind) {
    case REF_SHARED:
    case REF_ARENA:
        ss_arena_incref(ref.arena);
        break;
    case REF_CHANNEL:
        ss_queue_incref(ref.queue);
        break;
    }
    return 0;
}

/* The path of the current node, for error messages: "item[1][0]". Only the first
 * PATH_KEPT indices are kept; a deeper path is written "item[0][0]...[7]" (the last index
 * is kept too, it is the one the user looks for). */
#define PATH_KEPT 32

typedef struct {
    const char *root;
    Py_ssize_t idx[PATH_KEPT];
    Py_ssize_t last;
    int depth;
} xpath;

static PyObject *
path_string(const xpath *p)
{
    PyObject *s = PyUnicode_FromString(p->root);
    for (int i = 0; s != NULL && i < p->depth && i < PATH_KEPT; i++) {
        PyObject *part = PyUnicode_FromFormat("[%zd]", p->idx[i]);
        if (part == NULL) {
            Py_CLEAR(s);
            break;
        }
        PyUnicode_Append(&s, part);
        Py_DECREF(part);
    }
    if (s != NULL && p->depth > PATH_KEPT) {
        PyObject *part = PyUnicode_FromFormat("...[%zd]", p->last);
        if (part == NULL) {
            Py_CLEAR(s);
        }
        else {
            PyUnicode_Append(&s, part);
            Py_DECREF(part);
        }
    }
    return s;
}

static void
refuse(ss_state *st, const xpath *p, PyObject *obj)
{
    PyObject *where = path_string(p);
    if (where == NULL) {
        return;
    }
    PyTypeObject *tp = Py_TYPE(obj);
    const char *how;
    if (PyList_Check(obj)) {
        how = "a list, which is mutable: use a tuple, or pass subsandbox.share(value)";
    }
    else if (PyDict_Check(obj)) {
        how = "a dict: pass subsandbox.share(value) or a tuple of pairs";
    }
    else if (PyAnySet_Check(obj)) {
        how = "a set: pass subsandbox.share(value) (an immutable set shared by pointer)";
    }
    else if (PyByteArray_Check(obj)) {
        how = "a bytearray, which is mutable: use bytes";
    }
    else if (PyObject_TypeCheck(obj, &SS_FrozenDict_Type)
             || PyObject_TypeCheck(obj, &SS_ImmutableSet_Type))
    {
        how = "a container that is not shared yet: pass subsandbox.share(value)";
    }
    else if (PyLong_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj)
             || PyFloat_Check(obj) || PyComplex_Check(obj) || PyTuple_Check(obj))
    {
        PyErr_Format(st->not_shareable_error,
                     "%U is a %s, a subclass of a builtin type; its class belongs to one "
                     "interpreter, so it cannot cross: convert it to the builtin type",
                     where, tp->tp_name);
        Py_DECREF(where);
        return;
    }
    else {
        PyErr_Format(st->not_shareable_error,
                     "%U is a %s, which belongs to one interpreter and cannot cross: send "
                     "None, bool, int, float, complex, str, bytes, tuples of them, shared "
                     "objects (subsandbox.share) or channels",
                     where, tp->tp_name);
        Py_DECREF(where);
        return;
    }
    PyErr_Format(st->not_shareable_error, "%U is %s", where, how);
    Py_DECREF(where);
}

static int
encode(ss_state *st, ss_xvalue *xv, PyObject *obj, xpath *p)
{
    ss_arena *arena = ss_arena_of(obj);
    if (arena != NULL) {
        return put_ref(xv, (xref){.kind = REF_SHARED, .obj = obj, .arena = arena});
    }
    if (obj == Py_None) {
        return put_tag(xv, 'N');
    }
    if (obj == Py_True) {
        return put_tag(xv, 'T');
    }
    if (obj == Py_False) {
        return put_tag(xv, 'F');
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            int64_t i = (int64_t)v;
            return (put_tag(xv, 'i') < 0 || put(xv, &i, sizeof(i)) < 0) ? -1 : 0;
        }
        /* Base 16 converts in linear time both ways, with only public API. */
        PyObject *hex = PyNumber_ToBase(obj, 16);
        if (hex == NULL) {
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(hex, &n);
        int rc = (s == NULL || put_tag(xv, 'I') < 0 || put_size(xv, (size_t)n) < 0
                  || put(xv, s, (size_t)n) < 0) ? -1 : 0;
        Py_DECREF(hex);
        return rc;
    }
    if (PyFloat_CheckExact(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        return (put_tag(xv, 'f') < 0 || put(xv, &d, sizeof(d)) < 0) ? -1 : 0;
    }
    if (PyComplex_CheckExact(obj)) {
        Py_complex c = PyComplex_AsCComplex(obj);
        return (put_tag(xv, 'c') < 0 || put(xv, &c.real, sizeof(double)) < 0
                || put(xv, &c.imag, sizeof(double)) < 0) ? -1 : 0;
    }
    if (PyUnicode_CheckExact(obj)) {
        uint8_t kind = (uint8_t)PyUnicode_KIND(obj);
        size_t n = (size_t)PyUnicode_GET_LENGTH(obj);
        return (put_tag(xv, 's') < 0 || put(xv, &kind, 1) < 0 || put_size(xv, n) < 0
                || put(xv, PyUnicode_DATA(obj), n * kind) < 0) ? -1 : 0;
    }
    if (PyBytes_CheckExact(obj)) {
        size_t n = (size_t)PyBytes_GET_SIZE(obj);
        return (put_tag(xv, 'b') < 0 || put_size(xv, n) < 0
                || put(xv, PyBytes_AS_STRING(obj), n) < 0) ? -1 : 0;
    }
    if (PyTuple_CheckExact(obj)) {
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        if (put_tag(xv, 't') < 0 || put_size(xv, (size_t)n) < 0) {
            return -1;
        }
        if (Py_EnterRecursiveCall(" while encoding a value for a channel")) {
            return -1;
        }
        int rc = 0;
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            if (p->depth < PATH_KEPT) {
                p->idx[p->depth] = i;
            }
            p->last = i;
            p->depth++;
            rc = encode(st, xv, PyTuple_GET_ITEM(obj, i), p);
            p->depth--;
        }
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (Py_TYPE(obj) == st->channel_type) {
        return put_ref(xv, (xref){.kind = REF_CHANNEL,
                                  .queue = ss_channel_unwrap(st, obj)});
    }
    if (st->sharedref_type != NULL && Py_TYPE(obj) == st->sharedref_type) {
        /* Crosses as the object it names: the receiver gets the object and becomes a
         * holder in decode(), exactly as for a shared object sent directly. */
        SharedRefObject *ref = (SharedRefObject *)obj;
        return put_ref(xv, (xref){.kind = REF_SHARED, .obj = ref->obj, .arena = ref->arena});
    }
    if (Py_TYPE(obj) == st->arena_type) {
        ss_arena *a = ss_arena_unwrap(st, obj);
        if (a != NULL) {
            return put_ref(xv, (xref){.kind = REF_ARENA, .arena = a});
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    refuse(st, p, obj);
    return -1;
}

ss_xvalue *
ss_xvalue_encode(ss_state *st, PyObject *obj, const char *what)
{
    ss_xvalue *xv = PyMem_RawCalloc(1, sizeof(ss_xvalue));
    if (xv == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    xpath p = {.root = what, .last = 0, .depth = 0};
    if (encode(st, xv, obj, &p) < 0) {
        ss_xvalue_free(xv);
        return NULL;
    }
    return xv;
}

void
ss_xvalue_free(ss_xvalue *xv)
{
    if (xv == NULL) {
        return;
    }
    for (size_t i = 0; i < xv->nrefs; i++) {
        xref *r = &xv->refs[i];
        if (r->kind == REF_CHANNEL) {
            ss_queue_decref(r->queue);
        }
        else {
            ss_arena_decref(r->arena);
        }
    }
    PyMem_RawFree(xv->refs);
    PyMem_RawFree(xv->buf);
    PyMem_RawFree(xv);
}

size_t
ss_xvalue_nbytes(const ss_xvalue *xv)
{
    return sizeof(*xv) + xv->cap + xv->refcap * sizeof(xref);
}

int
ss_xvalue_has_channels(const ss_xvalue *xv)
{
    for (size_t i = 0; i < xv->nrefs; i++) {
        if (xv->refs[i].kind == REF_CHANNEL) {
            return 1;
        }
    }
    return 0;
}

void
ss_xvalue_visit_channels(const ss_xvalue *xv, void (*visit)(ss_queue *, void *), void *arg)
{
    for (size_t i = 0; i < xv->nrefs; i++) {
        if (xv->refs[i].kind == REF_CHANNEL) {
            visit(xv->refs[i].queue, arg);
        }
    }
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct {
    const ss_xvalue *xv;
    size_t pos;
} reader;

static int
take(reader *r, void *out, size_t n)
{
    if (r->pos + n > r->xv->len) {
        PyErr_SetString(PyExc_SystemError, "subsandbox: truncated channel value");
        return -1;
    }
    memcpy(out, r->xv->buf + r->pos, n);
    r->pos += n;
    return 0;
}

static const char *
take_span(reader *r, size_t n)
{
    if (r->pos + n > r->xv->len) {
        PyErr_SetString(PyExc_SystemError, "subsandbox: truncated channel value");
        return NULL;
    }
    const char *s = r->xv->buf + r->pos;
    r->pos += n;
    return s;
}

/* Testing hook (_testing_fail_decode): when >= 0, the decode of this thread fails with
 * MemoryError at the node of that number (0: the first), as if allocating it failed. */
static _Thread_local Py_ssize_t tl_fail_at = -1;

static PyObject *
decode(ss_state *st, reader *r)
{
    char tag;
    size_t n;
    if (tl_fail_at >= 0 && tl_fail_at-- == 0) {
        return PyErr_NoMemory();
    }
    if (take(r, &tag, 1) < 0) {
        return NULL;
    }
    switch (tag) {
    case 'N':
        Py_RETURN_NONE;
    case 'T':
        Py_RETURN_TRUE;
    case 'F':
        Py_RETURN_FALSE;
    case 'i': {
        int64_t i;
        return take(r, &i, sizeof(i)) < 0 ? NULL : PyLong_FromLongLong(i);
    }
    case 'I': {
        if (take(r, &n, sizeof(n)) < 0) {
            return NULL;
        }
        const char *s = take_span(r, n);
        if (s == NULL) {
            return NULL;
        }
        PyObject *text = PyUnicode_FromStringAndSize(s, (Py_ssize_t)n);
        if (text == NULL) {
            return NULL;
        }
        PyObject *v = PyLong_FromUnicodeObject(text, 0);  /* "0x..." or "-0x..." */
        Py_DECREF(text);
        return v;
    }
    case 'f': {
        double d;
        return take(r, &d, sizeof(d)) < 0 ? NULL : PyFloat_FromDouble(d);
    }
    case 'c': {
        double re, im;
        if (take(r, &re, sizeof(re)) < 0 || take(r, &im, sizeof(im)) < 0) {
            return NULL;
        }
        return PyComplex_FromDoubles(re, im);
    }
    case 's': {
        uint8_t kind;
        if (take(r, &kind, 1) < 0 || take(r, &n, sizeof(n)) < 0) {
            return NULL;
        }
        const char *s = take_span(r, n * kind);
        return s == NULL ? NULL : PyUnicode_FromKindAndData(kind, s, (Py_ssize_t)n);
    }
    case 'b': {
        if (take(r, &n, sizeof(n)) < 0) {
            return NULL;
        }
        const char *s = take_span(r, n);
        return s == NULL ? NULL : PyBytes_FromStringAndSize(s, (Py_ssize_t)n);
    }
    case 't': {
        if (take(r, &n, sizeof(n)) < 0) {
            return NULL;
        }
        /* The sender's C recursion limit bounded the depth, but this thread may have
         * less stack left than the sender had. */
        if (Py_EnterRecursiveCall(" while decoding a value from a channel")) {
            return NULL;
        }
        PyObject *t = PyTuple_New((Py_ssize_t)n);
        for (size_t i = 0; t != NULL && i < n; i++) {
            PyObject *item = decode(st, r);
            if (item == NULL) {
                Py_CLEAR(t);
                break;
            }
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
        }
        Py_LeaveRecursiveCall();
        return t;
    }
    case 'R': {
        if (take(r, &n, sizeof(n)) < 0) {
            return NULL;
        }
        if (n >= r->xv->nrefs) {
            PyErr_SetString(PyExc_SystemError, "subsandbox: bad reference in channel value");
            return NULL;
        }
        const xref *ref = &r->xv->refs[n];
        switch (ref->kind) {
        case REF_SHARED:
            /* From now on this interpreter can reach the arena's objects. */
            if (ss_arena_add_holder(ref->arena, st->interp_id) < 0) {
                return NULL;
            }
            return Py_NewRef(ref->obj);  /* immortal: no write */
        case REF_CHANNEL:
            return ss_channel_wrap(st, ref->queue);
        case REF_ARENA:
            return ss_arena_wrap(st, ref->arena);
        }
        break;
    }
    default:
        break;
    }
    PyErr_Format(PyExc_SystemError, "subsandbox: bad tag %d in channel value", (int)tag);
    return NULL;
}

PyObject *
ss_xvalue_decode(ss_state *st, ss_xvalue *xv)
{
    reader r = {.xv = xv, .pos = 0};
    PyObject *v = decode(st, &r);
    tl_fail_at = -1;        /* one decode only */
    return v;
}

/* _testing_fail_decode(node) -> None: the next value this thread decodes (a channel recv)
 * fails with MemoryError when it reaches node number `node` (0: the value itself; in a
 * tuple, its items follow in depth-first order), as an allocation failure would. */
static PyObject *
testing_fail_decode(PyObject *module, PyObject *arg)
{
    Py_ssize_t at = PyLong_AsSsize_t(arg);
    if (at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (at < 0) {
        PyErr_SetString(PyExc_ValueError, "_testing_fail_decode(): node must be >= 0");
        return NULL;
    }
    tl_fail_at = at;
    Py_RETURN_NONE;
}

/* ---- for the pickling crossing (subsandbox/_crossing.py) ------------------------------- */

/* _is_reference(obj) -> bool: whether obj crosses as a reference (a shared object, a
 * channel or an arena handle) rather than being copied: the pickler sets such objects
 * aside and sends them through a channel, which keeps their arena or queue alive. */
static PyObject *
is_reference(PyObject *module, PyObject *obj)
{
    ss_state *st = ss_get_state(module);
    return PyBool_FromLong(ss_arena_of(obj) != NULL
                           || Py_TYPE(obj) == st->channel_type
                           || (st->sharedref_type != NULL && Py_TYPE(obj) == st->sharedref_type)
                           || (st->arena_type != NULL && Py_TYPE(obj) == st->arena_type));
}

/* Whether encode() takes `obj` as it is, without writing anything: exact builtin
 * scalars, and tuples of them nested at most `levels` deep, and references. */
static int
crosses_as_is(ss_state *st, PyObject *obj, int levels)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (obj == Py_None || tp == &PyBool_Type || tp == &PyLong_Type || tp == &PyFloat_Type
        || tp == &PyUnicode_Type || tp == &PyBytes_Type || tp == &PyComplex_Type)
    {
        return 1;
    }
    if (tp == &PyTuple_Type && levels > 0) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(obj); i++) {
            if (!crosses_as_is(st, PyTuple_GET_ITEM(obj, i), levels - 1)) {
                return 0;
            }
        }
        return 1;
    }
    return ss_arena_of(obj) != NULL || tp == st->channel_type
           || (st->sharedref_type != NULL && tp == st->sharedref_type)
           || (st->arena_type != NULL && tp == st->arena_type);
}

/* _crosses_as_is(obj) -> bool: whether obj is a channel value (crosses without pickle);
 * tuples nested deeper than 33 levels count as not (the executor pickles those). */
static PyObject *
crosses_as_is_py(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(crosses_as_is(ss_get_state(module), obj, 33));
}

static PyMethodDef xvalue_methods[] = {
    {"_is_reference", is_reference, METH_O, NULL},
    {"_crosses_as_is", crosses_as_is_py, METH_O, NULL},
    {"_testing_fail_decode", testing_fail_decode, METH_O,
     "_testing_fail_decode(node): make this thread's next channel decode fail with "
     "MemoryError at node number `node` (tests only)."},
    {NULL, NULL, 0, NULL},
};

int
ss_xvalue_exec(PyObject *module, ss_state *st)
{
    st->sharedref_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &SharedRef_spec,
                                                                  NULL);
    if (st->sharedref_type == NULL || PyModule_AddType(module, st->sharedref_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, xvalue_methods);
}

/* accum_binding.c: the accumulator types of vdna._core (HistAccumulator, MomentAccumulator,
 * CovAccumulator, RangeAccumulator). Binding only: argument conversion and checks, GIL release
 * around every core call that touches arrays, exceptions. No mathematics here.
 *
 * Activations reach the core without a copy (any strides); only a byte-swapped array, a misaligned
 * one, or one whose strides are not whole elements is first copied to an aligned native array.
 * While the GIL is released the object is marked busy: another thread calling any method of the
 * same accumulator gets a RuntimeError instead of racing on its state. */
#include "binding.h" /* Python.h first */

#include <string.h>

/* ---------------------------------------------------------------- per-kind operations */
typedef struct {
    const char *name;
    vdna_status (*update)(void *, const vdna_array *);
    vdna_status (*merge)(void *, const void *);
    void (*reset)(void *);
    void (*free_)(void *);
    void (*nan_counts)(const void *, int64_t *);
    int64_t (*num_images)(const void *);
    int64_t (*n_neurons)(const void *);
    vdna_layout (*layout)(const void *);
} accum_ops;

/* Typed core functions behind void* (calling through a cast function pointer is undefined). */
#define ACCUM_OPS(kind, pyname)                                                                            \
    static vdna_status kind##_update_v(void *s, const vdna_array *x) { return vdna_##kind##_update(s, x); } \
    static vdna_status kind##_merge_v(void *s, const void *o) { return vdna_##kind##_merge(s, o); }         \
    static void kind##_reset_v(void *s) { vdna_##kind##_reset(s); }                                         \
    static void kind##_free_v(void *s) { vdna_##kind##_free(s); }                                           \
    static void kind##_nan_v(const void *s, int64_t *o) { vdna_##kind##_nan_counts(s, o); }                 \
    static int64_t kind##_num_v(const void *s) { return vdna_##kind##_num_images(s); }                      \
    static int64_t kind##_nn_v(const void *s) { return vdna_##kind##_n_neurons(s); }                        \
    static vdna_layout kind##_layout_v(const void *s) { return vdna_##kind##_layout(s); }                   \
    static const accum_ops kind##_ops = {pyname,          kind##_update_v, kind##_merge_v, kind##_reset_v,  \
                                         kind##_free_v,   kind##_nan_v,    kind##_num_v,   kind##_nn_v,     \
                                         kind##_layout_v};

ACCUM_OPS(hist, "HistAccumulator")
ACCUM_OPS(moments, "MomentAccumulator")
ACCUM_OPS(cov, "CovAccumulator")
ACCUM_OPS(ranges, "RangeAccumulator")

typedef struct {
    PyObject_HEAD
    const accum_ops *ops;
    void *state; /* vdna_hist / vdna_moments / vdna_cov / vdna_ranges */
    int busy;    /* set while the GIL is released around a core call on `state` */
} AccumObject;

static PyTypeObject HistType, MomentType, CovType, RangeType;

/* ---------------------------------------------------------------- helpers */
static int acquire(AccumObject *self, const char *ctx) {
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s.%s: the accumulator is in use by another thread", self->ops->name, ctx);
        return -1;
    }
    self->busy = 1;
    return 0;
}

static void release(AccumObject *self) { self->busy = 0; }

static PyObject *raise_status(AccumObject *self, vdna_status st, const char *method) {
    char ctx[96];
    snprintf(ctx, sizeof ctx, "%s.%s", self->ops->name, method);
    return vdna_py_raise(st, ctx);
}

static int parse_layout(PyObject *obj, vdna_layout *out, const char *ctx) {
    if (obj == NULL) {
        *out = VDNA_LAYOUT_CHANNELS;
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        if (PyUnicode_CompareWithASCIIString(obj, "channels") == 0) {
            *out = VDNA_LAYOUT_CHANNELS;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(obj, "tokens") == 0) {
            *out = VDNA_LAYOUT_TOKENS;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "%s: layout must be 'channels' or 'tokens', got %R", ctx, obj);
    return -1;
}

static PyObject *shape_str(PyArrayObject *arr) {
    PyObject *shape = PyObject_GetAttrString((PyObject *)arr, "shape");
    if (shape == NULL) return NULL;
    PyObject *s = PyObject_Str(shape);
    Py_DECREF(shape);
    return s;
}

/* A C-contiguous float64 array of `ndim` dims from any array-like; when `len0` >= 0 every
 * dimension must equal it. New reference or NULL with ValueError/TypeError naming `what`. */
static PyArrayObject *as_f64(PyObject *obj, int ndim, npy_intp len0, const char *ctx, const char *what) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, NPY_DOUBLE, 0, 0, NPY_ARRAY_CARRAY);
    if (arr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_Format(PyExc_TypeError, "%s: %s must be convertible to float64 (%S)", ctx, what,
                         value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return NULL;
    }
    int bad = PyArray_NDIM(arr) != ndim;
    for (int d = 0; !bad && d < ndim; d++) bad = len0 >= 0 && PyArray_DIM(arr, d) != len0;
    if (bad) {
        PyObject *got = shape_str(arr);
        if (len0 >= 0 && ndim == 1)
            PyErr_Format(PyExc_ValueError, "%s: %s must have shape (%zd,), got %S", ctx, what, (Py_ssize_t)len0,
                         got ? got : Py_None);
        else if (len0 >= 0)
            PyErr_Format(PyExc_ValueError, "%s: %s must have shape (%zd, %zd), got %S", ctx, what, (Py_ssize_t)len0,
                         (Py_ssize_t)len0, got ? got : Py_None);
        else
            PyErr_Format(PyExc_ValueError, "%s: %s must be %d-D, got shape %S", ctx, what, ndim, got ? got : Py_None);
        Py_XDECREF(got);
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* An int64 C-contiguous array of the given shape from an integer array-like. */
static PyArrayObject *as_counts(PyObject *obj, int ndim, const npy_intp *shape, const char *ctx, const char *what) {
    PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
    if (raw == NULL) return NULL;
    if (!PyArray_ISINTEGER(raw)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must hold integers, got dtype %S", ctx, what, (PyObject *)PyArray_DESCR(raw));
        Py_DECREF(raw);
        return NULL;
    }
    int bad = PyArray_NDIM(raw) != ndim;
    for (int d = 0; !bad && d < ndim; d++) bad = PyArray_DIM(raw, d) != shape[d];
    if (bad) {
        PyObject *got = shape_str(raw);
        if (ndim == 2)
            PyErr_Format(PyExc_ValueError, "%s: %s must have shape (%zd, %zd), got %S", ctx, what, (Py_ssize_t)shape[0],
                         (Py_ssize_t)shape[1], got ? got : Py_None);
        else
            PyErr_Format(PyExc_ValueError, "%s: %s must have shape (%zd,), got %S", ctx, what, (Py_ssize_t)shape[0],
                         got ? got : Py_None);
        Py_XDECREF(got);
        Py_DECREF(raw);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny((PyObject *)raw, PyArray_DescrFromType(NPY_INT64), 0, 0,
                                                          NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST, NULL);
    Py_DECREF(raw);
    return arr;
}

/* Describe an activation array-like for the core. *keep receives the array whose memory `out`
 * points into (a new reference, to be released after the core call). */
static int activation_view(PyObject *obj, vdna_array *out, PyArrayObject **keep, const char *ctx) {
    *keep = NULL;
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
    if (arr == NULL) return -1;
    vdna_dtype dtype;
    int type = PyArray_TYPE(arr);
    switch (type) {
        case NPY_HALF: dtype = VDNA_F16; break;
        case NPY_FLOAT: dtype = VDNA_F32; break;
        case NPY_DOUBLE: dtype = VDNA_F64; break;
        default:
            PyErr_Format(PyExc_TypeError, "%s: activations must be float16, float32 or float64, got dtype %S", ctx,
                         (PyObject *)PyArray_DESCR(arr));
            Py_DECREF(arr);
            return -1;
    }
    int ndim = PyArray_NDIM(arr);
    if (ndim > VDNA_MAX_RANK) {
        PyObject *got = shape_str(arr);
        PyErr_Format(PyExc_ValueError, "%s: activations of shape %S have rank %d (at most %d supported)", ctx,
                     got ? got : Py_None, ndim, VDNA_MAX_RANK);
        Py_XDECREF(got);
        Py_DECREF(arr);
        return -1;
    }
    npy_intp itemsize = PyArray_ITEMSIZE(arr);
    int need_copy = !PyArray_ISNOTSWAPPED(arr) || !PyArray_ISALIGNED(arr);
    for (int d = 0; d < ndim; d++)
        if (PyArray_STRIDE(arr, d) % itemsize != 0) need_copy = 1;
    if (need_copy) {
        PyArrayObject *copy = (PyArrayObject *)PyArray_FromAny((PyObject *)arr, PyArray_DescrFromType(type), 0, 0,
                                                               NPY_ARRAY_CARRAY | NPY_ARRAY_ENSURECOPY, NULL);
        Py_DECREF(arr);
        if (copy == NULL) return -1;
        arr = copy;
    }
    memset(out, 0, sizeof *out);
    out->data = PyArray_DATA(arr);
    out->dtype = dtype;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        out->shape[d] = (int64_t)PyArray_DIM(arr, d);
        out->strides[d] = (int64_t)(PyArray_STRIDE(arr, d) / itemsize);
    }
    *keep = arr;
    return 0;
}

static PyObject *new_array(int ndim, npy_intp d0, npy_intp d1, int type) {
    npy_intp dims[2] = {d0, d1};
    return PyArray_SimpleNew(ndim, dims, type);
}

static AccumObject *alloc_accum(PyTypeObject *type, const accum_ops *ops, void *state) {
    AccumObject *self = (AccumObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        ops->free_(state);
        return NULL;
    }
    self->ops = ops;
    self->state = state;
    self->busy = 0;
    return self;
}

static void accum_dealloc(AccumObject *self) {
    if (self->state != NULL && self->ops != NULL) self->ops->free_(self->state);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---------------------------------------------------------------- common methods */
static PyObject *accum_update(AccumObject *self, PyObject *x) {
    char ctx[96];
    snprintf(ctx, sizeof ctx, "%s.update", self->ops->name);
    vdna_array arr;
    PyArrayObject *keep;
    if (activation_view(x, &arr, &keep, ctx) < 0) return NULL;
    if (acquire(self, "update") < 0) {
        Py_DECREF(keep);
        return NULL;
    }
    vdna_status st;
    Py_BEGIN_ALLOW_THREADS
    st = self->ops->update(self->state, &arr);
    Py_END_ALLOW_THREADS
    release(self);
    Py_DECREF(keep);
    if (st != VDNA_OK) return vdna_py_raise(st, ctx);
    Py_RETURN_NONE;
}

static PyObject *accum_merge(AccumObject *self, PyObject *other_obj) {
    if (Py_TYPE(other_obj) != Py_TYPE(self)) {
        PyErr_Format(PyExc_ValueError, "%s.merge: expected a %s, got %s", self->ops->name, self->ops->name,
                     Py_TYPE(other_obj)->tp_name);
        return NULL;
    }
    AccumObject *other = (AccumObject *)other_obj;
    if (acquire(self, "merge") < 0) return NULL;
    if (other != self && acquire(other, "merge") < 0) {
        release(self);
        return NULL;
    }
    vdna_status st;
    Py_BEGIN_ALLOW_THREADS
    st = self->ops->merge(self->state, other->state);
    Py_END_ALLOW_THREADS
    release(self);
    if (other != self) release(other);
    if (st != VDNA_OK) return raise_status(self, st, "merge");
    Py_RETURN_NONE;
}

static PyObject *accum_reset(AccumObject *self, PyObject *noargs) {
    (void)noargs;
    if (acquire(self, "reset") < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    self->ops->reset(self->state);
    Py_END_ALLOW_THREADS
    release(self);
    Py_RETURN_NONE;
}

static PyObject *accum_get_nan_counts(AccumObject *self, void *closure) {
    (void)closure;
    PyObject *out = new_array(1, (npy_intp)self->ops->n_neurons(self->state), 0, NPY_INT64);
    if (out == NULL) return NULL;
    if (acquire(self, "nan_counts") < 0) {
        Py_DECREF(out);
        return NULL;
    }
    self->ops->nan_counts(self->state, (int64_t *)PyArray_DATA((PyArrayObject *)out));
    release(self);
    return out;
}

static PyObject *accum_get_num_images(AccumObject *self, void *closure) {
    (void)closure;
    if (acquire(self, "num_images") < 0) return NULL;
    int64_t n = self->ops->num_images(self->state);
    release(self);
    return PyLong_FromLongLong((long long)n);
}

static PyObject *accum_get_n_neurons(AccumObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong((long long)self->ops->n_neurons(self->state));
}

static PyObject *accum_get_layout(AccumObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(self->ops->layout(self->state) == VDNA_LAYOUT_TOKENS ? "tokens" : "channels");
}

static PyObject *accum_repr(AccumObject *self) {
    return PyUnicode_FromFormat("<%s n_neurons=%lld layout='%s' num_images=%lld>", self->ops->name,
                                (long long)self->ops->n_neurons(self->state),
                                self->ops->layout(self->state) == VDNA_LAYOUT_TOKENS ? "tokens" : "channels",
                                (long long)(self->busy ? -1 : self->ops->num_images(self->state)));
}

#define COMMON_METHODS                                                                                    \
    {"update", (PyCFunction)accum_update, METH_O,                                                         \
     "update(x): accumulate a batch of activations, shape (N, C, *spatial) or (N, T, C) by layout."},     \
        {"merge", (PyCFunction)accum_merge, METH_O,                                                       \
         "merge(other): add another accumulator of the same kind, neurons and layout (disjoint images)."}, \
        {"reset", (PyCFunction)accum_reset, METH_NOARGS, "reset(): forget every image."}

#define COMMON_GETSET                                                                                   \
    {"nan_counts", (getter)accum_get_nan_counts, NULL, "NaN activation values seen per neuron (int64, (C,)).", \
     NULL},                                                                                             \
        {"num_images", (getter)accum_get_num_images, NULL, "Images accumulated.", NULL},                \
        {"n_neurons", (getter)accum_get_n_neurons, NULL, "Number of neurons C.", NULL},                 \
        {"layout", (getter)accum_get_layout, NULL, "'channels' or 'tokens'.", NULL}

/* Read-out of an (n0[, n1]) array through fn(state, out) -> status, GIL released. */
typedef vdna_status (*readout_fn)(const void *state, void *out);

static PyObject *readout(AccumObject *self, const char *what, int ndim, npy_intp n0, npy_intp n1, int type,
                         readout_fn fn) {
    PyObject *out = new_array(ndim, n0, n1, type);
    if (out == NULL) return NULL;
    if (acquire(self, what) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    vdna_status st;
    void *data = PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS
    st = fn(self->state, data);
    Py_END_ALLOW_THREADS
    release(self);
    if (st != VDNA_OK) {
        Py_DECREF(out);
        return raise_status(self, st, what);
    }
    return out;
}

#define C_OF(self) ((npy_intp)(self)->ops->n_neurons((self)->state))

/* ---------------------------------------------------------------- HistAccumulator */
static PyObject *hist_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"mins", "maxs", "bins", "layout", NULL};
    const char *ctx = "HistAccumulator";
    PyObject *mins_obj, *maxs_obj, *layout_obj = NULL;
    long long bins;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOL|O:HistAccumulator", kwlist, &mins_obj, &maxs_obj, &bins,
                                     &layout_obj))
        return NULL;
    vdna_layout layout;
    if (parse_layout(layout_obj, &layout, ctx) < 0) return NULL;
    if (bins < 1) {
        PyErr_Format(PyExc_ValueError, "%s: bins must be >= 1, got %lld", ctx, bins);
        return NULL;
    }
    PyArrayObject *mins = as_f64(mins_obj, 1, -1, ctx, "mins");
    if (mins == NULL) return NULL;
    PyArrayObject *maxs = as_f64(maxs_obj, 1, -1, ctx, "maxs");
    if (maxs == NULL) {
        Py_DECREF(mins);
        return NULL;
    }
    if (PyArray_DIM(mins, 0) != PyArray_DIM(maxs, 0)) {
        PyErr_Format(PyExc_ValueError, "%s: mins and maxs must have the same length, got %zd and %zd", ctx,
                     (Py_ssize_t)PyArray_DIM(mins, 0), (Py_ssize_t)PyArray_DIM(maxs, 0));
        Py_DECREF(mins);
        Py_DECREF(maxs);
        return NULL;
    }
    vdna_hist *h = NULL;
    vdna_status st;
    int64_t C = (int64_t)PyArray_DIM(mins, 0);
    const double *pmin = PyArray_DATA(mins), *pmax = PyArray_DATA(maxs);
    Py_BEGIN_ALLOW_THREADS
    st = vdna_hist_create(&h, C, (int64_t)bins, pmin, pmax, layout);
    Py_END_ALLOW_THREADS
    Py_DECREF(mins);
    Py_DECREF(maxs);
    if (st != VDNA_OK) return vdna_py_raise(st, ctx);
    return (PyObject *)alloc_accum(type, &hist_ops, h);
}

static vdna_status hist_counts_r(const void *s, void *out) { return vdna_hist_counts(s, out); }
static vdna_status hist_mins_r(const void *s, void *out) { return vdna_hist_ranges(s, out, NULL); }
static vdna_status hist_maxs_r(const void *s, void *out) { return vdna_hist_ranges(s, NULL, out); }

static PyObject *hist_get_counts(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "counts", 2, C_OF(self), (npy_intp)vdna_hist_bins(self->state), NPY_INT64, hist_counts_r);
}
static PyObject *hist_get_mins(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "mins", 1, C_OF(self), 0, NPY_DOUBLE, hist_mins_r);
}
static PyObject *hist_get_maxs(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "maxs", 1, C_OF(self), 0, NPY_DOUBLE, hist_maxs_r);
}
static PyObject *hist_get_bins(AccumObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong((long long)vdna_hist_bins(self->state));
}

static PyObject *hist_add_counts(AccumObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"counts", "nan_counts", "num_images", NULL};
    const char *ctx = "HistAccumulator.add_counts";
    PyObject *counts_obj, *nans_obj;
    long long num_images;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOL:add_counts", kwlist, &counts_obj, &nans_obj, &num_images))
        return NULL;
    if (num_images < 0) {
        PyErr_Format(PyExc_ValueError, "%s: num_images must be >= 0, got %lld", ctx, num_images);
        return NULL;
    }
    npy_intp shape[2] = {C_OF(self), (npy_intp)vdna_hist_bins(self->state)};
    PyArrayObject *counts = as_counts(counts_obj, 2, shape, ctx, "counts");
    if (counts == NULL) return NULL;
    PyArrayObject *nans = as_counts(nans_obj, 1, shape, ctx, "nan_counts");
    if (nans == NULL) {
        Py_DECREF(counts);
        return NULL;
    }
    if (acquire(self, "add_counts") < 0) {
        Py_DECREF(counts);
        Py_DECREF(nans);
        return NULL;
    }
    vdna_status st;
    const int64_t *pc = PyArray_DATA(counts), *pn = PyArray_DATA(nans);
    Py_BEGIN_ALLOW_THREADS
    st = vdna_hist_add_counts(self->state, pc, pn, (int64_t)num_images);
    Py_END_ALLOW_THREADS
    release(self);
    Py_DECREF(counts);
    Py_DECREF(nans);
    if (st != VDNA_OK) return vdna_py_raise(st, ctx);
    Py_RETURN_NONE;
}

/* An output array written in place by the core: exactly `type`, `ndim` x shape, C-contiguous,
 * aligned, native, writeable (no copy is ever made). Returns a new reference or NULL. */
static PyArrayObject *inplace_array(PyObject *obj, int type, int ndim, const npy_intp *shape, const char *ctx,
                                    const char *what) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a NumPy array (it is written in place)", ctx, what);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (PyArray_TYPE(arr) != type || !PyArray_ISNOTSWAPPED(arr)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must have dtype %s, got %S", ctx, what,
                     type == NPY_UINT32 ? "uint32" : type == NPY_UINT16 ? "uint16" : "int64",
                     (PyObject *)PyArray_DESCR(arr));
        return NULL;
    }
    int bad = PyArray_NDIM(arr) != ndim;
    for (int d = 0; !bad && d < ndim; d++) bad = shape[d] >= 0 && PyArray_DIM(arr, d) != shape[d];
    if (bad) {
        PyObject *got = shape_str(arr);
        char want[128];
        size_t pos = 0;
        for (int d = 0; d < ndim && pos < sizeof want; d++) /* -1: any length ("n") */
            pos += (size_t)(shape[d] >= 0 ? snprintf(want + pos, sizeof want - pos, "%s%lld", d ? ", " : "",
                                                     (long long)shape[d])
                                          : snprintf(want + pos, sizeof want - pos, "%sn", d ? ", " : ""));
        PyErr_Format(PyExc_ValueError, "%s: %s has shape %S; expected (%s)", ctx, what, got ? got : Py_None, want);
        Py_XDECREF(got);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(arr) || !PyArray_ISALIGNED(arr) || !PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be C-contiguous, aligned and writeable", ctx, what);
        return NULL;
    }
    Py_INCREF(arr);
    return arr;
}

static PyObject *hist_count_groups(AccumObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"x", "groups", "tables", "table_images", "table_nans", "narrow", "where", NULL};
    const char *ctx = "HistAccumulator.count_groups";
    PyObject *x_obj, *groups_obj, *tables_obj, *images_obj, *nans_obj, *narrow_obj = Py_None, *where_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|OO:count_groups", kwlist, &x_obj, &groups_obj, &tables_obj,
                                     &images_obj, &nans_obj, &narrow_obj, &where_obj))
        return NULL;
    if ((narrow_obj == Py_None) != (where_obj == Py_None)) {
        PyErr_Format(PyExc_ValueError, "%s: narrow and where go together (give both or neither)", ctx);
        return NULL;
    }
    const npy_intp C = C_OF(self), B = (npy_intp)vdna_hist_bins(self->state);
    PyArrayObject *tables = NULL, *narrow = NULL, *where = NULL, *images = NULL, *nans = NULL, *groups = NULL,
                  *keep = NULL;
    vdna_array arr;
    npy_intp tshape[3] = {C, -1, B}; /* neuron-major: one neuron's rows of every table are contiguous */
    tables = inplace_array(tables_obj, NPY_UINT32, 3, tshape, ctx, "tables");
    if (tables == NULL) goto fail;
    npy_intp T = PyArray_DIM(tables, 1);
    if (narrow_obj != Py_None) {
        narrow = inplace_array(narrow_obj, NPY_UINT16, 3, tshape, ctx, "narrow");
        if (narrow == NULL) goto fail;
        where = (PyArrayObject *)PyArray_FromAny(where_obj, PyArray_DescrFromType(NPY_INT64), 1, 1,
                                                 NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST, NULL);
        if (where == NULL) goto fail;
        T = PyArray_DIM(where, 0);
    }
    npy_intp ishape[1] = {T}, nshape[2] = {T, C};
    images = inplace_array(images_obj, NPY_INT64, 1, ishape, ctx, "table_images");
    if (images == NULL) goto fail;
    nans = inplace_array(nans_obj, NPY_INT64, 2, nshape, ctx, "table_nans");
    if (nans == NULL) goto fail;
    if (activation_view(x_obj, &arr, &keep, ctx) < 0) goto fail;
    {
        PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(groups_obj, NULL, 0, 0, 0, NULL);
        if (raw == NULL) goto fail;
        if (!PyArray_ISINTEGER(raw) || PyArray_NDIM(raw) != 2 || (arr.ndim > 0 && PyArray_DIM(raw, 0) != arr.shape[0])) {
            PyObject *got = shape_str(raw);
            PyErr_Format(PyExc_ValueError, "%s: groups must be integers of shape (%lld, n_sets), got %S dtype %S", ctx,
                         arr.ndim > 0 ? (long long)arr.shape[0] : 0LL, got ? got : Py_None,
                         (PyObject *)PyArray_DESCR(raw));
            Py_XDECREF(got);
            Py_DECREF(raw);
            goto fail;
        }
        groups = (PyArrayObject *)PyArray_FromAny((PyObject *)raw, PyArray_DescrFromType(NPY_INT64), 0, 0,
                                                  NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST, NULL);
        Py_DECREF(raw);
        if (groups == NULL) goto fail;
    }
    if (acquire(self, "count_groups") < 0) goto fail;
    {
        vdna_status st;
        const int64_t *pg = PyArray_DATA(groups);
        int64_t n_sets = (int64_t)PyArray_DIM(groups, 1);
        uint32_t *pt = PyArray_DATA(tables);
        uint16_t *pnar = narrow ? PyArray_DATA(narrow) : NULL;
        const int64_t *pw = where ? PyArray_DATA(where) : NULL;
        const int64_t n_wide = (int64_t)PyArray_DIM(tables, 1), n_narrow = narrow ? (int64_t)PyArray_DIM(narrow, 1) : 0;
        int64_t *pi = PyArray_DATA(images), *pn = PyArray_DATA(nans);
        Py_BEGIN_ALLOW_THREADS
        st = vdna_hist_count_groups_mixed(self->state, &arr, pg, n_sets, (int64_t)T, pw, pt, n_wide, pnar, n_narrow, pi,
                                          pn);
        Py_END_ALLOW_THREADS
        release(self);
        Py_DECREF(tables);
        Py_XDECREF(narrow);
        Py_XDECREF(where);
        Py_DECREF(images);
        Py_DECREF(nans);
        Py_DECREF(groups);
        Py_DECREF(keep);
        if (st != VDNA_OK) return vdna_py_raise(st, ctx);
        Py_RETURN_NONE;
    }
fail:
    Py_XDECREF(tables);
    Py_XDECREF(narrow);
    Py_XDECREF(where);
    Py_XDECREF(images);
    Py_XDECREF(nans);
    Py_XDECREF(groups);
    Py_XDECREF(keep);
    return NULL;
}

static PyMethodDef hist_methods[] = {
    COMMON_METHODS,
    {"add_counts", (PyCFunction)(void (*)(void))hist_add_counts, METH_VARARGS | METH_KEYWORDS,
     "add_counts(counts, nan_counts, num_images): add a saved state ((C, B) and (C,) non-negative integers)."},
    {"count_groups", (PyCFunction)(void (*)(void))hist_count_groups, METH_VARARGS | METH_KEYWORDS,
     "count_groups(x, groups, tables, table_images, table_nans): count image i of the batch x into the tables "
     "groups[i, s] (-1: none) with this accumulator's bins, in place (tables (C, T, B) uint32: neuron-major, "
     "table t of neuron c is tables[c, t]; table_images (T,) and table_nans (T, C) int64). The accumulator itself is unchanged. "
     "With narrow ((C, T16, B) uint16) and where ((T,) int64): table t is tables[:, where[t]] when where[t] >= 0, "
     "narrow[:, -1 - where[t]] otherwise; a narrow table may hold at most (2^16 - 1) // samples-per-image images in all."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hist_getset[] = {
    COMMON_GETSET,
    {"counts", (getter)hist_get_counts, NULL, "Counts per neuron and bin (new int64 array, (C, B)).", NULL},
    {"bins", (getter)hist_get_bins, NULL, "Number of bins B.", NULL},
    {"mins", (getter)hist_get_mins, NULL, "Calibrated activation minima given at creation (float64, (C,)).", NULL},
    {"maxs", (getter)hist_get_maxs, NULL, "Calibrated activation maxima given at creation (float64, (C,)).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- Moment / Cov / Range constructors */
static int parse_neurons_layout(PyObject *args, PyObject *kwds, const char *fmt, long long *n, vdna_layout *layout,
                                const char *ctx) {
    static char *kwlist[] = {"n_neurons", "layout", NULL};
    PyObject *layout_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, n, &layout_obj)) return -1;
    if (parse_layout(layout_obj, layout, ctx) < 0) return -1;
    if (*n < 1) {
        PyErr_Format(PyExc_ValueError, "%s: n_neurons must be >= 1, got %lld", ctx, *n);
        return -1;
    }
    return 0;
}

static PyObject *moments_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    long long n;
    vdna_layout layout;
    if (parse_neurons_layout(args, kwds, "L|O:MomentAccumulator", &n, &layout, "MomentAccumulator") < 0) return NULL;
    vdna_moments *m = NULL;
    vdna_status st = vdna_moments_create(&m, (int64_t)n, layout);
    if (st != VDNA_OK) return vdna_py_raise(st, "MomentAccumulator");
    return (PyObject *)alloc_accum(type, &moments_ops, m);
}

static PyObject *cov_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    long long n;
    vdna_layout layout;
    if (parse_neurons_layout(args, kwds, "L|O:CovAccumulator", &n, &layout, "CovAccumulator") < 0) return NULL;
    vdna_cov *c = NULL;
    vdna_status st;
    Py_BEGIN_ALLOW_THREADS /* allocates and clears C^2 doubles */
    st = vdna_cov_create(&c, (int64_t)n, layout);
    Py_END_ALLOW_THREADS
    if (st != VDNA_OK) return vdna_py_raise(st, "CovAccumulator");
    return (PyObject *)alloc_accum(type, &cov_ops, c);
}

static PyObject *ranges_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    long long n;
    vdna_layout layout;
    if (parse_neurons_layout(args, kwds, "L|O:RangeAccumulator", &n, &layout, "RangeAccumulator") < 0) return NULL;
    vdna_ranges *r = NULL;
    vdna_status st = vdna_ranges_create(&r, (int64_t)n, layout);
    if (st != VDNA_OK) return vdna_py_raise(st, "RangeAccumulator");
    return (PyObject *)alloc_accum(type, &ranges_ops, r);
}

/* ---------------------------------------------------------------- MomentAccumulator */
static vdna_status moments_mean_r(const void *s, void *out) { return vdna_moments_mean(s, out); }
static vdna_status moments_var_r(const void *s, void *out) { return vdna_moments_var(s, out); }

static PyObject *moments_get_mean(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "mean", 1, C_OF(self), 0, NPY_DOUBLE, moments_mean_r);
}
static PyObject *moments_get_var(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "var", 1, C_OF(self), 0, NPY_DOUBLE, moments_var_r);
}

/* state() for moments (matrix = 0) and cov (matrix = 1). */
static PyObject *gauss_state(AccumObject *self, int matrix) {
    npy_intp C = C_OF(self);
    PyObject *mean = new_array(1, C, 0, NPY_DOUBLE);
    PyObject *m2 = matrix ? new_array(2, C, C, NPY_DOUBLE) : new_array(1, C, 0, NPY_DOUBLE);
    if (mean == NULL || m2 == NULL || acquire(self, "state") < 0) {
        Py_XDECREF(mean);
        Py_XDECREF(m2);
        return NULL;
    }
    int64_t count = 0;
    double *pm = PyArray_DATA((PyArrayObject *)mean), *pq = PyArray_DATA((PyArrayObject *)m2);
    Py_BEGIN_ALLOW_THREADS
    if (matrix)
        vdna_cov_state(self->state, &count, pm, pq);
    else
        vdna_moments_state(self->state, &count, pm, pq);
    Py_END_ALLOW_THREADS
    release(self);
    return Py_BuildValue("(LNN)", (long long)count, mean, m2);
}

/* nan_counts=None or (C,) non-negative integers for set_state; *out is NULL for None. */
static int optional_nan_counts(AccumObject *self, PyObject *obj, const char *ctx, PyArrayObject **out) {
    *out = NULL;
    if (obj == NULL || obj == Py_None) return 0;
    npy_intp shape[1] = {C_OF(self)};
    *out = as_counts(obj, 1, shape, ctx, "nan_counts");
    return *out == NULL ? -1 : 0;
}

static PyObject *gauss_set_state(AccumObject *self, PyObject *args, PyObject *kwds, int matrix) {
    static char *kwlist[] = {"count", "mean", "m2", "nan_counts", NULL};
    const char *ctx = matrix ? "CovAccumulator.set_state" : "MomentAccumulator.set_state";
    long long count;
    PyObject *mean_obj, *m2_obj, *nans_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LOO|O:set_state", kwlist, &count, &mean_obj, &m2_obj, &nans_obj))
        return NULL;
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "%s: count must be >= 0, got %lld", ctx, count);
        return NULL;
    }
    npy_intp C = C_OF(self);
    PyArrayObject *nans;
    if (optional_nan_counts(self, nans_obj, ctx, &nans) < 0) return NULL;
    PyArrayObject *mean = as_f64(mean_obj, 1, C, ctx, "mean");
    PyArrayObject *m2 = mean == NULL ? NULL : as_f64(m2_obj, matrix ? 2 : 1, C, ctx, "m2");
    if (m2 == NULL || acquire(self, "set_state") < 0) {
        Py_XDECREF(mean);
        Py_XDECREF(m2);
        Py_XDECREF(nans);
        return NULL;
    }
    vdna_status st;
    const double *pm = PyArray_DATA(mean), *pq = PyArray_DATA(m2);
    const int64_t *pn = nans ? PyArray_DATA(nans) : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = matrix ? vdna_cov_set_state(self->state, (int64_t)count, pm, pq, pn)
                : vdna_moments_set_state(self->state, (int64_t)count, pm, pq, pn);
    Py_END_ALLOW_THREADS
    release(self);
    Py_DECREF(mean);
    Py_DECREF(m2);
    Py_XDECREF(nans);
    if (st != VDNA_OK) return vdna_py_raise(st, ctx);
    Py_RETURN_NONE;
}

static PyObject *moments_state(AccumObject *self, PyObject *noargs) {
    (void)noargs;
    return gauss_state(self, 0);
}
static PyObject *moments_set_state(AccumObject *self, PyObject *args, PyObject *kwds) {
    return gauss_set_state(self, args, kwds, 0);
}

static PyMethodDef moments_methods[] = {
    COMMON_METHODS,
    {"state", (PyCFunction)moments_state, METH_NOARGS, "state() -> (count, mean (C,), m2 (C,))"},
    {"set_state", (PyCFunction)(void (*)(void))moments_set_state, METH_VARARGS | METH_KEYWORDS,
     "set_state(count, mean, m2, nan_counts=None): replace the state (nan_counts: (C,) integers, default 0)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef moments_getset[] = {
    COMMON_GETSET,
    {"mean", (getter)moments_get_mean, NULL, "Mean over images of the per-image means (float64, (C,)).", NULL},
    {"var", (getter)moments_get_var, NULL, "Unbiased variance over images (float64, (C,); 0 for one image).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- CovAccumulator */
static vdna_status cov_mean_r(const void *s, void *out) { return vdna_cov_mean(s, out); }
static vdna_status cov_cov_r(const void *s, void *out) { return vdna_cov_cov(s, out); }

static PyObject *cov_get_mean(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "mean", 1, C_OF(self), 0, NPY_DOUBLE, cov_mean_r);
}
static PyObject *cov_get_cov(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "cov", 2, C_OF(self), C_OF(self), NPY_DOUBLE, cov_cov_r);
}
static PyObject *cov_state(AccumObject *self, PyObject *noargs) {
    (void)noargs;
    return gauss_state(self, 1);
}
static PyObject *cov_set_state(AccumObject *self, PyObject *args, PyObject *kwds) {
    return gauss_set_state(self, args, kwds, 1);
}

static PyMethodDef cov_methods[] = {
    COMMON_METHODS,
    {"state", (PyCFunction)cov_state, METH_NOARGS, "state() -> (count, mean (C,), m2 (C, C))"},
    {"set_state", (PyCFunction)(void (*)(void))cov_set_state, METH_VARARGS | METH_KEYWORDS,
     "set_state(count, mean, m2, nan_counts=None): replace the state (m2 symmetric; nan_counts default 0)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cov_getset[] = {
    COMMON_GETSET,
    {"mean", (getter)cov_get_mean, NULL, "Mean vector of the per-image means (float64, (C,)).", NULL},
    {"cov", (getter)cov_get_cov, NULL, "Unbiased covariance (float64, (C, C); zeros for one image).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- RangeAccumulator */
static vdna_status ranges_mins_r(const void *s, void *out) { return vdna_ranges_minmax(s, out, NULL); }
static vdna_status ranges_maxs_r(const void *s, void *out) { return vdna_ranges_minmax(s, NULL, out); }

static PyObject *ranges_get_mins(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "mins", 1, C_OF(self), 0, NPY_DOUBLE, ranges_mins_r);
}
static PyObject *ranges_get_maxs(AccumObject *self, void *closure) {
    (void)closure;
    return readout(self, "maxs", 1, C_OF(self), 0, NPY_DOUBLE, ranges_maxs_r);
}

static PyObject *ranges_set_state(AccumObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"num_images", "mins", "maxs", "nan_counts", NULL};
    const char *ctx = "RangeAccumulator.set_state";
    long long num_images;
    PyObject *mins_obj, *maxs_obj, *nans_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LOO|O:set_state", kwlist, &num_images, &mins_obj, &maxs_obj,
                                     &nans_obj))
        return NULL;
    if (num_images < 0) {
        PyErr_Format(PyExc_ValueError, "%s: num_images must be >= 0, got %lld", ctx, num_images);
        return NULL;
    }
    npy_intp C = C_OF(self);
    PyArrayObject *nans;
    if (optional_nan_counts(self, nans_obj, ctx, &nans) < 0) return NULL;
    PyArrayObject *mins = as_f64(mins_obj, 1, C, ctx, "mins");
    PyArrayObject *maxs = mins == NULL ? NULL : as_f64(maxs_obj, 1, C, ctx, "maxs");
    if (maxs == NULL || acquire(self, "set_state") < 0) {
        Py_XDECREF(mins);
        Py_XDECREF(maxs);
        Py_XDECREF(nans);
        return NULL;
    }
    vdna_status st;
    const double *pa = PyArray_DATA(mins), *pb = PyArray_DATA(maxs);
    const int64_t *pn = nans ? PyArray_DATA(nans) : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = vdna_ranges_set_state(self->state, (int64_t)num_images, pa, pb, pn);
    Py_END_ALLOW_THREADS
    release(self);
    Py_DECREF(mins);
    Py_DECREF(maxs);
    Py_XDECREF(nans);
    if (st != VDNA_OK) return vdna_py_raise(st, ctx);
    Py_RETURN_NONE;
}

static PyMethodDef ranges_methods[] = {
    COMMON_METHODS,
    {"set_state", (PyCFunction)(void (*)(void))ranges_set_state, METH_VARARGS | METH_KEYWORDS,
     "set_state(num_images, mins, maxs, nan_counts=None): replace the state (NaN for a neuron with no value)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ranges_getset[] = {
    COMMON_GETSET,
    {"mins", (getter)ranges_get_mins, NULL, "Minimum per neuron (float64, (C,); NaN if only NaN seen).", NULL},
    {"maxs", (getter)ranges_get_maxs, NULL, "Maximum per neuron (float64, (C,); NaN if only NaN seen).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---------------------------------------------------------------- per-image mean vectors */
static PyObject *py_image_mean_vectors(PyObject *module, PyObject *args, PyObject *kwds) {
    (void)module;
    static char *kwlist[] = {"x", "n_neurons", "layout", NULL};
    const char *ctx = "image_mean_vectors";
    PyObject *x_obj, *layout_obj = NULL;
    long long n;
    vdna_layout layout = VDNA_LAYOUT_CHANNELS;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OL|O:image_mean_vectors", kwlist, &x_obj, &n, &layout_obj))
        return NULL;
    if (layout_obj != NULL && parse_layout(layout_obj, &layout, ctx) < 0) return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s: n_neurons must be >= 1, got %lld", ctx, n);
        return NULL;
    }
    vdna_array arr;
    PyArrayObject *keep;
    if (activation_view(x_obj, &arr, &keep, ctx) < 0) return NULL;
    npy_intp N = arr.ndim > 0 ? (npy_intp)arr.shape[0] : 0;
    PyObject *means = new_array(2, N, (npy_intp)n, NPY_DOUBLE);
    PyObject *nans = new_array(1, (npy_intp)n, 0, NPY_INT64);
    if (means == NULL || nans == NULL) {
        Py_XDECREF(means);
        Py_XDECREF(nans);
        Py_DECREF(keep);
        return NULL;
    }
    vdna_status st;
    double *pm = PyArray_DATA((PyArrayObject *)means);
    int64_t *pn = PyArray_DATA((PyArrayObject *)nans);
    Py_BEGIN_ALLOW_THREADS
    st = vdna_image_mean_vectors(&arr, layout, (int64_t)n, pm, pn);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (st != VDNA_OK) {
        Py_DECREF(means);
        Py_DECREF(nans);
        return vdna_py_raise(st, ctx);
    }
    return Py_BuildValue("(NN)", means, nans);
}

static PyMethodDef accum_functions[] = {
    {"image_mean_vectors", (PyCFunction)(void (*)(void))py_image_mean_vectors, METH_VARARGS | METH_KEYWORDS,
     "image_mean_vectors(x, n_neurons, layout='channels') -> (means (N, C) float64, nan_counts (C,) int64): the "
     "per-image mean vectors that MomentAccumulator and CovAccumulator accumulate."},
    {NULL, NULL, 0, NULL},
};

/* ---------------------------------------------------------------- types */
static int init_type(PyTypeObject *t, const char *name, const char *doc, newfunc tp_new, PyMethodDef *methods,
                     PyGetSetDef *getset) {
    t->tp_name = name;
    t->tp_basicsize = sizeof(AccumObject);
    t->tp_flags = Py_TPFLAGS_DEFAULT;
    t->tp_doc = doc;
    t->tp_new = tp_new;
    t->tp_dealloc = (destructor)accum_dealloc;
    t->tp_repr = (reprfunc)accum_repr;
    t->tp_methods = methods;
    t->tp_getset = getset;
    return PyType_Ready(t);
}

int vdna_py_init_accum(PyObject *m) {
    struct {
        PyTypeObject *type;
        const char *qualname, *short_name, *doc;
        newfunc tp_new;
        PyMethodDef *methods;
        PyGetSetDef *getset;
    } types[] = {
        {&HistType, "vdna._core.HistAccumulator", "HistAccumulator",
         "HistAccumulator(mins, maxs, bins, layout='channels')\n\nPer-neuron histograms of activations "
         "normalised with the calibrated ranges (docs/design.md, 'Normative semantics'). NaN is counted, never binned.",
         hist_new, hist_methods, hist_getset},
        {&MomentType, "vdna._core.MomentAccumulator", "MomentAccumulator",
         "MomentAccumulator(n_neurons, layout='channels')\n\nPer-neuron mean and variance over images of "
         "per-image means (float64, mergeable).",
         moments_new, moments_methods, moments_getset},
        {&CovType, "vdna._core.CovAccumulator", "CovAccumulator",
         "CovAccumulator(n_neurons, layout='channels')\n\nLayer mean vector and covariance over images of "
         "per-image mean vectors (float64, shifted sums, mergeable).",
         cov_new, cov_methods, cov_getset},
        {&RangeType, "vdna._core.RangeAccumulator", "RangeAccumulator",
         "RangeAccumulator(n_neurons, layout='channels')\n\nPer-neuron min and max over every value (NaN "
         "skipped and counted).",
         ranges_new, ranges_methods, ranges_getset},
    };
    if (PyModule_AddFunctions(m, accum_functions) < 0) return -1;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (init_type(types[i].type, types[i].qualname, types[i].doc, types[i].tp_new, types[i].methods,
                      types[i].getset) < 0)
            return -1;
        Py_INCREF(types[i].type);
        if (PyModule_AddObject(m, types[i].short_name, (PyObject *)types[i].type) < 0) {
            Py_DECREF(types[i].type);
            return -1;
        }
    }
    return 0;
}

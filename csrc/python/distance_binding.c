/* distance_binding.c: vdna._core.emd / emd_many / nfd / fd / centred_nuclear_norms (argument
 * conversion and checks only; the mathematics is in csrc/core/emd.c and frechet.c). */
#include "binding.h" /* Python.h first: it sets the feature macros */

#include <stdio.h>

/* "(3, 4)" for an array's shape. */
static const char *shape_str(PyArrayObject *a, char *buf, size_t size) {
    int nd = PyArray_NDIM(a);
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < nd && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)PyArray_DIM(a, i));
    if (used < size) snprintf(buf + used, size - used, nd == 1 ? ",)" : ")");
    return buf;
}

static PyObject *dtype_name(PyArrayObject *a) { return PyObject_Str((PyObject *)PyArray_DESCR(a)); }

static PyArrayObject *type_error(PyArrayObject *raw, const char *func, const char *name, const char *expected) {
    PyObject *dn = dtype_name(raw);
    if (dn != NULL) PyErr_Format(PyExc_TypeError, "%s: %s must hold %s, got dtype %S", func, name, expected, dn);
    Py_XDECREF(dn);
    Py_DECREF(raw);
    return NULL;
}

static PyArrayObject *rank_error(PyArrayObject *raw, const char *func, const char *name, const char *expected) {
    char buf[160];
    PyErr_Format(PyExc_ValueError, "%s: %s must be a %s array, got shape %s", func, name, expected,
                 shape_str(raw, buf, sizeof buf));
    Py_DECREF(raw);
    return NULL;
}

/* np.asarray(obj) checked to have rank ndim (new reference, or NULL with an exception). */
static PyArrayObject *as_array(PyObject *obj, const char *func, const char *name, int ndim, const char *what) {
    PyArrayObject *raw = (PyArrayObject *)PyArray_FROM_O(obj);
    if (raw == NULL) return NULL;
    if (PyArray_NDIM(raw) != ndim) return rank_error(raw, func, name, what);
    return raw;
}

/* Counts as the core takes them, without a copy when they already are native int64 / float64:
 * signed and unsigned integers up to 32 bits -> int64 (exact); uint64 -> float64 (it may exceed
 * int64; rounding above 2^53 is far below any EMD resolution); floats -> float64. */
static PyArrayObject *counts_array(PyObject *obj, const char *func, const char *name, int ndim, const char *what) {
    PyArrayObject *raw = as_array(obj, func, name, ndim, what);
    if (raw == NULL) return NULL;
    PyArray_Descr *d = PyArray_DESCR(raw);
    int target;
    if (d->kind == 'i' || (d->kind == 'u' && PyArray_ITEMSIZE(raw) < 8)) {
        target = NPY_INT64;
    } else if (d->kind == 'u' || d->kind == 'f') {
        target = NPY_FLOAT64;
    } else {
        return type_error(raw, func, name, "histogram counts (an integer or float dtype)");
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny((PyObject *)raw, PyArray_DescrFromType(target), 0, 0,
                                                          NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED | NPY_ARRAY_FORCECAST,
                                                          NULL);
    Py_DECREF(raw);
    if (arr == NULL) return NULL;
    for (int i = 0; i < ndim; i++) { /* the core takes strides in elements */
        if (PyArray_STRIDE(arr, i) % (npy_intp)sizeof(double) != 0) {
            PyArrayObject *copy = (PyArrayObject *)PyArray_NewCopy(arr, NPY_CORDER);
            Py_DECREF(arr);
            return copy;
        }
    }
    return arr;
}

/* Counts view of a (C, B) array, or of the k-th (C, B) slice of a (K, C, B) array. */
static vdna_counts counts_view(PyArrayObject *a, npy_intp k) {
    int nd = PyArray_NDIM(a);
    vdna_counts c;
    c.data = PyArray_BYTES(a) + (nd == 3 ? k * PyArray_STRIDE(a, 0) : 0);
    c.type = PyArray_TYPE(a) == NPY_INT64 ? VDNA_COUNTS_I64 : VDNA_COUNTS_F64;
    c.row_stride = PyArray_STRIDE(a, nd - 2) / (npy_intp)sizeof(double);
    c.bin_stride = PyArray_STRIDE(a, nd - 1) / (npy_intp)sizeof(double);
    return c;
}

/* A C-contiguous native array of real numbers (integer or float input) converted to float64 or
 * int64 (`target`), of rank ndim. */
static PyArrayObject *real_array(PyObject *obj, const char *func, const char *name, int ndim, const char *what,
                                 int target) {
    PyArrayObject *raw = as_array(obj, func, name, ndim, what);
    if (raw == NULL) return NULL;
    char kind = PyArray_DESCR(raw)->kind;
    if (target == NPY_INT64 && kind != 'i' && kind != 'u') return type_error(raw, func, name, "integers");
    if (target == NPY_FLOAT64 && kind != 'i' && kind != 'u' && kind != 'f')
        return type_error(raw, func, name, "real numbers (an integer or float dtype)");
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)raw, PyArray_DescrFromType(target), 0, 0,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_NOTSWAPPED | NPY_ARRAY_FORCECAST, NULL);
    Py_DECREF(raw);
    return arr;
}

/* ---------------------------------------------------------------- emd */
static PyObject *py_emd(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o1, *o2;
    if (!PyArg_ParseTuple(args, "OO:emd", &o1, &o2)) return NULL;
    PyArrayObject *h1 = NULL, *h2 = NULL, *out = NULL;
    h1 = counts_array(o1, "emd", "h1", 2, "2-D (neurons, bins)");
    if (h1 == NULL) goto fail;
    h2 = counts_array(o2, "emd", "h2", 2, "2-D (neurons, bins)");
    if (h2 == NULL) goto fail;
    if (!PyArray_SAMESHAPE(h1, h2)) {
        char b1[160], b2[160];
        PyErr_Format(PyExc_ValueError, "emd: h1 and h2 must have the same (neurons, bins) shape, got %s and %s",
                     shape_str(h1, b1, sizeof b1), shape_str(h2, b2, sizeof b2));
        goto fail;
    }
    npy_intp n = PyArray_DIM(h1, 0), bins = PyArray_DIM(h1, 1);
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (out == NULL) goto fail;
    vdna_counts c1 = counts_view(h1, 0), c2 = counts_view(h2, 0);
    vdna_status s;
    Py_BEGIN_ALLOW_THREADS
    s = vdna_emd(&c1, &c2, n, bins, (double *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (s != VDNA_OK) {
        vdna_py_raise(s, "emd");
        goto fail;
    }
    Py_DECREF(h1);
    Py_DECREF(h2);
    return (PyObject *)out;
fail:
    Py_XDECREF(h1);
    Py_XDECREF(h2);
    Py_XDECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- emd_many */
static PyObject *py_emd_many(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"reference", "candidates", "index", "weights", NULL};
    PyObject *o_ref, *o_cand, *o_index = Py_None, *o_weights = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OO:emd_many", kwlist, &o_ref, &o_cand, &o_index, &o_weights))
        return NULL;
    const char *fn = "emd_many";
    PyArrayObject *ref = NULL, *stack = NULL, *index = NULL, *weights = NULL, *out = NULL;
    PyArrayObject **parts = NULL; /* candidates given as a sequence */
    vdna_counts *views = NULL;
    npy_intp n_cand = 0;
    char b1[160], b2[160];

    ref = counts_array(o_ref, fn, "reference", 2, "2-D (neurons, bins)");
    if (ref == NULL) goto fail;
    npy_intp n_neurons = PyArray_DIM(ref, 0), n_bins = PyArray_DIM(ref, 1);

    if (PyList_Check(o_cand) || PyTuple_Check(o_cand)) {
        n_cand = PySequence_Size(o_cand);
        parts = PyMem_Calloc((size_t)(n_cand > 0 ? n_cand : 1), sizeof *parts);
        if (parts == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (npy_intp k = 0; k < n_cand; k++) {
            char name[48];
            snprintf(name, sizeof name, "candidates[%lld]", (long long)k);
            parts[k] = counts_array(PySequence_Fast_GET_ITEM(o_cand, k), fn, name, 2, "2-D (neurons, bins)");
            if (parts[k] == NULL) goto fail;
            if (!PyArray_SAMESHAPE(parts[k], ref)) {
                PyErr_Format(PyExc_ValueError, "%s: %s has shape %s but reference has shape %s", fn, name,
                             shape_str(parts[k], b1, sizeof b1), shape_str(ref, b2, sizeof b2));
                goto fail;
            }
        }
    } else {
        stack = counts_array(o_cand, fn, "candidates", 3, "3-D (candidates, neurons, bins)");
        if (stack == NULL) goto fail;
        if (PyArray_DIM(stack, 1) != n_neurons || PyArray_DIM(stack, 2) != n_bins) {
            PyErr_Format(PyExc_ValueError, "%s: candidates has shape %s but reference has shape %s", fn,
                         shape_str(stack, b1, sizeof b1), shape_str(ref, b2, sizeof b2));
            goto fail;
        }
        n_cand = PyArray_DIM(stack, 0);
    }
    views = PyMem_Calloc((size_t)(n_cand > 0 ? n_cand : 1), sizeof *views);
    if (views == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (npy_intp k = 0; k < n_cand; k++) views[k] = stack ? counts_view(stack, k) : counts_view(parts[k], 0);

    npy_intp n_sel = n_neurons;
    if (o_index != Py_None) {
        index = real_array(o_index, fn, "index", 1, "1-D", NPY_INT64);
        if (index == NULL) goto fail;
        n_sel = PyArray_DIM(index, 0);
    }
    if (o_weights != Py_None) {
        weights = real_array(o_weights, fn, "weights", 1, "1-D", NPY_FLOAT64);
        if (weights == NULL) goto fail;
        if (PyArray_DIM(weights, 0) != n_sel) {
            PyErr_Format(PyExc_ValueError, "%s: weights has %lld values but the selection has %lld neurons", fn,
                         (long long)PyArray_DIM(weights, 0), (long long)n_sel);
            goto fail;
        }
    }
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n_cand, NPY_FLOAT64);
    if (out == NULL) goto fail;
    vdna_counts ref_view = counts_view(ref, 0);
    const int64_t *idx = index ? (const int64_t *)PyArray_DATA(index) : NULL;
    const double *w = weights ? (const double *)PyArray_DATA(weights) : NULL;
    vdna_status s;
    Py_BEGIN_ALLOW_THREADS
    s = vdna_emd_many(&ref_view, views, n_cand, n_neurons, n_bins, idx, n_sel, w, (double *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (s != VDNA_OK) {
        vdna_py_raise(s, fn);
        goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    for (npy_intp k = 0; parts != NULL && k < n_cand; k++) Py_XDECREF(parts[k]); /* calloc'ed */
    PyMem_Free(parts);
    PyMem_Free(views);
    Py_XDECREF(ref);
    Py_XDECREF(stack);
    Py_XDECREF(index);
    Py_XDECREF(weights);
    return (PyObject *)out;
}

/* ---------------------------------------------------------------- nfd / fd */
static PyObject *py_nfd(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[4];
    static const char *names[4] = {"mu1", "var1", "mu2", "var2"};
    if (!PyArg_ParseTuple(args, "OOOO:nfd", &o[0], &o[1], &o[2], &o[3])) return NULL;
    PyArrayObject *a[4] = {NULL, NULL, NULL, NULL}, *out = NULL;
    for (int i = 0; i < 4; i++) {
        a[i] = real_array(o[i], "nfd", names[i], 1, "1-D (neurons,)", NPY_FLOAT64);
        if (a[i] == NULL) goto fail;
        if (PyArray_DIM(a[i], 0) != PyArray_DIM(a[0], 0)) {
            PyErr_Format(PyExc_ValueError, "nfd: %s has %lld neurons but mu1 has %lld", names[i],
                         (long long)PyArray_DIM(a[i], 0), (long long)PyArray_DIM(a[0], 0));
            goto fail;
        }
    }
    npy_intp n = PyArray_DIM(a[0], 0);
    out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (out == NULL) goto fail;
    vdna_status s;
    Py_BEGIN_ALLOW_THREADS
    s = vdna_nfd((const double *)PyArray_DATA(a[0]), (const double *)PyArray_DATA(a[1]),
                 (const double *)PyArray_DATA(a[2]), (const double *)PyArray_DATA(a[3]), n,
                 (double *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (s != VDNA_OK) {
        vdna_py_raise(s, "nfd");
        goto fail;
    }
    for (int i = 0; i < 4; i++) Py_DECREF(a[i]);
    return (PyObject *)out;
fail:
    for (int i = 0; i < 4; i++) Py_XDECREF(a[i]);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *py_fd(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[4];
    static const char *names[4] = {"mu1", "sigma1", "mu2", "sigma2"};
    if (!PyArg_ParseTuple(args, "OOOO:fd", &o[0], &o[1], &o[2], &o[3])) return NULL;
    PyArrayObject *a[4] = {NULL, NULL, NULL, NULL};
    PyObject *result = NULL;
    for (int i = 0; i < 4; i++) {
        int is_sigma = i % 2;
        a[i] = real_array(o[i], "fd", names[i], is_sigma ? 2 : 1, is_sigma ? "2-D (d, d)" : "1-D (d,)", NPY_FLOAT64);
        if (a[i] == NULL) goto done;
    }
    npy_intp d = PyArray_DIM(a[0], 0);
    for (int i = 1; i < 4; i++) {
        int is_sigma = i % 2;
        if (PyArray_DIM(a[i], 0) != d || (is_sigma && PyArray_DIM(a[i], 1) != d)) {
            char b[160];
            PyErr_Format(PyExc_ValueError, "fd: mu1 has shape (%lld,) so %s must have shape %s, got %s", (long long)d,
                         names[i], is_sigma ? "(d, d)" : "(d,)", shape_str(a[i], b, sizeof b));
            goto done;
        }
    }
    double value = 0.0;
    vdna_status s;
    Py_BEGIN_ALLOW_THREADS
    s = vdna_fd(d, (const double *)PyArray_DATA(a[0]), (const double *)PyArray_DATA(a[1]),
                (const double *)PyArray_DATA(a[2]), (const double *)PyArray_DATA(a[3]), &value);
    Py_END_ALLOW_THREADS
    if (s != VDNA_OK) {
        vdna_py_raise(s, "fd");
        goto done;
    }
    result = PyFloat_FromDouble(value);
done:
    for (int i = 0; i < 4; i++) Py_XDECREF(a[i]);
    return result;
}

/* ---------------------------------------------------------------- centred_nuclear_norms */
static PyObject *py_centred_nuclear_norms(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o_points, *o_offsets, *o_index;
    const char *fn = "centred_nuclear_norms";
    if (!PyArg_ParseTuple(args, "OOO:centred_nuclear_norms", &o_points, &o_offsets, &o_index)) return NULL;
    PyArrayObject *points = NULL, *offsets = NULL, *index = NULL, *out = NULL;
    points = real_array(o_points, fn, "points", 2, "2-D (points, dimension)", NPY_FLOAT64);
    if (points == NULL) goto fail;
    offsets = real_array(o_offsets, fn, "offsets", 1, "1-D (subsets + 1,)", NPY_INT64);
    if (offsets == NULL) goto fail;
    index = real_array(o_index, fn, "index", 1, "1-D", NPY_INT64);
    if (index == NULL) goto fail;
    npy_intp n_sub = PyArray_DIM(offsets, 0) - 1;
    if (n_sub < 0) {
        PyErr_Format(PyExc_ValueError, "%s: offsets must hold at least one value (0)", fn);
        goto fail;
    }
    const int64_t *off = (const int64_t *)PyArray_DATA(offsets);
    if (off[n_sub] != (int64_t)PyArray_DIM(index, 0)) {
        PyErr_Format(PyExc_ValueError, "%s: offsets end at %lld but index has %lld entries", fn, (long long)off[n_sub],
                     (long long)PyArray_DIM(index, 0));
        goto fail;
    }
    out = (PyArrayObject *)PyArray_ZEROS(1, &n_sub, NPY_FLOAT64, 0);
    if (out == NULL) goto fail;
    vdna_status s;
    Py_BEGIN_ALLOW_THREADS
    s = vdna_centred_nuclear_norms(PyArray_DIM(points, 0), PyArray_DIM(points, 1), (const double *)PyArray_DATA(points),
                                   n_sub, off, (const int64_t *)PyArray_DATA(index), (double *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (s != VDNA_OK) {
        vdna_py_raise(s, fn);
        goto fail;
    }
    Py_DECREF(points);
    Py_DECREF(offsets);
    Py_DECREF(index);
    return (PyObject *)out;
fail:
    Py_XDECREF(points);
    Py_XDECREF(offsets);
    Py_XDECREF(index);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef distance_methods[] = {
    {"emd", (PyCFunction)py_emd, METH_VARARGS,
     "emd(h1, h2) -> float64 ndarray (C,)\n\n"
     "Per-neuron Earth Mover's Distance (unit: bins) between two (C, B) count arrays (any integer or\n"
     "float dtype): each row normalised to sum 1, then the sum over bins of |CDF1 - CDF2|.\n"
     "A row with zero total gives NaN; negative or non-finite counts raise ValueError."},
    {"emd_many", (PyCFunction)(void (*)(void))py_emd_many, METH_VARARGS | METH_KEYWORDS,
     "emd_many(reference, candidates, index=None, weights=None) -> float64 ndarray (K,)\n\n"
     "EMD of one (C, B) reference against K candidates ((K, C, B) array or a sequence of (C, B)\n"
     "arrays), aggregated per candidate over the neurons in `index` (default: all): the mean, or\n"
     "sum_j weights[j] * EMD(index[j]) when weights (finite, >= 0, one per selected neuron) is given.\n"
     "Results do not depend on the number of threads."},
    {"nfd", (PyCFunction)py_nfd, METH_VARARGS,
     "nfd(mu1, var1, mu2, var2) -> float64 ndarray (C,)\n\n"
     "Per-neuron Frechet distance (mu1-mu2)^2 + v1 + v2 - 2 sqrt(v1 v2) of 1-D Gaussians.\n"
     "Negative variances raise ValueError; NaN propagates to its neuron."},
    {"fd", (PyCFunction)py_fd, METH_VARARGS,
     "fd(mu1, sigma1, mu2, sigma2) -> float\n\n"
     "Frechet distance of two Gaussians (mu (d,), sigma (d, d)) by symmetric eigendecompositions\n"
     "(valid for singular covariances). Non-finite input raises ValueError."},
    {"centred_nuclear_norms", (PyCFunction)py_centred_nuclear_norms, METH_VARARGS,
     "centred_nuclear_norms(points, offsets, index) -> float64 ndarray (S,)\n\n"
     "Nuclear norm (sum of singular values) of each subset of the rows of points (n, r), centred on\n"
     "the subset's mean: subset s is points[index[offsets[s]:offsets[s+1]]]. Fewer than 2 points give 0.\n"
     "Subsets run on vdna's threads (the core's BLAS held to one thread meanwhile); results do not\n"
     "depend on the thread count. Non-finite points or indices outside [0, n) raise ValueError."},
    {NULL, NULL, 0, NULL},
};

int vdna_py_init_distance(PyObject *m) { return PyModule_AddFunctions(m, distance_methods); }

/* module.c: the vdna._core extension module (binding only: no mathematics here). */
#define VDNA_BINDING_MAIN
#include "binding.h"

PyObject *vdna_py_raise(vdna_status s, const char *context) {
    PyObject *type;
    switch (s) {
        case VDNA_ERR_DTYPE: type = PyExc_TypeError; break;
        case VDNA_ERR_NOMEM: type = PyExc_MemoryError; break;
        case VDNA_ERR_LAPACK:
        case VDNA_ERR_THREAD: type = PyExc_RuntimeError; break;
        default: type = PyExc_ValueError; break;
    }
    const char *detail = vdna_last_error();
    if (detail == NULL || detail[0] == '\0') detail = vdna_status_name(s);
    PyErr_Format(type, "%s: %s", context, detail);
    return NULL;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: n must be >= 0 (0 = one per CPU), got %ld", n);
        return NULL;
    }
    vdna_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(vdna_get_num_threads());
}

static PyObject *py_set_hist_kernel(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    vdna_status st = vdna_hist_set_kernel(name);
    if (st != VDNA_OK) return vdna_py_raise(st, "set_hist_kernel");
    Py_RETURN_NONE;
}

static PyObject *py_hist_kernel(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    const char *name;
    Py_BEGIN_ALLOW_THREADS
    name = vdna_hist_kernel(); /* "auto" measures once: about a millisecond */
    Py_END_ALLOW_THREADS
    if (name == NULL) return vdna_py_raise(VDNA_ERR_ARG, "hist_kernel");
    return PyUnicode_FromString(name);
}

static PyObject *py_hist_kernel_available(PyObject *self, PyObject *arg) {
    (void)self;
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    return PyBool_FromLong(vdna_hist_kernel_available(name));
}

static PyMethodDef module_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n): worker threads of the core (0 = one per CPU)."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"set_hist_kernel", py_set_hist_kernel, METH_O,
     "set_hist_kernel(name): kernel of the float32 histogram loops, 'auto', 'portable', 'avx2' or 'avx512' "
     "(same counts, different speed; overrides $VDNA_HIST_KERNEL). ValueError if this CPU does not run it."},
    {"hist_kernel", py_hist_kernel, METH_NOARGS,
     "hist_kernel() -> str: the kernel float32 histogram updates use ('auto' resolved: measured once per process)."},
    {"hist_kernel_available", py_hist_kernel_available, METH_O,
     "hist_kernel_available(name) -> bool: whether set_hist_kernel(name) would succeed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "vdna._core", "The vdna C core (accumulators and distances).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "CORE_VERSION_MAJOR", VDNA_CORE_VERSION_MAJOR) < 0 ||
        vdna_py_init_accum(m) < 0 || vdna_py_init_distance(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

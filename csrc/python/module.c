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

static PyMethodDef module_methods[] = {
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n): worker threads of the core (0 = one per CPU)."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
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

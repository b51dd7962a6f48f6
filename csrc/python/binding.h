/* binding.h: shared declarations of the vdna._core binding's translation units. */
#ifndef VDNA_BINDING_H
#define VDNA_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifndef VDNA_BINDING_MAIN
#define NO_IMPORT_ARRAY
#endif
#define PY_ARRAY_UNIQUE_SYMBOL vdna_ARRAY_API
#include <numpy/arrayobject.h>

#include "vdna_core.h"

/* Raise the Python exception that fits a core status, with the core's detailed message,
 * prefixed by `context` (e.g. "HistAccumulator.update"). Returns NULL. */
PyObject *vdna_py_raise(vdna_status s, const char *context);

/* Each binding unit registers its types and functions on the module; return 0 or -1. */
int vdna_py_init_accum(PyObject *m);    /* accum_binding.c */
int vdna_py_init_distance(PyObject *m); /* distance_binding.c */

#endif

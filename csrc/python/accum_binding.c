/* accum_binding.c: Python types/functions for the core's accum API. (stub, being written) */
#include "binding.h"

int vdna_py_init_accum(PyObject *m) {
    (void)m;
    return 0;
}

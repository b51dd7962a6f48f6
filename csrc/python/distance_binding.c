/* distance_binding.c: Python types/functions for the core's distance API. (stub, being written) */
#include "binding.h"

int vdna_py_init_distance(PyObject *m) {
    (void)m;
    return 0;
}

/* vdna_core.h: the C core of vdna (plain C11, no Python, no torch).
 *
 * Accumulators for Visual DNAs (histograms, moments, covariance, activation ranges) and the
 * distances between them. Semantics are those of docs/design.md ("Normative semantics").
 *
 * Conventions
 * - Every function returns vdna_status (VDNA_OK == 0 on success) or a value; nothing prints,
 *   nothing aborts. vdna_status_name() turns a code into a short name; functions that can fail
 *   with a detailed reason write it to the thread-local buffer read by vdna_last_error().
 * - Objects are opaque, created by *_create and released by *_free (free(NULL) is a no-op).
 *   One object must not be updated from two threads at once; distinct objects are independent.
 *   Reading out (counts, mean, ...) may happen from several threads at once.
 * - Arrays are described by vdna_array: a data pointer, a dtype, a rank, a shape and strides in
 *   ELEMENTS (not bytes); any strides are accepted, including negative ones.
 */
#ifndef VDNA_CORE_H
#define VDNA_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VDNA_CORE_VERSION_MAJOR 1
#define VDNA_CORE_VERSION_MINOR 1

/* ---------------------------------------------------------------- status codes */
typedef enum {
    VDNA_OK = 0,
    VDNA_ERR_ARG = 1,        /* an invalid argument: NULL, out of range, inconsistent sizes */
    VDNA_ERR_SHAPE = 2,      /* an array's rank or shape does not fit the accumulator */
    VDNA_ERR_DTYPE = 3,      /* an unsupported element type */
    VDNA_ERR_NOMEM = 4,      /* an allocation failed */
    VDNA_ERR_MISMATCH = 5,   /* two objects that must agree (merge, distance) do not */
    VDNA_ERR_RANGE = 6,      /* activation ranges that are not finite or have min > max */
    VDNA_ERR_LAPACK = 7,     /* the linear-algebra back end reported a failure */
    VDNA_ERR_EMPTY = 8,      /* a result was asked of an accumulation with no images */
    VDNA_ERR_THREAD = 9      /* reserved, not returned: a worker thread that cannot be started
                              * has its share of the work done by the calling thread */
} vdna_status;

/* Short, static name of a status code ("ok", "invalid argument", ...). */
const char *vdna_status_name(vdna_status s);

/* Detailed message of the last failure in this thread ("" when none). Valid until the next call
 * into the core from the same thread. */
const char *vdna_last_error(void);

/* ---------------------------------------------------------------- arrays */
typedef enum { VDNA_F16 = 0, VDNA_F32 = 1, VDNA_F64 = 2 } vdna_dtype;

/* Layout of a layer's activations (docs/design.md, "Normative semantics"):
 * CHANNELS: (N, C, *spatial), C neurons, prod(spatial) samples per image (rank >= 2);
 * TOKENS:   (N, T, C), C neurons, T samples per image (rank == 3). */
typedef enum { VDNA_LAYOUT_CHANNELS = 0, VDNA_LAYOUT_TOKENS = 1 } vdna_layout;

#define VDNA_MAX_RANK 8
typedef struct {
    const void *data;
    vdna_dtype dtype;
    int ndim;
    int64_t shape[VDNA_MAX_RANK];
    int64_t strides[VDNA_MAX_RANK]; /* in elements */
} vdna_array;

/* ---------------------------------------------------------------- threads */
/* Number of worker threads the core may use (0 = one per online CPU, the default).
 * Results never depend on it, nor on whether the threads could be started (see VDNA_ERR_THREAD). */
void vdna_set_num_threads(int n);
int vdna_get_num_threads(void);

/* The accumulator and distance APIs are declared in the two headers below. */
#include "vdna_accum.h"
#include "vdna_distance.h"

#ifdef __cplusplus
}
#endif
#endif /* VDNA_CORE_H */

/* internal.h: helpers shared by the core's translation units. Not part of the public API. */
#ifndef VDNA_INTERNAL_H
#define VDNA_INTERNAL_H

#include "vdna_core.h"

/* Record a detailed message for vdna_last_error() (printf-style) and return `code`. */
vdna_status vdna_fail(vdna_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clear the thread's last error message (called at the start of public entry points). */
void vdna_clear_error(void);

/* set_state helpers: check that nan_counts (n entries, NULL = all zero) are >= 0, naming `what`
 * in the error; then copy them (zeros for NULL). */
vdna_status vdna_check_nan_counts(const int64_t *nan_counts, int64_t n, const char *what);
void vdna_copy_nan_counts(int64_t *dst, const int64_t *nan_counts, int64_t n);

/* Run fn(ctx, begin, end) over [0, n_items) split into contiguous chunks, on up to
 * vdna_get_num_threads() threads (the calling thread takes a share). Chunks are deterministic
 * given n_items and min_chunk; results must not depend on how many threads ran them. A worker
 * thread that cannot be started (pthread_create fails, e.g. at a process or container thread
 * limit) has its chunk run by the calling thread: slower, same results. Returns VDNA_OK, or
 * VDNA_ERR_NOMEM (then nothing ran). */
typedef void (*vdna_range_fn)(void *ctx, int64_t begin, int64_t end);
vdna_status vdna_parallel_for(int64_t n_items, int64_t min_chunk, vdna_range_fn fn, void *ctx);

/* hist_portable.c -> subset.c: bins (NaN -> bins) of n unit-stride float32 (vf) or float64 (vd)
 * values of neuron c, exactly as vdna_hist_update bins them. idx has n entries. */
struct vdna_hist_s;
void vdna_hist_bin_block(const struct vdna_hist_s *h, int64_t c, const float *vf, const double *vd, int64_t n,
                         int32_t *idx);

/* An IEEE binary16 value (bits) as double, exactly. */
double vdna_half_to_double(uint16_t h);

/* ---------------------------------------------------------------- BLAS / LAPACK
 * The provider is chosen at build time. With VDNA_BLAS_SCIPY_OPENBLAS the symbols are the
 * prefixed ones of the scipy-openblas32 wheel (32-bit integers); otherwise plain Fortran names
 * of any reference-compatible BLAS/LAPACK (e.g. -lopenblas or -llapack -lblas). */
#if defined(VDNA_BLAS_SCIPY_OPENBLAS)
#define VDNA_F77(name) scipy_##name##_
#else
#define VDNA_F77(name) name##_
#endif
typedef int vdna_blas_int;

void VDNA_F77(dsyrk)(const char *uplo, const char *trans, const vdna_blas_int *n, const vdna_blas_int *k,
                     const double *alpha, const double *a, const vdna_blas_int *lda, const double *beta,
                     double *c, const vdna_blas_int *ldc);
void VDNA_F77(dgemm)(const char *transa, const char *transb, const vdna_blas_int *m, const vdna_blas_int *n,
                     const vdna_blas_int *k, const double *alpha, const double *a, const vdna_blas_int *lda,
                     const double *b, const vdna_blas_int *ldb, const double *beta, double *c,
                     const vdna_blas_int *ldc);
void VDNA_F77(dsyevd)(const char *jobz, const char *uplo, const vdna_blas_int *n, double *a,
                      const vdna_blas_int *lda, double *w, double *work, const vdna_blas_int *lwork,
                      vdna_blas_int *iwork, const vdna_blas_int *liwork, vdna_blas_int *info);

#endif

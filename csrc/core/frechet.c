/* frechet.c: Frechet distances between Gaussians: per neuron (NFD) and per layer (FD). */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* BLAS / LAPACK routines used only here (same provider and symbol convention as internal.h). */
void VDNA_F77(dpotrf)(const char *uplo, const vdna_blas_int *n, double *a, const vdna_blas_int *lda,
                      vdna_blas_int *info);
void VDNA_F77(dtrmm)(const char *side, const char *uplo, const char *transa, const char *diag, const vdna_blas_int *m,
                     const vdna_blas_int *n, const double *alpha, const double *a, const vdna_blas_int *lda, double *b,
                     const vdna_blas_int *ldb);

vdna_status vdna_nfd(const double *mu1, const double *var1, const double *mu2, const double *var2, int64_t n,
                     double *out) {
    vdna_clear_error();
    if (n < 0 || (n > 0 && (mu1 == NULL || var1 == NULL || mu2 == NULL || var2 == NULL || out == NULL)))
        return vdna_fail(VDNA_ERR_ARG, "nfd: NULL array or negative length");
    for (int64_t i = 0; i < n; i++) {
        if (var1[i] < 0.0 || var2[i] < 0.0)
            return vdna_fail(VDNA_ERR_ARG, "nfd: negative variance at neuron %lld (var1 = %g, var2 = %g)",
                             (long long)i, var1[i], var2[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        double dm = mu1[i] - mu2[i];
        double ds = sqrt(var1[i]) - sqrt(var2[i]); /* v1 + v2 - 2 sqrt(v1 v2) without cancellation */
        out[i] = dm * dm + ds * ds;
    }
    return VDNA_OK;
}

/* First non-finite element of a[0..n), or -1. */
static int64_t first_nonfinite(const double *a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return i;
    return -1;
}

/* dst = (src + src^T) / 2 for a d x d matrix (exact when src is already symmetric). */
static void symmetric_part(const double *src, double *dst, int64_t d) {
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = 0; j <= i; j++) {
            double v = 0.5 * src[i * d + j] + 0.5 * src[j * d + i];
            dst[i * d + j] = v;
            dst[j * d + i] = v;
        }
    }
}

/* Eigenvalues (ascending, into w) and, for jobz 'V', eigenvectors (into a, column-major) of the
 * symmetric n x n matrix a (lower triangle read), by dsyevd with its own workspace. */
static vdna_status syevd(char jobz, vdna_blas_int n, double *a, double *w, const char *what) {
    const char uplo = 'L';
    double wq = 0.0;
    vdna_blas_int iwq = 0, info = 0, query = -1;
    VDNA_F77(dsyevd)(&jobz, &uplo, &n, a, &n, w, &wq, &query, &iwq, &query, &info);
    if (info != 0) return vdna_fail(VDNA_ERR_LAPACK, "fd: dsyevd workspace query failed (info = %d)", (int)info);
    if (!(wq < (double)INT_MAX)) return vdna_fail(VDNA_ERR_ARG, "fd: dimension %d too large for LAPACK", (int)n);
    vdna_blas_int lwork = (vdna_blas_int)wq + 1, liwork = iwq > 1 ? iwq : 1;
    double *work = malloc((size_t)lwork * sizeof(double));
    vdna_blas_int *iwork = malloc((size_t)liwork * sizeof(vdna_blas_int));
    vdna_status s = VDNA_OK;
    if (work == NULL || iwork == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the eigensolver workspace (n = %d)", (int)n);
    } else {
        VDNA_F77(dsyevd)(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info);
        if (info != 0) s = vdna_fail(VDNA_ERR_LAPACK, "fd: dsyevd failed on %s (info = %d)", what, (int)info);
    }
    free(work);
    free(iwork);
    return s;
}

/* Numerical-rank tolerance of a symmetric n x n matrix with largest eigenvalue lmax: eigenvalues
 * at or below it are rounding noise (the convention of numpy.linalg.matrix_rank). Clipping them,
 * not only the negative ones, matters: sqrt turns noise of size eps into sqrt(eps), and a
 * rank-deficient covariance has thousands of such eigenvalues. */
static double rank_tolerance(vdna_blas_int n, double lmax) { return lmax > 0.0 ? (double)n * DBL_EPSILON * lmax : 0.0; }

/* M = B^T S2 B (r x r, into m) where S1 ~ B B^T; returns r, or -1 on failure (message set).
 * Positive-definite S1 (the usual case): B = L from the Cholesky factor S1 = L L^T, two in-place
 * triangular products (3x cheaper than an eigendecomposition with vectors).
 * Otherwise: S1 = V diag(w) V^T, B = V diag(sqrt w) over the eigenvalues above the rank tolerance
 * (negative ones clipped), so M has S1^(1/2) S2 S1^(1/2)'s nonzero eigenvalues.
 * Either way the eigenvalues of M are those of S1^(1/2) S2 S1^(1/2) (similar matrices). */
static vdna_blas_int similar_product(vdna_blas_int n, const double *sigma1, double *s2_to_m, vdna_status *status) {
    const char left = 'L', right = 'R', lower = 'L', no_t = 'N', tr = 'T', non_unit = 'N';
    const double one = 1.0, zero = 0.0;
    size_t dd = (size_t)n * (size_t)n;
    double *a = malloc(dd * sizeof(double));
    double *w = NULL, *t = NULL;
    vdna_blas_int r = -1, info = 0;
    if (a == NULL) {
        *status = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate a %d x %d matrix", (int)n, (int)n);
        goto done;
    }
    symmetric_part(sigma1, a, n);
    VDNA_F77(dpotrf)(&lower, &n, a, &n, &info);
    if (info == 0) { /* a's lower triangle is L (column-major); dtrmm reads only that triangle */
        VDNA_F77(dtrmm)(&right, &lower, &no_t, &non_unit, &n, &n, &one, a, &n, s2_to_m, &n);  /* S2 L */
        VDNA_F77(dtrmm)(&left, &lower, &tr, &non_unit, &n, &n, &one, a, &n, s2_to_m, &n);     /* L^T S2 L */
        r = n;
        goto done;
    }
    if (info < 0) {
        *status = vdna_fail(VDNA_ERR_LAPACK, "fd: dpotrf rejected argument %d", (int)-info);
        goto done;
    }
    symmetric_part(sigma1, a, n); /* dpotrf stopped part-way: start again from S1 */
    w = malloc((size_t)n * sizeof(double));
    if (w == NULL) {
        *status = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate %d eigenvalues", (int)n);
        goto done;
    }
    if ((*status = syevd('V', n, a, w, "sigma1")) != VDNA_OK) goto done;
    double tol = rank_tolerance(n, w[n - 1]);
    vdna_blas_int first = 0;
    while (first < n && !(w[first] > tol)) first++; /* ascending: the kept ones are the last */
    r = n - first;
    double *b = a + (size_t)first * (size_t)n; /* column j of a starts at a + j*n */
    for (vdna_blas_int j = 0; j < r; j++) {
        double sj = sqrt(w[first + j]);
        for (vdna_blas_int i = 0; i < n; i++) b[(size_t)j * (size_t)n + (size_t)i] *= sj;
    }
    if (r == 0) goto done;
    t = malloc((size_t)n * (size_t)r * sizeof(double));
    if (t == NULL) {
        *status = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate a %d x %d matrix", (int)n, (int)r);
        r = -1;
        goto done;
    }
    VDNA_F77(dgemm)(&no_t, &no_t, &n, &r, &n, &one, s2_to_m, &n, b, &n, &zero, t, &n);  /* S2 B (n x r) */
    VDNA_F77(dgemm)(&tr, &no_t, &r, &r, &n, &one, b, &n, t, &n, &zero, s2_to_m, &r);   /* B^T S2 B */
done:
    free(a);
    free(w);
    free(t);
    return r;
}

vdna_status vdna_fd(int64_t d, const double *mu1, const double *sigma1, const double *mu2, const double *sigma2,
                    double *out) {
    vdna_clear_error();
    if (out == NULL || d < 0 || (d > 0 && (mu1 == NULL || sigma1 == NULL || mu2 == NULL || sigma2 == NULL)))
        return vdna_fail(VDNA_ERR_ARG, "fd: NULL array or negative dimension");
    if (d > 46340) /* d * d must fit LAPACK's 32-bit integers */
        return vdna_fail(VDNA_ERR_ARG, "fd: dimension %lld is too large (at most 46340)", (long long)d);
    const struct {
        const double *a;
        int64_t n;
        const char *name;
    } inputs[] = {{mu1, d, "mu1"}, {sigma1, d * d, "sigma1"}, {mu2, d, "mu2"}, {sigma2, d * d, "sigma2"}};
    for (int i = 0; i < 4; i++) {
        int64_t bad = first_nonfinite(inputs[i].a, inputs[i].n);
        if (bad >= 0)
            return vdna_fail(VDNA_ERR_ARG, "fd: %s has a non-finite value at flat index %lld (%g)", inputs[i].name,
                             (long long)bad, inputs[i].a[bad]);
    }
    *out = 0.0;
    if (d == 0) return VDNA_OK;

    double mean_term = 0.0, trace1 = 0.0, trace2 = 0.0;
    for (int64_t i = 0; i < d; i++) {
        double dm = mu1[i] - mu2[i];
        mean_term += dm * dm;
        trace1 += sigma1[i * d + i];
        trace2 += sigma2[i * d + i];
    }

    const vdna_blas_int n = (vdna_blas_int)d;
    vdna_status s = VDNA_OK;
    double *m = malloc((size_t)d * (size_t)d * sizeof(double)); /* S2, then M */
    double *lambda = malloc((size_t)d * sizeof(double));
    if (m == NULL || lambda == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the workspace for dimension %lld", (long long)d);
        goto done;
    }
    symmetric_part(sigma2, m, d);
    vdna_blas_int r = similar_product(n, sigma1, m, &s);
    if (r < 0) goto done;
    double sum_sqrt = 0.0;
    if (r > 0) {
        for (vdna_blas_int i = 0; i < r; i++) { /* remove the rounding asymmetry of the products */
            for (vdna_blas_int j = 0; j < i; j++) {
                double v = 0.5 * m[(size_t)i * r + j] + 0.5 * m[(size_t)j * r + i];
                m[(size_t)i * r + j] = v;
                m[(size_t)j * r + i] = v;
            }
        }
        if ((s = syevd('N', r, m, lambda, "S1^(1/2) S2 S1^(1/2)")) != VDNA_OK) goto done;
        double tol = rank_tolerance(r, lambda[r - 1]);
        for (vdna_blas_int i = 0; i < r; i++) /* ascending: small terms first */
            if (lambda[i] > tol) sum_sqrt += sqrt(lambda[i]);
    }
    *out = mean_term + trace1 + trace2 - 2.0 * sum_sqrt;
done:
    free(m);
    free(lambda);
    return s;
}

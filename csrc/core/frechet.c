/* frechet.c: Frechet distances between Gaussians: per neuron (NFD) and per layer (FD).
 *
 * FD's trace term tr sqrt(S1^(1/2) S2 S1^(1/2)) is the nuclear norm of F1^T F2 for any factors
 * Si = Fi Fi^T (the squared singular values of F1^T F2 are the eigenvalues of F2^T S1 F2, which
 * has the nonzero eigenvalues of S1^(1/2) S2 S1^(1/2)). So: factor each covariance (factorize:
 * pivoted Cholesky, or scaled eigenvectors when singular), multiply the factors (one triangular
 * product) and sum the product's singular values (singular_value_sum). Unlike an eigendecomposition
 * of S1^(1/2) S2 S1^(1/2), whose condition number is about the square of the covariances' (its
 * small eigenvalues are lost to rounding of size eps lambda_max, which the square root turns into
 * sqrt(eps)), every step works at the covariances' own condition number and is backward stable.
 * Accuracy contract and its derivation: docs/design.md, "The Frechet distance". */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* BLAS / LAPACK routines used only here (same provider and symbol convention as internal.h). */
void VDNA_F77(dpstrf)(const char *uplo, const vdna_blas_int *n, double *a, const vdna_blas_int *lda,
                      vdna_blas_int *piv, vdna_blas_int *rank, const double *tol, double *work, vdna_blas_int *info);
void VDNA_F77(dtrmm)(const char *side, const char *uplo, const char *transa, const char *diag, const vdna_blas_int *m,
                     const vdna_blas_int *n, const double *alpha, const double *a, const vdna_blas_int *lda, double *b,
                     const vdna_blas_int *ldb);
void VDNA_F77(dgesdd)(const char *jobz, const vdna_blas_int *m, const vdna_blas_int *n, double *a,
                      const vdna_blas_int *lda, double *s, double *u, const vdna_blas_int *ldu, double *vt,
                      const vdna_blas_int *ldvt, double *work, const vdna_blas_int *lwork, vdna_blas_int *iwork,
                      vdna_blas_int *info);
void VDNA_F77(dsytrd)(const char *uplo, const vdna_blas_int *n, double *a, const vdna_blas_int *lda, double *d,
                      double *e, double *tau, double *work, const vdna_blas_int *lwork, vdna_blas_int *info);
void VDNA_F77(dsterf)(const vdna_blas_int *n, double *d, double *e, vdna_blas_int *info);
void VDNA_F77(dstemr)(const char *jobz, const char *range, const vdna_blas_int *n, double *d, double *e,
                      const double *vl, const double *vu, const vdna_blas_int *il, const vdna_blas_int *iu,
                      vdna_blas_int *m, double *w, double *z, const vdna_blas_int *ldz, const vdna_blas_int *nzc,
                      vdna_blas_int *isuppz, vdna_blas_int *tryrac, double *work, const vdna_blas_int *lwork,
                      vdna_blas_int *iwork, const vdna_blas_int *liwork, vdna_blas_int *info);
void VDNA_F77(dlarfg)(const vdna_blas_int *n, double *alpha, double *x, const vdna_blas_int *incx, double *tau);
void VDNA_F77(dlarft)(const char *direct, const char *storev, const vdna_blas_int *n, const vdna_blas_int *k,
                      const double *v, const vdna_blas_int *ldv, const double *tau, double *t,
                      const vdna_blas_int *ldt);
void VDNA_F77(dlarfb)(const char *side, const char *trans, const char *direct, const char *storev,
                      const vdna_blas_int *m, const vdna_blas_int *n, const vdna_blas_int *k, const double *v,
                      const vdna_blas_int *ldv, const double *t, const vdna_blas_int *ldt, double *c,
                      const vdna_blas_int *ldc, double *work, const vdna_blas_int *ldwork);
void VDNA_F77(dgbbrd)(const char *vect, const vdna_blas_int *m, const vdna_blas_int *n, const vdna_blas_int *ncc,
                      const vdna_blas_int *kl, const vdna_blas_int *ku, double *ab, const vdna_blas_int *ldab, double *d,
                      double *e, double *q, const vdna_blas_int *ldq, double *pt, const vdna_blas_int *ldpt, double *c,
                      const vdna_blas_int *ldc, double *work, vdna_blas_int *info);
void VDNA_F77(dbdsqr)(const char *uplo, const vdna_blas_int *n, const vdna_blas_int *ncvt, const vdna_blas_int *nru,
                      const vdna_blas_int *ncc, double *d, double *e, double *vt, const vdna_blas_int *ldvt, double *u,
                      const vdna_blas_int *ldu, double *c, const vdna_blas_int *ldc, double *work, vdna_blas_int *info);
void VDNA_F77(dormtr)(const char *side, const char *uplo, const char *trans, const vdna_blas_int *m,
                      const vdna_blas_int *n, const double *a, const vdna_blas_int *lda, const double *tau, double *c,
                      const vdna_blas_int *ldc, double *work, const vdna_blas_int *lwork, vdna_blas_int *info);

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

/* Numerical-rank tolerance of a symmetric n x n matrix with largest eigenvalue lmax: eigenvalues
 * at or below it are rounding noise (the convention of numpy.linalg.matrix_rank). Dropping them,
 * not only the negative ones, matters: the square root turns noise of size eps into sqrt(eps),
 * and a covariance of N < d samples has d - N + 1 such eigenvalues. */
static double rank_tolerance(vdna_blas_int n, double lmax) { return lmax > 0.0 ? (double)n * DBL_EPSILON * lmax : 0.0; }

/* Pivoted Cholesky accepts S as positive definite only if every pivot exceeds
 * CHOLESKY_MARGIN * n * eps * max_i S_ii. A singular S formed in floating point (N < d samples, a
 * linearly dependent neuron) has rounding-noise pivots after its rank, bounded by the rounding of
 * forming and factoring it, about n * eps * max S_ii (measured: at most 0.75x that over 3000 random
 * rank-deficient matrices, d = 2..128). Keeping such a noise direction would add a sqrt(eps)-sized
 * error to the nuclear norm wherever the other covariance is not singular (1e-8 of the trace scale
 * measured with plain dpotrf, which accepts about one such matrix in 20), so the margin is wide.
 * A genuine positive definite S has every pivot >= its smallest eigenvalue, so it stays on the
 * Cholesky route while its condition number is below about 1 / (CHOLESKY_MARGIN * n * eps)
 * (2e10 for n = 2048); beyond that the eigendecomposition route is just as accurate, only slower. */
#define CHOLESKY_MARGIN 100.0

/* A factor F (n x r) of a covariance, S = F F^T, column-major in a (leading dimension n), its
 * rows permuted: stored row k is row perm[k] of F (perm NULL: not permuted).
 * lower: a is the n x n lower-triangular pivoted Cholesky factor (r == n). */
typedef struct {
    double *a;
    vdna_blas_int *perm;
    vdna_blas_int r;
    int lower;
} factor;

static void factor_free(factor *f) {
    free(f->a);
    free(f->perm);
    f->a = NULL;
    f->perm = NULL;
}

/* Largest LAPACK workspace size from a query (wq), or -1 if it does not fit an int. */
static vdna_blas_int work_size(double wq) { return wq < (double)INT_MAX - 1.0 ? (vdna_blas_int)wq + 1 : -1; }

/* f = V diag(sqrt w) over the eigenpairs (w, V) of the symmetric n x n matrix a (lower triangle;
 * destroyed) with w above rank_tolerance. dsytrd reduces a to tridiagonal form, dsterf gives every
 * eigenvalue (for the largest, hence the tolerance), dstemr (MRRR) the kept eigenvectors of the
 * tridiagonal matrix and dormtr transforms only those back: for N << d samples this costs about one
 * tridiagonal reduction, not a full eigendecomposition. */
static vdna_status eigen_factor(vdna_blas_int n, double *a, factor *f, const char *name) {
    const char lower = 'L', left = 'L', no_t = 'N', vectors = 'V', by_index = 'I';
    vdna_blas_int info = 0, query = -1, m = 0, tryrac = 1, iq = 0;
    double wq = 0.0, unused = 0.0;
    size_t nz = (size_t)n;
    double *diag = malloc(nz * sizeof(double)), *off = malloc(nz * sizeof(double));
    double *w = malloc(nz * sizeof(double)), *e = malloc(nz * sizeof(double)), *tau = malloc(nz * sizeof(double));
    vdna_blas_int *isuppz = malloc(2 * nz * sizeof(vdna_blas_int)), *iwork = NULL;
    double *work = NULL;
    vdna_status s = VDNA_OK;
    if (!diag || !off || !w || !e || !tau || !isuppz) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the eigensolver workspace for %s (n = %d)", name, (int)n);
        goto done;
    }
    /* workspace: the largest of dsytrd's, dstemr's (for all n vectors) and dormtr's */
    vdna_blas_int lwork = 1, liwork = 1, lw;
    VDNA_F77(dsytrd)(&lower, &n, a, &n, diag, off, tau, &wq, &query, &info);
    if (info != 0 || (lw = work_size(wq)) < 0) goto too_large;
    lwork = lw > lwork ? lw : lwork;
    vdna_blas_int all1 = 1;
    VDNA_F77(dstemr)(&vectors, &by_index, &n, w, e, &unused, &unused, &all1, &n, &m, w, &unused, &n, &n, isuppz,
                     &tryrac, &wq, &query, &iq, &query, &info);
    if (info != 0 || (lw = work_size(wq)) < 0) goto too_large;
    lwork = lw > lwork ? lw : lwork;
    liwork = iq > liwork ? iq : liwork;
    VDNA_F77(dormtr)(&left, &lower, &no_t, &n, &n, a, &n, tau, &unused, &n, &wq, &query, &info);
    if (info != 0 || (lw = work_size(wq)) < 0) goto too_large;
    lwork = lw > lwork ? lw : lwork;
    work = malloc((size_t)lwork * sizeof(double));
    iwork = malloc((size_t)liwork * sizeof(vdna_blas_int));
    if (work == NULL || iwork == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the eigensolver workspace for %s (n = %d)", name, (int)n);
        goto done;
    }

    VDNA_F77(dsytrd)(&lower, &n, a, &n, diag, off, tau, work, &lwork, &info);
    if (info != 0) goto lapack_failed;
    for (size_t i = 0; i < nz; i++) w[i] = diag[i];
    for (size_t i = 0; i + 1 < nz; i++) e[i] = off[i];
    VDNA_F77(dsterf)(&n, w, e, &info); /* all eigenvalues, ascending */
    if (info != 0) goto lapack_failed;
    double tol = rank_tolerance(n, w[n - 1]);
    vdna_blas_int first = 0;
    while (first < n && !(w[first] > tol)) first++;
    vdna_blas_int k = n - first, il = first + 1;
    f->r = 0;
    if (k == 0) goto done;
    f->a = malloc(nz * (size_t)k * sizeof(double));
    if (f->a == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate a %d x %d factor of %s", (int)n, (int)k, name);
        goto done;
    }
    for (size_t i = 0; i + 1 < nz; i++) e[i] = off[i];
    VDNA_F77(dstemr)(&vectors, &by_index, &n, diag, e, &unused, &unused, &il, &n, &m, w, f->a, &n, &k, isuppz,
                     &tryrac, work, &lwork, iwork, &liwork, &info);
    if (info != 0 || m != k) goto lapack_failed;
    VDNA_F77(dormtr)(&left, &lower, &no_t, &n, &k, a, &n, tau, f->a, &n, work, &lwork, &info);
    if (info != 0) goto lapack_failed;
    for (vdna_blas_int j = 0; j < k; j++) {
        double sj = sqrt(fmax(w[j], 0.0));
        double *col = f->a + (size_t)j * nz;
        for (size_t i = 0; i < nz; i++) col[i] *= sj;
    }
    f->r = k;
    goto done;
too_large:
    s = vdna_fail(VDNA_ERR_ARG, "fd: dimension %d too large for LAPACK's workspace (info = %d)", (int)n, (int)info);
    goto done;
lapack_failed:
    s = vdna_fail(VDNA_ERR_LAPACK, "fd: the eigendecomposition of %s failed (info = %d)", name, (int)info);
done:
    free(diag);
    free(off);
    free(w);
    free(e);
    free(tau);
    free(isuppz);
    free(work);
    free(iwork);
    return s;
}

/* F for the symmetric part of sigma (n x n, row-major; symmetric, so the layout does not matter):
 * the pivoted Cholesky factor (dpstrf) when S is numerically positive definite; otherwise
 * V diag(sqrt w) over the eigenvalues w of S above rank_tolerance (negative ones dropped too). */
static vdna_status factorize(vdna_blas_int n, const double *sigma, factor *f, const char *name) {
    const char lower = 'L';
    size_t nn = (size_t)n * (size_t)n;
    double *a = malloc(nn * sizeof(double));
    double *work = malloc(2 * (size_t)n * sizeof(double));
    vdna_blas_int *piv = malloc((size_t)n * sizeof(vdna_blas_int));
    vdna_status s = VDNA_OK;
    if (a == NULL || work == NULL || piv == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate a %d x %d matrix for %s", (int)n, (int)n, name);
        goto done;
    }
    symmetric_part(sigma, a, n);
    double max_diag = 0.0;
    for (size_t i = 0; i < (size_t)n; i++) max_diag = fmax(max_diag, a[i * (size_t)n + i]);
    if (max_diag > 0.0) {
        double tol = CHOLESKY_MARGIN * (double)n * DBL_EPSILON * max_diag;
        vdna_blas_int rank = 0, info = 0;
        VDNA_F77(dpstrf)(&lower, &n, a, &n, piv, &rank, &tol, work, &info);
        if (info < 0) {
            s = vdna_fail(VDNA_ERR_LAPACK, "fd: dpstrf rejected argument %d", (int)-info);
            goto done;
        }
        if (info == 0) { /* positive definite: P^T S P = L L^T, so F = P L */
            for (size_t j = 1; j < (size_t)n; j++) /* clear the strict upper triangle (column-major) */
                for (size_t i = 0; i < j; i++) a[j * (size_t)n + i] = 0.0;
            for (vdna_blas_int k = 0; k < n; k++) piv[k] -= 1; /* LAPACK pivots are 1-based */
            f->a = a;
            f->perm = piv;
            f->r = n;
            f->lower = 1;
            a = NULL;
            piv = NULL;
            goto done;
        }
        symmetric_part(sigma, a, n); /* dpstrf stopped part-way: start again from S */
    }
    s = eigen_factor(n, a, f, name);
done:
    free(a);
    free(work);
    free(piv);
    return s;
}

/* Band width of the two-stage reduction below; matrices with at most 2 * BAND columns go to dgesdd. */
#define BAND 32

/* Householder QR of the rows x nc column panel a (column-major, leading dimension lda; nc <= rows),
 * stored as dgeqrf stores it (R on and above the diagonal, the reflectors' tails below, tau).
 * Level-1/2 work on a narrow panel: done here in plain loops rather than through dgeqrf, whose
 * many small BLAS calls each wait for the BLAS library's threads (measured 300x slower at
 * d = 2048 on a machine whose other core was busy). dlarfg makes each reflector. */
static void panel_qr(vdna_blas_int rows, vdna_blas_int nc, double *a, vdna_blas_int lda, double *tau) {
    const vdna_blas_int one = 1;
    const size_t ld = (size_t)lda;
    for (vdna_blas_int c = 0; c < nc; c++) {
        double *col = a + (size_t)c * ld;
        vdna_blas_int len = rows - c;
        VDNA_F77(dlarfg)(&len, col + c, col + c + 1, &one, &tau[c]);
        if (tau[c] == 0.0) continue;
        for (vdna_blas_int j = c + 1; j < nc; j++) { /* apply H = I - tau v v^T, v = (1, col[c+1..]) */
            double *cj = a + (size_t)j * ld;
            double w = cj[c];
            for (vdna_blas_int i = c + 1; i < rows; i++) w += col[i] * cj[i];
            w *= tau[c];
            cj[c] -= w;
            for (vdna_blas_int i = c + 1; i < rows; i++) cj[i] -= w * col[i];
        }
    }
}

/* Householder LQ of the nr x cols row panel a, stored as dgelqf stores it (L on and below the
 * diagonal, the reflectors' tails right of it, tau: min(nr, cols) of them); see panel_qr.
 * w: nr doubles of workspace. */
static void panel_lq(vdna_blas_int nr, vdna_blas_int cols, double *a, vdna_blas_int lda, double *tau, double *w) {
    const size_t ld = (size_t)lda;
    for (vdna_blas_int r = 0; r < nr && r < cols; r++) {
        vdna_blas_int len = cols - r;
        double *head = a + (size_t)r * ld + (size_t)r; /* a[r, r]; the row continues with stride lda */
        VDNA_F77(dlarfg)(&len, head, head + ld, &lda, &tau[r]);
        if (tau[r] == 0.0) continue;
        /* rows r+1 .. nr-1 times H = I - tau v v^T, v = (1, a[r, r+1..]): w = A v, A -= tau w v^T */
        for (vdna_blas_int j = r + 1; j < nr; j++) w[j] = a[(size_t)r * ld + (size_t)j];
        for (vdna_blas_int i = r + 1; i < cols; i++) {
            const double *ci = a + (size_t)i * ld;
            double vi = ci[r];
            for (vdna_blas_int j = r + 1; j < nr; j++) w[j] += ci[j] * vi;
        }
        for (vdna_blas_int j = r + 1; j < nr; j++) w[j] *= tau[r];
        for (vdna_blas_int j = r + 1; j < nr; j++) a[(size_t)r * ld + (size_t)j] -= w[j];
        for (vdna_blas_int i = r + 1; i < cols; i++) {
            double *ci = a + (size_t)i * ld;
            double vi = ci[r];
            for (vdna_blas_int j = r + 1; j < nr; j++) ci[j] -= w[j] * vi;
        }
    }
}

/* Singular values (into sv, descending) of the m x k column-major matrix a (m >= k > 2 * BAND;
 * destroyed), in two stages. Stage 1 reduces a to upper band form with BAND superdiagonals by
 * alternating QR of BAND columns and LQ of BAND rows (panel_qr, panel_lq), each applied to the
 * rest of the matrix as one block reflector (dlarft + dlarfb: matrix-matrix products); stage 2 reduces the band to
 * bidiagonal form (dgbbrd, plane rotations, O(k^2 BAND) flops) and dbdsqr (dqds) takes the
 * bidiagonal's singular values. dgesdd's one-stage dgebrd does half of its 8/3 k^3 flops as
 * matrix-vector products, which run at memory speed; here the same flops are matrix-matrix
 * products. (dormqr/dormlq are not used: they fall back to one reflector at a time when the
 * block has no more reflectors than their block size, as here.) Every step is an orthogonal
 * transformation, so the route is backward stable like dgesdd: the singular values are exact for a
 * matrix within p(k) eps ||a||_2 of a. */
static vdna_status band_singular_values(vdna_blas_int m, vdna_blas_int k, double *a, double *sv) {
    const char left = 'L', right = 'R', tr = 'T', none = 'N', forward = 'F', columns = 'C', rows_v = 'R',
               upper = 'U';
    const vdna_blas_int nb = BAND, ldab = BAND + 1, zero_i = 0, one_i = 1;
    const size_t lda = (size_t)m;
    /* dlarfb needs at most max(m, k) * BAND, dbdsqr 4 k, panel_lq BAND */
    vdna_blas_int lwork = m * nb + 4 * k, info = 0;
    double dummy = 0.0, tau[BAND], t[BAND * BAND];
    double *work = malloc((size_t)lwork * sizeof(double));
    double *ab = calloc((size_t)ldab * (size_t)k, sizeof(double));
    double *e = malloc((size_t)k * sizeof(double));
    vdna_status s = VDNA_OK;
    if (work == NULL || ab == NULL || e == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the SVD workspace (%d x %d)", (int)m, (int)k);
        goto done;
    }
    for (vdna_blas_int j = 0; j < k; j += nb) {
        vdna_blas_int jb = k - j < nb ? k - j : nb, rows = m - j, cols = k - j - jb;
        double *ajj = a + (size_t)j * lda + (size_t)j;
        /* columns j .. j+jb-1: upper triangular in rows j .. j+jb-1, the reflectors below */
        panel_qr(rows, jb, ajj, m, tau);
        if (cols == 0) break;
        double *right_of = ajj + (size_t)jb * lda; /* rows j.., columns j+jb.. */
        VDNA_F77(dlarft)(&forward, &columns, &rows, &jb, ajj, &m, tau, t, &nb);
        VDNA_F77(dlarfb)(&left, &tr, &forward, &columns, &rows, &cols, &jb, ajj, &m, t, &nb, right_of, &m, work,
                         &cols); /* Q^T times the columns to the right */
        /* rows j .. j+jb-1, columns j+jb..: [L 0], L lower triangular, the reflectors right of L */
        panel_lq(jb, cols, right_of, m, tau, work);
        vdna_blas_int below = rows - jb, nref = jb < cols ? jb : cols;
        VDNA_F77(dlarft)(&forward, &rows_v, &cols, &nref, right_of, &m, tau, t, &nb);
        VDNA_F77(dlarfb)(&right, &none, &forward, &rows_v, &below, &cols, &nref, right_of, &m, t, &nb,
                         right_of + jb, &m, work, &below); /* the rows below times Q^T (as dormlq 'R', 'T') */
    }
    /* a[i, c] is now zero unless c - BAND <= i <= c (the triangles of the R and L blocks; the
     * reflectors lie outside that band): copy the band to LAPACK's band storage */
    for (vdna_blas_int c = 0; c < k; c++)
        for (vdna_blas_int i = c > nb ? c - nb : 0; i <= c; i++)
            ab[(size_t)c * (size_t)ldab + (size_t)(nb + i - c)] = a[(size_t)c * lda + (size_t)i];
    VDNA_F77(dgbbrd)(&none, &k, &k, &zero_i, &zero_i, &nb, ab, &ldab, sv, e, &dummy, &one_i, &dummy, &one_i, &dummy,
                     &one_i, work, &info);
    if (info != 0) goto lapack_failed;
    VDNA_F77(dbdsqr)(&upper, &k, &zero_i, &zero_i, &zero_i, sv, e, &dummy, &one_i, &dummy, &one_i, &dummy, &one_i,
                     work, &info);
    if (info != 0) goto lapack_failed;
    goto done;
lapack_failed:
    s = vdna_fail(VDNA_ERR_LAPACK, "fd: the SVD of the %d x %d factor product failed (info = %d)", (int)m, (int)k,
                  (int)info);
done:
    free(work);
    free(ab);
    free(e);
    return s;
}

/* Singular values (into sv, descending) of the m x k column-major matrix a (m >= k; destroyed), by
 * dgesdd without singular vectors. */
static vdna_status gesdd_singular_values(vdna_blas_int m, vdna_blas_int k, double *a, double *sv) {
    const char jobz = 'N';
    vdna_blas_int one = 1, info = 0, query = -1, lwork;
    double wq = 0.0, dummy = 0.0;
    vdna_blas_int *iwork = malloc(8 * (size_t)k * sizeof(vdna_blas_int));
    double *work = NULL;
    vdna_status s = VDNA_OK;
    if (iwork == NULL) goto no_memory;
    VDNA_F77(dgesdd)(&jobz, &m, &k, a, &m, sv, &dummy, &one, &dummy, &one, &wq, &query, iwork, &info);
    if (info != 0 || (lwork = work_size(wq)) < 0) {
        s = vdna_fail(VDNA_ERR_LAPACK, "fd: dgesdd workspace query failed (info = %d, lwork = %g)", (int)info, wq);
        goto done;
    }
    work = malloc((size_t)lwork * sizeof(double));
    if (work == NULL) goto no_memory;
    VDNA_F77(dgesdd)(&jobz, &m, &k, a, &m, sv, &dummy, &one, &dummy, &one, work, &lwork, iwork, &info);
    if (info != 0) s = vdna_fail(VDNA_ERR_LAPACK, "fd: dgesdd failed (info = %d)", (int)info);
    goto done;
no_memory:
    s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate the SVD workspace (%d x %d)", (int)m, (int)k);
done:
    free(iwork);
    free(work);
    return s;
}

/* Sum of the singular values of the m x k column-major matrix a (m >= k; destroyed): the two-stage
 * route above for k > 2 * BAND, dgesdd without singular vectors otherwise; summed smallest first. */
static vdna_status singular_value_sum(vdna_blas_int m, vdna_blas_int k, double *a, double *out) {
    double *sv = malloc((size_t)k * sizeof(double));
    if (sv == NULL) return vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate %d singular values", (int)k);
    vdna_status s = k > 2 * BAND ? band_singular_values(m, k, a, sv) : gesdd_singular_values(m, k, a, sv);
    if (s == VDNA_OK) {
        double sum = 0.0;
        for (vdna_blas_int i = k; i-- > 0;) sum += sv[i]; /* descending: small terms first */
        *out = sum;
    }
    free(sv);
    return s;
}

/* ||F1^T F2||_* (nuclear norm) for factors of n x n covariances. */
static vdna_status nuclear_norm(vdna_blas_int n, const factor *f1, const factor *f2, double *out) {
    const char left = 'L', lower = 'L', no_t = 'N', tr = 'T', non_unit = 'N';
    const double one = 1.0, zero = 0.0;
    *out = 0.0;
    if (f1->r == 0 || f2->r == 0) return VDNA_OK;
    if (!f1->lower && f2->lower) { /* ||F1^T F2||_* = ||F2^T F1||_*: a triangular factor goes first */
        const factor *t = f1;
        f1 = f2;
        f2 = t;
    }
    const double *b = f2->a;
    vdna_blas_int m = f1->r, k = f2->r;
    double *prod = malloc((size_t)m * (size_t)k * sizeof(double));
    vdna_blas_int *where = f2->perm != NULL ? malloc((size_t)n * sizeof(vdna_blas_int)) : NULL;
    vdna_status s = VDNA_OK;
    if (prod == NULL || (f2->perm != NULL && where == NULL)) {
        s = vdna_fail(VDNA_ERR_NOMEM, "fd: cannot allocate a %d x %d matrix", (int)m, (int)k);
        goto done;
    }
    if (f1->lower) {
        /* F1 = P1 L1, so F1^T F2 = L1^T G with G = P1^T F2: row i of G is row perm1[i] of F2,
         * which is stored at row where[perm1[i]] of f2 (where = the inverse of perm2). */
        if (where != NULL)
            for (vdna_blas_int i = 0; i < n; i++) where[f2->perm[i]] = i;
        for (vdna_blas_int j = 0; j < k; j++) {
            const double *src = b + (size_t)j * (size_t)n;
            double *dst = prod + (size_t)j * (size_t)n;
            for (vdna_blas_int i = 0; i < n; i++) {
                vdna_blas_int row = f1->perm[i];
                dst[i] = src[where != NULL ? where[row] : row];
            }
        }
        VDNA_F77(dtrmm)(&left, &lower, &tr, &non_unit, &n, &k, &one, f1->a, &n, prod, &n);
    } else { /* two eigenvector factors, rows in their natural order; the taller product first */
        if (m < k) {
            const factor *t = f1;
            f1 = f2;
            f2 = t;
            b = f2->a;
            m = f1->r;
            k = f2->r;
        }
        VDNA_F77(dgemm)(&tr, &no_t, &m, &k, &n, &one, f1->a, &n, b, &n, &zero, prod, &m);
    }
    s = singular_value_sum(m, k, prod, out);
done:
    free(prod);
    free(where);
    return s;
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
    factor f1 = {0}, f2 = {0};
    double nuclear = 0.0;
    vdna_status s = factorize(n, sigma1, &f1, "sigma1");
    if (s == VDNA_OK) s = factorize(n, sigma2, &f2, "sigma2");
    if (s == VDNA_OK) s = nuclear_norm(n, &f1, &f2, &nuclear);
    factor_free(&f1);
    factor_free(&f2);
    if (s != VDNA_OK) return s;
    double fd = mean_term + trace1 + trace2 - 2.0 * nuclear;
    *out = fd > 0.0 ? fd : 0.0; /* a rounding-level negative (nearly identical inputs) becomes 0 */
    return VDNA_OK;
}

/* ---------------------------------------------------------------- nuclear norms of point subsets */
#if defined(VDNA_BLAS_SCIPY_OPENBLAS)
/* The scipy-openblas wheel's thread control. While subsets run on vdna's threads, the BLAS library
 * is held to one thread of its own (two levels of threads would oversubscribe the CPUs); a count
 * of holders restores the previous setting when the last concurrent call leaves. */
int scipy_openblas_get_num_threads(void);
void scipy_openblas_set_num_threads(int n);
static pthread_mutex_t blas_hold_lock = PTHREAD_MUTEX_INITIALIZER;
static int blas_holders = 0, blas_saved_threads = 1;
static void blas_hold_single(void) {
    pthread_mutex_lock(&blas_hold_lock);
    if (blas_holders++ == 0) {
        blas_saved_threads = scipy_openblas_get_num_threads();
        scipy_openblas_set_num_threads(1);
    }
    pthread_mutex_unlock(&blas_hold_lock);
}
static void blas_release(void) {
    pthread_mutex_lock(&blas_hold_lock);
    if (--blas_holders == 0) scipy_openblas_set_num_threads(blas_saved_threads);
    pthread_mutex_unlock(&blas_hold_lock);
}
#define SUBSETS_IN_PARALLEL 1
#else
/* Another BLAS: its threads cannot be held to one portably, so subsets run one after another and
 * each SVD uses the BLAS library's own threads. */
static void blas_hold_single(void) {}
static void blas_release(void) {}
#define SUBSETS_IN_PARALLEL 0
#endif

typedef struct {
    int64_t size, subset;
} sized_subset;

static int larger_first(const void *a, const void *b) {
    const sized_subset *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->subset < y->subset ? -1 : x->subset > y->subset;
}

typedef struct {
    int64_t r;
    const double *points;
    const int64_t *offsets, *index;
    const sized_subset *order;
    int64_t n_subsets;
    double *out;
    int64_t next;   /* the next entry of order to take (atomic) */
    int failed;     /* set once, by the first failing subset (atomic) */
    vdna_status status;
    int64_t failed_subset;
    char message[512];
} subset_norms_job;

/* ||X - 1 mean^T||_* for the points rows[0..N) (each r doubles): the centred N x r matrix, or its
 * transpose so that the SVD's matrix is at least as tall as wide. */
static vdna_status centred_subset_norm(const subset_norms_job *job, const int64_t *rows, int64_t N, double *out) {
    const int64_t r = job->r;
    *out = 0.0;
    if (N < 2 || r == 0) return VDNA_OK; /* no point or one point: the centred matrix is 0 */
    const vdna_blas_int m = (vdna_blas_int)(r >= N ? r : N), k = (vdna_blas_int)(r >= N ? N : r);
    double *mean = calloc((size_t)r, sizeof(double));
    double *a = malloc((size_t)m * (size_t)k * sizeof(double));
    vdna_status s = VDNA_OK;
    if (mean == NULL || a == NULL) {
        s = vdna_fail(VDNA_ERR_NOMEM, "nuclear norms: cannot allocate a %lld x %lld matrix", (long long)N,
                      (long long)r);
        goto done;
    }
    for (int64_t j = 0; j < N; j++) { /* summed in the subset's order */
        const double *x = job->points + (size_t)rows[j] * (size_t)r;
        for (int64_t i = 0; i < r; i++) mean[i] += x[i];
    }
    for (int64_t i = 0; i < r; i++) mean[i] /= (double)N;
    for (int64_t j = 0; j < N; j++) {
        const double *x = job->points + (size_t)rows[j] * (size_t)r;
        if (r >= N) { /* r x N, column j = point j */
            double *col = a + (size_t)j * (size_t)r;
            for (int64_t i = 0; i < r; i++) col[i] = x[i] - mean[i];
        } else { /* N x r, row j = point j */
            for (int64_t i = 0; i < r; i++) a[(size_t)i * (size_t)N + (size_t)j] = x[i] - mean[i];
        }
    }
    s = singular_value_sum(m, k, a, out);
done:
    free(mean);
    free(a);
    return s;
}

static void subset_norms_worker(void *ctx, int64_t begin, int64_t end) {
    (void)begin; /* each worker takes subsets from the shared queue until it is empty */
    (void)end;
    subset_norms_job *job = ctx;
    for (;;) {
        if (__atomic_load_n(&job->failed, __ATOMIC_ACQUIRE)) return;
        int64_t t = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (t >= job->n_subsets) return;
        int64_t sub = job->order[t].subset;
        const int64_t *rows = job->index + job->offsets[sub];
        vdna_status s = centred_subset_norm(job, rows, job->offsets[sub + 1] - job->offsets[sub], &job->out[sub]);
        if (s != VDNA_OK) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&job->failed, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                job->status = s;
                job->failed_subset = sub;
                snprintf(job->message, sizeof job->message, "%s", vdna_last_error());
            }
            return;
        }
    }
}

vdna_status vdna_centred_nuclear_norms(int64_t n, int64_t r, const double *points, int64_t n_subsets,
                                       const int64_t *offsets, const int64_t *index, double *out) {
    vdna_clear_error();
    if (n < 0 || r < 0 || n_subsets < 0 || offsets == NULL || (n_subsets > 0 && out == NULL) ||
        (n > 0 && r > 0 && points == NULL))
        return vdna_fail(VDNA_ERR_ARG, "nuclear norms: NULL array or negative size");
    if (r > INT_MAX) return vdna_fail(VDNA_ERR_ARG, "nuclear norms: dimension %lld is too large", (long long)r);
    if (offsets[0] != 0) return vdna_fail(VDNA_ERR_ARG, "nuclear norms: offsets[0] is %lld, not 0", (long long)offsets[0]);
    for (int64_t s = 0; s < n_subsets; s++) {
        int64_t size = offsets[s + 1] - offsets[s];
        if (offsets[s + 1] < offsets[s])
            return vdna_fail(VDNA_ERR_ARG, "nuclear norms: offsets decrease at subset %lld", (long long)s);
        if ((double)size * (double)(r > 0 ? r : 1) > (double)INT_MAX) /* LAPACK's 32-bit index arithmetic */
            return vdna_fail(VDNA_ERR_ARG,
                             "nuclear norms: subset %lld is too large for 32-bit LAPACK (%lld points x %lld dimensions)",
                             (long long)s, (long long)size, (long long)r);
    }
    int64_t total = offsets[n_subsets];
    if (total > 0 && index == NULL) return vdna_fail(VDNA_ERR_ARG, "nuclear norms: NULL index");
    for (int64_t j = 0; j < total; j++)
        if (index[j] < 0 || index[j] >= n)
            return vdna_fail(VDNA_ERR_ARG, "nuclear norms: index[%lld] = %lld is not a point (0 <= i < %lld)",
                             (long long)j, (long long)index[j], (long long)n);
    if (n_subsets == 0) return VDNA_OK;
    for (int64_t j = 0; j < n * r; j++)
        if (!isfinite(points[j]))
            return vdna_fail(VDNA_ERR_ARG, "nuclear norms: point %lld has a non-finite coordinate (%g)",
                             (long long)(j / r), points[j]);

    sized_subset *order = malloc((size_t)n_subsets * sizeof *order);
    if (order == NULL) return vdna_fail(VDNA_ERR_NOMEM, "nuclear norms: cannot allocate %lld records", (long long)n_subsets);
    for (int64_t s = 0; s < n_subsets; s++) order[s] = (sized_subset){offsets[s + 1] - offsets[s], s};
    qsort(order, (size_t)n_subsets, sizeof *order, larger_first); /* the longest first: balanced threads */
    subset_norms_job job = {.r = r, .points = points, .offsets = offsets, .index = index, .order = order,
                            .n_subsets = n_subsets, .out = out};
    int64_t workers = SUBSETS_IN_PARALLEL ? vdna_get_num_threads() : 1;
    if (workers > n_subsets) workers = n_subsets;
    blas_hold_single();
    vdna_status s = vdna_parallel_for(workers, 1, subset_norms_worker, &job);
    blas_release();
    free(order);
    if (s != VDNA_OK) return s;
    if (job.failed)
        return vdna_fail(job.status, "nuclear norms: subset %lld: %s", (long long)job.failed_subset, job.message);
    return VDNA_OK;
}

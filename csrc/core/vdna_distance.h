/* vdna_distance.h: part of the public API; include vdna_core.h, not this file.
 *
 * Distances between Visual DNAs (docs/design.md, "Normative semantics"): the Earth Mover's Distance
 * between per-neuron histograms, the neuron-wise Frechet distance between per-neuron Gaussians
 * (NFD) and the Frechet distance between two multivariate Gaussians (FD). Plain arrays in,
 * plain arrays out: no objects. All arithmetic is float64. Every function is reentrant; the
 * parallel ones use up to vdna_get_num_threads() threads and give bit-identical results for any
 * thread count.
 */
#ifndef VDNA_DISTANCE_H
#define VDNA_DISTANCE_H

#include <stdint.h>

/* ---------------------------------------------------------------- histograms (EMD) */
typedef enum { VDNA_COUNTS_F64 = 0, VDNA_COUNTS_I64 = 1 } vdna_counts_type;

/* A read-only (neurons, bins) matrix of histogram counts: the count of neuron n in bin b is
 * data[n * row_stride + b * bin_stride] (strides in ELEMENTS, any sign), of type double or
 * int64_t. Counts must be >= 0 (and finite for doubles). */
typedef struct {
    const void *data;
    vdna_counts_type type;
    int64_t row_stride;
    int64_t bin_stride;
} vdna_counts;

/* Per-neuron EMD of two count matrices of n_neurons x n_bins: each row is normalised to sum 1
 * (row total summed in float64 in a fixed order; int64 rows summed exactly as int64), then
 * out[n] = sum over bins of |CDF1 - CDF2|, accumulated bin by bin (unit: bins).
 * Returns VDNA_OK, or VDNA_ERR_ARG (NULL, n_bins < 1, a negative / non-finite count, a row total
 * that overflows) with the first bad neuron and bin in vdna_last_error(); out is then undefined.
 * Surprise: a row whose total is 0 is not an error; that neuron's EMD is NaN. */
vdna_status vdna_emd(const vdna_counts *h1, const vdna_counts *h2, int64_t n_neurons, int64_t n_bins,
                     double *out);

/* One reference against n_candidates candidates (all n_neurons x n_bins), aggregated per candidate
 * over a selection of neurons: index[0..n_index) (NULL: every neuron, n_index is then ignored);
 * out[k] = sum_j weights[j] * EMD_k(index[j]) when weights (length = selection size) is given,
 * else the mean of EMD_k over the selection. Each EMD_k(n) is bit-identical to vdna_emd's; the
 * sum runs over fixed blocks of neurons in a fixed order, so out is the same for any thread count.
 * Returns VDNA_OK, VDNA_ERR_ARG (empty selection, index out of range, weight < 0 or not finite,
 * bad counts as in vdna_emd, naming the candidate), VDNA_ERR_NOMEM.
 * Surprise: a selected neuron with an empty histogram makes that candidate's result NaN, even with
 * weight 0 (IEEE: 0 * NaN = NaN). Duplicate indices count twice. */
vdna_status vdna_emd_many(const vdna_counts *reference, const vdna_counts *candidates, int64_t n_candidates,
                          int64_t n_neurons, int64_t n_bins, const int64_t *index, int64_t n_index,
                          const double *weights, double *out);

/* ---------------------------------------------------------------- Gaussians */
/* Per-neuron Frechet distance of two sets of 1-D Gaussians (contiguous float64 arrays of n):
 * out[i] = (mu1-mu2)^2 + v1 + v2 - 2 sqrt(v1 v2), computed as (mu1-mu2)^2 + (sqrt v1 - sqrt v2)^2
 * (the same value without cancellation, so never negative, and no overflow in v1*v2).
 * Returns VDNA_OK, or VDNA_ERR_ARG for NULL pointers or a negative variance.
 * Surprise: NaN / Inf in a mean or variance is not an error: it propagates to that neuron only. */
vdna_status vdna_nfd(const double *mu1, const double *var1, const double *mu2, const double *var2, int64_t n,
                     double *out);

/* Frechet distance of two d-dimensional Gaussians (mu: d doubles; sigma: d x d, contiguous, only
 * its symmetric part S = (sigma + sigma^T)/2 is used; FD assumes S symmetric positive semi-definite):
 * ||mu1-mu2||^2 + tr S1 + tr S2 - 2 tr sqrt(S1^(1/2) S2 S1^(1/2)), the last term computed as the
 * nuclear norm (sum of singular values) of F1^T F2 for factors Si = Fi Fi^T, which never squares a
 * condition number (docs/design.md, "The Frechet distance"). Fi: the pivoted Cholesky factor when
 * Si is numerically positive definite (every pivot above 100 d eps max_j Si_jj), else
 * V diag(sqrt w) over the eigenvalues w of Si above d eps max w (smaller and negative ones are
 * rounding noise of a singular covariance and count as 0). Singular values by a two-stage
 * reduction (block QR/LQ to band form, dgbbrd, dbdsqr) for more than 64 columns, dgesdd otherwise.
 * LAPACK + BLAS; no sqrtm, no complex arithmetic. d == 0 gives 0.
 * Accuracy: |FD - exact| <= 1e-9 (tr S1 + tr S2) for d <= 2048 on full-rank covariances with
 * condition numbers up to 1e10, rank-deficient ones and those of fewer samples than dimensions
 * (tested against the factor oracle in tests/test_fd_accuracy.py; measured errors are ~1e-15).
 * The result is clipped at 0: for (nearly) identical inputs the formula's rounding-level negative
 * value is returned as 0, so FD is never negative.
 * Returns VDNA_OK, VDNA_ERR_ARG (NULL, d < 0 or too large for 32-bit LAPACK, a non-finite input),
 * VDNA_ERR_NOMEM, VDNA_ERR_LAPACK (a LAPACK routine failed to converge).
 * Surprise: BLAS threads are the BLAS library's own, not vdna_set_num_threads'. */
vdna_status vdna_fd(int64_t d, const double *mu1, const double *sigma1, const double *mu2, const double *sigma2,
                    double *out);

/* Nuclear norms (sums of singular values) of centred subsets of n points of dimension r: points is
 * n x r, row-major (point i is points[i r .. i r + r)); subset s is the points index[offsets[s] ..
 * offsets[s+1]) (offsets: n_subsets + 1 non-decreasing values from 0; a point may be in any number
 * of subsets). out[s] = ||X_s - 1 m_s^T||_* with X_s the subset's N x r matrix of points and m_s
 * their mean (summed in the subset's order, divided by N); subsets of fewer than 2 points give 0.
 * Used for many FDs of sample sets to one Gaussian (vdna/frechet.py): with the points projected
 * onto a factor of the fixed covariance, this is the trace term of each subset's FD.
 * Singular values as vdna_fd takes them (two-stage reduction for more than 64 of min(N, r), dgesdd
 * otherwise), summed smallest first; backward stable: each is exact for a matrix within
 * p(N, r) eps ||X_s - 1 m_s^T||_2 of the centred one.
 * Threads: with the scipy-openblas provider, subsets run concurrently on up to
 * vdna_get_num_threads() threads (largest first, each subset on one thread) while the BLAS library
 * is held to one thread (its previous setting is restored afterwards); other BLAS providers run
 * the subsets one after another on the BLAS library's own threads. Each subset's arithmetic is the
 * same whichever thread runs it, so results do not depend on vdna's thread count.
 * Surprise: the BLAS setting is process-wide, so a vdna_fd running in another thread meanwhile also
 * gets one BLAS thread (slower).
 * Returns VDNA_OK, VDNA_ERR_ARG (NULL, negative sizes, offsets not from 0 or decreasing, an index
 * outside [0, n), a non-finite coordinate, a subset too large for 32-bit LAPACK), VDNA_ERR_NOMEM,
 * VDNA_ERR_LAPACK. */
vdna_status vdna_centred_nuclear_norms(int64_t n, int64_t r, const double *points, int64_t n_subsets,
                                       const int64_t *offsets, const int64_t *index, double *out);

#endif /* VDNA_DISTANCE_H */

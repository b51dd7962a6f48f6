/* cov.c: layer mean vector and covariance of per-image mean vectors
 * (docs/design.md, "Normative semantics").
 *
 * State: count n, a shift vector s (the first image's mean vector; non-finite components -> 0),
 * S = sum (y - s) and P = sum (y - s)(y - s)^T over the per-image vectors y. Because s is one of
 * the data points, y - s is of the order of the spread, so
 *     mean = s + S/n,  M2 = P - S S^T / n
 * stay accurate when |mean| >> spread. P is updated with BLAS dsyrk (upper triangle, column-major:
 * element (i, j), i <= j, at P[i + j*C]); being symmetric, row- or column-major does not matter.
 * Merging a state with another shift s' translates it: with d = s' - s, the other's points give
 * S' + n' d and P' + S' d^T + d S'^T + n' d d^T about s. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

#define IMAGE_BLOCK 512

struct vdna_cov_s {
    int64_t n_neurons, count;
    vdna_layout layout;
    double *shift, *sum; /* n_neurons */
    double *prod;        /* n_neurons^2, upper triangle used */
    int64_t *nan_counts;
};

void vdna_cov_free(vdna_cov *c) {
    if (c == NULL) return;
    free(c->shift);
    free(c->sum);
    free(c->prod);
    free(c->nan_counts);
    free(c);
}

vdna_status vdna_cov_create(vdna_cov **out, int64_t n_neurons, vdna_layout layout) {
    vdna_clear_error();
    if (out == NULL) return vdna_fail(VDNA_ERR_ARG, "cov: NULL output pointer");
    *out = NULL;
    vdna_status st = vdna_check_create(n_neurons, layout, "cov");
    if (st != VDNA_OK) return st;
    if (n_neurons > INT_MAX || (uint64_t)n_neurons > (uint64_t)(SIZE_MAX / sizeof(double)) / (uint64_t)n_neurons)
        return vdna_fail(VDNA_ERR_NOMEM, "cov: %lld neurons is too many for a covariance matrix", (long long)n_neurons);
    vdna_cov *c = calloc(1, sizeof *c);
    if (c == NULL) return vdna_fail(VDNA_ERR_NOMEM, "cov: cannot allocate the accumulator");
    size_t n = (size_t)n_neurons;
    c->shift = calloc(n, sizeof(double));
    c->sum = calloc(n, sizeof(double));
    c->prod = calloc(n * n, sizeof(double));
    c->nan_counts = calloc(n, sizeof(int64_t));
    if (!c->shift || !c->sum || !c->prod || !c->nan_counts) {
        vdna_cov_free(c);
        return vdna_fail(VDNA_ERR_NOMEM, "cov: cannot allocate a %lld x %lld matrix", (long long)n_neurons,
                         (long long)n_neurons);
    }
    c->n_neurons = n_neurons;
    c->layout = layout;
    *out = c;
    return VDNA_OK;
}

vdna_status vdna_cov_update(vdna_cov *c, const vdna_array *x) {
    vdna_clear_error();
    if (c == NULL) return vdna_fail(VDNA_ERR_ARG, "cov update: NULL accumulator");
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, c->layout, c->n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images == 0) return VDNA_OK;
    const int64_t C = c->n_neurons;
    int64_t block = a.n_images < IMAGE_BLOCK ? a.n_images : IMAGE_BLOCK;
    double *y = malloc((size_t)(block * C) * sizeof(double));
    int64_t *nans = calloc((size_t)C, sizeof(int64_t));
    if (y == NULL || nans == NULL) {
        free(y);
        free(nans);
        return vdna_fail(VDNA_ERR_NOMEM, "cov update: cannot allocate %lld x %lld image means", (long long)block,
                         (long long)C);
    }
    /* Block by block: image means (the only step that can fail, and only for lack of memory for
     * thread records), shift, sums, dsyrk. A failure in a later block keeps the earlier blocks. */
    for (int64_t i0 = 0; i0 < a.n_images; i0 += block) {
        int64_t nb = a.n_images - i0 < block ? a.n_images - i0 : block;
        st = vdna_image_means(&a, i0, nb, y, nans);
        if (st != VDNA_OK) break;
        if (c->count == 0)
            for (int64_t j = 0; j < C; j++) c->shift[j] = isfinite(y[j]) ? y[j] : 0.0;
        for (int64_t i = 0; i < nb; i++) {
            double *row = y + i * C;
            for (int64_t j = 0; j < C; j++) {
                row[j] -= c->shift[j];
                c->sum[j] += row[j];
            }
        }
        const vdna_blas_int n = (vdna_blas_int)C, k = (vdna_blas_int)nb, ld = (vdna_blas_int)C;
        const double one = 1.0;
        VDNA_F77(dsyrk)("U", "N", &n, &k, &one, y, &ld, &one, c->prod, &ld);
        c->count += nb;
    }
    if (st == VDNA_OK)
        for (int64_t j = 0; j < C; j++) c->nan_counts[j] += nans[j];
    free(y);
    free(nans);
    return st;
}

vdna_status vdna_cov_merge(vdna_cov *c, const vdna_cov *other) {
    vdna_clear_error();
    if (c == NULL || other == NULL) return vdna_fail(VDNA_ERR_ARG, "cov merge: NULL accumulator");
    if (c->n_neurons != other->n_neurons || c->layout != other->layout)
        return vdna_fail(VDNA_ERR_MISMATCH, "cov merge: (neurons %lld, layout %s) vs (neurons %lld, layout %s)",
                         (long long)c->n_neurons, vdna_layout_name(c->layout), (long long)other->n_neurons,
                         vdna_layout_name(other->layout));
    const int64_t C = c->n_neurons;
    const int64_t nb = other->count;
    if (nb > 0 && c->count == 0) {
        memcpy(c->shift, other->shift, (size_t)C * sizeof(double));
        memcpy(c->sum, other->sum, (size_t)C * sizeof(double));
        memcpy(c->prod, other->prod, (size_t)(C * C) * sizeof(double));
    } else if (nb > 0) {
        double *d = malloc((size_t)C * sizeof(double));
        double *sb = malloc((size_t)C * sizeof(double));
        if (d == NULL || sb == NULL) {
            free(d);
            free(sb);
            return vdna_fail(VDNA_ERR_NOMEM, "cov merge: cannot allocate %lld-vectors", (long long)C);
        }
        /* copy other's sums first: other may be c */
        for (int64_t j = 0; j < C; j++) {
            d[j] = other->shift[j] - c->shift[j];
            sb[j] = other->sum[j];
        }
        const double fnb = (double)nb;
        for (int64_t j = 0; j < C; j++) {
            for (int64_t i = 0; i <= j; i++) {
                c->prod[i + j * C] += other->prod[i + j * C] + (sb[i] * d[j] + d[i] * sb[j]) + fnb * d[i] * d[j];
            }
        }
        for (int64_t j = 0; j < C; j++) c->sum[j] += sb[j] + fnb * d[j];
        free(d);
        free(sb);
    }
    for (int64_t j = 0; j < C; j++) c->nan_counts[j] += other->nan_counts[j];
    c->count += nb;
    return VDNA_OK;
}

void vdna_cov_reset(vdna_cov *c) {
    if (c == NULL) return;
    size_t n = (size_t)c->n_neurons;
    memset(c->shift, 0, n * sizeof(double));
    memset(c->sum, 0, n * sizeof(double));
    memset(c->prod, 0, n * n * sizeof(double));
    memset(c->nan_counts, 0, n * sizeof(int64_t));
    c->count = 0;
}

static void read_mean(const vdna_cov *c, double *mean) {
    for (int64_t j = 0; j < c->n_neurons; j++) mean[j] = c->shift[j] + c->sum[j] / (double)c->count;
}

/* M2 (full symmetric matrix) scaled by `scale`. */
static void read_m2(const vdna_cov *c, double *out, double scale) {
    const int64_t C = c->n_neurons;
    const double n = (double)c->count;
    for (int64_t j = 0; j < C; j++) {
        for (int64_t i = 0; i <= j; i++) {
            double v = (c->prod[i + j * C] - c->sum[i] * c->sum[j] / n) * scale;
            out[i + j * C] = v;
            out[j + i * C] = v;
        }
    }
}

vdna_status vdna_cov_mean(const vdna_cov *c, double *mean) {
    vdna_clear_error();
    if (c == NULL || mean == NULL) return vdna_fail(VDNA_ERR_ARG, "cov mean: NULL argument");
    if (c->count == 0) return vdna_fail(VDNA_ERR_EMPTY, "cov: no images accumulated");
    read_mean(c, mean);
    return VDNA_OK;
}

vdna_status vdna_cov_cov(const vdna_cov *c, double *cov) {
    vdna_clear_error();
    if (c == NULL || cov == NULL) return vdna_fail(VDNA_ERR_ARG, "cov cov: NULL argument");
    if (c->count == 0) return vdna_fail(VDNA_ERR_EMPTY, "cov: no images accumulated");
    if (c->count == 1) {
        memset(cov, 0, (size_t)(c->n_neurons * c->n_neurons) * sizeof(double));
        return VDNA_OK;
    }
    read_m2(c, cov, 1.0 / (double)(c->count - 1));
    return VDNA_OK;
}

vdna_status vdna_cov_state(const vdna_cov *c, int64_t *count, double *mean, double *m2) {
    vdna_clear_error();
    if (c == NULL) return vdna_fail(VDNA_ERR_ARG, "cov state: NULL accumulator");
    if (count) *count = c->count;
    if (c->count == 0) {
        if (mean) memset(mean, 0, (size_t)c->n_neurons * sizeof(double));
        if (m2) memset(m2, 0, (size_t)(c->n_neurons * c->n_neurons) * sizeof(double));
        return VDNA_OK;
    }
    if (mean) read_mean(c, mean);
    if (m2) read_m2(c, m2, 1.0);
    return VDNA_OK;
}

vdna_status vdna_cov_set_state(vdna_cov *c, int64_t count, const double *mean, const double *m2,
                               const int64_t *nan_counts) {
    vdna_clear_error();
    if (c == NULL) return vdna_fail(VDNA_ERR_ARG, "cov set_state: NULL accumulator");
    if (count < 0) return vdna_fail(VDNA_ERR_ARG, "cov set_state: count %lld < 0", (long long)count);
    if (count == 0) {
        vdna_cov_reset(c);
        return VDNA_OK;
    }
    if (mean == NULL || m2 == NULL) return vdna_fail(VDNA_ERR_ARG, "cov set_state: NULL mean or m2");
    const int64_t C = c->n_neurons;
    for (int64_t j = 0; j < C; j++) {
        if (m2[j + j * C] < 0)
            return vdna_fail(VDNA_ERR_ARG, "cov set_state: negative diagonal m2[%lld, %lld] = %g", (long long)j,
                             (long long)j, m2[j + j * C]);
        for (int64_t i = 0; i < j; i++) {
            double u = m2[i + j * C], l = m2[j + i * C];
            int both_nan = isnan(u) && isnan(l);
            if (!both_nan && !(fabs(u - l) <= 1e-12 * fmax(fabs(u), fabs(l))))
                return vdna_fail(VDNA_ERR_ARG, "cov set_state: m2 is not symmetric at [%lld, %lld] (%g vs %g)",
                                 (long long)i, (long long)j, u, l);
        }
    }
    vdna_status st = vdna_check_nan_counts(nan_counts, C, "cov set_state");
    if (st != VDNA_OK) return st;
    for (int64_t j = 0; j < C; j++) {
        for (int64_t i = 0; i <= j; i++) c->prod[i + j * C] = i == j ? m2[i + j * C] : (m2[i + j * C] + m2[j + i * C]) / 2;
        for (int64_t i = j + 1; i < C; i++) c->prod[i + j * C] = 0.0; /* unused triangle */
    }
    for (int64_t j = 0; j < C; j++) { /* a non-finite mean is kept in the sum, as update() does */
        c->shift[j] = isfinite(mean[j]) ? mean[j] : 0.0;
        c->sum[j] = isfinite(mean[j]) ? 0.0 : mean[j] * (double)count;
    }
    vdna_copy_nan_counts(c->nan_counts, nan_counts, C);
    c->count = count;
    return VDNA_OK;
}

vdna_status vdna_cov_nan_counts(const vdna_cov *c, int64_t *nan_counts) {
    vdna_clear_error();
    if (c == NULL || nan_counts == NULL) return vdna_fail(VDNA_ERR_ARG, "cov nan_counts: NULL argument");
    memcpy(nan_counts, c->nan_counts, (size_t)c->n_neurons * sizeof(int64_t));
    return VDNA_OK;
}
int64_t vdna_cov_num_images(const vdna_cov *c) { return c ? c->count : -1; }
int64_t vdna_cov_n_neurons(const vdna_cov *c) { return c ? c->n_neurons : -1; }
vdna_layout vdna_cov_layout(const vdna_cov *c) { return c ? c->layout : (vdna_layout)-1; }

/* moments.c: per-neuron mean and variance of per-image means (docs/design.md, "Normative semantics").
 *
 * State (count, mean, M2) in float64. A batch is cut into blocks of images; each block's
 * per-image means give the block's (n, mean, M2) by two passes, merged into the state with Chan's
 * formulas: delta = mean_b - mean_a, mean += delta n_b/n, M2 = M2_a + M2_b + delta^2 n_a n_b/n. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

#define IMAGE_BLOCK 256

struct vdna_moments_s {
    int64_t n_neurons, count;
    vdna_layout layout;
    double *mean, *m2;
    int64_t *nan_counts;
};

void vdna_moments_free(vdna_moments *m) {
    if (m == NULL) return;
    free(m->mean);
    free(m->m2);
    free(m->nan_counts);
    free(m);
}

vdna_status vdna_moments_create(vdna_moments **out, int64_t n_neurons, vdna_layout layout) {
    vdna_clear_error();
    if (out == NULL) return vdna_fail(VDNA_ERR_ARG, "moments: NULL output pointer");
    *out = NULL;
    vdna_status st = vdna_check_create(n_neurons, layout, "moments");
    if (st != VDNA_OK) return st;
    if ((uint64_t)n_neurons > SIZE_MAX / sizeof(double))
        return vdna_fail(VDNA_ERR_NOMEM, "moments: %lld neurons is too many", (long long)n_neurons);
    vdna_moments *m = calloc(1, sizeof *m);
    if (m == NULL) return vdna_fail(VDNA_ERR_NOMEM, "moments: cannot allocate the accumulator");
    m->mean = calloc((size_t)n_neurons, sizeof(double));
    m->m2 = calloc((size_t)n_neurons, sizeof(double));
    m->nan_counts = calloc((size_t)n_neurons, sizeof(int64_t));
    if (!m->mean || !m->m2 || !m->nan_counts) {
        vdna_moments_free(m);
        return vdna_fail(VDNA_ERR_NOMEM, "moments: cannot allocate state for %lld neurons", (long long)n_neurons);
    }
    m->n_neurons = n_neurons;
    m->layout = layout;
    *out = m;
    return VDNA_OK;
}

/* Chan's merge of (nb, mean_b, m2_b) into (na, mean, m2) for one neuron. */
static void chan_merge(int64_t na, double *mean, double *m2, int64_t nb, double mean_b, double m2_b) {
    if (nb == 0) return;
    if (na == 0) {
        *mean = mean_b;
        *m2 = m2_b;
        return;
    }
    double n = (double)na + (double)nb;
    double delta = mean_b - *mean;
    *mean += delta * ((double)nb / n);
    *m2 += m2_b + delta * delta * ((double)na * (double)nb / n);
}

vdna_status vdna_moments_update(vdna_moments *m, const vdna_array *x) {
    vdna_clear_error();
    if (m == NULL) return vdna_fail(VDNA_ERR_ARG, "moments update: NULL accumulator");
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, m->layout, m->n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images == 0) return VDNA_OK;
    const int64_t C = m->n_neurons;
    int64_t block = a.n_images < IMAGE_BLOCK ? a.n_images : IMAGE_BLOCK;
    double *means = malloc((size_t)(block * C) * sizeof(double));
    int64_t *nans = calloc((size_t)C, sizeof(int64_t));
    if (means == NULL || nans == NULL) {
        free(means);
        free(nans);
        return vdna_fail(VDNA_ERR_NOMEM, "moments update: cannot allocate %lld x %lld image means", (long long)block,
                         (long long)C);
    }
    /* compute into a copy of the state so that a failure leaves the accumulator unchanged */
    double *mean = malloc((size_t)C * sizeof(double)), *m2 = malloc((size_t)C * sizeof(double));
    if (mean == NULL || m2 == NULL) {
        free(means);
        free(nans);
        free(mean);
        free(m2);
        return vdna_fail(VDNA_ERR_NOMEM, "moments update: cannot allocate the new state");
    }
    memcpy(mean, m->mean, (size_t)C * sizeof(double));
    memcpy(m2, m->m2, (size_t)C * sizeof(double));
    int64_t count = m->count;
    for (int64_t i0 = 0; i0 < a.n_images && st == VDNA_OK; i0 += block) {
        int64_t nb = a.n_images - i0 < block ? a.n_images - i0 : block;
        st = vdna_image_means(&a, i0, nb, means, nans);
        if (st != VDNA_OK) break;
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t i = 0; i < nb; i++) s += means[i * C + c];
            double mb = s / (double)nb, q = 0.0;
            for (int64_t i = 0; i < nb; i++) {
                double d = means[i * C + c] - mb;
                q += d * d;
            }
            chan_merge(count, &mean[c], &m2[c], nb, mb, q);
        }
        count += nb;
    }
    if (st == VDNA_OK) {
        memcpy(m->mean, mean, (size_t)C * sizeof(double));
        memcpy(m->m2, m2, (size_t)C * sizeof(double));
        for (int64_t c = 0; c < C; c++) m->nan_counts[c] += nans[c];
        m->count = count;
    }
    free(means);
    free(nans);
    free(mean);
    free(m2);
    return st;
}

vdna_status vdna_moments_merge(vdna_moments *m, const vdna_moments *other) {
    vdna_clear_error();
    if (m == NULL || other == NULL) return vdna_fail(VDNA_ERR_ARG, "moments merge: NULL accumulator");
    if (m->n_neurons != other->n_neurons || m->layout != other->layout)
        return vdna_fail(VDNA_ERR_MISMATCH, "moments merge: (neurons %lld, layout %s) vs (neurons %lld, layout %s)",
                         (long long)m->n_neurons, vdna_layout_name(m->layout), (long long)other->n_neurons,
                         vdna_layout_name(other->layout));
    int64_t nb = other->count; /* read first: other may be m */
    for (int64_t c = 0; c < m->n_neurons; c++) {
        chan_merge(m->count, &m->mean[c], &m->m2[c], nb, other->mean[c], other->m2[c]);
        m->nan_counts[c] += other->nan_counts[c];
    }
    m->count += nb;
    return VDNA_OK;
}

void vdna_moments_reset(vdna_moments *m) {
    if (m == NULL) return;
    size_t c = (size_t)m->n_neurons;
    memset(m->mean, 0, c * sizeof(double));
    memset(m->m2, 0, c * sizeof(double));
    memset(m->nan_counts, 0, c * sizeof(int64_t));
    m->count = 0;
}

vdna_status vdna_moments_mean(const vdna_moments *m, double *mean) {
    vdna_clear_error();
    if (m == NULL || mean == NULL) return vdna_fail(VDNA_ERR_ARG, "moments mean: NULL argument");
    if (m->count == 0) return vdna_fail(VDNA_ERR_EMPTY, "moments: no images accumulated");
    memcpy(mean, m->mean, (size_t)m->n_neurons * sizeof(double));
    return VDNA_OK;
}

vdna_status vdna_moments_var(const vdna_moments *m, double *var) {
    vdna_clear_error();
    if (m == NULL || var == NULL) return vdna_fail(VDNA_ERR_ARG, "moments var: NULL argument");
    if (m->count == 0) return vdna_fail(VDNA_ERR_EMPTY, "moments: no images accumulated");
    for (int64_t c = 0; c < m->n_neurons; c++) var[c] = m->count == 1 ? 0.0 : m->m2[c] / (double)(m->count - 1);
    return VDNA_OK;
}

vdna_status vdna_moments_state(const vdna_moments *m, int64_t *count, double *mean, double *m2) {
    vdna_clear_error();
    if (m == NULL) return vdna_fail(VDNA_ERR_ARG, "moments state: NULL accumulator");
    if (count) *count = m->count;
    if (mean) memcpy(mean, m->mean, (size_t)m->n_neurons * sizeof(double));
    if (m2) memcpy(m2, m->m2, (size_t)m->n_neurons * sizeof(double));
    return VDNA_OK;
}

vdna_status vdna_moments_set_state(vdna_moments *m, int64_t count, const double *mean, const double *m2,
                                   const int64_t *nan_counts) {
    vdna_clear_error();
    if (m == NULL) return vdna_fail(VDNA_ERR_ARG, "moments set_state: NULL accumulator");
    if (count < 0) return vdna_fail(VDNA_ERR_ARG, "moments set_state: count %lld < 0", (long long)count);
    if (count == 0) {
        vdna_moments_reset(m);
        return VDNA_OK;
    }
    if (mean == NULL || m2 == NULL) return vdna_fail(VDNA_ERR_ARG, "moments set_state: NULL mean or m2");
    for (int64_t c = 0; c < m->n_neurons; c++)
        if (m2[c] < 0)
            return vdna_fail(VDNA_ERR_ARG, "moments set_state: negative m2 %g at neuron %lld", m2[c], (long long)c);
    vdna_status st = vdna_check_nan_counts(nan_counts, m->n_neurons, "moments set_state");
    if (st != VDNA_OK) return st;
    memcpy(m->mean, mean, (size_t)m->n_neurons * sizeof(double));
    memcpy(m->m2, m2, (size_t)m->n_neurons * sizeof(double));
    vdna_copy_nan_counts(m->nan_counts, nan_counts, m->n_neurons);
    m->count = count;
    return VDNA_OK;
}

vdna_status vdna_moments_nan_counts(const vdna_moments *m, int64_t *nan_counts) {
    vdna_clear_error();
    if (m == NULL || nan_counts == NULL) return vdna_fail(VDNA_ERR_ARG, "moments nan_counts: NULL argument");
    memcpy(nan_counts, m->nan_counts, (size_t)m->n_neurons * sizeof(int64_t));
    return VDNA_OK;
}
int64_t vdna_moments_num_images(const vdna_moments *m) { return m ? m->count : -1; }
int64_t vdna_moments_n_neurons(const vdna_moments *m) { return m ? m->n_neurons : -1; }
vdna_layout vdna_moments_layout(const vdna_moments *m) { return m ? m->layout : (vdna_layout)-1; }

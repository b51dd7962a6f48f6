/* ranges.c: per-neuron min/max over every activation value (calibration of histogram ranges).
 *
 * NaN is skipped (comparisons with NaN are false) and counted; +-Inf are kept. A neuron that has
 * seen no value yet holds min = +Inf > max = -Inf, which read-out reports as NaN. Min and max are
 * exact, so results do not depend on order or threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

struct vdna_ranges_s {
    int64_t n_neurons, num_images;
    vdna_layout layout;
    double *mins, *maxs;
    int64_t *nan_counts;
};

static void clear_state(vdna_ranges *r) {
    for (int64_t c = 0; c < r->n_neurons; c++) {
        r->mins[c] = INFINITY;
        r->maxs[c] = -INFINITY;
        r->nan_counts[c] = 0;
    }
    r->num_images = 0;
}

void vdna_ranges_free(vdna_ranges *r) {
    if (r == NULL) return;
    free(r->mins);
    free(r->maxs);
    free(r->nan_counts);
    free(r);
}

vdna_status vdna_ranges_create(vdna_ranges **out, int64_t n_neurons, vdna_layout layout) {
    vdna_clear_error();
    if (out == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges: NULL output pointer");
    *out = NULL;
    vdna_status st = vdna_check_create(n_neurons, layout, "ranges");
    if (st != VDNA_OK) return st;
    if ((uint64_t)n_neurons > SIZE_MAX / sizeof(double))
        return vdna_fail(VDNA_ERR_NOMEM, "ranges: %lld neurons is too many", (long long)n_neurons);
    vdna_ranges *r = calloc(1, sizeof *r);
    if (r == NULL) return vdna_fail(VDNA_ERR_NOMEM, "ranges: cannot allocate the accumulator");
    r->mins = malloc((size_t)n_neurons * sizeof(double));
    r->maxs = malloc((size_t)n_neurons * sizeof(double));
    r->nan_counts = malloc((size_t)n_neurons * sizeof(int64_t));
    if (!r->mins || !r->maxs || !r->nan_counts) {
        vdna_ranges_free(r);
        return vdna_fail(VDNA_ERR_NOMEM, "ranges: cannot allocate state for %lld neurons", (long long)n_neurons);
    }
    r->n_neurons = n_neurons;
    r->layout = layout;
    clear_state(r);
    *out = r;
    return VDNA_OK;
}

typedef struct {
    vdna_ranges *r;
    const vdna_acts *a;
} ranges_job;

static void ranges_by_neuron(void *ctx, int64_t c0, int64_t c1) {
    const ranges_job *job = ctx;
    const vdna_acts *a = job->a;
    vdna_ranges *r = job->r;
    double buf[VDNA_BLOCK];
    const int64_t run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a);
    for (int64_t c = c0; c < c1; c++) {
        double lo = r->mins[c], hi = r->maxs[c];
        int64_t nans = 0;
        for (int64_t n = 0; n < a->n_images; n++) {
            int64_t base = n * a->image_stride + c * a->neuron_stride;
            for (int64_t p = 0; p < a->n_samples; p += run) {
                int64_t off = base + vdna_acts_sample_offset(a, p);
                for (int64_t j = 0; j < run; j += VDNA_BLOCK) {
                    int64_t len = run - j < VDNA_BLOCK ? run - j : VDNA_BLOCK;
                    vdna_load_block(buf, a->data, a->dtype, off + j * rs, rs, len);
                    for (int64_t q = 0; q < len; q++) {
                        double v = buf[q];
                        lo = v < lo ? v : lo;
                        hi = v > hi ? v : hi;
                        nans += v != v;
                    }
                }
            }
        }
        r->mins[c] = lo;
        r->maxs[c] = hi;
        r->nan_counts[c] += nans;
    }
}

static void ranges_by_row(void *ctx, int64_t c0, int64_t c1) {
    const ranges_job *job = ctx;
    const vdna_acts *a = job->a;
    vdna_ranges *r = job->r;
    double buf[VDNA_BLOCK];
    const int64_t sc = a->neuron_stride;
    for (int64_t n = 0; n < a->n_images; n++) {
        for (int64_t p = 0; p < a->n_samples; p++) {
            int64_t off = n * a->image_stride + vdna_acts_sample_offset(a, p);
            for (int64_t cb = c0; cb < c1; cb += VDNA_BLOCK) {
                int64_t len = c1 - cb < VDNA_BLOCK ? c1 - cb : VDNA_BLOCK;
                vdna_load_block(buf, a->data, a->dtype, off + cb * sc, sc, len);
                double *lo = r->mins + cb, *hi = r->maxs + cb;
                int64_t *nans = r->nan_counts + cb;
                for (int64_t q = 0; q < len; q++) {
                    double v = buf[q];
                    lo[q] = v < lo[q] ? v : lo[q];
                    hi[q] = v > hi[q] ? v : hi[q];
                    nans[q] += v != v;
                }
            }
        }
    }
}

vdna_status vdna_ranges_update(vdna_ranges *r, const vdna_array *x) {
    vdna_clear_error();
    if (r == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges update: NULL accumulator");
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, r->layout, r->n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images == 0) return VDNA_OK;
    ranges_job job = {r, &a};
    int64_t per_neuron = a.n_images * a.n_samples;
    int64_t min_chunk = per_neuron >= 8192 ? 1 : 8192 / per_neuron;
    st = vdna_parallel_for(r->n_neurons, min_chunk, a.by_rows ? ranges_by_row : ranges_by_neuron, &job);
    if (st != VDNA_OK) return st;
    r->num_images += a.n_images;
    return VDNA_OK;
}

vdna_status vdna_ranges_merge(vdna_ranges *r, const vdna_ranges *other) {
    vdna_clear_error();
    if (r == NULL || other == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges merge: NULL accumulator");
    if (r->n_neurons != other->n_neurons || r->layout != other->layout)
        return vdna_fail(VDNA_ERR_MISMATCH, "ranges merge: (neurons %lld, layout %s) vs (neurons %lld, layout %s)",
                         (long long)r->n_neurons, vdna_layout_name(r->layout), (long long)other->n_neurons,
                         vdna_layout_name(other->layout));
    for (int64_t c = 0; c < r->n_neurons; c++) {
        r->mins[c] = other->mins[c] < r->mins[c] ? other->mins[c] : r->mins[c];
        r->maxs[c] = other->maxs[c] > r->maxs[c] ? other->maxs[c] : r->maxs[c];
        r->nan_counts[c] += other->nan_counts[c];
    }
    r->num_images += other->num_images;
    return VDNA_OK;
}

void vdna_ranges_reset(vdna_ranges *r) {
    if (r != NULL) clear_state(r);
}

vdna_status vdna_ranges_minmax(const vdna_ranges *r, double *mins, double *maxs) {
    vdna_clear_error();
    if (r == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges minmax: NULL accumulator");
    if (r->num_images == 0) return vdna_fail(VDNA_ERR_EMPTY, "ranges: no images accumulated");
    for (int64_t c = 0; c < r->n_neurons; c++) {
        int none = r->mins[c] > r->maxs[c];
        if (mins) mins[c] = none ? NAN : r->mins[c];
        if (maxs) maxs[c] = none ? NAN : r->maxs[c];
    }
    return VDNA_OK;
}

vdna_status vdna_ranges_set_state(vdna_ranges *r, int64_t num_images, const double *mins, const double *maxs,
                                  const int64_t *nan_counts) {
    vdna_clear_error();
    if (r == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges set_state: NULL accumulator");
    if (num_images < 0) return vdna_fail(VDNA_ERR_ARG, "ranges set_state: num_images %lld < 0", (long long)num_images);
    if (num_images == 0) {
        clear_state(r);
        return VDNA_OK;
    }
    if (mins == NULL || maxs == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges set_state: NULL mins or maxs");
    for (int64_t c = 0; c < r->n_neurons; c++) {
        int both_nan = isnan(mins[c]) && isnan(maxs[c]);
        if (!both_nan && !(mins[c] <= maxs[c]))
            return vdna_fail(VDNA_ERR_ARG, "ranges set_state: neuron %lld has min %g > max %g (or one NaN)",
                             (long long)c, mins[c], maxs[c]);
    }
    vdna_status st = vdna_check_nan_counts(nan_counts, r->n_neurons, "ranges set_state");
    if (st != VDNA_OK) return st;
    for (int64_t c = 0; c < r->n_neurons; c++) {
        int none = isnan(mins[c]);
        r->mins[c] = none ? INFINITY : mins[c];
        r->maxs[c] = none ? -INFINITY : maxs[c];
    }
    vdna_copy_nan_counts(r->nan_counts, nan_counts, r->n_neurons);
    r->num_images = num_images;
    return VDNA_OK;
}

vdna_status vdna_ranges_nan_counts(const vdna_ranges *r, int64_t *nan_counts) {
    vdna_clear_error();
    if (r == NULL || nan_counts == NULL) return vdna_fail(VDNA_ERR_ARG, "ranges nan_counts: NULL argument");
    memcpy(nan_counts, r->nan_counts, (size_t)r->n_neurons * sizeof(int64_t));
    return VDNA_OK;
}
int64_t vdna_ranges_num_images(const vdna_ranges *r) { return r ? r->num_images : -1; }
int64_t vdna_ranges_n_neurons(const vdna_ranges *r) { return r ? r->n_neurons : -1; }
vdna_layout vdna_ranges_layout(const vdna_ranges *r) { return r ? r->layout : (vdna_layout)-1; }

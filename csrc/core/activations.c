/* activations.c: shape checks, iteration geometry, block loads and per-image means. */
#include "activations.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *vdna_layout_name(vdna_layout layout) {
    return layout == VDNA_LAYOUT_TOKENS ? "tokens" : layout == VDNA_LAYOUT_CHANNELS ? "channels" : "unknown";
}

vdna_status vdna_check_create(int64_t n_neurons, vdna_layout layout, const char *what) {
    if (layout != VDNA_LAYOUT_CHANNELS && layout != VDNA_LAYOUT_TOKENS)
        return vdna_fail(VDNA_ERR_ARG, "%s: unknown layout %d (expected channels or tokens)", what, (int)layout);
    if (n_neurons < 1)
        return vdna_fail(VDNA_ERR_ARG, "%s: n_neurons must be >= 1, got %lld", what, (long long)n_neurons);
    return VDNA_OK;
}

void vdna_format_shape(char *buf, size_t size, const vdna_array *x) {
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "(");
    for (int d = 0; d < x->ndim && d < VDNA_MAX_RANK && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)x->shape[d]);
    if (used < size) snprintf(buf + used, size - used, x->ndim == 1 ? ",)" : ")");
}

vdna_status vdna_acts_describe(const vdna_array *x, vdna_layout layout, int64_t n_neurons, vdna_acts *a) {
    char got[256];
    if (x == NULL) return vdna_fail(VDNA_ERR_ARG, "activations: NULL array");
    if (x->dtype != VDNA_F16 && x->dtype != VDNA_F32 && x->dtype != VDNA_F64)
        return vdna_fail(VDNA_ERR_DTYPE, "activations: unsupported dtype code %d (expected f16, f32 or f64)",
                         (int)x->dtype);
    if (x->ndim < 0 || x->ndim > VDNA_MAX_RANK)
        return vdna_fail(VDNA_ERR_SHAPE, "activations: rank %d is not supported (at most %d)", x->ndim, VDNA_MAX_RANK);
    vdna_format_shape(got, sizeof got, x);
    int neuron_dim;
    if (layout == VDNA_LAYOUT_TOKENS) {
        if (x->ndim != 3 || x->shape[2] != n_neurons)
            return vdna_fail(VDNA_ERR_SHAPE, "activations of shape %s: expected (N, T, %lld) for layout 'tokens'",
                             got, (long long)n_neurons);
        neuron_dim = 2;
    } else {
        if (x->ndim < 2 || x->shape[1] != n_neurons)
            return vdna_fail(VDNA_ERR_SHAPE,
                             "activations of shape %s: expected (N, %lld, *spatial) for layout 'channels'", got,
                             (long long)n_neurons);
        neuron_dim = 1;
    }
    for (int d = 0; d < x->ndim; d++)
        if (x->shape[d] < 0) return vdna_fail(VDNA_ERR_SHAPE, "activations of shape %s: negative dimension", got);
    memset(a, 0, sizeof *a);
    a->data = x->data;
    a->dtype = x->dtype;
    a->n_images = x->shape[0];
    a->n_neurons = n_neurons;
    a->image_stride = x->strides[0];
    a->neuron_stride = x->strides[neuron_dim];
    /* sample dims: all dims but 0 and the neuron dim; drop size-1 dims, merge contiguous pairs */
    int64_t samples = 1;
    int k = 0;
    for (int d = 1; d < x->ndim; d++) {
        if (d == neuron_dim) continue;
        if (x->shape[d] == 0)
            return vdna_fail(VDNA_ERR_SHAPE, "activations of shape %s: no samples per image (a zero dimension)", got);
        if (samples > INT64_MAX / x->shape[d])
            return vdna_fail(VDNA_ERR_SHAPE, "activations of shape %s: too many samples per image", got);
        samples *= x->shape[d];
        if (x->shape[d] == 1) continue;
        if (k > 0 && a->sample_stride[k - 1] == x->strides[d] * x->shape[d]) {
            a->sample_shape[k - 1] *= x->shape[d];
            a->sample_stride[k - 1] = x->strides[d];
        } else {
            a->sample_shape[k] = x->shape[d];
            a->sample_stride[k] = x->strides[d];
            k++;
        }
    }
    if (k == 0) {
        a->sample_shape[0] = 1;
        a->sample_stride[0] = 1;
        k = 1;
    }
    a->n_sample_dims = k;
    a->n_samples = samples;
    if (a->n_images > 0 && a->data == NULL) return vdna_fail(VDNA_ERR_ARG, "activations of shape %s: NULL data", got);
    /* Long runs of samples per neuron: walk neuron by neuron. Otherwise (tokens, channels-last,
     * one sample per image) walk sample positions with the neurons innermost. */
    int64_t run_len = vdna_acts_run_len(a), run_stride = vdna_acts_run_stride(a);
    int neurons_adjacent = a->neuron_stride == 1 || a->neuron_stride == -1;
    a->by_rows = !(run_len >= 16 && (run_stride == 1 || !neurons_adjacent));
    return VDNA_OK;
}

int64_t vdna_acts_sample_offset(const vdna_acts *a, int64_t p) {
    if (a->n_sample_dims == 1) return p * a->sample_stride[0];
    int64_t off = 0;
    for (int d = a->n_sample_dims - 1; d >= 0; d--) {
        int64_t n = a->sample_shape[d];
        off += (p % n) * a->sample_stride[d];
        p /= n;
    }
    return off;
}

void vdna_load_block(double *dst, const void *data, vdna_dtype dtype, int64_t offset, int64_t stride, int64_t n) {
    switch (dtype) {
        case VDNA_F32: {
            const float *p = (const float *)data + offset;
            if (stride == 1) {
                for (int64_t i = 0; i < n; i++) dst[i] = (double)p[i];
            } else {
                for (int64_t i = 0; i < n; i++) dst[i] = (double)p[i * stride];
            }
            break;
        }
        case VDNA_F64: {
            const double *p = (const double *)data + offset;
            if (stride == 1) {
                memcpy(dst, p, (size_t)n * sizeof *dst);
            } else {
                for (int64_t i = 0; i < n; i++) dst[i] = p[i * stride];
            }
            break;
        }
        case VDNA_F16: {
            const uint16_t *p = (const uint16_t *)data + offset;
            for (int64_t i = 0; i < n; i++) dst[i] = vdna_half_to_double(p[i * stride]);
            break;
        }
    }
}

/* ---------------------------------------------------------------- per-image means */
typedef struct {
    const vdna_acts *a;
    int64_t image0, n_img;
    double *means;
    int64_t *nan_counts;
} means_job;

/* NaN values of image n, neuron c (only called when its sum is NaN, which is rare). */
static int64_t count_nans(const vdna_acts *a, int64_t n, int64_t c) {
    double buf[VDNA_BLOCK];
    int64_t nans = 0, run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a);
    int64_t base = n * a->image_stride + c * a->neuron_stride;
    for (int64_t p = 0; p < a->n_samples; p += run) {
        int64_t off = base + vdna_acts_sample_offset(a, p);
        for (int64_t i = 0; i < run; i += VDNA_BLOCK) {
            int64_t len = run - i < VDNA_BLOCK ? run - i : VDNA_BLOCK;
            vdna_load_block(buf, a->data, a->dtype, off + i * rs, rs, len);
            for (int64_t j = 0; j < len; j++) nans += buf[j] != buf[j];
        }
    }
    return nans;
}

/* Per neuron, MEAN_LANES images at a time: each image's sum still runs over its samples in order (the
 * same float64 result as one image at a time), but the lanes' additions are independent, so they
 * overlap instead of waiting on one another's latency. */
#define MEAN_LANES 4
static void means_by_neuron(void *ctx, int64_t c0, int64_t c1) {
    const means_job *job = ctx;
    const vdna_acts *a = job->a;
    double buf[MEAN_LANES][VDNA_BLOCK];
    int64_t run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a), C = a->n_neurons;
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t i0 = 0; i0 < job->n_img; i0 += MEAN_LANES) {
            const int lanes = job->n_img - i0 < MEAN_LANES ? (int)(job->n_img - i0) : MEAN_LANES;
            double sum[MEAN_LANES] = {0.0};
            for (int64_t p = 0; p < a->n_samples; p += run) {
                const int64_t sample_off = vdna_acts_sample_offset(a, p);
                for (int64_t j = 0; j < run; j += VDNA_BLOCK) {
                    const int64_t len = run - j < VDNA_BLOCK ? run - j : VDNA_BLOCK;
                    for (int u = 0; u < lanes; u++) {
                        const int64_t base = (job->image0 + i0 + u) * a->image_stride + c * a->neuron_stride;
                        vdna_load_block(buf[u], a->data, a->dtype, base + sample_off + j * rs, rs, len);
                    }
                    if (lanes == MEAN_LANES) {
                        double s0 = sum[0], s1 = sum[1], s2 = sum[2], s3 = sum[3];
                        for (int64_t q = 0; q < len; q++) {
                            s0 += buf[0][q];
                            s1 += buf[1][q];
                            s2 += buf[2][q];
                            s3 += buf[3][q];
                        }
                        sum[0] = s0, sum[1] = s1, sum[2] = s2, sum[3] = s3;
                    } else {
                        for (int u = 0; u < lanes; u++)
                            for (int64_t q = 0; q < len; q++) sum[u] += buf[u][q];
                    }
                }
            }
            for (int u = 0; u < lanes; u++) {
                const int64_t n = job->image0 + i0 + u;
                if (isnan(sum[u])) job->nan_counts[c] += count_nans(a, n, c);
                job->means[(i0 + u) * C + c] = sum[u] / (double)a->n_samples;
            }
        }
    }
}

static void means_by_row(void *ctx, int64_t c0, int64_t c1) {
    const means_job *job = ctx;
    const vdna_acts *a = job->a;
    double buf[VDNA_BLOCK];
    int64_t C = a->n_neurons, sc = a->neuron_stride;
    for (int64_t i = 0; i < job->n_img; i++) {
        int64_t n = job->image0 + i;
        double *row = job->means + i * C;
        for (int64_t c = c0; c < c1; c++) row[c] = 0.0;
        for (int64_t p = 0; p < a->n_samples; p++) {
            int64_t off = n * a->image_stride + vdna_acts_sample_offset(a, p);
            for (int64_t cb = c0; cb < c1; cb += VDNA_BLOCK) {
                int64_t len = c1 - cb < VDNA_BLOCK ? c1 - cb : VDNA_BLOCK;
                vdna_load_block(buf, a->data, a->dtype, off + cb * sc, sc, len);
                for (int64_t q = 0; q < len; q++) row[cb + q] += buf[q];
            }
        }
        for (int64_t c = c0; c < c1; c++) {
            if (isnan(row[c])) job->nan_counts[c] += count_nans(a, n, c);
            row[c] /= (double)a->n_samples;
        }
    }
}

vdna_status vdna_image_means(const vdna_acts *a, int64_t image0, int64_t n_img, double *means, int64_t *nan_counts) {
    means_job job = {a, image0, n_img, means, nan_counts};
    int64_t work = n_img * a->n_samples; /* values per neuron */
    int64_t min_chunk = work >= 4096 ? 1 : 4096 / (work > 0 ? work : 1);
    return vdna_parallel_for(a->n_neurons, min_chunk, a->by_rows ? means_by_row : means_by_neuron, &job);
}

vdna_status vdna_image_mean_vectors(const vdna_array *x, vdna_layout layout, int64_t n_neurons, double *means,
                                    int64_t *nan_counts) {
    vdna_clear_error();
    vdna_status st = vdna_check_create(n_neurons, layout, "image_mean_vectors");
    if (st != VDNA_OK) return st;
    vdna_acts a;
    st = vdna_acts_describe(x, layout, n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images > 0 && means == NULL) return vdna_fail(VDNA_ERR_ARG, "image_mean_vectors: NULL output");
    int64_t *nans = calloc((size_t)n_neurons, sizeof *nans);
    if (nans == NULL) return vdna_fail(VDNA_ERR_NOMEM, "image_mean_vectors: cannot allocate %lld counters", (long long)n_neurons);
    if (a.n_images > 0) st = vdna_image_means(&a, 0, a.n_images, means, nans);
    if (st == VDNA_OK && nan_counts != NULL) memcpy(nan_counts, nans, (size_t)n_neurons * sizeof *nans);
    free(nans);
    return st;
}

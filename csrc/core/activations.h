/* activations.h: reading a batch of a layer's activations (internal to the accumulators).
 *
 * One place for: checking an array's rank/shape against a layout, describing it as
 * images x neurons x samples, choosing the memory-friendly iteration order, loading blocks of
 * values as double, and per-image means (shared by moments and covariance). */
#ifndef VDNA_ACTIVATIONS_H
#define VDNA_ACTIVATIONS_H

#include "internal.h"

/* Values processed per block (small buffers on the stack). */
#define VDNA_BLOCK 256

typedef struct {
    const void *data;
    vdna_dtype dtype;
    int64_t n_images, n_neurons, n_samples; /* N, C, samples per image and neuron (>= 1) */
    int64_t image_stride, neuron_stride;     /* in elements */
    /* sample dimensions, outermost first, size-1 dims dropped and contiguous ones merged (>= 1) */
    int n_sample_dims;
    int64_t sample_shape[VDNA_MAX_RANK], sample_stride[VDNA_MAX_RANK];
    /* Iteration order: 0 = per neuron, runs along the innermost sample dimension (long runs);
     * 1 = per sample position, neurons innermost (tokens, channels-last, one sample per image). */
    int by_rows;
} vdna_acts;

/* Check `x` against `layout` and `n_neurons` and describe it. VDNA_ERR_SHAPE (message names the
 * expected and the actual shape), VDNA_ERR_DTYPE or VDNA_ERR_ARG otherwise. */
vdna_status vdna_acts_describe(const vdna_array *x, vdna_layout layout, int64_t n_neurons, vdna_acts *a);

/* Element offset of sample position p (row-major over the sample dimensions). */
int64_t vdna_acts_sample_offset(const vdna_acts *a, int64_t p);

/* Length and stride of the innermost sample dimension (a "run"). */
static inline int64_t vdna_acts_run_len(const vdna_acts *a) { return a->sample_shape[a->n_sample_dims - 1]; }
static inline int64_t vdna_acts_run_stride(const vdna_acts *a) { return a->sample_stride[a->n_sample_dims - 1]; }

/* dst[i] = (double)data[offset + i*stride], i < n. */
void vdna_load_block(double *dst, const void *data, vdna_dtype dtype, int64_t offset, int64_t stride, int64_t n);

/* Per-image means of images [image0, image0 + n_img): means[i*C + c], float64, each a sequential
 * sum over the samples in sample order divided by the number of samples (so the result does not
 * depend on strides or threads). Adds the NaN values seen to nan_counts[c]. */
vdna_status vdna_image_means(const vdna_acts *a, int64_t image0, int64_t n_img, double *means, int64_t *nan_counts);

/* Shape as text, "(2, 3, 4)", for messages. */
void vdna_format_shape(char *buf, size_t size, const vdna_array *x);

const char *vdna_layout_name(vdna_layout layout);

/* Validate a layout value and a neuron count at creation (VDNA_ERR_ARG with a message). */
vdna_status vdna_check_create(int64_t n_neurons, vdna_layout layout, const char *what);

#endif

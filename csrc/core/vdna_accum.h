/* vdna_accum.h: accumulators of a layer's activations. Part of the public API; include vdna_core.h.
 *
 * Four streaming accumulators, one per kind of Visual DNA (docs/design.md, "Normative semantics"):
 *   vdna_hist     per-neuron histograms of normalised activations ("histogram")
 *   vdna_moments  per-neuron mean/variance over per-image means ("gaussian")
 *   vdna_cov      per-layer mean vector/covariance over per-image means ("layer-gaussian")
 *   vdna_ranges   per-neuron min/max over every value ("activation-ranges")
 * Life cycle: create -> update (any number of batches) -> merge / read out -> reset or free.
 * update() takes a batch of activations, a vdna_array with layout CHANNELS (N, C, *spatial) or
 * TOKENS (N, T, C); dtype f16/f32/f64; any strides. N == 0 is a no-op. Every update also counts,
 * per neuron, the NaN values it saw ("nan counts").
 * Merging two accumulators of disjoint image sets equals accumulating their union: exactly for
 * counts and min/max, to rounding for moments and covariance. Results never depend on the number
 * of threads (vdna_set_num_threads). Read-outs write into caller-provided buffers and return
 * VDNA_ERR_ARG for a NULL accumulator or a NULL required buffer (optional ones are named so);
 * the scalar getters (num_images, n_neurons, bins, layout) return -1 for a NULL accumulator. */
#ifndef VDNA_ACCUM_H
#define VDNA_ACCUM_H

/* ================================================================ histograms */
typedef struct vdna_hist_s vdna_hist;

/* Create a histogram accumulator of `bins` equal bins for `n_neurons` neurons, binning with the
 * calibrated activation ranges mins[i] <= maxs[i] (copied). Normalisation: lo = 1.2 min,
 * hi = 1.2 max, centre = (lo+hi)/2, half = (hi-lo)/2 + 1e-8, z = (x-centre)/half clamped to [-1,1],
 * bin = min(B-1, floor((z+1) B/2)), in float64. Returns VDNA_ERR_RANGE naming the first neuron whose
 * range is not finite or has min > max; on any failure *out is NULL. */
vdna_status vdna_hist_create(vdna_hist **out, int64_t n_neurons, int64_t bins, const double *mins,
                             const double *maxs, vdna_layout layout);

/* Release the accumulator (NULL is a no-op). */
void vdna_hist_free(vdna_hist *h);

/* Add every value of the batch `x` to its neuron's histogram. Values on an interior bin edge go
 * to the upper bin; +-Inf go to the end bins; NaN is counted, never binned. Returns
 * VDNA_ERR_SHAPE / VDNA_ERR_DTYPE when x does not fit (the state is then unchanged). */
vdna_status vdna_hist_update(vdna_hist *h, const vdna_array *x);

/* Add `other`'s counts into `h`. Both must have the same neurons, bins, ranges and layout
 * (else VDNA_ERR_MISMATCH); `other` is unchanged and may be `h` itself (doubles the counts). */
vdna_status vdna_hist_merge(vdna_hist *h, const vdna_hist *other);

/* Add a saved state: counts (n_neurons x bins, row-major), nan_counts (n_neurons; NULL = zeros)
 * and a number of images. Negative values or an int64 overflow give VDNA_ERR_ARG and change
 * nothing. */
vdna_status vdna_hist_add_counts(vdna_hist *h, const int64_t *counts, const int64_t *nan_counts,
                                 int64_t num_images);

/* Forget every image (the ranges and bins stay). */
void vdna_hist_reset(vdna_hist *h);

/* Copy the counts (n_neurons x bins, row-major) / the NaN counts (n_neurons) / the ranges given
 * at creation (unscaled mins and maxs, n_neurons each; either may be NULL: not copied). */
vdna_status vdna_hist_counts(const vdna_hist *h, int64_t *counts);
vdna_status vdna_hist_nan_counts(const vdna_hist *h, int64_t *nan_counts);
vdna_status vdna_hist_ranges(const vdna_hist *h, double *mins, double *maxs);

int64_t vdna_hist_num_images(const vdna_hist *h);
int64_t vdna_hist_n_neurons(const vdna_hist *h);
int64_t vdna_hist_bins(const vdna_hist *h);
vdna_layout vdna_hist_layout(const vdna_hist *h);

/* ---- Advanced: the kernel of the float32 hot loops (process-wide). Kernels give identical
 * counts and differ only in speed: "portable" (C), "avx2" and "avx512" (x86-64 intrinsics; AVX-512
 * F and DQ). "auto", the default, times the kernels this CPU runs at the first float32 update
 * (about a millisecond, once per process) and keeps the fastest. The environment variable
 * VDNA_HIST_KERNEL (auto, portable, avx2, avx512), read at the first update, sets the choice;
 * a value that is not a kernel this CPU runs makes every update fail with VDNA_ERR_ARG. */

/* Use kernel `name` (or "auto") from now on; VDNA_ERR_ARG if it is unknown, or not compiled in, or
 * this CPU does not run it (the message says which). Overrides VDNA_HIST_KERNEL. */
vdna_status vdna_hist_set_kernel(const char *name);

/* Name of the kernel that float32 updates use ("auto" resolved, measuring first if needed); NULL
 * when VDNA_HIST_KERNEL is invalid (vdna_last_error() says why). */
const char *vdna_hist_kernel(void);

/* 1 when vdna_hist_set_kernel(name) would succeed, else 0. */
int vdna_hist_kernel_available(const char *name);

/* Subsets of a dataset from one pass (stability curves; subset.c): count image i's values into the
 * tables groups[i * n_sets + s] for s < n_sets (-1: none), with the bins of h (exactly those of
 * vdna_hist_update, value for value). h itself is not changed. `tables` is n_neurons x n_tables x
 * bins uint32 counts, row-major (neuron-major: neuron c's row of table t is at (c * n_tables + t) *
 * bins, so one neuron's rows of every table are contiguous); caller-owned memory, e.g. a
 * memory-mapped file. table_images[t] (images counted into table t so far) and table_nans
 * (n_tables x n_neurons NaN counts) are updated too.
 * Everything is checked before anything changes: group indices in [-1, n_tables), and
 * (table_images[t] + this batch's images for t) x samples per image <= 2^32 - 1 for every table
 * (so no 32-bit count can overflow); VDNA_ERR_ARG otherwise.
 * Surprise: an image listed twice for one table is counted twice. */
vdna_status vdna_hist_count_groups(const vdna_hist *h, const vdna_array *x, const int64_t *groups, int64_t n_sets,
                                   uint32_t *tables, int64_t n_tables, int64_t *table_images, int64_t *table_nans);

/* The same with tables of two widths: "wide" uint32 tables (n_neurons x n_wide x bins) and "narrow"
 * uint16 ones (n_neurons x n_narrow x bins), both neuron-major; table t (0 <= t < n_tables, the
 * indices of `groups`) is wide table where[t] when where[t] >= 0, narrow table -1 - where[t]
 * otherwise; every wide and narrow table is used at most once. A narrow table takes at most
 * (2^16 - 1) / (samples per image) images in all (checked like the wide bound, before anything
 * changes): the caller picks narrow tables from the number of images they will ever hold.
 * vdna_hist_count_groups is where = NULL, n_wide = n_tables, no narrow tables. */
vdna_status vdna_hist_count_groups_mixed(const vdna_hist *h, const vdna_array *x, const int64_t *groups, int64_t n_sets,
                                         int64_t n_tables, const int64_t *where, uint32_t *wide, int64_t n_wide,
                                         uint16_t *narrow, int64_t n_narrow, int64_t *table_images,
                                         int64_t *table_nans);

/* ================================================================ per-neuron moments */
typedef struct vdna_moments_s vdna_moments;

/* Create a per-neuron Gaussian accumulator. Each image is first averaged over its samples
 * (float64 sum in sample order, divided by the sample count); over images the state is
 * (count, mean, M2), merged with Chan's formulas in float64. */
vdna_status vdna_moments_create(vdna_moments **out, int64_t n_neurons, vdna_layout layout);
void vdna_moments_free(vdna_moments *m);

/* Add the batch's images. NaN values propagate into their neuron's statistics (IEEE) and are
 * counted. */
vdna_status vdna_moments_update(vdna_moments *m, const vdna_array *x);

/* Combine `other` into `m` (same neurons and layout, else VDNA_ERR_MISMATCH). */
vdna_status vdna_moments_merge(vdna_moments *m, const vdna_moments *other);
void vdna_moments_reset(vdna_moments *m);

/* Mean (n_neurons) and unbiased variance (n_neurons; 0 for one image). VDNA_ERR_EMPTY without
 * images. */
vdna_status vdna_moments_mean(const vdna_moments *m, double *mean);
vdna_status vdna_moments_var(const vdna_moments *m, double *var);

/* Read / replace the state (count, mean, M2 = sum of squared deviations, per-neuron NaN counts; in
 * `state` each output may be NULL: not written). set_state checks count >= 0, M2 >= 0 (NaN allowed:
 * it may have propagated) and nan_counts >= 0 (NULL: zeros), and with count == 0 just resets. */
vdna_status vdna_moments_state(const vdna_moments *m, int64_t *count, double *mean, double *m2);
vdna_status vdna_moments_set_state(vdna_moments *m, int64_t count, const double *mean, const double *m2,
                                   const int64_t *nan_counts);

vdna_status vdna_moments_nan_counts(const vdna_moments *m, int64_t *nan_counts);
int64_t vdna_moments_num_images(const vdna_moments *m);
int64_t vdna_moments_n_neurons(const vdna_moments *m);
vdna_layout vdna_moments_layout(const vdna_moments *m);

/* The per-image mean vectors that vdna_moments and vdna_cov accumulate, for a batch `x` of
 * `layout` with n_neurons neurons: means[i * n_neurons + c] (float64), each the float64 sum of the
 * image's samples in sample order divided by their number (independent of strides and threads).
 * nan_counts (n_neurons; may be NULL) receives the NaN values seen per neuron. These vectors, fed
 * as (N, C) 'channels' activations to vdna_moments / vdna_cov, give the statistics of `x` (the same
 * values when fed in the same batches; batched otherwise, the same to rounding). */
vdna_status vdna_image_mean_vectors(const vdna_array *x, vdna_layout layout, int64_t n_neurons, double *means,
                                    int64_t *nan_counts);

/* ================================================================ layer covariance */
typedef struct vdna_cov_s vdna_cov;

/* Create a layer Gaussian accumulator (mean vector and covariance of the per-image mean vectors).
 * The state is shifted sums about the first image's mean vector (BLAS dsyrk), stable when
 * |mean| >> spread; it holds an n_neurons^2 float64 matrix. */
vdna_status vdna_cov_create(vdna_cov **out, int64_t n_neurons, vdna_layout layout);
void vdna_cov_free(vdna_cov *c);

/* Add the batch's images. NaN propagates (IEEE) and is counted. */
vdna_status vdna_cov_update(vdna_cov *c, const vdna_array *x);

/* Combine `other` into `c` (same neurons and layout, else VDNA_ERR_MISMATCH); the two states may
 * have different shifts. */
vdna_status vdna_cov_merge(vdna_cov *c, const vdna_cov *other);
void vdna_cov_reset(vdna_cov *c);

/* Mean vector (n_neurons) and unbiased covariance (n_neurons^2, symmetric; zeros for one image).
 * VDNA_ERR_EMPTY without images. */
vdna_status vdna_cov_mean(const vdna_cov *c, double *mean);
vdna_status vdna_cov_cov(const vdna_cov *c, double *cov);

/* Read / replace the state (count, mean, M2 = sum of outer products of deviations, n_neurons^2,
 * per-neuron NaN counts; in `state` each output may be NULL: not written). set_state needs a
 * symmetric M2 (to 1e-12 relative; the two triangles are averaged), count >= 0 and nan_counts >= 0
 * (NULL: zeros), and with count == 0 just resets. */
vdna_status vdna_cov_state(const vdna_cov *c, int64_t *count, double *mean, double *m2);
vdna_status vdna_cov_set_state(vdna_cov *c, int64_t count, const double *mean, const double *m2,
                               const int64_t *nan_counts);

vdna_status vdna_cov_nan_counts(const vdna_cov *c, int64_t *nan_counts);
int64_t vdna_cov_num_images(const vdna_cov *c);
int64_t vdna_cov_n_neurons(const vdna_cov *c);
vdna_layout vdna_cov_layout(const vdna_cov *c);

/* ================================================================ activation ranges */
typedef struct vdna_ranges_s vdna_ranges;

/* Create a per-neuron min/max accumulator over every value of every image (NaN skipped and
 * counted; +-Inf kept). */
vdna_status vdna_ranges_create(vdna_ranges **out, int64_t n_neurons, vdna_layout layout);
void vdna_ranges_free(vdna_ranges *r);
vdna_status vdna_ranges_update(vdna_ranges *r, const vdna_array *x);

/* Combine `other` into `r` (same neurons and layout, else VDNA_ERR_MISMATCH). */
vdna_status vdna_ranges_merge(vdna_ranges *r, const vdna_ranges *other);
void vdna_ranges_reset(vdna_ranges *r);

/* Minimum and maximum per neuron (either output may be NULL: not written); NaN for a neuron
 * that saw only NaN. VDNA_ERR_EMPTY without images. */
vdna_status vdna_ranges_minmax(const vdna_ranges *r, double *mins, double *maxs);

/* Replace the state. Each neuron needs min <= max, or both NaN (no value seen), and
 * nan_counts >= 0 (NULL: zeros); with num_images == 0 the state is just reset. */
vdna_status vdna_ranges_set_state(vdna_ranges *r, int64_t num_images, const double *mins, const double *maxs,
                                  const int64_t *nan_counts);

vdna_status vdna_ranges_nan_counts(const vdna_ranges *r, int64_t *nan_counts);
int64_t vdna_ranges_num_images(const vdna_ranges *r);
int64_t vdna_ranges_n_neurons(const vdna_ranges *r);
vdna_layout vdna_ranges_layout(const vdna_ranges *r);

#endif /* VDNA_ACCUM_H */

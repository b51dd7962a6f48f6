/* hist.c: per-neuron histograms of normalised activations (DESIGN.md "Bins").
 *
 * Exactness: each neuron's counts are written by exactly one thread (parallel over neurons), so
 * counts are integers independent of the thread count. The bin of a value is the one specified:
 * z = (x - centre) / half (a true division), clamped, then floor((z + 1) * B * 0.5) capped at B-1;
 * ((z+1)*B)*0.5 equals (z+1)*B/2 bit for bit. (A reciprocal instead of the division was tried:
 * it is not faster here, the loop is bound by loads, conversions and counting.)
 * Speed: bin indices of a block of values are computed in a vectorisable loop, then counted in
 * 32-bit local histograms (see "counting"); with many values per neuron, 4 interleaved ones, so
 * that repeated hits of one bin (e.g. ReLU zeros) do not serialise on one memory location. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"

#define MAX_BINS (1 << 30)
#define N_SUB 4

struct vdna_hist_s {
    int64_t n_neurons, bins, num_images;
    vdna_layout layout;
    double *mins, *maxs;    /* as given */
    double *centre, *half;  /* normalisation per neuron */
    int64_t *counts;        /* n_neurons x bins */
    int64_t *nan_counts;    /* n_neurons */
};

void vdna_hist_free(vdna_hist *h) {
    if (h == NULL) return;
    free(h->mins);
    free(h->maxs);
    free(h->centre);
    free(h->half);
    free(h->counts);
    free(h->nan_counts);
    free(h);
}

vdna_status vdna_hist_create(vdna_hist **out, int64_t n_neurons, int64_t bins, const double *mins,
                             const double *maxs, vdna_layout layout) {
    vdna_clear_error();
    if (out == NULL) return vdna_fail(VDNA_ERR_ARG, "hist: NULL output pointer");
    *out = NULL;
    vdna_status st = vdna_check_create(n_neurons, layout, "hist");
    if (st != VDNA_OK) return st;
    if (bins < 1 || bins > MAX_BINS)
        return vdna_fail(VDNA_ERR_ARG, "hist: bins must be in [1, %d], got %lld", MAX_BINS, (long long)bins);
    if (mins == NULL || maxs == NULL) return vdna_fail(VDNA_ERR_ARG, "hist: NULL activation ranges");
    if ((uint64_t)n_neurons > (uint64_t)(SIZE_MAX / sizeof(int64_t)) / (uint64_t)bins)
        return vdna_fail(VDNA_ERR_NOMEM, "hist: %lld neurons x %lld bins is too large", (long long)n_neurons,
                         (long long)bins);
    for (int64_t i = 0; i < n_neurons; i++) {
        double lo = 1.2 * mins[i], hi = 1.2 * maxs[i];
        if (!isfinite(mins[i]) || !isfinite(maxs[i]))
            return vdna_fail(VDNA_ERR_RANGE, "hist: neuron %lld has a non-finite activation range [%g, %g]",
                             (long long)i, mins[i], maxs[i]);
        if (mins[i] > maxs[i])
            return vdna_fail(VDNA_ERR_RANGE, "hist: neuron %lld has min %g > max %g", (long long)i, mins[i], maxs[i]);
        if (!isfinite(lo) || !isfinite(hi) || !isfinite(hi - lo) || !isfinite(lo + hi))
            return vdna_fail(VDNA_ERR_RANGE, "hist: neuron %lld: activation range [%g, %g] is too large to normalise",
                             (long long)i, mins[i], maxs[i]);
    }
    vdna_hist *h = calloc(1, sizeof *h);
    if (h == NULL) return vdna_fail(VDNA_ERR_NOMEM, "hist: cannot allocate the accumulator");
    size_t c = (size_t)n_neurons;
    h->mins = malloc(c * sizeof(double));
    h->maxs = malloc(c * sizeof(double));
    h->centre = malloc(c * sizeof(double));
    h->half = malloc(c * sizeof(double));
    h->counts = calloc(c * (size_t)bins, sizeof(int64_t));
    h->nan_counts = calloc(c, sizeof(int64_t));
    if (!h->mins || !h->maxs || !h->centre || !h->half || !h->counts || !h->nan_counts) {
        vdna_hist_free(h);
        return vdna_fail(VDNA_ERR_NOMEM, "hist: cannot allocate %lld x %lld counts", (long long)n_neurons,
                         (long long)bins);
    }
    h->n_neurons = n_neurons;
    h->bins = bins;
    h->layout = layout;
    for (int64_t i = 0; i < n_neurons; i++) {
        double lo = 1.2 * mins[i], hi = 1.2 * maxs[i];
        h->mins[i] = mins[i];
        h->maxs[i] = maxs[i];
        h->centre[i] = (lo + hi) / 2;
        h->half[i] = (hi - lo) / 2 + 1e-8;
    }
    *out = h;
    return VDNA_OK;
}

/* ---------------------------------------------------------------- binning kernels */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
/* AVX2 doubles the vector width of the binning loops where the CPU has it; the arithmetic (IEEE,
 * no contraction: -ffp-contract=off) and so every bin is the same in both versions. */
#define VDNA_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define VDNA_MULTIVERSION
#endif

/* Bin index of each value of v[0..n) for one neuron, exactly as DESIGN.md says; NaN -> `bins`
 * (a slot of its own). Clamping t = ((z+1) B) / 2 to [0, B] equals clamping z to [-1, 1] first
 * (rounding is monotone, and z = -1 / 1 give t = 0 / B exactly); written this way, with no
 * arithmetic after a select, gcc vectorises the loop. NaN fails `t > 0` and becomes 0 before the
 * integer conversion (converting NaN is undefined behaviour), then goes to the NaN slot. */
VDNA_MULTIVERSION
static void bin_block(const double *v, int64_t n, double centre, double half, int32_t bins, int32_t *idx) {
    const double bd = (double)bins;
    const int32_t last = bins - 1;
    for (int64_t i = 0; i < n; i++) {
        double t = (((v[i] - centre) / half + 1.0) * bd) * 0.5;
        int32_t isnan_ = t != t;
        t = t > 0.0 ? t : 0.0;
        t = t < bd ? t : bd;
        int32_t b = (int32_t)t;
        b = b > last ? last : b;
        idx[i] = isnan_ ? bins : b;
    }
}

/* ---------------------------------------------------------------- counting
 * Values are counted into small 32-bit local histograms (bins + a NaN slot) that stay in L1,
 * then flushed into the neuron's 64-bit counts over the touched bin range only: the counts of a
 * large layer (C x B x 8 bytes) do not fit in cache, and random increments there would miss. With
 * very few values per neuron the local histogram is not worth clearing: count directly. */
typedef struct {
    uint32_t *sub;  /* n_sub x slots */
    int n_sub;      /* 1 or N_SUB */
    size_t slots;   /* bins + 1 */
    int64_t pending; /* values since the last flush (32-bit overflow guard) */
} local_hist;

static void count_local(local_hist *l, const int32_t *idx, int64_t len) {
    uint32_t *s0 = l->sub;
    int64_t q = 0;
    if (l->n_sub == N_SUB) {
        uint32_t *s1 = s0 + l->slots, *s2 = s1 + l->slots, *s3 = s2 + l->slots;
        for (; q + 4 <= len; q += 4) {
            s0[idx[q]]++;
            s1[idx[q + 1]]++;
            s2[idx[q + 2]]++;
            s3[idx[q + 3]]++;
        }
    }
    for (; q < len; q++) s0[idx[q]]++;
    l->pending += len;
}

static void count_direct(const int32_t *idx, int64_t len, int32_t B, int64_t *counts, int64_t *nans) {
    for (int64_t q = 0; q < len; q++) {
        if (idx[q] == B)
            (*nans)++;
        else
            counts[idx[q]]++;
    }
}

/* Add the local histogram to counts / *nans and clear it. */
static void flush_local(local_hist *l, int32_t B, int64_t *counts, int64_t *nans) {
    for (int k = 0; k < l->n_sub; k++) {
        uint32_t *s = l->sub + (size_t)k * l->slots;
        int32_t lo = 0, hi = B - 1;
        while (lo < B && s[lo] == 0) lo++;
        while (hi > lo && s[hi] == 0) hi--;
        for (int32_t b = lo; b <= hi && lo < B; b++) counts[b] += s[b];
        if (lo < B) memset(s + lo, 0, (size_t)(hi - lo + 1) * sizeof *s);
        *nans += s[B];
        s[B] = 0;
    }
    l->pending = 0;
}

/* Bin n values of one neuron and count them (locally, or directly without a local histogram). */
static void bin_and_count(const double *v, int64_t n, double centre, double half, int32_t B, int32_t *idx,
                          local_hist *l, int64_t *counts, int64_t *nans) {
    bin_block(v, n, centre, half, B, idx);
    if (l->sub == NULL) {
        count_direct(idx, n, B, counts, nans);
        return;
    }
    count_local(l, idx, n);
    if (l->pending > (int64_t)UINT32_MAX - VDNA_BLOCK) flush_local(l, B, counts, nans);
}

typedef struct {
    vdna_hist *h;
    const vdna_acts *a;
} hist_job;

/* Neuron by neuron, along runs of samples (channels layout with long runs). */
static void hist_by_neuron(void *ctx, int64_t c0, int64_t c1) {
    const hist_job *job = ctx;
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const int32_t B = (int32_t)h->bins;
    const int64_t run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a);
    const int64_t per_neuron = a->n_images * a->n_samples;
    double buf[VDNA_BLOCK];
    int32_t idx[VDNA_BLOCK];
    local_hist l = {NULL, per_neuron >= 4 * ((int64_t)B + 1) ? N_SUB : 1, (size_t)B + 1, 0};
    /* if the local histogram cannot be allocated, direct counting gives the same counts */
    if (per_neuron * 16 >= (int64_t)l.slots) l.sub = calloc((size_t)l.n_sub * l.slots, sizeof *l.sub);
    for (int64_t c = c0; c < c1; c++) {
        const double centre = h->centre[c], half = h->half[c];
        int64_t *counts = h->counts + c * (int64_t)B, nans = 0;
        int64_t filled = 0; /* short runs (e.g. 7x7) are packed into full blocks */
        for (int64_t n = 0; n < a->n_images; n++) {
            int64_t base = n * a->image_stride + c * a->neuron_stride;
            for (int64_t p = 0; p < a->n_samples; p += run) {
                int64_t off = base + vdna_acts_sample_offset(a, p);
                for (int64_t j = 0; j < run;) {
                    int64_t len = run - j < VDNA_BLOCK - filled ? run - j : VDNA_BLOCK - filled;
                    vdna_load_block(buf + filled, a->data, a->dtype, off + j * rs, rs, len);
                    filled += len;
                    j += len;
                    if (filled == VDNA_BLOCK) {
                        bin_and_count(buf, filled, centre, half, B, idx, &l, counts, &nans);
                        filled = 0;
                    }
                }
            }
        }
        if (filled) bin_and_count(buf, filled, centre, half, B, idx, &l, counts, &nans);
        if (l.sub) flush_local(&l, B, counts, &nans);
        h->nan_counts[c] += nans;
    }
    free(l.sub);
}

/* Neurons close in memory (tokens, channels-last, one sample per image). A block of up to
 * NEURON_BLOCK neurons is read ROW_TILE sample positions at a time, each position a contiguous
 * segment (streams well), transposed into per-neuron runs, then binned and counted like long runs
 * with one local histogram per neuron of the block (kept for the whole batch). */
#define NEURON_BLOCK 128
#define ROW_TILE 32
#define LOCAL_BYTES (1 << 20) /* bound on the local histograms of one block */
#define PREFETCH_ROWS 8

/* Ask for the cache lines of n values from `offset` on (a hint; no effect on results). */
static inline void prefetch_segment(const vdna_acts *a, int64_t offset, int64_t n) {
#if defined(__GNUC__)
    static const int size[3] = {2, 4, 8}; /* f16, f32, f64 */
    const int64_t sc = a->neuron_stride, es = size[a->dtype];
    int64_t first = offset, last = offset + (n - 1) * sc;
    if (last < first) {
        int64_t t = first;
        first = last;
        last = t;
    }
    if ((last - first) > 64 * n) return; /* far-apart neurons: not one segment */
    for (int64_t b = first * es; b <= last * es; b += 64) __builtin_prefetch((const char *)a->data + b);
#else
    (void)a;
    (void)offset;
    (void)n;
#endif
}

static void hist_by_row(void *ctx, int64_t c0, int64_t c1) {
    const hist_job *job = ctx;
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const int32_t B = (int32_t)h->bins;
    const int64_t sc = a->neuron_stride;
    const int64_t per_neuron = a->n_images * a->n_samples;
    const size_t slots = (size_t)B + 1;
    double row[NEURON_BLOCK], tile[NEURON_BLOCK * ROW_TILE];
    int32_t idx[ROW_TILE];
    int64_t block = (int64_t)(LOCAL_BYTES / (slots * sizeof(uint32_t)));
    block = block < 1 ? 1 : block > NEURON_BLOCK ? NEURON_BLOCK : block;
    uint32_t *mem = NULL;
    if (per_neuron * 16 >= (int64_t)slots) mem = calloc((size_t)block * slots, sizeof *mem);
    local_hist l[NEURON_BLOCK];
    for (int64_t j = 0; j < block; j++) {
        l[j].sub = mem ? mem + (size_t)j * slots : NULL;
        l[j].n_sub = 1;
        l[j].slots = slots;
        l[j].pending = 0;
    }
    int64_t nans[NEURON_BLOCK];
    for (int64_t cb = c0; cb < c1; cb += block) {
        const int64_t nb = c1 - cb < block ? c1 - cb : block;
        int64_t *counts = h->counts + cb * (int64_t)B;
        memset(nans, 0, sizeof nans);
        for (int64_t n = 0; n < a->n_images; n++) {
            for (int64_t p0 = 0; p0 < a->n_samples; p0 += ROW_TILE) {
                const int64_t tl = a->n_samples - p0 < ROW_TILE ? a->n_samples - p0 : ROW_TILE;
                for (int64_t r = 0; r < tl; r++) {
                    int64_t off = n * a->image_stride + vdna_acts_sample_offset(a, p0 + r) + cb * sc;
                    if (p0 + r + PREFETCH_ROWS < a->n_samples) /* rows far apart defeat the hardware prefetcher */
                        prefetch_segment(a, n * a->image_stride + vdna_acts_sample_offset(a, p0 + r + PREFETCH_ROWS) + cb * sc, nb);
                    vdna_load_block(row, a->data, a->dtype, off, sc, nb);
                    for (int64_t j = 0; j < nb; j++) tile[j * ROW_TILE + r] = row[j];
                }
                for (int64_t j = 0; j < nb; j++) {
                    bin_block(tile + j * ROW_TILE, tl, h->centre[cb + j], h->half[cb + j], B, idx);
                    if (mem == NULL) {
                        count_direct(idx, tl, B, counts + j * (int64_t)B, &nans[j]);
                        continue;
                    }
                    count_local(&l[j], idx, tl);
                    if (l[j].pending > (int64_t)UINT32_MAX - ROW_TILE)
                        flush_local(&l[j], B, counts + j * (int64_t)B, &nans[j]);
                }
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            if (mem) flush_local(&l[j], B, counts + j * (int64_t)B, &nans[j]);
            h->nan_counts[cb + j] += nans[j];
        }
    }
    free(mem);
}

vdna_status vdna_hist_update(vdna_hist *h, const vdna_array *x) {
    vdna_clear_error();
    if (h == NULL) return vdna_fail(VDNA_ERR_ARG, "hist update: NULL accumulator");
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, h->layout, h->n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images == 0) return VDNA_OK;
    hist_job job = {h, &a};
    int64_t per_neuron = a.n_images * a.n_samples;
    int64_t min_chunk = per_neuron >= 8192 ? 1 : 8192 / per_neuron;
    st = vdna_parallel_for(h->n_neurons, min_chunk, a.by_rows ? hist_by_row : hist_by_neuron, &job);
    if (st != VDNA_OK) return st;
    h->num_images += a.n_images;
    return VDNA_OK;
}

/* ---------------------------------------------------------------- merge, state, read-out */
vdna_status vdna_hist_merge(vdna_hist *h, const vdna_hist *other) {
    vdna_clear_error();
    if (h == NULL || other == NULL) return vdna_fail(VDNA_ERR_ARG, "hist merge: NULL accumulator");
    if (h->n_neurons != other->n_neurons || h->bins != other->bins || h->layout != other->layout)
        return vdna_fail(VDNA_ERR_MISMATCH,
                         "hist merge: (neurons %lld, bins %lld, layout %s) vs (neurons %lld, bins %lld, layout %s)",
                         (long long)h->n_neurons, (long long)h->bins, vdna_layout_name(h->layout),
                         (long long)other->n_neurons, (long long)other->bins, vdna_layout_name(other->layout));
    for (int64_t i = 0; i < h->n_neurons; i++)
        if (h->mins[i] != other->mins[i] || h->maxs[i] != other->maxs[i])
            return vdna_fail(VDNA_ERR_MISMATCH, "hist merge: activation ranges differ at neuron %lld ([%g, %g] vs [%g, %g])",
                             (long long)i, h->mins[i], h->maxs[i], other->mins[i], other->maxs[i]);
    return vdna_hist_add_counts(h, other->counts, other->nan_counts, other->num_images);
}

vdna_status vdna_hist_add_counts(vdna_hist *h, const int64_t *counts, const int64_t *nan_counts, int64_t num_images) {
    vdna_clear_error();
    if (h == NULL || counts == NULL) return vdna_fail(VDNA_ERR_ARG, "hist add_counts: NULL argument");
    int64_t total = h->n_neurons * h->bins;
    if (num_images < 0) return vdna_fail(VDNA_ERR_ARG, "hist add_counts: num_images %lld < 0", (long long)num_images);
    if (h->num_images > INT64_MAX - num_images) return vdna_fail(VDNA_ERR_ARG, "hist add_counts: num_images overflows");
    /* check everything first so that a failure changes nothing (counts may alias h->counts) */
    for (int64_t i = 0; i < total; i++) {
        if (counts[i] < 0)
            return vdna_fail(VDNA_ERR_ARG, "hist add_counts: negative count %lld at neuron %lld, bin %lld",
                             (long long)counts[i], (long long)(i / h->bins), (long long)(i % h->bins));
        if (h->counts[i] > INT64_MAX - counts[i])
            return vdna_fail(VDNA_ERR_ARG, "hist add_counts: count overflows int64 at neuron %lld, bin %lld",
                             (long long)(i / h->bins), (long long)(i % h->bins));
    }
    if (nan_counts != NULL) {
        for (int64_t i = 0; i < h->n_neurons; i++) {
            if (nan_counts[i] < 0)
                return vdna_fail(VDNA_ERR_ARG, "hist add_counts: negative NaN count %lld at neuron %lld",
                                 (long long)nan_counts[i], (long long)i);
            if (h->nan_counts[i] > INT64_MAX - nan_counts[i])
                return vdna_fail(VDNA_ERR_ARG, "hist add_counts: NaN count overflows int64 at neuron %lld", (long long)i);
        }
    }
    for (int64_t i = 0; i < total; i++) h->counts[i] += counts[i];
    if (nan_counts != NULL)
        for (int64_t i = 0; i < h->n_neurons; i++) h->nan_counts[i] += nan_counts[i];
    h->num_images += num_images;
    return VDNA_OK;
}

void vdna_hist_reset(vdna_hist *h) {
    if (h == NULL) return;
    memset(h->counts, 0, (size_t)(h->n_neurons * h->bins) * sizeof(int64_t));
    memset(h->nan_counts, 0, (size_t)h->n_neurons * sizeof(int64_t));
    h->num_images = 0;
}

void vdna_hist_counts(const vdna_hist *h, int64_t *counts) {
    memcpy(counts, h->counts, (size_t)(h->n_neurons * h->bins) * sizeof(int64_t));
}

void vdna_hist_nan_counts(const vdna_hist *h, int64_t *nan_counts) {
    memcpy(nan_counts, h->nan_counts, (size_t)h->n_neurons * sizeof(int64_t));
}

void vdna_hist_ranges(const vdna_hist *h, double *mins, double *maxs) {
    if (mins) memcpy(mins, h->mins, (size_t)h->n_neurons * sizeof(double));
    if (maxs) memcpy(maxs, h->maxs, (size_t)h->n_neurons * sizeof(double));
}

int64_t vdna_hist_num_images(const vdna_hist *h) { return h->num_images; }
int64_t vdna_hist_n_neurons(const vdna_hist *h) { return h->n_neurons; }
int64_t vdna_hist_bins(const vdna_hist *h) { return h->bins; }
vdna_layout vdna_hist_layout(const vdna_hist *h) { return h->layout; }

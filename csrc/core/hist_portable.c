/* hist_portable.c: the loops of a histogram update, and its portable kernels
 * (docs/design.md, "Normative semantics").
 *
 * Exactness: each neuron's counts are written by exactly one thread (parallel over neurons), so
 * counts are integers independent of the thread count and of how a batch is split. The bin of a
 * value is the one specified: t = ((x - centre) / half + 1) * B / 2 with a true float64 division,
 * clamped to [0, B], floored, capped at B-1 (exact_bin, hist_kernels.h).
 *
 * Speed: the division is the costliest step of the hot loop, so each value is first binned with
 * the reciprocal (u = ((x - centre) * (1/half) + 1) * B/2, see "estimate") and the exact division
 * is redone only for the rare values whose estimate lies within `delta` of an integer, where the
 * two could floor differently (proof at vdna_hist_bin_consts). float32 input uses a float32
 * estimate with a wider, per-neuron delta (proof at f32_estimate_init, hist.c; exact zeros take a
 * precomputed bin). Bin indices of a block of values are computed in vectorisable loops, then
 * counted in 32-bit local histograms (see "counting"). With an intrinsics kernel (hist_avx2.c,
 * hist_avx512.c) the exact zeros of float32 runs (ReLU) are counted with vector compares instead
 * and only the other values are scattered, and float32 rows go through line-aligned lane blocks. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "hist_kernels.h"

#define N_SUB 4

/* ---------------------------------------------------------------- binning kernels */
/* Under AddressSanitizer the loops are built once, for the baseline instruction set, so that the
 * sanitizer tests run that version (GCC defines __SANITIZE_ADDRESS__; clang before 15 only answers
 * __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define VDNA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VDNA_ASAN 1
#endif
#endif
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(VDNA_ASAN)
/* AVX2 / AVX-512 widen the vectors of the binning loops where the CPU has them; every bin is the
 * same in every version (the estimate is only trusted when it provably floors like the exact t,
 * and the exact t uses IEEE operations, no contraction: -ffp-contract=off). */
#define VDNA_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define VDNA_MULTIVERSION
#endif

/* Why the estimate u = fl(fl(fl(d * r) + 1) * (B/2)), d = fl(x - centre), r = fl(1 / half), floors
 * like the exact t = fl(fl(fl(d / half) + 1) * B) / 2 unless u is within delta of an integer
 * (u = unit roundoff 2^-53 below; no underflow: r >= DBL_MIN is checked at creation, else every
 * value takes the exact path; a subnormal d*r or d/half only adds an absolute error < 2^-1074).
 *   Only u in [-1/2, B + 1/2] matters (outside it both sides clamp to the same end bin: relative
 *   errors keep t on the same side of 0 and of B). There |fl(d*r)| <= 2 + 2/B, so |d/half| <= 4.1.
 *   q = fl(d/half) = (d/half)(1+e1), q' = fl(d*r) = (d/half)(1+e2)(1+e3): |q - q'| <= 3.01u * 4.1.
 *   s = fl(q+1), s' = fl(q'+1): |s - s'| <= 12.4u + u(|q+1| + |q'+1|) <= 23u.
 *   t = fl(s*B)/2 and u = fl(s'*(B/2)) = fl(s'*B)/2 exactly (B/2 and 1/2 are exact scalings):
 *   |t - u| <= (23u B + u B (|s| + |s'|)) / 2 <= 17u B < B 2^-48 < delta = B 2^-44 (rounded up to
 *   a power of two, so 1 - delta is exact).
 * If u lies in [k + delta, k + 1 - delta] then t lies in (k, k+1): both floor to k. */
bin_consts vdna_hist_bin_consts(const vdna_hist *h) {
    bin_consts k;
    k.bins = (int32_t)h->bins;
    k.last = k.bins - 1;
    k.hb = (double)h->bins * 0.5;
    k.top = (double)h->bins + 0.5;
    k.delta = 0x1p-44;
    while (k.delta * 0x1p44 < (double)h->bins) k.delta *= 2;
    if (!h->recip_ok) k.delta = 1.0; /* every estimate "near": all values binned exactly */
    k.omd = 1.0 - k.delta;
    return k;
}

/* Bin estimate of x; *near = 1 when it must be redone with exact_bin. The estimate is clamped to
 * [-1/2, B + 1/2] (NaN to -1/2) and truncated (= floored, and u in [-1/2, 0) gives 0, with
 * f = u - 0 < 0: u within delta below 0 is "near" through |f| <= delta). f = u - trunc(u) is exact
 * (Sterbenz for u >= 1). Written with selects only so that gcc vectorises the loops below. */
static inline int32_t estimate(double x, double centre, double recip, const bin_consts *k, int32_t *near) {
    double u = ((x - centre) * recip + 1.0) * k->hb;
    int32_t isnan_ = u != u;
    u = u > -0.5 ? u : -0.5;
    u = u < k->top ? u : k->top;
    int32_t b = (int32_t)u;
    double f = u - (double)b;
    *near = ((f <= k->delta) & (f >= -k->delta)) | (f >= k->omd);
    b = b > k->last ? k->last : b;
    return isnan_ ? k->bins : b;
}

/* Estimated bins of v[0..n) of one neuron into idx (-1 where unsure); returns whether any is. */
VDNA_MULTIVERSION
static int32_t estimate_f64(const double *v, int64_t n, double centre, double recip, bin_consts k, int32_t *idx) {
    int32_t any = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t near;
        int32_t b = estimate(v[i], centre, recip, &k, &near);
        idx[i] = near ? -1 : b;
        any |= near;
    }
    return any;
}

/* float32 values of one neuron, with the float32 estimate (f32_estimate_init): cf, gf, delta. */
VDNA_MULTIVERSION
static int32_t estimate_f32(const float *v, int64_t n, float cf, float gf, float dl, int32_t zb, int32_t bins,
                            int32_t *idx) {
    const float hb = (float)bins * 0.5f, top = (float)bins + 0.5f, om = 1.0f - dl;
    const int32_t last = bins - 1;
    int32_t any = 0;
    for (int64_t i = 0; i < n; i++) {
        float w = (v[i] - cf) * gf + hb;
        int32_t isnan_ = w != w;
        w = w > -0.5f ? w : -0.5f;
        w = w < top ? w : top;
        int32_t b = (int32_t)w;
        float f = w - (float)b;
        int32_t zero = v[i] == 0.0f;
        int32_t near = (((f <= dl) & (f >= -dl)) | (f >= om)) & !zero;
        b = b > last ? last : b;
        b = isnan_ ? bins : b;
        b = zero ? zb : b;
        idx[i] = near ? -1 : b;
        any |= near;
    }
    return any;
}

/* One sample position of n consecutive neurons: idx[j] = j * slots + bin (a slot in neuron j's
 * local histogram), -1 where unsure. */
VDNA_MULTIVERSION
static int32_t estimate_row_f32(const float *v, int64_t n, const double *centre, const double *recip, bin_consts k,
                                int32_t slots, int32_t *idx) {
    int32_t any = 0;
    for (int64_t j = 0; j < n; j++) {
        int32_t near;
        int32_t b = estimate((double)v[j], centre[j], recip[j], &k, &near);
        idx[j] = near ? -1 : (int32_t)j * slots + b;
        any |= near;
    }
    return any;
}

VDNA_MULTIVERSION
static int32_t estimate_row_f64(const double *v, int64_t n, const double *centre, const double *recip, bin_consts k,
                                int32_t slots, int32_t *idx) {
    int32_t any = 0;
    for (int64_t j = 0; j < n; j++) {
        int32_t near;
        int32_t b = estimate(v[j], centre[j], recip[j], &k, &near);
        idx[j] = near ? -1 : (int32_t)j * slots + b;
        any |= near;
    }
    return any;
}

/* Bins of n values of one neuron, exact: estimates, then the unsure ones redone. The values are
 * f32 (vf) or f64 (vd) with unit stride. */
static void bin_values(const float *vf, const double *vd, int64_t n, const vdna_hist *h, int64_t c,
                       const bin_consts *k, int32_t *idx) {
    const double centre = h->centre[c], half = h->half[c];
    int32_t any = vf ? estimate_f32(vf, n, h->cf[c], h->gf[c], h->df[c], h->zb[c], k->bins, idx)
                     : estimate_f64(vd, n, centre, h->recip[c], *k, idx);
    if (!any) return;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0) idx[i] = exact_bin(vf ? (double)vf[i] : vd[i], centre, half, k->bins);
}

/* The one hook for subset.c (declared in internal.h): bins of n unit-stride values of neuron c,
 * exactly those of vdna_hist_update. */
void vdna_hist_bin_block(const vdna_hist *h, int64_t c, const float *vf, const double *vd, int64_t n, int32_t *idx) {
    const bin_consts k = vdna_hist_bin_consts(h);
    bin_values(vf, vd, n, h, c, &k, idx);
}

/* Exact bins of the non-zero float32 values v[0..n) of neuron c, packed into idx[0..m) (idx has
 * n + 16 entries) by the kernel's pack_nonzero_f32; returns m and adds the number of zeros (bin
 * h->zb[c]) to *zeros. */
static int64_t nonzero_bins_f32(const hist_simd_kernel *simd, const float *v, int64_t n, const vdna_hist *h, int64_t c,
                                const bin_consts *k, int32_t *idx, int64_t *zeros) {
    int32_t any = 0;
    int64_t m = simd->pack_nonzero_f32(v, n, h->cf[c], h->gf[c], h->df[c], k->bins, idx, zeros, &any);
    if (any)
        for (int64_t q = 0; q < m; q++)
            if (idx[q] < 0) idx[q] = exact_bin((double)v[~idx[q]], h->centre[c], h->half[c], k->bins);
    return m;
}

/* The same for one sample position of n consecutive neurons (slot indices, see estimate_row_*). */
static void bin_row(const float *vf, const double *vd, int64_t n, const double *centre, const double *half,
                    const double *recip, const bin_consts *k, int32_t slots, int32_t *idx) {
    int32_t any = vf ? estimate_row_f32(vf, n, centre, recip, *k, slots, idx)
                     : estimate_row_f64(vd, n, centre, recip, *k, slots, idx);
    if (!any) return;
    for (int64_t j = 0; j < n; j++)
        if (idx[j] < 0) idx[j] = (int32_t)j * slots + exact_bin(vf ? (double)vf[j] : vd[j], centre[j], half[j], k->bins);
}

/* ---------------------------------------------------------------- counting
 * Values are counted into small 32-bit local histograms (bins + a NaN slot) that stay in cache,
 * then flushed into the neuron's 64-bit counts over the touched bin range only: the counts of a
 * large layer (C x B x 8 bytes) do not fit in cache, and random increments there would miss. With
 * very few values per neuron the local histogram is not worth clearing: count directly. With many
 * values per neuron, N_SUB interleaved local histograms, so that repeated hits of one bin (e.g.
 * ReLU zeros) do not serialise on one memory location. */
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

/* Add one local histogram s (B bins + NaN slot) to counts / *nans and clear it. */
static void flush_slots(uint32_t *s, int32_t B, int64_t *counts, int64_t *nans) {
    int32_t lo = 0, hi = B - 1;
    while (lo < B && s[lo] == 0) lo++;
    while (hi > lo && s[hi] == 0) hi--;
    for (int32_t b = lo; b <= hi && lo < B; b++) counts[b] += s[b];
    if (lo < B) memset(s + lo, 0, (size_t)(hi - lo + 1) * sizeof *s);
    *nans += s[B];
    s[B] = 0;
}

static void flush_local(local_hist *l, int32_t B, int64_t *counts, int64_t *nans) {
    for (int k = 0; k < l->n_sub; k++) flush_slots(l->sub + (size_t)k * l->slots, B, counts, nans);
    l->pending = 0;
}

static void count_block(const int32_t *idx, int64_t n, int32_t B, local_hist *l, int64_t *counts, int64_t *nans) {
    if (l->sub == NULL) {
        count_direct(idx, n, B, counts, nans);
        return;
    }
    count_local(l, idx, n);
    if (l->pending > (int64_t)UINT32_MAX - 2 * VDNA_BLOCK) flush_local(l, B, counts, nans);
}

/* Neuron c's values PF_AHEAD positions after sample position p of image n (in the order this
 * path reads them: images, then positions), n_pf of them: asked for ahead of time, since runs of
 * one neuron lie far apart (one image of all neurons between them) and the hardware prefetcher
 * only ramps up inside each. A hint: no effect on results. Unit run stride only. */
#define PF_AHEAD 2048
static inline void prefetch_ahead(const vdna_acts *a, int64_t c, int64_t n, int64_t p, int64_t n_pf) {
#if defined(__GNUC__)
    static const int size[3] = {2, 4, 8}; /* f16, f32, f64 */
    const int64_t S = a->n_samples, run = vdna_acts_run_len(a), es = size[a->dtype];
    int64_t q = p + PF_AHEAD;
    n += q / S;
    q %= S;
    if (n >= a->n_images) return;
    const char *base = (const char *)a->data + (n * a->image_stride + c * a->neuron_stride) * es;
    /* one contiguous piece: up to the end of the run that holds position q */
    int64_t in_run = run - q % run;
    if (n_pf > in_run) n_pf = in_run;
    const char *first = base + vdna_acts_sample_offset(a, q) * es;
    for (int64_t b = 0; b < n_pf * es; b += 64) __builtin_prefetch(first + b);
#else
    (void)a;
    (void)c;
    (void)n;
    (void)p;
    (void)n_pf;
#endif
}

/* Neuron by neuron, along runs of samples (channels layout with long runs). Bins of short runs
 * (e.g. 7x7) are packed into full blocks before counting. f32/f64 runs with unit stride are
 * binned in place; others are converted to float64 blocks first. */
void vdna_hist_by_neuron(void *ctx, int64_t c0, int64_t c1) {
    const hist_job *job = ctx;
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const bin_consts *k = &job->k;
    const int32_t B = (int32_t)h->bins;
    const int64_t run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a);
    const int64_t per_neuron = a->n_images * a->n_samples;
    const int in_place = rs == 1 && (a->dtype == VDNA_F32 || a->dtype == VDNA_F64);
    double buf[VDNA_BLOCK];
    /* a piece of at most VDNA_BLOCK bins is appended while fewer than VDNA_BLOCK are pending (+16:
     * full vector stores of the packing kernel) */
    int32_t idx[2 * VDNA_BLOCK + 16];
    const hist_simd_kernel *simd = in_place && a->dtype == VDNA_F32 ? job->simd : NULL;
    const int pack = simd != NULL;
    /* Sub-histograms against runs of one bin: without packing, ReLU zeros; with it, they are only
     * worth their flushing cost for long runs (measured: 1 is faster below 64 values per slot). */
    const int64_t sub_from = (pack ? 64 : 4) * ((int64_t)B + 1);
    local_hist l = {NULL, per_neuron >= sub_from ? N_SUB : 1, (size_t)B + 1, 0};
    /* if the local histogram cannot be allocated, direct counting gives the same counts */
    /* below 2 values per bin, direct counting (no clearing and flushing of a local histogram) is
     * faster (measured: 2048 x 7x7 x 32 images) */
    if (per_neuron >= 2 * (int64_t)l.slots) l.sub = calloc((size_t)l.n_sub * l.slots, sizeof *l.sub);
    for (int64_t c = c0; c < c1; c++) {
        int64_t *counts = h->counts + c * (int64_t)B, nans = 0, zeros = 0;
        int64_t filled = 0;
        for (int64_t n = 0; n < a->n_images; n++) {
            int64_t base = n * a->image_stride + c * a->neuron_stride;
            for (int64_t p = 0; p < a->n_samples; p += run) {
                int64_t off = base + vdna_acts_sample_offset(a, p);
                for (int64_t j = 0; j < run;) {
                    int64_t len = run - j < VDNA_BLOCK ? run - j : VDNA_BLOCK;
                    if (in_place) prefetch_ahead(a, c, n, p + j, len);
                    if (pack)
                        filled += nonzero_bins_f32(simd, (const float *)a->data + off + j, len, h, c, k, idx + filled, &zeros);
                    else {
                        if (in_place && a->dtype == VDNA_F32)
                            bin_values((const float *)a->data + off + j, NULL, len, h, c, k, idx + filled);
                        else if (in_place)
                            bin_values(NULL, (const double *)a->data + off + j, len, h, c, k, idx + filled);
                        else {
                            vdna_load_block(buf, a->data, a->dtype, off + j * rs, rs, len);
                            bin_values(NULL, buf, len, h, c, k, idx + filled);
                        }
                        filled += len;
                    }
                    j += len;
                    if (filled >= VDNA_BLOCK) {
                        count_block(idx, filled, B, &l, counts, &nans);
                        filled = 0;
                    }
                }
            }
        }
        if (filled) count_block(idx, filled, B, &l, counts, &nans);
        if (l.sub) flush_local(&l, B, counts, &nans);
        counts[h->zb[c]] += zeros;
        h->nan_counts[c] += nans;
    }
    free(l.sub);
}

/* Neurons close in memory (tokens, channels-last, one sample per image): a block of neurons is
 * walked one sample position (row) at a time, with one local histogram per neuron of the block,
 * kept for the whole batch. Rows of unit neuron stride (f32/f64) are binned in place, vectorised
 * across the neurons; others are read ROW_TILE positions at a time and transposed into per-neuron
 * runs first. */
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

/* Count one row of slot indices (see estimate_row_*) of nb neurons: into the local histograms
 * `mem` (block x slots), or straight into counts / nans when there are none. */
static void count_row(const int32_t *idx, int64_t nb, uint32_t *mem, int32_t B, int64_t *counts, int64_t *nans) {
    if (mem) {
        for (int64_t j = 0; j < nb; j++) mem[idx[j]]++;
        return;
    }
    const int32_t slots = B + 1;
    for (int64_t j = 0; j < nb; j++) {
        int32_t b = idx[j] - (int32_t)j * slots;
        if (b == B)
            nans[j]++;
        else
            counts[j * (int64_t)B + b]++;
    }
}

void vdna_hist_by_row(void *ctx, int64_t c0, int64_t c1) {
    const hist_job *job = ctx;
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const bin_consts *k = &job->k;
    const int32_t B = (int32_t)h->bins;
    const int64_t sc = a->neuron_stride;
    const int64_t per_neuron = a->n_images * a->n_samples;
    const int32_t slots = B + 1;
    const int in_place = sc == 1 && (a->dtype == VDNA_F32 || a->dtype == VDNA_F64);
    double row[NEURON_BLOCK], tile[NEURON_BLOCK * ROW_TILE];
    int32_t idx[NEURON_BLOCK > ROW_TILE ? NEURON_BLOCK : ROW_TILE];
    int64_t block = (int64_t)(LOCAL_BYTES / ((size_t)slots * sizeof(uint32_t)));
    block = block < 1 ? 1 : block > NEURON_BLOCK ? NEURON_BLOCK : block;
    uint32_t *mem = NULL;
    if (per_neuron * 16 >= (int64_t)slots) mem = calloc((size_t)block * (size_t)slots, sizeof *mem);
    int64_t nans[NEURON_BLOCK];
    for (int64_t cb = c0; cb < c1; cb += block) {
        const int64_t nb = c1 - cb < block ? c1 - cb : block;
        int64_t *counts = h->counts + cb * (int64_t)B;
        int64_t rows = 0; /* since the last flush: each adds at most 1 to a local slot */
        memset(nans, 0, sizeof nans);
        for (int64_t n = 0; n < a->n_images; n++) {
            for (int64_t p0 = 0; p0 < a->n_samples; p0 += ROW_TILE) {
                const int64_t tl = a->n_samples - p0 < ROW_TILE ? a->n_samples - p0 : ROW_TILE;
                for (int64_t r = 0; r < tl; r++) {
                    int64_t off = n * a->image_stride + vdna_acts_sample_offset(a, p0 + r) + cb * sc;
                    if (p0 + r + PREFETCH_ROWS < a->n_samples) /* rows far apart defeat the hardware prefetcher */
                        prefetch_segment(a, n * a->image_stride + vdna_acts_sample_offset(a, p0 + r + PREFETCH_ROWS) + cb * sc, nb);
                    if (in_place) {
                        if (a->dtype == VDNA_F32)
                            bin_row((const float *)a->data + off, NULL, nb, h->centre + cb, h->half + cb, h->recip + cb, k,
                                    slots, idx);
                        else
                            bin_row(NULL, (const double *)a->data + off, nb, h->centre + cb, h->half + cb, h->recip + cb, k,
                                    slots, idx);
                        count_row(idx, nb, mem, B, counts, nans);
                    } else {
                        vdna_load_block(row, a->data, a->dtype, off, sc, nb);
                        for (int64_t j = 0; j < nb; j++) tile[j * ROW_TILE + r] = row[j];
                    }
                }
                if (!in_place) {
                    for (int64_t j = 0; j < nb; j++) {
                        bin_values(NULL, tile + j * ROW_TILE, tl, h, cb + j, k, idx);
                        for (int64_t q = 0; q < tl; q++) idx[q] += (int32_t)j * slots;
                        if (mem)
                            for (int64_t q = 0; q < tl; q++) mem[idx[q]]++;
                        else
                            for (int64_t q = 0; q < tl; q++) {
                                int32_t b = idx[q] - (int32_t)j * slots;
                                if (b == B) nans[j]++;
                                else counts[j * (int64_t)B + b]++;
                            }
                    }
                }
                rows += tl;
                if (mem && rows > (int64_t)UINT32_MAX - ROW_TILE) {
                    for (int64_t j = 0; j < nb; j++) flush_slots(mem + j * slots, B, counts + j * (int64_t)B, &nans[j]);
                    rows = 0;
                }
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            if (mem) flush_slots(mem + j * slots, B, counts + j * (int64_t)B, &nans[j]);
            h->nan_counts[cb + j] += nans[j];
        }
    }
    free(mem);
}

/* Tokens / channels-last float32 with unit neuron stride, the common case: blocks of LANES
 * neurons (one 64-byte row segment per sample position, one AVX-512 vector) are walked over every
 * sample position of the batch with their LANES local histograms, 16-bit so that they stay in L1
 * (flushed at least every 65535 positions: a position adds 1 to one slot of each neuron). Each call
 * of the kernel bins a chunk of positions of one image. Here (portable path) blocks start at a
 * thread's first neuron and the neurons left over (fewer than LANES at the end of its range) go
 * through vdna_hist_by_row; the intrinsics kernels' lane blocks (hist_by_line_blocks) are aligned
 * to lines instead. */
VDNA_MULTIVERSION
static int32_t estimate_lanes_f32(const float *base, const int64_t *soff, int64_t q0, int64_t nq, int64_t n_samples,
                                  const float *next, const float *cf, const float *gf, const float *df,
                                  const int32_t *zb, int32_t bins, int32_t slots, int32_t *idx) {
    float c[LANES], g[LANES], dl[LANES], om[LANES];
    int32_t z[LANES];
    for (int j = 0; j < LANES; j++) {
        c[j] = cf[j];
        g[j] = gf[j];
        dl[j] = df[j];
        om[j] = 1.0f - df[j];
        z[j] = zb[j];
    }
    const float hb = (float)bins * 0.5f, top = (float)bins + 0.5f;
    const int32_t last = bins - 1;
    int32_t any = 0;
    for (int64_t q = 0; q < nq; q++) {
        int64_t ahead = q0 + q + LANE_PREFETCH;
#if defined(__GNUC__)
        /* positions are far apart (a row of all neurons between them): prefetch by hand */
        if (ahead < n_samples)
            __builtin_prefetch(base + soff[ahead]), __builtin_prefetch(base + soff[ahead] + LANES - 1);
        else if (next && ahead - n_samples < n_samples)
            __builtin_prefetch(next + soff[ahead - n_samples]), __builtin_prefetch(next + soff[ahead - n_samples] + LANES - 1);
#else
        (void)next;
        (void)n_samples;
#endif
        const float *v = base + soff[q0 + q];
        for (int j = 0; j < LANES; j++) {
            /* the float32 estimate (f32_estimate_init), then as in `estimate` */
            float w = (v[j] - c[j]) * g[j] + hb;
            int32_t isnan_ = w != w;
            w = w > -0.5f ? w : -0.5f;
            w = w < top ? w : top;
            int32_t b = (int32_t)w;
            float f = w - (float)b;
            int32_t zero = v[j] == 0.0f;
            int32_t near = (((f <= dl[j]) & (f >= -dl[j])) | (f >= om[j])) & !zero;
            b = b > last ? last : b;
            b = isnan_ ? bins : b;
            b = zero ? z[j] : b;
            idx[q * LANES + j] = near ? -1 : j * slots + b;
            any |= near;
        }
    }
    return any;
}

/* Add the local histograms of lanes [jlo, jhi) (neurons cb + j; slot j * stride + bin, NaN slot B)
 * to the counts and clear them (touched bin range only). */
static void flush_lanes(uint16_t *mem, int32_t stride, vdna_hist *h, int64_t cb, int jlo, int jhi, int64_t *nans) {
    const int32_t B = (int32_t)h->bins;
    for (int j = jlo; j < jhi; j++) {
        uint16_t *s = mem + (size_t)j * (size_t)stride;
        int64_t *cj = h->counts + (cb + j) * (int64_t)B;
        int32_t lo = 0, hi = B - 1;
        while (lo < B && s[lo] == 0) lo++;
        while (hi > lo && s[hi] == 0) hi--;
        for (int32_t b = lo; b <= hi && lo < B; b++) cj[b] += s[b];
        if (lo < B) memset(s + lo, 0, (size_t)(hi - lo + 1) * sizeof *s);
        nans[j] += s[B];
        s[B] = 0;
    }
}

void vdna_hist_by_lanes(void *ctx, int64_t c0, int64_t c1) {
    const hist_job *job = ctx;
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const int32_t B = (int32_t)h->bins, slots = B + 1;
    const int64_t S = a->n_samples;
    const int64_t c_end = c0 + (c1 - c0) / LANES * LANES;
    int64_t *soff = malloc((size_t)S * sizeof *soff);
    uint16_t *mem = calloc((size_t)LANES * (size_t)slots, sizeof *mem);
    if (soff == NULL || mem == NULL || c_end == c0) { /* the general path gives the same counts */
        free(soff);
        free(mem);
        vdna_hist_by_row(ctx, c0, c1);
        return;
    }
    for (int64_t p = 0; p < S; p++) soff[p] = vdna_acts_sample_offset(a, p);
    int32_t idx[CHUNK_ROWS * LANES];
    const float *data = a->data;
    for (int64_t cb = c0; cb < c_end; cb += LANES) {
        int64_t nans[LANES] = {0};
        int64_t rows = 0; /* since the last flush */
        for (int64_t n = 0; n < a->n_images; n++) {
            const float *base = data + n * a->image_stride + cb;
            const float *next = n + 1 < a->n_images ? base + a->image_stride : NULL;
            for (int64_t q0 = 0; q0 < S; q0 += CHUNK_ROWS) {
                const int64_t nq = S - q0 < CHUNK_ROWS ? S - q0 : CHUNK_ROWS;
                if (rows + nq > UINT16_MAX) {
                    flush_lanes(mem, slots, h, cb, 0, LANES, nans);
                    rows = 0;
                }
                int32_t any = estimate_lanes_f32(base, soff, q0, nq, S, next, h->cf + cb, h->gf + cb, h->df + cb,
                                             h->zb + cb, B, slots, idx);
                if (any) {
                    for (int64_t i = 0; i < nq * LANES; i++) {
                        if (idx[i] >= 0) continue;
                        int64_t j = i % LANES;
                        double x = (double)base[soff[q0 + i / LANES] + j];
                        idx[i] = (int32_t)j * slots + exact_bin(x, h->centre[cb + j], h->half[cb + j], B);
                    }
                }
                for (int64_t i = 0; i < nq * LANES; i++) mem[idx[i]]++;
                rows += nq;
            }
        }
        flush_lanes(mem, slots, h, cb, 0, LANES, nans);
        for (int j = 0; j < LANES; j++) h->nan_counts[cb + j] += nans[j];
    }
    free(soff);
    free(mem);
    if (c_end < c1) vdna_hist_by_row(ctx, c_end, c1);
}

/* The lane blocks of an intrinsics kernel. Blocks are the 64-byte lines of a row (16 neurons), not
 * runs of 16 neurons from the first one: a NumPy array usually starts 16 bytes into a line, and a
 * block straddling two lines reads twice the memory (measured: ~15% of the tokens time). The lanes
 * of a block outside the neurons of the call are masked off and counted into a pad slot that is
 * never read. Here: neurons [c0, c1) (float32, unit neuron stride), in blocks of 16 that start at
 * neuron cb = c0 - off, off = the lanes before c0 in c0's block (see vdna_hist_lanes_phase). */
static void hist_by_line_blocks(const hist_job *job, int64_t c0, int64_t c1) {
    vdna_hist *h = job->h;
    const vdna_acts *a = job->a;
    const int32_t B = (int32_t)h->bins, stride = B + 2; /* B bins, NaN slot, pad slot */
    const int64_t S = a->n_samples;
    int64_t *soff = malloc((size_t)S * sizeof *soff);
    uint16_t *mem = calloc((size_t)LANES * (size_t)stride, sizeof *mem);
    if (soff == NULL || mem == NULL) { /* the general path gives the same counts */
        free(soff);
        free(mem);
        vdna_hist_by_row((void *)job, c0, c1);
        return;
    }
    for (int64_t p = 0; p < S; p++) soff[p] = vdna_acts_sample_offset(a, p);
    const float *data = a->data;
    for (int64_t lo = c0; lo < c1;) {
        /* live lanes [jlo, jhi) of the block, neurons lo .. lo + jhi - jlo */
        const int jlo = (int)((job->phase + lo) % LANES);
        const int jhi = c1 - lo < LANES - jlo ? jlo + (int)(c1 - lo) : LANES;
        const int64_t cb = lo - jlo; /* neuron of lane 0 (may lie before neuron 0) */
        const unsigned live = (0xFFFFu >> (LANES - (jhi - jlo))) << jlo;
        lane_params lp;
        for (int j = 0; j < LANES; j++) {
            const int in = j >= jlo && j < jhi;
            lp.cf[j] = in ? h->cf[cb + j] : 0.0f;
            lp.gf[j] = in ? h->gf[cb + j] : 0.0f;
            lp.df[j] = in ? h->df[cb + j] : 1.0f;
            lp.zb[j] = in ? h->zb[cb + j] : 0;
            lp.centre[j] = in ? h->centre[cb + j] : 0.0;
            lp.half[j] = in ? h->half[cb + j] : 1.0;
        }
        int64_t nans[LANES] = {0};
        int64_t rows = 0; /* since the last flush */
        for (int64_t n = 0; n < a->n_images; n++) {
            const float *first = data + n * a->image_stride + lo;
            const float *next = n + 1 < a->n_images ? first + a->image_stride : NULL;
            for (int64_t q0 = 0; q0 < S; q0 += CHUNK_ROWS) {
                const int64_t nq = S - q0 < CHUNK_ROWS ? S - q0 : CHUNK_ROWS;
                if (rows + nq > UINT16_MAX) {
                    flush_lanes(mem, stride, h, cb, jlo, jhi, nans);
                    rows = 0;
                }
                job->simd->count_lanes_f32(first, jlo, soff, q0, nq, S, next, &lp, live, B, stride, mem);
                rows += nq;
            }
        }
        flush_lanes(mem, stride, h, cb, jlo, jhi, nans);
        for (int j = jlo; j < jhi; j++) h->nan_counts[cb + j] += nans[j];
        lo += jhi - jlo;
    }
    free(soff);
    free(mem);
}

int64_t vdna_hist_lanes_phase(const vdna_acts *a) {
    const uintptr_t addr = (uintptr_t)a->data;
    if (addr % sizeof(float) != 0 || a->image_stride % LANES != 0) return 0;
    for (int64_t p = 0; p < a->n_samples; p++)
        if (vdna_acts_sample_offset(a, p) % LANES != 0) return 0;
    return (int64_t)((addr / sizeof(float)) % LANES);
}

void vdna_hist_by_lane_blocks(void *ctx, int64_t k0, int64_t k1) {
    const hist_job *job = ctx;
    int64_t c0 = k0 * LANES - job->phase, c1 = k1 * LANES - job->phase;
    c0 = c0 < 0 ? 0 : c0;
    c1 = c1 > job->h->n_neurons ? job->h->n_neurons : c1;
    if (c0 < c1) hist_by_line_blocks(job, c0, c1);
}

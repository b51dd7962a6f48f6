/* hist_avx512.c: the AVX-512 (F, DQ) histogram kernel (hist_kernels.h), for x86-64 CPUs that
 * have it; hist.c runs it only after checking the CPU. Bins are exact_bin's, value by value. */
#include "hist_kernels.h"

#ifdef VDNA_HIST_X86_KERNELS
#include <immintrin.h>

/* ---- float32 runs of one neuron without their exact zeros (ReLU outputs: often half the values)
 * Exact zeros (+0.0 and -0.0 compare equal and bin alike: x - centre is then -centre or, for
 * centre 0, a signed zero that becomes 1 after "+ 1") all take the precomputed bin zb, so they are
 * only counted here, and the bins of the other values are packed into idx: the scatter into the
 * local histograms, the floor of this path, then sees only those. Entries the estimate is unsure
 * of hold ~i (i: the value's position in v) and are redone by the caller (nonzero_bins_f32).
 * Here: compare, estimate and compress 16 values at a time (compress into
 * a register and a full store, faster than a compressing store on Intel; idx has 16 spare
 * entries). The estimate w is estimate_f32's, with the same operations in the same order; then
 * "near" is |w - round(w)| <= dl (vreduceps, exact), which for w in [-1/2, B + 1/2] is the same
 * test as estimate_f32's on f = w - trunc(w): f <= dl, or f < 0 (w in [-1/2, 0)) and f >= -dl,
 * or f >= 1 - dl. NaN is kept through the clamps (max/min return their second operand on NaN)
 * and is "near" (the unordered compare), so the exact redo bins it. */
__attribute__((target("avx512f,avx512dq")))
static int64_t pack_nonzero_f32_avx512(const float *v, int64_t n, float cf, float gf, float dl, int32_t bins,
                                       int32_t *idx, int64_t *zeros, int32_t *any) {
    const __m512 c = _mm512_set1_ps(cf), g = _mm512_set1_ps(gf), hb = _mm512_set1_ps((float)bins * 0.5f);
    const __m512 lo = _mm512_set1_ps(-0.5f), top = _mm512_set1_ps((float)bins + 0.5f), zero = _mm512_setzero_ps();
    const __m512 d = _mm512_set1_ps(dl);
    const __m512i last = _mm512_set1_epi32(bins - 1), step = _mm512_set1_epi32(16);
    __m512i notpos = _mm512_setr_epi32(~0, ~1, ~2, ~3, ~4, ~5, ~6, ~7, ~8, ~9, ~10, ~11, ~12, ~13, ~14, ~15);
    int64_t m = 0, nz = 0;
    __mmask16 unsure = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const int64_t rem = n - i < 16 ? n - i : 16;
        const __mmask16 live = (__mmask16)(0xFFFFu >> (16 - rem));
        const __m512 x = _mm512_maskz_loadu_ps(live, v + i);
        const __mmask16 keep = _mm512_mask_cmp_ps_mask(live, x, zero, _CMP_NEQ_UQ); /* non-zero or NaN */
        __m512 w = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, c), g), hb);
        w = _mm512_min_ps(top, _mm512_max_ps(lo, w));
        __m512i b = _mm512_min_epi32(_mm512_cvttps_epi32(w), last);
        const __m512 r = _mm512_abs_ps(_mm512_reduce_ps(w, _MM_FROUND_TO_NEAREST_INT));
        const __mmask16 near = _mm512_mask_cmp_ps_mask(keep, r, d, _CMP_NGT_UQ);
        b = _mm512_mask_mov_epi32(b, near, notpos);
        _mm512_storeu_si512((void *)(idx + m), _mm512_maskz_compress_epi32(keep, b));
        m += __builtin_popcount((unsigned)keep);
        nz += rem - __builtin_popcount((unsigned)keep);
        unsure |= near;
        notpos = _mm512_sub_epi32(notpos, step);
    }
    *zeros += nz;
    *any = unsure != 0;
    return m;
}

/* ---- float32 lanes (the loop over blocks is hist_by_line_blocks, hist_portable.c). Estimate and
 * exact redo are fused per position (no second pass over the slot indices to find the unsure
 * ones). Counting stays a scalar loop over the slot indices of a chunk: measured against a
 * gather / +1 / scatter of the 16 counters of a position (the lanes hit 16 different
 * histograms), it is as fast on data from memory and ~20% faster on data in cache.
 * Broadcast constants of lane_slots: */
typedef struct {
    __m512i laneoff, zslot, last;
    __m512 c, g, d, hb, lo, top;
} lane_consts;

/* Slot indices (lane j: j * stride + bin) of the 16 values at v (live lanes only): the float32
 * estimate of estimate_lanes_f32, with the same operations in the same order; "near" and NaN as in
 * pack_nonzero_f32_avx512 (NaN is "near", and the exact redo gives it the NaN slot); exact zeros
 * take zb. */
__attribute__((target("avx512f,avx512dq"), always_inline))
static inline __m512i lane_slots(const float *v, const lane_consts *k, const lane_params *lp, __mmask16 live,
                                 int32_t bins, int32_t stride) {
    const __m512 x = _mm512_maskz_loadu_ps(live, v);
    const __mmask16 isz = _mm512_mask_cmp_ps_mask(live, x, _mm512_setzero_ps(), _CMP_EQ_OQ);
    __m512 w = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, k->c), k->g), k->hb);
    w = _mm512_min_ps(k->top, _mm512_max_ps(k->lo, w));
    __m512i b = _mm512_add_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(w), k->last), k->laneoff);
    const __m512 r = _mm512_abs_ps(_mm512_reduce_ps(w, _MM_FROUND_TO_NEAREST_INT));
    const __mmask16 near = _mm512_mask_cmp_ps_mask(live & (__mmask16)~isz, r, k->d, _CMP_NGT_UQ);
    b = _mm512_mask_mov_epi32(b, isz, k->zslot);
    if (near) { /* rare (about 2 delta per value): redo those lanes exactly */
        int32_t t[LANES];
        _mm512_storeu_si512((void *)t, b);
        for (unsigned m = near; m; m &= m - 1) {
            const int j = __builtin_ctz(m);
            t[j] = j * stride + exact_bin((double)v[j], lp->centre[j], lp->half[j], bins);
        }
        b = _mm512_loadu_si512((const void *)t);
    }
    return b;
}

/* hist_simd_kernel.count_lanes_f32 (hist_kernels.h). */
__attribute__((target("avx512f,avx512dq")))
static void count_lanes_f32_avx512(const float *first, int shift, const int64_t *soff, int64_t q0, int64_t nq,
                                   int64_t n_samples, const float *next, const lane_params *lp, unsigned live_bits,
                                   int32_t bins, int32_t stride, uint16_t *mem) {
    const __mmask16 live = (__mmask16)live_bits;
    lane_consts k;
    k.laneoff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                   _mm512_set1_epi32(stride));
    k.c = _mm512_loadu_ps(lp->cf);
    k.g = _mm512_loadu_ps(lp->gf);
    k.d = _mm512_loadu_ps(lp->df);
    k.hb = _mm512_set1_ps((float)bins * 0.5f);
    k.lo = _mm512_set1_ps(-0.5f);
    k.top = _mm512_set1_ps((float)bins + 0.5f);
    k.zslot = _mm512_add_epi32(_mm512_loadu_si512((const void *)lp->zb), k.laneoff);
    k.last = _mm512_set1_epi32(bins - 1);
    const __m512i pad = _mm512_add_epi32(k.laneoff, _mm512_set1_epi32(bins + 1));
    const uintptr_t back = (uintptr_t)shift * sizeof(float);
    int32_t idx[CHUNK_ROWS * LANES];
    for (int64_t q = q0; q < q0 + nq; q++) {
        /* positions are far apart (a row of all neurons between them): prefetch by hand, both
         * ends of the block (one line when it is aligned) */
        const int64_t ahead = q + LANE_PREFETCH;
        const float *pf = ahead < n_samples ? first + soff[ahead]
                          : next && ahead - n_samples < n_samples ? next + soff[ahead - n_samples] : NULL;
        if (pf) {
            const uintptr_t pa = (uintptr_t)pf - back;
            _mm_prefetch((const char *)pa, _MM_HINT_T0);
            _mm_prefetch((const char *)(pa + (LANES - 1) * sizeof(float)), _MM_HINT_T0);
        }
        const float *v = (const float *)((uintptr_t)(first + soff[q]) - back); /* lane 0 */
        const __m512i b = _mm512_mask_mov_epi32(pad, live, lane_slots(v, &k, lp, live, bins, stride));
        _mm512_storeu_si512((void *)(idx + (q - q0) * LANES), b);
    }
    for (int64_t i = 0; i < nq * LANES; i++) mem[idx[i]]++;
}


const hist_simd_kernel vdna_hist_avx512_kernel = {pack_nonzero_f32_avx512, count_lanes_f32_avx512};
#else
typedef int vdna_hist_avx512_unused; /* ISO C: a translation unit is not empty */
#endif

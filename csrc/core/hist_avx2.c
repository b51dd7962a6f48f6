/* hist_avx2.c: the AVX2 histogram kernel (hist_kernels.h), for x86-64 CPUs that have it; hist.c
 * runs it only after checking the CPU. The AVX-512 kernel (hist_avx512.c) with 8-float vectors:
 * the same operations in the same order, so the same estimates and the same "near" decisions;
 * bins are exact_bin's, value by value. No FMA: the target is "avx2" alone, so a multiply and an
 * add are never fused (the estimate's error bound assumes two roundings). */
#include "hist_kernels.h"

#ifdef VDNA_HIST_X86_KERNELS
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2")))

/* Lanes i < n (n in [0, 8]) as an all-ones mask. */
AVX2 static inline __m256i first_lanes(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* v[0..n) (n < 8) and zeros, without reading past v + n. Not _mm256_maskload_ps: measured on AMD
 * Zen 3, one masked load per 7x7 run took 40% of the packing time. */
AVX2 static inline __m256 load_first(const float *v, int64_t n) {
    float t[8] = {0};
    memcpy(t, v, (size_t)n * sizeof(float));
    return _mm256_loadu_ps(t);
}

/* |w - round(w)|, round to nearest even: vreduceps of the AVX-512 kernel. Exact: for |w| < 1/2,
 * round(w) = 0; otherwise w and round(w) are within a factor 2 of each other (Sterbenz). */
AVX2 static inline __m256 dist_to_integer(__m256 w) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    return _mm256_and_ps(absmask, _mm256_sub_ps(w, _mm256_round_ps(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
}

/* ---- float32 runs of one neuron without their exact zeros (see hist_avx512.c): compare,
 * estimate and compress 8 values at a time. AVX2 has no compress: entry k of this table holds the
 * positions of the set bits of k, 4 bits each, lowest first, for a lane permutation (the lanes
 * after them are don't-cares, overwritten by the next store; idx has 16 spare entries). */
static const uint32_t compress_lanes[256] = {
    0x00000000, 0x00000000, 0x00000001, 0x00000010, 0x00000002, 0x00000020, 0x00000021, 0x00000210,
    0x00000003, 0x00000030, 0x00000031, 0x00000310, 0x00000032, 0x00000320, 0x00000321, 0x00003210,
    0x00000004, 0x00000040, 0x00000041, 0x00000410, 0x00000042, 0x00000420, 0x00000421, 0x00004210,
    0x00000043, 0x00000430, 0x00000431, 0x00004310, 0x00000432, 0x00004320, 0x00004321, 0x00043210,
    0x00000005, 0x00000050, 0x00000051, 0x00000510, 0x00000052, 0x00000520, 0x00000521, 0x00005210,
    0x00000053, 0x00000530, 0x00000531, 0x00005310, 0x00000532, 0x00005320, 0x00005321, 0x00053210,
    0x00000054, 0x00000540, 0x00000541, 0x00005410, 0x00000542, 0x00005420, 0x00005421, 0x00054210,
    0x00000543, 0x00005430, 0x00005431, 0x00054310, 0x00005432, 0x00054320, 0x00054321, 0x00543210,
    0x00000006, 0x00000060, 0x00000061, 0x00000610, 0x00000062, 0x00000620, 0x00000621, 0x00006210,
    0x00000063, 0x00000630, 0x00000631, 0x00006310, 0x00000632, 0x00006320, 0x00006321, 0x00063210,
    0x00000064, 0x00000640, 0x00000641, 0x00006410, 0x00000642, 0x00006420, 0x00006421, 0x00064210,
    0x00000643, 0x00006430, 0x00006431, 0x00064310, 0x00006432, 0x00064320, 0x00064321, 0x00643210,
    0x00000065, 0x00000650, 0x00000651, 0x00006510, 0x00000652, 0x00006520, 0x00006521, 0x00065210,
    0x00000653, 0x00006530, 0x00006531, 0x00065310, 0x00006532, 0x00065320, 0x00065321, 0x00653210,
    0x00000654, 0x00006540, 0x00006541, 0x00065410, 0x00006542, 0x00065420, 0x00065421, 0x00654210,
    0x00006543, 0x00065430, 0x00065431, 0x00654310, 0x00065432, 0x00654320, 0x00654321, 0x06543210,
    0x00000007, 0x00000070, 0x00000071, 0x00000710, 0x00000072, 0x00000720, 0x00000721, 0x00007210,
    0x00000073, 0x00000730, 0x00000731, 0x00007310, 0x00000732, 0x00007320, 0x00007321, 0x00073210,
    0x00000074, 0x00000740, 0x00000741, 0x00007410, 0x00000742, 0x00007420, 0x00007421, 0x00074210,
    0x00000743, 0x00007430, 0x00007431, 0x00074310, 0x00007432, 0x00074320, 0x00074321, 0x00743210,
    0x00000075, 0x00000750, 0x00000751, 0x00007510, 0x00000752, 0x00007520, 0x00007521, 0x00075210,
    0x00000753, 0x00007530, 0x00007531, 0x00075310, 0x00007532, 0x00075320, 0x00075321, 0x00753210,
    0x00000754, 0x00007540, 0x00007541, 0x00075410, 0x00007542, 0x00075420, 0x00075421, 0x00754210,
    0x00007543, 0x00075430, 0x00075431, 0x00754310, 0x00075432, 0x00754320, 0x00754321, 0x07543210,
    0x00000076, 0x00000760, 0x00000761, 0x00007610, 0x00000762, 0x00007620, 0x00007621, 0x00076210,
    0x00000763, 0x00007630, 0x00007631, 0x00076310, 0x00007632, 0x00076320, 0x00076321, 0x00763210,
    0x00000764, 0x00007640, 0x00007641, 0x00076410, 0x00007642, 0x00076420, 0x00076421, 0x00764210,
    0x00007643, 0x00076430, 0x00076431, 0x00764310, 0x00076432, 0x00764320, 0x00764321, 0x07643210,
    0x00000765, 0x00007650, 0x00007651, 0x00076510, 0x00007652, 0x00076520, 0x00076521, 0x00765210,
    0x00007653, 0x00076530, 0x00076531, 0x00765310, 0x00076532, 0x00765320, 0x00765321, 0x07653210,
    0x00007654, 0x00076540, 0x00076541, 0x00765410, 0x00076542, 0x00765420, 0x00765421, 0x07654210,
    0x00076543, 0x00765430, 0x00765431, 0x07654310, 0x00765432, 0x07654320, 0x07654321, 0x76543210,
};

AVX2 static int64_t pack_nonzero_f32_avx2(const float *v, int64_t n, float cf, float gf, float dl, int32_t bins,
                                          int32_t *idx, int64_t *zeros, int32_t *any) {
    const __m256 c = _mm256_set1_ps(cf), g = _mm256_set1_ps(gf), hb = _mm256_set1_ps((float)bins * 0.5f);
    const __m256 lo = _mm256_set1_ps(-0.5f), top = _mm256_set1_ps((float)bins + 0.5f), zero = _mm256_setzero_ps();
    const __m256 d = _mm256_set1_ps(dl);
    const __m256i last = _mm256_set1_epi32(bins - 1), step = _mm256_set1_epi32(8);
    const __m256i nibble = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i notpos = _mm256_setr_epi32(~0, ~1, ~2, ~3, ~4, ~5, ~6, ~7);
    int64_t m = 0, nz = 0;
    int unsure = 0;
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t rem = n - i < 8 ? n - i : 8;
        const __m256i live = first_lanes(rem);
        const __m256 x = rem == 8 ? _mm256_loadu_ps(v + i) : load_first(v + i, rem);
        const __m256 keepv = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_NEQ_UQ), _mm256_castsi256_ps(live));
        const unsigned keep = (unsigned)_mm256_movemask_ps(keepv); /* non-zero or NaN */
        __m256 w = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, c), g), hb);
        w = _mm256_min_ps(top, _mm256_max_ps(lo, w));
        __m256i b = _mm256_min_epi32(_mm256_cvttps_epi32(w), last);
        const __m256 near = _mm256_and_ps(_mm256_cmp_ps(dist_to_integer(w), d, _CMP_NGT_UQ), keepv);
        b = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(notpos), near));
        const __m256i perm = _mm256_srlv_epi32(_mm256_set1_epi32((int)compress_lanes[keep]), nibble);
        _mm256_storeu_si256((__m256i *)(idx + m), _mm256_permutevar8x32_epi32(b, perm));
        m += __builtin_popcount(keep);
        nz += rem - __builtin_popcount(keep);
        unsure |= _mm256_movemask_ps(near);
        notpos = _mm256_sub_epi32(notpos, step);
    }
    *zeros += nz;
    *any = unsure != 0;
    return m;
}

/* ---- float32 lanes (see hist_avx512.c): the 16 lanes of a block as two halves of 8. */
typedef struct {
    __m256i laneoff[2], zslot[2], pad[2], live[2], last;
    __m256 c[2], g[2], d[2], hb, lo, top;
    unsigned live_bits[2]; /* bit i: lane 8 half + i is live */
} lane_consts;

/* Slot indices of the 8 values at v, lanes 8 half .. 8 half + 7 of the block (pad slot outside
 * `live`): estimate_lanes_f32's estimate, exact zeros take zb, the unsure redone exactly. */
AVX2 static inline __m256i lane_slots(const float *v, const lane_consts *k, const lane_params *lp, int half,
                                      int32_t bins, int32_t stride) {
    const __m256 livef = _mm256_castsi256_ps(k->live[half]);
    __m256 x;
    if (k->live_bits[half] == 0xFFu)
        x = _mm256_loadu_ps(v);
    else { /* a block at the end of a thread's neurons: the live lanes only (see load_first) */
        float t[8] = {0};
        for (unsigned m = k->live_bits[half]; m; m &= m - 1) t[__builtin_ctz(m)] = v[__builtin_ctz(m)];
        x = _mm256_loadu_ps(t);
    }
    const __m256 isz = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ), livef);
    __m256 w = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, k->c[half]), k->g[half]), k->hb);
    w = _mm256_min_ps(k->top, _mm256_max_ps(k->lo, w));
    __m256i b = _mm256_add_epi32(_mm256_min_epi32(_mm256_cvttps_epi32(w), k->last), k->laneoff[half]);
    const __m256 near = _mm256_andnot_ps(isz, _mm256_and_ps(_mm256_cmp_ps(dist_to_integer(w), k->d[half], _CMP_NGT_UQ), livef));
    b = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(k->zslot[half]), isz));
    b = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(k->pad[half]), _mm256_castsi256_ps(b), livef));
    const unsigned redo = (unsigned)_mm256_movemask_ps(near);
    if (redo) { /* rare (about 2 delta per value): redo those lanes exactly */
        int32_t t[8];
        _mm256_storeu_si256((__m256i *)t, b);
        for (unsigned m = redo; m; m &= m - 1) {
            const int i = __builtin_ctz(m), j = 8 * half + i;
            t[i] = j * stride + exact_bin((double)v[i], lp->centre[j], lp->half[j], bins);
        }
        b = _mm256_loadu_si256((const __m256i *)t);
    }
    return b;
}

AVX2 static void count_lanes_f32_avx2(const float *first, int shift, const int64_t *soff, int64_t q0, int64_t nq,
                                      int64_t n_samples, const float *next, const lane_params *lp, unsigned live,
                                      int32_t bins, int32_t stride, uint16_t *mem) {
    lane_consts k;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), one = _mm256_set1_epi32(1);
    for (int half = 0; half < 2; half++) {
        const __m256i j = _mm256_add_epi32(lane, _mm256_set1_epi32(8 * half));
        k.laneoff[half] = _mm256_mullo_epi32(j, _mm256_set1_epi32(stride));
        k.c[half] = _mm256_loadu_ps(lp->cf + 8 * half);
        k.g[half] = _mm256_loadu_ps(lp->gf + 8 * half);
        k.d[half] = _mm256_loadu_ps(lp->df + 8 * half);
        k.zslot[half] = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(lp->zb + 8 * half)), k.laneoff[half]);
        k.pad[half] = _mm256_add_epi32(k.laneoff[half], _mm256_set1_epi32(bins + 1));
        /* lane j live: bit j of `live` */
        const __m256i bits = _mm256_sllv_epi32(one, j);
        k.live[half] = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)live), bits), bits);
        k.live_bits[half] = (live >> (8 * half)) & 0xFFu;
    }
    k.hb = _mm256_set1_ps((float)bins * 0.5f);
    k.lo = _mm256_set1_ps(-0.5f);
    k.top = _mm256_set1_ps((float)bins + 0.5f);
    k.last = _mm256_set1_epi32(bins - 1);
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
        int32_t *out = idx + (q - q0) * LANES;
        _mm256_storeu_si256((__m256i *)out, lane_slots(v, &k, lp, 0, bins, stride));
        const float *v8 = (const float *)((uintptr_t)v + 8 * sizeof(float)); /* lane 8 */
        _mm256_storeu_si256((__m256i *)(out + 8), lane_slots(v8, &k, lp, 1, bins, stride));
    }
    for (int64_t i = 0; i < nq * LANES; i++) mem[idx[i]]++;
}

const hist_simd_kernel vdna_hist_avx2_kernel = {pack_nonzero_f32_avx2, count_lanes_f32_avx2};
#else
typedef int vdna_hist_avx2_unused; /* ISO C: a translation unit is not empty */
#endif

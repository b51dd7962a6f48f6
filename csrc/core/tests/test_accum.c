/* test_accum.c: C tests of the accumulators (no Python), with hand-worked values. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdna_core.h"

static int failures = 0;
#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)
#define CHECK_OK(expr)                                                                                     \
    do {                                                                                                   \
        vdna_status st_ = (expr);                                                                          \
        if (st_ != VDNA_OK) {                                                                              \
            failures++;                                                                                    \
            fprintf(stderr, "%s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #expr, vdna_status_name(st_),    \
                    vdna_last_error());                                                                    \
        }                                                                                                  \
    } while (0)
#define CHECK_CLOSE(a, b, tol) CHECK(fabs((a) - (b)) <= (tol))

/* ---------------------------------------------------------------- helpers */
static vdna_array make_array(const void *data, vdna_dtype dtype, int ndim, const int64_t *shape) {
    vdna_array x;
    memset(&x, 0, sizeof x);
    x.data = data;
    x.dtype = dtype;
    x.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        x.shape[d] = shape[d];
        x.strides[d] = s;
        s *= shape[d];
    }
    return x;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform(void) { /* xorshift64*, in [0, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

/* The normative bin, written straight from docs/design.md (clamp z first), for comparison. */
static int64_t ref_bin(double x, double mn, double mx, int64_t B) {
    double lo = 1.2 * mn, hi = 1.2 * mx;
    double centre = (lo + hi) / 2, half = (hi - lo) / 2 + 1e-8;
    double z = (x - centre) / half;
    if (z < -1.0) z = -1.0;
    if (z > 1.0) z = 1.0;
    int64_t b = (int64_t)floor((z + 1.0) * (double)B / 2);
    return b < B - 1 ? b : B - 1;
}

/* Reference counts of a contiguous channels array (N, C, S) of doubles. */
static void ref_counts(const double *x, int64_t N, int64_t C, int64_t S, const double *mins, const double *maxs,
                       int64_t B, int64_t *counts, int64_t *nans) {
    memset(counts, 0, (size_t)(C * B) * sizeof *counts);
    memset(nans, 0, (size_t)C * sizeof *nans);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                double v = x[(n * C + c) * S + s];
                if (isnan(v))
                    nans[c]++;
                else
                    counts[c * B + ref_bin(v, mins[c], maxs[c], B)]++;
            }
}

static int equal_i64(const int64_t *a, const int64_t *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* ---------------------------------------------------------------- histograms */
static void test_hist_hand_worked(void) {
    /* min -5, max 5: lo = -6, hi = 6 (1.2*5 rounds to 6), centre 0, half = 6 + 1e-8. B = 4: the
     * interior edges are at x = -half/2, 0, half/2 (exact: halving is exact). */
    double mn = -5, mx = 5, half = 6 + 1e-8;
    CHECK(1.2 * 5 == 6.0);
    double vals[] = {
        0.0,                         /* interior edge z = 0 -> upper bin 2 */
        -half / 2,                   /* edge z = -0.5 -> bin 1 */
        nextafter(-half / 2, -1e9),  /* just below -> bin 0 */
        half / 2,                    /* edge z = 0.5 -> bin 3 */
        half / 2 - 1e-9,             /* below -> bin 2 */
        -half,                       /* z = -1 -> bin 0 */
        half,                        /* z = 1 -> last bin, not B */
        100.0,                       /* clamped -> bin 3 */
        -INFINITY, INFINITY, NAN,    /* end bins; NaN counted only */
    };
    int64_t shape[3] = {1, 1, 11};
    vdna_array x = make_array(vals, VDNA_F64, 3, shape);
    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, 1, 4, &mn, &mx, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h, &x));
    int64_t counts[4], nans[1];
    vdna_hist_counts(h, counts);
    vdna_hist_nan_counts(h, nans);
    int64_t want[4] = {3, 1, 2, 4};
    CHECK(equal_i64(counts, want, 4));
    CHECK(nans[0] == 1);
    CHECK(vdna_hist_num_images(h) == 1);
    /* float32: the same values converted first (the edge values move but must still agree with
     * the reference on the converted values). */
    float f[11];
    double fd[11];
    for (int i = 0; i < 11; i++) fd[i] = (double)(f[i] = (float)vals[i]);
    vdna_hist_reset(h);
    CHECK(vdna_hist_num_images(h) == 0);
    x = make_array(f, VDNA_F32, 3, shape);
    CHECK_OK(vdna_hist_update(h, &x));
    vdna_hist_counts(h, counts);
    int64_t rc[4], rn[1];
    ref_counts(fd, 1, 1, 11, &mn, &mx, 4, rc, rn);
    CHECK(equal_i64(counts, rc, 4));
    vdna_hist_free(h);
}

static void test_hist_one_bin(void) {
    double mn = 0, mx = 1, vals[] = {-1e300, 0.5, 1e300, INFINITY, NAN, -INFINITY};
    int64_t shape[2] = {6, 1}; /* rank 2: one sample per image */
    vdna_array x = make_array(vals, VDNA_F64, 2, shape);
    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, 1, 1, &mn, &mx, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h, &x));
    int64_t counts[1], nans[1];
    vdna_hist_counts(h, counts);
    vdna_hist_nan_counts(h, nans);
    CHECK(counts[0] == 5 && nans[0] == 1);
    CHECK(vdna_hist_num_images(h) == 6);
    vdna_hist_free(h);
}

/* Random activations (N, C, S), some NaN/Inf, against the reference; both counting paths
 * (S large: sub-histograms; S small: direct) and 1 or 2 threads. */
static void test_hist_random(int64_t N, int64_t C, int64_t S, int64_t B) {
    double *x = malloc((size_t)(N * C * S) * sizeof *x);
    double *mins = malloc((size_t)C * sizeof *mins), *maxs = malloc((size_t)C * sizeof *maxs);
    int64_t *counts = malloc((size_t)(C * B) * sizeof *counts), *rc = malloc((size_t)(C * B) * sizeof *rc);
    int64_t *nans = malloc((size_t)C * sizeof *nans), *rn = malloc((size_t)C * sizeof *rn);
    for (int64_t c = 0; c < C; c++) {
        mins[c] = -uniform() * 3;
        maxs[c] = uniform() * 5;
    }
    mins[0] = maxs[0] = 0.25; /* a degenerate range: half = 1e-8 */
    for (int64_t i = 0; i < N * C * S; i++) {
        double u = uniform();
        x[i] = u < 0.2 ? 0.0 : (uniform() * 12 - 5); /* many zeros (ReLU-like) and out-of-range */
        if (u > 0.999) x[i] = NAN;
        if (u > 0.998 && u <= 0.999) x[i] = u > 0.9985 ? INFINITY : -INFINITY;
    }
    ref_counts(x, N, C, S, mins, maxs, B, rc, rn);
    int64_t shape[3] = {N, C, S};
    vdna_array arr = make_array(x, VDNA_F64, 3, shape);
    for (int threads = 1; threads <= 2; threads++) {
        vdna_set_num_threads(threads);
        vdna_hist *h = NULL;
        CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
        CHECK_OK(vdna_hist_update(h, &arr));
        vdna_hist_counts(h, counts);
        vdna_hist_nan_counts(h, nans);
        CHECK(equal_i64(counts, rc, C * B));
        CHECK(equal_i64(nans, rn, C));
        vdna_hist_free(h);
    }
    vdna_set_num_threads(0);
    free(x);
    free(mins);
    free(maxs);
    free(counts);
    free(rc);
    free(nans);
    free(rn);
}

/* ---------------------------------------------------------------- float32 ReLU runs, every kernel
 * The float32 paths have a kernel per instruction set (hist_kernels.h): with an intrinsics kernel
 * the channels path counts the exact zeros of float32 runs apart and packs the other bins, and the
 * tokens lanes go through line-aligned blocks. The tests below run each kernel this CPU runs
 * (vdna_hist_set_kernel), whatever VDNA_HIST_KERNEL says. */
static int kernel_modes(const char **modes) { /* the kernels this CPU runs */
    static const char *const all[3] = {"portable", "avx2", "avx512"};
    int n = 0;
    for (int k = 0; k < 3; k++)
        if (vdna_hist_kernel_available(all[k])) modes[n++] = all[k];
    return n;
}

/* (N, C, S) float32 with about half exact zeros (+0.0 and -0.0), NaN, +-Inf, values on and beside
 * bin edges and out of range, as channels and as tokens; against ref_counts for each kernel, 1 or
 * 2 threads, and split in two batches at every image boundary. Neuron 1 has a symmetric range (centre 0: x = 0 is a bin
 * edge for even B, and -0.0 - 0.0 is -0.0), neuron 2 a degenerate one. */
static void test_hist_relu_runs(int64_t N, int64_t C, int64_t S, int64_t B) {
    const int64_t total = N * C * S;
    float *x = malloc((size_t)total * sizeof *x);
    double *xd = malloc((size_t)total * sizeof *xd);
    double *mins = malloc((size_t)C * sizeof *mins), *maxs = malloc((size_t)C * sizeof *maxs);
    int64_t *counts = malloc((size_t)(C * B) * sizeof *counts), *rc = malloc((size_t)(C * B) * sizeof *rc);
    int64_t *nans = malloc((size_t)C * sizeof *nans), *rn = malloc((size_t)C * sizeof *rn);
    for (int64_t c = 0; c < C; c++) {
        mins[c] = c % 3 == 0 ? 0.0 : -uniform() * 2;
        maxs[c] = 0.5 + uniform() * 4;
    }
    mins[1 % C] = -2.0, maxs[1 % C] = 2.0;
    if (C > 2) mins[2] = maxs[2] = 0.0;
    for (int64_t i = 0; i < total; i++) {
        double u = uniform();
        int64_t c = (i / S) % C;
        double lo = 1.2 * mins[c], hi = 1.2 * maxs[c], centre = (lo + hi) / 2, half = (hi - lo) / 2 + 1e-8;
        if (u < 0.25)
            x[i] = 0.0f;
        else if (u < 0.5)
            x[i] = -0.0f;
        else if (u < 0.6) /* on a bin edge (as float32) or one ulp away */
            x[i] = nextafterf((float)(centre + half * (2.0 * (double)(int64_t)(uniform() * (double)B) / (double)B - 1.0)),
                              uniform() < 0.5 ? -INFINITY : INFINITY);
        else if (u < 0.995)
            x[i] = (float)(uniform() * 6 - 1);
        else if (u < 0.997)
            x[i] = NAN;
        else
            x[i] = u < 0.9985 ? INFINITY : -INFINITY;
        xd[i] = (double)x[i];
    }
    ref_counts(xd, N, C, S, mins, maxs, B, rc, rn);
    /* the same values as tokens (N, S, C): 16-neuron lanes when C >= 16 */
    float *tok = malloc((size_t)total * sizeof *tok);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) tok[(n * S + s) * C + c] = x[(n * C + c) * S + s];
    const char *modes[3];
    const int n_modes = kernel_modes(modes);
    for (int mi = 0; mi < n_modes; mi++) {
        CHECK_OK(vdna_hist_set_kernel(modes[mi]));
        for (int threads = 1; threads <= 2; threads++) {
            vdna_set_num_threads(threads);
            for (int layout = 0; layout < 2; layout++)
                for (int64_t cut = 0; cut <= N; cut++) {
                    vdna_hist *h = NULL;
                    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, layout ? VDNA_LAYOUT_TOKENS : VDNA_LAYOUT_CHANNELS));
                    int64_t s1[3] = {cut, C, S}, s2[3] = {N - cut, C, S};
                    if (layout) s1[1] = s2[1] = S, s1[2] = s2[2] = C;
                    const float *src = layout ? tok : x;
                    vdna_array a1 = make_array(src, VDNA_F32, 3, s1), a2 = make_array(src + cut * C * S, VDNA_F32, 3, s2);
                    CHECK_OK(vdna_hist_update(h, &a1));
                    CHECK_OK(vdna_hist_update(h, &a2));
                    vdna_hist_counts(h, counts);
                    vdna_hist_nan_counts(h, nans);
                    if (!equal_i64(counts, rc, C * B) || !equal_i64(nans, rn, C)) {
                        failures++;
                        fprintf(stderr, "relu runs (%lld, %lld, %lld) %s, B %lld, kernel %s, %d thread(s), cut %lld: counts differ\n",
                                (long long)N, (long long)C, (long long)S, layout ? "tokens" : "channels", (long long)B,
                                modes[mi], threads, (long long)cut);
                    }
                    vdna_hist_free(h);
                }
        }
    }
    free(tok);
    CHECK_OK(vdna_hist_set_kernel("auto"));
    vdna_set_num_threads(0);
    free(x);
    free(xd);
    free(mins);
    free(maxs);
    free(counts);
    free(rc);
    free(nans);
    free(rn);
}

/* ---------------------------------------------------------------- tokens float32 lanes
 * The tokens path walks blocks of 16 neurons into 16-bit local histograms: on AVX-512 CPUs blocks
 * of one 64-byte line (so the first and last blocks of a thread are partial, their other lanes
 * masked off); elsewhere blocks from each thread's first neuron and leftovers by rows. Values of
 * (N, T, C) with rows padded to row_len >= C floats, starting `offset` floats into the buffer;
 * neuron c's values cluster on bins k_c - 1, k_c, k_c + 1 (so consecutive positions often share a
 * slot or take adjacent ones), with zeros, bin edges and one ulp beside them, NaN, +-Inf and
 * out-of-range values mixed in; `constant` makes every value of neuron 0 the same (a slot reaches
 * the 16-bit limit between flushes when N T >= 65535). Compared with ref_bin for each kernel,
 * 1 to 3 threads, and the batch split in two at several image boundaries. */
static void test_hist_lanes(int64_t N, int64_t T, int64_t C, int64_t row_len, int64_t B, int constant) {
    const int64_t total = N * T * row_len;
    float *buf = malloc((size_t)(total + 16) * sizeof *buf);
    double *mins = malloc((size_t)C * sizeof *mins), *maxs = malloc((size_t)C * sizeof *maxs);
    int64_t *rc = malloc((size_t)(C * B) * sizeof *rc), *got = malloc((size_t)(C * B) * sizeof *got);
    int64_t *rn = malloc((size_t)C * sizeof *rn), *gn = malloc((size_t)C * sizeof *gn);
    int64_t *kc = malloc((size_t)C * sizeof *kc);
    for (int64_t c = 0; c < C; c++) {
        mins[c] = c % 4 == 0 ? 0.0 : -uniform() * 3;
        maxs[c] = 0.5 + uniform() * 4;
        if (c % 9 == 5) mins[c] = -(maxs[c] = 2.0); /* symmetric: 0 is an edge for even B */
        if (c % 11 == 7) mins[c] = maxs[c] = 0.5;   /* degenerate: half = 1e-8 */
        kc[c] = (int64_t)(uniform() * (double)B);
    }
    int offsets[16], n_off = 0;
    for (int o = 0; o < 16; o++)
        if (total <= 200000 || o % 5 == 0 || o == 15) offsets[n_off++] = o;
    const char *modes[3];
    const int n_modes = kernel_modes(modes);
    const int64_t cuts[4] = {0, 1, N / 2, N};
    for (int oi = 0; oi < n_off; oi++) {
        float *x = buf + offsets[oi];
        for (int64_t i = 0; i < total; i++) x[i] = NAN; /* padding: never read as a neuron */
        memset(rc, 0, (size_t)(C * B) * sizeof *rc);
        memset(rn, 0, (size_t)C * sizeof *rn);
        for (int64_t r = 0; r < N * T; r++)
            for (int64_t c = 0; c < C; c++) {
                double lo = 1.2 * mins[c], hi = 1.2 * maxs[c], centre = (lo + hi) / 2, half = (hi - lo) / 2 + 1e-8;
                double u = uniform();
                float v;
                if (constant && c == 0)
                    v = 0.25f;
                else if (u < 0.6) { /* the centre of bin k_c - 1, k_c or k_c + 1 */
                    int64_t k = kc[c] + (int64_t)(u * 5) % 3 - 1;
                    k = k < 0 ? 0 : k >= B ? B - 1 : k;
                    v = (float)(centre + half * (2.0 * ((double)k + 0.5) / (double)B - 1.0));
                } else if (u < 0.7)
                    v = u < 0.65 ? 0.0f : -0.0f;
                else if (u < 0.8) /* on a bin edge (as float32) or one ulp away */
                    v = nextafterf((float)(centre + half * (2.0 * (double)(int64_t)(uniform() * (double)B) / (double)B - 1.0)),
                                   uniform() < 0.5 ? -INFINITY : INFINITY);
                else if (u < 0.99)
                    v = (float)(uniform() * 10 - 5);
                else if (u < 0.995)
                    v = NAN;
                else
                    v = u < 0.9975 ? INFINITY : -INFINITY;
                x[r * row_len + c] = v;
                if (isnan(v))
                    rn[c]++;
                else
                    rc[c * B + ref_bin((double)v, mins[c], maxs[c], B)]++;
            }
        for (int mi = 0; mi < n_modes; mi++) {
            CHECK_OK(vdna_hist_set_kernel(modes[mi]));
            for (int threads = 1; threads <= 3; threads++) {
                vdna_set_num_threads(threads);
                for (int ci = 0; ci < 4; ci++) {
                    if (ci > 0 && (cuts[ci] == cuts[ci - 1] || total > 200000)) continue;
                    const int64_t cut = cuts[ci];
                    vdna_hist *h = NULL;
                    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_TOKENS));
                    int64_t s1[3] = {cut, T, C}, s2[3] = {N - cut, T, C};
                    vdna_array a1 = make_array(x, VDNA_F32, 3, s1), a2 = make_array(x + cut * T * row_len, VDNA_F32, 3, s2);
                    a1.strides[0] = a2.strides[0] = T * row_len;
                    a1.strides[1] = a2.strides[1] = row_len;
                    if (cut > 0) CHECK_OK(vdna_hist_update(h, &a1));
                    if (cut < N) CHECK_OK(vdna_hist_update(h, &a2));
                    vdna_hist_counts(h, got);
                    vdna_hist_nan_counts(h, gn);
                    if (!equal_i64(got, rc, C * B) || !equal_i64(gn, rn, C)) {
                        failures++;
                        fprintf(stderr, "lanes (%lld, %lld, %lld), row %lld, B %lld, offset %d, kernel %s, %d thread(s), cut %lld: counts differ\n",
                                (long long)N, (long long)T, (long long)C, (long long)row_len, (long long)B, offsets[oi],
                                modes[mi], threads, (long long)cut);
                    }
                    vdna_hist_free(h);
                }
            }
        }
    }
    CHECK_OK(vdna_hist_set_kernel("auto"));
    vdna_set_num_threads(0);
    free(buf);
    free(mins);
    free(maxs);
    free(rc);
    free(got);
    free(rn);
    free(gn);
    free(kc);
}

/* -0.0 and +0.0 land in the same bin, the formula's, also where 0 is a bin edge (centre 0, even
 * B: z = 0 gives t = B/2 exactly, the upper bin) and for a ReLU range (0 is the lowest edge). */
static void test_hist_signed_zeros(void) {
    const double ranges[3][2] = {{-2.0, 2.0}, {0.0, 3.0}, {-1.0, 5.0}};
    const int64_t bins[3] = {2, 10, 1000};
    enum { S = 100 };
    float pz[S], nz[S];
    for (int i = 0; i < S; i++) pz[i] = 0.0f, nz[i] = -0.0f;
    const char *modes[3];
    const int n_modes = kernel_modes(modes);
    for (int r = 0; r < 3; r++)
        for (int bi = 0; bi < 3; bi++) {
            const int64_t B = bins[bi];
            CHECK(ref_bin(-0.0, ranges[r][0], ranges[r][1], B) == ref_bin(0.0, ranges[r][0], ranges[r][1], B));
            const int64_t want = ref_bin(0.0, ranges[r][0], ranges[r][1], B);
            for (int mi = 0; mi < n_modes; mi++) {
                CHECK_OK(vdna_hist_set_kernel(modes[mi]));
                for (int sign = 0; sign < 2; sign++) {
                    int64_t shape[3] = {1, 1, S}, *counts = calloc((size_t)B, sizeof *counts);
                    vdna_array a = make_array(sign ? nz : pz, VDNA_F32, 3, shape);
                    vdna_hist *h = NULL;
                    CHECK_OK(vdna_hist_create(&h, 1, B, &ranges[r][0], &ranges[r][1], VDNA_LAYOUT_CHANNELS));
                    CHECK_OK(vdna_hist_update(h, &a));
                    vdna_hist_counts(h, counts);
                    CHECK(counts[want] == S);
                    vdna_hist_free(h);
                    free(counts);
                }
            }
        }
    /* centre 0, B even: 0 is the edge between bins B/2 - 1 and B/2 and belongs to the upper one */
    CHECK(ref_bin(-0.0, -2.0, 2.0, 10) == 5);
    CHECK_OK(vdna_hist_set_kernel("auto"));
}

/* ---------------------------------------------------------------- bin thresholds (float32)
 * The fast paths estimate a bin with a reciprocal (float64) or in float32 and redo the values
 * near a bin edge exactly. These tests put float32 values exactly on every bin threshold (the
 * smallest float32 in a bin) and one ulp either side, plus extremes, for several ranges, and
 * compare with ref_bin in every layout/dtype path: tokens f32 (16-neuron lanes + the leftover
 * neurons), channels f32 (in place), the same values as f64, and one thread or two. */
static uint32_t f32_key(float f) { /* order-preserving map of float32 to uint32 (no NaN) */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
static float f32_from_key(uint32_t k) {
    uint32_t u = (k & 0x80000000u) ? k & 0x7FFFFFFFu : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Smallest float32 x with ref_bin(x) >= k (bisection over the ordered float32s, -Inf..+Inf). */
static float f32_threshold(int64_t k, double mn, double mx, int64_t B) {
    uint32_t lo = f32_key(-INFINITY), hi = f32_key(INFINITY); /* ref_bin(lo) = 0 < k <= ref_bin(hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ref_bin((double)f32_from_key(mid), mn, mx, B) >= k)
            hi = mid;
        else
            lo = mid;
    }
    return f32_from_key(hi);
}

/* Values of one neuron: each threshold and its float32 neighbours, then extremes. */
static int64_t threshold_values(double mn, double mx, int64_t B, float *out) {
    int64_t n = 0;
    for (int64_t k = 1; k < B; k++) {
        float t = f32_threshold(k, mn, mx, B);
        out[n++] = nextafterf(t, -INFINITY);
        out[n++] = t;
        out[n++] = nextafterf(t, INFINITY);
    }
    const float extremes[] = {INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 0x1p-149f, -0x1p-149f, FLT_MIN, 0.0f, -0.0f,
                              NAN, (float)mn, (float)mx, (float)(1.2 * mn), (float)(1.2 * mx), 1e30f, -1e30f};
    for (size_t i = 0; i < sizeof extremes / sizeof *extremes; i++) out[n++] = extremes[i];
    return n;
}

static void test_hist_thresholds(int64_t B) {
    enum { C = 19 }; /* one block of 16 lanes and 3 leftover neurons */
    double mins[C], maxs[C];
    for (int c = 0; c < C; c++) {
        double a = (uniform() - 0.5) * 20, b = a + uniform() * 10;
        if (c % 5 == 1) a = 0, b = uniform() * 4;          /* ReLU-like */
        if (c % 5 == 2) a = -(b = 1 + uniform());          /* symmetric: x = 0 gives t = B/2 */
        if (c % 5 == 3) a = b = uniform() * 3 - 1;         /* min == max: half = 1e-8 */
        if (c % 7 == 4) a = 1000 + uniform(), b = a + 1e-3; /* narrow, far from zero */
        mins[c] = a;
        maxs[c] = b;
    }
    int64_t cap = 3 * B + 32, S = 0;
    float *vals = malloc((size_t)(C * cap) * sizeof *vals);
    int64_t len[C];
    for (int c = 0; c < C; c++) {
        len[c] = threshold_values(mins[c], maxs[c], B, vals + c * cap);
        if (len[c] > S) S = len[c];
    }
    /* tokens (1, S, C) and channels (1, C, S): neuron c gets its values, padded with NaN */
    float *tok = malloc((size_t)(S * C) * sizeof *tok), *chn = malloc((size_t)(S * C) * sizeof *chn);
    double *dbl = malloc((size_t)(S * C) * sizeof *dbl);
    for (int c = 0; c < C; c++)
        for (int64_t s = 0; s < S; s++) {
            float v = s < len[c] ? vals[c * cap + s] : NAN;
            tok[s * C + c] = v;
            chn[c * S + s] = v;
            dbl[c * S + s] = (double)v;
        }
    int64_t *rc = malloc((size_t)(C * B) * sizeof *rc), *got = malloc((size_t)(C * B) * sizeof *got);
    int64_t rn[C], gn[C];
    ref_counts(dbl, 1, C, S, mins, maxs, B, rc, rn);
    int64_t tshape[3] = {1, S, C}, cshape[3] = {1, C, S};
    vdna_array arrays[3] = {make_array(tok, VDNA_F32, 3, tshape), make_array(chn, VDNA_F32, 3, cshape),
                            make_array(dbl, VDNA_F64, 3, cshape)};
    vdna_layout layouts[3] = {VDNA_LAYOUT_TOKENS, VDNA_LAYOUT_CHANNELS, VDNA_LAYOUT_CHANNELS};
    const char *modes[3];
    const int n_modes = kernel_modes(modes);
    for (int mi = 0; mi < n_modes; mi++) {
        CHECK_OK(vdna_hist_set_kernel(modes[mi]));
        for (int threads = 1; threads <= 2; threads++) {
            vdna_set_num_threads(threads);
            for (int i = 0; i < 3; i++) {
                vdna_hist *h = NULL;
                CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, layouts[i]));
                CHECK_OK(vdna_hist_update(h, &arrays[i]));
                vdna_hist_counts(h, got);
                vdna_hist_nan_counts(h, gn);
                if (!equal_i64(got, rc, C * B) || !equal_i64(gn, rn, C)) {
                    failures++;
                    fprintf(stderr, "thresholds: B %lld, array %d, kernel %s, %d thread(s): counts differ\n",
                            (long long)B, i, modes[mi], threads);
                }
                vdna_hist_free(h);
            }
        }
    }
    CHECK_OK(vdna_hist_set_kernel("auto"));
    vdna_set_num_threads(0);
    free(vals);
    free(tok);
    free(chn);
    free(dbl);
    free(rc);
    free(got);
}

/* The same for float64 values: every float64 threshold and its neighbours (the reciprocal
 * estimate of the float64 paths is off by an ulp at some of them). */
static uint64_t f64_key(double f) {
    uint64_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x8000000000000000ull) ? ~u : u | 0x8000000000000000ull;
}
static double f64_from_key(uint64_t k) {
    uint64_t u = (k & 0x8000000000000000ull) ? k & 0x7FFFFFFFFFFFFFFFull : ~k;
    double f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_hist_thresholds_f64(int64_t B) {
    enum { C = 5 };
    double mins[C], maxs[C];
    for (int c = 0; c < C; c++) {
        mins[c] = (uniform() - 0.7) * 10;
        maxs[c] = mins[c] + uniform() * 10;
    }
    mins[C - 1] = -(maxs[C - 1] = 1.5); /* symmetric */
    int64_t S = 3 * (B - 1) + 1;
    double *x = malloc((size_t)(C * S) * sizeof *x);
    for (int c = 0; c < C; c++) {
        for (int64_t k = 1; k < B; k++) {
            uint64_t lo = f64_key(-INFINITY), hi = f64_key(INFINITY);
            while (hi - lo > 1) {
                uint64_t mid = lo + (hi - lo) / 2;
                if (ref_bin(f64_from_key(mid), mins[c], maxs[c], B) >= k)
                    hi = mid;
                else
                    lo = mid;
            }
            double t = f64_from_key(hi);
            x[c * S + 3 * (k - 1)] = nextafter(t, -INFINITY);
            x[c * S + 3 * (k - 1) + 1] = t;
            x[c * S + 3 * (k - 1) + 2] = nextafter(t, INFINITY);
        }
        x[c * S + S - 1] = 0.0;
    }
    int64_t *rc = malloc((size_t)(C * B) * sizeof *rc), *got = malloc((size_t)(C * B) * sizeof *got), rn[C], gn[C];
    ref_counts(x, 1, C, S, mins, maxs, B, rc, rn);
    int64_t shape[3] = {1, C, S};
    vdna_array arr = make_array(x, VDNA_F64, 3, shape);
    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h, &arr));
    vdna_hist_counts(h, got);
    vdna_hist_nan_counts(h, gn);
    if (!equal_i64(got, rc, C * B) || !equal_i64(gn, rn, C)) {
        failures++;
        fprintf(stderr, "f64 thresholds: B %lld: counts differ\n", (long long)B);
    }
    vdna_hist_free(h);
    free(x);
    free(rc);
    free(got);
}

/* Merging two halves equals one accumulation; batches split anywhere give the same counts. */
static void test_hist_merge(void) {
    enum { N = 6, C = 3, S = 40, B = 7 };
    static double x[N * C * S];
    double mins[C] = {-1, -2, 0}, maxs[C] = {1, 2, 3};
    for (int i = 0; i < N * C * S; i++) x[i] = uniform() * 8 - 4;
    int64_t shape[3] = {N, C, S}, s1[3] = {2, C, S}, s2[3] = {N - 2, C, S};
    vdna_array all = make_array(x, VDNA_F64, 3, shape);
    vdna_array a = make_array(x, VDNA_F64, 3, s1), b = make_array(x + 2 * C * S, VDNA_F64, 3, s2);
    vdna_hist *h_all = NULL, *h_a = NULL, *h_b = NULL, *h_seq = NULL;
    CHECK_OK(vdna_hist_create(&h_all, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_create(&h_a, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_create(&h_b, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_create(&h_seq, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h_all, &all));
    CHECK_OK(vdna_hist_update(h_a, &a));
    CHECK_OK(vdna_hist_update(h_b, &b));
    CHECK_OK(vdna_hist_update(h_seq, &a));
    CHECK_OK(vdna_hist_update(h_seq, &b));
    CHECK_OK(vdna_hist_merge(h_a, h_b));
    int64_t c1[C * B], c2[C * B], c3[C * B];
    vdna_hist_counts(h_all, c1);
    vdna_hist_counts(h_a, c2);
    vdna_hist_counts(h_seq, c3);
    CHECK(equal_i64(c1, c2, C * B) && equal_i64(c1, c3, C * B));
    CHECK(vdna_hist_num_images(h_a) == N);
    int64_t total = 0;
    for (int i = 0; i < C * B; i++) total += c1[i];
    CHECK(total == N * C * S);
    /* self-merge doubles */
    CHECK_OK(vdna_hist_merge(h_seq, h_seq));
    vdna_hist_counts(h_seq, c3);
    for (int i = 0; i < C * B; i++) CHECK(c3[i] == 2 * c1[i]);
    /* mismatched ranges / bins */
    double other_max[C] = {1, 2, 3.5};
    vdna_hist *h_r = NULL, *h_bins = NULL;
    CHECK_OK(vdna_hist_create(&h_r, C, B, mins, other_max, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_create(&h_bins, C, B + 1, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK(vdna_hist_merge(h_a, h_r) == VDNA_ERR_MISMATCH);
    CHECK(strstr(vdna_last_error(), "neuron 2") != NULL);
    CHECK(vdna_hist_merge(h_a, h_bins) == VDNA_ERR_MISMATCH);
    vdna_hist_free(h_all);
    vdna_hist_free(h_a);
    vdna_hist_free(h_b);
    vdna_hist_free(h_seq);
    vdna_hist_free(h_r);
    vdna_hist_free(h_bins);
}

/* The same values seen through different memory layouts give identical counts. */
static void test_hist_strides(void) {
    enum { N = 3, C = 5, H = 4, W = 6, B = 9 };
    static double x[N * C * H * W], cl[N * H * W * C], tok[N * H * W * C];
    static float xf[N * C * H * W];
    double mins[C], maxs[C];
    for (int c = 0; c < C; c++) {
        mins[c] = -1.0 - c;
        maxs[c] = 1.0 + 0.5 * c;
    }
    for (int i = 0; i < N * C * H * W; i++) x[i] = uniform() * 10 - 5;
    /* channels-last copy: cl[n][h][w][c] */
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < H * W; p++) tok[(n * H * W + p) * C + c] = cl[(n * H * W + p) * C + c] = x[(n * C + c) * H * W + p];
    int64_t shape[4] = {N, C, H, W};
    vdna_array base = make_array(x, VDNA_F64, 4, shape);
    int64_t want[C * B], got[C * B];
    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h, &base));
    vdna_hist_counts(h, want);

    /* channels-last strides (N, C, H, W) -> (HWC, 1, WC, C) */
    vdna_array v = base;
    v.data = cl;
    v.strides[0] = H * W * C;
    v.strides[1] = 1;
    v.strides[2] = W * C;
    v.strides[3] = C;
    vdna_hist_reset(h);
    CHECK_OK(vdna_hist_update(h, &v));
    vdna_hist_counts(h, got);
    CHECK(equal_i64(want, got, C * B));

    /* negative strides: images and W reversed (a permutation of the same values per neuron) */
    v = base;
    v.data = x + (N - 1) * C * H * W + (W - 1);
    v.strides[0] = -(int64_t)(C * H * W);
    v.strides[3] = -1;
    vdna_hist_reset(h);
    CHECK_OK(vdna_hist_update(h, &v));
    vdna_hist_counts(h, got);
    CHECK(equal_i64(want, got, C * B));

    /* transposed spatial dims (H, W) -> strides (1, W) */
    int64_t tshape[4] = {N, C, W, H};
    v = make_array(x, VDNA_F64, 4, tshape);
    v.strides[2] = 1;
    v.strides[3] = W;
    vdna_hist_reset(h);
    CHECK_OK(vdna_hist_update(h, &v));
    vdna_hist_counts(h, got);
    CHECK(equal_i64(want, got, C * B));
    vdna_hist_free(h);

    /* tokens layout (N, T, C) of the channels-last data */
    int64_t kshape[3] = {N, H * W, C};
    vdna_array t = make_array(tok, VDNA_F64, 3, kshape);
    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_TOKENS));
    CHECK_OK(vdna_hist_update(h, &t));
    vdna_hist_counts(h, got);
    CHECK(equal_i64(want, got, C * B));
    vdna_hist_free(h);

    /* float32 input equals the float64 of the converted values */
    for (int i = 0; i < N * C * H * W; i++) x[i] = (double)(xf[i] = (float)x[i]);
    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(h, &base));
    vdna_hist_counts(h, want);
    vdna_hist_reset(h);
    vdna_array f = make_array(xf, VDNA_F32, 4, shape);
    CHECK_OK(vdna_hist_update(h, &f));
    vdna_hist_counts(h, got);
    CHECK(equal_i64(want, got, C * B));
    vdna_hist_free(h);
}

static void test_hist_f16(void) {
    /* half bits: 1.0, -2.0, 0.5, +Inf, NaN, 65504 (max), 2^-24 (smallest subnormal), -0.0 */
    uint16_t hv[8] = {0x3C00, 0xC000, 0x3800, 0x7C00, 0x7E00, 0x7BFF, 0x0001, 0x8000};
    double dv[8] = {1.0, -2.0, 0.5, INFINITY, NAN, 65504.0, 0x1.0p-24, -0.0};
    double mn = -2, mx = 2;
    int64_t shape[3] = {1, 1, 8};
    vdna_array xh = make_array(hv, VDNA_F16, 3, shape), xd = make_array(dv, VDNA_F64, 3, shape);
    vdna_hist *a = NULL, *b = NULL;
    CHECK_OK(vdna_hist_create(&a, 1, 5, &mn, &mx, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_create(&b, 1, 5, &mn, &mx, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_hist_update(a, &xh));
    CHECK_OK(vdna_hist_update(b, &xd));
    int64_t ca[5], cb[5], na, nb;
    vdna_hist_counts(a, ca);
    vdna_hist_counts(b, cb);
    vdna_hist_nan_counts(a, &na);
    vdna_hist_nan_counts(b, &nb);
    CHECK(equal_i64(ca, cb, 5) && na == 1 && nb == 1);
    /* lo -2.4, hi 2.4, B 5: t = (x/half + 1) * 2.5 -> -2 in bin 0 (t 0.42); -0.0 and 2^-24 in bin 2
     * (t 2.5); 0.5 and 1 in bin 3 (t 3.02, 3.54); Inf and 65504 in bin 4 */
    int64_t want[5] = {1, 0, 2, 2, 2};
    CHECK(equal_i64(ca, want, 5));
    vdna_hist_free(a);
    vdna_hist_free(b);
}

static void test_hist_errors(void) {
    double mins[2] = {0, 0}, maxs[2] = {1, 1};
    vdna_hist *h = (vdna_hist *)&mins; /* must be set to NULL on failure */
    CHECK(vdna_hist_create(&h, 2, 0, mins, maxs, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_ARG);
    CHECK(h == NULL);
    CHECK(strstr(vdna_last_error(), "bins") != NULL);
    CHECK(vdna_hist_create(&h, 0, 4, mins, maxs, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_ARG);
    CHECK(vdna_hist_create(&h, 2, 4, mins, maxs, (vdna_layout)7) == VDNA_ERR_ARG);
    double bad_min[2] = {0, 2};
    CHECK(vdna_hist_create(&h, 2, 4, bad_min, maxs, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_RANGE);
    CHECK(strstr(vdna_last_error(), "neuron 1") != NULL);
    double nan_max[2] = {1, NAN};
    CHECK(vdna_hist_create(&h, 2, 4, mins, nan_max, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_RANGE);
    CHECK(strstr(vdna_last_error(), "neuron 1") != NULL);
    double inf_min[2] = {-INFINITY, 0};
    CHECK(vdna_hist_create(&h, 2, 4, inf_min, maxs, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_RANGE);
    CHECK(strstr(vdna_last_error(), "neuron 0") != NULL);
    double huge[2] = {-1e308, 1e308};
    CHECK(vdna_hist_create(&h, 2, 4, huge, huge + 1, VDNA_LAYOUT_CHANNELS) == VDNA_ERR_RANGE);
    CHECK(h == NULL);

    CHECK_OK(vdna_hist_create(&h, 2, 4, mins, maxs, VDNA_LAYOUT_CHANNELS));
    double data[24] = {0};
    int64_t wrong_c[3] = {2, 3, 4}, rank1[1] = {2}, tok[3] = {2, 4, 3};
    vdna_array x = make_array(data, VDNA_F64, 3, wrong_c);
    CHECK(vdna_hist_update(h, &x) == VDNA_ERR_SHAPE);
    CHECK(strstr(vdna_last_error(), "(2, 3, 4)") != NULL);
    CHECK(strstr(vdna_last_error(), "(N, 2, *spatial)") != NULL);
    x = make_array(data, VDNA_F64, 1, rank1);
    CHECK(vdna_hist_update(h, &x) == VDNA_ERR_SHAPE);
    x = make_array(data, (vdna_dtype)9, 3, tok);
    CHECK(vdna_hist_update(h, &x) == VDNA_ERR_DTYPE);
    int64_t zero_sp[3] = {2, 2, 0};
    x = make_array(data, VDNA_F64, 3, zero_sp);
    CHECK(vdna_hist_update(h, &x) == VDNA_ERR_SHAPE);
    /* N == 0 is a no-op, even with a NULL data pointer */
    int64_t empty[3] = {0, 2, 5};
    x = make_array(NULL, VDNA_F64, 3, empty);
    CHECK_OK(vdna_hist_update(h, &x));
    CHECK(vdna_hist_num_images(h) == 0);
    CHECK(vdna_hist_update(h, NULL) == VDNA_ERR_ARG);
    /* add_counts: negative values and overflow change nothing */
    int64_t counts[8] = {1, 2, 3, 4, 5, 6, 7, 8}, nans[2] = {0, 1}, got[8];
    CHECK_OK(vdna_hist_add_counts(h, counts, nans, 3));
    counts[5] = -1;
    CHECK(vdna_hist_add_counts(h, counts, nans, 1) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "neuron 1, bin 1") != NULL);
    counts[5] = INT64_MAX;
    CHECK(vdna_hist_add_counts(h, counts, nans, 1) == VDNA_ERR_ARG);
    counts[5] = 6;
    CHECK(vdna_hist_add_counts(h, counts, nans, -1) == VDNA_ERR_ARG);
    vdna_hist_counts(h, got);
    CHECK(got[5] == 6 && got[7] == 8 && vdna_hist_num_images(h) == 3);
    /* huge counts beyond 2^32 add exactly */
    int64_t big[8] = {0, 0, 0, 0, 0, 0, 0, (int64_t)1 << 40};
    CHECK_OK(vdna_hist_add_counts(h, big, NULL, 0));
    vdna_hist_counts(h, got);
    CHECK(got[7] == ((int64_t)1 << 40) + 8);
    vdna_hist_free(h);
    vdna_hist_free(NULL);
}

/* ---------------------------------------------------------------- moments */
static void test_moments(void) {
    /* 3 images, 2 neurons, 2 samples: neuron 0 image means 1, 3, 8 -> mean 4, var 13;
     * neuron 1 means 10, 10, 10 -> mean 10, var 0 */
    double x[12] = {0, 2, 10, 10, 3, 3, 9, 11, 7, 9, 10, 10};
    int64_t shape[3] = {3, 2, 2}, s1[3] = {1, 2, 2}, s2[3] = {2, 2, 2};
    vdna_array all = make_array(x, VDNA_F64, 3, shape);
    vdna_moments *m = NULL, *a = NULL, *b = NULL;
    CHECK_OK(vdna_moments_create(&m, 2, VDNA_LAYOUT_CHANNELS));
    double mean[2], var[2], m2[2];
    CHECK(vdna_moments_mean(m, mean) == VDNA_ERR_EMPTY);
    CHECK_OK(vdna_moments_update(m, &all));
    CHECK_OK(vdna_moments_mean(m, mean));
    CHECK_OK(vdna_moments_var(m, var));
    CHECK_CLOSE(mean[0], 4.0, 1e-15);
    CHECK_CLOSE(var[0], 13.0, 1e-14);
    CHECK(mean[1] == 10.0 && var[1] == 0.0);
    /* merge = sequential */
    vdna_array xa = make_array(x, VDNA_F64, 3, s1), xb = make_array(x + 4, VDNA_F64, 3, s2);
    CHECK_OK(vdna_moments_create(&a, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_moments_create(&b, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_moments_update(a, &xa));
    CHECK_OK(vdna_moments_var(a, var));
    CHECK(var[0] == 0.0); /* one image */
    CHECK_OK(vdna_moments_update(b, &xb));
    CHECK_OK(vdna_moments_merge(a, b));
    CHECK_OK(vdna_moments_var(a, var));
    CHECK_CLOSE(var[0], 13.0, 1e-14);
    CHECK(vdna_moments_num_images(a) == 3);
    /* state round trip */
    int64_t count;
    vdna_moments_state(m, &count, mean, m2);
    CHECK(count == 3);
    CHECK_CLOSE(m2[0], 26.0, 1e-13);
    int64_t set_nans[2] = {4, 0}, got_nans[2] = {-1, -1};
    CHECK_OK(vdna_moments_set_state(b, count, mean, m2, set_nans));
    CHECK_OK(vdna_moments_var(b, var));
    CHECK_CLOSE(var[0], 13.0, 1e-14);
    vdna_moments_nan_counts(b, got_nans);
    CHECK(got_nans[0] == 4 && got_nans[1] == 0);
    double neg[2] = {1, -1};
    CHECK(vdna_moments_set_state(b, 3, mean, neg, NULL) == VDNA_ERR_ARG);
    int64_t neg_nans[2] = {0, -2};
    CHECK(vdna_moments_set_state(b, 3, mean, m2, neg_nans) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "neuron 1") != NULL);
    vdna_moments_nan_counts(b, got_nans); /* a rejected state changes nothing */
    CHECK(got_nans[0] == 4 && got_nans[1] == 0);
    CHECK_OK(vdna_moments_set_state(b, count, mean, m2, NULL));
    vdna_moments_nan_counts(b, got_nans);
    CHECK(got_nans[0] == 0 && got_nans[1] == 0);
    /* large mean, small spread: 1e9 + {1, 2, 3} -> var 1 */
    double big[3] = {1e9 + 1, 1e9 + 2, 1e9 + 3};
    int64_t bs[2] = {3, 1};
    vdna_array xbig = make_array(big, VDNA_F64, 2, bs);
    vdna_moments *g = NULL;
    CHECK_OK(vdna_moments_create(&g, 1, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_moments_update(g, &xbig));
    CHECK_OK(vdna_moments_var(g, var));
    CHECK_CLOSE(var[0], 1.0, 1e-9);
    /* NaN propagates and is counted */
    double withnan[4] = {1, NAN, 2, 3};
    int64_t ns[3] = {2, 1, 2};
    vdna_array xn = make_array(withnan, VDNA_F64, 3, ns);
    CHECK_OK(vdna_moments_update(g, &xn));
    int64_t nn;
    vdna_moments_nan_counts(g, &nn);
    CHECK(nn == 1);
    CHECK_OK(vdna_moments_mean(g, mean));
    CHECK(isnan(mean[0]));
    /* mismatch */
    CHECK(vdna_moments_merge(g, m) == VDNA_ERR_MISMATCH);
    vdna_moments_free(m);
    vdna_moments_free(a);
    vdna_moments_free(b);
    vdna_moments_free(g);
}

/* ---------------------------------------------------------------- covariance */
static void test_cov(void) {
    /* per-image vectors (rank 2: one sample per image): (1,2), (3,6), (5,7), (7,9)
     * mean (4, 6); deviations (-3,-4), (-1,0), (1,1), (3,3): M2 = [[20, 22], [22, 26]] */
    double x[8] = {1, 2, 3, 6, 5, 7, 7, 9};
    int64_t shape[2] = {4, 2}, s1[2] = {1, 2}, s3[2] = {3, 2};
    vdna_array all = make_array(x, VDNA_F64, 2, shape);
    vdna_cov *c = NULL, *a = NULL, *b = NULL;
    CHECK_OK(vdna_cov_create(&c, 2, VDNA_LAYOUT_CHANNELS));
    double mean[2], cov[4], m2[4];
    CHECK(vdna_cov_cov(c, cov) == VDNA_ERR_EMPTY);
    CHECK_OK(vdna_cov_update(c, &all));
    CHECK_OK(vdna_cov_mean(c, mean));
    CHECK_OK(vdna_cov_cov(c, cov));
    CHECK_CLOSE(mean[0], 4.0, 1e-15);
    CHECK_CLOSE(mean[1], 6.0, 1e-15);
    CHECK_CLOSE(cov[0], 20.0 / 3, 1e-14);
    CHECK_CLOSE(cov[1], 22.0 / 3, 1e-14);
    CHECK(cov[1] == cov[2]);
    CHECK_CLOSE(cov[3], 26.0 / 3, 1e-14);
    /* merge of states with different shifts (first images differ) = one accumulation */
    CHECK_OK(vdna_cov_create(&a, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_cov_create(&b, 2, VDNA_LAYOUT_CHANNELS));
    vdna_array xa = make_array(x, VDNA_F64, 2, s1), xb = make_array(x + 2, VDNA_F64, 2, s3);
    CHECK_OK(vdna_cov_update(a, &xa));
    CHECK_OK(vdna_cov_cov(a, cov));
    CHECK(cov[0] == 0 && cov[1] == 0 && cov[3] == 0); /* one image */
    CHECK_OK(vdna_cov_update(b, &xb));
    CHECK_OK(vdna_cov_merge(b, a)); /* b's shift is (3, 6), a's is (1, 2) */
    CHECK_OK(vdna_cov_cov(b, cov));
    CHECK_OK(vdna_cov_mean(b, mean));
    CHECK_CLOSE(mean[0], 4.0, 1e-14);
    CHECK_CLOSE(cov[0], 20.0 / 3, 1e-14);
    CHECK_CLOSE(cov[2], 22.0 / 3, 1e-14);
    CHECK_CLOSE(cov[3], 26.0 / 3, 1e-14);
    /* state round trip, then update on top of a set state */
    int64_t count;
    vdna_cov_state(c, &count, mean, m2);
    CHECK(count == 4);
    CHECK_CLOSE(m2[1], 22.0, 1e-13);
    int64_t cnans[2] = {0, 3}, cgot[2] = {-1, -1};
    CHECK_OK(vdna_cov_set_state(a, count, mean, m2, cnans));
    vdna_cov_nan_counts(a, cgot);
    CHECK(cgot[0] == 0 && cgot[1] == 3);
    CHECK_OK(vdna_cov_set_state(a, count, mean, m2, NULL));
    CHECK_OK(vdna_cov_update(a, &all));
    CHECK_OK(vdna_cov_update(c, &all));
    double ca[4], cc[4];
    CHECK_OK(vdna_cov_cov(a, ca));
    CHECK_OK(vdna_cov_cov(c, cc));
    for (int i = 0; i < 4; i++) CHECK_CLOSE(ca[i], cc[i], 1e-13);
    double asym[4] = {1, 2, 3, 1};
    CHECK(vdna_cov_set_state(a, 4, mean, asym, NULL) == VDNA_ERR_ARG);
    /* large mean 1e8 with spread ~1: (1e8 + v) has the covariance of v */
    double big[8];
    for (int i = 0; i < 8; i++) big[i] = 1e8 + x[i];
    vdna_array xbig = make_array(big, VDNA_F64, 2, shape);
    vdna_cov *g = NULL;
    CHECK_OK(vdna_cov_create(&g, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_cov_update(g, &xbig));
    CHECK_OK(vdna_cov_cov(g, cov));
    CHECK_CLOSE(cov[0], 20.0 / 3, 1e-7);
    CHECK_CLOSE(cov[1], 22.0 / 3, 1e-7);
    CHECK_CLOSE(cov[3], 26.0 / 3, 1e-7);
    CHECK(vdna_cov_merge(g, c) == VDNA_OK);
    vdna_cov *t = NULL;
    CHECK_OK(vdna_cov_create(&t, 2, VDNA_LAYOUT_TOKENS));
    CHECK(vdna_cov_merge(g, t) == VDNA_ERR_MISMATCH);
    vdna_cov_free(c);
    vdna_cov_free(a);
    vdna_cov_free(b);
    vdna_cov_free(g);
    vdna_cov_free(t);
}

/* ---------------------------------------------------------------- ranges */
static void test_ranges(void) {
    /* 2 images, tokens (N=2, T=3, C=3): neuron 2 only NaN */
    double x[18] = {1, -INFINITY, NAN, 5, 0, NAN, -2, 3, NAN, /* image 0 */
                    0, 7, NAN, NAN, 1, NAN, 4, 2, NAN};       /* image 1 */
    int64_t shape[3] = {2, 3, 3};
    vdna_array a = make_array(x, VDNA_F64, 3, shape);
    vdna_ranges *r = NULL, *s = NULL;
    CHECK_OK(vdna_ranges_create(&r, 3, VDNA_LAYOUT_TOKENS));
    double mins[3], maxs[3];
    CHECK(vdna_ranges_minmax(r, mins, maxs) == VDNA_ERR_EMPTY);
    CHECK_OK(vdna_ranges_update(r, &a));
    CHECK_OK(vdna_ranges_minmax(r, mins, maxs));
    CHECK(mins[0] == -2 && maxs[0] == 5);
    CHECK(mins[1] == -INFINITY && maxs[1] == 7);
    CHECK(isnan(mins[2]) && isnan(maxs[2]));
    int64_t nans[3];
    vdna_ranges_nan_counts(r, nans);
    CHECK(nans[0] == 1 && nans[1] == 0 && nans[2] == 6);
    /* merge with a state set from values */
    CHECK_OK(vdna_ranges_create(&s, 3, VDNA_LAYOUT_TOKENS));
    double smin[3] = {-3, 0, NAN}, smax[3] = {4, 8, NAN};
    int64_t snans[3] = {0, 2, 5};
    CHECK_OK(vdna_ranges_set_state(s, 2, smin, smax, snans));
    CHECK_OK(vdna_ranges_merge(r, s));
    vdna_ranges_nan_counts(r, nans);
    CHECK(nans[0] == 1 && nans[1] == 2 && nans[2] == 11); /* merged NaN counts add */
    CHECK_OK(vdna_ranges_minmax(r, mins, maxs));
    CHECK(mins[0] == -3 && maxs[0] == 5 && maxs[1] == 8 && isnan(mins[2]));
    CHECK(vdna_ranges_num_images(r) == 4);
    double bad[3] = {5, 0, 0};
    CHECK(vdna_ranges_set_state(s, 1, bad, smax, NULL) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "neuron 0") != NULL);
    /* channels layout, long runs (by-neuron path), float32 */
    enum { N = 2, C = 2, S = 100 };
    float f[N * C * S];
    for (int i = 0; i < N * C * S; i++) f[i] = (float)(i % 37) - 10.0f;
    f[3] = NAN;
    int64_t cs[3] = {N, C, S};
    vdna_array xf = make_array(f, VDNA_F32, 3, cs);
    vdna_ranges *q = NULL;
    CHECK_OK(vdna_ranges_create(&q, C, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_ranges_update(q, &xf));
    double qmin[2], qmax[2];
    CHECK_OK(vdna_ranges_minmax(q, qmin, qmax));
    CHECK(qmin[0] == -10 && qmax[0] == 26 && qmin[1] == -10 && qmax[1] == 26);
    int64_t qn[2];
    vdna_ranges_nan_counts(q, qn);
    CHECK(qn[0] == 1 && qn[1] == 0);
    vdna_ranges_free(r);
    vdna_ranges_free(s);
    vdna_ranges_free(q);
}

/* ---------------------------------------------------------------- choosing a kernel */
static void test_hist_kernel_choice(void) {
    const char *modes[3];
    const int n_modes = kernel_modes(modes);
    CHECK(n_modes >= 1 && strcmp(modes[0], "portable") == 0);
    CHECK(vdna_hist_kernel_available("auto") && !vdna_hist_kernel_available("sse9") && !vdna_hist_kernel_available(NULL));
    CHECK(vdna_hist_set_kernel("sse9") == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "'sse9' is not a histogram kernel") != NULL);
    CHECK(vdna_hist_set_kernel(NULL) == VDNA_ERR_ARG);
    if (!vdna_hist_kernel_available("avx512")) {
        CHECK(vdna_hist_set_kernel("avx512") == VDNA_ERR_ARG);
        CHECK(strstr(vdna_last_error(), "avx512") != NULL);
    }
    for (int mi = 0; mi < n_modes; mi++) {
        CHECK_OK(vdna_hist_set_kernel(modes[mi]));
        CHECK(vdna_hist_kernel() != NULL && strcmp(vdna_hist_kernel(), modes[mi]) == 0);
    }
    CHECK_OK(vdna_hist_set_kernel("auto")); /* measures (once): one of those that run */
    const char *chosen = vdna_hist_kernel();
    CHECK(chosen != NULL && vdna_hist_kernel_available(chosen) && strcmp(chosen, "auto") != 0);
    printf("test_accum: kernels run here:");
    for (int mi = 0; mi < n_modes; mi++) printf(" %s", modes[mi]);
    printf("; auto chose %s\n", chosen ? chosen : "(none)");
}

/* ---------------------------------------------------------------- worker threads that cannot start
 * vdna_parallel_for runs the chunk of a thread that could not be started on the calling thread:
 * the counts and moments are those of a normal run. vdna_test_thread_start_limit (internal, tests
 * only) lets at most n more thread starts succeed (-1: no limit) and returns what was left of the
 * previous limit. 8 neurons of 2 x 4096 values: enough work per neuron for 4 threads (3 starts
 * per update). */
int vdna_test_thread_start_limit(int n);

static void test_thread_start_failures(void) {
    const int64_t N = 2, C = 8, S = 4096, B = 10;
    double *x = malloc((size_t)(N * C * S) * sizeof *x), mins[8], maxs[8];
    int64_t *rc = malloc((size_t)(C * B) * sizeof *rc), *got = malloc((size_t)(C * B) * sizeof *got), rn[8], gn[8];
    double mean_ref[8], mean_got[8];
    for (int64_t c = 0; c < C; c++) mins[c] = -1, maxs[c] = 1;
    for (int64_t i = 0; i < N * C * S; i++) x[i] = uniform() * 3 - 1.5;
    ref_counts(x, N, C, S, mins, maxs, B, rc, rn);
    int64_t shape[3] = {N, C, S};
    vdna_array arr = make_array(x, VDNA_F64, 3, shape);
    vdna_set_num_threads(4);
    vdna_moments *m = NULL;
    CHECK_OK(vdna_moments_create(&m, C, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_moments_update(m, &arr));
    CHECK_OK(vdna_moments_mean(m, mean_ref));
    for (int limit = 0; limit <= 3; limit++) { /* no worker starts, 1 of 3, 2 of 3, all 3 */
        vdna_hist *h = NULL;
        CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
        vdna_test_thread_start_limit(limit);
        CHECK_OK(vdna_hist_update(h, &arr));
        CHECK(vdna_test_thread_start_limit(limit) == 0); /* the update tried at least `limit` starts */
        CHECK_OK(vdna_hist_counts(h, got));
        CHECK_OK(vdna_hist_nan_counts(h, gn));
        CHECK(equal_i64(got, rc, C * B) && equal_i64(gn, rn, C));
        CHECK(vdna_hist_num_images(h) == N);
        vdna_hist_free(h);
        vdna_moments_reset(m);
        CHECK_OK(vdna_moments_update(m, &arr));
        CHECK(vdna_test_thread_start_limit(-1) == 0);
        CHECK_OK(vdna_moments_mean(m, mean_got));
        CHECK(memcmp(mean_got, mean_ref, sizeof mean_ref) == 0); /* same chunks, same sums: bit-identical */
    }
    vdna_set_num_threads(0);
    vdna_moments_free(m);
    free(x);
    free(rc);
    free(got);
}

/* ---------------------------------------------------------------- NULL arguments of read-outs
 * Every read-out returns VDNA_ERR_ARG for a NULL accumulator or a NULL required buffer (and
 * writes nothing); optional outputs may be NULL; scalar getters return -1 for NULL. */
static void test_readout_nulls(void) {
    double mins[2] = {-1, 0}, maxs[2] = {1, 2}, d[2] = {7, 7}, m2[4] = {7, 7, 7, 7};
    int64_t i64[8] = {7, 7, 7, 7, 7, 7, 7, 7}, count = 7;
    double data[4] = {1, 2, 3, 4};
    int64_t shape[2] = {2, 2};
    vdna_array x = make_array(data, VDNA_F64, 2, shape);

    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, 2, 4, mins, maxs, VDNA_LAYOUT_CHANNELS));
    CHECK(vdna_hist_counts(NULL, i64) == VDNA_ERR_ARG && i64[0] == 7);
    CHECK(strstr(vdna_last_error(), "NULL") != NULL);
    CHECK(vdna_hist_counts(h, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_hist_nan_counts(NULL, i64) == VDNA_ERR_ARG && i64[0] == 7);
    CHECK(vdna_hist_nan_counts(h, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_hist_ranges(NULL, d, d) == VDNA_ERR_ARG && d[0] == 7);
    CHECK_OK(vdna_hist_ranges(h, NULL, d)); /* optional outputs */
    CHECK(d[0] == 1 && d[1] == 2);
    CHECK_OK(vdna_hist_ranges(h, NULL, NULL));
    CHECK_OK(vdna_hist_counts(h, i64));
    CHECK(vdna_hist_num_images(NULL) == -1 && vdna_hist_n_neurons(NULL) == -1 && vdna_hist_bins(NULL) == -1);
    CHECK((int)vdna_hist_layout(NULL) == -1);
    vdna_hist_reset(NULL); /* a no-op */
    vdna_hist_free(h);

    vdna_moments *m = NULL;
    CHECK_OK(vdna_moments_create(&m, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_moments_update(m, &x));
    d[0] = d[1] = 7;
    CHECK(vdna_moments_mean(NULL, d) == VDNA_ERR_ARG && d[0] == 7);
    CHECK(vdna_moments_mean(m, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_moments_var(NULL, d) == VDNA_ERR_ARG && d[0] == 7);
    CHECK(vdna_moments_var(m, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_moments_state(NULL, &count, d, d) == VDNA_ERR_ARG && count == 7 && d[0] == 7);
    CHECK_OK(vdna_moments_state(m, &count, NULL, NULL));
    CHECK(count == 2);
    CHECK(vdna_moments_nan_counts(NULL, i64) == VDNA_ERR_ARG);
    CHECK(vdna_moments_nan_counts(m, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_moments_num_images(NULL) == -1 && vdna_moments_n_neurons(NULL) == -1);
    CHECK((int)vdna_moments_layout(NULL) == -1);
    vdna_moments_free(m);

    vdna_cov *c = NULL;
    CHECK_OK(vdna_cov_create(&c, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_cov_update(c, &x));
    count = 7;
    CHECK(vdna_cov_mean(NULL, d) == VDNA_ERR_ARG && d[0] == 7);
    CHECK(vdna_cov_mean(c, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_cov_cov(NULL, m2) == VDNA_ERR_ARG && m2[0] == 7);
    CHECK(vdna_cov_cov(c, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_cov_state(NULL, &count, d, m2) == VDNA_ERR_ARG && count == 7 && m2[0] == 7);
    CHECK_OK(vdna_cov_state(c, &count, NULL, NULL));
    CHECK(count == 2);
    CHECK(vdna_cov_nan_counts(NULL, i64) == VDNA_ERR_ARG);
    CHECK(vdna_cov_nan_counts(c, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_cov_num_images(NULL) == -1 && vdna_cov_n_neurons(NULL) == -1);
    CHECK((int)vdna_cov_layout(NULL) == -1);
    vdna_cov_free(c);

    vdna_ranges *r = NULL;
    CHECK_OK(vdna_ranges_create(&r, 2, VDNA_LAYOUT_CHANNELS));
    CHECK_OK(vdna_ranges_update(r, &x));
    CHECK(vdna_ranges_minmax(NULL, d, d) == VDNA_ERR_ARG && d[0] == 7);
    CHECK_OK(vdna_ranges_minmax(r, NULL, d)); /* optional outputs */
    CHECK(d[0] == 3 && d[1] == 4);
    CHECK(vdna_ranges_nan_counts(NULL, i64) == VDNA_ERR_ARG);
    CHECK(vdna_ranges_nan_counts(r, NULL) == VDNA_ERR_ARG);
    CHECK(vdna_ranges_num_images(NULL) == -1 && vdna_ranges_n_neurons(NULL) == -1);
    CHECK((int)vdna_ranges_layout(NULL) == -1);
    vdna_ranges_free(r);
}

/* What count_groups must give: per table t, the sum of the reference counts (and NaN counts) of the
 * images assigned to it; tables neuron-major (C, T, B). want_nans may be NULL. */
static void expected_group_tables(const double *x, int64_t N, int64_t C, int64_t S, const double *mins,
                                  const double *maxs, int64_t B, const int64_t *groups, int64_t n_sets, int64_t T,
                                  int64_t *want, int64_t *want_nans, int64_t *want_images) {
    int64_t *rc = malloc((size_t)(C * B) * sizeof *rc), *rn = malloc((size_t)C * sizeof *rn);
    for (int64_t n = 0; n < N; n++) {
        ref_counts(x + n * C * S, 1, C, S, mins, maxs, B, rc, rn);
        for (int64_t s = 0; s < n_sets; s++) {
            const int64_t t = groups[n * n_sets + s];
            if (t < 0) continue;
            for (int64_t c = 0; c < C; c++)
                for (int64_t b = 0; b < B; b++) want[(c * T + t) * B + b] += rc[c * B + b];
            for (int64_t c = 0; want_nans != NULL && c < C; c++) want_nans[t * C + c] += rn[c];
            want_images[t]++;
        }
    }
    free(rc);
    free(rn);
}

/* Subset tables (subset.c) against the reference binning, image by image: table t holds the sum of
 * the reference counts of the images assigned to it (an image may go to several tables, or none). */
static void test_count_groups(int64_t N, int64_t C, int64_t S, int64_t B, int64_t n_sets, int64_t T, int f32) {
    double *x = malloc((size_t)(N * C * S) * sizeof *x);
    float *xf = malloc((size_t)(N * C * S) * sizeof *xf);
    double *mins = malloc((size_t)C * sizeof *mins), *maxs = malloc((size_t)C * sizeof *maxs);
    int64_t *groups = malloc((size_t)(N * n_sets) * sizeof *groups);
    int64_t *want = calloc((size_t)(T * C * B), sizeof *want), *want_nans = calloc((size_t)(T * C), sizeof *want_nans);
    int64_t *want_images = calloc((size_t)T, sizeof *want_images);
    uint32_t *tables = malloc((size_t)(T * C * B) * sizeof *tables);
    int64_t *table_images = malloc((size_t)T * sizeof *table_images), *table_nans = malloc((size_t)(T * C) * sizeof *table_nans);
    for (int64_t c = 0; c < C; c++) {
        mins[c] = -uniform() * 3;
        maxs[c] = uniform() * 5;
    }
    for (int64_t i = 0; i < N * C * S; i++) {
        double u = uniform();
        xf[i] = (float)(u < 0.2 ? 0.0 : (uniform() * 12 - 5));
        if (u > 0.995) xf[i] = NAN;
        x[i] = xf[i]; /* the same values in both dtypes */
    }
    for (int64_t i = 0; i < N * n_sets; i++) groups[i] = (int64_t)(uniform() * (double)(T + 1)) - 1;
    expected_group_tables(x, N, C, S, mins, maxs, B, groups, n_sets, T, want, want_nans, want_images);
    int64_t shape[3] = {N, C, S};
    vdna_array arr = make_array(f32 ? (const void *)xf : (const void *)x, f32 ? VDNA_F32 : VDNA_F64, 3, shape);
    for (int threads = 1; threads <= 3; threads += 2) {
        vdna_set_num_threads(threads);
        vdna_hist *h = NULL;
        CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
        memset(tables, 0, (size_t)(T * C * B) * sizeof *tables);
        memset(table_images, 0, (size_t)T * sizeof *table_images);
        memset(table_nans, 0, (size_t)(T * C) * sizeof *table_nans);
        CHECK_OK(vdna_hist_count_groups(h, &arr, groups, n_sets, tables, T, table_images, table_nans));
        int same = 1;
        for (int64_t i = 0; i < T * C * B; i++) same &= (int64_t)tables[i] == want[i];
        CHECK(same);
        CHECK(equal_i64(table_nans, want_nans, T * C));
        CHECK(equal_i64(table_images, want_images, T));
        CHECK(vdna_hist_num_images(h) == 0);
        /* a bad group index changes nothing */
        const int64_t g0 = groups[0];
        groups[0] = T;
        CHECK(vdna_hist_count_groups(h, &arr, groups, n_sets, tables, T, table_images, table_nans) == VDNA_ERR_ARG);
        groups[0] = g0;
        CHECK(equal_i64(table_images, want_images, T));
        vdna_hist_free(h);
    }
    vdna_set_num_threads(0);
    free(x);
    free(xf);
    free(mins);
    free(maxs);
    free(groups);
    free(want);
    free(want_nans);
    free(want_images);
    free(tables);
    free(table_images);
    free(table_nans);
}

/* Tables of two widths (vdna_hist_count_groups_mixed): odd tables narrow (uint16), even ones wide, in
 * reversed slot order, against the same reference sums; the 16-bit bound and bad `where` are rejected
 * before anything changes. */
static void test_count_groups_mixed(int64_t N, int64_t C, int64_t S, int64_t B, int64_t n_sets, int64_t T) {
    double *x = malloc((size_t)(N * C * S) * sizeof *x);
    double mins[64], maxs[64];
    int64_t *groups = malloc((size_t)(N * n_sets) * sizeof *groups);
    int64_t *want = calloc((size_t)(T * C * B), sizeof *want), *want_images = calloc((size_t)T, sizeof *want_images);
    int64_t where[64], n_wide = 0, n_narrow = 0;
    for (int64_t t = T - 1; t >= 0; t--) where[t] = t % 2 ? -1 - n_narrow++ : n_wide++;
    uint32_t *wide = calloc((size_t)(n_wide * C * B), sizeof *wide);
    uint16_t *narrow = calloc((size_t)(n_narrow * C * B), sizeof *narrow);
    int64_t *table_images = calloc((size_t)T, sizeof *table_images), *table_nans = calloc((size_t)(T * C), sizeof *table_nans);
    CHECK(C <= 64 && T <= 64);
    for (int64_t c = 0; c < C; c++) {
        mins[c] = -1;
        maxs[c] = 4;
    }
    for (int64_t i = 0; i < N * C * S; i++) x[i] = uniform() < 0.3 ? 0.0 : uniform() * 6 - 1.5;
    for (int64_t i = 0; i < N * n_sets; i++) groups[i] = (int64_t)(uniform() * (double)(T + 1)) - 1;
    expected_group_tables(x, N, C, S, mins, maxs, B, groups, n_sets, T, want, NULL, want_images);
    int64_t shape[3] = {N, C, S};
    vdna_array arr = make_array(x, VDNA_F64, 3, shape);
    vdna_hist *h = NULL;
    CHECK_OK(vdna_hist_create(&h, C, B, mins, maxs, VDNA_LAYOUT_CHANNELS));
    vdna_set_num_threads(3);
    CHECK_OK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow,
                                          table_images, table_nans));
    vdna_set_num_threads(0);
    int same = 1;
    for (int64_t c = 0; c < C; c++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++) {
                const int64_t w = where[t];
                const int64_t got = w >= 0 ? (int64_t)wide[(c * n_wide + w) * B + b]
                                           : (int64_t)narrow[(c * n_narrow + (-1 - w)) * B + b];
                same &= got == want[(c * T + t) * B + b];
            }
    CHECK(same);
    CHECK(equal_i64(table_images, want_images, T));
    /* a narrow table that could pass 2^16 - 1 (its images so far x S), a wide one at the 2^32 - 1 bound */
    int64_t narrow_t = -1, wide_t = -1;
    for (int64_t t = 0; t < T; t++) {
        if (want_images[t] > 0 && where[t] < 0 && narrow_t < 0) narrow_t = t;
        if (want_images[t] > 0 && where[t] >= 0 && wide_t < 0) wide_t = t;
    }
    CHECK(narrow_t >= 0 && wide_t >= 0);
    const int64_t had = table_images[narrow_t];
    table_images[narrow_t] = UINT16_MAX / S; /* + this batch's images: over the bound */
    CHECK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow, table_images,
                                       table_nans) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "16-bit") != NULL);
    table_images[narrow_t] = UINT16_MAX / S - want_images[narrow_t]; /* exactly at the bound: accepted */
    table_images[wide_t] = 0;
    for (int64_t t = 0; t < T; t++)
        if (t != narrow_t) table_images[t] = 0;
    CHECK_OK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow,
                                          table_images, table_nans));
    table_images[narrow_t] = had;
    /* bad `where`: out of range, a slot used twice; nothing changes */
    memcpy(want_images, table_images, (size_t)T * sizeof *table_images);
    const int64_t w0 = where[0];
    where[0] = n_wide;
    CHECK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow, table_images,
                                       table_nans) == VDNA_ERR_ARG);
    where[0] = -1 - n_narrow;
    CHECK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow, table_images,
                                       table_nans) == VDNA_ERR_ARG);
    where[0] = where[1];
    CHECK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, where, wide, n_wide, narrow, n_narrow, table_images,
                                       table_nans) == VDNA_ERR_ARG);
    where[0] = w0;
    CHECK(equal_i64(table_images, want_images, T));
    /* without `where` every table must be wide */
    CHECK(vdna_hist_count_groups_mixed(h, &arr, groups, n_sets, T, NULL, wide, n_wide, narrow, n_narrow, table_images,
                                       table_nans) == VDNA_ERR_ARG);
    vdna_hist_free(h);
    free(x);
    free(groups);
    free(want);
    free(want_images);
    free(wide);
    free(narrow);
    free(table_images);
    free(table_nans);
}

int main(void) {
    test_hist_hand_worked();
    test_hist_one_bin();
    test_hist_random(3, 4, 500, 10);   /* sub-histogram path */
    test_hist_random(2, 7, 9, 10000);  /* direct path, B = 10000 */
    test_hist_random(5, 300, 2, 13);   /* rows path (short runs) */
    test_hist_merge();
    test_hist_signed_zeros();
    test_hist_relu_runs(3, 5, 49, 1000);  /* 7x7 runs packed across images; direct counting */
    test_hist_relu_runs(2, 4, 196, 7);    /* local histograms with sub-histograms (>= 64 per slot) */
    test_hist_relu_runs(4, 3, 600, 10);   /* several blocks per run, tails of every length */
    test_hist_relu_runs(2, 3, 37, 1);     /* one bin */
    test_hist_relu_runs(1, 3, 300, 10000);
    test_hist_relu_runs(3, 37, 40, 1000); /* tokens: two 16-neuron lane blocks and leftovers */
    test_hist_relu_runs(2, 16, 300, 7);
    test_hist_lanes(3, 50, 37, 37, 1000, 0);   /* contiguous, odd C: partial blocks at both ends */
    test_hist_lanes(2, 41, 5, 5, 7, 0);        /* fewer neurons than a block */
    test_hist_lanes(3, 33, 48, 64, 1, 0);      /* padded rows (16-float multiple), one bin */
    test_hist_lanes(2, 60, 20, 23, 7, 0);      /* padded rows, not a line multiple: blocks from neuron 0 */
    test_hist_lanes(2, 700, 17, 17, 10000, 0); /* B = 10000 */
    test_hist_lanes(2, 65535, 17, 17, 7, 1);   /* a slot reaches 65535 before a flush */
    {
        const int64_t bins[] = {1, 2, 7, 1000, 10000};
        for (int i = 0; i < 5; i++) {
            test_hist_thresholds(bins[i]);
            test_hist_thresholds_f64(bins[i]);
        }
    }
    test_hist_strides();
    test_hist_f16();
    test_hist_errors();
    test_moments();
    test_cov();
    test_ranges();
    test_readout_nulls();
    test_hist_kernel_choice();
    test_thread_start_failures();
    test_count_groups(7, 5, 300, 10, 3, 6, 0);   /* several blocks per run */
    test_count_groups(9, 3, 17, 1000, 2, 4, 1);  /* float32, sparse bins */
    test_count_groups(4, 2, 5, 1, 1, 2, 0);      /* one bin */
    test_count_groups(8, 4, 300, 1000, 3, 5, 1); /* images on both sides of the dense/sparse switch */
    test_count_groups_mixed(9, 5, 49, 1000, 3, 7);  /* sparse rows of both widths */
    test_count_groups_mixed(6, 3, 300, 10, 2, 5);   /* dense rows of both widths */
    if (failures) {
        fprintf(stderr, "test_accum: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_accum: all passed\n");
    return 0;
}

/* hist.c: the histogram accumulator's API (docs/design.md, "Normative semantics"): creation
 * (with the constants of the estimates), the choice of kernel, update, merge, saved states and read-outs. The loops of an
 * update and the portable kernels are in hist_portable.c, the intrinsics kernels in hist_avx2.c
 * and hist_avx512.c; hist_kernels.h is what they share. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hist_kernels.h"

#define MAX_BINS (1 << 30)

void vdna_hist_free(vdna_hist *h) {
    if (h == NULL) return;
    free(h->mins);
    free(h->maxs);
    free(h->centre);
    free(h->half);
    free(h->recip);
    free(h->cf);
    free(h->gf);
    free(h->df);
    free(h->zb);
    free(h->counts);
    free(h->nan_counts);
    free(h);
}

/* Parameters of the float32 estimate of neuron i (used by the lanes path for float32 input):
 * w = fl32(fl32(fl32(x - cf) * gf) + B/2), cf = (float)centre, gf = (float)(B / (2 half)).
 * Bound (v = 2^-24, float32 unit roundoff; T = (x - centre) B / (2 half) + B/2 the real value):
 * only w in [-1/2, B + 1/2] matters (outside it the relative errors, a few v, keep T and so the
 * exact t beyond the same end). There |p| = |fl32(d gf)| <= B/2 + 0.6, and summing the roundings
 * of cf (v|c|), of gf (v + 2^-51, relative), of d, of p and of w:
 *   |w - T| <= v (2.5 B + 2.5 + 1.01 |c| G) + 2^-149   (G = B / (2 half)),
 * and the exact double t is within 2^-44 B of T (bound at vdna_hist_bin_consts, hist_portable.c). So |w - t| < delta with
 * delta = 2^-22 (1.5 B + 2 + |c| G) rounded up to a power of two (1 - delta exact in float32);
 * used where delta <= 1/16, B <= 2^22 (B + 1/2 exact), |c| <= 1e30 and gf a normal float (no
 * overflow of cf, d*gf finite unless T is far out of range). Otherwise delta = 1: every value of the
 * neuron is "near", i.e. binned exactly. */

static void f32_estimate_init(vdna_hist *h, int64_t i) {
    double B = (double)h->bins, c = h->centre[i], G = B / (2.0 * h->half[i]);
    float gf = (float)G;
    h->cf[i] = (float)c;
    h->gf[i] = gf;
    h->zb[i] = exact_bin(0.0, c, h->half[i], (int32_t)h->bins);
    h->df[i] = 1.0f;
    if (!h->recip_ok || h->bins > (1 << 22) || !(fabs(c) <= 1e30) || !(gf >= FLT_MIN) || !(gf <= 1e30f)) return;
    double need = 0x1p-22 * (1.5 * B + 2.0 + fabs(c) * G), delta = 0x1p-24;
    while (delta < need) delta *= 2;
    if (delta <= 0.0625) h->df[i] = (float)delta;
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
    h->recip = malloc(c * sizeof(double));
    h->cf = malloc(c * sizeof(float));
    h->gf = malloc(c * sizeof(float));
    h->df = malloc(c * sizeof(float));
    h->zb = malloc(c * sizeof(int32_t));
    h->counts = calloc(c * (size_t)bins, sizeof(int64_t));
    h->nan_counts = calloc(c, sizeof(int64_t));
    if (!h->mins || !h->maxs || !h->centre || !h->half || !h->recip || !h->cf || !h->gf || !h->df || !h->zb || !h->counts || !h->nan_counts) {
        vdna_hist_free(h);
        return vdna_fail(VDNA_ERR_NOMEM, "hist: cannot allocate %lld x %lld counts", (long long)n_neurons,
                         (long long)bins);
    }
    h->n_neurons = n_neurons;
    h->bins = bins;
    h->layout = layout;
    int recip_ok = 1;
    for (int64_t i = 0; i < n_neurons; i++) {
        double lo = 1.2 * mins[i], hi = 1.2 * maxs[i];
        h->mins[i] = mins[i];
        h->maxs[i] = maxs[i];
        h->centre[i] = (lo + hi) / 2;
        h->half[i] = (hi - lo) / 2 + 1e-8;
        h->recip[i] = 1.0 / h->half[i];
        if (!(h->recip[i] >= DBL_MIN)) recip_ok = 0;
    }
    h->recip_ok = recip_ok;
    for (int64_t i = 0; i < n_neurons; i++) f32_estimate_init(h, i);
    *out = h;
    return VDNA_OK;
}

/* ---------------------------------------------------------------- kernels
 * The float32 hot loops have three implementations (hist_kernels.h) with identical bins: the
 * portable C loops (vectorised by the compiler; with per-CPU versions on x86-64 Linux), and the
 * AVX2 and AVX-512 intrinsics kernels. Which is fastest depends on the CPU model, not only on its
 * instruction sets (AVX-512 executed as two 256-bit halves on AMD Zen 4; a slow mask move on
 * another), so "auto" measures: the first float32 update times each kernel this CPU runs on two
 * small batches that stay in cache (ReLU channels runs and token rows, 1,000 bins, one thread)
 * and keeps the fastest for the process. Results never depend on the choice. */
enum { K_PORTABLE = 0, K_AVX2 = 1, K_AVX512 = 2, N_KERNELS = 3, K_AUTO = -1, K_UNSET = -2, K_BAD_ENV = -3 };
static const char *const kernel_names[N_KERNELS] = {"portable", "avx2", "avx512"};

static int requested_kernel = K_UNSET; /* K_AUTO, a kernel, K_BAD_ENV; K_UNSET: environment not read */
static int measured_kernel = K_PORTABLE;
static pthread_once_t measure_once = PTHREAD_ONCE_INIT;

static int kernel_compiled(int k) {
#ifdef VDNA_HIST_X86_KERNELS
    return k >= 0 && k < N_KERNELS;
#else
    return k == K_PORTABLE;
#endif
}

static int kernel_runs(int k) {
#ifdef VDNA_HIST_X86_KERNELS
    if (k == K_AVX2) return __builtin_cpu_supports("avx2");
    if (k == K_AVX512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#endif
    return k == K_PORTABLE;
}

static const hist_simd_kernel *simd_kernel(int k) {
#ifdef VDNA_HIST_X86_KERNELS
    if (k == K_AVX2) return &vdna_hist_avx2_kernel;
    if (k == K_AVX512) return &vdna_hist_avx512_kernel;
#endif
    (void)k;
    return NULL;
}

static int kernel_id(const char *name) {
    for (int k = 0; k < N_KERNELS; k++)
        if (strcmp(name, kernel_names[k]) == 0) return k;
    return strcmp(name, "auto") == 0 ? K_AUTO : K_BAD_ENV;
}

int vdna_hist_kernel_available(const char *name) {
    if (name == NULL) return 0;
    int k = kernel_id(name);
    return k == K_AUTO || (k >= 0 && kernel_compiled(k) && kernel_runs(k));
}

/* K_AUTO or a kernel this CPU runs, from VDNA_HIST_KERNEL (unset or empty: auto); else K_BAD_ENV. */
static int kernel_from_env(void) {
    const char *env = getenv("VDNA_HIST_KERNEL");
    if (env == NULL || env[0] == '\0') return K_AUTO;
    int k = kernel_id(env);
    return k == K_AUTO || (k >= 0 && kernel_compiled(k) && kernel_runs(k)) ? k : K_BAD_ENV;
}

static int current_request(void) {
    int k = __atomic_load_n(&requested_kernel, __ATOMIC_ACQUIRE);
    if (k != K_UNSET) return k;
    int from_env = kernel_from_env(), unset = K_UNSET;
    /* a concurrent vdna_hist_set_kernel wins */
    __atomic_compare_exchange_n(&requested_kernel, &unset, from_env, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return __atomic_load_n(&requested_kernel, __ATOMIC_ACQUIRE);
}

static vdna_status unusable_kernel(const char *what, const char *name) {
    int k = kernel_id(name);
    if (k == K_BAD_ENV)
        return vdna_fail(VDNA_ERR_ARG, "%s'%s' is not a histogram kernel (auto, portable, avx2 or avx512)", what, name);
    if (!kernel_compiled(k))
        return vdna_fail(VDNA_ERR_ARG, "%s'%s': this build has no %s kernel (x86-64 with GCC or clang only)", what, name,
                         name);
    return vdna_fail(VDNA_ERR_ARG, "%s'%s': this CPU does not run it (it needs %s)", what, name,
                     k == K_AVX2 ? "AVX2" : "AVX-512 F and DQ");
}

vdna_status vdna_hist_set_kernel(const char *name) {
    vdna_clear_error();
    if (name == NULL) return vdna_fail(VDNA_ERR_ARG, "hist set_kernel: NULL name");
    int k = kernel_id(name);
    if (k != K_AUTO && !(k >= 0 && kernel_compiled(k) && kernel_runs(k))) return unusable_kernel("hist kernel ", name);
    __atomic_store_n(&requested_kernel, k, __ATOMIC_RELEASE);
    return VDNA_OK;
}

static double now_seconds(void) {
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) == 0) return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds of one single-threaded update of h with x through `kernel`, the path vdna_hist_update
 * takes (neurons or lane blocks); < 0 if x does not fit. */
static double time_update(vdna_hist *h, const vdna_array *x, int kernel) {
    vdna_acts a;
    if (vdna_acts_describe(x, h->layout, h->n_neurons, &a) != VDNA_OK) return -1.0;
    hist_job job = {h, &a, vdna_hist_bin_consts(h), simd_kernel(kernel), 0};
    double t0 = now_seconds();
    if (!a.by_rows)
        vdna_hist_by_neuron(&job, 0, h->n_neurons);
    else if (job.simd == NULL)
        vdna_hist_by_lanes(&job, 0, h->n_neurons);
    else {
        job.phase = vdna_hist_lanes_phase(&a);
        vdna_hist_by_lane_blocks(&job, 0, (h->n_neurons + job.phase + LANES - 1) / LANES);
    }
    return now_seconds() - t0;
}

#define CAL_BINS 1000
#define CAL_CH_NEURONS 16
#define CAL_CH_SAMPLES 2048 /* channels: 16 runs of 2048 ReLU values, half zeros */
#define CAL_TOK_ROWS 128
#define CAL_TOK_NEURONS 128 /* tokens: 128 rows of 128 neurons */
#define CAL_ROUNDS 5

/* The measurement of "auto" (run once). Kernels are timed in turns, CAL_ROUNDS rounds, each on its
 * best round; the fastest total wins, the wider instruction set on a tie. If anything cannot be
 * allocated, the widest kernel the CPU runs is kept. */
static void measure_kernels(void) {
    int widest = K_PORTABLE;
    for (int k = 0; k < N_KERNELS; k++)
        if (kernel_compiled(k) && kernel_runs(k)) widest = k;
    measured_kernel = widest;
    if (widest == K_PORTABLE) return;
    const int64_t n_ch = CAL_CH_NEURONS * CAL_CH_SAMPLES, n_tok = CAL_TOK_ROWS * CAL_TOK_NEURONS;
    float *ch = malloc((size_t)n_ch * sizeof *ch), *tok = malloc((size_t)n_tok * sizeof *tok);
    double ch_min[CAL_CH_NEURONS], ch_max[CAL_CH_NEURONS], tok_min[CAL_TOK_NEURONS], tok_max[CAL_TOK_NEURONS];
    vdna_hist *hc = NULL, *ht = NULL;
    for (int c = 0; c < CAL_CH_NEURONS; c++) ch_min[c] = 0.0, ch_max[c] = 4.0;
    for (int c = 0; c < CAL_TOK_NEURONS; c++) tok_min[c] = -4.0, tok_max[c] = 4.0;
    if (ch && tok && vdna_hist_create(&hc, CAL_CH_NEURONS, CAL_BINS, ch_min, ch_max, VDNA_LAYOUT_CHANNELS) == VDNA_OK &&
        vdna_hist_create(&ht, CAL_TOK_NEURONS, CAL_BINS, tok_min, tok_max, VDNA_LAYOUT_TOKENS) == VDNA_OK) {
        uint32_t s = 12345u; /* values: a sum of two uniforms in [-4, 4) (a LCG), ReLU for channels */
        for (int64_t i = 0; i < n_ch + n_tok; i++) {
            s = s * 1664525u + 1013904223u;
            float u = (float)(s >> 8) * 0x1p-24f;
            s = s * 1664525u + 1013904223u;
            float v = 4.0f * (u + (float)(s >> 8) * 0x1p-24f) - 4.0f;
            if (i < n_ch)
                ch[i] = v > 0.0f ? v : 0.0f;
            else
                tok[i - n_ch] = v;
        }
        vdna_array xc = {ch, VDNA_F32, 3, {1, CAL_CH_NEURONS, CAL_CH_SAMPLES}, {n_ch, CAL_CH_SAMPLES, 1}};
        vdna_array xt = {tok, VDNA_F32, 3, {1, CAL_TOK_ROWS, CAL_TOK_NEURONS}, {n_tok, CAL_TOK_NEURONS, 1}};
        double best[N_KERNELS][2];
        for (int k = 0; k < N_KERNELS; k++) best[k][0] = best[k][1] = INFINITY;
        for (int r = 0; r <= CAL_ROUNDS; r++) /* round 0 warms the caches up, uncounted */
            for (int k = 0; k < N_KERNELS; k++) {
                if (!(kernel_compiled(k) && kernel_runs(k))) continue;
                double tc = time_update(hc, &xc, k), tt = time_update(ht, &xt, k);
                if (r > 0 && tc < best[k][0]) best[k][0] = tc;
                if (r > 0 && tt < best[k][1]) best[k][1] = tt;
            }
        double fastest = INFINITY;
        for (int k = 0; k < N_KERNELS; k++)
            if (kernel_compiled(k) && kernel_runs(k) && best[k][0] + best[k][1] <= fastest) {
                fastest = best[k][0] + best[k][1];
                measured_kernel = k;
            }
    }
    vdna_hist_free(hc);
    vdna_hist_free(ht);
    free(ch);
    free(tok);
}

/* The kernel of this update (measuring "auto" on first use), or K_BAD_ENV. */
static int update_kernel(void) {
    int k = current_request();
    if (k != K_AUTO) return k;
    pthread_once(&measure_once, measure_kernels);
    return measured_kernel;
}

const char *vdna_hist_kernel(void) {
    vdna_clear_error();
    int k = update_kernel();
    if (k == K_BAD_ENV) {
        unusable_kernel("VDNA_HIST_KERNEL=", getenv("VDNA_HIST_KERNEL"));
        return NULL;
    }
    return kernel_names[k];
}

/* ---------------------------------------------------------------- update */
vdna_status vdna_hist_update(vdna_hist *h, const vdna_array *x) {
    vdna_clear_error();
    if (h == NULL) return vdna_fail(VDNA_ERR_ARG, "hist update: NULL accumulator");
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, h->layout, h->n_neurons, &a);
    if (st != VDNA_OK) return st;
    if (current_request() == K_BAD_ENV) return unusable_kernel("VDNA_HIST_KERNEL=", getenv("VDNA_HIST_KERNEL"));
    if (a.n_images == 0) return VDNA_OK;
    /* kernels only differ on float32 input: no measurement for other dtypes */
    hist_job job = {h, &a, vdna_hist_bin_consts(h), a.dtype == VDNA_F32 ? simd_kernel(update_kernel()) : NULL, 0};
    int64_t per_neuron = a.n_images * a.n_samples;
    int64_t min_chunk = per_neuron >= 8192 ? 1 : 8192 / per_neuron;
    vdna_range_fn fn = vdna_hist_by_neuron;
    if (a.by_rows) {
        /* 16-lane blocks: float32, unit neuron stride, enough values per neuron for local
         * histograms, and LANES of them small enough */
        int lanes = a.dtype == VDNA_F32 && a.neuron_stride == 1 && per_neuron * 16 >= h->bins + 1 &&
                    (h->bins + 1) * LANES * (int64_t)sizeof(uint16_t) <= LANES_LOCAL_BYTES;
        fn = lanes ? vdna_hist_by_lanes : vdna_hist_by_row;
        if (lanes && job.simd != NULL) { /* parallel over whole blocks (lines) */
            job.phase = vdna_hist_lanes_phase(&a);
            int64_t n_blocks = (h->n_neurons + job.phase + LANES - 1) / LANES;
            st = vdna_parallel_for(n_blocks, (min_chunk + LANES - 1) / LANES, vdna_hist_by_lane_blocks, &job);
            if (st != VDNA_OK) return st;
            h->num_images += a.n_images;
            return VDNA_OK;
        }
    }
    st = vdna_parallel_for(h->n_neurons, min_chunk, fn, &job);
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

vdna_status vdna_hist_counts(const vdna_hist *h, int64_t *counts) {
    vdna_clear_error();
    if (h == NULL || counts == NULL) return vdna_fail(VDNA_ERR_ARG, "hist counts: NULL argument");
    memcpy(counts, h->counts, (size_t)(h->n_neurons * h->bins) * sizeof(int64_t));
    return VDNA_OK;
}

vdna_status vdna_hist_nan_counts(const vdna_hist *h, int64_t *nan_counts) {
    vdna_clear_error();
    if (h == NULL || nan_counts == NULL) return vdna_fail(VDNA_ERR_ARG, "hist nan_counts: NULL argument");
    memcpy(nan_counts, h->nan_counts, (size_t)h->n_neurons * sizeof(int64_t));
    return VDNA_OK;
}

vdna_status vdna_hist_ranges(const vdna_hist *h, double *mins, double *maxs) {
    vdna_clear_error();
    if (h == NULL) return vdna_fail(VDNA_ERR_ARG, "hist ranges: NULL accumulator");
    if (mins) memcpy(mins, h->mins, (size_t)h->n_neurons * sizeof(double));
    if (maxs) memcpy(maxs, h->maxs, (size_t)h->n_neurons * sizeof(double));
    return VDNA_OK;
}

int64_t vdna_hist_num_images(const vdna_hist *h) { return h ? h->num_images : -1; }
int64_t vdna_hist_n_neurons(const vdna_hist *h) { return h ? h->n_neurons : -1; }
int64_t vdna_hist_bins(const vdna_hist *h) { return h ? h->bins : -1; }
vdna_layout vdna_hist_layout(const vdna_hist *h) { return h ? h->layout : (vdna_layout)-1; }

/* hist_kernels.h: what the histogram's API (hist.c), its loops and portable kernels
 * (hist_portable.c) and its x86-64 kernels (hist_avx2.c, hist_avx512.c) share. Internal.
 *
 * A "kernel" is a set of hot loops for float32 input: packing the non-zero values of a run of
 * one neuron (channels layout, ReLU zeros counted apart) and binning 16 neurons of a row at a time
 * (tokens layout). Every kernel gives the bins of exact_bin, value by value: an estimate is only
 * trusted where it provably floors like the exact bin (see hist_portable.c), so kernels differ
 * in speed only. hist.c picks one per process (vdna_hist_set_kernel). */
#ifndef VDNA_HIST_KERNELS_H
#define VDNA_HIST_KERNELS_H

#include "activations.h"

/* The x86-64 kernels are compiled with GCC / clang (target attributes, <immintrin.h>). */
#if defined(__GNUC__) && defined(__x86_64__)
#define VDNA_HIST_X86_KERNELS 1
#endif

struct vdna_hist_s {
    int64_t n_neurons, bins, num_images;
    vdna_layout layout;
    double *mins, *maxs;    /* as given */
    double *centre, *half;  /* normalisation per neuron */
    double *recip;          /* 1 / half, for the estimate */
    int recip_ok;           /* every 1/half is a normal number (else: exact division only) */
    float *cf, *gf, *df;    /* float32 estimate per neuron: centre, B/(2 half), its delta */
    int32_t *zb;            /* exact bin of 0.0 (ReLU zeros are often within delta of an edge) */
    int64_t *counts;        /* n_neurons x bins */
    int64_t *nan_counts;    /* n_neurons */
};

/* The specified bin of x (NaN -> `bins`, a slot of its own). Clamping t = ((z+1) B) / 2 to [0, B]
 * equals clamping z to [-1, 1] first (rounding is monotone, and z = -1 / 1 give t = 0 / B exactly).
 * NaN fails `t > 0` and becomes 0 before the integer conversion (converting NaN is undefined). */
static inline int32_t exact_bin(double x, double centre, double half, int32_t bins) {
    const double bd = (double)bins;
    double t = (((x - centre) / half + 1.0) * bd) * 0.5;
    int32_t isnan_ = t != t;
    t = t > 0.0 ? t : 0.0;
    t = t < bd ? t : bd;
    int32_t b = (int32_t)t;
    b = b > bins - 1 ? bins - 1 : b;
    return isnan_ ? bins : b;
}

/* Constants of the float64 estimate (vdna_hist_bin_consts, hist_portable.c). */
typedef struct {
    double hb;     /* bins / 2 */
    double top;    /* bins + 0.5: upper clamp of the estimate */
    double delta;  /* estimates within delta of an integer are redone exactly */
    double omd;    /* 1 - delta */
    int32_t bins, last;
} bin_consts;

bin_consts vdna_hist_bin_consts(const vdna_hist *h);

/* Lanes: blocks of LANES neurons of one row (one 64-byte line of float32) are walked over every
 * sample position of the batch with LANES 16-bit local histograms, CHUNK_ROWS positions per call
 * of a kernel's count_lanes_f32. */
#define LANES 16
#define CHUNK_ROWS 128
#define LANE_PREFETCH 12 /* positions ahead */
#define LANES_LOCAL_BYTES (1 << 21)

/* Per-lane parameters of a block of lanes (lanes outside the neurons of the call: cf = gf = 0,
 * df = 1, zb = 0, centre = 0, half = 1). */
typedef struct {
    float cf[LANES], gf[LANES], df[LANES];
    int32_t zb[LANES];
    double centre[LANES], half[LANES];
} lane_params;

typedef struct {
    /* Exact bins of the non-zero (or NaN) float32 values v[0..n) of one neuron, packed into
     * idx[0..m), m returned; the zeros are only counted (*zeros += their number). Entries the
     * estimate (cf, gf, dl: see f32_estimate_init) is unsure of hold ~i (i: the value's position
     * in v), and *any is then set; the caller redoes them with exact_bin. idx has n + 16 entries
     * (full vector stores). */
    int64_t (*pack_nonzero_f32)(const float *v, int64_t n, float cf, float gf, float dl, int32_t bins, int32_t *idx,
                                int64_t *zeros, int32_t *any);
    /* Positions q0..q0+nq of one image, counted into mem (LANES histograms of `stride` slots:
     * lane j's slot j * stride + bin, NaN slot `bins`, pad slot bins + 1 for the lanes outside
     * `live`). first + soff[q]: the first live lane (lane `shift`) at position q; lane j reads
     * 4 (j - shift) bytes from there (lanes outside `live`, a 16-bit mask, read nothing). next:
     * the same block in the next image (prefetch only), or NULL. */
    void (*count_lanes_f32)(const float *first, int shift, const int64_t *soff, int64_t q0, int64_t nq,
                            int64_t n_samples, const float *next, const lane_params *lp, unsigned live, int32_t bins,
                            int32_t stride, uint16_t *mem);
} hist_simd_kernel;

#ifdef VDNA_HIST_X86_KERNELS
extern const hist_simd_kernel vdna_hist_avx2_kernel;   /* hist_avx2.c; needs AVX2 */
extern const hist_simd_kernel vdna_hist_avx512_kernel; /* hist_avx512.c; needs AVX-512 F and DQ */
#endif

/* One update of h with the batch a: the work of vdna_parallel_for's range functions below.
 * simd: the intrinsics kernel, or NULL for the portable C loops. */
typedef struct {
    vdna_hist *h;
    const vdna_acts *a;
    bin_consts k;
    const hist_simd_kernel *simd;
    int64_t phase; /* lane blocks: lanes before neuron 0 in its block (vdna_hist_lanes_phase) */
} hist_job;

/* Range functions over neurons [c0, c1) (hist_portable.c):
 * by_neuron: along runs of samples (channels layout with long runs);
 * by_row:    a sample position at a time, neurons innermost (tokens, channels-last, any dtype);
 * by_lanes:  float32 rows of unit neuron stride, blocks of LANES neurons from c0 (portable). */
void vdna_hist_by_neuron(void *job, int64_t c0, int64_t c1);
void vdna_hist_by_row(void *job, int64_t c0, int64_t c1);
void vdna_hist_by_lanes(void *job, int64_t c0, int64_t c1);
/* Range function over lane blocks [k0, k1): block k holds neurons [16 k - phase, 16 k + 16 - phase)
 * clipped to the layer, counted with job->simd->count_lanes_f32. */
void vdna_hist_by_lane_blocks(void *job, int64_t k0, int64_t k1);
/* Lanes of the first neuron's block: (address of neuron 0 in 4-byte units) mod 16 when every row
 * starts at the same offset in its 64-byte line, else 0 (blocks from neuron 0). */
int64_t vdna_hist_lanes_phase(const vdna_acts *a);

#endif

/* emd.c: Earth Mover's Distance between per-neuron histograms (one pair, or one reference against
 * many candidates with a neuron selection and weights). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* Neurons per block of emd_many's partial sums: fixed, so that the order of the aggregate sum
 * never depends on the number of threads. */
#define EMD_NEURON_BLOCK 64

/* Work items of a thread chunk: about this many bins (keeps thread start-up cost negligible). */
#define EMD_BINS_PER_CHUNK 32768

typedef enum { ROW_OK = 0, ROW_NEGATIVE, ROW_NONFINITE, ROW_OVERFLOW } row_check;

/* Total of one row, validating every count. On failure *bad_bin is the first bad bin. */
static row_check row_total(const vdna_counts *h, int64_t neuron, int64_t n_bins, double *total, int64_t *bad_bin) {
    *bad_bin = -1;
    if (h->type == VDNA_COUNTS_I64) {
        const int64_t *row = (const int64_t *)h->data + neuron * h->row_stride;
        int64_t sum = 0;
        for (int64_t b = 0; b < n_bins; b++) {
            int64_t v = row[b * h->bin_stride];
            if (v < 0) {
                *bad_bin = b;
                return ROW_NEGATIVE;
            }
            if (__builtin_add_overflow(sum, v, &sum)) {
                *bad_bin = b;
                return ROW_OVERFLOW;
            }
        }
        *total = (double)sum; /* the exact integer total, rounded once */
        return ROW_OK;
    }
    /* Four interleaved partial sums, combined in a fixed order: the same total for any thread
     * count, and four independent addition chains instead of one long one. */
    const double *row = (const double *)h->data + neuron * h->row_stride;
    const int64_t st = h->bin_stride;
    double part[4] = {0.0, 0.0, 0.0, 0.0};
    int any_bad = 0;
    int64_t b = 0;
    for (; b + 4 <= n_bins; b += 4) {
        for (int l = 0; l < 4; l++) {
            double v = row[(b + l) * st];
            any_bad |= !(v >= 0.0 && v <= DBL_MAX); /* negative, NaN or Inf */
            part[l] += v;
        }
    }
    for (; b < n_bins; b++) {
        double v = row[b * st];
        any_bad |= !(v >= 0.0 && v <= DBL_MAX);
        part[b & 3] += v;
    }
    if (any_bad) { /* locate the first bad count */
        for (b = 0; b < n_bins; b++) {
            double v = row[b * st];
            if (!isfinite(v) || v < 0.0) {
                *bad_bin = b;
                return isfinite(v) ? ROW_NEGATIVE : ROW_NONFINITE;
            }
        }
    }
    double sum = (part[0] + part[1]) + (part[2] + part[3]);
    if (!isfinite(sum)) {
        *bad_bin = n_bins - 1;
        return ROW_OVERFLOW;
    }
    *total = sum;
    return ROW_OK;
}

/* Bins per block of emd_neuron: the normalised differences of a block are computed first (an
 * independent, vectorisable loop), then accumulated in order (a serial dependency chain). */
#define EMD_BIN_BLOCK 256

/* diff[i] = p1 - p2 at bins b0 .. b0+len, p = count / total (divisions, not reciprocals). */
#define EMD_FILL_DIFF(T1, T2)                                                              \
    do {                                                                                   \
        const T1 *r1 = (const T1 *)h1->data + neuron * h1->row_stride + b0 * h1->bin_stride; \
        const T2 *r2 = (const T2 *)h2->data + neuron * h2->row_stride + b0 * h2->bin_stride; \
        const int64_t s1 = h1->bin_stride, s2 = h2->bin_stride;                            \
        if (s1 == 1 && s2 == 1) {                                                          \
            for (int64_t i = 0; i < len; i++) diff[i] = (double)r1[i] / t1 - (double)r2[i] / t2; \
        } else {                                                                           \
            for (int64_t i = 0; i < len; i++)                                              \
                diff[i] = (double)r1[i * s1] / t1 - (double)r2[i * s2] / t2;               \
        }                                                                                  \
    } while (0)

/* EMD of one neuron: sum_b |cumsum(p1 - p2)| (the difference of the normalised bins is taken
 * first, then accumulated bin by bin: the reference package's order).
 * Returns 0, or 1 / 2 when h1's / h2's row is invalid (nothing written). */
static int emd_neuron(const vdna_counts *h1, const vdna_counts *h2, int64_t neuron, int64_t n_bins, double *out) {
    double t1 = 0.0, t2 = 0.0;
    int64_t bad;
    if (row_total(h1, neuron, n_bins, &t1, &bad) != ROW_OK) return 1;
    if (row_total(h2, neuron, n_bins, &t2, &bad) != ROW_OK) return 2;
    if (t1 == 0.0 || t2 == 0.0) {
        *out = NAN; /* an empty histogram has no distribution */
        return 0;
    }
    double diff[EMD_BIN_BLOCK];
    double cdf_diff = 0.0, acc = 0.0;
    for (int64_t b0 = 0; b0 < n_bins; b0 += EMD_BIN_BLOCK) {
        int64_t len = n_bins - b0 < EMD_BIN_BLOCK ? n_bins - b0 : EMD_BIN_BLOCK;
        if (h1->type == VDNA_COUNTS_F64 && h2->type == VDNA_COUNTS_F64) {
            EMD_FILL_DIFF(double, double);
        } else if (h1->type == VDNA_COUNTS_F64) {
            EMD_FILL_DIFF(double, int64_t);
        } else if (h2->type == VDNA_COUNTS_F64) {
            EMD_FILL_DIFF(int64_t, double);
        } else {
            EMD_FILL_DIFF(int64_t, int64_t);
        }
        for (int64_t i = 0; i < len; i++) {
            cdf_diff += diff[i];
            acc += fabs(cdf_diff);
        }
    }
    *out = acc;
    return 0;
}

/* Message for an invalid row found by emd_neuron (called on the caller's thread). */
static vdna_status row_error(const vdna_counts *h, const char *name, int64_t neuron, int64_t n_bins) {
    double total;
    int64_t b;
    row_check c = row_total(h, neuron, n_bins, &total, &b);
    if (c == ROW_NEGATIVE || c == ROW_NONFINITE) {
        int64_t offset = neuron * h->row_stride + b * h->bin_stride;
        double value = h->type == VDNA_COUNTS_I64 ? (double)((const int64_t *)h->data)[offset]
                                                  : ((const double *)h->data)[offset];
        return vdna_fail(VDNA_ERR_ARG, "%s has a %s count at neuron %lld, bin %lld (%g)", name,
                         c == ROW_NEGATIVE ? "negative" : "non-finite", (long long)neuron, (long long)b, value);
    }
    if (c == ROW_OVERFLOW)
        return vdna_fail(VDNA_ERR_ARG, "%s: the counts of neuron %lld overflow when summed", name,
                         (long long)neuron);
    return vdna_fail(VDNA_ERR_ARG, "%s: invalid counts at neuron %lld", name, (long long)neuron);
}

/* Record the smallest failing work position (atomic min), so the reported error does not depend
 * on thread scheduling. */
static void record_failure(int64_t *first_bad, int64_t pos) {
    int64_t cur = __atomic_load_n(first_bad, __ATOMIC_RELAXED);
    while (pos < cur && !__atomic_compare_exchange_n(first_bad, &cur, pos, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

static vdna_status check_counts(const vdna_counts *h, const char *name) {
    if (h == NULL || h->data == NULL) return vdna_fail(VDNA_ERR_ARG, "%s is NULL", name);
    if (h->type != VDNA_COUNTS_F64 && h->type != VDNA_COUNTS_I64)
        return vdna_fail(VDNA_ERR_DTYPE, "%s: unknown counts type %d", name, (int)h->type);
    return VDNA_OK;
}

/* ---------------------------------------------------------------- one pair */
typedef struct {
    const vdna_counts *h1, *h2;
    int64_t n_bins;
    double *out;
    int64_t first_bad; /* smallest neuron whose row failed, INT64_MAX if none */
} emd_job;

static void emd_range(void *ctx, int64_t begin, int64_t end) {
    emd_job *job = (emd_job *)ctx;
    for (int64_t n = begin; n < end; n++) {
        if (emd_neuron(job->h1, job->h2, n, job->n_bins, &job->out[n]) != 0) {
            record_failure(&job->first_bad, n);
            return;
        }
    }
}

static int64_t chunk_items(int64_t bins_per_item) {
    int64_t c = EMD_BINS_PER_CHUNK / (bins_per_item > 0 ? bins_per_item : 1);
    return c < 1 ? 1 : c;
}

vdna_status vdna_emd(const vdna_counts *h1, const vdna_counts *h2, int64_t n_neurons, int64_t n_bins,
                     double *out) {
    vdna_clear_error();
    vdna_status s;
    if ((s = check_counts(h1, "h1")) != VDNA_OK || (s = check_counts(h2, "h2")) != VDNA_OK) return s;
    if (out == NULL) return vdna_fail(VDNA_ERR_ARG, "emd: out is NULL");
    if (n_neurons < 0 || n_bins < 1)
        return vdna_fail(VDNA_ERR_ARG, "emd needs n_neurons >= 0 and n_bins >= 1, got %lld and %lld",
                         (long long)n_neurons, (long long)n_bins);
    emd_job job = {h1, h2, n_bins, out, INT64_MAX};
    s = vdna_parallel_for(n_neurons, chunk_items(n_bins), emd_range, &job);
    if (s != VDNA_OK) return s;
    if (job.first_bad != INT64_MAX) {
        int64_t n = job.first_bad;
        double t;
        int64_t b;
        return row_total(h1, n, n_bins, &t, &b) != ROW_OK ? row_error(h1, "h1", n, n_bins)
                                                           : row_error(h2, "h2", n, n_bins);
    }
    return VDNA_OK;
}

/* ---------------------------------------------------------------- one reference, many candidates */
typedef struct {
    const vdna_counts *reference, *candidates;
    int64_t n_bins, n_sel, n_blocks;
    const int64_t *index; /* NULL: identity */
    const double *weights;
    double *partial; /* [candidate][block] */
    int64_t first_bad; /* smallest failing candidate * n_sel + position, INT64_MAX if none */
} emd_many_job;

static void emd_many_range(void *ctx, int64_t begin, int64_t end) {
    emd_many_job *job = (emd_many_job *)ctx;
    for (int64_t item = begin; item < end; item++) {
        int64_t k = item / job->n_blocks, block = item % job->n_blocks;
        int64_t j0 = block * EMD_NEURON_BLOCK;
        int64_t j1 = j0 + EMD_NEURON_BLOCK < job->n_sel ? j0 + EMD_NEURON_BLOCK : job->n_sel;
        double sum = 0.0;
        for (int64_t j = j0; j < j1; j++) {
            int64_t n = job->index ? job->index[j] : j;
            double e;
            if (emd_neuron(job->reference, &job->candidates[k], n, job->n_bins, &e) != 0) {
                record_failure(&job->first_bad, k * job->n_sel + j);
                return;
            }
            sum += job->weights ? job->weights[j] * e : e;
        }
        job->partial[item] = sum;
    }
}

vdna_status vdna_emd_many(const vdna_counts *reference, const vdna_counts *candidates, int64_t n_candidates,
                          int64_t n_neurons, int64_t n_bins, const int64_t *index, int64_t n_index,
                          const double *weights, double *out) {
    vdna_clear_error();
    vdna_status s;
    if ((s = check_counts(reference, "reference")) != VDNA_OK) return s;
    if (n_candidates < 0 || (n_candidates > 0 && (candidates == NULL || out == NULL)))
        return vdna_fail(VDNA_ERR_ARG, "emd_many: candidates/out are NULL or n_candidates < 0");
    for (int64_t k = 0; k < n_candidates; k++) {
        if (candidates[k].data == NULL)
            return vdna_fail(VDNA_ERR_ARG, "candidates[%lld] is NULL", (long long)k);
        if (candidates[k].type != VDNA_COUNTS_F64 && candidates[k].type != VDNA_COUNTS_I64)
            return vdna_fail(VDNA_ERR_DTYPE, "candidates[%lld]: unknown counts type", (long long)k);
    }
    if (n_neurons < 0 || n_bins < 1)
        return vdna_fail(VDNA_ERR_ARG, "emd_many needs n_neurons >= 0 and n_bins >= 1, got %lld and %lld",
                         (long long)n_neurons, (long long)n_bins);
    int64_t n_sel = index ? n_index : n_neurons;
    if (n_sel <= 0) return vdna_fail(VDNA_ERR_ARG, "emd_many: the neuron selection is empty");
    for (int64_t j = 0; index && j < n_sel; j++) {
        if (index[j] < 0 || index[j] >= n_neurons)
            return vdna_fail(VDNA_ERR_ARG, "index[%lld] = %lld is out of range for %lld neurons", (long long)j,
                             (long long)index[j], (long long)n_neurons);
    }
    for (int64_t j = 0; weights && j < n_sel; j++) {
        if (!isfinite(weights[j]) || weights[j] < 0.0)
            return vdna_fail(VDNA_ERR_ARG, "weights[%lld] = %g: weights must be finite and >= 0", (long long)j,
                             weights[j]);
    }
    if (n_candidates == 0) return VDNA_OK;

    int64_t n_blocks = (n_sel + EMD_NEURON_BLOCK - 1) / EMD_NEURON_BLOCK;
    if (n_candidates > INT64_MAX / n_blocks || (uint64_t)(n_candidates * n_blocks) > SIZE_MAX / sizeof(double))
        return vdna_fail(VDNA_ERR_NOMEM, "emd_many: too many candidates (%lld)", (long long)n_candidates);
    double *partial = malloc((size_t)(n_candidates * n_blocks) * sizeof(double));
    if (partial == NULL)
        return vdna_fail(VDNA_ERR_NOMEM, "emd_many: cannot allocate %lld partial sums",
                         (long long)(n_candidates * n_blocks));
    emd_many_job job = {reference, candidates, n_bins, n_sel, n_blocks, index, weights, partial, INT64_MAX};
    s = vdna_parallel_for(n_candidates * n_blocks, chunk_items(n_bins * EMD_NEURON_BLOCK), emd_many_range, &job);
    if (s == VDNA_OK && job.first_bad != INT64_MAX) {
        int64_t k = job.first_bad / n_sel, j = job.first_bad % n_sel;
        int64_t n = index ? index[j] : j;
        double t;
        int64_t b;
        if (row_total(reference, n, n_bins, &t, &b) != ROW_OK) {
            s = row_error(reference, "reference", n, n_bins);
        } else {
            char name[48];
            snprintf(name, sizeof name, "candidates[%lld]", (long long)k);
            s = row_error(&candidates[k], name, n, n_bins);
        }
    }
    if (s == VDNA_OK) {
        for (int64_t k = 0; k < n_candidates; k++) {
            double sum = 0.0;
            for (int64_t blk = 0; blk < n_blocks; blk++) sum += partial[k * n_blocks + blk];
            out[k] = weights ? sum : sum / (double)n_sel;
        }
    }
    free(partial);
    return s;
}

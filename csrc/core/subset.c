/* subset.c: histogram counts of many subsets of a dataset from one pass (stability curves).
 *
 * Tables are uint32 ("wide") or, where the caller knows every count stays at most 2^16 - 1, uint16
 * ("narrow"): half the memory and half the bytes each batch streams through.
 *
 * Each (image, neuron) is binned once (vdna_hist_bin_block: the bins of vdna_hist_update) into a
 * local histogram that remembers which bins it touched; the touched bins are then added to the rows
 * of the image's tables (all of a neuron's rows lie together: tables are neuron-major, so the rows one
 * neuron's images update stay in cache and in few pages, also when the tables are a memory-mapped
 * file). Parallel over neurons: every thread owns its neurons' rows in every table, so the counts are
 * exact and do not depend on the number of threads. */
#include "activations.h"
#include "vdna_accum.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t *slots;  /* bins + 1 (NaN slot), zero between images */
    int32_t *touched; /* bins touched by the current image, at most bins + 1 */
    int32_t idx[VDNA_BLOCK];
    double buf[VDNA_BLOCK];
} groups_scratch;

typedef struct {
    const vdna_hist *h;
    const vdna_acts *a;
    int64_t n_neurons, bins;
    const int64_t *groups;
    int64_t n_sets, n_jobs, n_tables;
    const int64_t *where; /* table t: wide table where[t] (>= 0) or narrow table -1 - where[t]; NULL: wide t */
    uint32_t *wide;
    int64_t n_wide;
    uint16_t *narrow;
    int64_t n_narrow;
    int64_t *table_nans;
    groups_scratch *scratch; /* one per job */
} groups_job;

/* Add the local histogram `slots` (touched bins `touched[0..m)`, or all B bins when dense) to a row. */
#define ADD_LOCAL(T, row, slots, touched, m, B, dense)                           \
    do {                                                                        \
        if (dense) {                                                            \
            for (int32_t b_ = 0; b_ < (B); b_++) (row)[b_] = (T)((row)[b_] + (slots)[b_]); \
        } else {                                                                \
            for (int64_t q_ = 0; q_ < (m); q_++) {                              \
                const int32_t b_ = (touched)[q_];                               \
                if (b_ != (B)) (row)[b_] = (T)((row)[b_] + (slots)[b_]);        \
            }                                                                   \
        }                                                                       \
    } while (0)

/* Neurons of jobs [j0, j1): job j owns neurons [C j / n_jobs, C (j+1) / n_jobs). */
static void count_groups_jobs(void *ctx, int64_t j0, int64_t j1) {
    const groups_job *job = ctx;
    const vdna_acts *a = job->a;
    const int32_t B = (int32_t)job->bins;
    const int64_t C = job->n_neurons, run = vdna_acts_run_len(a), rs = vdna_acts_run_stride(a);
    const int in_place = rs == 1 && (a->dtype == VDNA_F32 || a->dtype == VDNA_F64);
    for (int64_t j = j0; j < j1; j++) {
        groups_scratch *s = job->scratch + j;
        const int64_t c0 = C * j / job->n_jobs, c1 = C * (j + 1) / job->n_jobs;
        for (int64_t c = c0; c < c1; c++) {
            /* neuron c's rows of every table of each width: contiguous (tables are neuron-major) */
            uint32_t *wide_rows = job->wide ? job->wide + (size_t)c * (size_t)job->n_wide * (size_t)B : NULL;
            uint16_t *narrow_rows = job->narrow ? job->narrow + (size_t)c * (size_t)job->n_narrow * (size_t)B : NULL;
            for (int64_t n = 0; n < a->n_images; n++) {
                int64_t m = 0;
                const int64_t base = n * a->image_stride + c * a->neuron_stride;
                for (int64_t p = 0; p < a->n_samples; p += run) {
                    const int64_t off = base + vdna_acts_sample_offset(a, p);
                    for (int64_t q0 = 0; q0 < run; q0 += VDNA_BLOCK) {
                        const int64_t len = run - q0 < VDNA_BLOCK ? run - q0 : VDNA_BLOCK;
                        if (in_place && a->dtype == VDNA_F32)
                            vdna_hist_bin_block(job->h, c, (const float *)a->data + off + q0, NULL, len, s->idx);
                        else if (in_place)
                            vdna_hist_bin_block(job->h, c, NULL, (const double *)a->data + off + q0, len, s->idx);
                        else {
                            vdna_load_block(s->buf, a->data, a->dtype, off + q0 * rs, rs, len);
                            vdna_hist_bin_block(job->h, c, NULL, s->buf, len, s->idx);
                        }
                        for (int64_t q = 0; q < len; q++) {
                            const int32_t b = s->idx[q];
                            if (s->slots[b]++ == 0) s->touched[m++] = b;
                        }
                    }
                }
                const uint32_t nan_count = s->slots[B];
                /* Many touched bins: add the whole local histogram (a vectorisable pass over B
                 * bins per table) instead of scattering bin by bin. */
                const int dense = 4 * m > B;
                for (int64_t r = 0; r < job->n_sets; r++) {
                    const int64_t t = job->groups[n * job->n_sets + r];
                    if (t < 0) continue;
                    const int64_t slot = job->where == NULL ? t : job->where[t];
                    if (slot >= 0) {
                        uint32_t *row = wide_rows + (size_t)slot * (size_t)B;
                        ADD_LOCAL(uint32_t, row, s->slots, s->touched, m, B, dense);
                    } else { /* the caller's bound: every count of this table fits 16 bits */
                        uint16_t *row = narrow_rows + (size_t)(-1 - slot) * (size_t)B;
                        ADD_LOCAL(uint16_t, row, s->slots, s->touched, m, B, dense);
                    }
                    job->table_nans[t * C + c] += nan_count;
                }
                if (dense)
                    memset(s->slots, 0, ((size_t)B + 1) * sizeof *s->slots);
                else
                    for (int64_t q = 0; q < m; q++) s->slots[s->touched[q]] = 0;
            }
        }
    }
}

vdna_status vdna_hist_count_groups(const vdna_hist *h, const vdna_array *x, const int64_t *groups, int64_t n_sets,
                                   uint32_t *tables, int64_t n_tables, int64_t *table_images, int64_t *table_nans) {
    return vdna_hist_count_groups_mixed(h, x, groups, n_sets, n_tables, NULL, tables, n_tables, NULL, 0, table_images,
                                        table_nans);
}

vdna_status vdna_hist_count_groups_mixed(const vdna_hist *h, const vdna_array *x, const int64_t *groups, int64_t n_sets,
                                         int64_t n_tables, const int64_t *where, uint32_t *wide, int64_t n_wide,
                                         uint16_t *narrow, int64_t n_narrow, int64_t *table_images,
                                         int64_t *table_nans) {
    vdna_clear_error();
    if (h == NULL) return vdna_fail(VDNA_ERR_ARG, "hist count_groups: NULL accumulator");
    if (n_sets < 0 || n_tables < 0 || n_wide < 0 || n_narrow < 0 || n_wide > INT64_MAX / 2 || n_narrow > INT64_MAX / 2)
        return vdna_fail(VDNA_ERR_ARG,
                         "hist count_groups: n_sets (%lld), n_tables (%lld), n_wide (%lld) and n_narrow (%lld) must "
                         "be >= 0",
                         (long long)n_sets, (long long)n_tables, (long long)n_wide, (long long)n_narrow);
    if ((n_tables > 0 && (table_images == NULL || table_nans == NULL)) || (n_wide > 0 && wide == NULL) ||
        (n_narrow > 0 && narrow == NULL))
        return vdna_fail(VDNA_ERR_ARG, "hist count_groups: NULL tables, table_images or table_nans");
    if (where == NULL && n_wide != n_tables)
        return vdna_fail(VDNA_ERR_ARG, "hist count_groups: without `where`, the %lld tables must all be wide (got %lld)",
                         (long long)n_tables, (long long)n_wide);
    const int64_t C = vdna_hist_n_neurons(h), B = vdna_hist_bins(h);
    vdna_acts a;
    vdna_status st = vdna_acts_describe(x, vdna_hist_layout(h), C, &a);
    if (st != VDNA_OK) return st;
    if (a.n_images == 0 || n_sets == 0) return VDNA_OK;
    if (groups == NULL) return vdna_fail(VDNA_ERR_ARG, "hist count_groups: NULL groups");
    if (a.n_samples > (int64_t)UINT32_MAX)
        return vdna_fail(VDNA_ERR_ARG, "hist count_groups: %lld samples per image and neuron exceed 2^32 - 1",
                         (long long)a.n_samples);
    /* Check everything before changing anything: where every table lives (each wide and narrow table
     * used once), group indices, and that no table can overflow (each image adds at most n_samples to
     * a count of each of its neurons). */
    int64_t *batch_images = n_tables > 0 ? calloc((size_t)n_tables, sizeof *batch_images) : NULL;
    unsigned char *used = n_wide + n_narrow > 0 ? calloc((size_t)(n_wide + n_narrow), 1) : NULL;
    if ((n_tables > 0 && batch_images == NULL) || (n_wide + n_narrow > 0 && used == NULL)) {
        free(batch_images);
        free(used);
        return vdna_fail(VDNA_ERR_NOMEM, "hist count_groups: cannot allocate %lld counters", (long long)n_tables);
    }
    for (int64_t t = 0; where != NULL && t < n_tables; t++) {
        const int64_t w = where[t];
        if (w < -n_narrow || w >= n_wide || used[w >= 0 ? w : n_wide + (-1 - w)]) {
            free(batch_images);
            free(used);
            return vdna_fail(VDNA_ERR_ARG,
                             "hist count_groups: table %lld: where = %lld is not a free slot of [-%lld, %lld) "
                             "(>= 0: wide table, < 0: narrow table -1 - where; each used once)",
                             (long long)t, (long long)w, (long long)n_narrow, (long long)n_wide);
        }
        used[w >= 0 ? w : n_wide + (-1 - w)] = 1;
    }
    free(used);
    for (int64_t i = 0; i < a.n_images * n_sets; i++) {
        const int64_t t = groups[i];
        if (t < -1 || t >= n_tables) {
            free(batch_images);
            return vdna_fail(VDNA_ERR_ARG, "hist count_groups: image %lld, set %lld: table %lld is not in [-1, %lld)",
                             (long long)(i / n_sets), (long long)(i % n_sets), (long long)t, (long long)n_tables);
        }
        if (t >= 0) batch_images[t]++;
    }
    for (int64_t t = 0; t < n_tables; t++) {
        const int is_narrow = where != NULL && where[t] < 0;
        const int64_t max_images = (int64_t)((is_narrow ? UINT16_MAX : UINT32_MAX) / (uint64_t)a.n_samples);
        if (table_images[t] < 0 || table_images[t] > max_images - batch_images[t]) {
            const int64_t had = table_images[t];
            free(batch_images);
            if (had < 0)
                return vdna_fail(VDNA_ERR_ARG, "hist count_groups: table_images[%lld] = %lld < 0", (long long)t,
                                 (long long)had);
            return vdna_fail(VDNA_ERR_ARG,
                             "hist count_groups: table %lld would hold more than %lld images of %lld samples "
                             "(its %s counts could overflow)",
                             (long long)t, (long long)max_images, (long long)a.n_samples,
                             is_narrow ? "16-bit" : "32-bit");
        }
    }
    int64_t n_jobs = vdna_get_num_threads();
    if (n_jobs > C) n_jobs = C;
    if (n_jobs < 1) n_jobs = 1;
    groups_scratch *scratch = calloc((size_t)n_jobs, sizeof *scratch);
    int ok = scratch != NULL;
    for (int64_t j = 0; ok && j < n_jobs; j++) {
        scratch[j].slots = calloc((size_t)B + 1, sizeof *scratch[j].slots);
        scratch[j].touched = malloc(((size_t)B + 1) * sizeof *scratch[j].touched);
        ok = scratch[j].slots != NULL && scratch[j].touched != NULL;
    }
    if (ok) {
        groups_job job = {h,     &a,   C,      B,      groups,   n_sets,     n_jobs, n_tables,
                          where, wide, n_wide, narrow, n_narrow, table_nans, scratch};
        st = vdna_parallel_for(n_jobs, 1, count_groups_jobs, &job);
    } else {
        st = vdna_fail(VDNA_ERR_NOMEM, "hist count_groups: cannot allocate the local histograms");
    }
    if (st == VDNA_OK)
        for (int64_t t = 0; t < n_tables; t++) table_images[t] += batch_images[t];
    for (int64_t j = 0; scratch != NULL && j < n_jobs; j++) {
        free(scratch[j].slots);
        free(scratch[j].touched);
    }
    free(scratch);
    free(batch_images);
    return st;
}

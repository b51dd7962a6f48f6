/* common.c: status names, per-thread error messages, thread count, parallel-for, element loads. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *vdna_status_name(vdna_status s) {
    switch (s) {
        case VDNA_OK: return "ok";
        case VDNA_ERR_ARG: return "invalid argument";
        case VDNA_ERR_SHAPE: return "invalid shape";
        case VDNA_ERR_DTYPE: return "unsupported dtype";
        case VDNA_ERR_NOMEM: return "out of memory";
        case VDNA_ERR_MISMATCH: return "mismatched operands";
        case VDNA_ERR_RANGE: return "invalid activation ranges";
        case VDNA_ERR_LAPACK: return "linear algebra failure";
        case VDNA_ERR_EMPTY: return "no images accumulated";
        case VDNA_ERR_THREAD: return "thread creation failed";
    }
    return "unknown status";
}

const char *vdna_last_error(void) { return last_error; }

void vdna_clear_error(void) { last_error[0] = '\0'; }

vdna_status vdna_fail(vdna_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

vdna_status vdna_check_nan_counts(const int64_t *nan_counts, int64_t n, const char *what) {
    if (nan_counts == NULL) return VDNA_OK;
    for (int64_t i = 0; i < n; i++)
        if (nan_counts[i] < 0)
            return vdna_fail(VDNA_ERR_ARG, "%s: negative NaN count %lld at neuron %lld", what, (long long)nan_counts[i],
                             (long long)i);
    return VDNA_OK;
}

void vdna_copy_nan_counts(int64_t *dst, const int64_t *nan_counts, int64_t n) {
    if (nan_counts == NULL)
        memset(dst, 0, (size_t)n * sizeof(int64_t));
    else
        memcpy(dst, nan_counts, (size_t)n * sizeof(int64_t));
}

/* ---------------------------------------------------------------- threads */
static int requested_threads = 0; /* 0: one per online CPU */

void vdna_set_num_threads(int n) { __atomic_store_n(&requested_threads, n < 0 ? 0 : n, __ATOMIC_RELAXED); }

int vdna_get_num_threads(void) {
    int n = __atomic_load_n(&requested_threads, __ATOMIC_RELAXED);
    if (n > 0) return n;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1) cpus = 1;
    if (cpus > 256) cpus = 256;
    return (int)cpus;
}

/* Tests only: let at most n more thread starts succeed (-1: no limit, the default), so that the
 * tests can check that the calling thread does the work of threads that could not be started
 * (vdna_parallel_for). Returns the previous limit (what is left of it). */
static int start_limit = -1;
int vdna_test_thread_start_limit(int n);
int vdna_test_thread_start_limit(int n) { return __atomic_exchange_n(&start_limit, n, __ATOMIC_RELAXED); }

static int start_thread(pthread_t *tid, void *(*fn)(void *), void *arg) {
    int left = __atomic_load_n(&start_limit, __ATOMIC_RELAXED);
    while (left >= 0) { /* a limit is set: take one start from it, or fail */
        if (left == 0) return -1;
        if (__atomic_compare_exchange_n(&start_limit, &left, left - 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
    }
    return pthread_create(tid, NULL, fn, arg);
}

typedef struct {
    vdna_range_fn fn;
    void *ctx;
    int64_t begin, end;
} chunk_job;

static void *run_chunk(void *arg) {
    chunk_job *job = (chunk_job *)arg;
    job->fn(job->ctx, job->begin, job->end);
    return NULL;
}

vdna_status vdna_parallel_for(int64_t n_items, int64_t min_chunk, vdna_range_fn fn, void *ctx) {
    if (n_items <= 0) return VDNA_OK;
    if (min_chunk < 1) min_chunk = 1;
    int64_t n_threads = vdna_get_num_threads();
    int64_t max_useful = (n_items + min_chunk - 1) / min_chunk;
    if (n_threads > max_useful) n_threads = max_useful;
    if (n_threads <= 1) {
        fn(ctx, 0, n_items);
        return VDNA_OK;
    }
    chunk_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    if (jobs == NULL || tids == NULL) {
        free(jobs);
        free(tids);
        return vdna_fail(VDNA_ERR_NOMEM, "parallel_for: cannot allocate %lld thread records", (long long)n_threads);
    }
    for (int64_t t = 0; t < n_threads; t++) {
        jobs[t].fn = fn;
        jobs[t].ctx = ctx;
        jobs[t].begin = n_items * t / n_threads;
        jobs[t].end = n_items * (t + 1) / n_threads;
    }
    int64_t started = 0;
    for (int64_t t = 1; t < n_threads; t++, started++) {
        if (start_thread(&tids[t], run_chunk, &jobs[t]) != 0) break;
    }
    if (started < n_threads - 1) { /* could not start them all: run the rest here, nothing lost */
        for (int64_t t = started + 1; t < n_threads; t++) run_chunk(&jobs[t]);
    }
    run_chunk(&jobs[0]);
    for (int64_t t = 1; t <= started; t++) pthread_join(tids[t], NULL);
    free(jobs);
    free(tids);
    return VDNA_OK;
}

/* ---------------------------------------------------------------- element loads */
double vdna_half_to_double(uint16_t h) {
    int sign = (h >> 15) & 1;
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    double v;
    if (exp == 0) {
        v = ldexp((double)mant, -24); /* subnormal */
    } else if (exp == 31) {
        v = mant ? NAN : INFINITY;
    } else {
        v = ldexp((double)(mant | 0x400), exp - 25);
    }
    return sign ? -v : v;
}

/* test_distance.c: EMD, NFD and FD against hand-worked values, plus error paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vdna_core.h"

static int failures = 0;

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

#define CHECK_CLOSE(got, want, tol)                                                                     \
    do {                                                                                                \
        double g_ = (got), w_ = (want);                                                                 \
        if (!(fabs(g_ - w_) <= (tol))) {                                                                \
            fprintf(stderr, "%s:%d: %s = %.17g, want %.17g (tol %g)\n", __FILE__, __LINE__, #got, g_, w_, \
                    (double)(tol));                                                                     \
            failures++;                                                                                 \
        }                                                                                               \
    } while (0)

static vdna_counts f64_counts(const double *data, int64_t n_bins) {
    vdna_counts c = {data, VDNA_COUNTS_F64, n_bins, 1};
    return c;
}

static vdna_counts i64_counts(const int64_t *data, int64_t n_bins) {
    vdna_counts c = {data, VDNA_COUNTS_I64, n_bins, 1};
    return c;
}

static void test_emd_hand_values(void) {
    /* [1,2,1] vs [0,1,3]: CDFs (.25,.75,1) and (0,.25,1) -> .25 + .5 + 0 = .75 */
    const double h1[] = {1, 2, 1, 5, 0, 0, 0, 0, 0};
    const double h2[] = {0, 1, 3, 0, 0, 5, 0, 0, 0};
    vdna_counts a = f64_counts(h1, 3), b = f64_counts(h2, 3);
    double out[3];
    CHECK(vdna_emd(&a, &b, 3, 3, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 0.75, 1e-15);
    CHECK(out[1] == 2.0); /* a delta moved by two bins */
    CHECK(isnan(out[2])); /* empty histograms have no distribution */

    /* the same with int64 counts, mixed types, and h2 given transposed (bin-major) */
    const int64_t i1[] = {1, 2, 1, 5, 0, 0};
    const int64_t i2_t[] = {0, 0, 1, 0, 3, 5}; /* (bins, neurons) */
    vdna_counts ia = i64_counts(i1, 3);
    vdna_counts ib_t = {i2_t, VDNA_COUNTS_I64, 1, 2};
    CHECK(vdna_emd(&ia, &ib_t, 2, 3, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 0.75, 1e-15);
    CHECK(out[1] == 2.0);
    CHECK(vdna_emd(&a, &ib_t, 2, 3, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 0.75, 1e-15);

    /* identical -> exactly 0; a delta shifted by k bins -> k, in both directions */
    enum { B = 50 };
    double d1[B], d2[B];
    for (int k = 0; k < B; k++) {
        memset(d1, 0, sizeof d1);
        memset(d2, 0, sizeof d2);
        d1[0] = 7.0;
        d2[k] = 3.0;
        vdna_counts c1 = f64_counts(d1, B), c2 = f64_counts(d2, B);
        double e12, e21;
        CHECK(vdna_emd(&c1, &c2, 1, B, &e12) == VDNA_OK);
        CHECK(vdna_emd(&c2, &c1, 1, B, &e21) == VDNA_OK);
        CHECK(e12 == (double)k);
        CHECK(e21 == (double)k);
        CHECK(vdna_emd(&c2, &c2, 1, B, &e12) == VDNA_OK);
        CHECK(e12 == 0.0);
    }
    /* one empty row gives NaN whichever side it is on */
    const double zero[] = {0, 0, 0}, one[] = {0, 1, 0};
    vdna_counts z = f64_counts(zero, 3), o = f64_counts(one, 3);
    CHECK(vdna_emd(&z, &o, 1, 3, out) == VDNA_OK && isnan(out[0]));
    CHECK(vdna_emd(&o, &z, 1, 3, out) == VDNA_OK && isnan(out[0]));
    /* huge int64 counts: totals summed exactly */
    const int64_t big1[] = {(int64_t)1 << 61, 0, (int64_t)1 << 61}, big2[] = {0, (int64_t)1 << 61, 0};
    vdna_counts g1 = i64_counts(big1, 3), g2 = i64_counts(big2, 3);
    CHECK(vdna_emd(&g1, &g2, 1, 3, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 1.0, 1e-15); /* CDFs (.5,.5,1) vs (0,1,1) */
    CHECK(vdna_emd(&g1, &g2, 0, 3, out) == VDNA_OK); /* no neurons: nothing to do */
}

static void test_emd_errors(void) {
    double out[2];
    const double neg[] = {1, -1, 2, 1, 1, 1}, ok[] = {1, 1, 1, 1, 1, 1}, nan_row[] = {1, 1, 1, 1, NAN, 1};
    vdna_counts n = f64_counts(neg, 3), o = f64_counts(ok, 3), q = f64_counts(nan_row, 3);
    CHECK(vdna_emd(&n, &o, 2, 3, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "h1 has a negative count at neuron 0, bin 1") != NULL);
    CHECK(vdna_emd(&o, &q, 2, 3, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "h2 has a non-finite count at neuron 1, bin 1") != NULL);
    CHECK(vdna_emd(&o, &o, 2, 0, out) == VDNA_ERR_ARG);
    CHECK(vdna_emd(NULL, &o, 2, 3, out) == VDNA_ERR_ARG);
    const int64_t over[] = {INT64_MAX, 1, 0};
    vdna_counts v = i64_counts(over, 3);
    CHECK(vdna_emd(&v, &v, 1, 3, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "overflow") != NULL);
    CHECK(vdna_emd(&o, &o, 2, 3, out) == VDNA_OK);
    CHECK(vdna_last_error()[0] == '\0'); /* success clears the message */
}

static void test_emd_many(void) {
    /* reference and two candidates, 3 neurons x 3 bins */
    const double ref[] = {1, 2, 1, 5, 0, 0, 0, 1, 0};
    const double c0[] = {0, 1, 3, 0, 0, 5, 0, 1, 0};
    const int64_t c1[] = {1, 2, 1, 0, 5, 0, 0, 0, 1};
    vdna_counts r = f64_counts(ref, 3);
    vdna_counts cands[2] = {f64_counts(c0, 3), i64_counts(c1, 3)};
    /* per-neuron EMDs: c0 -> (.75, 2, 0), c1 -> (0, 1, 1) */
    double out[2];
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, NULL, 0, NULL, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 2.75 / 3, 1e-15);
    CHECK_CLOSE(out[1], 2.0 / 3, 1e-15);
    const int64_t idx[] = {1, 1, 0};
    const double w[] = {0.5, 0.25, 2.0};
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, idx, 3, w, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 0.5 * 2 + 0.25 * 2 + 2 * 0.75, 1e-15);
    CHECK_CLOSE(out[1], 0.5 + 0.25, 1e-15);
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, idx, 2, NULL, out) == VDNA_OK);
    CHECK(out[0] == 2.0 && out[1] == 1.0);

    /* errors */
    const int64_t bad_idx[] = {0, 3};
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, bad_idx, 2, NULL, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "index[1] = 3 is out of range for 3 neurons") != NULL);
    const double bad_w[] = {1, -1, 1};
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, NULL, 0, bad_w, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "weights[1]") != NULL);
    const double nan_w[] = {1, 1, NAN};
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, NULL, 0, nan_w, out) == VDNA_ERR_ARG);
    CHECK(vdna_emd_many(&r, cands, 2, 3, 3, idx, 0, NULL, out) == VDNA_ERR_ARG); /* empty selection */
    const double c_neg[] = {0, 1, 3, 0, 0, 5, 0, -1, 0};
    vdna_counts cands_bad[2] = {f64_counts(c0, 3), f64_counts(c_neg, 3)};
    CHECK(vdna_emd_many(&r, cands_bad, 2, 3, 3, NULL, 0, NULL, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "candidates[1] has a negative count at neuron 2, bin 1") != NULL);
    CHECK(vdna_emd_many(&r, cands, 0, 3, 3, NULL, 0, NULL, out) == VDNA_OK); /* no candidates */
}

static void test_emd_many_thread_independence(void) {
    enum { K = 5, C = 301, B = 17 };
    int64_t *ref = malloc(sizeof(int64_t) * C * B);
    double *cand = malloc(sizeof(double) * K * C * B);
    unsigned state = 12345u;
    for (int i = 0; i < C * B; i++) {
        state = state * 1103515245u + 12345u;
        ref[i] = (state >> 16) % 1000;
    }
    for (int i = 0; i < K * C * B; i++) {
        state = state * 1103515245u + 12345u;
        cand[i] = (double)((state >> 16) % 1000) * 0.37;
    }
    vdna_counts r = i64_counts(ref, B), cands[K];
    for (int k = 0; k < K; k++) cands[k] = f64_counts(cand + (size_t)k * C * B, B);
    double out1[K], out3[K], per[C];
    vdna_set_num_threads(1);
    CHECK(vdna_emd_many(&r, cands, K, C, B, NULL, 0, NULL, out1) == VDNA_OK);
    vdna_set_num_threads(3);
    CHECK(vdna_emd_many(&r, cands, K, C, B, NULL, 0, NULL, out3) == VDNA_OK);
    for (int k = 0; k < K; k++) {
        CHECK(out1[k] == out3[k]);
        CHECK(vdna_emd(&r, &cands[k], C, B, per) == VDNA_OK);
        double mean = 0.0;
        for (int n = 0; n < C; n++) mean += per[n];
        CHECK_CLOSE(out1[k], mean / C, 1e-13);
    }
    vdna_set_num_threads(0);
    free(ref);
    free(cand);
}

static void test_nfd(void) {
    const double mu1[] = {0.0, 1.0, 3.0, 2.0}, v1[] = {1.0, 4.0, 0.0, 2.5};
    const double mu2[] = {0.0, -1.0, 1.0, 2.0}, v2[] = {1.0, 9.0, 4.0, 2.5};
    double out[4];
    CHECK(vdna_nfd(mu1, v1, mu2, v2, 4, out) == VDNA_OK);
    CHECK(out[0] == 0.0);
    CHECK_CLOSE(out[1], 4.0 + 4.0 + 9.0 - 2.0 * 6.0, 1e-14); /* = 5 */
    CHECK_CLOSE(out[2], 4.0 + 0.0 + 4.0 - 0.0, 1e-14);       /* = 8 */
    CHECK(out[3] == 0.0);
    const double vneg[] = {1.0, -1.0, 0.0, 0.0};
    CHECK(vdna_nfd(mu1, vneg, mu2, v2, 4, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "negative variance at neuron 1") != NULL);
    const double mnan[] = {NAN, 1.0, 3.0, 2.0};
    CHECK(vdna_nfd(mnan, v1, mu2, v2, 4, out) == VDNA_OK);
    CHECK(isnan(out[0]) && out[3] == 0.0);
}

static void test_fd(void) {
    /* diagonal covariances: FD = sum over dimensions of the 1-D NFD */
    enum { D = 4 };
    const double mu1[D] = {1, 2, 3, 4}, mu2[D] = {0, 2, 5, 4};
    const double v1[D] = {1, 4, 0.25, 9}, v2[D] = {4, 4, 1, 0};
    double s1[D * D] = {0}, s2[D * D] = {0};
    for (int i = 0; i < D; i++) {
        s1[i * D + i] = v1[i];
        s2[i * D + i] = v2[i];
    }
    double nfd[D], fd = 0, want = 0;
    CHECK(vdna_nfd(mu1, v1, mu2, v2, D, nfd) == VDNA_OK);
    for (int i = 0; i < D; i++) want += nfd[i];
    /* by hand: (1 + 1) + 0 + (4 + 0.25) + 9 = 15.25 */
    CHECK_CLOSE(want, 15.25, 1e-14);
    CHECK(vdna_fd(D, mu1, s1, mu2, s2, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, want, 1e-12);

    /* a full 2x2 case by hand: S1 = I, S2 = [[2,1],[1,2]] (eigenvalues 1, 3):
     * tr S1 + tr S2 - 2 (sqrt 1 + sqrt 3) = 6 - 2 - 2 sqrt 3 */
    const double z[2] = {0, 0}, id[4] = {1, 0, 0, 1}, m[4] = {2, 1, 1, 2};
    CHECK(vdna_fd(2, z, id, z, m, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, 4.0 - 2.0 * sqrt(3.0), 1e-14);
    CHECK(vdna_fd(2, z, m, z, id, &fd) == VDNA_OK); /* symmetric in its arguments */
    CHECK_CLOSE(fd, 4.0 - 2.0 * sqrt(3.0), 1e-14);

    /* only the symmetric part of a covariance is used */
    const double m_skew[4] = {2, 2, 0, 2};
    CHECK(vdna_fd(2, z, id, z, m_skew, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, 4.0 - 2.0 * sqrt(3.0), 1e-14);
    /* an indefinite sigma1 (not positive definite: the eigendecomposition path) has its negative
     * eigenvalue clipped: S1^(1/2) = diag(2, 0), S1^(1/2) S2 S1^(1/2) = diag(4, 0) ->
     * tr S1 + tr S2 - 2 * 2 = 3 + 10 - 4 */
    const double s_indef[4] = {4, 0, 0, -1}, s_diag[4] = {1, 0, 0, 9};
    CHECK(vdna_fd(2, z, s_indef, z, s_diag, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, 9.0, 1e-13);
    /* a singular sigma1 given with its exact zero eigenvalue: [[1,1],[1,1]] = 2 u u^T, u = (1,1)/sqrt 2;
     * with S2 = I: S1^(1/2) S2 S1^(1/2) = S1, eigenvalues 2, 0 -> 2 + 2 - 2 sqrt 2 */
    const double s_sing[4] = {1, 1, 1, 1};
    CHECK(vdna_fd(2, z, s_sing, z, id, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, 4.0 - 2.0 * sqrt(2.0), 1e-14);

    /* identical Gaussians -> ~0; rank-deficient covariances (3 samples in 6 dims) stay finite */
    enum { N = 3, E = 6 };
    double x[N][E], y[N][E], sx[E * E] = {0}, sy[E * E] = {0}, mx[E] = {0}, my[E] = {0};
    unsigned state = 7u;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < E; j++) {
            state = state * 1103515245u + 12345u;
            x[i][j] = (double)((state >> 16) % 2001) / 1000.0 - 1.0;
            state = state * 1103515245u + 12345u;
            y[i][j] = (double)((state >> 16) % 2001) / 1000.0 - 1.0;
        }
    for (int j = 0; j < E; j++) {
        for (int i = 0; i < N; i++) {
            mx[j] += x[i][j] / N;
            my[j] += y[i][j] / N;
        }
    }
    for (int a = 0; a < E; a++)
        for (int b = 0; b < E; b++)
            for (int i = 0; i < N; i++) {
                sx[a * E + b] += (x[i][a] - mx[a]) * (x[i][b] - mx[b]) / (N - 1);
                sy[a * E + b] += (y[i][a] - my[a]) * (y[i][b] - my[b]) / (N - 1);
            }
    CHECK(vdna_fd(E, mx, sx, mx, sx, &fd) == VDNA_OK);
    CHECK(isfinite(fd) && fabs(fd) < 1e-13);
    CHECK(vdna_fd(E, mx, sx, my, sy, &fd) == VDNA_OK);
    CHECK(isfinite(fd) && fd > 0.0);
    double fd_rev;
    CHECK(vdna_fd(E, my, sy, mx, sx, &fd_rev) == VDNA_OK);
    CHECK_CLOSE(fd_rev, fd, 1e-7 * fd);
    /* all-zero covariances: FD is the squared mean distance */
    const double zeros[4] = {0, 0, 0, 0}, one[2] = {1, 2};
    CHECK(vdna_fd(2, one, zeros, z, zeros, &fd) == VDNA_OK);
    CHECK(fd == 5.0);
    CHECK(vdna_fd(0, NULL, NULL, NULL, NULL, &fd) == VDNA_OK && fd == 0.0);

    /* errors */
    double s_nan[4] = {1, 0, NAN, 1};
    CHECK(vdna_fd(2, z, s_nan, z, id, &fd) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "sigma1 has a non-finite value at flat index 2") != NULL);
    const double mu_inf[2] = {0, INFINITY};
    CHECK(vdna_fd(2, z, id, mu_inf, id, &fd) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "mu2") != NULL);
    CHECK(vdna_fd(-1, z, id, z, id, &fd) == VDNA_ERR_ARG);
    CHECK(vdna_fd(2, z, id, z, id, NULL) == VDNA_ERR_ARG);
}

/* S = H diag(lam) H for the Householder reflection H = I - 2 v v^T / (v^T v), v_i = 1 + i % 7
 * (orthogonal and symmetric, so the eigenvalues of S are lam and its eigenvectors are not the axes). */
static void rotated_diag(int d, const double *lam, double *s) {
    double vv = 0.0;
    for (int i = 0; i < d; i++) vv += (1.0 + i % 7) * (1.0 + i % 7);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double acc = 0.0;
            for (int k = 0; k < d; k++) {
                double hik = (i == k) - 2.0 * (1.0 + i % 7) * (1.0 + k % 7) / vv;
                double hkj = (k == j) - 2.0 * (1.0 + k % 7) * (1.0 + j % 7) / vv;
                acc += hik * lam[k] * hkj;
            }
            s[i * d + j] = acc;
        }
}

static void test_fd_ill_conditioned(void) {
    /* Full rank, condition number 1e10, d = 100 (the two-stage SVD route): S1 = H diag(lam) H,
     * S2 = c S1 commute, so S1^(1/2) S2 S1^(1/2) = c S1^2 and tr sqrt(.) = sqrt(c) tr S1:
     * FD = (1 - sqrt c)^2 tr S1 + |mu1 - mu2|^2. With S2 = c H diag(lam') H, lam' = lam with its
     * second half set to 0 (rank 50): tr sqrt(.) = sqrt(c) sum lam'. FD(S, S) = 0.
     * The bound is the accuracy contract 1e-9 (tr S1 + tr S2) (docs/design.md, "FD"): the
     * rounding of forming S (about d eps lam_max per entry) moves FD by ~1e-14 of that scale.
     * The route used before (eigenvalues of S1^(1/2) S2 S1^(1/2) below d eps lambda_max dropped)
     * misses it: it drops lam_i below 1.5e-7, 1.5e-7 of the trace scale for FD(S, S). */
    enum { D = 100 };
    static double lam[D], lam_half[D], s1[D * D], s2[D * D], s3[D * D];
    double mu1[D] = {0}, mu2[D] = {0}, tr1 = 0.0, tr_half = 0.0, dm2 = 0.0;
    const double c = 1.69; /* sqrt c = 1.3 */
    for (int i = 0; i < D; i++) {
        lam[i] = pow(10.0, -10.0 * i / (D - 1));
        lam_half[i] = i < D / 2 ? lam[i] : 0.0;
        tr1 += lam[i];
        tr_half += lam_half[i];
        mu2[i] = 0.01 * (i % 3);
        dm2 += mu2[i] * mu2[i];
    }
    rotated_diag(D, lam, s1);
    for (int i = 0; i < D * D; i++) s2[i] = c * s1[i];
    for (int i = 0; i < D; i++) lam_half[i] *= c;
    rotated_diag(D, lam_half, s3);
    double fd = -1.0, scale = tr1 + c * tr1;
    CHECK(vdna_fd(D, mu1, s1, mu2, s2, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, dm2 + (1.0 - 1.3) * (1.0 - 1.3) * tr1, 1e-9 * scale);
    CHECK(vdna_fd(D, mu2, s2, mu1, s1, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, dm2 + (1.0 - 1.3) * (1.0 - 1.3) * tr1, 1e-9 * scale);
    CHECK(vdna_fd(D, mu1, s1, mu1, s1, &fd) == VDNA_OK);
    CHECK(fd >= 0.0 && fd <= 1e-9 * 2.0 * tr1);
    CHECK(vdna_fd(D, mu2, s2, mu2, s2, &fd) == VDNA_OK);
    CHECK(fd >= 0.0 && fd <= 1e-9 * 2.0 * c * tr1);
    scale = tr1 + c * tr_half;
    CHECK(vdna_fd(D, mu1, s1, mu1, s3, &fd) == VDNA_OK); /* positive definite with rank 50 */
    CHECK_CLOSE(fd, tr1 + c * tr_half - 2.0 * 1.3 * tr_half, 1e-9 * scale);
    CHECK(vdna_fd(D, mu1, s3, mu1, s1, &fd) == VDNA_OK);
    CHECK_CLOSE(fd, tr1 + c * tr_half - 2.0 * 1.3 * tr_half, 1e-9 * scale);
    CHECK(vdna_fd(D, mu1, s3, mu1, s3, &fd) == VDNA_OK);
    CHECK(fd >= 0.0 && fd <= 1e-9 * 2.0 * c * tr_half);
}

/* Centred nuclear norms against hand-worked values. Tolerances: LAPACK's singular values are exact
 * for a matrix within p(m, k) eps ||A||_2 of A, so each of the k values is within that of the true
 * one; with p(m, k) taken as m + k (generous for Householder reductions of an m x k matrix) the
 * sum is within k (m + k) eps smax. */
static void test_centred_nuclear_norms(void) {
    const double eps = 2.220446049250313e-16;
    /* four points whose centred 4 x 2 matrix has orthogonal columns (1,-1,0,0) and (0,0,2,-2),
     * shifted by (5, 7): singular values sqrt 2 and 2 sqrt 2 */
    double pts[] = {6, 7, 4, 7, 5, 9, 5, 5};
    int64_t off[] = {0, 4, 4, 5, 7, 11}, idx[] = {0, 1, 2, 3, /* empty */ 2, /* one point */ 1, 1,
                                                 /* twice the same */ 3, 2, 1, 0 /* all, reordered */};
    double out[5];
    CHECK(vdna_centred_nuclear_norms(4, 2, pts, 5, off, idx, out) == VDNA_OK);
    CHECK_CLOSE(out[0], 3.0 * sqrt(2.0), 2 * 6 * eps * 2 * sqrt(2.0) * 4);
    CHECK(out[1] == 0.0 && out[2] == 0.0 && out[3] == 0.0);
    CHECK_CLOSE(out[4], out[0], 2 * 6 * eps * 2 * sqrt(2.0) * 4);

    /* the two-stage route (more than 64 columns after orienting the matrix tall), both orientations:
     * (a) N = 140 points in r = 70 dimensions, point 2i = s_i e_i + c and point 2i+1 = -s_i e_i + c:
     * orthogonal columns of norms sqrt 2 s_i; (b) N = 100 points on a line in r = 80 dimensions,
     * x_j = t_j u + c (t centred): rank one, nuclear norm ||t|| ||u||. */
    enum { R1 = 70, N1 = 140, R2 = 80, N2 = 100 };
    double *a = calloc((size_t)N1 * R1, sizeof(double)), *b = calloc((size_t)N2 * R2, sizeof(double));
    int64_t ia[N1], ib[N2], oa[2] = {0, N1}, ob[2] = {0, N2};
    double want_a = 0.0, smax = 0.0, tt = 0.0, uu = 0.0;
    for (int i = 0; i < R1; i++) {
        double si = 1.0 + 0.25 * i;
        for (int j = 0; j < R1; j++) a[(2 * i) * R1 + j] = a[(2 * i + 1) * R1 + j] = 3.0 - 0.5 * j; /* c */
        a[(2 * i) * R1 + i] += si;
        a[(2 * i + 1) * R1 + i] -= si;
        want_a += sqrt(2.0) * si;
        if (sqrt(2.0) * si > smax) smax = sqrt(2.0) * si;
    }
    for (int j = 0; j < N1; j++) ia[j] = (j * 37) % N1; /* every point, in another order */
    for (int i = 0; i < R2; i++) uu += (0.5 + i % 7) * (0.5 + i % 7);
    for (int j = 0; j < N2; j++) {
        double t = j - (N2 - 1) / 2.0;
        tt += t * t;
        for (int i = 0; i < R2; i++) b[j * R2 + i] = t * (0.5 + i % 7) + 1.0 + i;
        ib[j] = j;
    }
    double got_a = 0.0, got_b = 0.0, got_a3 = 0.0;
    vdna_set_num_threads(1);
    CHECK(vdna_centred_nuclear_norms(N1, R1, a, 1, oa, ia, &got_a) == VDNA_OK);
    CHECK_CLOSE(got_a, want_a, (double)R1 * (N1 + R1) * eps * smax);
    CHECK(vdna_centred_nuclear_norms(N2, R2, b, 1, ob, ib, &got_b) == VDNA_OK);
    CHECK_CLOSE(got_b, sqrt(tt * uu), (double)R2 * (N2 + R2) * eps * sqrt(tt * uu));
    /* results do not depend on the thread count: several subsets on 3 threads */
    int64_t om[4] = {0, N1, 2 * N1, 2 * N1 + 70};
    int64_t *im = malloc(sizeof(int64_t) * (2 * N1 + 70));
    for (int j = 0; j < N1; j++) im[j] = im[N1 + j] = ia[j];
    for (int j = 0; j < 70; j++) im[2 * N1 + j] = j;
    double m1[3], m3[3];
    CHECK(vdna_centred_nuclear_norms(N1, R1, a, 3, om, im, m1) == VDNA_OK);
    vdna_set_num_threads(3);
    CHECK(vdna_centred_nuclear_norms(N1, R1, a, 3, om, im, m3) == VDNA_OK);
    CHECK(vdna_centred_nuclear_norms(N1, R1, a, 1, oa, ia, &got_a3) == VDNA_OK);
    CHECK(m1[0] == got_a && m1[1] == got_a && got_a3 == got_a);
    for (int s = 0; s < 3; s++) CHECK(m1[s] == m3[s]);
    vdna_set_num_threads(0);

    /* errors name the problem */
    int64_t bad_idx[] = {0, 4}, bad_off[] = {0, 3, 2}, off1[] = {1, 2}, ok_off[] = {0, 2};
    CHECK(vdna_centred_nuclear_norms(4, 2, pts, 1, ok_off, bad_idx, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "index[1] = 4") != NULL);
    CHECK(vdna_centred_nuclear_norms(4, 2, pts, 2, bad_off, idx, out) == VDNA_ERR_ARG);
    CHECK(vdna_centred_nuclear_norms(4, 2, pts, 1, off1, idx, out) == VDNA_ERR_ARG);
    double nan_pts[] = {1, 2, NAN, 4};
    CHECK(vdna_centred_nuclear_norms(2, 2, nan_pts, 1, ok_off, idx, out) == VDNA_ERR_ARG);
    CHECK(strstr(vdna_last_error(), "point 1") != NULL);
    CHECK(vdna_centred_nuclear_norms(4, 2, pts, 0, off, idx, NULL) == VDNA_OK); /* no subsets */
    free(a);
    free(b);
    free(im);
}

int main(void) {
    test_emd_hand_values();
    test_emd_errors();
    test_emd_many();
    test_emd_many_thread_independence();
    test_nfd();
    test_fd();
    test_fd_ill_conditioned();
    test_centred_nuclear_norms();
    if (failures) {
        fprintf(stderr, "test_distance: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_distance: all passed\n");
    return 0;
}

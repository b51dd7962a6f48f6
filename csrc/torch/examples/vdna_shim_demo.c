/* vdna_shim_demo.c: use the vdna LibTorch shim from plain C, with no Python at run time.
 *
 * Usage: vdna_shim_demo LIBVDNA_SHIM.so MODEL.pt [N_BATCHES [BATCH [SIZE [BINS]]]]
 *
 * dlopens the shim, gets its function table, opens a TorchScript extractor on the CPU, runs
 * generated images, and accumulates histograms of the first output layer (channels layout) on the
 * device. The activation ranges are the per-channel min/max of the first batch, read through the
 * host view of the activations. Output (parsed by tests/test_shim.py):
 *   layer NAME neurons C bins B images N
 *   range c MIN MAX             (one line per neuron, %.17g)
 *   counts c K0 K1 ... K(B-1)   (one line per neuron)
 *
 * Image n of the run, pixel (ch, y, x): (n*17 + ch*31 + y*7 + x*13) % 256, as uint8.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vdna_shim.h"

static const vdna_shim_api *api;

static int check(int status, const char *what) {
    if (status != VDNA_SHIM_OK) fprintf(stderr, "vdna_shim_demo: %s failed (%d): %s\n", what, status, api->last_error());
    return status != VDNA_SHIM_OK;
}

static void make_batch(uint8_t *px, int64_t first, int64_t n, int64_t size) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t ch = 0; ch < 3; ++ch)
            for (int64_t y = 0; y < size; ++y)
                for (int64_t x = 0; x < size; ++x)
                    px[((i * 3 + ch) * size + y) * size + x] =
                        (uint8_t)(((first + i) * 17 + ch * 31 + y * 7 + x * 13) % 256);
}

/* Strided element (n, c, s) of a channels view, flattening the spatial dims into s. */
static double view_at(const vdna_shim_view *v, int64_t n, int64_t c, int64_t s) {
    int64_t off = n * v->strides[0] + c * v->strides[1];
    for (int d = v->ndim - 1; d >= 2; --d) {
        off += (s % v->shape[d]) * v->strides[d];
        s /= v->shape[d];
    }
    switch (v->dtype) {
    case VDNA_SHIM_F32: return ((const float *)v->data)[off];
    case VDNA_SHIM_F64: return ((const double *)v->data)[off];
    default: return NAN; /* F16 is not used by a float32 forward */
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s LIBVDNA_SHIM.so MODEL.pt [N_BATCHES [BATCH [SIZE [BINS]]]]\n", argv[0]);
        return 2;
    }
    const int64_t n_batches = argc > 3 ? atoll(argv[3]) : 3;
    const int64_t batch = argc > 4 ? atoll(argv[4]) : 2;
    const int64_t size = argc > 5 ? atoll(argv[5]) : 32;
    const int64_t bins = argc > 6 ? atoll(argv[6]) : 8;
    if (n_batches < 1 || batch < 1 || size < 1 || bins < 1) {
        fprintf(stderr, "vdna_shim_demo: counts and sizes must be >= 1\n");
        return 2;
    }

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "vdna_shim_demo: %s\n", dlerror());
        return 1;
    }
    vdna_shim_get_api_fn get_api = (vdna_shim_get_api_fn)dlsym(lib, "vdna_shim_get_api");
    api = get_api ? get_api(VDNA_SHIM_ABI_VERSION) : NULL;
    if (!api) {
        fprintf(stderr, "vdna_shim_demo: %s does not serve ABI version %d\n", argv[1], VDNA_SHIM_ABI_VERSION);
        return 1;
    }

    int rc = 1;
    vdna_shim_model *model = NULL;
    vdna_shim_accum *acc = NULL;
    double *mins = NULL, *maxs = NULL;
    int64_t *counts = NULL, *nans = NULL;
    uint8_t *px = malloc((size_t)(batch * 3 * size * size));
    if (!px) goto done;
    if (check(api->model_open(argv[2], "torchscript", "cpu", VDNA_SHIM_PRECISION_F32, &model), "model_open")) goto done;

    /* First batch: find the first layer and its ranges through the zero-copy host view. */
    make_batch(px, 0, batch, size);
    if (check(api->model_run(model, px, VDNA_SHIM_U8, VDNA_SHIM_MEM_HOST, batch, 3, size, size), "model_run")) goto done;
    vdna_shim_view v;
    if (check(api->model_output(model, 0, &v), "model_output")) goto done;
    if (v.ndim < 2) {
        fprintf(stderr, "vdna_shim_demo: the first layer is not in channels layout\n");
        goto done;
    }
    const int64_t C = v.shape[1];
    int64_t per_image = 1;
    for (int d = 2; d < v.ndim; ++d) per_image *= v.shape[d];
    mins = malloc(sizeof(double) * (size_t)C);
    maxs = malloc(sizeof(double) * (size_t)C);
    counts = malloc(sizeof(int64_t) * (size_t)(C * bins));
    nans = malloc(sizeof(int64_t) * (size_t)C);
    if (!mins || !maxs || !counts || !nans) goto done;
    for (int64_t c = 0; c < C; ++c) {
        mins[c] = INFINITY;
        maxs[c] = -INFINITY;
        for (int64_t n = 0; n < v.shape[0]; ++n)
            for (int64_t s = 0; s < per_image; ++s) {
                const double a = view_at(&v, n, c, s);
                if (a < mins[c]) mins[c] = a;
                if (a > maxs[c]) maxs[c] = a;
            }
    }

    /* Accumulate every batch (the first one included) on the device. */
    vdna_shim_layer_spec spec = {v.name, VDNA_SHIM_LAYOUT_CHANNELS, C, VDNA_SHIM_STAT_HIST, bins, mins, maxs};
    char layer_name[256];
    snprintf(layer_name, sizeof layer_name, "%s", v.name); /* v.name is valid only until the next run */
    spec.layer = layer_name;
    if (check(api->accum_create(model, &spec, 1, &acc), "accum_create")) goto done;
    for (int64_t b = 0; b < n_batches; ++b) {
        make_batch(px, b * batch, batch, size);
        if (check(api->model_run(model, px, VDNA_SHIM_U8, VDNA_SHIM_MEM_HOST, batch, 3, size, size), "model_run")) goto done;
        if (check(api->accum_update(acc), "accum_update")) goto done;
    }
    int64_t images = 0;
    if (check(api->accum_read_hist(acc, 0, counts, nans, &images), "accum_read_hist")) goto done;

    printf("layer %s neurons %lld bins %lld images %lld\n", layer_name, (long long)C, (long long)bins, (long long)images);
    for (int64_t c = 0; c < C; ++c) printf("range %lld %.17g %.17g\n", (long long)c, mins[c], maxs[c]);
    for (int64_t c = 0; c < C; ++c) {
        printf("counts %lld", (long long)c);
        for (int64_t k = 0; k < bins; ++k) printf(" %lld", (long long)counts[c * bins + k]);
        printf("\n");
    }
    rc = 0;
done:
    api->accum_free(acc);
    api->model_close(model);
    free(px);
    free(mins);
    free(maxs);
    free(counts);
    free(nans);
    /* No dlclose: libtorch registers static state that must outlive main(). */
    return rc;
}

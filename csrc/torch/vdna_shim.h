/* vdna_shim.h: the C ABI of the vdna LibTorch shim.
 *
 * The shim runs a serialized feature extractor with LibTorch on a device (cpu, cuda:N) and either
 * hands each layer's activations to the caller (host memory, no copy on the CPU device) or reduces
 * them on the device with the C core's rules (histogram counts, Gaussian moments, layer covariance,
 * activation ranges; docs/design.md "Normative semantics") and reads the states back once.
 *
 * The library exports ONE symbol, vdna_shim_get_api(), returning a table of function pointers.
 * Nothing crossing this ABI is a C++ type. Every function returns VDNA_SHIM_OK (0) or an error code;
 * vdna_shim_api.last_error() gives the message of the last failure in the calling thread.
 *
 * Threads: a model and the accumulators attached to it must be used from one thread at a time
 * (a caller sharing them holds one lock across model_run and the accum_update / model_output calls
 * that read that batch). Distinct models are independent, except that the TF32 flags are
 * process-wide in LibTorch: model_run sets them for its forward and restores them after.
 */
#ifndef VDNA_SHIM_H
#define VDNA_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of vdna_shim_api. */
#define VDNA_SHIM_ABI_VERSION 1

typedef enum {
    VDNA_SHIM_OK = 0,
    VDNA_SHIM_ERR_ARG = 1,    /* an invalid argument (NULL, shape, dtype, index out of range) */
    VDNA_SHIM_ERR_LOAD = 2,   /* the model file could not be read or is not a valid model */
    VDNA_SHIM_ERR_RUN = 3,    /* the forward pass failed (message from LibTorch) */
    VDNA_SHIM_ERR_DEVICE = 4, /* the device string is invalid or the device is unavailable */
    VDNA_SHIM_ERR_STATE = 5,  /* a call in the wrong order (no batch run yet, ...) */
    VDNA_SHIM_ERR_NOMEM = 6,        /* host memory exhausted (std::bad_alloc) */
    VDNA_SHIM_ERR_INTERNAL = 7,
    VDNA_SHIM_ERR_DEVICE_NOMEM = 8  /* the device's allocator is out of memory (c10::OutOfMemoryError) */
} vdna_shim_status;

/* Element types of input batches and output views. */
typedef enum {
    VDNA_SHIM_U8 = 0,
    VDNA_SHIM_F16 = 1,
    VDNA_SHIM_F32 = 2,
    VDNA_SHIM_F64 = 3
} vdna_shim_dtype;

/* Forward precision: full float32 (default), or float32 parameters and input with the forward under
 * LibTorch's autocast to fp16 / bf16 (as torch.autocast in eager PyTorch).
 * VDNA_SHIM_PRECISION_ALLOW_TF32 may be OR-ed in: cuDNN convolutions and cuBLAS matmuls may then use
 * TF32 on GPUs that have it; without it they run in IEEE float32 (the convolution flag is also frozen
 * into a traced model, so trace with the same choice). The forward always runs with the TorchScript
 * graph optimizer (and so its fusers) off, so the model computes exactly what eager PyTorch does. */
typedef enum { VDNA_SHIM_PRECISION_F32 = 0, VDNA_SHIM_PRECISION_F16 = 1, VDNA_SHIM_PRECISION_BF16 = 2 } vdna_shim_precision;
#define VDNA_SHIM_PRECISION_ALLOW_TF32 0x100

/* Where a batch given to run() lives. */
typedef enum { VDNA_SHIM_MEM_HOST = 0, VDNA_SHIM_MEM_DEVICE = 1 } vdna_shim_memory;

/* Layouts of a layer (docs/design.md, "Normative semantics"): CHANNELS (N, C, *spatial), TOKENS (N, T, C). */
typedef enum { VDNA_SHIM_LAYOUT_CHANNELS = 0, VDNA_SHIM_LAYOUT_TOKENS = 1 } vdna_shim_layout;

/* Statistics a device accumulator keeps for a layer (bit flags). */
#define VDNA_SHIM_STAT_HIST 1u
#define VDNA_SHIM_STAT_MOMENTS 2u
#define VDNA_SHIM_STAT_COV 4u
#define VDNA_SHIM_STAT_RANGES 8u

#define VDNA_SHIM_MAX_RANK 8

/* A read-only view of one layer's activations in host memory. Strides are in ELEMENTS. */
typedef struct {
    const char *name; /* layer name, owned by the model */
    const void *data;
    vdna_shim_dtype dtype; /* F16, F32 or F64 */
    int ndim;
    int64_t shape[VDNA_SHIM_MAX_RANK];
    int64_t strides[VDNA_SHIM_MAX_RANK];
} vdna_shim_view;

/* What to accumulate for one layer. mins/maxs (length n_neurons, the calibrated ranges) and bins
 * are read only when stats has VDNA_SHIM_STAT_HIST; they are copied. */
typedef struct {
    const char *layer;
    vdna_shim_layout layout;
    int64_t n_neurons;
    unsigned stats;
    int64_t bins;
    const double *mins;
    const double *maxs;
} vdna_shim_layer_spec;

typedef struct vdna_shim_model vdna_shim_model; /* opaque */
typedef struct vdna_shim_accum vdna_shim_accum; /* opaque */

typedef struct {
    uint32_t abi_version; /* VDNA_SHIM_ABI_VERSION */
    uint32_t struct_size; /* sizeof(vdna_shim_api) */

    /* Message of the last failure in this thread ("" when none); valid until the next failing call. */
    const char *(*last_error)(void);
    /* Versions of the LibTorch the shim was built against, e.g. "2.13.0". Static string. */
    const char *(*torch_version)(void);

    /* Load a serialized extractor (TorchScript file whose forward(x) maps float32 (N,3,H,W) in
     * 0..255 to a Dict[str, Tensor]) onto device ("cpu", "cuda", "cuda:1").
     * format: "torchscript" (the only one for now; reserved for AOTInductor packages). */
    int (*model_open)(const char *path, const char *format, const char *device, vdna_shim_precision precision,
                      vdna_shim_model **out);
    /* Release a model (NULL is a no-op). Accumulators created from it must be freed first. */
    void (*model_close)(vdna_shim_model *model);

    /* Run one batch of shape (n, 3, h, w), contiguous NCHW, dtype U8 or F32 (pixel values 0..255).
     * memory HOST: any host pointer (pinned or not; it is not kept after the call returns on the CPU
     * device; on a GPU it is copied to a pinned staging buffer first). memory DEVICE: a pointer on the
     * model's device. No host synchronisation on a GPU. Replaces the previous batch's outputs. */
    int (*model_run)(vdna_shim_model *model, const void *data, vdna_shim_dtype dtype, vdna_shim_memory memory,
                     int64_t n, int64_t c, int64_t h, int64_t w);
    /* Number of layers the last batch produced, in the model's output order. */
    int (*model_num_outputs)(const vdna_shim_model *model, int64_t *out);
    /* Host view of output `index` of the last batch. On the CPU device it points into the output
     * tensor itself (no copy); on a GPU the output is copied to host first (synchronises). Valid
     * until the next model_run or model_close. bf16 outputs are converted to F32. */
    int (*model_output)(vdna_shim_model *model, int64_t index, vdna_shim_view *out);

    /* Device accumulators for the layers in specs (copied). */
    int (*accum_create)(vdna_shim_model *model, const vdna_shim_layer_spec *specs, int64_t n_specs,
                        vdna_shim_accum **out);
    void (*accum_free)(vdna_shim_accum *acc);
    /* Accumulate the model's last batch into acc, on the device, without host synchronisation. */
    int (*accum_update)(vdna_shim_accum *acc);
    /* Read back the state of layer spec `index`. Buffers are caller-owned. Synchronises. */
    /* counts: n_neurons*bins int64 (row-major), nan_counts: n_neurons int64. */
    int (*accum_read_hist)(vdna_shim_accum *acc, int64_t index, int64_t *counts, int64_t *nan_counts,
                           int64_t *num_images);
    /* mean: n_neurons, m2: n_neurons (sum of squared deviations of per-image means). */
    int (*accum_read_moments)(vdna_shim_accum *acc, int64_t index, int64_t *count, double *mean, double *m2);
    /* mean: n_neurons, m2: n_neurons*n_neurons row-major. */
    int (*accum_read_cov)(vdna_shim_accum *acc, int64_t index, int64_t *count, double *mean, double *m2);
    /* mins/maxs: n_neurons (NaN ignored; +inf/-inf when a neuron saw no value), nan_counts: n_neurons. */
    int (*accum_read_ranges)(vdna_shim_accum *acc, int64_t index, int64_t *num_images, double *mins, double *maxs,
                             int64_t *nan_counts);
    /* NaN activation values seen per neuron (n_neurons int64), for every kind of statistic (the
     * moments' and covariance's NaN report). Added in ABI 1 after the first release: check
     * struct_size before calling. */
    int (*accum_read_nan_counts)(vdna_shim_accum *acc, int64_t index, int64_t *nan_counts);
} vdna_shim_api;

/* The library's only exported symbol. Returns NULL when the library cannot serve abi_version. */
const vdna_shim_api *vdna_shim_get_api(uint32_t abi_version);
typedef const vdna_shim_api *(*vdna_shim_get_api_fn)(uint32_t abi_version);

#ifdef __cplusplus
}
#endif
#endif /* VDNA_SHIM_H */

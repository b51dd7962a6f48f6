// vdna_shim.cpp: LibTorch implementation of the C ABI in vdna_shim.h.
//
// Everything here is device-generic LibTorch: the same code runs on the CPU device (where the tests
// run it) and on CUDA. The accumulation rules mirror vdna/backends/device_accum.py and the C core
// (docs/design.md "Normative semantics"); a change to one must be made to all three.

#include "vdna_shim.h"

#include <torch/script.h>
#include <torch/version.h>
#include <torch/csrc/jit/codegen/fuser/interface.h>
#include <torch/csrc/jit/passes/autocast.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#define VDNA_SHIM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

thread_local std::string g_last_error;

// An error with a status code; anything else thrown maps to the caller's default code.
struct ShimError : std::runtime_error {
    int code;
    ShimError(int c, const std::string &msg) : std::runtime_error(msg), code(c) {}
};

[[noreturn]] void fail(int code, const std::string &msg) { throw ShimError(code, msg); }

// Run f, turning every C++ exception into a status code plus a message; nothing escapes the ABI.
template <class F>
int guarded(int default_code, const char *where, F &&f) {
    try {
        f();
        return VDNA_SHIM_OK;
    } catch (const ShimError &e) {
        g_last_error = std::string(where) + ": " + e.what();
        return e.code;
    } catch (const c10::OutOfMemoryError &e) {  // before c10::Error, its base
        g_last_error = std::string(where) + ": " + e.what_without_backtrace();
        return VDNA_SHIM_ERR_DEVICE_NOMEM;
    } catch (const c10::Error &e) {
        g_last_error = std::string(where) + ": " + e.what_without_backtrace();
        return default_code;
    } catch (const std::bad_alloc &) {
        g_last_error = std::string(where) + ": out of memory";
        return VDNA_SHIM_ERR_NOMEM;
    } catch (const std::exception &e) {
        g_last_error = std::string(where) + ": " + e.what();
        return default_code;
    } catch (...) {
        g_last_error = std::string(where) + ": unknown C++ exception";
        return VDNA_SHIM_ERR_INTERNAL;
    }
}

std::string shape_str(at::IntArrayRef s) {
    std::string r = "(";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + (s.size() == 1 ? ",)" : ")");
}

at::ScalarType input_scalar_type(vdna_shim_dtype d) {
    switch (d) {
    case VDNA_SHIM_U8: return at::kByte;
    case VDNA_SHIM_F32: return at::kFloat;
    default: fail(VDNA_SHIM_ERR_ARG, "input dtype must be uint8 or float32 (got code " + std::to_string(int(d)) + ")");
    }
}

}  // namespace

struct vdna_shim_model {
    torch::jit::Module module;
    c10::Device device{c10::kCPU};
    at::ScalarType amp = at::kFloat;  // kFloat: no autocast; kHalf / kBFloat16: autocast to that dtype
    bool allow_tf32 = false;
    std::vector<std::string> names;
    std::vector<at::Tensor> outputs;       // on the device
    std::vector<at::Tensor> host_outputs;  // host views handed out, kept alive until the next run
    int64_t batch_id = 0;                  // incremented by every successful run
    int64_t batch_n = 0;
    // GPU only: two pinned staging buffers, each with the event of the copy that last read it.
    at::Tensor staging[2];
    std::unique_ptr<c10::Event> staging_done[2];
    int next_staging = 0;
};

namespace {

c10::Stream current_stream(const c10::Device &d) {
    return c10::impl::getDeviceGuardImpl(d.type())->getStream(d);
}

// Copy a host batch to the device through a pinned staging buffer, asynchronously on the current
// stream. The only wait is for the copy that used the same buffer two batches ago.
at::Tensor stage_to_device(vdna_shim_model &m, const void *data, at::ScalarType st, at::IntArrayRef shape) {
    int64_t numel = 1;
    for (auto s : shape) numel *= s;
    const int64_t nbytes = numel * int64_t(c10::elementSize(st));
    const int k = m.next_staging;
    m.next_staging ^= 1;
    if (m.staging_done[k]) m.staging_done[k]->synchronize();
    if (!m.staging[k].defined() || m.staging[k].numel() < nbytes)
        m.staging[k] = at::empty({nbytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    std::memcpy(m.staging[k].data_ptr(), data, size_t(nbytes));
    at::Tensor host = m.staging[k].narrow(0, 0, nbytes).view(st).view(shape);
    at::Tensor dev = host.to(m.device, /*non_blocking=*/true);
    if (!m.staging_done[k]) m.staging_done[k] = std::make_unique<c10::Event>(m.device.type());
    m.staging_done[k]->record(current_stream(m.device));
    return dev;
}

// The TF32 policy for one forward: LibTorch's settings are process-wide, so they are set here and
// the previous values restored on exit (eager PyTorch does the same in vdna/backends/base.py).
// LibTorch >= 2.9 has per-backend fp32 precisions and rejects reads of the legacy allow_tf32 flags
// once the new ones are set (or the reverse): the new API is used where it exists.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
struct Tf32Guard {
    at::Float32Precision old_conv, old_mm;
    explicit Tf32Guard(bool allow)
        : old_conv(at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV)),
          old_mm(at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL)) {
        const auto p = allow ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
        at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, p);
        at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, p);
    }
    ~Tf32Guard() {
        at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, old_conv);
        at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, old_mm);
    }
#else
struct Tf32Guard {
    bool old_cudnn, old_cublas;
    explicit Tf32Guard(bool allow)
        : old_cudnn(at::globalContext().allowTF32CuDNN()), old_cublas(at::globalContext().allowTF32CuBLAS()) {
        at::globalContext().setAllowTF32CuDNN(allow);
        at::globalContext().setAllowTF32CuBLAS(allow);
    }
    ~Tf32Guard() {
        at::globalContext().setAllowTF32CuDNN(old_cudnn);
        at::globalContext().setAllowTF32CuBLAS(old_cublas);
    }
#endif
    Tf32Guard(const Tf32Guard &) = delete;
    Tf32Guard &operator=(const Tf32Guard &) = delete;
};

// The TorchScript fusers off for one forward (process-wide flags, restored on exit). They act when
// the graph executor optimises a graph, which happens inside the shim's forward.
struct FuserOffGuard {
    bool old_te, old_cpu, old_gpu;
    FuserOffGuard()
        : old_te(torch::jit::tensorExprFuserEnabled()), old_cpu(torch::jit::canFuseOnCPU()),
          old_gpu(torch::jit::canFuseOnGPU()) {
        torch::jit::setTensorExprFuserEnabled(false);
        torch::jit::overrideCanFuseOnCPU(false);
        torch::jit::overrideCanFuseOnGPU(false);
    }
    ~FuserOffGuard() {
        torch::jit::setTensorExprFuserEnabled(old_te);
        torch::jit::overrideCanFuseOnCPU(old_cpu);
        torch::jit::overrideCanFuseOnGPU(old_gpu);
    }
    FuserOffGuard(const FuserOffGuard &) = delete;
    FuserOffGuard &operator=(const FuserOffGuard &) = delete;
};

// LibTorch's autocast for one forward, as torch.autocast(device_type, dtype) does it in Python
// (thread-local state; the cast cache is cleared when the outermost block exits). TorchScript's
// interpreter does not apply autocast at dispatch: the graph executor's autocast pass inserts the
// casts when it optimises the graph under this state, so amp needs the optimiser on (fusers off).
struct AutocastGuard {
    at::DeviceType type;
    bool active, old_enabled = false, old_jit = true;
    at::ScalarType old_dtype = at::kFloat;
    AutocastGuard(at::DeviceType t, at::ScalarType dtype) : type(t), active(dtype != at::kFloat) {
        if (!active) return;
        old_jit = torch::jit::setAutocastMode(true);  // the graph executor's autocast pass (on by default)
        old_enabled = at::autocast::is_autocast_enabled(type);
        old_dtype = at::autocast::get_autocast_dtype(type);
        at::autocast::set_autocast_enabled(type, true);
        at::autocast::set_autocast_dtype(type, dtype);
        at::autocast::increment_nesting();
    }
    ~AutocastGuard() {
        if (!active) return;
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(type, old_enabled);
        at::autocast::set_autocast_dtype(type, old_dtype);
        torch::jit::setAutocastMode(old_jit);
    }
    AutocastGuard(const AutocastGuard &) = delete;
    AutocastGuard &operator=(const AutocastGuard &) = delete;
};

// ------------------------------------------------------------------ device accumulation
// One layer's device state. All float state is float64 on the model's device.
struct LayerAcc {
    std::string layer;
    vdna_shim_layout layout;
    int64_t n_neurons;
    unsigned stats;
    int64_t bins = 0;
    int64_t num_images = 0;
    at::Tensor centre, half, offsets;  // histogram normalisation (C,), flat-index row offsets (C,)
    at::Tensor counts;                 // (C*(B+1),) int64; column B of each row counts NaN
    at::Tensor m_mean, m_m2;           // moments (C,)
    at::Tensor c_shift, c_sum, c_sq;   // covariance: shift (C,), sum (C,), cross products (C,C)
    at::Tensor r_min, r_max;           // ranges (C,)
    at::Tensor nan_count;              // NaN values per neuron (C,) int64 (moments, covariance, ranges)
};

// Scratch buffers shared by all layers of one accumulator, grown to the largest layer and reused:
// fresh full-size temporaries per layer and batch cost more (page faults on the CPU) than the
// arithmetic. Layers run one after another (in stream order on a GPU), so one set suffices.
struct Workspace {
    at::Tensor x, z, idx, nan, m, one;

    // A tensor of `shape` over `buf` (contents undefined), growing it when too small or of another dtype.
    static at::Tensor take(at::Tensor &buf, const at::TensorOptions &opts, at::IntArrayRef shape) {
        int64_t numel = 1;
        for (auto s : shape) numel *= s;
        if (!buf.defined() || buf.numel() < numel || buf.scalar_type() != opts.dtype().toScalarType())
            buf = at::empty({numel}, opts);
        return buf.narrow(0, 0, numel).view(shape);
    }
};

}  // namespace

struct vdna_shim_accum {
    vdna_shim_model *model;
    std::vector<LayerAcc> layers;
    Workspace ws;
    int64_t last_batch_id = 0;
};

namespace {

// The layer's activations as a 3-D view in their own dtype: channels (N, C, S); tokens (N, T, C).
struct Canon {
    at::Tensor x;
    std::vector<int64_t> bshape;  // shape broadcasting a (C,) vector over x
    int64_t sample_dim;           // the dim holding a neuron's samples within one image
};

Canon canonical(const LayerAcc &L, const at::Tensor &t_in) {
    const int64_t C = L.n_neurons;
    const at::Tensor &t = t_in;
    Canon c;
    if (L.layout == VDNA_SHIM_LAYOUT_CHANNELS) {
        if (t.dim() < 2 || t.size(1) != C)
            fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': expected channels activations (N, " + std::to_string(C) +
                                        ", ...), got " + shape_str(t.sizes()));
        c.bshape = {1, C, 1};
        c.sample_dim = 2;
    } else {
        if (t.dim() != 3 || t.size(2) != C)
            fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': expected tokens activations (N, T, " + std::to_string(C) +
                                        "), got " + shape_str(t.sizes()));
        c.bshape = {1, 1, C};
        c.sample_dim = 1;
    }
    const auto st = t.scalar_type();
    const at::Tensor f = (st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || st == at::kDouble)
                             ? t : t.to(at::kFloat);
    c.x = L.layout == VDNA_SHIM_LAYOUT_CHANNELS ? f.reshape({t.size(0), C, -1}) : f;  // a view when contiguous
    return c;
}

// Everything is read from the activations in their own dtype with exact conversions to float64; no
// float64 copy of the layer except for the per-image means (vdna/backends/device_accum.py has the
// same steps with PyTorch ops).
void accumulate_layer(LayerAcc &L, const at::Tensor &t, Workspace &ws) {
    const Canon c = canonical(L, t);
    const at::Tensor &x = c.x;
    const int64_t n = x.size(0);
    const std::vector<int64_t> dims = {0, c.sample_dim};
    const auto f64 = x.options().dtype(at::kDouble);
    if (L.stats & (VDNA_SHIM_STAT_MOMENTS | VDNA_SHIM_STAT_COV | VDNA_SHIM_STAT_RANGES)) {
        at::Tensor nan = Workspace::take(ws.nan, x.options().dtype(at::kBool), x.sizes());
        at::ne_out(nan, x, x);                // isnan
        L.nan_count.add_(nan.sum(dims));      // the core's per-neuron NaN report
    }
    if (L.stats & VDNA_SHIM_STAT_HIST) {
        // The core's t = (((x - centre) / half + 1) * B) * 0.5 in float64: fl(fl(s*B)*0.5) equals
        // fl(s*(B/2)) (exact scalings); clamping t to [0, B-1] and truncating equals the core's clamp
        // to [0, B], floor, cap at B-1; NaN survives the clamp and goes to column B.
        const double B = double(L.bins);
        at::Tensor z = Workspace::take(ws.z, f64, x.sizes());
        at::sub_out(z, x, L.centre.view(c.bshape));
        z.div_(L.half.view(c.bshape));  // a true division, never a reciprocal
        z.add_(1.0).mul_(B * 0.5).clamp_(0.0, B - 1.0);
        z.nan_to_num_(B);
        at::Tensor idx = Workspace::take(ws.idx, L.offsets.options(), x.sizes()).copy_(z);  // truncation, z >= 0
        idx.add_(L.offsets.view(c.bshape));
        idx = idx.view({-1});
        if (!ws.one.defined()) ws.one = at::ones({1}, L.counts.options());
        L.counts.index_add_(0, idx, ws.one.expand({idx.size(0)}));
    }
    if (L.stats & (VDNA_SHIM_STAT_MOMENTS | VDNA_SHIM_STAT_COV)) {
        // torch reductions with a dtype convert the whole input anyway: convert into a reused buffer.
        const at::Tensor img = Workspace::take(ws.x, f64, x.sizes()).copy_(x).mean(c.sample_dim);  // (N, C)
        if (L.stats & VDNA_SHIM_STAT_MOMENTS) {
            const at::Tensor bm = img.mean(0);
            const at::Tensor bm2 = (img - bm).square().sum(0);
            if (L.num_images == 0) {
                L.m_mean = bm;
                L.m_m2 = bm2;
            } else {
                // Chan et al. merge of (na, mean, m2) with the batch (nb, bm, bm2).
                const double na = double(L.num_images), nb = double(n), nt = na + nb;
                const at::Tensor delta = bm - L.m_mean;
                L.m_mean = L.m_mean + delta * (nb / nt);
                L.m_m2 = L.m_m2 + bm2 + delta.square() * (na * nb / nt);
            }
        }
        if (L.stats & VDNA_SHIM_STAT_COV) {
            // Shifted accumulation: subtracting the first batch's mean keeps X^T X well conditioned
            // when the mean is large compared with the spread.
            if (L.num_images == 0) {
                L.c_shift = img.mean(0);
                L.c_sum = at::zeros_like(L.c_shift);
                L.c_sq = at::zeros({L.n_neurons, L.n_neurons}, img.options());
            }
            const at::Tensor d = img - L.c_shift;
            L.c_sum.add_(d.sum(0));
            L.c_sq.addmm_(d.t(), d);
        }
    }
    if (L.stats & VDNA_SHIM_STAT_RANGES) {
        // min/max are exact in the activations' dtype; NaN is skipped by mapping it to +-inf.
        const double inf = std::numeric_limits<double>::infinity();
        at::Tensor m = Workspace::take(ws.m, x.options(), x.sizes());
        const at::Tensor lo = at::nan_to_num_out(m, x, inf, inf, -inf).amin(dims).to(at::kDouble);
        L.r_min = at::minimum(L.r_min, lo);
        const at::Tensor hi = at::nan_to_num_out(m, x, -inf, inf, -inf).amax(dims).to(at::kDouble);
        L.r_max = at::maximum(L.r_max, hi);
    }
    L.num_images += n;
}

LayerAcc &layer_at(vdna_shim_accum *acc, int64_t index, unsigned stat, const char *what) {
    if (!acc) fail(VDNA_SHIM_ERR_ARG, "accumulator is NULL");
    if (index < 0 || index >= int64_t(acc->layers.size()))
        fail(VDNA_SHIM_ERR_ARG, "layer index " + std::to_string(index) + " out of range");
    LayerAcc &L = acc->layers[size_t(index)];
    if (!(L.stats & stat)) fail(VDNA_SHIM_ERR_STATE, "layer '" + L.layer + "' does not accumulate " + what);
    return L;
}

void copy_out(const at::Tensor &t, void *dst) {
    at::Tensor h = t.contiguous().to(at::kCPU);
    std::memcpy(dst, h.data_ptr(), size_t(h.numel()) * h.element_size());
}

// ------------------------------------------------------------------ ABI functions
const char *api_last_error() { return g_last_error.c_str(); }
const char *api_torch_version() { return TORCH_VERSION; }

int api_model_open(const char *path, const char *format, const char *device, vdna_shim_precision precision,
                   vdna_shim_model **out) {
    return guarded(VDNA_SHIM_ERR_LOAD, "model_open", [&] {
        if (!out) fail(VDNA_SHIM_ERR_ARG, "out is NULL");
        *out = nullptr;
        if (!path) fail(VDNA_SHIM_ERR_ARG, "path is NULL");
        const std::string fmt = format ? format : "torchscript";
        if (fmt != "torchscript")
            fail(VDNA_SHIM_ERR_ARG, "unsupported model format '" + fmt + "' (supported: torchscript)");
        auto m = std::make_unique<vdna_shim_model>();
        try {
            m->device = c10::Device(std::string(device ? device : "cpu"));
        } catch (const std::exception &) {
            fail(VDNA_SHIM_ERR_DEVICE, std::string("invalid device '") + (device ? device : "") + "'");
        }
        if (!m->device.is_cpu()) {
            const auto *impl = c10::impl::hasDeviceGuardImpl(m->device.type())
                                   ? c10::impl::getDeviceGuardImpl(m->device.type())
                                   : nullptr;
            const int count = impl ? int(impl->deviceCount()) : 0;
            const int index = m->device.has_index() ? m->device.index() : 0;
            if (index >= count)
                fail(VDNA_SHIM_ERR_DEVICE, "device '" + m->device.str() + "' is not available (" +
                                               std::to_string(count) + " device(s) of that type)");
            if (!m->device.has_index()) m->device = c10::Device(m->device.type(), 0);
        }
        const int prec = int(precision);
        m->allow_tf32 = (prec & VDNA_SHIM_PRECISION_ALLOW_TF32) != 0;
        switch (prec & ~VDNA_SHIM_PRECISION_ALLOW_TF32) {
        case VDNA_SHIM_PRECISION_F32: m->amp = at::kFloat; break;
        case VDNA_SHIM_PRECISION_F16: m->amp = at::kHalf; break;
        case VDNA_SHIM_PRECISION_BF16: m->amp = at::kBFloat16; break;
        default: fail(VDNA_SHIM_ERR_ARG, "invalid precision " + std::to_string(prec));
        }
        {
            std::FILE *f = std::fopen(path, "rb");
            if (!f) fail(VDNA_SHIM_ERR_LOAD, std::string("cannot open model file '") + path + "': " + std::strerror(errno));
            std::fclose(f);
        }
        try {
            m->module = torch::jit::load(path, m->device);
        } catch (const c10::Error &e) {
            fail(VDNA_SHIM_ERR_LOAD, std::string("'") + path + "' is not a loadable TorchScript model: " +
                                         e.what_without_backtrace());
        }
        m->module.eval();  // parameters stay float32: mixed precision is autocast in model_run
        *out = m.release();
    });
}

void api_model_close(vdna_shim_model *m) { delete m; }

int api_model_run(vdna_shim_model *m, const void *data, vdna_shim_dtype dtype, vdna_shim_memory memory, int64_t n,
                  int64_t c, int64_t h, int64_t w) {
    return guarded(VDNA_SHIM_ERR_RUN, "model_run", [&] {
        if (!m) fail(VDNA_SHIM_ERR_ARG, "model is NULL");
        if (!data) fail(VDNA_SHIM_ERR_ARG, "data is NULL");
        if (n < 1 || c != 3 || h < 1 || w < 1)
            fail(VDNA_SHIM_ERR_ARG, "expected a batch of shape (N>=1, 3, H>=1, W>=1), got (" + std::to_string(n) +
                                        ", " + std::to_string(c) + ", " + std::to_string(h) + ", " +
                                        std::to_string(w) + ")");
        const at::ScalarType st = input_scalar_type(dtype);
        const std::vector<int64_t> shape = {n, c, h, w};
        c10::InferenceMode guard;
        at::Tensor x;
        if (memory == VDNA_SHIM_MEM_DEVICE || m->device.is_cpu()) {
            // No copy: the caller's memory is read in place (the CPU forward is synchronous).
            x = at::from_blob(const_cast<void *>(data), shape, at::TensorOptions().dtype(st).device(m->device));
        } else if (memory == VDNA_SHIM_MEM_HOST) {
            x = stage_to_device(*m, data, st, shape);
        } else {
            fail(VDNA_SHIM_ERR_ARG, "invalid memory kind " + std::to_string(int(memory)));
        }
        x = x.to(at::kFloat);
        m->outputs.clear();
        m->names.clear();
        m->host_outputs.clear();
        m->batch_n = 0;
        c10::IValue out;
        {
            // float32: no graph optimisation at all (thread-local), so the graph runs op by op as eager
            // PyTorch runs the module. amp: the optimiser must run for autocast (see AutocastGuard), with
            // the fusers (on by default on GPUs) turned off around it. Both restore their flags on exit.
            const bool amp_on = m->amp != at::kFloat;
            torch::jit::GraphOptimizerEnabledGuard optimise(amp_on);
            std::unique_ptr<FuserOffGuard> no_fuser;
            if (amp_on) no_fuser = std::make_unique<FuserOffGuard>();
            Tf32Guard tf32(m->allow_tf32);
            AutocastGuard amp(m->device.type(), m->amp);
            out = m->module.forward({x});
        }
        if (!out.isGenericDict()) fail(VDNA_SHIM_ERR_RUN, "the model must return Dict[str, Tensor], got " + out.tagKind());
        for (const auto &kv : out.toGenericDict()) {
            if (!kv.key().isString() || !kv.value().isTensor())
                fail(VDNA_SHIM_ERR_RUN, "the model must return Dict[str, Tensor]");
            m->names.push_back(kv.key().toStringRef());
            m->outputs.push_back(kv.value().toTensor());
        }
        m->host_outputs.resize(m->outputs.size());
        m->batch_n = n;
        m->batch_id += 1;
    });
}

int api_model_num_outputs(const vdna_shim_model *m, int64_t *out) {
    return guarded(VDNA_SHIM_ERR_ARG, "model_num_outputs", [&] {
        if (!m || !out) fail(VDNA_SHIM_ERR_ARG, "NULL argument");
        *out = int64_t(m->outputs.size());
    });
}

int api_model_output(vdna_shim_model *m, int64_t index, vdna_shim_view *out) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "model_output", [&] {
        if (!m || !out) fail(VDNA_SHIM_ERR_ARG, "NULL argument");
        if (m->batch_id == 0 || m->outputs.empty()) fail(VDNA_SHIM_ERR_STATE, "no batch has been run");
        if (index < 0 || index >= int64_t(m->outputs.size()))
            fail(VDNA_SHIM_ERR_ARG, "output index " + std::to_string(index) + " out of range");
        at::Tensor &h = m->host_outputs[size_t(index)];
        if (!h.defined()) {
            at::Tensor t = m->outputs[size_t(index)];
            if (t.dim() > VDNA_SHIM_MAX_RANK)
                fail(VDNA_SHIM_ERR_ARG, "layer '" + m->names[size_t(index)] + "' has rank " + std::to_string(t.dim()));
            const auto s = t.scalar_type();
            if (s != at::kHalf && s != at::kFloat && s != at::kDouble) t = t.to(at::kFloat);
            h = t.to(at::kCPU);  // a no-op on the CPU device: the view aliases the output
        }
        out->name = m->names[size_t(index)].c_str();
        out->data = h.data_ptr();
        out->dtype = h.scalar_type() == at::kHalf ? VDNA_SHIM_F16 : h.scalar_type() == at::kFloat ? VDNA_SHIM_F32 : VDNA_SHIM_F64;
        out->ndim = int(h.dim());
        for (int i = 0; i < out->ndim; ++i) {
            out->shape[i] = h.size(i);
            out->strides[i] = h.stride(i);
        }
    });
}

int api_accum_create(vdna_shim_model *m, const vdna_shim_layer_spec *specs, int64_t n_specs, vdna_shim_accum **out) {
    return guarded(VDNA_SHIM_ERR_ARG, "accum_create", [&] {
        if (!m || !out || (!specs && n_specs > 0)) fail(VDNA_SHIM_ERR_ARG, "NULL argument");
        *out = nullptr;
        auto acc = std::make_unique<vdna_shim_accum>();
        acc->model = m;
        acc->last_batch_id = m->batch_id;
        const auto f64 = at::TensorOptions().dtype(at::kDouble).device(m->device);
        const auto i64 = at::TensorOptions().dtype(at::kLong).device(m->device);
        const double inf = std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < n_specs; ++i) {
            const vdna_shim_layer_spec &s = specs[i];
            LayerAcc L;
            L.layer = s.layer ? s.layer : "";
            if (L.layer.empty()) fail(VDNA_SHIM_ERR_ARG, "spec " + std::to_string(i) + " has no layer name");
            if (s.layout != VDNA_SHIM_LAYOUT_CHANNELS && s.layout != VDNA_SHIM_LAYOUT_TOKENS)
                fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': invalid layout");
            if (s.n_neurons < 1) fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': n_neurons must be >= 1");
            L.layout = s.layout;
            L.n_neurons = s.n_neurons;
            L.stats = s.stats;
            const int64_t C = s.n_neurons;
            if (s.stats & VDNA_SHIM_STAT_HIST) {
                if (s.bins < 1) fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': bins must be >= 1");
                if (!s.mins || !s.maxs) fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': histogram ranges are NULL");
                for (int64_t j = 0; j < C; ++j) {
                    // The core's rule (hist.c): finite, min <= max, and 1.2*range normalisable in float64
                    // (|values| above ~1.5e308 overflow there and would index outside the counts).
                    const double lo = 1.2 * s.mins[j], hi = 1.2 * s.maxs[j];
                    if (!std::isfinite(s.mins[j]) || !std::isfinite(s.maxs[j]) || s.mins[j] > s.maxs[j] ||
                        !std::isfinite(lo) || !std::isfinite(hi) || !std::isfinite(hi - lo) || !std::isfinite(lo + hi))
                        fail(VDNA_SHIM_ERR_ARG, "layer '" + L.layer + "': invalid activation range at neuron " +
                                                    std::to_string(j) + " (must be finite, min <= max, and "
                                                    "1.2 * range representable in float64)");
                }
                // Normalisation constants computed on the host in float64, exactly as the core does.
                std::vector<double> centre(static_cast<size_t>(C)), half(static_cast<size_t>(C));
                for (int64_t j = 0; j < C; ++j) {
                    const double lo = 1.2 * s.mins[j], hi = 1.2 * s.maxs[j];
                    centre[size_t(j)] = (lo + hi) / 2.0;
                    half[size_t(j)] = (hi - lo) / 2.0 + 1e-8;
                }
                L.bins = s.bins;
                L.centre = at::tensor(centre, at::kDouble).to(m->device);
                L.half = at::tensor(half, at::kDouble).to(m->device);
                // int32 flat indices where every index fits (half the bytes of int64)
                const bool fits32 = C * (s.bins + 1) < (int64_t(1) << 31);
                L.offsets = (at::arange(C, i64) * (s.bins + 1)).to(fits32 ? at::kInt : at::kLong);
                L.counts = at::zeros({C * (s.bins + 1)}, i64);
            }
            if (s.stats & VDNA_SHIM_STAT_RANGES) {
                L.r_min = at::full({C}, inf, f64);
                L.r_max = at::full({C}, -inf, f64);
            }
            L.nan_count = at::zeros({C}, i64);
            acc->layers.push_back(std::move(L));
        }
        *out = acc.release();
    });
}

void api_accum_free(vdna_shim_accum *acc) { delete acc; }

int api_accum_update(vdna_shim_accum *acc) {
    return guarded(VDNA_SHIM_ERR_RUN, "accum_update", [&] {
        if (!acc) fail(VDNA_SHIM_ERR_ARG, "accumulator is NULL");
        vdna_shim_model *m = acc->model;
        if (m->batch_id == 0 || m->outputs.empty()) fail(VDNA_SHIM_ERR_STATE, "no batch has been run");
        if (m->batch_id == acc->last_batch_id)
            fail(VDNA_SHIM_ERR_STATE, "this batch has already been accumulated (or predates the accumulator)");
        c10::InferenceMode guard;
        // Resolve every layer first so that a missing layer leaves the state untouched.
        std::vector<const at::Tensor *> inputs;
        for (const LayerAcc &L : acc->layers) {
            const at::Tensor *t = nullptr;
            for (size_t i = 0; i < m->names.size(); ++i)
                if (m->names[i] == L.layer) t = &m->outputs[i];
            if (!t) fail(VDNA_SHIM_ERR_ARG, "the model has no output layer '" + L.layer + "'");
            inputs.push_back(t);
        }
        for (size_t i = 0; i < acc->layers.size(); ++i) accumulate_layer(acc->layers[i], *inputs[i], acc->ws);
        acc->last_batch_id = m->batch_id;
    });
}

int api_accum_read_hist(vdna_shim_accum *acc, int64_t index, int64_t *counts, int64_t *nan_counts,
                        int64_t *num_images) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "accum_read_hist", [&] {
        LayerAcc &L = layer_at(acc, index, VDNA_SHIM_STAT_HIST, "histograms");
        if (!counts || !nan_counts || !num_images) fail(VDNA_SHIM_ERR_ARG, "NULL output buffer");
        const at::Tensor all = L.counts.view({L.n_neurons, L.bins + 1});
        copy_out(all.narrow(1, 0, L.bins), counts);
        copy_out(all.select(1, L.bins), nan_counts);
        *num_images = L.num_images;
    });
}

int api_accum_read_moments(vdna_shim_accum *acc, int64_t index, int64_t *count, double *mean, double *m2) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "accum_read_moments", [&] {
        LayerAcc &L = layer_at(acc, index, VDNA_SHIM_STAT_MOMENTS, "moments");
        if (!count || !mean || !m2) fail(VDNA_SHIM_ERR_ARG, "NULL output buffer");
        *count = L.num_images;
        if (L.num_images == 0) {
            std::memset(mean, 0, sizeof(double) * size_t(L.n_neurons));
            std::memset(m2, 0, sizeof(double) * size_t(L.n_neurons));
            return;
        }
        copy_out(L.m_mean, mean);
        copy_out(L.m_m2, m2);
    });
}

int api_accum_read_cov(vdna_shim_accum *acc, int64_t index, int64_t *count, double *mean, double *m2) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "accum_read_cov", [&] {
        LayerAcc &L = layer_at(acc, index, VDNA_SHIM_STAT_COV, "covariance");
        if (!count || !mean || !m2) fail(VDNA_SHIM_ERR_ARG, "NULL output buffer");
        *count = L.num_images;
        const size_t C = size_t(L.n_neurons);
        if (L.num_images == 0) {
            std::memset(mean, 0, sizeof(double) * C);
            std::memset(m2, 0, sizeof(double) * C * C);
            return;
        }
        const double n = double(L.num_images);
        c10::InferenceMode guard;
        copy_out(L.c_shift + L.c_sum / n, mean);
        copy_out(L.c_sq - at::outer(L.c_sum, L.c_sum) / n, m2);
    });
}

int api_accum_read_ranges(vdna_shim_accum *acc, int64_t index, int64_t *num_images, double *mins, double *maxs,
                          int64_t *nan_counts) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "accum_read_ranges", [&] {
        LayerAcc &L = layer_at(acc, index, VDNA_SHIM_STAT_RANGES, "ranges");
        if (!num_images || !mins || !maxs || !nan_counts) fail(VDNA_SHIM_ERR_ARG, "NULL output buffer");
        *num_images = L.num_images;
        copy_out(L.r_min, mins);
        copy_out(L.r_max, maxs);
        copy_out(L.nan_count, nan_counts);
    });
}

int api_accum_read_nan_counts(vdna_shim_accum *acc, int64_t index, int64_t *nan_counts) {
    return guarded(VDNA_SHIM_ERR_INTERNAL, "accum_read_nan_counts", [&] {
        if (!acc) fail(VDNA_SHIM_ERR_ARG, "accumulator is NULL");
        if (index < 0 || index >= int64_t(acc->layers.size()))
            fail(VDNA_SHIM_ERR_ARG, "layer index " + std::to_string(index) + " out of range");
        if (!nan_counts) fail(VDNA_SHIM_ERR_ARG, "NULL output buffer");
        LayerAcc &L = acc->layers[size_t(index)];
        if (L.stats & (VDNA_SHIM_STAT_MOMENTS | VDNA_SHIM_STAT_COV | VDNA_SHIM_STAT_RANGES)) {
            copy_out(L.nan_count, nan_counts);
        } else {  // histograms only: their NaN column
            copy_out(L.counts.view({L.n_neurons, L.bins + 1}).select(1, L.bins), nan_counts);
        }
    });
}

const vdna_shim_api g_api = {
    VDNA_SHIM_ABI_VERSION,
    sizeof(vdna_shim_api),
    api_last_error,
    api_torch_version,
    api_model_open,
    api_model_close,
    api_model_run,
    api_model_num_outputs,
    api_model_output,
    api_accum_create,
    api_accum_free,
    api_accum_update,
    api_accum_read_hist,
    api_accum_read_moments,
    api_accum_read_cov,
    api_accum_read_ranges,
    api_accum_read_nan_counts,
};

}  // namespace

VDNA_SHIM_EXPORT const vdna_shim_api *vdna_shim_get_api(uint32_t abi_version) {
    return abi_version == VDNA_SHIM_ABI_VERSION ? &g_api : nullptr;
}

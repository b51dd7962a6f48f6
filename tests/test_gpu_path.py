"""The GPU path's properties, checked on the CPU (no GPU here; see docs/gpu.md).

Each test fails without the fix it guards: a module on the meta device stands in for a module on
another device, patched ``.to`` / ``torch.cuda.current_device`` stand in for CUDA, the traced graph
is inspected for the flags it froze, and NaN reports are compared with the host path.
"""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_backends import BINS, ToyExtractor, all_specs, backends, calibrated_ranges, images, shim_dirs  # noqa: F401
from vdna.accumulator import Accumulator
from vdna.backends import LayerSpec, get_backend
from vdna.backends.base import pin_device, tf32_policy
from vdna.backends.eager import EagerBackend
from vdna.backends.export import export_torchscript, torchscript_path
from vdna.backends.libtorch import LibTorchBackend, ShimError, ShimOutOfMemoryError, load_shim, shim_exception


# ---------------------------------------------------------------- devices


def test_eager_backend_does_not_move_the_callers_module():
    model = ToyExtractor()
    b = EagerBackend(model, "meta")  # any device other than the module's
    assert next(b.extractor.parameters()).device.type == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters())  # the caller's module stayed
    assert b.extractor is not model
    cpu = EagerBackend(model, "cpu")  # already there: no copy
    assert cpu.extractor is model


def test_plain_cuda_is_pinned_to_the_current_index(monkeypatch):
    moved = []

    def fake_to(self, *args, **kwargs):
        moved.append(torch.device(args[0]))
        return self

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.nn.Module, "to", fake_to)
    assert pin_device("cuda") == torch.device("cuda", 1)
    assert pin_device("cuda:0") == torch.device("cuda", 0)
    assert pin_device("cpu") == torch.device("cpu")
    b = EagerBackend(ToyExtractor(), "cuda")
    assert b.device == torch.device("cuda", 1) and moved == [torch.device("cuda", 1)]


def test_export_traces_a_copy_moved_to_the_device(monkeypatch, tmp_path):
    model = ToyExtractor(name="toy_export_copy")
    moved = []
    real_to = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        if isinstance(self, ToyExtractor):
            moved.append((self is model, torch.device(args[0])))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    model.train()
    path = export_torchscript(model, "cpu", tmp_path)
    assert moved == [(False, torch.device("cpu"))]  # a copy was moved to the device, not the caller's module
    assert model.training  # and the caller's module was not switched to eval mode
    assert path.is_file()


def test_torchscript_cache_key_has_device_index_and_flags():
    m = ToyExtractor()
    names = {str(torchscript_path(m, d, "/c", allow_tf32=t).name)
             for d in ("cpu", "cuda:0", "cuda:1") for t in (False, True)}
    assert len(names) == 6
    assert "-cuda1-" in str(torchscript_path(m, "cuda:1", "/c")) and "-ieee-" in str(torchscript_path(m, "cpu", "/c"))
    with torch.backends.cudnn.flags(enabled=True, deterministic=True):
        det = torchscript_path(m, "cpu", "/c")
    assert det != torchscript_path(m, "cpu", "/c")  # deterministic is frozen into the trace: keyed too


# ---------------------------------------------------------------- TF32


def _conv_allow_tf32_flags(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load itself
        graph = torch.jit.load(str(path)).inlined_graph
    flags = []
    for node in graph.nodes():
        if node.kind() == "aten::_convolution":
            last = list(node.inputs())[-1]
            flags.append(last.toIValue())
    return flags


@pytest.mark.parametrize("allow", [False, True])
def test_trace_freezes_the_tf32_choice(tmp_path, allow):
    # PyTorch's own default is allow_tf32=True for cuDNN convolutions; the trace records the flag in
    # every aten::_convolution node, so an export that ignores the option traces TF32 on GPUs.
    assert torch.backends.cudnn.allow_tf32
    path = export_torchscript(ToyExtractor(name=f"toy_tf32_{allow}"), "cpu", tmp_path, allow_tf32=allow)
    flags = _conv_allow_tf32_flags(path)
    assert len(flags) == 2 and all(f is allow for f in flags)
    assert torch.backends.cudnn.allow_tf32  # restored


def _tf32_now():
    """(conv, matmul) TF32 settings as PyTorch reports them (new per-backend API where it exists)."""
    if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return (torch.backends.cudnn.conv.fp32_precision == "tf32", torch.backends.cuda.matmul.fp32_precision == "tf32")
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_eager_forward_runs_under_the_tf32_policy():
    seen = []

    class Probe(ToyExtractor):
        def forward(self, x):
            seen.append(_tf32_now())
            return super().forward(x)

    before = _tf32_now()
    for allow in (False, True):
        EagerBackend(Probe(), "cpu", allow_tf32=allow).forward(images(1, 0))
    assert seen == [(False, False), (True, True)]
    assert _tf32_now() == before
    with tf32_policy(False):
        pass
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default is back, readable with the legacy API too


def test_tf32_policy_keeps_legacy_settings_readable(monkeypatch):
    # A caller who set the legacy flags must read them back unchanged (PyTorch raises on reads of
    # legacy flags mixed with the new per-backend ones).
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = True
        with tf32_policy(False):
            pass
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_dna_records_the_precision_settings():
    from vdna.processor import VDNAProcessor, VDNAStream

    model = ToyExtractor(name="toy_meta")
    model.activation_ranges = lambda: None
    be = get_backend(model, backend="eager")
    stream = VDNAStream(model, be, "gaussian", "cpu", 0, 4, None)
    stream.update(np.full((2, 16, 16, 3), 128, np.uint8))
    dna = stream.compute()
    assert dna.meta["allow_tf32"] is False and dna.meta["amp_dtype"] is None
    assert VDNAProcessor  # the processor passes the same options (make_vdna / stream keywords)


# ---------------------------------------------------------------- shim: amp, fuser, OOM, lock


def test_amp_bfloat16_both_backends_agree(shim_dirs):  # noqa: F811
    # Both backends run the float32 module under autocast(bfloat16): identical kernels on the CPU,
    # so identical activations (the shim used to cast the whole model to bfloat16 instead).
    model = ToyExtractor()
    lt = get_backend(model, backend="libtorch", amp_dtype="bfloat16", **shim_dirs)
    eg = get_backend(model, backend="eager", amp_dtype="bfloat16")
    x = images(3, 4)
    a, b = lt.forward(x), eg.forward(x)
    for layer in b:
        np.testing.assert_array_equal(np.asarray(a[layer]), b[layer].numpy(), err_msg=layer)
    assert np.asarray(a["pix"]).dtype == np.float32
    # autocast keeps the pass-through layer in float32 (a cast model would round it to bfloat16)
    np.testing.assert_array_equal(np.asarray(a["pix"]), x.numpy())
    assert not np.array_equal(np.asarray(a["conv1"]), get_backend(model, backend="eager").forward(x)["conv1"].numpy())
    # the fusers were off for the shim's forward only (process-wide flags, restored)
    assert torch._C._jit_texpr_fuser_enabled() and not torch.is_autocast_enabled("cpu")
    lt.close()


def test_shim_runs_without_graph_optimisation(shim_dirs):  # noqa: F811
    # With the graph executor's optimisation on (PyTorch's default) the graph is inlined, profiled
    # and, on GPUs, fused; off, no pass runs and submodule calls stay prim::CallMethod nodes. The
    # executor's last graph is thread-local and ctypes calls run on this thread.
    lt = get_backend(ToyExtractor(), backend="libtorch", **shim_dirs)
    for seed in range(3):
        lt.forward(images(2, seed))
    graph = str(torch.jit.last_executed_optimized_graph())
    assert "prim::CallMethod" in graph and "TensorExprGroup" not in graph and "FusionGroup" not in graph
    assert torch._C._get_graph_executor_optimize()  # the shim's setting did not leak
    lt.close()


def test_out_of_memory_is_a_memory_error_with_advice():
    # The shim maps c10::OutOfMemoryError (caught before c10::Error) to status 8; a CUDA OOM cannot
    # be raised on the CPU (its allocator throws a plain c10::Error), so the mapping is checked here
    # and the C++ catch by construction (docs/gpu.md).
    exc = shim_exception(8, "model_run: CUDA out of memory. Tried to allocate 2.00 GiB", "running a batch")
    assert isinstance(exc, MemoryError) and isinstance(exc, ShimError) and isinstance(exc, ShimOutOfMemoryError)
    assert "batch_size" in str(exc) and "2.00 GiB" in str(exc)
    assert isinstance(shim_exception(6, "out of memory", "x"), MemoryError)
    assert not isinstance(shim_exception(3, "forward failed", "x"), MemoryError)


def test_shim_update_holds_the_lock_across_run_and_accumulate(shim_dirs):  # noqa: F811
    # Two threads share one cached backend. Thread A's update runs its batch, then (the patched run)
    # waits up to 0.5 s for thread B to run; without a lock B's run lands between A's run and A's
    # accumulate, so A accumulates B's batch and B's is counted twice.
    model = ToyExtractor()
    lt = get_backend(model, backend="libtorch", **shim_dirs)
    eg = get_backend(model, backend="eager")
    xa, xb = images(2, 30), images(3, 31)
    specs = [s for s in all_specs(calibrated_ranges(eg, torch.cat([xa, xb]))) if s.layer == "pix"]
    ref = {}
    for name, x in (("a", xa), ("b", xb)):
        with eg.device_accumulators(specs) as acc:
            acc.update(x)
            ref[name] = acc.states()["pix"].hist_counts
    acc_a, acc_b = lt.device_accumulators(specs), lt.device_accumulators(specs)
    a_ran, b_ran = threading.Event(), threading.Event()
    real_run = lt.model.run

    def run(batch, device):
        real_run(batch, device)
        if threading.current_thread().name == "A":
            a_ran.set()
            b_ran.wait(0.5)  # B's update gets this long to slip in between A's run and A's accumulate
        else:
            b_ran.set()

    def update_b():
        a_ran.wait(10)  # start only once A is between its two calls
        acc_b.update(xb)

    lt.model.run = run
    ta = threading.Thread(target=acc_a.update, args=(xa,), name="A")
    tb = threading.Thread(target=update_b, name="B")
    ta.start()
    tb.start()
    ta.join()
    tb.join()
    np.testing.assert_array_equal(acc_a.states()["pix"].hist_counts, ref["a"])
    np.testing.assert_array_equal(acc_b.states()["pix"].hist_counts, ref["b"])
    acc_a.close()
    acc_b.close()
    lt.close()


# ---------------------------------------------------------------- device accumulation


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_device_accumulation_rejects_ranges_the_core_rejects(backends, which):  # noqa: F811
    from vdna._native import _core

    for mins, maxs in (([0.0, -1.6e308], [1.0, 1.0]), ([0.0, 0.0], [1.0, 1.6e308]),
                       ([0.0, -9e307], [1.0, 9e307])):  # 1.2 * range or its width overflows float64
        mins, maxs = np.array(mins), np.array(maxs)
        with pytest.raises(ValueError, match="too large|normalise"):
            _core.HistAccumulator(mins, maxs, 4)
        with pytest.raises(ValueError, match="neuron 1"):
            LayerSpec("l", "channels", 2, mins, maxs, 4)


@pytest.mark.parametrize("kind", ["gaussian", "layer-gaussian", "activation-ranges", "histogram-7"])
@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_device_and_host_dnas_report_the_same_nan_counts(backends, kind, which):  # noqa: F811
    lt, eg = backends
    backend = lt if which == "libtorch" else eg
    x = images(4, 40)
    x[0, 0, 0, :3] = float("nan")  # neuron 0 of "pix": 3 NaN values
    x[:, 1] = float("nan")  # neuron 1 of "pix": NaN in every image and pixel (no value at all)
    info = ToyExtractor().info
    ranges = {layer: mm for layer, mm in calibrated_ranges(eg, images(4, 41)).items()}
    from vdna.ranges import ActivationRanges

    ar = None
    if kind.startswith("histogram"):
        ar = ActivationRanges({k: v[0] for k, v in ranges.items()}, {k: v[1] for k, v in ranges.items()})

    def accumulator():
        return Accumulator(kind, dict(info.neurons_per_layer), activation_ranges=ar, layouts=dict(info.layouts),
                           feature_extractor_name=info.name)

    host = accumulator()
    for part in (x[:1], x[1:]):
        host.update(backend.forward(part))
    dev = accumulator()
    with backend.device_accumulators(dev.device_specs()) as acc:
        acc.update(x[:1])
        acc.update(x[1:])
        dev.merge_device_states(acc.states())
    for layer in info.neurons_per_layer:
        np.testing.assert_array_equal(dev.nan_counts[layer], host.nan_counts[layer], err_msg=layer)
    assert dev.nan_counts["pix"].tolist() == [3, 4 * 16 * 16, 0]
    with pytest.warns(RuntimeWarning, match="NaN activations seen"):
        dna_dev = dev.compute()  # an all-NaN neuron used to fail here (activation-ranges)
    with pytest.warns(RuntimeWarning, match="NaN activations seen"):
        dna_host = host.compute()
    assert dna_dev.meta["nan_counts"] == dna_host.meta["nan_counts"]


# ---------------------------------------------------------------- VDNAStream.update: images


def _toy_stream(backend, kind="gaussian", ranges=None, device="cpu", device_accumulation=False):
    from vdna.processor import VDNAStream

    model = backend.extractor if isinstance(backend, EagerBackend) else ToyExtractor()
    return VDNAStream(model, backend, kind, device, 0, 64, ranges, device_accumulation=device_accumulation)


def test_update_with_device_tensors_waits_for_nothing():
    # A meta tensor has no data: any host synchronisation (float(t.max()), bool(isfinite(t).all()),
    # t.cpu()) raises on it, so update() passing proves that no batch waits for its device.
    model = ToyExtractor()
    backend = EagerBackend(model, "meta")
    stream = _toy_stream(backend, device="meta", device_accumulation=True)
    stream.update(torch.empty((2, 3, 16, 16), device="meta"))
    stream.update(torch.empty((1, 16, 16, 3), dtype=torch.uint8, device="meta"))
    assert len(stream._pending_checks) == 1  # the float batch's validation, checked once in compute()


def test_invalid_device_images_are_reported_by_compute(monkeypatch):
    from vdna.processor import _as_pixel_batch

    pending = []
    bad = torch.full((2, 3, 16, 16), 0.5)
    bad[1, 0, 0, 0] = float("nan")
    # On the CPU the check is immediate; the deferred form is what a CUDA tensor gets.
    with pytest.raises(ValueError, match=r"image array \[1\].*NaN"):
        _as_pixel_batch(bad, (16, 16), torch, pending)
    from vdna.sources.rgb import scale_float_batch

    _, ok = scale_float_batch(bad, deferred=True)
    assert not bool(ok)
    stream = _toy_stream(EagerBackend(ToyExtractor(), "cpu"))
    stream._pending_checks.append(ok)
    stream.update(np.full((1, 16, 16, 3), 9, np.uint8))
    with pytest.raises(ValueError, match="NaN/Inf"):
        stream.compute()


def test_float_rule_is_per_image_and_the_same_as_array_to_rgb():
    from vdna.sources.rgb import array_to_rgb, scale_float_batch

    g = torch.Generator().manual_seed(5)
    t = torch.rand((3, 3, 5, 4), generator=g, dtype=torch.float64)
    t[1] *= 200.0  # [0, 255] scale
    t[2, :, 0, 0] = 1.0  # exactly 1: still the [0, 1] scale
    got, ok = scale_float_batch(t)
    assert ok is None and got.dtype == torch.float32
    for i in range(3):
        ref = array_to_rgb(t[i].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(got[i].permute(1, 2, 0).numpy(), ref)
    with pytest.raises(ValueError, match=r"\[2\].*negative"):
        scale_float_batch(torch.cat([t[:2], -t[2:]]))
    with pytest.raises(ValueError, match=r"\[0\].*up to 300"):
        scale_float_batch(t * 0 + 300.0)


def test_same_images_in_other_batches_give_identical_dnas():
    # Image 0 is on [0, 1], image 1 on [0, 255]: a per-batch rule left image 0 unscaled when both
    # were in one batch (batch maximum > 1) and scaled it when alone.
    from vdna.ranges import ActivationRanges

    g = torch.Generator().manual_seed(6)
    imgs = torch.rand((3, 3, 16, 16), generator=g)
    imgs[1] *= 255.0
    imgs[2] *= 100.0
    info = ToyExtractor().info
    ranges = ActivationRanges({k: np.zeros(n) for k, n in info.neurons_per_layer.items()},
                              {k: np.full(n, 255.0) for k, n in info.neurons_per_layer.items()})
    dnas = []
    for split in ([3], [1, 2], [1, 1, 1]):
        stream = _toy_stream(EagerBackend(ToyExtractor(), "cpu"), "histogram-7", ranges)
        start = 0
        for n in split:
            stream.update(imgs[start:start + n])
            start += n
        dnas.append(stream.compute())
    # The pass-through layer sees the scaled pixels themselves (convolutions may round differently
    # with the batch size, so only this layer is compared bit for bit).
    for dna in dnas[1:]:
        np.testing.assert_array_equal(np.asarray(dna.get_all_neurons_in_layer_dist("pix")),
                                      np.asarray(dnas[0].get_all_neurons_in_layer_dist("pix")))


# ---------------------------------------------------------------- benchmarks/gpu_check.py


def test_gpu_check_without_cuda_exits_0_and_says_so():
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run the full check (minutes)")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout

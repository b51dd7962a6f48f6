"""The LibTorch shim's C ABI: build cache, errors as Python exceptions, TorchScript export, C demo."""
import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vdna.backends import LayerSpec, get_backend
from vdna.backends import build as build_mod
from vdna.backends.export import ExportError, export_torchscript
from vdna.backends.libtorch import (ShimArgumentError, ShimDeviceAccumulators, ShimError, ShimLoadError, ShimModel,
                                    _View, load_shim)

REPO = Path(__file__).resolve().parents[1]


class TinyExtractor(torch.nn.Module):
    def __init__(self, name="tiny_shim"):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.05)
            self.conv.bias.copy_(torch.randn(4, generator=g))
        self.info = SimpleNamespace(name=name, input_size=16)
        self.weights_sha256 = None

    def forward(self, x):
        a = self.conv(x / 255.0)
        return {"conv": a, "flat": a.flatten(2).transpose(1, 2)}


class BatchDependent(TinyExtractor):
    """A shape-dependent branch that tracing freezes: the export check must catch it."""

    def forward(self, x):
        out = super().forward(x)
        if x.shape[0] == 2:
            out["conv"] = out["conv"] * 2.0
        return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()  # shared with tests/test_backends.py: one build per session
    return {"cache_dir": base / "vdna-shim", "torchscript_dir": base / "vdna-torchscript"}


@pytest.fixture(scope="module")
def lib(dirs):
    return load_shim(dirs["cache_dir"])


@pytest.fixture(scope="module")
def model_file(dirs):
    return export_torchscript(TinyExtractor(), "cpu", dirs["torchscript_dir"])


# ---------------------------------------------------------------- build and ABI


def test_build_is_cached_and_exports_one_symbol(dirs, lib):
    path = build_mod.build_shim(dirs["cache_dir"], quiet=True)
    assert path == lib.path and path.parent.parent == dirs["cache_dir"]
    mtime = path.stat().st_mtime_ns
    assert build_mod.build_shim(dirs["cache_dir"], quiet=True).stat().st_mtime_ns == mtime  # no rebuild
    assert (path.parent / "build.json").is_file()
    nm = shutil.which("nm")
    if nm:  # binutils comes with the compiler that built the shim
        out = subprocess.run([nm, "-D", "--defined-only", str(path)], capture_output=True, text=True).stdout
        exported = [ln.split()[-1] for ln in out.splitlines() if re.search(r" [TW] ", ln)]
        # Our single entry point; the rest are weak instantiations of LibTorch's inline functions.
        ours = [name for name in exported if not re.match(r"_Z(NK?)?(3c10|2at|5torch|St|9__gnu_cxx)", name)]
        assert ours == ["vdna_shim_get_api"], ours
    assert lib.torch_version == torch.__version__.split("+")[0]


def test_unknown_abi_version_gives_null(lib):
    get_api = lib._dll.vdna_shim_get_api
    get_api.restype = ctypes.c_void_p
    assert get_api(999) is None


# ---------------------------------------------------------------- errors


def test_missing_model_file(lib, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ShimLoadError, match=r"cannot open model file .*nope\.pt"):
        ShimModel(lib, missing)


def test_corrupt_model_file(lib, tmp_path, model_file):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(ShimLoadError, match="not a loadable TorchScript model"):
        ShimModel(lib, bad)
    half = tmp_path / "truncated.pt"
    half.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    with pytest.raises(ShimLoadError, match="not a loadable TorchScript model"):
        ShimModel(lib, half)


def test_bad_device_and_format(lib, model_file):
    with pytest.raises(ShimError, match="invalid device 'gpu0'"):
        ShimModel(lib, model_file, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ShimError, match="not available"):
            ShimModel(lib, model_file, device="cuda:7")
    with pytest.raises(ShimArgumentError, match="unsupported model format 'aoti'"):
        ShimModel(lib, model_file, fmt="aoti")


def test_wrong_input_shape_reaches_python_from_the_shim(lib, model_file):
    m = ShimModel(lib, model_file)
    x = torch.zeros(2, 4, 16, 16)
    # Straight through the C ABI (the Python backend would reject it before the shim).
    status = lib.api.model_run(m.handle, ctypes.c_void_p(x.data_ptr()), 2, 0, 2, 4, 16, 16)
    with pytest.raises(ShimArgumentError, match=r"got \(2, 4, 16, 16\)"):
        lib.check(status, "running a batch")
    status = lib.api.model_run(m.handle, ctypes.c_void_p(x.data_ptr()), 3, 0, 2, 3, 16, 16)  # float64 input
    with pytest.raises(ShimArgumentError, match="uint8 or float32"):
        lib.check(status, "running a batch")
    # A size the model cannot take: LibTorch's own error, as an exception.
    with pytest.raises(ShimError, match="forward failed"):
        m.run(torch.zeros(1, 3, 2, 2), torch.device("cpu"))
    m.close()


def test_calls_in_the_wrong_order(lib, model_file):
    m = ShimModel(lib, model_file)
    with pytest.raises(ShimError, match="no batch has been run"):
        lib.check(lib.api.model_output(m.handle, 0, ctypes.byref(_View())), "reading an output")
    acc = ShimDeviceAccumulators(m, torch.device("cpu"), [LayerSpec("conv", "channels", 4, moments=True)])
    with pytest.raises(ShimError, match="no batch has been run"):
        lib.check(lib.api.accum_update(acc._handle), "accumulating")
    acc.update(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ShimError, match="already been accumulated"):
        lib.check(lib.api.accum_update(acc._handle), "accumulating")
    with pytest.raises(ShimError, match="does not accumulate histograms"):
        lib.check(lib.api.accum_read_hist(acc._handle, 0, None, None, None), "reading")
    m.close()  # frees the accumulators first
    with pytest.raises(ShimError, match="closed"):
        acc.update(torch.zeros(1, 3, 16, 16))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_model_must_return_a_dict(lib, tmp_path):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(Plain(), torch.zeros(1, 3, 4, 4)), str(path))
    m = ShimModel(lib, path)
    with pytest.raises(ShimError, match=r"Dict\[str, Tensor\]"):
        m.run(torch.zeros(1, 3, 4, 4), torch.device("cpu"))


# ---------------------------------------------------------------- export


def test_export_is_cached_and_checked(dirs):
    model = TinyExtractor(name="tiny_cache")
    first = export_torchscript(model, "cpu", dirs["torchscript_dir"])
    assert first.name.startswith("tiny_cache-") and f"torch{torch.__version__}".replace("+", "_") in first.name
    mtime = first.stat().st_mtime_ns
    assert export_torchscript(model, "cpu", dirs["torchscript_dir"]).stat().st_mtime_ns == mtime
    other = TinyExtractor(name="tiny_cache")
    with torch.no_grad():
        other.conv.bias.add_(1.0)  # other weights -> another cache entry
    assert export_torchscript(other, "cpu", dirs["torchscript_dir"]) != first
    with pytest.raises(ExportError, match="differs from the eager module on layer 'conv'"):
        export_torchscript(BatchDependent(name="batchdep"), "cpu", dirs["torchscript_dir"])


# ---------------------------------------------------------------- the C demo


def demo_images(first, n, size):
    i = np.arange(first, first + n)[:, None, None, None]
    ch = np.arange(3)[None, :, None, None]
    y = np.arange(size)[None, None, :, None]
    x = np.arange(size)[None, None, None, :]
    return torch.from_numpy(((i * 17 + ch * 31 + y * 7 + x * 13) % 256).astype(np.uint8))


def test_c_demo_runs_without_python(lib, model_file, tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    assert cc, "a C compiler is needed (the shim itself was just compiled with one)"
    exe = tmp_path / "vdna_shim_demo"
    src = REPO / "csrc" / "torch" / "examples" / "vdna_shim_demo.c"
    subprocess.run([cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{src.parent.parent}", str(src),
                    "-o", str(exe), "-ldl", "-lm"], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    n_batches, batch, size, bins = 3, 2, 16, 6
    proc = subprocess.run([str(exe), str(lib.path), str(model_file), str(n_batches), str(batch), str(size),
                           str(bins)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = lines[0].split()
    assert head[:2] == ["layer", "conv"] and int(head[7]) == n_batches * batch
    c = int(head[3])
    mins = np.array([float(ln.split()[2]) for ln in lines[1 : 1 + c]])
    maxs = np.array([float(ln.split()[3]) for ln in lines[1 : 1 + c]])
    counts = np.array([[int(v) for v in ln.split()[2:]] for ln in lines[1 + c : 1 + 2 * c]])
    # The same images through the eager backend and the reference rule give the same counts.
    eager = get_backend(TinyExtractor(), backend="eager")
    acc = eager.device_accumulators([LayerSpec("conv", "channels", c, mins, maxs, bins)])
    for b in range(n_batches):
        acc.update(demo_images(b * batch, batch, size))
    np.testing.assert_array_equal(counts, acc.states()["conv"].hist_counts)
    assert counts.sum() == n_batches * batch * c * 49

"""The LibTorch backend: the shim (csrc/torch) loaded with ctypes through its C ABI.

``import torch`` comes first, so the shim's libtorch dependencies resolve to the libraries torch
already loaded and one libtorch serves the whole process.
"""
import contextlib
import ctypes
import os
import threading
import weakref
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np

from .. import heap
from .base import Backend, DeviceAccumulators, check_batch, normalise_amp_dtype, pin_device
from .build import build_shim
from .device_accum import LayerSpec, LayerState
from .export import export_torchscript

__all__ = ["LibTorchBackend", "ShimError", "ShimArgumentError", "ShimLoadError", "ShimOutOfMemoryError",
           "ShimLibrary", "ShimModel", "load_shim"]

ABI_VERSION = 1
MAX_RANK = 8
_U8, _F16, _F32, _F64 = 0, 1, 2, 3
_MEM_HOST, _MEM_DEVICE = 0, 1
_STAT_HIST, _STAT_MOMENTS, _STAT_COV, _STAT_RANGES = 1, 2, 4, 8
_LAYOUTS = {"channels": 0, "tokens": 1}
_VIEW_DTYPES = {_F16: np.float16, _F32: np.float32, _F64: np.float64}
_PRECISION_ALLOW_TF32 = 0x100  # VDNA_SHIM_PRECISION_ALLOW_TF32, OR-ed into the precision
_STATUS_NAMES = {1: "invalid argument", 2: "model load failed", 3: "forward failed", 4: "device unavailable",
                 5: "wrong call order", 6: "out of memory", 7: "internal error", 8: "device out of memory"}


class ShimError(RuntimeError):
    """A call into the shim failed; ``code`` is the shim's status, the message its explanation."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class ShimArgumentError(ShimError, ValueError):
    """The shim rejected an argument (shape, dtype, layer name, ...)."""


class ShimLoadError(ShimError, OSError):
    """The shim could not read the model file, or it is not a valid model."""


class ShimOutOfMemoryError(ShimError, MemoryError):
    """The shim ran out of memory: on the device (``code`` 8, a CUDA out-of-memory error) or on the
    host (``code`` 6). The message says how much was asked for; a smaller batch usually fits."""


_OOM_ADVICE = ("; the batch does not fit in the device's memory: use a smaller batch_size (or amp_dtype="
               "'bf16'/'fp16'), or free memory held by other tensors and processes")


class _View(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p), ("dtype", ctypes.c_int),
                ("ndim", ctypes.c_int), ("shape", ctypes.c_int64 * MAX_RANK),
                ("strides", ctypes.c_int64 * MAX_RANK)]


class _LayerSpec(ctypes.Structure):
    _fields_ = [("layer", ctypes.c_char_p), ("layout", ctypes.c_int), ("n_neurons", ctypes.c_int64),
                ("stats", ctypes.c_uint), ("bins", ctypes.c_int64), ("mins", ctypes.POINTER(ctypes.c_double)),
                ("maxs", ctypes.POINTER(ctypes.c_double))]


_p = ctypes.c_void_p
_i64p = ctypes.POINTER(ctypes.c_int64)
_f64p = ctypes.POINTER(ctypes.c_double)
_I = ctypes.c_int


class _Api(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("struct_size", ctypes.c_uint32),
        ("last_error", ctypes.CFUNCTYPE(ctypes.c_char_p)),
        ("torch_version", ctypes.CFUNCTYPE(ctypes.c_char_p)),
        ("model_open", ctypes.CFUNCTYPE(_I, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _I,
                                        ctypes.POINTER(_p))),
        ("model_close", ctypes.CFUNCTYPE(None, _p)),
        ("model_run", ctypes.CFUNCTYPE(_I, _p, _p, _I, _I, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                       ctypes.c_int64)),
        ("model_num_outputs", ctypes.CFUNCTYPE(_I, _p, _i64p)),
        ("model_output", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, ctypes.POINTER(_View))),
        ("accum_create", ctypes.CFUNCTYPE(_I, _p, ctypes.POINTER(_LayerSpec), ctypes.c_int64, ctypes.POINTER(_p))),
        ("accum_free", ctypes.CFUNCTYPE(None, _p)),
        ("accum_update", ctypes.CFUNCTYPE(_I, _p)),
        ("accum_read_hist", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, _i64p, _i64p, _i64p)),
        ("accum_read_moments", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, _i64p, _f64p, _f64p)),
        ("accum_read_cov", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, _i64p, _f64p, _f64p)),
        ("accum_read_ranges", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, _i64p, _f64p, _f64p, _i64p)),
        ("accum_read_nan_counts", ctypes.CFUNCTYPE(_I, _p, ctypes.c_int64, _i64p)),
    ]


class ShimLibrary:
    """The loaded shim library and its function table."""

    def __init__(self, path: os.PathLike):
        import torch  # noqa: F401  (libtorch must be loaded before the shim; see module docstring)

        self.path = Path(path)
        try:
            self._dll = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise ShimLoadError(2, f"cannot load the shim library {self.path}: {exc}") from exc
        get_api = self._dll.vdna_shim_get_api
        get_api.restype = ctypes.POINTER(_Api)
        get_api.argtypes = [ctypes.c_uint32]
        ptr = get_api(ABI_VERSION)
        if not ptr:
            raise ShimLoadError(2, f"the shim library {self.path} does not serve ABI version {ABI_VERSION}")
        self.api = ptr.contents
        if self.api.struct_size < ctypes.sizeof(_Api):
            raise ShimLoadError(2, f"the shim library {self.path} has an older function table")
        self.torch_version = self.api.torch_version().decode()

    def check(self, status: int, what: str) -> None:
        """Raise the exception matching a non-zero status, with the shim's message."""
        if status == 0:
            return
        message = self.api.last_error().decode(errors="replace") or _STATUS_NAMES.get(status, "error")
        raise shim_exception(status, message, what)


def shim_exception(status: int, message: str, what: str) -> ShimError:
    """The exception for a shim status code (out-of-memory codes get advice appended)."""
    cls = {1: ShimArgumentError, 2: ShimLoadError, 6: ShimOutOfMemoryError, 8: ShimOutOfMemoryError}.get(status,
                                                                                                       ShimError)
    advice = _OOM_ADVICE if status == 8 else ""
    return cls(status, f"{message} [{what}: {_STATUS_NAMES.get(status, status)}]{advice}")


_libraries: Dict[str, ShimLibrary] = {}
_lib_lock = threading.Lock()


def load_shim(cache_dir: Optional[os.PathLike] = None, path: Optional[os.PathLike] = None) -> ShimLibrary:
    """Build (if needed) and load the shim for the imported torch; one instance per library path."""
    lib_path = Path(path) if path is not None else build_shim(cache_dir)
    with _lib_lock:
        key = str(lib_path.resolve())
        if key not in _libraries:
            _libraries[key] = ShimLibrary(lib_path)
        return _libraries[key]


def _view_to_numpy(view: _View) -> np.ndarray:
    """A read-only NumPy array aliasing the shim's host memory (no copy)."""
    dtype = np.dtype(_VIEW_DTYPES[view.dtype])
    shape = tuple(view.shape[i] for i in range(view.ndim))
    strides = tuple(view.strides[i] for i in range(view.ndim))
    if any(n == 0 for n in shape):
        return np.empty(shape, dtype)
    if any(s < 0 for s in strides):  # torch never produces these; guard the span arithmetic anyway
        raise ShimError(7, "negative strides in a shim output")
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    buf = (ctypes.c_char * (span * dtype.itemsize)).from_address(view.data)
    flat = np.frombuffer(buf, dtype=dtype, count=span)
    return np.lib.stride_tricks.as_strided(flat, shape, tuple(s * dtype.itemsize for s in strides), writeable=False)


class ShimModel:
    """A model opened by the shim on a device."""

    def __init__(self, lib: ShimLibrary, path: os.PathLike, device: str = "cpu", precision: int = 0,
                 fmt: str = "torchscript"):
        self.lib = lib
        self.path = str(path)
        # The shim's model is used by one thread at a time (vdna_shim.h); ctypes releases the GIL, so
        # callers hold this lock across every sequence of calls that must not interleave (run, then
        # read outputs or accumulate).
        self.lock = threading.RLock()
        self._handle = ctypes.c_void_p()
        lib.check(lib.api.model_open(os.fsencode(self.path), fmt.encode(), str(device).encode(), int(precision),
                                     ctypes.byref(self._handle)), f"opening {self.path}")
        self._accumulators = weakref.WeakSet()

    @property
    def handle(self):
        if not self._handle:
            raise ShimError(5, "the model is closed")
        return self._handle

    def run(self, batch, device) -> None:
        """Run one batch (a torch tensor on the host or on ``device``); keeps the outputs in the shim."""
        x = check_batch(batch)
        on_device = x.device.type != "cpu"
        if on_device and x.device != device:
            raise ValueError(f"batch is on {x.device}, the model on {device}")
        x = x.contiguous()
        code = _U8 if x.dtype.is_floating_point is False else _F32
        n, c, h, w = x.shape
        self.lib.check(self.lib.api.model_run(self.handle, ctypes.c_void_p(x.data_ptr()), code,
                                              _MEM_DEVICE if on_device else _MEM_HOST, n, c, h, w), "running a batch")

    def outputs(self) -> Dict[str, np.ndarray]:
        """Layer -> host NumPy views of the last batch's activations (valid until the next run)."""
        count = ctypes.c_int64()
        self.lib.check(self.lib.api.model_num_outputs(self.handle, ctypes.byref(count)), "counting outputs")
        out = {}
        for i in range(count.value):
            view = _View()
            self.lib.check(self.lib.api.model_output(self.handle, i, ctypes.byref(view)), "reading an output")
            out[view.name.decode()] = _view_to_numpy(view)
        return out

    def close(self) -> None:
        if self._handle:
            for acc in list(self._accumulators):
                acc.close()
            self.lib.api.model_close(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class ShimDeviceAccumulators(DeviceAccumulators):
    """Device accumulators living in the shim (C++ ops on the model's device)."""

    def __init__(self, model: ShimModel, device, specs: Iterable[LayerSpec]):
        self._model = model
        self._device = device
        self.specs = list(specs)
        names = [s.layer for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"layer specs name a layer twice: {names}")
        arr = (_LayerSpec * len(self.specs))()
        for i, s in enumerate(self.specs):
            stats = ((_STAT_HIST if s.hist else 0) | (_STAT_MOMENTS if s.moments else 0)
                     | (_STAT_COV if s.cov else 0) | (_STAT_RANGES if s.ranges else 0))
            arr[i].layer = s.layer.encode()
            arr[i].layout = _LAYOUTS[s.layout]
            arr[i].n_neurons = s.n_neurons
            arr[i].stats = stats
            arr[i].bins = s.bins if s.hist else 0
            if s.hist:
                arr[i].mins = s.hist_mins.ctypes.data_as(_f64p)  # copied by the shim
                arr[i].maxs = s.hist_maxs.ctypes.data_as(_f64p)
        self._handle = ctypes.c_void_p()
        lib = model.lib
        lib.check(lib.api.accum_create(model.handle, arr, len(self.specs), ctypes.byref(self._handle)),
                  "creating device accumulators")
        model._accumulators.add(self)

    def update(self, batch) -> None:
        if not self._handle:
            raise ShimError(5, "the accumulators are closed")
        with self._model.lock:  # another thread's run between these two calls would be accumulated here
            self._model.run(batch, self._device)
            self._model.lib.check(self._model.lib.api.accum_update(self._handle), "accumulating a batch")

    def states(self) -> Dict[str, LayerState]:
        if not self._handle:
            raise ShimError(5, "the accumulators are closed")
        api, check = self._model.lib.api, self._model.lib.check
        out = {}
        for i, s in enumerate(self.specs):
            c = s.n_neurons
            num = ctypes.c_int64()
            st = LayerState(layer=s.layer, layout=s.layout, num_images=0)
            if s.hist:
                counts = np.empty((c, s.bins), np.int64)
                nans = np.empty(c, np.int64)
                check(api.accum_read_hist(self._handle, i, counts.ctypes.data_as(_i64p), nans.ctypes.data_as(_i64p),
                                          ctypes.byref(num)), "reading histograms")
                st.hist_counts, st.hist_nan_counts = counts, nans
            if s.moments or s.cov:
                nans = np.empty(c, np.int64)
                check(api.accum_read_nan_counts(self._handle, i, nans.ctypes.data_as(_i64p)), "reading NaN counts")
                st.nan_counts = nans
            if s.moments:
                st.moments = self._read_gaussian(api.accum_read_moments, i, (c,), num, "moments")
            if s.cov:
                st.cov = self._read_gaussian(api.accum_read_cov, i, (c, c), num, "covariance")
            if s.ranges:
                mins, maxs, nans = np.empty(c), np.empty(c), np.empty(c, np.int64)
                check(api.accum_read_ranges(self._handle, i, ctypes.byref(num), mins.ctypes.data_as(_f64p),
                                            maxs.ctypes.data_as(_f64p), nans.ctypes.data_as(_i64p)), "reading ranges")
                st.ranges, st.range_nan_counts = (num.value, mins, maxs), nans
            st.num_images = num.value
            out[s.layer] = st
        return out

    def _read_gaussian(self, reader, index, m2_shape, num, what):
        mean, m2 = np.empty(m2_shape[0]), np.empty(m2_shape)
        self._model.lib.check(reader(self._handle, index, ctypes.byref(num), mean.ctypes.data_as(_f64p),
                                     m2.ctypes.data_as(_f64p)), f"reading {what}")
        return (num.value, mean, m2)

    def close(self) -> None:
        if self._handle:
            self._model.lib.api.accum_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class LibTorchBackend(Backend):
    """Runs ``extractor`` through the LibTorch shim: traced to TorchScript (cached), loaded in C++.

    ``model_path`` skips the export and opens that TorchScript file; ``cache_dir`` sets where the
    shim library is built (default ``$VDNA_HOME/shim``); ``torchscript_dir`` where traced models go.
    """

    name = "libtorch"

    def __init__(self, extractor=None, device="cpu", amp_dtype=None, model_path=None, cache_dir=None,
                 torchscript_dir=None, shim_path=None, allow_tf32=False):
        import torch

        self.device = pin_device(device)
        self.amp_dtype = normalise_amp_dtype(amp_dtype)
        self.allow_tf32 = bool(allow_tf32)
        precision = {None: 0, torch.float16: 1, torch.bfloat16: 2}[self.amp_dtype]
        if self.allow_tf32:
            precision |= _PRECISION_ALLOW_TF32
        self.lib = load_shim(cache_dir, shim_path)
        if model_path is None:
            if extractor is None:
                raise ValueError("give an extractor or a model_path")
            model_path = export_torchscript(extractor, self.device, torchscript_dir, allow_tf32=self.allow_tf32)
        self.model_path = Path(model_path)
        self.model = ShimModel(self.lib, self.model_path, str(self.device), precision)

    def forward(self, batch) -> Dict[str, np.ndarray]:
        """Layer -> read-only NumPy views of the shim's output tensors (valid until the next call
        of this backend from any thread: threads sharing a backend must serialise forward and the
        use of its results themselves)."""
        with self.model.lock:
            with heap.forward_scope() if self.device.type == "cpu" else contextlib.nullcontext():
                self.model.run(batch, self.device)  # on the CPU: in reused heap memory (vdna/heap.py)
            return self.model.outputs()

    def device_accumulators(self, specs: Iterable[LayerSpec]) -> ShimDeviceAccumulators:
        return ShimDeviceAccumulators(self.model, self.device, specs)

    def close(self) -> None:
        self.model.close()

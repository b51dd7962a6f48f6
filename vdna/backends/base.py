"""The interface every extractor backend implements (eager PyTorch, LibTorch shim), and the
settings both backends apply the same way (device pinning, TF32 policy, mixed precision)."""
import contextlib
from typing import Dict, Iterable

__all__ = ["Backend", "DeviceAccumulators", "normalise_amp_dtype", "check_batch", "pin_device", "tf32_policy"]


class DeviceAccumulators:
    """Accumulation of a run's activations on the backend's device (see device_accum.py).

    ``update(batch)`` runs the extractor on one batch and adds its activations to the device
    states without synchronising with the host; ``states()`` reads everything back once
    (layer -> LayerState, mergeable into the core's accumulators); ``close()`` frees the states.
    """

    def update(self, batch) -> None:
        raise NotImplementedError

    def states(self) -> Dict[str, "object"]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Backend:
    """Runs an extractor on a device.

    ``device`` (a torch.device with an index for CUDA), ``amp_dtype`` (None or a torch dtype) and
    ``allow_tf32`` (bool) say how it runs; a DNA records them in its metadata.

    ``forward(batch)``: batch is a float32 (or uint8) tensor (N, 3, H, W) of pixel values 0..255 on
    the host (pinned or not), or already on the backend's device. Returns layer -> activations on
    the host, in a form the C core takes without copying (NumPy views or CPU tensors), valid until
    the next ``forward`` call.
    """

    name: str = "?"

    def forward(self, batch) -> Dict[str, object]:
        raise NotImplementedError

    def device_accumulators(self, specs: Iterable["object"]) -> DeviceAccumulators:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def normalise_amp_dtype(amp_dtype):
    """None (full float32 forward, the default), torch.float16 or torch.bfloat16.

    Also accepts the names "fp16", "float16", "half", "bf16", "bfloat16".
    """
    import torch

    if amp_dtype is None:
        return None
    names = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if isinstance(amp_dtype, str):
        if amp_dtype.lower() not in names:
            raise ValueError(f"amp_dtype must be one of {sorted(names)} or None, got {amp_dtype!r}")
        return names[amp_dtype.lower()]
    if amp_dtype in (torch.float16, torch.bfloat16):
        return amp_dtype
    raise ValueError(f"amp_dtype must be torch.float16, torch.bfloat16 or None, got {amp_dtype!r}")


def check_batch(batch):
    """Return ``batch`` as a torch tensor (N, 3, H, W) of dtype uint8 or float32, or raise."""
    import numpy as np
    import torch

    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch must be a torch tensor or NumPy array, got {type(batch).__name__}")
    if batch.dim() != 4 or batch.shape[1] != 3 or batch.shape[0] < 1:
        raise ValueError(f"batch must have shape (N>=1, 3, H, W), got {tuple(batch.shape)}")
    if batch.dtype not in (torch.uint8, torch.float32):
        raise TypeError(f"batch dtype must be uint8 or float32 (pixel values 0..255), got {batch.dtype}")
    return batch


def pin_device(device):
    """``device`` as a torch.device; plain "cuda" becomes "cuda:<current device>" (fixed from now on).

    A backend bound to plain "cuda" would follow later ``torch.cuda.set_device`` calls while its
    model and states stay where they were created; both backends pin the index at creation.
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _tf32_flags(torch):
    """(get, set) of the cuDNN-convolution and cuBLAS-matmul TF32 settings, as opaque values.

    PyTorch >= 2.9 has per-backend ``fp32_precision`` strings ("ieee", "tf32", "none") and raises
    when code reads the legacy ``allow_tf32`` flags after the new ones were set (or the reverse):
    use the new API where it exists, so the caller's settings, of either kind, read back unchanged.
    """
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        def get():
            return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision

        def put(values):
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = values

        return get, put, lambda allow: ("tf32", "tf32") if allow else ("ieee", "ieee")

    def get_legacy():
        return torch._C._get_cudnn_allow_tf32(), torch._C._get_cublas_allow_tf32()

    def put_legacy(values):
        torch._C._set_cudnn_allow_tf32(values[0])
        torch._C._set_cublas_allow_tf32(values[1])

    return get_legacy, put_legacy, lambda allow: (allow, allow)


@contextlib.contextmanager
def tf32_policy(allow_tf32: bool):
    """Within the block, cuDNN convolutions and cuBLAS matmuls use TF32 only if ``allow_tf32``.

    PyTorch's default lets cuDNN convolutions run in TF32 on Ampere and newer GPUs, so float32
    activations would differ between GPU generations and from the CPU. Extraction runs in IEEE
    float32 (``allow_tf32=False``) unless asked otherwise; the previous settings are restored after.
    Tracing under this block freezes the same choice into the TorchScript graph (``aten::_convolution``
    records ``allow_tf32``). The settings are process-wide: another thread running torch at the same
    time sees them too.
    """
    import torch

    get, put, wanted = _tf32_flags(torch)
    old = get()
    put(wanted(bool(allow_tf32)))
    try:
        yield
    finally:
        put(old)

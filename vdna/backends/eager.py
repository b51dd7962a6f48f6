"""The eager PyTorch backend: runs the extractor's Python module directly.

The fallback when the LibTorch shim cannot be built, and the reference the shim is tested against.
"""
import contextlib
import copy
from typing import Dict, Iterable

from .. import heap
from .base import Backend, DeviceAccumulators, check_batch, normalise_amp_dtype, pin_device, tf32_policy
from .device_accum import LayerSpec, TorchDeviceAccumulators

__all__ = ["EagerBackend"]


def _on_device(module, device) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return all(t.device == device for t in tensors)


class EagerBackend(Backend):
    """Runs ``extractor`` (a torch.nn.Module returning layer -> tensor) on ``device``.

    The caller's module is used as it is when all its parameters and buffers already live on
    ``device``; otherwise the backend runs its own copy moved there, so backends on different
    devices sharing one extractor never move it away from each other. Plain "cuda" is pinned to
    the current device's index. The forward runs under ``autocast(amp_dtype)`` when amp_dtype is
    set and under the TF32 policy ``allow_tf32`` (IEEE float32 by default; see base.tf32_policy).
    """

    name = "eager"

    def __init__(self, extractor, device="cpu", amp_dtype=None, allow_tf32=False):
        self.device = pin_device(device)
        self.amp_dtype = normalise_amp_dtype(amp_dtype)
        self.allow_tf32 = bool(allow_tf32)
        module = extractor if _on_device(extractor, self.device) else copy.deepcopy(extractor).to(self.device)
        self.extractor = module.eval()

    def run_on_device(self, batch) -> Dict[str, object]:
        """Layer -> activations as tensors on the device (no host synchronisation on a GPU)."""
        import torch

        x = check_batch(batch)
        x = x.to(self.device, non_blocking=x.device.type == "cpu" and x.is_pinned()).to(torch.float32)
        amp = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
               if self.amp_dtype is not None else contextlib.nullcontext())
        with torch.inference_mode(), tf32_policy(self.allow_tf32), amp:
            out = self.extractor(x)
        if not isinstance(out, dict):
            raise TypeError(f"the extractor must return a dict layer -> tensor, got {type(out).__name__}")
        return out

    def forward(self, batch) -> Dict[str, object]:
        """Layer -> CPU tensors (float16/32/64; bfloat16 is widened to float32 for the core)."""
        import torch

        out = {}
        with heap.forward_scope() if self.device.type == "cpu" else contextlib.nullcontext():
            activations = self.run_on_device(batch)  # on the CPU: in reused heap memory (vdna/heap.py)
        for layer, t in activations.items():
            if t.dtype not in (torch.float16, torch.float32, torch.float64):
                t = t.to(torch.float32)
            out[layer] = t.detach().cpu()
        return out

    def device_accumulators(self, specs: Iterable[LayerSpec]) -> DeviceAccumulators:
        return _EagerDeviceAccumulators(self, specs)


class _EagerDeviceAccumulators(DeviceAccumulators):
    def __init__(self, backend: EagerBackend, specs):
        self._backend = backend
        self._acc = TorchDeviceAccumulators(specs, backend.device)

    def update(self, batch) -> None:
        self._acc.accumulate(self._backend.run_on_device(batch))

    def states(self):
        return self._acc.states()

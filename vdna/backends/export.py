"""Export extractors to TorchScript for the LibTorch shim, with a cache.

Each extractor is traced from its Python definition (``torch.jit.trace(strict=False)``, dict
outputs) as a copy moved to the target device (the caller's module is not touched), checked against
that copy at a second batch size, and saved under
``<cache>/torchscript/<name>-<weights sha256[:16]>-torch<version>-<device>-<tf32|ieee>-cudnn<flags>-<H>x<W>.pt``.
Tracing freezes the device and the cuDNN flags (enabled, deterministic, allow_tf32) into the graph's
``aten::_convolution`` nodes, so all of them are in the key; the TorchScript fuser is a run-time
setting (off in the shim), not part of the file.
The shim only sees a file path and a format name, so AOTInductor packages can replace TorchScript
(deprecated upstream) without changing the shim's ABI; see docs/shim.md.
"""
import copy
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Optional, Tuple

from ..download import cache_dir as _default_cache_dir
from ..atomic import atomic_path
from ._cache import file_lock
from .base import pin_device, tf32_policy

__all__ = ["ExportError", "export_torchscript", "torchscript_path"]

TRACE_BATCH = 2
CHECK_BATCH = 3


class ExportError(RuntimeError):
    """An extractor could not be traced to a TorchScript model that reproduces it."""


def _input_hw(extractor) -> Tuple[int, int]:
    size = extractor.info.input_size
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in tuple(size)[-2:])
    return h, w


def _weights_digest(extractor) -> str:
    digest = getattr(extractor, "weights_sha256", None)
    if digest:
        return str(digest)
    # No published checksum (a user's own module): hash the parameters and buffers themselves.
    h = hashlib.sha256()
    for name, t in sorted(extractor.state_dict().items()):
        h.update(name.encode() + b"\0" + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cudnn_flags() -> str:
    """The cuDNN flags a trace freezes besides allow_tf32: enabled and deterministic (benchmark is
    always traced off, see export_torchscript)."""
    import torch

    return f"cudnn{int(torch._C._get_cudnn_enabled())}{int(torch._C._get_cudnn_deterministic())}"


def torchscript_path(extractor, device="cpu", cache_dir: Optional[os.PathLike] = None,
                     allow_tf32: bool = False) -> Path:
    """The cache path of ``extractor``'s TorchScript file for ``device`` ("cpu", "cuda:1"; plain
    "cuda" is pinned to the current device) traced with ``allow_tf32`` and the current cuDNN flags."""
    import torch

    dev = pin_device(device)
    h, w = _input_hw(extractor)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(extractor.info.name))
    version = re.sub(r"[^A-Za-z0-9_.-]", "_", torch.__version__)
    where = dev.type if dev.index is None else f"{dev.type}{dev.index}"
    flags = f"{'tf32' if allow_tf32 else 'ieee'}-{_cudnn_flags()}"
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir() / "torchscript"
    return root / f"{name}-{_weights_digest(extractor)[:16]}-torch{version}-{where}-{flags}-{h}x{w}.pt"


def _example(n, h, w, seed, device):
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 3, h, w), generator=g) * 255.0).to(device)


def _module_on(extractor, device):
    """A copy of ``extractor`` on ``device`` in eval mode (the caller's module is left as it is)."""
    try:
        module = copy.deepcopy(extractor)
    except Exception as exc:  # a module holding something deepcopy cannot copy (a lock, a file)
        raise ExportError(f"extractor {extractor.info.name!r} cannot be copied for tracing: {exc}") from exc
    return module.to(device).eval()


def export_torchscript(extractor, device="cpu", cache_dir: Optional[os.PathLike] = None, force: bool = False,
                       allow_tf32: bool = False) -> Path:
    """Trace ``extractor`` on ``device`` to TorchScript (cached) and return the file's path.

    A copy of the module is moved to ``device`` and traced there with an example input on that
    device, under the TF32 policy ``allow_tf32`` and with cuDNN benchmarking off (both are frozen
    into the graph). The traced module is checked against the copy at a batch size other than the
    traced one; a mismatch (a shape-dependent branch the tracer froze) raises ExportError.
    """
    import torch

    device = pin_device(device)
    target = torchscript_path(extractor, device, cache_dir, allow_tf32)
    if target.is_file() and not force:
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if target.is_file() and not force:
            return target
        h, w = _input_hw(extractor)
        module = _module_on(extractor, device)
        benchmark = torch._C._get_cudnn_benchmark()
        torch._C._set_cudnn_benchmark(False)
        try:
            with torch.no_grad(), tf32_policy(allow_tf32), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript itself; see docs/shim.md
                try:
                    traced = torch.jit.trace(module, _example(TRACE_BATCH, h, w, 0, device), strict=False,
                                             check_trace=False)
                except Exception as exc:  # the tracer raises many types
                    raise ExportError(f"tracing extractor {extractor.info.name!r} failed: {exc}") from exc
                check = _example(CHECK_BATCH, h, w, 1, device)
                _check_same(extractor.info.name, module(check), traced(check))
        finally:
            torch._C._set_cudnn_benchmark(benchmark)
        del module
        with warnings.catch_warnings(), atomic_path(target) as tmp:
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, tmp)
    return target


def _check_same(name, eager, traced) -> None:
    import torch

    if not isinstance(traced, dict) or list(traced) != list(eager):
        raise ExportError(f"traced {name!r} returns {type(traced).__name__} with keys "
                          f"{list(traced) if isinstance(traced, dict) else '?'}, expected {list(eager)}")
    for layer, ref in eager.items():
        got = traced[layer]
        scale = float(ref.abs().nan_to_num(posinf=0.0, neginf=0.0).max()) if ref.numel() else 0.0
        if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, equal_nan=True):
            raise ExportError(f"traced {name!r} differs from the eager module on layer {layer!r} at batch size "
                              f"{CHECK_BATCH} (shape {tuple(got.shape)} vs {tuple(ref.shape)})")

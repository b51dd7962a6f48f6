"""What every feature extractor looks like to the rest of vdna.

An ``Extractor`` wraps a network (``net``) that maps a normalised image batch to a dict of layer
activations. The wrapper owns the input convention: it takes float32 RGB pixels on the 0..255 scale,
normalises them as ``(x / 255 - mean) / std`` and returns the network's dict in network order. It
holds no accumulation logic; it is a plain ``torch.nn.Module`` that ``torch.jit.trace`` can serialise.
"""
import hashlib
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..download import MissingFileError

__all__ = ["ExtractorInfo", "Extractor", "MissingRangesError", "load_state_dict_strict", "module_state_sha256"]

LAYOUTS = ("channels", "tokens")


class MissingRangesError(MissingFileError):
    """An extractor's activation ranges are not available (not given, not shipped, not cached)."""


@dataclass(frozen=True)
class ExtractorInfo:
    """Static description of an extractor.

    ``neurons_per_layer``: layer -> neuron count in network order (this is ``VDNA.neurons_list``);
    ``layouts``: layer -> ``"channels"`` ((N, C, h, w) activations) or ``"tokens"`` ((N, T, C));
    ``input_size``: (H, W) images are resized to; ``mean``/``std``: per RGB channel, [0, 1] scale.
    """

    name: str
    neurons_per_layer: Dict[str, int]
    layouts: Dict[str, str]
    input_size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("ExtractorInfo.name must be a non-empty string")
        layers = list(self.neurons_per_layer)
        if not layers:
            raise ValueError(f"extractor '{self.name}': neurons_per_layer is empty")
        for layer, count in self.neurons_per_layer.items():
            if not isinstance(layer, str) or isinstance(count, bool) or not isinstance(count, (int, np.integer)) \
                    or count < 1:
                raise ValueError(f"extractor '{self.name}': layer {layer!r} needs a positive int neuron count, "
                                 f"got {count!r}")
        if list(self.layouts) != layers:
            raise ValueError(f"extractor '{self.name}': layouts must name the same layers, in the same order, "
                             f"as neurons_per_layer ({layers}), got {list(self.layouts)}")
        for layer, layout in self.layouts.items():
            if layout not in LAYOUTS:
                raise ValueError(f"extractor '{self.name}': layer '{layer}' has layout {layout!r}, "
                                 f"expected one of {LAYOUTS}")
        if len(tuple(self.input_size)) != 2 or any(int(s) < 1 for s in self.input_size):
            raise ValueError(f"extractor '{self.name}': input_size must be (H, W), got {self.input_size!r}")
        for what in ("mean", "std"):
            values = tuple(getattr(self, what))
            if len(values) != 3 or not all(np.isfinite(values)):
                raise ValueError(f"extractor '{self.name}': {what} must be 3 finite numbers, got {values!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"extractor '{self.name}': std must be positive, got {self.std!r}")
        # Freeze copies so that later edits of the caller's dicts do not change the info.
        object.__setattr__(self, "neurons_per_layer", {str(k): int(v) for k, v in self.neurons_per_layer.items()})
        object.__setattr__(self, "layouts", dict(self.layouts))
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def total_neurons(self) -> int:
        return sum(self.neurons_per_layer.values())


RangesLoader = Callable[[], object]


class Extractor(torch.nn.Module):
    """A frozen feature extractor: pixels (0..255, RGB, float32) -> {layer: activations}.

    ``weights_sha256`` is the SHA-256 of the weights that were loaded: of the checkpoint file, of the
    canonical bytes of generated weights (``rand_resnet50``), or of a user module's state dict
    (``module_state_sha256``); "" only when an Extractor is constructed by hand without one.
    """

    def __init__(self, net: torch.nn.Module, info: ExtractorInfo, weights_sha256: str = "",
                 ranges_loader: Optional[RangesLoader] = None):
        super().__init__()
        self.net = net
        self.info = info
        self.weights_sha256 = weights_sha256
        self._ranges_loader = ranges_loader
        self._ranges_cache = None
        # Non-persistent: they are constants of the extractor, not weights, and move with .to(device).
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).reshape(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).reshape(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = (x / 255.0 - self.mean) / self.std
        return self.net(x)

    def activation_ranges(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """Per-layer ``(mins, maxs)`` float64 arrays of shape (C,), in network order.

        Raises ``MissingRangesError`` (a ``FileNotFoundError``) saying where to get them when they are
        not available.
        """
        if self._ranges_cache is None:
            if self._ranges_loader is None:
                raise MissingRangesError(
                    f"extractor '{self.info.name}' has no activation ranges: pass ranges=<json path or dict> to "
                    f"get_extractor/register_extractor, or compute them with vdna.calibrate (an "
                    f"'activation-ranges' distribution over a fixed calibration image set)"
                )
            from ..ranges import ActivationRanges

            parsed = ActivationRanges.from_any(self._ranges_loader(), neurons_list=self.info.neurons_per_layer)
            self._ranges_cache = {layer: (parsed.mins[layer], parsed.maxs[layer]) for layer in parsed.mins}
        return {layer: (lo.copy(), hi.copy()) for layer, (lo, hi) in self._ranges_cache.items()}

    def extra_repr(self) -> str:
        return f"name={self.info.name!r}, weights_sha256={self.weights_sha256[:16] or 'none'!r}"


def load_state_dict_strict(net: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``net`` (which may live on the meta device), as float32 CPU tensors.

    Every parameter and buffer of ``net`` must be present with the right shape, except BatchNorm's
    ``num_batches_tracked`` counters, which some checkpoints lack and inference never reads (they are
    set to 0). Keys ``net`` does not have are ignored: converters hand over whole checkpoints
    (heads, text towers, ...), and the completeness check on ``net``'s own keys is what matters.
    Errors name ``source`` and the offending keys.
    """
    expected = dict(net.state_dict(keep_vars=True))
    missing, bad_shape, bad_type = [], [], []
    final = {}
    for key, ref in expected.items():
        if key.endswith("num_batches_tracked"):
            final[key] = torch.zeros((), dtype=torch.long)
            continue
        value = state.get(key)
        if value is None:
            missing.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            bad_type.append(f"{key} ({type(value).__name__})")
            continue
        if tuple(value.shape) != tuple(ref.shape):
            bad_shape.append(f"{key}: {tuple(value.shape)} instead of {tuple(ref.shape)}")
            continue
        if not value.is_floating_point():
            bad_type.append(f"{key} (dtype {value.dtype})")
            continue
        # No copy when already float32/CPU/contiguous: the checkpoint dict is discarded after loading.
        final[key] = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[:5]})")
    if bad_shape:
        problems.append(f"{len(bad_shape)} tensors of the wrong shape (first: {bad_shape[:5]})")
    if bad_type:
        problems.append(f"{len(bad_type)} entries that are not float tensors (first: {bad_type[:5]})")
    if problems:
        raise ValueError(f"{source} does not fit the network: " + "; ".join(problems))
    net.load_state_dict(final, strict=True, assign=True)
    for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
        if tensor.is_meta:
            raise ValueError(f"{source}: '{name}' was not loaded")  # a module kept a tensor outside state_dict
    net.requires_grad_(False)


def module_state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict: per entry, key (UTF-8), NUL, dtype name, NUL, shape as
    little-endian int64, raw little-endian bytes. Used for user-registered extractors, whose weights
    come from their builder rather than from a file."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(key.encode("utf-8") + b"\0" + str(t.dtype).encode("ascii") + b"\0")
        digest.update(np.asarray(tuple(t.shape), dtype="<i8").tobytes())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()

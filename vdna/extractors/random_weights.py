"""Deterministic weights of ``rand_resnet50``, identical on every machine and library version.

The generator is SplitMix64 written with NumPy uint64 arithmetic (which wraps modulo 2**64), not
torch's or NumPy's RNG, whose streams may change between versions.

Scheme (``SEED = 20230618``; tensors in the canonical order of ``ResNet50Features().state_dict()``,
BatchNorm ``num_batches_tracked`` counters excluded, numbered k = 0, 1, ...):

- element i (row-major) of tensor k uses the SplitMix64 output for counter
  ``n = k * 2**32 + i + 1``: ``z = SEED + n * 0x9E3779B97F4A7C15 (mod 2**64)``, then
  ``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31``;
- ``u = (z >> 11) * 2**-53`` is uniform on [0, 1) (exact in float64);
- convolution weights are Kaiming-uniform for ReLU: ``w = sqrt(6 / fan_in) * (2u - 1)``, computed in
  float64 and rounded once to float32 (IEEE operations only, so the bits are reproducible);
- BatchNorm: weight 1, bias 0, running_mean 0, running_var 1, except: the stem's ``bn1`` has
  running_var 2 (its convolution doubles the variance of a unit-variance, non-ReLU input), and the
  last BatchNorm of each residual branch (``bn3``) and of each shortcut projection
  (``downsample.1``) has running_var 4, which halves the scale of both summands of a block. Without
  it the block outputs grow by about 1.35x per block (std ~30 at ``layer4_2`` for unit-variance
  noise input); with it every hooked layer keeps a std between about 0.8 and 1.6.

``weights_sha256`` pins the result: SHA-256 over, for each tensor in canonical order, the key in
UTF-8, a NUL byte, the shape as little-endian int64 values, and the float32 little-endian data.
"""
import hashlib
from collections import OrderedDict
from typing import Dict, Tuple

import numpy as np
import torch

SEED = 20230618
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64_uniform(seed: int, stream: int, count: int) -> np.ndarray:
    """``count`` float64 uniforms on [0, 1) for stream ``stream`` (see the module docstring)."""
    if not (0 <= count < 2**32 and 0 <= stream < 2**31):
        raise ValueError(f"stream {stream} / count {count} out of range for the counter layout")
    n = np.arange(1, count + 1, dtype=np.uint64)
    n += np.uint64(stream) << np.uint64(32)
    z = n * _GAMMA  # wraps modulo 2**64
    z += np.uint64(seed % 2**64)
    z ^= z >> np.uint64(30)
    z *= _MUL1
    z ^= z >> np.uint64(27)
    z *= _MUL2
    z ^= z >> np.uint64(31)
    z >>= np.uint64(11)
    return z.astype(np.float64) * (2.0 ** -53)


def _running_var(key: str) -> float:
    if key == "bn1.running_var":
        return 2.0
    if ".bn3." in key or ".downsample.1." in key:
        return 4.0
    return 1.0


def canonical_keys(net: torch.nn.Module):
    """(key, shape) pairs of ``net``'s state dict in canonical order, without ``num_batches_tracked``."""
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]


def generate_state(keys, seed: int = SEED) -> "OrderedDict[str, torch.Tensor]":
    """The generated float32 tensors for the given canonical (key, shape) list."""
    state = OrderedDict()
    for k, (key, shape) in enumerate(keys):
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) == 4 and leaf == "weight":  # convolution
            fan_in = shape[1] * shape[2] * shape[3]
            u = splitmix64_uniform(seed, k, int(np.prod(shape)))
            values = (np.sqrt(6.0 / fan_in) * (2.0 * u - 1.0)).astype(np.float32).reshape(shape)
        elif leaf in ("weight", "running_var"):
            values = np.full(shape, _running_var(key) if leaf == "running_var" else 1.0, dtype=np.float32)
        elif leaf in ("bias", "running_mean"):
            values = np.zeros(shape, dtype=np.float32)
        else:
            raise ValueError(f"rand_resnet50: no generation rule for '{key}' of shape {shape}")
        state[key] = torch.from_numpy(values)
    return state


def state_sha256(state) -> str:
    """The canonical checksum of a generated state (see the module docstring)."""
    digest = hashlib.sha256()
    for key, tensor in state.items():
        arr = tensor.detach().cpu().numpy()
        digest.update(key.encode("utf-8") + b"\0")
        digest.update(np.asarray(arr.shape, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return digest.hexdigest()


def rand_resnet50_state(seed: int = SEED) -> Tuple[Dict[str, torch.Tensor], str]:
    """Generate the ``rand_resnet50`` state dict and its checksum."""
    from .resnet import ResNet50Features

    with torch.device("meta"):
        keys = canonical_keys(ResNet50Features())
    state = generate_state(keys, seed)
    return state, state_sha256(state)

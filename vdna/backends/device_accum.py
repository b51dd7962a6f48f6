"""Accumulation on the extractor's device, with exactly the C core's rules.

A CUDA run reduces each batch's activations where they are (histogram counts, Gaussian moments,
layer covariance, min/max) and reads the states back once at the end, in the formats the core's
Python accumulators take, so they merge with host-side accumulations (other shards, resumed runs).
The same code runs on the CPU device, where the tests compare it with the core.

The rules (docs/design.md "Normative semantics"), identical in csrc/torch/vdna_shim.cpp:

- histogram: lo=1.2*min, hi=1.2*max, centre=(lo+hi)/2, half=(hi-lo)/2+1e-8 (host, float64);
  t=((x-centre)/half+1)*(B/2) in float64 (a real division, never a reciprocal; the core's
  ((...)*B)*0.5 rounds identically), clamped to [0, B-1] and truncated, which is the core's
  bin=min(B-1, floor(clamp(t, 0, B))); NaN goes to an extra column (counted, never binned); +-Inf
  clamp to the end bins. One flat index ``neuron*(B+1)+bin`` (int32 where it fits) and one
  ``index_add_`` per layer (``bincount`` would synchronise with the host to size its output).
  Passes over the layer: 6 float64 element-wise, 2 integer, 1 scatter; no float64 copy of it;
- moments: per-image means over the samples in float64, then the batch's mean / M2 merged into
  the running (count, mean, M2) with Chan et al.'s formula;
- covariance: the same per-image means, shifted by the first batch's mean; running sum and X^T X
  (matmul) in float64; mean = shift + sum/n, M2 = X^T X - sum sum^T / n at read-out;
- ranges: per-neuron min/max over all values with NaN ignored (and counted), Inf kept;
- NaN report: the number of NaN values per neuron, for every statistic (the core counts them for
  moments, covariance and ranges alike), merged with the state.

Activation ranges are checked as the core checks them (finite, min <= max, and 1.2 x the range
representable in float64); a range the core rejects would index outside the counts on the device.

Image counts are host integers (batch sizes are known on the host), so nothing here waits for the
device until ``states()``.
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..accumulator import LAYOUTS, check_layer_shape

__all__ = ["LayerSpec", "LayerState", "TorchDeviceAccumulators", "normalisation_constants", "check_spec_shape"]


@dataclass(frozen=True)
class LayerSpec:
    """What to accumulate on the device for one layer.

    ``hist_mins``/``hist_maxs`` (length ``n_neurons``, the calibrated activation ranges) and
    ``bins`` switch histograms on; ``moments``, ``cov`` and ``ranges`` switch the others on.
    """

    layer: str
    layout: str
    n_neurons: int
    hist_mins: Optional[np.ndarray] = None
    hist_maxs: Optional[np.ndarray] = None
    bins: int = 0
    moments: bool = False
    cov: bool = False
    ranges: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layer {self.layer!r}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if int(self.n_neurons) < 1:
            raise ValueError(f"layer {self.layer!r}: n_neurons must be >= 1, got {self.n_neurons}")
        if (self.hist_mins is None) != (self.hist_maxs is None):
            raise ValueError(f"layer {self.layer!r}: give both hist_mins and hist_maxs, or neither")
        if self.hist_mins is not None:
            mins = np.ascontiguousarray(self.hist_mins, dtype=np.float64)
            maxs = np.ascontiguousarray(self.hist_maxs, dtype=np.float64)
            for name, a in (("hist_mins", mins), ("hist_maxs", maxs)):
                if a.shape != (self.n_neurons,):
                    raise ValueError(f"layer {self.layer!r}: {name} must have shape ({self.n_neurons},), got {a.shape}")
            with np.errstate(over="ignore", invalid="ignore"):
                lo, hi = 1.2 * mins, 1.2 * maxs  # the core's normalisation (csrc/core/hist.c) must stay finite
                bad = ~(np.isfinite(mins) & np.isfinite(maxs) & (mins <= maxs) & np.isfinite(lo) & np.isfinite(hi)
                        & np.isfinite(hi - lo) & np.isfinite(lo + hi))
            if bad.any():
                j = int(np.argmax(bad))
                raise ValueError(f"layer {self.layer!r}: invalid activation range [{mins[j]:g}, {maxs[j]:g}] at neuron "
                                 f"{j} (ranges must be finite with min <= max, and 1.2 x the range representable "
                                 "in float64, as the core requires)")
            if int(self.bins) < 1:
                raise ValueError(f"layer {self.layer!r}: bins must be >= 1, got {self.bins}")
            object.__setattr__(self, "hist_mins", mins)
            object.__setattr__(self, "hist_maxs", maxs)

    @property
    def hist(self) -> bool:
        return self.hist_mins is not None


@dataclass
class LayerState:
    """A layer's accumulated state read back from the device, in the core's formats."""

    layer: str
    layout: str
    num_images: int
    hist_counts: Optional[np.ndarray] = None  # (C, B) int64
    hist_nan_counts: Optional[np.ndarray] = None  # (C,) int64
    moments: Optional[Tuple[int, np.ndarray, np.ndarray]] = None  # (count, mean (C,), m2 (C,))
    cov: Optional[Tuple[int, np.ndarray, np.ndarray]] = None  # (count, mean (C,), m2 (C, C))
    ranges: Optional[Tuple[int, np.ndarray, np.ndarray]] = None  # (num_images, mins, maxs)
    range_nan_counts: Optional[np.ndarray] = None  # (C,) int64
    nan_counts: Optional[np.ndarray] = None  # (C,) int64 NaN values per neuron (moments, covariance)

    def merge_into(self, hist=None, moments=None, cov=None, ranges=None) -> None:
        """Merge this state into the core's accumulators (``vdna._core`` HistAccumulator, ...).

        Each accumulator given must match the layer (neurons, bins, ranges, layout); the core
        raises ValueError otherwise. States of zero images are skipped.
        """
        if hist is not None:
            _require(self.hist_counts, "histograms", self.layer)
            hist.add_counts(self.hist_counts, self.hist_nan_counts, self.num_images)
        for acc, state, what in ((moments, self.moments, "moments"), (cov, self.cov, "covariance")):
            if acc is None:
                continue
            _require(state, what, self.layer)
            if state[0] > 0:
                tmp = type(acc)(acc.n_neurons, layout=acc.layout)
                tmp.set_state(*state, nan_counts=self.nan_counts)
                acc.merge(tmp)
        if ranges is not None:
            _require(self.ranges, "ranges", self.layer)
            num, mins, maxs = self.ranges
            if num > 0:
                # A neuron that saw only NaN holds min = +inf > max = -inf on the device; the core's
                # state form for "no value" is NaN for both.
                none = mins > maxs
                mins, maxs = np.where(none, np.nan, mins), np.where(none, np.nan, maxs)
                tmp = type(ranges)(ranges.n_neurons, layout=ranges.layout)
                tmp.set_state(num, mins, maxs, nan_counts=self.range_nan_counts)
                ranges.merge(tmp)


def _require(value, what, layer):
    if value is None:
        raise ValueError(f"layer {layer!r}: {what} were not accumulated on the device")


def normalisation_constants(mins: np.ndarray, maxs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(centre, half) of the histogram normalisation, in float64, in the core's operation order."""
    lo = 1.2 * np.asarray(mins, dtype=np.float64)
    hi = 1.2 * np.asarray(maxs, dtype=np.float64)
    return (lo + hi) / 2.0, (hi - lo) / 2.0 + 1e-8


def check_spec_shape(spec: LayerSpec, shape) -> None:
    """Raise ValueError when activations of ``shape`` do not fit the spec's layout and neurons."""
    check_layer_shape(spec.layer, spec.layout, spec.n_neurons, shape)


class _TorchLayer:
    def __init__(self, spec: LayerSpec, device):
        import torch

        self.spec = spec
        self.num_images = 0
        c = spec.n_neurons
        f64 = dict(dtype=torch.float64, device=device)
        if spec.hist:
            centre, half = normalisation_constants(spec.hist_mins, spec.hist_maxs)
            self.centre = torch.as_tensor(centre).to(**f64)
            self.half = torch.as_tensor(half).to(**f64)
            # int32 flat indices where every index fits (half the bytes of int64)
            idx_dtype = torch.int32 if c * (spec.bins + 1) < 2**31 else torch.int64
            self.offsets = torch.arange(c, dtype=torch.int64, device=device).mul_(spec.bins + 1).to(idx_dtype)
            self.counts = torch.zeros(c * (spec.bins + 1), dtype=torch.int64, device=device)
        if spec.ranges:
            self.r_min = torch.full((c,), float("inf"), **f64)
            self.r_max = torch.full((c,), float("-inf"), **f64)
        self.nan_count = torch.zeros(c, dtype=torch.int64, device=device)  # NaN values per neuron

    def accumulate(self, t, ws: "_Workspace") -> None:
        import torch

        spec = self.spec
        check_spec_shape(spec, tuple(t.shape))
        c = spec.n_neurons
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            t = t.to(torch.float32)
        # The activations are read in their own dtype: every float64 value below is computed from
        # them with exact conversions, without a float64 copy of the whole layer (except for the
        # per-image means, see below). Workspace buffers are reused across layers and batches.
        if spec.layout == "channels":
            x = t.reshape(t.shape[0], c, -1)  # a view for contiguous activations
            bshape, sample_dim = (1, c, 1), 2
        else:
            x = t
            bshape, sample_dim = (1, 1, c), 1
        n = x.shape[0]
        dims = (0, sample_dim)
        if spec.moments or spec.cov or spec.ranges:
            nan = torch.ne(x, x, out=ws.take("nan", torch.bool, x.shape))
            self.nan_count.add_(nan.sum(dims))  # the core's per-neuron NaN report
        if spec.hist:
            # The core's rule t = (((x - centre) / half + 1) * B) * 0.5 in float64, in 6 passes:
            # fl(fl(s*B)*0.5) == fl(s*(B/2)) (B/2 and 1/2 are exact scalings); clamping t to
            # [0, B-1] then truncating equals the core's clamp to [0, B], floor, cap at B-1; NaN
            # survives the clamp and goes to column B.
            B = spec.bins
            z = torch.sub(x, self.centre.view(bshape), out=ws.take("z", torch.float64, x.shape))
            z.div_(self.half.view(bshape))  # a true division, never a reciprocal
            z.add_(1.0).mul_(B * 0.5).clamp_(0.0, B - 1.0)
            z.nan_to_num_(nan=float(B))
            idx = ws.take("idx", self.offsets.dtype, x.shape).copy_(z)  # truncation: z >= 0 holds integers
            idx.add_(self.offsets.view(bshape))
            idx = idx.view(-1)
            self.counts.index_add_(0, idx, ws.ones(idx.shape[0]))
        if spec.moments or spec.cov:
            # Per-image means in float64 (torch reductions with a dtype convert the whole input
            # anyway, so the conversion goes into a reused buffer instead of a fresh tensor).
            img = ws.take("x", torch.float64, x.shape).copy_(x).mean(sample_dim)
            if spec.moments:
                bm = img.mean(0)
                bm2 = (img - bm).square().sum(0)
                if self.num_images == 0:
                    self.m_mean, self.m_m2 = bm, bm2
                else:
                    na, nb = float(self.num_images), float(n)
                    nt = na + nb
                    delta = bm - self.m_mean
                    self.m_mean = self.m_mean + delta * (nb / nt)
                    self.m_m2 = self.m_m2 + bm2 + delta.square() * (na * nb / nt)
            if spec.cov:
                if self.num_images == 0:
                    self.c_shift = img.mean(0)
                    self.c_sum = torch.zeros_like(self.c_shift)
                    self.c_sq = torch.zeros((c, c), dtype=torch.float64, device=img.device)
                d = img - self.c_shift
                self.c_sum.add_(d.sum(0))
                self.c_sq.addmm_(d.t(), d)
        if spec.ranges:
            # min/max are exact in the activations' dtype; NaN is skipped by mapping it to +-inf.
            inf = float("inf")
            m = ws.take("m", x.dtype, x.shape)
            lo = torch.nan_to_num(x, nan=inf, posinf=inf, neginf=-inf, out=m).amin(dims).to(torch.float64)
            self.r_min = torch.minimum(self.r_min, lo)
            hi = torch.nan_to_num(x, nan=-inf, posinf=inf, neginf=-inf, out=m).amax(dims).to(torch.float64)
            self.r_max = torch.maximum(self.r_max, hi)
        self.num_images += n

    def state(self) -> LayerState:
        import torch

        spec, c, n = self.spec, self.spec.n_neurons, self.num_images
        host = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731
        st = LayerState(layer=spec.layer, layout=spec.layout, num_images=n)
        if spec.hist:
            all_counts = host(self.counts.view(c, spec.bins + 1))
            st.hist_counts = np.ascontiguousarray(all_counts[:, : spec.bins])
            st.hist_nan_counts = np.ascontiguousarray(all_counts[:, spec.bins])
        zeros = np.zeros(c)
        if spec.moments or spec.cov:
            st.nan_counts = host(self.nan_count)
        if spec.moments:
            st.moments = (n, host(self.m_mean), host(self.m_m2)) if n else (0, zeros, zeros.copy())
        if spec.cov:
            if n:
                mean = self.c_shift + self.c_sum / float(n)
                m2 = self.c_sq - torch.outer(self.c_sum, self.c_sum) / float(n)
                st.cov = (n, host(mean), host(m2))
            else:
                st.cov = (0, zeros, np.zeros((c, c)))
        if spec.ranges:
            st.ranges = (n, host(self.r_min), host(self.r_max))
            st.range_nan_counts = host(self.nan_count)
        return st


class _Workspace:
    """Scratch buffers shared by all layers of one accumulator, grown to the largest layer and reused.

    Layers are processed one after another (in stream order on a GPU), so one set suffices.
    """

    def __init__(self, device):
        self.device = device
        self._bufs = {}
        self._ones = None

    def take(self, key, dtype, shape):
        """A tensor of ``shape`` and ``dtype`` over buffer ``key`` (contents undefined)."""
        import torch

        numel = 1
        for d in shape:
            numel *= int(d)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self._bufs[key] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(tuple(shape))

    def ones(self, n):
        """An int64 vector of ``n`` ones (an expanded single element)."""
        import torch

        if self._ones is None:
            self._ones = torch.ones(1, dtype=torch.int64, device=self.device)
        return self._ones.expand(n)


class TorchDeviceAccumulators:
    """Device accumulation with torch ops (the eager backend's; the shim has the same in C++)."""

    def __init__(self, specs: Iterable[LayerSpec], device):
        self.specs = list(specs)
        names = [s.layer for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"layer specs name a layer twice: {names}")
        self._layers = [_TorchLayer(s, device) for s in self.specs]
        self._ws = _Workspace(device)

    def accumulate(self, outputs: Dict[str, object]) -> None:
        """Add one batch of activations (layer -> tensor on the device) to every layer's state."""
        import torch

        with torch.inference_mode():
            missing = [s.layer for s in self.specs if s.layer not in outputs]
            if missing:
                raise ValueError(f"the extractor produced no layer {missing[0]!r} (it has {sorted(outputs)})")
            for layer in self._layers:
                check_spec_shape(layer.spec, tuple(outputs[layer.spec.layer].shape))
            for layer in self._layers:
                layer.accumulate(outputs[layer.spec.layer], self._ws)

    def states(self) -> Dict[str, LayerState]:
        """Read every layer's state back to the host (synchronises once)."""
        import torch

        with torch.inference_mode():
            return {layer.spec.layer: layer.state() for layer in self._layers}

"""Turning NumPy arrays and PIL images of any mode into RGB pixels on the 0..255 scale.

The canonical form handed to cropping and resizing is either a PIL image of mode ``"RGB"`` or an
``(H, W, 3)`` NumPy array that is ``uint8`` or ``float32`` with values in [0, 255].

Float images follow ONE rule, applied per image (never per batch, so the same image gives the
same pixels in any batch): finite and non-negative; maximum <= 1 means the [0, 1] scale
(multiplied by 255, in float64, then rounded to float32), maximum in (1, 255] is used as is,
anything else is rejected. :func:`array_to_rgb` applies it to one image array (file decoding),
:func:`scale_float_batch` to a batch tensor (``VDNAStream.update``).
"""
import numpy as np
from PIL import Image

# 16-bit values v map to v / 257 so that 0 -> 0 and 65535 -> 255 exactly.
_UINT16_TO_8 = 257.0
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _array_error(index, arr, problem):
    where = "image array" if index is None else f"image array [{index}]"
    return ValueError(f"{where} (shape {tuple(arr.shape)}, dtype {arr.dtype}): {problem}")


_UNIT_SCALE_MAX = 1.0  # a float image whose maximum is <= this is on the [0, 1] scale
_PIXEL_MAX = 255.0


def _float_scale(lo, hi, index, arr):
    """Scale factor for a float image with finite minimum ``lo`` and maximum ``hi``."""
    if lo < 0:
        raise _array_error(
            index, arr, f"negative values (min {lo:g}); expected [0, 1] or [0, 255] (un-normalise the image first)"
        )
    if hi <= _UNIT_SCALE_MAX:
        return _PIXEL_MAX
    if hi <= _PIXEL_MAX:
        return 1.0
    raise _array_error(index, arr, f"values up to {hi:g}; expected floats in [0, 1] or [0, 255]")


def scale_float_batch(t, deferred=False):
    """A float torch tensor (N, 3, H, W) as float32 on 0..255, each image by the float rule above.

    Returns ``(pixels, ok)``. With ``deferred=False`` the images are validated now (a ValueError
    names the first bad image's index) and ``ok`` is None. With ``deferred=True`` (tensors on an
    accelerator) nothing waits for the device: ``ok`` is a 0-dim bool tensor on the device, true
    when every image is valid, for the caller to check once later; invalid images are then scaled
    by 1 and must be discarded.
    """
    import torch

    n = t.shape[0]
    if n == 0 or t.numel() == 0:
        return t.to(torch.float32), (torch.ones((), dtype=torch.bool, device=t.device) if deferred else None)
    flat = t.reshape(n, -1)
    lo, hi = flat.amin(1), flat.amax(1)
    finite = torch.isfinite(flat).all(1)
    if deferred:
        ok = (finite & (lo >= 0) & (hi <= _PIXEL_MAX)).all()
        scale = torch.where(hi <= _UNIT_SCALE_MAX, _PIXEL_MAX, 1.0).to(torch.float64)
    else:
        scales = []
        for i in range(n):
            if not bool(finite[i]):
                raise _array_error(i, t[i], "contains NaN or infinite values")
            scales.append(_float_scale(float(lo[i]), float(hi[i]), i, t[i]))
        ok, scale = None, torch.tensor(scales, dtype=torch.float64, device=t.device)
    # float64 so that k / 255 comes back as k before rounding to float32 (as array_to_rgb does)
    return (t.to(torch.float64) * scale.view(n, 1, 1, 1)).to(torch.float32), ok


def array_to_rgb(arr, index=None):
    """Validate an image array and return it as ``(H, W, 3)`` ``uint8`` or ``float32`` RGB on 0..255.

    Accepted shapes: ``(H, W)`` and ``(H, W, 1)`` grayscale (copied to the three channels),
    ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (alpha dropped, not composited, as PIL's ``convert("RGB")``).

    Accepted values:

    * ``uint8``: used as is (a ``uint8`` array of 0/1 stays nearly black: the [0, 1] rule below is
      for floats only);
    * other integer types: values must lie in [0, 255], used as is;
    * floats: must be finite and non-negative. **If the maximum is <= 1 the image is taken to be on
      the [0, 1] scale and multiplied by 255; if the maximum is in (1, 255] it is used as is.**
      Values are kept as float32, not rounded to integers.

    Anything else (bool, complex, object, other shapes, empty, NaN/Inf, out-of-range values) raises
    ``TypeError``/``ValueError`` naming the array's index, shape and dtype. A ``uint8`` RGB input is
    returned without copying.
    """
    if not isinstance(arr, np.ndarray):
        where = "image" if index is None else f"image [{index}]"
        raise TypeError(f"{where}: expected a NumPy array, got {type(arr).__name__}")
    kind = arr.dtype.kind
    if kind == "b":
        raise _array_error(index, arr, "boolean arrays are not images (convert to uint8 0/255)")
    if kind not in "uif":
        raise _array_error(index, arr, "unsupported dtype (use uint8, or float in [0, 1] or [0, 255])")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        channels = arr.shape[2]
    elif arr.ndim == 2:
        channels = 1
    else:
        raise _array_error(index, arr, "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _array_error(index, arr, "empty image")

    pixels = arr if arr.ndim == 2 else (arr[:, :, 0] if channels == 1 else arr[:, :, :3])
    if kind == "u" and arr.dtype.itemsize == 1:
        rgb = pixels
    elif kind in "ui":
        lo, hi = int(pixels.min()), int(pixels.max())
        if lo < 0 or hi > 255:
            raise _array_error(
                index, arr, f"integer values in [{lo}, {hi}]; expected [0, 255] (divide 16-bit images by 257)"
            )
        rgb = pixels.astype(np.uint8)
    else:
        if not np.isfinite(pixels).all():
            raise _array_error(index, arr, "contains NaN or infinite values")
        scale = _float_scale(float(pixels.min()), float(pixels.max()), index, arr)
        if scale == 1.0:
            rgb = pixels.astype(np.float32)
        else:  # scale in float64 so that k / 255 comes back as k before rounding to float32
            rgb = (pixels.astype(np.float64) * scale).astype(np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return rgb


def pil_to_rgb(img):
    """Return ``img`` as a PIL ``"RGB"`` image, or as a float32 RGB array for 16-bit/float modes.

    8-bit modes (L, P, PA, LA, RGBA, CMYK, YCbCr, 1, ...) go through ``convert("RGB")`` like the
    reference package (alpha dropped, not composited). 16-bit grayscale is scaled by 1/257 to
    0..255 instead of being clipped; ``"I"`` (32-bit integer) is used as is when its values lie in
    [0, 255] and scaled by 1/257 when they lie in [0, 65535]; ``"F"`` follows the float-array rule
    of :func:`array_to_rgb`. Raises ``ValueError`` for values outside these ranges.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(img).astype(np.float32) / np.float32(_UINT16_TO_8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "I":
        values = np.asarray(img)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"32-bit integer image with values in [{lo}, {hi}]; expected [0, 65535]")
        gray = values.astype(np.float32)
        if hi > 255:
            gray /= np.float32(_UINT16_TO_8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        return array_to_rgb(np.asarray(img))
    if mode in ("P", "PA") and "transparency" in img.info:
        # Going through RGBA gives the same colours and avoids Pillow's palette-transparency warning.
        img = img.convert("RGBA")
    return img.convert("RGB")


def to_rgb(image):
    """Canonical RGB form of a PIL image (:func:`pil_to_rgb`) or an image array (:func:`array_to_rgb`).

    Apply it once to a decoded image: the float rule of :func:`array_to_rgb` is not idempotent for
    arrays whose maximum is <= 1.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    return array_to_rgb(image)

"""Resizing RGB images to the extractor's input size, giving ``(3, H, W)`` float32 on 0..255.

Two modes:

``"clean"`` (default; the reference package's and clean-fid's "clean" resize)
    Each channel is converted to a 32-bit float PIL image (mode ``"F"``) and resized with PIL's
    bicubic filter, which computes in double precision without rounding to integers; the result
    is clipped to [0, 255] and kept as float32. This matches the reference package's output to
    float32 rounding (well within 1e-3 on the 0..255 scale).

``"fast"``
    The RGB image is resized in one pass by PIL's 8-bit bicubic filter with ``reducing_gap``
    (:data:`FAST_REDUCING_GAP`: large downscales first box-reduce by an integer factor), and JPEG
    files are decoded at a reduced scale (``Image.draft``: libjpeg's DCT scaling) when they are at
    least twice as large as needed. Numerically it differs from "clean" by the rounding of the
    input (float images) and of the output to integers (up to 0.5 each), by PIL's fixed-point
    filter coefficients, and, for large downscales, by the box pre-reduction or DCT scaling. On
    natural-looking test images the mean absolute difference is 0.3-0.6 grey levels, with up to
    about 10 at sharp edges of JPEGs decoded at reduced scale. Features, and hence DNAs, are then
    slightly different from "clean" ones: compare DNAs made with the same mode.
"""
import numpy as np
from PIL import Image

from .crop import check_crop_mode
from .rgb import pil_to_rgb

RESIZE_MODES = ("clean", "fast")
FAST_REDUCING_GAP = 3.0
_BICUBIC = Image.Resampling.BICUBIC


def check_resize_mode(mode):
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")


def check_size(size):
    """``(H, W)`` as a tuple of positive ints (an int means a square)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    return int(height), int(width)


def jpeg_draft_request(size, crop_to_square):
    """``(width, height)`` to pass to ``Image.draft`` in "fast" mode.

    libjpeg then picks the largest scale 1/2, 1/4 or 1/8 that keeps the decoded image at least this
    large, i.e. large enough that the crop still covers the output size in both directions.
    """
    height, width = check_size(size)
    check_crop_mode(crop_to_square)
    if crop_to_square == "none":
        return width, height
    side = max(height, width)
    return side, side


def _check_out(out, height, width):
    if out is None:
        return np.empty((3, height, width), dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (3, height, width):
        raise ValueError(
            f"out must be a float32 array of shape (3, {height}, {width}), got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    return out


def _as_rgb_input(image):
    """A PIL RGB image, or an (H, W, 3) uint8/float32 array; anything else is an error."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image or a NumPy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or not (image.dtype == np.uint8 or image.dtype.kind == "f"):
        raise ValueError(
            f"expected an (H, W, 3) uint8 or float array on the 0..255 scale, got shape {image.shape}, "
            f"dtype {image.dtype} (vdna.sources.array_to_rgb converts other arrays)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def _float_bands(rgb):
    """The three channels as PIL mode-"F" images (exact: 8-bit values convert to float exactly)."""
    if isinstance(rgb, Image.Image):
        for band in rgb.split():
            yield band.convert("F")
    elif rgb.dtype == np.uint8:
        for c in range(3):
            yield Image.fromarray(np.ascontiguousarray(rgb[:, :, c])).convert("F")
    else:
        for c in range(3):
            yield Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32))


def resize_image(image, size, mode="clean", out=None):
    """Resize an RGB image to ``size = (H, W)``; returns ``(3, H, W)`` float32 on the 0..255 scale.

    ``image``: a PIL image (modes other than RGB are converted as :func:`vdna.sources.pil_to_rgb`
    does) or an ``(H, W, 3)`` ``uint8`` or float array on the 0..255 scale (no [0, 1] detection
    here: :func:`vdna.sources.array_to_rgb` does that for user arrays). ``mode``: "clean" or
    "fast", see the module docstring. ``out``: optional float32 ``(3, H, W)`` array (e.g. a slot of
    a batch buffer) written in place and returned.
    """
    height, width = check_size(size)
    check_resize_mode(mode)
    rgb = _as_rgb_input(image)
    out = _check_out(out, height, width)
    if mode == "clean":
        for c, band in enumerate(_float_bands(rgb)):
            np.clip(np.asarray(band.resize((width, height), _BICUBIC)), 0.0, 255.0, out=out[c])
        return out
    if not isinstance(rgb, Image.Image):
        if rgb.dtype != np.uint8:
            rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        rgb = Image.fromarray(np.ascontiguousarray(rgb))
    resized = rgb.resize((width, height), _BICUBIC, reducing_gap=FAST_REDUCING_GAP)
    out[...] = np.asarray(resized).transpose(2, 0, 1)
    return out

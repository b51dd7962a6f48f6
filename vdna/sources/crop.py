"""Cropping an image to a square before it is resized ("crop_to_square_pre_resize")."""
import numpy as np
from PIL import Image

CROP_MODES = ("none", "center", "random")


def check_crop_mode(mode):
    if mode not in CROP_MODES:
        raise ValueError(f"crop_to_square must be one of {CROP_MODES}, got {mode!r}")


def crop_rng(seed, index):
    """The generator that places the random crop of image ``index``.

    Seeded from ``(seed, index)`` alone, so an image's crop does not depend on batching, thread
    count or which other images are read.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((int(seed), int(index)))))


def square_crop_box(height, width, mode, rng=None):
    """``(top, left, crop_height, crop_width)`` of the crop for an image of this size.

    "none" keeps the whole image; "center" takes the central square of side ``min(height, width)``
    (for an odd difference the extra row/column is left on the bottom/right, as the reference);
    "random" takes a square at an offset drawn uniformly from every valid position along the long
    side (``rng`` from :func:`crop_rng`).
    """
    check_crop_mode(mode)
    if mode == "none" or height == width:
        return 0, 0, height, width
    side = min(height, width)
    if mode == "center":
        return (height - side) // 2, (width - side) // 2, side, side
    if rng is None:
        raise ValueError("a random crop needs a generator (see crop_rng)")
    offset = int(rng.integers(0, max(height, width) - side + 1))
    if height > width:
        return offset, 0, side, side
    return 0, offset, side, side


def crop_to_square(image, mode, seed=0, index=0):
    """Crop a PIL image or an ``(H, W, ...)`` array as :func:`square_crop_box` says.

    Arrays are cropped as views (no copy). ``seed``/``index`` only matter for "random".
    """
    check_crop_mode(mode)
    if mode == "none":
        return image
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[:2]
    if height == width:
        return image
    rng = crop_rng(seed, index) if mode == "random" else None
    top, left, h, w = square_crop_box(height, width, mode, rng)
    if isinstance(image, Image.Image):
        return image.crop((left, top, left + w, top + h))
    return image[top : top + h, left : left + w]

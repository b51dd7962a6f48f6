"""Image sources for vdna: listing, decoding, cropping, resizing and batching (NumPy + Pillow only).

Typical use::

    from vdna.sources import open_source, iter_batches
    src = open_source("images/", num_images=1000, shuffle=True, seed=0)
    for batch in iter_batches(src, size=(224, 224), batch_size=64, num_workers=4):
        batch.images  # (n, 3, 224, 224) float32, 0..255
"""
from .batching import Batch, iter_batches, load_image_into
from .crop import CROP_MODES, crop_rng, crop_to_square, square_crop_box
from .errors import ImageReadError, SkippedImageWarning
from .listing import IMAGE_EXTENSIONS
from .readers import (
    ArrayImageSource,
    FileImageSource,
    ImageSource,
    TarImageSource,
    ZipImageSource,
    open_source,
    select_positions,
)
from .shards import TarShards, expand_braces, iter_shard_batches
from .resize import FAST_REDUCING_GAP, RESIZE_MODES, jpeg_draft_request, resize_image
from .rgb import array_to_rgb, pil_to_rgb, to_rgb

__all__ = [
    "ArrayImageSource",
    "Batch",
    "CROP_MODES",
    "FAST_REDUCING_GAP",
    "FileImageSource",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageSource",
    "RESIZE_MODES",
    "SkippedImageWarning",
    "TarImageSource",
    "TarShards",
    "ZipImageSource",
    "array_to_rgb",
    "crop_rng",
    "crop_to_square",
    "expand_braces",
    "iter_batches",
    "iter_shard_batches",
    "jpeg_draft_request",
    "load_image_into",
    "open_source",
    "pil_to_rgb",
    "resize_image",
    "select_positions",
    "square_crop_box",
    "to_rgb",
]

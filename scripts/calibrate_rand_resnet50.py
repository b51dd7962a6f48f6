"""Calibrate the activation ranges shipped with ``rand_resnet50`` (vdna/data/).

The calibration set is procedural (vdna.procedural), so anyone can rebuild the file bit for bit:
``CALIBRATION_IMAGES`` images of each style ("base", "close", "shifted"), 256x256, seed
``CALIBRATION_SEED``, resized to 224 with the "clean" resize, no crop, on the CPU.

    python scripts/calibrate_rand_resnet50.py            # rewrites vdna/data/rand_resnet50_activation_ranges.json

DNAs binned with other ranges are not comparable with ones binned with these: changing this
recipe changes every rand_resnet50 histogram, so do it only with a format/version note.
"""
import argparse
import time

from vdna import procedural
from vdna.calibration import calibrate
from vdna.extractors import shipped_ranges_path

CALIBRATION_SEED = 20231121
CALIBRATION_IMAGES = 128  # per style
IMAGE_SIZE = (256, 256)


def calibration_images(n_per_style: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> list:
    """The calibration set, in order: each style's images in turn."""
    images = []
    for style in procedural.STYLES:
        images.extend(procedural.make_images(n_per_style, seed=seed, style=style, size=IMAGE_SIZE))
    return images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(shipped_ranges_path()))
    parser.add_argument("--per-style", type=int, default=CALIBRATION_IMAGES)
    args = parser.parse_args(argv)
    start = time.time()
    images = calibration_images(args.per_style)
    vdna = calibrate(images, "rand_resnet50", output=args.output, batch_size=32, device="cpu",
                     num_workers=2, backend="eager", verbose=True)
    print(f"{vdna.num_images} images -> {args.output} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

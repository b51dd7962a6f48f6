"""Deterministic, procedurally generated images (no downloads, no data files).

Used to calibrate the activation ranges shipped with ``rand_resnet50``, by ``vdna demo`` and by
tests. Every image is a pure function of ``(seed, index, style)``: pixels come from a small
counter-based generator (SplitMix64 in NumPy uint64 arithmetic), so the set is identical on every
machine and NumPy version.

Styles
    ``"base"``     smooth colour gradients, soft discs and rectangles, sinusoidal textures;
    ``"close"``    the same recipe with other random draws (a different sample of the same "dataset");
    ``"shifted"``  a warmer palette, finer and stronger textures and added grain (another "dataset").

Attribute images (for customised comparisons, paper Sec. 5.3-5.4)
    ``make_attribute_image(index, attributes, seed, split)``: a random scene (gradient background, soft
    blobs, a faint grating) with any subset of the eight binary :data:`ATTRIBUTES` applied on top.
    The scene depends on ``(seed, split, index)`` only and each attribute's own random draws (angle,
    place, colour, grain) on ``(seed, split, index, attribute)`` only, so switching one attribute on or
    off changes nothing else. ``split="train"`` and ``split="held-out"`` draw from disjoint random
    streams: no held-out image shares a scene with a training image.
    ``attribute_table(n)`` says which attributes image ``index`` has: a balanced design in which every
    16 consecutive images hold every combination of any three attributes equally often and every 256
    consecutive images hold all 256 combinations once, so the images with and without one attribute
    have exactly the same mix of the others.

Generated images (a stand-in for a generator's output, paper Sec. 5.4 Fig. 7)
    ``make_generated_image(index, strength, attributes, seed, split)``: the attribute image of the same
    arguments with two artefacts typical of image generators, both scaled by ``strength`` in [0, 1]:
    blockiness (a blend with an 8x8-block upsampled copy, as from a low-resolution stage) and a
    period-2 checkerboard ripple (as from transposed convolutions). ``strength=0`` is the attribute
    image itself; the ground truth of a realism ranking is ``-strength``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write

STYLES = ("base", "close", "shifted")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = counter * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _Draws:
    """Uniform doubles in [0, 1) from SplitMix64 over a (seed, stream) counter."""

    def __init__(self, seed: int, stream: int):
        self._base = (np.uint64(seed & 0xFFFFFFFF) << np.uint64(32)) ^ np.uint64(stream & 0xFFFFFFFF)
        self._base = _splitmix64(np.array([self._base], dtype=np.uint64))[0]
        self._next = 0

    def uniform(self, n: int = 1, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        counter = np.arange(self._next, self._next + n, dtype=np.uint64) ^ self._base
        self._next += n
        bits = _splitmix64(counter) >> np.uint64(11)  # 53 random bits
        return low + (high - low) * (bits.astype(np.float64) * (1.0 / 9007199254740992.0))


_STYLE_STREAM = {"base": 0, "close": 1, "shifted": 2}


def make_image(index: int, seed: int = 0, style: str = "base", size: tuple = (256, 256)) -> np.ndarray:
    """One image as an (H, W, 3) uint8 array, a pure function of its arguments."""
    if style not in _STYLE_STREAM:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise ValueError(f"size must be at least 8x8, got {size}")
    draws = _Draws(seed, _STYLE_STREAM[style] * 1_000_003 + int(index))
    shifted = style == "shifted"
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")

    # Background: a linear gradient between two colours.
    c0, c1 = draws.uniform(3), draws.uniform(3)
    if shifted:  # warmer palette
        c0 = c0 * np.array([1.0, 0.6, 0.3]) + np.array([0.0, 0.1, 0.0])
        c1 = c1 * np.array([1.0, 0.7, 0.4])
    angle = draws.uniform(1, 0.0, 2 * np.pi)[0]
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]

    # Soft discs and rectangles.
    for _ in range(int(draws.uniform(1, 2, 7)[0])):
        cx, cy, r = draws.uniform(1)[0], draws.uniform(1)[0], draws.uniform(1, 0.05, 0.3)[0]
        colour = draws.uniform(3)
        if shifted:
            colour = colour * np.array([1.0, 0.5, 0.25])
        if draws.uniform(1)[0] < 0.5:
            mask = np.clip(1.0 - (np.hypot(xx - cx, yy - cy) / r) ** 4, 0.0, 1.0)
        else:
            mask = ((np.abs(xx - cx) < r) & (np.abs(yy - cy) < r * 0.6)).astype(np.float64)
        img = img * (1 - mask[..., None]) + colour[None, None, :] * mask[..., None]

    # Texture: a sinusoidal grating.
    freq = draws.uniform(1, 4, 24)[0] * (3.0 if shifted else 1.0)
    phase, tex_angle = draws.uniform(1, 0, 2 * np.pi)[0], draws.uniform(1, 0, np.pi)[0]
    amp = draws.uniform(1, 0.02, 0.12)[0] * (2.0 if shifted else 1.0)
    grating = np.sin(2 * np.pi * freq * (np.cos(tex_angle) * xx + np.sin(tex_angle) * yy) + phase)
    img = img + amp * grating[..., None]

    if shifted:  # grain
        img = img + 0.08 * (draws.uniform(h * w * 3).reshape(h, w, 3) - 0.5)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def make_images(n: int, seed: int = 0, style: str = "base", size: tuple = (256, 256)) -> list:
    """``n`` images (a list of (H, W, 3) uint8 arrays)."""
    return [make_image(i, seed, style, size) for i in range(int(n))]


def write_image_set(folder, n: int, seed: int = 0, style: str = "base", size: tuple = (256, 256)) -> Path:
    """Write ``n`` images as PNG files ``img_00000.png``... into ``folder`` (created); returns it."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(int(n)):
        with atomic_write(folder / f"img_{i:05d}.png", durable=False) as f:
            Image.fromarray(make_image(i, seed, style, size)).save(f, format="PNG")
    return folder



# ======================================================================================= attributes
ATTRIBUTES = ("stripes", "disc", "warm", "blur", "grain", "frame", "checker", "dim")
ATTRIBUTE_DESCRIPTIONS = {
    "stripes": "a high-contrast sinusoidal grating over the whole image (random angle and period)",
    "disc": "a solid disc of a saturated colour (random place, size and colour)",
    "warm": "a warm colour cast (red up, blue down)",
    "blur": "a blur (two box-filter passes of radius size/50)",
    "grain": "coloured pixel noise (uniform, +-0.15)",
    "frame": "a black frame (7% of the size on every side)",
    "checker": "a black-and-white checkerboard patch (random place)",
    "dim": "dim light (every pixel times 0.5)",
}
SPLITS = ("train", "held-out")
_PART_SCENE = 0  # random stream parts: 0 = the scene, 1 + k = attribute k's own draws


def _attribute_draws(seed: int, split: str, index: int, part: int) -> _Draws:
    """Draws of one image part. Streams have bit 31 set (the styles above never do), bit 30 = split,
    bits 26-29 = part, bits 0-25 = index: train and held-out images never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    index = int(index)
    if not 0 <= index < 1 << 26:
        raise ValueError(f"attribute image index must be in [0, {1 << 26}), got {index}")
    stream = (1 << 31) | (SPLITS.index(split) << 30) | (int(part) << 26) | index
    return _Draws(seed, stream)


def _check_attributes(attributes) -> frozenset:
    """A set of attribute names from names, a {name: bool} mapping or a row of 8 booleans."""
    if isinstance(attributes, str):
        attributes = [attributes]
    if isinstance(attributes, dict):
        unknown = [k for k in attributes if k not in ATTRIBUTES]
        names = [k for k, on in attributes.items() if on]
    else:
        items = list(attributes)
        if len(items) == len(ATTRIBUTES) and all(isinstance(x, (bool, np.bool_)) for x in items):
            return frozenset(a for a, on in zip(ATTRIBUTES, items) if on)
        unknown = [k for k in items if k not in ATTRIBUTES]
        names = items
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; the attributes are {ATTRIBUTES}")
    return frozenset(names)


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1) x (2r+1) window, edges repeated (separable, with cumulative sums)."""
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis)
        n = img.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        img = (hi - lo) / (2 * radius + 1)
    return img


def make_attribute_image(index: int, attributes=(), seed: int = 0, split: str = "train",
                         size: tuple = (224, 224)) -> np.ndarray:
    """One (H, W, 3) uint8 image with the given attributes (names from :data:`ATTRIBUTES`, a
    ``{name: bool}`` mapping, or a row of :func:`attribute_table`); a pure function of its arguments."""
    present = _check_attributes(attributes)
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16x16, got {size}")
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")

    # The scene: a gradient between two muted colours, soft blobs and a faint grating.
    d = _attribute_draws(seed, split, index, _PART_SCENE)
    c0, c1 = d.uniform(3, 0.25, 0.75), d.uniform(3, 0.25, 0.75)
    angle = d.uniform(1, 0.0, 2 * np.pi)[0]
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    for _ in range(int(d.uniform(1, 2, 5)[0])):
        cx, cy, r = d.uniform(1)[0], d.uniform(1)[0], d.uniform(1, 0.1, 0.3)[0]
        colour = d.uniform(3, 0.2, 0.8)
        mask = 0.6 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img = img * (1 - mask[..., None]) + colour[None, None, :] * mask[..., None]
    freq, phase, g_angle = d.uniform(1, 2, 6)[0], d.uniform(1, 0, 2 * np.pi)[0], d.uniform(1, 0, np.pi)[0]
    img = img + 0.03 * np.sin(2 * np.pi * freq * (np.cos(g_angle) * xx + np.sin(g_angle) * yy) + phase)[..., None]

    def draws(name):
        return _attribute_draws(seed, split, index, 1 + ATTRIBUTES.index(name))

    if "disc" in present:
        d = draws("disc")
        cx, cy, r = d.uniform(1, 0.25, 0.75)[0], d.uniform(1, 0.25, 0.75)[0], d.uniform(1, 0.12, 0.22)[0]
        colour = np.eye(3)[int(d.uniform(1, 0, 3)[0])] * 0.9 + 0.05
        mask = (np.hypot(xx - cx, yy - cy) < r).astype(np.float64)
        img = img * (1 - mask[..., None]) + colour[None, None, :] * mask[..., None]
    if "checker" in present:
        d = draws("checker")
        side = 0.3
        x0, y0 = d.uniform(1, 0.0, 1 - side)[0], d.uniform(1, 0.0, 1 - side)[0]
        cells = 6
        inside = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
        parity = (np.floor((xx - x0) / side * cells) + np.floor((yy - y0) / side * cells)) % 2
        img = np.where(inside[..., None], parity[..., None] * np.ones(3), img)
    if "stripes" in present:
        d = draws("stripes")
        s_angle, period, phase = d.uniform(1, 0, np.pi)[0], d.uniform(1, 0.03, 0.07)[0], d.uniform(1, 0, 2 * np.pi)[0]
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(s_angle) * xx + np.sin(s_angle) * yy) / period + phase)
        img = 0.55 * img + 0.45 * wave[..., None]
    if "warm" in present:
        img = img * np.array([1.15, 1.0, 0.7]) + np.array([0.08, 0.02, 0.0])
    if "dim" in present:
        img = img * 0.5
    if "blur" in present:
        img = _box_blur(_box_blur(img, max(1, round(min(h, w) / 50))), max(1, round(min(h, w) / 50)))
    if "grain" in present:
        img = img + 0.3 * (draws("grain").uniform(h * w * 3).reshape(h, w, 3) - 0.5)
    if "frame" in present:
        bh, bw = max(1, round(0.07 * h)), max(1, round(0.07 * w))
        img = img.copy()
        img[:bh], img[-bh:], img[:, :bw], img[:, -bw:] = 0.0, 0.0, 0.0, 0.0
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# 2^(8-4) resolution IV design: attributes 0-3 are the bits of (index mod 16), 4-7 the parities
# B+C+D, A+C+D, A+B+C, A+B+D, flipped by the bits of (index // 16) mod 16 (the design's 16 cosets).
_GENERATORS = ((1, 2, 3), (0, 2, 3), (0, 1, 2), (0, 1, 3))


def attribute_table(n: int, start: int = 0) -> np.ndarray:
    """(n, 8) bool: row i says which of :data:`ATTRIBUTES` image ``start + i`` has.

    Every 16 consecutive images (from a multiple of 16) hold every combination of any three attributes
    twice; every 256 consecutive images (from a multiple of 256) hold each of the 256 combinations once.
    """
    n, start = int(n), int(start)
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    idx = np.arange(start, start + n, dtype=np.int64)
    run, coset = idx % 16, (idx // 16) % 16
    base = [(run >> k) & 1 for k in range(4)]
    extra = [np.bitwise_xor.reduce([base[g] for g in gens], axis=0) ^ ((coset >> k) & 1)
             for k, gens in enumerate(_GENERATORS)]
    return np.stack(base + extra, axis=1).astype(bool)


def make_attribute_images(n: int, seed: int = 0, split: str = "train", size: tuple = (224, 224),
                          start: int = 0):
    """(images, table): ``n`` attribute images (a list of (H, W, 3) uint8 arrays), image ``start + i``
    with the attributes of row i of ``table = attribute_table(n, start)``."""
    table = attribute_table(n, start)
    return [make_attribute_image(start + i, row, seed, split, size) for i, row in enumerate(table)], table


def write_attribute_set(folder, n: int, seed: int = 0, split: str = "train", size: tuple = (224, 224)) -> Path:
    """Write ``n`` attribute images ``img_00000.png``... and ``attributes.csv`` (image, one 0/1 column
    per attribute) into ``folder`` (created); returns it."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = attribute_table(n)
    lines = ["image," + ",".join(ATTRIBUTES)]
    for i, row in enumerate(table):
        name = f"img_{i:05d}.png"
        with atomic_write(folder / name, durable=False) as f:
            Image.fromarray(make_attribute_image(i, row, seed, split, size)).save(f, format="PNG")
        lines.append(name + "," + ",".join(str(int(x)) for x in row))
    with atomic_write(folder / "attributes.csv", "w", encoding="utf-8", newline="", durable=False) as f:
        f.write("\n".join(lines) + "\n")
    return folder


# ================================================================================= generated images
GENERATOR_BLOCK = 8  # side of the low-resolution stage's blocks, in pixels
GENERATOR_BLEND = 0.6  # weight of the blocky copy at strength 1
GENERATOR_RIPPLE = 0.08  # amplitude of the checkerboard ripple at strength 1 (fraction of full scale)


def _block_upsampled(img: np.ndarray, block: int) -> np.ndarray:
    """Each ``block`` x ``block`` tile replaced by its mean (partial tiles at the edges by theirs)."""
    h, w = img.shape[:2]
    ys, xs = np.arange(0, h, block), np.arange(0, w, block)
    sums = np.add.reduceat(np.add.reduceat(img, ys, axis=0), xs, axis=1)
    counts = np.outer(np.diff(np.append(ys, h)), np.diff(np.append(xs, w)))[..., None]
    means = sums / counts
    return means[np.arange(h) // block][:, np.arange(w) // block]


def make_generated_image(index: int, strength: float, attributes=(), seed: int = 0, split: str = "train",
                         size: tuple = (224, 224)) -> np.ndarray:
    """One (H, W, 3) uint8 stand-in for a generated image: :func:`make_attribute_image` of the same
    arguments with generator artefacts of the given ``strength`` (0 = none, 1 = strongest): a blend
    ``GENERATOR_BLEND * strength`` with an 8x8-block upsampled copy, plus a period-2 checkerboard ripple
    of amplitude ``GENERATOR_RIPPLE * strength``. A pure function of its arguments."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:  # also rejects NaN
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    plain = make_attribute_image(index, attributes, seed, split, size)
    if strength == 0.0:
        return plain
    img = plain.astype(np.float64) / 255.0
    blend = GENERATOR_BLEND * strength
    img = (1.0 - blend) * img + blend * _block_upsampled(img, GENERATOR_BLOCK)
    h, w = img.shape[:2]
    ripple = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, 1.0, -1.0)
    img = img + GENERATOR_RIPPLE * strength * ripple[..., None]
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

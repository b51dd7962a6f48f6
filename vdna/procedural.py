"""Deterministic, procedurally generated images (no downloads, no data files).

Used to calibrate the activation ranges shipped with ``rand_resnet50``, by ``vdna demo`` and by
tests. Every image is a pure function of ``(seed, index, style)``: pixels come from a small
counter-based generator (SplitMix64 in NumPy uint64 arithmetic), so the set is identical on every
machine and NumPy version.

Styles
    ``"base"``     smooth colour gradients, soft discs and rectangles, sinusoidal textures;
    ``"close"``    the same recipe with other random draws (a different sample of the same "dataset");
    ``"shifted"``  a warmer palette, finer and stronger textures and added grain (another "dataset").
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

"""Shared by the examples: small procedural image folders when no real images are given."""
from pathlib import Path

from vdna.procedural import write_image_set


def demo_folders(root, n=8, styles=("base", "shifted")):
    """Write ``n`` procedural 224x224 images per style under ``root``; returns the folders as strings."""
    return [str(write_image_set(Path(root) / style, n, seed=0, style=style, size=(224, 224))) for style in styles]

"""``vdna demo``: a short offline tour of Visual DNA.

It generates three small procedural image sets (``base``, ``close``: another sample of the same
recipe, ``shifted``: another recipe), makes their histogram DNAs with ``rand_resnet50`` (fixed random
weights: no download), compares them, ranks single images against the base DNA, writes figures, and
explains the numbers. Everything lands in one folder (default ``./vdna-demo``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

EXTRACTOR = "rand_resnet50"
SIZE = (224, 224)  # the extractor's input size: no resizing cost
STYLES = {
    "base": "the 'dataset': gradients, soft shapes and gratings",
    "close": "more images drawn with the same recipe (another sample of the same data)",
    "shifted": "warmer colours, finer and stronger texture, grain (a different dataset)",
}


def run_demo(out="vdna-demo", num_images: int = 24, bins: int = 1000, n_rank: int = 8, device: Optional[str] = None,
             backend: str = "eager", num_workers: int = 2, plots: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run the demo, writing its files under ``out``; returns the numbers it printed.

    ``num_images`` per set, ``bins`` per histogram, ``n_rank`` images of each of close/shifted ranked.
    ``backend`` defaults to eager PyTorch: the demo then needs no compiler and no first-use shim build
    (both backends give the same activations).
    """
    from .processor import VDNAProcessor
    from .procedural import write_image_set
    from .ranking import layer_distances, rank_images

    if int(num_images) < 2 or int(n_rank) < 1 or int(bins) < 1:
        raise ValueError("the demo needs num_images >= 2, n_rank >= 1 and bins >= 1")
    n_rank = min(int(n_rank), int(num_images))
    start = time.perf_counter()
    out = Path(out)
    echo(f"vdna demo: Visual DNA of small procedural image sets, offline, with {EXTRACTOR}.")
    echo(f"Files go to {out}/.\n")

    echo(f"1. Three image sets of {num_images} images ({SIZE[0]}x{SIZE[1]}) in {out / 'images'}:")
    folders = {}
    for seed, style in enumerate(STYLES):
        folders[style] = write_image_set(out / "images" / style, num_images, seed=0, style=style, size=SIZE)
        echo(f"   {style:<8} {STYLES[style]}")

    echo(f"\n2. Their DNAs: one {bins}-bin histogram per neuron of {EXTRACTOR} (ResNet-50 with fixed random "
         "weights:\n   it works offline; use a pretrained extractor such as dino_resnet50 on real data).")
    proc = VDNAProcessor()
    dnas = {}
    for style, folder in folders.items():
        t0 = time.perf_counter()
        dnas[style] = proc.make_vdna(str(folder), feat_extractor_name=EXTRACTOR, distribution_name=f"histogram-{bins}",
                                     batch_size=8, device=device, verbose=False, num_workers=num_workers,
                                     backend=backend)
        dnas[style].save(out / "dnas" / style)
        n = sum(dnas[style].neurons_list.values())
        echo(f"   {style:<8} {n} neurons, {dnas[style].num_images} images -> {out / 'dnas' / style}.json/.npz "
             f"({time.perf_counter() - t0:.1f} s)")

    from . import EMD

    emd = {s: float(EMD(dnas["base"], dnas[s])) for s in ("close", "shifted")}
    per_layer = {s: layer_distances(dnas["base"], dnas[s])[1] for s in ("close", "shifted")}
    echo("\n3. Comparison with the base DNA (EMD: mean over all neurons, in bins; 0 = identical):")
    for s in ("close", "shifted"):
        echo(f"   base vs {s:<8} {emd[s]:8.3f}")
    echo("   per layer:")
    width = max(len(l) for l in per_layer["close"])
    echo(f"     {'layer':<{width}}  {'close':>8}  {'shifted':>8}")
    for layer in per_layer["close"]:
        echo(f"     {layer:<{width}}  {per_layer['close'][layer]:8.3f}  {per_layer['shifted'][layer]:8.3f}")

    candidates = [str(p) for s in ("close", "shifted") for p in sorted(Path(folders[s]).glob("*.png"))[:n_rank]]
    ranking = rank_images(candidates, dnas["base"], batch_size=8, device=device, num_workers=num_workers,
                          backend=backend, processor=proc)
    echo(f"\n4. Ranking: {n_rank} close and {n_rank} shifted images, each with its own DNA, scored against "
         "the base DNA\n   (smaller = more typical of the base set):")
    for rank, (name, d) in enumerate(ranking, 1):
        if rank <= 3 or rank > len(ranking) - 3:
            echo(f"   #{rank:<3} {d:8.3f}  {_short(name)}")
        elif rank == 4:
            echo("   ...")
    first_half = ranking[:n_rank]
    n_close = sum(1 for name, _ in first_half if f"{os.sep}close{os.sep}" in name)
    echo(f"   {n_close} of the {n_rank} best-ranked images are 'close' images.")

    figures = []
    if plots:
        figures = _write_plots(out / "plots", dnas, ranking, candidates, echo)

    elapsed = time.perf_counter() - start
    ratio = emd["shifted"] / emd["close"] if emd["close"] > 0 else float("inf")
    # the layer where the shift stands out most against sampling noise (the close set's distance)
    best_layer = max(per_layer["shifted"], key=lambda l: per_layer["shifted"][l] / max(per_layer["close"][l], 1e-12))
    echo("\nWhat the numbers mean:")
    echo(f"- EMD is the work needed to turn one neuron's histogram into the other's, in bins, averaged over "
         f"neurons.\n  'close' is only sampling noise away from base ({emd['close']:.3f}); 'shifted' is "
         f"{ratio:.1f}x farther ({emd['shifted']:.3f}).")
    echo(f"- Per layer you see where sets differ: against the sampling noise, the shift stands out most in "
         f"{best_layer} ({per_layer['shifted'][best_layer] / max(per_layer['close'][best_layer], 1e-12):.1f}x).\n"
         "  Early layers respond to colour and texture, late layers to larger structures.")
    echo("- One image has a DNA too, so images can be ranked by how typical they are of a dataset.")
    echo("- Next: `vdna make FOLDER -o my_dna`, `vdna compare my_dna other_dna`, `vdna rank FOLDER --reference "
         "my_dna`.")
    echo(f"\nDone in {elapsed:.0f} s.")
    return {"emd": emd, "per_layer": per_layer, "ranking": ranking, "close_in_top": n_close,
            "figures": figures, "seconds": elapsed}


def _write_plots(folder: Path, dnas, ranking, candidates, echo) -> list:
    try:
        from . import plots
    except ImportError as exc:  # pragma: no cover - plots imports matplotlib lazily
        echo(f"\n5. Figures skipped: {exc}")
        return []
    try:
        plots._pyplot()
    except ImportError as exc:
        echo(f"\n5. Figures skipped: {exc}")
        return []
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    jobs = [
        ("layer_distances.png", lambda p: plots.plot_layer_distances(
            dnas["base"], dnas["close"], dnas["shifted"], labels=["close", "shifted"], reference_label="base", save=p)),
        ("top_neurons.png", lambda p: plots.plot_top_neurons(dnas["base"], dnas["shifted"], k=15, save=p)),
        ("neuron_histograms.png", lambda p: plots.plot_neuron_histograms(
            dnas["base"], dnas["shifted"], neurons=4, labels=["base", "shifted"], save=p)),
        ("ranking_grid.png", lambda p: plots.plot_ranking_grid(ranking, candidates, k=5, save=p)),
    ]
    for name, job in jobs:
        fig = job(folder / name)
        plt.close(fig)
        made.append(str(folder / name))
    echo(f"\n5. Figures in {folder}: " + ", ".join(Path(p).name for p in made))
    return made


def _short(name: str) -> str:
    parts = Path(name).parts
    return os.path.join(*parts[-2:]) if len(parts) >= 2 else name

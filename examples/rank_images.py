"""Rank images by how typical they are of a dataset (Visual DNA paper, Fig. 4).

    python examples/rank_images.py --dataset FOLDER --images FOLDER [--out ranking.csv --grid grid.png]
    python examples/rank_images.py          # no folders: procedural images, offline

The dataset becomes a DNA; every image to rank gets its own DNA with the same settings, and its EMD
to the dataset's DNA is its score (smaller = more typical).
"""
import argparse
import csv
import tempfile
from pathlib import Path

from vdna import VDNAProcessor
from vdna.ranking import rank_images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="reference images")
    parser.add_argument("--images", default=None, help="images to rank")
    parser.add_argument("--extractor", default="rand_resnet50")
    parser.add_argument("--out", default=None, help="CSV of all scores")
    parser.add_argument("--grid", default=None, help="PNG grid of the best and worst matches (needs matplotlib)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dataset, images = args.dataset, args.images
        if dataset is None or images is None:
            from _data import demo_folders

            dataset, = demo_folders(tmp, n=6, styles=("base",))
            close, shifted = demo_folders(Path(tmp) / "to_rank", n=3, styles=("close", "shifted"))
            images = sorted(str(p) for p in Path(close).glob("*.png")) + sorted(str(p) for p in Path(shifted).glob("*.png"))
        processor = VDNAProcessor()
        reference = processor.make_vdna(dataset, feat_extractor_name=args.extractor, distribution_name="histogram-1000",
                                        num_workers=2, batch_size=16, verbose=False)
        ranking = rank_images(images, reference, processor=processor, num_workers=2, batch_size=16)

        print(f"{len(ranking)} images ranked against {dataset} (EMD, smaller = more typical):")
        for rank, (name, distance) in enumerate(ranking, 1):
            print(f"  {rank:>4}  {distance:9.4f}  {name}")
        if args.out:
            with open(args.out, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["rank", "image", "EMD"])
                writer.writerows((i, n, d) for i, (n, d) in enumerate(ranking, 1))
        if args.grid:
            from vdna.plots import plot_ranking_grid

            plot_ranking_grid(ranking, images, k=3, save=args.grid)


if __name__ == "__main__":
    main()

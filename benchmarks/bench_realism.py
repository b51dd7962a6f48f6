"""Realism ranking with a few neurons (paper Sec. 5.4, Fig. 7) on offline images: select the k neurons
most sensitive to real-vs-generated on training images, then rank held-out generated images by their
distance to the DNA of held-out real images, and measure how well the ranking follows the known
strength of the generator artefacts.

    python benchmarks/bench_realism.py [--backend auto] [--quick]

Data and settings (chosen before any result was seen; change them only with a note saying why):
- extractor ``rand_resnet50`` (15,104 neurons), CPU; DNAs ``histogram-100`` (as bench_retrieval.py);
- real images: ``vdna.procedural`` attribute images (224x224, seed 0, the attributes of
  ``attribute_table``, so real and generated sets hold the same mix of the eight attributes);
- generated images: ``procedural.make_generated_image`` (blockiness and a checkerboard ripple, both
  scaled by a strength in [0, 1]) of other scenes, each with a strength drawn uniformly in [0, 1]
  (training: ``default_rng(0)``; held-out: ``default_rng(1)``): a generator of uneven quality;
- training: split "train", real images 0-255 and generated images 256-511 (one (real, generated) pair
  of 256 vs 256 images); baseline for the signal/noise selection: two random halves of all 512
  training images (seeds 0 and 1), as bench_retrieval.py;
- selection: k = 16 neurons by ``vdna.sensitivity`` (a) with ``baseline=`` (signal-to-noise: the
  primary selection) and (b) plain; compared with all neurons (uniform weights) and with 16 random
  neurons (mean over 3 draws, seeds 0-2);
- held-out: split "held-out", real images 0-255 make the reference DNA; generated images 256-383
  (128 images, other scenes) are ranked by ``vdna.rank_images(generated, reference_dna,
  neuron_weights=...)``, the public API (one forward pass per image and selection);
- measure: Spearman's rank correlation rho between an image's distance and its artefact strength
  (1 = the ranking orders the images exactly by realism), and the mean strength of the 10 images ranked
  most and least realistic;
- targets (ours: the paper shows Fig. 7 qualitatively and reports no figure): rho >= 0.8 with the
  signal/noise selection, and higher than with all neurons.
``--quick`` (64 + 64 training, 64 real and 32 generated held-out images at 112x112, one random draw) is
for trying the script, NOT the protocol.
"""
import argparse
import sys
import time

import numpy as np

import vdna
from vdna import NeuronWeights, VDNAProcessor, procedural as P
from vdna.customise import attribute_dnas

from _checks import report  # benchmarks/_checks.py (this folder is on sys.path when run as a script)

EXTRACTOR, DIST, K = "rand_resnet50", "histogram-100", 16


def ranks(x):
    """Ranks 0..n-1 (the strengths are continuous draws and the distances sums of floats: no ties)."""
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


def spearman(x, y) -> float:
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def generated_set(n, start, split, size, rng):
    strengths = rng.uniform(0.0, 1.0, n)
    table = P.attribute_table(n, start)
    images = [P.make_generated_image(start + i, s, row, split=split, size=size)
              for i, (s, row) in enumerate(zip(strengths, table))]
    return images, strengths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "libtorch", "eager"))
    parser.add_argument("--quick", action="store_true", help="a small run to try the script (not the protocol)")
    args = parser.parse_args()
    if args.quick:
        n_train, n_real, n_fake, size, draws = 64, 64, 32, (112, 112), 1
    else:
        n_train, n_real, n_fake, size, draws = 256, 256, 128, (224, 224), 3
    t0 = time.perf_counter()
    proc = VDNAProcessor()
    common = dict(feat_extractor_name=EXTRACTOR, distribution_name=DIST, backend=args.backend, device="cpu",
                  verbose=False)

    # training: real images 0..n-1, generated images n..2n-1 (other scenes, the same attribute mix)
    real, _ = P.make_attribute_images(n_train, split="train", size=size)
    fake, train_strengths = generated_set(n_train, n_train, "train", size, np.random.default_rng(0))
    is_fake = np.r_[np.zeros(n_train, bool), np.ones(n_train, bool)]
    masks = {"generated": is_fake}
    for s in (0, 1):
        half = np.zeros(2 * n_train, dtype=bool)
        half[np.random.default_rng(s).permutation(2 * n_train)[:n_train]] = True
        masks[f"split{s}"] = half
    pairs = attribute_dnas(real + fake, masks, EXTRACTOR, DIST, batch_size=16, backend=args.backend,
                           processor=proc, as_distances=True)[DIST]
    baseline = [pairs["split0"], pairs["split1"]]
    t_train = time.perf_counter() - t0

    # held-out: the real reference DNA, and generated images of other scenes to rank
    held_real, _ = P.make_attribute_images(n_real, split="held-out", size=size)
    reference = proc.make_vdna(np.stack(held_real), batch_size=16, num_workers=0, **common)
    held_fake, strengths = generated_set(n_fake, n_real, "held-out", size, np.random.default_rng(1))
    held_fake = np.stack(held_fake)

    selections = {
        f"top-{K}, signal/noise": NeuronWeights.top_k(vdna.sensitivity([pairs["generated"]], baseline=baseline),
                                                      K, like=reference),
        f"top-{K}, sensitivity": NeuronWeights.top_k(vdna.sensitivity([pairs["generated"]]), K, like=reference),
        "all neurons": None,
    }
    for d in range(draws):
        rng = np.random.default_rng(d)
        selections[f"{K} random neurons, draw {d}"] = NeuronWeights.top_k(
            {layer: rng.random(c) for layer, c in reference.neurons_list.items()}, K, like=reference)

    results = {}
    for method, w in selections.items():
        ranking = vdna.rank_images(held_fake, reference, neuron_weights=w, batch_size=16, num_workers=0,
                                   backend=args.backend, device="cpu", processor=proc)
        order = np.array([int(name[len("array["):-1]) for name, _ in ranking])  # most realistic first
        dist = np.empty(n_fake)
        dist[order] = [score for _, score in ranking]
        results[method] = (spearman(dist, strengths), float(strengths[order[:10]].mean()),
                           float(strengths[order[-10:]].mean()))
    random_rows = [m for m in results if "random" in m]
    results[f"{K} random neurons (mean of {draws})"] = tuple(np.mean([results[m] for m in random_rows], axis=0))
    t_total = time.perf_counter() - t0

    print(f"{n_train} real + {n_train} generated training images, {n_real} real + {n_fake} generated held-out "
          f"images at {size[0]}x{size[1]}, {EXTRACTOR} {DIST}, k = {K}; {t_train:.0f} s sensitivity, "
          f"{t_total:.0f} s in all")
    print(f"training strengths: mean {train_strengths.mean():.2f}; held-out: mean {strengths.mean():.2f}")
    print()
    print(f"{'held-out generated images':<34}{'rho':>8}{'10 most real':>14}{'10 least real':>15}")
    for method, (rho, best, worst) in results.items():
        print(f"{method:<34}{rho:8.2f}{best:14.2f}{worst:15.2f}")
    print(f"{'(perfect ranking)':<34}{1.0:8.2f}{np.sort(strengths)[:10].mean():14.2f}"
          f"{np.sort(strengths)[-10:].mean():15.2f}")
    print("(columns: Spearman's rho between distance and artefact strength; mean strength of the 10 images "
          "ranked most / least realistic)")
    print()
    primary = f"top-{K}, signal/noise"
    checks = [
        (f"selected neurons ({primary}) rho >= 0.8", results[primary][0] >= 0.8, f"{results[primary][0]:.2f}"),
        ("selected neurons beat all neurons", results[primary][0] > results["all neurons"][0],
         f"{results[primary][0]:.2f} vs {results['all neurons'][0]:.2f}"),
    ]
    return report(checks, args.quick)


if __name__ == "__main__":
    sys.exit(main())

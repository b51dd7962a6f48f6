"""The paper's Tab. 2 protocol (Sec. 5.3) on the offline attribute images: learn weights that ignore one
attribute and keep the others, then measure removal and deviation on DNAs of HELD-OUT images.

    python benchmarks/bench_sensitivity.py [--backend auto] [--quick]

Data and settings (chosen before any result was seen; change them only with a note saying why):
- extractor ``rand_resnet50`` (15,104 neurons in 16 layers), CPU;
- images: ``vdna.procedural`` attribute images, 224x224, seed 0, eight attributes (stripes, disc,
  warm, blur, grain, frame, checker, dim) in the balanced design of ``attribute_table``;
- training: split "train", images 0-511 = two blocks of 256 (each block holds every combination of
  the 8 attributes once): per attribute, one (with, without) pair per block = 2 pairs of 128 vs 128 images;
- held-out: split "held-out" (no scene shared with training), images 0-255 = one block: 1 pair per
  attribute, 128 vs 128 images;
- DNAs: histogram-1000, gaussian, layer-gaussian, all from one forward pass per image;
- methods (rows): dna-emd = neuron weights on per-neuron EMD (histogram-1000); dna-fd = neuron weights
  on per-neuron NFD (gaussian); fd = layer weights on per-layer FD (layer-gaussian);
- learning: ``vdna.learn_weights(ignore=[2 training pairs of a], keep=[2 training pairs of each of the 7
  others])``, solver "lp", the library's default regularization (0.1) and max_weight (4);
- reported (columns): removal = mean over the 8 attributes of Δ_a on the held-out pair; deviation =
  mean over the 8 attributes of mean_b |Δ_b| over the 7 other held-out pairs (paper Eq. 6);
- targets: dna-emd removal >= 95% and deviation <= 10%; fd "clearly worse" than both neuron-wise
  methods, defined here as a held-out loss (1 - removal) + deviation at least 1.5x the larger of the two
  neuron-wise methods' losses; the whole protocol in under 15 minutes;
- scale: learning with 25,600 neurons (mugs_vit_large's count) x 40 attributes x 2 pairs each (synthetic
  per-neuron distances: each attribute seen strongly by a random sparse set of neurons, plus noise),
  target under 30 s.
``--quick`` (64 + 32 images at 112x112, for trying the script) is NOT the protocol.

Added AFTER a --quick run (so not part of the pre-registered protocol, and reported apart): the row
"dna-emd, no regularization, no cap" (regularization=0, max_weight=None). The --quick run gave
training removal ~50% for dna-emd, close to its held-out removal, so the limit there was the
objective's settings (the pull to uniform weights and the 4x cap), not over-fitting; this row shows
what the unregularised Eq. 7 reaches on the same pairs.

Added AFTER the full run (likewise reported apart): one row per method whose learning settings
(``regularization``, ``max_weight``) are chosen per attribute by 2-fold cross-validation over the two
training blocks (``vdna.choose_learning_settings`` over ``CV_GRID``); the held-out images play no
part in the choice. The full run showed training removal close to held-out removal with the defaults
and over-fitting without them, which is what such a choice addresses.

The paper's numbers (CelebA, 40 attributes, Tab. 2) are printed beside ours for reference only: the
data, the extractor's training and the attribute count differ. Only the two rows quoted in the issue are
printed; the paper's other rows are not reproduced here.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from vdna import choose_learning_settings, evaluate_weights, learn_weights, procedural as P
from vdna.customise import PairDistances, attribute_dnas

from _checks import report  # benchmarks/_checks.py (this folder is on sys.path when run as a script)

METHODS = {  # row name: (distribution, granularity, learn_weights keywords)
    "dna-emd (neurons, EMD)": ("histogram-1000", "neuron", {}),
    "dna-fd (neurons, NFD)": ("gaussian", "neuron", {}),
    "fd (layers, FD)": ("layer-gaussian", "layer", {}),
    # added after the --quick run (see the docstring): not part of the protocol's targets
    "dna-emd, no regularization, no cap": ("histogram-1000", "neuron", {"regularization": 0.0, "max_weight": None}),
}
# the cross-validated rows' grid (4 x 3 points, fewer than the library's 5 x 5 default to keep the run short)
CV_GRID = {"regularization": (0.0, 0.03, 0.1, 0.3), "max_weight": (4.0, 16.0, None)}
PAPER = [  # (row, removal %, deviation %), CelebA "wearing hat" etc., Ramtoula et al. 2023, Tab. 2
    ("paper: dna-emd, Mugs ViT-B/16 (best)", 95.5, 9.6),
    ("paper: dna-emd, random-weight ResNet-50", 83.4, 20.1),
]


class LazyImages:
    """The attribute images of one split, made when the batch loop asks for them."""

    def __init__(self, n, split, size, start=0):
        self.n, self.split, self.size, self.start = n, split, size, start
        self.table = P.attribute_table(n, start)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return P.make_attribute_image(self.start + i, self.table[i], seed=0, split=self.split, size=self.size)


def block_pairs(n_block, split, size, args, start):
    """{distribution: {attribute: PairDistances}} of one block of images (read from / written to
    ``--cache`` when given: the DNAs are the expensive part, the learning is seconds)."""
    if args.cache:
        path = os.path.join(args.cache, f"{split}-{start}-{n_block}-{size[0]}x{size[1]}")
        if os.path.exists(path + ".json"):
            args.cache_hits += 1
            return load_pairs(path)
    pairs = _block_pairs(n_block, split, size, args, start)
    if args.cache:
        os.makedirs(args.cache, exist_ok=True)
        save_pairs(path, pairs)
    return pairs


def save_pairs(path, pairs):
    """PairDistances as JSON (their identity) + NPZ (their distances); no pickles."""
    meta, arrays = {}, {}
    for dist, per_attr in pairs.items():
        for attr, p in per_attr.items():
            meta[f"{dist}|{attr}"] = {"type": p.type, "hist_nb_bins": p.hist_nb_bins, "metrics": p.metrics,
                                      "feature_extractor_name": p.feature_extractor_name,
                                      "neurons_list": p.neurons_list, "ranges_sha256": p.ranges_sha256,
                                      "granularities": list(p.metrics)}
            for g in p.metrics:
                for layer, x in p.distances(g).items():
                    arrays[f"{dist}|{attr}|{g}|{layer}"] = x
    np.savez(path + ".npz", **arrays)
    with open(path + ".json", "w") as f:
        json.dump(meta, f)


def load_pairs(path):
    with open(path + ".json") as f:
        meta = json.load(f)
    out = {}
    with np.load(path + ".npz", allow_pickle=False) as z:
        for key, m in meta.items():
            dist, attr = key.split("|")
            p = PairDistances.__new__(PairDistances)
            p.type, p.hist_nb_bins, p.metrics = m["type"], m["hist_nb_bins"], m["metrics"]
            p.feature_extractor_name, p.ranges_sha256 = m["feature_extractor_name"], m["ranges_sha256"]
            p.neurons_list = m["neurons_list"]
            p._d = {g: {layer: z[f"{key}|{g}|{layer}"] for layer in p.neurons_list} for g in m["granularities"]}
            out.setdefault(dist, {})[attr] = p
    return out


def _block_pairs(n_block, split, size, args, start):
    images = LazyImages(n_block, split, size, start)
    masks = {a: images.table[:, k] for k, a in enumerate(P.ATTRIBUTES)}
    distributions = sorted({d for d, _, _ in METHODS.values()})
    return attribute_dnas(images, masks, "rand_resnet50", distributions, as_distances=True, batch_size=16,
                          backend=args.backend, verbose=not args.quiet)


def scale_check(args):
    rng = np.random.default_rng(0)
    n, n_layers, n_attr = 25600, 25, 40
    sens = rng.gamma(0.5, 1.0, size=(n_attr, n))
    layers = [f"layer{i}" for i in range(n_layers)]

    def pair(a):
        d = sens[a] * rng.uniform(0.8, 1.2, n) + 0.05 * rng.gamma(2.0, 1.0, n)
        return PairDistances.from_distances(dict(zip(layers, np.split(d, n_layers))), "mugs_vit_large")

    pairs = [[pair(a), pair(a)] for a in range(n_attr)]
    t0 = time.perf_counter()
    w = learn_weights(pairs[0], [p for a in range(1, n_attr) for p in pairs[a]])
    seconds = time.perf_counter() - t0
    return seconds, w


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "libtorch", "eager"))
    parser.add_argument("--quick", action="store_true", help="a small run to try the script (not the protocol)")
    parser.add_argument("--skip-scale", action="store_true", help="skip the 25,600-neuron learning timing")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="keep each block's pair distances in DIR and reuse them (the learning reruns)")
    args = parser.parse_args()
    args.cache_hits = 0
    block, n_train_blocks, size = (32, 2, (112, 112)) if args.quick else (256, 2, (224, 224))

    t_start = time.perf_counter()
    train = [block_pairs(block, "train", size, args, start=k * block) for k in range(n_train_blocks)]
    held = block_pairs(block, "held-out", size, args, start=0)
    t_dnas = time.perf_counter() - t_start
    print(f"DNAs of {n_train_blocks * block} training and {block} held-out images: {t_dnas:.0f} s")

    rows = {}
    per_attribute = {}
    for method, (dist, gran, kwargs) in METHODS.items():
        removal, deviation = [], []
        for a in P.ATTRIBUTES:
            others = [b for b in P.ATTRIBUTES if b != a]
            w = learn_weights([t[dist][a] for t in train], [t[dist][b] for t in train for b in others],
                              granularity=gran, **kwargs)
            ev = evaluate_weights(w, [held[dist][a]], [held[dist][b] for b in others])
            removal.append(ev["removal"])
            deviation.append(ev["deviation"])
            per_attribute.setdefault(method, {})[a] = (ev["removal"], ev["deviation"],
                                                       w.meta["learned"]["training"]["removal"],
                                                       w.meta["learned"]["training"]["deviation"], w.nonzero())
        rows[method] = (100 * float(np.mean(removal)), 100 * float(np.mean(deviation)))
    t_learn = time.perf_counter() - t_start - t_dnas
    t_total = time.perf_counter() - t_start

    # Added AFTER the full run (reported apart, not in the targets): learning settings chosen by
    # cross-validation over the two training blocks (vdna.choose_learning_settings), never looking at
    # the held-out images, then weights learned on both blocks with them.
    t_cv = time.perf_counter()
    for method, (dist, gran, _) in list(METHODS.items())[:3]:
        removal, deviation, chosen = [], [], []
        for a in P.ATTRIBUTES:
            others = [b for b in P.ATTRIBUTES if b != a]
            folds = [([t[dist][a]], [t[dist][b] for b in others]) for t in train]
            cv = choose_learning_settings(folds, CV_GRID, granularity=gran)
            w = learn_weights([t[dist][a] for t in train], [t[dist][b] for t in train for b in others],
                              granularity=gran, regularization=cv["regularization"], max_weight=cv["max_weight"])
            ev = evaluate_weights(w, [held[dist][a]], [held[dist][b] for b in others])
            removal.append(ev["removal"])
            deviation.append(ev["deviation"])
            chosen.append((cv["regularization"], cv["max_weight"]))
        name = method.split(" (")[0] + ", settings by 2-fold CV"
        rows[name] = (100 * float(np.mean(removal)), 100 * float(np.mean(deviation)))
        print(f"{name}: (regularization, max_weight) per attribute: "
              + ", ".join(f"{a} {r:g}/{c if c is None else f'{c:g}'}" for a, (r, c) in zip(P.ATTRIBUTES, chosen)))
    t_cv = time.perf_counter() - t_cv

    print()
    print("Per attribute (held-out removal / deviation %, training removal / deviation %, non-zero weights):")
    for method, table in per_attribute.items():
        print(f"  {method}")
        for a, (r, d, tr, td, nz) in table.items():
            print(f"    {a:<8} held-out {100 * r:6.1f} / {100 * d:5.1f}   training {100 * tr:6.1f} / {100 * td:5.1f}"
                  f"   {nz} weights")
    print()
    print(f"{'method (held-out images)':<44} {'removal %':>10} {'deviation %':>12}")
    for method, (r, d) in rows.items():
        print(f"{'ours: ' + method:<44} {r:10.1f} {d:12.1f}")
    for name, r, d in PAPER:
        print(f"{name:<44} {r:10.1f} {d:12.1f}")
    print()

    print(f"learning: {t_learn:.0f} s for the protocol's rows; cross-validated rows: {t_cv:.0f} s (not in the "
          "protocol's time)")
    emd_r, emd_d = rows["dna-emd (neurons, EMD)"]
    loss = {m: (100 - r) + d for m, (r, d) in rows.items()}
    neuron_loss = max(loss["dna-emd (neurons, EMD)"], loss["dna-fd (neurons, NFD)"])
    checks = [
        ("dna-emd removal >= 95%", emd_r >= 95.0, f"{emd_r:.1f}%"),
        ("dna-emd deviation <= 10%", emd_d <= 10.0, f"{emd_d:.1f}%"),
        ("fd loss >= 1.5x the neuron-wise methods'", loss["fd (layers, FD)"] >= 1.5 * neuron_loss,
         f"{loss['fd (layers, FD)']:.1f} vs {neuron_loss:.1f} (loss = 100 - removal + deviation, in %)"),
    ]
    if args.cache_hits == 0:  # DNAs read from --cache were not made in this run: no protocol time
        checks.append(("protocol under 15 minutes", t_total < 900, f"{t_total:.0f} s"))
    else:
        print(f"(protocol time not measured: {args.cache_hits} block(s) of pair distances read from --cache)")
    if not args.skip_scale:
        seconds, w = scale_check(args)
        checks.append(("learning 25,600 neurons x 40 attributes x 2 pairs under 30 s", seconds < 30,
                       f"{seconds:.1f} s ({w.nonzero()} non-zero weights)"))
    return report(checks, args.quick)


if __name__ == "__main__":
    sys.exit(main())

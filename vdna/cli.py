"""The ``vdna`` command (also ``python -m vdna``).

Subcommands: make, compare, rank, inspect, merge, calibrate, demo, build-shim, stability, rank-datasets,
sensitivity, weights. Each one is a thin layer
over the library: argument parsing, friendly output and one-line errors. Exit codes: 0 success,
1 error (one line on stderr saying what went wrong and what to do; ``--debug`` shows the traceback),
2 usage error (from argparse).
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import traceback
import warnings

from .atomic import write_text_atomic

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEFAULT_EXTRACTOR = "rand_resnet50"  # the extractor that works offline (the library's default needs weights)
DEFAULT_DISTRIBUTION = "histogram-1000"


class CLIError(Exception):
    """An error whose message is already written for the person at the terminal."""


# ============================================================================== argument parsing
def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a Python module first (e.g. one that registers your own extractor), "
                             "from the current folder or PYTHONPATH; repeatable")
    return common


def _add_build_options(p: argparse.ArgumentParser, extractor=True, distribution=True, ranges=True) -> None:
    """Options that say how images become a DNA (shared by make, compare, rank, calibrate)."""
    g = p.add_argument_group("how images are processed")
    if extractor:
        g.add_argument("--extractor", default=None,
                       help=f"feature extractor (default: {DEFAULT_EXTRACTOR}, or the other DNA's when comparing)")
    if distribution:
        g.add_argument("--distribution", default=None,
                       help=f"histogram-B, gaussian or layer-gaussian (default: {DEFAULT_DISTRIBUTION}, "
                            "or the other DNA's when comparing)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    g.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass (default: 32)")
    g.add_argument("--workers", type=_nonneg_int, default=_default_workers(),
                   help="image decoding threads (default: %(default)s)")
    g.add_argument("--num-images", type=int, default=-1, help="use only the first N images (default: all)")
    g.add_argument("--shuffle", action="store_true", help="shuffle the files before taking --num-images")
    g.add_argument("--seed", type=int, default=0, help="seed for --shuffle and --crop random (default: 0)")
    g.add_argument("--crop", choices=("none", "center", "random"), default=None,
                   help="crop to a square before resizing (default: none)")
    g.add_argument("--resize", choices=("clean", "fast"), default=None,
                   help="resize method (default: clean, the reference's)")
    g.add_argument("--backend", choices=("auto", "libtorch", "eager"), default="auto",
                   help="auto: the LibTorch shim when it can be built, else eager PyTorch")
    g.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    g.add_argument("--extractor-weights", default=None, metavar="PATH",
                   help="checkpoint of the extractor's pretrained weights")
    if ranges:
        g.add_argument("--ranges", default=None, metavar="JSON",
                       help="activation ranges file (reference JSON format) for histograms; "
                            "default: the extractor's shipped or cached ranges")
    g.add_argument("--allow-download", action="store_true",
                   help="download missing weights or ranges even when VDNA_OFFLINE is set (default: download on "
                        "first use unless VDNA_OFFLINE=1)")
    g.add_argument("--offline", action="store_true",
                   help="never download: fail with the exact file to place where instead")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _allow_download(args):
    """--allow-download / --offline as the allow_download argument (None: the environment decides)."""
    if args.allow_download and args.offline:
        raise ValueError("--allow-download and --offline contradict each other; give one of them")
    return True if args.allow_download else (False if args.offline else None)


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="vdna",
        description="Visual DNA: compare images and image datasets neuron by neuron. "
                    "Start with `vdna demo`.",
    )
    parser.add_argument("--version", action="version", version=f"vdna {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("make", parents=[common], help="build a DNA from images and save it",
                       description="Build the DNA of a set of images and save it as OUT.json + OUT.npz.")
    p.add_argument("source", help="image folder, image file, .txt list of paths, .zip archive")
    p.add_argument("-o", "--output", required=True, help="output path (OUT.json and OUT.npz are written)")
    p.add_argument("--sample-images", default=None, metavar="DIR",
                   help="also save the first images as given to the extractor (after crop/resize)")
    p.add_argument("--n-sample-images", type=_positive_int, default=5, help="how many (default: 5)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also save a per-layer summary figure of the DNA")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="save the state and progress to PATH every --checkpoint-every images; rerunning the same "
                        "command resumes from it (one file per rank under torchrun)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="N",
                   help="images between checkpoints (default: 1000)")
    _add_build_options(p)
    p.set_defaults(func=cmd_make)

    p = sub.add_parser("compare", parents=[common], help="distance between two DNAs or image sets",
                       description="Compare A and B (DNA files or image sources; sources are turned into DNAs "
                                   "with the same settings as the other DNA). Prints EMD for histograms, NFD "
                                   "for Gaussians, FD for layer-Gaussians, per layer and overall.")
    p.add_argument("a", help="DNA (path with or without .json/.npz) or image source")
    p.add_argument("b", help="DNA or image source")
    p.add_argument("--layer", default=None, help="use only the neurons of this layer")
    p.add_argument("--neuron", type=_nonneg_int, default=None, help="use only this neuron of --layer")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="per-neuron weights (.npy of all neurons in order, .npz or .json {layer: values}); "
                        "the distance becomes sum of w * d")
    p.add_argument("--neuron-wise", default=None, metavar="FILE",
                   help="write every neuron's distance to FILE (.csv or .json)")
    p.add_argument("--top", type=_nonneg_int, default=0, metavar="K", help="also list the K most different neurons")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="save a figure of the comparison")
    p.add_argument("--save-dnas", default=None, metavar="DIR", help="save DNAs built from image sources into DIR")
    _add_build_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("rank", parents=[common], help="score every image against a reference DNA",
                       description="Give every image of SOURCE its own DNA and its distance to the reference "
                                   "DNA; lists images from most to least typical of the reference.")
    p.add_argument("source", help="image folder, image file, .txt list of paths, .zip archive")
    p.add_argument("--reference", required=True, help="reference DNA")
    p.add_argument("-o", "--output", default=None, metavar="CSV", help="write all scores as CSV (rank,image,distance)")
    p.add_argument("--top", type=_positive_int, default=5, metavar="K", help="show the K best and worst (default: 5)")
    p.add_argument("--plot", "--grid", dest="grid", default=None, metavar="PNG",
                   help="save an image grid of the K best and worst matches (--grid is the same option)")
    p.add_argument("--layer", default=None, help="use only the neurons of this layer")
    p.add_argument("--neuron", type=_nonneg_int, default=None, help="use only this neuron of --layer")
    p.add_argument("--weights", default=None, metavar="FILE", help="per-neuron weights (as for compare)")
    p.add_argument("--json", action="store_true", help="print all scores as JSON")
    _add_build_options(p, extractor=False, distribution=False)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("inspect", parents=[common], help="describe a DNA file",
                       description="Show a DNA's extractor, type, image count, skipped files, layers and format.")
    p.add_argument("dna", help="DNA (path with or without .json/.npz)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="save a per-layer summary figure of the DNA")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("merge", parents=[common], help="merge DNAs of disjoint shards of one dataset",
                       description="Merge DNAs made from disjoint parts of a dataset into the DNA of the whole.")
    p.add_argument("dnas", nargs="+", help="two or more DNAs")
    p.add_argument("-o", "--output", required=True, help="output path (OUT.json and OUT.npz are written)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("calibrate", parents=[common], help="compute an extractor's activation ranges",
                       description="Per-neuron activation min/max over SOURCE, written in the reference JSON "
                                   "format. Histogram DNAs are only comparable when binned with the same ranges.")
    p.add_argument("source", help="calibration images")
    p.add_argument("-o", "--output", required=True, metavar="RANGES", help="output .json file")
    _add_build_options(p, distribution=False, ranges=False)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("demo", parents=[common], help="a two-minute offline tour",
                       description="Generate small procedural image sets, make their DNAs with rand_resnet50, "
                                   "compare and rank them, write plots, and explain the numbers. Offline.")
    p.add_argument("--out", default="vdna-demo", metavar="DIR", help="folder for the demo's files (default: ./vdna-demo)")
    p.add_argument("--num-images", type=_positive_int, default=None, help="images per set (default: 24)")
    p.add_argument("--bins", type=_positive_int, default=None, help="histogram bins (default: 1000)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--backend", choices=("auto", "libtorch", "eager"), default="eager",
                   help="default: eager, so the demo needs no compiler and no first-use shim build")
    p.add_argument("--no-plots", action="store_true", help="skip the figures (no matplotlib needed)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("build-shim", parents=[common], help="prebuild the LibTorch shim for the installed torch",
                       description="Compile (or find in the cache) the LibTorch shim for the imported torch, so "
                                   "the first run does not wait for it.")
    p.add_argument("--cache-dir", default=None, help="folder for the built shim (default: $VDNA_HOME/shim)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.set_defaults(func=cmd_build_shim)
    _add_stability_parsers(sub, common)
    _add_customise_parsers(sub, common)
    return parser


def _add_customise_parsers(sub, common) -> None:
    """`vdna sensitivity` and `vdna weights learn|inspect|evaluate` (customised comparisons)."""
    p = sub.add_parser("sensitivity", parents=[common], help="which neurons see an attribute",
                       description="Per-neuron sensitivity to an attribute: the distance (EMD for histograms, NFD "
                                   "for Gaussians) between DNAs of images with (--with) and without (--without) "
                                   "it, averaged over the pairs given. With --baseline C D (two samples of one "
                                   "population), a signal-to-noise ratio s / (b + 0.01 * mean of the layer's b). "
                                   "A..D are DNA files or image sources (built with the first DNA's settings).")
    p.add_argument("--with", dest="with_", action="append", required=True, metavar="A",
                   help="DNA or images with the attribute (repeat with --without for more pairs)")
    p.add_argument("--without", action="append", required=True, metavar="B", help="DNA or images without it")
    p.add_argument("--baseline", nargs=2, action="append", default=[], metavar=("C", "D"),
                   help="two DNAs (or sources) of one population: the noise level (repeatable)")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="write layer,neuron,score rows")
    p.add_argument("--top", type=_nonneg_int, default=10, metavar="K", help="print the K most sensitive neurons")
    p.add_argument("--select", type=_positive_int, default=None, metavar="K",
                   help="with --weights-out: weights 1/K on the K most sensitive neurons (paper Fig. 6, 7)")
    p.add_argument("--weights-out", default=None, metavar="W", help="write the --select weights to W.json + W.npz")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="save the sensitivity per layer and the top neurons' distributions with and without")
    p.add_argument("--save-dnas", default=None, metavar="DIR", help="save DNAs built from image sources into DIR")
    _add_build_options(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("weights", parents=[common], help="learn, inspect or evaluate neuron weights",
                       description="Neuron weights for customised comparisons (use them with --weights on "
                                   "compare and rank).")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _weights_usage(p))

    q = wsub.add_parser("learn", parents=[common], help="weights whose distance ignores one attribute",
                        description="Learn weights whose distance ignores an attribute (--ignore pairs of DNAs "
                                    "with:without it) and keeps the others (--keep pairs): the loss "
                                    "|1 - Δ_a| + mean_b |Δ_b| (paper Eq. 7), solved exactly as a linear program "
                                    "(needs SciPy) or with Adam. Pairs are DNA files, WITH:WITHOUT.")
    q.add_argument("--ignore", action="append", required=True, metavar="A:B", help="a pair to ignore (repeatable)")
    q.add_argument("--keep", action="append", required=True, metavar="C:D", help="a pair to keep (repeatable)")
    q.add_argument("-o", "--output", required=True, metavar="W", help="write W.json + W.npz")
    q.add_argument("--solver", choices=("lp", "adam"), default="lp", help="default: lp (exact)")
    q.add_argument("--granularity", choices=("neuron", "layer"), default="neuron",
                   help="one weight per neuron (default) or per layer (FD for layer-Gaussians)")
    q.add_argument("--regularization", type=float, default=None, metavar="L",
                   help="pull towards uniform weights (default: the library's)")
    q.add_argument("--max-weight", type=float, default=None, metavar="M",
                   help="no weight above M times the uniform weight (default: the library's)")
    q.add_argument("--seed", type=int, default=0, help="seed of the Adam solver's start (default: 0)")
    q.add_argument("--csv", default=None, metavar="CSV", help="also write the weights as CSV")
    q.set_defaults(func=cmd_weights_learn)

    q = wsub.add_parser("inspect", parents=[common], help="describe a weights file",
                        description="Show the extractor, granularity, how many weights are non-zero and where.")
    q.add_argument("weights", help="weights file (W, W.json or W.npz)")
    q.add_argument("--csv", default=None, metavar="CSV", help="also write the weights as CSV")
    q.add_argument("--json", action="store_true", help="print the description as JSON")
    q.set_defaults(func=cmd_weights_inspect)

    q = wsub.add_parser("evaluate", parents=[common], help="removal and deviation of weights on (held-out) pairs",
                        description="Δ = 1 - D_W / D_avg (paper Eq. 6) of each pair: removal = mean Δ over "
                                    "--ignore pairs, deviation = mean |Δ| over --keep pairs.")
    q.add_argument("weights", help="weights file (W, W.json or W.npz)")
    q.add_argument("--ignore", action="append", default=[], metavar="A:B", help="a pair that should vanish")
    q.add_argument("--keep", action="append", default=[], metavar="C:D", help="a pair that should keep its value")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=cmd_weights_evaluate)


def _weights_usage(parser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# ============================================================================== entry point
def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit with 2 here
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command in ("compare", "rank") and args.neuron is not None and args.layer is None:
        parser.error(f"{args.command}: --neuron needs --layer")
    _route_warnings()
    try:
        if args.imports and os.getcwd() not in sys.path:
            # like `python -m vdna`: a module file in the current folder can be imported (the `vdna` script
            # itself does not put the current folder on the path); appended, so it shadows no package
            sys.path.append(os.getcwd())
        for module in args.imports:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise CLIError(f"--import {module}: {exc}") from exc
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print("vdna: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # one clear line for people; the traceback on request
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"vdna {args.command}: error: {_explain(exc, args.debug)}", file=sys.stderr)
        return EXIT_ERROR


def _explain(exc: BaseException, debug: bool) -> str:
    """One line in words: what is wrong with which file or argument. Our errors (ValueError, OSError,
    ...) carry that in their message; for anything else the message is kept and the exception's class
    name is never shown (it means nothing to a user), only a pointer to --debug."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # raised by the OS: "[Errno 2] ..." reads badly
        message = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, MemoryError):
        message = "not enough memory" + (f" ({exc})" if str(exc) else "")
    elif isinstance(exc, RecursionError):
        message = "an input is nested too deeply to be processed"
    else:
        message = str(exc).strip() or "unexpected failure"
    message = " ".join(message.split())  # one line
    if not debug and not isinstance(exc, (CLIError, ValueError, OSError, ImportError)):
        message += " (run again with --debug for details)"
    return message


def _route_warnings() -> None:
    """Warnings as one line each ("vdna: warning: ..."), without source lines."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"vdna: warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show


# ============================================================================== helpers
def _is_dna_path(path: str) -> bool:
    if path.endswith((".json", ".npz")):
        return True
    return os.path.isfile(path + ".json") or os.path.isfile(path + ".npz")


def load_dna(path: str):
    """Load a DNA given with or without its suffix; a clear error when a file is missing."""
    from . import load_vdna_from_files

    load_dna_check(path)
    return load_vdna_from_files(path)


def load_dna_check(path: str) -> None:
    """CLIError, saying how to make one, when the DNA's .json (or, for a JSON of vdna 0.1.1, its
    .npz) is missing. (A JSON of ours may name a pending .npz of an interrupted save: the loader
    finds it.)"""
    from .files import pair_paths

    json_path, npz_path = pair_paths(path)
    missing = [p for p in (json_path, npz_path) if not os.path.isfile(p)]
    base = json_path[: -len(".json")]
    if len(missing) == 2:
        raise CLIError(f"DNA not found: {path} (expected {json_path} and {npz_path}); "
                       f"make one with `vdna make SOURCE -o {base}`")
    if missing == [json_path]:
        raise CLIError(f"DNA {base} is incomplete: {json_path} is missing (a DNA is a .json + .npz pair)")


def _check_source_exists(source: str) -> None:
    from .sources import listing

    if not os.path.exists(source) and not listing.is_glob_pattern(source):
        raise CLIError(f"not found: {source} (expected an image folder, image file, .txt list, .zip archive "
                       "or a DNA path)")


def _make_kwargs(args, extractor: str, distribution: str, data_settings=None) -> dict:
    """make_vdna keyword arguments from the build options."""
    crop = args.crop or (getattr(data_settings, "crop_to_square_pre_resize", None) if data_settings else None)
    resize = args.resize or (getattr(data_settings, "resize_mode", None) if data_settings else None)
    kwargs = dict(
        num_images=args.num_images, shuffle_files=args.shuffle, feat_extractor_name=extractor,
        distribution_name=distribution, seed=args.seed, batch_size=args.batch_size, device=args.device,
        verbose=not args.quiet, num_workers=args.workers, crop_to_square_pre_resize=crop or "none",
        resize_mode=resize or "clean", backend=args.backend, strict=args.strict, extractor_weights=args.extractor_weights,
        allow_download=_allow_download(args),
    )
    if getattr(args, "ranges", None):
        kwargs["activation_ranges"] = _existing_file(args.ranges, "activation ranges file")
    return kwargs


def _existing_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise CLIError(f"{what} not found: {path}")
    return path


def _dna_kind(v) -> str:
    return f"histogram-{v.hist_nb_bins}" if v.type == "histogram" else v.type


def _summary(v) -> str:
    n = sum(int(c) for c in v.neurons_list.values())
    return f"{_dna_kind(v)}, {v.feature_extractor_name}, {v.num_images} images, {n} neurons"


def _out_base(path: str) -> str:
    from .files import pair_paths

    return pair_paths(path)[0][: -len(".json")]


def read_neuron_weights(path: str, vdna, layer=None, metric: str = "EMD"):
    """Neuron weights from a file (see ``vdna.weights_io.read_neuron_weights``)."""
    from .weights_io import read_neuron_weights as read

    return read(path, vdna, layer, metric)


def _check_plotting(option: str, path) -> None:
    """Fail before any work when a figure was asked for but matplotlib is missing."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError(f"{option} {path} needs matplotlib: pip install matplotlib (or pip install vdna[plots])") \
            from None


def _save_figure(fig, path: str) -> None:
    from .plots import save_figure

    save_figure(fig, path)


# ============================================================================== commands
def cmd_make(args) -> int:
    from .processor import VDNAProcessor

    _check_source_exists(args.source)
    _check_plotting("--plot", args.plot)
    kwargs = _make_kwargs(args, args.extractor or DEFAULT_EXTRACTOR, args.distribution or DEFAULT_DISTRIBUTION)
    if args.sample_images:
        kwargs.update(save_sample_images=args.sample_images, n_sample_images=args.n_sample_images)
    if args.checkpoint:
        kwargs.update(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    rank = _join_torchrun(args.device)
    if rank is not None:
        kwargs["dst"] = 0  # under torchrun, rank 0 gets the DNA, writes the files and shows progress
        if rank != 0:
            kwargs.pop("save_sample_images", None)
    v = VDNAProcessor().make_vdna(args.source, **kwargs)
    if v is None:  # another rank than 0 under torchrun: its share is in rank 0's DNA
        return EXIT_OK
    if v.num_images == 0:
        raise CLIError(f"no readable image in {args.source}; nothing was saved")
    base = _out_base(args.output)
    v.save(base)
    print(f"wrote {base}.json and {base}.npz ({_summary(v)})")
    if args.plot:
        from .plots import plot_dna_summary

        _save_figure(plot_dna_summary(v, label=_label(base)), args.plot)
        print(f"figure written to {args.plot}")
    return EXIT_OK


def _join_torchrun(device) -> "int | None":
    """Under torchrun (WORLD_SIZE > 1 in the environment), initialise the default process group
    (NCCL for CUDA devices, else gloo) and return this rank; None for a one-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank()


def _dna_or_source(path: str, other, args, label: str):
    """A DNA loaded from ``path``, or built from the image source at ``path`` (settings from ``other``)."""
    from .processor import VDNAProcessor

    if _is_dna_path(path):
        return load_dna(path)
    _check_source_exists(path)
    extractor = args.extractor or (other.feature_extractor_name if other is not None else DEFAULT_EXTRACTOR)
    distribution = args.distribution or (_dna_kind(other) if other is not None else DEFAULT_DISTRIBUTION)
    if other is not None and (extractor != other.feature_extractor_name or distribution != _dna_kind(other)):
        raise CLIError(f"{label} would be built with {extractor}/{distribution} but the other DNA is "
                       f"{other.feature_extractor_name}/{_dna_kind(other)}; drop --extractor/--distribution")
    v = VDNAProcessor().make_vdna(path, **_make_kwargs(args, extractor, distribution,
                                                       other.data_settings_used if other is not None else None))
    if v.num_images == 0:
        raise CLIError(f"no readable image in {path}")
    if args.save_dnas:
        base = os.path.join(args.save_dnas, label)
        v.save(base)
        print(f"saved the DNA of {path} to {base}.json/.npz", file=sys.stderr)
    return v


def cmd_compare(args) -> int:
    from .distances import metric_name
    from .ranking import distance, layer_distances, neuron_distances, rank_neurons

    _check_plotting("--plot", args.plot)
    a_is_dna, b_is_dna = _is_dna_path(args.a), _is_dna_path(args.b)
    a = _dna_or_source(args.a, None, args, "A") if a_is_dna or not b_is_dna else None
    b = _dna_or_source(args.b, a, args, "B")
    if a is None:
        a = _dna_or_source(args.a, b, args, "A")
    metric = metric_name(a)
    weights = read_neuron_weights(args.weights, a, args.layer, metric) if args.weights else None
    if args.neuron is not None and weights is not None:
        raise CLIError("--weights cannot be combined with --neuron (a single neuron)")
    if args.layer is not None:
        a.check_layer(args.layer)
        if args.neuron is not None:
            a.check_neuron(args.layer, args.neuron)
    name, value = distance(a, b, use_neurons_from_layer=args.layer, use_neuron_index=args.neuron, weights=weights)
    _, per_layer = layer_distances(a, b)
    if args.layer is not None:
        per_layer = {args.layer: per_layer[args.layer]}
    top = rank_neurons(a, b, args.top, use_neurons_from_layer=args.layer) if args.top else []

    if args.neuron_wise:
        nw_metric, values = neuron_distances(a, b, use_neurons_from_layer=args.layer)
        _write_neuron_wise(args.neuron_wise, nw_metric, values)

    result = {
        "metric": name,
        "distance": value,
        "layer": args.layer,
        "neuron": args.neuron,
        "weighted": weights is not None,
        "layers": per_layer,
        "most_different_neurons": [{"layer": l, "neuron": i, "distance": d} for l, i, d in top],
        "a": _dna_json(a, args.a),
        "b": _dna_json(b, args.b),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_comparison(result, a, metric)
    if args.neuron_wise and not args.json:
        print(f"per-neuron distances written to {args.neuron_wise}")
    if args.plot:
        from .plots import plot_comparison

        _save_figure(plot_comparison(a, b, labels=(_label(args.a), _label(args.b)), layer=args.layer), args.plot)
        if not args.json:
            print(f"figure written to {args.plot}")
    return EXIT_OK


def _label(path: str) -> str:
    return os.path.basename(os.path.normpath(path)) or path


def _dna_json(v, path: str) -> dict:
    return {"path": path, "type": _dna_kind(v), "extractor": v.feature_extractor_name, "num_images": int(v.num_images)}


_METRIC_HELP = {
    "EMD": "Earth Mover's Distance between per-neuron histograms, in bins (0 = identical)",
    "NFD": "Frechet distance between per-neuron Gaussians (0 = identical)",
    "FD": "Frechet distance between per-layer Gaussians (FID-like; 0 = identical)",
}


def _print_comparison(result: dict, a, metric: str) -> None:
    print(f"A: {result['a']['path']}  ({result['a']['type']}, {result['a']['extractor']}, "
          f"{result['a']['num_images']} images)")
    print(f"B: {result['b']['path']}  ({result['b']['type']}, {result['b']['extractor']}, "
          f"{result['b']['num_images']} images)")
    print(f"{metric}: {_METRIC_HELP[metric]}")
    print()
    width = max(len("layer"), *(len(l) for l in result["layers"]))
    print(f"  {'layer':<{width}}  {'neurons':>7}  {metric:>12}")
    for layer, v in result["layers"].items():
        print(f"  {layer:<{width}}  {a.neurons_list[layer]:>7}  {v:>12.6f}")
    print()
    if result["neuron"] is not None:
        what = f"{result['metric']} of neuron {result['neuron']} of layer {result['layer']}"
    elif result["layer"] is not None:
        what = f"{result['metric']} over layer {result['layer']}"
    else:
        n = sum(int(c) for c in a.neurons_list.values())
        what = f"{result['metric']} over all {n} neurons" if metric != "FD" else "FD, mean over layers"
    if result["weighted"]:
        what = "weighted " + what + " (sum of w * d)"
    print(f"{what}: {result['distance']:.6f}")
    if result["most_different_neurons"]:
        print()
        print(f"most different neurons ({metric if metric != 'FD' else 'NFD'}):")
        for row in result["most_different_neurons"]:
            print(f"  {row['layer']}[{row['neuron']}]  {row['distance']:.6f}")


def _write_neuron_wise(path: str, metric: str, values: dict) -> None:
    lower = path.lower()
    if lower.endswith(".json"):
        text = json.dumps({"metric": metric, "layers": {l: [float(x) for x in v] for l, v in values.items()}})
    elif lower.endswith(".csv"):
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "neuron", metric])
        for layer, v in values.items():
            for i, x in enumerate(v):
                w.writerow([layer, i, repr(float(x))])
        text = buf.getvalue()
    else:
        raise CLIError(f"--neuron-wise {path}: use a .csv or .json file name")
    write_text_atomic(path, text)


def cmd_rank(args) -> int:
    from .ranking import rank_images

    reference = load_dna(args.reference)
    _check_source_exists(args.source)
    _check_plotting("--plot", args.grid)
    if args.layer is not None:
        reference.check_layer(args.layer)
        if args.neuron is not None:
            reference.check_neuron(args.layer, args.neuron)
    neuron_weights = None
    if args.weights:
        from .distances import metric_name

        neuron_weights = read_neuron_weights(args.weights, reference, args.layer, metric_name(reference))
    if args.output and not args.output.lower().endswith(".csv"):
        raise CLIError(f"-o {args.output}: the scores file must be a .csv")
    ranking = rank_images(
        args.source, reference, num_images=args.num_images, batch_size=args.batch_size, device=args.device,
        num_workers=args.workers, crop_to_square_pre_resize=args.crop, resize_mode=args.resize,
        backend=args.backend, strict=args.strict, extractor_weights=args.extractor_weights,
        activation_ranges=_existing_file(args.ranges, "activation ranges file") if args.ranges else None,
        allow_download=_allow_download(args), use_neurons_from_layer=args.layer,
        use_neuron_index=args.neuron, neuron_weights=neuron_weights,
        seed=args.seed, verbose=not args.quiet,
    )
    from .distances import metric_name

    metric = metric_name(reference)
    if args.output:
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "image", metric])
        for i, (name, d) in enumerate(ranking, 1):
            w.writerow([i, name, repr(d)])
        write_text_atomic(args.output, buf.getvalue())
    if args.json:
        print(json.dumps({"metric": metric, "reference": args.reference,
                          "ranking": [{"image": n, "distance": d} for n, d in ranking]}, indent=2))
    else:
        k = min(args.top, len(ranking))
        print(f"{len(ranking)} images ranked by {metric} to {args.reference} (smaller = more typical)")
        print(f"closest {k}:")
        for i, (name, d) in enumerate(ranking[:k], 1):
            print(f"  {i:>5}  {d:12.6f}  {name}")
        print(f"farthest {k}:")
        for i, (name, d) in enumerate(ranking[-k:], len(ranking) - k + 1):
            print(f"  {i:>5}  {d:12.6f}  {name}")
        if args.output:
            print(f"all scores written to {args.output}")
    if args.grid:
        from .plots import plot_ranking_grid

        _save_figure(plot_ranking_grid(ranking, args.source, k=args.top, metric=metric), args.grid)
        if not args.json:
            print(f"image grid written to {args.grid}")
    return EXIT_OK


def describe_dna(path: str) -> dict:
    """What ``vdna inspect`` shows, as a dict (see ``vdna.describe.describe_dna``)."""
    from .describe import describe_dna as describe

    load_dna_check(path)
    return describe(path)


def cmd_inspect(args) -> int:
    _check_plotting("--plot", args.plot)
    info = describe_dna(args.dna)
    if args.plot:
        from .plots import plot_dna_summary

        _save_figure(plot_dna_summary(load_dna(args.dna), label=_label(info["path"])), args.plot)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    rows = [
        ("DNA", info["path"]),
        ("type", info["type"]),
        ("extractor", info["extractor"]),
        ("images", str(info["num_images"])),
        ("skipped files", str(len(info["skipped_files"]))),
        ("NaN values", str(info["nan_values"])),
        ("source", info["source"] or "-"),
        ("computed", str(info["time_of_compute"] or "-")),
        ("format", f"{info['format']}, written by {info['written_by']}"),
        ("files", f"{info['files']['json']} B json + {info['files']['npz']} B npz"),
        ("layers", f"{len(info['layers'])} layers, {info['neurons']} neurons"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    lw = max(len(l) for l in info["layers"])
    for layer, count in info["layers"].items():
        print(f"  {layer:<{lw}}  {count:>6}")
    for item in info["skipped_files"][:10]:
        name, reason = (item.get("name"), item.get("reason")) if isinstance(item, dict) else (item, "")
        print(f"skipped: {name}" + (f" ({reason})" if reason else ""))
    if len(info["skipped_files"]) > 10:
        print(f"... and {len(info['skipped_files']) - 10} more skipped files")
    if args.plot:
        print(f"figure written to {args.plot}")
    return EXIT_OK


def cmd_merge(args) -> int:
    if len(args.dnas) < 2:
        raise CLIError("merge needs at least two DNAs")
    merged = None
    for path in args.dnas:
        v = load_dna(path)
        try:
            merged = v if merged is None else merged.merge(v)
        except ValueError as exc:
            raise CLIError(f"cannot merge {path}: {exc}") from exc
    base = _out_base(args.output)
    merged.save(base)
    print(f"wrote {base}.json and {base}.npz ({_summary(merged)}, merged from {len(args.dnas)} DNAs)")
    return EXIT_OK


def cmd_calibrate(args) -> int:
    from .calibration import calibrate

    _check_source_exists(args.source)
    if not args.output.lower().endswith(".json"):
        raise CLIError(f"-o {args.output}: the ranges file must be a .json")
    kwargs = _make_kwargs(args, args.extractor or DEFAULT_EXTRACTOR, "activation-ranges")
    extractor = kwargs.pop("feat_extractor_name")
    kwargs.pop("distribution_name")
    v = calibrate(args.source, extractor, output=args.output, **kwargs)
    n = sum(int(c) for c in v.neurons_list.values())
    print(f"wrote {args.output} (activation ranges of {n} neurons of {extractor}, from {v.num_images} images)")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    kwargs = {}
    if args.num_images is not None:
        kwargs["num_images"] = args.num_images
    if args.bins is not None:
        kwargs["bins"] = args.bins
    run_demo(args.out, device=args.device, backend=args.backend, plots=not args.no_plots, **kwargs)
    return EXIT_OK


def cmd_build_shim(args) -> int:
    from .backends import build

    try:
        path = build.build_shim(args.cache_dir, force=args.force)
    except build.ShimBuildError as exc:
        detail = str(exc).splitlines()
        if len(detail) > 1:  # the compiler's output: worth reading in full
            print("\n".join(detail[1:]), file=sys.stderr)
        raise CLIError(f"cannot build the LibTorch shim: {detail[0] if detail else exc}; the eager PyTorch "
                       "backend still works (--backend eager)") from exc
    print(f"LibTorch shim ready: {path}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


# ============================================================================== stability, rank-datasets
def _add_stability_parsers(sub, common) -> None:
    p = sub.add_parser("stability", parents=[common], help="how many images a distance needs (stability curve)",
                       description="Compare random subsets of SOURCE (sizes x repeats, nested) with the reference "
                                   "and print, per metric, the smallest stable size, the all-image value and the "
                                   "value extrapolated to infinitely many images. The network runs once per image.")
    p.add_argument("source", help="image folder, image file, .txt list of paths, .zip archive")
    p.add_argument("--reference", required=True, nargs="+", metavar="REF",
                   help="reference DNA(s) (one per distribution) or one image source")
    p.add_argument("-o", "--output", default=None, metavar="CSV", help="write every value as CSV")
    p.add_argument("--save", default=None, metavar="NPZ", help="save the curve (StabilityCurve.load reads it)")
    p.add_argument("--plot", default=None, metavar="PNG", help="save the curves (mean +- std against N)")
    p.add_argument("--sizes", type=_positive_int, nargs="+", default=None,
                   help="subset sizes (default: 10 geometric steps from 10 to all images)")
    p.add_argument("--repeats", type=_positive_int, default=10, help="random subsets per size (default: 10)")
    p.add_argument("--distributions", nargs="+", default=None,
                   help="default: histogram-1000 layer-gaussian, or the reference DNAs' types")
    p.add_argument("--tol", type=float, default=0.05, help="relative tolerance of the stable size (default: 0.05)")
    p.add_argument("--max-memory", type=float, default=4.0, metavar="GIB",
                   help="GiB of accumulation state in memory; beyond, histogram state goes to a temporary file "
                        "(default: 4)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_build_options(p, distribution=False)
    p.set_defaults(func=cmd_stability)

    p = sub.add_parser("rank-datasets", parents=[common], help="rank training sets by closeness to target sets",
                       description="For each target DNA, rank the candidate DNAs by distance (closest first). "
                                   "With --scores (CSV target,candidate,score), also print the ranking "
                                   "discrepancy d (paper Eq. 8) and the random-ranking baseline.")
    p.add_argument("--targets", required=True, nargs="+", metavar="[NAME=]DNA", help="target DNAs")
    p.add_argument("--candidates", required=True, nargs="+", metavar="[NAME=]DNA", help="candidate DNAs")
    p.add_argument("--scores", default=None, metavar="CSV",
                   help="ground truth: CSV with header target,candidate,score (names as in --targets/--candidates)")
    p.add_argument("--lower-is-better", action="store_true", help="scores are errors (default: higher is better)")
    p.add_argument("--metric", choices=("EMD", "NFD", "FD"), default=None, help="default: the DNAs' own")
    p.add_argument("--samples", type=_positive_int, default=50, help="random rankings of the baseline (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default: 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_rank_datasets)


def cmd_stability(args) -> int:
    from .processor import VDNAProcessor

    _check_source_exists(args.source)
    _check_plotting("--plot", args.plot)
    if not args.tol > 0:
        raise CLIError(f"--tol must be > 0, got {args.tol}")
    if args.shuffle:
        raise CLIError("--shuffle does not apply: stability draws its own random subsets (--seed)")
    refs = args.reference
    if all(_is_dna_path(r) for r in refs):
        reference = [load_dna(r) for r in refs]
    elif len(refs) == 1:
        _check_source_exists(refs[0])
        reference = refs[0]
    else:
        raise CLIError("--reference takes DNAs (one per distribution) or a single image source")
    kw = _make_kwargs(args, args.extractor or (reference[0].feature_extractor_name if isinstance(reference, list)
                                               else DEFAULT_EXTRACTOR), DEFAULT_DISTRIBUTION)
    for unused in ("shuffle_files", "distribution_name", "strict"):
        kw.pop(unused)
    rank = _join_torchrun(args.device)
    if rank is not None:
        kw["dst"] = 0  # under torchrun, rank 0 gets the curve, writes the files and shows progress
    curve = VDNAProcessor().stability(args.source, reference, sizes=args.sizes, repeats=args.repeats,
                                      distributions=args.distributions, max_memory=int(args.max_memory * 2**30), **kw)
    if curve is None:  # another rank than 0 under torchrun: its share is in rank 0's curve
        return EXIT_OK
    rows = []
    for m in curve.metrics:
        try:
            inf, se = curve.extrapolate(m)
        except ValueError:
            inf, se = float("nan"), float("nan")
        rows.append({"metric": m, "stable_size": curve.stable_size(m, args.tol), "full": curve.full_value(m),
                     "extrapolated": inf, "stderr": se})
    if args.output:
        curve.to_csv(args.output)
    if args.save:
        curve.save(args.save)
    if args.plot:
        _save_figure(curve.plot(), args.plot)
    if args.json:
        print(json.dumps({"n_images": curve.n_images, "sizes": curve.sizes.tolist(), "repeats": curve.repeats,
                          "tol": args.tol, "metrics": rows}, indent=2))
        return EXIT_OK
    print(f"{curve.n_images} images, sizes {curve.sizes.tolist()}, {curve.repeats} repeats; stable: mean within "
          f"{args.tol:g} x the all-image value and std below it")
    print(f"{'metric':<28} {'stable N':>9} {'all images':>12} {'N -> inf':>12} {'+-':>9}")
    for r in rows:
        stable = "-" if r["stable_size"] is None else str(r["stable_size"])
        print(f"{r['metric']:<28} {stable:>9} {r['full']:>12.6g} {r['extrapolated']:>12.6g} {r['stderr']:>9.2g}")
    for path, what in ((args.output, "values"), (args.save, "curve"), (args.plot, "figure")):
        if path:
            print(f"{what} written to {path}")
    return EXIT_OK


def _named_dnas(items, option: str) -> dict:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = _label(_out_base(item)), item
        if name in out:
            raise CLIError(f"{option}: the name '{name}' is given twice (use NAME=PATH to name them)")
        out[name] = load_dna(path)
    return out


def cmd_rank_datasets(args) -> int:
    from .transfer import rank_datasets, random_ranking_discrepancy, ranking_discrepancy, read_scores_csv

    targets = _named_dnas(args.targets, "--targets")
    candidates = _named_dnas(args.candidates, "--candidates")
    scores = None
    if args.scores:
        scores = read_scores_csv(_existing_file(args.scores, "scores file"))
        missing = [t for t in targets if t not in scores]
        if missing:
            raise CLIError(f"{args.scores} has no scores for target(s) {missing}")
        scores = {t: scores[t] for t in targets}
        for t, row in scores.items():
            if set(row) != set(candidates):
                raise CLIError(f"{args.scores}: target '{t}' has scores for {sorted(row)}; the candidates are "
                               f"{sorted(candidates)}")
    rankings = rank_datasets(targets, candidates, metric=args.metric)
    result = {"rankings": {t: [{"candidate": c, "distance": d} for c, d in r] for t, r in rankings.items()}}
    if scores is not None:
        hib = not args.lower_is_better
        result["discrepancy"] = ranking_discrepancy(rankings, scores, higher_is_better=hib)
        mean, std = random_ranking_discrepancy(scores, samples=args.samples, seed=args.seed, higher_is_better=hib)
        result["random_discrepancy"] = {"mean": mean, "std": std, "samples": args.samples, "seed": args.seed}
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for t, r in rankings.items():
        print(f"{t}: " + ", ".join(f"{c} ({d:.6g})" for c, d in r))
    if scores is not None:
        rd = result["random_discrepancy"]
        print(f"ranking discrepancy d = {result['discrepancy']:.6g} (Eq. 8; 0 is perfect); random rankings: "
              f"{rd['mean']:.6g} +- {rd['std']:.3g} ({rd['samples']} samples)")
    return EXIT_OK


# ============================================================================== customised comparisons
def _pair_arg(text: str, option: str):
    """(dna_with, dna_without) from "A:B" (DNA files)."""
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise CLIError(f"{option} {text}: expected WITH:WITHOUT, two DNA paths separated by one ':'")
    return load_dna(parts[0]), load_dna(parts[1])


def cmd_sensitivity(args) -> int:
    from .customise import sensitivity
    from .neuron_weights import NeuronWeights

    if len(args.with_) != len(args.without):
        raise CLIError(f"give as many --with as --without (got {len(args.with_)} and {len(args.without)})")
    if not args.output.lower().endswith(".csv"):
        raise CLIError(f"-o {args.output}: the scores file must be a .csv")
    if (args.select is None) != (args.weights_out is None):
        raise CLIError("--select K and --weights-out W go together")
    _check_plotting("--plot", args.plot)
    first = None
    pairs = []
    for i, (a, b) in enumerate(zip(args.with_, args.without)):
        dna_a = _dna_or_source(a, first, args, f"with_{i}")
        first = first or dna_a
        pairs.append((dna_a, _dna_or_source(b, first, args, f"without_{i}")))
    baseline = [(_dna_or_source(c, first, args, f"baseline_{i}_a"), _dna_or_source(d, first, args, f"baseline_{i}_b"))
                for i, (c, d) in enumerate(args.baseline)]
    scores = sensitivity(pairs, baseline=baseline or None)
    what = "signal-to-noise ratio" if baseline else ("EMD" if first.type == "histogram" else "NFD")
    _write_neuron_wise(args.output, "sensitivity", scores)
    from .plots import _top_scores

    top = _top_scores(scores, args.top)
    print(f"sensitivity ({what}, {len(pairs)} pair(s)) of {sum(len(v) for v in scores.values())} neurons "
          f"written to {args.output}")
    if top:
        print(f"most sensitive {len(top)}:")
        for layer, i, value in top:
            print(f"  {layer}[{i}]  {value:.6g}")
    if args.select is not None:
        w = NeuronWeights.top_k(scores, args.select, like=first)
        w.meta["selection"].update({"scores": what, "pairs": len(pairs), "baseline_pairs": len(baseline)})
        base = _out_base(args.weights_out)
        w.save(base)
        print(f"weights 1/{args.select} on the {args.select} most sensitive neurons written to {base}.json/.npz")
    if args.plot:
        from .plots import plot_sensitive_neurons, plot_sensitivity

        root, ext = os.path.splitext(args.plot)
        _save_figure(plot_sensitivity(scores, label=what, k=max(args.top, 1)), args.plot)
        neurons_png = f"{root}_neurons{ext or '.png'}"
        _save_figure(plot_sensitive_neurons(pairs[0][0], pairs[0][1], scores, k=4), neurons_png)
        print(f"figures written to {args.plot} and {neurons_png}")
    return EXIT_OK


def _learn_kwargs(args) -> dict:
    kwargs = dict(granularity=args.granularity, solver=args.solver, seed=args.seed)
    if args.regularization is not None:
        kwargs["regularization"] = args.regularization
    if args.max_weight is not None:
        kwargs["max_weight"] = args.max_weight
    return kwargs


def cmd_weights_learn(args) -> int:
    from .customise import evaluate_weights, learn_weights

    ignore = [_pair_arg(t, "--ignore") for t in args.ignore]
    keep = [_pair_arg(t, "--keep") for t in args.keep]
    w = learn_weights(ignore, keep, **_learn_kwargs(args))
    base = _out_base(args.output)
    w.save(base)
    ev = evaluate_weights(w, ignore, keep)
    unit = "neurons" if w.granularity == "neuron" else "layers"
    print(f"weights written to {base}.json/.npz ({w.nonzero()} of {len(w.to_array())} {unit} weighted, "
          f"solver {args.solver})")
    print(f"on the training pairs: removal {100 * ev['removal']:.1f}%, deviation {100 * ev['deviation']:.1f}% "
          "(evaluate on held-out pairs with `vdna weights evaluate`)")
    if args.csv:
        w.to_csv(args.csv)
        print(f"weights written to {args.csv}")
    return EXIT_OK


def describe_weights(w) -> dict:
    """What ``vdna weights inspect`` shows, as a dict."""
    import numpy as np

    layers = {}
    for layer in w.neurons_list:
        v = w.layer(layer)
        layers[layer] = {"size": int(v.shape[0]), "nonzero": int(np.count_nonzero(v)), "sum": float(v.sum()),
                         "max": float(v.max())}
    return {"extractor": w.feature_extractor_name, "granularity": w.granularity, "nonzero": w.nonzero(),
            "size": int(len(w.to_array())), "sum": w.total(), "layers": layers, "meta": w.meta}


def cmd_weights_inspect(args) -> int:
    from .neuron_weights import NeuronWeights

    w = NeuronWeights.load(args.weights)
    d = describe_weights(w)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        unit = "neurons" if w.granularity == "neuron" else "layers"
        print(f"{args.weights}: weights of {d['size']} {unit} of {d['extractor']}; {d['nonzero']} non-zero, "
              f"sum {d['sum']:.6g} (uniform weights sum to 1)")
        for layer, row in d["layers"].items():
            if row["nonzero"]:
                print(f"  {layer:<24} {row['nonzero']:>6}/{row['size']:<6} sum {row['sum']:.4g}  max {row['max']:.4g}")
        learned = w.meta.get("learned")
        if learned:
            t = learned.get("training", {})
            print(f"learned: solver {learned.get('solver')}, {learned.get('metric')}, regularization "
                  f"{learned.get('regularization')}, {learned.get('ignore_pairs')} ignore / {learned.get('keep_pairs')} "
                  f"keep pairs; training removal {100 * t.get('removal', float('nan')):.1f}%, deviation "
                  f"{100 * t.get('deviation', float('nan')):.1f}%")
        if "selection" in w.meta:
            print(f"selected: {w.meta['selection']}")
    if args.csv:
        w.to_csv(args.csv)
        if not args.json:
            print(f"weights written to {args.csv}")
    return EXIT_OK


def cmd_weights_evaluate(args) -> int:
    from .customise import evaluate_weights
    from .neuron_weights import NeuronWeights

    if not args.ignore and not args.keep:
        raise CLIError("give at least one --ignore or --keep pair")
    w = NeuronWeights.load(args.weights)
    ignore = [_pair_arg(t, "--ignore") for t in args.ignore]
    keep = [_pair_arg(t, "--keep") for t in args.keep]
    ev = evaluate_weights(w, ignore, keep)
    if args.json:
        print(json.dumps(ev, indent=2))
        return EXIT_OK
    for name, pairs, values in (("ignore", args.ignore, ev["ignore"]), ("keep", args.keep, ev["keep"])):
        for text, delta in zip(pairs, values):
            print(f"  {name:<6} {text}: Δ = {100 * delta:.1f}%")
    if ev["removal"] is not None:
        print(f"removal {100 * ev['removal']:.1f}%")
    if ev["deviation"] is not None:
        print(f"deviation {100 * ev['deviation']:.1f}%")
    return EXIT_OK

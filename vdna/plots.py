"""Figures for DNAs (matplotlib, an optional dependency: ``pip install vdna[plots]``).

Every function returns a ``matplotlib.figure.Figure`` (shown inline in notebooks) and saves it when
given ``save="file.png"``:

- :func:`plot_neuron_histograms`: the distributions of chosen neurons in two DNAs, overlaid;
- :func:`plot_layer_distances`: the distance of each layer, for one or more comparisons;
- :func:`plot_top_neurons`: the neurons whose distributions differ most;
- :func:`plot_comparison`: the three above on one page (``vdna compare --plot``);
- :func:`plot_dna_summary`: one DNA, layer by layer (``vdna make --plot``, ``vdna inspect --plot``);
- :func:`plot_ranking_grid`: the best and worst matching images of a ranking (paper Fig. 4);
- :func:`plot_sensitivity`: per-neuron sensitivity to an attribute, layer by layer (``vdna sensitivity --plot``);
- :func:`plot_sensitive_neurons`: the most sensitive neurons' distributions with and without the attribute;
- :func:`plot_weight_evaluation`: removal and deviation of learned weights, attribute by attribute.
"""
from __future__ import annotations

import os
import textwrap
from typing import Optional, Sequence, Tuple, Union

import numpy as np

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_UNITS = {"EMD": "EMD (bins)", "NFD": "NFD", "FD": "FD"}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: `pip install matplotlib` (or `pip install vdna[plots]`)") from exc
    return plt


def save_figure(fig, path, close: bool = True) -> None:
    """Write ``fig`` to ``path`` atomically (format from the extension); close it unless ``close=False``."""
    from .atomic import atomic_write

    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or None
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight")
    if close:
        _pyplot().close(fig)


def _finish(fig, save):
    if save is not None:
        save_figure(fig, save, close=False)
    return fig


def _labels(labels, n, default=("A", "B", "C", "D", "E", "F")):
    if labels is None:
        return [v for v in default[:n]] if n <= len(default) else [f"DNA {i}" for i in range(n)]
    labels = [str(l) for l in labels]
    if len(labels) != n:
        raise ValueError(f"expected {n} labels, got {len(labels)}")
    return labels


def _parse_neurons(a, b, neurons) -> list:
    """[(layer, index), ...] from an int k (the k most different, or the first k of a single DNA) or a list."""
    from .ranking import rank_neurons

    if isinstance(neurons, (int, np.integer)) and not isinstance(neurons, bool):
        if int(neurons) < 1:
            raise ValueError(f"neurons must be >= 1 or a list of (layer, index), got {neurons}")
        if b is None:
            out = []
            for layer, count in a.neurons_list.items():
                out.extend((layer, i) for i in range(int(count)))
                if len(out) >= int(neurons):
                    break
            return out[: int(neurons)]
        return [(layer, idx) for layer, idx, _ in rank_neurons(a, b, int(neurons))]
    parsed = []
    for item in neurons:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError(f"neurons must be (layer, index) pairs, got {item!r}")
        parsed.append((str(item[0]), a.check_neuron(str(item[0]), int(item[1]))))
    if not parsed:
        raise ValueError("no neuron to plot")
    return parsed


def _display_histogram(counts, display_bins: int = 100):
    """(bin centres on [-1, 1], fractions) of a histogram, adjacent bins summed down to ``display_bins``."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    bins = counts.shape[0]
    x = -1.0 + (np.arange(bins) + 0.5) * (2.0 / bins)
    if display_bins and bins > display_bins:
        group = -(-bins // int(display_bins))
        starts = np.arange(0, bins, group)
        sizes = np.diff(np.append(starts, bins))
        counts = np.add.reduceat(counts, starts)
        x = np.add.reduceat(x, starts) / sizes
    total = counts.sum()
    return x, (counts / total if total > 0 else counts)


def _neuron_curve(v, layer: str, idx: int, display_bins: int = 100):
    """(x, y, kind) of one neuron's distribution: normalised histogram, or a Gaussian's (mean, variance).

    Histograms finer than ``display_bins`` are summed into groups of adjacent bins for display (a
    1000-bin histogram of a few images is mostly sampling noise at full resolution).
    """
    from .results import numpy_results

    if v.type == "histogram":
        with numpy_results():
            x, y = _display_histogram(v.get_neuron_dist(layer, idx), display_bins)
        return x, y, "histogram"
    if v.type in ("gaussian", "layer-gaussian"):
        with numpy_results():
            d = v.get_neuron_dist(layer, idx)
        mu = float(d["mu"])
        var = float(d["var"] if "var" in d else d["sigma"])
        return mu, max(var, 0.0), "gaussian"
    raise ValueError(f"cannot plot neuron distributions of a '{v.type}' DNA")


def _spiky(ys) -> bool:
    """True when one bin dwarfs the rest (e.g. the zeros after a ReLU): then a log axis shows both."""
    for y in ys:
        nonzero = np.sort(y[y > 0])
        if nonzero.size >= 2 and (nonzero[-1] > 5 * nonzero[-2] or nonzero[-1] > 10 * np.median(nonzero)):
            return True
    return False


def _draw_neuron(ax, dnas, names, layer: str, idx: int) -> None:
    """Overlay one neuron's distribution in each DNA on ``ax``, with axis labels and a legend."""
    curves = [_neuron_curve(v, layer, idx) for v in dnas]
    if curves[0][2] == "histogram":
        log = _spiky([y for _, y, _ in curves])
        for (x, y, _), name, colour in zip(curves, names, _COLOURS):
            if not log:
                ax.fill_between(x, y, step="mid", alpha=0.3, color=colour, linewidth=0)
            ax.step(x, y, where="mid", color=colour, linewidth=1.0, label=name)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("normalised activation")
        ax.set_ylabel("fraction of activations" + (" (log)" if log else ""))
    else:
        sds = [max(np.sqrt(var), 1e-9) for _, var, _ in curves]
        lo = min(mu - 4 * sd for (mu, _, _), sd in zip(curves, sds))
        hi = max(mu + 4 * sd for (mu, _, _), sd in zip(curves, sds))
        xs = np.linspace(lo, hi, 400)
        for (mu, _, _), sd, name, colour in zip(curves, sds, names, _COLOURS):
            ax.plot(xs, np.exp(-0.5 * ((xs - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color=colour, label=name)
        ax.set_xlabel("activation (image mean)")
        ax.set_ylabel("density")
    ax.legend(fontsize=8)


def plot_neuron_histograms(a, b=None, neurons: Union[int, Sequence[Tuple[str, int]]] = 4,
                           labels: Optional[Sequence[str]] = None, cols: int = 4, save=None):
    """Overlay the distributions of chosen neurons in ``a`` (and ``b``).

    ``neurons``: a list of ``(layer, index)``, or an int k: the k neurons that differ most between
    ``a`` and ``b`` (the first k neurons when ``b`` is None). Histograms are drawn as fractions of
    activations per bin over the normalised range [-1, 1] (adjacent bins summed down to at most 100
    for display; a log axis when one bin dwarfs the others, such as the zeros after a ReLU);
    Gaussian DNAs as densities.
    """
    from .distances import metric_function, metric_name

    plt = _pyplot()
    dnas = [a] if b is None else [a, b]
    names = _labels(labels, len(dnas))
    chosen = _parse_neurons(a, b, neurons)
    cols = max(1, min(int(cols), len(chosen)))
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    metric = metric_name(a, neuron_wise=True) if b is not None else None
    for ax, (layer, idx) in zip(axes.flat, chosen):
        _draw_neuron(ax, dnas, names, layer, idx)
        title = f"{layer} [{idx}]"
        if metric is not None:
            title += f"  {metric} {float(metric_function(metric)(a, b, layer, idx)):.3g}"
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle("Neuron distributions" + (f": {names[0]} vs {names[1]}" if b is not None else f": {names[0]}"))
    fig.tight_layout()
    return _finish(fig, save)


def plot_layer_distances(reference, *others, labels: Optional[Sequence[str]] = None, reference_label: str = "A",
                         ax=None, save=None):
    """Bar chart of the distance of every layer between ``reference`` and each of ``others``.

    ``labels`` name the other DNAs (legend). Layers are on the x axis in network order.
    """
    from .ranking import layer_distances

    if not others:
        raise ValueError("plot_layer_distances needs at least one DNA to compare with the reference")
    plt = _pyplot()
    names = _labels(labels, len(others), default=("B", "C", "D", "E", "F", "G"))
    series = []
    metric = None
    for other in others:
        metric, values = layer_distances(reference, other)
        series.append(values)
    layers = list(series[0])
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(layers) * len(others) + 2), 3.8))
    width = 0.8 / len(series)
    x = np.arange(len(layers))
    for i, (values, name) in enumerate(zip(series, names)):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [values[l] for l in layers], width, label=name,
               color=_COLOURS[i % len(_COLOURS)])
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(_UNITS[metric] + (" (mean over neurons)" if metric != "FD" else ""))
    ax.set_title(f"Per-layer {metric} to {reference_label}")
    ax.legend()
    if fig is None:
        return ax.figure
    fig.tight_layout()
    return _finish(fig, save)


def plot_top_neurons(a, b, k: int = 20, use_neurons_from_layer: Optional[str] = None, ax=None, save=None):
    """Horizontal bars of the ``k`` neurons whose distributions differ most between ``a`` and ``b``."""
    from .distances import metric_name
    from .ranking import rank_neurons

    plt = _pyplot()
    top = rank_neurons(a, b, k, use_neurons_from_layer=use_neurons_from_layer)
    metric = metric_name(a, neuron_wise=True)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 0.28 * len(top) + 1.4))
    names = [f"{layer} [{idx}]" for layer, idx, _ in top]
    ax.barh(np.arange(len(top))[::-1], [d for _, _, d in top], color=_COLOURS[1])
    ax.set_yticks(np.arange(len(top))[::-1])
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel(_UNITS[metric])
    ax.set_ylabel("neuron (layer [index])")
    where = f" of {use_neurons_from_layer}" if use_neurons_from_layer else ""
    ax.set_title(f"The {len(top)} most different neurons{where}")
    if fig is None:
        return ax.figure
    fig.tight_layout()
    return _finish(fig, save)


def plot_comparison(a, b, labels: Optional[Sequence[str]] = None, layer: Optional[str] = None, k: int = 15,
                    n_histograms: int = 4, save=None):
    """One page: per-layer distances, the most different neurons, and their distributions overlaid."""
    plt = _pyplot()
    names = _labels(labels, 2)
    fig = plt.figure(figsize=(13, 9.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1])
    ax_layers, ax_top = top.subplots(1, 2, width_ratios=[1.4, 1])
    plot_layer_distances(a, b, labels=[names[1]], reference_label=names[0], ax=ax_layers)
    plot_top_neurons(a, b, k, use_neurons_from_layer=layer, ax=ax_top)
    from .distances import metric_name
    from .ranking import rank_neurons

    chosen = rank_neurons(a, b, n_histograms, use_neurons_from_layer=layer)
    axes = np.atleast_1d(bottom.subplots(1, len(chosen)))
    for ax, (lay, idx, dist) in zip(axes, chosen):
        _draw_neuron(ax, (a, b), names, lay, idx)
        ax.set_title(f"{lay} [{idx}]  {metric_name(a, neuron_wise=True)} {dist:.3g}", fontsize=10)
    bottom.suptitle("Distributions of the most different neurons")
    fig.suptitle(f"{names[0]} vs {names[1]}", fontsize=14)
    return _finish(fig, save)


def plot_dna_summary(dna, label: Optional[str] = None, max_layers: int = 30, cols: Optional[int] = None, save=None):
    """One page describing a single DNA, layer by layer (``vdna make --plot``, ``vdna inspect --plot``).

    - ``histogram``: per layer, the histograms of all its neurons summed, as the fraction of activations
      per bin of the normalised range [-1, 1] (each neuron is normalised by its own activation range, so
      -1 and 1 are 1.2x its calibrated min and max); adjacent bins are summed down to at most 100, and a
      log axis is used when one bin dwarfs the others (the zeros after a ReLU);
    - ``gaussian`` and ``layer-gaussian``: per layer, box plots of the neurons' means and variances (the
      diagonal of the covariance for ``layer-gaussian``);
    - ``activation-ranges``: per layer, box plots of the neurons' minima and maxima.

    With more than ``max_layers`` layers, evenly spaced ones are shown (the first and last included).
    ``cols``: panels per row of the histogram grid (default: a near-square grid, at most 5 wide).
    """
    plt = _pyplot()
    layers = list(dna.neurons_list)
    if not layers:
        raise ValueError("the DNA has no layers to plot")
    if int(max_layers) < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    shown = layers
    if len(layers) > int(max_layers):
        keep = np.unique(np.round(np.linspace(0, len(layers) - 1, int(max_layers))).astype(int))
        shown = [layers[i] for i in keep]
    kind = f"histogram-{dna.hist_nb_bins}" if dna.type == "histogram" else dna.type
    n_neurons = sum(int(c) for c in dna.neurons_list.values())
    title = (f"{kind} DNA of {dna.feature_extractor_name}: {int(dna.num_images)} images, "
             f"{len(layers)} layers, {n_neurons} neurons")
    if label:
        title = f"{label}: {title}"
    if len(shown) < len(layers):
        title += f" ({len(shown)} layers shown)"
    if dna.type == "histogram":
        note = ("each panel: the histograms of all neurons of a layer summed; activations normalised per neuron "
                "(-1 and 1 = 1.2 x its calibrated min and max)")
    else:
        note = "boxes: quartiles over the neurons of a layer; whiskers: 1.5 IQR; dots: outlying neurons"

    if dna.type == "histogram":
        fig = _summary_histograms(plt, dna, shown, cols)
    elif dna.type in ("gaussian", "layer-gaussian"):
        fig, (ax_mu, ax_var) = plt.subplots(2, 1, figsize=(max(7.0, 0.5 * len(shown) + 2.5), 7.5), sharex=True)
        means, variances = {}, {}
        for layer in shown:
            d = dna.data[layer]
            means[layer] = np.asarray(d["mu"], dtype=np.float64).reshape(-1)
            variances[layer] = (np.asarray(d["var"], dtype=np.float64).reshape(-1) if "var" in d
                                else np.diagonal(np.asarray(d["sigma"], dtype=np.float64)).copy())
        source = "covariance diagonal" if dna.type == "layer-gaussian" else "per neuron"
        _layer_boxes(ax_mu, shown, [("mean", means, _COLOURS[0])])
        ax_mu.set_ylabel("neuron mean\n(activation averaged per image)")
        ax_mu.set_title("Means of the neurons of each layer")
        _layer_boxes(ax_var, shown, [("variance", variances, _COLOURS[1])])
        scale = _spread_scale(ax_var, np.concatenate([v[np.isfinite(v)] for v in variances.values()]))
        ax_var.set_ylabel(f"variance across images\n({source}{scale})")
        ax_var.set_title("Variances of the neurons of each layer")
        ax_var.set_xlabel("layer")
    elif dna.type == "activation-ranges":
        fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(shown) + 2.5), 4.5))
        mins = {l: np.asarray(dna.data[l]["min"], dtype=np.float64).reshape(-1) for l in shown}
        maxs = {l: np.asarray(dna.data[l]["max"], dtype=np.float64).reshape(-1) for l in shown}
        _layer_boxes(ax, shown, [("minimum", mins, _COLOURS[0]), ("maximum", maxs, _COLOURS[1])])
        ax.axhline(0.0, color="grey", linewidth=0.8, zorder=0)
        ax.set_xlabel("layer")
        ax.set_ylabel("activation")
        ax.set_title("Per-neuron activation minima and maxima of each layer")
    else:
        raise ValueError(f"cannot summarise a DNA of type {dna.type!r}")
    chars = max(50, int(9 * fig.get_size_inches()[0]))  # what fits across the figure at the title's size
    fig.suptitle("\n".join(textwrap.wrap(title, chars) + textwrap.wrap(note, chars)))
    fig.tight_layout()
    return _finish(fig, save)


def _spread_scale(ax, values) -> str:
    """A log y axis when positive ``values`` span over two decades (variances usually do); returns a note
    for the axis label. Zeros (dead neurons) keep a linear stretch at the bottom (symlog)."""
    positive = values[values > 0]
    if not positive.size or positive.max() <= 100 * positive.min():
        return ""
    if positive.size == values.size:
        ax.set_yscale("log")
        return "; log scale"
    linthresh = 10.0 ** np.floor(np.log10(np.percentile(positive, 1)))
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.3)
    ax.set_ylim(bottom=min(0.0, float(values.min())))  # no empty negative half
    return f"; log scale above {linthresh:g}"


def _summary_histograms(plt, dna, layers, cols):
    """A grid with one panel per layer: the layer's neuron histograms summed."""
    if cols is None:  # near-square grid, at most 5 panels wide
        cols = min(5, int(np.ceil(np.sqrt(len(layers)))))
    cols = max(1, min(int(cols), len(layers)))
    rows = (len(layers) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows + 0.5), squeeze=False)
    for i, (ax, layer) in enumerate(zip(axes.flat, layers)):
        summed = np.asarray(dna.data[layer], dtype=np.float64).sum(axis=0)
        x, y = _display_histogram(summed)
        log = _spiky([y])
        if not log:
            ax.fill_between(x, y, step="mid", alpha=0.3, color=_COLOURS[0], linewidth=0)
        ax.step(x, y, where="mid", color=_COLOURS[0], linewidth=1.0)
        if log:
            ax.set_yscale("log")
        ax.set_xlim(-1.0, 1.0)
        ax.set_title(f"{layer} ({int(dna.neurons_list[layer])} neurons)", fontsize=10)
        ax.tick_params(labelsize=8)
        # Axis labels on the outer panels only: 25 repeated labels would crowd out the curves.
        if i % cols == 0:
            ax.set_ylabel("fraction of activations", fontsize=9)
        if i + cols >= len(layers):
            ax.set_xlabel("normalised activation", fontsize=9)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    return fig


def _layer_boxes(ax, layers, series) -> None:
    """Box plots of per-neuron values by layer; ``series`` = [(name, {layer: values}, colour)], side by side.

    Non-finite values are left out. The median line of each box gets the gid "median <name> <layer>".
    """
    x = np.arange(len(layers), dtype=np.float64)
    width = 0.75 / len(series)
    handles = []
    for i, (name, values, colour) in enumerate(series):
        data = [v[np.isfinite(v)] for v in (values[l] for l in layers)]
        bp = ax.boxplot(data, positions=x + (i - (len(series) - 1) / 2) * width, widths=0.85 * width,
                        patch_artist=True, manage_ticks=False, medianprops={"color": "black"},
                        flierprops={"marker": ".", "markersize": 3, "alpha": 0.5, "markeredgecolor": colour})
        for box in bp["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.55)
        for layer, median in zip(layers, bp["medians"]):
            median.set_gid(f"median {name} {layer}")
        handles.append(bp["boxes"][0])
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(handles, [name for name, _, _ in series], fontsize=8)


def plot_ranking_grid(ranking: Sequence[Tuple[str, float]], source, k: int = 5, metric: str = "EMD",
                      thumb: int = 160, save=None):
    """Two rows of thumbnails: the ``k`` images closest to the reference and the ``k`` farthest.

    ``ranking`` is the list returned by :func:`vdna.ranking.rank_images`; ``source`` the image source
    it was computed on (images are looked up by name).
    """
    from .sources import open_source, to_rgb

    plt = _pyplot()
    ranking = list(ranking)
    if not ranking:
        raise ValueError("the ranking is empty")
    k = max(1, min(int(k), len(ranking)))
    src = open_source(source)
    index = {name: i for i, name in enumerate(src.names)}
    rows = [("closest", list(enumerate(ranking[:k], 1))),
            ("farthest", list(enumerate(ranking[-k:], len(ranking) - k + 1)))]
    fig, axes = plt.subplots(2, k, figsize=(2.3 * k, 5.4), squeeze=False)
    for r, (row_name, items) in enumerate(rows):
        for c, (rank, (name, dist)) in enumerate(items):
            ax = axes[r, c]
            if name not in index:
                raise ValueError(f"image {name!r} of the ranking is not in the source")
            ax.imshow(_thumbnail(to_rgb(src.read(index[name])), thumb))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{rank}  {metric} {dist:.3g}", fontsize=9)
            ax.set_xlabel(_short(name), fontsize=7)
        axes[r, 0].set_ylabel(row_name, fontsize=11)
    close = getattr(src, "close", None)
    if close is not None:
        close()
    fig.suptitle(f"Images ranked by {metric} to the reference DNA (top: most typical, bottom: least)")
    fig.tight_layout()
    return _finish(fig, save)


def _short(name: str, width: int = 30) -> str:
    """The file name and its folder ("close/img_00003.png"), shortened from the left to ``width``."""
    path = name.split(":")[-1].replace(os.sep, "/")
    base = "/".join(path.rstrip("/").split("/")[-2:]) or name
    return base if len(base) <= width else "..." + base[-(width - 3):]


def _thumbnail(img, size: int) -> np.ndarray:
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    img = img.copy()
    img.thumbnail((size, size))
    return np.asarray(img)


# ======================================================================================= customised comparisons
def _top_scores(scores, k: int):
    """[(layer, index, score)] of the ``k`` highest finite scores of ``{layer: (C,) array}``."""
    flat = [(l, i, float(x)) for l, v in scores.items() for i, x in enumerate(np.asarray(v, dtype=np.float64))
            if np.isfinite(x)]
    order = sorted(range(len(flat)), key=lambda j: -flat[j][2])  # stable: ties keep network order
    return [flat[j] for j in order[: max(0, int(k))]]


def plot_sensitivity(scores, label: Optional[str] = None, k: int = 10, save=None):
    """How much each neuron sees an attribute (:func:`vdna.sensitivity`): the distribution of the scores
    over each layer's neurons (box plots, network order), and the ``k`` highest scores."""
    plt = _pyplot()
    if not isinstance(scores, dict) or not scores:
        raise ValueError("plot_sensitivity needs the {layer: scores} dict that vdna.sensitivity returns")
    layers = list(scores)
    top = _top_scores(scores, k)
    fig, (ax, ax_top) = plt.subplots(1, 2, figsize=(max(7.0, 0.35 * len(layers) + 5.5), 4.2),
                                     gridspec_kw={"width_ratios": [max(2.0, 0.3 * len(layers)), 2.0]})
    _layer_boxes(ax, layers, [("sensitivity", {l: np.asarray(scores[l], dtype=np.float64) for l in layers},
                               _COLOURS[0])])
    ax.set_xlabel("layer")
    ax.set_ylabel("sensitivity (per neuron)")
    ax.set_title("Sensitivity per layer" + (f": {label}" if label else ""))
    ax_top.barh(np.arange(len(top))[::-1], [d for _, _, d in top], color=_COLOURS[1])
    ax_top.set_yticks(np.arange(len(top))[::-1])
    ax_top.set_yticklabels([f"{l} [{i}]" for l, i, _ in top], fontsize=8)
    ax_top.set_xlabel("sensitivity")
    ax_top.set_title(f"The {len(top)} most sensitive neurons")
    fig.tight_layout()
    return _finish(fig, save)


def plot_sensitive_neurons(dna_with, dna_without, scores, k: int = 4, labels=("with", "without"), cols: int = 4,
                           save=None):
    """The distributions of the ``k`` neurons with the highest ``scores`` (e.g. :func:`vdna.sensitivity`),
    with and without the attribute, overlaid."""
    top = _top_scores(scores, k)
    if not top:
        raise ValueError("no finite score to choose neurons from")
    return plot_neuron_histograms(dna_with, dna_without, [(l, i) for l, i, _ in top], labels=labels, cols=cols,
                                  save=save)


def plot_weight_evaluation(results, title: str = "Learned weights on held-out pairs", save=None):
    """Bars of removal (mean Δ of the ignored attribute, %) and deviation (mean |Δ| of the others, %) per
    attribute: ``results`` is ``{attribute: vdna.evaluate_weights(...)}`` (or dicts with those two keys)."""
    plt = _pyplot()
    if not isinstance(results, dict) or not results:
        raise ValueError("plot_weight_evaluation needs {attribute: {'removal': ..., 'deviation': ...}}")
    names = list(results)
    removal = [100.0 * float(results[a]["removal"]) for a in names]
    deviation = [100.0 * float(results[a]["deviation"]) for a in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 3.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, removal, 0.4, label="removal (mean Δ of the ignored attribute)", color=_COLOURS[0])
    ax.bar(x + 0.2, deviation, 0.4, label="deviation (mean |Δ| of the others)", color=_COLOURS[1])
    ax.axhline(100.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=9)
    ax.set_ylabel("%")
    ax.set_xlabel("ignored attribute")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _finish(fig, save)

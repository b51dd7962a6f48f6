"""Figures: what they draw is checked against values computed here, and they are readable (titles, labels)."""
import sys

import numpy as np
import pytest

import matplotlib  # an optional extra of the package; the test extra installs it

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dna_factory import make_dna  # noqa: E402
from vdna import plots  # noqa: E402
from vdna.procedural import write_image_set  # noqa: E402


def emd_numpy(h1, h2):
    """Reference EMD per row: sum over bins of |CDF1 - CDF2| of the normalised histograms."""
    p = h1 / h1.sum(axis=1, keepdims=True)
    q = h2 / h2.sum(axis=1, keepdims=True)
    return np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1)).sum(axis=1)


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    return make_dna("histogram-16", rng), make_dna("histogram-16", rng)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_neuron_histograms_draw_normalised_counts(pair, tmp_path):
    a, b = pair
    fig = plots.plot_neuron_histograms(a, b, neurons=[("block_1", 2), ("conv.a", 0)], labels=["ref", "other"],
                                       save=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    ax = axes[0]
    assert ax.get_title().startswith("block_1 [2]")
    assert f"{emd_numpy(a.data['block_1'][2:3], b.data['block_1'][2:3])[0]:.3g}" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    lines = ax.get_lines()
    assert [l.get_label() for l in lines] == ["ref", "other"]
    expected = a.data["block_1"][2] / a.data["block_1"][2].sum()
    # Plotted values are float64 normalisations of integer counts (one division each): a few ulp; 1e-12.
    np.testing.assert_allclose(lines[0].get_ydata(), expected, rtol=1e-12)
    centres = -1 + (np.arange(16) + 0.5) / 8
    np.testing.assert_allclose(lines[0].get_xdata(), centres, rtol=1e-12)


def test_neuron_histograms_default_picks_most_different(pair):
    a, b = pair
    fig = plots.plot_neuron_histograms(a, b, neurons=2)
    emds = {(l, i): e for l in a.neurons_list for i, e in enumerate(emd_numpy(a.data[l], b.data[l]))}
    best = sorted(emds, key=lambda k: -emds[k])[:2]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert [t.split("  ")[0] for t in titles] == [f"{l} [{i}]" for l, i in best]


def test_layer_distances_bars_and_labels(pair, tmp_path):
    a, b = pair
    c = make_dna("histogram-16", np.random.default_rng(8))
    fig = plots.plot_layer_distances(a, b, c, labels=["b", "c"], reference_label="a", save=tmp_path / "l.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(a.neurons_list)
    assert "EMD" in ax.get_ylabel() and ax.get_xlabel() == "layer" and "a" in ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    expected_b = [emd_numpy(a.data[l], b.data[l]).mean() for l in a.neurons_list]
    expected_c = [emd_numpy(a.data[l], c.data[l]).mean() for l in a.neurons_list]
    # float64 sums of <= 1000 terms in another order: <= n*eps64 ~ 1e-13 relative; 1e-10 (matplotlib may
    # store bar geometry as bottom+height and subtract back).
    np.testing.assert_allclose(heights, expected_b + expected_c, rtol=1e-10)


def test_top_neurons_sorted_bars(pair):
    a, b = pair
    fig = plots.plot_top_neurons(a, b, k=3)
    ax = fig.axes[0]
    flat = np.concatenate([emd_numpy(a.data[l], b.data[l]) for l in a.neurons_list])
    widths = sorted((p.get_width() for p in ax.patches), reverse=True)
    np.testing.assert_allclose(widths, np.sort(flat)[::-1][:3], rtol=1e-10)
    assert "[" in ax.get_yticklabels()[0].get_text()
    assert ax.get_xlabel().startswith("EMD")


def test_gaussian_dnas_plot_as_densities(tmp_path):
    rng = np.random.default_rng(3)
    a, b = make_dna("gaussian", rng), make_dna("gaussian", rng)
    fig = plots.plot_neuron_histograms(a, b, neurons=[("conv.a", 1)])
    line = fig.axes[0].get_lines()[0]
    x, y = line.get_xdata(), line.get_ydata()
    mu, var = a.data["conv.a"]["mu"][1], a.data["conv.a"]["var"][1]
    # The same closed form evaluated by two float64 expressions: exp amplifies the argument's relative
    # error by |argument| (<= ~20 on the plotted range), ~20 * 4 ulp ~ 2e-14; 1e-10 with margin.
    np.testing.assert_allclose(y, np.exp(-0.5 * (x - mu) ** 2 / var) / np.sqrt(2 * np.pi * var), rtol=1e-10)
    assert "NFD" in fig.axes[0].get_title()
    lg = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    plots.plot_comparison(*lg, save=tmp_path / "lg.png")
    assert (tmp_path / "lg.png").stat().st_size > 1000


def test_comparison_page(pair, tmp_path):
    fig = plots.plot_comparison(*pair, labels=["train", "test"], save=tmp_path / "c.png")
    assert fig.texts and "train vs test" in fig.texts[0].get_text() or "train vs test" in fig._suptitle.get_text()
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_ranking_grid(tmp_path):
    folder = write_image_set(tmp_path / "imgs", 6, size=(40, 40))
    names = sorted(str(p) for p in folder.glob("*.png"))
    ranking = [(n, float(i)) for i, n in enumerate(names)]
    fig = plots.plot_ranking_grid(ranking, str(folder), k=2, save=tmp_path / "g.png")
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_title().startswith("#1") and axes[2].get_title().startswith("#5")
    assert axes[0].get_ylabel() == "closest" and axes[2].get_ylabel() == "farthest"
    assert axes[0].get_images()[0].get_array().shape[:2] == (40, 40)
    with pytest.raises(ValueError, match="not in the source"):
        plots.plot_ranking_grid([("elsewhere.png", 0.0)], str(folder))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_ranking_grid([], str(folder))


def test_bad_arguments(pair):
    a, b = pair
    with pytest.raises(ValueError, match="out of range"):
        plots.plot_neuron_histograms(a, b, neurons=[("conv.a", 3)])
    with pytest.raises(ValueError, match="labels"):
        plots.plot_neuron_histograms(a, b, labels=["one"])
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_layer_distances(a)
    r = make_dna("activation-ranges", np.random.default_rng(0))
    with pytest.raises(ValueError, match="activation-ranges"):
        plots.plot_top_neurons(r, r)


def test_missing_matplotlib_is_a_clear_error(pair, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install"):
        plots.plot_top_neurons(*pair)


def test_fine_histograms_are_grouped_for_display():
    rng = np.random.default_rng(11)
    a, b = make_dna("histogram-250", rng), make_dna("histogram-250", rng)
    fig = plots.plot_neuron_histograms(a, b, neurons=[("conv.a", 2)])
    line = fig.axes[0].get_lines()[0]
    counts = a.data["conv.a"][2].astype(np.float64)
    groups = np.add.reduceat(counts, np.arange(0, 250, 3))  # ceil(250 / 100) = 3 bins per group
    # Integer counts summed exactly, one float64 division: <= 1 ulp; 1e-12 covers summation order of floats.
    np.testing.assert_allclose(line.get_ydata(), groups / counts.sum(), rtol=1e-12)
    centres = -1 + (np.arange(250) + 0.5) / 125
    np.testing.assert_allclose(line.get_xdata()[:2], [centres[:3].mean(), centres[3:6].mean()], rtol=1e-12)
    assert line.get_xdata()[-1] == pytest.approx(centres[249])  # the last group holds one bin


def test_spiky_histograms_use_a_log_axis():
    rng = np.random.default_rng(12)
    a, b = make_dna("histogram-20", rng), make_dna("histogram-20", rng)
    a.data["conv.a"][0, 0] = 100 * a.data["conv.a"][0].sum()  # like the zeros after a ReLU
    fig = plots.plot_neuron_histograms(a, b, neurons=[("conv.a", 0), ("conv.a", 1)])
    assert fig.axes[0].get_yscale() == "log" and "(log)" in fig.axes[0].get_ylabel()
    assert fig.axes[1].get_yscale() == "linear"


# ------------------------------------------------------------------------------------- one DNA's summary
def _medians(ax):
    """{gid: median} of the box plots drawn by plot_dna_summary."""
    return {l.get_gid(): float(l.get_ydata()[0]) for l in ax.get_lines() if (l.get_gid() or "").startswith("median")}


def test_summary_of_histograms_sums_every_neuron(tmp_path):
    from PIL import Image

    v = make_dna("histogram-16", np.random.default_rng(21))
    fig = plots.plot_dna_summary(v, label="train", save=tmp_path / "s.png")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["conv.a (3 neurons)", "block_1 (5 neurons)"]
    centres = -1 + (np.arange(16) + 0.5) / 8
    for ax, layer in zip(axes, v.neurons_list):
        line = ax.get_lines()[0]
        summed = v.data[layer].astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(line.get_ydata(), summed / summed.sum(), rtol=1e-12)
        np.testing.assert_allclose(line.get_xdata(), centres, rtol=1e-12)
        assert ax.get_xlabel() == "normalised activation"
    assert axes[0].get_ylabel() == "fraction of activations"
    title = " ".join(fig._suptitle.get_text().split())  # wrapped to the figure's width
    assert "train: histogram-16 DNA of toy_net: 10 images, 2 layers, 8 neurons" in title
    with Image.open(tmp_path / "s.png") as img:
        assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200


def test_summary_of_fine_histograms_groups_bins_and_uses_log_for_spikes():
    v = make_dna("histogram-250", np.random.default_rng(22), neurons={"relu": 4})
    v.data["relu"][:, 0] += 10_000  # the zeros after a ReLU dwarf every other bin
    ax = plots.plot_dna_summary(v).axes[0]
    summed = v.data["relu"].astype(np.float64).sum(axis=0)
    grouped = np.add.reduceat(summed, np.arange(0, 250, 3))
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), grouped / summed.sum(), rtol=1e-12)
    assert ax.get_yscale() == "log"


def test_summary_of_gaussians_shows_neuron_means_and_variances():
    v = make_dna("gaussian", np.random.default_rng(23))
    v.data["block_1"]["mu"][1] = np.nan  # non-finite values are left out of the boxes
    fig = plots.plot_dna_summary(v)
    ax_mu, ax_var = fig.axes
    assert [t.get_text() for t in ax_var.get_xticklabels()] == list(v.neurons_list)
    assert "mean" in ax_mu.get_ylabel() and "variance" in ax_var.get_ylabel() and ax_var.get_xlabel() == "layer"
    mu, var = _medians(ax_mu), _medians(ax_var)
    for layer in v.neurons_list:
        # A median picks (or averages two of) the stored float64 values: exact up to one rounding.
        assert mu[f"median mean {layer}"] == pytest.approx(np.nanmedian(v.data[layer]["mu"]), rel=1e-12)
        assert var[f"median variance {layer}"] == pytest.approx(np.median(v.data[layer]["var"]), rel=1e-12)
    assert ax_var.get_yscale() == "linear"  # variances within [0.1, 2]: no log axis needed


def test_summary_of_layer_gaussians_uses_the_covariance_diagonal():
    v = make_dna("layer-gaussian", np.random.default_rng(24))
    fig = plots.plot_dna_summary(v)
    var = _medians(fig.axes[1])
    for layer in v.neurons_list:
        assert var[f"median variance {layer}"] == pytest.approx(np.median(np.diag(v.data[layer]["sigma"])), rel=1e-12)
    assert "covariance diagonal" in fig.axes[1].get_ylabel()


def test_summary_variance_axis_is_logarithmic_over_many_decades():
    v = make_dna("gaussian", np.random.default_rng(25))
    v.data["conv.a"]["var"][:] = [1e-6, 1e-3, 1.0]
    assert plots.plot_dna_summary(v).axes[1].get_yscale() == "log"
    v.data["conv.a"]["var"][0] = 0.0  # a dead neuron: zero stays visible on a symlog axis
    ax = plots.plot_dna_summary(v).axes[1]
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] == 0.0


def test_summary_of_activation_ranges():
    v = make_dna("activation-ranges", np.random.default_rng(26))
    ax = plots.plot_dna_summary(v).axes[0]
    med = _medians(ax)
    for layer in v.neurons_list:
        assert med[f"median minimum {layer}"] == pytest.approx(np.median(v.data[layer]["min"]), rel=1e-12)
        assert med[f"median maximum {layer}"] == pytest.approx(np.median(v.data[layer]["max"]), rel=1e-12)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["minimum", "maximum"]
    assert ax.get_ylabel() == "activation" and ax.get_xlabel() == "layer"


def test_summary_shows_evenly_spaced_layers_when_there_are_many():
    neurons = {f"layer{i}": 2 for i in range(7)}
    fig = plots.plot_dna_summary(make_dna("histogram-8", np.random.default_rng(27), neurons=neurons), max_layers=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["layer0 (2 neurons)", "layer3 (2 neurons)", "layer6 (2 neurons)"]
    assert "(3 layers shown)" in " ".join(fig._suptitle.get_text().split())
    g = plots.plot_dna_summary(make_dna("gaussian", np.random.default_rng(27), neurons=neurons), max_layers=3)
    assert [t.get_text() for t in g.axes[1].get_xticklabels()] == ["layer0", "layer3", "layer6"]
    with pytest.raises(ValueError, match="max_layers"):
        plots.plot_dna_summary(make_dna("gaussian", np.random.default_rng(27)), max_layers=0)

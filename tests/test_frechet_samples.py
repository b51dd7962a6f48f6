"""vdna.frechet.fd_of_samples (FD from the samples' own factors) against the core's vdna.FD route, and its
use for the layer FD of attribute pairs."""
import numpy as np
import pytest

from vdna._native import _core
from vdna.frechet import fd_of_samples

from fd_tolerance import fd_tol


def _gauss(x):
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("n1, n2, c", [(2, 2, 5), (3, 9, 40), (39, 41, 40), (120, 7, 40), (200, 300, 24)])
def test_against_the_core_on_full_and_singular_covariances(n1, n2, c):
    # n < c + 1: singular sample covariances (rank n - 1), where vdna.FD keeps only eigenvalues above its
    # rank tolerance; means far from 0 relative to the spread, and correlated neurons
    rng = np.random.default_rng(n1 * 1000 + n2)
    basis = rng.standard_normal((c, c))
    x1 = rng.standard_normal((n1, c)) @ basis * 0.3 + 5.0
    x2 = rng.standard_normal((n2, c)) @ basis * 0.2 + 4.0
    (m1, s1), (m2, s2) = _gauss(x1), _gauss(x2)
    want = float(_core.fd(m1, s1, m2, s2))
    got = fd_of_samples(x1, x2)
    assert abs(got - want) <= fd_tol(m1, s1, m2, s2)
    assert fd_of_samples(x2, x1) == pytest.approx(got, rel=0, abs=fd_tol(m1, s1, m2, s2))  # symmetric


def test_hand_worked_values():
    # identical sets: 0 (up to rounding, returned as 0 when negative)
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, -1.0]])
    assert fd_of_samples(x, x) <= 1e-12
    # shifted copy: only the mean term, |(3, -4)|^2 = 25
    assert fd_of_samples(x, x + np.array([3.0, -4.0])) == pytest.approx(25.0, rel=1e-13)
    # scaled copy (1-D): var a and k^2 a; FD = (sqrt(a) - k sqrt(a))^2 = a (1 - k)^2
    y = np.array([[1.0], [2.0], [4.0]])
    a = float(np.var(y, ddof=1))
    assert fd_of_samples(y, 3.0 * y - 3.0 * y.mean()) == pytest.approx(y.mean() ** 2 + a * (1 - 3.0) ** 2, rel=1e-13)


def test_ill_conditioned_nearly_collinear_neurons():
    # neurons that are copies of one another up to 1e-9: the covariance's condition number is about 1e18
    rng = np.random.default_rng(3)
    base = rng.standard_normal((60, 1))
    x1 = np.hstack([base, base * (1 + 1e-9), base * 2.0]) + rng.standard_normal((60, 3)) * 1e-9
    x2 = np.hstack([base, base, base * 2.0]) * 1.5 + 1.0
    (m1, s1), (m2, s2) = _gauss(x1), _gauss(x2)
    assert abs(fd_of_samples(x1, x2) - float(_core.fd(m1, s1, m2, s2))) <= fd_tol(m1, s1, m2, s2)


def test_bad_input_is_named():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        fd_of_samples(x[:1], x)
    with pytest.raises(ValueError, match="same C"):
        fd_of_samples(x, np.zeros((4, 2)))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fd_of_samples(x, bad)


def test_attribute_pairs_layer_fd_equals_vdna_fd_of_their_dnas(monkeypatch):
    import tiny_extractor  # noqa: F401  (registers "tiny": layers conv1 (4 neurons) and conv2 (6))
    import vdna
    import vdna.frechet
    from vdna import procedural as P
    from vdna.customise import PairDistances, attribute_dnas

    from fd_tolerance import fd_tol_dna

    # From the means where each side has 2..C images. "half" (5 vs 5 images): conv2 (C = 6) takes them,
    # conv1 (C = 4) takes vdna.FD; "one image" (1 vs 9): vdna.FD on both layers.
    images, _ = P.make_attribute_images(10, size=(32, 32))
    attrs = {"half": np.arange(10) < 5, "one image": np.eye(10, dtype=bool)[5]}
    calls = []

    def counted(x1, x2):
        calls.append((x1.shape, x2.shape))
        return fd_of_samples(x1, x2)

    monkeypatch.setattr(vdna.frechet, "fd_of_samples", counted)
    fast = attribute_dnas(images, attrs, "tiny", "layer-gaussian", backend="eager", as_distances=True)
    assert calls == [((5, 6), (5, 6))]  # conv2 of "half", and nothing else
    dnas = attribute_dnas(images, attrs, "tiny", "layer-gaussian", backend="eager")
    for name in attrs:
        a, b = dnas["layer-gaussian"][name]
        slow = PairDistances(a, b)
        got, want = fast["layer-gaussian"][name].distances("layer"), slow.distances("layer")
        for layer in a.neurons_list:
            assert abs(got[layer][0] - vdna.FD(a, b, use_neurons_from_layer=layer)) <= fd_tol_dna(a, b, [layer])
            assert abs(got[layer][0] - want[layer][0]) <= fd_tol_dna(a, b, [layer])
        # the per-neuron NFDs do not change route: identical
        for layer, v in slow.distances("neuron").items():
            np.testing.assert_array_equal(fast["layer-gaussian"][name].distances("neuron")[layer], v)
    # given layer distances are taken as they are, the others computed
    part = PairDistances(a, b, layer_distances={"conv1": 1.5})
    assert part.distances("layer")["conv1"][0] == 1.5
    assert part.distances("layer")["conv2"][0] == slow.distances("layer")["conv2"][0]
    with pytest.raises(ValueError, match="unknown layer"):
        PairDistances(a, b, layer_distances={"nope": 1.0})
    with pytest.raises(ValueError, match="finite"):
        PairDistances(a, b, layer_distances={"conv1": -1.0})
    with pytest.raises(ValueError, match="finite"):
        PairDistances(a, b, layer_distances={"conv2": float("nan")})

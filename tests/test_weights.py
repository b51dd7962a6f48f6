"""Weights and activation ranges: generated rand_resnet50 weights, checkpoints in each publisher's
layout, resolution (explicit path, cache, refused download) and the errors that say what to do."""
import dataclasses
import json
import math
import urllib.request

import numpy as np
import pytest
import torch

import vdna.extractors as extractors
from vdna.download import ChecksumMismatchError
from vdna.extractors import MissingRangesError, MissingWeightsError, get_extractor, weights_cache_path
from vdna.extractors.random_weights import SEED, rand_resnet50_state, splitmix64_uniform
from vdna.extractors.zoo import ZOO, ZooEntry
from vdna.hub import hub_cache_path

RAND_RESNET50_SHA256 = "3031f3ffeaf4c85abc3051b0edbe40dca8a74bcf123f76f30f3059271590fb10"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty cache in tmp_path, network access off (VDNA_OFFLINE=1), messages naming the real hub,
    and any network access fails the test."""
    home = tmp_path / "vdna_home"
    monkeypatch.setenv("VDNA_HOME", str(home))
    monkeypatch.setenv("VDNA_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    def no_network(*args, **kwargs):
        pytest.fail(f"network access attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return home


def _random_state(name, seed=0):
    """Random float32 tensors for every parameter/buffer of the network `name` (its own key names)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        net = ZOO[name].build()
    return {k: (torch.randn(v.shape, generator=gen) * 0.05).abs() if k.endswith("running_var")
            else torch.randn(v.shape, generator=gen) * 0.05
            for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def _tiny_vit(monkeypatch, name):
    """Swap the network of a ViT entry for a 2-block, width-32 one with the same key layout (fast files)."""
    from vdna.extractors.vit import ViTFeatures

    real = ZOO[name]
    tiny = dataclasses.replace(real, build=lambda: ViTFeatures(32, 2, 2, patch=16, image_size=224))
    monkeypatch.setitem(ZOO, name, tiny)


def _assert_loaded(ext, expected):
    got = ext.net.state_dict()
    keys = [k for k in got if not k.endswith("num_batches_tracked")]
    assert sorted(keys) == sorted(expected)
    for k in keys:
        assert got[k].dtype == torch.float32, k
        assert torch.equal(got[k], expected[k].float()), k


# ---------------------------------------------------------------- rand_resnet50

def _splitmix64_reference(seed, n):
    """Textbook SplitMix64 output number n (1-based) with Python integers."""
    mask = (1 << 64) - 1
    z = (seed + n * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_splitmix64_matches_textbook_definition():
    # Published first output of SplitMix64 with seed 0 (Vigna's reference implementation).
    assert _splitmix64_reference(0, 1) == 0xE220A8397B1DCDAF
    for stream, count in [(0, 5), (7, 3), (160, 4)]:
        got = splitmix64_uniform(SEED, stream, count)
        want = [(_splitmix64_reference(SEED, (stream << 32) + i + 1) >> 11) * 2.0**-53 for i in range(count)]
        assert got.tolist() == want


def test_rand_resnet50_checksum_pinned_and_deterministic():
    state, digest = rand_resnet50_state()
    assert digest == RAND_RESNET50_SHA256
    ext = get_extractor("rand_resnet50")  # generates again: same bits
    assert ext.weights_sha256 == RAND_RESNET50_SHA256
    _assert_loaded(ext, state)
    # Scheme spot checks against the documented formulas (tensor 0 is conv1.weight, fan_in 3*7*7).
    keys = list(state)
    assert keys[0] == "conv1.weight"
    u = [(_splitmix64_reference(SEED, i + 1) >> 11) * 2.0**-53 for i in range(3)]
    want = np.float32([math.sqrt(6.0 / 147) * (2 * v - 1) for v in u])
    np.testing.assert_array_equal(state["conv1.weight"].flatten()[:3].numpy(), want)
    assert state["layer2.0.bn3.running_var"].unique().tolist() == [4.0]
    assert state["layer2.0.downsample.1.running_var"].unique().tolist() == [4.0]
    assert state["layer2.0.bn1.running_var"].unique().tolist() == [1.0]
    assert state["bn1.running_var"].unique().tolist() == [2.0]
    assert state["layer4.2.bn3.bias"].abs().sum() == 0


def test_rand_resnet50_shipped_ranges(offline, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere.json"
    monkeypatch.setattr(extractors, "shipped_ranges_path", lambda: missing)
    ext = get_extractor("rand_resnet50")
    with pytest.raises(MissingRangesError, match="nowhere.json.*vdna.calibrate"):
        ext.activation_ranges()
    info = ext.info
    ref = {"mins_per_neuron": {l: {str(i): -float(i) for i in range(c)} for l, c in info.neurons_per_layer.items()},
           "maxs_per_neuron": {l: {str(i): float(i) + 1 for i in range(c)} for l, c in info.neurons_per_layer.items()}}
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(ref))
    monkeypatch.setattr(extractors, "shipped_ranges_path", lambda: shipped)
    ranges = get_extractor("rand_resnet50").activation_ranges()
    assert list(ranges) == list(info.neurons_per_layer)
    lo, hi = ranges["layer4_2"]
    assert lo.dtype == np.float64 and lo.shape == (2048,)
    np.testing.assert_array_equal(hi, np.arange(2048) + 1.0)


def test_rand_resnet50_from_reference_hub_file_refuses_shipped_ranges(offline, tmp_path):
    state = _random_state("rand_resnet50", seed=4)
    path = tmp_path / "weights.pth"
    torch.save({"model_state_dict": state}, path)  # the reference's Random/rand_resnet50/weights.pth layout
    ext = get_extractor("rand_resnet50", extractor_weights=path)
    _assert_loaded(ext, state)
    assert ext.weights_sha256 != RAND_RESNET50_SHA256
    with pytest.raises(MissingRangesError, match="do not apply"):
        ext.activation_ranges()


# ---------------------------------------------------------------- publishers' layouts

def test_dino_resnet50_module_prefix_explicit_path_and_cache(offline, tmp_path):
    state = _random_state("dino_resnet50", seed=1)
    path = tmp_path / "dino_resnet50_pretrain.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    _assert_loaded(get_extractor("dino_resnet50", extractor_weights=path), state)
    cached = weights_cache_path("dino_resnet50", "dino_resnet50_pretrain.pth")
    assert cached == offline / "weights" / "dino_resnet50" / "dino_resnet50_pretrain.pth"
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    ext = get_extractor("dino_resnet50")
    _assert_loaded(ext, state)
    import hashlib
    assert ext.weights_sha256 == hashlib.sha256(cached.read_bytes()).hexdigest()


def test_dino_vit_bare_and_full_teacher_checkpoints(offline, tmp_path, monkeypatch):
    _tiny_vit(monkeypatch, "dino_vit_small")
    state = _random_state("dino_vit_small", seed=2)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    _assert_loaded(get_extractor("dino_vit_small", extractor_weights=bare), state)
    full = tmp_path / "full.pth"
    teacher = {"module.backbone." + k: v for k, v in state.items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(4, 32)
    torch.save({"teacher": teacher, "student": {"x": torch.zeros(1)}, "epoch": 100}, full)
    _assert_loaded(get_extractor("dino_vit_small", extractor_weights=full), state)


def test_mugs_state_dict_wrapper_with_relation_blocks(offline, tmp_path):
    # full size: the one ViT checkpoint test that also proves the real ViT-S key set and shapes load
    state = _random_state("mugs_vit_small", seed=3)
    wrapped = dict(state)
    wrapped["relation_blocks.0.norm1.weight"] = torch.ones(384)  # present in the reference's hub file, unused
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": wrapped}, path)
    _assert_loaded(get_extractor("mugs_vit_small", extractor_weights=path), state)


def test_vgg16_torchvision_layout_and_cached_checksum(offline, tmp_path):
    state = _random_state("vgg16", seed=5)
    assert "features.28.weight" in state and "features.30.weight" not in state
    ckpt = dict(state)
    ckpt["classifier.6.weight"] = torch.zeros(10, 4)  # torchvision's classifier: ignored
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(ckpt, path)
    _assert_loaded(get_extractor("vgg16", extractor_weights=path), state)
    cached = weights_cache_path("vgg16", "vgg16-397923af.pth")
    cached.parent.mkdir(parents=True)
    path.rename(cached)  # random weights cannot have torchvision's checksum prefix
    with pytest.raises(ChecksumMismatchError, match="397923af"):
        get_extractor("vgg16")


def test_inception_pytorch_fid_layout(offline, tmp_path):
    state = _random_state("inception", seed=6)
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state and "Conv2d_1a_3x3.conv.weight" in state
    ckpt = dict(state)
    ckpt["fc.weight"] = torch.zeros(1008, 2048)
    ckpt["fc.bias"] = torch.zeros(1008)
    ckpt["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "pt_inception.pth"
    torch.save(ckpt, path)
    _assert_loaded(get_extractor("inception", extractor_weights=path), state)


class _ClipArchive(torch.nn.Module):
    """A stand-in for OpenAI's TorchScript CLIP archive: an image tower under `visual`, a text part."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.token_embedding = torch.nn.Embedding(10, 8)
        self.positional_embedding = torch.nn.Parameter(torch.zeros(5, 8))

    def forward(self, x):
        return x + self.positional_embedding.sum()


def test_clip_torchscript_archive_fp16(offline, tmp_path, monkeypatch):
    from vdna.extractors.clip import CLIPViTFeatures

    real = ZOO["clip_im_vit_b16"]
    tiny = lambda: CLIPViTFeatures(16, 64, 2, image_size=224)  # noqa: E731 - same layout, small width
    visual = tiny()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in visual.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    module = _ClipArchive(visual).half()
    archive = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(2, dtype=torch.float16)), str(archive))
    expected = {k: v.float() for k, v in visual.state_dict().items()}

    import hashlib
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    patched = ZooEntry(real.info, tiny, real.convert, real.file_name, real.url, digest, real.hub_ranges)
    monkeypatch.setitem(ZOO, "clip_im_vit_b16", patched)
    ext = get_extractor("clip_im_vit_b16", extractor_weights=archive)
    _assert_loaded(ext, expected)
    assert ext.net.ln_post.weight.dtype == torch.float32
    cached = weights_cache_path("clip_im_vit_b16", "ViT-B-16.pt")
    cached.parent.mkdir(parents=True)
    archive.rename(cached)
    ext = get_extractor("clip_im_vit_b16")
    _assert_loaded(ext, expected)
    assert ext.weights_sha256 == digest
    with torch.no_grad():
        out = ext(torch.rand(1, 3, 224, 224) * 255)
    assert out["block_1"].shape == (1, 197, 64) and out["last_norm"].shape == (1, 1, 64)


# ---------------------------------------------------------------- errors

def test_missing_checkpoint_names_cache_path_and_url_when_offline(offline):
    with pytest.raises(MissingWeightsError) as info:
        get_extractor("dino_vit_base")
    msg = str(info.value)
    assert str(offline / "weights" / "dino_vit_base" / "dino_vitbase16_pretrain.pth") in msg
    assert "VDNA_OFFLINE is set" in msg and "place it at" in msg and "extractor_weights=<path>" in msg
    assert "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth" in msg
    with pytest.raises(MissingWeightsError, match="not found"):
        get_extractor("vgg16", extractor_weights=offline / "nope.pth")


def test_download_refused_explicitly_even_without_offline_env(offline, monkeypatch):
    monkeypatch.delenv("VDNA_OFFLINE")
    with pytest.raises(MissingWeightsError, match="allow_download=False"):
        get_extractor("inception", allow_download=False)
    with pytest.raises(MissingWeightsError, match="Mugs/mugs_vit_base/weights.pth.*allow_download=False"):
        get_extractor("mugs_vit_base", allow_download=False)


def test_wrong_checkpoint_is_rejected_with_file_name(offline, tmp_path, monkeypatch):
    _tiny_vit(monkeypatch, "dino_vit_small")
    state = _random_state("dino_vit_small", seed=8)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong\.pth.*(missing keys|wrong shape)"):
        get_extractor("clip_im_vit_b16", extractor_weights=path)
    del state["blocks.1.norm1.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong\.pth.*1 missing keys.*blocks\.1\.norm1\.bias"):
        get_extractor("dino_vit_small", extractor_weights=path)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": state, "args": _Opaque()}, pickled)
    with pytest.raises(ValueError, match="weights_only"):
        get_extractor("dino_vit_small", extractor_weights=pickled)


class _Opaque:
    pass


def test_pretrained_ranges_explicit_cache_and_missing(offline, tmp_path, monkeypatch):
    for name in ("dino_vit_small", "mugs_vit_small", "mugs_vit_base"):
        _tiny_vit(monkeypatch, name)
    state = _random_state("dino_vit_small", seed=9)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    ext = get_extractor("dino_vit_small", extractor_weights=path)
    with pytest.raises(MissingRangesError, match="no activation ranges were published"):
        ext.activation_ranges()

    mugs = get_extractor("mugs_vit_small", extractor_weights=path)  # same backbone layout
    assert mugs.info.name == "mugs_vit_small"

    info = ZOO["mugs_vit_base"].info
    ref = {"mins_per_neuron": {l: {str(i): -1.0 for i in range(c)} for l, c in info.neurons_per_layer.items()},
           "maxs_per_neuron": {l: {str(i): float(i) for i in range(c)} for l, c in info.neurons_per_layer.items()}}
    base_state = _random_state("mugs_vit_base", seed=10)
    base_path = tmp_path / "base.pth"
    torch.save({"state_dict": base_state}, base_path)
    ext = get_extractor("mugs_vit_base", extractor_weights=base_path)
    cached = hub_cache_path("bramtoula/visual-dna-models", "Mugs/mugs_vit_base/activation_ranges.json")
    with pytest.raises(MissingRangesError) as err:
        ext.activation_ranges()
    assert str(cached) in str(err.value) and "VDNA_OFFLINE is set" in str(err.value)
    assert "huggingface.co/bramtoula/visual-dna-models/resolve/main/Mugs/mugs_vit_base/activation_ranges.json" \
        in str(err.value)
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps(ref))
    ranges = get_extractor("mugs_vit_base", extractor_weights=base_path).activation_ranges()
    assert list(ranges) == list(info.neurons_per_layer)
    np.testing.assert_array_equal(ranges["last_norm"][1], np.arange(768, dtype=np.float64))
    explicit = get_extractor("mugs_vit_base", extractor_weights=base_path,
                             ranges={l: (np.zeros(c), np.ones(c)) for l, c in info.neurons_per_layer.items()})
    np.testing.assert_array_equal(explicit.activation_ranges()["block_3"][1], np.ones(768))

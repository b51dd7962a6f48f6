"""Extractor zoo: layer names and neuron counts, network structure, forward shapes, tracing, registry."""
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vdna.extractors import (
    Extractor,
    ExtractorInfo,
    MissingRangesError,
    get_extractor,
    get_extractor_info,
    list_extractors,
    register_extractor,
)
from vdna.extractors.base import module_state_sha256
from vdna.extractors.clip import MultiheadSelfAttention
from vdna.extractors.vit import Attention
from vdna.extractors.zoo import ZOO

RESNET_LAYERS = ["layer1_0", "layer1_1", "layer1_2", "layer2_0", "layer2_1", "layer2_2", "layer2_3",
                 "layer3_0", "layer3_1", "layer3_2", "layer3_3", "layer3_4", "layer3_5",
                 "layer4_0", "layer4_1", "layer4_2"]
VGG_LAYERS = ["relu_1_1", "relu_1_2", "relu_2_1", "relu_2_2", "relu_3_1", "relu_3_2", "relu_3_3",
              "relu_4_1", "relu_4_2", "relu_4_3", "relu_5_1", "relu_5_2", "relu_5_3"]

# name -> (total neurons, depth of a ViT or None, input size) as the reference package vdna 0.1.1
# defines them (README, compatibility section)
EXPECTED = {
    "rand_resnet50": (15104, None, 224), "dino_resnet50": (15104, None, 224),
    "mugs_vit_small": (4992, 12, 224), "mugs_vit_base": (9984, 12, 224), "mugs_vit_large": (25600, 24, 224),
    "dino_vit_small": (4992, 12, 224), "dino_vit_base": (9984, 12, 224),
    "vgg16": (4224, None, 224), "inception": (64 + 192 + 768 + 2048, None, 299),
    "clip_im_vit_b16": (9984, 12, 224), "clip_im_vit_b32": (9984, 12, 224), "clip_im_vit_l14": (25600, 24, 224),
}

# Parameter counts of the published networks minus the parts vdna does not build, from the
# torchvision / timm model cards: ResNet-50 25,557,032 - fc 2,049,000; VGG-16 138,357,544 - classifier
# 123,642,856; Inception-v3 (aux) 27,161,264 - fc 2,049,000 - AuxLogits 3,326,696; DeiT-S 22,050,664,
# ViT-B/16 86,567,656 and ViT-L/16 304,326,632 minus their 1000-way heads; CLIP ViT-B/16 image tower
# 86,192,640 - proj 768*512 (CLIP's 'visual' parameters).
PARAM_COUNTS = {
    "rand_resnet50": 25_557_032 - 2_049_000,
    "vgg16": 138_357_544 - 123_642_856,
    "inception": 27_161_264 - 2_049_000 - 3_326_696,
    "dino_vit_small": 22_050_664 - (384 * 1000 + 1000),
    "mugs_vit_base": 86_567_656 - (768 * 1000 + 1000),
    "mugs_vit_large": 304_326_632 - (1024 * 1000 + 1000),
    "clip_im_vit_b16": 86_192_640 - 768 * 512,
}


@pytest.fixture(scope="module")
def rand_ext():
    """One rand_resnet50 for the tests that only read it (generation and loading take ~1 s)."""
    return get_extractor("rand_resnet50")


def test_list_contains_reference_names():
    names = list_extractors()
    for name in EXPECTED:
        assert name in names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_layers_and_counts(name):
    info = get_extractor_info(name)
    total, depth, size = EXPECTED[name]
    assert info.name == name
    assert info.total_neurons == total
    assert info.input_size == (size, size)
    assert list(info.layouts) == list(info.neurons_per_layer)
    if "resnet50" in name:
        assert list(info.neurons_per_layer) == RESNET_LAYERS
        assert set(info.layouts.values()) == {"channels"}
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)
    elif name == "vgg16":
        assert list(info.neurons_per_layer) == VGG_LAYERS
        assert info.neurons_per_layer["relu_1_1"] == 64 and info.neurons_per_layer["relu_5_3"] == 512
    elif name == "inception":
        assert info.neurons_per_layer == {"block_0": 64, "block_1": 192, "block_2": 768, "block_3": 2048}
        assert info.mean == (0.5,) * 3 and info.std == (0.5,) * 3
    else:
        assert list(info.neurons_per_layer) == [f"block_{i}" for i in range(depth)] + ["last_norm"]
        assert len(set(info.neurons_per_layer.values())) == 1
        assert set(info.layouts.values()) == {"tokens"}
        if name.startswith("clip"):
            assert info.mean == (0.48145466, 0.4578275, 0.40821073)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_counts_match_published_networks(name):
    with torch.device("meta"):
        net = ZOO[name].build()
    assert sum(p.numel() for p in net.parameters()) == PARAM_COUNTS[name]


def _random_weights_extractor(name, seed=0):
    """The real network of `name` with small random weights (not via a checkpoint)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        net = ZOO[name].build()
    net.to_empty(device="cpu")  # skips torch's (slow) default initialisation
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        for mod in net.modules():
            if isinstance(mod, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                mod.weight.fill_(1.0)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.zero_()
                mod.running_var.fill_(1e-2)
    return Extractor(net.requires_grad_(False), ZOO[name].info, "").eval()


def _check_outputs(ext, feats, batch):
    info = ext.info
    assert list(feats) == list(info.neurons_per_layer)
    for layer, t in feats.items():
        c = info.neurons_per_layer[layer]
        assert t.dtype == torch.float32
        if info.layouts[layer] == "channels":
            assert t.dim() == 4 and t.shape[:2] == (batch, c), layer
        else:
            assert t.dim() == 3 and t.shape[0] == batch and t.shape[2] == c, layer
        assert torch.isfinite(t).all(), layer


SPATIAL = {
    "rand_resnet50": {"layer1_0": (56, 56), "layer2_0": (28, 28), "layer3_5": (14, 14), "layer4_2": (7, 7)},
    "vgg16": {"relu_1_2": (224, 224), "relu_2_1": (112, 112), "relu_3_3": (56, 56), "relu_4_1": (28, 28),
              "relu_5_3": (14, 14)},
    "inception": {"block_0": (73, 73), "block_1": (35, 35), "block_2": (17, 17), "block_3": (1, 1)},
}
TOKENS = {"dino_vit_small": 197, "clip_im_vit_b32": 50}


@pytest.mark.parametrize("name", ["rand_resnet50", "vgg16", "inception", "dino_vit_small", "clip_im_vit_b32"])
def test_forward_shapes_at_real_input_size(name, rand_ext):
    ext = rand_ext if name == "rand_resnet50" else _random_weights_extractor(name)
    h, w = ext.info.input_size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        feats = ext(x)
    _check_outputs(ext, feats, 1)
    for layer, hw in SPATIAL.get(name, {}).items():
        assert tuple(feats[layer].shape[2:]) == hw, layer
    if name in TOKENS:
        for layer, t in feats.items():
            expected = 1 if (name.startswith("clip") and layer == "last_norm") else TOKENS[name]
            assert t.shape[1] == expected, layer


def test_normalisation_inside_forward(rand_ext):
    ext = rand_ext
    seen = {}
    handle = ext.net.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].clone()))
    x = torch.full((1, 3, 224, 224), 255.0)
    x[:, 1] = 0.0
    try:
        with torch.no_grad():
            ext(x)
    finally:
        handle.remove()
    mean, std = np.array(ext.info.mean), np.array(ext.info.std)
    expected = (np.array([1.0, 0.0, 1.0]) - mean) / std
    # (x - mean) / std on one float32 value: two correctly rounded ops, <= 2 ulp = 2.4e-7 relative; 1e-6 allows
    # for the float32 mean/std constants (rounded once each) against the float64 expectation.
    np.testing.assert_allclose(seen["x"][0, :, 5, 7].numpy(), expected, rtol=1e-6)  # derived above


# A trace records the same aten ops as the eager run, so on one machine they usually agree bit for bit; but
# the trace was recorded at batch 1 and oneDNN may pick another convolution algorithm (another summation
# order) per shape. Two orders of a K-term float32 reduction differ by ~sqrt(K)*eps32 relative to the sum of
# |terms| (K <= 4608 = 3*3*512 here: 68 * 6e-8 ~ 4e-6) and this compounds through ~50 normalised layers,
# so 1e-4 of the layer's scale; a wrong trace (batch size or token count baked in) is off by O(1).
TRACE_RTOL = 1e-4


def test_trace_dict_outputs_batch1_then_batch2(rand_ext):
    ext = rand_ext
    gen = torch.Generator().manual_seed(3)
    x1 = torch.rand(1, 3, 224, 224, generator=gen) * 255
    x2 = torch.rand(2, 3, 224, 224, generator=gen) * 255
    traced = torch.jit.trace(ext, x1, strict=False, check_trace=False)
    with torch.no_grad():
        out_traced = traced(x2)
        out_eager = ext(x2)
    assert list(out_traced) == list(out_eager) == RESNET_LAYERS
    for layer in RESNET_LAYERS:
        torch.testing.assert_close(out_traced[layer], out_eager[layer], rtol=TRACE_RTOL, atol=TRACE_RTOL * out_eager[layer].abs().max().item())


def test_trace_vit_tokens_layout():
    ext = _random_weights_extractor("dino_vit_small")
    x1 = torch.rand(1, 3, 224, 224) * 255
    x2 = torch.rand(2, 3, 224, 224) * 255
    traced = torch.jit.trace(ext, x1, strict=False, check_trace=False)
    with torch.no_grad():
        a, b = traced(x2), ext(x2)
    assert list(a) == list(b)
    for layer in b:
        torch.testing.assert_close(a[layer], b[layer], rtol=TRACE_RTOL, atol=TRACE_RTOL * b[layer].abs().max().item())


def test_dino_attention_matches_torch_sdpa():
    torch.manual_seed(0)
    # float64, for the reason given in the CLIP attention test below: float32 agreement between two
    # attention kernels is only ~K*eps32 and depends on the CPU's SIMD width.
    attn = Attention(64, 4).double()
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    qkv = attn.qkv(x).reshape(2, 5, 3, 4, 16).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(2, 5, 64)
    torch.testing.assert_close(attn(x), attn.proj(ref), rtol=1e-10, atol=1e-10)


def test_clip_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadSelfAttention(64, 4)
    ref = torch.nn.MultiheadAttention(64, 4)  # CLIP's module, sequence-first
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    ours.load_state_dict(ref.state_dict())
    # Compared in float64: the two modules order their float32 reductions differently and CPUs (AVX2,
    # AVX-512, NEON) block them differently, so float32 agreement is only ~K*eps32*|terms| ~ 64 * 6e-8 * 1
    # ~ 4e-6, machine-dependent. In float64 the same bound is 64 * 1.1e-16 * O(10) ~ 1e-13; 1e-10 leaves
    # room for softmax/exp differences while any wrong head split, scaling or projection shows as O(0.1).
    ours, ref = ours.double(), ref.double()
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    expected = ref(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
    torch.testing.assert_close(ours(x), expected, rtol=1e-10, atol=1e-10)


def test_extractor_is_frozen_and_in_eval_mode(rand_ext):
    ext = rand_ext
    assert not ext.training
    assert not any(p.requires_grad for p in ext.parameters())
    assert not any(b.is_meta for b in ext.buffers())


def test_unknown_extractor_name():
    with pytest.raises(ValueError, match="unknown feature extractor 'nope'.*rand_resnet50"):
        get_extractor("nope")


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        t = self.fc(a.flatten(2).transpose(1, 2))
        return {"conv": a, "tok": t}


def _tiny_info(name="my_tiny"):
    return ExtractorInfo(name=name, neurons_per_layer={"conv": 4, "tok": 2}, layouts={"conv": "channels", "tok": "tokens"},
                         input_size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_register_extractor_round_trip(tmp_path):
    ranges = {"conv": (np.zeros(4), np.ones(4)), "tok": (-np.ones(2), np.ones(2))}
    register_extractor("my_tiny", _TinyNet, _tiny_info(), ranges=ranges)
    assert "my_tiny" in list_extractors()
    assert get_extractor_info("my_tiny").neurons_per_layer == {"conv": 4, "tok": 2}
    ext = get_extractor("my_tiny")
    x = torch.rand(1, 3, 8, 8) * 255
    with torch.no_grad():
        out = ext(x)
        direct = ext.net((x / 255 - 0.5) / 0.25)
    assert list(out) == ["conv", "tok"] and out["conv"].shape == (1, 4, 8, 8) and out["tok"].shape == (1, 64, 2)
    torch.testing.assert_close(out["conv"], direct["conv"])
    assert ext.weights_sha256 == module_state_sha256(ext.net)
    assert module_state_sha256(_TinyNet()) != ext.weights_sha256  # another random init
    got = ext.activation_ranges()
    np.testing.assert_array_equal(got["tok"][0], -np.ones(2))
    assert got["conv"][1].dtype == np.float64
    # weights given explicitly for a registered extractor
    torch.save(ext.net.state_dict(), tmp_path / "tiny.pth")
    ext2 = get_extractor("my_tiny", extractor_weights=tmp_path / "tiny.pth")
    torch.testing.assert_close(ext2.net.conv.weight, ext.net.conv.weight)
    assert len(ext2.weights_sha256) == 64


def test_module_state_sha256_layout():
    mod = torch.nn.Module()
    mod.w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    mod.register_buffer("n", torch.tensor(3, dtype=torch.int64))
    expected = hashlib.sha256(
        b"w\0torch.float32\0" + np.int64(2).tobytes() + np.float32([1.0, 2.0]).tobytes()
        + b"n\0torch.int64\0" + np.int64(3).tobytes()
    ).hexdigest()
    assert module_state_sha256(mod) == expected


def test_register_extractor_without_ranges_errors_clearly():
    register_extractor("my_tiny_noranges", _TinyNet, _tiny_info("my_tiny_noranges"))
    with pytest.raises(MissingRangesError, match="vdna.calibrate"):
        get_extractor("my_tiny_noranges").activation_ranges()


def test_register_extractor_rejects_bad_input():
    with pytest.raises(ValueError, match="built-in"):
        register_extractor("vgg16", _TinyNet, _tiny_info("vgg16"))
    with pytest.raises(ValueError, match="differs"):
        register_extractor("other", _TinyNet, _tiny_info("my_tiny"))
    with pytest.raises(ValueError, match="layout"):
        ExtractorInfo("x", {"a": 3}, {"a": "pixels"}, (8, 8), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="same layers"):
        ExtractorInfo("x", {"a": 3, "b": 2}, {"b": "tokens", "a": "tokens"}, (8, 8), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="std"):
        ExtractorInfo("x", {"a": 3}, {"a": "tokens"}, (8, 8), (0, 0, 0), (1, 0, 1))

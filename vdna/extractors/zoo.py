"""The built-in extractors: their layers, input conventions, checkpoints and activation ranges.

Checkpoints, downloaded on first use (docs/weights.md). Files at plain URLs are cached as
``<cache_dir()>/weights/<name>/<file>``; files on the hub as
``<cache_dir()>/hub/model/bramtoula/visual-dna-models/<path>``:

=================  ======================================  ==========================================
name               file                                    source
=================  ======================================  ==========================================
rand_resnet50      (generated, see random_weights.py)      -
dino_resnet50      dino_resnet50_pretrain.pth              dl.fbaipublicfiles.com/dino (DINO release)
dino_vit_small     dino_deitsmall16_pretrain.pth           DINO release
dino_vit_base      dino_vitbase16_pretrain.pth             DINO release
mugs_vit_small     Mugs/mugs_vit_small/weights.pth         reference hub bramtoula/visual-dna-models
mugs_vit_base      Mugs/mugs_vit_base/weights.pth          (through huggingface_hub; the Mugs
mugs_vit_large     Mugs/mugs_vit_large/weights.pth         originals are only on Google Drive)
vgg16              vgg16-397923af.pth                      download.pytorch.org (torchvision)
inception          pt_inception-2015-12-05-6726825d.pth    github.com/mseitzer/pytorch-fid releases
clip_im_vit_b32    ViT-B-32.pt                             openaipublic.azureedge.net/clip
clip_im_vit_b16    ViT-B-16.pt                             (TorchScript archives)
clip_im_vit_l14    ViT-L-14.pt
=================  ======================================  ==========================================

Pinned checksums (``ZooEntry.sha256``), only what the publishers state: CLIP's URLs carry the file's
full SHA-256 (``_CLIP_FILES``); torchvision's and pytorch-fid's file names carry its first 8 hex
digits, which are checked as a prefix. DINO publishes none, and the reference hub repository's files
have none pinned here: hub downloads are checked against the SHA-256 the hub reports for LFS files
(its ETag) instead. ``Extractor.weights_sha256`` always records what was loaded.

Activation ranges of pretrained extractors come from the reference hub repository
``bramtoula/visual-dna-models`` (model repository), file ``<Family>/<name>/activation_ranges.json``,
cached under ``<cache_dir()>/hub/model/bramtoula/visual-dna-models/``. The reference published none
for ``dino_vit_small`` and ``mugs_vit_small``; compute them with ``vdna.calibrate``. The ranges of
``rand_resnet50`` ship with vdna (``vdna/data/rand_resnet50_activation_ranges.json``).
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .base import ExtractorInfo
from .clip import CLIP_VITS, CLIPViTFeatures, clip_visual_state
from .inception import INCEPTION_NEURONS, FIDInceptionFeatures, inception_state
from .resnet import ResNet50Features, resnet50_neurons
from .vgg import VGG16Features, vgg16_neurons, vgg16_state
from .vit import VIT_SIZES, ViTFeatures, backbone_state, vit_neurons

RANGES_HUB_REPO = "bramtoula/visual-dna-models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DINO_URL = "https://dl.fbaipublicfiles.com/dino/"
_CLIP_URL = "https://openaipublic.azureedge.net/clip/models/"
_CLIP_FILES = {  # version -> (sha256, file name); the URL is <sha256>/<file name>
    "vit_b32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    "vit_b16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    "vit_l14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
}


@dataclass(frozen=True)
class ZooEntry:
    """A built-in extractor. ``build`` makes the bare network (weights are loaded afterwards);
    ``convert(checkpoint, source)`` maps the publisher's checkpoint to ``build()``'s names."""

    info: ExtractorInfo
    build: Callable
    convert: Callable
    file_name: Optional[str] = None  # None: generated weights (rand_resnet50)
    url: Optional[str] = None
    sha256: Optional[str] = None
    hub_ranges: Optional[str] = None  # path in RANGES_HUB_REPO, or None if none was published
    hub_weights: Optional[str] = None  # path in RANGES_HUB_REPO of a checkpoint published there (url None)


def resnet_state(ckpt, source: str):
    """torchvision-layout ResNet-50 checkpoints (DINO's release; the reference's
    ``{"model_state_dict": ...}`` for its random ResNet); ``module.``/``backbone.`` stripped, ``fc`` dropped."""
    return {k: v for k, v in backbone_state(ckpt, source).items() if not k.startswith("fc.")}


def _info(name, neurons, layout, size, mean, std) -> ExtractorInfo:
    return ExtractorInfo(name=name, neurons_per_layer=neurons, layouts={k: layout for k in neurons},
                         input_size=(size, size), mean=mean, std=std)


def _vit_builder(size: str):
    width, depth, heads = VIT_SIZES[size]
    return lambda: ViTFeatures(width, depth, heads, patch=16, image_size=224)


def _clip_builder(version: str):
    patch, width, layers = CLIP_VITS[version]
    return lambda: CLIPViTFeatures(patch, width, layers, image_size=224)


def _make_zoo() -> Dict[str, ZooEntry]:
    zoo = {}
    rn = resnet50_neurons()
    zoo["rand_resnet50"] = ZooEntry(
        _info("rand_resnet50", rn, "channels", 224, IMAGENET_MEAN, IMAGENET_STD), ResNet50Features, resnet_state)
    zoo["dino_resnet50"] = ZooEntry(
        _info("dino_resnet50", rn, "channels", 224, IMAGENET_MEAN, IMAGENET_STD), ResNet50Features, resnet_state,
        "dino_resnet50_pretrain.pth", _DINO_URL + "dino_resnet50_pretrain/dino_resnet50_pretrain.pth", None,
        "DINO/dino_resnet50/activation_ranges.json")
    for size, folder in (("small", "dino_deitsmall16_pretrain"), ("base", "dino_vitbase16_pretrain")):
        name = f"dino_vit_{size}"
        width, depth, _ = VIT_SIZES[size]
        zoo[name] = ZooEntry(
            _info(name, vit_neurons(width, depth), "tokens", 224, IMAGENET_MEAN, IMAGENET_STD), _vit_builder(size),
            backbone_state, folder + ".pth", f"{_DINO_URL}{folder}/{folder}.pth", None,
            None if size == "small" else f"DINO/{name}/activation_ranges.json")
    for size in ("small", "base", "large"):
        name = f"mugs_vit_{size}"
        width, depth, _ = VIT_SIZES[size]
        zoo[name] = ZooEntry(
            _info(name, vit_neurons(width, depth), "tokens", 224, IMAGENET_MEAN, IMAGENET_STD), _vit_builder(size),
            backbone_state, "weights.pth", None, None,
            None if size == "small" else f"Mugs/{name}/activation_ranges.json", f"Mugs/{name}/weights.pth")
    zoo["vgg16"] = ZooEntry(
        _info("vgg16", vgg16_neurons(), "channels", 224, IMAGENET_MEAN, IMAGENET_STD), VGG16Features, vgg16_state,
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af",
        "VGG/vgg16/activation_ranges.json")
    zoo["inception"] = ZooEntry(
        _info("inception", dict(INCEPTION_NEURONS), "channels", 299, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        FIDInceptionFeatures, inception_state, "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "6726825d", "Inception/inception_v3/activation_ranges.json")
    for version, (sha, file_name) in _CLIP_FILES.items():
        name = f"clip_im_{version}"
        _, width, layers = CLIP_VITS[version]
        zoo[name] = ZooEntry(
            _info(name, vit_neurons(width, layers), "tokens", 224, CLIP_MEAN, CLIP_STD), _clip_builder(version),
            clip_visual_state, file_name, f"{_CLIP_URL}{sha}/{file_name}", sha, f"CLIP/{name}/activation_ranges.json")
    return zoo


ZOO: Dict[str, ZooEntry] = _make_zoo()

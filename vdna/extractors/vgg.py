"""VGG-16 (no BatchNorm) returning its 13 post-ReLU convolution outputs ``relu_1_1`` ... ``relu_5_3``.

The trunk is an ``nn.Sequential`` named ``features`` with torchvision's indices (convolutions at 0, 2,
5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; zero padding 1), so torchvision's checkpoint keys
``features.<i>.weight`` / ``.bias`` load directly; the classifier is not used. The final max-pool
(index 30) is omitted since no hooked layer follows it.
"""
from typing import Dict, List

import torch
from torch import nn

# channels per stage; a 2x2 max-pool precedes every stage but the first
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_neurons() -> Dict[str, int]:
    return {f"relu_{s}_{c}": ch for s, stage in enumerate(VGG16_STAGES, start=1)
            for c, ch in enumerate(stage, start=1)}


class VGG16Features(nn.Module):
    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        self._hooked: Dict[int, str] = {}  # index of a ReLU in `features` -> layer name
        in_ch = 3
        for s, stage in enumerate(VGG16_STAGES, start=1):
            if s > 1:
                layers.append(nn.MaxPool2d(2, 2))
            for c, ch in enumerate(stage, start=1):
                layers += [nn.Conv2d(in_ch, ch, 3, padding=1), nn.ReLU()]
                self._hooked[len(layers) - 1] = f"relu_{s}_{c}"
                in_ch = ch
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats: Dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._hooked:
                feats[self._hooked[i]] = x
        return feats


def vgg16_state(ckpt, source: str) -> Dict[str, torch.Tensor]:
    """torchvision ``vgg16-397923af.pth`` (``features.<i>.*``, ``classifier.*``) -> ``VGG16Features``."""
    from .checkpoints import strip_prefix, unwrap_state_dict

    state = strip_prefix(unwrap_state_dict(ckpt, source), "module.")
    return {k: v for k, v in state.items() if k.startswith("features.")}

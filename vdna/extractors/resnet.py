"""ResNet-50 returning the output of each of its 16 bottleneck blocks (after the block's final ReLU).

Module and parameter names follow the torchvision ResNet layout (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ...), which is also the layout of DINO's released
ResNet-50 checkpoint. Layers: ``layer1_0..2`` (256 channels, 56x56 at 224 input), ``layer2_0..3``
(512, 28x28), ``layer3_0..5`` (1024, 14x14), ``layer4_0..2`` (2048, 7x7).
"""
from typing import Dict, List

import torch
from torch import nn

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride) of layer1..4
EXPANSION = 4


def resnet50_neurons() -> Dict[str, int]:
    """Layer name -> channel count of the 16 hooked bottleneck outputs, in network order."""
    out = {}
    for stage, (width, blocks, _) in enumerate(STAGES, start=1):
        for b in range(blocks):
            out[f"layer{stage}_{b}"] = width * EXPANSION
    return out


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with BatchNorm, plus the (projected) shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50Features(nn.Module):
    """ResNet-50 trunk (no pooling head, no fc) returning {layer_name: block output}."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
            layers: List[nn.Module] = []
            for b in range(blocks):
                layers.append(Bottleneck(in_ch, width, stride if b == 0 else 1))
                in_ch = width * EXPANSION
            setattr(self, f"layer{stage}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: Dict[str, torch.Tensor] = {}
        for stage, stage_module in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            for b, block in enumerate(stage_module):
                x = block(x)
                feats[f"layer{stage}_{b}"] = x
        return feats

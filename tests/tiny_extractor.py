"""A tiny registered extractor ("tiny") for fast CLI, ranking and notebook-free tests.

Importing this module registers it; the CLI loads it with ``--import tiny_extractor`` (with this folder
on PYTHONPATH). Two conv layers with fixed weights from a seeded NumPy generator, 32x32 input: a
forward pass costs microseconds, so tests exercise the whole pipeline without ResNet-50's cost.
"""
import numpy as np
import torch

from vdna.extractors import ExtractorInfo, register_extractor

NAME = "tiny"
INFO = ExtractorInfo(
    name=NAME,
    neurons_per_layer={"conv1": 4, "conv2": 6},
    layouts={"conv1": "channels", "conv2": "channels"},
    input_size=(32, 32),
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(1234)
        self.conv1 = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.copy_(torch.from_numpy(rng.standard_normal(tuple(conv.weight.shape)).astype(np.float32) * 0.3))
                conv.bias.copy_(torch.from_numpy(rng.standard_normal(tuple(conv.bias.shape)).astype(np.float32) * 0.1))

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        b = torch.relu(self.conv2(a))
        return {"conv1": a, "conv2": b}


register_extractor(NAME, TinyNet, INFO)

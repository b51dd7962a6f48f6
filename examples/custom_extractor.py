"""Plug in your own feature extractor.

    python examples/custom_extractor.py

Any torch module that returns {layer: activations} can be registered: describe its layers (neuron
counts, layout), input size and normalisation, compute its activation ranges once on a fixed
calibration set (histogram bins depend on them), then use it like a built-in extractor.
"""
import tempfile
from pathlib import Path

import torch

from vdna import EMD, VDNAProcessor
from vdna.calibration import calibrate
from vdna.extractors import ExtractorInfo, register_extractor


class SmallConvNet(torch.nn.Module):
    """A stand-in for your network: two conv blocks; returns the activations vdna should describe."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # stand-in weights; load your trained weights here instead
        self.block1 = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.block2 = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU())

    def forward(self, x):
        a = self.block1(x)
        b = self.block2(a)
        return {"block1": a, "block2": b}  # (N, C, H, W): "channels" layout, C neurons each


INFO = ExtractorInfo(
    name="small_convnet",
    neurons_per_layer={"block1": 16, "block2": 32},
    layouts={"block1": "channels", "block2": "channels"},
    input_size=(64, 64),
    mean=(0.485, 0.456, 0.406),  # the normalisation your network was trained with
    std=(0.229, 0.224, 0.225),
)


def main():
    register_extractor("small_convnet", SmallConvNet, INFO)
    with tempfile.TemporaryDirectory() as tmp:
        from _data import demo_folders

        calibration, base, shifted = demo_folders(tmp, n=6, styles=("close", "base", "shifted"))
        ranges_file = Path(tmp) / "small_convnet_ranges.json"
        # 1. activation ranges, once per extractor (keep this file with your project)
        calibrate(calibration, "small_convnet", output=ranges_file, verbose=False, num_workers=2)
        # 2. DNAs binned with those ranges
        processor = VDNAProcessor()
        dnas = [processor.make_vdna(folder, feat_extractor_name="small_convnet", distribution_name="histogram-100",
                                    activation_ranges=str(ranges_file), verbose=False, num_workers=2)
                for folder in (base, shifted)]
    print(f"EMD(base, shifted) with small_convnet: {float(EMD(*dnas)):.4f}")
    for layer in INFO.neurons_per_layer:
        print(f"  {layer}: {float(EMD(*dnas, use_neurons_from_layer=layer)):.4f}")


if __name__ == "__main__":
    main()

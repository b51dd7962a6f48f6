"""A small registered extractor ("probe") whose neurons are known: in layer "colour", neuron 0 is a
warm-minus-cool opponent filter (R - B, 1x1) and neurons 1-7 are seeded random 5x5 filters; layer
"texture" has 8 seeded random 3x3 filters on "colour". Retrieval tests use it: selecting the neurons
most sensitive to the "warm" attribute must find neuron 0, whose signal the other neurons' scene
variation hides when all neurons are averaged. 48x48 input, microseconds per image."""
import numpy as np
import torch

from vdna.extractors import ExtractorInfo, register_extractor

NAME = "probe"
INFO = ExtractorInfo(
    name=NAME,
    neurons_per_layer={"colour": 8, "texture": 8},
    layouts={"colour": "channels", "texture": "channels"},
    input_size=(48, 48),
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)


class ProbeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(99)
        self.colour = torch.nn.Conv2d(3, 8, 5, padding=2)
        self.texture = torch.nn.Conv2d(8, 8, 3, stride=2)
        with torch.no_grad():
            w = rng.standard_normal((8, 3, 5, 5)) * 0.3
            w[0] = 0.0
            w[0, 0, 2, 2], w[0, 2, 2, 2] = 1.0, -1.0  # R - B at the centre tap
            self.colour.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            self.colour.bias.zero_()
            self.texture.weight.copy_(torch.from_numpy((rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)))
            self.texture.bias.zero_()

    def forward(self, x):
        a = self.colour(x)  # no ReLU: the opponent neuron keeps its sign
        return {"colour": a, "texture": torch.relu(self.texture(torch.relu(a)))}


register_extractor(NAME, ProbeNet, INFO)

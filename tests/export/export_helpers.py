"""Helpers shared by the Core ML export tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"
LABELS = [str(i) for i in range(10)]
POSE_LABELS = ["fist", "open", "peace", "thumbsUp", "point"]
ACTION_LABELS = ["wave", "swipe", "clap", "background"]
ACTION_WINDOW = 30
METADATA = {
    "author": "Ada Lovelace", "short_description": "Digits in sign language", "license": "CC0",
    "version": "2.1", "additional": {"dataset": "sign-language-digits"},
}
TRAINING_INFO = {"task": "MLImageClassifier", "iterations": "25"}


def photo(label: str, index: int = 0, size: int = 224) -> Image.Image:
    """A real sample photo of `label`, resized to size x size with PIL."""
    path = sorted((DIGITS / label).glob("*.JPG"))[index]
    return Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, S, S) RGB in [0, 1], what the torch backbone takes."""
    return torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]


def randomize_batchnorm(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters, so batch norms matter in the check."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return net


def keypoints(window: int, seed: int) -> np.ndarray:
    """Keypoint-like input (window, 3, 21): a hand somewhere in the frame, confidences in [0, 1]."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.3, 0.7, size=(window, 2, 1))
    xy = centre + rng.normal(0.0, 0.08, size=(window, 2, 21))
    conf = rng.uniform(0.0, 1.0, size=(window, 1, 21))
    return np.clip(np.concatenate([xy, conf], axis=1), 0.0, 1.0).astype(np.float32)

# the two Core ML formats the exports write, and the file suffix of each
SUFFIX = {"neuralnetwork": ".mlmodel", "mlprogram": ".mlpackage"}
FORMATS = list(SUFFIX)

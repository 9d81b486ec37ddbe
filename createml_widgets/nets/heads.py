"""Classifier heads over a fixed feature vector (the image classifier's transfer-learning heads)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LinearHead(nn.Module):
    """Multinomial logistic regression: (N, D) features -> (N, K) logits."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, K) logits."""
        return self.fc(x)


class MLPHead(nn.Module):
    """Multilayer perceptron: hidden ReLU layers of `layer_sizes`, then a linear layer to K logits."""

    def __init__(self, in_features: int, num_classes: int, layer_sizes: Sequence[int], dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in layer_sizes:
            layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, K) logits."""
        return self.mlp(x)

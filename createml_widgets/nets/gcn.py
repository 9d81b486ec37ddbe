"""Graph convolutional networks over the 21-joint hand skeleton (Create ML's `.gcn`).

Inputs are raw keypoints in Vision's layout, so an exported model takes exactly what
`VNHumanHandPoseObservation.keypointsMultiArray()` gives: rows x, y, confidence; 21 joints in
Vision's order; x, y in [0, 1] with the origin at the lower left. Normalisation (translation and
scale invariance) happens inside the network, so it travels into Core ML with it.
"""
from __future__ import annotations

import torch
from torch import nn

NUM_JOINTS = 21
# Vision's joint order: wrist, thumb CMC..tip, index MCP..tip, middle, ring, little.
HAND_EDGES = [
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16),
    (0, 17), (17, 18), (18, 19), (19, 20),
    (5, 9), (9, 13), (13, 17),
]


def normalized_adjacency() -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 for the hand skeleton, (21, 21)."""
    a = torch.eye(NUM_JOINTS)
    for i, j in HAND_EDGES:
        a[i, j] = a[j, i] = 1.0
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def normalize_keypoints(x: torch.Tensor) -> torch.Tensor:
    """Centre a hand (or a window of hand frames) on its mean wrist position and scale it to unit size.

    (N, T, 3, 21) -> (N, T, 3, 21). The confidence row becomes presence: 1 for a joint with any
    confidence, 0 for none. Vision reports a confidence per joint, MediaPipe one score per hand, so a
    network that read the values would answer differently in an app than here. Centre and scale are computed over the
    whole window, not per frame, so motion inside the window (a wave's translation, a zoom's change of
    size) survives while where and how large the hand is in the picture does not. Frames of zeros
    (no hand) stay zeros and do not count. Built from ops that convert to Core ML's neural network
    format (no comparisons): `present` is 1 for a frame with any keypoint, else 0.
    """
    xy = x[:, :, 0:2, :]
    conf = x[:, :, 2:3, :]
    present = torch.clamp(x.abs().sum(dim=(2, 3), keepdim=True) * 1e4, 0.0, 1.0)  # (N, T, 1, 1)
    frames = present.sum(dim=1, keepdim=True) + 1e-6  # (N, 1, 1, 1)
    centre = (xy[:, :, :, 0:1] * present).sum(dim=1, keepdim=True) / frames  # (N, 1, 2, 1) mean wrist
    centred = (xy - centre) * present
    scale = torch.sqrt((centred * centred).sum(dim=(1, 2, 3), keepdim=True) / (frames * 42.0) + 1e-6)
    seen = torch.clamp(conf * 1e4, 0.0, 1.0)  # (N, T, 1, 21): any confidence >= 1e-4 counts as seen
    return torch.cat([centred / scale, seen], dim=2)


class GraphConv(nn.Module):
    """Spatial graph convolution: aggregate neighbours with the fixed skeleton, then mix channels.

    (N, C_in, T, 21) -> (N, C_out, T, 21)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.register_buffer("adjacency", normalized_adjacency())
        self.mix = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, 21) -> (N, C_out, T, 21)."""
        return torch.relu(self.bn(self.mix(torch.matmul(x, self.adjacency))))


class STBlock(nn.Module):
    """A spatial graph convolution followed by a temporal convolution, with a residual path.

    (N, C_in, T, 21) -> (N, C_out, ceil(T / stride), 21)
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int = 9, stride: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.spatial = GraphConv(in_channels, out_channels)
        pad = temporal_kernel // 2
        self.temporal = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), stride=(stride, 1), padding=(pad, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout),
        )
        self.residual = (
            nn.Identity() if in_channels == out_channels and stride == 1
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=(stride, 1)), nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, 21) -> (N, C_out, T / stride, 21): graph then temporal convolution, plus the residual."""
        return torch.relu(self.temporal(self.spatial(x)) + self.residual(x))


class HandPoseGCN(nn.Module):
    """Hand pose classifier: (N, 1, 3, 21) Vision keypoints -> (N, K) logits."""

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (64, 64, 128), dropout: float = 0.2):
        super().__init__()
        layers, width = [], 3
        for c in channels:
            layers.append(GraphConv(width, c))
            width = c
        self.graph = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width * NUM_JOINTS, num_classes)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        """(N, 1, 3, 21) Vision keypoints -> (N, K) logits."""
        x = normalize_keypoints(poses)  # (N, 1, 3, 21)
        x = x.permute(0, 2, 1, 3)  # (N, 3, 1, 21)
        x = self.graph(x)  # (N, C, 1, 21)
        x = x.flatten(1)  # (N, C*21)
        return self.fc(self.dropout(x))


# Each joint's parent in the skeleton (the wrist is its own): a bone vector is joint - parent.
PARENTS = (0, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
STREAMS = ("joints", "motion", "bones")


def bone_matrix() -> torch.Tensor:
    """(21, 21) M with x @ M = x - x[..., PARENTS] for x (..., 21): bone vectors as one matmul."""
    m = torch.eye(NUM_JOINTS)
    for j, parent in enumerate(PARENTS):
        m[parent, j] -= 1.0
    return m


def stream_features(x: torch.Tensor, streams: tuple[str, ...], bones: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, T, 21) normalised joints (x, y, seen) -> (N, C, T, 21) with the chosen streams stacked:
    "joints" (3 channels as given), "motion" (x, y change since the previous frame, 0 where either frame
    has no hand: 2 channels, as the motion stream of 2s-AGCN / MS-G3D), "bones" (x, y of joint - parent,
    2 channels; `bones` is `bone_matrix()`, pass a module's buffer so tracing sees a constant). Built from
    slices, a matmul with a constant and concatenation: all convert to Core ML."""
    parts = []
    xy, seen = x[:, 0:2], x[:, 2:3]
    if "joints" in streams:
        parts.append(x)
    if "motion" in streams:
        both = seen[:, :, 1:] * seen[:, :, :-1]
        step = (xy[:, :, 1:] - xy[:, :, :-1]) * both
        parts.append(torch.cat([xy[:, :, 0:1] * 0.0, step], dim=2))
    if "bones" in streams:
        parts.append(torch.matmul(xy, (bone_matrix() if bones is None else bones).to(x.dtype)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def stream_channels(streams: tuple[str, ...]) -> int:
    """Channels per joint that `stream_features` gives for `streams` (joints 3, motion 2, bones 2)."""
    return 3 * ("joints" in streams) + 2 * ("motion" in streams) + 2 * ("bones" in streams)


class HandActionGCN(nn.Module):
    """Hand action classifier (spatio-temporal GCN): (N, T, 3, 21) keypoint windows -> (N, K) logits.

    streams: what each joint carries into the first block, any of STREAMS (see `stream_features`).
    """

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (32, 64, 64), strides: tuple[int, ...] = (1, 2, 2),
                 dropout: float = 0.2, streams: tuple[str, ...] = ("joints",)):
        super().__init__()
        streams = tuple(streams)
        unknown = [s for s in streams if s not in STREAMS]
        if unknown or not streams:
            raise ValueError(f"streams must be a non-empty selection of {STREAMS}, got {streams!r}")
        self.streams = tuple(s for s in STREAMS if s in streams)
        width = stream_channels(self.streams)
        if "bones" in self.streams:
            self.register_buffer("bones", bone_matrix())
        else:
            self.bones = None
        self.input_bn = nn.BatchNorm2d(width)
        blocks = []
        for c, stride in zip(channels, strides):
            blocks.append(STBlock(width, c, stride=stride))  # later blocks see fewer, coarser time steps
            width = c
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, 21) keypoint windows -> (N, K) logits."""
        x = normalize_keypoints(poses).permute(0, 2, 1, 3)  # (N, 3, T, 21)
        x = self.input_bn(stream_features(x, self.streams, self.bones))  # (N, C0, T, 21)
        x = self.blocks(x)  # (N, C, T/4, 21)
        x = x.mean(dim=(2, 3))  # (N, C)
        return self.fc(self.dropout(x))

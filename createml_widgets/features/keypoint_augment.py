"""Augmentations that act on hand keypoints (Create ML's hand pose / hand action options).

Inputs are batches of keypoint sequences (B, T, 3, 21) in Vision's layout (a pose is T = 1).
Joints that are missing (all zeros) stay zeros, so "no hand" frames never turn into fake hands.
The networks normalise position and size per window (nets/gcn.py), so SCALE stretches x and y by
different factors and TRANSLATE adds a drift across a window: a uniform zoom or a constant shift would
teach them nothing. For a single pose, TRANSLATE therefore changes nothing the network sees.
"""
from __future__ import annotations

import math

import torch


def _uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def augment_keypoints(x: torch.Tensor, generator: torch.Generator, *, flip: bool = False, rotate: bool = False,
                      scale: bool = False, translate: bool = False, drop_frames: bool = False,
                      interpolate_frames: bool = False) -> torch.Tensor:
    """A randomly transformed copy of `x` (B, T, 3, 21)."""
    if not (flip or rotate or scale or translate or drop_frames or interpolate_frames):
        return x
    x = x.clone()
    b = x.shape[0]
    if interpolate_frames and x.shape[1] > 1:
        x = torch.stack([_retime(seq, _uniform(0.75, 1.3, (), generator).item(), generator) for seq in x])
    if drop_frames and x.shape[1] > 1:
        x = torch.stack([_drop(seq, generator) for seq in x])
    present = (x.abs().sum(dim=2, keepdim=True) > 0).to(x.dtype)  # (B, T, 1, 21)
    xy = x[:, :, 0:2, :]
    weight = present.sum(dim=(1, 3), keepdim=True).clamp(min=1)
    center = (xy * present).sum(dim=(1, 3), keepdim=True) / weight  # (B, 1, 2, 1)
    xy = xy - center
    if flip:
        sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0).view(b, 1, 1)
        xy[:, :, 0, :] = xy[:, :, 0, :] * sign
    if rotate:
        angle = _uniform(-math.radians(25), math.radians(25), (b,), generator)
        c, s = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
        px, py = xy[:, :, 0, :], xy[:, :, 1, :]
        xy = torch.stack([c * px - s * py, s * px + c * py], dim=2)
    if scale:  # x and y apart: a hand seen from another angle (a uniform scale would be normalised away)
        xy = xy * _uniform(0.8, 1.25, (b, 1, 2, 1), generator)
    xy = xy + center
    if translate:
        xy = xy + _uniform(-0.1, 0.1, (b, 1, 2, 1), generator)
        if x.shape[1] > 1:  # and a drift across the window (a moving camera): a constant shift alone is normalised away
            ramp = torch.linspace(-0.5, 0.5, x.shape[1]).view(1, -1, 1, 1)
            xy = xy + ramp * _uniform(-0.1, 0.1, (b, 1, 2, 1), generator)
    x[:, :, 0:2, :] = xy * present
    return x


def _retime(seq: torch.Tensor, speed: float, generator: torch.Generator) -> torch.Tensor:
    """Play `seq` (T, 3, 21) at `speed`, interpolating linearly between frames; keeps T frames."""
    t = seq.shape[0]
    pos = torch.arange(t, dtype=torch.float32) * speed
    pos = pos + _uniform(0, max(0.0, t - 1 - pos[-1].item()), (), generator) if pos[-1] < t - 1 else pos
    pos = pos.clamp(0, t - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo).view(t, 1, 1)
    a, b = seq[lo], seq[hi]
    both = (a.abs().sum(dim=1, keepdim=True) > 0) & (b.abs().sum(dim=1, keepdim=True) > 0)
    mixed = a * (1 - w) + b * w
    nearest = torch.where(w < 0.5, a, b)
    return torch.where(both, mixed, nearest)  # never blend a hand with a "no hand" frame


def _drop(seq: torch.Tensor, generator: torch.Generator, rate: float = 0.15) -> torch.Tensor:
    """Drop random frames (each with probability `rate`) and stretch what is left back to T frames."""
    t = seq.shape[0]
    keep = torch.nonzero(torch.rand(t, generator=generator) >= rate).flatten()
    if len(keep) < 2:
        return seq
    idx = torch.linspace(0, len(keep) - 1, t).round().long()
    return seq[keep[idx]]

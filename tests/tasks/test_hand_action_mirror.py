"""HORIZONTALLY_FLIP on directional classes: a mirrored "left" window trains "right" (and clockwise
counter-clockwise), never its own label; other classes are mirrored with their label kept."""
from __future__ import annotations

import numpy as np
import torch

from createml_widgets.tasks.hand_action_classifier import WindowData, mirrored_labels


def test_mirror_pairs_are_found_by_name():
    assert mirrored_labels(["circle", "down", "left", "other", "right", "up"]) == {2: 4, 4: 2}
    assert mirrored_labels(["Clockwise", "Counter Clockwise", "Move", "Stop"]) == {0: 1, 1: 0}
    assert mirrored_labels(["swipe_left", "Swipe-Right", "wave"]) == {0: 1, 1: 0}
    assert mirrored_labels(["anticlockwise", "clockwise"]) == {0: 1, 1: 0}
    assert mirrored_labels(["left", "wave"]) == {}
    assert mirrored_labels(["wave", "zoom"]) == {}


def test_mirrored_windows_swap_directional_labels_only():
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(3):
        seq = rng.uniform(0.2, 0.8, size=(12, 3, 21)).astype(np.float32)
        seq[5] = 0  # a frame without a hand stays without one
        seqs.append(seq)
    data = WindowData(seqs, [0, 1, 2], window=12, augment=lambda x, g: x, mirror={0: 1, 1: 0})
    x, y = data.batch(torch.arange(len(data)), torch.Generator().manual_seed(1))
    owners = data.owner
    flipped = 0
    for k in range(len(x)):
        original = torch.from_numpy(seqs[owners[k]])
        if torch.equal(x[k], original):
            assert int(y[k]) == owners[k]
        else:
            flipped += 1
            assert torch.allclose(x[k, :, 0], (1 - original[:, 0]) * (original[:, 0] != 0))
            assert torch.equal(x[k, :, 1:], original[:, 1:])
            assert int(y[k]) == {0: 1, 1: 0, 2: 2}[owners[k]]
        assert torch.all(x[k, 5] == 0)
    assert 0 < flipped < len(x)
    plain = WindowData(seqs, [0, 1, 2], window=12, augment=None)
    _, y2 = plain.batch(torch.arange(len(plain)), torch.Generator().manual_seed(1))
    assert y2.tolist() == [plain.labels[o] for o in plain.owner]

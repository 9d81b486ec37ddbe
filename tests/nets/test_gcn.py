"""The hand-skeleton networks see where the joints are relative to the hand, not in the picture."""
from __future__ import annotations

import pytest
import torch

from createml_widgets.nets import HandActionGCN, HandPoseGCN
from createml_widgets.nets.gcn import normalize_keypoints


def _hands(n: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, t, 3, 21)
    x[:, :, :2] = 0.35 + 0.3 * torch.rand(n, t, 2, 21, generator=g)
    x[:, :, 2] = 0.5 + 0.5 * torch.rand(n, t, 21, generator=g)
    return x


def _moved(x: torch.Tensor, shift=(0.12, -0.08), scale: float = 0.6) -> torch.Tensor:
    """The same hands, smaller and elsewhere in the picture (about the picture's centre)."""
    y = x.clone()
    y[:, :, :2] = (x[:, :, :2] - 0.5) * scale + 0.5 + torch.tensor(shift).view(1, 1, 2, 1)
    return y


@pytest.mark.parametrize("net", [HandPoseGCN(4), HandActionGCN(4)], ids=["pose", "action"])
def test_answers_do_not_depend_on_where_or_how_large_the_hand_is(net):
    torch.manual_seed(0)
    net.eval()
    t = 1 if isinstance(net, HandPoseGCN) else 30
    x = _hands(6, t)
    with torch.no_grad():
        a, b = net(x), net(_moved(x))
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    with torch.no_grad():  # ...but it does depend on the pose
        other = net(_hands(6, t, seed=1))
    assert not torch.allclose(a, other, atol=1e-3)


def test_normalisation_keeps_missing_frames_zero_and_motion_inside_the_window():
    x = _hands(1, 10)
    x[0, 3] = 0  # a frame with no hand
    x[0, 5:, 0] += 0.1  # the hand moves right halfway through
    n = normalize_keypoints(x)
    assert not n[0, 3].any()
    assert (n[0, 5:, 0].mean() - n[0, :3, 0].mean()) > 0.5  # the move survives (in hand-size units)
    assert torch.equal(n[0, [0, 1, 2, 4, 5], 2], torch.ones(5, 21))  # confidence becomes presence

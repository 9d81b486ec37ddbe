"""The training loop's own AdamW is torch.optim.AdamW, step for step, checkpoints included."""
from __future__ import annotations

import pytest
import torch

from createml_widgets.nets import HandPoseGCN
from createml_widgets.nets.training import AdamW


def _steps(net, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_adamw_matches_torch_step_for_step_and_resumes_from_its_state():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(8, 1, 3, 21, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(6)]
    torch.manual_seed(0)
    ours = HandPoseGCN(3).eval()  # no dropout: both runs see the same function
    theirs = HandPoseGCN(3).eval()
    theirs.load_state_dict(ours.state_dict())
    a = AdamW(ours.parameters(), lr=3e-3, weight_decay=1e-4)
    b = torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=1e-4)
    _steps(ours, a, batches[:3])
    _steps(theirs, b, batches[:3])
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(p, q, atol=1e-6)

    # a checkpoint of ours loads into torch's optimizer and the other way round: the runs stay together
    resumed = HandPoseGCN(3).eval()
    resumed.load_state_dict(ours.state_dict())
    c = torch.optim.AdamW(resumed.parameters(), lr=3e-3, weight_decay=1e-4)
    c.load_state_dict(a.state_dict())
    again = AdamW(theirs.parameters(), lr=3e-3, weight_decay=1e-4)
    again.load_state_dict(b.state_dict())
    _steps(resumed, c, batches[3:])
    _steps(theirs, again, batches[3:])
    for p, q in zip(resumed.parameters(), theirs.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert not torch.allclose(next(resumed.parameters()), next(ours.parameters()))  # they did train on


def test_the_training_loop_names_the_optimizer_it_does_not_have():
    from createml_widgets.nets.training import TensorData, Trainer

    data = TensorData(torch.rand(4, 1, 3, 21), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'.*adam"):
        Trainer(HandPoseGCN(3), data, optimizer="lbfgs")

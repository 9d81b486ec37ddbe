"""The logistic regressor's own L-BFGS trainer (nets/logistic.py) on real image features: the same
minimum as torch.optim.LBFGS, the small space the same problem, exact resumes from its state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from createml_widgets import MLImageClassifier


@pytest.fixture(scope="module")
def digit_features(digits_dir):
    """Real scene_print features of 10 photos of each of 4 digits, and 2 more each to validate on."""
    from createml_widgets.data.items import Item
    from createml_widgets.features.image_embedding import ImageEmbeddingExtractor

    labels = ["2", "3", "7", "9"]
    ext = ImageEmbeddingExtractor(MLImageClassifier.FeatureExtractorType.scene_print(1))
    with ext:
        def feats(pick):
            items = [Item(p, lab) for i, lab in enumerate(labels) for p in pick(sorted((digits_dir / lab).iterdir()))]
            x = torch.from_numpy(np.stack(ext.extract(items)).astype(np.float32))
            return x, torch.tensor([labels.index(i.label) for i in items])
        return (*feats(lambda ps: ps[:10]), *feats(lambda ps: ps[10:12]))


def _objective(net, x, y, weight_decay=1e-3) -> float:
    with torch.no_grad():
        w = net.fc.weight.double()
        return float(torch.nn.functional.cross_entropy(x.double() @ w.T + net.fc.bias.double(), y)
                     + 0.5 * weight_decay * (w * w).sum())


def _torch_lbfgs(x, y, vx, vy, weight_decay: float, steps: int):
    """The reference: torch.optim.LBFGS with the settings the trainer reproduces, on autograd gradients.

    Returns the trained LinearHead and its validation loss and accuracy."""
    from createml_widgets.nets import LinearHead
    from createml_widgets.nets.logistic import LBFGS_EVALUATIONS_PER_STEP, LBFGS_ITERATIONS_PER_STEP

    torch.manual_seed(0)
    net = LinearHead(x.shape[1], 4)
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS_PER_STEP,
                            max_eval=LBFGS_EVALUATIONS_PER_STEP, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss = loss + 0.5 * weight_decay * sum((p * p).sum() for n, p in net.named_parameters() if "bias" not in n)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    with torch.no_grad():
        logits = net(vx)
    return net, {"validation_loss": float(torch.nn.functional.cross_entropy(logits, vy)),
                 "validation_accuracy": float((logits.argmax(1) == vy).float().mean())}


def test_logistic_trainer_matches_torch_lbfgs(digit_features):
    from createml_widgets.nets.logistic import LogisticRegressionTrainer

    x, y, vx, vy = digit_features
    generic, want = _torch_lbfgs(x, y, vx, vy, weight_decay=1e-3, steps=300)
    ours = LogisticRegressionTrainer(x, y, vx, vy, 4, weight_decay=1e-3, seed=0)
    assert ours.Q is not None  # 40 examples, 1280 dimensions: the small space
    losses = []
    for _ in range(300):  # one L-BFGS iteration per step: enough steps to reach the minimum
        ours.step()
        losses.append(_objective(ours.net, x, y))
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:]))  # L-BFGS with a Wolfe search descends
    # A strictly convex problem: both reach the same minimum, weights and probabilities.
    assert _objective(ours.net, x, y) == pytest.approx(_objective(generic, x, y), rel=1e-4)
    with torch.no_grad():
        p1, p2 = torch.softmax(generic(vx), 1), torch.softmax(ours.net(vx), 1)
    assert float((p1 - p2).abs().max()) < 0.01
    m = ours.validation_metrics()
    assert m["validation_loss"] == pytest.approx(want["validation_loss"], abs=0.01)
    assert m["validation_accuracy"] == want["validation_accuracy"]


def test_logistic_trainer_small_space_is_the_same_problem(digit_features):
    from createml_widgets.nets.logistic import LogisticRegressionTrainer

    x, y, vx, vy = digit_features
    small = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=3, reduce=True)
    full = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=3, reduce=False)
    assert small.theta.size == 4 * 41 + 1 and full.theta.size == 4 * 1281
    # Same starting weights in both coordinates (W = C Q^T + alpha U is exact).
    assert torch.allclose(small.net.fc.weight, full.net.fc.weight, atol=1e-6)
    for _ in range(3):
        a, b = small.step(), full.step()
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)
    assert torch.allclose(small.net.fc.weight, full.net.fc.weight, atol=1e-5)
    assert small.validation_metrics() == pytest.approx(full.validation_metrics(), rel=1e-5)


def test_logistic_trainer_state_is_a_snapshot_and_resumes_exactly(digit_features, tmp_path):
    from createml_widgets.nets.logistic import LogisticRegressionTrainer
    from createml_widgets.session import load_tensors, save_tensors

    x, y, vx, vy = digit_features
    a = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=1)
    for _ in range(3):
        a.step()
    save_tensors(tmp_path / "s.pt", a.state_dict())
    in_memory = a.state_dict()
    weight_then = in_memory["net"]["fc.weight"].clone()
    for _ in range(3):
        a.step()
    assert torch.equal(in_memory["net"]["fc.weight"], weight_then)  # later steps leave the snapshot alone
    for state in (load_tensors(tmp_path / "s.pt"), in_memory):
        b = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=99)  # other initial weights, replaced by the state
        b.load_state_dict(state)
        for _ in range(3):
            b.step()
        assert torch.allclose(b.net.fc.weight, a.net.fc.weight, atol=1e-6)


def test_logistic_trainer_refuses_a_state_of_another_format(digit_features):
    """A state not written by this trainer (another format, or none) is refused with a SessionError, not half
    loaded: the session then says to train again."""
    from createml_widgets.errors import SessionError
    from createml_widgets.nets.logistic import LogisticRegressionTrainer

    x, y, vx, vy = digit_features
    a = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=1)
    a.step()
    state = a.state_dict()
    for opt in ({**state["optimizer"], "format": "createml_widgets.logistic-lbfgs/0"},
                {"state": {0: {"n_iter": 1}}, "param_groups": [{"lr": 1.0}]}):
        b = LogisticRegressionTrainer(x, y, vx, vy, 4, seed=2)
        with pytest.raises(SessionError, match="cannot be resumed"):
            b.load_state_dict({"net": state["net"], "optimizer": opt})

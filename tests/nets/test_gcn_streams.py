"""The hand-action GCN's input streams (joints, motion, bones): what they compute, and that a net using
them still exports to Core ML with `poses` (window x 3 x 21) in and numbers that agree with torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from createml_widgets.export import evaluate, keypoint_classifier_model, write_model
from createml_widgets.nets import HandActionGCN
from createml_widgets.nets.gcn import PARENTS, STREAMS, bone_matrix, normalize_keypoints, stream_features

WINDOW = 20
LABELS = ["circle", "left", "other", "right"]


def _poses(seed: int, missing=(3, 4)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.3, 0.7, size=(1, 2, 1)) + np.linspace(-0.1, 0.1, WINDOW)[:, None, None]
    xy = centre + rng.normal(0.0, 0.05, size=(WINDOW, 2, 21))
    conf = rng.uniform(0.3, 1.0, size=(WINDOW, 1, 21))
    poses = np.clip(np.concatenate([xy, conf], axis=1), 0.0, 1.0).astype(np.float32)
    poses[list(missing)] = 0.0  # frames without a hand
    return poses


def test_bones_are_joint_minus_parent():
    v = torch.rand(4, 21)
    assert torch.allclose(v @ bone_matrix(), v - v[:, list(PARENTS)])
    assert PARENTS[0] == 0 and all(p < j for j, p in enumerate(PARENTS) if j)


def test_motion_is_the_frame_to_frame_change_and_zero_across_a_missing_hand():
    poses = torch.from_numpy(_poses(0))[None]
    x = normalize_keypoints(poses).permute(0, 2, 1, 3)
    f = stream_features(x, ("joints", "motion", "bones"))
    assert f.shape == (1, 7, WINDOW, 21)
    assert torch.equal(f[:, :3], x)
    motion = f[:, 3:5]
    assert torch.all(motion[:, :, 0] == 0)
    assert torch.allclose(motion[:, :, 1], x[:, :2, 1] - x[:, :2, 0])
    for t in (3, 4, 5):  # frames 3 and 4 have no hand: no motion into, within or out of the gap
        assert torch.all(motion[:, :, t] == 0)
    assert torch.allclose(f[:, 5:7], torch.matmul(x[:, :2], bone_matrix()))


def test_the_default_net_is_the_joints_only_net_and_bad_streams_are_refused():
    assert HandActionGCN(3).streams == ("joints",)
    same = HandActionGCN(3).state_dict()
    assert {k: v.shape for k, v in same.items()} == {k: v.shape for k, v in HandActionGCN(3, streams=["joints"])
                                                    .state_dict().items()}
    assert HandActionGCN(3, streams=("bones", "joints")).streams == ("joints", "bones")
    assert HandActionGCN(3, streams=STREAMS).input_bn.num_features == 7
    with pytest.raises(ValueError, match="streams"):
        HandActionGCN(3, streams=("speed",))
    with pytest.raises(ValueError, match="streams"):
        HandActionGCN(3, streams=())


@pytest.mark.parametrize("streams", [("joints", "motion"), STREAMS])
@pytest.mark.parametrize("fmt", ["neuralnetwork", "mlprogram"])
def test_a_net_with_streams_exports_and_agrees_with_torch(streams, fmt, tmp_path):
    torch.manual_seed(3)
    net = HandActionGCN(len(LABELS), streams=streams)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    net.eval()
    model = keypoint_classifier_model(net, LABELS, WINDOW, fmt=fmt)
    path = write_model(model, tmp_path / ("m.mlmodel" if fmt == "neuralnetwork" else "m.mlpackage"))
    spec = model.get_spec()
    (poses_in,) = spec.description.input
    assert poses_in.name == "poses" and tuple(poses_in.type.multiArrayType.shape) == (WINDOW, 3, 21)
    assert {o.name for o in spec.description.output} == {"label", "labelProbabilities"}
    for seed in (1, 2):
        poses = _poses(seed)
        with torch.no_grad():
            want = torch.softmax(net(torch.from_numpy(poses)[None]), dim=1)[0].numpy()
        got = evaluate(path, {"poses": poses})
        probs = np.array([got["labelProbabilities"][k] for k in LABELS])
        assert np.abs(probs - want).max() < 1e-4
        assert got["label"] == LABELS[int(want.argmax())]

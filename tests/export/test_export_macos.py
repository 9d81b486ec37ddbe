"""Real Core ML predictions (macOS only): the written models agree with torch and with spec_eval."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from export_helpers import (
    ACTION_LABELS,
    ACTION_WINDOW,
    FORMATS,
    LABELS,
    POSE_LABELS,
    SUFFIX,
    keypoints,
    photo,
    to_tensor,
)

from createml_widgets.export import evaluate, write_model

pytestmark = [
    pytest.mark.macos,
    pytest.mark.skipif(sys.platform != "darwin", reason="Core ML's runtime (MLModel.predict) needs macOS"),
]



def _load(path):
    import coremltools as ct

    return ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)


@pytest.mark.parametrize("fmt", FORMATS)
def test_core_ml_image_prediction_matches_torch(image_models, backbone, linear_head, fmt, tmp_path):
    path = write_model(image_models[fmt], tmp_path / f"Digits{SUFFIX[fmt]}")
    image = photo("3")
    with torch.no_grad():
        expected = torch.softmax(linear_head(backbone(to_tensor(image))), 1)[0].numpy()
    out = _load(path).predict({"image": image})
    got = np.array([out["classLabelProbs"][k] for k in LABELS])
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert out["classLabel"] == LABELS[int(np.argmax(expected))]
    ours = evaluate(path, {"image": image})["classLabelProbs"]
    np.testing.assert_allclose(got, [ours[k] for k in LABELS], atol=1e-3)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("task", ["pose", "action"])
def test_core_ml_keypoint_prediction_matches_torch(pose_models, action_models, pose_net, action_net, task, fmt,
                                                   tmp_path):
    models, net, labels, window = (
        (pose_models, pose_net, POSE_LABELS, 1) if task == "pose"
        else (action_models, action_net, ACTION_LABELS, ACTION_WINDOW)
    )
    path = write_model(models[fmt], tmp_path / f"Hand{SUFFIX[fmt]}")
    model = _load(path)
    for poses in (keypoints(window, 0), np.zeros((window, 3, 21), np.float32)):
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(poses)[None]), 1)[0].numpy()
        out = model.predict({"poses": poses})
        got = np.array([out["labelProbabilities"][k] for k in labels])
        np.testing.assert_allclose(got, expected, atol=1e-3)
        assert out["label"] == labels[int(np.argmax(expected))]

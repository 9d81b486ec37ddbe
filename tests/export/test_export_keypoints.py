"""MLHandPoseClassifier / MLHandActionClassifier export: interface and numeric agreement with torch."""
from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
import torch
from export_helpers import ACTION_LABELS, ACTION_WINDOW, FORMATS, METADATA, POSE_LABELS, SUFFIX, keypoints

from createml_widgets.export import (
    HAND_JOINT_NAMES,
    VERSION_METADATA_KEY,
    evaluate,
    keypoint_classifier_model,
    load,
    write_model,
)
from createml_widgets.nets import HandPoseGCN

FLOAT32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32


def torch_probs(net, poses: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(poses)[None]), dim=1)[0].numpy().astype(np.float64)


def spec_probs(result: dict, labels) -> np.ndarray:
    assert set(result) == {"label", "labelProbabilities"}
    assert list(result["labelProbabilities"]) == list(labels)
    return np.array([result["labelProbabilities"][k] for k in labels])


@pytest.fixture(scope="module")
def written(pose_models, action_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("keypoint-export")
    out = {}
    for task, models in (("pose", pose_models), ("action", action_models)):
        for fmt, model in models.items():
            out[task, fmt] = write_model(model, folder / "nested" / f"Hand{task}{SUFFIX[fmt]}")
    return out


CASES = [("pose", 1, POSE_LABELS), ("action", ACTION_WINDOW, ACTION_LABELS)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("task", "window", "labels"), CASES)
def test_written_file_has_create_ml_interface(written, task, window, labels, fmt):
    model = ct.models.MLModel(str(written[task, fmt]), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == ("neuralNetworkClassifier" if fmt == "neuralnetwork" else "mlProgram")

    (poses,) = spec.description.input
    assert poses.name == "poses"
    assert poses.type.WhichOneof("Type") == "multiArrayType"
    assert tuple(poses.type.multiArrayType.shape) == (window, 3, 21)
    assert poses.type.multiArrayType.dataType == FLOAT32
    frames = "1 frame." if window == 1 else f"{window} frames."
    assert f"uses the first dimension to index time over {frames}" in poses.shortDescription
    assert "The second dimension indexes x, y, and confidence of hand pose keypoint locations." \
        in poses.shortDescription
    assert poses.shortDescription.endswith("ordered as " + ", ".join(HAND_JOINT_NAMES) + ".")
    assert poses.shortDescription.startswith(
        "A hand pose to classify." if task == "pose" else "A sequence of hand poses to classify.")

    outputs = {o.name: o for o in spec.description.output}
    assert set(outputs) == {"label", "labelProbabilities"}
    assert outputs["label"].type.WhichOneof("Type") == "stringType"
    assert outputs["labelProbabilities"].type.WhichOneof("Type") == "dictionaryType"
    assert outputs["labelProbabilities"].type.dictionaryType.WhichOneof("KeyType") == "stringKeyType"
    assert outputs["label"].shortDescription == f"Most likely hand {task} category."
    assert outputs["labelProbabilities"].shortDescription == \
        "A dictionary of labels and the corresponding confidences."
    assert spec.description.predictedFeatureName == "label"
    assert spec.description.predictedProbabilitiesName == "labelProbabilities"
    if fmt == "neuralnetwork":
        assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == labels
    assert model.user_defined_metadata["task"] == f"MLHand{task.capitalize()}Classifier"
    assert model.user_defined_metadata[VERSION_METADATA_KEY]


def test_action_metadata(written):
    model = ct.models.MLModel(str(written["action", "mlprogram"]), skip_model_load=True)
    assert (model.author, model.short_description, model.license, model.version) == (
        METADATA["author"], METADATA["short_description"], METADATA["license"], METADATA["version"])
    assert model.user_defined_metadata["dataset"] == "sign-language-digits"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pose_probabilities_match_torch(written, pose_net, fmt, seed):
    poses = keypoints(1, seed)
    expected = torch_probs(pose_net, poses)
    result = evaluate(written["pose", fmt], {"poses": poses})
    got = spec_probs(result, POSE_LABELS)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert result["label"] == POSE_LABELS[int(np.argmax(expected))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["hand", "zeros", "hand-then-nothing"])
def test_action_probabilities_match_torch(written, action_net, fmt, kind):
    if kind == "zeros":
        poses = np.zeros((ACTION_WINDOW, 3, 21), np.float32)
    else:
        poses = keypoints(ACTION_WINDOW, 42)
        if kind == "hand-then-nothing":
            poses[ACTION_WINDOW // 2:] = 0.0
    expected = torch_probs(action_net, poses)
    result = evaluate(written["action", fmt], {"poses": poses})
    got = spec_probs(result, ACTION_LABELS)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert result["label"] == ACTION_LABELS[int(np.argmax(expected))]


def test_predictions_vary_with_the_input(written, pose_net):
    """Different hands give different outputs, in torch and in the exported model alike."""
    interpreter = load(written["pose", "neuralnetwork"])
    a = spec_probs(interpreter.predict({"poses": keypoints(1, 10)}), POSE_LABELS)
    b = spec_probs(interpreter.predict({"poses": keypoints(1, 11)}), POSE_LABELS)
    assert np.abs(a - b).max() > 1e-4


def test_wrong_input_shape_is_rejected(written):
    with pytest.raises(ValueError, match=r"\(1, 3, 21\)"):
        evaluate(written["pose", "mlprogram"], {"poses": np.zeros((2, 3, 21), np.float32)})
    with pytest.raises(KeyError, match="poses"):
        evaluate(written["pose", "mlprogram"], {"keypoints": np.zeros((1, 3, 21), np.float32)})


def test_export_leaves_the_net_in_training_mode(tmp_path):
    torch.manual_seed(3)
    net = HandPoseGCN(2).train()
    model = keypoint_classifier_model(net, ["a", "b"], 1, fmt="mlprogram")
    assert net.training
    poses = keypoints(1, 5)
    got = spec_probs(evaluate(write_model(model, tmp_path / "p.mlpackage"), {"poses": poses}), ["a", "b"])
    net.eval()
    np.testing.assert_allclose(got, torch_probs(net, poses), atol=1e-4, rtol=0)


def test_bad_arguments(pose_net):
    with pytest.raises(ValueError, match="2 class labels"):
        keypoint_classifier_model(pose_net, ["a", "b"], 1)
    with pytest.raises(ValueError, match="at least 1 frame"):
        keypoint_classifier_model(pose_net, POSE_LABELS, 0)
    with pytest.raises(ValueError, match="at least one class label"):
        keypoint_classifier_model(pose_net, [], 1)

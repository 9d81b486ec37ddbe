"""Each trained task's `write`: ONNX files, weight precisions, and three independent evaluations that agree.

ONNX Runtime (the .onnx file), `createml_widgets.export.spec_eval` (the .mlmodel file, numpy) and the
task's own `prediction()` (torch) must give the same probabilities to 1e-5 on real sample inputs.
"""
from __future__ import annotations

import json

import coremltools as ct
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import DIGITS
from PIL import Image

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier, ValidationData
from createml_widgets.export import load
from createml_widgets.features.image_embedding import vision_scale

JOINTS = ("wrist", "thumbCMC", "thumbMP", "thumbIP", "thumbTip", "indexMCP", "indexPIP", "indexDIP", "indexTip")


@pytest.fixture(scope="module")
def image_model():
    return MLImageClassifier(MLImageClassifier.DataSource.labeled_directories(DIGITS),
                             MLImageClassifier.ModelParameters(max_iterations=10))


@pytest.fixture(scope="module")
def pose_model():
    return MLHandPoseClassifier(MLHandPoseClassifier.DataSource.labeled_directories(DIGITS),
                                MLHandPoseClassifier.ModelParameters(maximum_iterations=15))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from createml_widgets.samples.make_clips import make_dataset

    root = tmp_path_factory.mktemp("export-clips")
    make_dataset(root / "train", clips_per_class=4, seed=0)
    return root / "train"


@pytest.fixture(scope="module")
def action_model(clips):
    params = MLHandActionClassifier.ModelParameters(prediction_window_size=15, maximum_iterations=3,
                                                    target_frame_rate=15, validation=ValidationData.none())
    return MLHandActionClassifier(MLHandActionClassifier.DataSource.labeled_directories(clips), params)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _photos(n: int = 4):
    return [sorted((DIGITS / label).glob("*.JPG"))[3] for label in ("0", "3", "6", "8")[:n]]


def test_image_classifier_three_evaluations_agree(image_model, tmp_path):
    onnx_path = image_model.write(tmp_path / "Digits.onnx")
    coreml_path = image_model.write(tmp_path / "Digits.mlmodel", precision="float32")
    session, interpreter = _session(onnx_path), load(coreml_path)
    labels = image_model.class_labels
    for photo in _photos():
        image = vision_scale(Image.open(photo).convert("RGB"), 299)  # what Vision hands the model
        expected = image_model.prediction_probabilities(image)
        label, probs = session.run(None, {"image": np.asarray(image, np.float32).transpose(2, 0, 1)[None].copy()})
        ours = dict(zip(labels, probs[0].tolist()))
        coreml = interpreter.predict({"image": image})
        assert ours == pytest.approx(expected, abs=1e-5)
        assert coreml["classLabelProbs"] == pytest.approx(expected, abs=1e-5)
        assert label.tolist() == [coreml["classLabel"]] == [image_model.prediction(image)]
    big = Image.open(_photos(1)[0]).convert("RGB").resize((640, 480))
    _, probs = session.run(None, {"image": np.asarray(big, np.float32).transpose(2, 0, 1)[None].copy()})
    coreml = interpreter.predict({"image": big})["classLabelProbs"]
    np.testing.assert_allclose(probs[0], [coreml[k] for k in labels], atol=1e-5)


def test_image_onnx_interface(image_model, tmp_path):
    path = image_model.write(tmp_path / "Digits.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    (image,) = model.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = image.type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, 3, "height", "width"]
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert list(outputs) == ["classLabel", "classLabelProbs"]
    assert outputs["classLabel"].elem_type == onnx.TensorProto.STRING
    assert [d.dim_value for d in outputs["classLabelProbs"].shape.dim] == [1, len(image_model.class_labels)]
    props = _props(path)
    assert json.loads(props["classLabels"]) == image_model.class_labels
    assert props["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert props["author"] and "create ml" not in props["shortDescription"].lower()
    assert props["com.github.createml_widgets.task"] == "MLImageClassifier"


def test_hand_pose_three_evaluations_agree(pose_model, tmp_path):
    onnx_path = pose_model.write(tmp_path / "Poses.onnx")
    session, interpreter = _session(onnx_path), load(pose_model.write(tmp_path / "Poses.mlmodel", precision="float32"))
    model = onnx.load(str(onnx_path))
    (poses,) = model.graph.input
    assert poses.name == "poses" and [d.dim_value for d in poses.type.tensor_type.shape.dim] == [1, 3, 21]
    assert poses.doc_string.startswith("A hand pose to classify. Its multiarray encoding uses the first dimension "
                                       "to index time over 1 frame.")
    assert [o.name for o in model.graph.output] == ["label", "labelProbabilities"]
    props = _props(onnx_path)
    assert (props["Prediction Window Size"], props["Target Frame Rate"]) == ("1", "30.0")
    assert json.loads(props["classLabels"]) == pose_model.class_labels
    checked = 0
    for photo in _photos():
        keypoints = pose_model.keypoints(photo).keypoints
        expected = dict(pose_model.prediction_from_keypoints(keypoints))
        label, probs = session.run(None, {"poses": np.asarray(keypoints, np.float32)})
        assert dict(zip(pose_model.class_labels, probs[0].tolist())) == pytest.approx(expected, abs=1e-5)
        coreml = interpreter.predict({"poses": keypoints})
        assert coreml["labelProbabilities"] == pytest.approx(expected, abs=1e-5)
        assert label.tolist() == [coreml["label"]]
        checked += 1
    assert checked == 4


def test_hand_action_three_evaluations_agree(action_model, clips, tmp_path):
    onnx_path = action_model.write(tmp_path / "Actions.onnx")
    session = _session(onnx_path)
    interpreter = load(action_model.write(tmp_path / "Actions.mlmodel", precision="float32"))
    props = _props(onnx_path)
    assert (props["Prediction Window Size"], props["Target Frame Rate"]) == ("15", "15.0")
    assert props["com.apple.coreml.model.preview.type"] == "handActionClassifier"
    spec = ct.utils.load_spec(str(tmp_path / "Actions.mlmodel"))
    assert spec.description.metadata.userDefined["Target Frame Rate"] == "15.0"
    clip = sorted(next(p for p in sorted(clips.iterdir()) if p.is_dir()).iterdir())[0]
    window = action_model.keypoints(clip)[:15]
    expected = action_model.prediction(window)[0]
    label, probs = session.run(None, {"poses": np.asarray(window, np.float32)})
    assert dict(zip(action_model.class_labels, probs[0].tolist())) == pytest.approx(dict(expected.results), abs=1e-5)
    coreml = interpreter.predict({"poses": window})
    assert coreml["labelProbabilities"] == pytest.approx(dict(expected.results), abs=1e-5)
    assert label.tolist() == [coreml["label"]] == [expected.label]


def test_weight_precisions_shrink_the_file_and_keep_the_answers(image_model, tmp_path):
    paths = {p: image_model.write(tmp_path / f"Digits-{p}.mlmodel", precision=p) for p in ("float32", "float16", "int8")}
    sizes = {p: path.stat().st_size for p, path in paths.items()}
    assert sizes["float16"] < 0.55 * sizes["float32"] and sizes["int8"] < 0.3 * sizes["float32"]
    default = image_model.write(tmp_path / "Digits.mlmodel")
    assert default.stat().st_size == sizes[image_model.default_precision]
    interpreters = {p: load(path) for p, path in paths.items()}
    for photo in _photos(2):
        image = vision_scale(Image.open(photo).convert("RGB"), 299)
        full = interpreters["float32"].predict({"image": image})
        for p in ("float16", "int8"):
            out = interpreters[p].predict({"image": image})
            assert out["classLabel"] == full["classLabel"]
            assert out["classLabelProbs"] == pytest.approx(full["classLabelProbs"], abs=0.05 if p == "int8" else 5e-3)
    for p, path in paths.items():
        spec = ct.utils.load_spec(str(path))
        assert spec.specificationVersion == 4  # Core ML 3's ND layers: iOS 13 / macOS 10.15
        weights = next(layer.convolution.weights for layer in spec.neuralNetworkClassifier.layers
                       if layer.WhichOneof("layer") == "convolution")
        stored = {"float32": bool(len(weights.floatValue)), "float16": bool(len(weights.float16Value)),
                  "int8": weights.quantization.numberOfBits == 8}
        assert stored[p]


def test_precision_and_suffix_errors(pose_model, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        pose_model.write(tmp_path / "Poses.mlmodel", precision="int4")
    with pytest.raises(ValueError, match="float32 weights"):
        pose_model.write(tmp_path / "Poses.onnx", precision="int8")
    with pytest.raises(ValueError, match=r"\.onnx"):
        pose_model.write(tmp_path / "Poses.tflite")
    assert not list(tmp_path.iterdir())

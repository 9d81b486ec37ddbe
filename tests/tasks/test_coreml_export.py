"""Each trained task writes a Core ML model that computes what the torch model computes.

Core ML's runtime only exists on macOS, so on Linux the written file is run by
`createml_widgets.export.spec_eval`, a numpy interpreter of the spec that shares no code with torch;
on a Mac the same comparison runs through `MLModel.predict`.
"""
from __future__ import annotations

import sys

import coremltools as ct
import numpy as np
import pytest

from createml_widgets import (
    MLHandActionClassifier,
    MLHandPoseClassifier,
    MLImageClassifier,
    MLModelMetadata,
    ValidationData,
)
from createml_widgets.export import evaluate
from createml_widgets.features.image_embedding import vision_scale
from createml_widgets.features.image_io import load_image

on_macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions run only on macOS")
META = MLModelMetadata(author="Test Author", short_description="digits", license="Apache-2.0", version="2.1",
                       additional={"dataset": "sign-language-digits"})


@pytest.fixture(scope="module")
def image_model(tmp_path_factory, digits_dir):
    return MLImageClassifier(MLImageClassifier.DataSource.labeled_directories(digits_dir),
                             MLImageClassifier.ModelParameters(max_iterations=10))


@pytest.fixture(scope="module")
def pose_model(digits_dir):
    return MLHandPoseClassifier(MLHandPoseClassifier.DataSource.labeled_directories(digits_dir),
                                MLHandPoseClassifier.ModelParameters(maximum_iterations=15))


@pytest.fixture(scope="module")
def action_model(action_clips):
    params = MLHandActionClassifier.ModelParameters(prediction_window_size=30, maximum_iterations=5,
                                                    validation=ValidationData.none())
    return MLHandActionClassifier(MLHandActionClassifier.DataSource.labeled_directories(action_clips[0]), params)


def _check_metadata(spec):
    md = spec.description.metadata
    assert (md.author, md.shortDescription, md.license, md.versionString) == (
        "Test Author", "digits", "Apache-2.0", "2.1")
    assert md.userDefined["dataset"] == "sign-language-digits"
    assert "com.github.createml_widgets.version" in md.userDefined


def _io(spec):
    return ({i.name: i.type.WhichOneof("Type") for i in spec.description.input},
            {o.name: o.type.WhichOneof("Type") for o in spec.description.output})


@pytest.mark.parametrize("suffix", [".mlmodel", ".mlpackage"])
def test_image_classifier_export(image_model, digits_dir, tmp_path, suffix):
    path = image_model.write(tmp_path / f"Digits{suffix}", META, precision="float32")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert _io(spec) == ({"image": "imageType"}, {"classLabel": "stringType", "classLabelProbs": "dictionaryType"})
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabelProbs"
    assert (spec.WhichOneof("Type") == "mlProgram") == (suffix == ".mlpackage")
    _check_metadata(spec)
    size = spec.description.input[0].type.imageType.width
    assert size == 299  # Create ML's declared size; the model resamples to the network's 224 itself
    for label in ("2", "7"):
        photo = sorted((digits_dir / label).iterdir())[3]
        pixels = vision_scale(load_image(photo), size)  # what Vision hands the model
        out = evaluate(str(path), {"image": pixels})
        expected = image_model.prediction_probabilities(photo)
        assert out["classLabel"] == image_model.prediction(photo)
        assert out["classLabelProbs"] == pytest.approx(expected, abs=1e-4)


def test_pose_classifier_export(pose_model, digits_dir, tmp_path):
    path = pose_model.write(tmp_path / "Poses.mlmodel", META, precision="float32")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert _io(spec) == ({"poses": "multiArrayType"}, {"label": "stringType", "labelProbabilities": "dictionaryType"})
    array = spec.description.input[0].type.multiArrayType
    assert list(array.shape) == [1, 3, 21] and array.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert "wrist, thumbCMC" in spec.description.input[0].shortDescription
    _check_metadata(spec)
    package = pose_model.write(tmp_path / "Poses.mlpackage")
    for photo in (sorted((digits_dir / "9").iterdir())[0], sorted((digits_dir / "3").iterdir())[2]):
        keypoints = pose_model.keypoints(photo).keypoints  # what Vision's keypointsMultiArray() holds
        expected = dict(pose_model.prediction(photo))
        for model_path in (path, package):
            out = evaluate(str(model_path), {"poses": keypoints})
            assert out["labelProbabilities"] == pytest.approx(expected, abs=1e-4)
            assert out["label"] == pose_model.prediction(photo)[0][0]


def test_action_classifier_export(action_model, action_clips, tmp_path):
    path = action_model.write(tmp_path / "Actions.mlmodel", precision="float32")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert list(spec.description.input[0].type.multiArrayType.shape) == [30, 3, 21]
    assert _io(spec)[1] == {"label": "stringType", "labelProbabilities": "dictionaryType"}
    clip = sorted((action_clips[1] / "count_up").iterdir())[0]
    keypoints = action_model.keypoints(clip)
    window = keypoints[:30]
    expected = action_model.prediction(window)[0]
    out = evaluate(str(path), {"poses": window})
    assert out["label"] == expected.label
    assert out["labelProbabilities"] == pytest.approx(dict(expected.results), abs=1e-4)
    empty_start = np.concatenate([np.zeros((10, 3, 21), np.float32), keypoints[:20]])
    out = evaluate(str(path), {"poses": empty_start})
    assert out["labelProbabilities"] == pytest.approx(dict(action_model.prediction(empty_start)[0].results), abs=1e-4)


def test_model_property_and_bad_paths(pose_model, tmp_path):
    assert isinstance(pose_model.model, ct.models.MLModel)
    assert pose_model.model is pose_model.model  # converted once
    with pytest.raises(ValueError, match=r"\.mlmodel.*\.mlpackage.*\.onnx"):
        pose_model.write(tmp_path / "model.tflite")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file"):
        pose_model.write(tmp_path / "file" / "Poses.mlmodel")


@on_macos
def test_core_ml_runtime_agrees_on_macos(pose_model, digits_dir, tmp_path):  # pragma: no cover - macOS only
    path = pose_model.write(tmp_path / "Poses.mlmodel")
    photo = sorted((digits_dir / "9").iterdir())[0]
    out = ct.models.MLModel(str(path)).predict({"poses": pose_model.keypoints(photo).keypoints})
    assert out["labelProbabilities"] == pytest.approx(dict(pose_model.prediction(photo)), abs=1e-3)

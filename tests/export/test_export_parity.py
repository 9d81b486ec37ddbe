"""The written files' interface, field by field, against a file Create ML wrote and Create ML's quoted fields.

Reference: `../shared/reference/FlowerClassifier.mlmodel` (an image classifier written by Create ML)
and the hand pose model fields quoted in issue 13 (Create ML's own wording).
"""
from __future__ import annotations

import getpass
import os
import pwd
from pathlib import Path

import coremltools as ct
import numpy as np
import pytest
import torch
from export_helpers import ACTION_LABELS, ACTION_WINDOW, DIGITS, FORMATS, LABELS, METADATA, SUFFIX
from PIL import Image
from torch import nn

from createml_widgets import MLModelMetadata
from createml_widgets.export import (
    apply_metadata,
    image_classifier_model,
    keypoint_classifier_model,
    load,
    minimum_specification_version,
    write_model,
)
from createml_widgets.features.image_embedding import model_input_size, preprocess, resize_square, vision_scale

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "FlowerClassifier.mlmodel"
if not REFERENCE.exists():  # the development checkout keeps the guide beside the repository
    REFERENCE = Path("/work/shared/reference/FlowerClassifier.mlmodel")
JOINTS = ("wrist, thumbCMC, thumbMP, thumbIP, thumbTip, indexMCP, indexPIP, indexDIP, indexTip, middleMCP, "
          "middlePIP, middleDIP, middleTip, ringMCP, ringPIP, ringDIP, ringTip, littleMCP, littlePIP, littleDIP, "
          "littleTip")
# Create ML's hand pose model, quoted in issue 13
CREATE_ML_POSE_INPUT = ("A hand pose to classify. Its multiarray encoding uses the first dimension to index time "
                        "over 1 frame. The second dimension indexes x, y, and confidence of hand pose keypoint "
                        f"locations. The last dimension indexes the keypoint type, ordered as {JOINTS}.")
CREATE_ML_PROBS = "A dictionary of labels and the corresponding confidences."
CREATE_ML_POSE_LABEL = "Most likely hand pose category."
CREATE_ML_POSE_KEYS = {"Prediction Window Size": "1", "Target Frame Rate": "30.0",
                       "com.apple.coreml.model.preview.type": "handPoseClassifier"}


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.exists():
        pytest.skip(f"the Create ML reference file is not in this checkout ({REFERENCE})")
    return ct.utils.load_spec(str(REFERENCE))


@pytest.fixture(scope="module")
def flexible(backbone, linear_head, tmp_path_factory) -> dict:
    """{fmt: written path} of image models declared as Create ML declares them (299 and up)."""
    folder = tmp_path_factory.mktemp("flexible")
    return {fmt: write_model(image_classifier_model(backbone, linear_head, LABELS, fmt=fmt, metadata=METADATA,
                                                    input_size=299), folder / f"Digits{SUFFIX[fmt]}")
            for fmt in FORMATS}


def _spec(path):
    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


def _range(image_type):
    r = image_type.imageSizeRange
    return (r.widthRange.lowerBound, r.widthRange.upperBound, r.heightRange.lowerBound, r.heightRange.upperBound)


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_interface_matches_the_create_ml_file(reference, flexible, fmt):
    ours, theirs = _spec(flexible[fmt]).description, reference.description
    assert [i.name for i in ours.input] == [i.name for i in theirs.input] == ["image"]
    (mine,), (ref,) = ours.input, theirs.input
    assert mine.type.WhichOneof("Type") == ref.type.WhichOneof("Type") == "imageType"
    assert (mine.type.imageType.width, mine.type.imageType.height) == \
        (ref.type.imageType.width, ref.type.imageType.height) == (299, 299)
    assert mine.type.imageType.WhichOneof("SizeFlexibility") == ref.type.imageType.WhichOneof("SizeFlexibility") \
        == "imageSizeRange"
    assert _range(mine.type.imageType) == _range(ref.type.imageType) == (299, -1, 299, -1)
    assert mine.shortDescription == ref.shortDescription == "Input image to be classified"
    assert sorted(o.name for o in ours.output) == sorted(o.name for o in theirs.output)
    for name in ("classLabel", "classLabelProbs"):
        a = next(o for o in ours.output if o.name == name)
        b = next(o for o in theirs.output if o.name == name)
        assert a.type.WhichOneof("Type") == b.type.WhichOneof("Type")
        assert a.shortDescription == b.shortDescription
    probs = next(o for o in ours.output if o.name == "classLabelProbs").type.dictionaryType
    assert probs.WhichOneof("KeyType") == "stringKeyType"
    assert (ours.predictedFeatureName, ours.predictedProbabilitiesName) == \
        (theirs.predictedFeatureName, theirs.predictedProbabilitiesName)
    user = dict(ours.metadata.userDefined)
    assert user["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert not [key for key in user if key.startswith("com.apple.createml.")]
    assert not [key for key in theirs.metadata.userDefined if key not in user]  # nothing Create ML has is missing


def test_revision_2_size_and_custom_extractor_sizes():
    assert model_input_size(224) == 299 and model_input_size(240) == 360
    assert model_input_size(32) == 299 and model_input_size(400) == 400

    class Tiny(nn.Module):
        input_size = 240

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(3)
    net, head = Tiny().eval(), nn.Linear(4, 2)
    model = image_classifier_model(net, head, ["a", "b"], input_size=360)
    image = model.get_spec().description.input[0].type.imageType
    assert (image.width, image.height, _range(image)) == (360, 360, (360, -1, 360, -1))
    photo = vision_scale(Image.open(sorted((DIGITS / "4").glob("*.JPG"))[0]).convert("RGB"), 360)
    got = load(model).predict({"image": photo})["classLabelProbs"]
    with torch.no_grad():
        expected = torch.softmax(head(net(torch.from_numpy(preprocess(photo, 240))[None])), 1)[0].numpy()
    np.testing.assert_allclose([got["a"], got["b"]], expected, atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the network"):
        image_classifier_model(net, head, ["a", "b"], input_size=200)


def _photo(label: str, size: tuple[int, int]) -> Image.Image:
    path = sorted((DIGITS / label).glob("*.JPG"))[2]
    return Image.open(path).convert("RGB").resize(size, Image.BICUBIC)


def _torch(backbone, head, chw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(backbone(torch.from_numpy(chw)[None])), 1)[0].numpy()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(299, 299), (640, 480), (1000, 750)])
def test_any_size_from_299_up_runs_through_the_written_file(flexible, backbone, linear_head, fmt, size):
    """299 x 299 computes exactly what training saw (`preprocess`); bigger inputs compute the model's
    own centre-crop resampling, which stays close to what Vision's scaling to 299 gives."""
    image = _photo("7", size)
    result = load(flexible[fmt]).predict({"image": image})
    got = np.array([result["classLabelProbs"][k] for k in LABELS])
    pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(got, _torch(backbone, linear_head, resize_square(pixels, 224)), atol=1e-5)
    trained = _torch(backbone, linear_head, preprocess(image, 224))  # what prediction() computes
    if size == (299, 299):
        np.testing.assert_allclose(got, trained, atol=1e-5)
    else:
        np.testing.assert_allclose(got, trained, atol=0.02)
    assert result["classLabel"] == LABELS[int(np.argmax(got))]


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_below_the_declared_size_are_refused(flexible, fmt):
    with pytest.raises(ValueError, match="299 or more"):
        load(flexible[fmt]).predict({"image": _photo("1", (298, 400))})


def test_neural_network_resizes_with_core_ml_crop_resize(flexible):
    spec = _spec(flexible["neuralnetwork"])
    kinds = [layer.WhichOneof("layer") for layer in spec.neuralNetworkClassifier.layers]
    assert "cropResize" in kinds and "getShape" in kinds
    crop = next(layer.cropResize for layer in spec.neuralNetworkClassifier.layers
                if layer.WhichOneof("layer") == "cropResize")
    assert list(crop.targetSize) == [224, 224] and not crop.normalizedCoordinates
    assert spec.specificationVersion == minimum_specification_version(spec) == 4


def test_specification_version_is_the_lowest_the_layers_allow():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    builder = NeuralNetworkBuilder([("x", datatypes.Array(3, 8, 8))], [("y", None)])
    builder.add_activation("relu", "RELU", "x", "y")
    assert minimum_specification_version(builder.spec) == 1
    builder.add_resize_bilinear("resize", "y", "z", 4, 4)
    assert minimum_specification_version(builder.spec) == 3
    builder.add_clip("clip", "z", "w", 0.0, 6.0)
    assert minimum_specification_version(builder.spec) == 4


# -- hand pose / hand action ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def keypoint_files(pose_models, action_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("keypoint-parity")
    return {(task, fmt): write_model(models[fmt], folder / f"{task}{SUFFIX[fmt]}")
            for task, models in (("pose", pose_models), ("action", action_models)) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_hand_pose_fields_are_create_ml_s(keypoint_files, fmt):
    spec = _spec(keypoint_files["pose", fmt])
    (poses,) = spec.description.input
    assert poses.name == "poses" and poses.type.WhichOneof("Type") == "multiArrayType"
    assert list(poses.type.multiArrayType.shape) == [1, 3, 21]
    assert poses.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert poses.shortDescription == CREATE_ML_POSE_INPUT
    outputs = {o.name: o for o in spec.description.output}
    assert set(outputs) == {"label", "labelProbabilities"}
    assert outputs["label"].shortDescription == CREATE_ML_POSE_LABEL
    assert outputs["labelProbabilities"].shortDescription == CREATE_ML_PROBS
    assert outputs["labelProbabilities"].type.dictionaryType.WhichOneof("KeyType") == "stringKeyType"
    user = dict(spec.description.metadata.userDefined)
    for key, value in CREATE_ML_POSE_KEYS.items():
        assert user[key] == value
    assert user["task"] == "MLHandPoseClassifier"  # our own keys stay
    assert not [key for key in user if key.startswith("com.apple.createml.")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_hand_action_fields(keypoint_files, fmt):
    spec = _spec(keypoint_files["action", fmt])
    (poses,) = spec.description.input
    assert list(poses.type.multiArrayType.shape) == [ACTION_WINDOW, 3, 21]
    assert poses.shortDescription == (
        "A sequence of hand poses to classify. Its multiarray encoding uses the first dimension to index time "
        f"over {ACTION_WINDOW} frames. The second dimension indexes x, y, and confidence of hand pose keypoint "
        f"locations. The last dimension indexes the keypoint type, ordered as {JOINTS}.")
    outputs = {o.name: o.shortDescription for o in spec.description.output}
    assert outputs == {"label": "Most likely hand action category.", "labelProbabilities": CREATE_ML_PROBS}
    user = dict(spec.description.metadata.userDefined)
    assert (user["Prediction Window Size"], user["Target Frame Rate"],
            user["com.apple.coreml.model.preview.type"]) == (str(ACTION_WINDOW), "30.0", "handActionClassifier")


def test_the_frame_rate_written_is_the_model_s(action_net):
    spec = keypoint_classifier_model(action_net, ACTION_LABELS, ACTION_WINDOW, frame_rate=15).get_spec()
    assert spec.description.metadata.userDefined["Target Frame Rate"] == "15.0"


# -- metadata ------------------------------------------------------------------------------------


def test_default_metadata_names_the_user_and_not_create_ml():
    default = MLModelMetadata()
    gecos = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0].strip()
    assert default.author == (gecos or getpass.getuser())
    assert "create ml" not in default.short_description.lower()
    assert "createml" not in default.short_description.lower().replace("createml-widgets", "")


def test_create_ml_version_keys_are_refused(pose_models):
    spec = pose_models["neuralnetwork"].get_spec()
    with pytest.raises(ValueError, match="com.apple.createml"):
        apply_metadata(spec, {"additional": {"com.apple.createml.version": "13.1"}})
    apply_metadata(spec, {"additional": {"Custom Key": "x"}}, creator_keys={"Target Frame Rate": "30.0"})
    assert spec.description.metadata.userDefined["Custom Key"] == "x"

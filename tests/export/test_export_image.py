"""MLImageClassifier export: interface of the written files and numeric agreement with torch."""
from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
import torch
from export_helpers import FORMATS, LABELS, METADATA, SUFFIX, TRAINING_INFO, photo, to_tensor
from torch import nn

from createml_widgets.export import (
    VERSION_METADATA_KEY,
    evaluate,
    image_classifier_model,
    load,
    write_model,
)
from createml_widgets.nets import MLPHead


def torch_probs(backbone, head, image) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(backbone(to_tensor(image))), dim=1)[0].numpy().astype(np.float64)


def class_labels(spec) -> list[str]:
    if spec.WhichOneof("Type") == "neuralNetworkClassifier":
        return list(spec.neuralNetworkClassifier.stringClassLabels.vector)
    main = spec.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    (classify,) = [op for op in ops if op.type == "classify"]
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [v.immediateValue.tensor.strings.values[0] for v in values]


@pytest.fixture(scope="module")
def written(image_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("image-export")
    return {fmt: write_model(model, folder / f"Digits{SUFFIX[fmt]}") for fmt, model in image_models.items()}


@pytest.fixture(scope="module")
def interpreters(written) -> dict:
    """spec_eval interpreters of the written files (weights decoded once per file)."""
    return {fmt: load(path) for fmt, path in written.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_written_file_has_create_ml_interface(written, fmt):
    path = written[fmt]
    assert path.exists() and path.suffix == SUFFIX[fmt]
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == ("neuralNetworkClassifier" if fmt == "neuralnetwork" else "mlProgram")

    (image,) = spec.description.input
    assert image.name == "image"
    assert image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (224, 224)
    assert image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert image.shortDescription

    outputs = {o.name: o for o in spec.description.output}
    assert set(outputs) == {"classLabel", "classLabelProbs"}
    assert outputs["classLabel"].type.WhichOneof("Type") == "stringType"
    probs = outputs["classLabelProbs"].type
    assert probs.WhichOneof("Type") == "dictionaryType"
    assert probs.dictionaryType.WhichOneof("KeyType") == "stringKeyType"
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabelProbs"
    assert outputs["classLabel"].shortDescription == "Most likely image category"
    assert outputs["classLabelProbs"].shortDescription == "Probability of each category"
    assert class_labels(spec) == LABELS


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_is_written(written, fmt):
    model = ct.models.MLModel(str(written[fmt]), skip_model_load=True)
    assert model.author == METADATA["author"]
    assert model.short_description == METADATA["short_description"]
    assert model.license == METADATA["license"]
    assert model.version == METADATA["version"]
    user = model.user_defined_metadata
    assert user["dataset"] == "sign-language-digits"
    for key, value in TRAINING_INFO.items():
        assert user[key] == value
    assert user[VERSION_METADATA_KEY]


def test_neural_network_preprocessing_moves_normalisation_into_core_ml(image_models):
    spec = image_models["neuralnetwork"].get_spec()
    (pre,) = spec.neuralNetworkClassifier.preprocessing
    assert pre.featureName == "image"
    assert pre.scaler.channelScale == pytest.approx(1 / 128)
    for bias in (pre.scaler.redBias, pre.scaler.greenBias, pre.scaler.blueBias):
        assert bias == pytest.approx(-127 / 128)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("label", ["3", "7"])
def test_spec_eval_matches_torch_on_a_real_photo(interpreters, backbone, linear_head, fmt, label):
    image = photo(label)
    expected = torch_probs(backbone, linear_head, image)
    result = interpreters[fmt].predict({"image": image})
    assert set(result) == {"classLabel", "classLabelProbs"}
    assert list(result["classLabelProbs"]) == LABELS
    got = np.array([result["classLabelProbs"][k] for k in LABELS])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    assert result["classLabel"] == LABELS[int(np.argmax(expected))]


def test_spec_eval_of_the_in_memory_model_and_a_numpy_image(image_models, backbone, linear_head):
    image = photo("5", 1)
    expected = torch_probs(backbone, linear_head, image)
    interpreter = load(image_models["mlprogram"])
    result = interpreter.predict({"image": np.asarray(image)})
    got = np.array([result["classLabelProbs"][k] for k in LABELS])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_the_evaluator_can_tell_models_apart(interpreters, backbone):
    """A different head gives different probabilities: the agreement above is not vacuous."""
    image = photo("3")
    torch.manual_seed(4321)
    other = nn.Linear(1280, len(LABELS))
    result = interpreters["neuralnetwork"].predict({"image": image})
    got = np.array([result["classLabelProbs"][k] for k in LABELS])
    assert np.abs(got - torch_probs(backbone, other, image)).max() > 1e-3


class TinyExtractor(nn.Module):
    """A custom feature extractor without `normalize`: RGB in [0, 1] -> (N, 8)."""

    input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.mark.parametrize("fmt", FORMATS)
def test_custom_extractor_takes_pixels_scaled_to_unit_range(fmt, tmp_path):
    torch.manual_seed(5)
    extractor = TinyExtractor().eval()
    head = nn.Linear(8, 3)
    labels = ["a", "b", "c"]
    model = image_classifier_model(extractor, head, labels, fmt=fmt)
    spec = model.get_spec()
    assert (spec.description.input[0].type.imageType.width, spec.description.input[0].type.imageType.height) \
        == (32, 32)
    if fmt == "neuralnetwork":
        scaler = spec.neuralNetworkClassifier.preprocessing[0].scaler
        assert scaler.channelScale == pytest.approx(1 / 255)
        assert scaler.redBias == 0
    path = write_model(model, tmp_path / f"tiny{SUFFIX[fmt]}")
    image = photo("2", size=32)
    result = evaluate(path, {"image": image})
    got = np.array([result["classLabelProbs"][k] for k in labels])
    np.testing.assert_allclose(got, torch_probs(extractor, head, image), atol=1e-5, rtol=0)


class TinyNormalizingExtractor(TinyExtractor):
    """Like EfficientNetLiteFeatures: normalises (255 x - 127) / 128 itself when `normalize` is on."""

    def __init__(self):
        super().__init__()
        self.normalize = True

    def forward(self, x):
        if self.normalize:
            x = (x * 255.0 - 127.0) / 128.0
        return super().forward(x)


def test_normalisation_moves_into_preprocessing_and_modules_stay_untouched(tmp_path):
    """Exporting works on copies: the caller's `normalize` and training flags stay as they were."""
    torch.manual_seed(6)
    extractor = TinyNormalizingExtractor().train()
    head = nn.Linear(8, 2).train()
    model = image_classifier_model(extractor, head, ["x", "y"], fmt="neuralnetwork")
    assert extractor.normalize is True and extractor.training and head.training
    scaler = model.get_spec().neuralNetworkClassifier.preprocessing[0].scaler
    assert scaler.channelScale == pytest.approx(1 / 128)
    assert scaler.blueBias == pytest.approx(-127 / 128)
    image = photo("4", size=32)
    result = evaluate(model, {"image": image})
    got = np.array([result["classLabelProbs"][k] for k in ("x", "y")])
    extractor.eval()
    head.eval()
    np.testing.assert_allclose(got, torch_probs(extractor, head, image), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mlp_head_exports_and_matches(fmt, tmp_path):
    """The multilayer-perceptron head (hidden ReLU layers; dropout off in the export)."""
    torch.manual_seed(8)
    extractor = TinyExtractor().eval()
    head = MLPHead(8, 4, [16, 8]).eval()
    labels = ["w", "x", "y", "z"]
    path = write_model(image_classifier_model(extractor, head, labels, fmt=fmt), tmp_path / f"mlp{SUFFIX[fmt]}")
    for label in ("0", "9"):
        image = photo(label, size=32)
        result = evaluate(path, {"image": image})
        got = np.array([result["classLabelProbs"][k] for k in labels])
        np.testing.assert_allclose(got, torch_probs(extractor, head, image), atol=1e-5, rtol=0)


def test_label_count_must_match_the_head(backbone, linear_head):
    with pytest.raises(ValueError, match="3 class labels"):
        image_classifier_model(TinyExtractor(), nn.Linear(8, 10), ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        image_classifier_model(backbone, linear_head, ["a"] * 10)
    with pytest.raises(ValueError, match="format"):
        image_classifier_model(backbone, linear_head, LABELS, fmt="onnx")

"""MLImageClassifier on the real sample photos: accuracy, predictions, metrics, cache, augmentation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from createml_widgets import MLClassifierMetrics, MLImageClassifier, MLSplitStrategy, ValidationData
from createml_widgets.features.image_augment import augment

IC = MLImageClassifier


@pytest.fixture(scope="module")
def model(digits_dir):
    params = IC.ModelParameters(validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)))
    return IC(IC.DataSource.labeled_directories(digits_dir), params)


def test_learns_the_real_photos(model):
    assert model.class_labels == [str(d) for d in range(10)]
    assert model.training_metrics.accuracy >= 0.95
    assert model.validation_metrics.count == 50  # 25% of each label's 20 photos
    # ImageNet features from 15 photos a label: ~0.78 measured (chance is 0.10); hand keypoints do better.
    assert model.validation_metrics.accuracy >= 0.7


def test_prediction_accepts_paths_pil_images_and_arrays(model, digits_dir):
    photo = sorted((digits_dir / "4").iterdir())[0]
    by_path = model.prediction_probabilities(photo)
    assert abs(sum(by_path.values()) - 1) < 1e-5 and set(by_path) == set(model.class_labels)
    pil = Image.open(photo)
    for source in (str(photo), pil, np.asarray(pil.convert("RGB")), np.asarray(pil.convert("RGB")) / 255.0):
        assert model.prediction_probabilities(source) == pytest.approx(by_path, abs=1e-4)
    assert model.prediction(photo) == max(by_path, key=by_path.get)
    photos = sorted((digits_dir / "7").iterdir())[:6]
    assert model.predictions(photos) == [model.prediction(p) for p in photos]


def test_metrics_tables(model):
    m = model.validation_metrics
    assert isinstance(m, MLClassifierMetrics) and m.is_valid and m.error is None
    assert list(m.confusion.columns) == ["True Label", "Predicted", "Count"]
    assert m.confusion["Count"].sum() == m.count
    pr = m.precision_recall
    assert list(pr.columns) == ["Class", "Item Count", "Precision", "Recall", "F1"]
    assert list(pr["Class"]) == model.class_labels and pr["Item Count"].sum() == m.count
    assert m.classification_error == pytest.approx(1 - m.accuracy)
    wrong = m.examples[m.examples["True Label"] != m.examples["Predicted"]]
    for _, row in wrong.iterrows():
        cell = m.examples_in_cell(row["True Label"], row["Predicted"])
        assert row["Item"] in list(cell["Item"])


def test_evaluation_on_other_data(model, digits_dir):
    held_out = {label: sorted((digits_dir / label).iterdir())[-3:] for label in ("1", "8")}
    metrics = model.evaluation(on=IC.DataSource.files_by_label(held_out))
    assert metrics.is_valid and metrics.count == 6
    assert model.evaluation(on=held_out).accuracy == metrics.accuracy
    broken = model.evaluation(on=IC.DataSource.labeled_directories(digits_dir / "missing"))
    assert not broken.is_valid and "does not exist" in str(broken.error)


def test_descriptions(model):
    text = str(model)
    assert "MLImageClassifier" in text and "validation accuracy" in text
    assert repr(model).startswith("<MLImageClassifier labels=")
    html = model._repr_html_()
    assert "Confusion matrix" in html and "<script" not in html and "scenePrint" in html
    assert model.playground_description.data == html
    assert "CONFUSION MATRIX" in str(model.validation_metrics)


def test_second_training_reuses_cached_features(digits_dir):
    data = IC.DataSource.labeled_directories(digits_dir)
    IC(data, IC.ModelParameters(max_iterations=2))
    mlp = IC.ClassifierType.multilayer_perceptron([64])
    params = IC.ModelParameters(max_iterations=5, algorithm=IC.ModelAlgorithmType.transfer_learning(classifier=mlp))
    job = IC.train(data, params)
    job.result(timeout=300)
    assert job.session.summary["extraction"] == {"items": 200, "resumed_from": 0, "from_cache": 200, "extracted": 0}


def test_augmentation_adds_reproducible_examples(small_digits):
    opts = IC.ImageAugmentationOptions.CROP | IC.ImageAugmentationOptions.FLIP
    params = IC.ModelParameters(max_iterations=3, augmentation=opts, validation=ValidationData.none())
    model = IC(IC.DataSource.labeled_directories(small_digits), params)
    assert model._summary["training_examples"] == 24 and model._summary["augmented_examples"] == 48
    assert "[crop, flip]" in str(model)
    image = Image.open(next((small_digits / "0").iterdir())).convert("RGB")
    for variant in ("crop", "rotation", "blur", "exposure", "noise", "flip"):
        a, b = augment(image, variant, "seed"), augment(image, variant, "seed")
        assert np.array_equal(np.asarray(a), np.asarray(b)), variant
        assert not np.array_equal(np.asarray(a.resize(image.size)), np.asarray(image)), variant
    assert not np.array_equal(np.asarray(augment(image, "noise", "a")), np.asarray(augment(image, "noise", "b")))


def test_labeled_files_and_stratified_split(tmp_path, digits_dir):
    for label in ("zero", "one"):
        src = digits_dir / ("0" if label == "zero" else "1")
        for i, photo in enumerate(sorted(src.iterdir())[:10]):
            shutil.copy(photo, tmp_path / f"{label}.{i}.extra.jpg")
    data = IC.DataSource.labeled_files(tmp_path)
    labeled = data.labeled_images()
    assert sorted(labeled) == ["one", "zero"] and len(labeled["zero"]) == 10
    train, test = data.stratified_split([0.8, 0.2], seed=4)
    assert {k: len(v) for k, v in test.items()} == {"one": 2, "zero": 2}
    assert data.stratified_split([0.8, 0.2], seed=4)[1] == test
    model = IC(data, IC.ModelParameters(max_iterations=5))
    assert model.class_labels == ["one", "zero"]
    assert model.evaluation(on=test).accuracy >= 0.75


class TinyBackbone(torch.nn.Module):
    """A small user network returning named outputs, standing in for a user's own feature extractor."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=4)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return {"embedding": f, "other": f * 0}


def test_custom_feature_extractor_from_torchscript(small_digits, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.script(TinyBackbone()).save(str(path))
    custom = IC.FeatureExtractorType.custom(IC.CustomFeatureExtractor(path, output_name="embedding", input_size=64))
    params = IC.ModelParameters(max_iterations=10, validation=ValidationData.none(),
                                algorithm=IC.ModelAlgorithmType.transfer_learning(custom))
    model = IC(IC.DataSource.labeled_directories(small_digits), params)
    assert model.training_metrics.count == 24 and model.training_metrics.is_valid
    probe = next((small_digits / "1").iterdir())
    assert model.prediction(probe) in model.class_labels
    assert "custom" in str(model)


def test_scene_print_revision_2_uses_the_larger_backbone(small_digits):
    params = IC.ModelParameters(max_iterations=5, validation=ValidationData.none(),
                                algorithm=IC.ModelAlgorithmType.transfer_learning(IC.FeatureExtractorType.scene_print(2)))
    assert params.feature_extractor.backbone_name == "efficientnet-lite1" and params.feature_extractor.input_size == 240
    model = IC(IC.DataSource.labeled_directories(small_digits), params)
    assert model.training_metrics.accuracy >= 0.9


@pytest.mark.parametrize("kind", ["data_source", "dictionary"])
def test_given_validation_data_is_what_validation_metrics_count(small_digits, digits_dir, kind):
    # small_digits holds the first 8 photos of 0, 1 and 5: validate on 3 + 2 + 4 others.
    held_out = {label: sorted((digits_dir / label).iterdir())[-n:] for label, n in (("0", 3), ("1", 2), ("5", 4))}
    validation = (ValidationData.data_source(IC.DataSource.files_by_label(held_out)) if kind == "data_source"
                  else ValidationData.dictionary(held_out))
    model = IC(IC.DataSource.labeled_directories(small_digits), IC.ModelParameters(max_iterations=10,
                                                                                   validation=validation))
    vm = model.validation_metrics
    assert vm.is_valid and vm.count == 9
    assert sorted(vm.examples["Item"]) == sorted(str(p) for paths in held_out.values() for p in paths)
    assert dict(zip(vm.precision_recall["Class"], vm.precision_recall["Item Count"])) == {"0": 3, "1": 2, "5": 4}
    assert model.training_metrics.count == 24  # the training folder is not split
    assert model._summary["validation_examples"] == 9


def test_write_without_metadata_uses_the_default_metadata(model, tmp_path):
    import coremltools as ct

    from createml_widgets import MLModelMetadata

    default = MLModelMetadata()
    assert default.author and default.short_description
    path = model.write(tmp_path / "Digits.mlmodel")
    meta = ct.utils.load_spec(str(path)).description.metadata
    assert (meta.author, meta.shortDescription, meta.versionString) == (
        default.author, default.short_description, default.version)
    loaded = ct.models.MLModel(str(path))
    assert loaded.author == default.author and loaded.short_description == default.short_description
    # Metadata given explicitly still wins.
    mine = model.write(tmp_path / "Mine.mlmodel", metadata=MLModelMetadata(author="Someone Else"))
    assert ct.utils.load_spec(str(mine)).description.metadata.author == "Someone Else"

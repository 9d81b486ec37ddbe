"""Bad input gets a clear answer naming the file or parameter, and nothing good is lost."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from createml_widgets import (
    DataSourceError,
    MLImageClassifier,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    ParameterError,
    UnreadableFileError,
    ValidationData,
)
from createml_widgets.features.image_io import load_image

IC = MLImageClassifier
FAST = dict(max_iterations=3, validation=ValidationData.none())


def _train(path, **kw):
    return IC(IC.DataSource.labeled_directories(path), IC.ModelParameters(**{**FAST, **kw}))


def test_empty_folder(tmp_path):
    with pytest.raises(DataSourceError, match=f"no label folders in {tmp_path}"):
        _train(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        _train(tmp_path / "nope")


def test_photos_without_label_folders_get_a_hint(tmp_path, digits_dir):
    shutil.copy(next((digits_dir / "0").iterdir()), tmp_path / "a.jpg")
    with pytest.raises(DataSourceError, match="labeled_files"):
        _train(tmp_path)


def test_one_class_only(tmp_path, digits_dir):
    shutil.copytree(digits_dir / "3", tmp_path / "three")
    with pytest.raises(DataSourceError, match="only one label .'three'."):
        _train(tmp_path)


def test_empty_label_folder(small_digits):
    (small_digits / "empty").mkdir()
    with pytest.raises(DataSourceError, match="label 'empty'.*has no"):
        _train(small_digits)


def test_class_with_no_readable_image_names_its_files(small_digits):
    bad = small_digits / "broken"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg at all")
    (bad / "b.png").write_bytes(b"")
    with pytest.raises(DataSourceError, match=r"label 'broken' has no readable image.*a\.jpg.*b\.png"):
        _train(small_digits)


def test_bad_files_inside_a_good_dataset_are_skipped_and_listed(small_digits, recwarn):
    folder = small_digits / "1"
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (small_digits / ".DS_Store").write_bytes(b"\x00")
    model = _train(small_digits)
    assert model.training_metrics.count == 24  # every good photo trained on
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in model.training_metrics.skipped}
    skipped.update({s["path"].split("/")[-1]: s["reason"] for s in model._summary["skipped_files"]})
    assert "empty" in skipped["zero.jpg"] and "not a readable image" in skipped["corrupt.png"]
    assert "not an image" in skipped["notes.txt"]
    assert ".DS_Store" not in skipped
    text = str(model)
    assert "zero.jpg" in text and "corrupt.png" in text
    assert "corrupt.png" in model._repr_html_()


def _save_modes(folder, source: Image.Image):
    rgb = source.convert("RGB")
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(folder / "sixteen.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    rgb.convert("P").save(folder / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rgb.resize((120, 80)).save(folder / "rotated.jpg", exif=exif)


def test_unusual_image_modes_load_as_rgb(tmp_path, digits_dir):
    _save_modes(tmp_path, Image.open(next((digits_dir / "2").iterdir())))
    for f in tmp_path.iterdir():
        img = load_image(f)
        assert img.mode == "RGB", f
    assert load_image(tmp_path / "rotated.jpg").size == (80, 120)  # EXIF orientation applied
    alpha = np.asarray(load_image(tmp_path / "alpha.png"), dtype=np.float32)
    assert alpha.mean() > np.asarray(load_image(tmp_path / "gray.png"), dtype=np.float32).mean() - 1


def test_unusual_image_modes_train(small_digits, digits_dir):
    _save_modes(small_digits / "5", Image.open(next((digits_dir / "5").iterdir())))
    model = _train(small_digits)
    assert model.training_metrics.count == 30 and not model.training_metrics.skipped


def test_huge_image_is_downscaled_on_load(tmp_path):
    Image.new("RGB", (8000, 6000), (120, 30, 200)).save(tmp_path / "huge.jpg", quality=70)
    img = load_image(tmp_path / "huge.jpg")
    assert max(img.size) <= 2048 and img.mode == "RGB"


def test_unicode_labels(tmp_path, digits_dir):
    for label, src in (("café ☕", "0"), ("猫", "1")):
        shutil.copytree(digits_dir / src, tmp_path / label)
    model = _train(tmp_path, max_iterations=10)
    assert model.class_labels == ["café ☕", "猫"]
    assert model.prediction(next((tmp_path / "猫").iterdir())) == "猫"
    assert "café ☕" in model._repr_html_() or "caf&eacute;" in model._repr_html_()


def test_prediction_of_a_missing_or_broken_file_names_it(small_digits, tmp_path):
    model = _train(small_digits)
    with pytest.raises(UnreadableFileError, match="nope.jpg.*does not exist"):
        model.prediction(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    with pytest.raises(UnreadableFileError, match="bad.jpg"):
        model.prediction(tmp_path / "bad.jpg")


@pytest.mark.parametrize("kwargs, name", [
    ({"max_iterations": 0}, "max_iterations"),
    ({"max_iterations": "10"}, "max_iterations"),
    ({"max_iterations": True}, "max_iterations"),
    ({"augmentation": 3}, "augmentation"),
    ({"validation": "auto"}, "validation"),
    ({"validation": ValidationData.split(MLSplitStrategy.fixed(1.5))}, "ratio"),
    ({"algorithm": IC.ModelAlgorithmType.transfer_learning(classifier=IC.ClassifierType.multilayer_perceptron([]))},
     "layer_sizes"),
    ({"algorithm": IC.ModelAlgorithmType.transfer_learning(classifier=IC.ClassifierType.multilayer_perceptron([64, -1]))},
     "layer_sizes"),
    ({"algorithm": IC.ModelAlgorithmType.transfer_learning(IC.FeatureExtractorType.scene_print(7))}, "revision"),
])
def test_wrong_parameter_values_name_the_parameter(small_digits, kwargs, name):
    params = IC.ModelParameters(**kwargs)  # storing is fine; training validates (scikit-learn style)
    with pytest.raises(ParameterError, match=name) as info:
        IC(IC.DataSource.labeled_directories(small_digits), params)
    assert "not allowed" in str(info.value)


def test_wrong_session_parameters(small_digits, tmp_path):
    with pytest.raises(ParameterError, match="checkpoint_interval"):
        IC.train(IC.DataSource.labeled_directories(small_digits), IC.ModelParameters(**FAST),
                 MLTrainingSessionParameters(checkpoint_interval=-1))


def test_wrong_types_are_rejected(small_digits):
    with pytest.raises(TypeError, match="DataSource"):
        IC(str(small_digits))
    with pytest.raises(TypeError, match="ModelParameters"):
        IC(IC.DataSource.labeled_directories(small_digits), {"max_iterations": 3})


def test_custom_extractor_missing_file(small_digits, tmp_path):
    custom = IC.FeatureExtractorType.custom(IC.CustomFeatureExtractor(tmp_path / "missing.pt"))
    params = IC.ModelParameters(**FAST, algorithm=IC.ModelAlgorithmType.transfer_learning(custom))
    with pytest.raises(ParameterError, match="missing.pt"):
        IC(IC.DataSource.labeled_directories(small_digits), params)


def test_validation_label_unknown_to_training(small_digits, digits_dir):
    val = {"9": sorted((digits_dir / "9").iterdir())[:2]}
    params = IC.ModelParameters(max_iterations=2, validation=ValidationData.dictionary(val))
    with pytest.raises(DataSourceError, match=r"validation labels \['9'\]"):
        IC(IC.DataSource.labeled_directories(small_digits), params)

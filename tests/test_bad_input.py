"""Bad input gets a clear answer naming the file or parameter, and nothing good is lost."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
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


def test_bad_files_inside_a_good_dataset_are_skipped_and_listed(small_digits):
    folder = small_digits / "1"
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (small_digits / ".DS_Store").write_bytes(b"\x00")
    with pytest.warns(UserWarning, match="3 files were skipped") as record:
        model = _train(small_digits)
    message = " ".join(str(w.message) for w in record if "skipped" in str(w.message))
    for name in ("zero.jpg", "corrupt.png", "notes.txt"):
        assert name in message
    assert ".DS_Store" not in message and "training_metrics.skipped" in message
    assert model.training_metrics.count == 24  # every good photo trained on
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in model.training_metrics.skipped}
    skipped.update({s["path"].split("/")[-1]: s["reason"] for s in model._summary["skipped_files"]})
    assert "empty" in skipped["zero.jpg"] and "not a readable image" in skipped["corrupt.png"]
    assert "not an image" in skipped["notes.txt"]
    assert ".DS_Store" not in skipped
    text = str(model)
    assert "zero.jpg" in text and "corrupt.png" in text
    assert "corrupt.png" in model._repr_html_()


def test_skipped_files_warning_shows_the_first_few_and_counts_the_rest(small_digits):
    for i in range(5):
        (small_digits / "0" / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match=r"5 files were skipped.*broken0\.jpg.*and 2 more") as record:
        _train(small_digits)
    message = next(str(w.message) for w in record if "skipped" in str(w.message))
    assert "broken4.jpg" not in message and "not a readable image" in message


def test_a_clean_dataset_trains_without_a_skipped_files_warning(small_digits):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _train(small_digits)
    assert not [w for w in record if "skipped" in str(w.message)]


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


def _photo_rgb(digits_dir) -> np.ndarray:
    return np.asarray(Image.open(sorted((digits_dir / "3").iterdir())[0]).convert("RGB").resize((64, 48)))


def _close(loaded: Image.Image, expected: np.ndarray) -> None:
    got = np.asarray(loaded, dtype=np.int16)
    assert loaded.mode == "RGB" and got.shape == expected.shape
    assert np.abs(got - np.asarray(expected, dtype=np.int16)).max() <= 2


def test_16_bit_grayscale_keeps_its_brightness(tmp_path, digits_dir):
    gray = np.asarray(Image.fromarray(_photo_rgb(digits_dir)).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "bright16.png")
    _close(load_image(tmp_path / "bright16.png"), np.repeat(gray[:, :, None], 3, axis=2))
    # A dark 16-bit picture (samples 0..255 out of 65535) is nearly black, not the 8-bit photo.
    Image.fromarray(gray.astype(np.uint16)).save(tmp_path / "dark16.png")
    assert Image.open(tmp_path / "dark16.png").mode.startswith("I;16")
    _close(load_image(tmp_path / "dark16.png"), np.zeros(gray.shape + (3,)))


def test_16_bit_color_and_alpha_load_with_the_right_pixel_values(tmp_path, digits_dir):
    cv2 = pytest.importorskip("cv2")
    rgb = _photo_rgb(digits_dir)
    h, w, _ = rgb.shape
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))  # transparent -> opaque
    a = alpha[:, :, None].astype(np.float64) / 255.0
    on_white = rgb * a + 255.0 * (1 - a)
    bgr16 = rgb[:, :, ::-1].astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "rgb48.png"), bgr16)
    cv2.imwrite(str(tmp_path / "rgba64.png"), np.dstack([bgr16, alpha.astype(np.uint16) * 257]))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "la.png")
    _close(load_image(tmp_path / "rgb48.png"), rgb)
    _close(load_image(tmp_path / "rgba64.png"), on_white)
    _close(load_image(tmp_path / "rgba.png"), on_white)
    g = gray[:, :, None] * a + 255.0 * (1 - a)
    _close(load_image(tmp_path / "la.png"), np.repeat(g, 3, axis=2))


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


class NamedOutputs(torch.nn.Module):
    """A small network with named outputs, as a user's own feature extractor might have."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return {"embedding": f, "logits": f[:, :2]}


class TupleOutputs(NamedOutputs):
    def forward(self, x):
        out = super().forward(x)
        return out["embedding"], out["logits"]


def _custom_params(model_path, output_name):
    custom = IC.FeatureExtractorType.custom(IC.CustomFeatureExtractor(model_path, output_name=output_name,
                                                                      input_size=64))
    return IC.ModelParameters(**FAST, algorithm=IC.ModelAlgorithmType.transfer_learning(custom))


@pytest.mark.parametrize("kind", ["torchscript", "module"])
def test_custom_extractor_wrong_output_name_names_the_outputs(small_digits, tmp_path, kind):
    torch.manual_seed(0)
    net = NamedOutputs()
    if kind == "torchscript":
        torch.jit.script(net).save(str(tmp_path / "named.pt"))
        net = tmp_path / "named.pt"
    with pytest.raises(ParameterError, match=r"output_name='nope'.*\['embedding', 'logits'\]"):
        IC(IC.DataSource.labeled_directories(small_digits), _custom_params(net, "nope"))


def test_custom_extractor_tuple_output_index_out_of_range(small_digits):
    with pytest.raises(ParameterError, match=r"output_name='5'.*2 outputs \(0 to 1"):
        IC(IC.DataSource.labeled_directories(small_digits), _custom_params(TupleOutputs(), "5"))


def test_custom_extractor_as_a_plain_module(small_digits):
    torch.manual_seed(0)
    net = NamedOutputs()
    model = IC(IC.DataSource.labeled_directories(small_digits), _custom_params(net, "embedding"))
    assert model.training_metrics.count == 24 and model.training_metrics.is_valid
    probe = sorted((small_digits / "5").iterdir())[0]
    assert model.prediction(probe) in model.class_labels
    # The features are the module's "embedding" output (8 values), not the 2 "logits".
    assert model._net.fc.in_features == 8
    by_index = IC(IC.DataSource.labeled_directories(small_digits), _custom_params(TupleOutputs(), "1"))
    assert by_index._net.fc.in_features == 2


def test_validation_label_unknown_to_training(small_digits, digits_dir):
    val = {"9": sorted((digits_dir / "9").iterdir())[:2]}
    params = IC.ModelParameters(max_iterations=2, validation=ValidationData.dictionary(val))
    with pytest.raises(DataSourceError, match=r"validation labels \['9'\]"):
        IC(IC.DataSource.labeled_directories(small_digits), params)

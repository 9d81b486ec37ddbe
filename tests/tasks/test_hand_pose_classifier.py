"""MLHandPoseClassifier on real hand photos with the real MediaPipe model."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from createml_widgets import (
    MLHandPoseClassifier,
    MLSplitStrategy,
    MLTrainingSessionParameters,
    NoHandDetectedError,
    ValidationData,
)
from createml_widgets.features.keypoint_augment import augment_keypoints
from createml_widgets.metrics import NO_PREDICTION
from createml_widgets.nets.gcn import normalize_keypoints

HP = MLHandPoseClassifier


@pytest.fixture(scope="module")
def model(digits_dir):
    opts = HP.ImageAugmentationOptions.ROTATE | HP.ImageAugmentationOptions.SCALE
    params = HP.ModelParameters(validation=ValidationData.split(MLSplitStrategy.fixed(0.25, seed=0)),
                                augmentation_options=opts)
    return HP(HP.DataSource.labeled_directories(digits_dir), params)


def test_classifies_held_out_photos_well(model):
    vm = model.validation_metrics
    assert vm.count == 50  # photos with no detected hand are in the count, as errors
    assert vm.accuracy >= 0.85
    assert model.training_metrics.accuracy >= 0.95
    assert model.model_parameters.batch_size == 32 and model.model_parameters.maximum_iterations == 80


def test_photos_without_a_hand_are_reported_not_dropped(model):
    tm = model.training_metrics
    reported = [s for s in tm.skipped if "NoHandDetectedError" in s["reason"]]
    assert tm.count + len(reported) == 150  # every training photo is either used or reported
    for s in reported:
        assert s["path"] in str(model)
    vm = model.validation_metrics
    assert (vm.examples["Predicted"] == NO_PREDICTION).sum() == sum("NoHand" in s["reason"] for s in vm.skipped)


def test_prediction_ranks_every_label(model, digits_dir):
    result = model.prediction(sorted((digits_dir / "5").iterdir())[1])
    assert [label for label, _ in result][0] == "5"
    assert sorted(label for label, _ in result) == model.class_labels
    confidences = [c for _, c in result]
    assert confidences == sorted(confidences, reverse=True) and abs(sum(confidences) - 1) < 1e-5
    assert len(model.predictions([sorted((digits_dir / "0").iterdir())[0]] * 2)) == 2


def test_confidences_do_not_change_the_answer(model, digits_dir):
    """Vision reports a confidence per joint, MediaPipe one per hand (the same value 21 times): the
    answer must depend only on where the joints are, as it will in an app fed by Vision."""
    keypoints = model.keypoints(sorted((digits_dir / "3").iterdir())[0]).keypoints
    jittered = keypoints.copy()
    jittered[0, 2] = np.random.default_rng(0).uniform(0.3, 1.0, 21)
    a, b = model.prediction_from_keypoints(keypoints), model.prediction_from_keypoints(jittered)
    assert [label for label, _ in a] == [label for label, _ in b]
    assert [c for _, c in a] == pytest.approx([c for _, c in b], abs=1e-5)


def test_prediction_without_a_hand_raises_a_clear_error(model, tmp_path):
    Image.new("RGB", (200, 200), (90, 140, 200)).save(tmp_path / "sky.png")
    with pytest.raises(NoHandDetectedError, match="sky.png"):
        model.prediction(tmp_path / "sky.png")


def test_description_draws_hand_skeletons(model):
    html = model._repr_html_()
    assert "Hand keypoints" in html and html.count("data:image/jpeg;base64") >= 5
    assert "NoHandDetectedError" in html or not model.training_metrics.skipped


def test_keypoint_table_round_trip(small_digits, tmp_path):
    Image.new("RGB", (120, 120), (200, 200, 200)).save(small_digits / "1" / "blank.png")
    source = HP.DataSource.labeled_directories(small_digits)
    with pytest.warns(UserWarning, match="no hand"):
        df = source.extract_keypoints()
    assert {"session_id", "label", "keypoints"} <= set(df.columns)
    assert any("blank.png" in m["path"] for m in df.attrs["no_hand"])
    assert all(np.asarray(k).shape == (1, 3, 21) for k in df["keypoints"])
    assert len(df) >= 20
    again = HP.DataSource.labeled_keypoints_data_frame(df)
    assert len(again.extract_keypoints()) == len(df)
    params = HP.ModelParameters(maximum_iterations=40, validation=ValidationData.none())
    from_table = HP(again, params)
    assert from_table.training_metrics.count == len(df) and from_table.training_metrics.accuracy >= 0.9
    photo = df["session_id"].iloc[0]
    assert from_table.prediction(photo)[0][0] == from_table.prediction_from_keypoints(df["keypoints"].iloc[0])[0][0]


def test_keypoint_table_session_survives_restore(small_digits, tmp_path):
    df = HP.DataSource.labeled_directories(small_digits).extract_keypoints()
    sp = MLTrainingSessionParameters(tmp_path / "s")
    params = HP.ModelParameters(maximum_iterations=3, validation=ValidationData.none())
    job = HP.train(HP.DataSource.labeled_keypoints_data_frame(df), params, sp)
    job.result(timeout=300)
    restored = HP.restore_training_session(sp)
    assert restored.training_data.kind == "keypoints_data_frame"
    model = HP.from_checkpoint(restored.latest_training_checkpoint())
    assert model.training_metrics.count == len(df)


def test_annotation_files_and_image_data_frames(small_digits, tmp_path):
    rows = [{"image": f"{label}/{p.name}", "label": f"sign {label}"}
            for label in ("0", "1", "5") for p in sorted((small_digits / label).iterdir())]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "labels.json").write_text(json.dumps(rows))
    params = HP.ModelParameters(maximum_iterations=20, validation=ValidationData.none())
    for name in ("labels.csv", "labels.json"):
        source = HP.DataSource.directory_with_images_and_annotation(small_digits, tmp_path / name, "image", "label")
        assert sorted(source.labeled_media()) == ["sign 0", "sign 1", "sign 5"]
    model = HP(HP.DataSource.directory_with_images_and_annotation(small_digits, tmp_path / "labels.csv"), params)
    assert model.class_labels == ["sign 0", "sign 1", "sign 5"]
    frame = pd.DataFrame({"path": [str(small_digits / r["image"]) for r in rows], "sign": [r["label"] for r in rows]})
    model2 = HP(HP.DataSource.labeled_image_data_frame(frame, "path", "sign"), params)
    assert model2.training_metrics.count == model.training_metrics.count


def test_missing_annotation_column_is_named(small_digits, tmp_path):
    (tmp_path / "a.csv").write_text("file,label\n0/x.jpg,a\n")
    source = HP.DataSource.directory_with_images_and_annotation(small_digits, tmp_path / "a.csv", "image", "label")
    with pytest.raises(Exception, match="no column 'image'"):
        HP(source)


def test_evaluation_counts_photos_without_hands_as_errors(model, digits_dir, tmp_path):
    for label in ("3", "4"):
        (tmp_path / label).mkdir()
        for p in sorted((digits_dir / label).iterdir())[:3]:
            shutil.copy(p, tmp_path / label)
    Image.new("RGB", (100, 100), (30, 30, 30)).save(tmp_path / "4" / "dark.png")
    metrics = model.evaluation(on=HP.DataSource.labeled_directories(tmp_path))
    assert metrics.count == 7
    dark = metrics.examples[metrics.examples["Item"].str.endswith("dark.png")]
    assert list(dark["Predicted"]) == [NO_PREDICTION]


def test_keypoint_augmentations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 3, 21) * 0.5 + 0.25
    x[0] = 0  # no hand
    flipped = augment_keypoints(x, torch.Generator().manual_seed(1), flip=True)
    assert torch.equal(flipped[0], x[0])
    same = [(torch.allclose(f, o)) for f, o in zip(flipped[1:], x[1:])]
    mirrored = [torch.allclose(f[:, 0].mean() - f[:, 0], o[:, 0] - o[:, 0].mean(), atol=1e-5)
                for f, o in zip(flipped[1:], x[1:])]
    assert all(s or m for s, m in zip(same, mirrored)) and any(mirrored)
    rotated = augment_keypoints(x, g, rotate=True)
    for r, o in zip(rotated[1:], x[1:]):
        co, cr = o[:, :2].mean(-1, keepdim=True), r[:, :2].mean(-1, keepdim=True)
        assert torch.allclose((o[:, :2] - co).norm(dim=1), (r[:, :2] - cr).norm(dim=1), atol=1e-5)
    assert torch.equal(rotated[:, :, 2], x[:, :, 2])  # confidence untouched
    a = augment_keypoints(x, torch.Generator().manual_seed(5), scale=True, translate=True)
    b = augment_keypoints(x, torch.Generator().manual_seed(5), scale=True, translate=True)
    assert torch.equal(a, b) and not torch.allclose(a, x)
    # what the network sees (position and size normalised away) still changes under SCALE
    seen = lambda k: normalize_keypoints(k)[1:]  # noqa: E731
    assert not torch.allclose(seen(augment_keypoints(x, g, scale=True)), seen(x), atol=1e-3)
    assert torch.equal(augment_keypoints(x, g, translate=True)[0], x[0])  # no hand stays no hand


def test_photos_without_a_hand_are_named_in_metrics_and_descriptions(small_digits, tmp_path):
    """A blank photo among the training photos and one among the validation photos: neither is dropped
    silently — training lists it as skipped, validation counts it as a wrong '(no hand)' answer, and
    both descriptions name both files."""
    Image.new("RGB", (160, 160), (200, 200, 200)).save(small_digits / "1" / "blank_train.png")
    val = tmp_path / "val"
    for label in ("0", "1", "5"):
        (val / label).mkdir(parents=True)
        shutil.move(sorted((small_digits / label).glob("*.JPG"))[0], val / label)
    Image.new("RGB", (160, 160), (90, 140, 200)).save(val / "5" / "blank_val.png")
    params = HP.ModelParameters(maximum_iterations=5,
                                validation=ValidationData.data_source(HP.DataSource.labeled_directories(val)))
    model = HP(HP.DataSource.labeled_directories(small_digits), params)

    tm, vm = model.training_metrics, model.validation_metrics
    # 22 photos are one batch: 5 iterations must already be judged in eval mode as they trained
    # (batch norm's running statistics keep up; with the default momentum this was 33%).
    assert tm.accuracy >= 0.9
    no_hand = [s["path"] for s in tm.skipped if "NoHandDetectedError" in s["reason"]]
    assert len(no_hand) == 1 and no_hand[0].endswith("1/blank_train.png")
    assert vm.count == 4
    blank = vm.examples[vm.examples["Predicted"] == NO_PREDICTION]
    assert list(blank["True Label"]) == ["5"] and "blank_val.png" in str(blank.iloc[0]["Item"])
    text, html = str(model), model._repr_html_()
    for name in ("blank_train.png", "blank_val.png"):
        assert name in text and name in html
    assert "skipped files (2):" in text, text  # each listed once, not once per list it is in


def test_each_augmentation_option_reaches_training_reproducibly(small_digits):
    """Every option changes what is learned (so it is applied), and the same options learn the same net."""
    data = HP.DataSource.labeled_directories(small_digits)
    probe = HP(data, HP.ModelParameters(maximum_iterations=1, validation=ValidationData.none())).keypoints(
        sorted((small_digits / "5").iterdir())[0]).keypoints

    def trained(opts):
        m = HP(data, HP.ModelParameters(maximum_iterations=3, augmentation_options=opts,
                                        validation=ValidationData.none()))
        return np.array([c for _, c in sorted(m.prediction_from_keypoints(probe))])

    Opt = HP.ImageAugmentationOptions
    plain = trained(Opt(0))
    for opt in (Opt.HORIZONTALLY_FLIP, Opt.ROTATE, Opt.SCALE, Opt.TRANSLATE):
        once = trained(opt)
        assert not np.allclose(once, plain, atol=1e-6), opt
        assert np.allclose(once, trained(opt), atol=1e-6), opt


def test_labeled_files(small_digits, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for label in ("0", "5"):
        for i, photo in enumerate(sorted((small_digits / label).iterdir())[:4]):
            shutil.copy(photo, flat / f"{'zero' if label == '0' else 'five'}.{i}.jpg")
    model = HP(HP.DataSource.labeled_files(flat),
               HP.ModelParameters(maximum_iterations=5, validation=ValidationData.none()))
    assert model.class_labels == ["five", "zero"]
    assert model.training_metrics.count + len(model.training_metrics.skipped) == 8


def test_a_small_photo_is_predicted_and_evaluated_from_its_views(model, digits_dir, tmp_path):
    """prediction(photo) is the mean of the views' probabilities, and evaluation(on:) answers the same."""
    photo = sorted((digits_dir / "7").iterdir())[2]
    obs = model.keypoints(photo)
    assert len(obs.views) == 2
    each = [dict(model.prediction_from_keypoints(v[None])) for v in obs.all_views()]
    mean = {label: float(np.mean([e[label] for e in each])) for label in model.class_labels}
    got = dict(model.prediction(photo))
    assert got == pytest.approx(mean, abs=1e-6)
    assert dict(model.prediction_from_keypoints(obs.all_views())) == pytest.approx(mean, abs=1e-6)
    (tmp_path / "7").mkdir()
    shutil.copy(photo, tmp_path / "7")
    metrics = model.evaluation(on=HP.DataSource.labeled_directories(tmp_path))
    [row] = metrics.examples.to_dict("records")
    top, confidence = max(got.items(), key=lambda kv: kv[1])
    assert row["Predicted"] == top and row["Confidence"] == pytest.approx(confidence, abs=1e-5)
    # keypoints given as data have one view: predicted as they are
    one = dict(model.prediction_from_keypoints(obs.keypoints))
    assert one == pytest.approx(each[0], abs=1e-6)

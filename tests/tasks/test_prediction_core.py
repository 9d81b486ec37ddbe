"""One prediction core: every task's answer is read from one ranked result (`ClassifierTask._ranked`),
a clip's answer is its windows' mean computed once (`clip_probabilities`), and evaluation examples
carry their file and time range. Real models on the real sample photos and clips.

The "old" formulas below are copies of what the task classes, the command line and the preview widget
computed before they shared the core; the shared core must give the same answers.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier, samples
from createml_widgets.tasks.hand_action_classifier import CLIP_STRIDE, Prediction, clip_probabilities

DIGITS = samples.sign_language_digits()
CLIPS = samples.hand_action_clips()


def _photos(labels=("0", "1", "5"), start=0, count=5):
    return {label: sorted((DIGITS / label).iterdir())[start:start + count] for label in labels}


@pytest.fixture(scope="module")
def image_model():
    none = MLImageClassifier.ValidationData.none()
    return MLImageClassifier(MLImageClassifier.DataSource.files_by_label(_photos()),
                             MLImageClassifier.ModelParameters(max_iterations=10, validation=none))


@pytest.fixture(scope="module")
def hand_pose_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("poses")  # labelled file names: 0.IMG_1118.JPG, ...
    for label, photos in _photos().items():
        for p in photos:
            shutil.copy(p, root / f"{label}.{p.name}")
    params = MLHandPoseClassifier.ModelParameters(maximum_iterations=20,
                                                  validation=MLHandPoseClassifier.ValidationData.none())
    return MLHandPoseClassifier(MLHandPoseClassifier.DataSource.labeled_files(root), params)


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    """Real sample clips of two actions, and `actions.csv` naming two time ranges of each clip."""
    root = tmp_path_factory.mktemp("clips")
    rows = []
    for label in ("wave", "zoom"):
        for clip in sorted((CLIPS / label).glob("*.mp4"))[:3]:
            shutil.copy(clip, root / clip.name)
            rows += [f"{clip.name},{label},0,1.0", f"{clip.name},{label},1.0,2.0"]
    (root / "actions.csv").write_text("video,action,start,end\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def action_model(clip_root):
    HA = MLHandActionClassifier
    source = HA.DataSource.directory_with_videos_and_annotation(clip_root, clip_root / "actions.csv", "video",
                                                                "action", "start", "end")
    return HA(source, HA.ModelParameters(maximum_iterations=5, prediction_window_size=15,
                                         validation=HA.ValidationData.none()))


def _old_ranking(labels, probs):
    return sorted(((label, float(p)) for label, p in zip(labels, probs)), key=lambda t: -t[1])


def test_the_image_label_is_the_first_of_the_ranked_result(image_model):
    photos = [p for paths in _photos(start=5, count=3).values() for p in paths]
    labels = []
    for photo in photos:
        probs = image_model.prediction_probabilities(photo)
        ranked = image_model.ranked_prediction(photo)
        assert ranked == sorted(probs.items(), key=lambda kv: -kv[1])  # what the CLI and the preview sorted
        assert [label for label, _ in ranked] != [] and sorted(dict(ranked)) == image_model.class_labels
        assert image_model.prediction(photo) == max(probs, key=probs.get) == ranked[0][0]  # the old rule
        labels.append(ranked[0][0])
    assert image_model.predictions(photos) == labels
    assert len(set(labels)) > 1  # a real model on real photos: not one answer for all


def test_hand_pose_ranking_is_the_old_one(hand_pose_model):
    photo = sorted((DIGITS / "5").iterdir())[7]
    observation = hand_pose_model.keypoints(photo)
    probs = hand_pose_model._predict_features([observation.all_views()])[0]  # a small photo: its views' mean
    old = _old_ranking(hand_pose_model.class_labels, probs)
    assert hand_pose_model.prediction(photo) == old
    assert hand_pose_model.prediction_from_keypoints(observation.all_views()) == old
    assert hand_pose_model.ranked_prediction(photo) == old
    one = _old_ranking(hand_pose_model.class_labels, hand_pose_model._predict_features([observation.keypoints])[0])
    assert hand_pose_model.prediction_from_keypoints(observation.keypoints) == one
    assert [c for _, c in old] == sorted((c for _, c in old), reverse=True)


def test_one_window_prediction_holds_the_ranked_window(action_model, clip_root):
    clip = sorted(clip_root.glob("*.mp4"))[0]
    keypoints = action_model.keypoints(clip)
    predictions = action_model.prediction(keypoints)
    windows = action_model._window_probabilities(keypoints)
    assert [(p.frame_range.start, p.frame_range.stop) for p in predictions] == [(a, b) for a, b, _ in windows]
    for p, (_, _, probs) in zip(predictions, windows):
        assert p.results == _old_ranking(action_model.class_labels, probs)


def _old_cli_average(windows):
    """cli.py's predict command before (the label it printed)."""
    mean: dict[str, float] = {}
    for w in windows:
        for label, p in w.results:
            mean[label] = mean.get(label, 0.0) + p / len(windows)
    return mean


def _old_preview_average(predictions):
    """widgets/prediction_preview.py's "whole video" block before."""
    overall: dict[str, float] = {}
    for p in predictions:
        for label, conf in p.results:
            overall[label] = overall.get(label, 0.0) + conf / len(predictions)
    return sorted(overall.items(), key=lambda kv: -kv[1])


def _old_library_average(model, sequence):
    """MLHandActionClassifier._predict_features before (the answer its metrics counted)."""
    stride = max(1, round(CLIP_STRIDE * model._window))
    return np.mean([p for _, _, p in model._window_probabilities(sequence, stride)], axis=0)


def test_the_clip_average_is_computed_once_with_the_old_numbers(action_model, clip_root):
    clips = sorted(clip_root.glob("*.mp4"))
    several_windows = 0
    for clip in clips:
        keypoints = action_model.keypoints(clip)
        predictions = action_model.prediction(clip)
        several_windows += len(predictions) > 1
        ranked = action_model.clip_prediction(predictions)
        assert action_model.clip_prediction(clip) == ranked  # from the file: the same
        assert action_model.ranked_prediction(clip) == ranked
        assert [label for label, _ in ranked] == [label for label, _ in _old_preview_average(predictions)]
        assert [c for _, c in ranked] == pytest.approx([c for _, c in _old_preview_average(predictions)],
                                                       rel=1e-12, abs=1e-15)
        cli = _old_cli_average(predictions)
        assert ranked[0][0] == max(cli, key=cli.get)
        assert dict(ranked) == pytest.approx(cli, rel=1e-12, abs=1e-15)
        library = _old_library_average(action_model, keypoints)
        now = action_model._predict_features([keypoints])[0]
        assert now == pytest.approx(library, abs=1e-6)  # float32 before, float64 now
        assert [dict(ranked)[label] for label in action_model.class_labels] == pytest.approx(now, rel=1e-12)
        assert action_model.class_labels[int(np.argmax(now))] == ranked[0][0]
    assert several_windows == len(clips)  # 2 s clips, 15-frame windows: a real average each time


def test_clip_probabilities_is_the_windows_mean():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]], dtype=np.float32)
    mean = clip_probabilities(probs)
    assert mean.dtype == np.float64 and mean == pytest.approx(probs.astype(np.float64).mean(axis=0))
    assert clip_probabilities(probs[:1]) == pytest.approx(probs[0])


def test_a_clip_answer_needs_a_window(action_model):
    with pytest.raises(ValueError, match="at least one window"):
        action_model.clip_prediction([])
    one = Prediction([("zoom", 0.75), ("wave", 0.25)], range(0, 15))
    assert action_model.clip_prediction([one]) == [("zoom", 0.75), ("wave", 0.25)]


def test_evaluation_examples_carry_their_file_and_time_range(action_model, clip_root):
    for metrics in (action_model.training_metrics,
                    action_model.evaluation(on=MLHandActionClassifier.DataSource.directory_with_videos_and_annotation(
                        clip_root, clip_root / "actions.csv", "video", "action", "start", "end"))):
        examples = metrics.examples
        assert len(examples) == 12
        for _, row in examples.iterrows():
            assert row["Path"] is not None and (clip_root / row["Path"]).is_file()
            assert row["Item"].startswith(row["Path"])  # the name is the file and its range
            assert (row["Start"], row["End"]) in ((0.0, 1.0), (1.0, 2.0))
        assert sorted({(r["Path"], r["Start"]) for _, r in examples.iterrows()}) == sorted(
            (str(c), s) for c in clip_root.glob("*.mp4") for s in (0.0, 1.0))


def test_photo_examples_are_their_files_with_no_range(image_model):
    metrics = image_model.training_metrics
    examples = metrics.examples
    assert list(examples["Path"]) == list(examples["Item"])
    assert examples["Start"].isna().all() and examples["End"].isna().all()
    assert all(v is None for v in examples["Start"]) and all(v is None for v in examples["End"])

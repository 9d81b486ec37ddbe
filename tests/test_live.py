"""LivePredictor: the trained models answering frame by frame, with the numbers they give offline.

Real models trained on the bundled photos and clips, real MediaPipe, real video files.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from createml_widgets import MLHandActionClassifier, MLHandPoseClassifier, MLImageClassifier, samples
from createml_widgets.features.image_io import load_image
from createml_widgets.features.video import iter_frames, video_keypoints, write_video
from createml_widgets.live import MAX_GAP_S, LivePredictor, LiveResult, TimestampResampler

DIGITS = samples.sign_language_digits()
CLIPS = samples.hand_action_clips()
POSE_LABELS = ("0", "1", "5")


def _copy_photos(dest, per_label):
    for label in POSE_LABELS:
        (dest / label).mkdir(parents=True)
        for photo in sorted((DIGITS / label).iterdir())[:per_label]:
            shutil.copy(photo, dest / label / photo.name)
    return dest


def _trained(task, root, **parameters):
    """`task` trained on the label folders in `root`, nothing held out."""
    return task(task.DataSource.labeled_directories(root),
                task.ModelParameters(validation=task.ValidationData.none(), **parameters))


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory):
    return _trained(MLHandPoseClassifier, _copy_photos(tmp_path_factory.mktemp("poses"), 12), maximum_iterations=30)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    return _trained(MLImageClassifier, _copy_photos(tmp_path_factory.mktemp("images"), 6), max_iterations=10)


@pytest.fixture(scope="module")
def action_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("actions")
    for label in ("wave", "zoom"):
        (root / label).mkdir()
        for clip in sorted((CLIPS / label).glob("*.mp4"))[:3]:
            shutil.copy(clip, root / label / clip.name)
    return _trained(MLHandActionClassifier, root, maximum_iterations=10, prediction_window_size=30)


def _photos(per_label=4, start=12):
    return [(label, p) for label in POSE_LABELS for p in sorted((DIGITS / label).iterdir())[start:start + per_label]]


def test_a_still_photo_gets_the_offline_label_and_keypoints(pose_model):
    found = 0
    photos = _photos()
    for _label, photo in photos:
        offline = pose_model.prediction(photo)
        with LivePredictor(pose_model) as live:
            result = live.predict_frame(np.asarray(load_image(photo)), timestamp=0.0)
        if result.keypoints is None:  # tracking mode has no padded retry: a hand filling a photo may be missed
            continue
        found += 1
        assert result.label == offline[0][0], (photo, result.probabilities, offline)
        assert result.confidence == pytest.approx(offline[0][1], abs=0.05)
        assert [lab for lab, _ in result.probabilities][:1] == [offline[0][0]]
        assert sorted(lab for lab, _ in result.probabilities) == sorted(POSE_LABELS)
        assert result.keypoints.shape == (1, 3, 21) and result.keypoints.dtype == np.float32
        offline_kp = pose_model.keypoints(photo).keypoints
        # the same hand (a photo offline finds only in its padded retry comes out a little apart)
        assert np.abs(result.keypoints[0, :2] - offline_kp[0, :2]).mean() < 0.03, photo
        assert result.chirality in ("left", "right", "unknown")
    assert found >= len(photos) - 1, f"the live detector found a hand in only {found} of {len(photos)} photos"


def test_a_frame_without_a_hand_has_no_answer(pose_model):
    with LivePredictor(pose_model) as live:
        result = live.predict_frame(np.full((240, 320, 3), 128, np.uint8), timestamp=1.0)
    assert result.label is None and result.confidence is None and result.probabilities == []
    assert result.keypoints is None and result.chirality is None
    d = result.to_dict()
    assert d["label"] is None and d["keypoints"] is None


def test_the_image_classifier_answers_as_prediction(image_model):
    live = LivePredictor(image_model)
    for _label, photo in _photos(per_label=2, start=6):
        rgb = np.asarray(load_image(photo))
        result = live.predict_frame(rgb)
        probs = image_model.prediction_probabilities(rgb)
        assert result.label == image_model.prediction(photo)
        assert dict(result.probabilities) == pytest.approx(probs, abs=1e-5)
        assert result.keypoints is None and result.window_fill is None
        assert result.timestamp > 1e9  # the wall clock when no timestamp is given


def test_frames_are_checked():
    class NotAModel:
        pass

    with pytest.raises(TypeError, match="LivePredictor needs a trained"):
        LivePredictor(NotAModel())


def test_bad_frames_are_refused(pose_model):
    live = LivePredictor(pose_model)
    with pytest.raises(ValueError, match="RGB uint8 array"):
        live.predict_frame(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8 array"):
        live.predict_frame(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="finite"):
        live.predict_frame(np.zeros((10, 10, 3), np.uint8), float("nan"))


# -- resampling by timestamp ---------------------------------------------------------------------
@pytest.mark.parametrize("source_fps", [60.0, 30.0, 15.0, 24.0])
def test_the_resampler_picks_the_frames_iter_frames_picks(tmp_path, source_fps):
    """A file's frames pushed with their times give the frames `iter_frames` gives at 30 fps."""
    n = int(source_fps * 2)
    levels = [(i * 7) % 250 for i in range(n)]  # each frame one flat grey: its index survives MJPG
    path = write_video(tmp_path / "grey.avi", [np.full((32, 32, 3), v, np.uint8) for v in levels], fps=source_fps)

    def index(frame):
        return levels.index(min(levels, key=lambda v: abs(v - float(frame.mean()))))

    offline = [(round(t, 6), index(f)) for t, f in iter_frames(path, 30.0)]
    resampler = TimestampResampler(30.0)
    live = []
    for i in range(n):
        live += [(round(t, 6), value) for t, value in resampler.push(i / source_fps, i)]
    assert live == offline[:len(live)]
    assert len(offline) - len(live) <= 2  # the last grid points wait for a frame after them


def test_the_resampler_refuses_time_going_backwards():
    r = TimestampResampler(30)
    r.push(1.0, "a")
    with pytest.raises(ValueError, match="timestamps must increase"):
        r.push(1.0, "b")
    with pytest.raises(ValueError, match="positive number"):
        TimestampResampler(0)


# -- hand action -----------------------------------------------------------------------------------
def test_hand_action_fills_its_window_then_answers_as_prediction(action_model):
    clip = sorted((CLIPS / "wave").glob("*.mp4"))[4]  # not trained on
    offline = video_keypoints(clip, 30.0).keypoints  # (60, 3, 21)
    live = LivePredictor(action_model)
    assert live.window_size == 30 and live.frame_rate == 30.0
    results = [live.predict_frame(frame, t) for t, frame in iter_frames(clip, 30.0)]
    fills = [r.window_fill for r in results]
    assert fills[:30] == pytest.approx([(k + 1) / 30 for k in range(30)])
    assert all(r.label is None for r in results[:29]) and all(r.label is not None for r in results[29:])
    assert all(r.window_frames == 30 for r in results[29:])
    np.testing.assert_array_equal(live.window(), offline[-30:])  # the same keypoints as offline
    for end in (30, 45, 60):
        expected = action_model.prediction(offline[end - 30:end])[0]
        got = results[end - 1]
        assert got.label == expected.label
        assert dict(got.probabilities) == pytest.approx(dict(expected.results), abs=1e-5)


def test_hand_action_resamples_a_faster_stream(action_model):
    """A 60 fps stream fills a 30-frame window on the 30 fps grid: one second of frames, 59 of them."""
    clip = sorted((CLIPS / "zoom").glob("*.mp4"))[4]
    frames = [f for _t, f in iter_frames(clip, 30.0)]
    live = LivePredictor(action_model)
    result = None
    for i in range(58):  # every frame twice, 1/60 s apart: the last at 57/60 s
        result = live.predict_frame(frames[i // 2], i / 60)
    assert result.window_frames == 29  # grid 0, 1/30, ..., 28/30 s
    result = live.predict_frame(frames[29], 58 / 60)  # on the grid point 29/30 s
    assert result.window_frames == 30 and result.label is not None


def test_a_long_gap_starts_a_new_window(action_model):
    clip = sorted((CLIPS / "wave").glob("*.mp4"))[5]
    live = LivePredictor(action_model)
    frames = [f for _t, f in iter_frames(clip, 30.0)]
    for i, f in enumerate(frames[:20]):
        r = live.predict_frame(f, i / 30)
    assert r.window_frames == 20
    r = live.predict_frame(frames[20], 19 / 30 + MAX_GAP_S + 0.5)
    assert r.window_frames == 1 and r.label is None
    with pytest.raises(ValueError, match="timestamps must increase"):
        live.predict_frame(frames[21], 0.0)


def test_live_result_as_json():
    r = LiveResult(label="5", confidence=0.9, probabilities=[("5", 0.9), ("1", 0.1)],
                   keypoints=np.ones((1, 3, 21), np.float32) * 0.5, chirality="left", window_frames=3, window_size=6)
    d = r.to_dict(top=1)
    assert d["probabilities"] == [["5", 0.9]] and d["window_fill"] == 0.5
    assert np.asarray(d["keypoints"]).shape == (2, 21)

"""The finger-gesture development set: a real pointing hand moved along drawn and real recorded paths.
MediaPipe must find the hand, and the index fingertip it reports must move the way the class says."""
from __future__ import annotations

import numpy as np
import pytest

from createml_widgets.features.video import extract_video_keypoints, probe_video
from createml_widgets.samples import make_gestures as g


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("gestures")
    return root, g.make_gesture_dataset(root, clips_per_class=2, seed=5, seconds=3.0)


def _tip(vk) -> np.ndarray:
    """(n, 2) index fingertip positions (Vision coordinates, y up) on the frames with a hand."""
    kp = vk.keypoints
    seen = np.abs(kp).sum(axis=(1, 2)) > 0
    return kp[seen, :2, 8]


def test_clips_are_real_video_with_a_hand_in_almost_every_frame(dataset):
    root, written = dataset
    assert list(written) == list(g.DEFAULT_CLASSES)
    for name, paths in written.items():
        assert [p.parent.name for p in paths] == [name] * 2
        info = probe_video(paths[0])
        assert (info.width, info.height) == (320, 240) and info.fps == pytest.approx(25)
        assert info.frame_count == 75
    results = extract_video_keypoints([p for ps in written.values() for p in ps], 10, workers=1)
    fractions = [r.hand_fraction for r in results]
    assert min(fractions) >= 0.7 and np.mean(fractions) >= 0.9, fractions


def test_the_fingertip_moves_the_way_the_class_says(dataset):
    _, written = dataset
    names = ["left", "right", "up", "down", "circle", "other"]
    results = extract_video_keypoints([written[n][0] for n in names], 10, workers=1)
    tips = dict(zip(names, (_tip(r) for r in results)))
    travel = {n: t[-3:].mean(0) - t[:3].mean(0) for n, t in tips.items()}
    assert travel["left"][0] < -0.15 and travel["right"][0] > 0.15
    assert travel["up"][1] > 0.15 and travel["down"][1] < -0.15  # Vision's y points up
    for n in ("left", "right"):
        assert abs(travel[n][1]) < abs(travel[n][0])
    for n in ("up", "down"):
        assert abs(travel[n][0]) < abs(travel[n][1])
    spread = {n: float(np.ptp(t, axis=0).max()) for n, t in tips.items()}
    assert spread["circle"] > 0.15 and abs(travel["circle"]).max() < spread["circle"]  # comes back round
    assert spread["other"] < min(spread[n] for n in ("left", "right", "up", "down", "circle"))


def test_the_same_seed_gives_the_same_clip_and_a_folder_is_reused(dataset, tmp_path):
    a = g.render_gesture("circle", 3, seconds=1.0)
    b = g.render_gesture("circle", 3, seconds=1.0)
    c = g.render_gesture("circle", 4, seconds=1.0)
    assert len(a) == 25 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[-1], c[-1])
    root, written = dataset
    before = {p: p.stat().st_mtime_ns for ps in written.values() for p in ps}
    again = g.make_gesture_dataset(root, clips_per_class=2, seed=5, seconds=3.0)
    assert {p: p.stat().st_mtime_ns for ps in again.values() for p in ps} == before


def test_real_fingertip_paths_drive_their_classes():
    paths = g.load_fingertip_paths()
    assert {k: len(v) for k, v in paths.items()} == {"Stop": 1481, "Clockwise": 1234, "Counter Clockwise": 1279,
                                                     "Move": 1302}

    def area(p):  # shoelace; image coordinates (y down)
        x, y = p[:, 0], p[:, 1]
        return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))

    cw = np.median([area(p) for p in paths["Clockwise"]])
    ccw = np.median([area(p) for p in paths["Counter Clockwise"]])
    assert np.sign(cw) == -np.sign(ccw) != 0
    stop = np.median([np.ptp(p, axis=0).max() for p in paths["Stop"]])
    move = np.median([np.ptp(p, axis=0).max() for p in paths["Move"]])
    assert stop < 0.02 < move
    frames = g.render_gesture("Clockwise", 1, seconds=1.0, fingertip_paths=paths)
    assert len(frames) == 25 and frames[0].shape == (240, 320, 3)


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown classes.*choose from"):
        g.make_gesture_dataset(tmp_path, classes=["wave"])
    with pytest.raises(ValueError, match="clips_per_class"):
        g.make_gesture_dataset(tmp_path, clips_per_class=0)
    with pytest.raises(FileNotFoundError, match="point_history.csv.*fingertip_root"):
        g.load_fingertip_paths(tmp_path)
    assert not any(tmp_path.iterdir())

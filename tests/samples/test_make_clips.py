"""Hand-action clips made from the real sign-language photos: MediaPipe must see the hand and its motion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from createml_widgets.features.video import iter_frames, probe_video, video_keypoints
from createml_widgets.samples.make_clips import (
    ACTION_CLASSES,
    HAND_ACTION_CLIPS_DIR,
    digit_photos,
    make_clip,
    make_dataset,
    render_frames,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One 1.5 s clip per motion, from photos MediaPipe handles."""
    root = tmp_path_factory.mktemp("motions")
    out = {}
    for name, (digits, motion) in ACTION_CLASSES.items():
        photos = [digit_photos(d)[1] for d in digits]
        out[name] = make_clip(photos, root / f"{name}.mp4", motion, fps=30, seconds=1.5, seed=3)
    return out


def _keypoints(path):
    vk = video_keypoints(path, 30)
    assert vk.hand_fraction >= 0.8, (path, vk.hand_fraction)
    return vk.keypoints[np.abs(vk.keypoints).sum(axis=(1, 2)) > 0]


def test_clip_files(clips):
    for path in clips.values():
        info = probe_video(path)
        assert (info.width, info.height, info.frame_count) == (320, 240, 45)
        assert info.fps == pytest.approx(30)


def test_wave_moves_left_and_right(clips):
    kp = _keypoints(clips["wave"])
    wrist_x = kp[:, 0, 0]
    assert wrist_x.max() - wrist_x.min() > 0.2
    assert np.sign(np.diff(wrist_x[::3])).tolist().count(-1) > 1 and np.sign(np.diff(wrist_x[::3])).tolist().count(1) > 1


def test_zoom_changes_the_hand_size(clips):
    kp = _keypoints(clips["zoom"])
    size = kp[:, 1].max(axis=1) - kp[:, 1].min(axis=1)  # hand height in the frame
    assert size.max() / size.min() > 1.3


def test_rotate_turns_the_hand(clips):
    kp = _keypoints(clips["rotate"])
    v = kp[:, :2, 9] - kp[:, :2, 0]  # wrist -> middle finger knuckle
    angle = np.unwrap(np.arctan2(v[:, 1], v[:, 0]))
    assert np.degrees(np.abs(angle[-1] - angle[0])) > 90


def test_count_up_switches_poses(clips):
    vk = video_keypoints(clips["count_up"], 30)
    assert vk.hand_fraction >= 0.8
    kp = vk.keypoints

    def fingers_up(frame):  # tips clearly above their middle joints (Vision y grows upwards)
        return int(sum(frame[1, tip] > frame[1, pip] for tip, pip in ((8, 6), (12, 10), (16, 14), (20, 18))))

    counts = [fingers_up(kp[i]) for i in (5, 22, 40) if np.abs(kp[i]).sum() > 0]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] >= counts[0] + 1, counts


def test_render_is_deterministic_and_seeds_differ():
    photos = digit_photos("5")[:1]
    a = render_frames(photos, "wave", fps=10, seconds=0.5, seed=1)
    b = render_frames(photos, "wave", fps=10, seconds=0.5, seed=1)
    c = render_frames(photos, "wave", fps=10, seconds=0.5, seed=2)
    assert len(a) == 5 and a[0].shape == (240, 320, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    assert not np.array_equal(a[0], a[4])  # it moves
    with pytest.raises(ValueError, match="motion"):
        render_frames(photos, "moonwalk")


def test_make_dataset_layout_and_variety(tmp_path):
    written = make_dataset(tmp_path, clips_per_class=2, formats=("mp4", "avi"), seconds=0.5, size=(160, 120))
    assert set(written) == set(ACTION_CLASSES)
    for name, paths in written.items():
        assert [p.suffix for p in paths] == [".mp4", ".avi"]
        assert all(p.parent == tmp_path / name and p.exists() for p in paths)
        infos = [probe_video(p) for p in paths]
        assert all((i.width, i.height, i.frame_count) == (160, 120, 15) for i in infos)
    # clips of one class are not copies: different photos and motion parameters
    for paths in written.values():
        first, second = ([f for _, f in iter_frames(p)] for p in paths)
        assert np.abs(first[0].astype(int) - second[0].astype(int)).mean() > 5
    with pytest.raises(ValueError, match="unknown classes"):
        make_dataset(tmp_path, classes=["jump"])


def test_make_dataset_hand_check(tmp_path):
    written = make_dataset(tmp_path, clips_per_class=1, classes=["count_up"], seconds=1.0, seed=5,
                           min_hand_fraction=0.9)
    vk = video_keypoints(written["count_up"][0], 30)
    assert vk.hand_fraction >= 0.9


def test_bundled_sample():
    root = Path(HAND_ACTION_CLIPS_DIR)
    assert (root / "README.md").exists() and "Apache" in (root / "LICENSE").read_text()
    files = sorted(root.glob("*/*.mp4"))
    assert {p.parent.name for p in files} == set(ACTION_CLASSES) and len(files) == 24
    assert sum(p.stat().st_size for p in root.rglob("*")) < 3_000_000
    # spot-check one clip per class
    for name in ACTION_CLASSES:
        path = root / name / f"{name}_00.mp4"
        info = probe_video(path)
        assert (info.width, info.height, info.frame_count) == (320, 240, 60)
        assert video_keypoints(path, 30).hand_fraction >= 0.9

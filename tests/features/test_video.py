"""Video decoding, frame-rate resampling by timestamps, and per-frame hand keypoints on real-photo clips."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from createml_widgets.errors import UnreadableFileError
from createml_widgets.features.video import (
    FOURCC_BY_SUFFIX,
    VIDEO_EXTENSIONS,
    VideoKeypoints,
    extract_video_keypoints,
    iter_frames,
    probe_video,
    video_keypoints,
    write_video,
)

W, H = 160, 64
DIGITS = Path(__file__).resolve().parents[2] / "createml_widgets" / "samples" / "sign-language-digits"


def photos(label: str) -> list[Path]:
    return sorted((DIGITS / label).glob("*.JPG"))


def coded_frames(n: int, width: int = W, height: int = H):
    """Frames whose index is written as 8 black/white bars, so a decoded frame tells which it was."""
    out = []
    for i in range(n):
        f = np.zeros((height, width, 3), np.uint8)
        for b in range(8):
            if (i >> b) & 1:
                f[:, b * width // 8:(b + 1) * width // 8] = 255
        out.append(f)
    return out


def frame_index(frame) -> int:
    h, w = frame.shape[:2]
    return sum(1 << b for b in range(8) if frame[h // 2, b * w // 8 + w // 16].mean() > 128)


@pytest.fixture(scope="module")
def coded_videos(tmp_path_factory):
    """{(suffix, fps): path} of 2-second index-coded clips."""
    root = tmp_path_factory.mktemp("coded")
    out = {}
    for suffix in (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv"):
        for fps in (15, 30, 60):
            out[suffix, fps] = write_video(root / f"c{fps}{suffix}", coded_frames(2 * fps), fps)
    return out


@pytest.mark.parametrize("suffix", sorted(VIDEO_EXTENSIONS))
def test_every_container_writes_and_reads_back(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", coded_frames(12), 24)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (W, H, 12)
    assert info.fps == pytest.approx(24, abs=0.01) and info.duration == pytest.approx(0.5, abs=0.01)
    assert [frame_index(f) for _, f in iter_frames(path, 24)] == list(range(12))
    assert suffix in FOURCC_BY_SUFFIX


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv"])
@pytest.mark.parametrize("fps", [15, 30, 60])
def test_resampling_to_30_fps_by_timestamps(coded_videos, suffix, fps):
    frames = list(iter_frames(coded_videos[suffix, fps], target_frame_rate=30))
    assert len(frames) == 60  # 2 s at 30 fps whatever the source rate
    times = np.array([t for t, _ in frames])
    assert np.allclose(times, np.arange(60) / 30)
    got = [frame_index(f) for _, f in frames]
    expected = [math.floor(k * fps / 30 + 1e-9) for k in range(60)]  # 60 fps: every other; 15 fps: repeated
    assert got == expected
    assert all(f.dtype == np.uint8 and f.shape == (H, W, 3) for _, f in frames[:3])


def test_resampling_to_other_rates(coded_videos):
    path = coded_videos[".mp4", 60]
    assert [frame_index(f) for _, f in iter_frames(path, 20)] == [3 * k for k in range(40)]
    # 25 fps from 60: nearest source frame to each target time
    got = [frame_index(f) for _, f in iter_frames(path, 25)]
    assert len(got) == 50 and got == [round(k * 60 / 25) for k in range(50)]


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_resampling_an_ntsc_rate_source(tmp_path, suffix):
    """29.97 fps (30000/1001), the rate phones and cameras record "30 fps" at: each 30 fps target
    takes the source frame nearest in time, so a frame repeats where the two clocks drift apart."""
    fps = 30000 / 1001
    n = 90
    path = write_video(tmp_path / f"ntsc{suffix}", coded_frames(n), fps)
    assert probe_video(path).fps == pytest.approx(fps, abs=0.01)
    frames = list(iter_frames(path, 30))
    duration = n / fps
    assert len(frames) == math.ceil(duration * 30 - 1e-9)
    got = [frame_index(f) for _, f in frames]
    nearest = [min(range(n), key=lambda i: (abs(i / fps - t), i)) for t, _ in frames]
    assert got == nearest
    assert len(set(got)) == len(got) - 1 and got[-1] == n - 1  # one repeat over 3 s, nothing lost


def _container_times(path) -> tuple[list, float | None]:
    """Every frame's time as the container gives it (seconds), and its nominal frame rate."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        times = []
        while cap.grab():
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            times.append(msec / 1000.0 if math.isfinite(msec) else None)
        return times, (fps if math.isfinite(fps) and 0.5 <= fps <= 1000 else None)
    finally:
        cap.release()


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".avi"])
@pytest.mark.parametrize("fps", [15, 60])
def test_iter_frames_shows_the_frames_the_pure_resampler_picks(coded_videos, suffix, fps):
    from createml_widgets.features.resample import resample_frames

    path = coded_videos[suffix, fps]
    times, nominal = _container_times(path)
    for rate, start, end in ((30, None, None), (25, None, None), (30, 0.5, 1.25), (20, 1.5, 99.0)):
        frames = list(iter_frames(path, rate, start, end))
        picked = resample_frames(times, rate, nominal, start or 0.0, end if end is not None else math.inf)
        assert [t for t, _ in frames] == pytest.approx([t for t, _ in picked])
        assert [frame_index(f) for _, f in frames] == [i for _, i in picked], (suffix, fps, rate, start)


def test_probe(coded_videos):
    info = probe_video(coded_videos[".avi", 15])
    assert (info.fps, info.frame_count, info.width, info.height) == (15, 30, W, H)
    assert info.duration == pytest.approx(2.0)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_start_end_selection(coded_videos, suffix):
    path = coded_videos[suffix, 60]
    part = list(iter_frames(path, 30, start=0.5, end=1.25))
    times = [t for t, _ in part]
    assert len(part) == 23  # ceil(0.75 s * 30)
    assert times[0] == pytest.approx(0.5) and times[-1] == pytest.approx(0.5 + 22 / 30)
    assert [frame_index(f) for _, f in part] == [30 + 2 * k for k in range(23)]
    # end beyond the file: up to the end; start only
    tail = list(iter_frames(path, 30, start=1.5, end=99))
    assert len(tail) == 15 and frame_index(tail[-1][1]) == 118
    assert len(list(iter_frames(path, 30, start=1.5))) == 15
    # a range after the end holds nothing
    assert list(iter_frames(path, 30, start=5.0)) == []


def test_bad_arguments(coded_videos):
    path = coded_videos[".mp4", 30]
    with pytest.raises(ValueError, match="target_frame_rate"):
        list(iter_frames(path, 0))
    with pytest.raises(ValueError, match="end time"):
        list(iter_frames(path, 30, start=1.0, end=0.5))
    with pytest.raises(ValueError, match="start time"):
        list(iter_frames(path, 30, start=-1))


def test_unreadable_files_are_named(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mov"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path, reason in ((tmp_path / "missing.mp4", "does not exist"), (empty, "empty"), (corrupt, "not a readable")):
        with pytest.raises(UnreadableFileError, match=reason) as err:
            probe_video(path)
        assert err.value.path.name == path.name and path.name in str(err.value)
        with pytest.raises(UnreadableFileError):
            list(iter_frames(path))
        with pytest.raises(UnreadableFileError):
            video_keypoints(path)


def test_write_video_checks(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "a.gif", coded_frames(2), 30)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "a.mp4", [], 30)
    # odd sizes are cropped to even ones
    path = write_video(tmp_path / "odd.avi", [np.zeros((33, 47, 3), np.uint8)] * 3, 10)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (46, 32, 3)


def _hand_and_blank_clip(path, fps):
    """One second: 10 frames of a real open hand, 10 blank frames, 10 frames of the hand, at `fps` / 30 scale."""
    hand = np.asarray(Image.open(photos("5")[1]).convert("RGB").resize((150, 150), Image.BICUBIC))
    canvas = np.full((240, 320, 3), 150, np.uint8)
    with_hand = canvas.copy()
    with_hand[45:195, 85:235] = hand
    per = fps // 3
    frames = [with_hand] * per + [canvas] * per + [with_hand] * per
    return write_video(path, frames, fps)


def test_video_keypoints_zero_frames_without_a_hand(tmp_path):
    path = _hand_and_blank_clip(tmp_path / "hand_blank.mp4", 30)
    vk = video_keypoints(path, 30)
    assert isinstance(vk, VideoKeypoints) and len(vk) == 30
    assert vk.keypoints.shape == (30, 3, 21) and vk.keypoints.dtype == np.float32
    assert np.allclose(vk.timestamps, np.arange(30) / 30)
    has_hand = np.abs(vk.keypoints).sum(axis=(1, 2)) > 0
    assert has_hand[:9].all() and has_hand[21:].all()
    assert not has_hand[11:19].any()
    assert np.all(vk.keypoints[11:19] == 0)
    assert vk.hand_fraction == pytest.approx(has_hand.mean()) and 0.55 < vk.hand_fraction < 0.75
    # Vision layout: upright open hand, fingertips above the wrist
    y = vk.keypoints[0, 1]
    assert np.all(y[[8, 12, 16, 20]] > y[0])
    assert vk.start == 0 and vk.end == pytest.approx(1.0) and vk.source == str(path)


def test_video_keypoints_15fps_source_repeats_frames(tmp_path):
    path = _hand_and_blank_clip(tmp_path / "slow.avi", 15)
    vk = video_keypoints(path, 30)
    assert vk.keypoints.shape == (30, 3, 21)
    assert np.array_equal(vk.keypoints[0::2], vk.keypoints[1::2])  # each source frame used twice
    part = video_keypoints(path, 30, start=0.5, end=1.0)
    assert len(part) == 15 and part.timestamps[0] == pytest.approx(0.5)
    assert (part.start, part.end) == (0.5, 1.0)
    with pytest.raises(ValueError, match="no frames"):
        video_keypoints(path, 30, start=3.0)


def test_large_frames_are_downscaled_for_detection(tmp_path):
    hand = np.asarray(Image.open(photos("5")[2]).convert("RGB").resize((500, 500), Image.BICUBIC))
    big = np.full((720, 1280, 3), 150, np.uint8)
    big[110:610, 390:890] = hand
    path = write_video(tmp_path / "big.mp4", [big] * 6, 30)
    frames = list(iter_frames(path, 30, max_side=640))
    assert frames[0][1].shape == (360, 640, 3)
    vk = video_keypoints(path, 30)
    assert vk.hand_fraction == 1.0
    x = vk.keypoints[0, 0]
    assert 390 / 1280 - 0.02 < x.min() and x.max() < 890 / 1280 + 0.02  # normalised to the full frame


def test_extract_video_keypoints_parallel_equals_serial(tmp_path):
    a = _hand_and_blank_clip(tmp_path / "a.mp4", 30)
    b = _hand_and_blank_clip(tmp_path / "b.avi", 15)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    clips = [(a, None, None), (bad, None, None), (b, 0.2, 0.8), str(a)]
    seen = []
    parallel = extract_video_keypoints(clips, 30, workers=2, progress=lambda d, t: seen.append((d, t)))
    serial = extract_video_keypoints(clips, 30, workers=1)
    assert isinstance(parallel[1], UnreadableFileError) and "bad.mp4" in str(parallel[1])
    assert isinstance(serial[1], UnreadableFileError)
    for i in (0, 2, 3):
        assert isinstance(parallel[i], VideoKeypoints)
        assert np.allclose(parallel[i].keypoints, serial[i].keypoints, atol=1e-6)
        assert np.allclose(parallel[i].timestamps, serial[i].timestamps)
    assert len(parallel[0]) == 30 and len(parallel[2]) == 18 and parallel[2].start == 0.2
    assert seen[-1] == (4, 4)


def test_a_long_clip_is_tracked_in_parts_on_every_core(tmp_path):
    """A clip at least 2 x PART_SECONDS long is cut on its frame grid and the parts tracked in parallel:
    the same frames and times, the same hands (each part after the first is tracked from WARMUP_SECONDS
    before its cut and those frames dropped, so tracking has found the hand again by the cut), and one
    clip's result as before. Where the cuts fall does not depend on the number of workers."""
    from createml_widgets.features import video as v
    from createml_widgets.samples import make_clips

    photos_ = make_clips.digit_photos(make_clips.ACTION_CLASSES["wave"][0][0])
    clip = make_clips.make_clip(photos_[:3], tmp_path / "long.mp4", make_clips.ACTION_CLASSES["wave"][1], fps=30,
                                seconds=2 * v.PART_SECONDS + 1, size=(320, 240), seed=0)
    parts_ = v._split_clip((str(clip), None, None, 15.0))
    assert len(parts_) == 2 and parts_ == v._split_clip((str(clip), None, None, 15.0), 8)
    (_, s0, e0, _, keep0), (_, s1, e1, _, keep1) = parts_
    assert keep0 is None and e0 == keep1 and s1 == pytest.approx(keep1 - v.WARMUP_SECONDS) and e1 is None
    assert len(v._split_clip((str(clip), 0.0, 2 * v.PART_SECONDS - 0.5, 15.0))) == 1  # too short to cut
    whole = video_keypoints(clip, 15)
    seen = []
    [parts] = extract_video_keypoints([clip], 15, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert len(parts) == len(whole) == 15 * (2 * v.PART_SECONDS + 1) and parts.start == 0.0
    assert np.allclose(parts.timestamps, whole.timestamps)
    present = lambda k: np.abs(k).sum(axis=(1, 2)) > 0  # noqa: E731
    assert (present(parts.keypoints) == present(whole.keypoints)).all()
    assert np.abs(parts.keypoints - whole.keypoints).max() < 0.05
    assert parts.hand_fraction == pytest.approx(whole.hand_fraction)
    assert seen[-1] == (1, 1)


def test_keypoints_and_answers_do_not_depend_on_the_number_of_workers(tmp_path, monkeypatch):
    """1 worker and 2 workers track the same parts of a long clip: equal keypoints, and a model trained
    on them gives the same answer for the video whatever CREATEML_WIDGETS_WORKERS says."""
    import pandas as pd

    from createml_widgets import MLHandActionClassifier as HA
    from createml_widgets.data.validation import ValidationData
    from createml_widgets.features import video as v
    from createml_widgets.samples import make_clips

    clip = make_clips.make_clip(make_clips.digit_photos("5")[3:4], tmp_path / "wave.mp4", "wave", fps=30,
                                seconds=2 * v.PART_SECONDS + 2, size=(320, 240), seed=4)
    [one] = extract_video_keypoints([clip], 15, workers=1)
    [two] = extract_video_keypoints([clip], 15, workers=2)
    [three] = extract_video_keypoints([clip, clip, clip], 15, workers=2)[:1]
    assert one.hand_fraction > 0.8
    for other in (two, three):
        assert np.array_equal(other.timestamps, one.timestamps)
        assert np.abs(other.keypoints - one.keypoints).max() <= 1e-6
    rows = []
    for label, seq in (("forward", one.keypoints), ("backward", one.keypoints[::-1])):
        for k in range(3):
            part = seq[k * 40:k * 40 + 90]
            rows += [{"session_id": f"{label}{k}", "label": label, "keypoints": f[None]} for f in part]
    model = HA(HA.DataSource.labeled_keypoints_data_frame(pd.DataFrame(rows)),
               HA.ModelParameters(prediction_window_size=30, maximum_iterations=3, target_frame_rate=15,
                                  validation=ValidationData.none()))
    answers = []
    for workers in ("1", "2"):
        monkeypatch.setenv("CREATEML_WIDGETS_WORKERS", workers)
        answers.append([(p.frame_range, p.results) for p in model.prediction(clip)])
    assert answers[0] == answers[1]

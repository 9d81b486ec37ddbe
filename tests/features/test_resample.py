"""The pure frame resampler (`features.resample`): timestamps in, frame indices out, without OpenCV.

`iter_frames` on real files is checked against it in test_video.py; here the edge cases are made-up
timestamps: sources faster and slower than the target, ties, gaps, repeated and missing times, ranges.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from createml_widgets.features.resample import SNAP_SECONDS, FrameResampler, resample_frames


def times_at(fps: float, n: int, offset: float = 0.0) -> list[float]:
    return [offset + i / fps for i in range(n)]


def indices(pairs) -> list[int]:
    return [i for _, i in pairs]


def test_it_needs_no_opencv():
    assert "createml_widgets.features.resample" in sys.modules
    import createml_widgets.features.resample as module

    assert "cv2" not in vars(module) and "video" not in module.__name__.rsplit(".", 1)[-1]


def test_the_same_rate_gives_every_frame_once():
    out = resample_frames(times_at(30, 60), 30, fps=30)
    assert indices(out) == list(range(60))
    assert [t for t, _ in out] == pytest.approx([k / 30 for k in range(60)])


def test_a_faster_source_gives_every_other_frame_and_decodes_only_those():
    plan = FrameResampler(30, fps=60)
    out, decoded = [], []
    for seconds in times_at(60, 120):
        if plan.done:
            break
        index, ts = plan.frame_time(seconds)
        if plan.wanted(ts):
            decoded.append(index)
            out += plan.take(index, ts)
    out += plan.finish()
    assert indices(out) == [2 * k for k in range(60)]
    assert decoded == [2 * k for k in range(60)]  # the odd frames are never nearest: not decoded


def test_a_slower_source_repeats_frames():
    assert indices(resample_frames(times_at(15, 30), 30, fps=15)) == [k // 2 for k in range(60)]
    # the last frame lasts one source period: 2 s of 15 fps give 60 frames at 30, not 59
    assert len(resample_frames(times_at(15, 30), 30, fps=15)) == 60


def test_ties_go_to_the_earlier_frame():
    # 60 fps read at 40: every odd output time lies exactly between two source frames
    out = resample_frames(times_at(60, 120), 40, fps=60)
    assert indices(out) == [math.floor(k * 1.5) for k in range(80)]
    # 25 from 60: the nearest frame
    assert indices(resample_frames(times_at(60, 120), 25, fps=60)) == [round(k * 60 / 25) for k in range(50)]


def test_an_ntsc_source_takes_the_nearest_frame():
    fps = 30000 / 1001
    times = times_at(fps, 90)
    out = resample_frames(times, 30, fps=fps)
    assert len(out) == math.ceil(90 / fps * 30 - 1e-9)
    assert indices(out) == [min(range(90), key=lambda i: (abs(times[i] - t), i)) for t, _ in out]


@pytest.mark.parametrize("rate", [10, 24, 30, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_variable_rate_source_gives_the_nearest_frame(rate, seed):
    """Frames 0.5 to 1 source period apart (no nominal rate): each output time gets its nearest frame."""
    rng = np.random.default_rng(seed)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.0, 89) / 30)]).tolist()
    out = resample_frames(times, rate)
    stop = times[-1] + 1 / 30  # the last frame lasts one (default) period
    assert [t for t, _ in out] == pytest.approx([k / rate for k in range(math.ceil(stop * rate - 1e-6))])
    nearest = [min(range(len(times)), key=lambda i: (abs(times[i] - t), i)) for t, _ in out]
    assert indices(out) == nearest


def test_a_gap_holds_the_frames_around_it():
    # frames dropped: 0, 1/30, 2/30, then 10/30, 11/30 (a variable-rate phone clip)
    times = [0, 1 / 30, 2 / 30, 10 / 30, 11 / 30]
    out = resample_frames(times, 30, fps=30)
    assert [t for t, _ in out] == pytest.approx([k / 30 for k in range(12)])
    # nearest frame, ties to the earlier: 3..6/30 show frame 2 (6/30 is a tie), 7..10/30 frame 3
    assert indices(out) == [0, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4]


def test_a_frame_skipped_before_a_gap_is_not_fetched_back():
    """A frame is not decoded when the next one, a source period later, would be nearer; when the
    next one comes much later (a gap), the output holds the frame taken before it. Nothing is
    decoded just in case: this is the price of decoding only the frames used."""
    times = [0, 1 / 30, 2 / 30, 20 / 30]
    out = resample_frames(times, 10, fps=30)
    assert [t for t, _ in out] == pytest.approx([k / 10 for k in range(7)])
    # 0.1 s shows frame 0 (frame 2 at 0.067 s, nearer, was skipped); so do 0.2 and 0.3 s, nearer to
    # frame 0 than to frame 3 at 0.667 s
    assert indices(out) == [0, 0, 0, 0, 3, 3, 3]


def test_repeated_and_missing_times_are_spaced_one_period_apart():
    plan = FrameResampler(30, fps=30)
    assert plan.frame_time(0.0) == (0, 0.0)
    assert plan.frame_time(1 / 30) == (1, pytest.approx(1 / 30))
    assert plan.frame_time(1 / 30)[1] == pytest.approx(2 / 30)  # a repeated time: one period later
    assert plan.frame_time(None)[1] == pytest.approx(3 / 30)  # no time at all
    assert plan.frame_time(float("nan"))[1] == pytest.approx(4 / 30)
    assert plan.frame_time(0.01)[1] == pytest.approx(5 / 30)  # going backwards
    out = resample_frames([0.0, 1 / 30, 1 / 30, 1 / 30, 4 / 30], 30, fps=30)
    assert indices(out) == [0, 1, 2, 3, 4]


def test_container_times_snap_to_the_frame_grid():
    plan = FrameResampler(30, fps=30)
    assert plan.frame_time(0.0011)[1] == 0.0  # within SNAP_SECONDS of 0 / 30
    assert plan.frame_time(1 / 30 + SNAP_SECONDS / 2)[1] == 1 / 30
    off = 2 / 30 + 3 * SNAP_SECONDS
    assert plan.frame_time(off)[1] == off  # a real variable-rate time is kept
    # a first frame without a time (or a 0 after a seek) sits on the grid
    assert FrameResampler(30, fps=30).frame_time(None) == (0, 0.0)
    seeked = FrameResampler(30, fps=60, start=0.5)
    assert seeked.first_index == 29 and seeked.frame_time(0.0) == (29, pytest.approx(29 / 60))
    # without a nominal rate there is no grid to snap to
    assert FrameResampler(30).frame_time(0.0011)[1] == 0.0011


def test_a_range_starts_one_frame_early_and_ends_before_its_end():
    times = times_at(60, 120)
    part = resample_frames(times, 30, fps=60, start=0.5, end=1.25)
    assert len(part) == 23 and part[0][0] == pytest.approx(0.5) and part[-1][0] == pytest.approx(0.5 + 22 / 30)
    assert indices(part) == [30 + 2 * k for k in range(23)]
    tail = resample_frames(times, 30, fps=60, start=1.5, end=99)
    assert len(tail) == 15 and tail[-1][1] == 118
    assert resample_frames(times, 30, fps=60, start=5.0) == []  # after the end: nothing


def test_no_frames_give_nothing():
    assert resample_frames([], 30, fps=30) == []
    plan = FrameResampler(30, fps=30)
    assert plan.finish() == [] and plan.frames_seen == 0 and not plan.done


def test_a_bad_rate_is_refused():
    for rate in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="rate must be a positive number"):
            FrameResampler(rate)

"""Which source frames make a video at a fixed frame rate: timestamps in, frame indices out.

Pure arithmetic (no OpenCV), so it is tested on made-up timestamps; `features.video.iter_frames`
drives it while it decodes a file. Output frame k is the source frame nearest to
``start + k / rate`` (ties go to the earlier frame) for the times in [start, end).

Source times are what the container says, cleaned up: snapped to ``index / fps`` when within
SNAP_SECONDS of it (constant-rate video, whatever the container's rounding), ``index / fps`` where
the first frame has none, and one source period after the previous frame where a time is missing or
does not increase (a container without usable timestamps).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

EPS = 1e-6
SNAP_SECONDS = 0.002
DEFAULT_FPS = 30.0  # the source period assumed when the container gives no frame rate


class FrameResampler:
    """Decides, frame by frame as a video is decoded, which source frame each output time shows.

        plan = FrameResampler(rate, fps, start, end)
        seek to plan.first_index
        while not plan.done and a frame was grabbed:
            index, ts = plan.frame_time(container_seconds)
            if plan.wanted(ts):                       # only these frames need decoding
                for t, shown in plan.take(index, ts): # output times now decided
                    ...                               # shown is `index` or the last frame taken
        for t, shown in plan.finish(): ...            # the stream ended: its last frame until its end

    `fps`: the source's nominal rate (None or 0 when unknown: DEFAULT_FPS spaces missing times).
    A frame that is `wanted` but cannot be decoded is simply not given to `take`.
    """

    def __init__(self, rate: float, fps: float | None = None, start: float = 0.0, end: float = math.inf):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
        self.rate = float(rate)
        self.fps = float(fps) if fps else None
        self.period = 1.0 / self.fps if self.fps else 1.0 / DEFAULT_FPS
        self.start, self.end = float(start), float(end)
        # one frame before the start, so that the frame nearest the first output time is seen
        self.first_index = max(0, math.floor(self.start / self.period + EPS) - 1) if self.start > 0 else 0
        self.frames_seen = 0
        self._next_index = self.first_index
        self._k = 0  # the next output time's number
        self._last_ts: float | None = None  # the last source frame's time
        self._kept: tuple[float, int] | None = None  # (time, index) of the last frame taken

    def target(self, k: int) -> float:
        """Output time k."""
        return self.start + k / self.rate

    @property
    def done(self) -> bool:
        """Every output time in [start, end) is decided."""
        return self.target(self._k) >= self.end - EPS

    def frame_time(self, seconds: float | None) -> tuple[int, float]:
        """(index, time) of the next source frame, from the container's time for it (None, NaN or
        negative: none)."""
        ts = float(seconds) if seconds is not None and math.isfinite(seconds) else -1.0
        index = self._next_index
        grid = index * self.period
        if self.fps and abs(ts - grid) < SNAP_SECONDS:
            ts = grid  # constant frame rate: exact times
        elif self._last_ts is None:
            if ts < 0 or (ts == 0 and index > 0):
                ts = grid
        elif not ts > self._last_ts:  # no usable time
            ts = self._last_ts + self.period
        self._last_ts = ts
        self._next_index += 1
        self.frames_seen += 1
        return index, ts

    def wanted(self, ts: float) -> bool:
        """Is the frame at `ts` the nearest one to some output time still to decide?"""
        if ts < self.target(self._k) - self.period - EPS:  # before the range (decoding forward after a seek)
            return False
        if self._kept is None:
            return True
        kept_ts = self._kept[0]
        j = self._k
        while True:
            tj = self.target(j)
            if tj >= self.end - EPS or tj >= ts + self.period - EPS:
                return False
            if tj >= ts - EPS or (tj - kept_ts) > (ts - tj) + EPS:
                return True
            j += 1

    def take(self, index: int, ts: float) -> list[tuple[float, int]]:
        """Frame `index` at `ts` was decoded: the output times it decides, each with the index of the
        frame it shows (this one, or the one taken before it)."""
        out = []
        t = self.target(self._k)
        while t < self.end - EPS and ts > t + EPS:
            nearer_kept = self._kept is not None and (t - self._kept[0]) <= (ts - t) + EPS
            out.append((t, self._kept[1] if nearer_kept else index))
            self._k += 1
            t = self.target(self._k)
        self._kept = (ts, index)
        return out

    def finish(self) -> list[tuple[float, int]]:
        """The stream ended: the output times left before the end of its last frame (one source
        period after that frame's time) or `end`, showing the last frame taken."""
        if self._kept is None:
            return []
        stop = min(self.end, self._last_ts + self.period)
        out = []
        while (t := self.target(self._k)) < stop - EPS:
            out.append((t, self._kept[1]))
            self._k += 1
        return out


def resample_frames(times: Sequence[float | None], rate: float, fps: float | None = None, start: float = 0.0,
                    end: float = math.inf) -> list[tuple[float, int]]:
    """[(output time, source frame index)] for a video whose frames have these container times
    (seconds, from frame 0; None or NaN where the container gives none), as `iter_frames` reads it:
    from `first_index` on (a seek), every frame decodable."""
    plan = FrameResampler(rate, fps, start, end)
    out: list[tuple[float, int]] = []
    for seconds in times[plan.first_index:]:
        if plan.done:
            return out
        index, ts = plan.frame_time(seconds)
        if plan.wanted(ts):
            out += plan.take(index, ts)
    return out + plan.finish()

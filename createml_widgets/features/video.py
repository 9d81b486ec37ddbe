"""Reading videos as frames at a fixed rate, and hand keypoints per frame (Create ML's hand actions).

* `probe_video` and `iter_frames` use OpenCV's FFmpeg backend (cv2.VideoCapture): MP4/M4V/MOV
  (MPEG-4 part 2, H.264, HEVC where FFmpeg decodes it), AVI (MJPG, XVID), WebM (VP8/VP9), MKV.
* `iter_frames` resamples BY TIMESTAMPS to `target_frame_rate`, whatever the source's rate: output
  frame k is the source frame nearest to ``start + k / target_frame_rate`` (ties go to the earlier
  frame). A 60 fps source at 30 gives every other frame, a 15 fps source repeats each frame twice.
  Which frames those are is decided by `resample.FrameResampler` (pure: timestamps in, frame
  indices out); this module seeks, decodes and converts them.
* `video_keypoints` runs MediaPipe Hands in tracking (video) mode and gives (T, 3, 21) keypoints in
  Vision's layout (see hand_keypoints.py); a frame without a hand is all zeros.
* `write_video` writes RGB frames with a codec chosen by the file suffix.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnreadableFileError
from .hand_detector import NUM_JOINTS, HandKeypointDetector, HandObservation, prepare_worker
from .process_pool import parallel_map, resolve_workers
from .resample import FrameResampler

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".webm", ".m4v", ".mkv"}
# A clip at least twice PART_SECONDS long is cut into consecutive parts of about PART_SECONDS (on the
# target frame grid) that the workers track in parallel: one long video then uses every core. Where the
# cuts fall depends only on the clip, never on the number of workers or of clips in the call, so the
# keypoints are the same with 1 worker or 16 (one process tracks the same parts one after the other).
# Each part after the first starts WARMUP_SECONDS before its cut and those warm-up frames are dropped:
# tracking has found the hand again by the cut, so the cut does not show as a lost hand.
PART_SECONDS = 6.0
WARMUP_SECONDS = 1.0
SPLIT_MIN_SECONDS = PART_SECONDS  # (older name) a clip shorter than twice this is never cut
# Frames with a longer side than this are downscaled before hand detection (normalised coordinates
# do not change; MediaPipe works on 192-256 px crops anyway).
DETECTION_MAX_SIDE = 640
# FourCC written for each suffix by `write_video`. All were checked to write and read back with the
# opencv-contrib-python wheel MediaPipe pulls in (its FFmpeg has no H.264 encoder: 'avc1' fails).
FOURCC_BY_SUFFIX = {
    ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v",
    ".avi": "MJPG",
    ".webm": "VP80",  # OpenCV prints a harmless "tag … is not supported" line, then writes VP8
    ".mkv": "XVID",
}


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether `path` has a video extension (VIDEO_EXTENSIONS) and is not hidden."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a video file's header."""

    fps: float
    frame_count: int
    duration: float  # seconds
    width: int
    height: int


@dataclass
class VideoKeypoints:
    """Hand keypoints of one video (or a [start, end) part of it) at `frame_rate` frames per second.

    keypoints: float32 (T, 3, 21) — per frame x, y (normalised, origin lower-left), confidence; zeros
        where no hand was found. timestamps: float64 (T,) seconds from the start of the file.
    hand_fraction: share of the T frames with a hand. start/end: the part used, in seconds.
    """

    keypoints: np.ndarray
    timestamps: np.ndarray
    hand_fraction: float
    source: str
    start: float
    end: float
    frame_rate: float = 30.0

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def _cv2():
    import cv2

    return cv2


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise UnreadableFileError(p, "the file does not exist")
    if p.is_dir():
        raise UnreadableFileError(p, "this is a folder, not a video file")
    if p.stat().st_size == 0:
        raise UnreadableFileError(p, "the file is empty (0 bytes)")
    return p


def _open(path):
    """(Path, cv2.VideoCapture, fps or None) for a video file; UnreadableFileError when it is not one."""
    cv2 = _cv2()
    p = _check_file(path)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise UnreadableFileError(
            p, "not a readable video (OpenCV/FFmpeg cannot open it: corrupt, truncated or an unsupported format)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and 0.5 <= fps <= 1000.0):
        fps = None
    return p, cap, fps


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, duration (s) and size of a video; UnreadableFileError if it has no frames."""
    cv2 = _cv2()
    p, cap, fps = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise UnreadableFileError(p, "the video has no decodable frames (corrupt or truncated)")
        height, width = frame.shape[:2]
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        last_ts = None
        if count <= 0 or fps is None:  # container without an index: count by decoding
            count, last_ts = 1, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            while cap.grab():
                count += 1
                last_ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if fps is None:
            fps = (count - 1) / last_ts if last_ts and count > 1 else 30.0
        return VideoInfo(fps=float(fps), frame_count=count, duration=count / fps, width=int(width),
                         height=int(height))
    finally:
        cap.release()


def _validate_range(path, target_frame_rate, start, end):
    if not (isinstance(target_frame_rate, numbers.Real) and not isinstance(target_frame_rate, bool)
            and math.isfinite(target_frame_rate) and target_frame_rate > 0):
        raise ValueError(f"target_frame_rate must be a positive number of frames per second, got {target_frame_rate!r}")
    start = 0.0 if start is None else float(start)
    end = math.inf if end is None else float(end)
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"start time must be 0 s or later, got {start!r} for {path}")
    if math.isnan(end) or end <= start:
        raise ValueError(f"end time ({end} s) must be after the start time ({start} s) for {path}")
    return float(target_frame_rate), start, end


def iter_frames(path: str | os.PathLike, target_frame_rate: float = 30.0, start: float | None = None, end: float | None = None,
                *, max_side: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp_seconds, RGB uint8 frame) at `target_frame_rate`, for times in [start, end).

    Timestamps are ``start + k / target_frame_rate``; each frame is the source frame nearest that time
    (ties go to the earlier frame; the same array is yielded again when the source is slower than the
    target). Source times come from the container (CAP_PROP_POS_MSEC), snapped to frame index / fps when
    they agree within 2 ms (constant-rate video), or index / fps where the container gives none. Seeks to
    `start` instead of decoding from the beginning. `max_side` downscales larger frames.
    Raises UnreadableFileError for a missing, empty or corrupt file.
    """
    rate, start, end = _validate_range(path, target_frame_rate, start, end)
    cv2 = _cv2()
    p, cap, fps = _open(path)
    try:
        yield from _resample(cv2, p, cap, fps, rate, start, end, max_side)
    finally:
        cap.release()


def _resample(cv2, p, cap, fps, rate, start, end, max_side):
    """Decode `cap` and yield (time, RGB frame) at `rate` in [start, end): `FrameResampler` picks the
    frames (and which need decoding at all); this only seeks, grabs, decodes and converts."""
    plan = FrameResampler(rate, fps, start, end)
    if plan.first_index > 0 and not cap.set(cv2.CAP_PROP_POS_FRAMES, plan.first_index):
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        for _ in range(plan.first_index):
            if not cap.grab():
                break

    def retrieve():
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            return None
        bgr = downscale_frame(bgr, max_side)
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    kept = None  # the last frame taken: output times nearer to it than to the next frame show it again
    while True:
        if plan.done:
            return
        if not cap.grab():
            break
        msec = cap.get(cv2.CAP_PROP_POS_MSEC)
        index, ts = plan.frame_time(msec / 1000.0 if math.isfinite(msec) else None)
        if not plan.wanted(ts):
            continue
        frame = retrieve()
        if frame is None:
            continue
        for t, shown in plan.take(index, ts):
            yield t, frame if shown == index else kept
        kept = frame
    if plan.frames_seen == 0 and start == 0:
        raise UnreadableFileError(p, "the video has no decodable frames (corrupt or truncated)")
    for t, _shown in plan.finish():
        yield t, kept


def downscale_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """`frame` shrunk (OpenCV's area filter) so its longer side is at most `max_side`; as it is when
    smaller or when `max_side` is None. Video frames and live frames go through this before detection."""
    if max_side and max(frame.shape[:2]) > max_side:
        s = max_side / max(frame.shape[:2])
        frame = _cv2().resize(frame, (max(1, round(frame.shape[1] * s)), max(1, round(frame.shape[0] * s))),
                              interpolation=_cv2().INTER_AREA)
    return frame


def video_keypoints(path: str | os.PathLike, target_frame_rate: float = 30.0, start: float | None = None,
                    end: float | None = None, detector: HandKeypointDetector | None = None, *,
                    max_side: int = DETECTION_MAX_SIDE) -> VideoKeypoints:
    """Hand keypoints of each frame of `path` (resampled to `target_frame_rate`) in [start, end).

    Uses MediaPipe's tracking (video) mode; pass a `detector` (HandKeypointDetector(video=True)) to reuse
    one across videos — it is reset here. Frames without a hand are zeros. Frames larger than
    `max_side` are downscaled before detection. Raises UnreadableFileError for an unreadable file and
    ValueError when [start, end) holds no frame.
    """
    rate, s, e = _validate_range(path, target_frame_rate, start, end)
    own = detector is None
    det = detector if detector is not None else HandKeypointDetector(video=True)
    try:
        if det.video:
            det.reset()
        frames_kp: list[np.ndarray] = []
        times: list[float] = []
        hands = 0
        last_frame, last_obs = None, None
        for ts, frame in iter_frames(path, rate, s, e, max_side=max_side):
            if frame is last_frame:  # a repeated frame (source slower than target): same answer
                obs = last_obs
            else:
                obs = det.detect(frame)
                last_frame, last_obs = frame, obs
            if isinstance(obs, HandObservation):
                frames_kp.append(obs.keypoints[0])
                hands += 1
            else:
                frames_kp.append(np.zeros((3, NUM_JOINTS), dtype=np.float32))
            times.append(ts)
    finally:
        if own:
            det.close()
    if not times:
        info = probe_video(path)
        raise ValueError(
            f"no frames of {path} lie in [{s:g} s, {e:g} s): the video is {info.duration:.2f} s long")
    kp = np.stack(frames_kp).astype(np.float32, copy=False)
    ts_arr = np.asarray(times, dtype=np.float64)
    stop = e if math.isfinite(e) else float(ts_arr[-1] + 1.0 / rate)
    return VideoKeypoints(keypoints=kp, timestamps=ts_arr, hand_fraction=hands / len(times), source=str(path),
                          start=s, end=stop, frame_rate=rate)


def _video_one(detector: HandKeypointDetector, item):
    path, start, end, rate, *keep_from = item
    result = video_keypoints(path, rate, start, end, detector=detector)
    if keep_from and keep_from[0] is not None:  # drop the warm-up frames before the part's cut
        cut = float(keep_from[0])
        keep = result.timestamps >= cut - 0.5 / rate
        kp = result.keypoints[keep]
        present = int((np.abs(kp).sum(axis=(1, 2)) > 0).sum())
        result = VideoKeypoints(keypoints=kp, timestamps=result.timestamps[keep],
                                hand_fraction=present / max(1, len(kp)), source=result.source, start=cut,
                                end=result.end, frame_rate=rate)
    return result


def extract_video_keypoints(clips: Sequence, target_frame_rate: float = 30.0, workers: int | None = None,
                            progress: Callable[[int, int], None] | None = None,
                            **detector_options: int | float | bool | tuple | None) -> list[VideoKeypoints | Exception]:
    """`video_keypoints` for each clip, in order, in parallel across videos and across the parts of
    long clips (PART_SECONDS; the result does not depend on `workers`).

    clips: (path, start, end) tuples (start/end in seconds or None) or plain paths. A clip that fails
    (unreadable file, empty range) holds its exception; nothing is raised for one bad clip.
    workers: processes (None: os.cpu_count(); 1: in this process). progress(done, total) as clips finish.
    """
    items = []
    for clip in clips:
        if isinstance(clip, (str, os.PathLike)):
            path, start, end = clip, None, None
        else:
            path, start, end = (tuple(clip) + (None, None))[:3]
        items.append((str(path), start, end, float(target_frame_rate)))
    n_workers = resolve_workers(workers)
    parts = [_split_clip(item) for item in items]
    flat = [part for clip_parts in parts for part in clip_parts]
    make_detector = functools.partial(HandKeypointDetector, video=True, **detector_options)
    part_progress = None
    if progress is not None:  # callers count clips: parts done, in clips (whole at the end)
        part_progress = lambda done, total: progress(len(items) * done // total, len(items))  # noqa: E731
    results = parallel_map(_video_one, flat, make_detector, workers=n_workers, chunk_size=1, min_parallel=2,
                           progress=part_progress, worker_setup=prepare_worker)
    out, at = [], 0
    for clip_parts in parts:
        out.append(_join_parts(results[at:at + len(clip_parts)]))
        at += len(clip_parts)
    return out


def _split_clip(item: tuple, parts: int | None = None) -> list[tuple]:
    """`item` (path, start, end, rate) as consecutive parts on its frame grid: (path, part start, part end,
    rate, cut) where the part is tracked from `part start` (WARMUP_SECONDS before `cut`) and its frames
    before `cut` are dropped. A clip shorter than 2 x PART_SECONDS is one part. `parts` (the older
    signature) is ignored: the cuts depend only on the clip, so every worker count gives the same answer.
    """
    path, start, end, rate = item
    try:
        s = 0.0 if start is None else float(start)
        e = probe_video(path).duration if end is None else min(float(end), probe_video(path).duration)
    except (UnreadableFileError, ValueError, TypeError):
        return [item]  # the whole clip fails (or succeeds) as one, with its own message
    if not (math.isfinite(s) and math.isfinite(e)) or e - s < 2 * PART_SECONDS:
        return [item]
    frames = math.ceil((e - s) * rate - 1e-9)
    count = max(2, round((e - s) / PART_SECONDS))
    warm = round(WARMUP_SECONDS * rate)
    cut_frames = [round(i * frames / count) for i in range(1, count)]
    out = [(path, start, s + cut_frames[0] / rate, rate, None)]
    for i, k in enumerate(cut_frames):
        stop = end if i + 1 == len(cut_frames) else s + cut_frames[i + 1] / rate
        out.append((path, s + max(0, k - warm) / rate, stop, rate, s + k / rate))
    return out


def _join_parts(results: list):
    """One VideoKeypoints from the parts' (or the first part's exception)."""
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        return failed
    if len(results) == 1:
        return results[0]
    keypoints = np.concatenate([r.keypoints for r in results])
    # the frame grid of the whole clip (a part tracked from its warm-up start has the same times, up to
    # rounding)
    rate = results[0].frame_rate
    timestamps = results[0].start + np.arange(len(keypoints), dtype=np.float64) / rate
    hands = sum(r.hand_fraction * len(r) for r in results)
    return VideoKeypoints(keypoints=keypoints, timestamps=timestamps, hand_fraction=hands / len(timestamps),
                          source=results[0].source, start=results[0].start, end=results[-1].end,
                          frame_rate=rate)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 30.0, fourcc: str | None = None) -> Path:
    """Write RGB uint8 frames (all the same size) to `path`; the codec follows the suffix
    (FOURCC_BY_SUFFIX) unless `fourcc` is given. Odd widths/heights are cropped to even. Returns the path.
    """
    cv2 = _cv2()
    p = Path(path)
    suffix = p.suffix.lower()
    if fourcc is None:
        if suffix not in FOURCC_BY_SUFFIX:
            raise ValueError(f"cannot write {p}: use one of the suffixes {', '.join(sorted(FOURCC_BY_SUFFIX))}")
        fourcc = FOURCC_BY_SUFFIX[suffix]
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size = None
    count = 0
    try:
        for frame in frames:
            arr = np.asarray(frame)
            if arr.dtype != np.uint8:
                arr = np.clip(arr, 0, 255).astype(np.uint8)
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] not in (3, 4):
                raise ValueError(f"frames must be (H, W, 3) RGB arrays, got shape {arr.shape}")
            arr = arr[:, :, :3]
            if writer is None:
                h, w = arr.shape[:2]
                size = (w - w % 2, h - h % 2)
                if size[0] < 2 or size[1] < 2:
                    raise ValueError(f"frames are too small to encode: {w}x{h}")
                writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
                if not writer.isOpened():
                    raise OSError(f"cannot write {p}: this OpenCV build has no '{fourcc}' encoder for "
                                  f"{suffix or 'this'} files")
            elif (arr.shape[1] - arr.shape[1] % 2, arr.shape[0] - arr.shape[0] % 2) != size:
                raise ValueError(f"frame {count} is {arr.shape[1]}x{arr.shape[0]}, the first was {size[0]}x{size[1]}")
            writer.write(cv2.cvtColor(np.ascontiguousarray(arr[: size[1], : size[0]]), cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise ValueError(f"no frames to write to {p}")
    return p

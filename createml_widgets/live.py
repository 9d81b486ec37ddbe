"""A trained model answering frame by frame, as on a live camera (Create ML's live preview).

    from createml_widgets.live import LivePredictor
    live = LivePredictor(model)                      # an MLImageClassifier, MLHandPoseClassifier or
    result = live.predict_frame(rgb, timestamp=t)    # MLHandActionClassifier; rgb: (H, W, 3) uint8
    result.label, result.confidence, result.keypoints

* image: every frame is classified as `model.ranked_prediction` classifies a photo;
* hand pose: MediaPipe Hands in tracking (video) mode finds the hand, then the model answers on its
  (1, 3, 21) keypoints (`prediction_from_keypoints`);
* hand action: the frames' keypoints are resampled by timestamp to the model's `target_frame_rate`
  (the nearest frame to each point of the grid, ties to the earlier one: the rule `features.video.
  iter_frames` applies to files) into a rolling window of `prediction_window_size` frames; the model
  answers once the window is full, and `window_fill` says how full it is until then.

The numbers are the offline ones: a photo given to `predict_frame` gets `prediction()`'s label, and a
clip's frames given with their timestamps get, for the window that ends at a frame, what `prediction`
gives for those keypoints.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .features.hand_keypoints import NUM_JOINTS, HandKeypointDetector
from .features.video import DETECTION_MAX_SIDE, downscale_frame
from .nets.logistic import _torch_threads

if TYPE_CHECKING:
    from .tasks._base import ClassifierTask

# Torch threads for the hand models' one-frame (one-window) answers: on a busy 2-core machine two
# threads made one hand-pose answer take 79 ms instead of 1.9 ms (their spinning fights MediaPipe's).
MODEL_THREADS = 1
# A gap between two frames longer than this (the stream was paused, or the kernel stalled) starts a
# new hand-action window and a new tracking: repeating one frame over a long gap would fill the window
# with a still hand that was never shown.
MAX_GAP_S = 1.0


@dataclass
class LiveResult:
    """The answer for one frame.

    label, confidence: the most likely label and its probability; None while there is no answer (no
        hand in the frame, or a hand-action window that is not full yet).
    probabilities: [(label, probability)], most likely first ([] without an answer).
    keypoints: hand tasks: float32 (1, 3, 21) in Vision's layout (x, y normalised with the origin at the
        lower left, confidence), None when this frame shows no hand. chirality: "left", "right",
        "unknown" or None.
    window_frames, window_size, window_fill: hand action only: resampled frames in the window, its
        size (`prediction_window_size`) and their ratio (1.0 once it answers).
    timestamp: the frame's time in seconds; elapsed: seconds `predict_frame` took.
    """

    label: str | None = None
    confidence: float | None = None
    probabilities: list[tuple[str, float]] = field(default_factory=list)
    keypoints: np.ndarray | None = None
    chirality: str | None = None
    window_frames: int | None = None
    window_size: int | None = None
    timestamp: float = 0.0
    elapsed: float = 0.0

    @property
    def window_fill(self) -> float | None:
        """How full the hand-action window is, 0 to 1; None for the other tasks."""
        if self.window_size is None:
            return None
        return min(1.0, (self.window_frames or 0) / self.window_size)

    def to_dict(self, top: int | None = None) -> dict:
        """Plain JSON values (what the LivePreview widget sends to the browser)."""
        probs = self.probabilities[:top] if top else self.probabilities
        return {
            "label": self.label, "confidence": self.confidence,
            "probabilities": [[label, round(float(p), 5)] for label, p in probs],
            "keypoints": None if self.keypoints is None else np.round(self.keypoints[0, :2], 4).tolist(),
            "chirality": self.chirality, "window_frames": self.window_frames, "window_size": self.window_size,
            "window_fill": self.window_fill, "timestamp": self.timestamp, "elapsed": round(self.elapsed, 4),
        }


class TimestampResampler:
    """Values arriving at increasing times, given out on the grid ``start + k / rate``.

    Each grid time gets the value nearest to it (ties to the earlier one), as `features.video.
    iter_frames` picks a file's frames; a grid time is given out once a value at or after it has
    arrived (only then is the nearest one known). The grid starts at the first value's time.
    """

    def __init__(self, rate: float):
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
        self.rate = float(rate)
        self.reset()

    def reset(self) -> None:
        """Forget every value: the next one starts the grid anew."""
        self.start: float | None = None
        self._k = 0
        self._prev: tuple[float, object] | None = None

    def target(self, k: int) -> float:
        """The `k`-th grid time, in seconds."""
        return self.start + k / self.rate

    def push(self, timestamp: float, value: object) -> list[tuple[float, object]]:
        """Add the value seen at `timestamp` (s); returns the grid points [(time, value)] now decided."""
        eps = 1e-6
        ts = float(timestamp)
        if self._prev is None:
            self.start, self._k, self._prev = ts, 1, (ts, value)
            return [(ts, value)]
        prev_ts, prev_value = self._prev
        if ts <= prev_ts:
            raise ValueError(f"timestamps must increase: {ts} s came after {prev_ts} s")
        out = []
        while (t := self.target(self._k)) <= ts + eps:
            # no value lies between the two: the nearer of them, a tie to the earlier one
            out.append((t, prev_value if (t - prev_ts) <= (ts - t) + eps else value))
            self._k += 1
        self._prev = (ts, value)
        return out


def _task_kind(model) -> str:
    from .tasks.hand_action_classifier import MLHandActionClassifier
    from .tasks.hand_pose_classifier import MLHandPoseClassifier
    from .tasks.image_classifier import MLImageClassifier

    if isinstance(model, MLHandActionClassifier):
        return "hand_action"
    if isinstance(model, MLHandPoseClassifier):
        return "hand_pose"
    if isinstance(model, MLImageClassifier):
        return "image"
    raise TypeError(f"LivePredictor needs a trained MLImageClassifier, MLHandPoseClassifier or "
                    f"MLHandActionClassifier, got {type(model).__name__}")


def _check_frame(frame) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frame must be an RGB uint8 array of shape (H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"frame is too small: {arr.shape[1]}x{arr.shape[0]} pixels")
    return np.ascontiguousarray(arr)


class LivePredictor:
    """`model` answering on consecutive frames of one stream (a camera, a video).

    mirrored: the frames are selfie-mirrored (as a front camera's preview): keeps MediaPipe's
        handedness label as it is (see `HandKeypointDetector`). max_side: hand tasks downscale larger
        frames before detection, as for video files (normalised keypoints do not change).
    Call `reset()` before another stream; `close()` (or use `with`) frees MediaPipe.
    """

    def __init__(self, model: ClassifierTask, *, mirrored: bool = False, max_side: int = DETECTION_MAX_SIDE):
        self.model = model
        self.kind = _task_kind(model)
        self.max_side = int(max_side)
        self.labels = list(model.class_labels)
        self._detector = HandKeypointDetector(video=True, mirrored=mirrored) if self.kind != "image" else None
        if self.kind == "hand_action":
            self.window_size = int(model._window)
            self.frame_rate = float(model._frame_rate)
            self._resampler = TimestampResampler(self.frame_rate)
            self._window: deque = deque(maxlen=self.window_size)
        else:
            self.window_size, self.frame_rate = None, None
        self._last_ts: float | None = None
        self._last_answer: tuple | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: forget the tracked hand and the hand-action window."""
        if self._detector is not None:
            self._detector.reset()
        if self.kind == "hand_action":
            self._resampler.reset()
            self._window.clear()
        self._last_ts = None
        self._last_answer = None

    def close(self) -> None:
        """Free the MediaPipe hand detector (hand tasks)."""
        if self._detector is not None:
            self._detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        extra = f", window {self.window_size} frames at {self.frame_rate:g} fps" if self.kind == "hand_action" else ""
        return f"LivePredictor({type(self.model).__name__}{extra})"

    # -- prediction ----------------------------------------------------------------------------
    def predict_frame(self, frame: np.ndarray, timestamp: float | None = None) -> LiveResult:
        """The answer for `frame` (RGB uint8 (H, W, 3)) seen at `timestamp` seconds (default: now).

        Timestamps of one stream must increase; a gap over MAX_GAP_S starts the stream anew.
        """
        began = time.perf_counter()
        rgb = _check_frame(frame)
        ts = time.time() if timestamp is None else float(timestamp)
        if not math.isfinite(ts):
            raise ValueError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        if self._last_ts is not None and (ts <= self._last_ts or ts - self._last_ts > MAX_GAP_S):
            if ts <= self._last_ts and self.kind == "hand_action":
                raise ValueError(f"timestamps must increase: {ts} s came after {self._last_ts} s; "
                                 "call reset() to start another stream")
            self.reset()
        self._last_ts = ts
        if self.kind == "image":
            result = self._image(rgb)
        else:
            small = downscale_frame(rgb, self.max_side)
            hand = self._detector.detect(small)
            kp = None if hand is None else hand.keypoints
            result = LiveResult(keypoints=kp, chirality=None if hand is None else hand.chirality)
            if self.kind == "hand_pose":
                if kp is not None:
                    with _torch_threads(MODEL_THREADS):
                        self._answer(result, self.model.prediction_from_keypoints(kp))
            else:
                self._action(result, ts, kp)
        result.timestamp = ts
        result.elapsed = time.perf_counter() - began
        return result

    def _answer(self, result: LiveResult, ranked: list[tuple[str, float]]) -> None:
        result.probabilities = ranked
        result.label, result.confidence = ranked[0]

    def _image(self, rgb: np.ndarray) -> LiveResult:
        result = LiveResult()
        self._answer(result, self.model.ranked_prediction(rgb))
        return result

    def _action(self, result: LiveResult, ts: float, kp: np.ndarray | None) -> None:
        frame_kp = np.zeros((3, NUM_JOINTS), dtype=np.float32) if kp is None else kp[0]
        added = self._resampler.push(ts, frame_kp)
        for _t, value in added:
            self._window.append(value)
        result.window_frames, result.window_size = len(self._window), self.window_size
        if len(self._window) < self.window_size:
            return
        if added or self._last_answer is None:
            window = np.stack(self._window)
            if not np.any(window):  # no frame of the window shows a hand: no answer
                self._last_answer = ()
            else:
                with _torch_threads(MODEL_THREADS):
                    [(_start, _stop, p)] = self.model._window_probabilities(window)
                self._last_answer = tuple(self.model._ranked(p))
        if self._last_answer:
            self._answer(result, list(self._last_answer))

    def window(self) -> np.ndarray:
        """Hand action: the (n, 3, 21) resampled keypoints in the window now (n <= window_size)."""
        if self.kind != "hand_action":
            raise AttributeError("only a hand action classifier has a window")
        return np.stack(self._window) if self._window else np.zeros((0, 3, NUM_JOINTS), dtype=np.float32)

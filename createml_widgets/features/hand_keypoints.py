"""Hand keypoints in Apple Vision's layout, computed with MediaPipe Hands (the legacy solution API).

Conventions (what Create ML's hand classifiers feed their models, see ``VNHumanHandPoseObservation``):

* one hand is a float32 array of shape ``(1, 3, 21)``: row 0 is x, row 1 is y, row 2 a confidence;
* x and y are normalised to [0, 1] of the ORIGINAL image with the origin at the LOWER-left corner
  (Vision's convention), so ``y_vision = 1 - y_mediapipe``; values are clipped to [0, 1];
* joints are in Vision's order (wrist, thumbCMC, thumbMP, thumbIP, thumbTip, indexMCP, …, littleTip),
  which is MediaPipe's 21-landmark order;
* MediaPipe's legacy Hands gives no per-landmark visibility, so every joint's confidence is the hand's
  score (MediaPipe's handedness classification score of that hand);
* a frame or image without a hand is all zeros (what Vision's ``keypointsMultiArray`` gives for a
  missing joint is undocumented; zeros is what the rest of this package expects).

Chirality: MediaPipe labels handedness as if the picture were a mirrored selfie. ``HandObservation.
chirality`` reports the person's anatomical hand for an ordinary, NOT mirrored picture (a rear-camera
photo, or a front-camera photo that was not flipped) — MediaPipe's label is swapped. Pass
``mirrored=True`` to ``HandKeypointDetector`` for selfie-mirrored input to keep MediaPipe's label.

Parallel extraction (`extract_image_keypoints`) runs in worker processes (`process_pool.parallel_map`,
started without forking the caller, which may hold torch's threads); the calling process works on the
same job meanwhile, so worker start-up (about half a second) costs little. Workers receive paths, not
pixels.

This module is where the rest of the package imports hand keypoints from; the parts live in
`hand_detector` (MediaPipe answering in Vision's layout: `HandKeypointDetector`, `HandObservation`),
`hand_drawing` (`draw_hand`) and `process_pool` (`parallel_map`, `resolve_workers`), and every name
is importable from here as before.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

from .hand_detector import (  # noqa: F401 - reached here by tests, benchmarks
    DETECTION_SIDE,
    EXTRACTOR_ID,
    JOINT_NAMES,
    NUM_JOINTS,
    RETRY_GEOMETRIES,
    RETRY_PAD_FRACTION,
    RETRY_SHORT_SIDE,
    SMALL_PHOTO_GEOMETRY,
    SMALL_PHOTO_VIEWS,
    HandKeypointDetector,
    HandObservation,
    _as_rgb_array,
    _retry_geometry,
    keypoints_array,
    prepare_worker,
)
from .hand_drawing import draw_hand
from .process_pool import (
    FORKSERVER_PRELOAD,
    WORKER_PROCESS_PREFIX,
    WORKERS_ENV,
    _resolve_workers,  # noqa: F401 - the older private name
    parallel_map,
    resolve_workers,
)


def extract_image_keypoints(
    sources: Sequence,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **detector_options: int | float | bool | tuple | None,
) -> list[HandObservation | None | Exception]:
    """Keypoints of the most confident hand in each image, in input order.

    Each slot holds a HandObservation, None (no hand found) or the exception for that input (an
    UnreadableFileError for a missing/corrupt file) — nothing is raised for a bad file.
    workers: processes to use (None: $CREATEML_WIDGETS_WORKERS, else os.cpu_count(); 1: in this process,
    no pool). Paths are sent to the workers; PIL images or arrays are always processed in this process.
    progress(done, total) is called from the calling thread as results arrive.
    detector_options: passed to HandKeypointDetector (e.g. model_complexity, mirrored).
    """
    items = list(sources)
    make_detector = functools.partial(HandKeypointDetector, video=False, **detector_options)
    return parallel_map(_detect_one, items, make_detector, workers=workers, progress=progress,
                        picklable=lambda s: isinstance(s, (str, os.PathLike)), min_parallel=32,
                        worker_setup=prepare_worker)


def _detect_one(detector: HandKeypointDetector, source):
    return detector.detect(source)


__all__ = [
    "DETECTION_SIDE", "EXTRACTOR_ID", "FORKSERVER_PRELOAD", "JOINT_NAMES", "NUM_JOINTS", "RETRY_GEOMETRIES",
    "RETRY_PAD_FRACTION", "RETRY_SHORT_SIDE", "SMALL_PHOTO_GEOMETRY", "SMALL_PHOTO_VIEWS", "WORKERS_ENV", "WORKER_PROCESS_PREFIX", "HandKeypointDetector",
    "HandObservation", "draw_hand", "extract_image_keypoints",
    "keypoints_array", "parallel_map", "prepare_worker", "resolve_workers",
]

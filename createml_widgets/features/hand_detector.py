"""MediaPipe Hands answering in Apple Vision's keypoint layout: `HandKeypointDetector`, `HandObservation`.

The conventions (layout, coordinates, confidence, chirality) are described in `hand_keypoints`, the
module the rest of the package imports these names from.
"""
from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import numpy as np

from ..errors import NoHandDetectedError
from . import native_logs
from .image_io import load_image_reduced, source_name

if TYPE_CHECKING:
    from .image_io import ImageSource

NUM_JOINTS = 21
JOINT_NAMES = (
    "wrist", "thumbCMC", "thumbMP", "thumbIP", "thumbTip",
    "indexMCP", "indexPIP", "indexDIP", "indexTip",
    "middleMCP", "middlePIP", "middleDIP", "middleTip",
    "ringMCP", "ringPIP", "ringDIP", "ringTip",
    "littleMCP", "littlePIP", "littleDIP", "littleTip",
)
# Images whose short side is below this are upscaled to it before the padded retry.
RETRY_SHORT_SIDE = 256
# Border added on each side for the padded retry, as a fraction of the (upscaled) image side.
RETRY_PAD_FRACTION = 0.25
# The retries of a photo where a model finds no hand, in order, until one finds it: (short side,
# border fraction, rotation in degrees, brighten) — see `_retry_geometry`. The first is the padded
# retry; the others catch small, tilted and dark photos.
# On the 200 sample photos made darker (brightness x 0.33) the first alone finds 184, all five 197;
# on the originals, 64 x 64 and 30-degree rotated copies both find 200 (benchmarks/accuracy.py).
RETRY_GEOMETRIES: tuple[tuple[int, float, float, bool], ...] = (
    (RETRY_SHORT_SIDE, RETRY_PAD_FRACTION, 0.0, False),
    (384, 0.1, 0.0, False),
    (RETRY_SHORT_SIDE, RETRY_PAD_FRACTION, 30.0, False),
    (RETRY_SHORT_SIDE, RETRY_PAD_FRACTION, -30.0, False),
    (RETRY_SHORT_SIDE, RETRY_PAD_FRACTION, 0.0, True),
)
# A photo whose short side is below RETRY_SHORT_SIDE is first tried in this geometry (upscaled, a 40%
# border replicated on each side), then as it is, then in RETRY_GEOMETRIES. Small photos are mostly
# crops that the hand fills, where the palm detector and the landmark model's crop need room around
# the hand: as they are, the full models find 170 of the 200 sample photos and the keypoints of the
# found ones are often wrong (fingers placed on a pen, a folded finger drawn raised). With this border
# first, hand pose accuracy over 10 splits of the sample went from 0.960 +- 0.030 to 0.982 +- 0.012
# (borders of 0.3-0.5 gave 0.977-0.988, 0.25 0.970, none 0.962; benchmarks/README.md, issue 16).
SMALL_PHOTO_GEOMETRY: tuple[int, float, float, bool] = (RETRY_SHORT_SIDE, 0.4, 0.0, False)
# Test-time views of a small photo (`HandKeypointDetector(views=True)`): the keypoints MediaPipe gives
# with 30% and 50% borders, beside SMALL_PHOTO_GEOMETRY's 40%. A hand pose model's prediction of a photo
# averages its answers over the views (the network is trained on the first view alone). On 10 splits of
# the sample photos: one view 0.982 +- 0.012, these three 0.988 +- 0.008; the views also as training
# examples 0.983 (benchmarks/README.md, issue 16). Not part of EXTRACTOR_ID: training keypoints do not change.
SMALL_PHOTO_VIEWS: tuple[tuple[int, float, float, bool], ...] = (
    (RETRY_SHORT_SIDE, 0.3, 0.0, False),
    (RETRY_SHORT_SIDE, 0.5, 0.0, False),
)
# Changes whenever the keypoints this module computes for a given image could change (use it in
# feature-cache keys together with mediapipe.__version__); the geometries are spelled into it.
EXTRACTOR_ID = ("mediapipe-hands/full+lite-fallback/small-first" + "-".join(map(str, SMALL_PHOTO_GEOMETRY))
                + "/retry" + "+".join("-".join(map(str, g)) for g in RETRY_GEOMETRIES) + "/v3")


@dataclass
class HandObservation:
    """One detected hand.

    keypoints: float32 (1, 3, 21) — x, y (normalised, origin lower-left, Vision joint order), confidence.
    chirality: "left", "right" or "unknown" — the anatomical hand for a non-mirrored picture
        (see the module docstring).
    confidence: the hand's score in [0, 1] (also written in every joint's confidence row).
    """

    keypoints: np.ndarray
    chirality: str = "unknown"
    confidence: float = 0.0
    views: tuple[np.ndarray, ...] = ()  # further (1, 3, 21) keypoints of the same photo (detector views=True)

    def all_views(self) -> np.ndarray:
        """(V, 3, 21): `keypoints` first, then every further view (V = 1 without views)."""
        return np.concatenate([self.keypoints, *self.views]).astype(np.float32, copy=False)

    @property
    def xy(self) -> np.ndarray:
        """(21, 2) x, y in Vision coordinates."""
        return self.keypoints[0, :2, :].T.copy()


def _quiet_native_logs() -> None:
    # MediaPipe / TFLite write INFO lines to stderr on start; keep a user's own setting.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native_logs.install()  # its absl W0000 lines ignore both (CREATEML_WIDGETS_NATIVE_LOGS=1 shows them)


def _import_mp_hands():
    _quiet_native_logs()
    from mediapipe.python.solutions import hands as mp_hands

    return mp_hands


# Photos are decoded reduced (JPEG at 1/2, 1/4, 1/8 scale; other formats reduced by an integer factor
# right after decoding) to the smallest size whose longer side is at least this: MediaPipe looks at the
# whole picture at 192 x 192 (palm detection) and at each hand at 224 x 224, so a hand it can find keeps
# more pixels than its models use, and the keypoints (normalised to the picture) do not change. Decoding
# a 12 Mpx photo in full cost more than MediaPipe itself (benchmarks/README.md, "hand keypoints decode").
DETECTION_SIDE = 900


def _as_rgb_array(image) -> np.ndarray:
    """An RGB uint8 (H, W, 3) C-contiguous array from an array, PIL image or path (reduced for detection)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.asarray(load_image_reduced(image, DETECTION_SIDE), dtype=np.uint8))


class HandKeypointDetector:
    """MediaPipe Hands, answering in Vision's keypoint layout.

    video=False: every call is an independent photo (MediaPipe ``static_image_mode=True``). A photo
        smaller than 256 px on its short side is first tried upscaled to 256 px with a 40% border
        replicated on each side (SMALL_PHOTO_GEOMETRY: hands that fill a small photo are found, and
        placed, far better with room around them), then as it is. When no hand is found the image is
        tried again upscaled (short side to 256 px when smaller) with a 25% border, then, if still none,
        in the other RETRY_GEOMETRIES (larger, rotated 30 degrees either way, brightened) — `retries`
        replaces that list. retry=False: the photo as it is, once.
        views=True: a found hand in such a small photo also carries the keypoints of SMALL_PHOTO_VIEWS
        (`HandObservation.views`, from the full models; a view that finds no hand is left out), which a
        hand pose model averages its prediction over.
    video=True: consecutive calls are consecutive frames of one video (MediaPipe's tracking mode, palm
        detection only when the hand is lost); call `reset()` before another video. No padded retry.

    fallback_complexity: when the main model (`model_complexity`, default 1 = MediaPipe's "full"
        models) finds no hand, the other model size (default 0 = "lite") is tried too, built on first
        use. The two palm detectors miss different hands: on the bundled sign-language photos the full
        models alone (with the padded retry, before the small-photo pass) found 97.5%, the chain 99.5%; on rotating-hand clips the
        lite models recover clips the full palm detector misses entirely. In video mode the fallback
        runs its own tracking on the frames the main model missed. None turns it off.

    Several hands: the most confident one is returned. Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        video: bool = False,
        *,
        max_hands: int | None = None,
        model_complexity: int = 1,
        fallback_complexity: int | None = 0,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        retry: bool = True,
        mirrored: bool = False,
        retries: tuple | None = None,
        views: bool = False,
    ):
        self.video = bool(video)
        # Tracking more hands than one makes MediaPipe run palm detection on every frame (slow).
        self.max_hands = int(max_hands) if max_hands else (1 if self.video else 2)
        self.model_complexity = int(model_complexity)
        if fallback_complexity is not None and int(fallback_complexity) == self.model_complexity:
            fallback_complexity = None
        self.fallback_complexity = None if fallback_complexity is None else int(fallback_complexity)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.retry = bool(retry) and not self.video
        self.retries = None if retries is None else tuple(tuple(g) for g in retries)  # None: RETRY_GEOMETRIES
        self.mirrored = bool(mirrored)
        self.views = bool(views) and self.retry
        self._fallback = None
        self._hands = self._build(self.model_complexity)
        self._closed = False

    def _build(self, complexity: int):
        mp_hands = _import_mp_hands()
        return mp_hands.Hands(
            static_image_mode=not self.video,
            max_num_hands=self.max_hands,
            model_complexity=complexity,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the MediaPipe graphs; later calls raise."""
        self._closed = True
        for attr in ("_hands", "_fallback"):
            graph = getattr(self, attr, None)
            setattr(self, attr, None)
            if graph is not None:
                # closing a half-built graph must not mask the real error
                with contextlib.suppress(Exception):
                    graph.close()

    def reset(self) -> None:
        """Forget the tracked hand (start of a new video)."""
        self._check_open()
        native_logs.install()  # a reset graph opens its calculators again, and logs again
        self._hands.reset()
        if self._fallback is not None:
            self._fallback.reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        mode = "video" if self.video else "image"
        return (f"HandKeypointDetector({mode}, max_hands={self.max_hands}, model_complexity={self.model_complexity}, "
                f"fallback_complexity={self.fallback_complexity})")

    def _check_open(self) -> None:
        if getattr(self, "_closed", True) or self._hands is None:
            raise RuntimeError("this HandKeypointDetector is closed")

    # -- detection -------------------------------------------------------------------------------
    def detect(self, image: ImageSource) -> HandObservation | None:
        """The most confident hand in `image` (RGB uint8 array, PIL image or path), or None.

        Raises UnreadableFileError for a path that is not a readable image.
        """
        hands = self.detect_all(image)
        return hands[0] if hands else None

    def detect_all(self, image: ImageSource) -> list[HandObservation]:
        """Every hand found (up to max_hands), most confident first."""
        self._check_open()
        rgb = _as_rgb_array(image)
        if rgb.shape[0] < 2 or rgb.shape[1] < 2:
            return []
        hands = self._attempts(self._hands, rgb)
        if not hands and self.fallback_complexity is not None:
            if self._fallback is None:
                self._fallback = self._build(self.fallback_complexity)
            hands = self._attempts(self._fallback, rgb)
        hands.sort(key=lambda h: h.confidence, reverse=True)
        if hands and self.views and min(rgb.shape[:2]) < RETRY_SHORT_SIDE:
            views, first = [], hands[0].keypoints[0, :2]
            for geometry in SMALL_PHOTO_VIEWS:
                prepared, mapping = _retry_geometry(rgb, *geometry)
                found = self._process(self._hands, prepared, mapping)
                if found:  # the same hand: the one nearest the first view's joints
                    views.append(min(found, key=lambda h: float(np.abs(h.keypoints[0, :2] - first).mean())).keypoints)
            hands[0].views = tuple(views)
        return hands

    def _attempts(self, graph, rgb: np.ndarray) -> list[HandObservation]:
        if self.retry and min(rgb.shape[:2]) < RETRY_SHORT_SIDE:
            prepared, mapping = _retry_geometry(rgb, *SMALL_PHOTO_GEOMETRY)
            hands = self._process(graph, prepared, mapping)
            if hands:
                return hands
        hands = self._process(graph, rgb, None)
        if self.retry:
            for geometry in RETRY_GEOMETRIES if self.retries is None else self.retries:
                if hands:
                    break
                prepared, mapping = _retry_geometry(rgb, *geometry)
                hands = self._process(graph, prepared, mapping)
        return hands

    def require(self, image: ImageSource, name: str | None = None) -> HandObservation:
        """Like `detect` but raises NoHandDetectedError when there is no hand."""
        hand = self.detect(image)
        if hand is None:
            raise NoHandDetectedError(name if name is not None else source_name(image))
        return hand

    def _process(self, graph, rgb: np.ndarray, mapping) -> list[HandObservation]:
        native_logs.install()  # a graph logs when it first runs: fd 2 may have been replaced since it was built
        result = graph.process(rgb)
        landmarks = result.multi_hand_landmarks or []
        handedness = result.multi_handedness or []
        hands = []
        for i, lm in enumerate(landmarks):
            pts = np.array([(p.x, p.y) for p in lm.landmark], dtype=np.float64)
            if mapping is not None:
                pts = mapping(pts)
            label, score = "unknown", 1.0
            if i < len(handedness) and handedness[i].classification:
                cls = handedness[i].classification[0]
                label, score = _chirality(cls.label, self.mirrored), float(cls.score)
            kp = np.empty((1, 3, NUM_JOINTS), dtype=np.float32)
            kp[0, 0] = np.clip(pts[:, 0], 0.0, 1.0)
            kp[0, 1] = np.clip(1.0 - pts[:, 1], 0.0, 1.0)
            kp[0, 2] = score
            hands.append(HandObservation(keypoints=kp, chirality=label, confidence=score))
        return hands


def _chirality(mediapipe_label: str, mirrored: bool) -> str:
    label = (mediapipe_label or "").strip().lower()
    if label not in ("left", "right"):
        return "unknown"
    if mirrored:
        return label
    return "right" if label == "left" else "left"


def _retry_geometry(rgb: np.ndarray, short_side: int = RETRY_SHORT_SIDE, pad: float = RETRY_PAD_FRACTION,
                    angle: float = 0.0, brighten: bool = False):
    """A small image upscaled (short side to `short_side`), padded (`pad` of each side replicated),
    rotated by `angle` degrees (counter-clockwise) and, with `brighten`, its light stretched (a dark
    photo); return it and a function mapping its normalised landmarks back to the original image."""
    import cv2

    h, w = rgb.shape[:2]
    scale = max(1.0, short_side / min(h, w))
    if scale > 1.0:
        sw, sh = round(w * scale), round(h * scale)
        img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_CUBIC)
    else:
        sw, sh, img = w, h, rgb
    px, py = round(pad * sw), round(pad * sh)
    if px or py:
        img = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REPLICATE)
    pw, ph = sw + 2 * px, sh + 2 * py
    inverse = None
    if angle:
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), float(angle), 1.0)
        img = cv2.warpAffine(img, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inverse = cv2.invertAffineTransform(m)
    if brighten:
        lo, hi = np.percentile(img, (1, 99))
        if hi - lo > 1:
            img = np.clip((img.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
            img = (255.0 * (img / 255.0) ** 0.7).astype(np.uint8)
    img = np.ascontiguousarray(img)

    def mapping(pts: np.ndarray) -> np.ndarray:
        x, y = pts[:, 0] * pw, pts[:, 1] * ph
        if inverse is not None:
            x, y = (inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2],
                    inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2])
        out = np.empty_like(pts)
        out[:, 0] = (x - px) / sw
        out[:, 1] = (y - py) / sh
        return out

    return img, mapping


def keypoints_array(observations: Sequence[HandObservation | None | Exception]) -> np.ndarray:
    """(N, 1, 3, 21) float32 stacking observations; None and exceptions become zeros."""
    out = np.zeros((len(observations), 1, 3, NUM_JOINTS), dtype=np.float32)
    for i, obs in enumerate(observations):
        if isinstance(obs, HandObservation):
            out[i] = obs.keypoints
    return out


def _stub_matplotlib_import():
    """Import MediaPipe's hands module without paying for matplotlib (only drawing_utils uses it).

    Worker processes only; returns quickly when matplotlib is already loaded.
    """
    if "matplotlib" in sys.modules:
        return
    stub = types.ModuleType("matplotlib")
    stub.__path__ = []
    sys.modules["matplotlib"] = stub
    sys.modules["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")
    try:
        with contextlib.suppress(Exception):  # the worker's detector imports normally if this fails
            _import_mp_hands()
    finally:
        sys.modules.pop("matplotlib", None)
        sys.modules.pop("matplotlib.pyplot", None)


def prepare_worker() -> None:
    """What a worker process of `process_pool.parallel_map` does before it builds its detector: quiet
    MediaPipe's native logs and import MediaPipe's hands module without matplotlib."""
    _quiet_native_logs()
    _stub_matplotlib_import()

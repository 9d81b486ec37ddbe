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

Parallel extraction (`extract_image_keypoints`) runs in worker processes started with the "spawn"
method (safe from a thread of a process that has torch loaded); the calling process works on the same
job meanwhile, so worker start-up (about half a second) costs little. Workers receive paths, not pixels.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import pickle
import sys
import types
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image, ImageDraw

from ..errors import NoHandDetectedError, UnreadableFileError
from . import native_logs
from .image_io import load_image, load_image_reduced, source_name

NUM_JOINTS = 21
JOINT_NAMES = (
    "wrist", "thumbCMC", "thumbMP", "thumbIP", "thumbTip",
    "indexMCP", "indexPIP", "indexDIP", "indexTip",
    "middleMCP", "middlePIP", "middleDIP", "middleTip",
    "ringMCP", "ringPIP", "ringDIP", "ringTip",
    "littleMCP", "littlePIP", "littleDIP", "littleTip",
)
# Changes whenever the keypoints this module computes for a given image could change (use it in
# feature-cache keys together with mediapipe.__version__).
EXTRACTOR_ID = "mediapipe-hands/full+lite-fallback/retry256-pad0.25+384+rot30+bright/v2"
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

    video=False: every call is an independent photo (MediaPipe ``static_image_mode=True``); when no hand
        is found the image is tried again upscaled (short side to 256 px when smaller) with a 25% border
        replicated on each side, which finds hands that fill the whole frame; then, if still none, in the
        other RETRY_GEOMETRIES (larger, rotated 30 degrees either way, brightened) — `retries` replaces
        that list.
    video=True: consecutive calls are consecutive frames of one video (MediaPipe's tracking mode, palm
        detection only when the hand is lost); call `reset()` before another video. No padded retry.

    fallback_complexity: when the main model (`model_complexity`, default 1 = MediaPipe's "full"
        models) finds no hand, the other model size (default 0 = "lite") is tried too, built on first
        use. The two palm detectors miss different hands: on the bundled sign-language photos the full
        models alone (with the padded retry) find 97.5%, the chain 99.5%; on rotating-hand clips the
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
    def detect(self, image) -> HandObservation | None:
        """The most confident hand in `image` (RGB uint8 array, PIL image or path), or None.

        Raises UnreadableFileError for a path that is not a readable image.
        """
        hands = self.detect_all(image)
        return hands[0] if hands else None

    def detect_all(self, image) -> list[HandObservation]:
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
        return hands

    def _attempts(self, graph, rgb: np.ndarray) -> list[HandObservation]:
        hands = self._process(graph, rgb, None)
        if self.retry:
            for geometry in RETRY_GEOMETRIES if self.retries is None else self.retries:
                if hands:
                    break
                prepared, mapping = _retry_geometry(rgb, *geometry)
                hands = self._process(graph, prepared, mapping)
        return hands

    def require(self, image, name=None) -> HandObservation:
        """Like `detect` but raises NoHandDetectedError when there is no hand."""
        hand = self.detect(image)
        if hand is None:
            raise NoHandDetectedError(name if name is not None else source_name(image))
        return hand

    def _process(self, graph, rgb: np.ndarray, mapping) -> list[HandObservation]:
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


# ---------------------------------------------------------------------------------------------------
# Drawing


def draw_hand(image, keypoints, *, color=(255, 64, 32), joint_color=(255, 255, 255), width: int | None = None
              ) -> Image.Image:
    """A copy of `image` with the hand's 21 joints and skeleton drawn on it.

    `keypoints`: (1, 3, 21), (3, 21) or (2, 21) in Vision's convention (normalised, origin lower-left),
    or a HandObservation. Joints whose confidence is 0 (and all-zero "no hand" arrays) are not drawn.
    """
    from ..nets.gcn import HAND_EDGES

    if isinstance(keypoints, HandObservation):
        keypoints = keypoints.keypoints
    canvas = load_image(image, max_side=None).copy()
    if keypoints is None:
        return canvas
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_JOINTS)
    if kp.shape[0] < 2:
        raise ValueError(f"keypoints must hold x and y rows for 21 joints; got shape {np.shape(keypoints)}")
    kp = kp[-3:] if kp.shape[0] > 3 else kp
    xs, ys = kp[0], kp[1]
    conf = kp[2] if kp.shape[0] >= 3 else np.ones(NUM_JOINTS)
    visible = (conf > 0) & ~((xs == 0) & (ys == 0)) & np.isfinite(xs) & np.isfinite(ys)
    w, h = canvas.size
    px = xs * (w - 1)
    py = (1.0 - ys) * (h - 1)
    lw = width or max(1, round(min(w, h) / 100))
    r = max(1.5, lw * 1.6)
    draw = ImageDraw.Draw(canvas)
    for i, j in HAND_EDGES:
        if visible[i] and visible[j]:
            draw.line([(px[i], py[i]), (px[j], py[j])], fill=tuple(color), width=lw)
    for k in range(NUM_JOINTS):
        if visible[k]:
            draw.ellipse([px[k] - r, py[k] - r, px[k] + r, py[k] + r], fill=tuple(joint_color),
                         outline=tuple(color))
    return canvas


# ---------------------------------------------------------------------------------------------------
# Parallel extraction


def extract_image_keypoints(
    sources: Sequence,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **detector_options,
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
                        picklable=lambda s: isinstance(s, (str, os.PathLike)), min_parallel=32)


def _detect_one(detector: HandKeypointDetector, source):
    return detector.detect(source)


class _Failure:
    """An exception crossing the process boundary (UnreadableFileError does not pickle by itself)."""

    def __init__(self, exc: BaseException):
        if isinstance(exc, UnreadableFileError):
            self.kind, self.payload = "unreadable", (str(exc.path) if exc.path else None, exc.reason)
        elif isinstance(exc, NoHandDetectedError):
            self.kind, self.payload = "nohand", (str(exc.source), "")
        else:
            try:
                pickle.loads(pickle.dumps(exc))
                self.kind, self.payload = "pickled", exc
            except Exception:  # noqa: BLE001
                self.kind, self.payload = "text", f"{type(exc).__name__}: {exc}"

    def to_exception(self) -> Exception:
        if self.kind == "unreadable":
            return UnreadableFileError(*self.payload)
        if self.kind == "nohand":
            return NoHandDetectedError(self.payload[0])
        if self.kind == "pickled":
            return self.payload
        return RuntimeError(self.payload)


# Per-process state of a worker: the detector built by the initializer.
_WORKER_STATE = None


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


def _exit_with_parent() -> None:
    """End this worker as soon as the process that started the pool is gone (even by kill -9).

    multiprocessing gives every worker a sentinel of its parent: the read end of a pipe whose only
    write end the parent holds, so it reads as closed the moment the parent dies. A daemon thread waits
    on it. Without this a worker stays blocked on its task queue forever (it holds that queue's write
    end itself), and with it the resource tracker, whose pipe every worker inherits.
    """
    import multiprocessing
    import threading
    from multiprocessing.connection import wait as wait_for

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch():
        with contextlib.suppress(Exception):
            wait_for([sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="cmlw-parent-watch", daemon=True).start()
    if sys.platform.startswith("linux"):  # and the kernel's own signal if the forking parent dies first
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before the call
                os._exit(3)


def _worker_init(make_state):
    global _WORKER_STATE
    _exit_with_parent()
    _quiet_native_logs()
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(1)
    _stub_matplotlib_import()
    _WORKER_STATE = make_state()


# Run in each new worker before anything of this package is unpickled. `import createml_widgets` loads
# the whole package (torch included, ~2 s); a worker only needs this module, its errors and image
# loading, so the package and its `features` subpackage are registered as bare namespace modules
# (their __init__ files are skipped) unless something imported them already.
_WORKER_BOOT = """
import pickle, sys, types
for name, path in PACKAGES:
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [path]
        module.__package__ = name
        sys.modules[name] = module
from createml_widgets.features import hand_keypoints
hand_keypoints._worker_init(pickle.loads(STATE))
"""


def _worker_boot_args(make_state) -> tuple:
    features_dir = Path(__file__).resolve().parent
    packages = [("createml_widgets", str(features_dir.parent)), ("createml_widgets.features", str(features_dir))]
    if __name__ != "createml_widgets.features.hand_keypoints":  # imported under another name: no stubs
        packages = []
    return (_WORKER_BOOT, {"PACKAGES": packages, "STATE": pickle.dumps(make_state), "__name__": "__cmlw_worker__"})


def _worker_chunk(fn, chunk):
    return [_call(fn, _WORKER_STATE, item) for item in chunk]


def _call(fn, state, item):
    try:
        return fn(state, item)
    except Exception as exc:  # noqa: BLE001 - a bad input fills its slot, it does not stop the job
        return _Failure(exc)


def _unwrap(value):
    return value.to_exception() if isinstance(value, _Failure) else value


WORKERS_ENV = "CREATEML_WIDGETS_WORKERS"


def _resolve_workers(workers: int | None) -> int:
    """`workers`, else $CREATEML_WIDGETS_WORKERS, else os.cpu_count().

    The variable matters where the CPU count is the host's, not the session's: a container given
    1-2 CPUs of a big machine (Binder) would otherwise start one MediaPipe process per host CPU.
    """
    if workers is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        if not env:
            return max(1, os.cpu_count() or 1)
        try:
            workers = int(env)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}") from None
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be None or a positive integer, got {workers}")
    return workers


def parallel_map(fn, items: list, make_state, *, workers=None, progress=None, picklable=None,
                 min_parallel: int = 2, chunk_size: int | None = None, mp_context: str | None = None) -> list:
    """[fn(state, item) for item in items] across processes, in order; exceptions fill their slots.

    `fn` must be a module-level function and `make_state` a picklable callable (e.g. a functools.partial
    of a class) building the per-process state (a detector). The calling process takes part: it works
    through chunks from the end of the list while the workers take them from the front, so the
    workers' start-up (importing MediaPipe, about 0.5 s) delays nothing. Items for which `picklable`
    says False (in-memory images) are done in this process. A crashed worker pool is not fatal: what
    it had not finished is done here.
    """
    n = len(items)
    results: list = [None] * n
    done = 0
    workers = _resolve_workers(workers)

    def report(count):
        nonlocal done
        done += count
        if progress is not None:
            progress(done, n)

    local_state = None

    def run_local(indices):
        nonlocal local_state
        if local_state is None:
            local_state = make_state()
        for i in indices:
            results[i] = _unwrap(_call(fn, local_state, items[i]))
        report(len(indices))

    remote = [i for i in range(n) if picklable is None or picklable(items[i])]
    local_only = [i for i in range(n) if not (picklable is None or picklable(items[i]))]
    try:
        if workers <= 1 or len(remote) < max(2, min_parallel):
            for i in range(n):
                run_local([i])
            return results
        children = workers - 1
        size = chunk_size or max(1, min(8, math.ceil(len(remote) / (workers * 12))))
        chunks = deque(remote[k:k + size] for k in range(0, len(remote), size))
        if local_only:
            chunks.append(local_only)  # taken first by this process (it works from the end)
        executor = ProcessPoolExecutor(
            max_workers=children,
            mp_context=_get_context(mp_context),
            initializer=exec,
            initargs=_worker_boot_args(make_state),
        )
        inflight: dict = {}
        broken = False
        clean = False
        try:
            def top_up():
                nonlocal broken
                # One chunk always stays for this process (it takes them from the end): with few chunks
                # (a long video in two parts) the workers would otherwise be handed all of them.
                while not broken and len(chunks) > 1 and len(inflight) < 2 * children and chunks[0] is not local_only:
                    chunk = chunks.popleft()
                    try:
                        future = executor.submit(_worker_chunk, fn, [items[i] for i in chunk])
                    except Exception:  # noqa: BLE001 - no workers (pool broken, fork server down): go on here
                        chunks.appendleft(chunk)
                        broken = True
                        return
                    inflight[future] = chunk

            def harvest(block: bool):
                nonlocal broken
                if not inflight:
                    return
                finished, _ = wait(list(inflight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
                for future in finished:
                    chunk = inflight.pop(future)
                    try:
                        values = future.result()
                    except BrokenProcessPool:  # a worker died: finish everything here
                        broken = True
                        chunks.append(chunk)
                        continue
                    except Exception:  # noqa: BLE001 - e.g. a result that does not unpickle: redo it here
                        chunks.append(chunk)
                        continue
                    for i, value in zip(chunk, values):
                        results[i] = _unwrap(value)
                    report(len(chunk))

            top_up()
            while chunks or inflight:
                if chunks:
                    run_local(chunks.pop())
                    harvest(block=False)
                    top_up()
                else:
                    harvest(block=True)
            clean = True
        finally:
            executor.shutdown(wait=clean, cancel_futures=True)
        return results
    finally:
        if local_state is not None and hasattr(local_state, "close"):
            local_state.close()


# Modules the fork server imports once, so that each worker forked from it starts in ~0.1 s. Never
# "__main__": the fork server would run the caller's script (its top-level code, training included).
FORKSERVER_PRELOAD = ["numpy", "PIL.Image", "cv2", "mediapipe.python.solutions.hands"]
# Names of this package's worker processes: their start-up never imports or runs the caller's main module.
WORKER_PROCESS_PREFIX = "cmlw-worker-"


def _without_main(get_preparation_data):
    """multiprocessing.spawn.get_preparation_data, leaving out the caller's main module for our workers.

    multiprocessing makes every spawned or fork-server worker re-run the main script (or `-m` module)
    under the name __mp_main__, which re-runs a plain script's top-level code (a script without an
    `if __name__ == "__main__":` guard trained its model again in each worker). Our workers need
    nothing from it: the functions and detectors they receive live in this package. Other processes
    (the caller's own pools) get the data unchanged.
    """
    if getattr(get_preparation_data, "_cmlw_without_main", False):
        return get_preparation_data

    def wrapped(name, *args, **kwargs):
        data = get_preparation_data(name, *args, **kwargs)
        if str(name).startswith(WORKER_PROCESS_PREFIX):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    wrapped._cmlw_without_main = True
    wrapped.__wrapped__ = get_preparation_data
    return wrapped


class _WorkerContext:
    """A multiprocessing context (fork server or spawn) whose processes are named as this package's
    workers, so that `_without_main` knows them. Everything else is the wrapped context's."""

    _numbers = itertools.count(1)

    def __init__(self, ctx):
        from multiprocessing import spawn

        spawn.get_preparation_data = _without_main(spawn.get_preparation_data)
        self._ctx = ctx

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
        kwargs["name"] = f"{WORKER_PROCESS_PREFIX}{next(self._numbers)}"
        return self._ctx.Process(*args, **kwargs)


def _main_module_imports() -> list[str]:
    """Modules of this package that the caller's main script imported, for the fork server to preload.

    The workers never run the main script (see `_without_main`), but a script that imported this
    package (and so torch, ~2 s) is usually about to use more of it: loading those modules once in the
    fork server costs each worker nothing. An interactive session's main names none.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return []
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    reimported = (spec_name is not None and not spec_name.endswith("__main__")) or (
        spec_name is None and getattr(main, "__file__", None))
    if not reimported:
        return []
    names = set()
    for value in list(vars(main).values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        # Only this package (which pulls in torch): anything else a script imports is its own business,
        # and a module failing to import would stop the fork server.
        if isinstance(name, str) and name.split(".")[0] == "createml_widgets" and name in sys.modules:
            names.add(name)
    return sorted(names)


def _get_context(name: str | None = None):
    """The multiprocessing context for workers: "forkserver" (default) or "spawn".

    Neither forks the calling process (which may hold torch's threads). With "forkserver" a server
    process is started once per session (importing MediaPipe once) and every worker is forked from it;
    with "spawn" each worker imports everything itself (~0.5-2.5 s). In both, workers never import or
    run the caller's main module, and end when the caller dies. CREATEML_WIDGETS_MP_CONTEXT overrides
    the default.
    """
    import multiprocessing

    name = name or os.environ.get("CREATEML_WIDGETS_MP_CONTEXT") or "forkserver"
    if name not in multiprocessing.get_all_start_methods() or name == "fork":
        name = "spawn"
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        from multiprocessing import forkserver

        current = [m for m in getattr(forkserver._forkserver, "_preload_modules", None) or [] if m != "__main__"]
        extra = FORKSERVER_PRELOAD + _main_module_imports()
        wanted = current + [m for m in dict.fromkeys(extra) if m not in current]
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(wanted)
    return _WorkerContext(ctx)


def keypoints_array(observations: Sequence[HandObservation | None | Exception]) -> np.ndarray:
    """(N, 1, 3, 21) float32 stacking observations; None and exceptions become zeros."""
    out = np.zeros((len(observations), 1, 3, NUM_JOINTS), dtype=np.float32)
    for i, obs in enumerate(observations):
        if isinstance(obs, HandObservation):
            out[i] = obs.keypoints
    return out

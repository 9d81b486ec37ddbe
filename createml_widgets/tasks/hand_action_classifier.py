"""MLHandActionClassifier: a spatio-temporal GCN over hand keypoint sequences from videos."""
from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..data.keypoint_sources import KeypointDataSource
from ..data.validation import ValidationData
from ..errors import NoHandDetectedError
from ..features.cache import CachingExtractor
from ..features.keypoint_augment import augment_keypoints
from ..features.video import is_video_file
from ..nets import HandActionGCN
from ..nets.training import AUTO, Batch, Trainer
from ._base import Plan
from ._fields import DeclaredParameters, declared_parameters
from ._hand import (
    HandTask,
    KeypointExtractor,
    ModelAlgorithmType,
    algorithm_field,
    batch_size_field,
    hand_fraction,
    maximum_iterations_field,
    mediapipe_id,
    require_each_label,
    validation_field,
)

# Clips where fewer frames than this have a hand are reported in the summary.
LOW_HAND_FRACTION = 0.5
# What each joint carries into the GCN (nets/gcn.py STREAMS). A session records the streams it
# started with, so resuming it (or loading its checkpoints) builds the same network.
NET_STREAMS: tuple[str, ...] = ("joints",)
# A clip's answer (evaluation, metrics) averages its windows taken every CLIP_STRIDE x window frames
# (1.0: side by side, as `prediction` reports them; smaller: overlapping).
CLIP_STRIDE = 1.0
# Labels a horizontal mirror turns into each other: HORIZONTALLY_FLIP swaps them on the windows it
# mirrors (when both are labels of the data), so "left" mirrored trains "right", not "left".
MIRROR_PAIRS = (("left", "right"), ("clockwise", "counterclockwise"), ("clockwise", "anticlockwise"))


def mirrored_labels(labels: Sequence[str]) -> dict[int, int]:
    """{label index: index of its mirror image} for the pairs of MIRROR_PAIRS among `labels` (names
    compared without case, spaces, '-' or '_'; "swipe left" pairs with "swipe right")."""
    def norm(name):
        return "".join(ch for ch in str(name).lower() if ch not in " -_")

    index = {norm(label): i for i, label in enumerate(labels)}
    out: dict[int, int] = {}
    for key, i in index.items():
        for a, b in MIRROR_PAIRS:
            for x, y in ((a, b), (b, a)):
                partner = key.replace(x, y) if x in key else None
                if partner is not None and partner != key and partner in index:
                    out.setdefault(i, index[partner])
    return {i: j for i, j in out.items() if out.get(j) == i}


class _DataSource(KeypointDataSource):
    """Labelled hand videos (folders, names, annotation file, data frame) or keypoint sequences."""

    _media, _task, _media_column = "video", "MLHandActionClassifier", "video"

    @staticmethod
    def _is_media(path) -> bool:
        return is_video_file(path)

    @classmethod
    def directory_with_videos_and_annotation(cls, path: str | os.PathLike, annotation_file: str | os.PathLike,
                                             video_column: str = "video", label_column: str = "label",
                                             start_time_column: str | None = None, end_time_column: str | None = None):
        """Videos in `path`, with labelled time ranges listed in a CSV or JSON `annotation_file`.

        Times may be seconds (`3`, `3.14`), `mm:ss`, `mm:ss.ff` or `hh:mm:ss`; without start/end
        columns each example is the whole video.
        """
        return cls._annotated(path, annotation_file, video_column, label_column, start_time_column, end_time_column)

    @classmethod
    def labeled_video_data_frame(cls, df, video_column: str = "video", label_column: str = "label",
                                 start_time_column: str | None = None, end_time_column: str | None = None):
        """A pandas DataFrame of video paths, labels and optional start/end times."""
        return cls._media_frame(df, video_column, label_column, start_time_column, end_time_column)

    def extract_keypoints(self, target_frame_rate: float = 30.0, workers: int | None = None):
        """One row per frame: session_id, label, keypoints (1 x 3 x 21), frame, time.

        `labeled_keypoints_data_frame(df)` trains on it without decoding the videos again. Clips
        that could not be read are listed in `df.attrs["skipped"]`.
        """
        import pandas as pd

        from ..features.video import extract_video_keypoints

        examples, skipped = self._examples()
        rows = []
        if self.kind == "keypoints_data_frame":
            for e in examples:
                rows += [{"session_id": e.session_id, "label": e.label, "keypoints": kp[None], "frame": i,
                          "time": i / target_frame_rate} for i, kp in enumerate(e.keypoints)]
            return pd.DataFrame(rows)
        results = extract_video_keypoints([(str(e.source), e.start, e.end) for e in examples], target_frame_rate,
                                          workers=workers)
        for e, res in zip(examples, results):
            sid = str(e.source) if e.start is None and e.end is None else f"{e.source}@{e.start}-{e.end}"
            if isinstance(res, BaseException):
                skipped.append({"path": sid, "reason": f"{res.__class__.__name__}: {res}"})
                continue
            rows += [{"session_id": sid, "label": e.label, "keypoints": kp[None], "frame": i, "time": float(t)}
                     for i, (kp, t) in enumerate(zip(res.keypoints, res.timestamps))]
        df = pd.DataFrame(rows, columns=["session_id", "label", "keypoints", "frame", "time"])
        df.attrs["skipped"] = skipped
        return df


class VideoAugmentationOptions(enum.Flag):
    """Augmentations over keypoint sequences."""

    DROP_FRAMES = 1
    HORIZONTALLY_FLIP = 2
    INTERPOLATE_FRAMES = 4
    ROTATE = 8
    SCALE = 16
    TRANSLATE = 32


@declared_parameters
class _ModelParameters(DeclaredParameters):
    """Training parameters: validation, batch size (32), maximum iterations (80), prediction window (60
    frames), augmentations, algorithm (GCN) and the target frame rate (30 fps)."""

    validation: ValidationData = validation_field()
    batch_size: int = batch_size_field()
    maximum_iterations: int = maximum_iterations_field()
    prediction_window_size: int = field(default=60, metadata={
        "title": "Frames per prediction", "createml": "predictionWindowSize", "range": (1, 1000), "unit": "frames",
        "cli": "--window", "hint": "frames the model looks at for one prediction, 60 = 2 s at 30 fps",
        "help": "How many frames the model watches to name one action (60 = 2 seconds at 30 fps). Make it about as long as one action; clips shorter than this are padded."})
    augmentation_options: VideoAugmentationOptions = field(default=VideoAugmentationOptions(0), metadata={
        "title": "Extra variations", "createml": "augmentationOptions", "cli": "--augment",
        "help": "Adds changed copies of each clip (frames dropped or filled in, mirrored, turned, scaled, moved) so the model copes with such videos. Helps with few clips; each option makes training slower."})
    algorithm: ModelAlgorithmType = algorithm_field("actions")
    target_frame_rate: float = field(default=30.0, metadata={
        "title": "Frame rate (fps)", "createml": "targetFrameRate", "range": (1, 240), "unit": "frames per second",
        "cli": "--frame-rate", "hint": "the rate the videos are sampled at",
        "help": "Frames per second the videos are read at. Keep the rate your app's camera will use; lower trains faster but misses quick moves."})

    _data_source = _DataSource
    ValidationData = ValidationData
    ModelAlgorithmType = ModelAlgorithmType


@dataclass
class Prediction:
    """Labels with confidences (most confident first) for one window of frames."""

    results: list[tuple[str, float]]
    frame_range: range

    @property
    def label(self) -> str:
        """The most confident label."""
        return self.results[0][0]

    @property
    def confidence(self) -> float:
        """The most confident label's confidence."""
        return self.results[0][1]


class HandActionExtractor(KeypointExtractor):
    """Video clip -> (T, 3, 21) keypoints at the target frame rate, in parallel across videos."""

    def __init__(self, target_frame_rate: float, workers: int | None = None):
        self.target_frame_rate = float(target_frame_rate)
        self.workers = workers

    @property
    def id(self) -> str:
        """The cache id: MediaPipe's, the frame rate and where long clips are cut."""
        from ..features.video import PART_SECONDS, WARMUP_SECONDS

        # long clips are cut at fixed places, each part tracked from a warm-up before its cut
        return f"{mediapipe_id()}:video:{self.target_frame_rate:g}fps:parts{PART_SECONDS:g}s+{WARMUP_SECONDS:g}s"

    def _extract_files(self, items: list) -> list:
        from ..features.video import extract_video_keypoints

        clips = [(str(i.source), i.start, i.end) for i in items]
        out = []
        for item, res in zip(items, extract_video_keypoints(clips, self.target_frame_rate, workers=self.workers)):
            if isinstance(res, BaseException):
                out.append(res)
            elif res.hand_fraction == 0:
                out.append(NoHandDetectedError(item.name, "no frame of the clip shows a hand"))
            else:
                out.append(res.keypoints.astype(np.float32))
        return out


def clip_probabilities(window_probabilities: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A clip's (K,) probabilities from its windows' (n, K): their mean, in float64. The one place a
    clip's answer is computed (metrics, `clip_prediction`, the command line, the preview widget)."""
    return np.mean(np.asarray(window_probabilities, dtype=np.float64), axis=0)


def windows(sequence: np.ndarray, size: int, stride: int | None = None) -> list[tuple[int, np.ndarray]]:
    """Full windows (start, (size, 3, 21)) covering `sequence`, every `stride` frames (default: size).

    The last window ends at the last frame (overlapping the one before it if needed), so every
    prediction sees a whole window as in training; a clip shorter than one window is zero-padded.
    """
    stride = stride or size
    t = len(sequence)
    if t <= size:
        return [(0, pad_window(sequence, size))]
    starts = list(range(0, t - size + 1, stride))
    if starts[-1] + size < t:
        starts.append(t - size)
    return [(start, np.ascontiguousarray(sequence[start:start + size], dtype=np.float32)) for start in starts]


def pad_window(frames: np.ndarray, size: int) -> np.ndarray:
    """`frames` (n, 3, 21) cut or zero-padded (no hand) at the end to `size` frames."""
    out = np.zeros((size, 3, 21), dtype=np.float32)
    n = min(len(frames), size)
    out[:n] = frames[:n]
    return out


def windows_per_clip(length: int, window: int, augmented: bool) -> int:
    """Random windows a clip gives per iteration: about 4 per window length of clip, at most 8, and
    without augmentation no more than the clip has distinct windows (a clip one window long gives
    the same window every time: more copies would only repeat the same gradient)."""
    count = max(1, min(8, round(4 * length / window)))
    return count if augmented else min(count, max(1, length - window + 1))


class WindowData:
    """Training windows: each clip gives `windows_per_clip` random windows per iteration."""

    def __init__(self, sequences: list[np.ndarray], labels: list[int], window: int,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                 mirror: dict[int, int] | None = None):
        self.sequences, self.window, self.augment = sequences, window, augment
        # mirror: mirror half the windows left-right, swapping these labels (None: no mirroring here)
        self.mirror = mirror
        self.owner = [k for k, s in enumerate(sequences)
                      for _ in range(windows_per_clip(len(s), window, augment is not None))]
        self.labels = labels
        self.y = torch.tensor([labels[k] for k in self.owner], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.owner)

    def batch(self, idx: torch.Tensor, generator: torch.Generator) -> Batch:
        """A random window of each clip at `idx`, mirrored (labels swapped) and augmented with `generator`."""
        xs = []
        for i in idx.tolist():
            seq = self.sequences[self.owner[i]]
            start = int(torch.randint(0, max(1, len(seq) - self.window + 1), (1,), generator=generator))
            xs.append(pad_window(seq[start:start + self.window], self.window))
        x = torch.from_numpy(np.stack(xs))
        y = self.y[idx]
        if self.mirror is not None:
            flip = torch.rand(len(idx), generator=generator) < 0.5
            present = (x.abs().sum(dim=2, keepdim=True) > 0).to(x.dtype)[:, :, 0, :]
            x = x.clone()
            x[flip, :, 0, :] = ((1.0 - x[:, :, 0, :]) * present)[flip]
            if self.mirror:
                swap = torch.arange(int(self.y.max()) + 1 if len(self.y) else 0)
                for a, b in self.mirror.items():
                    swap[a] = b
                y = torch.where(flip, swap[y], y)
        if self.augment is not None:
            x = self.augment(x, generator)
        return x, y

    def all(self) -> Batch:
        """Every clip's centre window (for loss/accuracy reports)."""
        xs = []
        for seq in self.sequences:
            start = max(0, (len(seq) - self.window) // 2)
            xs.append(pad_window(seq[start:start + self.window], self.window))
        x = torch.from_numpy(np.stack(xs)) if xs else torch.zeros(0, self.window, 3, 21)
        return x, torch.tensor(self.labels, dtype=torch.long)


class MLHandActionClassifier(HandTask):
    """A hand action classifier trained on videos (Create ML's MLHandActionClassifier).

    Each video becomes a sequence of hand keypoints at `target_frame_rate`; the model classifies
    windows of `prediction_window_size` frames, and the exported Core ML model takes a window of
    Vision keypoints (W x 3 x 21) as an app collects them from `VNDetectHumanHandPoseRequest`.
    """

    DataSource = _DataSource
    ModelParameters = _ModelParameters
    VideoAugmentationOptions = VideoAugmentationOptions
    ValidationData = ValidationData
    Prediction = Prediction
    _what = "video"  # (8-bit weights: every sample clip's window keeps float32's answer)

    @classmethod
    def _keypoint_extractor(cls, params) -> HandActionExtractor:
        return HandActionExtractor(params.target_frame_rate)

    @classmethod
    def _make_trainer(cls, session, plan: Plan) -> Trainer:
        params: _ModelParameters = session.model_parameters
        require_each_label(plan.train, session.features, plan.labels, "video")
        index = {label: i for i, label in enumerate(plan.labels)}
        low = []
        for item in plan.train + plan.validation:
            seq = session.features.features.get(item.key)
            if seq is not None and hand_fraction(seq) < LOW_HAND_FRACTION:
                low.append({"path": item.name, "reason": f"a hand in only {hand_fraction(seq):.0%} of the frames"})
        session.summary["clips_with_few_hands"] = low

        opts = params.augmentation_options
        V = VideoAugmentationOptions
        # mirroring (with mirrored labels swapped) is done by WindowData, which knows the labels
        mirror = mirrored_labels(plan.labels) if V.HORIZONTALLY_FLIP in opts else None

        def data(items, augment=None):
            kept = [i for i in items if i.key in session.features.features]
            if not kept:
                return None
            return WindowData([session.features.features[i.key] for i in kept], [index[i.label] for i in kept],
                              params.prediction_window_size, augment, mirror if augment is not None else None)

        augment = None
        if opts:
            flags = {"rotate": V.ROTATE in opts, "scale": V.SCALE in opts,
                     "translate": V.TRANSLATE in opts, "drop_frames": V.DROP_FRAMES in opts,
                     "interpolate_frames": V.INTERPOLATE_FRAMES in opts}
            augment = lambda batch, g: augment_keypoints(batch, g, **flags)  # noqa: E731
        if "net_streams" not in session.summary:  # a session trained before streams were recorded: joints
            trained = session.latest_training_checkpoint() is not None
            session.summary["net_streams"] = ["joints"] if trained else list(NET_STREAMS)
        streams = tuple(session.summary["net_streams"])
        net = HandActionGCN(len(plan.labels), streams=streams)
        # Every idle core: the temporal convolutions are large enough to share (benchmarks/README.md,
        # "Threads of the small trainers"); cores other work holds are left out. Counted at the
        # session's first training and kept in it: torch's results depend on the thread count, so a
        # resumed run continues on the same count and equals an uninterrupted one.
        threads = session.summary.get("train_threads")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            threads = AUTO
        trainer = Trainer(net, data(plan.train, augment), data(plan.validation), batch_size=params.batch_size,
                          optimizer="adam", learning_rate=3e-3, weight_decay=1e-4, seed=session.split_seed or 0,
                          threads=threads)
        session.summary["train_threads"] = trainer.threads
        return trainer

    def _init_after_training(self, session, plan) -> None:
        self._window = session.model_parameters.prediction_window_size
        self._frame_rate = session.model_parameters.target_frame_rate
        self._trajectories = {}
        for item in plan.train:
            seq = session.features.features.get(item.key)
            if seq is not None and item.label not in self._trajectories:
                self._trajectories[item.label] = seq

    # -- prediction ------------------------------------------------------------------------------------
    def _make_extractor(self):
        return CachingExtractor(HandActionExtractor(self._frame_rate))

    def _evaluation_items(self, source):
        examples, skipped = source._examples()
        ext = HandActionExtractor(self._frame_rate)
        return [ex.item(ext.id, "keypoints-given") for ex in examples], skipped

    def _window_probabilities(self, sequence: np.ndarray, stride: int | None = None
                              ) -> list[tuple[int, int, np.ndarray]]:
        wins = windows(np.asarray(sequence, dtype=np.float32).reshape(-1, 3, 21), self._window, stride)
        probs = self._probabilities(torch.from_numpy(np.stack([w for _, w in wins])))
        t = len(sequence)
        return [(start, min(start + self._window, max(t, 1)), p) for (start, _), p in zip(wins, probs)]

    def _predict_features(self, features: list[np.ndarray]) -> np.ndarray:
        # A clip's label: the mean of its windows' probabilities (windows every CLIP_STRIDE x window frames).
        stride = max(1, round(CLIP_STRIDE * self._window))
        return np.stack([clip_probabilities([p for _, _, p in self._window_probabilities(seq, stride)])
                         for seq in features])

    def _probabilities_of(self, video) -> np.ndarray:
        return self._clip_probabilities_of(self.prediction(video))

    def _clip_probabilities_of(self, predictions: list[Prediction]) -> np.ndarray:
        if not predictions:
            raise ValueError("a clip's answer needs at least one window's Prediction")
        return clip_probabilities([[dict(p.results)[label] for label in self._labels] for p in predictions])

    def clip_prediction(self, video: str | os.PathLike | np.ndarray | torch.Tensor | list[Prediction]
                        ) -> list[tuple[str, float]]:
        """The whole clip's answer: every label with its confidence averaged over the clip's windows,
        most confident first (what the evaluation metrics count for a clip).

        `video`: a path or keypoint array as `prediction` takes, or the list of Predictions it returned
        (then nothing is computed again).
        """
        if isinstance(video, list) and all(isinstance(p, Prediction) for p in video):
            return self._ranked(self._clip_probabilities_of(video))
        return self.ranked_prediction(video)

    def keypoints(self, video: str | os.PathLike, start: float | None = None, end: float | None = None) -> np.ndarray:
        """(T, 3, 21) keypoints of `video` at the model's frame rate (zeros where there is no hand).

        A long video is tracked in parts on every core (`extract_video_keypoints`); a short one here."""
        from ..features.video import extract_video_keypoints

        [result] = extract_video_keypoints([(str(video), start, end)], self._frame_rate)
        if isinstance(result, BaseException):
            raise result
        return result.keypoints

    def prediction(self, video: str | os.PathLike | np.ndarray | torch.Tensor) -> list[Prediction]:
        """One Prediction per window of `prediction_window_size` frames of `video`.

        `video` is a path, or a keypoint array (T, 3, 21) — e.g. frames collected live from Vision.
        Raises NoHandDetectedError if no frame shows a hand.
        """
        if isinstance(video, np.ndarray) or torch.is_tensor(video):
            sequence = np.asarray(video, dtype=np.float32).reshape(-1, 3, 21)
            name = "the keypoint array"
        else:
            sequence = self.keypoints(video)
            name = str(video)
        if hand_fraction(sequence) == 0:
            raise NoHandDetectedError(name, "no frame shows a hand")
        return [Prediction(self._ranked(p), range(start, stop)) for start, stop, p in self._window_probabilities(sequence)]

    def predictions(self, videos: Iterable[str | os.PathLike | np.ndarray | torch.Tensor]) -> list[list[Prediction]]:
        """`prediction` of each video."""
        return [self.prediction(v) for v in videos]

    # -- Core ML ---------------------------------------------------------------------------------------
    def _export(self, fmt: str, metadata):
        from ..export import keypoint_classifier_model

        return keypoint_classifier_model(self._net, self._labels, self._window, fmt=fmt, metadata=metadata,
                                         frame_rate=self._frame_rate, training_info={**self._training_info(),
                                                        "com.github.createml_widgets.target_frame_rate":
                                                            f"{self._frame_rate:g}"})

    def _onnx(self, metadata):
        from ..export.onnx_export import keypoint_classifier_onnx

        return keypoint_classifier_onnx(self._net, self._labels, self._window, frame_rate=self._frame_rate,
                                        metadata=metadata, training_info={
                                            **self._training_info(),
                                            "com.github.createml_widgets.target_frame_rate": f"{self._frame_rate:g}"})

    def _extra_html(self) -> str:
        from ..display import figure_gallery_html

        figures = [(label, trajectory_picture(seq)) for label, seq in list(self._trajectories.items())[:12]]
        return figure_gallery_html("Keypoint trajectories (one clip per class)", figures, 140)


def trajectory_picture(sequence: np.ndarray, size: int = 200) -> Image.Image:
    """The paths of the wrist and the five fingertips over a clip, fading from light to dark."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    colors = [(60, 60, 60), (230, 80, 40), (240, 170, 0), (40, 160, 60), (30, 120, 220), (150, 60, 200)]
    t = len(sequence)
    for joint, color in zip((0, 4, 8, 12, 16, 20), colors):
        pts = [(float(f[0, joint]) * (size - 1), (1 - float(f[1, joint])) * (size - 1))
               for f in sequence if abs(f[:2, joint]).sum() > 0]
        for k in range(1, len(pts)):
            fade = 0.25 + 0.75 * k / max(1, t)
            c = tuple(int(255 - (255 - ch) * fade) for ch in color)
            draw.line([pts[k - 1], pts[k]], fill=c, width=2)
    return img

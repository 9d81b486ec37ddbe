"""What the two hand tasks share: their common parameter fields, the keypoint extractor, skeleton pictures."""
from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import Field, field
from typing import TYPE_CHECKING

import numpy as np

from ..data.items import check_labeled
from ..errors import DataSourceError, NoHandDetectedError
from ..features.cache import CachingExtractor
from ._base import ClassifierTask, Plan, split_for_validation
from ._fields import training_rounds_field, validation_field  # noqa: F401 - validation_field: the hand tasks' too

if TYPE_CHECKING:
    from ..data.items import Item
    from ..session import MLTrainingSession
    from ..session_store import FeatureStore

# The cache's variant name of keypoints given in a data frame (no file to detect them in).
KEYPOINTS_GIVEN = "keypoints-given"


class ModelAlgorithmType(enum.Enum):
    """Create ML's hand classifiers have one algorithm: a graph convolutional network."""

    GCN = "gcn"

    def __str__(self) -> str:
        return self.value


# -- the ModelParameters fields both hand tasks declare alike (each task adds its own) ----------------------------
def batch_size_field() -> Field[int]:
    """`batch_size`: 32 by default."""
    return field(default=32, metadata={
        "title": "Examples per step", "createml": "batchSize", "range": (1, 4096), "cli": "--batch-size",
        "hint": "examples per training step",
        "help": "How many examples each training step looks at. Larger is smoother but uses more memory; the default suits most datasets."})


def maximum_iterations_field() -> Field[int]:
    """`maximum_iterations`: 80 by default (the session's iteration bound is raised to it)."""
    return training_rounds_field(80, "maximumIterations")


def algorithm_field(what: str) -> Field[ModelAlgorithmType]:
    """`algorithm`: the GCN, Create ML's only choice for hand `what` ("poses", "actions")."""
    return field(default=ModelAlgorithmType.GCN, metadata={
        "title": "Network", "createml": "algorithm", "choices": {"GCN": "hand-skeleton network (GCN)"},
        "help": f"The kind of network: a graph network over the 21 joints of the hand skeleton, Create ML's only choice for hand {what}."})


def mediapipe_id() -> str:
    """What names the hand keypoint extraction in the feature cache: the detector, MediaPipe's version, the retries."""
    from ..features import hand_keypoints as hk

    try:
        import mediapipe

        version = mediapipe.__version__
    except ImportError:  # pragma: no cover
        version = "?"
    # EXTRACTOR_ID names the models and fallbacks used: a cached keypoint set (or a cached "no hand")
    # goes stale when any of them, MediaPipe, or the retry geometry changes.
    return f"{hk.EXTRACTOR_ID}:mediapipe-{version}:retry{hk.RETRY_SHORT_SIDE}:pad{hk.RETRY_PAD_FRACTION}"


class KeypointExtractor:
    """Base of the hand extractors: keypoints given in a data frame pass through; files are detected."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def extract(self, items: list) -> list:
        """Keypoints of each item, in order: given ones reshaped to (T, 3, 21), files detected; an exception in the slot of a file that failed."""
        results: list = [None] * len(items)
        files = []
        for i, item in enumerate(items):
            if item.payload is not None:
                results[i] = np.asarray(item.payload, dtype=np.float32).reshape(-1, 3, 21)
            else:
                files.append(i)
        if files:
            for i, value in zip(files, self._extract_files([items[i] for i in files])):
                results[i] = value
        return results

    def _extract_files(self, items: list) -> list:
        raise NotImplementedError


class HandPoseExtractor(KeypointExtractor):
    """Photo -> (1, 3, 21) keypoints of the most confident hand, in parallel worker processes."""

    # views=True (`HandPoseViewsExtractor`): each photo's (V, 3, 21) test-time views, for prediction
    views = False

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self._detector = None  # with workers=1 (e.g. on a Dask worker): one detector kept for every batch

    @property
    def id(self) -> str:
        """The cache id of photo keypoints (MediaPipe in still-image mode)."""
        return mediapipe_id() + ":static"

    def __exit__(self, *exc) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def _observations(self, sources: list[str]) -> list:
        from ..features.hand_keypoints import HandKeypointDetector, extract_image_keypoints

        if self.workers != 1:
            return extract_image_keypoints(sources, workers=self.workers, views=self.views)
        if self._detector is None:
            self._detector = HandKeypointDetector(video=False, views=self.views)  # what extract_image_keypoints builds
        out = []
        for source in sources:
            try:
                out.append(self._detector.detect(source))
            except Exception as err:  # noqa: BLE001 - as extract_image_keypoints: the slot holds it
                out.append(err)
        return out

    def _extract_files(self, items: list) -> list:
        out = []
        for item, obs in zip(items, self._observations([str(i.source) for i in items])):
            if obs is None:
                out.append(NoHandDetectedError(item.source))
            elif isinstance(obs, BaseException):
                out.append(obs)
            else:
                out.append(obs.all_views() if self.views else obs.keypoints.astype(np.float32))
        return out


class HandPoseViewsExtractor(HandPoseExtractor):
    """Photo -> (V, 3, 21): the training keypoints first, then a small photo's further test-time views
    (`HandKeypointDetector(views=True)`), which a hand pose model averages its prediction over."""

    views = True

    @property
    def id(self) -> str:
        """The cache id of the views (the view geometries spelled in)."""
        from ..features import hand_keypoints as hk

        return super().id + ":views" + "+".join("-".join(map(str, g)) for g in hk.SMALL_PHOTO_VIEWS)


def hand_fraction(sequence: np.ndarray) -> float:
    """Share of frames (T, 3, 21) where a hand was found (non-zero keypoints)."""
    if len(sequence) == 0:
        return 0.0
    return float((np.abs(sequence).reshape(len(sequence), -1).sum(1) > 0).mean())


def keypoint_plan(session: MLTrainingSession, examples_and_skipped: tuple[list, list], extractor: KeypointExtractor,
                  max_iterations: int, batch: int) -> Plan:
    """The plan both hand tasks share: group examples by label, split, resolve item keys."""
    params = session.model_parameters
    examples, skipped = examples_and_skipped
    labeled: dict[str, list] = {}
    for ex in examples:
        labeled.setdefault(ex.label, []).append(ex)
    if not labeled and skipped:  # say why, not just "no images found"
        media = session.training_data._media
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise DataSourceError(f"no {media}s to train on in {session.training_data.description}: every entry was left "
                              f"out ({reasons}{more}); give it {media} files to train on")
    check_labeled(labeled, session.training_data.description, session.training_data._media)

    def resolve(source):
        out: dict[str, list] = {}
        for ex in source._examples()[0]:
            out.setdefault(ex.label, []).append(ex)
        return out

    train, val = split_for_validation(session, labeled, params.validation, type(session.training_data), resolve)
    ext_id = extractor.id
    train_items = [ex.item(ext_id, KEYPOINTS_GIVEN) for label in train for ex in train[label]]
    val_items = [ex.item(ext_id, KEYPOINTS_GIVEN) for label in val for ex in val[label]]
    session.summary.update({"labels": {k: len(v) for k, v in labeled.items()}, "training_examples": len(train_items),
                            "validation_examples": len(val_items), "skipped_files": skipped,
                            "source": session.training_data.description})
    return Plan(sorted(labeled), train_items, val_items, CachingExtractor(extractor), max_iterations,
                extraction_batch_size=batch, skipped=skipped)


def require_each_label(items: Sequence[Item], features: FeatureStore, labels: Iterable[str], what: str) -> None:
    """DataSourceError naming a label none of whose `what`s (photos, videos) has a hand, and its files."""
    have = {i.label for i in items if i.key in features.features}
    for label in labels:
        if label not in have:
            bad = [f"{i.name}: {features.failed.get(i.key, '?')}" for i in items if i.label == label]
            raise DataSourceError(f"label {label!r} has no {what} with a detected hand; its files: " + "; ".join(bad[:10]))


class HandTask(ClassifierTask):
    """What MLHandPoseClassifier and MLHandActionClassifier share: one algorithm (the GCN), a plan of hand
    keypoints (`_keypoint_extractor(params)` and `_extraction_batch` say which and how many at a time),
    8-bit weights by default (each task's choice is measured in benchmarks/export_precision.py), and an
    example without a hand counting as a wrong answer."""

    ModelAlgorithmType = ModelAlgorithmType
    default_precision = "int8"
    _no_detection_counts_as_wrong = True
    _extraction_batch = 8

    @classmethod
    def _keypoint_extractor(cls, params):
        raise NotImplementedError

    @classmethod
    def _plan(cls, session) -> Plan:
        params = session.model_parameters
        params.validate()
        return keypoint_plan(session, session.training_data._examples(), cls._keypoint_extractor(params),
                             params.maximum_iterations, batch=cls._extraction_batch)


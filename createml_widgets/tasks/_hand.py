"""What the two hand tasks share: parameters validation, the keypoint extractor, skeleton pictures."""
from __future__ import annotations

import enum

import numpy as np

from ..errors import NoHandDetectedError, ParameterError


class ModelAlgorithmType(enum.Enum):
    """Create ML's hand classifiers have one algorithm: a graph convolutional network."""

    GCN = "gcn"

    def __str__(self) -> str:
        return self.value


def check_positive_int(name: str, value, upper: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        allowed = f"an int from 1 to {upper}" if upper else "a positive int"
        raise ParameterError(name, value, allowed)


def mediapipe_id() -> str:
    from ..features import hand_keypoints as hk

    try:
        import mediapipe

        version = mediapipe.__version__
    except ImportError:  # pragma: no cover
        version = "?"
    return f"mediapipe-hands:{version}:retry{hk.RETRY_SHORT_SIDE}:pad{hk.RETRY_PAD_FRACTION}"


class HandPoseExtractor:
    """Photo -> (1, 3, 21) keypoints of the most confident hand, in parallel worker processes."""

    def __init__(self, workers: int | None = None):
        self.workers = workers

    @property
    def id(self) -> str:
        return mediapipe_id() + ":static"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def extract(self, items: list) -> list:
        from ..features.hand_keypoints import extract_image_keypoints

        results: list = [None] * len(items)
        files = []
        for i, item in enumerate(items):
            if item.payload is not None:
                results[i] = np.asarray(item.payload, dtype=np.float32).reshape(1, 3, 21)
            else:
                files.append(i)
        observations = extract_image_keypoints([str(items[i].source) for i in files], workers=self.workers)
        for i, obs in zip(files, observations):
            if obs is None:
                results[i] = NoHandDetectedError(items[i].source)
            elif isinstance(obs, BaseException):
                results[i] = obs
            else:
                results[i] = obs.keypoints.astype(np.float32)
        return results


def hand_fraction(sequence: np.ndarray) -> float:
    """Share of frames (T, 3, 21) where a hand was found (non-zero keypoints)."""
    if len(sequence) == 0:
        return 0.0
    return float((np.abs(sequence).reshape(len(sequence), -1).sum(1) > 0).mean())

"""MLHandPoseClassifier: a graph convolutional network over hand keypoints from photos."""
from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.keypoint_sources import KeypointDataSource
from ..data.validation import ValidationData
from ..errors import NoHandDetectedError
from ..features.cache import CachingExtractor
from ..features.image_io import is_image_file, source_name
from ..features.keypoint_augment import augment_keypoints
from ..nets import HandPoseGCN
from ..nets.training import TensorData, Trainer
from ._base import Plan
from ._fields import DeclaredParameters, declared_parameters
from ._hand import (  # noqa: F401 - keypoint_plan and require_each_label were defined here
    KEYPOINTS_GIVEN,
    HandPoseExtractor,
    HandPoseViewsExtractor,
    HandTask,
    ModelAlgorithmType,
    algorithm_field,
    batch_size_field,
    keypoint_plan,
    maximum_iterations_field,
    require_each_label,
    validation_field,
)

if TYPE_CHECKING:
    from ..data.items import Item
    from ..features.hand_detector import HandObservation
    from ..features.image_io import ImageSource
    from ..session_store import FeatureStore


class _DataSource(KeypointDataSource):
    """Labelled hand photos (folders, names, annotation file, data frame) or keypoints."""

    _media, _task = "image", "MLHandPoseClassifier"

    @staticmethod
    def _is_media(path) -> bool:
        return is_image_file(path)

    @classmethod
    def directory_with_images_and_annotation(cls, path: str | os.PathLike, annotation_file: str | os.PathLike,
                                             image_column: str = "image", label_column: str = "label"):
        """Images in `path` listed in a CSV or JSON `annotation_file` with their labels."""
        return cls._annotated(path, annotation_file, image_column, label_column)

    @classmethod
    def labeled_image_data_frame(cls, df, image_column: str = "image", label_column: str = "label"):
        """A pandas DataFrame of image paths and labels."""
        return cls._media_frame(df, image_column, label_column)

    def extract_keypoints(self, workers: int | None = None):
        """A DataFrame (session_id, label, keypoints, chirality, confidence) — one row per photo with a hand.

        It round-trips: `labeled_keypoints_data_frame(df)` trains on it without MediaPipe. Photos with no
        detected hand are left out and listed in `df.attrs["no_hand"]` (and a warning).
        """
        import warnings

        import pandas as pd

        from ..features.hand_keypoints import extract_image_keypoints

        examples, skipped = self._examples()
        if self.kind == "keypoints_data_frame":
            return pd.DataFrame({"session_id": [e.session_id for e in examples], "label": [e.label for e in examples],
                                 "keypoints": [e.keypoints for e in examples]})
        observations = extract_image_keypoints([str(e.source) for e in examples], workers=workers)
        rows, missing = [], []
        for e, obs in zip(examples, observations):
            if obs is None or isinstance(obs, BaseException):
                missing.append({"path": str(e.source), "reason": "no hand detected" if obs is None else str(obs)})
                continue
            rows.append({"session_id": str(e.source), "label": e.label, "keypoints": obs.keypoints,
                         "chirality": obs.chirality, "confidence": obs.confidence})
        df = pd.DataFrame(rows, columns=["session_id", "label", "keypoints", "chirality", "confidence"])
        df.attrs["no_hand"] = missing + skipped
        if missing:
            warnings.warn(f"no hand detected in {len(missing)} photos: "
                          + ", ".join(m["path"] for m in missing[:10]), stacklevel=2)
        return df


class ImageAugmentationOptions(enum.Flag):
    """Augmentations that act on the pose (keypoints), not on pixels."""

    HORIZONTALLY_FLIP = 1
    ROTATE = 2
    SCALE = 4
    TRANSLATE = 8


@declared_parameters
class _ModelParameters(DeclaredParameters):
    """GCN training parameters: validation, batch size (32), maximum iterations (80), augmentations."""

    validation: ValidationData = validation_field()
    batch_size: int = batch_size_field()
    maximum_iterations: int = maximum_iterations_field()
    augmentation_options: ImageAugmentationOptions = field(default=ImageAugmentationOptions(0), metadata={
        "title": "Extra variations", "createml": "augmentationOptions", "cli": "--augment",
        "help": "Adds moved, turned, scaled or mirrored copies of each hand, so the model copes with hands held differently. Helps with few photos; each option makes training slower."})
    algorithm: ModelAlgorithmType = algorithm_field("poses")

    _data_source = _DataSource
    ValidationData = ValidationData
    ModelAlgorithmType = ModelAlgorithmType


def keypoint_tensors(items: Sequence[Item], features: FeatureStore, labels: Sequence[str]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 3, 21) keypoints and (N,) label indices of the items whose keypoints were extracted."""
    index = {label: i for i, label in enumerate(labels)}
    rows = [(features.features[i.key], index[i.label]) for i in items if i.key in features.features]
    if not rows:
        return torch.zeros(0, 1, 3, 21), torch.zeros(0, dtype=torch.long)
    x = torch.from_numpy(np.stack([r[0].reshape(1, 3, 21) for r in rows]).astype(np.float32))
    return x, torch.tensor([r[1] for r in rows], dtype=torch.long)


class MLHandPoseClassifier(HandTask):
    """A hand pose classifier trained on photos of hands (Create ML's MLHandPoseClassifier).

    Keypoints come from MediaPipe Hands in Apple Vision's layout, so the exported Core ML model takes
    exactly what `VNHumanHandPoseObservation.keypointsMultiArray()` gives.
    """

    DataSource = _DataSource
    ModelParameters = _ModelParameters
    ImageAugmentationOptions = ImageAugmentationOptions
    ValidationData = ValidationData
    _what = "image"
    _extraction_batch = 128  # (8-bit weights: 200/200 sample photos keep float32's answer)

    @classmethod
    def _keypoint_extractor(cls, params) -> HandPoseExtractor:
        return HandPoseExtractor()

    @classmethod
    def _make_trainer(cls, session, plan: Plan) -> Trainer:
        params: _ModelParameters = session.model_parameters
        require_each_label(plan.train, session.features, plan.labels, "photo")
        x, y = keypoint_tensors(plan.train, session.features, plan.labels)
        vx, vy = keypoint_tensors(plan.validation, session.features, plan.labels)
        opts = params.augmentation_options
        augment = None
        if opts:
            flags = {"flip": ImageAugmentationOptions.HORIZONTALLY_FLIP in opts,
                     "rotate": ImageAugmentationOptions.ROTATE in opts,
                     "scale": ImageAugmentationOptions.SCALE in opts,
                     "translate": ImageAugmentationOptions.TRANSLATE in opts}
            augment = lambda batch, g: augment_keypoints(batch, g, **flags)  # noqa: E731
        net = HandPoseGCN(len(plan.labels))
        return Trainer(net, TensorData(x, y, augment), TensorData(vx, vy) if len(vy) else None,
                       batch_size=params.batch_size, optimizer="adam", learning_rate=3e-3, weight_decay=1e-4,
                       seed=session.split_seed or 0)

    def _init_after_training(self, session, plan) -> None:
        # A few photos per label with their keypoints, for the skeleton pictures in _repr_html_.
        self._display_examples = []
        seen: dict[str, int] = {}
        for item in plan.train:
            if item.key in session.features.features and item.payload is None and seen.get(item.label, 0) < 1:
                seen[item.label] = seen.get(item.label, 0) + 1
                self._display_examples.append((item.label, str(item.source), session.features.features[item.key]))

    # -- prediction ----------------------------------------------------------------------------------
    # Photos are evaluated and predicted on their test-time views (`HandPoseViewsExtractor`: a small
    # photo's keypoints with 30/40/50 % borders); the answer is the mean of the views' probabilities.
    def _make_extractor(self):
        return CachingExtractor(HandPoseViewsExtractor())

    def _evaluation_items(self, source):
        examples, skipped = source._examples()
        ext_id = HandPoseViewsExtractor().id
        return [ex.item(ext_id, KEYPOINTS_GIVEN) for ex in examples], skipped

    def _predict_features(self, features: list[np.ndarray]) -> np.ndarray:
        """(N, K): each example's (V, 3, 21) keypoints (V views; 1 for training keypoints) -> the mean of its views' probabilities."""
        views = [np.asarray(f, dtype=np.float32).reshape(-1, 1, 3, 21) for f in features]
        probs = self._probabilities(torch.from_numpy(np.concatenate(views)))
        if all(len(v) == 1 for v in views):
            return probs
        ends = np.cumsum([len(v) for v in views])
        return np.stack([probs[e - len(v):e].mean(axis=0) for v, e in zip(views, ends)])

    def _detector(self):
        if self._prediction_extractor is None:
            from ..features.hand_keypoints import HandKeypointDetector

            self._prediction_extractor = HandKeypointDetector(video=False, views=True)
        return self._prediction_extractor

    def keypoints(self, image: ImageSource) -> HandObservation:
        """The HandObservation (keypoints in Vision's layout, chirality) found in `image`; raises if none.

        A photo under 256 px on its short side also carries its test-time views (`observation.views`);
        `prediction_from_keypoints(observation.all_views())` is then `prediction(image)`.
        """
        obs = self._detector().detect(image)
        if obs is None:
            raise NoHandDetectedError(source_name(image))
        return obs

    def prediction_from_keypoints(self, keypoints: np.ndarray) -> list[tuple[str, float]]:
        """Every label with its confidence for (1, 3, 21) keypoints (or (V, 3, 21) views of one hand, their
        probabilities averaged), most confident first."""
        return self._ranked(self._predict_features([np.asarray(keypoints, dtype=np.float32)])[0])

    def _probabilities_of(self, image) -> np.ndarray:
        return self._predict_features([self.keypoints(image).all_views()])[0]

    def prediction(self, image: ImageSource) -> list[tuple[str, float]]:
        """Every label with its confidence for the hand in `image` (path, PIL image or array).

        Raises NoHandDetectedError when no hand is found in the photo.
        """
        return self.ranked_prediction(image)

    def predictions(self, images: Iterable[ImageSource]) -> list[list[tuple[str, float]]]:
        """`prediction` of each image."""
        return [self.prediction(image) for image in images]

    # -- Core ML ---------------------------------------------------------------------------------------
    def _export(self, fmt: str, metadata):
        from ..export import keypoint_classifier_model

        return keypoint_classifier_model(self._net, self._labels, 1, fmt=fmt, metadata=metadata,
                                         training_info=self._training_info())

    def _onnx(self, metadata):
        from ..export.onnx_export import keypoint_classifier_onnx

        return keypoint_classifier_onnx(self._net, self._labels, 1, metadata=metadata,
                                        training_info=self._training_info())

    def _extra_html(self) -> str:
        from ..display import figure_gallery_html
        from ..features.hand_keypoints import draw_hand
        from ..features.image_io import load_image

        figures = []
        for label, path, kp in self._display_examples[:12]:
            try:
                figures.append((label, draw_hand(load_image(path), kp)))
            except Exception:  # noqa: BLE001 - a moved file must not break the view
                continue
        return figure_gallery_html("Hand keypoints (examples)", figures, 120)

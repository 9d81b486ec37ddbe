"""MLImageClassifier: transfer learning on image embeddings (Create ML's image classifier)."""
from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.items import (
    Item,
    check_labeled,
    files_by_label_checked,
    scan_labeled_directories,
    scan_labeled_files,
)
from ..data.split import MLSplitStrategy, stratified_split
from ..data.validation import ValidationData
from ..errors import DataSourceError
from ..features.cache import CachingExtractor
from ..features.image_embedding import (
    ImageEmbeddingExtractor,
    load_backbone,
    model_input_size,
    preprocess,
)
from ..features.image_io import is_image_file, load_image
from ..nets import MLPHead
from ..nets.logistic import LogisticRegressionTrainer
from ..nets.training import TensorData, Trainer
from ._base import ClassifierTask, Plan, split_for_validation
from ._fields import DeclaredParameters, declared_parameters, training_rounds_field, validation_field
from .image_algorithm import ClassifierType, CustomFeatureExtractor, FeatureExtractorType, ModelAlgorithmType

if TYPE_CHECKING:
    from ..features.image_io import ImageSource


class _DataSource:
    """Where labelled images come from: `labeled_directories`, `labeled_files` or `files_by_label`."""

    def __init__(self, kind: str, value):
        self.kind, self.value = kind, value

    @classmethod
    def labeled_directories(cls, path: str | os.PathLike) -> _DataSource:
        """One subfolder per label: `path/cat/1.jpg`, `path/dog/2.jpg`."""
        return cls("labeled_directories", Path(path))

    @classmethod
    def labeled_files(cls, path: str | os.PathLike) -> _DataSource:
        """Files in one folder, labelled by the name up to the first period: `cat.1.jpg`."""
        return cls("labeled_files", Path(path))

    @classmethod
    def files_by_label(cls, files: dict) -> _DataSource:
        """An explicit {label: [paths]} dictionary."""
        return cls("files_by_label", files_by_label_checked(files, is_image_file, "an image"))

    def _scan(self) -> tuple[dict[str, list[Path]], list[dict]]:
        if self.kind == "labeled_directories":
            return scan_labeled_directories(self.value, is_image_file, "an image")
        if self.kind == "labeled_files":
            return scan_labeled_files(self.value, is_image_file, "an image")
        return {k: list(v) for k, v in self.value.items()}, []

    def labeled_images(self) -> dict[str, list[Path]]:
        """{label: [image paths]}."""
        return self._scan()[0]

    def stratified_split(self, proportions, seed: int = 0) -> list[dict[str, list[Path]]]:
        """Split into parts with the given proportions, keeping each label's share in each part."""
        labeled = self.labeled_images()
        flat = [(label, p) for label in labeled for p in labeled[label]]
        parts = stratified_split([f[0] for f in flat], list(proportions), seed)
        out = []
        for idx in parts:
            d: dict[str, list[Path]] = {}
            for i in idx:
                d.setdefault(flat[i][0], []).append(flat[i][1])
            out.append(d)
        return out

    @property
    def description(self) -> str:
        return f"{self.kind}({self.value if self.kind != 'files_by_label' else f'{len(self.value)} labels'})"

    def __repr__(self) -> str:
        return f"MLImageClassifier.DataSource.{self.description}"

    def __eq__(self, other) -> bool:
        return isinstance(other, _DataSource) and (self.kind, self.value) == (other.kind, other.value)

    def to_dict(self, root=None) -> dict:
        if self.kind == "files_by_label":
            return {"kind": self.kind, "value": {k: [str(p) for p in v] for k, v in self.value.items()}}
        return {"kind": self.kind, "value": str(self.value)}

    @classmethod
    def from_dict(cls, d: dict, root=None) -> _DataSource:
        if d["kind"] == "files_by_label":
            return cls.files_by_label(d["value"])
        return cls(d["kind"], Path(d["value"]))


class ImageAugmentationOptions(enum.Flag):
    """Extra training examples Create ML can generate; each option adds one copy per image."""

    CROP = 1
    ROTATION = 2
    BLUR = 4
    EXPOSURE = 8
    NOISE = 16
    FLIP = 32


@declared_parameters
class _ModelParameters(DeclaredParameters):
    """Training parameters (Create ML defaults: automatic split, 25 iterations, no augmentation,
    scene_print revision 1 with a logistic regressor)."""

    validation: ValidationData = validation_field()
    max_iterations: int = training_rounds_field(25, "maxIterations")
    augmentation: ImageAugmentationOptions = field(default=ImageAugmentationOptions(0), metadata={
        "title": "Extra variations", "createml": "augmentationOptions", "cli": "--augment",
        "help": "Adds changed copies of each photo (cropped, rotated, blurred, darker or lighter, noisy, flipped) so the model copes with such photos. Helps with few photos; each option makes training slower."})
    algorithm: ModelAlgorithmType = field(default_factory=ModelAlgorithmType, metadata={
        "title": "How it learns", "createml": "algorithm", "cli": ("--revision", "--mlp"), "inline": True,
        "expects": "ModelAlgorithmType.transfer_learning(...)",
        "help": "Image features from a network trained on millions of photos (scene print), then a small classifier on top. The simple classifier is fast and fine for most tasks; the neural network can do better with many photos. Revision 2 features are larger and slower."})

    _data_source = _DataSource
    ValidationData = ValidationData
    ClassifierType = ClassifierType
    ModelAlgorithmType = ModelAlgorithmType

    @property
    def feature_extractor(self) -> FeatureExtractorType:
        return self.algorithm.feature_extractor

    @property
    def classifier(self) -> ClassifierType:
        return self.algorithm.classifier

    @property
    def augmentation_options(self) -> ImageAugmentationOptions:
        return self.augmentation


def logistic_weight_decay(examples: int) -> float:
    """The logistic regressor's L2 weight on its mean cross-entropy: 1 / N, which makes its objective
    scikit-learn's LogisticRegression(C=1) (sum of cross-entropies + |W|^2 / 2). The fixed 1e-3 it
    replaced let 25 iterations fit the training photos exactly and held-out accuracy fall below that
    baseline (benchmarks/README.md, "Accuracy against plain baselines")."""
    return 1.0 / max(1, int(examples))


def _augmentation_names(options: ImageAugmentationOptions) -> list[str]:
    return [flag.name.lower() for flag in ImageAugmentationOptions if flag in options]


class MLImageClassifier(ClassifierTask):
    """A model you train to classify images (Create ML's MLImageClassifier).

    >>> from createml_widgets import MLImageClassifier, samples
    >>> data = MLImageClassifier.DataSource.labeled_directories(samples.sign_language_digits())
    >>> model = MLImageClassifier(data)                     # doctest: +SKIP
    >>> model.prediction("photo.jpg")                        # doctest: +SKIP
    '3'
    """

    DataSource = _DataSource
    ModelParameters = _ModelParameters
    FeatureExtractorType = FeatureExtractorType
    CustomFeatureExtractor = CustomFeatureExtractor
    ImageAugmentationOptions = ImageAugmentationOptions
    ModelAlgorithmType = ModelAlgorithmType
    ClassifierType = ClassifierType
    ValidationData = ValidationData
    _what = "image"

    # -- engine hooks ----------------------------------------------------------------------------
    @classmethod
    def _plan(cls, session) -> Plan:
        params: _ModelParameters = session.model_parameters
        params.validate()
        labeled, skipped = session.training_data._scan()
        check_labeled(labeled, session.training_data.description, "image")

        def resolve(source):
            val_labeled, _ = source._scan()
            return val_labeled

        train, val = split_for_validation(session, labeled, params.validation, _DataSource, resolve)
        extractor = ImageEmbeddingExtractor(params.feature_extractor)
        ext_id = extractor.id
        train_items = [Item(p, label).resolve_key(ext_id) for label in train for p in train[label]
                       if _exists_or_skip(p, skipped, label)]
        val_items = [Item(p, label).resolve_key(ext_id) for label in val for p in val[label]
                     if _exists_or_skip(p, skipped, label)]
        for name in _augmentation_names(params.augmentation):
            train_items += [Item(i.source, i.label, variant=name, group=i.group).resolve_key(ext_id)
                            for i in train_items if not i.variant]
        labels = sorted(labeled)
        session.summary.update({"labels": {k: len(v) for k, v in labeled.items()},
                                "training_examples": sum(1 for i in train_items if not i.variant),
                                "augmented_examples": sum(1 for i in train_items if i.variant),
                                "validation_examples": len(val_items), "skipped_files": skipped,
                                "source": session.training_data.description})
        return Plan(labels, train_items, val_items, CachingExtractor(extractor), params.max_iterations,
                    extraction_batch_size=32, skipped=skipped)

    @classmethod
    def _make_trainer(cls, session, plan: Plan) -> Trainer:
        params: _ModelParameters = session.model_parameters
        x, y = _tensors(plan.train, session.features, plan.labels, session.summary)
        vx, vy = _tensors(plan.validation, session.features, plan.labels)
        dim = x.shape[1]
        if params.classifier.kind == "logistic_regressor":
            return LogisticRegressionTrainer(x, y, vx, vy, len(plan.labels), weight_decay=logistic_weight_decay(len(y)),
                                             seed=session.split_seed or 0)
        net = MLPHead(dim, len(plan.labels), params.classifier.layer_sizes)
        return Trainer(net, TensorData(x, y), TensorData(vx, vy) if len(vy) else None, batch_size=32,
                       optimizer="adam", learning_rate=1e-3, weight_decay=1e-4, seed=session.split_seed or 0)

    def _init_after_training(self, session, plan) -> None:
        self._feature_extractor_type = session.model_parameters.feature_extractor

    # -- prediction --------------------------------------------------------------------------------
    def _make_extractor(self):
        return CachingExtractor(ImageEmbeddingExtractor(self._feature_extractor_type))

    def _evaluation_items(self, source):
        labeled, skipped = source._scan()
        ext_id = ImageEmbeddingExtractor(self._feature_extractor_type).id
        return [Item(p, label).resolve_key(ext_id) for label in labeled for p in labeled[label]
                if _exists_or_skip(p, skipped)], skipped

    def _predict_features(self, features: list[np.ndarray]) -> np.ndarray:
        return self._probabilities(torch.from_numpy(np.stack(features)))

    def _backbone(self):
        if self._prediction_extractor is None:
            self._prediction_extractor = ImageEmbeddingExtractor(self._feature_extractor_type)
            self._prediction_extractor.backbone = load_backbone(self._feature_extractor_type).eval()
        return self._prediction_extractor

    def prediction_probabilities(self, source: ImageSource) -> dict[str, float]:
        """{label: probability} for one image (path, PIL image or numpy array)."""
        return {label: float(p) for label, p in zip(self._labels, self._probabilities_of(source))}

    def _probabilities_of(self, source) -> np.ndarray:
        return self._probabilities_for([source])[0]

    def _probabilities_for(self, sources) -> np.ndarray:
        ex = self._backbone()
        pixels = np.stack([preprocess(load_image(s), ex.input_size) for s in sources])
        return self._predict_features(list(ex.embed(pixels)))

    def prediction(self, source: ImageSource) -> str:
        """The most likely label of one image (path, pathlib.Path, PIL image or numpy array)."""
        return self.ranked_prediction(source)[0][0]

    def predictions(self, sources: Sequence[ImageSource]) -> list[str]:
        """The most likely label of each image."""
        out = []
        for start in range(0, len(sources), 32):
            out += [self._ranked(p)[0][0] for p in self._probabilities_for(sources[start:start + 32])]
        return out

    # -- Core ML -----------------------------------------------------------------------------------
    def _export(self, fmt: str, metadata):
        from ..export import image_classifier_model
        from ..nets import EfficientNetLiteFeatures

        fe = self._feature_extractor_type
        backbone = EfficientNetLiteFeatures(fe.backbone_name) if fe.kind == "scene_print" else fe.custom.load()
        return image_classifier_model(backbone, self._net, self._labels, fmt=fmt, metadata=metadata,
                                      training_info=self._training_info(),
                                      input_size=model_input_size(fe.input_size))

    def _onnx(self, metadata):
        from ..export.onnx_export import image_classifier_onnx
        from ..nets import EfficientNetLiteFeatures

        fe = self._feature_extractor_type
        backbone = EfficientNetLiteFeatures(fe.backbone_name) if fe.kind == "scene_print" else fe.custom.load()
        return image_classifier_onnx(backbone, self._net, self._labels, input_size=model_input_size(fe.input_size),
                                     metadata=metadata, training_info=self._training_info())

def _exists_or_skip(path: Path, skipped: list[dict], label: str | None = None) -> bool:
    if os.path.isfile(path):
        return True
    p = Path(path)
    if not p.exists():
        reason = "the file does not exist"
    elif p.is_dir():
        reason = ("a folder, not an image file: list the images inside it, or use DataSource.labeled_directories "
                  "for a folder of label folders")
    else:
        reason = "not a file"
    skipped.append({"path": str(p), "reason": reason, **({"label": label} if label is not None else {})})
    return False


def _tensors(items, features, labels, summary: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    index = {label: i for i, label in enumerate(labels)}
    rows = [(i.key, index[i.label]) for i in items if i.key in features.features]
    if summary is not None:
        usable = {label: 0 for label in labels}
        for i in items:
            if i.key in features.features and not i.variant:
                usable[i.label] += 1
        empty = [label for label, n in usable.items() if n == 0]
        if empty:
            bad = [f"{i.name}: {features.failed.get(i.key, '?')}" for i in items if i.label == empty[0]]
            if bad:
                raise DataSourceError(f"label {empty[0]!r} has no readable image; its files: " + "; ".join(bad[:10]))
            left_out = [f"{s['path']}: {s['reason']}" for s in summary.get("skipped_files", [])
                        if s.get("label") == empty[0]]
            raise DataSourceError(f"label {empty[0]!r} has no image to train on: "
                                  + ("every entry listed for it was left out (" + "; ".join(left_out[:10]) + ")"
                                     if left_out else "none of its images is in the training set")
                                  + "; give it image files to train on")
    if not rows:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    # mapped from the session folder when it has one: training holds one copy of the features, in the page cache
    x = torch.from_numpy(features.matrix([r[0] for r in rows]))
    y = torch.tensor([r[1] for r in rows], dtype=torch.long)
    return x, y


__all__ = ["MLImageClassifier", "MLSplitStrategy"]

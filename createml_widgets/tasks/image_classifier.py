"""MLImageClassifier: transfer learning on image embeddings (Create ML's image classifier)."""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

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
from ..errors import DataSourceError, ParameterError
from ..features.cache import CachingExtractor
from ..features.image_embedding import (
    LATEST_SCENE_PRINT,
    SCENE_PRINT_BACKBONES,
    ImageEmbeddingExtractor,
    load_backbone,
    model_input_size,
    preprocess,
)
from ..features.image_io import is_image_file, load_image
from ..nets import MLPHead
from ..nets.efficientnet import VARIANTS
from ..nets.logistic import LogisticRegressionTrainer
from ..nets.training import TensorData, Trainer
from ._base import ClassifierTask, Plan, split_for_validation


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


@dataclass(frozen=True)
class CustomFeatureExtractor:
    """Your own image network as the feature extractor.

    `model_path`: a TorchScript file (`torch.jit.save`) or an `nn.Module`, taking (N, 3, S, S)
    RGB in [0, 1] and returning (N, D) features — or a dict/tuple, from which `output_name`
    selects one. `input_size`: S (default: the module's `input_size` attribute, else 224).
    """

    model_path: object
    output_name: str | None = None
    input_size: int | None = None

    def load(self) -> torch.nn.Module:
        if isinstance(self.model_path, torch.nn.Module):
            module = self.model_path
        else:
            path = Path(self.model_path)
            if not path.exists():
                raise ParameterError("CustomFeatureExtractor.model_path", str(path), "an existing TorchScript file")
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as err:  # noqa: BLE001
                raise ParameterError("CustomFeatureExtractor.model_path", str(path),
                                     f"a TorchScript file saved with torch.jit.save ({err.__class__.__name__})") from err
        selected = _SelectOutput(module.eval(), self.output_name, self.resolved_input_size(module))
        selected.check()
        return selected

    def resolved_input_size(self, module=None) -> int:
        if self.input_size:
            return int(self.input_size)
        module = module if module is not None else (self.model_path if isinstance(self.model_path, torch.nn.Module) else None)
        return int(getattr(module, "input_size", 224)) if module is not None else 224


class _SelectOutput(torch.nn.Module):
    """The user's network with `output_name` picked out of a dict (by key) or tuple (by index)."""

    def __init__(self, module, output_name, input_size):
        super().__init__()
        self.module, self.output_name, self.input_size = module, output_name, input_size

    def check(self) -> None:
        """Run one blank image through the network, so a wrong output name fails before extraction."""
        with torch.inference_mode():
            out = self(torch.zeros(1, 3, self.input_size, self.input_size))
        if out.ndim != 2 or out.shape[1] == 0:
            raise ParameterError("CustomFeatureExtractor.model_path", "the model",
                                 f"a network returning (N, D) features; its output has shape {tuple(out.shape)}")

    def _wrong_name(self, allowed: str) -> ParameterError:
        return ParameterError("CustomFeatureExtractor.output_name", self.output_name, allowed)

    def forward(self, x):
        out = self.module(x)
        if isinstance(out, dict):
            if self.output_name is None:
                if len(out) != 1:
                    raise ParameterError("CustomFeatureExtractor.output_name", None,
                                         f"one of {sorted(out)} (the model has several outputs)")
                return next(iter(out.values())).flatten(1)
            if self.output_name not in out:
                raise self._wrong_name(f"one of the model's outputs {sorted(out)}")
            return out[self.output_name].flatten(1)
        if isinstance(out, (tuple, list)):
            name = 0 if self.output_name is None else self.output_name
            try:
                index = int(name)
                if not -len(out) <= index < len(out):
                    raise IndexError(index)
            except (TypeError, ValueError, IndexError):
                raise self._wrong_name(f"the index of one of the model's {len(out)} outputs "
                                       f"(0 to {len(out) - 1}; it returns a tuple)") from None
            return out[index].flatten(1)
        return out.flatten(1)  # one unnamed output: the only choice, whatever output_name says


@dataclass(frozen=True)
class FeatureExtractorType:
    """`scene_print(revision)`: a bundled pretrained EfficientNet-Lite; `custom(...)`: your own network."""

    kind: str = "scene_print"
    revision: int | None = 1
    custom: CustomFeatureExtractor | None = None

    @classmethod
    def scene_print(cls, revision: int | None = 1) -> FeatureExtractorType:
        return cls("scene_print", revision)

    @classmethod
    def custom_extractor(cls, extractor: CustomFeatureExtractor) -> FeatureExtractorType:
        return cls("custom", None, extractor)

    def validate(self) -> None:
        if self.kind == "scene_print":
            if self.revision is not None and self.revision not in SCENE_PRINT_BACKBONES:
                raise ParameterError("FeatureExtractorType.scene_print(revision)", self.revision,
                                     f"one of {sorted(SCENE_PRINT_BACKBONES)} or None (latest)")
        elif self.kind == "custom":
            if not isinstance(self.custom, CustomFeatureExtractor):
                raise ParameterError("FeatureExtractorType.custom", self.custom, "a CustomFeatureExtractor")
            mp = self.custom.model_path
            if not isinstance(mp, torch.nn.Module) and not Path(mp).is_file():
                raise ParameterError("CustomFeatureExtractor.model_path", str(mp),
                                     "an existing TorchScript file (torch.jit.save) or an nn.Module")
        else:
            raise ParameterError("FeatureExtractorType.kind", self.kind, "scene_print or custom")

    @property
    def backbone_name(self) -> str | None:
        return SCENE_PRINT_BACKBONES[self.revision or LATEST_SCENE_PRINT] if self.kind == "scene_print" else None

    @property
    def input_size(self) -> int:
        if self.kind == "scene_print":
            return VARIANTS[self.backbone_name][2]
        return self.custom.resolved_input_size()

    @property
    def cache_id(self) -> str:
        if self.kind == "scene_print":
            return f"scene_print:{self.backbone_name}"
        mp = self.custom.model_path
        if isinstance(mp, torch.nn.Module):
            from ..features.cache import array_digest

            flat = torch.cat([p.detach().flatten() for p in mp.state_dict().values()]) if mp.state_dict() else torch.zeros(1)
            ident = array_digest(flat.numpy())
        else:
            from ..features.cache import file_digest

            ident = file_digest(mp)
        return f"custom:{ident}:{self.custom.output_name}:{self.input_size}"

    def __str__(self) -> str:
        if self.kind == "scene_print":
            return f"scenePrint(revision: {self.revision}) [{self.backbone_name}]"
        return f"custom({self.custom.model_path}, output: {self.custom.output_name})"

    def to_dict(self, root=None) -> dict:
        if self.kind == "custom" and isinstance(self.custom.model_path, torch.nn.Module):
            raise ParameterError("CustomFeatureExtractor.model_path", "an nn.Module",
                                 "a TorchScript file path when training with a session directory")
        d = {"kind": self.kind, "revision": self.revision}
        if self.custom is not None:
            d["custom"] = {"model_path": str(self.custom.model_path), "output_name": self.custom.output_name,
                           "input_size": self.custom.input_size}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureExtractorType:
        if d["kind"] == "custom":
            return cls("custom", None, CustomFeatureExtractor(**d["custom"]))
        return cls("scene_print", d.get("revision"))


# Create ML spells it FeatureExtractorType.custom(...); `custom` is also the field name, so the
# constructor is attached after the class body.
FeatureExtractorType.custom = staticmethod(FeatureExtractorType.custom_extractor)  # type: ignore[assignment]


@dataclass(frozen=True)
class ClassifierType:
    """`logistic_regressor()` (default) or `multilayer_perceptron(layer_sizes)`."""

    kind: str = "logistic_regressor"
    layer_sizes: tuple[int, ...] = ()

    @classmethod
    def logistic_regressor(cls) -> ClassifierType:
        return cls("logistic_regressor")

    @classmethod
    def multilayer_perceptron(cls, layer_sizes) -> ClassifierType:
        return cls("multilayer_perceptron", tuple(layer_sizes))

    def validate(self) -> None:
        if self.kind == "multilayer_perceptron":
            if not self.layer_sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                               for s in self.layer_sizes):
                raise ParameterError("ClassifierType.multilayer_perceptron(layer_sizes)", list(self.layer_sizes),
                                     "a non-empty list of positive ints (hidden units per layer)")
        elif self.kind != "logistic_regressor":
            raise ParameterError("ClassifierType.kind", self.kind, "logistic_regressor or multilayer_perceptron")

    def __str__(self) -> str:
        return "logisticRegressor" if self.kind == "logistic_regressor" else f"multilayerPerceptron({list(self.layer_sizes)})"


@dataclass(frozen=True)
class ModelAlgorithmType:
    """`transfer_learning(feature_extractor, classifier)`: Create ML's only image algorithm."""

    feature_extractor: FeatureExtractorType = field(default_factory=FeatureExtractorType.scene_print)
    classifier: ClassifierType = field(default_factory=ClassifierType.logistic_regressor)

    @classmethod
    def transfer_learning(cls, feature_extractor: FeatureExtractorType | None = None,
                          classifier: ClassifierType | None = None) -> ModelAlgorithmType:
        return cls(feature_extractor or FeatureExtractorType.scene_print(1),
                   classifier or ClassifierType.logistic_regressor())

    def __str__(self) -> str:
        return f"transferLearning({self.feature_extractor}, {self.classifier})"


@dataclass
class _ModelParameters:
    """Training parameters (Create ML defaults: automatic split, 25 iterations, no augmentation,
    scene_print revision 1 with a logistic regressor)."""

    validation: ValidationData = field(default_factory=ValidationData.split, metadata={
        "title": "Held-out data", "createml": "validation",
        "help": "Some examples kept out of training to measure the model on photos it has not seen. Automatic: none under 50 examples, 10% under 200, else 5%. Hold out more (20%) for a fairer score on a small dataset."})
    max_iterations: int = field(default=25, metadata={
        "title": "Training rounds", "createml": "maxIterations",
        "help": "How many passes training makes at most. More can raise accuracy until it levels off; fewer trains faster. Raise it if the accuracy curve is still climbing at the end."})
    augmentation: ImageAugmentationOptions = field(default=ImageAugmentationOptions(0), metadata={
        "title": "Extra variations", "createml": "augmentationOptions",
        "help": "Adds changed copies of each photo (cropped, rotated, blurred, darker or lighter, noisy, flipped) so the model copes with such photos. Helps with few photos; each option makes training slower."})
    algorithm: ModelAlgorithmType = field(default_factory=ModelAlgorithmType, metadata={
        "title": "How it learns", "createml": "algorithm",
        "help": "Image features from a network trained on millions of photos (scene print), then a small classifier on top. The simple classifier is fast and fine for most tasks; the neural network can do better with many photos. Revision 2 features are larger and slower."})

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

    def validate(self) -> None:
        if isinstance(self.max_iterations, bool) or not isinstance(self.max_iterations, int) or self.max_iterations < 1:
            raise ParameterError("max_iterations", self.max_iterations, "a positive int (Create ML's default is 25)")
        if not isinstance(self.augmentation, ImageAugmentationOptions):
            raise ParameterError("augmentation", self.augmentation,
                                 "ImageAugmentationOptions flags, e.g. ImageAugmentationOptions.CROP | .FLIP")
        if not isinstance(self.validation, ValidationData):
            raise ParameterError("validation", self.validation, "a ValidationData (split, data_source, dictionary, none)")
        self.validation.validate(_DataSource)
        if not isinstance(self.algorithm, ModelAlgorithmType):
            raise ParameterError("algorithm", self.algorithm, "ModelAlgorithmType.transfer_learning(...)")
        self.algorithm.feature_extractor.validate()
        self.algorithm.classifier.validate()

    def to_dict(self, root=None) -> dict:
        return {"validation": self.validation.to_dict(root), "max_iterations": self.max_iterations,
                "augmentation": self.augmentation.value,
                "feature_extractor": self.feature_extractor.to_dict(root),
                "classifier": {"kind": self.classifier.kind, "layer_sizes": list(self.classifier.layer_sizes)}}

    @classmethod
    def from_dict(cls, d: dict, root=None) -> _ModelParameters:
        return cls(validation=ValidationData.from_dict(d["validation"], _DataSource, root),
                   max_iterations=d["max_iterations"], augmentation=ImageAugmentationOptions(d["augmentation"]),
                   algorithm=ModelAlgorithmType(FeatureExtractorType.from_dict(d["feature_extractor"]),
                                                ClassifierType(d["classifier"]["kind"],
                                                               tuple(d["classifier"]["layer_sizes"]))))


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
            return LogisticRegressionTrainer(x, y, vx, vy, len(plan.labels), weight_decay=1e-3,
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

    def prediction_probabilities(self, source) -> dict[str, float]:
        """{label: probability} for one image (path, PIL image or numpy array)."""
        return self._probabilities_for([source])[0]

    def _probabilities_for(self, sources) -> list[dict[str, float]]:
        ex = self._backbone()
        pixels = np.stack([preprocess(load_image(s), ex.input_size) for s in sources])
        probs = self._predict_features(list(ex.embed(pixels)))
        return [{label: float(p) for label, p in zip(self._labels, row)} for row in probs]

    def prediction(self, source) -> str:
        """The most likely label of one image (path, pathlib.Path, PIL image or numpy array)."""
        probs = self.prediction_probabilities(source)
        return max(probs, key=probs.get)

    def predictions(self, sources) -> list[str]:
        """The most likely label of each image."""
        out = []
        for start in range(0, len(sources), 32):
            for probs in self._probabilities_for(sources[start:start + 32]):
                out.append(max(probs, key=probs.get))
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
    rows = [(features.features[i.key], index[i.label]) for i in items if i.key in features.features]
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
    x = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.float32, copy=False))  # one copy, not two
    y = torch.tensor([r[1] for r in rows], dtype=torch.long)
    return x, y


__all__ = ["MLImageClassifier", "MLSplitStrategy"]

"""MLImageClassifier: transfer learning on image embeddings (Create ML's image classifier)."""
from __future__ import annotations

import contextlib
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
from ..errors import DataSourceError, ParameterError, SessionError
from ..features.cache import CachingExtractor
from ..features.image_embedding import (
    LATEST_SCENE_PRINT,
    SCENE_PRINT_BACKBONES,
    ImageEmbeddingExtractor,
    load_backbone,
    preprocess,
)
from ..features.image_io import is_image_file, load_image, source_name
from ..nets import LinearHead, MLPHead
from ..nets.efficientnet import VARIANTS
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

    validation: ValidationData = field(default_factory=ValidationData.split)
    max_iterations: int = 25
    augmentation: ImageAugmentationOptions = ImageAugmentationOptions(0)
    algorithm: ModelAlgorithmType = field(default_factory=ModelAlgorithmType)

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
                       if _exists_or_skip(p, skipped)]
        val_items = [Item(p, label).resolve_key(ext_id) for label in val for p in val[label]
                     if _exists_or_skip(p, skipped)]
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
                                      training_info=self._training_info())

    @staticmethod
    def _input_name(source) -> str:
        return source_name(source)


def _exists_or_skip(path: Path, skipped: list[dict]) -> bool:
    if os.path.isfile(path):
        return True
    p = Path(path)
    skipped.append({"path": str(p), "reason": "the file does not exist" if not p.exists() else "not a file"})
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
            raise DataSourceError(f"label {empty[0]!r} has no readable image; its files: " + "; ".join(bad[:10]))
    if not rows:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    x = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.float32))
    y = torch.tensor([r[1] for r in rows], dtype=torch.long)
    return x, y


# ---------------------------------------------------------------------------------------------
# The logistic regressor's trainer: L-BFGS on analytic gradients, in an exactly equivalent small space
# ---------------------------------------------------------------------------------------------
STATE_FORMAT = "createml_widgets.logistic-lbfgs/1"


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> float:
    """Minimiser of the cubic through two points with values and slopes (torch.optim.lbfgs's)."""
    xmin, xmax = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    with np.errstate(all="ignore"):
        d1 = np.float64(g1) + g2 - 3 * (f1 - f2) / np.float64(x1 - x2)
        d2_square = d1 ** 2 - g1 * g2
        if d2_square >= 0:
            d2 = np.sqrt(d2_square)
            if x1 <= x2:
                pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            if np.isfinite(pos):
                return float(min(max(pos, xmin), xmax))
    return float((xmin + xmax) / 2.0)


def _strong_wolfe(obj, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search for the strong Wolfe conditions: torch.optim.lbfgs._strong_wolfe on numpy vectors.

    `obj(x, t, d) -> (f, g)` at x + t d. Returns (f, g, t, evaluations).
    """
    d_norm = float(np.abs(d).max())
    f_new, g_new = obj(x, t, d)
    evals = 1
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g, bracket_gtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        bracket_gtd = [gtd, gtd_new]

    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        hi_t, lo_t = max(bracket), min(bracket)
        eps = 0.1 * (hi_t - lo_t)
        if min(hi_t - t, t - lo_t) < eps:
            if insuf_progress or t >= hi_t or t <= lo_t:
                t = hi_t - eps if abs(t - hi_t) < abs(t - lo_t) else lo_t + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj(x, t, d)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = t, f_new, g_new, gtd_new
    return bracket_f[low], bracket_g[low], bracket[low], evals


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run torch on `n` threads here. Small products are fastest on one: on a busy 2-core machine two
    threads made 20 L-BFGS steps on 200 photos take 3.5 s instead of 0.1-0.2 s."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(previous)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch (float64)."""
    return (torch.from_numpy(np.asarray(a, dtype=np.float64)) @ torch.from_numpy(np.asarray(b, dtype=np.float64))).numpy()


class LogisticRegressionTrainer:
    """Multinomial logistic regression by L-BFGS: Create ML's logistic regressor, one `step()` per iteration.

    The objective (mean cross-entropy + weight_decay/2 * |W|^2, bias not penalised) and the
    optimiser (torch.optim.LBFGS's algorithm and settings: lr 1, 20 iterations and 25 evaluations per
    step, history 10, strong-Wolfe line search) are those the generic `nets.training.Trainer` uses,
    computed without autograd and without torch.optim, whose first use imports torch._dynamo (1-2 s).

    With fewer examples N than feature dimensions D it works in an exactly equivalent smaller space:
    X = A Q^T with Q (D x N) orthonormal, so the loss sees W only through C = W Q; the part of W
    outside span(Q) only decays under the penalty, and since L-BFGS's steps are combinations of
    gradients, it stays a multiple of its initial direction U. The coordinates (C, b, alpha) with
    W = C Q^T + alpha U are an orthonormal change of variables, so L-BFGS takes the same steps
    (the step-size start uses the full gradient's L1 norm; only the tiny stopping tolerances are
    measured in the new coordinates), on vectors of K(N+1)+1 numbers instead of K(D+1).
    Deterministic: the initial weights come from `seed` (nn.Linear's uniform initialisation).
    `reduce` forces the small space on (True) or off (False); by default it is used when N <= D / 2.
    """

    lr, max_iter, max_eval, history_size = 1.0, 20, 25, 10
    state_dict_is_snapshot = True  # state_dict() shares nothing that later steps change
    tolerance_grad, tolerance_change = 1e-7, 1e-9

    def __init__(self, x: torch.Tensor, y: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, num_classes: int,
                 weight_decay: float = 1e-3, seed: int = 0, reduce: bool | None = None):
        # One thread unless the products are big (about 10,000 photos and more).
        self.threads = 1 if len(y) * min(len(y), x.shape[1]) < 20_000_000 else None
        with _torch_threads(self.threads):
            self._setup(x, y, vx, vy, num_classes, weight_decay, seed, reduce)

    def _setup(self, x, y, vx, vy, num_classes, weight_decay, seed, reduce) -> None:
        self.X = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        self.y = y.numpy().astype(np.int64)
        self.VX = np.ascontiguousarray(vx.numpy(), dtype=np.float32) if len(vy) else None
        self.vy = vy.numpy().astype(np.int64)
        self.n, self.dim = self.X.shape
        self.k = int(num_classes)
        self._true = np.arange(self.n) * self.k + self.y  # flat index of each example's true logit
        self.weight_decay = float(weight_decay)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.dim)
        w0 = rng.uniform(-bound, bound, (self.k, self.dim))
        b0 = rng.uniform(-bound, bound, self.k)
        basis = None
        if reduce if reduce is not None else self.n <= self.dim // 2:  # worth it: the QR costs about one step
            q, r = torch.linalg.qr(torch.from_numpy(self.X.T).double())
            signs = np.where(np.diag(r.numpy()) < 0, -1.0, 1.0)  # unique: R's diagonal > 0
            basis = np.ascontiguousarray(q.numpy() * signs)
            self._set_basis(basis, w0, a=torch.from_numpy(np.ascontiguousarray(r.numpy().T * signs)))  # X Q = R^T
        else:
            self._set_basis(None, w0)
        self.theta = self._reduce(np.concatenate([w0.ravel(), b0]))
        self._opt: dict = {"n_iter": 0, "func_evals": 0}
        self._fg = None  # (theta, f, g) at the current point, from the last line search
        self._net: LinearHead | None = None

    # -- coordinates ---------------------------------------------------------------------------
    # The matrix products run in torch (its BLAS is several times faster than numpy's on these sizes);
    # the L-BFGS bookkeeping on the short coordinate vectors stays in numpy.
    def _set_basis(self, basis: np.ndarray | None, w: np.ndarray, a: torch.Tensor | None = None) -> None:
        """Q (D x r) or None (work on W itself), A = X Q (given, or computed), and the unit direction U
        of w outside span(Q)."""
        self.Q = basis
        self.U = None
        if basis is None:
            # float64 unless that would be big (over 40 MB): then the products run in float32
            wide = torch.float64 if self.X.size <= 5_000_000 else torch.float32
            self.A = torch.from_numpy(self.X).to(wide)
            self.VA = None if self.VX is None else torch.from_numpy(self.VX).to(wide)
        else:
            q = torch.from_numpy(basis)
            self.A = a if a is not None else torch.from_numpy(self.X).double() @ q
            self.VA = None if self.VX is None else torch.from_numpy(self.VX).double() @ q
            perp = w - _mm(_mm(w, basis), basis.T)
            norm = float(np.linalg.norm(perp))
            if norm > 1e-12 * max(1.0, float(np.linalg.norm(w))):
                self.U = perp / norm
        self.r = self.dim if basis is None else basis.shape[1]
        self._vu = None if self.U is None or self.VX is None else _mm(self.VX.astype(np.float64), self.U.T)

    def _reduce(self, full: np.ndarray) -> np.ndarray:
        """A flat (W, b) vector in torch's parameter order -> (C, b[, alpha])."""
        full = np.asarray(full, dtype=np.float64)
        w, b = full[:self.k * self.dim].reshape(self.k, self.dim), full[self.k * self.dim:]
        if self.Q is None:
            return np.concatenate([w.ravel(), b])
        parts = [_mm(w, self.Q).ravel(), b]
        if self.U is not None:
            parts.append([float(np.vdot(w, self.U))])
        return np.concatenate(parts)

    def _unpack(self, theta: np.ndarray):
        kr = self.k * self.r
        c = theta[:kr].reshape(self.k, self.r)
        b = theta[kr:kr + self.k]
        alpha = float(theta[kr + self.k]) if self.U is not None else 0.0
        return c, b, alpha

    def _full_weight(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, b, alpha = self._unpack(theta)
        if self.Q is None:
            return c, b
        w = _mm(c, self.Q.T)
        if self.U is not None:
            w = w + alpha * self.U
        return w, b

    # -- objective -----------------------------------------------------------------------------
    @staticmethod
    def _logits(a: torch.Tensor, c: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = a @ torch.from_numpy(c).to(a.dtype).T
        return z.numpy().astype(np.float64, copy=False) + b

    def _objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient at `theta` (this runs about 20 times a step: kept to few operations)."""
        c, b, alpha = self._unpack(theta)
        z = self._logits(self.A, c, b)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1)
        lam = self.weight_decay
        loss = (float(np.log(s).sum()) - float(z.take(self._true).sum())) / self.n
        loss += 0.5 * lam * (float(np.vdot(c, c)) + alpha * alpha)
        e /= s[:, None]
        e.ravel()[self._true] -= 1.0  # softmax - one-hot
        gc = (torch.from_numpy(e.T).to(self.A.dtype) @ self.A).numpy().astype(np.float64, copy=False)
        parts = [(gc / self.n + lam * c).ravel(), e.sum(axis=0) / self.n]
        if self.U is not None:
            parts.append([lam * alpha])
        return loss, np.concatenate(parts)

    def _directional(self, x, t, d):
        return self._objective(x + t * d)

    # -- the Trainer interface the engine uses ---------------------------------------------------
    def step(self) -> dict[str, float]:
        """One Create ML iteration: one L-BFGS step of up to 20 iterations / 25 evaluations."""
        with _torch_threads(self.threads):
            return self._step()

    def _step(self) -> dict[str, float]:
        st = self._opt
        x = self.theta
        if self._fg is not None and self._fg[0] is x:
            loss, g = self._fg[1], self._fg[2]  # the line search ended here: same point, same values
        else:
            loss, g = self._objective(x)
        evals = 1
        st["func_evals"] += 1
        if np.abs(g).max() <= self.tolerance_grad:
            self._fg = (x, loss, g)
            return self._train_metrics()
        d, t = st.get("d"), st.get("t")
        old_dirs, old_stps, ro = st.get("old_dirs"), st.get("old_stps"), st.get("ro")
        h_diag, prev_g = st.get("H_diag"), st.get("prev_flat_grad")
        prev_loss = st.get("prev_loss")
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            st["n_iter"] += 1
            if st["n_iter"] == 1:
                d = -g
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1.0
            else:
                yv = g - prev_g
                sv = d * t
                ys = float(yv @ sv)
                if ys > 1e-10:
                    if len(old_dirs) == self.history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(yv)
                    old_stps.append(sv)
                    ro.append(1.0 / ys)
                    h_diag = ys / float(yv @ yv)
                al = [0.0] * len(old_dirs)
                q = -g
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = float(old_stps[i] @ q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                d = q * h_diag
                for i in range(len(old_dirs)):
                    be_i = float(old_dirs[i] @ d) * ro[i]
                    d = d + (al[i] - be_i) * old_stps[i]
            prev_g = g.copy()
            prev_loss = loss
            if st["n_iter"] == 1:
                t = min(1.0, 1.0 / self._full_l1(g)) * self.lr
            else:
                t = self.lr
            gtd = float(g @ d)
            if gtd > -self.tolerance_change:
                break
            loss, g, t, ls_evals = _strong_wolfe(self._directional, x, t, d, loss, g, gtd,
                                                 max_ls=self.max_eval - evals)
            x = x + t * d
            evals += ls_evals
            st["func_evals"] += ls_evals
            if n_iter == self.max_iter or evals >= self.max_eval:
                break
            if np.abs(g).max() <= self.tolerance_grad:
                break
            if np.abs(d * t).max() <= self.tolerance_change or abs(loss - prev_loss) < self.tolerance_change:
                break
        st.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag, prev_flat_grad=prev_g,
                  prev_loss=prev_loss)
        self.theta = x
        self._fg = (x, loss, g)
        self._net_dirty = True
        return self._train_metrics()

    def _full_l1(self, g: np.ndarray) -> float:
        """|g|_1 in the original (W, b) coordinates (torch's first step size depends on it)."""
        gw, gb = self._full_weight(g)
        return float(np.abs(gw).sum() + np.abs(gb).sum())

    @staticmethod
    def _ce(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return {"loss": float(-logp[np.arange(len(y)), y].mean()), "accuracy": float((z.argmax(1) == y).mean())}

    def _train_metrics(self) -> dict[str, float]:
        c, b, _ = self._unpack(self.theta)
        return self._ce(self._logits(self.A, c, b), self.y)

    def validation_metrics(self) -> dict[str, float]:
        if self.VX is None or not len(self.vy):
            return {}
        with _torch_threads(self.threads):
            return self._validation_metrics()

    def _validation_metrics(self) -> dict[str, float]:
        c, b, alpha = self._unpack(self.theta)
        z = self._logits(self.VA, c, b)
        if self._vu is not None:
            z = z + alpha * self._vu
        m = self._ce(z, self.vy)
        return {"validation_loss": m["loss"], "validation_accuracy": m["accuracy"]}

    @property
    def net(self) -> LinearHead:
        """The trained weights as the LinearHead the model predicts and exports with."""
        if self._net is None:
            self._net = LinearHead(self.dim, self.k)
            self._net_dirty = True
        if self._net_dirty:
            with _torch_threads(self.threads):
                w, b = self._full_weight(self.theta)
            with torch.no_grad():
                self._net.fc.weight.copy_(torch.from_numpy(w))
                self._net.fc.bias.copy_(torch.from_numpy(np.asarray(b)))
            self._net_dirty = False
        return self._net

    def state_dict(self) -> dict:
        """A snapshot (nothing in it changes later) that round-trips through torch.load(weights_only=True)."""
        with _torch_threads(self.threads):
            w, b = self._full_weight(self.theta)
        st = self._opt
        vec = lambda v: None if v is None else torch.from_numpy(np.array(v, dtype=np.float64))  # noqa: E731
        opt = {"format": STATE_FORMAT, "theta": vec(self.theta), "n_iter": int(st["n_iter"]),
               "func_evals": int(st["func_evals"]),
               "basis": None if self.Q is None else torch.from_numpy(self.Q),  # never modified: shared, not copied
               "perp": None if self.U is None else torch.from_numpy(self.U),
               "d": vec(st.get("d")), "t": None if st.get("t") is None else float(st["t"]),
               "H_diag": None if st.get("H_diag") is None else float(st["H_diag"]),
               "prev_flat_grad": vec(st.get("prev_flat_grad")),
               "prev_loss": None if st.get("prev_loss") is None else float(st["prev_loss"]),
               "old_dirs": [vec(v) for v in st.get("old_dirs") or []],
               "old_stps": [vec(v) for v in st.get("old_stps") or []],
               "ro": [float(v) for v in st.get("ro") or []]}
        return {"net": {"fc.weight": torch.from_numpy(w.astype(np.float32)),
                        "fc.bias": torch.from_numpy(np.asarray(b, dtype=np.float32))},
                "optimizer": opt}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`, or from a checkpoint of the torch.optim.LBFGS Trainer."""
        with _torch_threads(self.threads):
            self._load(state)

    def _load(self, state: dict) -> None:
        w = state["net"]["fc.weight"].double().numpy()
        b = state["net"]["fc.bias"].double().numpy()
        opt = state.get("optimizer") or {}
        arr = lambda v: None if v is None else np.asarray(v.numpy() if hasattr(v, "numpy") else v,  # noqa: E731
                                                          dtype=np.float64)
        if opt.get("format") == STATE_FORMAT:
            basis, perp = arr(opt.get("basis")), arr(opt.get("perp"))
            if (basis is None) != (self.Q is None) or (basis is not None and basis.shape != self.Q.shape):
                raise SessionError("this checkpoint was made on other training features; it cannot be resumed")
            if basis is not None and not np.array_equal(basis, self.Q):
                self._set_basis(basis, w)
            self.U = perp
            if self.Q is not None:
                self._vu = None if perp is None or self.VX is None else _mm(self.VX, perp.T)
            red = arr
            theta = arr(opt["theta"])
            st = opt
        else:  # the generic Trainer's torch.optim.LBFGS state: full-space vectors, projected here
            if self.Q is not None:
                self._set_basis(self.Q, w)
            red = lambda v: None if v is None else self._reduce(arr(v))  # noqa: E731
            theta = self._reduce(np.concatenate([w.ravel(), b]))
            states = (opt.get("state") or {})
            st = next(iter(states.values()), {}) if states else {}
        self.theta = theta
        self._opt = {"n_iter": int(st.get("n_iter", 0)), "func_evals": int(st.get("func_evals", 0)),
                     "d": red(st.get("d")), "t": None if st.get("t") is None else float(st["t"]),
                     "H_diag": None if st.get("H_diag") is None else float(st["H_diag"]),
                     "prev_flat_grad": red(st.get("prev_flat_grad")),
                     "prev_loss": None if st.get("prev_loss") is None else float(st["prev_loss"]),
                     "old_dirs": [red(v) for v in st.get("old_dirs") or []],
                     "old_stps": [red(v) for v in st.get("old_stps") or []],
                     "ro": [float(v) for v in st.get("ro") or []]}
        self._fg = None
        self._net_dirty = True


MLImageClassifier.ModelParameters.ValidationData = ValidationData
__all__ = ["MLImageClassifier", "MLSplitStrategy"]

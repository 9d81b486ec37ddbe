"""How MLImageClassifier learns: `ModelAlgorithmType.transfer_learning(feature_extractor, classifier)`.

`FeatureExtractorType`: the bundled scene print (EfficientNet-Lite) or your own network
(`CustomFeatureExtractor`); `ClassifierType`: a logistic regressor or a multilayer perceptron on the
features. Create ML's names; all are reachable from `MLImageClassifier` (e.g.
`MLImageClassifier.FeatureExtractorType`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ParameterError
from ..features.image_embedding import LATEST_SCENE_PRINT, SCENE_PRINT_BACKBONES
from ..nets.efficientnet import VARIANTS


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
        """The network (loaded from its TorchScript file), wrapped to return the selected (N, D) output; checked."""
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

    def resolved_input_size(self, module: torch.nn.Module | None = None) -> int:
        """S: `input_size`, else the module's `input_size` attribute, else 224."""
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
        """Create ML's `scenePrint(revision:)`: a bundled EfficientNet-Lite (revision None: the latest)."""
        return cls("scene_print", revision)

    @classmethod
    def custom_extractor(cls, extractor: CustomFeatureExtractor) -> FeatureExtractorType:
        """Your own network as the feature extractor (also spelled `FeatureExtractorType.custom`)."""
        return cls("custom", None, extractor)

    def validate(self) -> None:
        """ParameterError naming the field for an unknown revision or kind, or a custom model file that is missing."""
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
        """The bundled EfficientNet-Lite variant scene_print uses; None for a custom extractor."""
        return SCENE_PRINT_BACKBONES[self.revision or LATEST_SCENE_PRINT] if self.kind == "scene_print" else None

    @property
    def input_size(self) -> int:
        """The network's square input side S, in pixels."""
        if self.kind == "scene_print":
            return VARIANTS[self.backbone_name][2]
        return self.custom.resolved_input_size()

    @property
    def cache_id(self) -> str:
        """What names this extractor's features in the cache (a custom network by its weights' or file's digest)."""
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

    def to_dict(self, root: str | os.PathLike | None = None) -> dict:
        """JSON-ready form (a custom network by its file path; an in-memory nn.Module cannot be saved)."""
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
        """The extractor `to_dict` saved."""
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
        """Create ML's `logisticRegressor` (the default)."""
        return cls("logistic_regressor")

    @classmethod
    def multilayer_perceptron(cls, layer_sizes: Iterable[int]) -> ClassifierType:
        """Create ML's `multilayerPerceptron(layerSizes:)`: hidden ReLU layers of these sizes."""
        return cls("multilayer_perceptron", tuple(layer_sizes))

    def validate(self) -> None:
        """ParameterError for an unknown kind, or layer sizes that are not a non-empty list of positive ints."""
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
        """Create ML's `transferLearning(featureExtractor:classifier:)`; defaults scenePrint(1), logistic regressor."""
        return cls(feature_extractor or FeatureExtractorType.scene_print(1),
                   classifier or ClassifierType.logistic_regressor())

    def validate(self) -> None:
        """ParameterError when the feature extractor or the classifier is not one Create ML offers."""
        self.feature_extractor.validate()
        self.classifier.validate()

    def to_dict(self, root: Path | None = None) -> dict:
        """Its two parts as a session writes them (`feature_extractor`, `classifier`)."""
        return {"feature_extractor": self.feature_extractor.to_dict(root),
                "classifier": {"kind": self.classifier.kind, "layer_sizes": list(self.classifier.layer_sizes)}}

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> ModelAlgorithmType:
        """The algorithm `to_dict` wrote."""
        return cls(FeatureExtractorType.from_dict(d["feature_extractor"]),
                   ClassifierType(d["classifier"]["kind"], tuple(d["classifier"]["layer_sizes"])))

    def __str__(self) -> str:
        return f"transferLearning({self.feature_extractor}, {self.classifier})"


__all__ = ["ClassifierType", "CustomFeatureExtractor", "FeatureExtractorType", "ModelAlgorithmType"]

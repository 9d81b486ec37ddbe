"""A pure-numpy interpreter of Core ML model specifications.

Core ML's own runtime only exists on Apple platforms (`MLModel.predict` raises elsewhere), so this
module checks on any machine that an exported model computes what its torch model computes. It
reads the protobuf spec (and, for ML programs, the package's weight file) and evaluates it with
numpy alone - neither coremltools' prediction nor torch is used.

    evaluate("Digits.mlmodel", {"image": pil_image})
    -> {"classLabel": "3", "classLabelProbs": {"0": 0.01, ...}}

Supported: NeuralNetwork / NeuralNetworkClassifier / NeuralNetworkRegressor specs (the layer
types in `NN_LAYERS`, spec_eval_nn.py; image preprocessing, both shape mappings) and ML programs
(the MIL operations in `MIL_OPS`, spec_eval_mil.py; const weights stored inline or in the package's
blob file) — what this package's exports contain. Anything else raises NotImplementedError naming
the layer or operation type.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._spec_numerics import _proto, conv2d, pool2d  # noqa: F401 - spec_eval's names for them
from .spec_eval_mil import MIL_OPS, _Args, _mil_shape, _MilValues, read_blob
from .spec_eval_nn import _WEIGHT_CACHE, NN_LAYERS

if TYPE_CHECKING:
    from coremltools.models import MLModel
    from coremltools.proto.Model_pb2 import Model

__all__ = ["evaluate", "load", "SpecInterpreter", "NN_LAYERS", "MIL_OPS", "read_blob"]




# ==============================================================================================
# inputs


def _image_array(value, width: int, height: int, gray: bool, name: str, size_range=None) -> np.ndarray:
    """(H, W, 3) or (H, W) uint8-valued float32 array from a PIL image or a numpy array."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(value, Image.Image):
        value = np.asarray(value.convert("L" if gray else "RGB"))
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if gray and array.ndim == 3:
        if array.shape[2] != 1:
            raise ValueError(f"input {name!r} is a grayscale image; got {array.shape[2]} channels")
        array = array[:, :, 0]
    if not gray and (array.ndim != 3 or array.shape[2] != 3):
        raise ValueError(f"input {name!r} must be an RGB image (H x W x 3), got an array of shape {array.shape}")
    if size_range is not None:
        (w_low, w_high), (h_low, h_high) = size_range
        h, w = array.shape[:2]
        if not (w >= w_low and (w_high < 0 or w <= w_high) and h >= h_low and (h_high < 0 or h <= h_high)):
            def bounds(low, high):
                return f"{low} or more" if high < 0 else f"{low} to {high}"
            raise ValueError(
                f"input {name!r} must be {bounds(w_low, w_high)} pixels wide and {bounds(h_low, h_high)} high, "
                f"got {w} x {h}; resize it first"
            )
    elif array.shape[:2] != (height, width):
        raise ValueError(
            f"input {name!r} must be {width} x {height} pixels, got {array.shape[1]} x {array.shape[0]}; "
            "resize it first"
        )
    if array.dtype != np.uint8 and (np.nanmin(array) < 0 or np.nanmax(array) > 255):
        raise ValueError(f"input {name!r}: pixel values must lie in 0..255")
    return array.astype(np.float32)


def _image_to_chw(pixels: np.ndarray, color_space: str) -> np.ndarray:
    if color_space in ("GRAYSCALE", "GRAYSCALE_FLOAT16"):
        return pixels[None]
    chw = np.transpose(pixels, (2, 0, 1))
    return chw[::-1].copy() if color_space == "BGR" else chw


def _feature_inputs(spec, inputs: Mapping) -> dict:
    """{name: (kind, value)} with kind "image" (C, H, W float32 pixels, channel order of the spec) or "array"."""
    _, _, FeatureTypes_pb2 = _proto()
    out = {}
    for feature in spec.description.input:
        name = feature.name
        if name not in inputs:
            if feature.type.isOptional:
                continue
            raise KeyError(f"missing input {name!r}; the model takes {[f.name for f in spec.description.input]}")
        kind = feature.type.WhichOneof("Type")
        value = inputs[name]
        if kind == "imageType":
            t = feature.type.imageType
            space = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(t.colorSpace)
            size_range = None
            if t.WhichOneof("SizeFlexibility") == "imageSizeRange":
                r = t.imageSizeRange
                size_range = ((r.widthRange.lowerBound, r.widthRange.upperBound),
                              (r.heightRange.lowerBound, r.heightRange.upperBound))
            elif t.WhichOneof("SizeFlexibility") == "enumeratedSizes":
                raise NotImplementedError(f"input {name!r}: enumerated image sizes")
            pixels = _image_array(value, t.width, t.height, space.startswith("GRAYSCALE"), name, size_range)
            out[name] = ("image", _image_to_chw(pixels, space), space)
        elif kind == "multiArrayType":
            t = feature.type.multiArrayType
            array = np.asarray(value)
            shape = tuple(int(s) for s in t.shape)
            flexible = t.WhichOneof("ShapeFlexibility") is not None
            if shape and array.shape != shape and not flexible:
                raise ValueError(f"input {name!r} must have shape {shape}, got {array.shape}")
            dtype = {65568: np.float32, 65600: np.float64, 65552: np.float16, 131104: np.int32}.get(t.dataType,
                                                                                                    np.float32)
            out[name] = ("array", array.astype(dtype), None)
        elif kind in ("doubleType", "int64Type"):
            out[name] = ("array", np.asarray(value, np.float64 if kind == "doubleType" else np.int64), None)
        else:
            raise NotImplementedError(f"input {name!r} of feature type {kind}")
    return out


# ==============================================================================================
# the interpreter


def _load_spec_file(path: Path):
    Model_pb2, _, _ = _proto()
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    return spec


def _package_paths(package: Path) -> tuple[Path, Path]:
    """(model spec file, folder that `@model_path` names) of an .mlpackage."""
    manifest = json.loads((package / "Manifest.json").read_text())
    entries = manifest["itemInfoEntries"]
    root = entries[manifest["rootModelIdentifier"]]
    spec_path = package / "Data" / root["path"]
    return spec_path, spec_path.parent


class SpecInterpreter:
    """A parsed model, ready to evaluate many inputs (weights are decoded once and cached)."""

    def __init__(self, spec: Model, model_dir: Path | None = None):
        self.spec = spec
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.kind = spec.WhichOneof("Type")
        self._cache: dict = {}
        if self.kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor", "mlProgram"):
            raise NotImplementedError(f"model type {self.kind} (supported: neural networks and ML programs)")

    # -- public ------------------------------------------------------------------------------
    def predict(self, inputs: Mapping, *, intermediates: bool = False) -> dict:
        """What Core ML's predict returns for `inputs` ({feature name: PIL image / array / number}).

        With intermediates=True, the dictionary also holds every intermediate tensor by name.
        """
        features = _feature_inputs(self.spec, inputs)
        if self.kind == "mlProgram":
            env = self._run_program(features)
        else:
            env = self._run_network(features)
        result = self._outputs(env)
        if intermediates:
            result = {**env, **result}
        return result

    # -- neural networks ---------------------------------------------------------------------
    def _run_network(self, features: dict) -> dict:
        nn = getattr(self.spec, self.kind)
        env: dict = {}
        image_mapping = nn.imageInputShapeMapping  # 0: rank 5, 1: rank 4
        array_mapping = nn.arrayInputShapeMapping  # 0: rank 5, 1: exact
        images = [name for name, (kind, _, _) in features.items() if kind == "image"]
        for name, (kind, value, space) in features.items():
            if kind == "image":
                value = self._preprocess(nn, name, value, space, len(images) == 1)
                env[name] = value[None] if image_mapping == 1 else value[None, None]
            elif array_mapping == 0 and value.ndim in (1, 3):
                chw = value.reshape(-1, 1, 1) if value.ndim == 1 else value
                env[name] = chw[None, None].astype(np.float32)
            else:
                env[name] = value
        token = _WEIGHT_CACHE.set(self._cache.setdefault("weights", {}))
        try:
            self._run_layers(nn, env)
        finally:
            _WEIGHT_CACHE.reset(token)
        return env

    def _run_layers(self, nn, env: dict) -> None:
        for index, layer in enumerate(self._cache.setdefault("layers", list(nn.layers))):
            kind = layer.WhichOneof("layer")
            fn = NN_LAYERS.get(kind)
            if fn is None:
                raise NotImplementedError(f"neural network layer type {kind!r} (layer {layer.name!r})")
            key = ("nn", index)
            if kind in ("loadConstantND", "loadConstant") and key in self._cache:
                outs = self._cache[key]
            else:
                try:
                    outs = fn(getattr(layer, kind), [env[name] for name in layer.input])
                except NotImplementedError as err:
                    raise NotImplementedError(f"neural network layer {layer.name!r} ({kind}): {err}") from err
                if kind in ("loadConstantND", "loadConstant"):
                    self._cache[key] = outs
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for name, value in zip(layer.output, outs):
                env[name] = value

    @staticmethod
    def _preprocess(nn, name: str, chw: np.ndarray, space: str, only_image: bool) -> np.ndarray:
        for pre in nn.preprocessing:
            if pre.featureName not in (name, "") or (pre.featureName == "" and not only_image):
                continue
            which = pre.WhichOneof("preprocessor")
            if which == "scaler":
                s = pre.scaler
                scale = s.channelScale
                if space.startswith("GRAYSCALE"):
                    bias = np.array([s.grayBias], np.float32)
                elif space == "BGR":
                    bias = np.array([s.blueBias, s.greenBias, s.redBias], np.float32)
                else:
                    bias = np.array([s.redBias, s.greenBias, s.blueBias], np.float32)
                return chw * np.float32(scale) + bias[:, None, None]
            if which == "meanImage":
                mean = np.asarray(pre.meanImage.meanImage, np.float32).reshape(chw.shape)
                return chw - mean
            raise NotImplementedError(f"image preprocessing {which}")
        return chw

    # -- ML programs -------------------------------------------------------------------------
    def _run_program(self, features: dict) -> dict:
        program = self.spec.mlProgram
        if "main" not in program.functions:
            raise ValueError("the ML program has no main function")
        function = program.functions["main"]
        block = function.block_specializations[function.opset]
        values = self._cache.setdefault("values", _MilValues(self.model_dir))
        consts: dict = self._cache.setdefault("consts", {})
        env: dict = {}
        declared = {i.name: i.type for i in function.inputs}
        for name, (kind, value, _space) in features.items():
            if name in declared and declared[name].WhichOneof("type") == "tensorType":
                t = declared[name].tensorType
                dtype = values.dtype(t.dataType)
                shape = _mil_shape(t, flexible=True)
                value = (value[None] if kind == "image" else value).astype(dtype)
                if shape and value.shape != shape:
                    value = value.reshape(shape)
            env[name] = value
        for op in block.operations:
            outputs = [o.name for o in op.outputs]
            if op.type == "const":
                if outputs[0] not in consts:
                    consts[outputs[0]] = values.decode(op.attributes["val"])
                env[outputs[0]] = consts[outputs[0]]
                continue
            fn = MIL_OPS.get(op.type)
            if fn is None:
                raise NotImplementedError(f"ML program operation {op.type!r} (producing {outputs})")
            try:
                result = fn(_Args(op, env, values))
            except NotImplementedError as err:
                raise NotImplementedError(f"ML program operation {op.type!r} ({outputs}): {err}") from err
            if len(outputs) == 1:
                env[outputs[0]] = result
            else:
                for name, value in zip(outputs, result):
                    env[name] = value
        for name in block.outputs:
            if name not in env:
                raise ValueError(f"the ML program never computes its output {name!r}")
        return env

    # -- outputs -----------------------------------------------------------------------------
    def _outputs(self, env: dict) -> dict:
        description = self.spec.description
        result = {}
        if self.kind == "neuralNetworkClassifier":
            nn = self.spec.neuralNetworkClassifier
            labels = (list(nn.stringClassLabels.vector) if nn.WhichOneof("ClassLabels") == "stringClassLabels"
                      else [int(v) for v in nn.int64ClassLabels.vector])
            probs_name = nn.labelProbabilityLayerName or description.predictedProbabilitiesName
            if probs_name not in env:
                probs_name = nn.layers[-1].output[0]
            probs = np.ravel(np.asarray(env[probs_name], np.float64))
            if probs.size != len(labels):
                raise ValueError(f"the classifier gives {probs.size} probabilities for {len(labels)} labels")
            if description.predictedFeatureName:
                result[description.predictedFeatureName] = labels[int(np.argmax(probs))]
            if description.predictedProbabilitiesName:
                result[description.predictedProbabilitiesName] = {
                    label: float(p) for label, p in zip(labels, probs)
                }
        for feature in description.output:
            if feature.name in result:
                continue
            if feature.name not in env:
                raise ValueError(f"the model never computes its output {feature.name!r}")
            value = env[feature.name]
            kind = feature.type.WhichOneof("Type")
            if kind == "multiArrayType" and isinstance(value, np.ndarray):
                shape = tuple(int(s) for s in feature.type.multiArrayType.shape)
                if shape and int(np.prod(shape)) == value.size:
                    value = value.reshape(shape)
            elif kind == "dictionaryType" and isinstance(value, dict):
                value = {k: float(v) for k, v in value.items()}
            result[feature.name] = value
        return result


def load(model_or_spec_or_path: MLModel | Model | str | os.PathLike, *,
         weights_dir: str | os.PathLike | None = None) -> SpecInterpreter:
    """A `SpecInterpreter` for an MLModel, a Model spec, or a path to an .mlmodel / .mlpackage.

    ML programs keep weights outside the spec: from a path or an MLModel they are found
    automatically; with a bare spec pass `weights_dir` (the package's `.../weights` folder).
    """
    obj = model_or_spec_or_path
    model_dir = Path(weights_dir).parent if weights_dir is not None else None
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj).expanduser()
        if path.is_dir():
            spec_path, model_dir = _package_paths(path)
            return SpecInterpreter(_load_spec_file(spec_path), model_dir)
        return SpecInterpreter(_load_spec_file(path), model_dir)
    if hasattr(obj, "get_spec"):  # coremltools MLModel: only its spec and its files are used
        spec = obj.get_spec()
        if model_dir is None and getattr(obj, "weights_dir", None):
            model_dir = Path(obj.weights_dir).parent
        return SpecInterpreter(spec, model_dir)
    if hasattr(obj, "WhichOneof") and hasattr(obj, "description"):
        return SpecInterpreter(obj, model_dir)
    raise TypeError(f"expected an MLModel, a Core ML spec or a model path, got {type(obj).__name__}")


def evaluate(model_or_spec_or_path: MLModel | Model | str | os.PathLike, inputs: Mapping, *,
             weights_dir: str | os.PathLike | None = None) -> dict:
    """Evaluate a Core ML model with numpy: the dictionary Core ML's `predict(inputs)` would return.

    Images are PIL images (or H x W x 3 uint8 arrays) of exactly the model's input size;
    multi-arrays are numpy arrays of the declared shape. For many inputs, `load(...)` once
    and call `.predict(inputs)` to decode the weights only once.
    """
    return load(model_or_spec_or_path, weights_dir=weights_dir).predict(inputs)

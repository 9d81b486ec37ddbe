"""Core ML export of the three tasks' torch models (the model a Create ML task's `write` produces).

* `image_classifier_model(backbone, head, labels)`: input `image` (colour image, S x S), outputs
  `classLabel` (string) and `classLabelProbs` (dictionary label -> probability).
* `keypoint_classifier_model(net, labels, window)`: input `poses` (Float32 multi-array
  window x 3 x 21), outputs `label` (string) and `labelProbabilities` (dictionary).

`fmt="neuralnetwork"` gives a NeuralNetworkClassifier (written as `.mlmodel`), `fmt="mlprogram"`
an ML program in float32 (written as `.mlpackage`). `write_model` writes either atomically.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._fileio import move_into_place, remove_quietly, temp_sibling

__all__ = [
    "FORMATS", "SUFFIXES", "HAND_JOINT_NAMES", "VERSION_METADATA_KEY", "format_for_path", "image_classifier_model",
    "keypoint_classifier_model", "write_model", "apply_metadata", "poses_description", "creator_metadata",
    "minimum_specification_version", "quantize_model", "check_precision", "PRECISIONS", "PREVIEW_TYPE_KEY", "WINDOW_SIZE_KEY", "FRAME_RATE_KEY", "PREVIEW_TYPES",
]

FORMATS = ("neuralnetwork", "mlprogram")
# file suffix -> model format it holds
SUFFIXES = {".mlmodel": "neuralnetwork", ".mlpackage": "mlprogram"}
VERSION_METADATA_KEY = "com.github.createml_widgets.version"
# Creator-defined keys Create ML itself writes (apps and Xcode's preview read them).
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
WINDOW_SIZE_KEY = "Prediction Window Size"
FRAME_RATE_KEY = "Target Frame Rate"
PREVIEW_TYPES = {"image": "imageClassifier", "hand pose": "handPoseClassifier", "hand action": "handActionClassifier"}
# Keys only Create ML may write: its version stamps would claim Create ML made the file.
RESERVED_METADATA_PREFIX = "com.apple.createml."

# Vision's joint order (the last dimension of `poses`).
HAND_JOINT_NAMES = (
    "wrist", "thumbCMC", "thumbMP", "thumbIP", "thumbTip", "indexMCP", "indexPIP", "indexDIP", "indexTip",
    "middleMCP", "middlePIP", "middleDIP", "middleTip", "ringMCP", "ringPIP", "ringDIP", "ringTip",
    "littleMCP", "littlePIP", "littleDIP", "littleTip",
)

IMAGE_INPUT_DESCRIPTION = "Input image to be classified"
CLASS_LABEL_DESCRIPTION = "Most likely image category"
CLASS_PROBS_DESCRIPTION = "Probability of each category"
LABEL_PROBS_DESCRIPTION = "A dictionary of labels and the corresponding confidences."

_CONVERT_LOCK = threading.RLock()
_CONVERT_UPPER_BOUND = 16384


# ----------------------------------------------------------------------------------------------
# coremltools, quietly


@functools.cache
def _coremltools():
    """Import coremltools without its import-time warnings (untested torch, no macOS runtime)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools
    finally:
        logger.setLevel(level)
    return coremltools


# Modules of coremltools 9 that draw tqdm progress bars during a torch conversion, and the name
# they import tqdm under.
_TQDM_SITES = (
    ("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
    ("coremltools.converters.mil.backend.nn.op_mapping", "_tqdm"),
    ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"),
)


@contextlib.contextmanager
def _quiet_conversion():
    """Silence coremltools during a conversion: no progress bars, warnings or info logging.

    The progress bars are switched off at their source (coremltools' module-level `tqdm` names)
    rather than by redirecting stderr, so other threads' output is left alone.
    """
    ct = _coremltools()
    patched = []
    logger = logging.getLogger("coremltools")
    level = logger.level
    with _CONVERT_LOCK:
        try:
            for module_name, attr in _TQDM_SITES:
                try:
                    module = importlib.import_module(module_name)
                except ImportError:  # pragma: no cover - other coremltools layouts
                    continue
                original = getattr(module, attr, None)
                if original is None:  # pragma: no cover
                    continue
                setattr(module, attr, functools.partial(original, disable=True))
                patched.append((module, attr, original))
            logger.setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield ct
        finally:
            logger.setLevel(level)
            for module, attr, original in reversed(patched):
                setattr(module, attr, original)


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("createml-widgets")
    except PackageNotFoundError:
        pass
    try:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):  # pragma: no cover
        return "unknown"


# ----------------------------------------------------------------------------------------------
# arguments


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown Core ML model format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return fmt


def _check_labels(class_labels: Iterable) -> list[str]:
    labels = [str(label) for label in class_labels]
    if not labels:
        raise ValueError("a classifier needs at least one class label")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"class labels must be unique; repeated: {duplicates}")
    return labels


def format_for_path(path) -> str:
    """The model format a file name asks for: `.mlmodel` -> "neuralnetwork", `.mlpackage` -> "mlprogram"."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot write a model to {str(path)!r}: the name must end in .mlmodel "
            f"(a Core ML neural network), .mlpackage (a Core ML ML program) or .onnx (ONNX), "
            f"not {suffix or 'no suffix'!r}"
        )
    return SUFFIXES[suffix]


def poses_description(window: int, action: bool) -> str:
    """The description Create ML gives the `poses` input of a hand pose / hand action model."""
    frames = "1 frame" if window == 1 else f"{window} frames"
    what = "A sequence of hand poses to classify." if action else "A hand pose to classify."
    return (
        f"{what} Its multiarray encoding uses the first dimension to index time over {frames}. "
        "The second dimension indexes x, y, and confidence of hand pose keypoint locations. "
        f"The last dimension indexes the keypoint type, ordered as {', '.join(HAND_JOINT_NAMES)}."
    )


# ----------------------------------------------------------------------------------------------
# torch wrappers


class _ImageClassifier(nn.Module):
    """(1, 3, S, S) preprocessed image -> (1, K) probabilities."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(image)), dim=1)


class _KeypointClassifier(nn.Module):
    """(T, 3, 21) poses, no batch dimension -> (1, K) probabilities."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(poses.unsqueeze(0)), dim=1)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy, so exporting never disturbs a model that is still training."""
    try:
        module = copy.deepcopy(module)
    except Exception as err:  # noqa: BLE001 - e.g. a custom extractor holding an unpicklable handle
        raise TypeError(f"cannot export {type(module).__name__}: it cannot be copied ({err})") from err
    return module.to("cpu", torch.float32).eval()


def _trace(wrapper: nn.Module, example: torch.Tensor, expected_classes: int):
    """TorchScript of `wrapper`, frozen (parameters inlined as constants).

    Freezing also sidesteps a coremltools limitation: a submodule attribute named like a
    ScriptModule property (e.g. `graph`) breaks its graph lowering.
    """
    wrapper.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        try:  # the traced graph records the output shape: no extra forward pass needed
            shape = tuple(next(iter(traced.graph.outputs())).type().sizes())
        except (RuntimeError, AttributeError, StopIteration, TypeError):  # pragma: no cover
            shape = tuple(traced(example).shape)
        if len(shape) != 2 or shape[0] != 1 or shape[1] != expected_classes:
            raise ValueError(
                f"the model gives {shape[1:]} scores per example but there are {expected_classes} class labels"
            )
        return torch.jit.freeze(traced)


def _image_preprocessing(backbone: nn.Module) -> tuple[nn.Module, float, float]:
    """The backbone to trace and Core ML's image scale and bias for it.

    A backbone with a `normalize` attribute (EfficientNetLiteFeatures) computes (255 x - 127) / 128
    itself when normalize is on; that step moves into Core ML's preprocessing (pixel p in 0..255
    -> (p - 127) / 128) and the copy traced runs with normalize off. A backbone without the
    attribute takes RGB in [0, 1]: scale 1/255, no bias.
    """
    copy_ = _frozen_copy(backbone)
    if hasattr(copy_, "normalize"):
        copy_.normalize = False
        return copy_, 1.0 / 128.0, -127.0 / 128.0
    return copy_, 1.0 / 255.0, 0.0


# ----------------------------------------------------------------------------------------------
# metadata


def _metadata_fields(metadata) -> dict:
    if metadata is None:
        return {}
    if isinstance(metadata, Mapping):
        fields = dict(metadata)
        if "shortDescription" in fields and "short_description" not in fields:
            fields["short_description"] = fields["shortDescription"]
        unknown = set(fields) - {"author", "short_description", "shortDescription", "license", "version",
                                 "additional"}
        if unknown:
            raise ValueError(f"unknown model metadata keys: {sorted(unknown)}")
        return fields
    fields = {}
    for name in ("author", "short_description", "license", "version", "additional"):
        if not hasattr(metadata, name):
            raise TypeError(
                f"metadata must be an MLModelMetadata or a dict; {type(metadata).__name__} has no {name!r}"
            )
        fields[name] = getattr(metadata, name)
    return fields


def apply_metadata(spec, metadata=None, training_info: Mapping | None = None,
                   creator_keys: Mapping | None = None) -> None:
    """Write `metadata` (MLModelMetadata or dict) and `training_info` into a model spec in place.

    author, short description, licence and version go into the spec's standard fields; the
    `additional` dictionary, `training_info`, `creator_keys` (Create ML's own keys, e.g.
    "Target Frame Rate") and `com.github.createml_widgets.version` go into the user-defined
    metadata (every key and value stored as a string). `com.apple.createml.*` keys are refused:
    they say which Create ML version made a file, and this one was not made by Create ML.
    """
    fields = _metadata_fields(metadata)
    meta = spec.description.metadata
    for name, target in (("author", "author"), ("short_description", "shortDescription"),
                         ("license", "license"), ("version", "versionString")):
        value = fields.get(name)
        if value is not None:
            setattr(meta, target, str(value))
    user = meta.userDefined
    for source in (fields.get("additional") or {}, training_info or {}, creator_keys or {}):
        if not isinstance(source, Mapping):
            raise TypeError(f"expected a dict of strings, got {type(source).__name__}")
        for key, value in source.items():
            if str(key).startswith(RESERVED_METADATA_PREFIX):
                raise ValueError(
                    f"metadata key {key!r}: {RESERVED_METADATA_PREFIX}* keys record the Create ML version that "
                    "made a model, and this model was not made by Create ML; use another key name"
                )
            if value is not None:
                user[str(key)] = str(value)
    user[VERSION_METADATA_KEY] = _package_version()


def _describe(spec, descriptions: Mapping[str, str]) -> None:
    for feature in list(spec.description.input) + list(spec.description.output):
        if feature.name in descriptions:
            feature.shortDescription = descriptions[feature.name]


# ----------------------------------------------------------------------------------------------
# specification versions

# NeuralNetwork layer types by the specification version that introduced them (Core ML 1 = iOS 11,
# 3 = iOS 12, 4 = iOS 13, 5 = iOS 14); any other layer type is one of Core ML 3's (version 4) ND layers.
_NN_LAYERS_V1 = frozenset({
    "convolution", "pooling", "activation", "innerProduct", "embedding", "batchnorm", "mvn", "l2normalize",
    "softmax", "lrn", "crop", "padding", "upsample", "unary", "add", "multiply", "average", "scale", "bias",
    "max", "min", "dot", "reduce", "loadConstant", "reshape", "flatten", "permute", "concat", "split",
    "sequenceRepeat", "reorganizeData", "slice", "simpleRecurrent", "gru", "uniDirectionalLSTM",
    "biDirectionalLSTM",
})
_NN_LAYERS_V3 = frozenset({"resizeBilinear", "cropResize", "custom"})
_NN_LAYERS_V5 = frozenset({
    "cumSum", "oneHot", "clampedReLU", "argSort", "pooling3d", "globalPooling3d", "sliceBySize", "convolution3d",
})


def _weight_version(params) -> int:
    """2 for float16 weights, 3 for quantized ones, 1 otherwise, over every WeightParams in `params`."""
    version = 1
    for field, value in params.ListFields():
        if field.message_type is None:
            continue
        values = value if field.label == field.LABEL_REPEATED else [value]
        for item in values:
            if field.message_type.name == "WeightParams":
                if len(item.int8RawValue) or item.HasField("quantization"):
                    version = max(version, 3)
                elif len(item.float16Value):
                    version = max(version, 2)
            else:
                version = max(version, _weight_version(item))
    return version


def minimum_specification_version(spec) -> int:
    """The lowest Core ML specification version a neural network spec's layers, weights and
    inputs need (Create ML's own image classifiers are version 1 pipelines; a network of Core ML 3
    ND layers needs 4 = iOS 13 / macOS 10.15)."""
    kind = spec.WhichOneof("Type")
    if kind not in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return int(spec.specificationVersion)
    nn = getattr(spec, kind)
    version = 1
    if nn.imageInputShapeMapping or nn.arrayInputShapeMapping:
        version = 4
    for feature in spec.description.input:
        t = feature.type
        if t.WhichOneof("Type") == "imageType" and t.imageType.WhichOneof("SizeFlexibility"):
            version = max(version, 3)
        if t.WhichOneof("Type") == "multiArrayType" and t.multiArrayType.WhichOneof("ShapeFlexibility"):
            version = max(version, 3)
    for layer in nn.layers:
        name = layer.WhichOneof("layer")
        version = max(version, 1 if name in _NN_LAYERS_V1 else 3 if name in _NN_LAYERS_V3
                      else 5 if name in _NN_LAYERS_V5 else 4)
        version = max(version, _weight_version(getattr(layer, name)))
    return version


# ----------------------------------------------------------------------------------------------
# flexible image input


class _CentreCropResize(nn.Module):
    """(1, C, H, W) -> (1, C, S, S): bilinear samples of the centred min(H, W) square at the cell
    centres of an S x S grid (`image_embedding.crop_grid`), for any H, W traced dynamically.

    Written with tent-weight matrices (relu(1 - |grid - pixel|)) so the sizes stay symbolic in
    the traced graph: the ML program and the ONNX graph take any image size.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)
        self.register_buffer("cells", torch.arange(self.size, dtype=torch.float32) + 0.5)

    def _weights(self, line: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        pixels = torch.cumsum(torch.ones_like(line), 0) - 1.0  # 0 .. n-1, n symbolic
        length = pixels[-1:] + 1.0
        grid = (length - side) * 0.5 - 0.5 + self.cells * (side / self.size)
        return torch.relu(1.0 - torch.abs(grid.unsqueeze(1) - pixels.unsqueeze(0)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        column, row = image[0, 0, :, 0], image[0, 0, 0, :]
        height = torch.ones_like(column).sum().reshape(1)
        width = torch.ones_like(row).sum().reshape(1)
        side = torch.minimum(height, width)
        ry, rx = self._weights(column, side), self._weights(row, side)
        return torch.matmul(torch.matmul(ry, image), rx.transpose(0, 1))


def _set_image_size_range(feature, declared: int) -> None:
    t = feature.type.imageType
    t.width = t.height = int(declared)
    t.ClearField("SizeFlexibility")
    for axis in (t.imageSizeRange.widthRange, t.imageSizeRange.heightRange):
        axis.lowerBound = int(declared)
        axis.upperBound = -1


def _nn_crop_resize_input(spec, declared: int, size: int) -> None:
    """Make a converted fixed-size image network take `declared` x `declared` and up.

    Core ML layers in front of the network compute the centred square of the input from its
    runtime shape (getShape) and resample it to `size` with CropResize (STRICT_ALIGN_ENDPOINTS,
    pixel coordinates, box chosen so its samples fall on `image_embedding.crop_grid`).
    """
    from coremltools.proto import NeuralNetwork_pb2

    nn = spec.neuralNetworkClassifier
    (feature,) = [f for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"]
    name = feature.name
    inner = f"{name}__cropped"
    for layer in nn.layers:
        for i, value in enumerate(layer.input):
            if value == name:
                layer.input[i] = inner
    prefix = f"{name}__crop"
    new = []

    def layer(kind: str, suffix: str, inputs, **params):
        message = NeuralNetwork_pb2.NeuralNetworkLayer(name=f"{prefix}_{suffix}", input=list(inputs),
                                                        output=[f"{prefix}_{suffix}"])
        getattr(message, kind).SetInParent()
        for key, value in params.items():
            target = getattr(message, kind)
            if isinstance(value, list):
                getattr(target, key).extend(value)
            else:
                setattr(target, key, value)
        new.append(message)
        return message.output[0]

    def const(suffix: str, value: float) -> str:
        message = NeuralNetwork_pb2.NeuralNetworkLayer(name=f"{prefix}_{suffix}", output=[f"{prefix}_{suffix}"])
        message.loadConstantND.shape.extend([1])
        message.loadConstantND.data.floatValue.extend([float(value)])
        new.append(message)
        return message.output[0]

    shape = layer("getShape", "shape", [name])                        # [1, 3, H, W]
    height = layer("sliceStatic", "h", [shape], beginIds=[2], endIds=[3], strides=[1], beginMasks=[False],
                   endMasks=[False])
    width = layer("sliceStatic", "w", [shape], beginIds=[3], endIds=[4], strides=[1], beginMasks=[False],
                  endMasks=[False])
    side = layer("minBroadcastable", "side", [height, width])
    # start = (L - side) / 2 - 0.5 + side / (2 S); end = start + side (S - 1) / S
    half_cell = layer("multiplyBroadcastable", "halfcell", [side, const("k_halfcell", 0.5 / size)])
    extent = layer("multiplyBroadcastable", "extent", [side, const("k_extent", (size - 1) / size)])
    minus_half = const("k_minus_half", -0.5)
    ends = []
    for axis, length in (("y", height), ("x", width)):
        margin = layer("subtractBroadcastable", f"{axis}_margin", [length, side])
        half = layer("multiplyBroadcastable", f"{axis}_half", [margin, const(f"k_{axis}_half", 0.5)])
        start = layer("addBroadcastable", f"{axis}_start0", [half, minus_half])
        start = layer("addBroadcastable", f"{axis}_start", [start, half_cell])
        ends.append((start, layer("addBroadcastable", f"{axis}_end", [start, extent])))
    (y1, y2), (x1, x2) = ends
    box = layer("concatND", "box", [y1, x1, y2, x2], axis=0)  # CORNERS_HEIGHT_FIRST
    roi = layer("reshapeStatic", "roi", [box], targetShape=[1, 1, 4, 1, 1])
    rank5 = layer("expandDims", "rank5", [name], axes=[0])
    cropped = layer("cropResize", "resize", [rank5, roi], targetSize=[size, size], normalizedCoordinates=False,
                    spatialScale=1.0)
    new[-1].cropResize.mode.samplingMethod = NeuralNetwork_pb2.SamplingMode.STRICT_ALIGN_ENDPOINTS_MODE
    new[-1].cropResize.boxIndicesMode.boxMode = NeuralNetwork_pb2.BoxCoordinatesMode.CORNERS_HEIGHT_FIRST
    squeeze = layer("squeeze", "squeeze", [cropped], axes=[0])
    new[-1].output[0] = inner
    del squeeze
    old = list(nn.layers)
    del nn.layers[:]
    nn.layers.extend(new + old)
    _set_image_size_range(feature, declared)


# ----------------------------------------------------------------------------------------------
# conversion


def _convert(traced, inputs, labels: list[str], label_name: str, probs_name: str, fmt: str,
             descriptions: Mapping[str, str], metadata, training_info, creator_keys=None, spec_edit=None):
    """Convert once, then rename the probability output, describe the features and add metadata."""
    with _quiet_conversion() as ct:
        kwargs = {"compute_precision": ct.precision.FLOAT32} if fmt == "mlprogram" else {}
        converted = ct.convert(
            traced, inputs=inputs, convert_to=fmt,
            classifier_config=ct.ClassifierConfig(labels, predicted_feature_name=label_name),
            **kwargs,
        )
        spec = converted.get_spec()
        current = spec.description.predictedProbabilitiesName
        if current != probs_name:
            ct.utils.rename_feature(spec, current, probs_name)
        if spec_edit is not None:
            spec_edit(spec)
        _describe(spec, descriptions)
        apply_metadata(spec, metadata, training_info, creator_keys)
        if fmt == "neuralnetwork":
            spec.specificationVersion = minimum_specification_version(spec)
        if fmt == "mlprogram":
            model = ct.models.MLModel(spec, weights_dir=converted.weights_dir)
        else:
            model = ct.models.MLModel(spec)
    del converted  # its temporary package is removed with it
    return model


def image_classifier_model(backbone: nn.Module, head: nn.Module, class_labels, *, fmt: str = "neuralnetwork",
                           metadata=None, training_info: Mapping | None = None, input_size: int | None = None):
    """A Core ML image classifier: `image` -> `classLabel`, `classLabelProbs`.

    `backbone` maps (N, 3, S, S) RGB in [0, 1] to (N, D) features and has `input_size` (S) - an
    `EfficientNetLiteFeatures` or a custom extractor; `head` maps (N, D) to (N, K) logits, K =
    len(class_labels). A softmax is appended. The backbone's normalisation becomes Core ML image
    preprocessing (scale and bias).

    Without `input_size` the image input is RGB, S x S exactly. With `input_size` (Create ML's
    299, or 360 for scenePrint revision 2) it is declared `input_size` x `input_size` and takes any
    size from there up (imageSizeRange input_size...unbounded): the model resamples the centred
    square to S x S itself (`image_embedding.resize_square`), so a 299 x 299 input computes what
    training saw.
    """
    fmt = _check_format(fmt)
    labels = _check_labels(class_labels)
    size = int(getattr(backbone, "input_size", 0) or 0)
    if size <= 0:
        raise TypeError(f"the feature extractor {type(backbone).__name__} needs an input_size attribute")
    if input_size is not None and int(input_size) < size:
        raise ValueError(f"input_size {input_size} is smaller than the network's {size} x {size} input")
    features, scale, bias = _image_preprocessing(backbone)
    head = _frozen_copy(head)
    ct = _coremltools()
    declared = size if input_size is None else int(input_size)
    flexible = input_size is not None
    if flexible and fmt == "mlprogram":
        wrapper = _ImageClassifier(nn.Sequential(_CentreCropResize(size), features), head)
        # coremltools refuses an unbounded range for ML programs when converting; the declared
        # range is set to unbounded afterwards (the program's dimensions stay symbolic).
        shape = ct.Shape((1, 3, ct.RangeDim(declared, _CONVERT_UPPER_BOUND, default=declared),
                          ct.RangeDim(declared, _CONVERT_UPPER_BOUND, default=declared)))
    else:
        wrapper = _ImageClassifier(features, head)
        shape = (1, 3, size, size)
    example_size = declared if flexible and fmt == "mlprogram" else size
    example = (torch.rand(1, 3, example_size, example_size, generator=torch.Generator().manual_seed(0))
               * 255.0) * scale + bias
    traced = _trace(wrapper, example, len(labels))
    image = ct.ImageType(name="image", shape=shape, scale=scale, bias=[bias, bias, bias],
                         color_layout=ct.colorlayout.RGB)
    edit = None
    if flexible:
        if fmt == "neuralnetwork":
            def edit(spec):
                _nn_crop_resize_input(spec, declared, size)
        else:
            def edit(spec):
                _set_image_size_range(spec.description.input[0], declared)
    return _convert(
        traced, [image], labels, "classLabel", "classLabelProbs", fmt,
        {"image": IMAGE_INPUT_DESCRIPTION, "classLabel": CLASS_LABEL_DESCRIPTION,
         "classLabelProbs": CLASS_PROBS_DESCRIPTION},
        metadata, training_info, creator_metadata("image"), edit,
    )


def _is_action_net(net: nn.Module, window: int) -> bool:
    try:
        from ..nets import HandActionGCN, HandPoseGCN
    except ImportError:  # pragma: no cover
        return window > 1
    if isinstance(net, HandActionGCN):
        return True
    if isinstance(net, HandPoseGCN):
        return False
    return window > 1


def keypoint_classifier_model(net: nn.Module, class_labels, window: int, *, fmt: str = "neuralnetwork",
                              metadata=None, training_info: Mapping | None = None, frame_rate: float = 30.0):
    """A Core ML hand pose / hand action classifier: `poses` -> `label`, `labelProbabilities`.

    `net` maps (N, window, 3, 21) keypoints to (N, K) logits (HandPoseGCN with window 1,
    HandActionGCN with window = prediction_window_size). The Core ML input `poses` is a Float32
    multi-array (window, 3, 21) without a batch dimension, as Vision's keypointsMultiArray() gives.
    Create ML's creator-defined keys carry the window, `frame_rate` (a hand pose model: 30.0, as
    Create ML writes) and Xcode's preview type.
    """
    fmt = _check_format(fmt)
    labels = _check_labels(class_labels)
    window = int(window)
    if window < 1:
        raise ValueError(f"the prediction window must be at least 1 frame, got {window}")
    action = _is_action_net(net, window)
    wrapper = _KeypointClassifier(_frozen_copy(net))
    example = torch.rand(window, 3, 21, generator=torch.Generator().manual_seed(0))
    traced = _trace(wrapper, example, len(labels))
    ct = _coremltools()
    poses = ct.TensorType(name="poses", shape=(window, 3, 21), dtype=np.float32)
    kind = "hand action" if action else "hand pose"
    return _convert(
        traced, [poses], labels, "label", "labelProbabilities", fmt,
        {"poses": poses_description(window, action), "label": f"Most likely {kind} category.",
         "labelProbabilities": LABEL_PROBS_DESCRIPTION},
        metadata, training_info, creator_metadata(kind, window, frame_rate),
    )


def creator_metadata(kind: str, window: int = 1, frame_rate: float = 30.0) -> dict[str, str]:
    """Create ML's creator-defined keys for a task kind ("image", "hand pose", "hand action")."""
    keys = {PREVIEW_TYPE_KEY: PREVIEW_TYPES[kind]}
    if kind != "image":
        keys[WINDOW_SIZE_KEY] = str(int(window))
        keys[FRAME_RATE_KEY] = repr(float(frame_rate))
    return keys


# ----------------------------------------------------------------------------------------------
# weight precision

# `precision` of a neural network (.mlmodel) file -> bits per weight (coremltools quantization_utils)
PRECISIONS = {"float32": 32, "float16": 16, "int8": 8}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown weight precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def quantize_model(model, precision: str):
    """A neural network MLModel with its weights stored as `precision`: "float32" (unchanged),
    "float16" (half floats, Core ML 2 / iOS 11.2+) or "int8" (8-bit linear quantisation per layer,
    scale and bias, Core ML 2 / iOS 12+). Computation stays float32 in Core ML either way; the
    specification version is the lowest the layers and weights allow."""
    precision = check_precision(precision)
    if precision == "float32":
        return model
    if _model_format(model) != "neuralnetwork":
        raise ValueError(f"weight precision {precision!r} is offered for .mlmodel (neural network) files; "
                         "write an ML program (.mlpackage) with precision='float32'")
    with _quiet_conversion():
        from coremltools.models.neural_network import quantization_utils

        # it prints a line per layer: silenced at the source (its module-level `print`), not stdout
        quantization_utils.print = lambda *args, **kwargs: None
        try:
            quantized = quantization_utils.quantize_weights(model, PRECISIONS[precision], "linear")
        finally:
            del quantization_utils.print
        spec = quantized.get_spec()
        spec.specificationVersion = minimum_specification_version(spec)
        return _coremltools().models.MLModel(spec)


# ----------------------------------------------------------------------------------------------
# writing


def _model_format(model) -> str:
    spec = model.get_spec()
    return "mlprogram" if spec.WhichOneof("Type") == "mlProgram" else "neuralnetwork"


def _path_error(err: OSError, path: Path, what: str, kind: str = "Core ML") -> OSError:
    message = f"cannot write the {kind} model {str(path)!r}: {what} ({err.strerror or err})"
    if err.errno is not None:
        return type(err)(err.errno, message)
    return type(err)(message)


def _is_model_package(path: Path) -> bool:
    """Whether the folder `path` is a Core ML package (Manifest.json and its Data folder, nothing else)."""
    names = {entry.name for entry in path.iterdir()}
    return "Manifest.json" in names and names <= {"Manifest.json", "Data"}


def write_model(model, path) -> Path:
    """Write a Core ML model: `.mlmodel` for a neural network, `.mlpackage` for an ML program.

    The parent folder is created when missing. The model is written under a temporary name in
    the same folder and then renamed into place, so a failed write never leaves half a model
    (and an existing model at `path` is replaced only once the new one is complete).
    Raises ValueError for another suffix or a model of the other format, OSError (e.g.
    PermissionError, NotADirectoryError) naming `path` when the location cannot be written.
    """
    path = Path(os.fspath(path)).expanduser()
    wanted = format_for_path(path)
    held = _model_format(model)
    if held != wanted:
        other = {"neuralnetwork": ".mlmodel", "mlprogram": ".mlpackage"}[held]
        raise ValueError(
            f"cannot write {str(path)!r}: a {path.suffix} file holds "
            f"{'an ML program' if wanted == 'mlprogram' else 'a neural network'}, but this model is "
            f"{'an ML program' if held == 'mlprogram' else 'a neural network'}; write it to a {other} "
            f"file or export it with fmt={wanted!r}"
        )
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _path_error(err, path, f"its folder {str(parent)!r} cannot be created") from err
    if not parent.is_dir():
        raise NotADirectoryError(20, f"cannot write the Core ML model {str(path)!r}: {str(parent)!r} is not a folder")
    if path.is_dir() and wanted == "neuralnetwork":
        raise IsADirectoryError(21, f"cannot write the Core ML model {str(path)!r}: a folder has that name")
    if path.is_dir() and not path.is_symlink() and not _is_model_package(path):
        # replacing it would delete whatever the folder holds: only an earlier package is replaced
        raise IsADirectoryError(21, f"cannot write the Core ML model {str(path)!r}: a folder of that name holds "
                                    "files that are not a Core ML package; nothing was changed — move it or "
                                    "write the model under another name")
    temp = temp_sibling(path, "tmp")
    try:
        with _quiet_conversion():
            model.save(str(temp))
    except OSError as err:
        remove_quietly(temp)
        raise _path_error(err, path, "the file cannot be created") from err
    except BaseException:
        remove_quietly(temp)
        raise
    try:
        move_into_place(temp, path)
    except OSError as err:
        raise _path_error(err, path, "the finished model cannot be moved into place") from err
    return path

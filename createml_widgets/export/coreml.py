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
import functools
import importlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._fileio import move_into_place, remove_quietly, temp_sibling
from ._common import (
    CLASS_LABEL_DESCRIPTION,
    CLASS_PROBS_DESCRIPTION,
    FRAME_RATE_KEY,
    HAND_JOINT_NAMES,
    IMAGE_INPUT_DESCRIPTION,
    LABEL_PROBS_DESCRIPTION,
    PREVIEW_TYPE_KEY,
    PREVIEW_TYPES,
    VERSION_METADATA_KEY,
    WINDOW_SIZE_KEY,
    _CentreCropResize,
    _check_labels,
    _frozen_copy,
    _image_preprocessing,
    _ImageClassifier,
    _is_action_net,
    _KeypointClassifier,
    _path_error,
    creator_metadata,
    metadata_entries,
    poses_description,
)
from .coreml_spec import _nn_crop_resize_input, _set_image_size_range, minimum_specification_version  # noqa: F401

if TYPE_CHECKING:
    from coremltools.models import MLModel

    from ..metadata import MLModelMetadata

__all__ = [
    "FORMATS", "SUFFIXES", "HAND_JOINT_NAMES", "VERSION_METADATA_KEY", "format_for_path", "image_classifier_model",
    "keypoint_classifier_model", "write_model", "apply_metadata", "poses_description", "creator_metadata",
    "minimum_specification_version", "quantize_model", "check_precision", "PRECISIONS", "PREVIEW_TYPE_KEY", "WINDOW_SIZE_KEY", "FRAME_RATE_KEY", "PREVIEW_TYPES",
]

FORMATS = ("neuralnetwork", "mlprogram")
# file suffix -> model format it holds
SUFFIXES = {".mlmodel": "neuralnetwork", ".mlpackage": "mlprogram"}
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


# ----------------------------------------------------------------------------------------------
# arguments


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown Core ML model format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return fmt


def format_for_path(path: str | os.PathLike) -> str:
    """The model format a file name asks for: `.mlmodel` -> "neuralnetwork", `.mlpackage` -> "mlprogram"."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot write a model to {str(path)!r}: the name must end in .mlmodel "
            f"(a Core ML neural network), .mlpackage (a Core ML ML program) or .onnx (ONNX), "
            f"not {suffix or 'no suffix'!r}"
        )
    return SUFFIXES[suffix]


# ----------------------------------------------------------------------------------------------
# torch wrappers


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


# ----------------------------------------------------------------------------------------------
# metadata


def apply_metadata(spec: Any, metadata: MLModelMetadata | Mapping | None = None, training_info: Mapping | None = None,
                   creator_keys: Mapping | None = None) -> None:
    """Write `metadata` (MLModelMetadata or dict) and `training_info` into a model spec in place.

    author, short description, licence and version go into the spec's standard fields; the
    `additional` dictionary, `training_info`, `creator_keys` (Create ML's own keys, e.g.
    "Target Frame Rate") and `com.github.createml_widgets.version` go into the user-defined
    metadata (every key and value stored as a string). `com.apple.createml.*` keys are refused:
    they say which Create ML version made a file, and this one was not made by Create ML.
    """
    standard, entries = metadata_entries(metadata, training_info, creator_keys)
    meta = spec.description.metadata
    for name, target in (("author", "author"), ("short_description", "shortDescription"),
                         ("license", "license"), ("version", "versionString")):
        if name in standard:
            setattr(meta, target, standard[name])
    for key, value in entries.items():
        meta.userDefined[key] = value


def _describe(spec, descriptions: Mapping[str, str]) -> None:
    for feature in list(spec.description.input) + list(spec.description.output):
        if feature.name in descriptions:
            feature.shortDescription = descriptions[feature.name]


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


def image_classifier_model(backbone: nn.Module, head: nn.Module, class_labels: Iterable[str], *,
                           fmt: str = "neuralnetwork", metadata: MLModelMetadata | Mapping | None = None,
                           training_info: Mapping | None = None, input_size: int | None = None) -> MLModel:
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


def keypoint_classifier_model(net: nn.Module, class_labels: Iterable[str], window: int, *, fmt: str = "neuralnetwork",
                              metadata: MLModelMetadata | Mapping | None = None, training_info: Mapping | None = None,
                              frame_rate: float = 30.0) -> MLModel:
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


# ----------------------------------------------------------------------------------------------
# weight precision

# `precision` of a neural network (.mlmodel) file -> bits per weight (coremltools quantization_utils)
PRECISIONS = {"float32": 32, "float16": 16, "int8": 8}


def check_precision(precision: str) -> str:
    """`precision` itself if it is one of PRECISIONS; ValueError naming the allowed ones otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown weight precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return precision


def quantize_model(model: MLModel, precision: str) -> MLModel:
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


def _is_model_package(path: Path) -> bool:
    """Whether the folder `path` is a Core ML package (Manifest.json and its Data folder, nothing else)."""
    names = {entry.name for entry in path.iterdir()}
    return "Manifest.json" in names and names <= {"Manifest.json", "Data"}


def write_model(model: MLModel, path: str | os.PathLike) -> Path:
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

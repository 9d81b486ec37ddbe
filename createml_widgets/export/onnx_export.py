"""ONNX export of the three tasks' models: the same interface as the Core ML files, for ONNX Runtime.

* image classifier: input `image`, float32 (1, 3, H, W), RGB pixel values 0..255, any H, W from the
  Core ML model's declared size up (299, 360 for scenePrint revision 2); the graph takes the centred
  square and resamples it to the network's size exactly as the Core ML model does. Outputs
  `classLabel` (string, shape (1,)) and `classLabelProbs` (float32, (1, K), in class-label order).
* hand pose / hand action classifier: input `poses`, float32 (window, 3, 21) as Vision's
  keypointsMultiArray() gives; outputs `label` (string, (1,)) and `labelProbabilities` ((1, K)).

The model's metadata_props hold the class labels (`classLabels`, a JSON list), Create ML's
creator-defined keys ("Prediction Window Size", "Target Frame Rate", preview type), the author,
description, licence and version, and the training information the Core ML file carries.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .._fileio import atomic_write
from . import _common as common

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from ..metadata import MLModelMetadata

__all__ = ["OPSET", "CLASS_LABELS_KEY", "image_classifier_onnx", "keypoint_classifier_onnx", "write_onnx"]

OPSET = 17  # ONNX Runtime 1.12 (2022) and later
CLASS_LABELS_KEY = "classLabels"


class _OnnxImage(nn.Module):
    """(1, 3, H, W) pixels 0..255 -> (1, K) probabilities: normalise, centre-crop-resize, classify."""

    def __init__(self, features: nn.Module, head: nn.Module, size: int, scale: float, bias: float):
        super().__init__()
        self.crop = common._CentreCropResize(size)
        self.features, self.head = features, head
        self.scale, self.bias = float(scale), float(bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.crop(image * self.scale + self.bias)
        return torch.softmax(self.head(self.features(x)), dim=1)


def _onnx():
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - onnx is a dependency
        raise ImportError("writing an .onnx model needs the onnx package: pip install onnx") from err
    return onnx


def _torch_graph(wrapper: nn.Module, example: torch.Tensor, input_name: str, probs_name: str,
                 dynamic_axes: dict | None):
    onnx = _onnx()
    buffer = io.BytesIO()
    wrapper.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[probs_name],
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _add_label_output(model, labels: list[str], probs_name: str, label_name: str) -> None:
    """label = class_labels[argmax(probabilities)], a (1,) string tensor."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    graph = model.graph
    for output in graph.output:  # one example in, one row of probabilities out: (1, K), not a symbol
        if output.name == probs_name:
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            for value in (1, len(labels)):
                dims.add().dim_value = value
    labels_const = helper.make_tensor("__class_labels", TensorProto.STRING, [len(labels)],
                                      [label.encode("utf-8") for label in labels])
    graph.initializer.append(labels_const)
    graph.node.extend([
        helper.make_node("ArgMax", [probs_name], ["__label_index"], axis=1, keepdims=0, name="label_index"),
        helper.make_node("Gather", ["__class_labels", "__label_index"], [label_name], axis=0, name="label"),
    ])
    graph.output.insert(0, helper.make_tensor_value_info(label_name, TensorProto.STRING, [1]))
    onnx.checker.check_model(model)


def _metadata_props(model, labels: list[str], metadata, training_info: Mapping | None,
                    creator_keys: Mapping[str, str], description: str) -> None:
    standard, entries = common.metadata_entries(metadata, training_info, creator_keys)
    props: dict[str, str] = {CLASS_LABELS_KEY: json.dumps(labels, ensure_ascii=False)}
    for name, key in (("author", "author"), ("short_description", "shortDescription"), ("license", "license"),
                      ("version", "version")):
        if name in standard:
            props[key] = standard[name]
    props.update(entries)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "createml-widgets"
    model.producer_version = common._package_version()
    model.doc_string = standard.get("short_description", "")
    model.graph.doc_string = description


def _describe(model, descriptions: Mapping[str, str]) -> None:
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in descriptions:
            value.doc_string = descriptions[value.name]


def image_classifier_onnx(backbone: nn.Module, head: nn.Module, class_labels: Iterable[str], *, input_size: int,
                          metadata: MLModelMetadata | Mapping | None = None,
                          training_info: Mapping | None = None) -> onnx.ModelProto:
    """An onnx.ModelProto: `image` (1, 3, H, W) pixels 0..255, H, W >= input_size -> classLabel,
    classLabelProbs. Computes what the Core ML model of `coreml.image_classifier_model(...,
    input_size=input_size)` computes."""
    labels = common._check_labels(class_labels)
    size = int(getattr(backbone, "input_size", 0) or 0)
    if size <= 0:
        raise TypeError(f"the feature extractor {type(backbone).__name__} needs an input_size attribute")
    features, scale, bias = common._image_preprocessing(backbone)
    wrapper = _OnnxImage(features, common._frozen_copy(head), size, scale, bias)
    declared = int(input_size)
    example = torch.rand(1, 3, declared, declared, generator=torch.Generator().manual_seed(0)) * 255.0
    model = _torch_graph(wrapper, example, "image", "classLabelProbs", {"image": {2: "height", 3: "width"}})
    _add_label_output(model, labels, "classLabelProbs", "classLabel")
    _describe(model, {
        "image": f"{common.IMAGE_INPUT_DESCRIPTION}: RGB pixel values 0-255, shape (1, 3, height, width), "
                 f"height and width {declared} or more (the centred square is used)",
        "classLabel": common.CLASS_LABEL_DESCRIPTION, "classLabelProbs": common.CLASS_PROBS_DESCRIPTION + " (in classLabels order)",
    })
    _metadata_props(model, labels, metadata, training_info, common.creator_metadata("image"),
                    "Image classifier written by createml-widgets")
    return model


def keypoint_classifier_onnx(net: nn.Module, class_labels: Iterable[str], window: int, *, frame_rate: float = 30.0,
                             metadata: MLModelMetadata | Mapping | None = None,
                             training_info: Mapping | None = None) -> onnx.ModelProto:
    """An onnx.ModelProto: `poses` (window, 3, 21) -> label, labelProbabilities."""
    labels = common._check_labels(class_labels)
    window = int(window)
    if window < 1:
        raise ValueError(f"the prediction window must be at least 1 frame, got {window}")
    action = common._is_action_net(net, window)
    wrapper = common._KeypointClassifier(common._frozen_copy(net))
    example = torch.rand(window, 3, 21, generator=torch.Generator().manual_seed(0))
    model = _torch_graph(wrapper, example, "poses", "labelProbabilities", None)
    _add_label_output(model, labels, "labelProbabilities", "label")
    kind = "hand action" if action else "hand pose"
    _describe(model, {"poses": common.poses_description(window, action), "label": f"Most likely {kind} category.",
                      "labelProbabilities": common.LABEL_PROBS_DESCRIPTION + " (in classLabels order)"})
    _metadata_props(model, labels, metadata, training_info, common.creator_metadata(kind, window, frame_rate),
                    f"{kind.capitalize()} classifier written by createml-widgets")
    return model


def write_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write an onnx.ModelProto to `path` (.onnx) atomically: a temporary file, then a rename."""
    path = Path(os.fspath(path)).expanduser()
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"cannot write an ONNX model to {str(path)!r}: the name must end in .onnx")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise common._path_error(err, path, f"its folder {str(parent)!r} cannot be created", "ONNX") from err
    if path.is_dir():
        raise IsADirectoryError(21, f"cannot write the ONNX model {str(path)!r}: a folder has that name")
    try:
        atomic_write(path, model.SerializeToString())
    except OSError as err:
        raise common._path_error(err, path, "the file cannot be written", "ONNX") from err
    return path


def labels_of(model: onnx.ModelProto) -> list[str]:
    """The class labels stored in an ONNX model's metadata (`classLabels`)."""
    for entry in model.metadata_props:
        if entry.key == CLASS_LABELS_KEY:
            return list(json.loads(entry.value))
    raise ValueError("the ONNX model has no classLabels metadata")


def probabilities(session: onnxruntime.InferenceSession, inputs: Mapping[str, np.ndarray], labels: list[str]) -> dict[str, float]:
    """{label: probability} from an onnxruntime InferenceSession of one of these models."""
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(None, dict(inputs))))
    probs = next(v for k, v in values.items() if k in ("classLabelProbs", "labelProbabilities"))
    return {label: float(p) for label, p in zip(labels, np.ravel(probs))}

"""Edits of a converted Core ML neural network spec: the lowest specification version its layers,
weights and inputs need, and the layers in front of an image network that let it take any image size
(the centre square, resampled as training does).
"""
from __future__ import annotations

from typing import Any

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


def minimum_specification_version(spec: Any) -> int:
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

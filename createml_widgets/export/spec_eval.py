"""A pure-numpy interpreter of Core ML model specifications.

Core ML's own runtime only exists on Apple platforms (`MLModel.predict` raises elsewhere), so this
module checks on any machine that an exported model computes what its torch model computes. It
reads the protobuf spec (and, for ML programs, the package's weight file) and evaluates it with
numpy alone - neither coremltools' prediction nor torch is used.

    evaluate("Digits.mlmodel", {"image": pil_image})
    -> {"classLabel": "3", "classLabelProbs": {"0": 0.01, ...}}

Supported: NeuralNetwork / NeuralNetworkClassifier / NeuralNetworkRegressor specs (the layer
types in `NN_LAYERS`, image preprocessing, both shape mappings) and ML programs (the MIL
operations in `MIL_OPS`, const weights stored inline or in the package's blob file). Anything
else raises NotImplementedError naming the layer or operation type.
"""
from __future__ import annotations

import contextvars
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

__all__ = ["evaluate", "load", "SpecInterpreter", "NN_LAYERS", "MIL_OPS", "read_blob"]


def _proto():
    from .coreml import _coremltools

    _coremltools()  # import it quietly once
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2

    return Model_pb2, MIL_pb2, FeatureTypes_pb2


# ==============================================================================================
# shared numerics (NCHW)


def _pad_amounts(size: int, kernel: int, stride: int, dilation: int, mode: str) -> tuple[int, int]:
    """'same' padding: output ceil(size / stride); the extra pixel goes at the end (or start)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (total - small, small) if mode == "top_left_heavy" else (small, total - small)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride=(1, 1), dilation=(1, 1),
           pads=(0, 0, 0, 0), groups: int = 1) -> np.ndarray:
    """Grouped 2-D cross-correlation. x (N, C, H, W), w (O, C/groups, kh, kw), pads (top, bottom, left, right)."""
    x = np.asarray(x, np.float32)
    w = np.asarray(w, np.float32)
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    if cg * groups != c or o % groups:
        raise ValueError(f"convolution: {c} input channels do not fit weights {w.shape} in {groups} groups")
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1

    def patch(i, j):
        return x[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]

    if groups == c and cg == 1 and o == c:  # depthwise
        out = np.zeros((n, o, ho, wo), np.float32)
        for i in range(kh):
            for j in range(kw):
                out += patch(i, j) * w[None, :, 0, i, j, None, None]
    else:
        if kh == kw == 1 and sh == sw == 1:
            cols = x[:, :, :ho, :wo].reshape(n, groups, cg, ho * wo)
        else:
            cols = np.empty((n, c, kh, kw, ho, wo), np.float32)
            for i in range(kh):
                for j in range(kw):
                    cols[:, :, i, j] = patch(i, j)
            cols = cols.reshape(n, groups, cg * kh * kw, ho * wo)
        wg = w.reshape(groups, o // groups, cg * kh * kw)
        out = np.matmul(wg[None], cols).reshape(n, o, ho, wo)
    if b is not None:
        out = out + np.asarray(b, np.float32).reshape(1, -1, 1, 1)
    return out


def pool2d(x: np.ndarray, kernel, stride, pads, mode: str, exclude_padding: bool = True) -> np.ndarray:
    """Max / average pooling over the last two axes of (..., H, W); pads (top, bottom, left, right)."""
    x = np.asarray(x, np.float32)
    lead = x.shape[:-2]
    x = x.reshape((-1,) + x.shape[-2:])
    kh, kw = kernel
    sh, sw = stride
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (pads[0], pads[1]), (pads[2], pads[3])), constant_values=fill)
    ones = np.pad(np.ones(x.shape[-2:], np.float32), ((pads[0], pads[1]), (pads[2], pads[3])))
    ho = (xp.shape[-2] - kh) // sh + 1
    wo = (xp.shape[-1] - kw) // sw + 1
    acc = np.full((x.shape[0], ho, wo), fill, np.float32)
    count = np.zeros((ho, wo), np.float32)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw]
            if mode == "max":
                acc = np.maximum(acc, window)
            else:
                acc += window
                count += ones[i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw]
    if mode != "max":
        acc = acc / (np.maximum(count, 1.0) if exclude_padding else float(kh * kw))
    return acc.reshape(lead + (ho, wo))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x, mode: str):
    x = np.asarray(x, np.float32)
    if mode == "EXACT":
        return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise NotImplementedError(f"gelu mode {mode}")


def _numpy_slice(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    index = []
    for i in range(x.ndim):
        if squeeze_mask is not None and i < len(squeeze_mask) and squeeze_mask[i]:
            index.append(int(begin[i]))
            continue
        start = None if (begin_mask is not None and begin_mask[i]) else int(begin[i])
        stop = None if (end_mask is not None and end_mask[i]) else int(end[i])
        step = int(stride[i]) if stride is not None else 1
        index.append(slice(start, stop, step))
    return x[tuple(index)]


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
# NeuralNetwork layers


# While a SpecInterpreter runs a network: {id(WeightParams): (message, decoded array)}.
_WEIGHT_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("spec_eval_weights", default=None)


def _weights(w, shape=None) -> np.ndarray:
    cache = _WEIGHT_CACHE.get()
    entry = cache.get(id(w)) if cache is not None else None
    if entry is not None and entry[0] is w:
        a = entry[1]
    else:
        a = _decode_weights(w)
        if cache is not None:
            cache[id(w)] = (w, a)  # keeping the message alive keeps its id unique
    return a.reshape(shape) if shape is not None else a


def _decode_weights(w) -> np.ndarray:
    if len(w.floatValue):
        a = np.asarray(w.floatValue, np.float32)
    elif len(w.float16Value):
        a = np.frombuffer(w.float16Value, np.float16).astype(np.float32)
    elif w.HasField("quantization"):
        a = _dequantize(w)
    elif len(w.int8RawValue):
        a = np.frombuffer(w.int8RawValue, np.int8).astype(np.float32)
    elif len(w.rawValue):
        raise NotImplementedError("raw neural network weights without quantization parameters")
    else:
        a = np.zeros(0, np.float32)
    return a


def _unpack_bits(data: bytes, nbits: int, count: int) -> np.ndarray:
    """`count` unsigned nbits-wide integers packed little-end-first in `data` (NeuralNetwork.proto)."""
    raw = np.frombuffer(data, np.uint8)
    if nbits == 8:
        return raw[:count].astype(np.int64)
    bits = np.unpackbits(raw, bitorder="little")[: count * nbits].reshape(count, nbits)
    return (bits.astype(np.int64) << np.arange(nbits)).sum(axis=1)


def _dequantize(w) -> np.ndarray:
    """float32 values of quantized weights: linear (scale * q + bias, one pair or one per output
    channel) or a lookup table (table[q])."""
    q = w.quantization
    nbits = int(q.numberOfBits)
    if not 1 <= nbits <= 8:
        raise NotImplementedError(f"{nbits}-bit quantized weights")
    count = len(w.rawValue) * 8 // nbits
    kind = q.WhichOneof("QuantizationType")
    if kind == "linearQuantization":
        scale = np.asarray(q.linearQuantization.scale, np.float32)
        bias = np.asarray(q.linearQuantization.bias, np.float32)
        values = _unpack_bits(w.rawValue, nbits, count).astype(np.float32)
        if scale.size > 1:  # per output channel: the weights' first axis
            values = values[: (count // scale.size) * scale.size].reshape(scale.size, -1)
            return (values * scale[:, None] + bias.reshape(-1, 1)).ravel()
        return values * scale.reshape(()) + (bias.reshape(()) if bias.size else 0.0)
    if kind == "lookupTableQuantization":
        table = np.asarray(q.lookupTableQuantization.floatValue, np.float32)
        return table[_unpack_bits(w.rawValue, nbits, count)]
    raise NotImplementedError(f"weight quantization {kind}")


def _border(amounts) -> tuple[int, int, int, int]:
    edges = list(amounts.borderAmounts)
    if not edges:
        return (0, 0, 0, 0)
    if len(edges) != 2:
        raise NotImplementedError(f"padding over {len(edges)} axes")
    return (edges[0].startEdgeSize, edges[0].endEdgeSize, edges[1].startEdgeSize, edges[1].endEdgeSize)


def _as_nchw(x):
    """Fold leading axes into a batch: (..., C, H, W) -> (B, C, H, W) and back."""
    x = np.asarray(x, np.float32)
    if x.ndim < 3:
        raise ValueError(f"expected a tensor of rank >= 3, got shape {x.shape}")
    lead = x.shape[:-3]
    return x.reshape((-1,) + x.shape[-3:]), lambda y: y.reshape(lead + y.shape[1:])


def _nn_convolution(p, xs):
    if p.isDeconvolution:
        raise NotImplementedError("convolution with isDeconvolution (transposed convolution)")
    x, back = _as_nchw(xs[0])
    kh, kw = (list(p.kernelSize) or [3, 3])
    stride = tuple(p.stride) or (1, 1)
    dilation = tuple(p.dilationFactor) or (1, 1)
    groups = p.nGroups or 1
    if len(xs) > 1:
        raise NotImplementedError("convolution with weights given as a second input")
    w = _weights(p.weights, (p.outputChannels, p.kernelChannels, kh, kw))
    b = _weights(p.bias) if p.hasBias else None
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        mode = "top_left_heavy" if p.same.asymmetryMode == 1 else "bottom_right_heavy"
        pads = _pad_amounts(x.shape[2], kh, stride[0], dilation[0], mode) + \
            _pad_amounts(x.shape[3], kw, stride[1], dilation[1], mode)
    else:
        pads = _border(p.valid.paddingAmounts)
    return back(conv2d(x, w, b, stride, dilation, pads, groups))


def _nn_pooling(p, xs):
    x = np.asarray(xs[0], np.float32)
    mode = {0: "max", 1: "avg", 2: "l2"}[p.type]
    if p.globalPooling:
        if mode == "max":
            return x.max(axis=(-2, -1), keepdims=True)
        if mode == "avg":
            return x.mean(axis=(-2, -1), keepdims=True)
        return np.sqrt((x * x).sum(axis=(-2, -1), keepdims=True))
    if mode == "l2":
        raise NotImplementedError("pooling type L2 (non-global)")
    kh, kw = list(p.kernelSize) or [3, 3]
    sh, sw = list(p.stride) or [1, 1]
    padding = p.WhichOneof("PoolingPaddingType")
    if padding == "same":
        pads = _pad_amounts(x.shape[-2], kh, sh, 1, "bottom_right_heavy") + \
            _pad_amounts(x.shape[-1], kw, sw, 1, "bottom_right_heavy")
    elif padding == "includeLastPixel":
        ph, pw = (list(p.includeLastPixel.paddingAmounts) + [0, 0])[:2]
        pads = []
        for size, k, s, pad in ((x.shape[-2], kh, sh, ph), (x.shape[-1], kw, sw, pw)):
            out = -(-(size + 2 * pad - k) // s) + 1
            if (out - 1) * s >= size + pad:
                out -= 1
            pads += [pad, max((out - 1) * s + k - size - pad, 0)]
        pads = tuple(pads)
    else:
        pads = _border(p.valid.paddingAmounts)
    return pool2d(x, (kh, kw), (sh, sw), pads, mode, p.avgPoolExcludePadding)


def _nn_padding(p, xs):
    x = np.asarray(xs[0], np.float32)
    top, bottom, left, right = _border(p.paddingAmounts)
    width = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    kind = p.WhichOneof("PaddingType")
    if kind == "constant":
        return np.pad(x, width, constant_values=p.constant.value)
    return np.pad(x, width, mode="reflect" if kind == "reflection" else "edge")


def _nn_activation(p, xs):
    x = np.asarray(xs[0], np.float32)
    kind = p.WhichOneof("NonlinearityType")
    q = getattr(p, kind)
    if kind == "ReLU":
        return np.maximum(x, 0.0)
    if kind == "linear":
        return q.alpha * x + q.beta
    if kind == "leakyReLU":
        return np.where(x >= 0, x, q.alpha * x)
    if kind == "thresholdedReLU":
        return np.where(x > q.alpha, x, 0.0)
    if kind == "PReLU":
        alpha = _weights(q.alpha)
        alpha = alpha.reshape((-1, 1, 1)) if alpha.size > 1 else alpha
        return np.where(x >= 0, x, alpha * x)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "scaledTanh":
        return q.alpha * np.tanh(q.beta * x)
    if kind == "sigmoid":
        return _sigmoid(x)
    if kind == "sigmoidHard":
        return np.clip(q.alpha * x + q.beta, 0.0, 1.0)
    if kind == "ELU":
        return np.where(x >= 0, x, q.alpha * (np.exp(x) - 1.0))
    if kind == "softsign":
        return x / (1.0 + np.abs(x))
    if kind == "softplus":
        return np.logaddexp(0.0, x)
    raise NotImplementedError(f"activation {kind}")


def _nn_unary(p, xs):
    x = p.scale * np.asarray(xs[0], np.float32) + p.shift
    op = {0: "SQRT", 1: "RSQRT", 2: "INVERSE", 3: "POWER", 4: "EXP", 5: "LOG", 6: "ABS", 7: "THRESHOLD"}[p.type]
    if op == "SQRT":
        return np.sqrt(x)
    if op == "RSQRT":
        return 1.0 / np.sqrt(x + p.epsilon)
    if op == "INVERSE":
        return 1.0 / (x + p.epsilon)
    if op == "POWER":
        return np.power(x, p.alpha)
    if op == "EXP":
        return np.exp(x)
    if op == "LOG":
        return np.log(x + p.epsilon)
    if op == "ABS":
        return np.abs(x)
    return np.maximum(x, p.alpha)


def _nn_inner_product(p, xs):
    x = np.asarray(xs[0], np.float32)
    w = _weights(p.weights, (p.outputChannels, p.inputChannels))
    b = _weights(p.bias) if p.hasBias else 0.0
    if x.shape[-1] == p.inputChannels:
        return x @ w.T + b
    if x.ndim >= 3 and x.shape[-3] == p.inputChannels and x.shape[-2:] == (1, 1):
        y = x[..., 0, 0] @ w.T + b
        return y[..., None, None]
    raise ValueError(f"innerProduct expects {p.inputChannels} input channels, got shape {x.shape}")


def _nn_batched_matmul(p, xs):
    a = np.asarray(xs[0], np.float32)
    if p.transposeA:
        a = np.swapaxes(a, -1, -2)
    if len(xs) == 2:
        b = np.asarray(xs[1], np.float32)
        if p.transposeB:
            b = np.swapaxes(b, -1, -2)
        return np.matmul(a, b)
    # one input: the weight is stored as (columns, rows), i.e. transposed
    w = _weights(p.weights, (p.weightMatrixSecondDimension, p.weightMatrixFirstDimension)).T
    y = np.matmul(a, w)
    return y + _weights(p.bias) if p.hasBias else y


def _nn_batchnorm(p, xs):
    x = np.asarray(xs[0], np.float32)
    c = p.channels
    shape = (c,) + (1,) * 2 if x.ndim >= 3 else (c,)
    gamma = _weights(p.gamma).reshape(shape)
    beta = _weights(p.beta).reshape(shape)
    if p.computeMeanVar:
        axes = (-2, -1) if p.instanceNormalization else tuple(i for i in range(x.ndim) if i != x.ndim - 3)
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
    else:
        mean = _weights(p.mean).reshape(shape)
        var = _weights(p.variance).reshape(shape)
    return gamma * (x - mean) / np.sqrt(var + p.epsilon) + beta


def _nn_reduce_nd(fn):
    def layer(p, xs):
        x = np.asarray(xs[0], np.float32)
        axes = None if p.reduceAll or not len(p.axes) else tuple(int(a) for a in p.axes)
        return fn(x, axis=axes, keepdims=bool(p.keepDims))

    return layer


def _nn_reduce(p, xs):
    x = np.asarray(xs[0], np.float32)
    axes = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}[p.axis]
    mode = p.mode
    if mode == 0:
        return x.sum(axis=axes, keepdims=True)
    if mode == 1:
        return x.mean(axis=axes, keepdims=True)
    if mode == 2:
        return x.prod(axis=axes, keepdims=True)
    if mode == 3:
        return np.log(x.sum(axis=axes, keepdims=True) + p.epsilon)
    if mode == 4:
        return (x * x).sum(axis=axes, keepdims=True)
    if mode == 5:
        return np.abs(x).sum(axis=axes, keepdims=True)
    if mode == 6:
        return np.sqrt((x * x).sum(axis=axes, keepdims=True))
    if mode == 7:
        return x.max(axis=axes, keepdims=True)
    if mode == 8:
        return x.min(axis=axes, keepdims=True)
    raise NotImplementedError("reduce mode ARGMAX")


def _nn_slice(p, xs):
    x = np.asarray(xs[0])
    axis = {0: -3, 1: -2, 2: -1}[p.axis]
    index = [slice(None)] * x.ndim
    index[axis] = slice(int(p.startIndex), int(p.endIndex), int(p.stride) or 1)
    return x[tuple(index)]


def _nn_slice_static(p, xs):
    x = np.asarray(xs[0])
    return _numpy_slice(x, p.beginIds, p.endIds, p.strides, p.beginMasks, p.endMasks,
                        list(p.squeezeMasks) or None)


def _nn_add(p, xs):
    if len(xs) == 1:
        return np.asarray(xs[0], np.float32) + p.alpha
    out = np.asarray(xs[0], np.float32)
    for x in xs[1:]:
        out = out + x
    return out


def _nn_multiply(p, xs):
    if len(xs) == 1:
        return np.asarray(xs[0], np.float32) * p.alpha
    out = np.asarray(xs[0], np.float32)
    for x in xs[1:]:
        out = out * x
    return out


def _nn_broadcast(fn):
    def layer(p, xs):
        out = np.asarray(xs[0], np.float32)
        for x in xs[1:]:
            out = fn(out, np.asarray(x, np.float32))
        return out

    return layer


def _nn_scale(p, xs):
    x = np.asarray(xs[0], np.float32)
    scale = _weights(p.scale).reshape(tuple(p.shapeScale) if len(p.shapeScale) > 1 else (-1,) + (1,) * 2)
    y = x * (scale if scale.size > 1 else scale.reshape(()))
    if p.hasBias:
        bias = _weights(p.bias).reshape(tuple(p.shapeBias) if len(p.shapeBias) > 1 else (-1,) + (1,) * 2)
        y = y + (bias if bias.size > 1 else bias.reshape(()))
    return y


def _nn_bias(p, xs):
    bias = _weights(p.bias)
    shape = tuple(p.shape) if len(p.shape) > 1 else (-1, 1, 1)
    return np.asarray(xs[0], np.float32) + (bias.reshape(shape) if bias.size > 1 else bias.reshape(()))


def _nn_flatten(p, xs):
    x = np.asarray(xs[0])
    if x.ndim < 3:
        x = x.reshape(x.shape[:-1] + (x.shape[-1], 1, 1)) if x.ndim else x.reshape(1, 1, 1)
    if p.mode == 1:  # CHANNEL_LAST
        x = np.moveaxis(x, -3, -1)
    return x.reshape(x.shape[:-3] + (-1, 1, 1))


def _nn_concat(p, xs):
    return np.concatenate([np.asarray(x) for x in xs], axis=-5 if p.sequenceConcat else -3)


def _nn_concat_nd(p, xs):
    if p.interleave:
        stacked = np.stack([np.asarray(x) for x in xs], axis=p.axis + 1 if p.axis >= 0 else p.axis)
        shape = list(np.asarray(xs[0]).shape)
        shape[p.axis] *= len(xs)
        return stacked.reshape(shape)
    return np.concatenate([np.asarray(x) for x in xs], axis=p.axis)


def _nn_squeeze(p, xs):
    x = np.asarray(xs[0])
    if p.squeezeAll or not len(p.axes):
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) for a in p.axes))


def _bilinear_matrix(grid: np.ndarray, length: int) -> np.ndarray:
    """(len(grid), length) linear-interpolation weights, grid points clamped to [0, length - 1]."""
    grid = np.clip(np.asarray(grid, np.float64), 0.0, length - 1.0)
    return np.maximum(0.0, 1.0 - np.abs(grid[:, None] - np.arange(length)[None, :]))


def _sampling_grid(method: int, start: float, end: float, n_in: int, n_out: int) -> np.ndarray:
    """NeuralNetwork.proto's SamplingMode grid for an axis from `start` to `end` (pixel units)."""
    i = np.arange(n_out, dtype=np.float64)
    if method in (0, 1):  # STRICT_ALIGN_ENDPOINTS / ALIGN_ENDPOINTS
        if n_out == 1:
            return np.array([start if method == 0 else (start + end) / 2.0])
        return start + i * (end - start) / (n_out - 1)
    if method == 2:  # UPSAMPLE_MODE
        spacing = n_in / n_out
        return start + i * spacing + 0.5 * spacing - 0.5
    spacing = (end - start) / n_out  # ROI_ALIGN_MODE
    return start + (i + 0.5) * spacing


def _nn_crop_resize(p, xs):
    """CropResize: x (1, B, C, H, W), roi (N, 1, 4 or 5, 1, 1) -> (N, B, C, Ht, Wt)."""
    x = np.asarray(xs[0], np.float32)
    if x.ndim != 5:
        raise ValueError(f"cropResize takes a rank 5 input, got shape {x.shape}")
    h, w = x.shape[-2:]
    th, tw = (list(p.targetSize) or [1, 1])
    boxes = np.asarray(xs[1], np.float64).reshape(-1, np.shape(xs[1])[2])
    method, mode = p.mode.samplingMethod, p.boxIndicesMode.boxMode
    out = []
    for row in boxes:
        index, coords = (int(row[0]), row[1:]) if row.size == 5 else (None, row)
        a, b, c, d = coords * (p.spatialScale or 1.0)
        if mode == 0:
            y1, x1, y2, x2 = a, b, c, d
        elif mode == 1:
            x1, y1, x2, y2 = a, b, c, d
        elif mode == 2:
            y1, x1, y2, x2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
        else:
            x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
        if p.normalizedCoordinates:
            y1, y2, x1, x2 = y1 * (h - 1), y2 * (h - 1), x1 * (w - 1), x2 * (w - 1)
        ry = _bilinear_matrix(_sampling_grid(method, y1, y2, h, th), h).astype(np.float32)
        rx = _bilinear_matrix(_sampling_grid(method, x1, x2, w, tw), w).astype(np.float32)
        images = x[0] if index is None else x[0, index:index + 1]
        out.append(np.matmul(np.matmul(ry, images), rx.T))
    return np.stack(out)


def _nn_resize_bilinear(p, xs):
    x = np.asarray(xs[0], np.float32)
    h, w = x.shape[-2:]
    th, tw = (list(p.targetSize) or [1, 1])
    method = p.mode.samplingMethod
    ry = _bilinear_matrix(_sampling_grid(method, 0.0, h - 1.0, h, th), h).astype(np.float32)
    rx = _bilinear_matrix(_sampling_grid(method, 0.0, w - 1.0, w, tw), w).astype(np.float32)
    return np.matmul(np.matmul(ry, x), rx.T)


NN_LAYERS: dict[str, Callable] = {
    "cropResize": _nn_crop_resize,
    "resizeBilinear": _nn_resize_bilinear,
    "getShape": lambda p, xs: np.asarray(np.shape(xs[0]), np.float32),
    "convolution": _nn_convolution,
    "pooling": _nn_pooling,
    "padding": _nn_padding,
    "activation": _nn_activation,
    "clip": lambda p, xs: np.clip(np.asarray(xs[0], np.float32), p.minVal, p.maxVal),
    "unary": _nn_unary,
    "innerProduct": _nn_inner_product,
    "batchedMatmul": _nn_batched_matmul,
    "batchnorm": _nn_batchnorm,
    "softmax": lambda p, xs: _softmax(xs[0], axis=-3 if np.ndim(xs[0]) >= 3 else -1),
    "softmaxND": lambda p, xs: _softmax(xs[0], axis=p.axis),
    "add": _nn_add,
    "multiply": _nn_multiply,
    "addBroadcastable": _nn_broadcast(np.add),
    "subtractBroadcastable": _nn_broadcast(np.subtract),
    "multiplyBroadcastable": _nn_broadcast(np.multiply),
    "divideBroadcastable": _nn_broadcast(np.divide),
    "maxBroadcastable": _nn_broadcast(np.maximum),
    "minBroadcastable": _nn_broadcast(np.minimum),
    "powBroadcastable": _nn_broadcast(np.power),
    "scale": _nn_scale,
    "bias": _nn_bias,
    "reduceMean": _nn_reduce_nd(np.mean),
    "reduceSum": _nn_reduce_nd(np.sum),
    "reduceMax": _nn_reduce_nd(np.max),
    "reduceMin": _nn_reduce_nd(np.min),
    "reduceProd": _nn_reduce_nd(np.prod),
    "reduce": _nn_reduce,
    "slice": _nn_slice,
    "sliceStatic": _nn_slice_static,
    "expandDims": lambda p, xs: np.expand_dims(np.asarray(xs[0]), tuple(int(a) for a in p.axes)),
    "squeeze": _nn_squeeze,
    "transpose": lambda p, xs: np.transpose(np.asarray(xs[0]), tuple(int(a) for a in p.axes)),
    "reshapeStatic": lambda p, xs: np.asarray(xs[0]).reshape(tuple(int(s) for s in p.targetShape)),
    "flatten": _nn_flatten,
    "flattenTo2D": lambda p, xs: np.asarray(xs[0]).reshape(
        int(np.prod(np.shape(xs[0])[: p.axis])), -1),
    "concat": _nn_concat,
    "concatND": _nn_concat_nd,
    "loadConstantND": lambda p, xs: _weights(p.data, tuple(int(s) for s in p.shape)),
    "loadConstant": lambda p, xs: _weights(p.data, tuple(int(s) for s in p.shape)),
    "copy": lambda p, xs: np.asarray(xs[0]),
    "gelu": lambda p, xs: _gelu(xs[0], {0: "EXACT", 1: "TANH_APPROXIMATION", 2: "SIGMOID_APPROXIMATION"}[p.mode]),
}


# ==============================================================================================
# ML program (MIL) values and weights

_MIL_DTYPES = {
    "BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}
_BLOB_SENTINEL = 0xDEADBEEF


def read_blob(path, offset: int, dtype, count: int) -> np.ndarray:
    """The `count` values of `dtype` stored in a Core ML weight file (format version 2) at `offset`.

    Layout: a 64-byte file header (uint32 blob count, uint32 version), then per blob a 64-byte
    record at `offset` (uint32 sentinel 0xDEADBEEF, uint32 data type, uint64 size in bytes,
    uint64 data offset) pointing at the raw little-endian data.
    """
    with open(path, "rb") as f:
        f.seek(0)
        _, version = struct.unpack("<II", f.read(8))
        if version != 2:
            raise NotImplementedError(f"weight file {path} has storage format version {version}, not 2")
        f.seek(offset)
        sentinel, _, size, data_offset = struct.unpack("<IIQQ", f.read(24))
        if sentinel != _BLOB_SENTINEL:
            raise ValueError(f"weight file {path}: no blob record at offset {offset}")
        dtype = np.dtype(dtype)
        if size != count * dtype.itemsize:
            raise ValueError(f"weight file {path}: blob at {offset} holds {size} bytes, expected "
                             f"{count} x {dtype.itemsize}")
        f.seek(data_offset)
        data = f.read(size)
    return np.frombuffer(data, dtype.newbyteorder("<"), count=count).astype(dtype)


def _mil_shape(tensor_type, flexible: bool = False) -> tuple[int, ...] | None:
    """The constant shape of a MIL tensor type; with `flexible`, None when a dimension is symbolic."""
    shape = []
    for dim in tensor_type.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            if flexible:
                return None
            raise NotImplementedError("ML program tensors with unknown (flexible) dimensions")
        shape.append(int(dim.constant.size))
    return tuple(shape)


class _MilValues:
    """Decodes MIL `Value` messages; reads blob weights relative to the model's folder."""

    def __init__(self, model_dir: Path | None):
        self.model_dir = model_dir
        _, self.MIL, _ = _proto()

    def dtype(self, code: int):
        name = self.MIL.DataType.Name(code)
        if name == "STRING":
            return object
        if name not in _MIL_DTYPES:
            raise NotImplementedError(f"ML program data type {name}")
        return _MIL_DTYPES[name]

    def decode(self, value):
        kind = value.type.WhichOneof("type")
        where = value.WhichOneof("value")
        if where == "blobFileValue":
            if kind != "tensorType":
                raise NotImplementedError(f"blob-stored value of type {kind}")
            return self._blob(value.blobFileValue, value.type.tensorType)
        if where != "immediateValue":
            raise NotImplementedError(f"ML program value stored as {where}")
        imm = value.immediateValue
        which = imm.WhichOneof("value")
        if which == "tensor":
            return self._tensor(imm.tensor, value.type.tensorType)
        if which == "list":
            return [self.decode(v) for v in imm.list.values]
        if which == "tuple":
            return tuple(self.decode(v) for v in imm.tuple.values)
        if which == "dictionary":
            return {self.decode(kv.key): self.decode(kv.value) for kv in imm.dictionary.values}
        raise NotImplementedError(f"ML program immediate value {which}")

    def _tensor(self, tensor, tensor_type):
        shape = _mil_shape(tensor_type)
        dtype = self.dtype(tensor_type.dataType)
        which = tensor.WhichOneof("value")
        if which == "strings":
            values = list(tensor.strings.values)
            return values[0] if not shape and len(values) == 1 else np.array(values, dtype=object).reshape(shape)
        if which == "bytes":
            array = np.frombuffer(tensor.bytes.values, np.dtype(dtype).newbyteorder("<")).astype(dtype)
        elif which is None:
            array = np.zeros(0, dtype)
        else:
            array = np.asarray(getattr(tensor, which).values).astype(dtype)
        return array.reshape(shape)

    def _blob(self, blob, tensor_type):
        if self.model_dir is None:
            raise ValueError("this ML program keeps its weights in a file; pass the .mlpackage path, the "
                             "MLModel, or weights_dir")
        name = blob.fileName
        path = Path(name.replace("@model_path", str(self.model_dir), 1)) if name.startswith("@model_path") \
            else self.model_dir / name
        shape = _mil_shape(tensor_type)
        count = int(np.prod(shape)) if shape else 1
        return read_blob(path, int(blob.offset), self.dtype(tensor_type.dataType), count).reshape(shape)


# ==============================================================================================
# MIL operations: fn(args) -> value or tuple of values


class _Args:
    def __init__(self, op, env: dict, values: _MilValues):
        self.op = op
        self.env = env
        self.values = values

    def _binding(self, binding):
        if binding.WhichOneof("binding") == "name":
            return self.env[binding.name]
        return self.values.decode(binding.value)

    def has(self, name: str) -> bool:
        return name in self.op.inputs

    def __call__(self, name: str, default=None):
        if name not in self.op.inputs:
            return default
        arguments = self.op.inputs[name].arguments
        if len(arguments) != 1:
            return [self._binding(b) for b in arguments]
        return self._binding(arguments[0])

    def many(self, name: str) -> list:
        return [self._binding(b) for b in self.op.inputs[name].arguments]

    def ints(self, name: str, default=None):
        value = self(name)
        return default if value is None else [int(v) for v in np.ravel(value)]

    def bools(self, name: str, default=None):
        value = self(name)
        return default if value is None else [bool(v) for v in np.ravel(value)]

    def scalar(self, name: str, default=None):
        value = self(name)
        return default if value is None else np.asarray(value).item()


def _f32(x):
    x = np.asarray(x)
    return x if x.dtype.kind in "fc" else x.astype(np.float32)


def _mil_conv(a: _Args):
    x = _f32(a("x"))
    w = _f32(a("weight"))
    if x.ndim != 4:
        raise NotImplementedError(f"conv over {x.ndim - 2} spatial dimensions")
    kh, kw = w.shape[2:]
    strides = a.ints("strides", [1, 1])
    dilations = a.ints("dilations", [1, 1])
    groups = a.scalar("groups", 1)
    pad_type = a.scalar("pad_type", "valid")
    if pad_type == "custom":
        pads = tuple(a.ints("pad", [0, 0, 0, 0]))
    elif pad_type in ("same", "same_lower"):
        mode = "top_left_heavy" if pad_type == "same_lower" else "bottom_right_heavy"
        pads = _pad_amounts(x.shape[2], kh, strides[0], dilations[0], mode) + \
            _pad_amounts(x.shape[3], kw, strides[1], dilations[1], mode)
    elif pad_type == "valid":
        pads = (0, 0, 0, 0)
    else:
        raise NotImplementedError(f"conv pad_type {pad_type}")
    bias = a("bias")
    return conv2d(x, w, None if bias is None else _f32(bias), tuple(strides), tuple(dilations), pads, int(groups))


def _mil_pool(mode: str):
    def op(a: _Args):
        x = _f32(a("x"))
        kernel = a.ints("kernel_sizes")
        strides = a.ints("strides", [1] * len(kernel))
        if len(kernel) != 2:
            raise NotImplementedError(f"{mode} pooling over {len(kernel)} dimensions")
        pad_type = a.scalar("pad_type", "valid")
        if pad_type == "custom":
            pads = tuple(a.ints("pad", [0, 0, 0, 0]))
        elif pad_type in ("same", "same_lower"):
            m = "top_left_heavy" if pad_type == "same_lower" else "bottom_right_heavy"
            pads = _pad_amounts(x.shape[-2], kernel[0], strides[0], 1, m) + \
                _pad_amounts(x.shape[-1], kernel[1], strides[1], 1, m)
        else:
            pads = (0, 0, 0, 0)
        if a.scalar("ceil_mode", False):
            raise NotImplementedError(f"{mode} pooling with ceil_mode")
        return pool2d(x, kernel, strides, pads, mode, bool(a.scalar("exclude_padding_from_average", False)))

    return op


def _mil_pad(a: _Args):
    x = _f32(a("x"))
    pad = a.ints("pad")
    n = len(pad) // 2
    width = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = a.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, width, constant_values=a.scalar("constant_val", 0.0))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _mil_batch_norm(a: _Args):
    x = _f32(a("x"))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = _f32(a("mean")).reshape(shape)
    var = _f32(a("variance")).reshape(shape)
    gamma = a("gamma")
    beta = a("beta")
    y = (x - mean) / np.sqrt(var + a.scalar("epsilon", 1e-5))
    if gamma is not None:
        y = y * _f32(gamma).reshape(shape)
    if beta is not None:
        y = y + _f32(beta).reshape(shape)
    return y


def _mil_layer_norm(a: _Args):
    x = _f32(a("x"))
    axes = tuple(a.ints("axes", list(range(x.ndim))))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a.scalar("epsilon", 1e-5))
    if a("gamma") is not None:
        y = y * _f32(a("gamma"))
    if a("beta") is not None:
        y = y + _f32(a("beta"))
    return y


def _mil_linear(a: _Args):
    x = _f32(a("x"))
    w = _f32(a("weight"))
    y = np.matmul(x, w.T)
    bias = a("bias")
    return y if bias is None else y + _f32(bias)


def _mil_matmul(a: _Args):
    x = np.asarray(a("x"))
    y = np.asarray(a("y"))
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _mil_reduce(fn):
    def op(a: _Args):
        x = np.asarray(a("x"))
        axes = a.ints("axes")
        return fn(x, axis=None if axes is None else tuple(axes), keepdims=bool(a.scalar("keep_dims", False)))

    return op


def _mil_slice_by_index(a: _Args):
    x = np.asarray(a("x"))
    rank = x.ndim
    return _numpy_slice(
        x, a.ints("begin"), a.ints("end"), a.ints("stride", [1] * rank), a.bools("begin_mask", [False] * rank),
        a.bools("end_mask", [False] * rank), a.bools("squeeze_mask", [False] * rank),
    )


def _mil_slice_by_size(a: _Args):
    x = np.asarray(a("x"))
    begin = a.ints("begin")
    size = a.ints("size")
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))
    return x[index]


def _mil_concat(a: _Args):
    values = [np.asarray(v) for v in a.many("values")]
    axis = int(a.scalar("axis"))
    if a.scalar("interleave", False):
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def _mil_squeeze(a: _Args):
    x = np.asarray(a("x"))
    axes = a.ints("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))


def _mil_cast(a: _Args):
    dtype = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "int16": np.int16,
             "int32": np.int32, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}[a.scalar("dtype")]
    return np.asarray(a("x")).astype(dtype)


def _mil_gather(a: _Args):
    x = np.asarray(a("x"))
    indices = np.asarray(a("indices")).astype(np.int64)
    axis = int(a.scalar("axis", 0))
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.take(x, indices, axis=axis)


def _mil_cumsum(a: _Args):
    x = np.asarray(a("x"))
    axis = int(a.scalar("axis", 0))
    if a.scalar("reverse", False):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if a.scalar("exclusive", False):
        y = y - x
    return np.flip(y, axis) if a.scalar("reverse", False) else y


def _mil_classify(a: _Args):
    probabilities = np.ravel(np.asarray(a("probabilities"), np.float64))
    classes = a("classes")
    classes = [c.item() if isinstance(c, np.ndarray) else c for c in classes]
    if len(classes) != probabilities.size:
        raise ValueError(f"classify: {probabilities.size} probabilities for {len(classes)} classes")
    label = classes[int(np.argmax(probabilities))]
    return label, {c: float(p) for c, p in zip(classes, probabilities)}


def _unary(fn):
    return lambda a: fn(_f32(a("x")))


def _binary(fn):
    return lambda a: fn(np.asarray(a("x")), np.asarray(a("y")))


MIL_OPS: dict[str, Callable] = {
    "conv": _mil_conv,
    "avg_pool": _mil_pool("avg"),
    "max_pool": _mil_pool("max"),
    "pad": _mil_pad,
    "batch_norm": _mil_batch_norm,
    "layer_norm": _mil_layer_norm,
    "linear": _mil_linear,
    "matmul": _mil_matmul,
    "softmax": lambda a: _softmax(a("x"), axis=int(a.scalar("axis", -1))),
    "classify": _mil_classify,
    # elementwise
    "add": _binary(np.add), "sub": _binary(np.subtract), "mul": _binary(np.multiply),
    "real_div": _binary(lambda x, y: np.divide(x, y).astype(np.result_type(x, y, np.float32))),
    "floor_div": _binary(np.floor_divide), "maximum": _binary(np.maximum), "minimum": _binary(np.minimum),
    "pow": _binary(np.power), "mod": _binary(np.mod),
    "equal": _binary(np.equal), "not_equal": _binary(np.not_equal), "less": _binary(np.less),
    "less_equal": _binary(np.less_equal), "greater": _binary(np.greater), "greater_equal": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and), "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor), "logical_not": lambda a: np.logical_not(a("x")),
    "relu": _unary(lambda x: np.maximum(x, 0)), "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "sigmoid": _unary(_sigmoid), "tanh": _unary(np.tanh), "exp": _unary(np.exp), "exp2": _unary(np.exp2),
    "sqrt": _unary(np.sqrt), "abs": _unary(np.abs), "square": _unary(np.square), "sign": _unary(np.sign),
    "floor": _unary(np.floor), "ceil": _unary(np.ceil), "round": _unary(np.round), "sin": _unary(np.sin),
    "cos": _unary(np.cos), "erf": _unary(lambda x: _erf(x).astype(x.dtype)),
    "silu": _unary(lambda x: x * _sigmoid(x)), "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "rsqrt": lambda a: 1.0 / np.sqrt(_f32(a("x")) + a.scalar("epsilon", 1e-12)),
    "inverse": lambda a: 1.0 / (_f32(a("x")) + a.scalar("epsilon", 1e-4)),
    "log": lambda a: np.log(_f32(a("x")) + a.scalar("epsilon", 1e-45)),
    "gelu": lambda a: _gelu(a("x"), a.scalar("mode", "EXACT")),
    "leaky_relu": lambda a: (lambda x, al: np.where(x >= 0, x, al * x))(_f32(a("x")), a.scalar("alpha", 0.01)),
    "elu": lambda a: (lambda x, al: np.where(x >= 0, x, al * (np.exp(x) - 1)))(_f32(a("x")), a.scalar("alpha", 1.0)),
    "sigmoid_hard": lambda a: np.clip(a.scalar("alpha", 0.2) * _f32(a("x")) + a.scalar("beta", 0.5), 0, 1),
    "clip": lambda a: np.clip(_f32(a("x")), a.scalar("alpha"), a.scalar("beta")),
    "threshold": lambda a: np.maximum(_f32(a("x")), a.scalar("alpha")),
    "identity": lambda a: np.asarray(a("x")),
    "cast": _mil_cast,
    # shape
    "reshape": lambda a: np.asarray(a("x")).reshape(tuple(a.ints("shape"))),
    "transpose": lambda a: np.transpose(np.asarray(a("x")), tuple(a.ints("perm"))),
    "expand_dims": lambda a: np.expand_dims(np.asarray(a("x")), tuple(a.ints("axes"))),
    "squeeze": _mil_squeeze,
    "concat": _mil_concat,
    "stack": lambda a: np.stack([np.asarray(v) for v in a.many("values")], axis=int(a.scalar("axis"))),
    "tile": lambda a: np.tile(np.asarray(a("x")), tuple(a.ints("reps"))),
    "slice_by_index": _mil_slice_by_index,
    "slice_by_size": _mil_slice_by_size,
    "gather": _mil_gather,
    "shape": lambda a: np.asarray(np.shape(a("x")), np.int32),
    "fill": lambda a: np.full(tuple(int(d) for d in np.ravel(a("shape"))), a.scalar("value", 0.0), np.float32),
    "fill_like": lambda a: np.full(np.shape(a("ref_tensor")), a.scalar("value", 0.0), np.float32),
    "cumsum": _mil_cumsum,
    # reductions
    "reduce_mean": _mil_reduce(np.mean), "reduce_sum": _mil_reduce(np.sum), "reduce_max": _mil_reduce(np.max),
    "reduce_min": _mil_reduce(np.min), "reduce_prod": _mil_reduce(np.prod),
    "reduce_sum_square": _mil_reduce(lambda x, **k: np.sum(x * x, **k)),
    "reduce_l2_norm": _mil_reduce(lambda x, **k: np.sqrt(np.sum(x * x, **k))),
    "reduce_l1_norm": _mil_reduce(lambda x, **k: np.sum(np.abs(x), **k)),
    "reduce_log_sum_exp": _mil_reduce(lambda x, **k: np.log(np.sum(np.exp(x), **k))),
}


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

    def __init__(self, spec, model_dir: Path | None = None):
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


def load(model_or_spec_or_path, *, weights_dir=None) -> SpecInterpreter:
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


def evaluate(model_or_spec_or_path, inputs: Mapping, *, weights_dir=None) -> dict:
    """Evaluate a Core ML model with numpy: the dictionary Core ML's `predict(inputs)` would return.

    Images are PIL images (or H x W x 3 uint8 arrays) of exactly the model's input size;
    multi-arrays are numpy arrays of the declared shape. For many inputs, `load(...)` once
    and call `.predict(inputs)` to decode the weights only once.
    """
    return load(model_or_spec_or_path, weights_dir=weights_dir).predict(inputs)

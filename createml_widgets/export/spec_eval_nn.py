"""The NeuralNetwork layers `spec_eval` runs (`NN_LAYERS`: the layer types the .mlmodel exports contain, and
the few more the interpreter's tests build), and the decoding of their weights (float32, float16, linear and
lookup-table quantized)."""
from __future__ import annotations

import contextvars
from collections.abc import Callable

import numpy as np

from ._spec_numerics import _numpy_slice, _pad_amounts, _sigmoid, _softmax, conv2d, pool2d

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


NN_LAYERS: dict[str, Callable] = {
    "cropResize": _nn_crop_resize,
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
    "softmaxND": lambda p, xs: _softmax(xs[0], axis=p.axis),
    "add": _nn_add,
    "multiply": _nn_multiply,
    "addBroadcastable": _nn_broadcast(np.add),
    "subtractBroadcastable": _nn_broadcast(np.subtract),
    "multiplyBroadcastable": _nn_broadcast(np.multiply),
    "divideBroadcastable": _nn_broadcast(np.divide),
    "minBroadcastable": _nn_broadcast(np.minimum),
    "reduceMean": _nn_reduce_nd(np.mean),
    "reduceSum": _nn_reduce_nd(np.sum),
    "slice": _nn_slice,
    "sliceStatic": _nn_slice_static,
    "expandDims": lambda p, xs: np.expand_dims(np.asarray(xs[0]), tuple(int(a) for a in p.axes)),
    "squeeze": _nn_squeeze,
    "transpose": lambda p, xs: np.transpose(np.asarray(xs[0]), tuple(int(a) for a in p.axes)),
    "reshapeStatic": lambda p, xs: np.asarray(xs[0]).reshape(tuple(int(s) for s in p.targetShape)),
    "flattenTo2D": lambda p, xs: np.asarray(xs[0]).reshape(
        int(np.prod(np.shape(xs[0])[: p.axis])), -1),
    "concat": _nn_concat,
    "concatND": _nn_concat_nd,
    "loadConstantND": lambda p, xs: _weights(p.data, tuple(int(s) for s in p.shape)),
}

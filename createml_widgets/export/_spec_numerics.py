"""The numerics the Core ML interpreter's layers and operations share (NCHW arrays, numpy only)."""
from __future__ import annotations

import numpy as np


def _proto():
    from .coreml import _coremltools

    _coremltools()  # import it quietly once
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2

    return Model_pb2, MIL_pb2, FeatureTypes_pb2


def _pad_amounts(size: int, kernel: int, stride: int, dilation: int, mode: str) -> tuple[int, int]:
    """'same' padding: output ceil(size / stride); the extra pixel goes at the end (or start)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (total - small, small) if mode == "top_left_heavy" else (small, total - small)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int] = (1, 1),
           dilation: tuple[int, int] = (1, 1), pads: tuple[int, int, int, int] = (0, 0, 0, 0), groups: int = 1
           ) -> np.ndarray:
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


def pool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int], mode: str,
           exclude_padding: bool = True) -> np.ndarray:
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

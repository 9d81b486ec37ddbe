"""The ML program (MIL) side of `spec_eval`: values and const weights (inline, or in the package's weight blob
file), and the operations the .mlpackage exports contain (`MIL_OPS`)."""
from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._spec_numerics import _numpy_slice, _pad_amounts, _proto, _softmax, conv2d

if TYPE_CHECKING:
    import numpy.typing as npt

# ==============================================================================================
# ML program (MIL) values and weights

_MIL_DTYPES = {
    "BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}
_BLOB_SENTINEL = 0xDEADBEEF


def read_blob(path: str | os.PathLike, offset: int, dtype: npt.DTypeLike, count: int) -> np.ndarray:
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


def _mil_concat(a: _Args):
    values = [np.asarray(v) for v in a.many("values")]
    axis = int(a.scalar("axis"))
    if a.scalar("interleave", False):
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


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
    "pad": _mil_pad,
    "batch_norm": _mil_batch_norm,
    "linear": _mil_linear,
    "matmul": _mil_matmul,
    "softmax": lambda a: _softmax(a("x"), axis=int(a.scalar("axis", -1))),
    "classify": _mil_classify,
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(lambda x, y: np.divide(x, y).astype(np.result_type(x, y, np.float32))),
    "minimum": _binary(np.minimum),
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "sqrt": _unary(np.sqrt),
    "abs": _unary(np.abs),
    "clip": lambda a: np.clip(_f32(a("x")), a.scalar("alpha"), a.scalar("beta")),
    "reshape": lambda a: np.asarray(a("x")).reshape(tuple(a.ints("shape"))),
    "transpose": lambda a: np.transpose(np.asarray(a("x")), tuple(a.ints("perm"))),
    "expand_dims": lambda a: np.expand_dims(np.asarray(a("x")), tuple(a.ints("axes"))),
    "concat": _mil_concat,
    "slice_by_index": _mil_slice_by_index,
    "shape": lambda a: np.asarray(np.shape(a("x")), np.int32),
    "fill": lambda a: np.full(tuple(int(d) for d in np.ravel(a("shape"))), a.scalar("value", 0.0), np.float32),
    "cumsum": _mil_cumsum,
    "reduce_mean": _mil_reduce(np.mean),
    "reduce_sum": _mil_reduce(np.sum),
}

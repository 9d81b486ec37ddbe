"""Fast CPU inference for the image backbones: ONNX Runtime, a fused torch graph, or plain eager torch.

The bundled EfficientNet-Lite backbones (`scene_print`) are rewritten once into a flat list of
convolutions with their batch norms folded in and TensorFlow "SAME" paddings merged into the
convolutions (`fold_efficientnet_lite`). From that list:

* ``onnxruntime`` (the default when `onnxruntime` and `onnx` are installed): an ONNX graph written
  directly from the folded weights (no tracing, well under a second), cached under the feature cache
  root (``<cache>/onnx/<backbone>-torch<version>-<format>.onnx``) and run by ONNX Runtime with all
  graph optimisations (its NCHWc layout fuses conv + ReLU6 and blocks the depthwise convolutions).
  About 3-7x the images/second of eager torch on a 2-core AVX-512 machine; embeddings agree with
  eager torch to a cosine similarity > 0.99999 (float32 throughout; only summation order differs).
* ``torch``: the folded network as a channels-last torch module (oneDNN convolutions, no padding
  copies). About 1.5-2x eager; used when ONNX Runtime is missing or fails to build.
* ``eager``: the original module, unchanged (custom feature extractors always run this way).

``make_runner`` builds the first backend that works and checks it against eager torch on a small
random batch; anything that fails to build or disagrees falls back to the next one, and finally to
eager. Choose explicitly with the environment variable ``CREATEML_WIDGETS_INFERENCE_BACKEND``
(``auto`` | ``onnxruntime`` | ``torch`` | ``eager``) or ``ImageEmbeddingExtractor(..., backend=...)``.
The backends compute the same function in float32, so the feature cache key does not depend on them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._fileio import atomic_write

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

BACKEND_ENV = "CREATEML_WIDGETS_INFERENCE_BACKEND"
BACKENDS = ("auto", "onnxruntime", "torch", "eager")
# Bump when the written ONNX graph changes (part of the cached file's name).
ONNX_FORMAT = 2
# Fast paths must reproduce eager torch on the build-time check at least this closely.
CHECK_MIN_COSINE = 0.99999

_build_lock = threading.Lock()


def requested_backend(backend: str | None = None) -> str:
    """`backend`, else `$CREATEML_WIDGETS_INFERENCE_BACKEND`, else "auto" (validated)."""
    value = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"unknown inference backend {value!r} (from {'the argument' if backend else BACKEND_ENV}); "
                         f"allowed: {', '.join(BACKENDS)}")
    return value


def cpu_threads() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# Folding EfficientNet-Lite into plain convolutions
# ---------------------------------------------------------------------------------------------
@dataclass
class FoldedConv:
    """One convolution with its batch norm folded in: y = act(conv(pad(x)) + b) [+ residual]."""

    weight: np.ndarray  # (out, in/groups, kh, kw) float32
    bias: np.ndarray  # (out,) float32
    stride: int
    groups: int
    pads: tuple[int, int, int, int]  # left, right, top, bottom (ZeroPad2d order)
    relu6: bool
    save_input: bool = False  # this conv starts a residual block: keep its input
    add_residual: bool = False  # after this conv (no activation), add the saved input


@dataclass
class FoldedNet:
    """EfficientNet-Lite as folded convolutions; input (N, 3, S, S) in [0, 1], output (N, C) pooled."""

    name: str
    input_size: int
    normalize: bool
    layers: list[FoldedConv]

    @property
    def feature_size(self) -> int:
        """Channels of the pooled output (the last layer's output channels)."""
        return int(self.layers[-1].weight.shape[0])


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    bias = bn.bias.detach().double() - bn.running_mean.detach().double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().double() * scale
    w = w * scale.reshape(-1, 1, 1, 1)
    return w.float().numpy().copy(), bias.float().numpy().copy()


def _pads(conv: nn.Module) -> tuple[int, int, int, int]:
    if any(int(p) for p in _as_pair(conv.padding)):
        raise ValueError("unexpected built-in padding on a static-SAME convolution")
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = (int(v) for v in pad.padding)
        return left, right, top, bottom
    if pad is None or type(pad).__name__ == "Identity":
        return 0, 0, 0, 0
    raise ValueError(f"unsupported padding module {type(pad).__name__}")


def _as_pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, relu6: bool, **flags) -> FoldedConv:
    stride = _as_pair(conv.stride)
    if stride[0] != stride[1] or _as_pair(conv.dilation) != (1, 1):
        raise ValueError("unsupported stride/dilation")
    w, b = _fold(conv, bn)
    return FoldedConv(w, b, int(stride[0]), int(conv.groups), _pads(conv), relu6, **flags)


def _is_relu6(module: nn.Module) -> bool:
    return isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh)
                                            and module.min_val == 0.0 and module.max_val == 6.0)


def fold_efficientnet_lite(module: nn.Module) -> FoldedNet:
    """EfficientNetLiteFeatures (eval mode) as a FoldedNet; ValueError for anything else."""
    from ..nets import EfficientNetLiteFeatures

    if not isinstance(module, EfficientNetLiteFeatures):
        raise ValueError(f"only EfficientNetLiteFeatures can be folded, not {type(module).__name__}")
    if module.training:
        raise ValueError("fold a module in eval mode")
    stem_conv, stem_bn, stem_act = module.stem
    head_conv, head_bn, head_act = module.head
    if not (_is_relu6(stem_act) and _is_relu6(head_act)):
        raise ValueError("EfficientNet-Lite uses ReLU6 activations")
    layers = [_conv(stem_conv, stem_bn, True)]
    for block in module.blocks:
        args = block._block_args
        if getattr(block, "has_se", False) or not _is_relu6(block._swish):
            raise ValueError("squeeze-excitation / swish blocks are not EfficientNet-Lite")
        residual = bool(args.id_skip and args.stride in (1, [1], [1, 1]) and args.input_filters == args.output_filters)
        convs = []
        if args.expand_ratio != 1:
            convs.append(_conv(block._expand_conv, block._bn0, True))
        convs.append(_conv(block._depthwise_conv, block._bn1, True))
        convs.append(_conv(block._project_conv, block._bn2, False))
        if residual:
            convs[0].save_input = True
            convs[-1].add_residual = True
        layers += convs
    layers.append(_conv(head_conv, head_bn, True))
    return FoldedNet(module.name, int(module.input_size), bool(module.normalize), layers)


# ---------------------------------------------------------------------------------------------
# Backend 1: ONNX Runtime, from an ONNX graph written straight from the folded weights
# ---------------------------------------------------------------------------------------------
def layer_name(net: FoldedNet, i: int) -> str:
    """"stem", "head", "dw<i>" (depthwise) or "pw<i>" (1x1): the ONNX node name of layer i (for profiles)."""
    if i == 0:
        return "stem"
    if i == len(net.layers) - 1:
        return "head"
    return f"{'dw' if net.layers[i].groups > 1 else 'pw'}{i}"


def layer_macs(net: FoldedNet) -> list[int]:
    """Multiply-accumulates of each layer for one image (TensorFlow SAME output sizes)."""
    size, macs = net.input_size, []
    for layer in net.layers:
        size = -(-size // layer.stride)
        out_c, in_per_group, kh, kw = layer.weight.shape
        macs.append(int(size * size * out_c * in_per_group * kh * kw))
    return macs


def build_onnx(net: FoldedNet) -> onnx.ModelProto:
    """The ONNX ModelProto of a FoldedNet: input "pixels" (N, 3, S, S), output "features" (N, C)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    x = "pixels"
    if net.normalize:  # (x * 255 - 127) / 128, as in EfficientNetLiteFeatures.forward
        nodes.append(helper.make_node("Mul", [x, const("norm_scale", np.array(255.0 / 128.0))], ["norm_mul"],
                                      name="normalize_mul"))
        nodes.append(helper.make_node("Add", ["norm_mul", const("norm_shift", np.array(-127.0 / 128.0))],
                                      ["norm"], name="normalize_add"))
        x = "norm"
    relu_lo, relu_hi = const("relu6_min", np.array(0.0)), const("relu6_max", np.array(6.0))
    saved = None
    for i, layer in enumerate(net.layers):
        if layer.save_input:
            saved = x
        left, right, top, bottom = layer.pads
        kh, kw = layer.weight.shape[2:]
        y = f"conv{i}"
        nodes.append(helper.make_node(
            "Conv", [x, const(f"w{i}", layer.weight), const(f"b{i}", layer.bias)], [y], name=layer_name(net, i),
            kernel_shape=[int(kh), int(kw)], strides=[layer.stride, layer.stride], group=layer.groups,
            pads=[top, left, bottom, right]))
        if layer.relu6:
            nodes.append(helper.make_node("Clip", [y, relu_lo, relu_hi], [f"act{i}"]))
            y = f"act{i}"
        if layer.add_residual:
            nodes.append(helper.make_node("Add", [y, saved], [f"res{i}"]))
            y = f"res{i}"
        x = y
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    s = net.input_size
    graph = helper.make_graph(
        nodes, f"{net.name}-features",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, s, s])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", net.feature_size])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="createml_widgets.fast_inference")
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases too
    onnx.checker.check_model(model)
    return model


def weights_digest(net: FoldedNet) -> str:
    """A short content hash of the folded weights (so a changed weights package never reuses a file)."""
    import hashlib

    h = hashlib.blake2b(digest_size=6)
    for layer in net.layers:
        h.update(layer.weight.tobytes())
        h.update(layer.bias.tobytes())
    return h.hexdigest()


def onnx_cache_path(net: FoldedNet, root: str | os.PathLike | None = None) -> Path:
    """Where `net`'s ONNX file is cached: keyed by backbone name, torch version, graph format and weights."""
    from .cache import cache_root

    base = Path(root) if root is not None else cache_root()
    torch_version = torch.__version__.split("+")[0]
    return base / "onnx" / f"{net.name}-torch{torch_version}-fmt{ONNX_FORMAT}-{weights_digest(net)}.onnx"


def cached_onnx(net: FoldedNet, root: str | os.PathLike | None = None, rebuild: bool = False) -> Path:
    """The path of `net`'s ONNX file, writing it (atomically) if the cache lacks it (or `rebuild`)."""
    path = onnx_cache_path(net, root)
    if not rebuild and path.exists() and path.stat().st_size > 0:
        return path
    data = build_onnx(net).SerializeToString()
    try:
        return atomic_write(path, data, durable=False)
    except OSError as err:  # read-only cache: keep the graph in a private temp file instead
        import tempfile

        log.info("cannot cache the ONNX backbone at %s (%s); using a temp file", path, err)
        fd, tmp_name = tempfile.mkstemp(suffix=".onnx", prefix=f"{net.name}-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(tmp_name)


class OrtRunner:
    """Runs an ONNX file with ONNX Runtime's CPU provider, all graph optimisations on."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or cpu_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Idle ORT threads spin by default; with spinning off they yield the cores to the decoding
        # threads between runs (measured 1.4-1.7x faster extract() on 2 cores, same network speed).
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:  # one run at a time: each run already uses every core
            return self.session.run(None, {self.input_name: batch})[0]


# ---------------------------------------------------------------------------------------------
# Backend 2: the folded network in torch (channels-last, TorchScript-frozen)
# ---------------------------------------------------------------------------------------------
class FoldedTorchNet(nn.Module):
    """A FoldedNet as a torch module: convs with folded BN, symmetric pads merged into the conv."""

    def __init__(self, net: FoldedNet):
        super().__init__()
        self.normalize = net.normalize
        self.convs = nn.ModuleList()
        self.extra_pads: list[tuple[int, int, int, int] | None] = []
        self.relu6: list[bool] = []
        self.save: list[bool] = []
        self.add: list[bool] = []
        for layer in net.layers:
            out_c, in_per_group, kh, kw = layer.weight.shape
            left, right, top, bottom = layer.pads
            symmetric = left == right and top == bottom
            conv = nn.Conv2d(in_per_group * layer.groups, out_c, (kh, kw), layer.stride,
                             padding=(top, left) if symmetric else 0, groups=layer.groups, bias=True)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(layer.weight))
                conv.bias.copy_(torch.from_numpy(layer.bias))
            self.convs.append(conv)
            self.extra_pads.append(None if symmetric else layer.pads)
            self.relu6.append(layer.relu6)
            self.save.append(layer.save_input)
            self.add.append(layer.add_residual)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pixels in [0, 1] -> (N, C) pooled features."""
        return self.feature_map(x).mean(dim=(2, 3))

    def feature_map(self, x: torch.Tensor, conv: Callable | None = None,
                    observe: Callable | None = None) -> torch.Tensor:
        """(N, 3, S, S) pixels in [0, 1] -> the last layer's (N, C, h, w) map, before pooling.

        Hooks (for benchmarks/int8.py's fake quantization; None in the library): `conv(i, layer, x)`
        computes layer i in place of `layer(x)`; `observe(name, t)` sees, and returns in place of, each
        tensor that a quantized graph would round: "act{i}" (layer i after its ReLU6), "conv{i}" (a layer
        without activation) and "res{i}" (its residual sum).
        """
        if self.normalize:
            x = x * (255.0 / 128.0) - (127.0 / 128.0)
        saved = x
        for i, layer in enumerate(self.convs):
            if self.save[i]:
                saved = x
            pad = self.extra_pads[i]
            if pad is not None:
                x = F.pad(x, pad)
            x = layer(x) if conv is None else conv(i, layer, x)
            if self.relu6[i]:
                x = F.hardtanh(x, 0.0, 6.0)
            if observe is not None:
                x = observe(f"act{i}" if self.relu6[i] else f"conv{i}", x)
            if self.add[i]:
                x = x + saved
                if observe is not None:
                    x = observe(f"res{i}", x)
        return x


class TorchRunner:
    """Runs a torch module under inference_mode (optionally channels-last input)."""

    def __init__(self, module: nn.Module, backend: str, channels_last: bool = False):
        self.module = module
        self.backend = backend
        self.channels_last = channels_last

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.module(x).float().numpy()


def build_torch_runner(net: FoldedNet, freeze: bool = False) -> TorchRunner:
    """The folded net in channels-last torch. `freeze` (TorchScript trace + freeze + oneDNN) measured no
    faster than the plain folded module here and costs 8-20 s to build, so it is off by default."""
    module = FoldedTorchNet(net).to(memory_format=torch.channels_last)
    if freeze:
        example = torch.rand(2, 3, net.input_size, net.input_size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript deprecation notices
            module = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example)))
            for _ in range(2):  # TorchScript specialises on the first runs
                module(example)
    return TorchRunner(module, "torch", channels_last=True)


# ---------------------------------------------------------------------------------------------
# Choosing and checking a backend
# ---------------------------------------------------------------------------------------------
def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(den == 0, 1.0, den)


def _check(runner, eager: nn.Module, size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, size, size, generator=gen)
    with torch.inference_mode():
        ref = eager(x).numpy()
    got = runner(x.numpy())
    if got.shape != ref.shape:
        raise RuntimeError(f"fast path output shape {got.shape} != eager {ref.shape}")
    cos = float(cosine_similarity(got, ref).min())
    if not np.isfinite(cos) or cos < CHECK_MIN_COSINE:
        raise RuntimeError(f"fast path disagrees with eager torch (cosine {cos:.6f})")


def make_runner(backbone: nn.Module, backend: str | None = None, *, threads: int | None = None,
                cache_dir: str | os.PathLike | None = None, spinning: bool = False, check: bool = True
                ) -> TorchRunner | OrtRunner:
    """A callable (N, 3, S, S) float32 array -> (N, D) array for `backbone`, fastest working backend first.

    `backend`: "auto" (default, or `$CREATEML_WIDGETS_INFERENCE_BACKEND`), "onnxruntime", "torch" or
    "eager". A fast backend that cannot be built, or whose output differs from eager torch on a
    check batch, is skipped with a log message; eager always works. `.backend` names what was chosen.
    """
    wanted = requested_backend(backend)
    order = {"auto": ["onnxruntime", "torch"], "onnxruntime": ["onnxruntime"], "torch": ["torch"],
             "eager": []}[wanted]
    eager = TorchRunner(backbone, "eager")
    if not order:
        return eager
    try:
        net = fold_efficientnet_lite(backbone)
    except (ValueError, AttributeError, TypeError) as err:
        log.debug("no fast path for %s: %s", type(backbone).__name__, err)
        return eager
    size = net.input_size
    for name in order:
        try:
            with _build_lock, _quiet():
                if name == "onnxruntime":
                    runner = _ort_runner(net, cache_dir, threads, spinning)
                else:
                    runner = build_torch_runner(net)
                if check:
                    _check(runner, backbone, size)
            return runner
        except Exception as err:  # noqa: BLE001 - any failure means: try the next backend
            log.warning("inference backend %s unavailable for %s (%s: %s); falling back",
                        name, net.name, err.__class__.__name__, err)
    return eager


def _ort_runner(net: FoldedNet, cache_dir, threads, spinning) -> OrtRunner:
    path = cached_onnx(net, cache_dir)
    try:
        runner = OrtRunner(path, threads=threads, spinning=spinning)
    except ImportError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. a damaged cached file: write it again once
        log.info("rebuilding the cached ONNX backbone %s (%s)", path, err)
        path = cached_onnx(net, cache_dir, rebuild=True)
        runner = OrtRunner(path, threads=threads, spinning=spinning)
    if path != onnx_cache_path(net, cache_dir):  # a private temp file (unwritable cache): loaded, drop it
        path.unlink(missing_ok=True)
    return runner


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

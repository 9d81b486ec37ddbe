"""Every backbone variant tried while speeding up image features (not in the default run).

`python -m benchmarks --only variants`: network-only images/s at batch 32 on the same 32 photos,
interleaved rounds, with build times and cosine similarity to eager torch. Documents what did and did
not help; the library uses only the best of them (see createml_widgets/features/fast_inference.py).
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from . import Context, interleaved, median, ratio_median


def run(ctx: Context) -> None:
    import torch

    from createml_widgets.features import fast_inference as fi
    from createml_widgets.features.image_embedding import preprocess
    from createml_widgets.features.image_io import load_image
    from createml_widgets.nets import EfficientNetLiteFeatures

    from .image import _paths

    x = np.stack([preprocess(load_image(p), 224) for p in _paths(32)])
    xt = torch.from_numpy(x)
    xcl = xt.contiguous(memory_format=torch.channels_last)
    model = EfficientNetLiteFeatures("efficientnet-lite0").eval()
    net = fi.fold_efficientnet_lite(model)
    with torch.inference_mode():
        ref = model(xt).numpy()
    cands, build, outs = {}, {}, {}

    def add(name, make, call):
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = make()
                out = np.asarray(call(obj))  # first call is part of building (TorchScript profiles it)
        except Exception as err:  # noqa: BLE001 - an unavailable variant is a row, not a failure
            ctx.add("variants", name, "unavailable", "", f"{err.__class__.__name__}: {str(err)[:80]}")
            return
        build[name] = time.perf_counter() - t
        outs[name] = out
        cands[name] = lambda: call(obj)

    def torch_call(module, inp):
        def call(m):
            with torch.inference_mode():
                return m(inp).numpy()
        return call

    add("eager (baseline)", lambda: model, torch_call(model, xt))
    add("eager, channels_last", lambda: EfficientNetLiteFeatures().eval().to(memory_format=torch.channels_last),
        lambda m: torch_call(m, xcl)(m))
    add("eager, TorchScript trace + freeze", lambda: _script(EfficientNetLiteFeatures().eval(), xt, ofi=False),
        lambda m: torch_call(m, xt)(m))
    add("eager, trace + freeze + optimize_for_inference", lambda: _script(EfficientNetLiteFeatures().eval(), xt),
        lambda m: torch_call(m, xt)(m))
    add("folded (BN into conv, pads merged), channels_last", lambda: fi.build_torch_runner(net),
        lambda r: r(x))
    add("folded, channels_last, trace + freeze + optimize_for_inference",
        lambda: fi.build_torch_runner(net, freeze=True), lambda r: r(x))
    add("ONNX Runtime, graph from torch.onnx.export", lambda: fi.OrtRunner(_exported(model, xt)), lambda r: r(x))
    add("ONNX Runtime, graph written from folded weights (library)", lambda: fi.make_runner(model, "onnxruntime"),
        lambda r: r(x))
    add("ONNX Runtime, NCHWc transformer disabled", lambda: _ort_no_nchwc(net), lambda r: r(x))
    add("ONNX Runtime, spinning threads on", lambda: fi.OrtRunner(fi.cached_onnx(net), spinning=True),
        lambda r: r(x))
    times = interleaved(cands, rounds=3 if ctx.quick else 5, warmup=True)
    base = times["eager (baseline)"]
    for name, ts in times.items():
        cos = float(fi.cosine_similarity(outs[name], ref).min())
        ctx.add("variants", name, 32 / median(ts), "img/s",
                f"{ratio_median(base, ts):.2f}x eager; build {build[name]:.1f} s; cosine {cos:.6f}")


def _script(module, example, ofi: bool = True):
    import torch

    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(module, example))
        return torch.jit.optimize_for_inference(m) if ofi else m


def _exported(model, example) -> Path:
    import torch

    path = Path(tempfile.mkdtemp()) / "exported.onnx"
    torch.onnx.export(model, example[:1], str(path), input_names=["pixels"], output_names=["features"],
                      dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
    return path


def _ort_no_nchwc(net):
    import onnxruntime as ort

    from createml_widgets.features import fast_inference as fi

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = fi.cpu_threads()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(fi.cached_onnx(net)), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["NchwcTransformer"])
    return lambda batch: sess.run(None, {"pixels": batch})[0]

"""The image backbone as a `pip install` user gets it, next to the eager torch baseline, in one run.

Run by `make user-bench` with the python of a fresh venv that has only `torch==2.13.0` and
`pip install .` (no dev extras), from outside the checkout so the installed package is the one imported.
Standalone: it needs nothing but the package and its dependencies.

Rows (median of interleaved rounds over the 200 bundled photos, decode included):
* the library's extractor as training uses it (default backend: ONNX Runtime when it builds);
* the eager baseline: load + preprocess each photo, eager EfficientNet-Lite0 at batch 32.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(rounds: int = 5) -> int:
    import torch

    import createml_widgets
    from createml_widgets.data.items import Item
    from createml_widgets.features.image_embedding import ImageEmbeddingExtractor, preprocess
    from createml_widgets.features.image_io import load_image
    from createml_widgets.nets import EfficientNetLiteFeatures
    from createml_widgets.tasks.image_classifier import FeatureExtractorType

    root = Path(createml_widgets.__file__).resolve().parent / "samples" / "sign-language-digits"
    paths = sorted(root.glob("*/*.JPG"))
    items = [Item(p, "x") for p in paths]
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    print(f"package at {Path(createml_widgets.__file__).parent}; torch {torch.__version__}, onnxruntime {ort}; "
          f"{len(paths)} photos", flush=True)

    ex = ImageEmbeddingExtractor(FeatureExtractorType.scene_print(1)).__enter__()
    model = EfficientNetLiteFeatures("efficientnet-lite0").eval()

    def library():
        out = []
        for start in range(0, len(items), 32):
            out += ex.extract(items[start:start + 32])
        return np.stack(out)

    def eager():
        out = []
        for start in range(0, len(paths), 32):
            x = np.stack([preprocess(load_image(p), 224) for p in paths[start:start + 32]])
            with torch.inference_mode():
                out.append(model(torch.from_numpy(x)).numpy())
        return np.concatenate(out)

    a, b = library(), eager()  # warm-up, and the two must agree
    cos = float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    times = {"library": [], "eager": []}
    for _ in range(rounds):
        for name, fn in (("library", library), ("eager", eager)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    lib, eag = statistics.median(times["library"]), statistics.median(times["eager"])
    ratios = statistics.median(e / max(x, 1e-9) for e, x in zip(times["eager"], times["library"]))
    print(f"backend in use: {ex.runner.backend}")
    print(f"library extraction ({ex.runner.backend}): {len(paths) / lib:.1f} photos/s")
    print(f"eager torch baseline: {len(paths) / eag:.1f} photos/s")
    print(f"speed-up (median of per-round ratios): {ratios:.2f}x; min cosine library vs eager {cos:.6f}")
    return 0 if ex.runner.backend == "onnxruntime" else 1


if __name__ == "__main__":
    sys.exit(main())

"""Image embeddings: EfficientNet-Lite features (scene_print) or a user's own torch model (custom)."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .image_augment import augment
from .image_io import load_image

if TYPE_CHECKING:
    from ..tasks.image_algorithm import FeatureExtractorType
    from .fast_inference import OrtRunner, TorchRunner

log = logging.getLogger(__name__)

# scene_print revision -> bundled backbone
SCENE_PRINT_BACKBONES = {1: "efficientnet-lite0", 2: "efficientnet-lite1"}
LATEST_SCENE_PRINT = 2
PREPROCESS_VERSION = "vision-299-centre-crop-tent-v2"

# The image size a Create ML model declares for each network input size: scenePrint(revision: 1)
# models take 299 x 299, revision 2 360 x 360 (and any size from there up).
MODEL_INPUT_SIZES = {224: 299, 240: 360}


def model_input_size(size: int) -> int:
    """The declared (Create ML) image size of a model whose network takes `size` x `size` pixels."""
    return MODEL_INPUT_SIZES.get(int(size), max(299, int(size)))


def crop_grid(length: int, side: float, out: int) -> np.ndarray:
    """Where the `out` samples of a centred crop `side` pixels long fall in an axis `length` pixels long.

    Pixel centres are at 0 .. length - 1; the crop is resampled at its `out` cell centres
    (half-pixel convention), so a crop that is the whole axis gives torch's bilinear
    align_corners=False grid. The exported Core ML model computes the same grid in-model.
    """
    step = side / out
    return (length - side) / 2.0 - 0.5 + step * (np.arange(out) + 0.5)


def tent_matrix(grid: np.ndarray, length: int) -> np.ndarray:
    """(out, length) bilinear interpolation weights: row i samples the axis at grid[i]."""
    return np.maximum(0.0, 1.0 - np.abs(grid[:, None] - np.arange(length)[None, :]))


def bilinear_taps(grid: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two non-zero entries of each `tent_matrix(grid, length)` row: (i0, w0, i1, w1).

    Row i of the tent matrix weighs pixel floor(g) by 1 - frac(g) and floor(g) + 1 by frac(g) (g =
    grid[i]); a pixel outside 0 .. length - 1 gets weight 0 (its index is clamped, so it can be read).
    """
    i0 = np.floor(grid).astype(np.int64)
    f = (grid - i0).astype(np.float32)
    i1 = i0 + 1
    w0 = np.where((i0 >= 0) & (i0 < length), 1.0 - f, 0.0).astype(np.float32)
    w1 = np.where((i1 >= 0) & (i1 < length), f, 0.0).astype(np.float32)
    return np.clip(i0, 0, length - 1), w0, np.clip(i1, 0, length - 1), w1


def resize_square(chw: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resampling (no antialiasing) of the centre square of (C, H, W) to (C, size, size),
    exactly what the exported models do inside (Core ML CropResize / the ONNX graph's tent matrices).

    Computed as two taps per output sample (`bilinear_taps`), not as the dense tent-matrix products the
    exported graph uses: the same weights (results equal to float32 rounding, ~2e-7), without the
    matrices' 150x wasted multiplications (15 ms against 0.6 ms for 299 -> 224 here, and the dense
    products ran on OpenBLAS's threads beside the decoding threads, which made training extraction
    ~7x slower than the network).
    """
    _, h, w = chw.shape
    side = min(h, w)
    y0, a0, y1, a1 = bilinear_taps(crop_grid(h, side, size), h)
    x0, b0, x1, b1 = bilinear_taps(crop_grid(w, side, size), w)
    chw = chw.astype(np.float32, copy=False)
    rows = chw[:, y0, :] * a0[None, :, None] + chw[:, y1, :] * a1[None, :, None]
    return rows[:, :, x0] * b0 + rows[:, :, x1] * b1


def vision_scale(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size` and centre-crop a square: what Vision's default
    .centerCrop does before it hands an image to a Core ML model that takes size x size."""
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """(3, S, S) RGB in [0, 1] for a network that takes S x S: the photo as an app hands it to the
    exported model (Vision's centre crop to the model's declared size, 299 for S = 224, 360 for 240)
    and then the model's own resize from there to S, so training sees what the model computes."""
    declared = model_input_size(size)
    image = vision_scale(image.convert("RGB") if image.mode != "RGB" else image, declared)
    arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(resize_square(arr, size))


def load_backbone(feature_extractor: FeatureExtractorType) -> torch.nn.Module:
    """The torch module behind a FeatureExtractorType (scene_print or custom)."""
    from ..nets import EfficientNetLiteFeatures

    if feature_extractor.kind == "scene_print":
        rev = feature_extractor.revision or LATEST_SCENE_PRINT
        return EfficientNetLiteFeatures(SCENE_PRINT_BACKBONES[rev])
    return feature_extractor.custom.load()


class ImageEmbeddingExtractor:
    """Turns image items into embedding vectors, batch by batch, decoding on threads.

    Decoding runs ahead on a thread pool while the network runs on batches of `pipeline_batch`
    images. The network runs on the fastest backend that builds (see `fast_inference`: ONNX Runtime,
    else a fused channels-last torch graph, else eager torch); `backend` ("auto", "onnxruntime",
    "torch", "eager"; default `$CREATEML_WIDGETS_INFERENCE_BACKEND` or "auto") forces one. All
    backends compute the same float32 features, so `id` does not depend on the backend.
    """

    # Images per network run inside `extract`: small enough that decoding the next images overlaps
    # the run, large enough to keep the per-run overhead negligible (measured in benchmarks/image.py).
    pipeline_batch = 8

    def __init__(self, feature_extractor: FeatureExtractorType, batch_size: int = 32, threads: int | None = None,
                 backend: str | None = None):
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.backend = backend
        self.backbone = None
        self.runner = None  # built from `backbone` on first use; `.backend` names the backend in use
        self._runner_for = None
        self._pool = None

    @property
    def id(self) -> str:
        """The cache id: the feature extractor's and the preprocessing version (not the backend)."""
        return f"{self.feature_extractor.cache_id}|{PREPROCESS_VERSION}"

    @property
    def input_size(self) -> int:
        """The network's square input side, in pixels."""
        return self.feature_extractor.input_size

    def __enter__(self) -> ImageEmbeddingExtractor:
        if self.backbone is None:
            self.backbone = load_backbone(self.feature_extractor).eval()
        self.prepare()
        self._pool = ThreadPoolExecutor(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _load(self, item) -> np.ndarray | Exception:
        try:
            image = load_image(item.source if item.payload is None else item.payload)
            image = augment(image, item.variant, item.key)
            return preprocess(image, self.input_size)
        except Exception as err:  # noqa: BLE001 - reported per file, never fatal
            return err

    def prepare(self) -> TorchRunner | OrtRunner:
        """Build (once per backbone) the runner `embed` uses; loads the backbone if needed."""
        from .fast_inference import make_runner

        if self.backbone is None:
            self.backbone = load_backbone(self.feature_extractor).eval()
        if self.runner is None or self._runner_for is not self.backbone:
            self.runner = make_runner(self.backbone, self.backend)
            self._runner_for = self.backbone
        return self.runner

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 pixels from `preprocess` -> (N, D) float32 embeddings."""
        runner = self.runner if self.runner is not None and self._runner_for is self.backbone else self.prepare()
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            return np.asarray(runner(batch), dtype=np.float32)
        except Exception as err:
            if runner.backend == "eager":
                raise
            # A fast backend that fails at run time (it passed its build-time check): eager from now on.
            from .fast_inference import TorchRunner

            log.warning("inference backend %s failed (%s: %s); using eager torch", runner.backend,
                        err.__class__.__name__, err)
            self.runner = TorchRunner(self.backbone, "eager")
            return np.asarray(self.runner(batch), dtype=np.float32)

    def extract(self, items: list) -> list:
        """An embedding per image item, in order; the exception in the slot of an image that failed to load."""
        # Executor.map submits every decode at once and yields in order: the pool decodes ahead
        # while this thread runs the network on each `step` of decoded images.
        mapper = self._pool.map if self._pool is not None else map
        step = max(1, min(self.batch_size, self.pipeline_batch))
        results: list = [None] * len(items)
        idx: list[int] = []
        pixels: list[np.ndarray] = []

        def flush() -> None:
            out = self.embed(np.stack(pixels))
            for i, row in zip(idx, out):
                results[i] = row
            idx.clear()
            pixels.clear()

        for i, p in enumerate(mapper(self._load, items)):
            if isinstance(p, Exception):
                results[i] = p
                continue
            idx.append(i)
            pixels.append(p)
            if len(idx) >= step:
                flush()
        if idx:
            flush()
        return results

"""Image embeddings: EfficientNet-Lite features (scene_print) or a user's own torch model (custom)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from .image_augment import augment
from .image_io import load_image

# scene_print revision -> bundled backbone
SCENE_PRINT_BACKBONES = {1: "efficientnet-lite0", 2: "efficientnet-lite1"}
LATEST_SCENE_PRINT = 2
PREPROCESS_VERSION = "center-crop-bilinear-v1"


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Scale the shorter side to `size`, centre-crop a square (Vision's default .centerCrop): (3, S, S) in [0, 1]."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_backbone(feature_extractor) -> torch.nn.Module:
    """The torch module behind a FeatureExtractorType (scene_print or custom)."""
    from ..nets import EfficientNetLiteFeatures

    if feature_extractor.kind == "scene_print":
        rev = feature_extractor.revision or LATEST_SCENE_PRINT
        return EfficientNetLiteFeatures(SCENE_PRINT_BACKBONES[rev])
    return feature_extractor.custom.load()


class ImageEmbeddingExtractor:
    """Turns image items into embedding vectors, batch by batch, decoding on threads."""

    def __init__(self, feature_extractor, batch_size: int = 32, threads: int | None = None):
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.backbone = None
        self._pool = None

    @property
    def id(self) -> str:
        return f"{self.feature_extractor.cache_id}|{PREPROCESS_VERSION}"

    @property
    def input_size(self) -> int:
        return self.feature_extractor.input_size

    def __enter__(self) -> ImageEmbeddingExtractor:
        if self.backbone is None:
            self.backbone = load_backbone(self.feature_extractor).eval()
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

    def embed(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.backbone(torch.from_numpy(batch)).numpy()

    def extract(self, items: list) -> list:
        mapper = self._pool.map if self._pool is not None else map
        pixels = list(mapper(self._load, items))
        results: list = list(pixels)
        good = [i for i, p in enumerate(pixels) if not isinstance(p, Exception)]
        for start in range(0, len(good), self.batch_size):
            idx = good[start:start + self.batch_size]
            out = self.embed(np.stack([pixels[i] for i in idx]))
            for i, row in zip(idx, out):
                results[i] = row
        return results

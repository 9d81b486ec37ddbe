"""Image augmentations (Create ML's ImageAugmentationOptions): each makes one extra example per image.

Every augmented copy is reproducible: its randomness is seeded from the item's key, so a
resumed session or a cached run sees exactly the same pixels.
"""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def _rng(seed_text: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(seed_text.encode()).digest()[:8], "little"))


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of 65-90% of each side, anywhere in the image."""
    w, h = image.size
    scale = rng.uniform(0.65, 0.9)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def rotation(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotated 10-30 degrees either way, the corners filled black."""
    angle = float(rng.uniform(10, 30)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.BILINEAR, expand=False, fillcolor=(0, 0, 0))


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A Gaussian blur of radius 0.8-2.5 px per 224 px of the longer side."""
    radius = float(rng.uniform(0.8, 2.5)) * max(image.size) / 224
    return image.filter(ImageFilter.GaussianBlur(radius))


def exposure(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Darker (x0.5-0.8) or brighter (x1.25-1.6), at even odds."""
    factor = float(rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6))
    return ImageEnhance.Brightness(image).enhance(factor)


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian pixel noise of standard deviation 8-20 (of 255)."""
    arr = np.asarray(image, dtype=np.float32)
    arr = arr + rng.normal(0.0, float(rng.uniform(8, 20)), arr.shape).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirrored left-right (70% of the time) or upside down."""
    # "flipping each image along the horizontal and vertical axes": one of the two, at random.
    return image.transpose(Image.FLIP_LEFT_RIGHT if rng.random() < 0.7 else Image.FLIP_TOP_BOTTOM)


AUGMENTATIONS = {"crop": crop, "rotation": rotation, "blur": blur, "exposure": exposure, "noise": noise, "flip": flip}


def augment(image: Image.Image, variant: str, seed_text: str) -> Image.Image:
    """Apply the augmentation named `variant` ("" returns the image unchanged)."""
    if not variant:
        return image
    return AUGMENTATIONS[variant](image, _rng(f"{seed_text}|{variant}"))

"""Reading images the way a user's folder holds them: any mode, any orientation, any size."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UnreadableFileError

# Extensions treated as images when scanning folders (case-insensitive).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic", ".heif"}
# Decompression-bomb guard: refuse larger than this many pixels, downscale anything big on load.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(source, max_side: int | None = 2048) -> Image.Image:
    """Open `source` (path, PIL image or array) as an 8-bit RGB PIL image, upright.

    Handles grayscale, palette, CMYK, 16-bit, alpha (composited on white) and EXIF rotation;
    images larger than `max_side` are downscaled (keeping aspect ratio) so huge photos stay cheap.
    Raises UnreadableFileError naming the file for anything that is not a readable image.
    """
    if isinstance(source, Image.Image):
        image = source
        name = getattr(source, "filename", "") or "<PIL image>"
    elif isinstance(source, np.ndarray):
        return load_image(array_to_image(source), max_side)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise UnreadableFileError(path, "the file does not exist")
        if path.is_dir():
            raise UnreadableFileError(path, "this is a folder, not an image file")
        if path.stat().st_size == 0:
            raise UnreadableFileError(path, "the file is empty (0 bytes)")
        try:
            image = Image.open(path)
            image.draft("RGB", (max_side, max_side)) if max_side and image.format == "JPEG" else None
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UnreadableFileError(path, f"not a readable image ({err.__class__.__name__}: {err})") from None
        except Image.DecompressionBombError as err:  # pragma: no cover - needs a giant file
            raise UnreadableFileError(path, str(err)) from None
    else:
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(source).__name__}")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not lose the picture  # noqa: BLE001
        pass
    image = _to_rgb(image, name)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.BILINEAR)
    return image


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples span 0..65535 whatever the picture holds (a dark 16-bit photo stays dark).
        # Mode "I" (32-bit) does not say its depth: values above 255 are taken as 16-bit, else 8-bit.
        arr = np.asarray(image, dtype=np.float64)
        full = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.rint(arr / full * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise UnreadableFileError(name, f"cannot convert image mode {mode} to RGB: {err}") from None


def array_to_image(array: np.ndarray) -> Image.Image:
    """An RGB(A)/grayscale array (H, W[, C]), uint8 or float in [0, 1], as a PIL image."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = arr.clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def source_name(source) -> str:
    """A short human name for a prediction input."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return f"<array {getattr(source, 'shape', '')}>"
